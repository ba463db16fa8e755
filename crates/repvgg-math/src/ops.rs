//! Reference CPU operators on NCHW arrays.
//!
//! [`conv2d_reference`] is the oracle: a direct loop that is obviously correct. [`conv2d`] is
//! the fast path (im2col + GEMM through `ndarray`'s matrixmultiply backend, split over output
//! tiles with rayon) and is property-tested against the oracle.

use ndarray::parallel::prelude::*;
use ndarray::{
    Array2, Array4, ArrayView1, ArrayView2, ArrayView4, ArrayViewMut2, Axis, Zip,
    linalg::general_mat_mul, s,
};

use crate::error::{MathError, Result};
use crate::types::{BatchNorm, ConvSpec, Element};

pub use crate::epilogue::Activation;

fn check_conv<T>(
    x: &ArrayView4<'_, T>,
    weight: &ArrayView4<'_, T>,
    bias: Option<&ArrayView1<'_, T>>,
    spec: &ConvSpec,
) -> Result<(usize, usize)> {
    spec.validate()?;
    spec.check_weight(weight)?;
    if x.shape()[1] != spec.in_channels {
        return Err(MathError::ShapeMismatch {
            what: "convolution input [N, C, H, W]".into(),
            expected: vec![x.shape()[0], spec.in_channels, x.shape()[2], x.shape()[3]],
            found: x.shape().to_vec(),
        });
    }
    if let Some(b) = bias
        && b.len() != spec.out_channels
    {
        return Err(MathError::ShapeMismatch {
            what: "convolution bias".into(),
            expected: vec![spec.out_channels],
            found: vec![b.len()],
        });
    }
    spec.output_size(x.shape()[2], x.shape()[3])
}

/// The oracle convolution: a direct seven-deep loop, accumulating in `T`.
pub fn conv2d_reference<T: Element>(
    x: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    spec: &ConvSpec,
) -> Result<Array4<T>> {
    let (oh, ow) = check_conv(&x, &weight, bias.as_ref(), spec)?;
    let (n, _, h, w) = x.dim();
    let cin_g = spec.in_channels / spec.groups;
    let cout_g = spec.out_channels / spec.groups;
    let (k, s, p) = (spec.kernel_size, spec.stride, spec.padding);
    let mut out = Array4::zeros((n, spec.out_channels, oh, ow));
    for b in 0..n {
        for o in 0..spec.out_channels {
            let g = o / cout_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.as_ref().map_or(T::zero(), |b| b[o]);
                    for ci in 0..cin_g {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky) as isize - p as isize;
                                let ix = (ox * s + kx) as isize - p as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    acc += x[[b, g * cin_g + ci, iy as usize, ix as usize]]
                                        * weight[[o, ci, ky, kx]];
                                }
                            }
                        }
                    }
                    out[[b, o, oy, ox]] = acc;
                }
            }
        }
    }
    Ok(out)
}

/// Fills `cols[(ci*k + ky)*k + kx, j]` with the input pixel that output pixel `first + j`
/// of channel group `xg` (shape `[cin_g, H, W]`) sees through kernel tap `(ky, kx)`.
fn im2col<T: Element>(
    xg: &ArrayView4<'_, T>,
    b: usize,
    spec: &ConvSpec,
    ow: usize,
    first: usize,
    mut cols: ArrayViewMut2<'_, T>,
) {
    let (h, w) = (xg.shape()[2], xg.shape()[3]);
    let (k, s, p) = (spec.kernel_size, spec.stride, spec.padding);
    let len = cols.shape()[1];
    for (row, mut dst) in cols.axis_iter_mut(Axis(0)).enumerate() {
        let ci = row / (k * k);
        let ky = (row / k) % k;
        let kx = row % k;
        let plane = xg.slice(s![b, ci, .., ..]);
        for j in 0..len {
            let q = first + j;
            let (oy, ox) = (q / ow, q % ow);
            let iy = (oy * s + ky) as isize - p as isize;
            let ix = (ox * s + kx) as isize - p as isize;
            dst[j] = if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                plane[[iy as usize, ix as usize]]
            } else {
                T::zero()
            };
        }
    }
}

/// Target number of im2col elements per task (about 256 KiB of f32: stays in L2).
const TILE_ELEMS: usize = 64 * 1024;

/// How [`conv2d_act`] splits the GEMM of one image and group over rayon tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tiling {
    /// Many output pixels: tasks of this many pixels, each gathering its own im2col tile.
    Columns(usize),
    /// Few output pixels (late stages): one im2col, tasks of this many output channels.
    Rows(usize),
}

/// The tiling for `kk` im2col rows (`cin_g * k * k`), `npix` output pixels and `cout_g`
/// output channels per group: about [`TILE_ELEMS`] im2col elements per column task.
fn tiling(kk: usize, npix: usize, cout_g: usize) -> Tiling {
    let cols_per_task = (TILE_ELEMS / kk.max(1)).clamp(16, npix.max(16));
    if npix >= 2 * cols_per_task {
        Tiling::Columns(cols_per_task)
    } else {
        Tiling::Rows((cout_g / 8).max(8))
    }
}

/// Fast convolution (im2col + GEMM) with optional bias.
pub fn conv2d<T: Element>(
    x: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    spec: &ConvSpec,
) -> Result<Array4<T>> {
    conv2d_act(x, weight, bias, spec, Activation::None)
}

/// Fast convolution with the bias and activation fused into the epilogue.
pub fn conv2d_act<T: Element>(
    x: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    spec: &ConvSpec,
    act: Activation,
) -> Result<Array4<T>> {
    let (oh, ow) = check_conv(&x, &weight, bias.as_ref(), spec)?;
    let n = x.shape()[0];
    let cin_g = spec.in_channels / spec.groups;
    let cout_g = spec.out_channels / spec.groups;
    let kk = cin_g * spec.kernel_size * spec.kernel_size;
    let npix = oh * ow;
    let weight = weight.as_standard_layout();
    let wmat = weight
        .view()
        .into_shape_with_order((spec.out_channels, kk))
        .map_err(|e| MathError::InvalidSpec {
            reason: e.to_string(),
        })?;
    let x = x.as_standard_layout();
    let mut out = Array4::<T>::zeros((n, spec.out_channels, oh, ow));
    let plan = tiling(kk, npix, cout_g);

    // Bias and activation on a freshly computed tile, while it is still in cache.
    let epilogue = |mut tile: ArrayViewMut2<'_, T>, first_channel: usize| {
        if bias.is_none() && act == Activation::None {
            return;
        }
        for (r, mut row) in tile.outer_iter_mut().enumerate() {
            let bo = bias.as_ref().map_or(T::zero(), |b| b[first_channel + r]);
            match act {
                Activation::None => row.mapv_inplace(|v| v + bo),
                Activation::Relu => row.mapv_inplace(|v| (v + bo).max(T::zero())),
                Activation::Sigmoid => row.mapv_inplace(|v| Activation::Sigmoid.apply(v + bo)),
            }
        }
    };

    out.outer_iter_mut()
        .into_par_iter()
        .enumerate()
        .for_each(|(b, mut img)| {
            for g in 0..spec.groups {
                let xg = x.slice(s![.., g * cin_g..(g + 1) * cin_g, .., ..]);
                let wg = wmat.slice(s![g * cout_g..(g + 1) * cout_g, ..]);
                let og = img.slice_mut(s![g * cout_g..(g + 1) * cout_g, .., ..]);
                let Ok(mut og) = og.into_shape_with_order((cout_g, npix)) else {
                    unreachable!("a channel slice of a standard-layout array is contiguous")
                };
                match plan {
                    Tiling::Columns(cols_per_task) => og
                        .axis_chunks_iter_mut(Axis(1), cols_per_task)
                        .into_par_iter()
                        .enumerate()
                        .for_each(|(t, mut oc)| {
                            let len = oc.shape()[1];
                            let mut cols = Array2::<T>::zeros((kk, len));
                            im2col(&xg, b, spec, ow, t * cols_per_task, cols.view_mut());
                            general_mat_mul(T::one(), &wg, &cols, T::zero(), &mut oc);
                            epilogue(oc, g * cout_g);
                        }),
                    Tiling::Rows(rows) => {
                        let mut cols = Array2::<T>::zeros((kk, npix));
                        im2col(&xg, b, spec, ow, 0, cols.view_mut());
                        og.axis_chunks_iter_mut(Axis(0), rows)
                            .into_par_iter()
                            .zip(wg.axis_chunks_iter(Axis(0), rows))
                            .enumerate()
                            .for_each(|(t, (mut oc, wc))| {
                                general_mat_mul(T::one(), &wc, &cols, T::zero(), &mut oc);
                                epilogue(oc, g * cout_g + t * rows);
                            });
                    }
                }
            }
        });
    Ok(out)
}

/// Batch-norm inference over the channel axis of an NCHW array.
pub fn batch_norm<T: Element>(x: ArrayView4<'_, T>, bn: &BatchNorm<T>) -> Result<Array4<T>> {
    let channels = x.shape()[1];
    bn.check_channels(channels)?;
    let (scale, shift) = bn.scale_shift()?;
    let mut out = x.to_owned();
    for (c, mut plane) in out.axis_iter_mut(Axis(1)).enumerate() {
        let (sc, sh) = (scale[c], shift[c]);
        plane.mapv_inplace(|v| T::from_f64_round(v.to_f64_exact() * sc + sh));
    }
    Ok(out)
}

/// Element-wise `max(x, 0)`.
pub fn relu<T: Element, D: ndarray::Dimension>(
    x: ndarray::ArrayView<'_, T, D>,
) -> ndarray::Array<T, D> {
    x.mapv(|v| v.max(T::zero()))
}

/// In-place `max(x, 0)`.
pub fn relu_inplace<T: Element, D: ndarray::Dimension>(x: &mut ndarray::Array<T, D>) {
    x.par_mapv_inplace(|v| v.max(T::zero()));
}

/// Element-wise sum of two arrays of one shape.
pub fn add<T: Element>(a: ArrayView4<'_, T>, b: ArrayView4<'_, T>) -> Result<Array4<T>> {
    if a.shape() != b.shape() {
        return Err(MathError::ShapeMismatch {
            what: "add: right operand".into(),
            expected: a.shape().to_vec(),
            found: b.shape().to_vec(),
        });
    }
    let mut out = a.to_owned();
    Zip::from(&mut out).and(&b).par_for_each(|o, &v| *o += v);
    Ok(out)
}

/// Global average pool: `[N, C, H, W]` → `[N, C]`.
pub fn global_avg_pool<T: Element>(x: ArrayView4<'_, T>) -> Result<Array2<T>> {
    let (n, c, h, w) = x.dim();
    if h * w == 0 {
        return Err(MathError::ShapeMismatch {
            what: "global average pool input (non-empty H and W)".into(),
            expected: vec![n, c, 1, 1],
            found: x.shape().to_vec(),
        });
    }
    let count = T::from_usize(h * w).unwrap_or_else(T::one);
    Ok(Array2::from_shape_fn((n, c), |(b, ch)| {
        x.slice(s![b, ch, .., ..]).iter().copied().sum::<T>() / count
    }))
}

/// Fully connected layer: `x [N, in] · weightᵀ [in, out] + bias [out]`.
pub fn linear<T: Element>(
    x: ArrayView2<'_, T>,
    weight: ArrayView2<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
) -> Result<Array2<T>> {
    if x.shape()[1] != weight.shape()[1] {
        return Err(MathError::ShapeMismatch {
            what: "linear weight [out, in]".into(),
            expected: vec![weight.shape()[0], x.shape()[1]],
            found: weight.shape().to_vec(),
        });
    }
    if let Some(b) = &bias
        && b.len() != weight.shape()[0]
    {
        return Err(MathError::ShapeMismatch {
            what: "linear bias".into(),
            expected: vec![weight.shape()[0]],
            found: vec![b.len()],
        });
    }
    let mut out = x.dot(&weight.t());
    if let Some(b) = bias {
        out += &b;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{Tiling, tiling};

    /// The shapes of `tests/properties.rs` (`fast_conv_equals_oracle_at_tiling_edges` and the
    /// `tiled_case` strategy) reach the branches they are meant to: the tiling only chooses task
    /// sizes, so a wrong choice would still compute the right result and only this test sees it.
    #[test]
    fn the_tiling_edges_of_the_property_tests_take_the_intended_branches() {
        // kk = 456 * 9 = 4104: 65536 / 4104 = 15 columns, raised to the floor of 16.
        assert_eq!(tiling(4104, 49, 2), Tiling::Columns(16));
        // kk = 1024: 64 columns; 128 pixels split exactly in two, 127 take the row path.
        assert_eq!(tiling(1024, 128, 2), Tiling::Columns(64));
        assert_eq!(tiling(1024, 127, 2), Tiling::Rows(8));
        // Row chunks: 8 rows at least, cout_g / 8 beyond 64 channels.
        assert_eq!(tiling(18, 25, 8), Tiling::Rows(8));
        assert_eq!(tiling(18, 25, 9), Tiling::Rows(8));
        assert_eq!(tiling(27, 24, 97), Tiling::Rows(12));
        // The column class of `tiled_case`: cin_g 100..=130 (kk 900..=1170) on 10..=16 px
        // sides splits from 12x12 up (2 to 4 tasks); its smallest draws take the row path.
        assert_eq!(tiling(900, 144, 3), Tiling::Columns(72));
        assert_eq!(tiling(1170, 256, 3), Tiling::Columns(56));
        assert_eq!(tiling(900, 100, 3), Tiling::Rows(8));
        // Few pixels and kk = 0 (no division by zero): one row task.
        assert_eq!(tiling(0, 1, 1), Tiling::Rows(8));
    }
}
