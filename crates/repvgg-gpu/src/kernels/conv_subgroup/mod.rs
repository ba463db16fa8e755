//! `common/conv_subgroup_tile.wgsl`, the tile of the two subgroup convolutions: implicit GEMM
//! sharing the im2col tile through subgroup shuffles, weights in a read-only storage texture
//! (rgba32float, rgba16float in f16). Needs subgroups of at least 8 invocations, kernel size 1
//! or 3, stride 1 or 2. One full subgroup a workgroup, 8 or 12 channels x up to 32 pixels an
//! invocation. Here: the parameters both shaders read, where the kernel fits, the weight
//! layout, the tile and the store; a 1x1 stride-1 conv without padding (a Winograd product)
//! runs [`flat`] (`conv_subgroup_flat.wgsl`: its map as one row, `KU` input channels a K step),
//! every other conv [`direct`] (`conv_subgroup_direct.wgsl`), each file with the rules of its
//! load paths. The rules and the measurements behind them: docs/gpu.md, "Measured figures
//! behind the rules".

pub(crate) mod direct;
pub(crate) mod flat;

use ndarray::ArrayView4;
use repvgg_math::ConvSpec;

use super::{ConvShape, DispatchSpec, WeightData, check_z, gemm_weight_layout, grid, params, u};
use crate::caps::Caps;
use crate::error::Result;
use crate::shader::Shader;

params! {
    /// `common/conv_subgroup_tile.wgsl`, the `Params` of both subgroup shaders.
    ConvSubgroupParams for Shader::ConvSubgroupDirect, Shader::ConvSubgroupFlat => {
        n, cin, h, w, cout, oh, ow, pad, cin_g, cout_g, flags, blocks_x, blocks_y, m_tiles,
        _pad0, _pad1,
    }
}

/// vec4 accumulators per invocation (pixels x `CH4`).
const SUBGROUP_ACC: usize = 64;

/// How one conv runs on this kernel, fixed at upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Config {
    pub m_tiles: usize,
    pub sg: usize,
    /// vec4 accumulators per pixel (`CH4`, 2 or 3): 4 * ch4 channels per invocation.
    pub ch4: usize,
}

/// Whether the kernel can run `spec` on `caps`' adapter with `ch4` accumulators per pixel (the
/// rule, [`subgroup_ch4`], where `None`): subgroups of at least 8, kernel size 1 or 3, stride 1
/// or 2, and the weight texture within the adapter's texture size.
pub(crate) fn fits(caps: &Caps, spec: &ConvSpec, ch4: Option<usize>) -> bool {
    let cout_g = spec.out_channels / spec.groups;
    let k_rows = spec.in_channels * spec.kernel_size * spec.kernel_size;
    let sg = caps.subgroup_min.unwrap_or(8) as usize;
    let ch4 = ch4.unwrap_or_else(|| subgroup_ch4(cout_g, sg));
    let m = 4 * ch4 * sg;
    let width = cout_g.div_ceil(m) * m / 4;
    let max_dim = caps.max_texture_dim as usize;
    caps.subgroup_min.is_some_and(|s| s >= 8)
        && matches!(spec.kernel_size, 1 | 3)
        && matches!(spec.stride, 1 | 2)
        && width <= max_dim
        && k_rows <= max_dim
}

/// The configuration for `spec` on subgroups of `caps` with `ch4` accumulators per pixel (the
/// rule, [`subgroup_ch4`], where `None`) and its weights in the texture layout it reads.
pub(crate) fn prepare(
    spec: &ConvSpec,
    weight: ArrayView4<'_, f32>,
    caps: &Caps,
    ch4: Option<usize>,
) -> (Config, WeightData) {
    let sg = caps.subgroup_min.unwrap_or(8) as usize;
    let ch4 = ch4.unwrap_or_else(|| subgroup_ch4(spec.out_channels / spec.groups, sg));
    let (data, m_pad, _) = gemm_weight_layout(&weight, spec, 4 * ch4 * sg, 1);
    let height = data.len() / m_pad;
    let config = Config {
        m_tiles: m_pad / (4 * ch4 * sg),
        sg,
        ch4,
    };
    let texture = WeightData::Texture {
        data,
        width: m_pad / 4,
        height,
    };
    (config, texture)
}

/// Pipeline, parameters and workgroups of a conv.
pub(crate) fn dispatch(c: Config, s: ConvShape<'_>, max_dim: u32) -> Result<DispatchSpec> {
    let Config { m_tiles, sg, ch4 } = c;
    let spec = s.spec;
    let [n, cin, h, w] = s.x;
    let [_, cout, oh, ow] = s.y;
    let (cin_g, cout_g, ks) = (cin / spec.groups, cout / spec.groups, spec.kernel_size);
    // A 1x1 stride-1 conv without padding reads each pixel once: its map as one row (the same
    // memory) fills the tiles whatever the map's shape.
    let flat = ks == 1 && spec.stride == 1 && spec.padding == 0;
    let (h, w, oh, ow) = if flat {
        (1, h * w, 1, oh * ow)
    } else {
        (h, w, oh, ow)
    };
    let (nbw, rows) = subgroup_tile(ow, oh, ks, spec.stride, ch4);
    let (blocks_x, blocks_y) = (ow.div_ceil(nbw), oh.div_ceil(rows));
    let p = ConvSubgroupParams {
        n: u(n),
        cin: u(cin),
        h: u(h),
        w: u(w),
        cout: u(cout),
        oh: u(oh),
        ow: u(ow),
        pad: u(spec.padding),
        cin_g: u(cin_g),
        cout_g: u(cout_g),
        flags: s.ep.flags(),
        blocks_x: u(blocks_x),
        blocks_y: u(blocks_y),
        m_tiles: u(m_tiles),
        ..ConvSubgroupParams::default()
    };
    let z = check_z(m_tiles * spec.groups, max_dim)?;
    let [gx, gy] = grid(n * blocks_y * blocks_x, max_dim)?;
    let shape = SubgroupShape {
        h,
        w,
        ow,
        nbw,
        rows,
    };
    let vec = subgroup_stores_fours(nbw, ow, oh, s.ep.residual);
    let key = if flat {
        flat::key(&shape, sg, ch4, cin_g, vec)
    } else {
        direct::key(spec, &shape, sg, ch4, vec)
    };
    Ok(DispatchSpec::new(key, &p, [gx, gy, z]))
}

/// vec4 accumulators per pixel (`CH4`) of the subgroup tile for `cout_g` channels per group
/// on subgroups of `sg`: 2 or 3 (8 or 12 channels per invocation), whichever pads the channels
/// least to whole workgroups (`4 * ch4 * sg` channels each), 3 on a tie. On lavapipe 96
/// channels take 3 (one workgroup of 96, where 2 pads to 128 and wastes a quarter), 48 take 2,
/// 192 take 3 (no slower on a direct conv, and on a Winograd product's 16-pixel maps 3 holds
/// all 16 pixels in one tile). 4 (16 channels) never pads less than 2. Figures: docs/gpu.md,
/// "Measured figures behind the rules".
pub(crate) fn subgroup_ch4(cout_g: usize, sg: usize) -> usize {
    let padded = |ch4: usize| cout_g.div_ceil(4 * ch4 * sg) * 4 * ch4 * sg;
    if padded(3) <= padded(2) { 3 } else { 2 }
}

/// A conv's map and tile as the subgroup tile sees them (a flat 1x1 conv's map as one row).
pub(crate) struct SubgroupShape {
    pub h: usize,
    pub w: usize,
    pub ow: usize,
    /// Tile columns and rows ([`subgroup_tile`]).
    pub nbw: usize,
    pub rows: usize,
}

/// Whether the subgroup tile stores 4 pixels of a channel at once (`VEC`) for tiles `nbw`
/// wide on an `ow` x `oh` output: where every 4 pixels of a tile row are whole and 4-aligned in
/// the output (the tile width, the output row and so the plane multiples of 4), and no residual
/// is added (it would be read one value at a time anyway).
pub(crate) fn subgroup_stores_fours(nbw: usize, ow: usize, oh: usize, residual: bool) -> bool {
    !residual && [nbw, ow, oh * ow].iter().all(|v| v.is_multiple_of(4))
}

/// Output tile of the subgroup tile for an `ow` x `oh` output with `4 * ch4` channels per
/// invocation: columns (the row in as few equal pieces as possible of at most the pixels the
/// accumulators hold: 32 for 8 channels, 21 for 12, 16 for a stride-2 conv on a wide map) and
/// rows (as many as fit in those pixels and in the 9 input rows the shader holds). The shader
/// computes all `rows * columns` pixels of a tile, so columns past the row's end are work
/// thrown away: 14 columns, not 16, for a 14-wide map (which also loads 16 input values per
/// row, not 18: two subgroup loads instead of three). A stride-2 conv on a wide map takes
/// 8-wide tiles instead where that lets its stores take 4 pixels at once.
pub(crate) fn subgroup_tile(
    ow: usize,
    oh: usize,
    ks: usize,
    stride: usize,
    ch4: usize,
) -> (usize, usize) {
    // Stride 2 on a wide map: at most 16 pixels, because the input row segments a stride-2
    // tile holds add to the accumulators in registers, and wider tiles ran out of registers on
    // lavapipe. Narrow maps (7 and 14 outputs wide) keep their tiles: no faster when cut.
    // Figures: docs/gpu.md, "Measured figures behind the rules".
    let most = if stride == 2 && ow > 16 {
        (SUBGROUP_ACC / ch4).min(16)
    } else {
        SUBGROUP_ACC / ch4
    };
    let even = ow.div_ceil(ow.div_ceil(most));
    // Stride 2 on a wide map whose even pieces are not a multiple of 4 wide but whose rows
    // split into 8s: 8-wide tiles (and 2 rows), so that the store takes 4 pixels at once
    // (`subgroup_stores_fours`): on lavapipe a store of 4 pixels costs about what a store of 1
    // does. Figures: docs/gpu.md.
    let nbw =
        if stride == 2 && ow > 16 && !even.is_multiple_of(4) && ow.is_multiple_of(8) && most >= 8 {
            8
        } else {
            even
        };
    let max_rows = (9 - ks) / stride + 1;
    let rows = (most / nbw).min(max_rows).min(oh).max(1);
    (nbw, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subgroup_stores_four_pixels_only_where_they_are_whole_and_aligned() {
        // A0's stem (16-wide tiles of a 112-wide map), its 56x56 products (one 196-pixel row
        // in 28-pixel tiles); not 14-wide tiles, 49-pixel planes or a residual.
        assert!(subgroup_stores_fours(16, 112, 112, false));
        assert!(subgroup_stores_fours(28, 196, 1, false));
        assert!(!subgroup_stores_fours(14, 56, 56, false));
        assert!(!subgroup_stores_fours(17, 49, 1, false));
        assert!(!subgroup_stores_fours(16, 112, 112, true));
        for nbw in 1..=32 {
            for ow in 1..=64 {
                if subgroup_stores_fours(nbw, ow, 3, false) {
                    assert!(nbw % 4 == 0 && ow % 4 == 0);
                }
            }
        }
    }

    #[test]
    fn subgroup_tiles_cover_the_row_in_few_pieces() {
        assert_eq!(subgroup_tile(56, 56, 3, 1, 2), (28, 1));
        assert_eq!(subgroup_tile(14, 14, 3, 1, 2), (14, 2));
        assert_eq!(subgroup_tile(7, 7, 3, 2, 2), (7, 4));
        assert_eq!(subgroup_tile(7, 7, 1, 1, 2), (7, 4));
        assert_eq!(subgroup_tile(112, 112, 3, 2, 2), (16, 1));
        assert_eq!(subgroup_tile(56, 56, 3, 2, 2), (8, 2));
        assert_eq!(subgroup_tile(28, 28, 3, 2, 3), (14, 1));
        assert_eq!(subgroup_tile(14, 14, 3, 2, 3), (14, 1));
        assert_eq!(subgroup_tile(33, 5, 3, 1, 2), (17, 1));
        // 12 channels per invocation: at most 21 pixels.
        assert_eq!(subgroup_tile(28, 28, 3, 1, 3), (14, 1));
        assert_eq!(subgroup_tile(16, 1, 1, 1, 3), (16, 1));
        assert_eq!(subgroup_tile(49, 1, 1, 1, 3), (17, 1));
        for ow in 1..=300 {
            for (ks, stride) in [(1, 1), (3, 1), (1, 2), (3, 2)] {
                for ch4 in 2..=3 {
                    let (nbw, rows) = subgroup_tile(ow, 9, ks, stride, ch4);
                    // At most 32 pixels (the shader's unrolled pixel calls) and 64 vec4
                    // accumulators, at most 9 input rows, and no tile column wholly past the
                    // row: the pieces are as even as possible.
                    assert!(nbw * rows <= 32 && nbw * rows * ch4 <= 64, "{ow} {ch4}");
                    assert!((rows - 1) * stride + ks <= 9, "{ow}");
                    assert!(
                        ow.div_ceil(nbw) * nbw - ow < ow.div_ceil(nbw),
                        "{ow}: {nbw}"
                    );
                }
            }
        }
    }

    #[test]
    fn subgroup_channels_per_invocation_pad_least() {
        let ch4 = |c| subgroup_ch4(c, 8);
        assert_eq!(
            [ch4(48), ch4(96), ch4(192), ch4(1280), ch4(8)],
            [2, 3, 3, 2, 2]
        );
        assert_eq!([ch4(128), ch4(256), ch4(384), ch4(1000)], [2, 2, 3, 2]);
        for c in 1..2000usize {
            let padded = |k: usize| c.div_ceil(32 * k) * 32 * k;
            let k = ch4(c);
            assert!((2..=3).contains(&k));
            assert!((2..=4).all(|other| padded(k) <= padded(other)), "{c}");
        }
    }
}
