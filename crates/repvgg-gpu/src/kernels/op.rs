//! The layer kinds, one variant each: a new kind is a kernel file with its struct (implementing
//! [`Layer`]), its WGSL file, and a variant here.

use super::layer::Layer;
use super::{affine, channel_scale, conv, gap, linear, wino_input, wino_output};

/// One layer, by kind.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Conv(conv::Conv),
    Affine(affine::Affine),
    Gap(gap::Gap),
    Linear(linear::Linear),
    ChannelScale(channel_scale::ChannelScale),
    WinogradInput(wino_input::WinoInput),
    WinogradOutput(wino_output::WinoOutput),
}

impl Op {
    /// The layer behind the kind.
    pub fn layer(&self) -> &dyn Layer {
        match self {
            Op::Conv(l) => l,
            Op::Affine(l) => l,
            Op::Gap(l) => l,
            Op::Linear(l) => l,
            Op::ChannelScale(l) => l,
            Op::WinogradInput(l) => l,
            Op::WinogradOutput(l) => l,
        }
    }
}
