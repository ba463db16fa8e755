//! Timing networks on the GPU: whole runs ([`GpuNetwork::bench`]) and layer by layer
//! ([`GpuNetwork::profile`]), from timestamp queries where the device has them; read-back.

use std::sync::PoisonError;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::kernels::u;
use crate::network::{GpuNetwork, Prepared};
use crate::plan::step_macs;

/// One layer's share of a profiled run.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerTiming {
    /// Position in execution order.
    pub index: usize,
    /// The kernel that ran it, e.g. `conv subgroup`.
    pub kernel: String,
    /// Output shape `[N, C, H, W]`.
    pub output: [usize; 4],
    /// Multiply-accumulates of the layer for the whole batch.
    pub macs: u64,
    /// Median GPU time over the profiled runs.
    pub time: Duration,
}

struct Queries {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    count: u32,
}

impl Queries {
    fn new(ctx: &GpuContext, count: u32) -> Result<Self> {
        let device = ctx.device();
        ctx.scoped("creating timestamp queries", || {
            Ok(Self {
                set: device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count,
                }),
                resolve: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamp resolve"),
                    size: 8 * u64::from(count),
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                readback: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamp readback"),
                    size: 8 * u64::from(count),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                count,
            })
        })
    }

    fn resolve_into(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.resolve_query_set(&self.set, 0..self.count, &self.resolve, 0);
        encoder.copy_buffer_to_buffer(
            &self.resolve,
            0,
            &self.readback,
            0,
            8 * u64::from(self.count),
        );
    }

    /// Nanoseconds between each pair of timestamps `(2i, 2i + 1)`.
    fn pairs_ns(&self, ctx: &GpuContext) -> Result<Vec<f64>> {
        let period = f64::from(ctx.queue().get_timestamp_period());
        let bytes = read_back(ctx, std::slice::from_ref(&self.readback))?;
        let ticks: Vec<u64> = bytes[0]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        Ok(ticks
            .chunks_exact(2)
            .map(|p| p[1].saturating_sub(p[0]) as f64 * period)
            .collect())
    }
}

/// Synthetic input values in [-1, 1).
fn synthetic(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0)
        .collect()
}

/// The submissions of a timed batch: `(first image, images)` each, their prepared resources,
/// synthetic input for the largest, and the values per image.
type BenchSetup = (
    Vec<(usize, usize)>,
    Vec<std::sync::Arc<Prepared>>,
    Vec<f32>,
    usize,
);

impl GpuNetwork {
    fn bench_setup(&self, batch: usize, height: usize, width: usize) -> Result<BenchSetup> {
        self.topo
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
                    Self::record(&mut pass, d);
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
        for (i, mut s) in samples.into_iter().enumerate() {
            s.sort_by(f64::total_cmp);
            let step = &self.topo.steps[i];
            out.push(LayerTiming {
                index: i,
                kernel: match prep.dispatches[i].k_slices {
                    _ if prep.plan.chained.get(i) == Some(&true) => {
                        format!("{} + next input", self.layers[i].kernel_name())
                    }
                    _ if prep.dispatches[i].skip => {
                        format!("{} (in the layer above)", self.layers[i].kernel_name())
                    }
                    1 => self.layers[i].kernel_name().to_string(),
                    k => format!("{} split-K x{k}", self.layers[i].kernel_name()),
                },
                output: prep.plan.shapes[step.y],
                macs: step_macs(step, &prep.plan.shapes)?,
                time: Duration::from_nanos(s.get(s.len() / 2).copied().unwrap_or(0.0) as u64),
            });
        }
        Ok(out)
    }
}

/// How long [`read_back`] waits for its mapping callbacks once the queue is idle.
const MAP_WAIT: Duration = Duration::from_secs(10);
/// How often [`read_back`] polls the device again while it waits.
const MAP_POLL: Duration = Duration::from_millis(5);

/// Maps `buffers` (MAP_READ), waits for the queue, and copies their bytes out.
pub(crate) fn read_back(ctx: &GpuContext, buffers: &[wgpu::Buffer]) -> Result<Vec<Vec<u8>>> {
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, b) in buffers.iter().enumerate() {
        let tx = tx.clone();
        b.map_async(wgpu::MapMode::Read, .., move |r| {
            // A closed receiver only means the caller already gave up.
            let _ = tx.send((i, r));
        });
    }
    drop(tx);
    ctx.wait()?;
    // A callback runs in whichever thread polls the device when the mapping completes: with
    // threads sharing the device, that may be another thread, still running it after our poll
    // returned. So wait for every callback, polling again now and then, up to a deadline.
    let deadline = Instant::now() + MAP_WAIT;
    let mut results = Vec::with_capacity(buffers.len());
    while results.len() < buffers.len() {
        match rx.recv_timeout(MAP_POLL) {
            Ok(r) => results.push(r),
            Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => ctx.wait()?,
            Err(_) => {
                return Err(GpuError::Readback(format!(
                    "{} of {} buffers were mapped after waiting {} s for the queue",
                    results.len(),
                    buffers.len(),
                    MAP_WAIT.as_secs()
                )));
            }
        }
    }
    for (i, r) in results {
        r.map_err(|e| GpuError::Readback(format!("mapping buffer {i}: {e}")))?;
    }
    let mut out = Vec::with_capacity(buffers.len());
    for b in buffers {
        let bytes = {
            let view = b
                .get_mapped_range(..)
                .map_err(|e| GpuError::Readback(e.to_string()))?;
            view.to_vec()
        };
        b.unmap();
        out.push(bytes);
    }
    Ok(out)
}
