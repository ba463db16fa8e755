//! Honest comparisons: differences that a NaN or an infinity cannot slip through.
//!
//! `f32::max(m, NaN) == m`, so the usual `fold(0.0, f32::max)` drops a NaN, and a kernel that
//! wrote NaN would "match" its reference. Every measure here is NaN-aware: a NaN or infinite
//! value on either side (even at the same place on both), or a shape mismatch, makes the result
//! NaN, which fails every `<`, `<=`, `>`, `>=` and `==` a caller can write, and [`check_close`]
//! names the first such value. Every test of the workspace and the CLI's reported differences
//! (`repvgg demo`) go through these functions.

/// `|a - b|` when both values are finite, else `None`.
pub fn finite_abs_diff(a: impl Into<f64>, b: impl Into<f64>) -> Option<f64> {
    let (a, b) = (a.into(), b.into());
    (a.is_finite() && b.is_finite()).then(|| (a - b).abs())
}

/// The largest `|a - b|` over pairs of values; NaN if any value is NaN or infinite.
pub fn max_abs_diff_pairs<A, B>(pairs: impl IntoIterator<Item = (A, B)>) -> f64
where
    A: Into<f64>,
    B: Into<f64>,
{
    let mut m = 0.0f64;
    for (a, b) in pairs {
        match finite_abs_diff(a, b) {
            Some(d) if d > m => m = d,
            Some(_) => {}
            None => return f64::NAN,
        }
    }
    m
}

/// The largest `|a - b|` over two slices; NaN if their lengths differ or any value is NaN or
/// infinite.
pub fn max_abs_diff_slices<A, B>(a: &[A], b: &[B]) -> f64
where
    A: Copy + Into<f64>,
    B: Copy + Into<f64>,
{
    if a.len() != b.len() {
        return f64::NAN;
    }
    max_abs_diff_pairs(a.iter().copied().zip(b.iter().copied()))
}

/// The largest `|a - b|` over two arrays (any storage, element types that widen to `f64`); NaN
/// if their shapes differ or any value is NaN or infinite.
pub fn max_abs_diff<A, B, SA, SB, DA, DB>(
    a: &ndarray::ArrayBase<SA, DA>,
    b: &ndarray::ArrayBase<SB, DB>,
) -> f64
where
    A: Copy + Into<f64>,
    B: Copy + Into<f64>,
    SA: ndarray::Data<Elem = A>,
    SB: ndarray::Data<Elem = B>,
    DA: ndarray::Dimension,
    DB: ndarray::Dimension,
{
    if a.shape() != b.shape() {
        return f64::NAN;
    }
    max_abs_diff_pairs(a.iter().copied().zip(b.iter().copied()))
}

/// The larger of two differences, NaN if either is (unlike `f64::max`, which drops a NaN):
/// for combining measures over several tensors.
pub fn worst(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Whether a difference from this module is within `tol` (false for NaN).
pub fn within(diff: f64, tol: f64) -> bool {
    diff <= tol
}

/// `Ok(max |got - want|)` when both hold finite values of one shape and every difference is at
/// most `tol`; otherwise a message naming `what`, the first offending (flat) index and values.
pub fn check_close<A, B>(
    what: &str,
    got: impl IntoIterator<Item = A>,
    want: impl IntoIterator<Item = B>,
    tol: f64,
) -> Result<f64, String>
where
    A: Into<f64>,
    B: Into<f64>,
{
    let (mut got, mut want) = (got.into_iter(), want.into_iter());
    let mut worst = 0.0f64;
    let mut first_bad: Option<String> = None;
    let mut i = 0usize;
    loop {
        let (g, w) = match (got.next(), want.next()) {
            (Some(g), Some(w)) => (g.into(), w.into()),
            (None, None) => break,
            (g, _) => {
                return Err(format!(
                    "{what}: lengths differ ({} runs out first at index {i})",
                    if g.is_none() { "got" } else { "want" }
                ));
            }
        };
        match finite_abs_diff(g, w) {
            None => {
                return Err(format!(
                    "{what}: non-finite value at index {i}: got {g}, want {w}"
                ));
            }
            Some(d) => {
                if d > tol && first_bad.is_none() {
                    first_bad = Some(format!("index {i}: got {g}, want {w}"));
                }
                worst = worst.max(d);
            }
        }
        i += 1;
    }
    match first_bad {
        None => Ok(worst),
        Some(at) => Err(format!(
            "{what}: max |diff| {worst:e} > tolerance {tol:e}; first at {at}"
        )),
    }
}

/// Panics unless `got` and `want` hold finite values of one shape within `tol` of each other
/// (see [`check_close`]). Returns the largest difference.
#[track_caller]
pub fn assert_close<A, B, SA, SB, DA, DB>(
    what: &str,
    got: &ndarray::ArrayBase<SA, DA>,
    want: &ndarray::ArrayBase<SB, DB>,
    tol: f64,
) -> f64
where
    A: Copy + Into<f64>,
    B: Copy + Into<f64>,
    SA: ndarray::Data<Elem = A>,
    SB: ndarray::Data<Elem = B>,
    DA: ndarray::Dimension,
    DB: ndarray::Dimension,
{
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    match check_close(what, got.iter().copied(), want.iter().copied(), tol) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr1;

    #[test]
    fn a_nan_or_inf_anywhere_fails_every_measure() {
        let a = arr1(&[1.0f32, 2.0, 3.0]);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut b = a.clone();
            b[1] = bad;
            let d = max_abs_diff(&a, &b);
            assert!(d.is_nan(), "{bad}: {d}");
            assert!(!within(d, 1e30), "{bad}");
            // The same non-finite value on both sides still fails.
            assert!(max_abs_diff(&b, &b).is_nan(), "{bad} vs itself");
            assert!(max_abs_diff_slices(b.as_slice().unwrap(), a.as_slice().unwrap()).is_nan());
            let e = check_close("x", b.iter().copied(), a.iter().copied(), 1e30)
                .expect_err("non-finite must fail");
            assert!(e.contains("index 1"), "{e}");
            assert!(finite_abs_diff(bad, 0.0f32).is_none());
        }
    }

    #[test]
    fn finite_values_are_measured_and_shapes_checked() {
        let a = arr1(&[1.0f32, 2.0, 3.0]);
        let b = arr1(&[1.0f64, 2.5, 2.0]);
        assert_eq!(max_abs_diff(&a, &b), 1.0);
        assert!(max_abs_diff(&a, &arr1(&[1.0f32, 2.0])).is_nan());
        assert!(max_abs_diff_slices(&[1.0f32], &[1.0f32, 2.0]).is_nan());
        assert_eq!(
            check_close("x", a.iter().copied(), b.iter().copied(), 1.0),
            Ok(1.0)
        );
        let e = check_close("x", a.iter().copied(), b.iter().copied(), 0.6).expect_err("tol");
        assert!(e.contains("first at index 2"), "{e}");
        assert!(check_close("x", [1.0f32], [1.0f32, 2.0], 1.0).is_err());
        assert!(worst(0.5, f64::NAN).is_nan() && worst(f64::NAN, 0.5).is_nan());
        assert_eq!(worst(0.5, 0.25), 0.5);
        assert_eq!(assert_close("x", &a, &a, 0.0), 0.0);
    }

    #[test]
    #[should_panic(expected = "non-finite value at index 0")]
    fn assert_close_panics_on_nan() {
        let a = arr1(&[f64::NAN]);
        assert_close("nan", &a, &arr1(&[0.0f64]), 1.0);
    }
}
