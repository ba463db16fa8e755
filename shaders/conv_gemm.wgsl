// Convolution as an implicit GEMM shaped for GPUs with wide SIMD and fast workgroup memory:
//
//   Y[m, q] = sum_k A[k, m] * B[k, q]
//
// m: output channel inside the group, q: output pixel over (n, oy, ox), k: (ci, ky, kx).
// A is the weight, laid out at upload as [group][k_pad][m_pad] (zero-padded, m fastest): a vec4
// load reads four output channels of one k. B is never materialised: the im2col gather happens
// while its K tile is staged in workgroup memory.
//
// The tile is configured per layer through override constants: WX x WY invocations (64-256),
// each owning TMV x TNV blocks of 4 channels x 4 pixels (16-64 accumulators in registers), so a
// workgroup computes BM = 4 * TMV * WY channels by BN = 4 * TNV * WX pixels. Per K step an
// invocation reads TMV + TNV vec4 values from workgroup memory for 4 * TMV * TNV vec4 FMAs. The
// next K tile is fetched from global memory into registers while the current one is consumed
// (register double buffering; workgroup memory stays within WebGPU's 16 KiB minimum). The
// im2col coordinates of the pixels an invocation gathers are computed once, outside the K loop,
// which needs only an unsigned division by the constant KS * KS. Scale, bias, residual and ReLU
// are applied in the store.
//
// Split-K (FLAG_PARTIAL): when a layer would launch too few workgroups to fill the GPU (late
// layers at batch 1), the K range is cut into `splits` slices of `k_len` steps; workgroup z then
// runs over (slice, group, channel tile), and each slice stores its raw sums into `partial`
// ([slice][n][cout][oh * ow], f32), which the second entry point, `reduce`, adds up in slice
// order before the epilogue. Without the flag, k_len = k_pad: one slice, stored through the
// epilogue into y.

override KS: u32 = 3u;  // kernel size (square)
override WX: u32 = 16u; // invocations along pixels
override WY: u32 = 16u; // invocations along channels
override TMV: u32 = 1u; // 4-channel blocks per invocation: 1 or 2
override TNV: u32 = 1u; // 4-pixel blocks per invocation: 1 or 2

struct Params {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    oh: u32,
    ow: u32,
    stride: u32,
    pad: u32,
    cin_g: u32,
    cout_g: u32,
    k_total: u32, // cin_g * KS * KS
    m_pad: u32,   // cout_g rounded up to BM
    k_pad: u32,   // k_total rounded up to TK
    flags: u32,
    m_tiles: u32, // m_pad / BM
    groups: u32,
    k_len: u32, // K steps per slice (a multiple of TK); k_pad without split-K
    splits: u32, // K slices (`reduce` only)
    _pad0: u32,
}

const FLAG_PARTIAL: u32 = 16u;

const TK: u32 = 16u;
// Largest tiles: BM, BN <= 128, so a K tile of either operand is at most 16 x 32 vec4.
const MAX_TILE_V4: u32 = 512u;
// Most vec4 values one invocation stages per K tile (64 invocations, 128-wide tiles).
const MAX_STAGE: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<st>;
@group(0) @binding(2) var<storage, read> wt: array<st4>;
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> residual: array<st>;
@group(0) @binding(6) var<storage, read_write> y: array<st>;
// Split-K only: [slice][n * cout * oh * ow] raw sums (written by `main`, read by `reduce`).
@group(0) @binding(7) var<storage, read_write> partial: array<f32>;

var<workgroup> a_tile: array<vec4<f32>, MAX_TILE_V4>; // [TK][BM / 4]
var<workgroup> b_tile: array<vec4<f32>, MAX_TILE_V4>; // [TK][BN / 4]

// Staging registers: the next K tile's share of this invocation.
var<private> a_next: array<vec4<f32>, MAX_STAGE>;
var<private> b_next: array<vec4<f32>, MAX_STAGE>;
// Gather geometry of the B columns this invocation stages (one 4-pixel column each).
var<private> g_base: array<vec4<i32>, MAX_STAGE>;
var<private> g_iy: array<vec4<i32>, MAX_STAGE>;
var<private> g_ix: array<vec4<i32>, MAX_STAGE>;
// Accumulators: [i * 4 + c][j] -> index (i * 4 + c) * TNV + j; channel block i, its channel c,
// pixel block j.
var<private> acc: array<vec4<f32>, 16>;

fn wg_size() -> u32 {
    return WX * WY;
}

// Loads the K tile starting at k0 into the staging registers.
fn stage(k0: u32, lid: u32, a_base: u32, bm4: u32, bn4: u32) {
    let wg = wg_size();
    let m4 = p.m_pad / 4u;
    for (var s = 0u; s < MAX_STAGE; s++) {
        let ia = lid + s * wg;
        if ia < TK * bm4 {
            let kk = ia / bm4;
            a_next[s] = vec4<f32>(wt[a_base + (k0 + kk) * m4 + ia % bm4]);
        }
        let ib = lid + s * wg;
        if ib < TK * bn4 {
            let k = k0 + ib / bn4;
            var v = vec4<f32>(0.0);
            if k < p.k_total {
                let ci = k / (KS * KS);
                let t = k - ci * (KS * KS);
                let ky = t / KS;
                let kx = t - ky * KS;
                let iy = g_iy[s] + vec4<i32>(i32(ky));
                let ix = g_ix[s] + vec4<i32>(i32(kx));
                let hi = vec4<i32>(i32(p.h));
                let wi = vec4<i32>(i32(p.w));
                let ok = (iy >= vec4<i32>(0)) & (iy < hi) & (ix >= vec4<i32>(0)) & (ix < wi);
                let off = g_base[s] + vec4<i32>(i32(ci * p.h * p.w)) + iy * wi + ix;
                if ok.x { v.x = f32(x[off.x]); }
                if ok.y { v.y = f32(x[off.y]); }
                if ok.z { v.z = f32(x[off.z]); }
                if ok.w { v.w = f32(x[off.w]); }
            }
            b_next[s] = v;
        }
    }
}

fn commit(lid: u32, bm4: u32, bn4: u32) {
    let wg = wg_size();
    for (var s = 0u; s < MAX_STAGE; s++) {
        let ia = lid + s * wg;
        if ia < TK * bm4 {
            a_tile[ia] = a_next[s];
        }
        let ib = lid + s * wg;
        if ib < TK * bn4 {
            b_tile[ib] = b_next[s];
        }
    }
}

@compute @workgroup_size(WX * WY)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let bm4 = TMV * WY; // vec4 columns of the A tile
    let bn4 = TNV * WX; // vec4 columns of the B tile
    let ohw = p.oh * p.ow;
    let npix = p.n * ohw;
    let q0 = (wid.x + wid.y * nwg.x) * bn4 * 4u;
    if q0 >= npix {
        return; // whole workgroup: uniform
    }
    let tiles = p.m_tiles * p.groups;
    let slice = wid.z / tiles;
    let zt = wid.z - slice * tiles;
    let g = zt / p.m_tiles;
    let m0 = (zt % p.m_tiles) * bm4 * 4u;
    let k_begin = slice * p.k_len;
    let k_end = min(k_begin + p.k_len, p.k_pad);
    let hw = p.h * p.w;
    let a_base = g * p.k_pad * (p.m_pad / 4u) + m0 / 4u;

    // Gather geometry of the staged B columns (fixed over K).
    let wg = wg_size();
    for (var s = 0u; s < MAX_STAGE; s++) {
        let ib = lid + s * wg;
        let qv = vec4<u32>(q0 + (ib % bn4) * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
        let img = qv / ohw;
        let r = qv - img * ohw;
        let oy = r / p.ow;
        let ox = r - oy * p.ow;
        let live = qv < vec4<u32>(npix);
        g_base[s] = vec4<i32>((min(img, vec4<u32>(p.n - 1u)) * p.cin + g * p.cin_g) * hw);
        // Pixels past the end get an origin far outside the image: always padding.
        g_iy[s] = select(vec4<i32>(-65536), vec4<i32>(oy * p.stride) - i32(p.pad), live);
        g_ix[s] = vec4<i32>(ox * p.stride) - i32(p.pad);
    }

    let tx = lid % WX;
    let ty = lid / WX;
    stage(k_begin, lid, a_base, bm4, bn4);
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        commit(lid, bm4, bn4);
        workgroupBarrier();
        if k0 + TK < k_end {
            stage(k0 + TK, lid, a_base, bm4, bn4);
        }
        for (var kk = 0u; kk < TK; kk++) {
            for (var i = 0u; i < TMV; i++) {
                let a = a_tile[kk * bm4 + ty + i * WY];
                for (var j = 0u; j < TNV; j++) {
                    let b = b_tile[kk * bn4 + tx + j * WX];
                    let base = i * 4u * TNV + j;
                    acc[base] = fma(vec4<f32>(a.x), b, acc[base]);
                    acc[base + TNV] = fma(vec4<f32>(a.y), b, acc[base + TNV]);
                    acc[base + 2u * TNV] = fma(vec4<f32>(a.z), b, acc[base + 2u * TNV]);
                    acc[base + 3u * TNV] = fma(vec4<f32>(a.w), b, acc[base + 3u * TNV]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var j = 0u; j < TNV; j++) {
        let q = vec4<u32>(q0 + (tx + j * WX) * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
        let img = q / ohw;
        let out_base = img * p.cout * ohw + (q - img * ohw);
        let live = q < vec4<u32>(npix);
        for (var i = 0u; i < TMV; i++) {
            for (var c = 0u; c < 4u; c++) {
                let m = m0 + (ty + i * WY) * 4u + c;
                store(m, g, slice, acc[(i * 4u + c) * TNV + j], out_base, live, ohw);
            }
        }
    }
}

fn store(
    m: u32,
    g: u32,
    slice: u32,
    value: vec4<f32>,
    out_base: vec4<u32>,
    live: vec4<bool>,
    ohw: u32,
) {
    if m >= p.cout_g {
        return;
    }
    let oc = g * p.cout_g + m;
    let idx = out_base + vec4<u32>(oc * ohw);
    if (p.flags & FLAG_PARTIAL) != 0u {
        let at = idx + vec4<u32>(slice * p.n * p.cout * ohw);
        if live.x { partial[at.x] = value.x; }
        if live.y { partial[at.y] = value.y; }
        if live.z { partial[at.z] = value.z; }
        if live.w { partial[at.w] = value.w; }
        return;
    }
    let sb = ep_scale_bias(oc);
    let v = fma(value, vec4<f32>(sb.x), vec4<f32>(sb.y));
    if live.x { y[idx.x] = st(ep_finish(v.x, idx.x)); }
    if live.y { y[idx.y] = st(ep_finish(v.y, idx.y)); }
    if live.z { y[idx.z] = st(ep_finish(v.z, idx.z)); }
    if live.w { y[idx.w] = st(ep_finish(v.w, idx.w)); }
}

// Split-K, second pass: one invocation per output element (NCHW order) adds the slices' raw sums
// in slice order, then applies the epilogue and stores the output.
@compute @workgroup_size(256)
fn reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let ohw = p.oh * p.ow;
    let total = p.n * p.cout * ohw;
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= total {
        return;
    }
    var v = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        v += partial[s * total + i];
    }
    let sb = ep_scale_bias((i / ohw) % p.cout);
    y[i] = st(ep_finish(fma(v, sb.x, sb.y), i));
}
