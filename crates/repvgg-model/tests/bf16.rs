//! Bf16 on the CPU end to end: the digits model's accuracy, the timm fixtures' logits against
//! timm's f32 ones, and the errors a user meets. On a CPU without AMX-BF16 every runner is
//! refused with what the CPU lacks, which is what these tests then check.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use common::{fixture, manifest, read_f64};
use ndarray::{Array2, Array4};
use repvgg_model::cpu::Bf16Kernel;
use repvgg_model::{Device, Form, Model, Precision, RepVggConfig, RunOptions, TrainModel, digits};

fn bf16() -> RunOptions {
    RunOptions::default()
        .device(Device::Cpu)
        .precision(Precision::Bf16)
}

/// Whether this machine runs bf16; when not, the refusal names what the CPU or OS lacks.
fn runs_here() -> bool {
    let model = Model::digits().unwrap();
    match model.runner(bf16()) {
        Ok(r) => {
            assert_eq!(r.precision(), Precision::Bf16);
            assert!(r.adapter().contains("bf16"), "{}", r.adapter());
            true
        }
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("precision bf16") && e.contains("neither"), "{e}");
            false
        }
    }
}

/// `|a - b|_2 / |b|_2` over all logits.
fn rel_l2(a: &Array2<f32>, b: &Array2<f64>) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - y).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

#[test]
fn digits_bf16_accuracy_is_within_half_a_point_of_f32() {
    if !runs_here() {
        return;
    }
    let model = Model::digits().unwrap();
    let t = digits::test_set().unwrap();
    let f = model
        .runner(RunOptions::default().device(Device::Cpu))
        .unwrap()
        .run(t.input.view())
        .unwrap();
    let b = model.runner(bf16()).unwrap().run(t.input.view()).unwrap();
    let (af, ab) = (
        digits::accuracy(&f, &t.labels),
        digits::accuracy(&b, &t.labels),
    );
    let agree = repvgg_model::argmax_rows(&f)
        .iter()
        .zip(&repvgg_model::argmax_rows(&b))
        .filter(|(x, y)| x == y)
        .count() as f64
        / t.labels.len() as f64;
    eprintln!(
        "digits: f32 {:.2}%, bf16 {:.2}%, top-1 agreement {:.2}% over {} images",
        100.0 * af,
        100.0 * ab,
        100.0 * agree,
        t.labels.len()
    );
    assert!(af - ab <= 0.005, "bf16 {ab} vs f32 {af}");
    assert!(agree >= 0.98, "top-1 agreement {agree}");
}

/// Each fixture's deployed form in bf16 against timm's f32 logits: within a relative L2 error
/// of 2^-6 (bf16 keeps 8 significant bits; some 20 layers of rounding add up), and the same
/// top-1 class wherever timm's top two logits are apart by more than that error. Squeeze-excite
/// fixtures are refused by name.
#[test]
fn timm_fixtures_in_bf16_stay_near_timm_f32() {
    if !runs_here() {
        return;
    }
    let m = manifest();
    let mut checked = 0;
    for f in m["fixtures"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        let Some(file) = f["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["form"] == "deploy" || x["form"] == "train")
            .map(|x| x["file"].as_str().unwrap().to_string())
        else {
            continue;
        };
        let io = read_f64(&fixture(&format!("{name}.io.safetensors")));
        let input: Array4<f32> = io["input"]
            .mapv(|v| v as f32)
            .into_dimensionality()
            .unwrap();
        let want: Array2<f64> = io["deploy.logits"].clone().into_dimensionality().unwrap();
        let model = Model::load(fixture(&file)).unwrap();
        for kernel in Bf16Kernel::available() {
            let runner = match model.runner(bf16().bf16_kernel(Some(kernel))) {
                Ok(r) => r,
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.contains("squeeze-excite"), "{name}: {e}");
                    continue;
                }
            };
            let got = runner.run(input.view()).unwrap();
            let err = rel_l2(&got, &want);
            eprintln!("{name} ({kernel}): bf16 relative L2 error {err:.4}");
            assert!(err <= 1.0 / 64.0, "{name}: relative L2 error {err}");
            for (g, w) in got.rows().into_iter().zip(want.rows()) {
                let mut sorted: Vec<f64> = w.to_vec();
                sorted.sort_by(|a, b| b.total_cmp(a));
                let scale = w.iter().map(|v| v * v).sum::<f64>().sqrt();
                if sorted.len() > 1 && sorted[0] - sorted[1] > 2.0 * err * scale {
                    let top =
                        |r: &[f64]| (0..r.len()).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap();
                    let g: Vec<f64> = g.iter().map(|&v| f64::from(v)).collect();
                    assert_eq!(top(&g), top(&w.to_vec()), "{name}: top-1 class");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} fixture runs in bf16");
}

#[test]
fn bf16_refuses_the_train_form_and_squeeze_excite_by_name() {
    if !runs_here() {
        return;
    }
    let model = Model::digits().unwrap();
    let e = model
        .runner(bf16().form(Form::Train))
        .unwrap_err()
        .to_string();
    assert!(e.contains("deployed form"), "{e}");
    let se = Model::from(
        TrainModel::random(
            &RepVggConfig::custom([1, 1, 1, 1], 0.25, 0.25)
                .unwrap()
                .with_se(4)
                .unwrap(),
            1,
        )
        .unwrap(),
    );
    let e = se.runner(bf16()).unwrap_err().to_string();
    assert!(e.contains("squeeze-excite"), "{e}");
    // Non-finite inputs are refused, not turned into garbage logits.
    let r = model.runner(bf16()).unwrap();
    let mut x = digits::test_set().unwrap().input;
    x[[0, 0, 3, 3]] = f32::INFINITY;
    let e = r.run(x.view()).unwrap_err().to_string();
    assert!(e.contains("NaN or inf") || e.contains("finite"), "{e}");
}
