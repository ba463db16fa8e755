//! `conv_subgroup_flat.wgsl`: a 1x1 stride-1 conv without padding (a Winograd product) on the
//! subgroup tile, its map dispatched as one row: how many input channels a K step takes (`KU`)
//! and where the lanes load 4 pixels at once (`VLD`).

use super::SubgroupShape;
use crate::kernels::u;
use crate::shader::{PipelineKey, Shader};

/// The pipeline for a flat conv of `cin_g` input channels per group on `shape`: the tile,
/// subgroup size and accumulators, its load paths, and `vec`: whether the store takes 4 pixels
/// at once ([`super::subgroup_stores_fours`]).
pub(crate) fn key(
    shape: &SubgroupShape,
    sg: usize,
    ch4: usize,
    cin_g: usize,
    vec: bool,
) -> PipelineKey {
    let ku = subgroup_channels_per_step(cin_g);
    PipelineKey::new(Shader::ConvSubgroupFlat)
        .constant("NBW", u(shape.nbw))
        .constant("SG", u(sg))
        .constant("CH4", u(ch4))
        .constant("KU", u(ku))
        .constant(
            "VLD",
            u(subgroup_vec4_load_channels(
                shape.nbw,
                shape.h * shape.w,
                sg,
                ku,
            )),
        )
        .constant("VEC", u32::from(vec))
}

/// Input channels per K-loop iteration (`KU`) of a flat 1x1 conv (a
/// Winograd product) with `cin_g` input channels per group: 4, else 2, else 1, whichever divides
/// `cin_g`. lavapipe blends each write of a loop-carried accumulator with the loop's mask, so
/// summing 4 channels' products before the one write saves 3 blends in 4; 8 is slower than 4
/// (the weights of 8 channels spill). Figures: docs/gpu.md, "Measured figures behind the rules".
pub(crate) fn subgroup_channels_per_step(cin_g: usize) -> usize {
    [4, 2]
        .into_iter()
        .find(|&k| cin_g.is_multiple_of(k))
        .unwrap_or(1)
}

/// Input channels per vec4 load (`VLD`) of a flat 1x1 conv with tiles
/// `nbw` pixels wide, planes of `plane` pixels, subgroups of `sg` and `ku` channels per K
/// step; 0 for scalar loads. Each lane loads 4 pixels of one channel, `nbw / 4` lanes a channel,
/// so the tile and the plane must be multiples of 4; as many channels per load as the lanes hold
/// (a power of two dividing `ku`).
pub(crate) fn subgroup_vec4_load_channels(nbw: usize, plane: usize, sg: usize, ku: usize) -> usize {
    if !nbw.is_multiple_of(4) || !plane.is_multiple_of(4) || nbw / 4 > sg {
        return 0;
    }
    let fit = sg / (nbw / 4);
    [4, 2, 1]
        .into_iter()
        .find(|&c| c <= fit && ku.is_multiple_of(c))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_one_by_one_convs_step_through_four_channels_where_they_divide() {
        assert_eq!(
            [1, 2, 3, 4, 6, 48, 50, 192, 1280].map(subgroup_channels_per_step),
            [1, 2, 1, 4, 2, 4, 2, 4, 4]
        );
        for cin_g in 1..300 {
            let k = subgroup_channels_per_step(cin_g);
            assert!(cin_g.is_multiple_of(k) && [1, 2, 4].contains(&k));
        }
    }

    #[test]
    fn flat_one_by_one_convs_load_four_pixels_where_tiles_and_planes_allow() {
        // A0 at batch 1: the 14x14 products (16-pixel tiles and planes, 4 channels a step)
        // load 2 channels at once, the 56x56 ones (28-pixel tiles of 196) 1, the 28x28 ones
        // (49-pixel planes) none.
        assert_eq!(subgroup_vec4_load_channels(16, 16, 8, 4), 2);
        assert_eq!(subgroup_vec4_load_channels(28, 196, 8, 4), 1);
        assert_eq!(subgroup_vec4_load_channels(17, 49, 8, 4), 0);
        assert_eq!(subgroup_vec4_load_channels(4, 4, 8, 2), 2);
        for nbw in 1..=32 {
            for plane in 1..=64 {
                for ku in [1, 2, 4] {
                    let c = subgroup_vec4_load_channels(nbw, plane, 8, ku);
                    if c > 0 {
                        // Whole vec4s, every channel of a load on its own lanes, whole loads
                        // per K step.
                        assert!(nbw.is_multiple_of(4) && plane.is_multiple_of(4));
                        assert!(c * (nbw / 4) <= 8 && ku.is_multiple_of(c), "{nbw} {ku}");
                    } else {
                        assert!(!nbw.is_multiple_of(4) || !plane.is_multiple_of(4));
                    }
                }
            }
        }
    }
}
