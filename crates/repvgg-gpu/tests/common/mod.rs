//! Helpers shared by the GPU test binaries: a seeded generator and an accuracy check.
#![allow(dead_code)]

use ndarray::{Array, Array1, Array2, Array4, ArrayView, Dimension};

/// SplitMix64: small, seeded, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }

    /// Uniform in [lo, hi).
    pub fn vec_in(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| lo + (self.uniform() + 1.0) * 0.5 * (hi - lo))
            .collect()
    }

    pub fn array4(&mut self, shape: [usize; 4]) -> Array4<f32> {
        Array4::from_shape_fn(shape, |_| self.uniform())
    }

    pub fn array2(&mut self, shape: [usize; 2]) -> Array2<f32> {
        Array2::from_shape_fn(shape, |_| self.uniform())
    }

    pub fn array1(&mut self, n: usize) -> Array1<f32> {
        Array1::from_shape_fn(n, |_| self.uniform())
    }
}

/// Checks `got` against `want` elementwise: `|got - want| <= tol * (1 + |want|)`, no NaN.
/// Reports the first failing index and the largest error.
pub fn assert_close<D: Dimension>(
    what: &str,
    got: ArrayView<'_, f32, D>,
    want: ArrayView<'_, f32, D>,
    tol: f32,
) {
    let zero = Array::zeros(want.raw_dim());
    assert_close_sum(what, got, want, zero.view(), tol);
}

/// As [`assert_close`], allowing in addition the rounding of an f32 sum:
/// `2 * f32::EPSILON * magnitude`, where `magnitude` is the sum of the absolute terms.
pub fn assert_close_sum<D: Dimension>(
    what: &str,
    got: ArrayView<'_, f32, D>,
    want: ArrayView<'_, f32, D>,
    magnitude: ArrayView<'_, f32, D>,
    tol: f32,
) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    let mut worst = (0.0f32, None);
    let mut first_bad = None;
    for (((idx, g), w), m) in got.indexed_iter().zip(want.iter()).zip(magnitude.iter()) {
        // NaN (an element no kernel wrote: outputs are NaN-filled) or an infinity, on either
        // side, must fail: `max` would hide a NaN, and inf - inf is NaN, which `>` lets through.
        let err = match repvgg_math::compare::finite_abs_diff(*g, *w) {
            None => f32::INFINITY,
            Some(d) => (d as f32 - 2.0 * f32::EPSILON * m).max(0.0) / (1.0 + w.abs()),
        };
        let bad = err > tol;
        if bad && first_bad.is_none() {
            first_bad = Some((format!("{idx:?}"), *g, *w));
        }
        if err > worst.0 {
            worst = (err, Some(format!("{idx:?}")));
        }
    }
    if let Some((idx, g, w)) = first_bad {
        panic!(
            "{what}: first mismatch at {idx}: got {g}, want {w}; largest relative error {} at {:?} (tolerance {tol})",
            worst.0, worst.1
        );
    }
}

/// Converts for comparison.
pub fn to_f32<D: Dimension>(a: &Array<f64, D>) -> Array<f32, D> {
    a.mapv(|v| v as f32)
}

/// Squeeze-and-excitation composed from the builder's layers (as the model crate does):
/// `relu?(x * sigmoid(fc2(relu(fc1(gap(x))))))`.
#[allow(clippy::too_many_arguments)]
pub fn se(
    b: &mut repvgg_gpu::NetworkBuilder,
    x: repvgg_gpu::TensorId,
    w1: ndarray::ArrayView2<'_, f32>,
    b1: &[f32],
    w2: ndarray::ArrayView2<'_, f32>,
    b2: &[f32],
    relu: bool,
) -> repvgg_gpu::Result<repvgg_gpu::TensorId> {
    use repvgg_gpu::Activation;
    let pooled = b.global_avg_pool(x)?;
    let hidden = b.linear_act(pooled, w1, Some(b1), Activation::Relu)?;
    let s = b.linear_act(hidden, w2, Some(b2), Activation::Sigmoid)?;
    b.channel_scale(x, s, relu)
}

/// Proptest settings for the GPU tests: `default_cases` cases from a fixed `default_seed`.
/// `PROPTEST_CASES` raises (or lowers) the count and `PROPTEST_RNG_SEED` picks other shapes; the
/// defaults keep lavapipe runs short and let its shader cache serve repeated runs (every new
/// shape class compiles a pipeline variant, about a second on lavapipe).
pub fn proptest_config(default_cases: u32, default_seed: u64) -> proptest::test_runner::Config {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    proptest::test_runner::Config {
        cases: env("PROPTEST_CASES").map_or(default_cases, |c| c as u32),
        rng_seed: proptest::test_runner::RngSeed::Fixed(
            env("PROPTEST_RNG_SEED").unwrap_or(default_seed),
        ),
        ..proptest::test_runner::Config::default()
    }
}
