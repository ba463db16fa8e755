// The tile both subgroup convolutions share (prepended to conv_subgroup_direct.wgsl and
// conv_subgroup_flat.wgsl, after the prelude and the epilogue): an implicit GEMM shared through
// subgroup registers, for adapters with subgroups of at least 8 invocations (the main path on
// CPU adapters such as lavapipe, where workgroup memory is slow; conv_gemm.wgsl is the path for
// GPUs).
//
//   Y[m, q] = sum_k A[m, k] * B[k, q]   m: output channel, q: output pixel, k: (ci, ky, kx)
//
// A workgroup is one full subgroup of SG invocations (the adapter's subgroup size, at least 8)
// and computes a tile of 4 * CH4 * SG output channels x (R rows x NBW columns) output pixels:
// each invocation owns 4 * CH4 channels (CH4 = 2 or 3 vec4 accumulators per pixel, chosen per
// layer to pad the channels least) of all R * NBW pixels (at most 32, and R * NBW * CH4 <= 64),
// held in registers. The input values a tile needs are loaded cooperatively, one value (or one
// quad) per invocation, and every invocation reads the values it needs from its neighbours
// with subgroupShuffle. The weights of the invocation's channels come from a read-only storage
// texture laid out at upload as rows k = (g, ci, ky, kx) of m_pad / 4 rgba32float texels
// (rgba16float in the f16 form): one textureLoad, 4 channels. Each shader declares R, KS and
// STRIDE (constants in the flat one) and its own `main`, which calls `tile_start`, runs its K
// loop and ends with `tile_store`.
//
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

override NBW: u32 = 16u;   // output columns per tile, 1..=32
override SG: u32 = 8u;     // invocations per workgroup: the subgroup size, at least 8
override CH4: u32 = 2u;    // vec4 accumulators per pixel: 2 or 3 (8 or 12 channels per
                           // invocation); R * NBW * CH4 <= 64
override VEC: bool = false; // store 4 pixels of a channel at once through y4: where every
                            // row of 4 pixels is whole and 4-aligned (NBW, the output row and
                            // plane multiples of 4) and there is no residual

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
// The same buffer as x, 4 values an element (the shaders' vec4 load paths).
@group(0) @binding(8) var<storage, read> x4: array<vec4<st>>;

// Per invocation: accumulators [pixel][CH4], the loaded row segments [row][piece], the weights
// of one input channel [ky][kx][CH4].
var<private> acc: array<vec4<f32>, 64>;
var<private> seg: array<f32, 81>;
var<private> wk: array<vec4<f32>, 27>;

// Tile geometry and the invocation's place in it, set once by tile_start.
var<private> t_in: u32;      // offset of (image, group's first channel) in x
var<private> t_iy0: i32;     // first input row of the tile
var<private> t_ix0: i32;     // first input column of the tile
var<private> t_lane: u32;
var<private> t_tex_x: i32;   // first of the invocation's two texels in a weight row

const ROW_PIECES: u32 = 9u;

// The workgroup's tile: image, group, the invocation's first channel inside the group, and the
// output's first row and column.
struct Tile {
    img: u32,
    g: u32,
    m0: u32,
    oy0: u32,
    ox0: u32,
}

// Where workgroup `wid` works; sets the t_* geometry of the invocation.
fn tile_start(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, lane: u32) -> Tile {
    let tile = wid.x + wid.y * nwg.x;
    let bx = tile % p.blocks_x;
    let by = (tile / p.blocks_x) % p.blocks_y;
    var t: Tile;
    t.img = tile / (p.blocks_x * p.blocks_y);
    t.g = wid.z / p.m_tiles;
    // This invocation's channels inside the group: m0 .. m0 + 4 * CH4.
    t.m0 = (wid.z % p.m_tiles) * 4u * CH4 * SG + lid * 4u * CH4;
    t.oy0 = by * R;
    t.ox0 = bx * NBW;
    t_in = (min(t.img, p.n - 1u) * p.cin + t.g * p.cin_g) * p.h * p.w;
    t_iy0 = i32(t.oy0 * STRIDE) - i32(p.pad);
    t_ix0 = i32(t.ox0 * STRIDE) - i32(p.pad);
    t_lane = lane;
    t_tex_x = i32(t.m0 / 4u);
    return t;
}

// Piece j of input row t of the tile, kept in row `slot` of `seg`: element j * SG + lane of
// the row segment (zero outside the image).
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

// The CH4 texels (4 channels each) of the invocation's channels in weight row `row`, at wk[wi ..].
fn load_texels(wi: u32, row: i32) {
    wk[wi] = textureLoad(wtex, vec2<i32>(t_tex_x, row));
    wk[wi + 1u] = textureLoad(wtex, vec2<i32>(t_tex_x + 1, row));
    if CH4 > 2u {
        wk[wi + 2u] = textureLoad(wtex, vec2<i32>(t_tex_x + 2, row));
    }
}

// Scale and bias of the invocation's channels m0 + 4 j .. m0 + 4 j + 4, j < CH4.
var<private> ep_s: array<vec4<f32>, 3>;
var<private> ep_b: array<vec4<f32>, 3>;

// Channels m0 + 4 j .. m0 + 4 j + 4 of pixel q, j < CH4.
fn store_quad(q: u32, j: u32, base: u32, ohw: u32, m0: u32) {
    if j < CH4 {
        let v = fma(acc[CH4 * q + j], ep_s[j], ep_b[j]);
        for (var c = 0u; c < 4u; c++) {
            if m0 + 4u * j + c < p.cout_g {
                let i = base + (4u * j + c) * ohw;
                y[i] = st(ep_finish(v[c], i));
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
        let v = fma(a, vec4<f32>(ep_s[j][c]), vec4<f32>(ep_b[j][c]));
        y4[at / 4u] = vec4<st>(ep_relu4(v));
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

// (scale, bias) of channel oc, the group's channel m: identity past the group's channels.
fn epilogue_value(oc: u32, m: u32) -> vec2<f32> {
    if m < p.cout_g {
        return ep_scale_bias(oc);
    }
    return vec2<f32>(1.0, 0.0);
}

// The tile's outputs from the accumulators, through the epilogue.
fn tile_store(t: Tile) {
    if t.img >= p.n {
        return;
    }
    let oc0 = t.g * p.cout_g + t.m0;
    let m0 = t.m0;
    let oy0 = t.oy0;
    let ox0 = t.ox0;
    let img = t.img;
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
