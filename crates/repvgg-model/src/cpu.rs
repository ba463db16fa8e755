//! A RepVGG network on the CPU engine: composes [`repvgg_cpu::NetworkBuilder`] layers from a
//! model, the twin of [`crate::gpu`].
//!
//! The deployed form runs one fused conv (bias and ReLU in its epilogue) per block. The train
//! form runs every branch faithfully: the 3x3 conv with its BN applied as a per-channel affine in
//! its own epilogue, the 1x1 conv likewise, added to the running sum in its epilogue, then the
//! identity BN as an affine that adds to the sum, then SE and ReLU — the arithmetic of timm's
//! eval mode, branches never merged.

use ndarray::{Array2, ArrayView4};
use repvgg_cpu::{Epilogue, Network, NetworkBuilder, TensorId};
use repvgg_math::{ConvBn, ConvSpec};

use crate::error::Result;
use crate::model::{DeployModel, Features, RepVgg, SqueezeExcite, TrainModel, affine_of};

pub use repvgg_cpu::{ConvAlgo, CpuOptions, OpTime, Tile};

/// A model prepared for the CPU engine: weights packed, buffers reused between runs.
/// `Send + Sync`: share it between threads; each concurrent run uses its own buffers.
#[derive(Debug)]
pub struct CpuModel {
    net: Network,
    in_channels: usize,
    features: bool,
}

fn conv_bn(
    b: &mut NetworkBuilder,
    x: TensorId,
    c: &ConvBn<f32>,
    spec: ConvSpec,
    into: Option<TensorId>,
    relu: bool,
) -> Result<TensorId> {
    let (scale, shift) = affine_of(&c.bn, c.bias.as_ref())?;
    let ep = Epilogue::affine(scale, shift)
        .with_residual_opt(into)
        .with_relu(relu);
    Ok(b.conv(x, c.weight.view(), spec, ep)?)
}

fn se(b: &mut NetworkBuilder, x: TensorId, se: &SqueezeExcite) -> Result<TensorId> {
    Ok(b.squeeze_excite(
        x,
        se.fc1_weight.view(),
        &se.fc1_bias.to_vec(),
        se.fc2_weight.view(),
        &se.fc2_bias.to_vec(),
        true,
    )?)
}

fn finish<B>(
    mut b: NetworkBuilder,
    m: &RepVgg<B>,
    x: TensorId,
    stage_outs: Vec<TensorId>,
    features: bool,
) -> Result<CpuModel> {
    b.head(x, m.head.weight.view(), &m.head.bias.to_vec())?;
    if features {
        for t in stage_outs {
            b.output(t)?;
        }
    }
    Ok(CpuModel {
        net: b.build()?,
        in_channels: m.config.in_channels,
        features,
    })
}

impl CpuModel {
    /// Prepares a deployed model: one conv + bias (+ ReLU, or SE then ReLU) per block.
    /// With `features`, every run also returns each stage's output.
    pub fn deploy(m: &DeployModel, opts: CpuOptions, features: bool) -> Result<Self> {
        let mut b = NetworkBuilder::new(opts);
        let mut x = b.input(m.config.in_channels)?;
        let mut outs = Vec::new();
        for stage in &m.stages {
            for blk in stage {
                let c = &blk.conv;
                let ep = Epilogue::bias(c.bias.to_vec()).with_relu(blk.se.is_none());
                x = b.conv(x, c.weight.view(), c.spec, ep)?;
                if let Some(s) = &blk.se {
                    x = se(&mut b, x, s)?;
                }
            }
            outs.push(x);
        }
        finish(b, m, x, outs, features)
    }

    /// Prepares a train-form model: every branch its own kernel, summed through epilogues.
    pub fn train(m: &TrainModel, opts: CpuOptions, features: bool) -> Result<Self> {
        let mut b = NetworkBuilder::new(opts);
        let mut x = b.input(m.config.in_channels)?;
        let mut outs = Vec::new();
        for stage in &m.stages {
            for blk in stage {
                let br = &blk.branches;
                let last_relu = blk.se.is_none();
                let has_more = br.one_by_one.is_some() || br.identity.is_some();
                let mut y = conv_bn(&mut b, x, &br.dense, br.spec, None, last_relu && !has_more)?;
                if let Some(one) = &br.one_by_one {
                    let relu = last_relu && br.identity.is_none();
                    y = conv_bn(&mut b, x, one, br.one_by_one_spec()?, Some(y), relu)?;
                }
                if let Some(id) = &br.identity {
                    let (scale, shift) = affine_of(id, None)?;
                    y = b.affine_add(x, scale, shift, y, last_relu)?;
                }
                if let Some(s) = &blk.se {
                    y = se(&mut b, y, s)?;
                }
                x = y;
            }
            outs.push(x);
        }
        finish(b, m, x, outs, features)
    }

    /// Logits and, when prepared with `features`, every stage's output (stage 0 = stem).
    pub fn forward_features(&self, x: ArrayView4<'_, f32>) -> Result<Features> {
        crate::model::check_input(self.in_channels, &x)?;
        let out = self.net.run(x)?;
        Ok(Features {
            stages: if self.features {
                out.outputs
            } else {
                Vec::new()
            },
            logits: out.logits,
        })
    }

    /// Logits `[N, classes]`.
    pub fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
        crate::model::check_input(self.in_channels, &x)?;
        Ok(self.net.run(x)?.logits)
    }

    /// Bytes of activation buffers and conv scratch one run of `batch x H x W` holds.
    pub fn activation_bytes(&self, batch: usize, h: usize, w: usize) -> Result<u64> {
        Ok(self.net.activation_bytes(batch, h, w)?)
    }

    /// Multiply-adds one run of `batch x H x W` executes, as each conv's algorithm does them
    /// (Winograd convs in the transformed domain; see [`repvgg_cpu::Network::executed_macs`]).
    pub fn executed_macs(&self, batch: usize, h: usize, w: usize) -> Result<u64> {
        Ok(self.net.executed_macs(batch, h, w)?)
    }

    /// Runs `x` once and returns the wall time of every op (for `repvgg bench --profile`).
    pub fn profile(&self, x: ArrayView4<'_, f32>) -> Result<Vec<repvgg_cpu::OpTime>> {
        crate::model::check_input(self.in_channels, &x)?;
        Ok(self.net.run_profiled(x)?.1)
    }

    /// The prepared network (algorithms, threads).
    pub fn network(&self) -> &Network {
        &self.net
    }
}
