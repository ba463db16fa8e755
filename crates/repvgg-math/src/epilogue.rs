//! What a layer does to its result before storing it: the vocabulary both engines share.
//!
//! A convolution's [`Epilogue`] is, in this order,
//! `y = conv(x) * scale + bias; y += residual; y = activation(y)`. The engines fuse it into the
//! store of their kernels. The residual is a tensor of the engine that runs the layer, so the
//! type is generic over the engine's tensor handle `R` (`repvgg_cpu::TensorId`,
//! `repvgg_gpu::TensorId`); each engine names its own alias `Epilogue`.

use crate::types::Element;

/// The function applied last to each value of a layer's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Activation {
    /// The identity.
    #[default]
    None,
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + exp(-x))` (squeeze-and-excitation gates).
    Sigmoid,
}

impl Activation {
    /// `Relu` when `relu` is true, else `None`.
    pub fn relu_if(relu: bool) -> Self {
        if relu { Self::Relu } else { Self::None }
    }

    /// Applies the activation to one value.
    pub fn apply<T: Element>(self, v: T) -> T {
        match self {
            Self::None => v,
            Self::Relu => v.max(T::zero()),
            Self::Sigmoid => T::one() / (T::one() + (-v).exp()),
        }
    }
}

/// What a convolution does to its result before storing it:
/// `y = conv(x) * scale + bias; y += residual; y = activation(y)`.
///
/// `R` is the tensor handle of the engine that runs the conv. Build one with the constructors:
///
/// ```
/// use repvgg_math::{Activation, Epilogue};
///
/// // A fused RepVGG block: bias, then ReLU.
/// let ep: Epilogue<()> = Epilogue::bias(vec![0.0; 8]).relu();
/// assert_eq!(ep.activation, Activation::Relu);
/// assert!(ep.scale.is_none() && ep.residual.is_none());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Epilogue<R> {
    /// Per-output-channel multiplier (a batch norm's `gamma / std`); `None` multiplies by 1.
    pub scale: Option<Vec<f32>>,
    /// Per-output-channel addend (a conv bias, or a batch norm's `beta - mean * scale`);
    /// `None` adds 0.
    pub bias: Option<Vec<f32>>,
    /// A tensor of the output's shape, added after the bias (a branch sum).
    pub residual: Option<R>,
    /// Applied last.
    pub activation: Activation,
}

impl<R> Default for Epilogue<R> {
    fn default() -> Self {
        Self {
            scale: None,
            bias: None,
            residual: None,
            activation: Activation::None,
        }
    }
}

impl<R> Epilogue<R> {
    /// Stores the conv's result as it is.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a per-channel bias.
    pub fn bias(bias: Vec<f32>) -> Self {
        Self {
            bias: Some(bias),
            ..Self::default()
        }
    }

    /// A per-channel affine `y * scale + bias` (a batch norm folded into the conv).
    pub fn affine(scale: Vec<f32>, bias: Vec<f32>) -> Self {
        Self {
            scale: Some(scale),
            bias: Some(bias),
            ..Self::default()
        }
    }

    /// Adds `residual` (a tensor of the output's shape) after the affine.
    pub fn with_residual(mut self, residual: R) -> Self {
        self.residual = Some(residual);
        self
    }

    /// Sets the residual, or clears it with `None`.
    pub fn with_residual_opt(mut self, residual: Option<R>) -> Self {
        self.residual = residual;
        self
    }

    /// Ends with a ReLU.
    pub fn relu(self) -> Self {
        self.with_activation(Activation::Relu)
    }

    /// Ends with a ReLU when `relu` is true, with nothing otherwise.
    pub fn with_relu(self, relu: bool) -> Self {
        self.with_activation(Activation::relu_if(relu))
    }

    /// Ends with `activation`.
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// The same epilogue with its residual handle mapped (or dropped).
    pub fn map_residual<S>(self, f: impl FnOnce(R) -> S) -> Epilogue<S> {
        Epilogue {
            scale: self.scale,
            bias: self.bias,
            residual: self.residual.map(f),
            activation: self.activation,
        }
    }

    /// `activation(v * scale[c] + bias[c] + residual)` for one value of output channel `c`
    /// (the residual's value given as `residual`, 0 without one). The reference every
    /// engine's fused store is tested against.
    ///
    /// # Panics
    /// When `c` is out of range of the scale or bias.
    pub fn apply(&self, c: usize, v: f32, residual: f32) -> f32 {
        let s = self.scale.as_ref().map_or(1.0, |s| s[c]);
        let b = self.bias.as_ref().map_or(0.0, |b| b[c]);
        self.activation.apply(v * s + b + residual)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_compose() {
        let e: Epilogue<u32> = Epilogue::affine(vec![2.0], vec![1.0])
            .with_residual(7)
            .relu();
        assert_eq!(e.residual, Some(7));
        assert_eq!(e.apply(0, -3.0, 1.0), 0.0);
        assert_eq!(e.apply(0, 3.0, 1.0), 8.0);
        let m = e.map_residual(|r| r as usize * 2);
        assert_eq!(m.residual, Some(14));
        assert_eq!(Epilogue::<()>::new(), Epilogue::default());
        assert_eq!(
            Epilogue::<()>::bias(vec![0.5]).with_relu(false).activation,
            Activation::None
        );
        assert!((Activation::Sigmoid.apply(0.0f32) - 0.5).abs() < 1e-7);
        assert_eq!(Activation::relu_if(true), Activation::Relu);
    }
}
