//! The small kernels: per-channel affine, global average pool, fully connected, channel scale.

use super::{DispatchSpec, FLAG_BIAS, FLAG_RELU, FLAG_RESIDUAL, key, linear_grid, params, u};
use crate::error::Result;
use crate::graph::Activation;
use crate::shader::Shader;

params! {
    /// `affine.wgsl`.
    AffineParams for Shader::Affine => { total, c, hw, flags }
}

params! {
    /// `gap.wgsl`.
    GapParams for Shader::GlobalAvgPool => { rows, hw, _pad0, _pad1 }
}

params! {
    /// `linear.wgsl`.
    LinearParams for Shader::Linear => { batch, in_f, out_f, flags, act, _pad0, _pad1, _pad2 }
}

params! {
    /// `channel_scale.wgsl`.
    ScaleParams for Shader::ChannelScale => { total, hw, flags, _pad0 }
}

/// Invocations per workgroup of the element-wise kernels (`WG` in their WGSL).
const WG_ELEMENTWISE: usize = 256;
/// Invocations per workgroup of `linear.wgsl`.
const WG_LINEAR: usize = 64;

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
    let p = GapParams {
        rows: u(n * c),
        hw: u(h * w),
        ..GapParams::default()
    };
    // One workgroup per (image, channel) row.
    let groups = linear_grid(n * c, 1, max_dim)?;
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
        act: act as u32,
        ..LinearParams::default()
    };
    let groups = linear_grid(batch * out_f, WG_LINEAR, max_dim)?;
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
