use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::AddAssign;

use ndarray::{Array1, Array4, ArrayView4, LinalgScalar};
use num_traits::{Float, FromPrimitive, ToPrimitive};

use crate::error::{MathError, Result};

/// The floating-point types the operators and the fusion work on (`f32` and `f64`).
pub trait Element:
    Float
    + FromPrimitive
    + ToPrimitive
    + LinalgScalar
    + Send
    + Sync
    + Debug
    + Display
    + Sum
    + AddAssign
    + Default
    + 'static
{
    /// Rounds an `f64` to this type (round-to-nearest for `f32`).
    fn from_f64_round(v: f64) -> Self;
    /// Widens to `f64` (exact for `f32` and `f64`).
    fn to_f64_exact(self) -> f64;
}

impl Element for f32 {
    fn from_f64_round(v: f64) -> Self {
        v as f32
    }
    fn to_f64_exact(self) -> f64 {
        f64::from(self)
    }
}

impl Element for f64 {
    fn from_f64_round(v: f64) -> Self {
        v
    }
    fn to_f64_exact(self) -> f64 {
        self
    }
}

/// A 2-D convolution: channels, square kernel, stride, symmetric zero padding and groups.
///
/// The weight of such a convolution has shape `[out_channels, in_channels / groups, k, k]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Side `k` of the square kernel.
    pub kernel_size: usize,
    /// Step between output pixels, in input pixels.
    pub stride: usize,
    /// Zeros added on each side of the input.
    pub padding: usize,
    /// Channel groups: each output channel sees `in_channels / groups` inputs.
    pub groups: usize,
}

impl ConvSpec {
    /// Builds and validates a spec: sizes non-zero, channels divisible by `groups`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> Result<Self> {
        let spec = Self {
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            groups,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// The RepVGG 3x3 spec: kernel 3, padding 1.
    pub fn conv3x3(
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        groups: usize,
    ) -> Result<Self> {
        Self::new(in_channels, out_channels, 3, stride, 1, groups)
    }

    /// Checks the invariants [`ConvSpec::new`] establishes (fields are public).
    pub fn validate(&self) -> Result<()> {
        let zero = [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("kernel_size", self.kernel_size),
            ("stride", self.stride),
            ("groups", self.groups),
        ]
        .into_iter()
        .find(|(_, v)| *v == 0);
        if let Some((name, _)) = zero {
            return Err(MathError::InvalidSpec {
                reason: format!("{name} must be at least 1"),
            });
        }
        if !self.in_channels.is_multiple_of(self.groups) {
            return Err(MathError::GroupsMismatch {
                what: "in_channels",
                channels: self.in_channels,
                groups: self.groups,
            });
        }
        if !self.out_channels.is_multiple_of(self.groups) {
            return Err(MathError::GroupsMismatch {
                what: "out_channels",
                channels: self.out_channels,
                groups: self.groups,
            });
        }
        Ok(())
    }

    /// Shape of this convolution's weight: `[out, in / groups, k, k]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels / self.groups,
            self.kernel_size,
            self.kernel_size,
        ]
    }

    /// Output height and width for an input of `height` x `width`.
    pub fn output_size(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        let (k, p, s) = (self.kernel_size, self.padding, self.stride);
        if height + 2 * p < k || width + 2 * p < k {
            return Err(MathError::InputTooSmall {
                height,
                width,
                kernel: k,
                padding: p,
            });
        }
        Ok(((height + 2 * p - k) / s + 1, (width + 2 * p - k) / s + 1))
    }

    /// Multiply-accumulates of one image through this convolution.
    pub fn macs(&self, height: usize, width: usize) -> Result<u64> {
        let (oh, ow) = self.output_size(height, width)?;
        let per_output =
            (self.in_channels / self.groups * self.kernel_size * self.kernel_size) as u64;
        Ok(per_output * self.out_channels as u64 * (oh * ow) as u64)
    }

    /// Checks that `weight` has [`ConvSpec::weight_shape`].
    pub fn check_weight<T>(&self, weight: &ArrayView4<'_, T>) -> Result<()> {
        let expected = self.weight_shape();
        if weight.shape() != expected {
            return Err(MathError::ShapeMismatch {
                what: "convolution weight".into(),
                expected: expected.to_vec(),
                found: weight.shape().to_vec(),
            });
        }
        Ok(())
    }
}

/// Batch-norm statistics in inference mode: `y = (x - mean) / sqrt(var + eps) * gamma + beta`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm<T> {
    /// Per-channel scale (`weight` in PyTorch).
    pub gamma: Array1<T>,
    /// Per-channel shift (`bias` in PyTorch).
    pub beta: Array1<T>,
    /// Per-channel mean seen in training.
    pub running_mean: Array1<T>,
    /// Per-channel variance seen in training.
    pub running_var: Array1<T>,
    /// Added to the variance before the square root.
    pub eps: f64,
}

impl<T: Element> BatchNorm<T> {
    /// Builds batch-norm statistics, checking that all four vectors have one length.
    pub fn new(
        gamma: Array1<T>,
        beta: Array1<T>,
        running_mean: Array1<T>,
        running_var: Array1<T>,
        eps: f64,
    ) -> Result<Self> {
        let bn = Self {
            gamma,
            beta,
            running_mean,
            running_var,
            eps,
        };
        bn.check_channels(bn.gamma.len())?;
        Ok(bn)
    }

    /// A batch norm that maps x to x (up to eps): gamma 1, beta 0, mean 0, var 1 - eps.
    pub fn identity(channels: usize) -> Self {
        let eps = 1e-5;
        Self {
            gamma: Array1::from_elem(channels, T::one()),
            beta: Array1::from_elem(channels, T::zero()),
            running_mean: Array1::from_elem(channels, T::zero()),
            running_var: Array1::from_elem(channels, T::from_f64_round(1.0 - eps)),
            eps,
        }
    }

    /// Number of channels (length of `gamma`).
    pub fn channels(&self) -> usize {
        self.gamma.len()
    }

    /// Checks every statistic has `channels` entries.
    pub fn check_channels(&self, channels: usize) -> Result<()> {
        for (what, len) in [
            ("gamma", self.gamma.len()),
            ("beta", self.beta.len()),
            ("running_mean", self.running_mean.len()),
            ("running_var", self.running_var.len()),
        ] {
            if len != channels {
                return Err(MathError::BatchNormLength {
                    what,
                    expected: channels,
                    found: len,
                });
            }
        }
        Ok(())
    }

    /// Per-channel `(scale, shift)` in `f64`: `scale = gamma / sqrt(var + eps)`,
    /// `shift = beta - mean * scale`, so that `bn(x) = x * scale + shift`.
    pub fn scale_shift(&self) -> Result<(Vec<f64>, Vec<f64>)> {
        self.check_channels(self.gamma.len())?;
        let mut scale = Vec::with_capacity(self.channels());
        let mut shift = Vec::with_capacity(self.channels());
        for c in 0..self.channels() {
            let denom = self.running_var[c].to_f64_exact() + self.eps;
            if !denom.is_finite() || denom <= 0.0 {
                return Err(MathError::BatchNormVariance {
                    channel: c,
                    value: denom,
                });
            }
            let s = self.gamma[c].to_f64_exact() / denom.sqrt();
            scale.push(s);
            shift.push(self.beta[c].to_f64_exact() - self.running_mean[c].to_f64_exact() * s);
        }
        Ok((scale, shift))
    }
}

/// One convolution with bias: what a RepVGG block becomes after fusion.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedConv<T> {
    /// `[out, in / groups, k, k]`.
    pub weight: Array4<T>,
    /// `[out]`.
    pub bias: Array1<T>,
    /// Channels, kernel, stride, padding and groups.
    pub spec: ConvSpec,
}

impl<T: Element> FusedConv<T> {
    /// Runs the convolution (fast path) on an NCHW input, without activation.
    pub fn forward(&self, x: ArrayView4<'_, T>) -> Result<Array4<T>> {
        crate::ops::conv2d(x, self.weight.view(), Some(self.bias.view()), &self.spec)
    }

    /// Converts the storage type (e.g. `f64` fusion to `f32` weights), rounding to nearest.
    pub fn cast<U: Element>(&self) -> FusedConv<U> {
        FusedConv {
            weight: self.weight.mapv(|v| U::from_f64_round(v.to_f64_exact())),
            bias: self.bias.mapv(|v| U::from_f64_round(v.to_f64_exact())),
            spec: self.spec,
        }
    }
}
