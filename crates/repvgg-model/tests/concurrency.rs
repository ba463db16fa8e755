//! One model shared by many threads: the CPU [`DeployModel`] and the GPU [`GpuModel`] are
//! `Send + Sync`, and 8 threads x 25 inferences on one shared instance give, bit for bit, the
//! results of running the same inputs one after another.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use ndarray::{Array2, Array4};
use repvgg_gpu::{ConvKernel, test_context};
use repvgg_model::gpu::{GpuModel, GpuOptions};
use repvgg_model::{DeployModel, RepVggConfig, TrainModel};

const THREADS: usize = 8;
const PER_THREAD: usize = 25;

fn assert_send_sync<T: Send + Sync>() {}

/// 200 distinct inputs, batch 1 or 2, 3 x 16 x 12.
fn inputs() -> Vec<Array4<f32>> {
    (0..THREADS * PER_THREAD)
        .map(|i| {
            Array4::from_shape_fn((i % 2 + 1, 3, 16, 12), |(n, c, y, x)| {
                (((i * 31 + n * 17 + c * 7 + y * 5 + x * 3) % 23) as f32 - 11.0) / 7.0
            })
        })
        .collect()
}

/// Runs `f` on every input from 8 threads at once (thread `t` takes inputs `t, t + 8, ...`)
/// and checks each result equals `want` bit for bit.
fn shared_across_threads(
    what: &str,
    xs: &[Array4<f32>],
    want: &[Array2<f32>],
    f: &(dyn Fn(&Array4<f32>) -> Array2<f32> + Sync),
) {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                scope.spawn(move || {
                    (t..xs.len())
                        .step_by(THREADS)
                        .map(|i| (i, f(&xs[i])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen = 0;
        for h in handles {
            for (i, got) in h.join().expect("thread") {
                let (g, w) = (got.as_slice().unwrap(), want[i].as_slice().unwrap());
                assert!(
                    g.len() == w.len() && g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{what}: input {i} differs from the sequential run: {got} vs {}",
                    want[i]
                );
                assert!(g.iter().all(|v| v.is_finite()), "{what}: input {i}: {got}");
                seen += 1;
            }
        }
        assert_eq!(seen, THREADS * PER_THREAD, "{what}");
    });
}

/// A small random network (5 layers, 8..32 channels), fused.
fn deploy_model() -> DeployModel {
    let cfg = RepVggConfig::custom([1, 2, 1, 1], 0.125, 0.0625)
        .unwrap()
        .with_classes(10)
        .unwrap();
    TrainModel::random(&cfg, 7).unwrap().fuse().unwrap()
}

#[test]
fn cpu_model_shared_by_8_threads_matches_sequential_bit_for_bit() {
    assert_send_sync::<DeployModel>();
    assert_send_sync::<TrainModel>();
    let model = deploy_model();
    let xs = inputs();
    let want: Vec<Array2<f32>> = xs
        .iter()
        .map(|x| model.forward(x.view()).unwrap())
        .collect();
    shared_across_threads("cpu", &xs, &want, &|x| model.forward(x.view()).unwrap());
}

#[test]
fn gpu_model_shared_by_8_threads_matches_sequential_bit_for_bit() {
    assert_send_sync::<GpuModel>();
    let Some(ctx) = test_context() else { return };
    let model = GpuModel::deploy(
        &ctx,
        &deploy_model(),
        GpuOptions {
            kernel: ConvKernel::Auto,
            features: false,
            ..GpuOptions::default()
        },
    )
    .unwrap();
    let xs = inputs();
    let want: Vec<Array2<f32>> = xs
        .iter()
        .map(|x| model.forward(x.view()).unwrap())
        .collect();
    shared_across_threads("gpu", &xs, &want, &|x| model.forward(x.view()).unwrap());
}
