//! A RepVGG network on the CPU engine: [`crate::walk`]'s layers as
//! [`repvgg_cpu::NetworkBuilder`] ops, the twin of [`crate::gpu`].
//!
//! A conv's residual is added in place into the residual's buffer; the train form's identity
//! branch adds into the running sum the same way.

use ndarray::{Array2, ArrayView4};
use repvgg_cpu::{Epilogue, Network, NetworkBuilder, TensorId};
use repvgg_math::{Activation, ConvSpec};

use crate::error::Result;
use crate::model::{DeployModel, Features, Head, SqueezeExcite, TrainModel};
use crate::walk::{self, Layers, Site, relu_flag};

pub use repvgg_cpu::bf16::{Bf16Kernel, Bf16Network, Bf16Options};
pub use repvgg_cpu::int8::{Int8Kernel, Int8Network, Int8Options};
pub use repvgg_cpu::{ConvAlgo, CpuOptions, OpTime, Tile};

/// A model prepared for the CPU engine: weights packed, buffers reused between runs.
/// `Send + Sync`: share it between threads; each concurrent run uses its own buffers.
#[derive(Debug)]
pub struct CpuModel {
    net: Network,
    in_channels: usize,
    features: bool,
}

/// The CPU engine's [`Layers`].
struct Cpu {
    b: NetworkBuilder,
    features: bool,
    /// Keep every conv's output instead of the stages' (calibration).
    every_conv: bool,
}

impl Layers for Cpu {
    type Tensor = TensorId;

    fn input(&mut self, channels: usize) -> Result<TensorId> {
        Ok(self.b.input(channels)?)
    }

    fn conv(
        &mut self,
        _: Site,
        x: TensorId,
        weight: ArrayView4<'_, f32>,
        spec: ConvSpec,
        ep: Epilogue,
    ) -> Result<TensorId> {
        let y = self.b.conv(x, weight, spec, ep)?;
        if self.every_conv {
            self.b.output(y)?;
        }
        Ok(y)
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
        let relu = relu_flag(act, "CPU engine's affine")?;
        Ok(self.b.affine_add(x, scale, shift, sum, relu)?)
    }

    fn squeeze_excite(
        &mut self,
        _: Site,
        x: TensorId,
        se: &SqueezeExcite,
        act: Activation,
    ) -> Result<TensorId> {
        Ok(self.b.squeeze_excite(
            x,
            se.fc1_weight.view(),
            &se.fc1_bias.to_vec(),
            se.fc2_weight.view(),
            &se.fc2_bias.to_vec(),
            relu_flag(act, "CPU engine's squeeze-excite")?,
        )?)
    }

    fn stage_output(&mut self, _: usize, x: TensorId) -> Result<()> {
        if self.features && !self.every_conv {
            self.b.output(x)?;
        }
        Ok(())
    }

    fn head(&mut self, x: TensorId, head: &Head) -> Result<()> {
        Ok(self.b.head(x, head.weight.view(), &head.bias.to_vec())?)
    }
}

impl CpuModel {
    fn build(
        opts: CpuOptions,
        features: bool,
        in_channels: usize,
        walk: impl FnOnce(&mut Cpu) -> Result<()>,
    ) -> Result<Self> {
        let mut cpu = Cpu {
            b: NetworkBuilder::new(opts),
            features,
            every_conv: false,
        };
        walk(&mut cpu)?;
        Ok(Self {
            net: cpu.b.build()?,
            in_channels,
            features,
        })
    }

    /// Prepares a deployed model: one conv + bias (+ ReLU, or SE then ReLU) per block.
    /// With `features`, every run also returns each stage's output.
    pub fn deploy(m: &DeployModel, opts: CpuOptions, features: bool) -> Result<Self> {
        Self::build(opts, features, m.config.in_channels, |l| walk::deploy(l, m))
    }

    /// Prepares a deployed model whose [`CpuModel::forward_features`] returns the output of every
    /// conv (after its ReLU, or before SE), in order, in place of the stages' (int8
    /// calibration).
    pub fn deploy_layers(m: &DeployModel, opts: CpuOptions) -> Result<Self> {
        let mut cpu = Cpu {
            b: NetworkBuilder::new(opts),
            features: true,
            every_conv: true,
        };
        walk::deploy(&mut cpu, m)?;
        Ok(Self {
            net: cpu.b.build()?,
            in_channels: m.config.in_channels,
            features: true,
        })
    }

    /// Prepares a train-form model: every branch its own kernel, summed through epilogues.
    pub fn train(m: &TrainModel, opts: CpuOptions, features: bool) -> Result<Self> {
        Self::build(opts, features, m.config.in_channels, |l| walk::train(l, m))
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
