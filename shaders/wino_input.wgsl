// Winograd F(m x m, 3x3) input transform, for a 3x3 convolution with stride 1 and padding 1.
// Entry `main` is F(2x2, 3x3) (m = 2, 4x4 patches, P = 16 positions), entry `f4` is
// F(4x4, 3x3) (m = 4, 6x6 patches, P = 36). Each invocation takes the (m + 2)^2 input patch of
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

// Storage element type: f32 here; the f16 build (Precision::F16) makes it f16 and prepends
// `enable f16;`. Loads convert to f32 (`f32(..)`), stores round (`st(..)`); arithmetic is f32.
alias st = f32;

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
        let col = bt6(array<f32, 6>(
            at(base, iy0, ix0 + j),
            at(base, iy0 + 1, ix0 + j),
            at(base, iy0 + 2, ix0 + j),
            at(base, iy0 + 3, ix0 + j),
            at(base, iy0 + 4, ix0 + j),
            at(base, iy0 + 5, ix0 + j),
        ));
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
