//! Shared helpers for the property tests: a seeded generator, random BN statistics far from
//! 0 and 1, a test-local batch norm, and error bounds.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use ndarray::{Array1, Array4, ArrayView4, Zip};
use proptest::test_runner::TestCaseError;
use repvgg_math::{BatchNorm, ConvSpec, Element, ops};

/// SplitMix64: tiny, seeded, good enough to fill tensors from a proptest-chosen seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Magnitude in [lo, hi] with a random sign.
    pub fn signed(&mut self, lo: f64, hi: f64) -> f64 {
        let m = self.uniform(lo, hi);
        if self.next_u64() & 1 == 0 { m } else { -m }
    }
    pub fn array4(&mut self, shape: [usize; 4], scale: f64) -> Array4<f64> {
        Array4::from_shape_fn(shape, |_| self.uniform(-scale, scale))
    }
    pub fn array1(&mut self, len: usize, scale: f64) -> Array1<f64> {
        Array1::from_shape_fn(len, |_| self.uniform(-scale, scale))
    }
    /// BN statistics far from the identity: |gamma| in [0.3, 2.5], |mean| in [0.2, 1.5],
    /// var in [0.05, 0.5] or [2, 6], eps log-uniform in [1e-6, 1e-1].
    pub fn batch_norm(&mut self, c: usize) -> BatchNorm<f64> {
        let gamma = Array1::from_shape_fn(c, |_| self.signed(0.3, 2.5));
        let beta = Array1::from_shape_fn(c, |_| self.signed(0.0, 1.5));
        let mean = Array1::from_shape_fn(c, |_| self.signed(0.2, 1.5));
        let var = Array1::from_shape_fn(c, |_| {
            if self.next_u64() & 1 == 0 {
                self.uniform(0.05, 0.5)
            } else {
                self.uniform(2.0, 6.0)
            }
        });
        let eps = 10f64.powf(self.uniform(-6.0, -1.0));
        BatchNorm::new(gamma, beta, mean, var, eps).expect("lengths agree")
    }
}

/// Rounds f64 data to `T`.
pub fn to_t<T: Element, D: ndarray::Dimension>(a: &ndarray::Array<f64, D>) -> ndarray::Array<T, D> {
    a.mapv(T::from_f64_round)
}

/// The value `T` actually stores, back in f64 (so the f64 reference sees the same inputs).
pub fn stored<T: Element, D: ndarray::Dimension>(
    a: &ndarray::Array<f64, D>,
) -> ndarray::Array<f64, D> {
    a.mapv(|v| T::from_f64_round(v).to_f64_exact())
}

pub fn bn_to_t<T: Element>(bn: &BatchNorm<f64>) -> BatchNorm<T> {
    BatchNorm {
        gamma: to_t(&bn.gamma),
        beta: to_t(&bn.beta),
        running_mean: to_t(&bn.running_mean),
        running_var: to_t(&bn.running_var),
        eps: bn.eps,
    }
}

pub fn bn_stored<T: Element>(bn: &BatchNorm<f64>) -> BatchNorm<f64> {
    BatchNorm {
        gamma: stored::<T, _>(&bn.gamma),
        beta: stored::<T, _>(&bn.beta),
        running_mean: stored::<T, _>(&bn.running_mean),
        running_var: stored::<T, _>(&bn.running_var),
        eps: bn.eps,
    }
}

/// Test-local batch norm in f64, written from the formula (independent of the crate's).
pub fn bn_f64(x: &Array4<f64>, bn: &BatchNorm<f64>) -> Array4<f64> {
    let mut y = x.clone();
    for ((_, c, _, _), v) in y.indexed_iter_mut() {
        *v = (*v - bn.running_mean[c]) / (bn.running_var[c] + bn.eps).sqrt() * bn.gamma[c]
            + bn.beta[c];
    }
    y
}

/// |BN| magnitude: Σ of the absolute terms of bn(x) given |x| magnitudes.
pub fn bn_mag(xmag: &Array4<f64>, bn: &BatchNorm<f64>) -> Array4<f64> {
    let mut y = xmag.clone();
    for ((_, c, _, _), v) in y.indexed_iter_mut() {
        let s = (bn.gamma[c] / (bn.running_var[c] + bn.eps).sqrt()).abs();
        *v = (*v + bn.running_mean[c].abs()) * s + bn.beta[c].abs();
    }
    y
}

/// Σ|w·x| per output: the oracle conv of |x| and |w| (plus |bias|).
pub fn conv_mag(
    x: &Array4<f64>,
    w: &Array4<f64>,
    bias: Option<&Array1<f64>>,
    spec: &ConvSpec,
) -> Array4<f64> {
    let b = bias.map(|b| b.mapv(f64::abs));
    ops::conv2d_reference(
        x.mapv(f64::abs).view(),
        w.mapv(f64::abs).view(),
        b.as_ref().map(|b| b.view()),
        spec,
    )
    .expect("valid conv")
}

/// Unit roundoff of `T`.
pub fn unit_roundoff<T: Element>() -> f64 {
    T::epsilon().to_f64_exact() / 2.0
}

/// Asserts `|got - want| <= bound` element-wise where `bound = c · mag`.
///
/// For f64, `c = 1e-10` (the relative bound, relative to the magnitude Σ|terms|).
/// For f32, `c = 2 (terms + 8) u` with `u = 2^-24`: the classical forward error bound of an
/// `n`-term dot product is `γ_n Σ|x_i y_i|` with `γ_n ≈ n u`; `terms` counts the products summed
/// per output, `+ 8` covers rounding the fused weights, the bias, the BN affine and the final
/// sum of branches, and the factor 2 covers comparing two independently rounded paths.
pub fn assert_close<T: Element>(
    what: &str,
    got: ArrayView4<'_, T>,
    want: &Array4<f64>,
    mag: &Array4<f64>,
    terms: usize,
) -> Result<(), TestCaseError> {
    if got.shape() != want.shape() {
        return Err(TestCaseError::fail(format!(
            "{what}: shape {:?} != {:?}",
            got.shape(),
            want.shape()
        )));
    }
    let c = if T::epsilon().to_f64_exact() < 1e-10 {
        1e-10
    } else {
        2.0 * (terms as f64 + 8.0) * unit_roundoff::<T>()
    };
    let mut worst: Option<(Vec<usize>, f64, f64, f64)> = None;
    Zip::indexed(got)
        .and(want)
        .and(mag)
        .for_each(|idx, &g, &w, &m| {
            let g = g.to_f64_exact();
            // NaN or infinite on either side fails (shared rule: repvgg_math::compare).
            let err = repvgg_math::compare::finite_abs_diff(g, w).unwrap_or(f64::NAN);
            let bound = c * m.max(f64::MIN_POSITIVE);
            if (err.is_nan() || err > bound) && worst.is_none() {
                worst = Some((vec![idx.0, idx.1, idx.2, idx.3], g, w, bound));
            }
        });
    match worst {
        None => Ok(()),
        Some((idx, g, w, bound)) => Err(TestCaseError::fail(format!(
            "{what}: first mismatch at {idx:?}: got {g}, want {w}, |diff| {} > bound {bound}",
            (g - w).abs()
        ))),
    }
}

/// Asserts two arrays are bit-for-bit equal (for transformations that add only exact zeros).
pub fn assert_exact<T: Element>(
    what: &str,
    got: ArrayView4<'_, T>,
    want: ArrayView4<'_, T>,
) -> Result<(), TestCaseError> {
    if got.shape() != want.shape() {
        return Err(TestCaseError::fail(format!(
            "{what}: shape {:?} != {:?}",
            got.shape(),
            want.shape()
        )));
    }
    for ((idx, &g), &w) in got.indexed_iter().zip(want.iter()) {
        if g != w || !g.to_f64_exact().is_finite() {
            return Err(TestCaseError::fail(format!(
                "{what}: at {idx:?} got {g}, want {w} (both must be finite and equal)"
            )));
        }
    }
    Ok(())
}

/// All divisors of `n`.
pub fn divisors(n: usize) -> Vec<usize> {
    (1..=n).filter(|d| n.is_multiple_of(*d)).collect()
}
