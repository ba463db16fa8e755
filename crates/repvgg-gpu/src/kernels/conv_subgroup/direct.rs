//! `conv_subgroup_direct.wgsl`: a 1x1 or 3x3 conv with stride 1 or 2 on the subgroup tile:
//! whether its tiles load their input rows as aligned quads (`VROW`), as one block of quads
//! (`VBLK`), or a value a lane.

use repvgg_math::ConvSpec;

use super::SubgroupShape;
use crate::kernels::u;
use crate::shader::{PipelineKey, Shader};

/// The pipeline for `spec` on `shape`: the tile, subgroup size and accumulators, its load
/// paths, and `vec`: whether the store takes 4 pixels at once
/// ([`super::subgroup_stores_fours`]).
pub(crate) fn key(
    spec: &ConvSpec,
    shape: &SubgroupShape,
    sg: usize,
    ch4: usize,
    vec: bool,
) -> PipelineKey {
    let SubgroupShape {
        h,
        w,
        ow,
        nbw,
        rows,
        ..
    } = *shape;
    let (ks, stride, pad) = (spec.kernel_size, spec.stride, spec.padding);
    let vrow = subgroup_loads_row_quads(w, nbw, rows, ks, stride, pad, sg);
    let vblk =
        !vrow && ow.div_ceil(nbw) == 1 && subgroup_loads_row_block(w, h, rows, ks, stride, pad, sg);
    PipelineKey::new(Shader::ConvSubgroupDirect)
        .constant("KS", u(ks))
        .constant("STRIDE", u(stride))
        .constant("NBW", u(nbw))
        .constant("R", u(rows))
        .constant("SG", u(sg))
        .constant("CH4", u(ch4))
        .constant("VROW", u32::from(vrow))
        .constant("OFF", u((4 - pad % 4) % 4))
        .constant("VBLK", u(if vblk { w } else { 0 }))
        .constant("PADC", u(pad))
        .constant("VEC", u32::from(vec))
}

/// Whether a conv's tiles load their input rows as aligned
/// quads of 4 values (`VROW`): where the input rows are a multiple of 4 wide and every tile
/// starts at the same place in a quad (`nbw * stride` a multiple of 4), and the quads of a
/// tile's `(rows - 1) * stride + ks` input rows fit the shader's 20 per lane.
pub(crate) fn subgroup_loads_row_quads(
    w: usize,
    nbw: usize,
    rows: usize,
    ks: usize,
    stride: usize,
    pad: usize,
    sg: usize,
) -> bool {
    let off = (4 - pad % 4) % 4;
    let row_quads = (stride * (nbw - 1) + ks - 1 + off) / 4 + 1;
    let quads = ((rows - 1) * stride + ks) * row_quads;
    w.is_multiple_of(4) && (nbw * stride).is_multiple_of(4) && fits_quads(quads, sg)
}

/// Whether `quads` quads of input fit the subgroup kernel's 20 vec4s a lane (`segq`).
fn fits_quads(quads: usize, sg: usize) -> bool {
    quads <= 20 * sg
}

/// Whether a conv's tiles load their input rows that span
/// whole rows (the caller checks: one tile a row band) as one contiguous block of aligned
/// quads (`VBLK`): where every row band starts at the same place in a quad (`rows * stride * w`
/// a multiple of 4), the planes are whole vec4s, and the block's quads fit the shader's 20 per
/// lane. For rows whose width is not a multiple of 4 (A0's 14x14 -> 7x7 conv), where `VROW`
/// cannot run.
pub(crate) fn subgroup_loads_row_block(
    w: usize,
    h: usize,
    rows: usize,
    ks: usize,
    stride: usize,
    pad: usize,
    sg: usize,
) -> bool {
    let off = (4 - (pad * w) % 4) % 4;
    let quads = (off + ((rows - 1) * stride + ks) * w).div_ceil(4);
    (rows * stride * w).is_multiple_of(4) && (h * w).is_multiple_of(4) && fits_quads(quads, sg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_convs_load_row_quads_where_rows_and_tiles_align() {
        // A0 at batch 1 (w, nbw, rows, ks, stride, pad): the stem, 112 -> 56 (8x2 tiles),
        // 56 -> 28 and 28 -> 14 take quads; 14 -> 7 (rows 14 wide) does not.
        let a0 = [
            (224, 16, 1, 3, 2, 1),
            (112, 8, 2, 3, 2, 1),
            (56, 14, 1, 3, 2, 1),
            (28, 14, 1, 3, 2, 1),
            (14, 7, 4, 3, 2, 1),
        ];
        assert_eq!(
            a0.map(|(w, nbw, rows, ks, s, pad)| subgroup_loads_row_quads(
                w, nbw, rows, ks, s, pad, 8
            )),
            [true, true, true, true, false]
        );
        for w in 1..=64 {
            for nbw in 1..=32 {
                for (ks, pad) in [(1, 0), (3, 1), (3, 2)] {
                    for stride in [1, 2] {
                        for rows in 1..=(9 - ks) / stride + 1 {
                            if subgroup_loads_row_quads(w, nbw, rows, ks, stride, pad, 8) {
                                assert!(w.is_multiple_of(4) && (nbw * stride).is_multiple_of(4));
                                // The tile's input columns, from its first (4-aligned, less
                                // the padding) on, fit the quads it loads per row.
                                let off = (4 - pad % 4) % 4;
                                let quads = (stride * (nbw - 1) + ks - 1 + off) / 4 + 1;
                                assert!(4 * quads >= off + stride * (nbw - 1) + ks);
                                assert!(((rows - 1) * stride + ks) * quads <= 160);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn whole_row_tiles_load_their_input_as_a_block_where_bands_align() {
        // A0's 14x14 -> 7x7 conv: 7x4 tiles, 9 input rows of 14: 32 quads.
        assert!(subgroup_loads_row_block(14, 14, 4, 3, 2, 1, 8));
        // Bands of 14 values (not whole quads), 13x14 planes, more than 20 quads a lane: no.
        assert!(!subgroup_loads_row_block(14, 14, 1, 3, 1, 1, 8));
        assert!(!subgroup_loads_row_block(14, 13, 4, 3, 2, 1, 8));
        assert!(!subgroup_loads_row_block(80, 80, 4, 3, 2, 1, 8));
        for w in 1..=40 {
            for rows in 1..=4 {
                for (ks, stride, pad) in [(3, 1, 1), (3, 2, 1), (1, 2, 0)] {
                    if subgroup_loads_row_block(w, 8, rows, ks, stride, pad, 8) {
                        // Every band's block starts `off` into a quad: its first row,
                        // band * rows * stride - pad, times w, less off, is a multiple of 4.
                        let off = (4 - (pad * w) % 4) % 4;
                        for band in 0..4 {
                            let start = (band * rows * stride * w) as isize
                                - (pad * w) as isize
                                - off as isize;
                            assert_eq!(start.rem_euclid(4), 0, "{w} {rows} {stride}");
                        }
                        assert!(off + ((rows - 1) * stride + ks) * w <= 4 * 20 * 8);
                    }
                }
            }
        }
    }
}
