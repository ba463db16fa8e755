//! Building a CPU network: tensors, layers with their weights packed, the head and outputs, and
//! every check that needs no input.

use std::sync::Mutex;

use ndarray::{ArrayView2, ArrayView4};
use repvgg_math::ConvSpec;

use crate::aligned::AlignedVec;
use crate::conv::{ConvAlgo, PreparedConv};
use crate::error::{CpuError, Result};
use crate::network::Network;
use crate::plan::assign_slots;

/// A tensor of a network under construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TensorId(pub(crate) usize);

/// What a convolution does to its result before storing it, in this order:
/// `y = conv(x) * scale + bias; y += residual; y = activation(y)` (see
/// [`repvgg_math::Epilogue`]). The activation of a conv is [`repvgg_math::Activation::None`]
/// or [`repvgg_math::Activation::Relu`]. The CPU engine adds a residual in place: the conv
/// accumulates into the residual's buffer (see [`NetworkBuilder::conv`]).
pub type Epilogue = repvgg_math::Epilogue<TensorId>;

/// Squeeze-excite weights: `x * sigmoid(fc2(relu(fc1(mean(x)))))`.
#[derive(Debug, Clone)]
pub(crate) struct SqueezeExcite {
    pub hidden: usize,
    /// `[hidden, C]`.
    pub fc1_w: Vec<f32>,
    pub fc1_b: Vec<f32>,
    /// `[C, hidden]`.
    pub fc2_w: Vec<f32>,
    pub fc2_b: Vec<f32>,
}

/// One layer of a built network, on tensor indices.
#[derive(Debug, Clone)]
pub(crate) enum Op {
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
    /// The tensors the op reads.
    pub(crate) fn reads(&self) -> Vec<usize> {
        match self {
            Op::Conv { x, y, conv } if conv.accumulates() => vec![*x, *y],
            Op::Conv { x, .. } => vec![*x],
            Op::AffineAdd { x, y, .. } => vec![*x, *y],
            Op::Se { t, .. } | Op::Relu { t } => vec![*t],
        }
    }
    /// The tensor the op creates (in-place ops create none).
    pub(crate) fn defines(&self) -> Option<usize> {
        match self {
            Op::Conv { y, conv, .. } if !conv.accumulates() => Some(*y),
            _ => None,
        }
    }
}

/// The classifier: global average pool then a linear layer.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub input: usize,
    pub classes: usize,
    /// `[C, classes]` (the transposed PyTorch weight), packed in GEMM panels.
    pub wt: AlignedVec,
    pub bias: Vec<f32>,
    /// Ones: the GEMM epilogue's scale, so that the bias is added as the logits are stored.
    pub unit_scale: Vec<f32>,
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
    /// An empty network with these options.
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
        let (slot_of, slots) = assign_slots(&self.channels, &self.ops, &self.outputs, head.input)?;
        let pool = thread_pool(self.opts.threads)?;
        Ok(Network {
            channels: self.channels,
            ops: self.ops,
            head,
            outputs: self.outputs,
            slot_of,
            slots,
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

/// The engine's own pool of `threads` workers (at least one), or `None` for rayon's global pool.
pub(crate) fn thread_pool(threads: Option<usize>) -> Result<Option<rayon::ThreadPool>> {
    threads
        .map(|n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build()
                .map_err(|e| CpuError::ThreadPool(e.to_string()))
        })
        .transpose()
}
