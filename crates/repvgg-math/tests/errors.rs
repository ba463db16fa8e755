//! Every invalid request gives a typed error naming the shapes involved.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

use ndarray::{Array1, Array4};
use repvgg_math::fuse::{self, ConvBn, RepVggBranches};
use repvgg_math::{BatchNorm, ConvSpec, MathError, ops};

fn bn(c: usize) -> BatchNorm<f32> {
    BatchNorm::identity(c)
}

fn block(cin: usize, cout: usize, stride: usize, groups: usize) -> RepVggBranches<f32> {
    RepVggBranches {
        spec: ConvSpec {
            in_channels: cin,
            out_channels: cout,
            kernel_size: 3,
            stride,
            padding: 1,
            groups,
        },
        dense: ConvBn::new(
            Array4::zeros((cout, cin / groups.max(1), 3, 3)),
            None,
            bn(cout),
        ),
        one_by_one: Some(ConvBn::new(
            Array4::zeros((cout, cin / groups.max(1), 1, 1)),
            None,
            bn(cout),
        )),
        identity: None,
    }
}

#[test]
fn channels_not_divisible_by_groups() {
    let err = ConvSpec::new(6, 8, 3, 1, 1, 4).unwrap_err();
    assert_eq!(
        err,
        MathError::GroupsMismatch {
            what: "in_channels",
            channels: 6,
            groups: 4
        }
    );
    assert!(
        err.to_string()
            .contains("6 channels are not divisible by groups=4"),
        "{err}"
    );
    let err = ConvSpec::new(8, 6, 3, 1, 1, 4).unwrap_err();
    assert_eq!(
        err,
        MathError::GroupsMismatch {
            what: "out_channels",
            channels: 6,
            groups: 4
        }
    );
    assert!(matches!(
        fuse::identity_kernel::<f32>(6, 4, 3),
        Err(MathError::GroupsMismatch {
            channels: 6,
            groups: 4,
            ..
        })
    ));
}

#[test]
fn zero_sizes_are_rejected() {
    for (args, name) in [
        ((0, 4, 3, 1, 1, 1), "in_channels"),
        ((4, 0, 3, 1, 1, 1), "out_channels"),
        ((4, 4, 0, 1, 1, 1), "kernel_size"),
        ((4, 4, 3, 0, 1, 1), "stride"),
        ((4, 4, 3, 1, 1, 0), "groups"),
    ] {
        let err = ConvSpec::new(args.0, args.1, args.2, args.3, args.4, args.5).unwrap_err();
        assert!(err.to_string().contains(name), "{err} should name {name}");
    }
    ConvSpec::new(1, 1, 1, 1, 0, 1).unwrap();
}

#[test]
fn identity_branch_needs_square_stride_one() {
    let mut b = block(4, 8, 1, 1);
    b.identity = Some(bn(8));
    let err = b.fuse().unwrap_err();
    assert_eq!(
        err,
        MathError::InvalidIdentity {
            in_channels: 4,
            out_channels: 8,
            stride: 1
        }
    );
    assert!(
        err.to_string()
            .contains("in_channels=4, out_channels=8, stride=1"),
        "{err}"
    );
    let mut b = block(4, 4, 2, 1);
    b.identity = Some(bn(4));
    assert_eq!(
        b.fuse().unwrap_err(),
        MathError::InvalidIdentity {
            in_channels: 4,
            out_channels: 4,
            stride: 2
        }
    );
    assert!(b.forward(Array4::zeros((1, 4, 4, 4)).view()).is_err());
    let mut ok = block(4, 4, 1, 2);
    ok.identity = Some(bn(4));
    ok.fuse().unwrap();
}

#[test]
fn batch_norm_length_mismatch() {
    let err = BatchNorm::new(
        Array1::<f32>::ones(4),
        Array1::zeros(4),
        Array1::zeros(3),
        Array1::ones(4),
        1e-5,
    )
    .unwrap_err();
    assert_eq!(
        err,
        MathError::BatchNormLength {
            what: "running_mean",
            expected: 4,
            found: 3
        }
    );
    assert!(err.to_string().contains("expected 4 values"), "{err}");
    let mut b = block(4, 4, 1, 1);
    b.dense.bn = bn(5);
    assert_eq!(
        b.fuse().unwrap_err(),
        MathError::BatchNormLength {
            what: "gamma",
            expected: 4,
            found: 5
        }
    );
    let mut b = block(4, 4, 1, 1);
    b.one_by_one.as_mut().unwrap().bn = bn(3);
    assert_eq!(
        b.fuse().unwrap_err(),
        MathError::BatchNormLength {
            what: "gamma",
            expected: 4,
            found: 3
        }
    );
    let mut b = block(4, 4, 1, 1);
    b.identity = Some(bn(2));
    assert_eq!(
        b.fuse().unwrap_err(),
        MathError::BatchNormLength {
            what: "gamma",
            expected: 4,
            found: 2
        }
    );
    let w = Array4::<f32>::zeros((4, 2, 3, 3));
    assert!(matches!(
        fuse::fuse_conv_bn(w.view(), None, &bn(3)),
        Err(MathError::BatchNormLength {
            expected: 4,
            found: 3,
            ..
        })
    ));
    assert!(matches!(
        ops::batch_norm(Array4::<f32>::zeros((1, 4, 2, 2)).view(), &bn(3)),
        Err(MathError::BatchNormLength { .. })
    ));
}

#[test]
fn non_positive_variance_is_rejected() {
    let mut b = bn(3);
    b.running_var[1] = -1.0;
    let err = b.scale_shift().unwrap_err();
    assert!(
        matches!(err, MathError::BatchNormVariance { channel: 1, .. }),
        "{err}"
    );
    let mut zero = bn(2);
    zero.running_var.fill(0.0);
    zero.eps = 0.0;
    assert!(
        matches!(zero.scale_shift(), Err(MathError::BatchNormVariance { channel: 0, value }) if value == 0.0)
    );
    let mut nan_eps = bn(2);
    nan_eps.eps = f64::NAN;
    assert!(nan_eps.scale_shift().is_err());
    let mut inf = bn(2);
    inf.running_var[0] = f32::INFINITY;
    assert!(inf.scale_shift().is_err());
}

#[test]
fn kernel_shape_mismatches_name_both_shapes() {
    let mut b = block(4, 4, 1, 1);
    b.dense.weight = Array4::zeros((4, 4, 1, 1));
    let err = b.fuse().unwrap_err();
    assert_eq!(
        err,
        MathError::ShapeMismatch {
            what: "convolution weight".into(),
            expected: vec![4, 4, 3, 3],
            found: vec![4, 4, 1, 1]
        }
    );
    assert!(
        err.to_string().contains("[4, 4, 3, 3]") && err.to_string().contains("[4, 4, 1, 1]"),
        "{err}"
    );
    let mut b = block(4, 4, 1, 2);
    b.one_by_one.as_mut().unwrap().weight = Array4::zeros((4, 4, 1, 1));
    assert!(
        matches!(b.fuse(), Err(MathError::ShapeMismatch { found, .. }) if found == vec![4, 4, 1, 1])
    );
    let mut b = block(4, 4, 1, 1);
    b.dense.bias = Some(Array1::zeros(3));
    assert!(
        matches!(b.fuse(), Err(MathError::ShapeMismatch { expected, found, .. }) if expected == vec![4] && found == vec![3])
    );
    assert!(fuse::pad_1x1_to_3x3(Array4::<f32>::zeros((2, 2, 3, 3)).view()).is_err());
    assert!(fuse::pad_kernel(Array4::<f32>::zeros((2, 2, 2, 2)).view(), 3).is_err());
    assert!(fuse::pad_kernel(Array4::<f32>::zeros((2, 2, 5, 5)).view(), 3).is_err());
    assert!(fuse::pad_kernel(Array4::<f32>::zeros((2, 2, 3, 1)).view(), 3).is_err());
    assert!(fuse::identity_kernel::<f32>(4, 1, 2).is_err());
}

#[test]
fn one_by_one_branch_needs_matching_padding() {
    let mut b = block(4, 4, 1, 1);
    b.spec.padding = 0;
    let err = b.fuse().unwrap_err();
    assert!(matches!(err, MathError::InvalidSpec { .. }), "{err}");
    b.one_by_one = None;
    b.fuse().unwrap();
}

#[test]
fn op_shape_errors() {
    let spec = ConvSpec::new(4, 4, 3, 1, 1, 1).unwrap();
    let w = Array4::<f32>::zeros((4, 4, 3, 3));
    let x = Array4::<f32>::zeros((1, 3, 5, 5));
    for r in [
        ops::conv2d(x.view(), w.view(), None, &spec),
        ops::conv2d_reference(x.view(), w.view(), None, &spec),
    ] {
        assert!(
            matches!(r, Err(MathError::ShapeMismatch { found, .. }) if found == vec![1, 3, 5, 5])
        );
    }
    let spec0 = ConvSpec::new(4, 4, 3, 1, 0, 1).unwrap();
    let x = Array4::<f32>::zeros((1, 4, 2, 5));
    assert!(matches!(
        ops::conv2d(x.view(), w.view(), None, &spec0),
        Err(MathError::InputTooSmall { height: 2, .. })
    ));
    let a = Array4::<f32>::zeros((1, 4, 2, 2));
    let b = Array4::<f32>::zeros((1, 4, 2, 3));
    assert!(ops::add(a.view(), b.view()).is_err());
    let x2 = ndarray::Array2::<f32>::zeros((2, 5));
    let lw = ndarray::Array2::<f32>::zeros((3, 4));
    assert!(ops::linear(x2.view(), lw.view(), None).is_err());
    let lw = ndarray::Array2::<f32>::zeros((3, 5));
    assert!(ops::linear(x2.view(), lw.view(), Some(Array1::zeros(2).view())).is_err());
    assert!(ops::global_avg_pool(Array4::<f32>::zeros((1, 2, 0, 3)).view()).is_err());
}

#[test]
fn small_ops_match_their_formulas() {
    let x = Array4::from_shape_fn((2, 3, 2, 2), |(n, c, h, w)| {
        (n * 24 + c * 4 + h * 2 + w) as f64 - 20.0
    });
    let p = ops::global_avg_pool(x.view()).unwrap();
    assert_eq!(p[[1, 2]], (32.0 + 33.0 + 34.0 + 35.0) / 4.0 - 20.0);
    let r = ops::relu(x.view());
    assert!(r.iter().zip(x.iter()).all(|(r, x)| *r == x.max(0.0)));
    let w = ndarray::arr2(&[[1.0, 2.0], [0.5, -1.0]]);
    let y = ops::linear(
        ndarray::arr2(&[[3.0, 4.0]]).view(),
        w.view(),
        Some(ndarray::arr1(&[0.25, 1.0]).view()),
    )
    .unwrap();
    assert_eq!(y, ndarray::arr2(&[[11.25, -1.5]]));
    let spec = ConvSpec::new(3, 5, 3, 2, 1, 1).unwrap();
    assert_eq!(spec.output_size(7, 4).unwrap(), (4, 2));
    assert_eq!(spec.macs(7, 4).unwrap(), 3 * 9 * 5 * 8);
}
