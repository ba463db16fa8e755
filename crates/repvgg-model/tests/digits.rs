//! The embedded digits model reaches PyTorch's accuracy in both forms on the CPU.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

use repvgg_model::{digits, max_abs_diff};

#[test]
fn embedded_model_matches_pytorch_in_both_forms() {
    let train = digits::model().unwrap();
    let deploy = train.fuse().unwrap();
    let t = digits::test_set().unwrap();
    assert_eq!(t.labels.len(), 360);
    let lt = train.forward(t.input.view()).unwrap();
    let ld = deploy.forward(t.input.view()).unwrap();
    let (at, ad) = (
        digits::accuracy(&lt, &t.labels),
        digits::accuracy(&ld, &t.labels),
    );
    assert_eq!(at, ad, "forms disagree on accuracy");
    assert!(
        (at - digits::PYTORCH_TEST_ACCURACY).abs() < 1e-6,
        "accuracy {at} vs PyTorch {}",
        digits::PYTORCH_TEST_ACCURACY
    );
    assert!(at >= 0.9);
    let d = max_abs_diff(&lt, &t.torch_logits);
    assert!(d < 1e-4, "train-form logits vs PyTorch: {d}");
    let d = max_abs_diff(&lt, &ld);
    assert!(d < 1e-4, "train vs deploy logits: {d}");
}

#[test]
fn preprocessing_matches_pytorch_interpolate() {
    let t = digits::test_set().unwrap();
    let ours = digits::preprocess(t.images8.view());
    let d = max_abs_diff(&ours, &t.input);
    assert!(d < 1e-5, "preprocess vs PyTorch: {d}");
}
