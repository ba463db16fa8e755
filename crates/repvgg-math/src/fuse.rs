//! Structural re-parameterization: every branch of a RepVGG block folded into one conv.
//!
//! All arithmetic runs in `f64` whatever the storage type `T`, and each fused value is rounded
//! to `T` exactly once, so fused `f32` weights are the correctly rounded `f64` fusion.

use ndarray::{Array1, Array4, ArrayView1, ArrayView4, s};

use crate::error::{MathError, Result};
use crate::ops;
use crate::types::{BatchNorm, ConvSpec, Element, FusedConv};

fn to_f64<T: Element, D: ndarray::Dimension>(
    a: ndarray::ArrayView<'_, T, D>,
) -> ndarray::Array<f64, D> {
    a.mapv(Element::to_f64_exact)
}

fn round<T: Element, D: ndarray::Dimension>(a: &ndarray::Array<f64, D>) -> ndarray::Array<T, D> {
    a.mapv(T::from_f64_round)
}

/// conv + BN in f64: `W' = W * s`, `b' = (b - mean) * s + beta` with `s = gamma / sqrt(var + eps)`.
fn conv_bn_f64<T: Element>(
    weight: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    bn: &BatchNorm<T>,
) -> Result<(Array4<f64>, Array1<f64>)> {
    let out = weight.shape()[0];
    bn.check_channels(out)?;
    if let Some(b) = &bias
        && b.len() != out
    {
        return Err(MathError::ShapeMismatch {
            what: "convolution bias".into(),
            expected: vec![out],
            found: vec![b.len()],
        });
    }
    let (scale, _) = bn.scale_shift()?;
    let mut w = to_f64(weight);
    let mut b = Array1::<f64>::zeros(out);
    for o in 0..out {
        w.slice_mut(s![o, .., .., ..])
            .mapv_inplace(|v| v * scale[o]);
        let conv_b = bias.as_ref().map_or(0.0, |b| b[o].to_f64_exact());
        b[o] = (conv_b - bn.running_mean[o].to_f64_exact()) * scale[o] + bn.beta[o].to_f64_exact();
    }
    Ok((w, b))
}

/// Folds a batch norm into the convolution before it: returns `(W', b')`.
pub fn fuse_conv_bn<T: Element>(
    weight: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    bn: &BatchNorm<T>,
) -> Result<(Array4<T>, Array1<T>)> {
    let (w, b) = conv_bn_f64(weight, bias, bn)?;
    Ok((round(&w), round(&b)))
}

fn pad_kernel_f64(weight: &Array4<f64>, to: usize) -> Result<Array4<f64>> {
    let (o, i, kh, kw) = weight.dim();
    if kh != kw || kh > to || kh % 2 != to % 2 {
        return Err(MathError::ShapeMismatch {
            what: format!("kernel to zero-pad to {to}x{to} (square, odd size difference)"),
            expected: vec![o, i, to, to],
            found: weight.shape().to_vec(),
        });
    }
    let off = (to - kh) / 2;
    let mut out = Array4::<f64>::zeros((o, i, to, to));
    out.slice_mut(s![.., .., off..off + kh, off..off + kw])
        .assign(weight);
    Ok(out)
}

/// Zero-pads a square kernel to `to` x `to`, centred (a 1x1 kernel lands at the centre of 3x3).
pub fn pad_kernel<T: Element>(weight: ArrayView4<'_, T>, to: usize) -> Result<Array4<T>> {
    Ok(round(&pad_kernel_f64(&to_f64(weight), to)?))
}

/// The 1x1 → 3x3 case of [`pad_kernel`].
pub fn pad_1x1_to_3x3<T: Element>(weight: ArrayView4<'_, T>) -> Result<Array4<T>> {
    if weight.shape()[2..] != [1, 1] {
        return Err(MathError::ShapeMismatch {
            what: "1x1 kernel".into(),
            expected: vec![weight.shape()[0], weight.shape()[1], 1, 1],
            found: weight.shape().to_vec(),
        });
    }
    pad_kernel(weight, 3)
}

/// The identity as a `k` x `k` grouped kernel: output channel `i` has a 1 at the centre of input
/// channel `i % (channels / groups)` of its group; every other tap is 0.
pub fn identity_kernel<T: Element>(
    channels: usize,
    groups: usize,
    kernel_size: usize,
) -> Result<Array4<T>> {
    // Only validates channels/groups and gives the weight shape (padding plays no part).
    let spec = ConvSpec::new(channels, channels, kernel_size, 1, 0, groups)?;
    if kernel_size.is_multiple_of(2) {
        return Err(MathError::InvalidSpec {
            reason: format!("identity kernel needs an odd kernel size, found {kernel_size}"),
        });
    }
    let per_group = channels / groups;
    let mut w = Array4::<T>::zeros(spec.weight_shape());
    let c = kernel_size / 2;
    for i in 0..channels {
        w[[i, i % per_group, c, c]] = T::one();
    }
    Ok(w)
}

/// A convolution followed by batch norm (one training-time branch).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvBn<T> {
    /// `[out, in / groups, k, k]`.
    pub weight: Array4<T>,
    /// Optional conv bias (`[out]`); RepVGG's convs have none, but some exports carry one.
    pub bias: Option<Array1<T>>,
    /// The batch norm after the conv.
    pub bn: BatchNorm<T>,
}

impl<T: Element> ConvBn<T> {
    /// A branch from its conv weight, optional conv bias and batch norm (checked when used).
    pub fn new(weight: Array4<T>, bias: Option<Array1<T>>, bn: BatchNorm<T>) -> Self {
        Self { weight, bias, bn }
    }

    /// conv then BN, in `T`, with the given spec (no fusion: the training-time arithmetic).
    pub fn forward(&self, x: ArrayView4<'_, T>, spec: &ConvSpec) -> Result<Array4<T>> {
        let y = ops::conv2d(
            x,
            self.weight.view(),
            self.bias.as_ref().map(|b| b.view()),
            spec,
        )?;
        ops::batch_norm(y.view(), &self.bn)
    }

    /// This branch folded into one conv with bias.
    pub fn fuse(&self) -> Result<(Array4<T>, Array1<T>)> {
        fuse_conv_bn(
            self.weight.view(),
            self.bias.as_ref().map(|b| b.view()),
            &self.bn,
        )
    }
}

/// The three branches of one training-time RepVGG block (before the ReLU).
#[derive(Debug, Clone, PartialEq)]
pub struct RepVggBranches<T> {
    /// Spec of the dense branch (kernel `k`, padding `p`); the 1x1 branch uses the same
    /// channels, stride and groups with kernel 1 and padding `p - k / 2`.
    pub spec: ConvSpec,
    /// The dense (`k x k`) conv with its BN.
    pub dense: ConvBn<T>,
    /// The 1x1 conv with its BN, when the block has one.
    pub one_by_one: Option<ConvBn<T>>,
    /// The BN-only identity branch; valid only when in = out channels and stride 1.
    pub identity: Option<BatchNorm<T>>,
}

impl<T: Element> RepVggBranches<T> {
    /// Spec of the 1x1 branch that lines up with the dense branch's output grid.
    pub fn one_by_one_spec(&self) -> Result<ConvSpec> {
        let half = self.spec.kernel_size / 2;
        if self.spec.kernel_size.is_multiple_of(2) || self.spec.padding < half {
            return Err(MathError::InvalidSpec {
                reason: format!(
                    "a 1x1 branch lines up with a {k}x{k} conv only for odd k and padding >= {half}, \
                     found padding {p}",
                    k = self.spec.kernel_size,
                    p = self.spec.padding
                ),
            });
        }
        ConvSpec::new(
            self.spec.in_channels,
            self.spec.out_channels,
            1,
            self.spec.stride,
            self.spec.padding - half,
            self.spec.groups,
        )
    }

    /// Checks every shape: weights against the specs, BN lengths, the identity's conditions.
    pub fn validate(&self) -> Result<()> {
        self.spec.validate()?;
        self.spec.check_weight(&self.dense.weight.view())?;
        self.dense.bn.check_channels(self.spec.out_channels)?;
        if let Some(b) = &self.one_by_one {
            self.one_by_one_spec()?.check_weight(&b.weight.view())?;
            b.bn.check_channels(self.spec.out_channels)?;
        }
        if let Some(bn) = &self.identity {
            let s = &self.spec;
            if s.in_channels != s.out_channels || s.stride != 1 {
                return Err(MathError::InvalidIdentity {
                    in_channels: s.in_channels,
                    out_channels: s.out_channels,
                    stride: s.stride,
                });
            }
            bn.check_channels(s.out_channels)?;
        }
        Ok(())
    }

    /// The training-time form: `bn(conv_k(x)) + bn(conv_1(x)) + bn(x)`, without activation.
    pub fn forward(&self, x: ArrayView4<'_, T>) -> Result<Array4<T>> {
        self.validate()?;
        let mut y = self.dense.forward(x, &self.spec)?;
        if let Some(b) = &self.one_by_one {
            y = ops::add(y.view(), b.forward(x, &self.one_by_one_spec()?)?.view())?;
        }
        if let Some(bn) = &self.identity {
            y = ops::add(y.view(), ops::batch_norm(x, bn)?.view())?;
        }
        Ok(y)
    }

    /// Folds every branch into one conv of the dense branch's spec, in `f64`, rounding once.
    pub fn fuse_f64(&self) -> Result<FusedConv<f64>> {
        self.validate()?;
        let k = self.spec.kernel_size;
        let (mut w, mut b) = conv_bn_f64(
            self.dense.weight.view(),
            self.dense.bias.as_ref().map(|b| b.view()),
            &self.dense.bn,
        )?;
        if let Some(one) = &self.one_by_one {
            let (w1, b1) = conv_bn_f64(
                one.weight.view(),
                one.bias.as_ref().map(|b| b.view()),
                &one.bn,
            )?;
            w += &pad_kernel_f64(&w1, k)?;
            b += &b1;
        }
        if let Some(bn) = &self.identity {
            let id = identity_kernel::<T>(self.spec.out_channels, self.spec.groups, k)?;
            let (wi, bi) = conv_bn_f64(id.view(), None, bn)?;
            w += &wi;
            b += &bi;
        }
        Ok(FusedConv {
            weight: w,
            bias: b,
            spec: self.spec,
        })
    }

    /// Folds every branch into one conv with bias (see [`RepVggBranches::fuse_f64`]).
    pub fn fuse(&self) -> Result<FusedConv<T>> {
        Ok(self.fuse_f64()?.cast())
    }
}
