//! A RepVGG network on the GPU: composes [`repvgg_gpu::NetworkBuilder`] layers from a model.
//!
//! The deployed form runs one fused conv (bias and ReLU in its epilogue) per block. The train
//! form runs every branch faithfully: the 3x3 conv with its BN folded into its epilogue as a
//! per-channel affine, the 1x1 conv likewise with the 3x3 result added as a residual, then the
//! identity BN as an affine that adds the running sum — branches are never merged — then SE and
//! ReLU.

use std::time::Duration;

use ndarray::{Array2, Array4, ArrayView4, Ix2, Ix4};
use repvgg_gpu::{Activation, Epilogue, GpuNetwork, NetworkBuilder, Precision, TensorId};

pub use repvgg_gpu::{ConvKernel, GpuContext, LayerTiming};
use repvgg_math::{ConvBn, ConvSpec};

use crate::error::{ModelError, Result};
use crate::model::affine_of;
use crate::model::{DeployModel, Features, RepVgg, SqueezeExcite, TrainModel};

/// How a model runs on the GPU: kernel, storage precision, which outputs to bring back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GpuOptions {
    pub kernel: ConvKernel,
    /// f32 (default), or f16 weights and activations with f32 arithmetic (needs the adapter's
    /// `SHADER_F16`; inputs and logits stay f32).
    pub precision: Precision,
    /// Also read back every stage's output (stage0 = stem).
    pub features: bool,
}

/// A model uploaded to a GPU, ready to run batches.
#[derive(Debug)]
pub struct GpuModel {
    net: GpuNetwork,
    stages: usize,
    features: bool,
    in_channels: usize,
}

fn conv_bn(
    b: &mut NetworkBuilder,
    x: TensorId,
    c: &ConvBn<f32>,
    spec: ConvSpec,
    residual: Option<TensorId>,
    relu: bool,
) -> Result<TensorId> {
    let (scale, shift) = affine_of(&c.bn, c.bias.as_ref())?;
    let ep = Epilogue::affine(scale, shift)
        .with_residual_opt(residual)
        .with_relu(relu);
    Ok(b.conv(x, c.weight.view(), spec, ep)?)
}

/// Squeeze-and-excitation from the kernel crate's layers, then ReLU:
/// `relu(x * sigmoid(fc2(relu(fc1(gap(x))))))`. Mismatched weights are shape errors from the
/// layers (fc1's inputs when the network is planned, fc2's outputs at the channel scale).
fn se(b: &mut NetworkBuilder, x: TensorId, se: &SqueezeExcite) -> Result<TensorId> {
    let fc1_b = se.fc1_bias.to_vec();
    let fc2_b = se.fc2_bias.to_vec();
    let pooled = b.global_avg_pool(x)?;
    let hidden = b.linear_act(pooled, se.fc1_weight.view(), Some(&fc1_b), Activation::Relu)?;
    let excite = b.linear_act(
        hidden,
        se.fc2_weight.view(),
        Some(&fc2_b),
        Activation::Sigmoid,
    )?;
    Ok(b.channel_scale(x, excite, true)?)
}

fn finish<B>(
    mut b: NetworkBuilder,
    m: &RepVgg<B>,
    x: TensorId,
    stage_outs: Vec<TensorId>,
    opts: GpuOptions,
) -> Result<GpuModel> {
    let pooled = b.global_avg_pool(x)?;
    let bias = m.head.bias.to_vec();
    let logits = b.linear(pooled, m.head.weight.view(), Some(&bias))?;
    b.output("logits", logits);
    if opts.features {
        for (i, t) in stage_outs.iter().enumerate() {
            b.output(&format!("stage{i}"), *t);
        }
    }
    Ok(GpuModel {
        net: b.build()?,
        stages: stage_outs.len(),
        features: opts.features,
        in_channels: m.config.in_channels,
    })
}

impl GpuModel {
    /// Uploads a deployed model: one conv + bias (+ ReLU, or SE then ReLU) per block.
    pub fn deploy(ctx: &GpuContext, m: &DeployModel, opts: GpuOptions) -> Result<Self> {
        let mut b = NetworkBuilder::new(ctx)
            .kernel(opts.kernel)
            .precision(opts.precision);
        let mut x = b.input(m.config.in_channels);
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
        finish(b, m, x, outs, opts)
    }

    /// Uploads a train-form model: every branch its own kernel, summed through epilogues.
    pub fn train(ctx: &GpuContext, m: &TrainModel, opts: GpuOptions) -> Result<Self> {
        let mut b = NetworkBuilder::new(ctx)
            .kernel(opts.kernel)
            .precision(opts.precision);
        let mut x = b.input(m.config.in_channels);
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
                    y = b.affine(x, &scale, &shift, Some(y), last_relu)?;
                }
                if let Some(s) = &blk.se {
                    y = se(&mut b, y, s)?;
                }
                x = y;
            }
            outs.push(x);
        }
        finish(b, m, x, outs, opts)
    }

    /// Logits and, when built with `features`, every stage's output.
    pub fn forward_features(&self, x: ArrayView4<'_, f32>) -> Result<Features> {
        crate::model::check_input(self.in_channels, &x)?;
        let mut out = self.net.run(x)?;
        let take = |out: &mut std::collections::BTreeMap<String, ndarray::ArrayD<f32>>, k: &str| {
            out.remove(k)
                .ok_or_else(|| ModelError::Config(format!("the GPU network returned no `{k}`")))
        };
        let logits: Array2<f32> = take(&mut out, "logits")?
            .into_dimensionality::<Ix2>()
            .map_err(|e| ModelError::Config(format!("logits: {e}")))?;
        let mut stages = Vec::new();
        if self.features {
            for i in 0..self.stages {
                let s: Array4<f32> = take(&mut out, &format!("stage{i}"))?
                    .into_dimensionality::<Ix4>()
                    .map_err(|e| ModelError::Config(format!("stage{i}: {e}")))?;
                stages.push(s);
            }
        }
        Ok(Features { stages, logits })
    }

    /// Logits `[N, classes]`.
    pub fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
        Ok(self.forward_features(x)?.logits)
    }

    /// GPU time of `iters` runs on a synthetic batch, after `warmup` runs.
    pub fn bench(
        &self,
        batch: usize,
        h: usize,
        w: usize,
        warmup: usize,
        iters: usize,
    ) -> Result<Vec<Duration>> {
        Ok(self.net.bench(batch, h, w, warmup, iters)?)
    }

    /// Per-layer GPU time of a synthetic batch (median of `iters` runs after `warmup`).
    pub fn profile(
        &self,
        batch: usize,
        h: usize,
        w: usize,
        warmup: usize,
        iters: usize,
    ) -> Result<Vec<repvgg_gpu::LayerTiming>> {
        Ok(self.net.profile(batch, h, w, warmup, iters)?)
    }

    /// Bytes of activation buffers alive at the peak of a batch.
    pub fn peak_activation_bytes(&self, batch: usize, h: usize, w: usize) -> Result<u64> {
        Ok(self.net.peak_activation_bytes(batch, h, w)?)
    }

    /// The underlying network.
    pub fn network(&self) -> &GpuNetwork {
        &self.net
    }
}
