//! What a layer kind answers, without a device ([`Layer`]): the tensors it reads, its output
//! shape, its work, its dispatch and its bindings. Each kind is a struct in the file of the
//! kernel that runs it; [`super::op::Op`] lists them. The graph holds `Op`s with their
//! weights, the plan asks them for shapes, `bind` turns their bindings into bind groups; none of
//! them names a layer kind.

use std::fmt::Debug;

use super::DispatchSpec;
use super::conv_kernel::ConvImpl;
use crate::caps::Caps;
use crate::error::{GpuError, Result};
use crate::shader::PipelineKey;

/// Where a layer runs: its place in the network, its input and output tensors, and the shapes
/// of a plan (those of the layers before it, while the plan is computed).
#[derive(Clone, Copy, Debug)]
pub(crate) struct At<'a> {
    /// The layer's index in the network, for messages.
    pub layer: usize,
    pub x: usize,
    pub y: usize,
    pub shapes: &'a [[usize; 4]],
    /// The network input's height and width, for messages.
    pub input_hw: (usize, usize),
}

impl At<'_> {
    /// The input's shape.
    pub fn x_shape(&self) -> [usize; 4] {
        self.shapes[self.x]
    }

    /// The output's shape (once planned).
    pub fn y_shape(&self) -> [usize; 4] {
        self.shapes[self.y]
    }

    /// `out`, unless the residual `r` has another shape.
    pub fn check_residual(&self, r: Option<usize>, out: [usize; 4]) -> Result<[usize; 4]> {
        match r {
            Some(r) if self.shapes[r] != out => Err(GpuError::shape(
                format!(
                    "residual of layer {} for a {}x{} input",
                    self.layer, self.input_hw.0, self.input_hw.1
                ),
                format!("{out:?}"),
                format!("{:?}", self.shapes[r]),
            )),
            _ => Ok(out),
        }
    }
}

/// How a layer is dispatched: the adapter's capabilities, whether the plan runs it chained
/// with the next layer, and the conv kernel chosen at upload (convs only).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run<'a> {
    pub caps: &'a Caps,
    pub chained: bool,
    pub conv: Option<&'a ConvImpl>,
}

/// What one binding of a layer's bind group holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bind {
    /// The parameters of the pass (the uniform `p`).
    Params,
    /// An activation tensor.
    Tensor(usize),
    /// The uploaded weights: a buffer or a texture.
    Weight,
    /// Per-channel scale, or a placeholder where the layer has none.
    Scale,
    /// Per-channel bias (the affine map's shift), or a placeholder where the layer has none.
    Bias,
    /// Split-K partial sums, or a placeholder where the conv does not split.
    Partial,
    /// A placeholder for a read-only binding this use of the pipeline never reads.
    Unused,
    /// A placeholder for a read-write binding this use of the pipeline never writes.
    UnusedRw,
}

/// `binds` at binding numbers 0, 1, 2, ...
pub(crate) fn seq(binds: &[Bind]) -> Vec<(u32, Bind)> {
    (0..).zip(binds.iter().copied()).collect()
}

/// The bind group of a kernel that reads `x` and applies the epilogue (scale, bias, residual
/// `r`) into `y`, without weights: `p`, `x`, `scale`, `bias`, `residual`, `y`.
pub(crate) fn epilogue_only(at: &At<'_>, r: Option<usize>) -> Vec<(u32, Bind)> {
    seq(&[
        Bind::Params,
        Bind::Tensor(at.x),
        Bind::Scale,
        Bind::Bias,
        optional(r),
        Bind::Tensor(at.y),
    ])
}

/// `r` as a binding: the tensor, or a placeholder.
pub(crate) fn optional(r: Option<usize>) -> Bind {
    r.map_or(Bind::Unused, Bind::Tensor)
}

/// A layer kind: everything about it that needs no device.
pub(crate) trait Layer: Debug {
    /// Its kernel, for reports (`--profile`) and errors.
    fn name(&self) -> &'static str;

    /// The tensor it reads besides its input (a residual, the excitation), if any.
    fn reads(&self) -> Option<usize> {
        None
    }

    /// Its output's shape, from the shapes of the layers before it.
    fn out_shape(&self, at: &At<'_>) -> Result<[usize; 4]>;

    /// Its multiply-accumulates, at a planned shape.
    fn macs(&self, _at: &At<'_>) -> Result<u64> {
        Ok(0)
    }

    /// Pipeline, parameters and workgroups at a planned shape.
    fn dispatch(&self, at: &At<'_>, run: &Run<'_>) -> Result<DispatchSpec>;

    /// Its bind group, by binding number, for the pipeline `key` that [`Layer::dispatch`]
    /// chose; `next_y`: where the plan chains the next layer into this one, that layer's output.
    fn bindings(&self, at: &At<'_>, key: &PipelineKey, next_y: Option<usize>) -> Vec<(u32, Bind)>;

    /// The bind group of its second pass (a split-K conv's `reduce`), if it has one.
    fn second_bindings(&self, _at: &At<'_>) -> Vec<(u32, Bind)> {
        Vec::new()
    }
}
