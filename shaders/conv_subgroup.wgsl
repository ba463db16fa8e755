// Convolution as an implicit GEMM shared through subgroup registers (adapters with subgroups of
// at least 8 invocations; the main path on CPU adapters such as lavapipe, where workgroup
// memory is slow; conv_gemm.wgsl is the path for GPUs).
//
//   Y[m, q] = sum_k A[m, k] * B[k, q]   m: output channel, q: output pixel, k: (ci, ky, kx)
//
// A workgroup is one full subgroup of SG invocations (the adapter's subgroup size, at least 8)
// and computes a tile of 4 * CH4 * SG output channels x (R rows x NBW columns) output pixels:
// each invocation owns 4 * CH4 channels (CH4 = 2 or 3 vec4 accumulators per pixel, chosen per
// layer to pad the channels least) of all R * NBW pixels (at most 32, and R * NBW * CH4 <= 64),
// held in registers. Per input channel ci:
//   * the im2col gather: the T = (R - 1) * STRIDE + KS input row segments the tile needs
//     (STRIDE * (NBW - 1) + KS values each) are loaded cooperatively, SG values per load, one
//     per invocation, or, where the rows are a multiple of 4 wide and the tiles start
//     4-aligned (VROW), as aligned quads through x4, 4 * SG values per load (lavapipe runs each
//     storage load as a loop over the lanes: 4 loops instead of 15 for A0's 112 -> 56 tiles),
//     or, where a tile spans whole rows of another width (VBLK), as one contiguous block of
//     aligned quads (4 loops instead of 18 for A0's 14x14 -> 7x7 conv);
//     every invocation then reads the values it needs from its neighbours with
//     subgroupShuffle;
//   * the KS x KS weights of the invocation's channels come from a read-only storage texture
//     laid out at upload as rows k = (g, ci, ky, kx) of m_pad / 4 rgba32float texels (rgba16float
//     in the f16 form): one textureLoad, 4 channels;
//   * then CH4 * KS * KS vec4 FMAs per pixel.
// A 1x1 stride-1 conv without padding (the product of a Winograd conv) is dispatched as one
// row of h * w pixels, so that its tiles fill up whatever the map's shape, and its K loop takes
// KU input channels per iteration, summing their products before adding them to the
// accumulators (see pixel_channels). Where the tile and the plane are multiples of 4 pixels it
// loads 4 pixels a lane (VLD, through x4, a vec4 view of the input): lavapipe runs each storage
// load as a loop over the lanes, so a 16-pixel tile's 4 channels take 2 load loops, not 8.
// Every index into the private arrays is a constant after the helper functions are inlined with
// their constant arguments, so the arrays live in registers. Scale, bias, residual and ReLU are
// applied in the store, which writes 4 pixels of a channel at once where the output's rows
// allow (VEC): lavapipe runs each storage store as a loop over the lanes, so one store of 4
// values costs about what one of 1 does.
//
// Why subgroups and a texture instead of workgroup memory: on CPU adapters (lavapipe) each
// buffer or workgroup-memory load is a loop over the SIMD lanes, while texture fetches are
// vectorised; sharing through the subgroup does one buffer load per 8 input values instead of
// one per use. The texture is a storage texture, not a sampled one: lavapipe's sampled
// `textureLoad` looks up the mip level's size and offset per lane (a large share of this
// kernel's time in a profile of the JIT code: docs/lavapipe.md), its storage-image load does not.

// Storage element type: f32 here; the f16 build (Precision::F16) makes it f16 and prepends
// `enable f16;`. Loads convert to f32 (`f32(..)`), stores round (`st(..)`); arithmetic is f32.
alias st = f32;

override KS: u32 = 3u;     // kernel size: 1 or 3
override STRIDE: u32 = 1u; // 1 or 2
override NBW: u32 = 16u;   // output columns per tile, 1..=32
override R: u32 = 2u;      // output rows per tile; R * NBW <= 32 and (R - 1) * STRIDE + KS <= 9
override SG: u32 = 8u;     // invocations per workgroup: the subgroup size, at least 8
override CH4: u32 = 2u;    // vec4 accumulators per pixel: 2 or 3 (8 or 12 channels per
                           // invocation); R * NBW * CH4 <= 64
override VEC: bool = false; // store 4 pixels of a channel at once through y4: where every
                            // row of 4 pixels is whole and 4-aligned (NBW, the output row and
                            // plane multiples of 4) and there is no residual
override VLD: u32 = 0u;    // flat 1x1 conv: input channels per vec4 load through x4, 0 for
                           // scalar loads; where NBW and the plane are multiples of 4, each
                           // lane loads 4 pixels of a channel (NBW / 4 lanes a channel)
override VROW: bool = false; // other convs: load the tile's input rows 4 values a lane, as
                             // aligned quads through x4 (rows a multiple of 4 wide, tiles
                             // starting 4-aligned: NBW * STRIDE a multiple of 4)
override OFF: u32 = 0u;      // VROW: where a tile's first input column sits in its quad,
                             // (4 - pad % 4) % 4
override VBLK: u32 = 0u;     // other convs whose tiles span whole rows (one tile a row band):
                             // the input width, the tile's input rows then being one
                             // contiguous block, loaded as aligned quads through x4 (rows of
                             // a width not a multiple of 4, such as 14); 0 elsewhere
override PADC: u32 = 0u;     // VBLK: the padding
override KU: u32 = 0u;     // input channels per K-loop iteration of a flat 1x1 conv (R = 1):
                           // 1, 2 or 4, dividing cin_g; 0 for every other conv

struct Params {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    oh: u32,
    ow: u32,
    pad: u32,
    cin_g: u32,
    cout_g: u32,
    flags: u32,
    blocks_x: u32, // tiles per output row band: ceil(ow / NBW)
    blocks_y: u32, // row bands per image: ceil(oh / R)
    m_tiles: u32,  // ceil(cout_g / (8 * SG))
    _pad0: u32,
    _pad1: u32,
}

const FLAG_SCALE: u32 = 1u;
const FLAG_BIAS: u32 = 2u;
const FLAG_RESIDUAL: u32 = 4u;
const FLAG_RELU: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<st>;
@group(0) @binding(2) var wtex: texture_storage_2d<rgba32float, read>; // rgba16float in f16
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> residual: array<st>;
@group(0) @binding(6) var<storage, read_write> y: array<st>;
// The same buffer as y, 4 values an element: one store loop over the lanes writes 4 values
// (lavapipe runs each storage access as a loop over the SIMD lanes).
@group(0) @binding(7) var<storage, read_write> y4: array<vec4<st>>;
// The same buffer as x, 4 values an element (VLD > 0 or VROW).
@group(0) @binding(8) var<storage, read> x4: array<vec4<st>>;

// Per invocation: accumulators [pixel][CH4], the loaded row segments [row][piece], the weights
// of one input channel [ky][kx][CH4].
var<private> acc: array<vec4<f32>, 64>;
var<private> seg: array<f32, 81>;
var<private> wk: array<vec4<f32>, 27>;
// VLD: load l holds pixels 4 (lane % (NBW / 4)) .. + 4 of input channel l * VLD + lane / (NBW / 4).
var<private> segv: array<vec4<f32>, 4>;
// VROW: quad i = j * SG + lane of the tile's input rows (row i / row_quads(), quad
// i % row_quads() of it) at segq[j].
var<private> segq: array<vec4<f32>, 20>;

// Tile geometry and the invocation's place in it, set once by main.
var<private> t_in: u32;      // offset of (image, group's first channel) in x
var<private> t_iy0: i32;     // first input row of the tile
var<private> t_ix0: i32;     // first input column of the tile
var<private> t_lane: u32;
var<private> t_tex_x: i32;   // first of the invocation's two texels in a weight row

const ROW_PIECES: u32 = 9u;

// Piece j of input row t of the tile for channel ci: element j * SG + lane (zero outside).
fn load_piece(t: u32, j: u32, plane: u32) {
    if t < (R - 1u) * STRIDE + KS {
        load_piece_into(t, t, j, plane);
    }
}

// Piece j of input row t of the tile, kept in row `slot` of `seg`.
fn load_piece_into(slot: u32, t: u32, j: u32, plane: u32) {
    if j * SG < STRIDE * (NBW - 1u) + KS {
        let iy = t_iy0 + i32(t);
        let ix = t_ix0 + i32(j * SG + t_lane);
        let ok = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
        let cy = clamp(iy, 0, i32(p.h) - 1);
        let cx = clamp(ix, 0, i32(p.w) - 1);
        let v = f32(x[plane + u32(cy) * p.w + u32(cx)]);
        seg[slot * ROW_PIECES + j] = select(0.0, v, ok);
    }
}

// Flat 1x1 conv: the tile's row of input channel ci + u, kept in row u of `seg`.
fn load_channel(u: u32, plane: u32) {
    if u < KU {
        load_piece_into(u, 0u, 0u, plane);
        load_piece_into(u, 0u, 1u, plane);
        load_piece_into(u, 0u, 2u, plane);
        load_piece_into(u, 0u, 3u, plane);
    }
}

// VLD: load l of a K step (input channels ci + l * VLD ..), from the plane of channel ci.
fn load_channel_quads(l: u32, plane: u32) {
    if l * VLD < KU {
        let lanes = max(NBW / 4u, 1u);
        let c = t_lane / lanes;
        if c < VLD {
            // Pixels past the row (a last tile running over) load the row's last 4 instead:
            // their products are never stored.
            let ix = t_ix0 + i32(4u * (t_lane - c * lanes));
            let cx = u32(min(ix, i32(p.w) - 4));
            segv[l] = vec4<f32>(x4[(plane + (l * VLD + c) * p.h * p.w + cx) / 4u]);
        }
    }
}

// VROW: aligned quads of 4 input values covering each of the tile's input rows.
fn row_quads() -> u32 {
    return (STRIDE * (NBW - 1u) + KS - 1u + OFF) / 4u + 1u;
}

// VROW: quads j * SG + lane of the tile's input rows of channel plane `plane`, zero outside.
fn load_row_quad(j: u32, plane: u32) {
    let qr = row_quads();
    let total = ((R - 1u) * STRIDE + KS) * qr;
    if j * SG < total {
        let i = j * SG + t_lane;
        let t = i / qr;
        let iy = t_iy0 + i32(t);
        let col = t_ix0 - i32(OFF) + 4 * i32(i - t * qr);
        let ok = i < total && iy >= 0 && iy < i32(p.h) && col >= 0 && col < i32(p.w);
        let cy = u32(clamp(iy, 0, i32(p.h) - 1));
        let cx = u32(clamp(col, 0, i32(p.w) - 4));
        let v = vec4<f32>(x4[(plane + cy * p.w + cx) / 4u]);
        segq[j] = select(vec4<f32>(0.0), v, ok);
    }
}

// VBLK: where the tile's first input value sits in its quad (the block starts at row
// by * R * STRIDE - PADC, and R * STRIDE * VBLK is a multiple of 4).
fn block_offset() -> u32 {
    return (4u - (PADC * VBLK) % 4u) % 4u;
}

// VBLK: quads j * SG + lane of the tile's (R - 1) * STRIDE + KS input rows of plane `plane`,
// zero outside the image.
fn load_block_quad(j: u32, plane: u32) {
    let rows = (R - 1u) * STRIDE + KS;
    let quads = (block_offset() + rows * VBLK + 3u) / 4u;
    if j * SG < quads {
        let k = j * SG + t_lane;
        // plane + t_iy0 * VBLK - block_offset() is a multiple of 4.
        let first = (i32(plane) + t_iy0 * i32(VBLK) - i32(block_offset())) / 4;
        let v = vec4<f32>(x4[u32(clamp(first + i32(k), 0, i32(arrayLength(&x4)) - 1))]);
        // Each value's row (values outside the block, in its first and last quads, are never
        // read); rows above and below the image are the padding.
        let f = vec4<i32>(4 * i32(k) - i32(block_offset())) + vec4<i32>(0, 1, 2, 3);
        let iy = vec4<i32>(t_iy0) + f / i32(max(VBLK, 1u)); // 0 would fail constant evaluation
        segq[j] = select(vec4<f32>(0.0), v, (iy >= vec4<i32>(0)) & (iy < vec4<i32>(i32(p.h))));
    }
}

// Quads j * SG + lane of the tile's input rows of plane `plane` (VROW or VBLK).
fn load_input_quad(j: u32, plane: u32) {
    if VROW {
        load_row_quad(j, plane);
    } else {
        load_block_quad(j, plane);
    }
}

fn load_row(t: u32, plane: u32) {
    load_piece(t, 0u, plane);
    load_piece(t, 1u, plane);
    load_piece(t, 2u, plane);
    load_piece(t, 3u, plane);
    load_piece(t, 4u, plane);
    load_piece(t, 5u, plane);
    load_piece(t, 6u, plane);
    load_piece(t, 7u, plane);
    load_piece(t, 8u, plane);
}

fn load_weight(ky: u32, kx: u32, krow: i32) {
    if ky < KS && kx < KS {
        load_texels(3u * (ky * 3u + kx), krow + i32(ky * KS + kx));
    }
}

// Flat 1x1 conv: the weights of input channel ci + u, at wk[3 u ..].
fn load_weight_channel(u: u32, krow: i32) {
    if u < KU {
        load_texels(3u * u, krow + i32(u));
    }
}

// The CH4 texels (4 channels each) of the invocation's channels in weight row `row`, at wk[wi ..].
fn load_texels(wi: u32, row: i32) {
    wk[wi] = textureLoad(wtex, vec2<i32>(t_tex_x, row));
    wk[wi + 1u] = textureLoad(wtex, vec2<i32>(t_tex_x + 1, row));
    if CH4 > 2u {
        wk[wi + 2u] = textureLoad(wtex, vec2<i32>(t_tex_x + 2, row));
    }
}

// Flat 1x1 conv: the products of input channel ci + u with pixel q, added to s (the first
// channel's set s: no add of zeros).
fn product(q: u32, u: u32, s: ptr<function, array<vec4<f32>, 3>>) {
    if u < KU {
        var x_q: f32;
        if VLD > 0u {
            let per = max(VLD, 1u); // VLD itself: 0 would fail naga's constant evaluation
            x_q = subgroupShuffle(segv[u / per][q % 4u], (u % per) * (NBW / 4u) + q / 4u);
        } else {
            x_q = subgroupShuffle(seg[u * ROW_PIECES + q / SG], q % SG);
        }
        let v = vec4<f32>(x_q);
        if u == 0u {
            (*s)[0] = wk[0] * v;
            (*s)[1] = wk[1] * v;
            if CH4 > 2u {
                (*s)[2] = wk[2] * v;
            }
        } else {
            (*s)[0] = fma(wk[3u * u], v, (*s)[0]);
            (*s)[1] = fma(wk[3u * u + 1u], v, (*s)[1]);
            if CH4 > 2u {
                (*s)[2] = fma(wk[3u * u + 2u], v, (*s)[2]);
            }
        }
    }
}

// Flat 1x1 conv: pixel q's products with KU input channels, summed before they reach the
// accumulators. The K loop is a loop the driver may not prove uniform, so lavapipe blends every
// write of a loop-carried value with the loop's mask; one accumulator write per KU products
// instead of one per product is the point of KU.
fn pixel_channels(q: u32) {
    if q < NBW {
        var s: array<vec4<f32>, 3>;
        product(q, 0u, &s);
        product(q, 1u, &s);
        product(q, 2u, &s);
        product(q, 3u, &s);
        let a = CH4 * q;
        acc[a] += s[0];
        acc[a + 1u] += s[1];
        if CH4 > 2u {
            acc[a + 2u] += s[2];
        }
    }
}

// Tap (ky, kx) of tile pixel q = (q / NBW, q % NBW).
fn tap(q: u32, ky: u32, kx: u32) {
    if q < R * NBW && ky < KS && kx < KS {
        let t = (q / NBW) * STRIDE + ky;
        let e = (q % NBW) * STRIDE + kx;
        var x_q: f32;
        if VROW {
            let i = t * row_quads() + (e + OFF) / 4u;
            x_q = subgroupShuffle(segq[i / SG][(e + OFF) % 4u], i % SG);
        } else if VBLK > 0u {
            // Input column e - PADC of row t of the block; the padding columns are zeros.
            x_q = 0.0;
            if e >= PADC && e < VBLK + PADC {
                let f = t * VBLK + e - PADC + block_offset();
                x_q = subgroupShuffle(segq[f / 4u / SG][f % 4u], (f / 4u) % SG);
            }
        } else {
            x_q = subgroupShuffle(seg[t * ROW_PIECES + e / SG], e % SG);
        }
        let v = vec4<f32>(x_q);
        let wi = 3u * (ky * 3u + kx);
        let a = CH4 * q;
        acc[a] = fma(wk[wi], v, acc[a]);
        acc[a + 1u] = fma(wk[wi + 1u], v, acc[a + 1u]);
        if CH4 > 2u {
            acc[a + 2u] = fma(wk[wi + 2u], v, acc[a + 2u]);
        }
    }
}

fn pixel(q: u32) {
    tap(q, 0u, 0u);
    tap(q, 0u, 1u);
    tap(q, 0u, 2u);
    tap(q, 1u, 0u);
    tap(q, 1u, 1u);
    tap(q, 1u, 2u);
    tap(q, 2u, 0u);
    tap(q, 2u, 1u);
    tap(q, 2u, 2u);
}

// Scale and bias of the invocation's channels m0 + 4 j .. m0 + 4 j + 4, j < CH4.
var<private> ep_s: array<vec4<f32>, 3>;
var<private> ep_b: array<vec4<f32>, 3>;

fn store_channel(i: u32, value: f32) {
    var v = value;
    if (p.flags & FLAG_RESIDUAL) != 0u {
        v += f32(residual[i]);
    }
    if (p.flags & FLAG_RELU) != 0u {
        v = max(v, 0.0);
    }
    y[i] = st(v);
}

// Channels m0 + 4 j .. m0 + 4 j + 4 of pixel q, j < CH4.
fn store_quad(q: u32, j: u32, base: u32, ohw: u32, m0: u32) {
    if j < CH4 {
        let v = fma(acc[CH4 * q + j], ep_s[j], ep_b[j]);
        for (var c = 0u; c < 4u; c++) {
            if m0 + 4u * j + c < p.cout_g {
                store_channel(base + (4u * j + c) * ohw, v[c]);
            }
        }
    }
}

const OUTSIDE: u32 = 0xffffffffu;

// Index in y of channel oc0 of tile pixel q = (q / NBW, q % NBW); OUTSIDE past the tile or the
// output.
fn pixel_base(q: u32, oy0: u32, ox0: u32, img: u32, oc0: u32) -> u32 {
    let oy = oy0 + q / NBW;
    let ox = ox0 + q % NBW;
    if q >= R * NBW || oy >= p.oh || ox >= p.ow {
        return OUTSIDE;
    }
    return (img * p.cout + oc0) * p.oh * p.ow + oy * p.ow + ox;
}

fn store_pixel(q: u32, oy0: u32, ox0: u32, img: u32, oc0: u32, m0: u32) {
    let base = pixel_base(q, oy0, ox0, img, oc0);
    if base == OUTSIDE {
        return;
    }
    let ohw = p.oh * p.ow;
    store_quad(q, 0u, base, ohw, m0);
    store_quad(q, 1u, base, ohw, m0);
    store_quad(q, 2u, base, ohw, m0);
}

// VEC: channel m0 + 4 j + c of pixels 4 g .. 4 g + 4, whose first index in y is `at`.
fn store_four(g: u32, j: u32, c: u32, at: u32, m0: u32) {
    if m0 + 4u * j + c < p.cout_g {
        let q = 4u * g;
        let a = vec4<f32>(
            acc[CH4 * q + j][c],
            acc[CH4 * (q + 1u) + j][c],
            acc[CH4 * (q + 2u) + j][c],
            acc[CH4 * (q + 3u) + j][c],
        );
        var v = fma(a, vec4<f32>(ep_s[j][c]), vec4<f32>(ep_b[j][c]));
        if (p.flags & FLAG_RELU) != 0u {
            v = max(v, vec4<f32>(0.0));
        }
        y4[at / 4u] = vec4<st>(v);
    }
}

fn store_four_quad(g: u32, j: u32, base: u32, ohw: u32, m0: u32) {
    if j < CH4 {
        store_four(g, j, 0u, base + 4u * j * ohw, m0);
        store_four(g, j, 1u, base + (4u * j + 1u) * ohw, m0);
        store_four(g, j, 2u, base + (4u * j + 2u) * ohw, m0);
        store_four(g, j, 3u, base + (4u * j + 3u) * ohw, m0);
    }
}

// VEC: pixels 4 g .. 4 g + 4 of the tile, a whole 4-aligned piece of one output row.
fn store_group(g: u32, oy0: u32, ox0: u32, img: u32, oc0: u32, m0: u32) {
    let base = pixel_base(4u * g, oy0, ox0, img, oc0);
    if base == OUTSIDE {
        return;
    }
    let ohw = p.oh * p.ow;
    store_four_quad(g, 0u, base, ohw, m0);
    store_four_quad(g, 1u, base, ohw, m0);
    store_four_quad(g, 2u, base, ohw, m0);
}

fn epilogue_value(oc: u32, m: u32) -> vec2<f32> {
    // (scale, bias) of channel oc; identity where absent or past the group's channels.
    var s = 1.0;
    var b = 0.0;
    if m < p.cout_g {
        if (p.flags & FLAG_SCALE) != 0u {
            s = scale[oc];
        }
        if (p.flags & FLAG_BIAS) != 0u {
            b = bias[oc];
        }
    }
    return vec2<f32>(s, b);
}

@compute @workgroup_size(SG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let tile = wid.x + wid.y * nwg.x;
    let bx = tile % p.blocks_x;
    let by = (tile / p.blocks_x) % p.blocks_y;
    let img = tile / (p.blocks_x * p.blocks_y);
    let g = wid.z / p.m_tiles;
    // This invocation's channels inside the group: m0 .. m0 + 4 * CH4.
    let m0 = (wid.z % p.m_tiles) * 4u * CH4 * SG + lid * 4u * CH4;
    let oy0 = by * R;
    let ox0 = bx * NBW;
    let hw = p.h * p.w;
    t_in = (min(img, p.n - 1u) * p.cin + g * p.cin_g) * hw;
    t_iy0 = i32(oy0 * STRIDE) - i32(p.pad);
    t_ix0 = i32(ox0 * STRIDE) - i32(p.pad);
    t_lane = lane;
    t_tex_x = i32(m0 / 4u);
    let k_rows = p.cin_g * KS * KS;

    // `acc` starts at zero (private variables are zero-initialised).
    if KU > 0u {
        for (var ci = 0u; ci < p.cin_g; ci += KU) {
            let plane = t_in + ci * hw;
            if VLD > 0u {
                load_channel_quads(0u, plane);
                load_channel_quads(1u, plane);
                load_channel_quads(2u, plane);
                load_channel_quads(3u, plane);
            } else {
                load_channel(0u, plane);
                load_channel(1u, plane + hw);
                load_channel(2u, plane + 2u * hw);
                load_channel(3u, plane + 3u * hw);
            }
            let krow = i32(g * k_rows + ci);
            load_weight_channel(0u, krow);
            load_weight_channel(1u, krow);
            load_weight_channel(2u, krow);
            load_weight_channel(3u, krow);
            pixel_channels(0u);
            pixel_channels(1u);
            pixel_channels(2u);
            pixel_channels(3u);
            pixel_channels(4u);
            pixel_channels(5u);
            pixel_channels(6u);
            pixel_channels(7u);
            pixel_channels(8u);
            pixel_channels(9u);
            pixel_channels(10u);
            pixel_channels(11u);
            pixel_channels(12u);
            pixel_channels(13u);
            pixel_channels(14u);
            pixel_channels(15u);
            pixel_channels(16u);
            pixel_channels(17u);
            pixel_channels(18u);
            pixel_channels(19u);
            pixel_channels(20u);
            pixel_channels(21u);
            pixel_channels(22u);
            pixel_channels(23u);
            pixel_channels(24u);
            pixel_channels(25u);
            pixel_channels(26u);
            pixel_channels(27u);
            pixel_channels(28u);
            pixel_channels(29u);
            pixel_channels(30u);
            pixel_channels(31u);
        }
    } else {
        for (var ci = 0u; ci < p.cin_g; ci++) {
            let plane = t_in + ci * hw;
            if VROW || VBLK > 0u {
                load_input_quad(0u, plane);
                load_input_quad(1u, plane);
                load_input_quad(2u, plane);
                load_input_quad(3u, plane);
                load_input_quad(4u, plane);
                load_input_quad(5u, plane);
                load_input_quad(6u, plane);
                load_input_quad(7u, plane);
                load_input_quad(8u, plane);
                load_input_quad(9u, plane);
                load_input_quad(10u, plane);
                load_input_quad(11u, plane);
                load_input_quad(12u, plane);
                load_input_quad(13u, plane);
                load_input_quad(14u, plane);
                load_input_quad(15u, plane);
                load_input_quad(16u, plane);
                load_input_quad(17u, plane);
                load_input_quad(18u, plane);
                load_input_quad(19u, plane);
            } else {
                load_row(0u, plane);
                load_row(1u, plane);
                load_row(2u, plane);
                load_row(3u, plane);
                load_row(4u, plane);
                load_row(5u, plane);
                load_row(6u, plane);
                load_row(7u, plane);
                load_row(8u, plane);
            }
            let krow = i32(g * k_rows + ci * KS * KS);
            load_weight(0u, 0u, krow);
            load_weight(0u, 1u, krow);
            load_weight(0u, 2u, krow);
            load_weight(1u, 0u, krow);
            load_weight(1u, 1u, krow);
            load_weight(1u, 2u, krow);
            load_weight(2u, 0u, krow);
            load_weight(2u, 1u, krow);
            load_weight(2u, 2u, krow);
            pixel(0u);
            pixel(1u);
            pixel(2u);
            pixel(3u);
            pixel(4u);
            pixel(5u);
            pixel(6u);
            pixel(7u);
            pixel(8u);
            pixel(9u);
            pixel(10u);
            pixel(11u);
            pixel(12u);
            pixel(13u);
            pixel(14u);
            pixel(15u);
            pixel(16u);
            pixel(17u);
            pixel(18u);
            pixel(19u);
            pixel(20u);
            pixel(21u);
            pixel(22u);
            pixel(23u);
            pixel(24u);
            pixel(25u);
            pixel(26u);
            pixel(27u);
            pixel(28u);
            pixel(29u);
            pixel(30u);
            pixel(31u);
        }
    }

    if img >= p.n {
        return;
    }
    let oc0 = g * p.cout_g + m0;
    for (var j = 0u; j < CH4; j++) {
        for (var c = 0u; c < 4u; c++) {
            let e = epilogue_value(oc0 + 4u * j + c, m0 + 4u * j + c);
            ep_s[j][c] = e.x;
            ep_b[j][c] = e.y;
        }
    }
    if VEC {
        store_group(0u, oy0, ox0, img, oc0, m0);
        store_group(1u, oy0, ox0, img, oc0, m0);
        store_group(2u, oy0, ox0, img, oc0, m0);
        store_group(3u, oy0, ox0, img, oc0, m0);
        store_group(4u, oy0, ox0, img, oc0, m0);
        store_group(5u, oy0, ox0, img, oc0, m0);
        store_group(6u, oy0, ox0, img, oc0, m0);
        store_group(7u, oy0, ox0, img, oc0, m0);
        return;
    }
    store_pixel(0u, oy0, ox0, img, oc0, m0);
    store_pixel(1u, oy0, ox0, img, oc0, m0);
    store_pixel(2u, oy0, ox0, img, oc0, m0);
    store_pixel(3u, oy0, ox0, img, oc0, m0);
    store_pixel(4u, oy0, ox0, img, oc0, m0);
    store_pixel(5u, oy0, ox0, img, oc0, m0);
    store_pixel(6u, oy0, ox0, img, oc0, m0);
    store_pixel(7u, oy0, ox0, img, oc0, m0);
    store_pixel(8u, oy0, ox0, img, oc0, m0);
    store_pixel(9u, oy0, ox0, img, oc0, m0);
    store_pixel(10u, oy0, ox0, img, oc0, m0);
    store_pixel(11u, oy0, ox0, img, oc0, m0);
    store_pixel(12u, oy0, ox0, img, oc0, m0);
    store_pixel(13u, oy0, ox0, img, oc0, m0);
    store_pixel(14u, oy0, ox0, img, oc0, m0);
    store_pixel(15u, oy0, ox0, img, oc0, m0);
    store_pixel(16u, oy0, ox0, img, oc0, m0);
    store_pixel(17u, oy0, ox0, img, oc0, m0);
    store_pixel(18u, oy0, ox0, img, oc0, m0);
    store_pixel(19u, oy0, ox0, img, oc0, m0);
    store_pixel(20u, oy0, ox0, img, oc0, m0);
    store_pixel(21u, oy0, ox0, img, oc0, m0);
    store_pixel(22u, oy0, ox0, img, oc0, m0);
    store_pixel(23u, oy0, ox0, img, oc0, m0);
    store_pixel(24u, oy0, ox0, img, oc0, m0);
    store_pixel(25u, oy0, ox0, img, oc0, m0);
    store_pixel(26u, oy0, ox0, img, oc0, m0);
    store_pixel(27u, oy0, ox0, img, oc0, m0);
    store_pixel(28u, oy0, ox0, img, oc0, m0);
    store_pixel(29u, oy0, ox0, img, oc0, m0);
    store_pixel(30u, oy0, ox0, img, oc0, m0);
    store_pixel(31u, oy0, ox0, img, oc0, m0);
}
