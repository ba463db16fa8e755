//! `conv_gemm.wgsl`: implicit-GEMM convolution with a tile configured per layer (channels at
//! upload, so that padding is least; pixels per input shape, so that the dispatch fills the
//! device), and split-K: a dispatch with fewer workgroups than the device wants splits its sum
//! over K into slices whose f32 partial sums the entry point `reduce` adds, with the epilogue.
//! Runs on every adapter.

use ndarray::ArrayView4;

use super::{
    ConvShape, DispatchSpec, FLAG_PARTIAL, WeightData, check_z, conv_params, gemm_weight_layout,
    grid, linear_grid, params, u,
};
use crate::caps::Caps;
use crate::error::Result;
use crate::shader::{PipelineKey, Shader};

params! {
    /// `conv_gemm.wgsl`.
    ConvGemmParams for Shader::ConvGemm => {
        n, cin, h, w, cout, oh, ow, stride, pad, cin_g, cout_g, k_total, m_pad, k_pad, flags,
        m_tiles, groups, k_len, splits, _pad0,
    }
}

/// K tile (`TK` in the WGSL).
pub(crate) const TK: usize = 16;
/// Most K slices of a split-K conv.
const MAX_K_SLICES: usize = 16;
/// K tiles a slice has at least when split-K is chosen rather than forced: 8 tiles (128 steps)
/// keep the partial sums' traffic (one write and one read per output and slice) small next to
/// the slice's arithmetic (128 multiply-adds per output).
const MIN_SLICE_TILES: usize = 8;
/// Invocations per workgroup of the entry point `reduce`.
const REDUCE_WG: usize = 256;

/// How one conv runs on this kernel, fixed at upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Config {
    pub rows: GemmRows,
    pub m_pad: usize,
    pub k_pad: usize,
    /// Always split the sum over K (one K tile a slice, up to 16 slices).
    pub force_split: bool,
}

/// The configuration for `spec` and its weights in the layout it reads.
pub(crate) fn prepare(
    spec: &repvgg_math::ConvSpec,
    weight: ArrayView4<'_, f32>,
    force_split: bool,
) -> (Config, WeightData) {
    let rows = GemmRows::for_channels(spec.out_channels / spec.groups);
    let (data, m_pad, k_pad) = gemm_weight_layout(&weight, spec, rows.bm(), TK);
    let config = Config {
        rows,
        m_pad,
        k_pad,
        force_split,
    };
    (config, WeightData::Buffer(data))
}

/// How a dispatch of `workgroups` workgroups over `k_tiles` K tiles splits its sum:
/// `(slices, tiles per slice)`, `(1, k_tiles)` for no split. Chosen when the dispatch has fewer
/// workgroups than `min_workgroups` (as many slices as fill the device, each of at least
/// [`MIN_SLICE_TILES`]) or `forced` (one tile per slice); at most [`MAX_K_SLICES`], and no more
/// than `max_slices` (what the scratch binding holds). Slices are equal but the last.
pub(crate) fn k_split(
    k_tiles: usize,
    workgroups: usize,
    min_workgroups: usize,
    forced: bool,
    max_slices: usize,
) -> (usize, usize) {
    let k_tiles = k_tiles.max(1);
    let (wanted, most) = if forced {
        (MAX_K_SLICES, k_tiles)
    } else if workgroups >= min_workgroups {
        (1, 1)
    } else {
        (
            min_workgroups.div_ceil(workgroups.max(1)),
            k_tiles / MIN_SLICE_TILES,
        )
    };
    let slices = wanted.min(most).min(MAX_K_SLICES).min(max_slices).max(1);
    let per_slice = k_tiles.div_ceil(slices);
    (k_tiles.div_ceil(per_slice), per_slice)
}

/// The channel side of a tile, fixed at upload (it sets the weight padding): `wy` invocations
/// along channels, each with `tmv` blocks of 4 channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct GemmRows {
    pub wy: usize,
    pub tmv: usize,
}

impl GemmRows {
    /// Channels per workgroup.
    pub fn bm(self) -> usize {
        4 * self.tmv * self.wy
    }

    /// The tile that pads `cout_g` channels least (ties: the bigger tile, more reuse).
    pub fn for_channels(cout_g: usize) -> Self {
        let mut best = Self { wy: 8, tmv: 1 };
        let padded = |r: Self| cout_g.div_ceil(r.bm()) * r.bm();
        for tmv in [1, 2] {
            for wy in [8, 12, 16] {
                let r = Self { wy, tmv };
                let (a, b) = (padded(r), padded(best));
                if a < b || (a == b && r.bm() > best.bm()) {
                    best = r;
                }
            }
        }
        best
    }
}

/// The pixel side of a tile, chosen per input shape: `wx` invocations along pixels, each with
/// `tnv` blocks of 4 pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GemmCols {
    pub wx: usize,
    pub tnv: usize,
}

impl GemmCols {
    /// Pixels per workgroup.
    pub fn bn(self) -> usize {
        4 * self.tnv * self.wx
    }

    /// The widest tile that still gives `min_workgroups` workgroups (with `other` workgroups
    /// from channel tiles and groups), else the narrowest.
    pub fn for_pixels(pixels: usize, other: usize, min_workgroups: usize) -> Self {
        let options = [
            Self { wx: 16, tnv: 2 },
            Self { wx: 16, tnv: 1 },
            Self { wx: 8, tnv: 1 },
        ];
        options
            .into_iter()
            .find(|c| pixels.div_ceil(c.bn()) * other >= min_workgroups)
            .unwrap_or(Self { wx: 8, tnv: 1 })
    }
}

/// Pipeline, parameters and workgroups of a conv, with the `reduce` pass where it splits.
pub(crate) fn dispatch(c: Config, s: ConvShape<'_>, caps: &Caps) -> Result<DispatchSpec> {
    let Config {
        rows,
        m_pad,
        k_pad,
        force_split,
    } = c;
    let spec = s.spec;
    let max_dim = caps.max_workgroups;
    let [n, cin, _, _] = s.x;
    let [_, cout, oh, ow] = s.y;
    let (cin_g, ks) = (cin / spec.groups, spec.kernel_size);
    let flags = s.ep.flags();
    let m_tiles = m_pad / rows.bm();
    let tiles = m_tiles * spec.groups;
    check_z(tiles, max_dim)?;
    let cols = GemmCols::for_pixels(n * oh * ow, tiles, caps.min_workgroups);
    let pixel_tiles = (n * oh * ow).div_ceil(cols.bn());
    let workgroups = pixel_tiles * tiles;
    let total = n * cout * oh * ow;
    let slice_bytes = (4 * total as u64).max(1);
    // As many slices as the scratch binding holds and workgroups z can count.
    let max_slices = usize::try_from(caps.max_binding / slice_bytes)
        .unwrap_or(usize::MAX)
        .min(max_dim as usize / tiles.max(1));
    let (slices, per_slice) = k_split(
        k_pad / TK,
        workgroups,
        caps.min_workgroups,
        force_split,
        max_slices,
    );
    let z = check_z(tiles * slices, max_dim)?;
    let mut p = conv_params!(ConvGemmParams from s, {
        k_total: u(cin_g * ks * ks),
        m_pad: u(m_pad),
        k_pad: u(k_pad),
        m_tiles: u(m_tiles),
        groups: u(spec.groups),
        k_len: u(per_slice * TK),
        splits: u(slices),
        _pad0: 0,
    });
    if slices > 1 {
        p.flags = FLAG_PARTIAL;
    }
    let [gx, gy] = grid(pixel_tiles, max_dim)?;
    let key = PipelineKey::new(Shader::ConvGemm)
        .constant("KS", u(ks))
        .constant("WX", u(cols.wx))
        .constant("WY", u(rows.wy))
        .constant("TMV", u(rows.tmv))
        .constant("TNV", u(cols.tnv));
    let mut d = DispatchSpec::new(key, &p, [gx, gy, z]);
    if slices > 1 {
        let r = ConvGemmParams { flags, ..p };
        let mut key = PipelineKey::new(Shader::ConvGemm);
        key.entry = "reduce";
        let reduce = DispatchSpec::new(key, &r, linear_grid(total, REDUCE_WG, max_dim)?);
        d.then = Some(Box::new(reduce));
        d.scratch_bytes = slice_bytes * slices as u64;
        d.k_slices = slices;
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_tiles_pad_channels_least_and_fill_the_device() {
        let bm = |c| GemmRows::for_channels(c).bm();
        assert_eq!(
            [bm(8), bm(48), bm(96), bm(192), bm(1280)],
            [32, 48, 96, 96, 128]
        );
        for c in 1..300 {
            let r = GemmRows::for_channels(c);
            let invocations = 16 * r.wy;
            assert!((64..=256).contains(&invocations) && r.bm().is_multiple_of(4));
        }
        // 56 x 56 pixels in 128-pixel tiles: 25 workgroups per channel tile.
        assert_eq!(GemmCols::for_pixels(3136, 1, 16).bn(), 128);
        assert_eq!(GemmCols::for_pixels(3136, 1, 40).bn(), 64);
        assert_eq!(GemmCols::for_pixels(49, 10, 1000).bn(), 32);
    }

    #[test]
    fn k_splits_fill_the_device_with_slices_of_eight_tiles_or_more() {
        // Enough workgroups: no split, forced or not past what the scratch holds.
        assert_eq!(k_split(108, 200, 128, false, 100), (1, 108));
        assert_eq!(k_split(108, 20, 128, true, 1), (1, 108));
        // A0's 192->1280 stride-2 conv at batch 1: 20 workgroups, 108 K tiles -> 7 slices.
        assert_eq!(k_split(108, 20, 128, false, 100), (7, 16));
        // The scratch binding holds 3 slices.
        assert_eq!(k_split(108, 20, 128, false, 3), (3, 36));
        // Short sums are not split unless forced; forced: one tile per slice, up to 16.
        assert_eq!(k_split(15, 4, 128, false, 100), (1, 15));
        assert_eq!(k_split(3, 4, 128, true, 100), (3, 1));
        assert_eq!(k_split(40, 4, 128, true, 100), (14, 3));
        for k_tiles in 1..200 {
            for workgroups in [1, 5, 20, 127, 128, 1000] {
                for forced in [false, true] {
                    let (slices, per) = k_split(k_tiles, workgroups, 128, forced, 100);
                    // Every tile in exactly one slice, none empty, within the limits.
                    assert!(slices * per >= k_tiles && (slices - 1) * per < k_tiles);
                    assert!((1..=MAX_K_SLICES).contains(&slices));
                    if !forced && slices > 1 {
                        assert!(per >= MIN_SLICE_TILES && workgroups < 128);
                    }
                }
            }
        }
    }
}
