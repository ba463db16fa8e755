//! `channel_scale.wgsl`: `x[n, c, ..] * s[n, c]`, optional ReLU.

use super::{DispatchSpec, FLAG_RELU, linear_grid, params, u};
use crate::error::Result;
use crate::shader::{PipelineKey, Shader};

params! {
    /// `channel_scale.wgsl`.
    ScaleParams for Shader::ChannelScale => { total, hw, flags, _pad0 }
}

/// Invocations per workgroup (`WG` in the WGSL).
const WG: usize = 256;

/// The dispatch over an `x` = `[n, c, h, w]` input.
pub(crate) fn dispatch(x: [usize; 4], relu: bool, max_dim: u32) -> Result<DispatchSpec> {
    let [n, c, h, w] = x;
    let total = n * c * h * w;
    let p = ScaleParams {
        total: u(total),
        hw: u(h * w),
        flags: if relu { FLAG_RELU } else { 0 },
        ..ScaleParams::default()
    };
    let groups = linear_grid(total, WG, max_dim)?;
    Ok(DispatchSpec::new(
        PipelineKey::new(Shader::ChannelScale),
        &p,
        groups,
    ))
}
