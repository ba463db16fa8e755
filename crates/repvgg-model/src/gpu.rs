//! A RepVGG network on the GPU: [`crate::walk`]'s layers as [`repvgg_gpu::NetworkBuilder`]
//! layers, the twin of [`crate::cpu`]. Squeeze-excite is composed of the kernel crate's layers:
//! pool, two linear layers, a channel scale.

use std::time::Duration;

use ndarray::{Array2, Array4, ArrayView4, Ix2, Ix4};
use repvgg_gpu::{Epilogue, GpuNetwork, NetworkBuilder, Precision, TensorId};
use repvgg_math::{Activation, ConvSpec};

use crate::error::{ModelError, Result};
use crate::model::{DeployModel, Features, Head, SqueezeExcite, TrainModel};
use crate::walk::{self, Layers, Site, relu_flag};

pub use repvgg_gpu::{
    Candidate, ChoiceSource, ConvChoice, ConvKernel, DEFAULT_TUNING_BUDGET, GpuContext, Kept,
    LayerTiming, NetworkCheck, TunedShape, Tuning, TuningReport,
};

/// How a model runs on the GPU: kernel, tuning, storage precision, which outputs to bring back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GpuOptions {
    /// The conv kernel: chosen per layer and adapter (`Auto`), or one forced for every conv.
    pub kernel: ConvKernel,
    /// Whether `Auto` times candidates on the adapter ([`Tuning`]); only with
    /// [`GpuOptions::tune_for`].
    pub tuning: Tuning,
    /// The workload tuning times candidates for: batch, height, width. `None`: no tuning, the
    /// rules choose.
    pub tune_for: Option<(usize, usize, usize)>,
    /// Time tuning may spend per network; `None`: [`repvgg_gpu::DEFAULT_TUNING_BUDGET`].
    pub tuning_budget: Option<Duration>,
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

/// The GPU engine's [`Layers`].
struct Gpu {
    b: NetworkBuilder,
    features: bool,
    stages: usize,
}

impl Layers for Gpu {
    type Tensor = TensorId;

    fn input(&mut self, channels: usize) -> Result<TensorId> {
        Ok(self.b.input(channels))
    }

    fn conv(
        &mut self,
        _: Site,
        x: TensorId,
        weight: ArrayView4<'_, f32>,
        spec: ConvSpec,
        ep: Epilogue,
    ) -> Result<TensorId> {
        Ok(self.b.conv(x, weight, spec, ep)?)
    }

    fn affine_add(
        &mut self,
        _: Site,
        x: TensorId,
        scale: Vec<f32>,
        shift: Vec<f32>,
        sum: TensorId,
        act: Activation,
    ) -> Result<TensorId> {
        let relu = relu_flag(act, "GPU engine's affine")?;
        Ok(self.b.affine(x, &scale, &shift, Some(sum), relu)?)
    }

    /// `act(x * sigmoid(fc2(relu(fc1(gap(x))))))`. Mismatched weights are shape errors from the
    /// layers (fc1's inputs when the network is planned, fc2's outputs at the channel scale).
    fn squeeze_excite(
        &mut self,
        _: Site,
        x: TensorId,
        se: &SqueezeExcite,
        act: Activation,
    ) -> Result<TensorId> {
        let relu = relu_flag(act, "GPU engine's squeeze-excite")?;
        let fc1_b = se.fc1_bias.to_vec();
        let fc2_b = se.fc2_bias.to_vec();
        let pooled = self.b.global_avg_pool(x)?;
        let fc1 = se.fc1_weight.view();
        let hidden = self
            .b
            .linear_act(pooled, fc1, Some(&fc1_b), Activation::Relu)?;
        let fc2 = se.fc2_weight.view();
        let excite = self
            .b
            .linear_act(hidden, fc2, Some(&fc2_b), Activation::Sigmoid)?;
        Ok(self.b.channel_scale(x, excite, relu)?)
    }

    fn stage_output(&mut self, stage: usize, x: TensorId) -> Result<()> {
        if self.features {
            self.b.output(&format!("stage{stage}"), x);
        }
        self.stages = stage + 1;
        Ok(())
    }

    fn head(&mut self, x: TensorId, head: &Head) -> Result<()> {
        let pooled = self.b.global_avg_pool(x)?;
        let bias = head.bias.to_vec();
        let logits = self.b.linear(pooled, head.weight.view(), Some(&bias))?;
        self.b.output("logits", logits);
        Ok(())
    }
}

impl GpuModel {
    fn build(
        ctx: &GpuContext,
        opts: GpuOptions,
        in_channels: usize,
        walk: impl FnOnce(&mut Gpu) -> Result<()>,
    ) -> Result<Self> {
        let mut b = NetworkBuilder::new(ctx)
            .kernel(opts.kernel)
            .precision(opts.precision)
            .tuning(opts.tuning);
        if let Some((batch, h, w)) = opts.tune_for {
            b = b.tune_for(batch, h, w);
        }
        if let Some(budget) = opts.tuning_budget {
            b = b.tuning_budget(budget);
        }
        let mut gpu = Gpu {
            b,
            features: opts.features,
            stages: 0,
        };
        walk(&mut gpu)?;
        Ok(Self {
            stages: gpu.stages,
            net: gpu.b.build()?,
            features: opts.features,
            in_channels,
        })
    }

    /// Uploads a deployed model: one conv + bias (+ ReLU, or SE then ReLU) per block.
    pub fn deploy(ctx: &GpuContext, m: &DeployModel, opts: GpuOptions) -> Result<Self> {
        Self::build(ctx, opts, m.config.in_channels, |l| walk::deploy(l, m))
    }

    /// Uploads a train-form model: every branch its own kernel, summed through epilogues.
    pub fn train(ctx: &GpuContext, m: &TrainModel, opts: GpuOptions) -> Result<Self> {
        Self::build(ctx, opts, m.config.in_channels, |l| walk::train(l, m))
    }

    /// What tuning did while this model was uploaded (`None` without a workload to tune for).
    pub fn tuning_report(&self) -> Option<&TuningReport> {
        self.net.tuning_report()
    }

    /// The candidate each conv runs and where that choice came from.
    pub fn conv_choices(&self) -> &[ConvChoice] {
        self.net.conv_choices()
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
