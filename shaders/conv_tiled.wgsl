// Convolution as an implicit GEMM, one group per workgroup z-slice:
//
//   Y[m, q] = sum_k A[m, k] * B[k, q]
//
// m: output channel inside the group, q: output pixel over (n, oy, ox), k: (ci, ky, kx).
// A is the weight, laid out at upload as [group][k_pad][m_pad] (zero-padded, m fastest) so a
// vec4 load reads four output channels of one k. B is never materialised: the im2col gather
// happens while the B tile is loaded into workgroup memory.
//
// A workgroup computes a TM x TN = 64 x 64 tile of Y with 256 invocations, each a 4x4 block
// (4 channels x 4 pixels) held in registers. Scale, bias, residual and ReLU are applied in the
// store.

override KS: u32 = 3u; // kernel size (square)

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
    m_pad: u32,   // cout_g rounded up to TM
    k_pad: u32,   // k_total rounded up to TK
    flags: u32,
    m_tiles: u32, // m_pad / TM
}


const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> residual: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

var<workgroup> a_tile: array<vec4<f32>, 256>; // [TK][TM / 4]
var<workgroup> b_tile: array<vec4<f32>, 256>; // [TK][TN / 4]

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let ohw = p.oh * p.ow;
    let npix = p.n * ohw;
    let q0 = (wid.x + wid.y * nwg.x) * TN;
    if q0 >= npix {
        return; // whole workgroup: uniform
    }
    let g = wid.z / p.m_tiles;
    let m0 = (wid.z % p.m_tiles) * TM;

    // Loader role: K-tile row `lk`, pixels q0 + lq * 4 + (0..4).
    let lk = lid / 16u;
    let lq = lid % 16u;
    let hw = p.h * p.w;
    let qv = vec4<u32>(q0 + lq * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
    let img = qv / ohw;
    let r = qv % ohw;
    let oy = r / p.ow;
    let ox = r % p.ow;
    let in_base = vec4<i32>((img * p.cin + g * p.cin_g) * hw);
    // Pixels past the end get an origin far outside the image: always padding.
    let live = qv < vec4<u32>(npix);
    let iy0 = select(vec4<i32>(-65536), vec4<i32>(oy * p.stride) - i32(p.pad), live);
    let ix0 = vec4<i32>(ox * p.stride) - i32(p.pad);
    let hi = vec4<i32>(i32(p.h));
    let wi = vec4<i32>(i32(p.w));
    let a_base = (g * p.k_pad + lk) * (p.m_pad / 4u) + m0 / 4u + lq;

    // Compute role: channels m0 + ty * 4 + (0..4), pixels q0 + tx * 4 + (0..4).
    let tx = lid % 16u;
    let ty = lid / 16u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    for (var k0 = 0u; k0 < p.k_pad; k0 += TK) {
        a_tile[lid] = wt[a_base + k0 * (p.m_pad / 4u)];
        let k = k0 + lk;
        var v = vec4<f32>(0.0);
        if k < p.k_total {
            let ci = k / (KS * KS);
            let t = k % (KS * KS);
            let iy = iy0 + vec4<i32>(i32(t / KS));
            let ix = ix0 + vec4<i32>(i32(t % KS));
            let ok = (iy >= vec4<i32>(0)) & (iy < hi) & (ix >= vec4<i32>(0)) & (ix < wi);
            let off = in_base + vec4<i32>(i32(ci * hw)) + iy * wi + ix;
            if ok.x { v.x = x[off.x]; }
            if ok.y { v.y = x[off.y]; }
            if ok.z { v.z = x[off.z]; }
            if ok.w { v.w = x[off.w]; }
        }
        b_tile[lid] = v;
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a = a_tile[kk * 16u + ty];
            let b = b_tile[kk * 16u + tx];
            acc0 = fma(vec4<f32>(a.x), b, acc0);
            acc1 = fma(vec4<f32>(a.y), b, acc1);
            acc2 = fma(vec4<f32>(a.z), b, acc2);
            acc3 = fma(vec4<f32>(a.w), b, acc3);
        }
        workgroupBarrier();
    }

    let sq = vec4<u32>(q0 + tx * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
    let out_base = (sq / ohw) * p.cout * ohw + sq % ohw;
    store_row(m0 + ty * 4u + 0u, g, acc0, sq, out_base, npix, ohw);
    store_row(m0 + ty * 4u + 1u, g, acc1, sq, out_base, npix, ohw);
    store_row(m0 + ty * 4u + 2u, g, acc2, sq, out_base, npix, ohw);
    store_row(m0 + ty * 4u + 3u, g, acc3, sq, out_base, npix, ohw);
}

fn store_row(m: u32, g: u32, acc: vec4<f32>, q: vec4<u32>, out_base: vec4<u32>, npix: u32, ohw: u32) {
    if m >= p.cout_g {
        return;
    }
    let oc = g * p.cout_g + m;
    let sb = ep_scale_bias(oc);
    let v = fma(acc, vec4<f32>(sb.x), vec4<f32>(sb.y));
    let idx = out_base + vec4<u32>(oc * ohw);
    let live = q < vec4<u32>(npix);
    if live.x { y[idx.x] = ep_finish(v.x, idx.x); }
    if live.y { y[idx.y] = ep_finish(v.y, idx.y); }
    if live.z { y[idx.z] = ep_finish(v.z, idx.z); }
    if live.w { y[idx.w] = ep_finish(v.w, idx.w); }
}
