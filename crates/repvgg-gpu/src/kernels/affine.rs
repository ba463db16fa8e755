//! `affine.wgsl`: per-channel `x * scale + shift`, optional residual and ReLU: the shared
//! epilogue on its own (scale and shift always flagged, the shift bound as its bias).

use super::layer::{At, Bind, Layer, Run, epilogue_only};
use super::{
    DispatchSpec, FLAG_BIAS, FLAG_RELU, FLAG_RESIDUAL, FLAG_SCALE, linear_grid, params, u,
};
use crate::error::Result;
use crate::shader::{PipelineKey, Shader};

params! {
    /// `affine.wgsl`.
    AffineParams for Shader::Affine => { total, c, hw, flags }
}

/// Invocations per workgroup (`WG` in the WGSL).
const WG: usize = 256;

/// The dispatch over an `x` = `[n, c, h, w]` input.
pub(crate) fn dispatch(
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
        flags: FLAG_SCALE
            | FLAG_BIAS
            | if residual { FLAG_RESIDUAL } else { 0 }
            | if relu { FLAG_RELU } else { 0 },
    };
    let groups = linear_grid(total, WG, max_dim)?;
    Ok(DispatchSpec::new(
        PipelineKey::new(Shader::Affine),
        &p,
        groups,
    ))
}

/// A per-channel affine map (scale and shift uploaded as the epilogue's scale and bias), then
/// the residual and ReLU.
#[derive(Clone, Debug)]
pub(crate) struct Affine {
    pub residual: Option<usize>,
    pub relu: bool,
}

impl Layer for Affine {
    fn name(&self) -> &'static str {
        "affine"
    }

    fn reads(&self) -> Option<usize> {
        self.residual
    }

    fn out_shape(&self, at: &At<'_>) -> Result<[usize; 4]> {
        at.check_residual(self.residual, at.x_shape())
    }

    fn dispatch(&self, at: &At<'_>, run: &Run<'_>) -> Result<DispatchSpec> {
        dispatch(
            at.x_shape(),
            self.residual.is_some(),
            self.relu,
            run.caps.max_workgroups,
        )
    }

    fn bindings(&self, at: &At<'_>, _: &PipelineKey, _: Option<usize>) -> Vec<(u32, Bind)> {
        epilogue_only(at, self.residual)
    }
}
