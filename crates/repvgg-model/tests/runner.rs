//! The one entry point: `Model` -> `Runner` on each engine, checked against the reference
//! operators (the f64-fused oracle's f32 forward), both forms, features, concurrency, errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use ndarray::{Array4, ArrayView4};
use proptest::prelude::*;
use repvgg_model::{
    Device, Engine, Form, Model, ModelError, Precision, RepVggConfig, RunOptions, Runner,
    TrainModel, max_abs_diff,
};

/// A small RepVGG with every block kind: identity branches, stride 2, groups, SE.
fn small(seed: u64, se: bool) -> Model {
    let mut c = RepVggConfig::custom([1, 2, 1, 1], 0.25, 0.25)
        .unwrap()
        .with_layer_groups(2, 2)
        .unwrap()
        .with_classes(7)
        .unwrap();
    if se {
        c = c.with_se(4).unwrap();
    }
    Model::from(TrainModel::random(&c, seed).unwrap())
}

fn input(n: usize, hw: usize, seed: u64) -> Array4<f32> {
    Array4::from_shape_fn((n, 3, hw, hw), |(b, c, y, x)| {
        let v = (b * 131 + c * 31 + y * 7 + x * 3) as u64 ^ seed;
        ((v % 97) as f32 / 48.5) - 1.0
    })
}

/// The reference operators' logits of `form`.
fn oracle(model: &Model, form: Form, x: ArrayView4<'_, f32>) -> ndarray::Array2<f32> {
    match form {
        Form::Train => model.train_model().unwrap().forward(x).unwrap(),
        Form::Deploy => model.deploy_model().unwrap().forward(x).unwrap(),
    }
}

fn assert_close(a: &ndarray::Array2<f32>, b: &ndarray::Array2<f32>, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let d = max_abs_diff(a, b);
    assert!(
        d <= 1e-4 * scale,
        "{what}: max diff {d:.3e} (scale {scale})"
    );
}

/// The defaults with the GPU's conv kernels chosen by the rules (tuning is tested in the GPU
/// crate), so that the suite times nothing.
fn opts() -> RunOptions {
    RunOptions::default().tuning(repvgg_model::gpu::Tuning::Off)
}

/// The test adapter (`repvgg_gpu::test_context`: none is a failure under REPVGG_REQUIRE_GPU=1).
fn gpu_engine() -> Option<Engine> {
    repvgg_gpu::test_context().map(Engine::from_gpu_context)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    /// The CPU runner of either form gives the reference operators' logits, for random models,
    /// batches and sizes (odd sizes included).
    #[test]
    fn cpu_runner_matches_the_reference(seed in 0u64..1000, n in 1usize..3, hw in 9usize..20, se: bool) {
        let model = small(seed, se);
        let x = input(n, hw, seed);
        for form in Form::ALL {
            let r = model.runner(opts().device(Device::Cpu).form(form)).unwrap();
            prop_assert_eq!(r.form(), form);
            assert_close(&r.run(x.view()).unwrap(), &oracle(&model, form, x.view()), &format!("{form}"));
        }
    }
}

#[test]
fn gpu_runner_matches_the_reference_in_both_forms() {
    let Some(engine) = gpu_engine() else { return };
    let model = small(7, true);
    let x = input(2, 17, 3);
    for form in Form::ALL {
        let r = model
            .runner_on(&engine, opts().device(Device::GPU).form(form))
            .unwrap();
        assert!(r.device().starts_with("gpu: "), "{}", r.device());
        assert_close(
            &r.run(x.view()).unwrap(),
            &oracle(&model, form, x.view()),
            &format!("gpu {form}"),
        );
    }
}

/// Features: every stage's output, as the reference computes them, on each engine.
#[test]
fn features_are_the_reference_stages() {
    let model = small(11, false);
    let x = input(1, 16, 5);
    let want = model
        .deploy_model()
        .unwrap()
        .forward_features(x.view())
        .unwrap();
    let mut engines = vec![Engine::cpu()];
    engines.extend(gpu_engine());
    for engine in &engines {
        let r = model.runner_on(engine, opts()).unwrap();
        let got = r.run_features(x.view()).unwrap();
        assert_eq!(got.stages.len(), want.stages.len(), "{}", engine.kind());
        for (i, (g, w)) in got.stages.iter().zip(&want.stages).enumerate() {
            assert_eq!(g.shape(), w.shape(), "stage{i}");
            let scale = w.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let d = max_abs_diff(g, w);
            assert!(d <= 1e-4 * scale, "{} stage{i}: {d:.3e}", engine.kind());
        }
        assert_close(&got.logits, &want.logits, "features' logits");
        // The plain run is unchanged by the features twin.
        assert_close(
            &r.run(x.view()).unwrap(),
            &want.logits,
            "run after run_features",
        );
    }
}

/// One runner shared by 8 threads: every thread gets the single-threaded result, bit for bit.
#[test]
fn one_runner_many_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Runner>();
    send_sync::<Model>();
    let model = small(3, true);
    let runner = Arc::new(model.runner(opts().device(Device::Cpu)).unwrap());
    let inputs: Vec<Array4<f32>> = (0..8).map(|i| input(1 + i % 3, 12 + i, i as u64)).collect();
    let want: Vec<_> = inputs
        .iter()
        .map(|x| runner.run(x.view()).unwrap())
        .collect();
    let handles: Vec<_> = inputs
        .into_iter()
        .zip(want)
        .map(|(x, w)| {
            let r = Arc::clone(&runner);
            std::thread::spawn(move || {
                for _ in 0..5 {
                    assert_eq!(r.run(x.view()).unwrap(), w);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Auto never takes a software adapter, and says why it took what it took.
#[test]
fn auto_applies_the_device_policy_and_says_why() {
    let engine = Engine::open(&Device::Auto).unwrap();
    let r = small(1, false).runner_on(&engine, opts()).unwrap();
    let why = r.device();
    assert!(
        why.starts_with("cpu: ") || why.starts_with("gpu: "),
        "{why}"
    );
    if let Some(gpu) = gpu_engine()
        && let Some(ctx) = gpu.gpu_context()
        && ctx.is_software()
    {
        assert!(!engine.is_gpu(), "auto took the software adapter: {why}");
        assert!(why.contains("software adapter"), "{why}");
    }
}

#[test]
fn asking_for_what_cannot_run_is_a_clear_error() {
    let fused = small(2, false).fuse().unwrap();
    assert_eq!(fused.form(), Form::Deploy);
    let e = fused
        .runner(opts().device(Device::Cpu).form(Form::Train))
        .unwrap_err();
    assert!(matches!(e, ModelError::NotTrainForm { .. }), "{e}");

    let e = small(2, false)
        .runner(opts().device(Device::Cpu).precision(Precision::F16))
        .unwrap_err();
    assert!(e.to_string().contains("f16 runs on a GPU only"), "{e}");

    // Auto falling back to the CPU runs f32 and says so.
    let engine = Engine::cpu();
    let r = small(2, false)
        .runner_on(&engine, opts().precision(Precision::F16))
        .unwrap();
    assert_eq!(r.precision(), Precision::F32);
    assert!(r.device().contains("f16 applies to GPUs"), "{}", r.device());

    let r = small(2, false).runner(opts().device(Device::Cpu)).unwrap();
    let e = r.run(Array4::zeros((1, 4, 8, 8)).view()).unwrap_err();
    assert!(matches!(e, ModelError::Input { .. }), "{e}");
    let e = r.run(Array4::zeros((0, 3, 8, 8)).view()).unwrap_err();
    assert!(matches!(e, ModelError::Input { .. }), "{e}");
}

/// The digits model classifies its held-out digits through `classify`'s preprocessing as the
/// logits of its preprocessed test inputs say, and as accurately as PyTorch did.
#[test]
fn digits_classify_through_the_runner() {
    use repvgg_model::digits;
    let model = Model::digits().unwrap();
    let r = model.runner(opts().device(Device::Cpu)).unwrap();
    let test = digits::test_set().unwrap();
    let logits = r.run(test.input.view()).unwrap();
    let acc = digits::accuracy(&logits, &test.labels);
    // The same count of right answers as PyTorch (its accuracy is stored rounded).
    let n = test.labels.len() as f64;
    assert!(
        (acc - digits::PYTORCH_TEST_ACCURACY).abs() < 0.5 / n,
        "{acc}"
    );
    let tops = r.top_classes(logits.view(), 3);
    assert_eq!(tops.len(), test.labels.len());
    let best = repvgg_model::argmax_rows(&logits);
    for (top, &want) in tops.iter().zip(&best) {
        assert_eq!(top.len(), 3);
        assert_eq!(top[0].index, want);
        assert!(top[0].prob >= top[1].prob && top[1].prob >= top[2].prob);
        assert_eq!(top[0].label, top[0].index.to_string());
    }
    let e = r.classify(&[], 0).unwrap_err();
    assert!(matches!(e, ModelError::Input { .. }), "{e}");
}
