//! `gap.wgsl`: global average pool, `[N, C, H, W] -> [N, C]`.

use super::layer::{At, Bind, Layer, Run, seq};
use super::{DispatchSpec, linear_grid, params, u};
use crate::error::Result;
use crate::shader::{PipelineKey, Shader};

params! {
    /// `gap.wgsl`.
    GapParams for Shader::GlobalAvgPool => { rows, hw, per_row, _pad0 }
}

/// Invocations per workgroup (`WG` in the WGSL).
const WG: usize = 64;

/// The dispatch over an `x` = `[n, c, h, w]` input: rows no longer than a workgroup take one
/// invocation each, longer ones a workgroup each.
pub(crate) fn dispatch(x: [usize; 4], max_dim: u32) -> Result<DispatchSpec> {
    let [n, c, h, w] = x;
    let per_row = h * w <= WG;
    let p = GapParams {
        rows: u(n * c),
        hw: u(h * w),
        per_row: u32::from(per_row),
        ..GapParams::default()
    };
    let groups = linear_grid(n * c, if per_row { WG } else { 1 }, max_dim)?;
    Ok(DispatchSpec::new(
        PipelineKey::new(Shader::GlobalAvgPool),
        &p,
        groups,
    ))
}

/// Global average pool `[N, C, H, W] -> [N, C]`.
#[derive(Clone, Debug)]
pub(crate) struct Gap;

impl Layer for Gap {
    fn name(&self) -> &'static str {
        "global avg pool"
    }

    fn out_shape(&self, at: &At<'_>) -> Result<[usize; 4]> {
        let [n, c, _, _] = at.x_shape();
        Ok([n, c, 1, 1])
    }

    fn dispatch(&self, at: &At<'_>, run: &Run<'_>) -> Result<DispatchSpec> {
        dispatch(at.x_shape(), run.caps.max_workgroups)
    }

    fn bindings(&self, at: &At<'_>, _: &PipelineKey, _: Option<usize>) -> Vec<(u32, Bind)> {
        seq(&[Bind::Params, Bind::Tensor(at.x), Bind::Tensor(at.y)])
    }
}
