//! `channel_scale.wgsl`: `x[n, c, ..] * s[n, c]`, optional ReLU.

use super::layer::{At, Bind, Layer, Run, seq};
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

/// `x[n, c, ..] * s[n, c]`, then ReLU (squeeze-and-excitation's last step: `s` is the
/// excitation, a flat `[N, C]` tensor).
#[derive(Clone, Debug)]
pub(crate) struct ChannelScale {
    pub s: usize,
    pub relu: bool,
}

impl Layer for ChannelScale {
    fn name(&self) -> &'static str {
        "channel scale"
    }

    fn reads(&self) -> Option<usize> {
        Some(self.s)
    }

    fn out_shape(&self, at: &At<'_>) -> Result<[usize; 4]> {
        Ok(at.x_shape())
    }

    fn dispatch(&self, at: &At<'_>, run: &Run<'_>) -> Result<DispatchSpec> {
        dispatch(at.x_shape(), self.relu, run.caps.max_workgroups)
    }

    fn bindings(&self, at: &At<'_>, _: &PipelineKey, _: Option<usize>) -> Vec<(u32, Bind)> {
        seq(&[
            Bind::Params,
            Bind::Tensor(at.x),
            Bind::Tensor(self.s),
            Bind::Tensor(at.y),
        ])
    }
}
