//! Whole networks on the GPU (lavapipe in CI) against the CPU forward and the timm fixtures.
//! Without an adapter these skip with a message, unless `REPVGG_REQUIRE_GPU=1` (CI), where
//! they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

mod common;

use common::*;
use ndarray::Array4;
use repvgg_gpu::{ConvKernel, Precision, test_context};
use repvgg_model::gpu::{GpuModel, GpuOptions};
use repvgg_model::{
    DeployModel, LoadedModel, ModelError, RepVggConfig, TrainModel, checkpoint, digits,
    max_abs_diff,
};

const FEATS: GpuOptions = GpuOptions {
    kernel: ConvKernel::Auto,
    // The rules choose: no workload to tune for.
    tuning: repvgg_model::gpu::Tuning::Off,
    tune_for: None,
    tuning_budget: None,
    precision: Precision::F32,
    features: true,
};

/// The timm fixtures compared on the GPU.
const FIXTURES: [&str; 5] = [
    "a_narrow",
    "g4_narrow",
    "g4_odd",
    "d2se_narrow",
    "tiny_nonsquare",
];

/// Fixture `name`: its float64 reference tensors, its input as f32 and its model in both forms.
fn load_fixture(
    name: &str,
) -> (
    std::collections::BTreeMap<String, ndarray::ArrayD<f64>>,
    Array4<f32>,
    TrainModel,
    DeployModel,
) {
    let io = read_f64(&fixture(&format!("{name}.io.safetensors")));
    let x: Array4<f32> = io["input"]
        .mapv(|v| v as f32)
        .into_dimensionality()
        .unwrap();
    let LoadedModel::Train(train) = checkpoint::load(fixture(&format!("{name}.train.safetensors")))
        .unwrap()
        .model
    else {
        panic!("{name}: not train form")
    };
    let deploy = train.fuse().unwrap();
    (io, x, train, deploy)
}

/// Every fixture in both forms with the main path and with Winograd F(2x2, 3x3) and F(4x4, 3x3)
/// forced on every 3x3 stride-1 conv; prints the worst logit / stage error of each.
#[test]
fn timm_fixtures_match_on_the_gpu_in_both_forms() {
    let Some(ctx) = test_context() else { return };
    let mut compared = 0;
    for kernel in [
        ConvKernel::Auto,
        ConvKernel::Winograd,
        ConvKernel::Winograd4,
    ] {
        let opts = GpuOptions { kernel, ..FEATS };
        let mut worst = 0.0f64;
        for name in FIXTURES {
            let (io, x, train, deploy) = load_fixture(name);
            for (form, gm) in [
                ("train", GpuModel::train(&ctx, &train, opts).unwrap()),
                ("deploy", GpuModel::deploy(&ctx, &deploy, opts).unwrap()),
            ] {
                let f = gm.forward_features(x.view()).unwrap();
                let d = max_diff(&f.logits.into_dyn(), &io[&format!("{form}.logits")]);
                assert!(d <= 1e-5, "{name} {form} {kernel:?} GPU logits: {d}");
                worst = worst.max(d);
                assert_eq!(f.stages.len(), 5);
                for (i, s) in f.stages.into_iter().enumerate() {
                    let d = max_diff(&s.into_dyn(), &io[&format!("{form}.stage{i}")]);
                    assert!(d <= 1e-5, "{name} {form} {kernel:?} GPU stage{i}: {d}");
                    worst = worst.max(d);
                }
                compared += 1;
            }
        }
        eprintln!("timm fixtures, {kernel:?}: worst |diff| vs float64 {worst:.3e}");
    }
    assert_eq!(compared, 30);
}

#[test]
fn random_variants_match_the_cpu_forward() {
    let Some(ctx) = test_context() else { return };
    let configs = [
        RepVggConfig::custom([2, 2, 2, 1], 0.25, 0.125).unwrap(),
        RepVggConfig::custom([1, 3, 2, 1], 0.25, 0.125)
            .unwrap()
            .with_official_groups(4)
            .unwrap(),
        RepVggConfig::custom([1, 2, 1, 1], 0.25, 0.125)
            .unwrap()
            .with_official_groups(2)
            .unwrap()
            .with_se(4)
            .unwrap(),
        RepVggConfig::custom([1, 1, 1, 1], 0.125, 0.0625)
            .unwrap()
            .with_in_channels(1)
            .unwrap()
            .with_classes(7)
            .unwrap(),
    ];
    for (i, cfg) in configs.iter().enumerate() {
        let train = TrainModel::random(cfg, 10 + i as u64).unwrap();
        let deploy = train.fuse().unwrap();
        let x = Array4::from_shape_fn((3, cfg.in_channels, 19, 26), |(n, c, y, xx)| {
            (((n * 13 + c * 7 + y * 3 + xx * 5) % 17) as f32 - 8.0) / 8.0
        });
        for kernel in [ConvKernel::Auto, ConvKernel::Workgroup, ConvKernel::Naive] {
            let opts = GpuOptions {
                kernel,
                features: false,
                ..GpuOptions::default()
            };
            let cpu_t = train.forward(x.view()).unwrap();
            let cpu_d = deploy.forward(x.view()).unwrap();
            let gpu_t = GpuModel::train(&ctx, &train, opts)
                .unwrap()
                .forward(x.view())
                .unwrap();
            let gpu_d = GpuModel::deploy(&ctx, &deploy, opts)
                .unwrap()
                .forward(x.view())
                .unwrap();
            let scale = cpu_t.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            for (form, c, g) in [("train", &cpu_t, &gpu_t), ("deploy", &cpu_d, &gpu_d)] {
                let d = max_abs_diff(c, g);
                assert!(
                    d <= 1e-5 * scale,
                    "config {i} {kernel:?} {form}: GPU vs CPU {d} (scale {scale})"
                );
            }
        }
    }
}

#[test]
fn digits_reach_the_same_accuracy_on_the_gpu() {
    let Some(ctx) = test_context() else { return };
    let train = digits::model().unwrap();
    let deploy = train.fuse().unwrap();
    let t = digits::test_set().unwrap();
    let opts = GpuOptions::default();
    let lt = GpuModel::train(&ctx, &train, opts)
        .unwrap()
        .forward(t.input.view())
        .unwrap();
    let ld = GpuModel::deploy(&ctx, &deploy, opts)
        .unwrap()
        .forward(t.input.view())
        .unwrap();
    let cpu = deploy.forward(t.input.view()).unwrap();
    assert!(max_abs_diff(&ld, &cpu) < 1e-4);
    assert!(max_abs_diff(&lt, &ld) < 1e-4);
    let (at, ad) = (
        digits::accuracy(&lt, &t.labels),
        digits::accuracy(&ld, &t.labels),
    );
    assert_eq!(at, ad);
    assert!((ad - digits::PYTORCH_TEST_ACCURACY).abs() < 1e-6, "{ad}");
}

#[test]
fn gpu_input_errors_are_typed() {
    let Some(ctx) = test_context() else { return };
    let cfg = RepVggConfig::custom([1, 1, 1, 1], 0.125, 0.0625).unwrap();
    let m = GpuModel::deploy(
        &ctx,
        &TrainModel::random(&cfg, 1).unwrap().fuse().unwrap(),
        GpuOptions::default(),
    )
    .unwrap();
    let e = m.forward(Array4::zeros((1, 2, 16, 16)).view()).unwrap_err();
    assert!(
        matches!(e, ModelError::Input { .. }) && e.to_string().contains("[N, 3, H, W]"),
        "{e}"
    );
    let mut x = Array4::zeros((1, 3, 8, 8));
    x[[0, 0, 0, 0]] = f32::INFINITY;
    assert!(m.forward(x.view()).is_err());
    assert_eq!(
        m.forward(Array4::zeros((2, 3, 1, 1)).view()).unwrap().dim(),
        (2, 1000)
    );
}

/// Index of the largest value of each row of a `[N, K]` f64 array.
fn argmax_rows_f64(a: &ndarray::ArrayD<f64>) -> Vec<usize> {
    a.outer_iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0
        })
        .collect()
}

/// f16 weights and activations (f32 arithmetic) on every timm fixture, both forms: the logits
/// within 1e-2 of the float64 reference and the same top-1 class for every image. Prints the
/// max |Δlogits| of each fixture and form (and the largest |logit|, for scale).
#[test]
fn timm_fixtures_in_f16_stay_within_1e_2_and_agree_on_top_1() {
    let Some(ctx) = test_context() else { return };
    if !ctx.has_f16() {
        // Must be refused with the typed error rather than run in f32.
        let cfg = RepVggConfig::custom([1, 1, 1, 1], 0.125, 0.0625).unwrap();
        let m = TrainModel::random(&cfg, 1).unwrap().fuse().unwrap();
        let opts = GpuOptions {
            precision: Precision::F16,
            ..GpuOptions::default()
        };
        let e = GpuModel::deploy(&ctx, &m, opts).unwrap_err();
        assert!(e.to_string().contains("SHADER_F16"), "{e}");
        eprintln!("{}: no SHADER_F16, f16 refused as expected", ctx.describe());
        return;
    }
    let opts = GpuOptions {
        precision: Precision::F16,
        ..GpuOptions::default()
    };
    let mut compared = 0;
    let mut worst = 0.0f64;
    for name in FIXTURES {
        let (io, x, train, deploy) = load_fixture(name);
        for (form, gm) in [
            ("train", GpuModel::train(&ctx, &train, opts).unwrap()),
            ("deploy", GpuModel::deploy(&ctx, &deploy, opts).unwrap()),
        ] {
            assert_eq!(gm.network().precision(), Precision::F16);
            let logits = gm.forward(x.view()).unwrap();
            let want = &io[&format!("{form}.logits")];
            let d = max_diff(&logits.clone().into_dyn(), want);
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let top_got = repvgg_model::argmax_rows(&logits);
            let top_want = argmax_rows_f64(want);
            let agree = top_got
                .iter()
                .zip(&top_want)
                .filter(|(a, b)| a == b)
                .count();
            eprintln!(
                "f16 {name} {form}: max |Δlogits| vs float64 {d:.3e} (max |logit| {scale:.2}), \
                 top-1 agreement {agree}/{}",
                top_want.len()
            );
            assert!(d <= 1e-2, "{name} {form} f16 logits: {d}");
            assert_eq!(top_got, top_want, "{name} {form} f16 top-1");
            worst = worst.max(d);
            compared += 1;
        }
    }
    eprintln!("timm fixtures, f16: worst max |Δlogits| vs float64 {worst:.3e}");
    assert_eq!(compared, 10);
}

/// The digits model in f16 on the GPU keeps PyTorch's test accuracy in both forms.
#[test]
fn digits_accuracy_is_unchanged_in_f16() {
    let Some(ctx) = test_context() else { return };
    if !ctx.has_f16() {
        eprintln!("{}: no SHADER_F16 (see the fixture test)", ctx.describe());
        return;
    }
    let train = digits::model().unwrap();
    let deploy = train.fuse().unwrap();
    let t = digits::test_set().unwrap();
    let opts = GpuOptions {
        precision: Precision::F16,
        ..GpuOptions::default()
    };
    let lt = GpuModel::train(&ctx, &train, opts)
        .unwrap()
        .forward(t.input.view())
        .unwrap();
    let ld = GpuModel::deploy(&ctx, &deploy, opts)
        .unwrap()
        .forward(t.input.view())
        .unwrap();
    let cpu = deploy.forward(t.input.view()).unwrap();
    let (at, ad) = (
        digits::accuracy(&lt, &t.labels),
        digits::accuracy(&ld, &t.labels),
    );
    eprintln!(
        "digits f16: accuracy train {at:.6}, deploy {ad:.6} (PyTorch {:.6}); max |Δlogits| vs \
         the f32 CPU forward: train {:.3e}, deploy {:.3e}",
        digits::PYTORCH_TEST_ACCURACY,
        max_abs_diff(&lt, &cpu),
        max_abs_diff(&ld, &cpu)
    );
    assert!(
        (at - digits::PYTORCH_TEST_ACCURACY).abs() < 1e-6,
        "train {at}"
    );
    assert!(
        (ad - digits::PYTORCH_TEST_ACCURACY).abs() < 1e-6,
        "deploy {ad}"
    );
}
