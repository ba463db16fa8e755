//! A RepVGG as a sequence of layers, written once: [`deploy`] and [`train`] walk a model and
//! call a [`Layers`] implementation for every layer. The CPU engine ([`crate::cpu`]), the GPU
//! engine ([`crate::gpu`]) and the ONNX exporter ([`crate::onnx`]) are such implementations, so
//! a new block kind is composed here and nowhere else.
//!
//! The deployed form is one conv with bias per block (its ReLU in the epilogue, or SE then
//! ReLU). The train form runs every branch as timm's eval mode does, branches never merged: the
//! 3x3 conv with its batch norm as a per-channel affine in its epilogue, the 1x1 conv likewise
//! with the 3x3 result added as a residual, the identity batch norm as an affine that adds the
//! running sum, then SE and ReLU.

use ndarray::ArrayView4;
use repvgg_math::{Activation, ConvSpec, Epilogue};

use crate::error::Result;
use crate::model::{DeployModel, Head, SqueezeExcite, TrainModel, affine_of};

/// Which part of a block a layer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// The fused 3x3 conv of a deployed block.
    Reparam,
    /// The 3x3 conv + BN branch.
    Dense,
    /// The 1x1 conv + BN branch.
    OneByOne,
    /// The BN-only identity branch.
    Identity,
    /// Squeeze-and-excitation.
    Se,
}

/// Where a layer sits: stage (0 = stem), block within the stage, part of the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Site {
    /// Stage index; stage 0 is the stem.
    pub stage: usize,
    /// Block index within the stage.
    pub block: usize,
    /// The part of the block.
    pub part: Part,
}

impl Site {
    fn with(self, part: Part) -> Self {
        Self { part, ..self }
    }
}

/// A backend that can build a RepVGG layer by layer. `Tensor` is its handle of an
/// intermediate result.
pub trait Layers {
    /// A tensor of the network being built.
    type Tensor: Copy;

    /// The network's input, `[N, channels, H, W]`.
    fn input(&mut self, channels: usize) -> Result<Self::Tensor>;

    /// A convolution and its epilogue: `act(conv(x) * scale + bias + residual)`.
    fn conv(
        &mut self,
        at: Site,
        x: Self::Tensor,
        weight: ArrayView4<'_, f32>,
        spec: ConvSpec,
        ep: Epilogue<Self::Tensor>,
    ) -> Result<Self::Tensor>;

    /// A per-channel affine of `x` added to `sum`: `act(x * scale + shift + sum)` (the identity
    /// branch's batch norm).
    fn affine_add(
        &mut self,
        at: Site,
        x: Self::Tensor,
        scale: Vec<f32>,
        shift: Vec<f32>,
        sum: Self::Tensor,
        act: Activation,
    ) -> Result<Self::Tensor>;

    /// Squeeze-and-excitation, `act(x * sigmoid(fc2(relu(fc1(gap(x))))))`.
    fn squeeze_excite(
        &mut self,
        at: Site,
        x: Self::Tensor,
        se: &SqueezeExcite,
        act: Activation,
    ) -> Result<Self::Tensor>;

    /// The output of stage `stage` (0 = stem), which the backend may keep as a feature.
    fn stage_output(&mut self, stage: usize, x: Self::Tensor) -> Result<()>;

    /// The classifier: global average pool, then linear; the network's logits.
    fn head(&mut self, x: Self::Tensor, head: &Head) -> Result<()>;
}

/// The ReLU flag of an engine op that ends with a ReLU or nothing (affine, squeeze-excite);
/// `what` names the op in the error for any other activation.
#[cfg(any(feature = "cpu", feature = "gpu"))]
pub(crate) fn relu_flag(act: Activation, what: &str) -> Result<bool> {
    match act {
        Activation::None => Ok(false),
        Activation::Relu => Ok(true),
        Activation::Sigmoid => Err(crate::ModelError::Unsupported(format!(
            "the {what} ends with a ReLU or nothing, not a sigmoid"
        ))),
    }
}

/// Builds the deployed form of `m` with `l`.
pub fn deploy<L: Layers>(l: &mut L, m: &DeployModel) -> Result<()> {
    let mut x = l.input(m.config.in_channels)?;
    for (stage, blocks) in m.stages.iter().enumerate() {
        for (block, blk) in blocks.iter().enumerate() {
            let at = Site {
                stage,
                block,
                part: Part::Reparam,
            };
            let c = &blk.conv;
            let ep = Epilogue::bias(c.bias.to_vec()).with_relu(blk.se.is_none());
            x = l.conv(at, x, c.weight.view(), c.spec, ep)?;
            if let Some(se) = &blk.se {
                x = l.squeeze_excite(at.with(Part::Se), x, se, Activation::Relu)?;
            }
        }
        l.stage_output(stage, x)?;
    }
    l.head(x, &m.head)
}

/// Builds the train form of `m` with `l`, every branch its own layer.
pub fn train<L: Layers>(l: &mut L, m: &TrainModel) -> Result<()> {
    let mut x = l.input(m.config.in_channels)?;
    for (stage, blocks) in m.stages.iter().enumerate() {
        for (block, blk) in blocks.iter().enumerate() {
            let at = Site {
                stage,
                block,
                part: Part::Dense,
            };
            let br = &blk.branches;
            // The last branch carries the block's ReLU unless SE comes after it.
            let relu = blk.se.is_none();
            let has_more = br.one_by_one.is_some() || br.identity.is_some();
            let (scale, shift) = affine_of(&br.dense.bn, br.dense.bias.as_ref())?;
            let ep = Epilogue::affine(scale, shift).with_relu(relu && !has_more);
            let mut y = l.conv(at, x, br.dense.weight.view(), br.spec, ep)?;
            if let Some(one) = &br.one_by_one {
                let (scale, shift) = affine_of(&one.bn, one.bias.as_ref())?;
                let ep = Epilogue::affine(scale, shift)
                    .with_residual(y)
                    .with_relu(relu && br.identity.is_none());
                let spec = br.one_by_one_spec()?;
                y = l.conv(at.with(Part::OneByOne), x, one.weight.view(), spec, ep)?;
            }
            if let Some(id) = &br.identity {
                let (scale, shift) = affine_of(id, None)?;
                let act = Activation::relu_if(relu);
                y = l.affine_add(at.with(Part::Identity), x, scale, shift, y, act)?;
            }
            if let Some(se) = &blk.se {
                y = l.squeeze_excite(at.with(Part::Se), y, se, Activation::Relu)?;
            }
            x = y;
        }
        l.stage_output(stage, x)?;
    }
    l.head(x, &m.head)
}
