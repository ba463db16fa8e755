//! What timing on the GPU is made of: timestamp queries at pass boundaries, mapping buffers
//! back, synthetic input, and the per-layer rows of a profile. [`crate::GpuNetwork::bench`]
//! and [`crate::GpuNetwork::profile`] time whole networks with them.

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::select::ConvChoice;

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
    /// For the layers of a conv (a Winograd conv has three): the candidate it runs and where
    /// that choice came from.
    pub choice: Option<ConvChoice>,
}

/// A set of timestamp queries with the buffers to resolve and read them.
pub(crate) struct Queries {
    pub set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    count: u32,
}

impl Queries {
    pub fn new(ctx: &GpuContext, count: u32) -> Result<Self> {
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

    pub fn resolve_into(&self, encoder: &mut wgpu::CommandEncoder) {
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
    pub fn pairs_ns(&self, ctx: &GpuContext) -> Result<Vec<f64>> {
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
pub(crate) fn synthetic(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0)
        .collect()
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
