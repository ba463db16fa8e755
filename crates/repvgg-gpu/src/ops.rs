//! One kernel at a time: upload, one dispatch, read back. For tests against the
//! `repvgg-math` oracle and for per-layer benchmarks; networks use [`crate::NetworkBuilder`].
//!
//! Each call builds a one-layer network whose activation buffers are NaN-filled before the
//! dispatch, so an element a kernel fails to write comes back as NaN.

use ndarray::{Array2, Array4, ArrayD, ArrayView2, ArrayView4, Ix2, Ix4};
use repvgg_math::ConvSpec;

use crate::builder::NetworkBuilder;
use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::graph::{Epilogue, TensorId};
use crate::select::ConvKernel;
use repvgg_math::Activation;

fn run_one(
    ctx: &GpuContext,
    x: ArrayView4<'_, f32>,
    kernel: ConvKernel,
    layer: impl FnOnce(&mut NetworkBuilder, TensorId) -> Result<TensorId>,
) -> Result<ArrayD<f32>> {
    let mut b = NetworkBuilder::new(ctx).kernel(kernel).nan_fill(true);
    let input = b.input(x.shape()[1]);
    let y = layer(&mut b, input)?;
    b.output("y", y);
    let mut out = b.build()?.run(x)?;
    out.remove("y")
        .ok_or_else(|| GpuError::Readback("the output went missing".into()))
}

fn dim4(a: ArrayD<f32>) -> Result<Array4<f32>> {
    a.into_dimensionality::<Ix4>()
        .map_err(|e| GpuError::Readback(e.to_string()))
}

fn dim2(a: ArrayD<f32>) -> Result<Array2<f32>> {
    a.into_dimensionality::<Ix2>()
        .map_err(|e| GpuError::Readback(e.to_string()))
}

/// `relu?(conv(x, weight) + bias)` on the GPU with the chosen kernel.
///
/// # Errors
/// [`GpuError::Shape`] / [`GpuError::Math`] for mismatched arguments, GPU errors.
pub fn conv2d(
    ctx: &GpuContext,
    x: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    bias: Option<&[f32]>,
    spec: &ConvSpec,
    relu: bool,
    kernel: ConvKernel,
) -> Result<Array4<f32>> {
    conv2d_fused(ctx, x, weight, spec, None, bias, relu, kernel)
}

/// `relu?(conv(x, weight) * scale + bias)`: a convolution with its BN folded into the epilogue.
///
/// # Errors
/// As [`conv2d`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_fused(
    ctx: &GpuContext,
    x: ArrayView4<'_, f32>,
    weight: ArrayView4<'_, f32>,
    spec: &ConvSpec,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    relu: bool,
    kernel: ConvKernel,
) -> Result<Array4<f32>> {
    let epilogue = Epilogue {
        scale: scale.map(<[f32]>::to_vec),
        bias: bias.map(<[f32]>::to_vec),
        residual: None,
        activation: Activation::relu_if(relu),
    };
    dim4(run_one(ctx, x, kernel, |b, t| {
        b.conv(t, weight, *spec, epilogue)
    })?)
}

/// Per-channel `relu?(x * scale + shift)`.
///
/// # Errors
/// [`GpuError::Shape`] when `scale` or `shift` do not have one value per channel.
pub fn affine(
    ctx: &GpuContext,
    x: ArrayView4<'_, f32>,
    scale: &[f32],
    shift: &[f32],
    relu: bool,
) -> Result<Array4<f32>> {
    dim4(run_one(ctx, x, ConvKernel::default(), |b, t| {
        b.affine(t, scale, shift, None, relu)
    })?)
}

/// Global average pool, `[N, C, H, W] -> [N, C]`.
///
/// # Errors
/// GPU errors.
pub fn global_avg_pool(ctx: &GpuContext, x: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
    dim2(run_one(ctx, x, ConvKernel::default(), |b, t| {
        b.global_avg_pool(t)
    })?)
}

/// `x [N, in] · weightᵀ + bias`, `weight` is `[out, in]`.
///
/// # Errors
/// [`GpuError::Shape`] when `in` or the bias length do not match.
pub fn linear(
    ctx: &GpuContext,
    x: ArrayView2<'_, f32>,
    weight: ArrayView2<'_, f32>,
    bias: Option<&[f32]>,
) -> Result<Array2<f32>> {
    let (n, f) = x.dim();
    let x4 = x
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((n, f, 1, 1))
        .map_err(|e| GpuError::shape("linear input", "[N, in]", e))?;
    dim2(run_one(ctx, x4.view(), ConvKernel::default(), |b, t| {
        b.linear(t, weight, bias)
    })?)
}

/// `act(x [N, in] · weightᵀ + bias)`.
///
/// # Errors
/// As [`linear`].
pub fn linear_act(
    ctx: &GpuContext,
    x: ArrayView2<'_, f32>,
    weight: ArrayView2<'_, f32>,
    bias: Option<&[f32]>,
    act: Activation,
) -> Result<Array2<f32>> {
    let (n, f) = x.dim();
    let x4 = x
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((n, f, 1, 1))
        .map_err(|e| GpuError::shape("linear input", "[N, in]", e))?;
    dim2(run_one(ctx, x4.view(), ConvKernel::default(), |b, t| {
        b.linear_act(t, weight, bias, act)
    })?)
}
