//! Interleaved A/B timing of one 64-channel 56x56 RepVGG block: multi-branch vs fused, same
//! loop, so background load hits both alike. `cargo run --release -p repvgg-math --example block_ab`
#![allow(clippy::unwrap_used)]
use ndarray::{Array1, Array4};
use repvgg_math::fuse::{ConvBn, RepVggBranches};
use repvgg_math::ops::{self, Activation};
use repvgg_math::{BatchNorm, ConvSpec};
use std::time::Instant;
fn main() {
    let c = 64;
    let bn = || {
        BatchNorm::new(
            Array1::from_elem(c, 1.1f32),
            Array1::from_elem(c, 0.1),
            Array1::from_elem(c, 0.2),
            Array1::from_elem(c, 1.5),
            1e-5,
        )
        .unwrap()
    };
    let b = RepVggBranches {
        spec: ConvSpec::conv3x3(c, c, 1, 1).unwrap(),
        dense: ConvBn::new(Array4::from_elem((c, c, 3, 3), 0.01), None, bn()),
        one_by_one: Some(ConvBn::new(
            Array4::from_elem((c, c, 1, 1), 0.02),
            None,
            bn(),
        )),
        identity: Some(bn()),
    };
    let f = b.fuse().unwrap();
    for batch in [1usize, 8] {
        let x = Array4::from_elem((batch, c, 56, 56), 0.3f32);
        let (mut tm, mut tf, mut tc) = (vec![], vec![], vec![]);
        for _ in 0..30 {
            let t = Instant::now();
            let mut y = b.forward(x.view()).unwrap();
            ops::relu_inplace(&mut y);
            tm.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let y2 = ops::conv2d_act(
                x.view(),
                f.weight.view(),
                Some(f.bias.view()),
                &f.spec,
                Activation::Relu,
            )
            .unwrap();
            tf.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let y3 = ops::conv2d(x.view(), f.weight.view(), None, &f.spec).unwrap();
            tc.push(t.elapsed().as_secs_f64());
            std::hint::black_box((y, y2, y3));
        }
        for v in [&mut tm, &mut tf, &mut tc] {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        }
        println!(
            "batch {batch}: multi {:.2} ms, fused+bias+relu {:.2} ms, conv only {:.2} ms (medians)",
            tm[15] * 1e3,
            tf[15] * 1e3,
            tc[15] * 1e3
        );
    }
}
