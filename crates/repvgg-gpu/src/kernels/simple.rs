//! The small kernels: per-channel affine, global average pool, fully connected, channel scale.

use super::{DispatchSpec, FLAG_BIAS, FLAG_RELU, FLAG_RESIDUAL, key, linear_grid, params, u};
use crate::error::Result;
use crate::shader::Shader;
use repvgg_math::Activation;

params! {
    /// `affine.wgsl`.
    AffineParams for Shader::Affine => { total, c, hw, flags }
}

params! {
    /// `gap.wgsl`.
    GapParams for Shader::GlobalAvgPool => { rows, hw, per_row, _pad0 }
}

params! {
    /// `linear.wgsl`.
    LinearParams for Shader::Linear => { batch, in_f, out_f, flags, act, out4, _pad0, _pad1 }
}

params! {
    /// `channel_scale.wgsl`.
    ScaleParams for Shader::ChannelScale => { total, hw, flags, _pad0 }
}

/// Invocations per workgroup of the element-wise kernels (`WG` in their WGSL).
const WG_ELEMENTWISE: usize = 256;
/// Invocations per workgroup of `linear.wgsl` (`WG` in its WGSL).
const WG_LINEAR: usize = 64;
/// Invocations per workgroup of `gap.wgsl` (`WG` in its WGSL).
const WG_GAP: usize = 64;

/// Outputs of `linear.wgsl` per invocation (one vec4 of the transposed weight).
pub(crate) const LINEAR_OUTPUTS: usize = 4;

pub(crate) fn affine(
    x: [usize; 4],
    residual: bool,
    relu: bool,
    max_dim: u32,
) -> Result<DispatchSpec> {
    let [n, c, h, w] = x;
    let total = n * c * h * w;
    let p = AffineParams {
        total: u(total),
        c: u(c),
        hw: u(h * w),
        flags: if residual { FLAG_RESIDUAL } else { 0 } | if relu { FLAG_RELU } else { 0 },
    };
    let groups = linear_grid(total, WG_ELEMENTWISE, max_dim)?;
    Ok(DispatchSpec::new(key(Shader::Affine), &p, groups))
}

pub(crate) fn gap(x: [usize; 4], max_dim: u32) -> Result<DispatchSpec> {
    let [n, c, h, w] = x;
    // Rows no longer than a workgroup: one invocation each; longer: one workgroup each.
    let per_row = h * w <= WG_GAP;
    let p = GapParams {
        rows: u(n * c),
        hw: u(h * w),
        per_row: u32::from(per_row),
        ..GapParams::default()
    };
    let groups = linear_grid(n * c, if per_row { WG_GAP } else { 1 }, max_dim)?;
    Ok(DispatchSpec::new(key(Shader::GlobalAvgPool), &p, groups))
}

pub(crate) fn linear(
    batch: usize,
    in_f: usize,
    out_f: usize,
    bias: bool,
    act: Activation,
    max_dim: u32,
) -> Result<DispatchSpec> {
    let p = LinearParams {
        batch: u(batch),
        in_f: u(in_f),
        out_f: u(out_f),
        flags: if bias { FLAG_BIAS } else { 0 },
        // linear.wgsl: 0 none, 1 ReLU, 2 sigmoid.
        act: match act {
            Activation::None => 0,
            Activation::Relu => 1,
            Activation::Sigmoid => 2,
        },
        out4: u(out_f.div_ceil(LINEAR_OUTPUTS)),
        ..LinearParams::default()
    };
    let groups = linear_grid(batch * out_f.div_ceil(LINEAR_OUTPUTS), WG_LINEAR, max_dim)?;
    Ok(DispatchSpec::new(key(Shader::Linear), &p, groups))
}

pub(crate) fn channel_scale(x: [usize; 4], relu: bool, max_dim: u32) -> Result<DispatchSpec> {
    let [n, c, h, w] = x;
    let total = n * c * h * w;
    let p = ScaleParams {
        total: u(total),
        hw: u(h * w),
        flags: if relu { FLAG_RELU } else { 0 },
        ..ScaleParams::default()
    };
    let groups = linear_grid(total, WG_ELEMENTWISE, max_dim)?;
    Ok(DispatchSpec::new(key(Shader::ChannelScale), &p, groups))
}
