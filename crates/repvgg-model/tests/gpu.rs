//! Whole networks on the GPU (lavapipe in CI) against the CPU forward and the timm fixtures.
//! Without an adapter these skip with a message, unless `REPVGG_REQUIRE_GPU=1` (CI), where
//! they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

mod common;

use common::*;
use ndarray::Array4;
use repvgg_gpu::{ConvKernel, test_context};
use repvgg_model::gpu::{GpuModel, GpuOptions};
use repvgg_model::{
    LoadedModel, ModelError, RepVggConfig, TrainModel, checkpoint, digits, max_abs_diff,
};

const FEATS: GpuOptions = GpuOptions {
    kernel: ConvKernel::Tiled,
    features: true,
};

/// Every fixture in both forms with the main path and with Winograd F(2x2, 3x3) forced on every
/// 3x3 stride-1 conv; prints the worst logit / stage error of each.
#[test]
fn timm_fixtures_match_on_the_gpu_in_both_forms() {
    let Some(ctx) = test_context() else { return };
    let mut compared = 0;
    for kernel in [ConvKernel::Tiled, ConvKernel::Winograd] {
        let opts = GpuOptions { kernel, ..FEATS };
        let mut worst = 0.0f64;
        for name in [
            "a_narrow",
            "g4_narrow",
            "g4_odd",
            "d2se_narrow",
            "tiny_nonsquare",
        ] {
            let io = read_f64(&fixture(&format!("{name}.io.safetensors")));
            let x: Array4<f32> = io["input"]
                .mapv(|v| v as f32)
                .into_dimensionality()
                .unwrap();
            let LoadedModel::Train(train) =
                checkpoint::load(fixture(&format!("{name}.train.safetensors")))
                    .unwrap()
                    .model
            else {
                panic!("{name}: not train form")
            };
            let deploy = train.fuse().unwrap();
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
    assert_eq!(compared, 20);
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
        for kernel in [ConvKernel::Tiled, ConvKernel::Workgroup, ConvKernel::Naive] {
            let opts = GpuOptions {
                kernel,
                features: false,
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
