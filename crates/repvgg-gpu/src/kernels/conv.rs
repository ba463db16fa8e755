//! The conv layer kind: a convolution with its fused epilogue (scale, bias, residual, ReLU),
//! run by whichever conv kernel `select` chose for it at upload
//! ([`super::conv_kernel::ConvImpl`]).

use repvgg_math::ConvSpec;

use super::layer::{At, Bind, Layer, Run, optional, seq};
use super::{ConvShape, DispatchSpec, EpilogueTerms};
use crate::error::{GpuError, Result};
use crate::shader::{PipelineKey, Shader};

/// A convolution layer.
#[derive(Clone, Debug)]
pub(crate) struct Conv {
    pub spec: ConvSpec,
    pub terms: EpilogueTerms,
    /// The tensor its epilogue adds.
    pub residual: Option<usize>,
}

impl Layer for Conv {
    /// The conv kernel's name where one was chosen (`crate::upload::Uploaded::kernel_name`).
    fn name(&self) -> &'static str {
        "conv"
    }

    fn reads(&self) -> Option<usize> {
        self.residual
    }

    fn out_shape(&self, at: &At<'_>) -> Result<[usize; 4]> {
        let spec = &self.spec;
        let [n, _, h, w] = at.x_shape();
        let (oh, ow) = spec.output_size(h, w).map_err(|_| {
            GpuError::shape(
                format!(
                    "input height x width (layer {}, a {k}x{k} conv with padding {p} and stride \
                     {s}, would see {h}x{w})",
                    at.layer,
                    k = spec.kernel_size,
                    p = spec.padding,
                    s = spec.stride
                ),
                "a larger input",
                format!("{}x{}", at.input_hw.0, at.input_hw.1),
            )
        })?;
        at.check_residual(self.residual, [n, spec.out_channels, oh, ow])
    }

    fn macs(&self, at: &At<'_>) -> Result<u64> {
        let [n, _, h, w] = at.x_shape();
        Ok(self.spec.macs(h, w)? * n as u64)
    }

    fn dispatch(&self, at: &At<'_>, run: &Run<'_>) -> Result<DispatchSpec> {
        let imp = run.conv.ok_or_else(|| {
            GpuError::InvalidNetwork(format!("conv layer {} has no kernel", at.layer))
        })?;
        let shape = ConvShape {
            spec: &self.spec,
            x: at.x_shape(),
            y: at.y_shape(),
            ep: self.terms.with(self.residual),
        };
        imp.dispatch(shape, run.caps)
    }

    fn bindings(&self, at: &At<'_>, key: &PipelineKey, _: Option<usize>) -> Vec<(u32, Bind)> {
        let mut b = seq(&[
            Bind::Params,
            Bind::Tensor(at.x),
            Bind::Weight,
            Bind::Scale,
            Bind::Bias,
            optional(self.residual),
            Bind::Tensor(at.y),
        ]);
        let n = |b: &Vec<(u32, Bind)>| b.len() as u32;
        match key.shader {
            Shader::ConvGemm => b.push((n(&b), Bind::Partial)),
            Shader::ConvSubgroupDirect | Shader::ConvSubgroupFlat => {
                // y4: the output again, as vec4s, where the shader stores through it (whole
                // vec4s then); a placeholder otherwise (the output may be too small for it).
                let y4 = if key.value("VEC") > 0 {
                    Bind::Tensor(at.y)
                } else {
                    Bind::UnusedRw
                };
                b.push((n(&b), y4));
                // x4: the input again, as vec4s, where the shader loads through it (flat: VLD;
                // direct: VROW or VBLK).
                let quads = ["VLD", "VROW", "VBLK"].iter().any(|k| key.value(k) > 0);
                let x4 = if quads {
                    Bind::Tensor(at.x)
                } else {
                    Bind::Unused
                };
                b.push((n(&b), x4));
            }
            _ => {}
        }
        b
    }

    /// `reduce` binds what it uses, at the same numbers as `main`.
    fn second_bindings(&self, at: &At<'_>) -> Vec<(u32, Bind)> {
        vec![
            (0, Bind::Params),
            (3, Bind::Scale),
            (4, Bind::Bias),
            (5, optional(self.residual)),
            (6, Bind::Tensor(at.y)),
            (7, Bind::Partial),
        ]
    }
}
