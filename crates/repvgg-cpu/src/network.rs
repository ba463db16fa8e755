//! A network of convolutions and element-wise layers, prepared once and run many times.
//!
//! Activations stay NHWC from the input conversion to the head. Tensors share buffers by
//! liveness (decided when the network is built); buffers and scratch for one input shape form a
//! [`Workspace`] that is kept in a pool and reused, so a steady stream of same-shaped batches
//! allocates nothing but its results. Runs from several threads each take their own workspace.

use std::sync::Mutex;
use std::time::Instant;

use ndarray::{Array2, Array4, ArrayView2, ArrayView4};
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;
use repvgg_math::ConvSpec;

use crate::aligned::AlignedVec;
use crate::conv::{ConvAlgo, PreparedConv};
use crate::error::{CpuError, Result};

/// A tensor of a network under construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TensorId(usize);

/// What a convolution does to its result before storing it, in this order:
/// `y = conv(x) * scale + bias; y += residual; y = activation(y)` (see
/// [`repvgg_math::Epilogue`]). The activation of a conv is [`repvgg_math::Activation::None`]
/// or [`repvgg_math::Activation::Relu`]. The CPU engine adds a residual in place: the conv
/// accumulates into the residual's buffer (see [`NetworkBuilder::conv`]).
pub type Epilogue = repvgg_math::Epilogue<TensorId>;

/// Squeeze-excite weights: `x * sigmoid(fc2(relu(fc1(mean(x)))))`.
#[derive(Debug, Clone)]
struct SqueezeExcite {
    hidden: usize,
    /// `[hidden, C]`.
    fc1_w: Vec<f32>,
    fc1_b: Vec<f32>,
    /// `[C, hidden]`.
    fc2_w: Vec<f32>,
    fc2_b: Vec<f32>,
}

#[derive(Debug, Clone)]
enum Op {
    Conv {
        x: usize,
        y: usize,
        conv: Box<PreparedConv>,
    },
    /// `y += x * scale + shift`, then ReLU.
    AffineAdd {
        x: usize,
        y: usize,
        scale: Vec<f32>,
        shift: Vec<f32>,
        relu: bool,
    },
    Se {
        t: usize,
        se: SqueezeExcite,
        relu: bool,
    },
    Relu {
        t: usize,
    },
}

impl Op {
    fn reads(&self) -> Vec<usize> {
        match self {
            Op::Conv { x, y, conv } if conv.accumulates() => vec![*x, *y],
            Op::Conv { x, .. } => vec![*x],
            Op::AffineAdd { x, y, .. } => vec![*x, *y],
            Op::Se { t, .. } | Op::Relu { t } => vec![*t],
        }
    }
    fn defines(&self) -> Option<usize> {
        match self {
            Op::Conv { y, conv, .. } if !conv.accumulates() => Some(*y),
            _ => None,
        }
    }
}

/// The classifier: global average pool then a linear layer.
#[derive(Debug, Clone)]
struct Head {
    input: usize,
    classes: usize,
    /// `[C, classes]` (the transposed PyTorch weight), packed in GEMM panels.
    wt: AlignedVec,
    bias: Vec<f32>,
    /// Ones: the GEMM epilogue's scale, so that the bias is added as the logits are stored.
    unit_scale: Vec<f32>,
}

/// Options of a CPU network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuOptions {
    /// Worker threads; `None` uses rayon's global pool (`RAYON_NUM_THREADS`, else all cores).
    pub threads: Option<usize>,
    /// Convolution algorithm (Winograd F(4x4) for 3x3 stride-1 convs by default).
    pub algo: ConvAlgo,
}

/// Builds a [`Network`].
#[derive(Debug)]
pub struct NetworkBuilder {
    opts: CpuOptions,
    channels: Vec<usize>,
    ops: Vec<Op>,
    head: Option<Head>,
    outputs: Vec<usize>,
}

impl NetworkBuilder {
    pub fn new(opts: CpuOptions) -> Self {
        Self {
            opts,
            channels: Vec::new(),
            ops: Vec::new(),
            head: None,
            outputs: Vec::new(),
        }
    }

    fn tensor(&mut self, channels: usize) -> usize {
        self.channels.push(channels);
        self.channels.len() - 1
    }

    fn check(&self, t: TensorId) -> Result<usize> {
        self.channels
            .get(t.0)
            .copied()
            .ok_or_else(|| CpuError::Invalid(format!("tensor {} does not exist", t.0)))
    }

    /// The network's input (`[N, channels, H, W]`); call once, first.
    pub fn input(&mut self, channels: usize) -> Result<TensorId> {
        if !self.channels.is_empty() {
            return Err(CpuError::Invalid(
                "the input must be the first tensor".into(),
            ));
        }
        if channels == 0 {
            return Err(CpuError::Invalid(
                "the input needs at least one channel".into(),
            ));
        }
        Ok(TensorId(self.tensor(channels)))
    }

    fn conv_checked(&self, x: TensorId, spec: &ConvSpec) -> Result<()> {
        let c = self.check(x)?;
        if c != spec.in_channels {
            return Err(CpuError::Shape {
                what: "convolution input channels".into(),
                expected: vec![spec.in_channels],
                found: vec![c],
            });
        }
        Ok(())
    }

    /// A convolution of `x`, then `epilogue`. Without a residual the result is a new tensor.
    /// With one, the result is added to the residual tensor in place (as
    /// [`NetworkBuilder::affine_add`] does) and the residual's id is returned: the residual's
    /// earlier value is no longer available.
    ///
    /// # Errors
    /// [`CpuError::Shape`] when the input or residual channels, the weight or the epilogue
    /// vectors do not match `spec`; [`CpuError::Invalid`] for an unknown tensor, non-finite
    /// weights or a sigmoid activation; [`CpuError::Math`] for an invalid spec.
    pub fn conv(
        &mut self,
        x: TensorId,
        weight: ArrayView4<'_, f32>,
        spec: ConvSpec,
        epilogue: Epilogue,
    ) -> Result<TensorId> {
        self.conv_checked(x, &spec)?;
        let target = match epilogue.residual {
            None => None,
            Some(t) => {
                let ct = self.check(t)?;
                if ct != spec.out_channels {
                    return Err(CpuError::Shape {
                        what: "convolution residual channels".into(),
                        expected: vec![spec.out_channels],
                        found: vec![ct],
                    });
                }
                Some(t)
            }
        };
        let conv = PreparedConv::new(weight, spec, epilogue, self.opts.algo)?;
        let y = match target {
            Some(t) => t.0,
            None => self.tensor(spec.out_channels),
        };
        self.ops.push(Op::Conv {
            x: x.0,
            y,
            conv: Box::new(conv),
        });
        Ok(TensorId(y))
    }

    /// `target += x * scale + shift` per channel (a BN branch added to a sum), then ReLU.
    pub fn affine_add(
        &mut self,
        x: TensorId,
        scale: Vec<f32>,
        shift: Vec<f32>,
        target: TensorId,
        relu: bool,
    ) -> Result<TensorId> {
        let (cx, ct) = (self.check(x)?, self.check(target)?);
        for (what, len) in [
            ("affine target channels", ct),
            ("affine scale", scale.len()),
            ("affine shift", shift.len()),
        ] {
            if len != cx {
                return Err(CpuError::Shape {
                    what: what.into(),
                    expected: vec![cx],
                    found: vec![len],
                });
            }
        }
        finite("affine scale", &scale)?;
        finite("affine shift", &shift)?;
        self.ops.push(Op::AffineAdd {
            x: x.0,
            y: target.0,
            scale,
            shift,
            relu,
        });
        Ok(target)
    }

    /// Squeeze-excite on `t` in place (`fc1 [hidden, C]`, `fc2 [C, hidden]`), then ReLU.
    pub fn squeeze_excite(
        &mut self,
        t: TensorId,
        fc1_weight: ArrayView2<'_, f32>,
        fc1_bias: &[f32],
        fc2_weight: ArrayView2<'_, f32>,
        fc2_bias: &[f32],
        relu: bool,
    ) -> Result<TensorId> {
        let c = self.check(t)?;
        let hidden = fc1_weight.shape()[0];
        for (what, found, expected) in [
            (
                "squeeze-excite fc1 weight",
                fc1_weight.shape().to_vec(),
                vec![hidden, c],
            ),
            (
                "squeeze-excite fc1 bias",
                vec![fc1_bias.len()],
                vec![hidden],
            ),
            (
                "squeeze-excite fc2 weight",
                fc2_weight.shape().to_vec(),
                vec![c, hidden],
            ),
            ("squeeze-excite fc2 bias", vec![fc2_bias.len()], vec![c]),
        ] {
            if found != expected {
                return Err(CpuError::Shape {
                    what: what.into(),
                    expected,
                    found,
                });
            }
        }
        let se = SqueezeExcite {
            hidden,
            fc1_w: fc1_weight.iter().copied().collect(),
            fc1_b: fc1_bias.to_vec(),
            fc2_w: fc2_weight.iter().copied().collect(),
            fc2_b: fc2_bias.to_vec(),
        };
        for (what, v) in [
            ("squeeze-excite fc1 weight", &se.fc1_w),
            ("squeeze-excite fc1 bias", &se.fc1_b),
            ("squeeze-excite fc2 weight", &se.fc2_w),
            ("squeeze-excite fc2 bias", &se.fc2_b),
        ] {
            finite(what, v)?;
        }
        self.ops.push(Op::Se { t: t.0, se, relu });
        Ok(t)
    }

    /// ReLU on `t` in place.
    pub fn relu(&mut self, t: TensorId) -> Result<TensorId> {
        self.check(t)?;
        self.ops.push(Op::Relu { t: t.0 });
        Ok(t)
    }

    /// The classifier on `x`: global average pool, then `weight [classes, C]` and `bias`.
    pub fn head(&mut self, x: TensorId, weight: ArrayView2<'_, f32>, bias: &[f32]) -> Result<()> {
        let c = self.check(x)?;
        let classes = weight.shape()[0];
        if weight.shape()[1] != c || bias.len() != classes {
            return Err(CpuError::Shape {
                what: "classifier weight and bias".into(),
                expected: vec![classes, c, classes],
                found: vec![weight.shape()[0], weight.shape()[1], bias.len()],
            });
        }
        if weight.iter().any(|v| !v.is_finite()) {
            return Err(CpuError::Invalid(
                "classifier weight holds NaN or inf".into(),
            ));
        }
        finite("classifier bias", bias)?;
        let mut wt = AlignedVec::filled(crate::gemm::packed_len(c, classes), 0.0);
        crate::gemm::pack_into(&mut wt, c, classes, |ci, k| weight[[k, ci]]);
        self.head = Some(Head {
            input: x.0,
            classes,
            wt,
            bias: bias.to_vec(),
            unit_scale: vec![1.0; classes],
        });
        Ok(())
    }

    /// Also return `t` (NCHW) from every run, in the order marked.
    pub fn output(&mut self, t: TensorId) -> Result<()> {
        self.check(t)?;
        self.outputs.push(t.0);
        Ok(())
    }

    /// Decides buffer sharing and builds the thread pool.
    pub fn build(self) -> Result<Network> {
        if self.channels.is_empty() {
            return Err(CpuError::Invalid("the network has no input".into()));
        }
        let Some(head) = self.head else {
            return Err(CpuError::Invalid("the network has no head".into()));
        };
        let n_ops = self.ops.len();
        // Last op index using each tensor; outputs and the head's input live to the end.
        let mut last = vec![0usize; self.channels.len()];
        for (i, op) in self.ops.iter().enumerate() {
            for t in op.reads() {
                last[t] = i;
            }
            if let Some(t) = op.defines() {
                last[t] = last[t].max(i);
            }
        }
        for &t in self.outputs.iter().chain([&head.input]) {
            last[t] = n_ops;
        }
        // Greedy slot assignment: a new tensor takes a slot whose tensor is dead.
        let mut slot_of = vec![usize::MAX; self.channels.len()];
        let mut busy: Vec<Option<usize>> = vec![Some(0)];
        slot_of[0] = 0;
        for (i, op) in self.ops.iter().enumerate() {
            if let Some(t) = op.defines() {
                let free = busy.iter().position(Option::is_none);
                let s = free.unwrap_or_else(|| {
                    busy.push(None);
                    busy.len() - 1
                });
                busy[s] = Some(t);
                slot_of[t] = s;
            }
            for b in busy.iter_mut() {
                if b.is_some_and(|t| last[t] <= i) {
                    *b = None;
                }
            }
        }
        if let Some(t) = (0..self.channels.len()).find(|&t| slot_of[t] == usize::MAX) {
            return Err(CpuError::Invalid(format!(
                "tensor {t} is used before it is computed"
            )));
        }
        let pool = match self.opts.threads {
            None => None,
            Some(n) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n.max(1))
                    .build()
                    .map_err(|e| CpuError::ThreadPool(e.to_string()))?,
            ),
        };
        Ok(Network {
            channels: self.channels,
            ops: self.ops,
            head,
            outputs: self.outputs,
            slot_of,
            slots: busy.len(),
            pool,
            workspaces: Mutex::new(Vec::new()),
        })
    }
}

fn finite(what: &str, v: &[f32]) -> Result<()> {
    if v.iter().all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err(CpuError::Invalid(format!("{what} holds NaN or inf")))
    }
}

/// Wall time of one op of a profiled run.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    /// What ran, e.g. `conv 3x3/1 48->48 g1 56x56 winograd-f4`.
    pub op: String,
    pub seconds: f64,
    /// Floating-point operations of the op as a direct computation (2 per multiply-add).
    pub flops: u64,
}

/// What a run returns: logits `[N, classes]` and the marked outputs, NCHW.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutput {
    pub logits: Array2<f32>,
    pub outputs: Vec<Array4<f32>>,
}

/// Buffers for one input shape: one per liveness slot, plus conv scratch.
#[derive(Debug)]
struct Workspace {
    key: (usize, usize, usize, usize),
    slots: Vec<AlignedVec>,
    scratch: AlignedVec,
    pooled: Vec<f32>,
}

/// A prepared CPU network. `Send + Sync`: runs from several threads each use their own buffers.
#[derive(Debug)]
pub struct Network {
    channels: Vec<usize>,
    ops: Vec<Op>,
    head: Head,
    outputs: Vec<usize>,
    slot_of: Vec<usize>,
    slots: usize,
    pool: Option<rayon::ThreadPool>,
    workspaces: Mutex<Vec<Workspace>>,
}

/// Spatial size of every tensor, and the largest scratch any op needs.
struct Shapes {
    hw: Vec<(usize, usize)>,
    scratch: usize,
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

    fn shapes(&self, n: usize, h: usize, w: usize, threads: usize) -> Result<Shapes> {
        let mut hw = vec![(0, 0); self.channels.len()];
        hw[0] = (h, w);
        let mut scratch = 0;
        for op in &self.ops {
            match op {
                Op::Conv { x, y, conv } => {
                    let (ih, iw) = hw[*x];
                    let g = conv.geometry(n, ih, iw)?;
                    if conv.accumulates() && hw[*y] != (g.oh, g.ow) {
                        return Err(CpuError::Shape {
                            what: "accumulating convolution output".into(),
                            expected: vec![hw[*y].0, hw[*y].1],
                            found: vec![g.oh, g.ow],
                        });
                    }
                    hw[*y] = (g.oh, g.ow);
                    scratch = scratch.max(conv.scratch_len(&g, threads));
                }
                Op::AffineAdd { x, y, .. } => {
                    if hw[*x] != hw[*y] {
                        return Err(CpuError::Shape {
                            what: "affine branch (input and sum must have one size)".into(),
                            expected: vec![hw[*y].0, hw[*y].1],
                            found: vec![hw[*x].0, hw[*x].1],
                        });
                    }
                }
                Op::Se { .. } | Op::Relu { .. } => {}
            }
        }
        Ok(Shapes { hw, scratch })
    }

    fn slot_lens(&self, n: usize, s: &Shapes) -> Vec<usize> {
        let mut lens = vec![0usize; self.slots];
        for (t, &slot) in self.slot_of.iter().enumerate() {
            let (h, w) = s.hw[t];
            lens[slot] = lens[slot].max(n * h * w * self.channels[t]);
        }
        lens
    }

    /// Multiply-adds a run of `n x H x W` performs in its convolutions and head, counted as
    /// each conv's algorithm executes them ([`PreparedConv::executed_macs`]: Winograd convs
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
        match &self.pool {
            Some(p) => p.install(|| self.run_here(x, None)),
            None => on_worker(|| self.run_here(x, None)),
        }
    }

    /// Like [`Network::run`], and the wall time of every op (input conversion and head
    /// included), in order.
    pub fn run_profiled(&self, x: ArrayView4<'_, f32>) -> Result<(RunOutput, Vec<OpTime>)> {
        let mut times = Vec::with_capacity(self.ops.len() + 2);
        let out = match &self.pool {
            Some(p) => p.install(|| self.run_here(x, Some(&mut times))),
            None => on_worker(|| self.run_here(x, Some(&mut times))),
        }?;
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

/// `dst[n][p][ch] = src[n][ch][p]` for `hw` pixels per image, in parallel over blocks of pixels
/// (batch 1 too); three channels (images) as three plane streams.
fn nchw_to_nhwc(src: &[f32], dst: &mut [f32], c: usize, hw: usize) {
    const PIXELS: usize = 4096;
    if c == 0 || hw == 0 {
        return;
    }
    dst.par_chunks_mut(hw * c)
        .zip(src.par_chunks(c * hw))
        .for_each(|(d, s)| {
            d.par_chunks_mut(PIXELS * c)
                .enumerate()
                .for_each(|(blk, d)| {
                    let p0 = blk * PIXELS;
                    let n = d.len() / c;
                    if c == 3 {
                        let (r, g, b) = (
                            &s[p0..p0 + n],
                            &s[hw + p0..hw + p0 + n],
                            &s[2 * hw + p0..2 * hw + p0 + n],
                        );
                        for (((px, &r), &g), &b) in d.chunks_exact_mut(3).zip(r).zip(g).zip(b) {
                            px.copy_from_slice(&[r, g, b]);
                        }
                    } else {
                        for (i, px) in d.chunks_exact_mut(c).enumerate() {
                            for (ch, v) in px.iter_mut().enumerate() {
                                *v = s[ch * hw + p0 + i];
                            }
                        }
                    }
                });
        });
}

/// Runs `op` on a worker of the global pool (in place when called from one). A run called
/// from outside the pool would otherwise hand each of its parallel steps, several per conv, to
/// the pool and sleep on a lock until it is done: a cross-thread wake-up per step, which at
/// batch 1 costs as much as a small layer's arithmetic.
fn on_worker<R: Send>(op: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| op())
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

struct Affine<'a> {
    dst: &'a mut [f32],
    src: &'a [f32],
    scale: &'a [f32],
    shift: &'a [f32],
    relu: bool,
}

impl WithSimd for Affine<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let ch = self.scale.len();
        for (d, s) in self.dst.chunks_exact_mut(ch).zip(self.src.chunks_exact(ch)) {
            for ((o, &v), (&sc, &sh)) in d.iter_mut().zip(s).zip(self.scale.iter().zip(self.shift))
            {
                let z = *o + (v * sc + sh);
                *o = if self.relu { z.max(0.0) } else { z };
            }
        }
    }
}

struct MeanPixels<'a> {
    out: &'a mut [f32],
    img: &'a [f32],
}

impl WithSimd for MeanPixels<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let ch = self.out.len();
        self.out.fill(0.0);
        let mut count = 0usize;
        for px in self.img.chunks_exact(ch) {
            for (o, v) in self.out.iter_mut().zip(px) {
                *o += v;
            }
            count += 1;
        }
        let inv = count.max(1) as f32;
        for o in self.out.iter_mut() {
            *o /= inv;
        }
    }
}

struct SeImage<'a> {
    img: &'a mut [f32],
    ch: usize,
    se: &'a SqueezeExcite,
    relu: bool,
}

impl WithSimd for SeImage<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { img, ch, se, relu } = self;
        let mut mean = vec![0.0f32; ch];
        MeanPixels {
            out: &mut mean,
            img,
        }
        .with_simd(simd);
        let hidden: Vec<f32> = (0..se.hidden)
            .map(|j| {
                let w = &se.fc1_w[j * ch..(j + 1) * ch];
                let z = w.iter().zip(&mean).map(|(a, b)| a * b).sum::<f32>() + se.fc1_b[j];
                z.max(0.0)
            })
            .collect();
        let gate: Vec<f32> = (0..ch)
            .map(|c| {
                let w = &se.fc2_w[c * se.hidden..(c + 1) * se.hidden];
                let z = w.iter().zip(&hidden).map(|(a, b)| a * b).sum::<f32>() + se.fc2_b[c];
                1.0 / (1.0 + (-z).exp())
            })
            .collect();
        for px in img.chunks_exact_mut(ch) {
            for (v, g) in px.iter_mut().zip(&gate) {
                let z = *v * g;
                *v = if relu { z.max(0.0) } else { z };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn input_layout_conversion_moves_every_value_once() {
        for c in [1, 2, 3, 5] {
            for hw in [1, 7, 4095, 4096, 4097, 9000] {
                let n = 2;
                let src: Vec<f32> = (0..n * c * hw).map(|i| i as f32).collect();
                let mut dst = vec![f32::NAN; n * c * hw];
                nchw_to_nhwc(&src, &mut dst, c, hw);
                for img in 0..n {
                    for p in 0..hw {
                        for ch in 0..c {
                            assert_eq!(
                                dst[(img * hw + p) * c + ch],
                                src[(img * c + ch) * hw + p],
                                "c {c} hw {hw} image {img} pixel {p} channel {ch}"
                            );
                        }
                    }
                }
            }
        }
    }
}
