//! Exact layouts of the kernels the fusion builds (small cases written out by hand).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

use ndarray::{Array4, s};
use repvgg_math::fuse::{identity_kernel, pad_1x1_to_3x3, pad_kernel};

#[test]
fn padding_centres_the_kernel() {
    let w1 = Array4::from_shape_fn((2, 3, 1, 1), |(o, i, _, _)| (1 + o * 3 + i) as f64);
    for to in [1usize, 3, 5, 7] {
        let p = pad_kernel(w1.view(), to).unwrap();
        assert_eq!(p.shape(), &[2, 3, to, to]);
        let c = to / 2;
        for ((o, i, y, x), v) in p.indexed_iter() {
            let want = if (y, x) == (c, c) {
                w1[[o, i, 0, 0]]
            } else {
                0.0
            };
            assert_eq!(*v, want, "1x1 -> {to}x{to} at {:?}", (o, i, y, x));
        }
    }
    let w3 = Array4::from_shape_fn((1, 2, 3, 3), |(_, i, y, x)| (10 * i + 3 * y + x + 1) as f32);
    let p = pad_kernel(w3.view(), 5).unwrap();
    assert_eq!(p.slice(s![.., .., 1..4, 1..4]), w3);
    assert_eq!(p.iter().filter(|v| **v != 0.0).count(), w3.len());
    assert_eq!(p.sum(), w3.sum());
    assert_eq!(pad_kernel(w3.view(), 3).unwrap(), w3);
    assert_eq!(
        pad_1x1_to_3x3(w1.view()).unwrap(),
        pad_kernel(w1.view(), 3).unwrap()
    );
    assert!(
        pad_kernel(w3.view(), 4).is_err(),
        "3 -> 4 cannot be centred"
    );
    assert!(
        pad_kernel(w1.view(), 2).is_err(),
        "1 -> 2 cannot be centred"
    );
}

#[test]
fn identity_kernel_layout() {
    // 6 channels, 3 groups: 2 input channels per group; channel i gets 1 at input i % 2.
    let k = identity_kernel::<f64>(6, 3, 3).unwrap();
    assert_eq!(k.shape(), &[6, 2, 3, 3]);
    for ((o, i, y, x), v) in k.indexed_iter() {
        let want = if i == o % 2 && y == 1 && x == 1 {
            1.0
        } else {
            0.0
        };
        assert_eq!(*v, want, "at {:?}", (o, i, y, x));
    }
    let k1 = identity_kernel::<f32>(4, 1, 1).unwrap();
    assert_eq!(k1.shape(), &[4, 4, 1, 1]);
    assert_eq!(k1.sum(), 4.0);
    assert!((0..4).all(|c| k1[[c, c, 0, 0]] == 1.0));
    let k5 = identity_kernel::<f32>(2, 2, 5).unwrap();
    assert_eq!(k5.shape(), &[2, 1, 5, 5]);
    assert!(k5[[0, 0, 2, 2]] == 1.0 && k5[[1, 0, 2, 2]] == 1.0 && k5.sum() == 2.0);
}

fn bn(c: usize, k: f64) -> repvgg_math::BatchNorm<f64> {
    repvgg_math::BatchNorm::new(
        ndarray::Array1::from_shape_fn(c, |i| 0.5 + k + i as f64 * 0.25),
        ndarray::Array1::from_shape_fn(c, |i| k - i as f64 * 0.3),
        ndarray::Array1::from_shape_fn(c, |i| 0.7 - i as f64 * 0.2),
        ndarray::Array1::from_shape_fn(c, |i| 2.0 + k + i as f64),
        1e-3,
    )
    .unwrap()
}

/// The 1x1 branch lines up with any odd dense kernel: a 5x5 block (padding 2) fuses exactly.
#[test]
fn five_by_five_block_with_one_by_one_branch_fuses() {
    use repvgg_math::fuse::{ConvBn, RepVggBranches};
    use repvgg_math::{ConvSpec, MathError, ops};
    let c = 4;
    let block = RepVggBranches {
        spec: ConvSpec::new(c, c, 5, 1, 2, 2).unwrap(),
        dense: ConvBn::new(
            Array4::from_shape_fn((c, 2, 5, 5), |(o, i, y, x)| {
                ((o * 7 + i * 5 + y * 3 + x) % 9) as f64 * 0.1 - 0.4
            }),
            None,
            bn(c, 0.1),
        ),
        one_by_one: Some(ConvBn::new(
            Array4::from_shape_fn((c, 2, 1, 1), |(o, i, _, _)| o as f64 * 0.3 - i as f64),
            None,
            bn(c, 0.6),
        )),
        identity: Some(bn(c, 1.1)),
    };
    let one = block.one_by_one_spec().unwrap();
    assert_eq!(
        (one.kernel_size, one.padding, one.stride, one.groups),
        (1, 0, 1, 2)
    );
    let x = Array4::from_shape_fn((1, c, 7, 6), |(_, ch, y, x)| {
        ((ch * 5 + y * 3 + x * 7) % 11) as f64 / 5.0 - 1.0
    });
    let multi = block.forward(x.view()).unwrap();
    let fused = block.fuse().unwrap();
    assert_eq!(fused.weight.shape(), &[c, 2, 5, 5]);
    let y = ops::conv2d_reference(
        x.view(),
        fused.weight.view(),
        Some(fused.bias.view()),
        &fused.spec,
    )
    .unwrap();
    let d = repvgg_math::compare::max_abs_diff(&multi, &y);
    assert!(d < 1e-12, "5x5 block: {d}");

    // A 1x1 dense kernel takes a 1x1 branch at padding 0 too.
    let b1 = RepVggBranches {
        spec: ConvSpec::new(c, c, 1, 1, 0, 1).unwrap(),
        ..block.clone()
    };
    let one = b1.one_by_one_spec().unwrap();
    assert_eq!((one.kernel_size, one.padding), (1, 0));

    // Even kernels, or too little padding, cannot line a 1x1 branch up.
    let even = RepVggBranches {
        spec: ConvSpec::new(c, c, 4, 1, 2, 2).unwrap(),
        ..block.clone()
    };
    assert!(matches!(
        even.one_by_one_spec(),
        Err(MathError::InvalidSpec { .. })
    ));
    let tight = RepVggBranches {
        spec: ConvSpec::new(c, c, 5, 1, 1, 2).unwrap(),
        ..block
    };
    assert!(matches!(
        tight.one_by_one_spec(),
        Err(MathError::InvalidSpec { .. })
    ));
}
