// A 1x1 or 3x3 convolution with stride 1 or 2 on the subgroup tile
// (common/conv_subgroup_tile.wgsl, prepended). Per input channel ci:
//   * the im2col gather: the T = (R - 1) * STRIDE + KS input row segments the tile needs
//     (STRIDE * (NBW - 1) + KS values each) are loaded cooperatively, SG values per load, one
//     per invocation, or, where the rows are a multiple of 4 wide and the tiles start
//     4-aligned (VROW), as aligned quads through x4, 4 * SG values per load (lavapipe runs each
//     storage load as a loop over the lanes: 4 loops instead of 15 for A0's 112 -> 56 tiles),
//     or, where a tile spans whole rows of another width (VBLK), as one contiguous block of
//     aligned quads (4 loops instead of 18 for A0's 14x14 -> 7x7 conv);
//     every invocation then reads the values it needs from its neighbours with
//     subgroupShuffle;
//   * the KS x KS weights of the invocation's channels: one textureLoad per tap and 4 channels;
//   * then CH4 * KS * KS vec4 FMAs per pixel.

override KS: u32 = 3u;     // kernel size: 1 or 3
override STRIDE: u32 = 1u; // 1 or 2
override R: u32 = 2u;      // output rows per tile; R * NBW <= 32 and (R - 1) * STRIDE + KS <= 9
override VROW: bool = false; // load the tile's input rows 4 values a lane, as aligned quads
                             // through x4 (rows a multiple of 4 wide, tiles starting
                             // 4-aligned: NBW * STRIDE a multiple of 4)
override OFF: u32 = 0u;      // VROW: where a tile's first input column sits in its quad,
                             // (4 - pad % 4) % 4
override VBLK: u32 = 0u;     // tiles that span whole rows (one tile a row band): the input
                             // width, the tile's input rows then being one contiguous block,
                             // loaded as aligned quads through x4 (rows of a width not a
                             // multiple of 4, such as 14); 0 elsewhere
override PADC: u32 = 0u;     // VBLK: the padding

// VROW: quad i = j * SG + lane of the tile's input rows (row i / row_quads(), quad
// i % row_quads() of it) at segq[j].
var<private> segq: array<vec4<f32>, 20>;

// Piece j of input row t of the tile for channel ci: element j * SG + lane (zero outside).
fn load_piece(t: u32, j: u32, plane: u32) {
    if t < (R - 1u) * STRIDE + KS {
        load_piece_into(t, t, j, plane);
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

@compute @workgroup_size(SG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let t = tile_start(wid, nwg, lid, lane);
    let hw = p.h * p.w;
    let k_rows = p.cin_g * KS * KS;
    // `acc` starts at zero (private variables are zero-initialised).
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
        let krow = i32(t.g * k_rows + ci * KS * KS);
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
    tile_store(t);
}
