//! Networks: a graph of layers built once (weights uploaded, layouts chosen), then run on
//! batches with one submission per batch, activations in reused buffers.
//!
//! The parts: [`crate::graph`] (building and validation), [`crate::plan`] (shapes, liveness,
//! batch splitting: no GPU), [`crate::upload`] (weights), [`crate::kernels`] (parameters and
//! workgroup counts per kernel), this module (bind groups, execution, read-back) and
//! [`crate::timing`] (benchmarks).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use ndarray::{ArrayD, ArrayView2, ArrayView4, IxDyn};
use repvgg_math::ConvSpec;

use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::graph::{Epilogue, Graph, TensorId, TensorMeta};
use crate::kernels::conv::{Caps, ConvKernel};
use crate::kernels::{self, DispatchSpec};
use crate::plan::{Op, Plan, Step, Topology};
use crate::precision::{Precision, Storage};
use crate::upload::{self, LayerGpu};
use repvgg_math::Activation;

/// Bindings never exceed this, whatever the device offers, so that indices fit in `u32`.
pub(crate) const MAX_BINDING: u64 = 1 << 31;
/// Prepared (shape-specific) resources kept per network.
const PLAN_CACHE: usize = 4;

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
    precision: Precision,
    max_binding: Option<u64>,
    nan_fill: bool,
    graph: Graph,
}

impl NetworkBuilder {
    /// An empty network on `ctx`, using [`ConvKernel::Tiled`].
    pub fn new(ctx: &GpuContext) -> Self {
        Self {
            ctx: ctx.clone(),
            kernel: ConvKernel::default(),
            precision: Precision::default(),
            max_binding: None,
            nan_fill: false,
            graph: Graph::new(),
        }
    }

    /// The convolution kernel for every conv of this network.
    pub fn kernel(mut self, kernel: ConvKernel) -> Self {
        self.kernel = kernel;
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
        if let Some(tile) = self.kernel.winograd_tile(&self.ctx, &spec, self.precision) {
            self.graph.winograd(x, weight, spec, epilogue, tile)
        } else {
            self.graph.conv(x, weight, spec, epilogue)
        }
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
        let caps = upload::caps(&ctx);
        let max_binding_device = ctx.limits().max_storage_buffer_binding_size;
        let layers = ctx.scoped("uploading network weights", || {
            g.nodes
                .iter()
                .map(|(node, _)| {
                    upload::layer(
                        &ctx,
                        &caps,
                        node,
                        self.kernel,
                        precision,
                        max_binding_device,
                    )
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let steps = g.nodes.iter().map(|(n, y)| Step::of(n, *y)).collect();
        let unused = |label| {
            ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        // Two: one buffer may not be bound read-only and read-write in one dispatch.
        let (dummy, dummy_rw) = (
            unused("unused binding"),
            unused("unused read-write binding"),
        );
        let limit = self.max_binding.unwrap_or(u64::MAX).min(caps.max_binding);
        Ok(GpuNetwork {
            ctx,
            topo: Topology {
                tensors: g.tensors,
                input: g.input,
                steps,
                outputs: g.outputs,
                precision,
            },
            layers,
            caps,
            max_binding: limit,
            nan_fill: self.nan_fill,
            dummy,
            dummy_rw,
            cache: Mutex::new(Vec::new()),
            busy: Mutex::new(()),
        })
    }
}

/// GPU resources for one input shape: activation buffers, parameters, bind groups.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub key: (usize, usize, usize),
    pub plan: Plan,
    pub slots: Vec<wgpu::Buffer>,
    /// Split-K partial sums, when a layer splits at these shapes (held by the bind groups).
    #[allow(dead_code)]
    pub scratch: Option<wgpu::Buffer>,
    /// One per layer.
    pub dispatches: Vec<Dispatch>,
}

/// A layer's recorded work: one dispatch, and a second right after it for a split-K conv.
#[derive(Debug)]
pub(crate) struct Dispatch {
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group: wgpu::BindGroup,
    pub groups: [u32; 3],
    pub then: Option<Box<Dispatch>>,
    /// K slices of a split-K conv, 1 otherwise.
    pub k_slices: usize,
    /// The layer runs inside the previous layer's dispatch ([`Plan::chained`]): not recorded.
    pub skip: bool,
}

/// A network on the GPU, ready to run on batches of any size and input shape it can take.
#[derive(Debug)]
pub struct GpuNetwork {
    pub(crate) ctx: GpuContext,
    pub(crate) topo: Topology,
    pub(crate) layers: Vec<LayerGpu>,
    caps: Caps,
    max_binding: u64,
    nan_fill: bool,
    pub(crate) dummy: wgpu::Buffer,
    /// Bound where a kernel's read-write buffer is unused (split-K's partial sums, unsplit).
    pub(crate) dummy_rw: wgpu::Buffer,
    cache: Mutex<Vec<Arc<Prepared>>>,
    /// Runs share activation buffers: one at a time.
    pub(crate) busy: Mutex<()>,
}

fn flat_meta(tensors: &[TensorMeta], t: usize) -> bool {
    tensors[t].flat
}

impl GpuNetwork {
    /// The context this network runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Channels the input must have.
    pub fn input_channels(&self) -> usize {
        self.topo.input_channels()
    }

    /// Output names, in the order they were declared.
    pub fn output_names(&self) -> Vec<String> {
        self.topo.outputs.iter().map(|(n, _)| n.clone()).collect()
    }

    /// How weights and activations are stored.
    pub fn precision(&self) -> Precision {
        self.topo.precision
    }

    /// Bytes one activation binding may take (device limit, or the builder's cap).
    pub fn max_binding_bytes(&self) -> u64 {
        self.max_binding
    }

    pub(crate) fn batches(&self, n: usize, h: usize, w: usize) -> Result<Vec<(usize, usize)>> {
        self.topo.batches(n, h, w, self.max_binding)
    }

    pub(crate) fn prepared(
        &self,
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<Arc<Prepared>> {
        let key = (batch, height, width);
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(pos) = cache.iter().position(|p| p.key == key) {
                let p = cache.remove(pos);
                cache.push(Arc::clone(&p));
                return Ok(p);
            }
        }
        let plan = self.topo.plan(batch, height, width)?;
        let prepared = Arc::new(
            self.ctx
                .scoped("allocating activations", || self.prepare(key, plan))?,
        );
        // New pipelines may have been built: persist them (best effort, see `GpuContext`).
        let _ = self.ctx.save_pipeline_cache();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= PLAN_CACHE {
            cache.remove(0);
        }
        cache.push(Arc::clone(&prepared));
        Ok(prepared)
    }

    /// Pipeline, parameters and workgroups of step `i` for the shapes of `plan`.
    pub(crate) fn dispatch_spec(&self, i: usize, plan: &Plan) -> Result<DispatchSpec> {
        let step = &self.topo.steps[i];
        let x = plan.shapes[step.x];
        let y = plan.shapes[step.y];
        let mut spec = match (plan.chained.get(i), &self.layers[i]) {
            (
                Some(true),
                LayerGpu::WinogradOutput {
                    scale, bias, relu, ..
                },
            ) => kernels::winograd::chain(
                y,
                scale.is_some(),
                bias.is_some(),
                *relu,
                self.caps.max_workgroups,
            )?,
            _ => self.layer_spec(i, step, x, y)?,
        };
        spec.key.precision = self.topo.precision;
        if let Some(then) = spec.then.as_deref_mut() {
            then.key.precision = self.topo.precision;
        }
        Ok(spec)
    }

    fn layer_spec(
        &self,
        i: usize,
        step: &Step,
        x: [usize; 4],
        y: [usize; 4],
    ) -> Result<DispatchSpec> {
        let max_dim = self.caps.max_workgroups;
        match (&step.op, &self.layers[i]) {
            (Op::Conv { spec, .. }, LayerGpu::Conv { imp, ep, .. }) => {
                kernels::conv::dispatch(*imp, spec, *ep, x, y, &self.caps)
            }
            (Op::Affine { residual }, LayerGpu::Affine { relu, .. }) => {
                kernels::simple::affine(x, residual.is_some(), *relu, max_dim)
            }
            (Op::Gap, LayerGpu::Gap) => kernels::simple::gap(x, max_dim),
            (Op::Linear { in_f, out_f }, LayerGpu::Linear { bias, act, .. }) => {
                kernels::simple::linear(x[0], *in_f, *out_f, bias.is_some(), *act, max_dim)
            }
            (Op::ChannelScale { .. }, LayerGpu::ChannelScale { relu }) => {
                kernels::simple::channel_scale(x, *relu, max_dim)
            }
            (Op::WinogradInput { tile }, LayerGpu::WinogradInput { .. }) => {
                kernels::winograd::input(x, *tile, max_dim)
            }
            (
                Op::WinogradOutput { residual, tile, .. },
                LayerGpu::WinogradOutput {
                    scale, bias, relu, ..
                },
            ) => kernels::winograd::output(
                y,
                *tile,
                scale.is_some(),
                bias.is_some(),
                residual.is_some(),
                *relu,
                max_dim,
            ),
            (op, layer) => Err(GpuError::InvalidNetwork(format!(
                "layer {i}: {op:?} was uploaded as {}",
                layer.kernel_name()
            ))),
        }
    }

    /// Records every layer of `prep` into one compute pass, with timestamps at its ends.
    pub(crate) fn encode_pass(
        &self,
        prep: &Prepared,
        encoder: &mut wgpu::CommandEncoder,
        timestamps: Option<(&wgpu::QuerySet, u32)>,
    ) {
        let timestamp_writes = timestamps.map(|(query_set, i)| wgpu::ComputePassTimestampWrites {
            query_set,
            beginning_of_pass_write_index: Some(i),
            end_of_pass_write_index: Some(i + 1),
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("network"),
            timestamp_writes,
        });
        for d in &prep.dispatches {
            Self::record(&mut pass, d);
        }
    }

    pub(crate) fn record(pass: &mut wgpu::ComputePass<'_>, d: &Dispatch) {
        if d.skip {
            return;
        }
        pass.set_pipeline(&d.pipeline);
        pass.set_bind_group(0, &d.bind_group, &[]);
        pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
        if let Some(then) = &d.then {
            Self::record(pass, then);
        }
    }

    pub(crate) fn upload_input(&self, prep: &Prepared, data: &[f32]) {
        let queue = self.ctx.queue();
        let precision = self.topo.precision;
        if self.nan_fill {
            for slot in &prep.slots {
                queue.write_buffer(slot, 0, &precision.nan_fill(slot.size() as usize));
            }
        }
        let slot = &prep.slots[prep.plan.slot_of[self.topo.input]];
        match precision {
            Precision::F32 => queue.write_buffer(slot, 0, bytemuck::cast_slice(data)),
            // Rounded to f16 here, padded to a whole word (the slot holds at least as much).
            Precision::F16 => queue.write_buffer(slot, 0, &precision.encode(data)),
        }
    }

    /// Runs the network on an NCHW batch and returns every named output (`[N, C, H, W]`, or
    /// `[N, C]` after a pool or linear layer).
    ///
    /// All layers of a batch go into one submission; a batch whose activations would exceed
    /// one storage binding is split into chunks that fit, and the results concatenated.
    ///
    /// # Errors
    /// [`GpuError::Shape`] for an input the network cannot take (wrong channels, too small),
    /// [`GpuError::BatchTooLarge`] when one image alone exceeds the binding limit, GPU errors.
    pub fn run(&self, input: ArrayView4<'_, f32>) -> Result<BTreeMap<String, ArrayD<f32>>> {
        self.topo.check_input(input.shape())?;
        let (n, c, h, w) = input.dim();
        let batches = self.batches(n, h, w)?;
        let _busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        let input = input.as_standard_layout();
        let data = input.as_slice().ok_or_else(|| {
            GpuError::Readback("input is not contiguous after as_standard_layout".into())
        })?;
        let image = c * h * w;
        let preps = batches
            .iter()
            .map(|&(_, len)| self.prepared(len, h, w))
            .collect::<Result<Vec<_>>>()?;
        let device = self.ctx.device();
        let outputs = &self.topo.outputs;
        let readbacks = self.ctx.scoped("running the network", || {
            let mut readbacks = Vec::with_capacity(batches.len());
            for (&(start, len), prep) in batches.iter().zip(&preps) {
                self.upload_input(prep, &data[start * image..(start + len) * image]);
                let mut encoder = device.create_command_encoder(&Default::default());
                self.encode_pass(prep, &mut encoder, None);
                let total: u64 = outputs
                    .iter()
                    .map(|(_, t)| self.topo.bytes(&prep.plan.shapes[*t]))
                    .sum();
                let readback = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size: total,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let mut offset = 0;
                for (_, t) in outputs {
                    let bytes = self.topo.bytes(&prep.plan.shapes[*t]);
                    let src = &prep.slots[prep.plan.slot_of[*t]];
                    encoder.copy_buffer_to_buffer(src, 0, &readback, offset, bytes);
                    offset += bytes;
                }
                self.ctx.queue().submit([encoder.finish()]);
                readbacks.push(readback);
            }
            Ok(readbacks)
        })?;
        let chunks: Vec<Vec<u8>> = crate::timing::read_back(&self.ctx, &readbacks)?;
        let precision = self.topo.precision;
        // Concatenate the chunks along the batch axis, output by output.
        let mut result = BTreeMap::new();
        let mut offsets = vec![0usize; chunks.len()];
        for (name, t) in outputs {
            let [_, oc, oh, ow] = preps[0].plan.shapes[*t];
            let mut all = Vec::with_capacity(n * oc * oh * ow);
            for (ci, (chunk, prep)) in chunks.iter().zip(&preps).enumerate() {
                let len = prep.plan.shapes[*t].iter().product::<usize>();
                let bytes = self.topo.bytes(&prep.plan.shapes[*t]) as usize;
                let stored = chunk.get(offsets[ci]..offsets[ci] + bytes).ok_or_else(|| {
                    GpuError::Readback(format!("output {name}: read-back buffer too short"))
                })?;
                all.extend(precision.decode(stored, len));
                offsets[ci] += bytes;
            }
            let shape: Vec<usize> = if flat_meta(&self.topo.tensors, *t) {
                vec![n, oc * oh * ow]
            } else {
                vec![n, oc, oh, ow]
            };
            let arr = ArrayD::from_shape_vec(IxDyn(&shape), all)
                .map_err(|e| GpuError::Readback(format!("output {name}: {e}")))?;
            result.insert(name.clone(), arr);
        }
        Ok(result)
    }

    /// Bytes of activation buffers a batch of `batch` images of `height` x `width` keeps
    /// allocated (buffers are reused once their tensor is dead; for a split batch, the
    /// biggest chunk).
    ///
    /// # Errors
    /// As [`GpuNetwork::run`], for the shape alone.
    pub fn peak_activation_bytes(&self, batch: usize, height: usize, width: usize) -> Result<u64> {
        self.topo
            .check_input(&[batch, self.input_channels(), height, width])?;
        let chunk = self.topo.chunk(batch, height, width, self.max_binding)?;
        Ok(self
            .topo
            .plan(chunk, height, width)?
            .slot_bytes
            .iter()
            .sum())
    }

    /// Multiply-accumulates of conv and linear layers for one image.
    ///
    /// # Errors
    /// [`GpuError::Shape`] when the network cannot take a `height` x `width` input.
    pub fn macs(&self, height: usize, width: usize) -> Result<u64> {
        self.topo.macs(height, width)
    }
}
