//! `linear.wgsl`: a fully connected layer with optional bias and ReLU or sigmoid (the
//! squeeze-and-excitation layers; a linear layer without sigmoid runs as a 1x1 conv).

use repvgg_math::Activation;

use super::layer::{At, Bind, Layer, Run, seq};
use super::{DispatchSpec, FLAG_BIAS, linear_grid, params, u};
use crate::error::{GpuError, Result};
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

/// A fully connected layer on `[N, C, H, W]` (`C * H * W = in_f`) with its activation (the
/// ones the conv kernels do not run: a sigmoid, or an input with spatial axes).
#[derive(Clone, Debug)]
pub(crate) struct Linear {
    pub in_f: usize,
    pub out_f: usize,
    pub bias: bool,
    pub act: Activation,
}

impl Layer for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn out_shape(&self, at: &At<'_>) -> Result<[usize; 4]> {
        let [n, c, h, w] = at.x_shape();
        if c * h * w != self.in_f {
            return Err(GpuError::shape(
                format!(
                    "features into linear layer {} (C*H*W of its input, for a {}x{} input)",
                    at.layer, at.input_hw.0, at.input_hw.1
                ),
                self.in_f,
                c * h * w,
            ));
        }
        Ok([n, self.out_f, 1, 1])
    }

    fn macs(&self, at: &At<'_>) -> Result<u64> {
        Ok((self.in_f * self.out_f * at.x_shape()[0]) as u64)
    }

    fn dispatch(&self, at: &At<'_>, run: &Run<'_>) -> Result<DispatchSpec> {
        dispatch(
            at.x_shape()[0],
            self.in_f,
            self.out_f,
            self.bias,
            self.act,
            run.caps.max_workgroups,
        )
    }

    fn bindings(&self, at: &At<'_>, _: &PipelineKey, _: Option<usize>) -> Vec<(u32, Bind)> {
        seq(&[
            Bind::Params,
            Bind::Tensor(at.x),
            Bind::Weight,
            Bind::Bias,
            Bind::Tensor(at.y),
        ])
    }
}
