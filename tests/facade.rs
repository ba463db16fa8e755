//! Workspace-level checks through the `repvgg` facade: the crates compose as the README says.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

use ndarray::{Array1, Array4};
use repvgg::math::compare::max_abs_diff;
use repvgg::math::fuse::{ConvBn, RepVggBranches};
use repvgg::math::{BatchNorm, ConvSpec, ops};

/// A block fused through the facade matches its multi-branch form after ReLU, and differs
/// from it when a branch is dropped (so the comparison can fail).
#[test]
fn fused_block_through_facade_matches_multi_branch() {
    let c = 6;
    let bn = |shift: f32| {
        BatchNorm::new(
            Array1::from_shape_fn(c, |i| 0.5 + i as f32 * 0.3 + shift),
            Array1::from_shape_fn(c, |i| i as f32 * 0.1 - 0.2),
            Array1::from_shape_fn(c, |i| 0.4 - i as f32 * 0.05),
            Array1::from_shape_fn(c, |i| 2.5 + i as f32 * 0.2 + shift),
            1e-5,
        )
        .unwrap()
    };
    let block = RepVggBranches {
        spec: ConvSpec::conv3x3(c, c, 1, 2).unwrap(),
        dense: ConvBn::new(
            Array4::from_shape_fn((c, c / 2, 3, 3), |(o, i, y, x)| {
                ((o + 2 * i + 3 * y + 5 * x) % 7) as f32 * 0.05 - 0.15
            }),
            None,
            bn(0.0),
        ),
        one_by_one: Some(ConvBn::new(
            Array4::from_shape_fn((c, c / 2, 1, 1), |(o, i, _, _)| (o as f32 - i as f32) * 0.1),
            None,
            bn(0.2),
        )),
        identity: Some(bn(0.4)),
    };
    let x = Array4::from_shape_fn((2, c, 9, 7), |(n, ch, y, x)| {
        ((n + ch * 3 + y * 5 + x * 7) % 13) as f32 / 6.0 - 1.0
    });
    let multi = ops::relu(block.forward(x.view()).unwrap().view());
    let fused = block.fuse().unwrap();
    let deployed = ops::conv2d_act(
        x.view(),
        fused.weight.view(),
        Some(fused.bias.view()),
        &fused.spec,
        ops::Activation::Relu,
    )
    .unwrap();
    let max = max_abs_diff(&multi, &deployed);
    assert!(max < 1e-5, "max |multi - fused| = {max}");

    let mut partial = block.clone();
    partial.identity = None;
    let wrong = ops::relu(partial.fuse().unwrap().forward(x.view()).unwrap().view());
    let max = max_abs_diff(&multi, &wrong);
    assert!(
        max > 1e-2,
        "dropping the identity branch should change the output"
    );
}

/// The facade's comparison (the shared NaN-aware one) fails on a NaN: `fold(0.0, f32::max)`,
/// used here before, returned 0 for it.
#[test]
fn a_nan_fails_the_facade_comparison() {
    let a = Array4::from_elem((1, 1, 2, 2), 1.0f32);
    let mut b = a.clone();
    b[[0, 0, 1, 1]] = f32::NAN;
    assert_eq!(
        [1.0f32, f32::NAN].iter().copied().fold(0.0f32, f32::max),
        1.0
    );
    let d = max_abs_diff(&a, &b);
    assert!(!(d < 1e-5) && !(d > 1e-2), "{d}");
}
