//! The conv kernels as one type: which of them a conv layer runs, with its configuration
//! (chosen by `select` at upload), and its dispatch.

use super::{ConvShape, DispatchSpec, conv_gemm, conv_naive, conv_subgroup, conv_tiled};
use crate::caps::Caps;
use crate::error::Result;

/// How one conv layer runs, decided when its weights are uploaded: the kernel and its
/// configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConvImpl {
    Gemm(conv_gemm::Config),
    Workgroup(conv_tiled::Config),
    Subgroup(conv_subgroup::Config),
    Naive,
}

impl ConvImpl {
    /// Pipeline, parameters and workgroups of a conv.
    pub fn dispatch(self, s: ConvShape<'_>, caps: &Caps) -> Result<DispatchSpec> {
        let max_dim = caps.max_workgroups;
        match self {
            ConvImpl::Gemm(c) => conv_gemm::dispatch(c, s, caps),
            ConvImpl::Workgroup(c) => conv_tiled::dispatch(c, s, max_dim),
            ConvImpl::Subgroup(c) => conv_subgroup::dispatch(c, s, max_dim),
            ConvImpl::Naive => conv_naive::dispatch(s, max_dim),
        }
    }

    /// The kernel, for reports.
    pub fn name(self) -> &'static str {
        match self {
            ConvImpl::Gemm(_) => "conv gemm",
            ConvImpl::Workgroup(_) => "conv workgroup",
            ConvImpl::Subgroup(_) => "conv subgroup",
            ConvImpl::Naive => "conv naive",
        }
    }
}
