//! `conv_naive.wgsl`: one output per invocation, the baseline (f32 only).

use ndarray::ArrayView4;

use super::{ConvShape, DispatchSpec, WeightData, conv_params, grid, params, u};
use crate::error::Result;
use crate::shader::{PipelineKey, Shader};

params! {
    /// `conv_naive.wgsl`.
    ConvNaiveParams for Shader::ConvNaive => {
        n, cin, h, w, cout, oh, ow, stride, pad, cin_g, cout_g, ks, flags, _pad0, _pad1, _pad2,
    }
}

/// Invocations per workgroup (`WG` in the WGSL).
const WG: usize = 64;

/// The weights as given, `[cout, cin / groups, ks, ks]`.
pub(crate) fn prepare(weight: ArrayView4<'_, f32>) -> WeightData {
    WeightData::Buffer(weight.as_standard_layout().iter().copied().collect())
}

/// Pipeline, parameters and workgroups of a conv.
pub(crate) fn dispatch(s: ConvShape<'_>, max_dim: u32) -> Result<DispatchSpec> {
    let p = conv_params!(ConvNaiveParams from s, {
        ks: u(s.spec.kernel_size),
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    });
    let [n, _, _, _] = s.x;
    let [_, cout, oh, ow] = s.y;
    let [gx, gy] = grid((n * cout * oh * ow).div_ceil(WG), max_dim)?;
    Ok(DispatchSpec::new(
        PipelineKey::new(Shader::ConvNaive),
        &p,
        [gx, gy, 1],
    ))
}
