//! Networks on the GPU: a graph of layers built once (weights uploaded, layouts chosen), then
//! run on batches with one submission per batch, activations in reused buffers; timed whole
//! ([`GpuNetwork::bench`]) or layer by layer ([`GpuNetwork::profile`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ndarray::{ArrayD, ArrayView4, IxDyn};

use crate::bind::{self, Prepared};
use crate::caps::Caps;
use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::graph::{FinishedGraph, Node};
use crate::kernels::{u, wino_output};
use crate::plan::{Step, Topology};
use crate::precision::{Precision, Storage};
use crate::select::ConvChoice;
use crate::timing::{self, LayerTiming, Queries, synthetic};
use crate::tuning::TuningReport;
use crate::upload::Uploaded;

/// Prepared (shape-specific) resources kept per network.
const PLAN_CACHE: usize = 4;

/// The submissions of a timed batch: `(first image, images)` each, their prepared resources,
/// synthetic input for the largest, and the values per image.
type BenchSetup = (Vec<(usize, usize)>, Vec<Arc<Prepared>>, Vec<f32>, usize);

/// A network on the GPU, ready to run on batches of any size and input shape it can take.
#[derive(Debug)]
pub struct GpuNetwork {
    ctx: GpuContext,
    net: Uploaded,
    max_binding: u64,
    /// Per conv, in the order they were added.
    convs: Vec<ConvChoice>,
    nan_fill: bool,
    /// Per layer: the choice of the conv it belongs to (a Winograd conv has three layers).
    choices: Vec<Option<ConvChoice>>,
    tuning: Option<Box<TuningReport>>,
    cache: Mutex<Vec<Arc<Prepared>>>,
    /// Runs share activation buffers: one at a time.
    busy: Mutex<()>,
}

/// How [`GpuNetwork::assemble`] builds a network.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Assembly {
    pub precision: Precision,
    /// The builder's cap on one activation binding.
    pub max_binding: Option<u64>,
    pub nan_fill: bool,
}

impl GpuNetwork {
    /// Lowers `graph` with the candidate of each conv (in the order of
    /// [`FinishedGraph::convs`]) and uploads it.
    ///
    /// # Errors
    /// [`GpuError::F16Unavailable`], [`GpuError::F16Kernel`], [`GpuError::Unsupported`] for a
    /// candidate that cannot run its conv, GPU errors from the uploads.
    pub(crate) fn assemble(
        ctx: &GpuContext,
        caps: Caps,
        graph: FinishedGraph,
        choices: &[ConvChoice],
        how: Assembly,
        tuning: Option<TuningReport>,
    ) -> Result<Self> {
        let precision = how.precision;
        if precision == Precision::F16 && !ctx.has_f16() {
            return Err(GpuError::F16Unavailable {
                adapter: ctx.describe(),
            });
        }
        let tiles: Vec<_> = choices
            .iter()
            .map(|c| c.candidate.winograd_tile())
            .collect();
        let directs: Vec<_> = choices.iter().map(|c| c.candidate.direct()).collect();
        let g = graph.lower_winograd(&tiles)?;
        // Each layer's conv's choice (a Winograd conv's three layers share theirs).
        let layer_choice = g
            .nodes
            .iter()
            .map(|(node, _)| node.conv.and_then(|c| choices.get(c).copied()))
            .collect();
        let steps = g.nodes.iter().map(|(n, y)| Step::of(n, *y)).collect();
        let topo = Topology {
            tensors: g.tensors,
            input: g.input,
            steps,
            outputs: g.outputs,
            precision,
            chains: wino_output::chains,
        };
        let nodes: Vec<Node> = g.nodes.into_iter().map(|(n, _)| n).collect();
        let net = Uploaded::new(ctx, caps, topo, &nodes, &directs)?;
        let max_binding = how.max_binding.unwrap_or(u64::MAX).min(caps.max_binding);
        Ok(Self {
            ctx: ctx.clone(),
            net,
            max_binding,
            convs: choices.to_vec(),
            nan_fill: how.nan_fill,
            choices: layer_choice,
            tuning: tuning.map(Box::new),
            cache: Mutex::new(Vec::new()),
            busy: Mutex::new(()),
        })
    }

    /// Attaches what tuning did (once it is done: the network-level check times networks
    /// assembled before their report exists).
    pub(crate) fn with_tuning_report(mut self, report: TuningReport) -> Self {
        self.tuning = Some(Box::new(report));
        self
    }

    /// The candidate each conv of the network runs and where that choice came from, in the
    /// order the convs were added (a linear layer run as a 1x1 conv among them).
    pub fn conv_choices(&self) -> &[ConvChoice] {
        &self.convs
    }

    /// What tuning did while this network was built: `None` where it did not run (tuning
    /// off, forced kernels, no timestamp queries).
    pub fn tuning_report(&self) -> Option<&TuningReport> {
        self.tuning.as_deref()
    }

    /// The context this network runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Channels the input must have.
    pub fn input_channels(&self) -> usize {
        self.net.topo.input_channels()
    }

    /// Output names, in the order they were declared.
    pub fn output_names(&self) -> Vec<String> {
        self.net
            .topo
            .outputs
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// How weights and activations are stored.
    pub fn precision(&self) -> Precision {
        self.net.topo.precision
    }

    /// Bytes one activation binding may take (device limit, or the builder's cap).
    pub fn max_binding_bytes(&self) -> u64 {
        self.max_binding
    }

    pub(crate) fn batches(&self, n: usize, h: usize, w: usize) -> Result<Vec<(usize, usize)>> {
        self.net.topo.batches(n, h, w, self.max_binding)
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
        let plan = self.net.topo.plan(batch, height, width)?;
        let prepared = Arc::new(self.ctx.scoped("allocating activations", || {
            bind::prepare(&self.ctx, &self.net, key, plan)
        })?);
        // New pipelines may have been built: persist them (best effort, see `GpuContext`).
        let _ = self.ctx.save_pipeline_cache();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= PLAN_CACHE {
            cache.remove(0);
        }
        cache.push(Arc::clone(&prepared));
        Ok(prepared)
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
            d.record(&mut pass);
        }
    }

    pub(crate) fn upload_input(&self, prep: &Prepared, data: &[f32]) {
        let queue = self.ctx.queue();
        let precision = self.net.topo.precision;
        if self.nan_fill {
            for slot in &prep.slots {
                queue.write_buffer(slot, 0, &precision.nan_fill(slot.size() as usize));
            }
        }
        let slot = &prep.slots[prep.plan.slot_of[self.net.topo.input]];
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
        self.net.topo.check_input(input.shape())?;
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
        let outputs = &self.net.topo.outputs;
        let readbacks = self.ctx.scoped("running the network", || {
            let mut readbacks = Vec::with_capacity(batches.len());
            for (&(start, len), prep) in batches.iter().zip(&preps) {
                self.upload_input(prep, &data[start * image..(start + len) * image]);
                let mut encoder = device.create_command_encoder(&Default::default());
                self.encode_pass(prep, &mut encoder, None);
                let total: u64 = outputs
                    .iter()
                    .map(|(_, t)| self.net.topo.bytes(&prep.plan.shapes[*t]))
                    .sum();
                let readback = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size: total,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let mut offset = 0;
                for (_, t) in outputs {
                    let bytes = self.net.topo.bytes(&prep.plan.shapes[*t]);
                    let src = &prep.slots[prep.plan.slot_of[*t]];
                    encoder.copy_buffer_to_buffer(src, 0, &readback, offset, bytes);
                    offset += bytes;
                }
                self.ctx.queue().submit([encoder.finish()]);
                readbacks.push(readback);
            }
            Ok(readbacks)
        })?;
        let chunks: Vec<Vec<u8>> = timing::read_back(&self.ctx, &readbacks)?;
        let precision = self.net.topo.precision;
        // Concatenate the chunks along the batch axis, output by output.
        let mut result = BTreeMap::new();
        let mut offsets = vec![0usize; chunks.len()];
        for (name, t) in outputs {
            let [_, oc, oh, ow] = preps[0].plan.shapes[*t];
            let mut all = Vec::with_capacity(n * oc * oh * ow);
            for (ci, (chunk, prep)) in chunks.iter().zip(&preps).enumerate() {
                let len = prep.plan.shapes[*t].iter().product::<usize>();
                let bytes = self.net.topo.bytes(&prep.plan.shapes[*t]) as usize;
                let stored = chunk.get(offsets[ci]..offsets[ci] + bytes).ok_or_else(|| {
                    GpuError::Readback(format!("output {name}: read-back buffer too short"))
                })?;
                all.extend(precision.decode(stored, len));
                offsets[ci] += bytes;
            }
            let shape: Vec<usize> = if self.net.topo.tensors[*t].flat {
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
        self.net
            .topo
            .check_input(&[batch, self.input_channels(), height, width])?;
        let chunk = self
            .net
            .topo
            .chunk(batch, height, width, self.max_binding)?;
        Ok(self
            .net
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
        self.net.topo.macs(height, width)
    }

    fn bench_setup(&self, batch: usize, height: usize, width: usize) -> Result<BenchSetup> {
        self.net
            .topo
            .check_input(&[batch, self.input_channels(), height, width])?;
        let batches = self.batches(batch, height, width)?;
        let preps = batches
            .iter()
            .map(|&(_, len)| self.prepared(len, height, width))
            .collect::<Result<Vec<_>>>()?;
        let image = self.input_channels() * height * width;
        let data = synthetic(batches[0].1 * image);
        Ok((batches, preps, data, image))
    }

    /// Times the network on a batch of `batch` images of `height` x `width` (synthetic data):
    /// `warmup` untimed runs, then one duration per run of `iters`.
    ///
    /// Durations are GPU time from timestamp queries at the pass boundaries when the device has
    /// `TIMESTAMP_QUERY` (summed over the chunks of a split batch); otherwise wall time around
    /// the submissions and an explicit wait for the queue.
    ///
    /// # Errors
    /// As [`GpuNetwork::run`].
    pub fn bench(
        &self,
        batch: usize,
        height: usize,
        width: usize,
        warmup: usize,
        iters: usize,
    ) -> Result<Vec<Duration>> {
        let (batches, preps, data, image) = self.bench_setup(batch, height, width)?;
        let _busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        let device = self.ctx.device();
        let queries = if self.ctx.has_timestamps() {
            Some(Queries::new(&self.ctx, u(2 * batches.len()))?)
        } else {
            None
        };
        let mut times = Vec::with_capacity(iters);
        for it in 0..warmup + iters {
            let start = Instant::now();
            self.ctx.scoped("benchmarking the network", || {
                for (ci, ((_, len), prep)) in batches.iter().zip(&preps).enumerate() {
                    self.upload_input(prep, &data[..len * image]);
                    let mut encoder = device.create_command_encoder(&Default::default());
                    let ts = queries.as_ref().map(|q| (&q.set, 2 * u(ci)));
                    self.encode_pass(prep, &mut encoder, ts);
                    if ci + 1 == batches.len()
                        && let Some(q) = &queries
                    {
                        q.resolve_into(&mut encoder);
                    }
                    self.ctx.queue().submit([encoder.finish()]);
                }
                Ok(())
            })?;
            self.ctx.wait()?;
            let wall = start.elapsed();
            let gpu = match &queries {
                Some(q) => {
                    let ns: f64 = q.pairs_ns(&self.ctx)?.iter().sum();
                    (ns > 0.0).then(|| Duration::from_nanos(ns as u64))
                }
                None => None,
            };
            if it >= warmup {
                times.push(gpu.unwrap_or(wall));
            }
        }
        Ok(times)
    }

    /// Per-layer GPU time of a batch (synthetic data): each layer in a compute pass of its
    /// own with timestamps at its ends, `warmup` untimed runs, then the median of `iters`.
    /// A batch split into chunks is profiled on its first chunk.
    ///
    /// # Errors
    /// [`GpuError::Unsupported`] without `TIMESTAMP_QUERY`; otherwise as [`GpuNetwork::run`].
    pub fn profile(
        &self,
        batch: usize,
        height: usize,
        width: usize,
        warmup: usize,
        iters: usize,
    ) -> Result<Vec<LayerTiming>> {
        if !self.ctx.has_timestamps() {
            return Err(GpuError::Unsupported(
                "per-layer profiling needs timestamp queries, which this adapter lacks".into(),
            ));
        }
        let (batches, preps, data, image) = self.bench_setup(batch, height, width)?;
        let (prep, len) = (&preps[0], batches[0].1);
        let _busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        let layers = prep.dispatches.len();
        let queries = Queries::new(&self.ctx, u(2 * layers.max(1)))?;
        let device = self.ctx.device();
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); layers];
        for it in 0..warmup + iters.max(1) {
            self.ctx.scoped("profiling the network", || {
                self.upload_input(prep, &data[..len * image]);
                let mut encoder = device.create_command_encoder(&Default::default());
                for (i, d) in prep.dispatches.iter().enumerate() {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("layer"),
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &queries.set,
                            beginning_of_pass_write_index: Some(2 * u(i)),
                            end_of_pass_write_index: Some(2 * u(i) + 1),
                        }),
                    });
                    d.record(&mut pass);
                }
                queries.resolve_into(&mut encoder);
                self.ctx.queue().submit([encoder.finish()]);
                Ok(())
            })?;
            self.ctx.wait()?;
            let ns = queries.pairs_ns(&self.ctx)?;
            if it >= warmup {
                for (s, v) in samples.iter_mut().zip(ns) {
                    s.push(v);
                }
            }
        }
        let mut out = Vec::with_capacity(layers);
        let [_, _, in_h, in_w] = prep.plan.shapes[self.net.topo.input];
        for (i, mut s) in samples.into_iter().enumerate() {
            s.sort_by(f64::total_cmp);
            let step = &self.net.topo.steps[i];
            let name = self.net.kernel_name(i);
            out.push(LayerTiming {
                index: i,
                kernel: match prep.dispatches[i].k_slices {
                    _ if prep.plan.chained.get(i) == Some(&true) => format!("{name} + next input"),
                    _ if prep.dispatches[i].skip => format!("{name} (in the layer above)"),
                    1 => name.to_string(),
                    k => format!("{name} split-K x{k}"),
                },
                output: prep.plan.shapes[step.y],
                macs: step
                    .op
                    .layer()
                    .macs(&step.at(i, &prep.plan.shapes, in_h, in_w))?,
                time: Duration::from_nanos(s.get(s.len() / 2).copied().unwrap_or(0.0) as u64),
                choice: self.choices.get(i).copied().flatten(),
            });
        }
        Ok(out)
    }
}
