//! A network of convolutions and element-wise layers, prepared once and run many times: the
//! prepared [`Network`] and its runs (built by [`crate::NetworkBuilder`], planned in `plan`, its
//! element-wise kernels in `elementwise`).
//!
//! Activations stay NHWC from the input conversion to the head. Tensors share buffers by
//! liveness (decided when the network is built); buffers and scratch for one input shape form a
//! [`Workspace`] that is kept in a pool and reused, so a steady stream of same-shaped batches
//! allocates nothing but its results. Runs from several threads each take their own workspace.

use std::sync::Mutex;
use std::time::Instant;

use ndarray::{Array2, Array4, ArrayView4};
use pulp::Arch;
use rayon::prelude::*;

use crate::aligned::AlignedVec;
use crate::builder::{Head, Op};
use crate::elementwise::{Affine, MeanPixels, SeImage, nchw_to_nhwc};
use crate::error::{CpuError, Result};
use crate::plan::Shapes;

/// Wall time of one op of a profiled run.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    /// What ran, e.g. `conv 3x3/1 48->48 g1 56x56 winograd-f4`.
    pub op: String,
    /// Wall time, in seconds.
    pub seconds: f64,
    /// Floating-point operations of the op as a direct computation (2 per multiply-add).
    pub flops: u64,
}

/// A profile's clock: with a list to fill, each [`Laps::lap`] records the time since the last
/// one with the step's name and flops (worked out only then); without, it does nothing.
pub(crate) struct Laps<'a> {
    prof: Option<&'a mut Vec<OpTime>>,
    clock: Instant,
}

impl<'a> Laps<'a> {
    pub(crate) fn new(prof: Option<&'a mut Vec<OpTime>>) -> Self {
        Self {
            prof,
            clock: Instant::now(),
        }
    }

    pub(crate) fn lap(&mut self, what: &dyn Fn() -> (String, u64)) {
        if let Some(p) = self.prof.as_deref_mut() {
            let now = Instant::now();
            let (op, flops) = what();
            p.push(OpTime {
                op,
                seconds: (now - self.clock).as_secs_f64(),
                flops,
            });
            self.clock = now;
        }
    }
}

/// What a run returns: logits `[N, classes]` and the marked outputs, NCHW.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutput {
    /// The head's output, `[N, classes]`.
    pub logits: Array2<f32>,
    /// The tensors marked with [`crate::NetworkBuilder::output`], in order, `[N, C, H, W]`.
    pub outputs: Vec<Array4<f32>>,
}

/// Buffers for one input shape: one per liveness slot, plus conv scratch.
#[derive(Debug)]
pub(crate) struct Workspace {
    key: (usize, usize, usize, usize),
    slots: Vec<AlignedVec>,
    scratch: AlignedVec,
    pooled: Vec<f32>,
}

/// A prepared CPU network. `Send + Sync`: runs from several threads each use their own buffers.
#[derive(Debug)]
pub struct Network {
    /// Channels of every tensor (tensor 0 is the input).
    pub(crate) channels: Vec<usize>,
    pub(crate) ops: Vec<Op>,
    pub(crate) head: Head,
    /// The tensors returned from every run, in order.
    pub(crate) outputs: Vec<usize>,
    /// The buffer (liveness slot) of every tensor.
    pub(crate) slot_of: Vec<usize>,
    /// Buffers a run holds.
    pub(crate) slots: usize,
    pub(crate) pool: Option<rayon::ThreadPool>,
    pub(crate) workspaces: Mutex<Vec<Workspace>>,
}

impl Network {
    /// Threads a run uses.
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or_else(
            rayon::current_num_threads,
            rayon::ThreadPool::current_num_threads,
        )
    }

    /// Convolution algorithm of every conv, in order (for reports).
    pub fn algorithms(&self) -> Vec<&'static str> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                Op::Conv { conv, .. } => Some(conv.algorithm()),
                _ => None,
            })
            .collect()
    }

    /// Multiply-adds a run of `n x H x W` performs in its convolutions and head, counted as
    /// each conv's algorithm executes them ([`crate::PreparedConv::executed_macs`]: Winograd convs
    /// count their transformed-domain GEMMs). Squeeze-and-excitation, affine branches and
    /// pooling are not counted (they are a few operations per element).
    ///
    /// # Errors
    /// As [`Network::run`], for the shape alone.
    pub fn executed_macs(&self, n: usize, h: usize, w: usize) -> Result<u64> {
        let s = self.shapes(n, h, w, self.threads())?;
        let mut macs = self.head_macs(n);
        for op in &self.ops {
            if let Op::Conv { x, conv, .. } = op {
                let (ih, iw) = s.hw[*x];
                macs += conv.executed_macs(&conv.geometry(n, ih, iw)?);
            }
        }
        Ok(macs)
    }

    /// Multiply-adds of the head's linear layer for `n` images.
    fn head_macs(&self, n: usize) -> u64 {
        (n * self.channels[self.head.input] * self.head.classes) as u64
    }

    /// Bytes of activation buffers and scratch a run of `n x H x W` holds at once.
    pub fn activation_bytes(&self, n: usize, h: usize, w: usize) -> Result<u64> {
        let threads = self.threads();
        let s = self.shapes(n, h, w, threads)?;
        let elems: usize = self.slot_lens(n, &s).iter().sum::<usize>() + s.scratch;
        Ok(4 * elems as u64)
    }

    /// Runs a batch `[N, C, H, W]`. The caller checks values (finite); shapes are checked here.
    pub fn run(&self, x: ArrayView4<'_, f32>) -> Result<RunOutput> {
        crate::pool::run(self.pool.as_ref(), || self.run_here(x, None))
    }

    /// Like [`Network::run`], and the wall time of every op (input conversion and head
    /// included), in order.
    pub fn run_profiled(&self, x: ArrayView4<'_, f32>) -> Result<(RunOutput, Vec<OpTime>)> {
        let mut times = Vec::with_capacity(self.ops.len() + 2);
        let out = crate::pool::run(self.pool.as_ref(), || self.run_here(x, Some(&mut times)))?;
        Ok((out, times))
    }

    fn run_here(
        &self,
        x: ArrayView4<'_, f32>,
        prof: Option<&mut Vec<OpTime>>,
    ) -> Result<RunOutput> {
        let (n, c, h, w) = x.dim();
        if c != self.channels[0] || n == 0 || h == 0 || w == 0 {
            return Err(CpuError::Shape {
                what: "network input [N, C, H, W] with N, H, W >= 1".into(),
                expected: vec![n.max(1), self.channels[0], h.max(1), w.max(1)],
                found: vec![n, c, h, w],
            });
        }
        let threads = rayon::current_num_threads();
        let shapes = self.shapes(n, h, w, threads)?;
        let key = (n, h, w, threads);
        let taken = {
            let mut pool = self.workspaces.lock().unwrap_or_else(|e| e.into_inner());
            pool.iter()
                .position(|ws| ws.key == key)
                .map(|i| pool.swap_remove(i))
        };
        let mut ws = match taken {
            Some(ws) => ws,
            None => Workspace {
                key,
                slots: self
                    .slot_lens(n, &shapes)
                    .into_iter()
                    .map(|l| AlignedVec::filled(l, f32::NAN))
                    .collect(),
                // NaN until written: an element a kernel forgets shows in every comparison.
                scratch: AlignedVec::filled(shapes.scratch, f32::NAN),
                pooled: vec![f32::NAN; n * self.channels[self.head.input]],
            },
        };
        let result = self.execute(x, &shapes, &mut ws, prof);
        let mut pool = self.workspaces.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 4 {
            pool.push(ws);
        }
        result
    }

    fn execute(
        &self,
        x: ArrayView4<'_, f32>,
        shapes: &Shapes,
        ws: &mut Workspace,
        mut prof: Option<&mut Vec<OpTime>>,
    ) -> Result<RunOutput> {
        let (n, c, h, w) = x.dim();
        let mut clock = Instant::now();
        let mut lap = |what: String, flops: u64| {
            if let Some(p) = prof.as_deref_mut() {
                let now = Instant::now();
                p.push(OpTime {
                    op: what,
                    seconds: (now - clock).as_secs_f64(),
                    flops,
                });
                clock = now;
            }
        };
        let len = |t: usize| {
            let (th, tw) = shapes.hw[t];
            n * th * tw * self.channels[t]
        };
        // NCHW -> NHWC.
        {
            let dst = &mut ws.slots[self.slot_of[0]][..len(0)];
            let x = x.as_standard_layout();
            let src = x
                .as_slice()
                .ok_or_else(|| CpuError::Invalid("input is not contiguous".into()))?;
            nchw_to_nhwc(src, dst, c, h * w);
        }
        lap("input NCHW->NHWC".into(), 0);
        let arch = Arch::new();
        for op in &self.ops {
            match op {
                Op::Conv { x, y, conv } => {
                    let (ih, iw) = shapes.hw[*x];
                    let g = conv.geometry(n, ih, iw)?;
                    let (src, dst) = two_slots(&mut ws.slots, self.slot_of[*x], self.slot_of[*y])?;
                    conv.run(&src[..len(*x)], &g, &mut dst[..len(*y)], &mut ws.scratch)?;
                    let s = conv.spec();
                    let macs = conv.direct_macs(&g);
                    lap(
                        format!(
                            "conv {}x{}/{} {}->{} g{} {}x{} {}",
                            s.kernel_size,
                            s.kernel_size,
                            s.stride,
                            s.in_channels,
                            s.out_channels,
                            s.groups,
                            g.oh,
                            g.ow,
                            conv.algorithm_for(&g)
                        ),
                        2 * macs,
                    );
                }
                Op::AffineAdd {
                    x,
                    y,
                    scale,
                    shift,
                    relu,
                } => {
                    let (src, dst) = two_slots(&mut ws.slots, self.slot_of[*x], self.slot_of[*y])?;
                    let ch = self.channels[*x];
                    let (src, dst) = (&src[..len(*x)], &mut dst[..len(*y)]);
                    let rows = (dst.len() / ch)
                        .div_ceil(4 * rayon::current_num_threads())
                        .max(1);
                    dst.par_chunks_mut(rows * ch)
                        .zip(src.par_chunks(rows * ch))
                        .for_each(|(d, s)| {
                            arch.dispatch(Affine {
                                dst: d,
                                src: s,
                                scale,
                                shift,
                                relu: *relu,
                            })
                        });
                    lap("affine add".into(), 0);
                }
                Op::Se { t, se, relu } => {
                    let ch = self.channels[*t];
                    let (th, tw) = shapes.hw[*t];
                    let buf = &mut ws.slots[self.slot_of[*t]][..len(*t)];
                    buf.par_chunks_mut(th * tw * ch).for_each(|img| {
                        arch.dispatch(SeImage {
                            img,
                            ch,
                            se,
                            relu: *relu,
                        })
                    });
                    lap("squeeze-excite".into(), 0);
                }
                Op::Relu { t } => {
                    let buf = &mut ws.slots[self.slot_of[*t]][..len(*t)];
                    buf.par_chunks_mut(1 << 14)
                        .for_each(|b| arch.dispatch(|| b.iter_mut().for_each(|v| *v = v.max(0.0))));
                    lap("relu".into(), 0);
                }
            }
        }
        // Head: global average pool, then the linear layer.
        let hd = &self.head;
        let ch = self.channels[hd.input];
        let (fh, fw) = shapes.hw[hd.input];
        let feats = &ws.slots[self.slot_of[hd.input]][..len(hd.input)];
        let pooled = &mut ws.pooled[..n * ch];
        pooled
            .par_chunks_mut(ch)
            .zip(feats.par_chunks(fh * fw * ch))
            .for_each(|(p, img)| arch.dispatch(MeanPixels { out: p, img }));
        let mut logits = vec![0.0f32; n * hd.classes];
        let epi = crate::gemm::ColEpilogue {
            scale: &hd.unit_scale,
            shift: &hd.bias,
            accumulate: false,
            relu: false,
        };
        crate::gemm::gemm(
            n,
            ch,
            hd.classes,
            pooled,
            ch,
            &hd.wt,
            &mut logits,
            hd.classes,
            Some(epi),
            true,
        );
        let logits = Array2::from_shape_vec((n, hd.classes), logits)
            .map_err(|e| CpuError::Invalid(e.to_string()))?;
        lap("head (pool + linear)".into(), 2 * self.head_macs(n));
        let mut outputs = Vec::with_capacity(self.outputs.len());
        for &t in &self.outputs {
            let (th, tw) = shapes.hw[t];
            let ch = self.channels[t];
            let buf = &ws.slots[self.slot_of[t]][..len(t)];
            outputs.push(Array4::from_shape_fn((n, ch, th, tw), |(b, cc, yy, xx)| {
                buf[((b * th + yy) * tw + xx) * ch + cc]
            }));
        }
        Ok(RunOutput { logits, outputs })
    }
}

/// Two distinct slots, or one slot twice for an in-place op (then an error: convs never run
/// in place).
fn two_slots(slots: &mut [AlignedVec], a: usize, b: usize) -> Result<(&[f32], &mut [f32])> {
    if a == b {
        return Err(CpuError::Invalid(
            "an operation reads and writes one buffer".into(),
        ));
    }
    if a < b {
        let (lo, hi) = slots.split_at_mut(b);
        Ok((&lo[a], &mut hi[0]))
    } else {
        let (lo, hi) = slots.split_at_mut(a);
        Ok((&hi[0], &mut lo[b]))
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array2, Array4};
    use repvgg_math::ConvSpec;

    use crate::{CpuOptions, Epilogue, NetworkBuilder};

    /// A train-form block (3x3 conv, 1x1 conv added into its output, identity BN added, then a
    /// conv) keeps three buffers: the accumulating conv and the affine update their target in
    /// place, and the input's buffer is reused once it is dead.
    #[test]
    fn accumulating_ops_update_their_target_in_place() {
        let c = 4;
        let (s3, s1) = (
            ConvSpec::new(c, c, 3, 1, 1, 1).expect("spec"),
            ConvSpec::new(c, c, 1, 1, 0, 1).expect("spec"),
        );
        let (w3, w1) = (
            Array4::from_elem((c, c, 3, 3), 0.1f32),
            Array4::from_elem((c, c, 1, 1), 0.1f32),
        );
        let mut b = NetworkBuilder::new(CpuOptions::default());
        let x = b.input(c).expect("input");
        let t1 = b.conv(x, w3.view(), s3, Epilogue::default()).expect("conv");
        let t2 = b
            .conv(t1, w3.view(), s3, Epilogue::default())
            .expect("conv");
        let t2 = b
            .conv(t1, w1.view(), s1, Epilogue::new().with_residual(t2))
            .expect("1x1 branch");
        let t2 = b
            .affine_add(t1, vec![1.0; c], vec![0.0; c], t2, true)
            .expect("identity branch");
        let t3 = b
            .conv(t2, w3.view(), s3, Epilogue::default())
            .expect("conv");
        b.output(t1).expect("output");
        b.head(t3, Array2::from_elem((2, c), 0.5).view(), &[0.0, 0.0])
            .expect("head");
        let net = b.build().expect("build");
        // x: slot 0; t1: slot 1 (an output); t2 reuses slot 0; t3 needs slot 2.
        assert_eq!(net.slot_of, vec![0, 1, 0, 2]);
        assert_eq!(net.slots, 3);
    }
}
