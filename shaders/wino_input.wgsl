// Winograd F(m x m, 3x3) input transform, for a 3x3 convolution with stride 1 and padding 1.
// Entry `main` is F(2x2, 3x3) (m = 2, 4x4 patches, P = 16 positions), entry `f4` is
// F(4x4, 3x3) (m = 4, 6x6 patches, P = 36), and `f4_wide` the same for 4 tiles per invocation
// (at the end of this file). Each invocation takes the (m + 2)^2 input patch of
// one m x m output tile of one channel (origin (m * ty - 1, m * tx - 1), zeros outside the
// image) and writes its P transformed values V = B^T d B, one per position
// p = (m + 2) * row + column:
//
//   v[n, p * c + ci, ty, tx]       (a [N, P * C, TH, TW] tensor: position-major channels)
//
// so that the P products U_p V_p become one grouped 1x1 convolution (group = position).
//
//   F(2x2): B^T = | 1  0 -1  0 |      F(4x4): B^T = | 4  0 -5  0  1  0 |
//                 | 0  1  1  0 |                    | 0 -4 -4  1  1  0 |
//                 | 0 -1  1  0 |                    | 0  4 -4 -1  1  0 |
//                 | 0  1  0 -1 |                    | 0 -2 -1  2  1  0 |
//                                                   | 0  2 -1 -2  1  0 |
//                                                   | 0  4  0 -5  0  1 |

struct Params {
    total: u32, // n * c * th * tw
    c: u32,
    h: u32,
    w: u32,
    th: u32, // ceil(h / m)
    tw: u32, // ceil(w / m)
    _pad0: u32,
    _pad1: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<st>;
@group(0) @binding(2) var<storage, read_write> v: array<st>;
// The same buffer as v, 4 values an element (entry f4_wide only).
@group(0) @binding(3) var<storage, read_write> v4: array<vec4<st>>;
// The same buffer as x, 4 values an element (entry f4_wide, W > 0 only).
@group(0) @binding(4) var<storage, read> x4: array<vec4<st>>;

// Row r (0..4) of the patch whose top-left corner is (iy0, ix0) of the plane at `base`.
fn patch_row(base: u32, iy: i32, ix0: i32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    if iy < 0 || iy >= i32(p.h) {
        return r;
    }
    let row = base + u32(iy) * p.w;
    for (var j = 0; j < 4; j++) {
        let ix = ix0 + j;
        if ix >= 0 && ix < i32(p.w) {
            r[j] = f32(x[row + u32(ix)]);
        }
    }
    return r;
}

// B^T applied to the 4 entries of a vector (one column, or, transposed, one row).
fn bt(d: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(d.x - d.z, d.y + d.z, d.z - d.y, d.y - d.w);
}

// Where invocation i works: tile t = (ty, tx) of plane n * c + ch (image img, channel ch).
struct TileAt {
    tiles: u32,
    t: u32,
    plane: u32,
    img: u32,
    ch: u32,
    ty: u32,
    tx: u32,
}

fn locate(i: u32) -> TileAt {
    let tiles = p.th * p.tw;
    let t = i % tiles;
    let plane = i / tiles;
    let img = plane / p.c;
    let ty = t / p.tw;
    return TileAt(tiles, t, plane, img, plane - img * p.c, ty, t - ty * p.tw);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= p.total {
        return;
    }
    let loc = locate(i);
    let iy0 = i32(2u * loc.ty) - 1;
    let ix0 = i32(2u * loc.tx) - 1;
    let base = loc.plane * p.h * p.w;
    // Rows of B^T d: combinations of the patch rows.
    let d0 = patch_row(base, iy0, ix0);
    let d1 = patch_row(base, iy0 + 1, ix0);
    let d2 = patch_row(base, iy0 + 2, ix0);
    let d3 = patch_row(base, iy0 + 3, ix0);
    let r0 = bt(vec4<f32>(d0 - d2));
    let r1 = bt(vec4<f32>(d1 + d2));
    let r2 = bt(vec4<f32>(d2 - d1));
    let r3 = bt(vec4<f32>(d1 - d3));
    // Position (row a, column b) goes to channel (4a + b) * c + loc.ch of image loc.img.
    let stride = p.c * loc.tiles;
    let o = (loc.img * 16u * p.c + loc.ch) * loc.tiles + loc.t;
    v[o] = st(r0.x);
    v[o + stride] = st(r0.y);
    v[o + 2u * stride] = st(r0.z);
    v[o + 3u * stride] = st(r0.w);
    v[o + 4u * stride] = st(r1.x);
    v[o + 5u * stride] = st(r1.y);
    v[o + 6u * stride] = st(r1.z);
    v[o + 7u * stride] = st(r1.w);
    v[o + 8u * stride] = st(r2.x);
    v[o + 9u * stride] = st(r2.y);
    v[o + 10u * stride] = st(r2.z);
    v[o + 11u * stride] = st(r2.w);
    v[o + 12u * stride] = st(r3.x);
    v[o + 13u * stride] = st(r3.y);
    v[o + 14u * stride] = st(r3.z);
    v[o + 15u * stride] = st(r3.w);
}

// F(4x4, 3x3): B^T applied to 6 values (one column of the patch, or one row of B^T d).
fn bt6(d: array<f32, 6>) -> array<f32, 6> {
    return array<f32, 6>(
        4.0 * d[0] - 5.0 * d[2] + d[4],
        d[3] + d[4] - 4.0 * (d[1] + d[2]),
        4.0 * (d[1] - d[2]) + d[4] - d[3],
        2.0 * (d[3] - d[1]) + d[4] - d[2],
        2.0 * (d[1] - d[3]) + d[4] - d[2],
        4.0 * d[1] - 5.0 * d[3] + d[5],
    );
}

// Value (iy, ix) of the plane at `base`, zero outside the image.
fn at(base: u32, iy: i32, ix: i32) -> f32 {
    if iy < 0 || iy >= i32(p.h) || ix < 0 || ix >= i32(p.w) {
        return 0.0;
    }
    return f32(x[base + u32(iy) * p.w + u32(ix)]);
}

// Column ix of the 6-row patch from row iy0 of the plane at `base`, through B^T.
fn patch_column(base: u32, iy0: i32, ix: i32) -> array<f32, 6> {
    return bt6(array<f32, 6>(
        at(base, iy0, ix),
        at(base, iy0 + 1, ix),
        at(base, iy0 + 2, ix),
        at(base, iy0 + 3, ix),
        at(base, iy0 + 4, ix),
        at(base, iy0 + 5, ix),
    ));
}

@compute @workgroup_size(64)
fn f4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= p.total {
        return;
    }
    let loc = locate(i);
    let iy0 = i32(4u * loc.ty) - 1;
    let ix0 = i32(4u * loc.tx) - 1;
    let base = loc.plane * p.h * p.w;
    // Columns of the patch through B^T: bd[a][j] = (B^T d)[a][j].
    var bd: array<array<f32, 6>, 6>;
    for (var j = 0; j < 6; j++) {
        let col = patch_column(base, iy0, ix0 + j);
        for (var a = 0; a < 6; a++) {
            bd[a][j] = col[a];
        }
    }
    // Rows of B^T d through B^T: position (a, b) goes to channel (6a + b) * c + loc.ch.
    let stride = p.c * loc.tiles;
    let o = (loc.img * 36u * p.c + loc.ch) * loc.tiles + loc.t;
    for (var a = 0u; a < 6u; a++) {
        let row = bt6(bd[a]);
        for (var b = 0u; b < 6u; b++) {
            v[o + (6u * a + b) * stride] = st(row[b]);
        }
    }
}

// F(4x4) for 4 horizontally adjacent tiles per invocation, on maps whose tile rows are a
// multiple of 4 tiles (tw % 4 == 0): the same values as `f4`, stored 4 tiles at once through v4.
// lavapipe runs each storage store as a loop over the lanes with all components inside, so this
// does 36 store loops for 4 tiles where `f4` does 144; the 6 x 18 strip the 4 patches share is
// loaded once (108 loads for 4 tiles, not 144), and on maps 13 to 16 wide with planes of whole
// vec4s, whose strips are 6 whole rows, as 25 aligned quads (W > 0).
const WIDE_WG: u32 = 16u;

var<private> wide_cols: array<array<f32, 6>, 18>;

// Maps 13 to 16 wide (4 tiles a row) whose planes are whole vec4s: the map's width, and the
// strip's 6 rows, W values each and contiguous in x, are loaded as aligned quads (25 vec4 loads
// instead of 108 scalar ones). 0 elsewhere.
override W: u32 = 0u;

// Where the strip's first value sits in its quad: the strip starts at row 4 ty - 1.
fn strip_offset() -> u32 {
    return (4u - W % 4u) % 4u;
}

// The strip's quads, and whether each of its rows is inside the map.
var<private> wide_q: array<vec4<f32>, 25>;
var<private> wide_row_in: array<bool, 6>;

fn wide_quad(k: u32, first: i32, last: i32) {
    if k < (strip_offset() + 6u * W + 3u) / 4u {
        wide_q[k] = vec4<f32>(x4[u32(clamp(first + i32(k), 0, last))]);
    }
}

// Value (r, c) of the strip, zero outside the map (c = -1 and c >= W are the padding).
fn strip_value(r: u32, c: i32) -> f32 {
    if c < 0 || c >= i32(W) {
        return 0.0;
    }
    let f = strip_offset() + r * W + u32(c);
    return select(0.0, wide_q[f / 4u][f % 4u], wide_row_in[r]);
}

// Column j of the strip (rows iy0 .. iy0 + 6, column ix0 + j) through B^T.
fn wide_column(j: u32, base: u32, iy0: i32, ix0: i32) {
    if W > 0u {
        let c = i32(j) - 1; // ix0 = -1: one tile row per invocation
        wide_cols[j] = bt6(array<f32, 6>(
            strip_value(0u, c),
            strip_value(1u, c),
            strip_value(2u, c),
            strip_value(3u, c),
            strip_value(4u, c),
            strip_value(5u, c),
        ));
    } else {
        wide_cols[j] = patch_column(base, iy0, ix0 + i32(j));
    }
}

// Row a of B^T d through B^T for the 4 tiles (tile k: strip columns 4k .. 4k + 6); position
// (a, b) of the 4 tiles goes to v4[(o + (6a + b) * stride) / 4].
fn wide_row(a: u32, o: u32, stride: u32) {
    let r0 = bt6(array<f32, 6>(wide_cols[0][a], wide_cols[1][a], wide_cols[2][a], wide_cols[3][a], wide_cols[4][a], wide_cols[5][a]));
    let r1 = bt6(array<f32, 6>(wide_cols[4][a], wide_cols[5][a], wide_cols[6][a], wide_cols[7][a], wide_cols[8][a], wide_cols[9][a]));
    let r2 = bt6(array<f32, 6>(wide_cols[8][a], wide_cols[9][a], wide_cols[10][a], wide_cols[11][a], wide_cols[12][a], wide_cols[13][a]));
    let r3 = bt6(array<f32, 6>(wide_cols[12][a], wide_cols[13][a], wide_cols[14][a], wide_cols[15][a], wide_cols[16][a], wide_cols[17][a]));
    v4[(o + (6u * a + 0u) * stride) / 4u] = vec4<st>(vec4<f32>(r0[0], r1[0], r2[0], r3[0]));
    v4[(o + (6u * a + 1u) * stride) / 4u] = vec4<st>(vec4<f32>(r0[1], r1[1], r2[1], r3[1]));
    v4[(o + (6u * a + 2u) * stride) / 4u] = vec4<st>(vec4<f32>(r0[2], r1[2], r2[2], r3[2]));
    v4[(o + (6u * a + 3u) * stride) / 4u] = vec4<st>(vec4<f32>(r0[3], r1[3], r2[3], r3[3]));
    v4[(o + (6u * a + 4u) * stride) / 4u] = vec4<st>(vec4<f32>(r0[4], r1[4], r2[4], r3[4]));
    v4[(o + (6u * a + 5u) * stride) / 4u] = vec4<st>(vec4<f32>(r0[5], r1[5], r2[5], r3[5]));
}

@compute @workgroup_size(16)
fn f4_wide(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WIDE_WG;
    if 4u * i >= p.total {
        return;
    }
    // Invocation i: tiles 4 g .. 4 g + 4 of tile row ty of plane n * c + ch.
    let quads = p.tw / 4u;
    let tiles = p.th * p.tw;
    let plane = i / (p.th * quads);
    let r = i - plane * p.th * quads;
    let ty = r / quads;
    let g = r - ty * quads;
    let img = plane / p.c;
    let ch = plane - img * p.c;
    let iy0 = i32(4u * ty) - 1;
    let ix0 = i32(16u * g) - 1;
    let base = plane * p.h * p.w;
    if W > 0u {
        // The strip's first quad: base + iy0 * W - strip_offset() is a multiple of 4.
        let first = (i32(base) + iy0 * i32(W) - i32(strip_offset())) / 4;
        let last = i32(arrayLength(&x4)) - 1;
        wide_quad(0u, first, last);
        wide_quad(1u, first, last);
        wide_quad(2u, first, last);
        wide_quad(3u, first, last);
        wide_quad(4u, first, last);
        wide_quad(5u, first, last);
        wide_quad(6u, first, last);
        wide_quad(7u, first, last);
        wide_quad(8u, first, last);
        wide_quad(9u, first, last);
        wide_quad(10u, first, last);
        wide_quad(11u, first, last);
        wide_quad(12u, first, last);
        wide_quad(13u, first, last);
        wide_quad(14u, first, last);
        wide_quad(15u, first, last);
        wide_quad(16u, first, last);
        wide_quad(17u, first, last);
        wide_quad(18u, first, last);
        wide_quad(19u, first, last);
        wide_quad(20u, first, last);
        wide_quad(21u, first, last);
        wide_quad(22u, first, last);
        wide_quad(23u, first, last);
        wide_quad(24u, first, last);
        for (var r = 0; r < 6; r++) {
            wide_row_in[r] = iy0 + r >= 0 && iy0 + r < i32(p.h);
        }
    }
    wide_column(0u, base, iy0, ix0);
    wide_column(1u, base, iy0, ix0);
    wide_column(2u, base, iy0, ix0);
    wide_column(3u, base, iy0, ix0);
    wide_column(4u, base, iy0, ix0);
    wide_column(5u, base, iy0, ix0);
    wide_column(6u, base, iy0, ix0);
    wide_column(7u, base, iy0, ix0);
    wide_column(8u, base, iy0, ix0);
    wide_column(9u, base, iy0, ix0);
    wide_column(10u, base, iy0, ix0);
    wide_column(11u, base, iy0, ix0);
    wide_column(12u, base, iy0, ix0);
    wide_column(13u, base, iy0, ix0);
    wide_column(14u, base, iy0, ix0);
    wide_column(15u, base, iy0, ix0);
    wide_column(16u, base, iy0, ix0);
    wide_column(17u, base, iy0, ix0);
    let stride = p.c * tiles;
    let o = (img * 36u * p.c + ch) * tiles + ty * p.tw + 4u * g;
    wide_row(0u, o, stride);
    wide_row(1u, o, stride);
    wide_row(2u, o, stride);
    wide_row(3u, o, stride);
    wide_row(4u, o, stride);
    wide_row(5u, o, stride);
}
