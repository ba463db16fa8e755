//! `linear.wgsl`: a fully connected layer with optional bias and ReLU or sigmoid (the
//! squeeze-and-excitation layers; a linear layer without sigmoid runs as a 1x1 conv).

use repvgg_math::Activation;

use super::{DispatchSpec, FLAG_BIAS, linear_grid, params, u};
use crate::error::Result;
use crate::shader::{PipelineKey, Shader};

params! {
    /// `linear.wgsl`.
    LinearParams for Shader::Linear => { batch, in_f, out_f, flags, act, out4, _pad0, _pad1 }
}

/// Invocations per workgroup (`WG` in the WGSL).
const WG: usize = 64;

/// Outputs per invocation (one vec4 of the transposed weight).
pub(crate) const OUTPUTS: usize = 4;

/// `weight` (`[out, in]`) as the kernel reads it: transposed, each row padded to whole vec4s,
/// `[in][ceil(out / 4) * 4]`.
pub(crate) fn weight_layout(weight: &ndarray::Array2<f32>) -> Vec<f32> {
    let (out_f, in_f) = weight.dim();
    let out_pad = out_f.div_ceil(OUTPUTS) * OUTPUTS;
    let mut data = vec![0.0f32; in_f * out_pad];
    for ((o, i), &v) in weight.indexed_iter() {
        data[i * out_pad + o] = v;
    }
    data
}

/// The dispatch of a `batch` of `in_f` features to `out_f`.
pub(crate) fn dispatch(
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
        out4: u(out_f.div_ceil(OUTPUTS)),
        ..LinearParams::default()
    };
    let groups = linear_grid(batch * out_f.div_ceil(OUTPUTS), WG, max_dim)?;
    Ok(DispatchSpec::new(
        PipelineKey::new(Shader::Linear),
        &p,
        groups,
    ))
}
