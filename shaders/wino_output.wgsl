// Winograd F(m x m, 3x3) output transform. Entry `main` is F(2x2, 3x3) (16 positions), entry
// `f4` is F(4x4, 3x3) (36 positions); `f4_wide` and `f4_chain` (at the end of this file) are
// F(4x4) on maps of 4 tiles a row, the second chained with the next conv's input transform.
// Each invocation of `main` and `f4` reads the P products of one tile of one output channel,
// m[n, p * c + co, ty, tx] (the grouped 1x1 convolution's output, position-major channels),
// and stores the m x m outputs Y = A^T M A with the conv epilogue
// (scale, bias, residual, ReLU), skipping the rows / columns past the output's edge.
//
//   F(2x2): A^T = | 1  1  1  0 |      F(4x4): A^T = | 1  1  1  1  1  0 |
//                 | 0  1 -1 -1 |                    | 0  1 -1  2 -2  0 |
//                                                   | 0  1  1  4  4  0 |
//                                                   | 0  1 -1  8 -8  1 |

struct Params {
    total: u32, // n * c * th * tw
    c: u32,     // output channels
    oh: u32,
    ow: u32,
    th: u32, // ceil(oh / m)
    tw: u32, // ceil(ow / m)
    flags: u32,
    _pad0: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> m: array<st>;
@group(0) @binding(2) var<storage, read> scale: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<st>;
@group(0) @binding(5) var<storage, read_write> y: array<st>;

// Row a (0..4) of the tile's 4x4 products.
fn m_row(o: u32, stride: u32, a: u32) -> vec4<f32> {
    let b = o + 4u * a * stride;
    return vec4<f32>(f32(m[b]), f32(m[b + stride]), f32(m[b + 2u * stride]), f32(m[b + 3u * stride]));
}

fn store(idx: u32, value: f32, s: f32, b: f32) {
    y[idx] = st(ep_finish(fma(value, s, b), idx));
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
    let stride = p.c * loc.tiles;
    let o = (loc.img * 16u * p.c + loc.ch) * loc.tiles + loc.t;
    let m0 = m_row(o, stride, 0u);
    let m1 = m_row(o, stride, 1u);
    let m2 = m_row(o, stride, 2u);
    let m3 = m_row(o, stride, 3u);
    let s0 = m0 + m1 + m2;
    let s1 = m1 - m2 - m3;
    let sb = ep_scale_bias(loc.ch);
    let sc = sb.x;
    let bi = sb.y;
    let oy = 2u * loc.ty;
    let ox = 2u * loc.tx;
    let base = loc.plane * p.oh * p.ow + oy * p.ow + ox;
    store(base, s0.x + s0.y + s0.z, sc, bi);
    if ox + 1u < p.ow {
        store(base + 1u, s0.y - s0.z - s0.w, sc, bi);
    }
    if oy + 1u < p.oh {
        store(base + p.ow, s1.x + s1.y + s1.z, sc, bi);
        if ox + 1u < p.ow {
            store(base + p.ow + 1u, s1.y - s1.z - s1.w, sc, bi);
        }
    }
}

// F(4x4, 3x3): A^T applied to 6 values.
fn at6(m: array<f32, 6>) -> vec4<f32> {
    let sum = m[1] + m[2];
    let diff = m[1] - m[2];
    return vec4<f32>(
        m[0] + sum + m[3] + m[4],
        diff + 2.0 * (m[3] - m[4]),
        sum + 4.0 * (m[3] + m[4]),
        diff + 8.0 * (m[3] - m[4]) + m[5],
    );
}

@compute @workgroup_size(64)
fn f4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= p.total {
        return;
    }
    let loc = locate(i);
    let stride = p.c * loc.tiles;
    let o = (loc.img * 36u * p.c + loc.ch) * loc.tiles + loc.t;
    // Rows of M through A^T: am[a] = row a of M A (4 values).
    var am: array<vec4<f32>, 6>;
    for (var a = 0u; a < 6u; a++) {
        let b = o + 6u * a * stride;
        am[a] = at6(array<f32, 6>(
            f32(m[b]),
            f32(m[b + stride]),
            f32(m[b + 2u * stride]),
            f32(m[b + 3u * stride]),
            f32(m[b + 4u * stride]),
            f32(m[b + 5u * stride]),
        ));
    }
    let sb = ep_scale_bias(loc.ch);
    let sc = sb.x;
    let bi = sb.y;
    let oy = 4u * loc.ty;
    let ox = 4u * loc.tx;
    let base = loc.plane * p.oh * p.ow + oy * p.ow + ox;
    for (var j = 0u; j < 4u; j++) {
        // Column j of M A through A^T: outputs (0..4, j).
        let col = at6(array<f32, 6>(am[0][j], am[1][j], am[2][j], am[3][j], am[4][j], am[5][j]));
        if ox + j < p.ow {
            for (var r = 0u; r < 4u; r++) {
                if oy + r < p.oh {
                    store(base + r * p.ow + j, col[r], sc, bi);
                }
            }
        }
    }
}

// F(4x4) for the 4 tiles of a tile row at once, on maps W = 13 to 16 wide (4 tiles a row) whose
// planes are a multiple of 4 values, without a residual. The 4 tiles' products of a position
// are one vec4 (m4), and their 4 x W outputs are 4 whole rows of the map, W vec4s (y4): lavapipe
// runs each storage access as a loop over the lanes, so this does 36 + W loops for 4 tiles
// where `f4` does 144 + 64.
override W: u32 = 16u; // the map's width (ow), 13..=16

@group(0) @binding(6) var<storage, read> m4: array<vec4<st>>;
@group(0) @binding(7) var<storage, read_write> y4: array<vec4<st>>;

const WIDE_WG: u32 = 16u;

// wide_am[a][k]: row a of tile k's M through A (4 values).
var<private> wide_am: array<array<vec4<f32>, 4>, 6>;
// wide_y[k][r]: row r of tile k's outputs (4 values), epilogue applied.
var<private> wide_y: array<array<vec4<f32>, 4>, 4>;

fn wide_row(a: u32, o4: u32, stride4: u32) {
    var mv: array<vec4<f32>, 6>;
    for (var b = 0u; b < 6u; b++) {
        mv[b] = vec4<f32>(m4[o4 + (6u * a + b) * stride4]);
    }
    for (var k = 0u; k < 4u; k++) {
        wide_am[a][k] = at6(array<f32, 6>(mv[0][k], mv[1][k], mv[2][k], mv[3][k], mv[4][k], mv[5][k]));
    }
}

// Tile k's 4 x 4 outputs from wide_am, epilogue (scale, bias, ReLU) applied: rows r of 4.
fn wide_tile(k: u32, sb: vec2<f32>) -> array<vec4<f32>, 4> {
    var rows: array<vec4<f32>, 4>;
    for (var j = 0u; j < 4u; j++) {
        // Column j of tile k's M A through A^T: its outputs (0..4, j).
        let col = at6(array<f32, 6>(wide_am[0][k][j], wide_am[1][k][j], wide_am[2][k][j], wide_am[3][k][j], wide_am[4][k][j], wide_am[5][k][j]));
        for (var r = 0u; r < 4u; r++) {
            var v = fma(col[r], sb.x, sb.y);
            if (p.flags & FLAG_RELU) != 0u {
                v = max(v, 0.0);
            }
            rows[r][j] = v;
        }
    }
    return rows;
}

// Quad q of the 4 x W strip (values 4 q .. 4 q + 4 in row-major order), stored where its rows
// are inside the output.
fn wide_store(q: u32, base4: u32, row0: u32) {
    if q < W && row0 + (4u * q + 3u) / W < p.oh {
        var v: vec4<f32>;
        for (var e = 0u; e < 4u; e++) {
            let f = 4u * q + e;
            let c = f % W;
            v[e] = wide_y[c / 4u][f / W][c % 4u];
        }
        y4[base4 + q] = vec4<st>(v);
    }
}

@compute @workgroup_size(16)
fn f4_wide(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    // Invocation i: tile row ty of plane n * c + ch.
    let i = gid.x + gid.y * nwg.x * WIDE_WG;
    if 4u * i >= p.total {
        return;
    }
    let plane = i / p.th;
    let ty = i - plane * p.th;
    let img = plane / p.c;
    let ch = plane - img * p.c;
    let tiles = 4u * p.th;
    let stride4 = p.c * p.th; // one position's channels, in vec4s
    let o4 = ((img * 36u * p.c + ch) * tiles + 4u * ty) / 4u;
    wide_row(0u, o4, stride4);
    wide_row(1u, o4, stride4);
    wide_row(2u, o4, stride4);
    wide_row(3u, o4, stride4);
    wide_row(4u, o4, stride4);
    wide_row(5u, o4, stride4);
    let sb = ep_scale_bias(ch);
    for (var k = 0u; k < 4u; k++) {
        wide_y[k] = wide_tile(k, sb);
    }
    let row0 = 4u * ty;
    let base4 = (plane * p.oh * W + row0 * W) / 4u;
    wide_store(0u, base4, row0);
    wide_store(1u, base4, row0);
    wide_store(2u, base4, row0);
    wide_store(3u, base4, row0);
    wide_store(4u, base4, row0);
    wide_store(5u, base4, row0);
    wide_store(6u, base4, row0);
    wide_store(7u, base4, row0);
    wide_store(8u, base4, row0);
    wide_store(9u, base4, row0);
    wide_store(10u, base4, row0);
    wide_store(11u, base4, row0);
    wide_store(12u, base4, row0);
    wide_store(13u, base4, row0);
    wide_store(14u, base4, row0);
    wide_store(15u, base4, row0);
}

// F(4x4) output transform chained with the next conv's F(4x4) input transform, on maps
// 13 to 16 wide and tall (4 x 4 tiles) whose planes are a multiple of 4 values, where the map
// goes nowhere else and there is no residual: one invocation per (image, channel) plane turns
// the conv's products (m4) into the next conv's transformed input (v4, same [N, 36 C, 4, 4]
// layout as `wino_input.wgsl`'s), without storing the map. One dispatch instead of two, and
// 144 + 144 vec4 accesses per plane instead of (36 + W) * 4 + (25 + 36) * 4.
@group(0) @binding(8) var<storage, read_write> v4: array<vec4<st>>;

// The plane's map (rows 0..16, columns 0..16: chain_y[4 row + k] = columns 4k .. 4k + 4),
// epilogue applied, zero past the map's edge (the next conv's padding).
var<private> chain_y: array<vec4<f32>, 64>;

// Output tile row ty: map rows 4 ty .. 4 ty + 4.
fn chain_out_row(ty: u32, o4: u32, stride4: u32, sb: vec2<f32>) {
    // wide_am[a][k]: row a of tile k's M through A, for positions 6a .. 6a + 6.
    wide_row(0u, o4 + ty, stride4);
    wide_row(1u, o4 + ty, stride4);
    wide_row(2u, o4 + ty, stride4);
    wide_row(3u, o4 + ty, stride4);
    wide_row(4u, o4 + ty, stride4);
    wide_row(5u, o4 + ty, stride4);
    for (var k = 0u; k < 4u; k++) {
        let rows = wide_tile(k, sb);
        for (var r = 0u; r < 4u; r++) {
            // Columns past the map's width and rows past its height are the next conv's
            // padding.
            let inside = vec4<u32>(4u * k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(W);
            chain_y[4u * (4u * ty + r) + k] = select(vec4<f32>(0.0), rows[r], inside & vec4<bool>(4u * ty + r < p.oh));
        }
    }
}

// Map value (row, column), zero outside rows 0..16 and columns 0..16.
fn chain_at(row: i32, col: i32) -> f32 {
    if row < 0 || row >= 16 || col < 0 || col >= 16 {
        return 0.0;
    }
    return chain_y[4 * row + col / 4][col % 4];
}

// B^T applied to 6 values (as in wino_input.wgsl).
fn chain_bt6(d: array<f32, 6>) -> array<f32, 6> {
    return array<f32, 6>(
        4.0 * d[0] - 5.0 * d[2] + d[4],
        d[3] + d[4] - 4.0 * (d[1] + d[2]),
        4.0 * (d[1] - d[2]) + d[4] - d[3],
        2.0 * (d[3] - d[1]) + d[4] - d[2],
        2.0 * (d[1] - d[3]) + d[4] - d[2],
        4.0 * d[1] - 5.0 * d[3] + d[5],
    );
}

// Input tile row ty of the next conv: the 6 x 18 strip of map rows 4 ty - 1 .. 4 ty + 5 and
// columns -1 .. 17 through B^T d B, the 4 tiles of a position stored as one vec4.
fn chain_in_row(ty: u32, vo4: u32, stride4: u32) {
    // cols[j]: strip column j through B^T.
    var cols: array<array<f32, 6>, 18>;
    let r0 = 4 * i32(ty) - 1;
    for (var j = 0; j < 18; j++) {
        cols[j] = chain_bt6(array<f32, 6>(
            chain_at(r0, j - 1),
            chain_at(r0 + 1, j - 1),
            chain_at(r0 + 2, j - 1),
            chain_at(r0 + 3, j - 1),
            chain_at(r0 + 4, j - 1),
            chain_at(r0 + 5, j - 1),
        ));
    }
    for (var a = 0u; a < 6u; a++) {
        var t: array<array<f32, 6>, 4>;
        for (var k = 0u; k < 4u; k++) {
            t[k] = chain_bt6(array<f32, 6>(cols[4u * k][a], cols[4u * k + 1u][a], cols[4u * k + 2u][a], cols[4u * k + 3u][a], cols[4u * k + 4u][a], cols[4u * k + 5u][a]));
        }
        for (var b = 0u; b < 6u; b++) {
            v4[vo4 + ty + (6u * a + b) * stride4] = vec4<st>(vec4<f32>(t[0][b], t[1][b], t[2][b], t[3][b]));
        }
    }
}

@compute @workgroup_size(8)
fn f4_chain(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    // Invocation i: plane i = n * c + ch (total counts tiles: 16 per plane).
    let plane = gid.x + gid.y * nwg.x * 8u;
    if 16u * plane >= p.total {
        return;
    }
    let img = plane / p.c;
    let ch = plane - img * p.c;
    let stride4 = p.c * 4u; // one position's channels, in vec4s (16 tiles a plane)
    let o4 = (img * 36u * p.c + ch) * 4u;
    let sb = ep_scale_bias(ch);
    // In an order that keeps few map rows live: input tile row ty needs output tile rows up to
    // ty + 1.
    chain_out_row(0u, o4, stride4, sb);
    chain_out_row(1u, o4, stride4, sb);
    chain_in_row(0u, o4, stride4);
    chain_out_row(2u, o4, stride4, sb);
    chain_in_row(1u, o4, stride4);
    chain_out_row(3u, o4, stride4, sb);
    chain_in_row(2u, o4, stride4);
    chain_in_row(3u, o4, stride4);
}
