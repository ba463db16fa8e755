//! Exact layouts of the kernels the fusion builds (small cases written out by hand).

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
            let want = if (y, x) == (c, c) { w1[[o, i, 0, 0]] } else { 0.0 };
            assert_eq!(*v, want, "1x1 -> {to}x{to} at {:?}", (o, i, y, x));
        }
    }
    let w3 = Array4::from_shape_fn((1, 2, 3, 3), |(_, i, y, x)| (10 * i + 3 * y + x + 1) as f32);
    let p = pad_kernel(w3.view(), 5).unwrap();
    assert_eq!(p.slice(s![.., .., 1..4, 1..4]), w3);
    assert_eq!(p.iter().filter(|v| **v != 0.0).count(), w3.len());
    assert_eq!(p.sum(), w3.sum());
    assert_eq!(pad_kernel(w3.view(), 3).unwrap(), w3);
    assert_eq!(pad_1x1_to_3x3(w1.view()).unwrap(), pad_kernel(w1.view(), 3).unwrap());
    assert!(pad_kernel(w3.view(), 4).is_err(), "3 -> 4 cannot be centred");
    assert!(pad_kernel(w1.view(), 2).is_err(), "1 -> 2 cannot be centred");
}

#[test]
fn identity_kernel_layout() {
    // 6 channels, 3 groups: 2 input channels per group; channel i gets 1 at input i % 2.
    let k = identity_kernel::<f64>(6, 3, 3).unwrap();
    assert_eq!(k.shape(), &[6, 2, 3, 3]);
    for ((o, i, y, x), v) in k.indexed_iter() {
        let want = if i == o % 2 && y == 1 && x == 1 { 1.0 } else { 0.0 };
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
