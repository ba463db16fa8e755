//! Building a network: [`NetworkBuilder`] collects layers into a device-free graph, then
//! chooses each conv's kernel (forced, from the tuning cache, timed, or by the rules), lowers
//! and uploads it into a [`GpuNetwork`].

use std::time::Duration;

use ndarray::{ArrayView2, ArrayView4};
use repvgg_math::{Activation, ConvSpec};

use crate::caps::Caps;
use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::graph::{ConvSite, Epilogue, Graph, TensorId};
use crate::network::{Assembly, GpuNetwork};
use crate::precision::Precision;
use crate::select::{self, Candidate, ChoiceSource, ConvChoice, ConvKernel};
use crate::tune::{self, DEFAULT_BUDGET, Job};
use crate::tuning::Tuning;

/// Builds a [`GpuNetwork`]: one input, layers, named outputs.
///
/// ```no_run
/// # fn main() -> Result<(), repvgg_gpu::GpuError> {
/// use ndarray::Array4;
/// use repvgg_gpu::{Epilogue, GpuContext, NetworkBuilder};
/// use repvgg_math::ConvSpec;
///
/// let ctx = GpuContext::new()?;
/// let mut b = NetworkBuilder::new(&ctx);
/// let x = b.input(3);
/// let spec = ConvSpec::conv3x3(3, 8, 2, 1)?;
/// let w = Array4::from_elem(spec.weight_shape(), 0.1f32);
/// let y = b.conv(x, w.view(), spec, Epilogue::bias(vec![0.0; 8]).relu())?;
/// let p = b.global_avg_pool(y)?;
/// b.output("pooled", p);
/// let net = b.build()?;
/// let out = net.run(Array4::from_elem((2, 3, 16, 16), 1.0f32).view())?;
/// assert_eq!(out["pooled"].shape(), &[2, 8]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct NetworkBuilder {
    ctx: GpuContext,
    kernel: ConvKernel,
    candidate: Option<Candidate>,
    precision: Precision,
    max_binding: Option<u64>,
    nan_fill: bool,
    tuning: Tuning,
    budget: Duration,
    workload: Option<(usize, usize, usize)>,
    graph: Graph,
}

impl NetworkBuilder {
    /// An empty network on `ctx`, using [`ConvKernel::Auto`] with [`Tuning::Cached`] (which
    /// tunes only once [`NetworkBuilder::tune_for`] names a workload).
    pub fn new(ctx: &GpuContext) -> Self {
        Self {
            ctx: ctx.clone(),
            kernel: ConvKernel::default(),
            candidate: None,
            precision: Precision::default(),
            max_binding: None,
            nan_fill: false,
            tuning: Tuning::default(),
            budget: DEFAULT_BUDGET,
            workload: None,
            graph: Graph::new(),
        }
    }

    /// The convolution kernel for every conv of this network ([`ConvKernel::Auto`]: chosen
    /// per conv, by tuning or the rules).
    pub fn kernel(mut self, kernel: ConvKernel) -> Self {
        self.kernel = kernel;
        self
    }

    /// Forces `candidate` on every conv it can run (the others take the rules), over
    /// [`NetworkBuilder::kernel`] and tuning: for tests that run every candidate.
    #[doc(hidden)]
    pub fn candidate(mut self, candidate: Candidate) -> Self {
        self.candidate = Some(candidate);
        self
    }

    /// Whether [`ConvKernel::Auto`] measures candidates ([`Tuning`]); it does so for the
    /// workload of [`NetworkBuilder::tune_for`] only.
    pub fn tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = tuning;
        self
    }

    /// The workload tuning times candidates for: `batch` images of `height` x `width`. The
    /// network runs any batch and size it can take; the choices are the fastest for this one.
    pub fn tune_for(mut self, batch: usize, height: usize, width: usize) -> Self {
        self.workload = Some((batch, height, width));
        self
    }

    /// Time tuning may spend measuring, per network ([`DEFAULT_BUDGET`] unless set). The first
    /// shape a build times is timed whole, so that every build makes progress; after it, tuning
    /// starts no candidate once the budget is spent (one started is timed to its end: a
    /// pipeline build and four runs), a shape cut short is not cached, and the shapes left take
    /// the rules until a later build tunes them. The network-level check of tuned choices
    /// ([`crate::NetworkCheck`]) counts against the budget too: where it cannot run in it, the
    /// network takes the rules' choices.
    pub fn tuning_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// How weights and activations are stored ([`Precision::F32`] by default). With
    /// [`Precision::F16`] the kernels still compute in f32; the input is rounded to f16 when
    /// uploaded and the outputs widened back to f32 when read.
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Caps the bytes of one activation binding below the device's
    /// `max_storage_buffer_binding_size`, so that batch splitting can be exercised.
    pub fn max_binding_bytes(mut self, bytes: u64) -> Self {
        self.max_binding = Some(bytes);
        self
    }

    /// Fills every activation buffer with NaN before each run, so that an element a kernel
    /// fails to write shows up (for tests; costs an upload per buffer).
    #[doc(hidden)]
    pub fn nan_fill(mut self, on: bool) -> Self {
        self.nan_fill = on;
        self
    }

    /// The network's input, `[N, channels, H, W]`. A network has exactly one.
    pub fn input(&mut self, channels: usize) -> TensorId {
        self.graph.input(channels)
    }

    /// A convolution of `x` with `weight` (`spec.weight_shape()`), then `epilogue`.
    ///
    /// # Errors
    /// [`GpuError::Shape`] when the weight, channels, scale, bias or residual do not match
    /// `spec`; [`GpuError::Math`] for an invalid spec; [`GpuError::UnknownTensor`].
    pub fn conv(
        &mut self,
        x: TensorId,
        weight: ArrayView4<'_, f32>,
        spec: ConvSpec,
        epilogue: Epilogue,
    ) -> Result<TensorId> {
        self.graph.conv(x, weight, spec, epilogue)
    }

    /// Per-channel `y = x * scale + shift`, then `+ residual`, then ReLU: a batch norm on a
    /// branch of its own (RepVGG's identity branch).
    ///
    /// # Errors
    /// [`GpuError::Shape`] when `scale`, `shift` or the residual do not match `x`'s channels.
    pub fn affine(
        &mut self,
        x: TensorId,
        scale: &[f32],
        shift: &[f32],
        residual: Option<TensorId>,
        relu: bool,
    ) -> Result<TensorId> {
        self.graph.affine(x, scale, shift, residual, relu)
    }

    /// `y[n, c, ..] = x[n, c, ..] * s[n, c]`, then optional ReLU; `s` is a `[N, C]` tensor (a
    /// pooled or linear output), as in squeeze-and-excitation.
    ///
    /// # Errors
    /// [`GpuError::Shape`] when `s` is not `[N, C]` with `x`'s channels.
    pub fn channel_scale(&mut self, x: TensorId, s: TensorId, relu: bool) -> Result<TensorId> {
        self.graph.channel_scale(x, s, relu)
    }

    /// Global average pool, `[N, C, H, W] -> [N, C]`.
    ///
    /// # Errors
    /// [`GpuError::UnknownTensor`].
    pub fn global_avg_pool(&mut self, x: TensorId) -> Result<TensorId> {
        self.graph.global_avg_pool(x)
    }

    /// Fully connected layer, `weight` is `[out, in]`; `x` is flattened per image (`in` must
    /// equal `C * H * W` when the network runs).
    ///
    /// # Errors
    /// [`GpuError::Shape`] when the bias length is not `out`.
    pub fn linear(
        &mut self,
        x: TensorId,
        weight: ArrayView2<'_, f32>,
        bias: Option<&[f32]>,
    ) -> Result<TensorId> {
        self.graph.linear(x, weight, bias, Activation::None)
    }

    /// [`NetworkBuilder::linear`] followed by an activation.
    ///
    /// # Errors
    /// As [`NetworkBuilder::linear`].
    pub fn linear_act(
        &mut self,
        x: TensorId,
        weight: ArrayView2<'_, f32>,
        bias: Option<&[f32]>,
        act: Activation,
    ) -> Result<TensorId> {
        self.graph.linear(x, weight, bias, act)
    }

    /// Names `x` as an output of [`GpuNetwork::run`]. A second call with one name replaces it.
    /// A `TensorId` from another builder makes [`NetworkBuilder::build`] fail.
    pub fn output(&mut self, name: &str, x: TensorId) {
        self.graph.output(name, x);
    }

    /// Uploads every weight once, in the layout the chosen kernel wants.
    ///
    /// # Errors
    /// [`GpuError::InvalidNetwork`] without exactly one input or without outputs,
    /// [`GpuError::UnknownTensor`] for an output from another builder,
    /// [`GpuError::Unsupported`] for a forced kernel that cannot run a layer,
    /// [`GpuError::F16Unavailable`] for f16 on a device without `SHADER_F16`,
    /// [`GpuError::F16Kernel`] for f16 with a forced f32-only kernel, GPU errors from the
    /// uploads.
    pub fn build(self) -> Result<GpuNetwork> {
        let g = self.graph.finish()?;
        let ctx = self.ctx;
        let precision = self.precision;
        if precision == Precision::F16 && !ctx.has_f16() {
            return Err(GpuError::F16Unavailable {
                adapter: ctx.describe(),
            });
        }
        let caps = Caps::of(&ctx);
        let convs = g.convs();
        let forced = |candidate| ConvChoice {
            candidate,
            source: ChoiceSource::Forced,
        };
        let rules = |spec: &ConvSpec| ConvChoice {
            candidate: select::rule(&caps, spec, precision),
            source: ChoiceSource::Rules,
        };
        let how = Assembly {
            precision,
            max_binding: self.max_binding,
            nan_fill: self.nan_fill,
        };
        let choices = match (self.candidate, self.kernel, self.workload) {
            (Some(c), _, _) => {
                let pick = |s: &ConvSite| {
                    if c.runs(&caps, &s.spec, precision) {
                        forced(c)
                    } else {
                        rules(&s.spec)
                    }
                };
                convs.iter().map(pick).collect()
            }
            (None, ConvKernel::Auto, Some((batch, height, width))) => {
                let job = Job {
                    mode: self.tuning,
                    budget: self.budget,
                    batch,
                    height,
                    width,
                    precision,
                };
                return tune::build(&ctx, &caps, g, job, how);
            }
            (None, ConvKernel::Auto, None) => convs.iter().map(|s| rules(&s.spec)).collect(),
            (None, kernel, _) => convs
                .iter()
                .map(|s| Ok(forced(kernel.candidate(&caps, &s.spec, precision)?)))
                .collect::<Result<Vec<_>>>()?,
        };
        GpuNetwork::assemble(&ctx, caps, g, &choices, how, None)
    }
}
