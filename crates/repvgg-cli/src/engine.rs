//! Where a model runs: the CPU (repvgg-cpu's engine, composed by repvgg-model) or a GPU (repvgg-gpu, composed by
//! repvgg-model). One interface for `demo`, `bench`, `infer` and `classify`.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ndarray::{Array2, Array4};
use repvgg_gpu::{AutoDevice, ConvKernel, GpuContext, Precision};
use repvgg_model::cpu::{ConvAlgo, CpuModel, CpuOptions};
use repvgg_model::gpu::{GpuModel, GpuOptions};
use repvgg_model::{DeployModel, TrainModel};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DeviceChoice {
    Auto,
    Cpu,
    Gpu,
}

/// `--precision`: how weights and activations are stored on the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PrecisionArg {
    /// 32-bit floats (default).
    #[default]
    F32,
    /// f16 weights and activations, f32 arithmetic (GPUs with SHADER_F16).
    F16,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::F16 => Precision::F16,
        }
    }
}

/// Fails for f16 on the CPU, which computes and stores f32 only.
pub(crate) fn check_cpu_precision(p: PrecisionArg) -> Result<()> {
    if p == PrecisionArg::F16 {
        anyhow::bail!(
            "--precision f16 runs on a GPU only (--device gpu); the CPU engine computes in f32"
        );
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    Train,
    Deploy,
}

impl Form {
    pub fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Deploy => "deploy",
        }
    }
}

/// The GPU context, with a one-line description of the adapter.
pub(crate) fn gpu_context() -> Result<(GpuContext, String)> {
    let ctx = GpuContext::new().context("opening a GPU")?;
    let label = ctx.describe();
    Ok((ctx, label))
}

pub(crate) enum Engine<'m> {
    /// Models prepared for the CPU engine (Winograd/GEMM kernels, NHWC, buffers reused).
    Cpu {
        train: Option<Box<CpuModel>>,
        deploy: Option<Box<CpuModel>>,
        _models: PhantomData<&'m ()>,
    },
    Gpu {
        adapter: String,
        precision: Precision,
        train: Option<Box<GpuModel>>,
        deploy: Option<Box<GpuModel>>,
    },
}

impl<'m> Engine<'m> {
    /// Prepares the given forms for the CPU engine.
    pub fn cpu(train: Option<&'m TrainModel>, deploy: Option<&'m DeployModel>) -> Result<Self> {
        Self::cpu_with(train, deploy, ConvAlgo::Auto)
    }

    /// Prepares the given forms for the CPU engine with a forced convolution algorithm.
    pub fn cpu_with(
        train: Option<&'m TrainModel>,
        deploy: Option<&'m DeployModel>,
        algo: ConvAlgo,
    ) -> Result<Self> {
        let opts = CpuOptions {
            threads: None,
            algo,
        };
        Ok(Self::Cpu {
            train: train
                .map(|m| CpuModel::train(m, opts, false).map(Box::new))
                .transpose()?,
            deploy: deploy
                .map(|m| CpuModel::deploy(m, opts, false).map(Box::new))
                .transpose()?,
            _models: PhantomData,
        })
    }

    /// Uploads the given forms to a GPU, weights and activations stored in `precision`.
    pub fn gpu(
        ctx: &GpuContext,
        adapter: String,
        train: Option<&TrainModel>,
        deploy: Option<&DeployModel>,
        kernel: ConvKernel,
        precision: Precision,
    ) -> Result<Self> {
        let opts = GpuOptions {
            kernel,
            precision,
            features: false,
        };
        Ok(Self::Gpu {
            adapter,
            precision,
            train: train
                .map(|m| GpuModel::train(ctx, m, opts).map(Box::new))
                .transpose()?,
            deploy: deploy
                .map(|m| GpuModel::deploy(ctx, m, opts).map(Box::new))
                .transpose()?,
        })
    }

    /// Picks the device and says which and why, in one line (`cpu: ...` or `gpu: ...`).
    ///
    /// `auto` takes a GPU only when it is a hardware adapter: a software one (lavapipe,
    /// SwiftShader, WARP) is slower than the CPU path and runs only with `--device gpu`.
    ///
    /// `precision` applies to a GPU: `--device cpu --precision f16` is an error, and when `auto`
    /// falls back to the CPU the line says that it runs f32.
    pub fn choose(
        choice: DeviceChoice,
        train: &'m TrainModel,
        deploy: &'m DeployModel,
        precision: PrecisionArg,
    ) -> Result<(Self, String)> {
        let cpu = || Self::cpu(Some(train), Some(deploy));
        let on_gpu = |ctx: &GpuContext, adapter: String| {
            let p = precision.into();
            Self::gpu(
                ctx,
                adapter,
                Some(train),
                Some(deploy),
                ConvKernel::Tiled,
                p,
            )
        };
        match choice {
            DeviceChoice::Cpu => {
                check_cpu_precision(precision)?;
                Ok((cpu()?, "cpu: asked for with --device cpu".into()))
            }
            DeviceChoice::Gpu => {
                let (ctx, adapter) = gpu_context()?;
                let why = if ctx.is_software() {
                    format!(
                        "gpu: {adapter}, asked for with --device gpu (a software adapter: the \
                         CPU path is usually faster)"
                    )
                } else {
                    format!("gpu: {adapter}, asked for with --device gpu")
                };
                Ok((on_gpu(&ctx, adapter)?, why))
            }
            DeviceChoice::Auto => match AutoDevice::pick() {
                AutoDevice::Gpu(ctx) => {
                    let adapter = ctx.describe();
                    let why = format!("gpu: {adapter}, a hardware adapter (--device auto)");
                    Ok((on_gpu(&ctx, adapter)?, why))
                }
                AutoDevice::Cpu(reason) => {
                    let note = if precision == PrecisionArg::F16 {
                        " (--precision f16 applies to GPUs: the CPU computes in f32)"
                    } else {
                        ""
                    };
                    Ok((cpu()?, format!("cpu: {reason}{note}")))
                }
            },
        }
    }

    pub fn device(&self) -> &'static str {
        match self {
            Self::Cpu { .. } => "cpu",
            Self::Gpu { .. } => "gpu",
        }
    }

    /// How the engine stores weights and activations (the CPU: f32).
    pub fn precision(&self) -> Precision {
        match self {
            Self::Cpu { .. } => Precision::F32,
            Self::Gpu { precision, .. } => *precision,
        }
    }

    pub fn adapter(&self) -> String {
        match self {
            Self::Cpu { .. } => format!("cpu ({} threads)", rayon::current_num_threads()),
            Self::Gpu { adapter, .. } => adapter.clone(),
        }
    }

    fn missing(form: Form) -> anyhow::Error {
        anyhow::anyhow!("the {} form was not loaded on this device", form.name())
    }

    pub fn logits(&self, form: Form, x: &Array4<f32>) -> Result<Array2<f32>> {
        Ok(match (self, form) {
            (Self::Cpu { train: Some(m), .. }, Form::Train) => m.forward(x.view())?,
            (
                Self::Cpu {
                    deploy: Some(m), ..
                },
                Form::Deploy,
            ) => m.forward(x.view())?,
            (Self::Gpu { train: Some(m), .. }, Form::Train) => m.forward(x.view())?,
            (
                Self::Gpu {
                    deploy: Some(m), ..
                },
                Form::Deploy,
            ) => m.forward(x.view())?,
            _ => return Err(Self::missing(form)),
        })
    }

    /// `iters` timings after `warmup` runs. GPU: the queue's time (timestamps where the adapter
    /// has them, else wall time around submit and an explicit wait). CPU: wall time.
    pub fn time(
        &self,
        form: Form,
        x: &Array4<f32>,
        warmup: usize,
        iters: usize,
        tick: &dyn Fn(),
    ) -> Result<Vec<Duration>> {
        let gpu = match (self, form) {
            (Self::Gpu { train: Some(m), .. }, Form::Train)
            | (
                Self::Gpu {
                    deploy: Some(m), ..
                },
                Form::Deploy,
            ) => Some(m),
            (Self::Gpu { .. }, _) => return Err(Self::missing(form)),
            _ => None,
        };
        if let Some(m) = gpu {
            let (n, _, h, w) = x.dim();
            // One call: the batch is prepared and uploaded once for every run.
            let out = m.bench(n, h, w, warmup, iters)?;
            (0..warmup + iters).for_each(|_| tick());
            return Ok(out);
        }
        let mut times = Vec::with_capacity(iters);
        for i in 0..warmup + iters {
            let t = Instant::now();
            std::hint::black_box(self.logits(form, x)?);
            if i >= warmup {
                times.push(t.elapsed());
            }
            tick();
        }
        Ok(times)
    }

    /// The CPU model of `form`: `None` on the GPU; an error when that form was not built.
    fn cpu_model(&self, form: Form) -> Result<Option<&CpuModel>> {
        match (self, form) {
            (Self::Cpu { train: Some(m), .. }, Form::Train)
            | (
                Self::Cpu {
                    deploy: Some(m), ..
                },
                Form::Deploy,
            ) => Ok(Some(m)),
            (Self::Cpu { .. }, _) => Err(Self::missing(form)),
            (Self::Gpu { .. }, _) => Ok(None),
        }
    }

    /// Per-op wall times of one CPU run (the GPU path has no per-layer timer yet).
    pub fn profile(&self, form: Form, x: &Array4<f32>) -> Result<Vec<repvgg_model::cpu::OpTime>> {
        match self.cpu_model(form)? {
            Some(m) => Ok(m.profile(x.view())?),
            None => anyhow::bail!("--profile: per-layer times are measured on the CPU only"),
        }
    }

    /// Multiply-adds a CPU run executes (Winograd convs counted in the transformed domain);
    /// `None` on the GPU, whose kernels are counted as direct convolutions.
    pub fn executed_macs(
        &self,
        form: Form,
        batch: usize,
        h: usize,
        w: usize,
    ) -> Result<Option<u64>> {
        self.cpu_model(form)?
            .map(|m| m.executed_macs(batch, h, w))
            .transpose()
            .map_err(Into::into)
    }

    pub fn peak_activation_bytes(
        &self,
        form: Form,
        batch: usize,
        h: usize,
        w: usize,
    ) -> Result<u64> {
        Ok(match (self, form) {
            (Self::Cpu { train: Some(m), .. }, Form::Train)
            | (
                Self::Cpu {
                    deploy: Some(m), ..
                },
                Form::Deploy,
            ) => m.activation_bytes(batch, h, w)?,
            (Self::Gpu { train: Some(m), .. }, Form::Train)
            | (
                Self::Gpu {
                    deploy: Some(m), ..
                },
                Form::Deploy,
            ) => m.peak_activation_bytes(batch, h, w)?,
            _ => return Err(Self::missing(form)),
        })
    }
}

/// `repvgg bench --profile`: per-layer GPU time, GFLOP/s, share of the run and kernel, one
/// table per form and batch (on stderr when stdout carries JSON).
pub(crate) fn print_profiles(
    engine: &Engine,
    forms: &[Form],
    batches: &[usize],
    (h, w): (usize, usize),
    warmup: usize,
    iters: usize,
    to_stderr: bool,
) -> Result<()> {
    let Engine::Gpu { train, deploy, .. } = engine else {
        anyhow::bail!("--profile times GPU layers: use it with --device gpu");
    };
    let mut out = String::new();
    for &form in forms {
        let model = match form {
            Form::Train => train.as_deref(),
            Form::Deploy => deploy.as_deref(),
        }
        .ok_or_else(|| Engine::missing(form))?;
        for &batch in batches {
            let layers = model.profile(batch, h, w, warmup, iters)?;
            let total: f64 = layers.iter().map(|l| l.time.as_secs_f64()).sum();
            out += &format!(
                "\n{} form, batch {batch}, {h}x{w}: {:.2} ms in {} layers\n",
                form.name(),
                total * 1e3,
                layers.len()
            );
            // The kernel column as wide as its longest name ("conv gemm split-K x16").
            let kw = layers
                .iter()
                .map(|l| l.kernel.len())
                .max()
                .unwrap_or(0)
                .max(6);
            out += &format!(
                "{:>5} {:<kw$} {:<22} {:>10} {:>9} {:>7}\n",
                "layer", "kernel", "output", "time_ms", "GFLOP/s", "share"
            );
            for l in &layers {
                let t = l.time.as_secs_f64();
                let gflops = if t > 0.0 {
                    2.0 * l.macs as f64 / t / 1e9
                } else {
                    0.0
                };
                out += &format!(
                    "{:>5} {:<kw$} {:<22} {:>10.3} {:>9.1} {:>6.1}%\n",
                    l.index,
                    l.kernel,
                    format!("{:?}", l.output),
                    t * 1e3,
                    gflops,
                    if total > 0.0 { 100.0 * t / total } else { 0.0 }
                );
            }
        }
    }
    if to_stderr {
        eprint!("{out}");
    } else {
        print!("{out}");
    }
    Ok(())
}
