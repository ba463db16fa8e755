//! The one way to run a model: [`Model::load`](crate::Model::load) →
//! [`Model::runner`](crate::Model::runner) → [`Runner::run`].
//!
//! [`Engine::open`] applies the device policy once ([`Device::Auto`]: a hardware GPU, else the
//! CPU engine) and says which device it took and why; a [`Runner`] is one form of one model
//! prepared on one engine. Runners are `Send + Sync`: share one between threads and call
//! [`Runner::run`] from all of them (each CPU run uses its own buffers; GPU runs queue on the
//! device).
//!
//! The reference operators of [`repvgg_math`] ([`crate::DeployModel::forward`]) are the oracle
//! the tests compare the engines with. They never run behind a runner.

// Without an engine no runner can be built: its methods' arguments go unused there.
#![cfg_attr(
    not(any(feature = "cpu", feature = "gpu")),
    allow(unused_variables, dead_code, unreachable_code)
)]

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ndarray::{Array2, ArrayView4};

use crate::config::RepVggConfig;
use crate::error::{ModelError, Result};
use crate::model::{DeployModel, Features, TrainModel};
use crate::vocab::{AdapterFilter, Device, Form, Precision};

#[cfg(feature = "cpu")]
use crate::cpu::{ConvAlgo, CpuModel, CpuOptions, OpTime};
#[cfg(feature = "gpu")]
use crate::gpu::{GpuModel, GpuOptions};
use crate::quant::QuantizedModel;
#[cfg(feature = "cpu")]
use repvgg_cpu::bf16::{Bf16Kernel, Bf16Network, Bf16Options};
#[cfg(feature = "cpu")]
use repvgg_cpu::int8::{Int8Kernel, Int8Network, Int8Options};
#[cfg(feature = "gpu")]
use repvgg_gpu::{ConvKernel, GpuContext, LayerTiming, Tuning, TuningReport};

/// How [`crate::Model::runner`] prepares a model. Build it from [`RunOptions::default`] (deploy
/// form, [`Device::Auto`], f32, every core) and the setters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RunOptions {
    /// Where to run.
    pub device: Device,
    /// Which form runs: [`Form::Deploy`] (fused, the fast one) or [`Form::Train`] (every
    /// branch separately, for checking the fusion).
    pub form: Form,
    /// Precision: f32; f16 on GPUs that have `SHADER_F16` (f32 arithmetic; [`Device::Auto`]
    /// falling back to the CPU runs f32 and says so); int8 on the CPU engine, from a quantized
    /// model ([`crate::Model::quantize`], [`crate::QuantizedModel`]); bf16 on the CPU engine
    /// (deploy form) where the CPU has AMX-BF16 or AVX512-BF16, else refused with what it lacks.
    pub precision: Precision,
    /// CPU worker threads; `None`: `RAYON_NUM_THREADS`, else every core.
    pub threads: Option<usize>,
    /// CPU convolution algorithm (A/B runs); `Auto` picks per layer.
    #[cfg(feature = "cpu")]
    pub cpu_algo: ConvAlgo,
    /// The int8 GEMM's instruction set (A/B runs and tests); `None`: the fastest the CPU has.
    #[cfg(feature = "cpu")]
    pub int8_kernel: Option<Int8Kernel>,
    /// The bf16 convs' instruction set (A/B runs and tests); `None`: the fastest the CPU has.
    #[cfg(feature = "cpu")]
    pub bf16_kernel: Option<Bf16Kernel>,
    /// GPU convolution kernel (A/B runs); `Auto` picks per layer and adapter.
    #[cfg(feature = "gpu")]
    pub gpu_kernel: ConvKernel,
    /// Whether the GPU engine times its convs' candidates on the adapter and keeps the fastest
    /// (with [`ConvKernel::Auto`]): [`Tuning::Cached`] by default, which tunes each conv shape
    /// once per adapter within a time budget and reuses the choice from the cache directory
    /// afterwards. Tuned for [`RunOptions::tune_for`].
    #[cfg(feature = "gpu")]
    pub tuning: Tuning,
    /// The workload tuning is for: batch, height, width; `None`: one image of
    /// [`TUNE_SIZE`] x [`TUNE_SIZE`]. Any batch and size still run.
    #[cfg(feature = "gpu")]
    pub tune_for: Option<(usize, usize, usize)>,
    /// Time tuning may spend per network; `None`: [`repvgg_gpu::DEFAULT_TUNING_BUDGET`].
    #[cfg(feature = "gpu")]
    pub tuning_budget: Option<Duration>,
}

/// The input size tuning is for unless [`RunOptions::tune_for`] says otherwise: ImageNet's.
#[cfg(feature = "gpu")]
pub const TUNE_SIZE: usize = 224;

impl RunOptions {
    /// Sets [`RunOptions::device`].
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }
    /// Sets [`RunOptions::form`].
    pub fn form(mut self, form: Form) -> Self {
        self.form = form;
        self
    }
    /// Sets [`RunOptions::precision`].
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }
    /// Sets [`RunOptions::threads`].
    pub fn threads(mut self, threads: Option<usize>) -> Self {
        self.threads = threads;
        self
    }
    /// Sets [`RunOptions::cpu_algo`].
    #[cfg(feature = "cpu")]
    pub fn cpu_algo(mut self, algo: ConvAlgo) -> Self {
        self.cpu_algo = algo;
        self
    }
    /// Sets [`RunOptions::int8_kernel`].
    #[cfg(feature = "cpu")]
    pub fn int8_kernel(mut self, kernel: Option<Int8Kernel>) -> Self {
        self.int8_kernel = kernel;
        self
    }
    /// Sets [`RunOptions::bf16_kernel`].
    #[cfg(feature = "cpu")]
    pub fn bf16_kernel(mut self, kernel: Option<Bf16Kernel>) -> Self {
        self.bf16_kernel = kernel;
        self
    }
    /// Sets [`RunOptions::gpu_kernel`].
    #[cfg(feature = "gpu")]
    pub fn gpu_kernel(mut self, kernel: ConvKernel) -> Self {
        self.gpu_kernel = kernel;
        self
    }
    /// Sets [`RunOptions::tuning`].
    #[cfg(feature = "gpu")]
    pub fn tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = tuning;
        self
    }
    /// Sets [`RunOptions::tune_for`].
    #[cfg(feature = "gpu")]
    pub fn tune_for(mut self, batch: usize, height: usize, width: usize) -> Self {
        self.tune_for = Some((batch, height, width));
        self
    }
    /// Sets [`RunOptions::tuning_budget`].
    #[cfg(feature = "gpu")]
    pub fn tuning_budget(mut self, budget: Duration) -> Self {
        self.tuning_budget = Some(budget);
        self
    }
}

#[derive(Debug, Clone)]
enum Target {
    Cpu,
    #[cfg(feature = "gpu")]
    Gpu(GpuContext),
}

/// A device, opened: the CPU engine or a GPU context, and why it was chosen. Open it once and
/// prepare several runners on it ([`crate::Model::runner_on`]); cloning shares the device.
#[derive(Debug, Clone)]
pub struct Engine {
    target: Target,
    reason: String,
}

impl Engine {
    /// The CPU engine.
    pub fn cpu() -> Self {
        Self {
            target: Target::Cpu,
            reason: "cpu: asked for".into(),
        }
    }

    /// Opens `device`:
    /// * [`Device::Cpu`]: the CPU engine;
    /// * [`Device::Gpu`]: the adapter the filter names (software adapters too), or an error
    ///   that says what was found;
    /// * [`Device::Auto`]: a hardware GPU when wgpu finds one, else the CPU engine, with the
    ///   reason (no adapter, or only a software one).
    ///
    /// # Errors
    /// [`ModelError::NotCompiled`] for a GPU when this crate was built without `gpu`;
    /// [`ModelError::Gpu`] when the asked-for adapter is missing or refuses a device.
    pub fn open(device: &Device) -> Result<Self> {
        match device {
            Device::Cpu => Ok(Self::cpu()),
            Device::Gpu(filter) => Self::open_gpu(filter),
            Device::Auto => Ok(Self::auto()),
        }
    }

    #[cfg(feature = "gpu")]
    fn open_gpu(filter: &AdapterFilter) -> Result<Self> {
        let mut options = repvgg_gpu::ContextOptions::from_env();
        if let AdapterFilter::Named(name) = filter {
            options.adapter_name = Some(name.clone());
        }
        let ctx = GpuContext::with_options(&options)?;
        let adapter = ctx.describe();
        let reason = if ctx.is_software() {
            format!(
                "gpu: {adapter}, asked for (a software adapter: the CPU engine is usually faster)"
            )
        } else {
            format!("gpu: {adapter}, asked for")
        };
        Ok(Self {
            target: Target::Gpu(ctx),
            reason,
        })
    }

    #[cfg(not(feature = "gpu"))]
    fn open_gpu(_: &AdapterFilter) -> Result<Self> {
        Err(ModelError::NotCompiled {
            feature: "gpu",
            what: "running on a GPU",
        })
    }

    #[cfg(feature = "gpu")]
    fn auto() -> Self {
        match repvgg_gpu::AutoDevice::pick() {
            repvgg_gpu::AutoDevice::Gpu(ctx) => {
                let reason = format!("gpu: {}, a hardware adapter (device auto)", ctx.describe());
                Self {
                    target: Target::Gpu(ctx),
                    reason,
                }
            }
            repvgg_gpu::AutoDevice::Cpu(why) => Self {
                target: Target::Cpu,
                reason: format!("cpu: {why}"),
            },
        }
    }

    #[cfg(not(feature = "gpu"))]
    fn auto() -> Self {
        Self {
            target: Target::Cpu,
            reason: "cpu: built without the `gpu` feature".into(),
        }
    }

    /// Wraps a GPU context the application already owns (e.g. eframe's device, through
    /// [`GpuContext::from_device`]).
    #[cfg(feature = "gpu")]
    pub fn from_gpu_context(ctx: GpuContext) -> Self {
        let reason = format!("gpu: {}, the application's device", ctx.describe());
        Self {
            target: Target::Gpu(ctx),
            reason,
        }
    }

    /// The GPU context, when this engine is a GPU.
    #[cfg(feature = "gpu")]
    pub fn gpu_context(&self) -> Option<&GpuContext> {
        match &self.target {
            Target::Gpu(ctx) => Some(ctx),
            Target::Cpu => None,
        }
    }

    /// Whether this engine is a GPU.
    pub fn is_gpu(&self) -> bool {
        !matches!(self.target, Target::Cpu)
    }

    /// `cpu` or `gpu`.
    pub fn kind(&self) -> &'static str {
        if self.is_gpu() { "gpu" } else { "cpu" }
    }

    /// Which device and why, one line: `cpu: no GPU adapter: ...`, `gpu: NVIDIA ... (Vulkan),
    /// a hardware adapter (device auto)`.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The adapter's one-line description, or `cpu`.
    pub fn adapter(&self) -> String {
        match &self.target {
            Target::Cpu => "cpu".into(),
            #[cfg(feature = "gpu")]
            Target::Gpu(ctx) => ctx.describe(),
        }
    }
}

/// The model a runner was prepared from, kept to prepare its feature-returning twin on demand.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Train(Arc<TrainModel>),
    Deploy(Arc<DeployModel>),
    Int8(Arc<QuantizedModel>),
}

impl Source {
    fn config(&self) -> &RepVggConfig {
        match self {
            Self::Train(m) => &m.config,
            Self::Deploy(m) => &m.config,
            Self::Int8(q) => &q.deploy.config,
        }
    }
    fn in_channels(&self) -> usize {
        self.config().in_channels
    }
}

#[derive(Debug)]
enum Net {
    #[cfg(feature = "cpu")]
    Cpu(CpuModel),
    #[cfg(feature = "cpu")]
    Int8(Int8Network),
    #[cfg(feature = "cpu")]
    Bf16(Bf16Network),
    #[cfg(feature = "gpu")]
    Gpu(GpuModel),
}

/// Per-layer times of one run configuration ([`Runner::profile`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Profile {
    /// Wall time of each CPU op, one list per run.
    #[cfg(feature = "cpu")]
    Cpu(Vec<Vec<OpTime>>),
    /// GPU time of each layer (timestamp queries; median over the runs).
    #[cfg(feature = "gpu")]
    Gpu(Vec<LayerTiming>),
}

/// One form of one model prepared on one [`Engine`].
#[derive(Debug)]
pub struct Runner {
    engine: Engine,
    precision: Precision,
    opts: RunOptions,
    source: Source,
    reason: String,
    net: Net,
    /// The twin that also returns every stage's output, prepared on first use.
    with_features: Mutex<Option<Arc<Net>>>,
    #[cfg(feature = "images")]
    pub(crate) preprocessing: crate::classify::Preprocessing,
}

impl Runner {
    pub(crate) fn new(
        engine: &Engine,
        source: Source,
        opts: RunOptions,
        #[cfg(feature = "images")] preprocessing: crate::classify::Preprocessing,
    ) -> Result<Self> {
        let mut reason = engine.reason.clone();
        let precision = match (&engine.target, opts.precision) {
            (Target::Cpu, Precision::Bf16) => {
                bf16_check()?;
                Precision::Bf16
            }
            #[cfg(feature = "gpu")]
            (Target::Gpu(_), Precision::Bf16) => {
                return Err(ModelError::Unsupported(
                    "precision bf16 runs on the CPU engine only (--device cpu); GPUs run f16"
                        .into(),
                ));
            }
            (Target::Cpu, Precision::Int8) => match source {
                Source::Int8(_) => Precision::Int8,
                _ => {
                    return Err(ModelError::Unsupported(
                        "precision int8 needs a quantized model: `repvgg quantize` writes one \
                         (or pass calibration images, `Model::quantize`)"
                            .into(),
                    ));
                }
            },
            #[cfg(feature = "gpu")]
            (Target::Gpu(_), Precision::Int8) => {
                return Err(ModelError::Unsupported(
                    "precision int8 runs on the CPU engine only (--device cpu)".into(),
                ));
            }
            (Target::Cpu, Precision::F32) => Precision::F32,
            (Target::Cpu, p) if opts.device == Device::Auto => {
                reason += &format!(" ({p} applies to GPUs: the CPU engine computes in f32)");
                Precision::F32
            }
            (Target::Cpu, p) => {
                return Err(ModelError::Unsupported(format!(
                    "precision {p} runs on a GPU only; the CPU engine computes in f32"
                )));
            }
            #[cfg(feature = "gpu")]
            (Target::Gpu(_), p) => p,
        };
        let net = build(engine, &source, &opts, precision, false)?;
        Ok(Self {
            engine: engine.clone(),
            precision,
            opts,
            source,
            reason,
            net,
            with_features: Mutex::new(None),
            #[cfg(feature = "images")]
            preprocessing,
        })
    }

    /// Which device runs this model and why, one line (see [`Engine::reason`]).
    pub fn device(&self) -> &str {
        &self.reason
    }

    /// The engine this runner was prepared on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The model's architecture.
    pub fn config(&self) -> &RepVggConfig {
        self.source.config()
    }

    /// The form that runs.
    pub fn form(&self) -> Form {
        self.opts.form
    }

    /// The precision that runs (f32 on the CPU whatever float precision was asked of `Auto`).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The adapter's one-line description, or `cpu (N threads)`.
    pub fn adapter(&self) -> String {
        match self.net {
            #[cfg(feature = "cpu")]
            Net::Cpu(ref m) => format!("cpu ({} threads)", m.network().threads()),
            #[cfg(feature = "cpu")]
            Net::Int8(ref m) => format!("cpu ({} threads, int8 {})", m.threads(), m.kernel()),
            #[cfg(feature = "cpu")]
            Net::Bf16(ref m) => format!("cpu ({} threads, bf16 {})", m.threads(), m.kernel()),
            #[cfg(feature = "gpu")]
            Net::Gpu(_) => self.engine.adapter(),
        }
    }

    /// What tuning did while the GPU engine uploaded this model; `None` on the CPU engine.
    #[cfg(feature = "gpu")]
    pub fn tuning_report(&self) -> Option<TuningReport> {
        match &self.net {
            Net::Gpu(m) => m.tuning_report().cloned(),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Logits `[N, classes]` of an NCHW f32 batch `[N, in_channels, H, W]`.
    ///
    /// # Errors
    /// [`ModelError::Input`] for a batch of another rank, channel count, an empty dimension or
    /// non-finite values; engine errors otherwise.
    pub fn run(&self, x: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
        crate::model::check_input(self.source.in_channels(), &x)?;
        match self.net {
            #[cfg(feature = "cpu")]
            Net::Cpu(ref m) => m.forward(x),
            #[cfg(feature = "cpu")]
            Net::Int8(ref m) => Ok(m.run(x)?),
            #[cfg(feature = "cpu")]
            Net::Bf16(ref m) => Ok(m.run(x)?),
            #[cfg(feature = "gpu")]
            Net::Gpu(ref m) => m.forward(x),
        }
    }

    /// Logits and every stage's output (`stages[0]` is the stem's). The first call prepares a
    /// second network that keeps the stage outputs; later calls reuse it.
    pub fn run_features(&self, x: ArrayView4<'_, f32>) -> Result<Features> {
        crate::model::check_input(self.source.in_channels(), &x)?;
        let net = self.features_net()?;
        match *net {
            #[cfg(feature = "cpu")]
            Net::Cpu(ref m) => m.forward_features(x),
            #[cfg(feature = "cpu")]
            Net::Int8(_) => Err(ModelError::Unsupported(
                "stage features of the int8 network: run it in f32".into(),
            )),
            #[cfg(feature = "cpu")]
            Net::Bf16(_) => Err(ModelError::Unsupported(
                "stage features of the bf16 network: run it in f32".into(),
            )),
            #[cfg(feature = "gpu")]
            Net::Gpu(ref m) => m.forward_features(x),
        }
    }

    fn features_net(&self) -> Result<Arc<Net>> {
        let mut slot = self
            .with_features
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(net) = &*slot {
            return Ok(Arc::clone(net));
        }
        let net = Arc::new(build(
            &self.engine,
            &self.source,
            &self.opts,
            self.precision,
            true,
        )?);
        *slot = Some(Arc::clone(&net));
        Ok(net)
    }

    /// `iters` timings of a batch shaped like `x`, after `warmup` runs; `tick` is called after
    /// every run. GPU: the device's time for the batch (timestamp queries where the adapter has
    /// them, else wall time around submit and wait), the batch uploaded once. CPU: wall time.
    pub fn time(
        &self,
        x: ArrayView4<'_, f32>,
        warmup: usize,
        iters: usize,
        tick: &mut dyn FnMut(),
    ) -> Result<Vec<Duration>> {
        crate::model::check_input(self.source.in_channels(), &x)?;
        #[cfg(feature = "gpu")]
        if let Net::Gpu(ref m) = self.net {
            let (n, _, h, w) = x.dim();
            let out = m.bench(n, h, w, warmup, iters)?;
            (0..warmup + iters).for_each(|_| tick());
            return Ok(out);
        }
        let mut times = Vec::with_capacity(iters);
        for i in 0..warmup + iters {
            let t = Instant::now();
            std::hint::black_box(self.run(x)?);
            if i >= warmup {
                times.push(t.elapsed());
            }
            tick();
        }
        Ok(times)
    }

    /// Per-layer times of a batch shaped like `x`: CPU, each op's wall time in each of
    /// `max(iters, 1)` runs; GPU, each layer's median time over `iters` runs after `warmup`.
    pub fn profile(&self, x: ArrayView4<'_, f32>, warmup: usize, iters: usize) -> Result<Profile> {
        crate::model::check_input(self.source.in_channels(), &x)?;
        match self.net {
            #[cfg(feature = "cpu")]
            Net::Cpu(ref m) => {
                let _ = warmup;
                let runs = (0..iters.max(1))
                    .map(|_| m.profile(x))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Profile::Cpu(runs))
            }
            #[cfg(feature = "cpu")]
            Net::Int8(ref m) => {
                let _ = warmup;
                let runs = (0..iters.max(1))
                    .map(|_| m.profile(x))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(Profile::Cpu(runs))
            }
            #[cfg(feature = "cpu")]
            Net::Bf16(ref m) => {
                let _ = warmup;
                let runs = (0..iters.max(1))
                    .map(|_| m.profile(x))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(Profile::Cpu(runs))
            }
            #[cfg(feature = "gpu")]
            Net::Gpu(ref m) => {
                let (n, _, h, w) = x.dim();
                Ok(Profile::Gpu(m.profile(n, h, w, warmup, iters)?))
            }
        }
    }

    /// Multiply-adds a CPU run of `batch x H x W` executes (Winograd convs counted in the
    /// transformed domain); `None` on a GPU.
    pub fn executed_macs(&self, batch: usize, h: usize, w: usize) -> Result<Option<u64>> {
        match self.net {
            #[cfg(feature = "cpu")]
            Net::Cpu(ref m) => Ok(Some(m.executed_macs(batch, h, w)?)),
            #[cfg(feature = "cpu")]
            Net::Int8(ref m) => Ok(Some(m.macs(batch, h, w)?)),
            #[cfg(feature = "cpu")]
            Net::Bf16(ref m) => Ok(Some(m.macs(batch, h, w)?)),
            #[cfg(feature = "gpu")]
            Net::Gpu(_) => {
                let _ = (batch, h, w);
                Ok(None)
            }
        }
    }

    /// Bytes of activation buffers (and CPU conv scratch) alive at the peak of a batch.
    pub fn peak_activation_bytes(&self, batch: usize, h: usize, w: usize) -> Result<u64> {
        match self.net {
            #[cfg(feature = "cpu")]
            Net::Cpu(ref m) => m.activation_bytes(batch, h, w),
            #[cfg(feature = "cpu")]
            Net::Int8(ref m) => Ok(m.activation_bytes(batch, h, w)?),
            #[cfg(feature = "cpu")]
            Net::Bf16(ref m) => Ok(m.activation_bytes(batch, h, w)?),
            #[cfg(feature = "gpu")]
            Net::Gpu(ref m) => m.peak_activation_bytes(batch, h, w),
        }
    }
}

fn build(
    engine: &Engine,
    source: &Source,
    opts: &RunOptions,
    precision: Precision,
    features: bool,
) -> Result<Net> {
    let _ = (source, features, precision);
    match &engine.target {
        #[cfg(feature = "cpu")]
        Target::Cpu => {
            let cpu = CpuOptions {
                threads: opts.threads,
                algo: opts.cpu_algo,
            };
            if precision == Precision::Bf16 {
                let m = match source {
                    Source::Train(_) => {
                        return Err(ModelError::Unsupported(
                            "precision bf16 runs the deployed form only (--form deploy)".into(),
                        ));
                    }
                    Source::Deploy(m) => m,
                    Source::Int8(q) => &q.deploy,
                };
                let b = Bf16Options {
                    threads: opts.threads,
                    kernel: opts.bf16_kernel,
                };
                return Ok(Net::Bf16(bf16_network(m, b)?));
            }
            Ok(match source {
                Source::Train(m) => Net::Cpu(CpuModel::train(m, cpu, features)?),
                Source::Deploy(m) => Net::Cpu(CpuModel::deploy(m, cpu, features)?),
                Source::Int8(q) if precision == Precision::Int8 => {
                    Net::Int8(q.network(Int8Options {
                        threads: opts.threads,
                        kernel: opts.int8_kernel,
                    })?)
                }
                Source::Int8(q) => Net::Cpu(CpuModel::deploy(&q.deploy, cpu, features)?),
            })
        }
        #[cfg(not(feature = "cpu"))]
        Target::Cpu => {
            let _ = opts;
            Err(ModelError::NotCompiled {
                feature: "cpu",
                what: "running on the CPU engine",
            })
        }
        #[cfg(feature = "gpu")]
        Target::Gpu(ctx) => {
            let Some(storage) = precision.storage() else {
                return Err(ModelError::Unsupported(format!(
                    "precision {precision} runs on the CPU engine only"
                )));
            };
            let g = GpuOptions {
                kernel: opts.gpu_kernel,
                tuning: opts.tuning,
                tune_for: Some(opts.tune_for.unwrap_or((1, TUNE_SIZE, TUNE_SIZE))),
                tuning_budget: opts.tuning_budget,
                precision: storage,
                features,
            };
            Ok(Net::Gpu(match source {
                Source::Train(m) => GpuModel::train(ctx, m, g)?,
                Source::Deploy(m) => GpuModel::deploy(ctx, m, g)?,
                Source::Int8(q) => GpuModel::deploy(ctx, &q.deploy, g)?,
            }))
        }
    }
}

/// Refuses `--precision bf16` on a CPU without its kernels, naming what the CPU lacks.
fn bf16_check() -> Result<()> {
    #[cfg(feature = "cpu")]
    if let Some(why) = repvgg_cpu::bf16::unavailable_reason() {
        return Err(ModelError::Unsupported(format!("precision bf16: {why}")));
    }
    #[cfg(not(feature = "cpu"))]
    return Err(ModelError::NotCompiled {
        feature: "cpu",
        what: "precision bf16 (the CPU engine)",
    });
    #[cfg(feature = "cpu")]
    Ok(())
}

/// The deployed model's convs and head as a bf16 network (squeeze-excite blocks refused).
#[cfg(feature = "cpu")]
fn bf16_network(m: &DeployModel, opts: Bf16Options) -> Result<Bf16Network> {
    use repvgg_cpu::bf16::Bf16Conv;
    if m.stages.iter().flatten().any(|b| b.se.is_some()) {
        return Err(ModelError::Unsupported(format!(
            "precision bf16: {} has squeeze-excite blocks, which the bf16 engine does not run",
            m.config.name
        )));
    }
    let convs = m
        .stages
        .iter()
        .flatten()
        .map(|b| {
            let bias = b.conv.bias.to_vec();
            Bf16Conv::new(b.conv.weight.view(), &bias, b.conv.spec)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Bf16Network::new(
        m.config.in_channels,
        convs,
        m.head.weight.view(),
        &m.head.bias.to_vec(),
        opts,
    )?)
}
