// A 1x1 stride-1 convolution without padding (the product of a Winograd conv, a 1x1 branch) on
// the subgroup tile (common/conv_subgroup_tile.wgsl, prepended): the map is dispatched as one
// row of h * w pixels, so that its tiles fill up whatever the map's shape, and the K loop takes
// KU input channels per iteration, summing their products before adding them to the
// accumulators (see pixel_channels). Where the tile and the plane are multiples of 4 pixels it
// loads 4 pixels a lane (VLD, through x4, a vec4 view of the input): lavapipe runs each storage
// load as a loop over the lanes, so a 16-pixel tile's 4 channels take 2 load loops, not 8.

const KS: u32 = 1u;
const STRIDE: u32 = 1u;
const R: u32 = 1u;

override VLD: u32 = 0u; // input channels per vec4 load through x4, 0 for scalar loads; where
                        // NBW and the plane are multiples of 4, each lane loads 4 pixels of a
                        // channel (NBW / 4 lanes a channel)
override KU: u32 = 1u;  // input channels per K-loop iteration: 1, 2 or 4, dividing cin_g

// VLD: load l holds pixels 4 (lane % (NBW / 4)) .. + 4 of input channel l * VLD + lane / (NBW / 4).
var<private> segv: array<vec4<f32>, 4>;

// The tile's row of input channel ci + u, kept in row u of `seg`.
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

// The weights of input channel ci + u, at wk[3 u ..].
fn load_weight_channel(u: u32, krow: i32) {
    if u < KU {
        load_texels(3u * u, krow + i32(u));
    }
}

// The products of input channel ci + u with pixel q, added to s (the first channel's set s:
// no add of zeros).
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

// Pixel q's products with KU input channels, summed before they reach the accumulators. The K
// loop is a loop the driver may not prove uniform, so lavapipe blends every write of a
// loop-carried value with the loop's mask; one accumulator write per KU products instead of one
// per product is the point of KU.
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

@compute @workgroup_size(SG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let t = tile_start(wid, nwg, lid, lane);
    let hw = p.h * p.w;
    let k_rows = p.cin_g;
    // `acc` starts at zero (private variables are zero-initialised).
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
        let krow = i32(t.g * k_rows + ci);
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
    tile_store(t);
}
