//! `repvgg demo`: the embedded digits model, fused, run in both forms, compared and timed;
//! with `--precision int8` also quantized (calibrated on its own test digits, or `--calib`) and
//! its int8 network compared with the f32 one on the digits it was not calibrated on.

use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array2, Array4, Axis, s};
use repvgg_model::quant::QuantOptions;
use repvgg_model::{Device, Engine, Form, Model, Precision, Runner, digits, max_abs_diff, summary};
use serde::Serialize;

use crate::DeviceArgs;
use crate::bench::{Row, print_rows, row};

#[derive(clap::Args, Debug)]
pub(crate) struct DemoArgs {
    #[command(flatten)]
    pub run: DeviceArgs,
    /// Batch sizes for the speed table.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub batch: Vec<usize>,
    /// Timed iterations per row.
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// One JSON object on stdout instead of the report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    device: String,
    adapter: String,
    /// f32, or f16 (GPU storage precision).
    precision: String,
    /// Why auto chose the CPU (`null` on a GPU or with an explicit `--device`).
    fallback_reason: Option<String>,
    /// Which device runs and why, one line.
    device_reason: String,
    test_images: usize,
    accuracy_train: f64,
    accuracy_deploy: f64,
    accuracy_pytorch: f64,
    max_abs_logit_diff: f32,
    max_abs_diff_vs_pytorch: f32,
    params_train: u64,
    params_deploy: u64,
    fuse_ms: f64,
    /// With `--precision int8`: the int8 network against the f32 deploy form.
    #[serde(skip_serializing_if = "Option::is_none")]
    int8: Option<Int8Report>,
    speed: Vec<Row>,
}

/// The int8 part of the demo's report.
#[derive(Debug, Serialize)]
struct Int8Report {
    /// What the activations were calibrated on.
    calibration: String,
    /// minmax, percentile or mse.
    method: String,
    /// The test digits not used for calibration, on which the rest is measured.
    held_out_images: usize,
    accuracy_f32: f64,
    accuracy_int8: f64,
    top1_agreement: f64,
    max_abs_logit_diff: f32,
    /// SQNR of the int8 logits against the f32 ones on the calibration images, dB.
    calibration_logits_sqnr_db: f64,
}

/// Test digits the int8 demo calibrates on (when no `--calib` is given).
const CALIB_DIGITS: usize = 64;

/// The digits model quantized for `--precision int8`: calibrated on `--calib` when given, else
/// on the first [`CALIB_DIGITS`] test digits. Returns the model, what it was calibrated on, the
/// index of the first test digit it was not calibrated on, and the calibration's logits SQNR.
fn quantize_digits(
    model: &Model,
    test: &digits::TestSet,
    a: &DemoArgs,
) -> Result<(Model, String, usize, f64)> {
    let (batches, what, first_held) = if a.run.calib.is_empty() {
        let n = CALIB_DIGITS.min(test.labels.len() / 2);
        let batches = test
            .input
            .slice(s![..n, .., .., ..])
            .axis_chunks_iter(Axis(0), 16)
            .map(|c| c.to_owned())
            .collect();
        (batches, format!("the first {n} test digits"), n)
    } else {
        let b = crate::quantize::calib_batches(model, &a.run.calib, a.run.calib_images)?;
        let n: usize = b.iter().map(|x| x.shape()[0]).sum();
        (b, format!("{n} --calib images"), 0)
    };
    let opts = QuantOptions {
        method: a.run.method,
        ..QuantOptions::default()
    };
    let (q, report) = model.quantize(&batches, &opts)?;
    Ok((q, what, first_held, report.logits_sqnr_db))
}

pub(crate) fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:24}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

pub(crate) fn run(a: &DemoArgs) -> Result<()> {
    let pb = spinner("loading the embedded digits model");
    let model = Model::digits()?;
    let t0 = Instant::now();
    let deploy = model.deploy_model()?;
    let fuse_ms = t0.elapsed().as_secs_f64() * 1e3;
    let test = digits::test_set()?;
    pb.set_message("choosing a device");
    let int8 = a.run.precision == Precision::Int8;
    // int8 runs on the CPU engine: `auto` picks it, as `Model::runner` does.
    let engine = if int8 && a.run.device == Device::Auto {
        Engine::cpu()
    } else {
        Engine::open(&a.run.device)?
    };
    let size = digits::INPUT_SIZE;
    let opts = a.run.options().tune_for(1, size, size);
    // The two forms run in f32 beside the int8 network.
    let float = if int8 {
        opts.clone().precision(Precision::F32)
    } else {
        opts.clone()
    };
    let train_r = model.runner_on(&engine, float.clone().form(Form::Train))?;
    let deploy_r = model.runner_on(&engine, float.form(Form::Deploy))?;
    let quantized = if int8 {
        pb.set_message("calibrating the int8 model");
        let (q, what, first_held, sqnr) = quantize_digits(&model, &test, a)?;
        let r = q.runner_on(&engine, opts.form(Form::Deploy))?;
        Some((r, what, first_held, sqnr))
    } else {
        None
    };
    for r in [&train_r, &deploy_r] {
        crate::report_tuning(r);
    }
    let device_reason = deploy_r.device().to_string();
    let fallback_reason = (a.run.device == Device::Auto && !engine.is_gpu())
        .then(|| device_reason.trim_start_matches("cpu: ").to_string());
    pb.set_message(format!(
        "classifying {} test digits on {}",
        test.labels.len(),
        deploy_r.adapter()
    ));
    let lt: Array2<f32> = train_r.run(test.input.view())?;
    let ld: Array2<f32> = deploy_r.run(test.input.view())?;
    let int8_report = match &quantized {
        Some((r, what, first_held, sqnr)) => {
            let li = r.run(test.input.view())?;
            let held = |l: &Array2<f32>| l.slice(s![*first_held.., ..]).to_owned();
            let (f, i) = (held(&ld), held(&li));
            let labels = &test.labels[*first_held..];
            let (pf, pi) = (repvgg_model::argmax_rows(&f), repvgg_model::argmax_rows(&i));
            Some(Int8Report {
                calibration: what.clone(),
                method: a.run.method.to_string(),
                held_out_images: labels.len(),
                accuracy_f32: digits::accuracy(&f, labels),
                accuracy_int8: digits::accuracy(&i, labels),
                top1_agreement: pf.iter().zip(&pi).filter(|(x, y)| x == y).count() as f64
                    / labels.len().max(1) as f64,
                max_abs_logit_diff: max_abs_diff(&f, &i),
                calibration_logits_sqnr_db: *sqnr,
            })
        }
        None => None,
    };
    let sum = summary::summarize(model.config(), digits::INPUT_SIZE, digits::INPUT_SIZE)?;

    let mut runners: Vec<&Runner> = vec![&train_r, &deploy_r];
    if let Some((r, ..)) = &quantized {
        runners.push(r);
    }
    let warmup = 2;
    pb.set_length((a.batch.len() * runners.len() * (a.iters + warmup)) as u64);
    pb.set_position(0);
    let mut speed = Vec::new();
    for &batch in &a.batch {
        anyhow::ensure!(batch > 0, "--batch: batch sizes must be at least 1");
        // Repeat the test digits to fill the batch.
        let n = test.input.shape()[0];
        let x = Array4::from_shape_fn(
            (batch, 1, digits::INPUT_SIZE, digits::INPUT_SIZE),
            |(b, c, y, xx)| test.input[[b % n, c, y, xx]],
        );
        for &r in &runners {
            pb.set_message(format!(
                "timing {} form ({}), batch {batch}",
                r.form(),
                r.precision()
            ));
            let timing = (warmup, a.iters, 0);
            let mut row = row(r, &engine, &x, timing, sum.macs, &mut || pb.inc(1))?;
            row.arch = "digits".into();
            speed.push(row);
        }
    }
    pb.finish_and_clear();

    let report = Report {
        device: engine.kind().into(),
        adapter: deploy_r.adapter(),
        precision: deploy_r.precision().to_string(),
        fallback_reason,
        device_reason,
        test_images: test.labels.len(),
        accuracy_train: digits::accuracy(&lt, &test.labels),
        accuracy_deploy: digits::accuracy(&ld, &test.labels),
        accuracy_pytorch: digits::PYTORCH_TEST_ACCURACY,
        max_abs_logit_diff: max_abs_diff(&lt, &ld),
        max_abs_diff_vs_pytorch: max_abs_diff(&lt, &test.torch_logits),
        params_train: sum.params_train,
        params_deploy: sum.params_deploy,
        fuse_ms,
        int8: int8_report,
        speed,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "RepVGG digits demo (embedded model: {} blocks, trained with timm on scikit-learn digits)",
        deploy.blocks().count()
    );
    println!("device: {}", report.device_reason);
    if deploy_r.precision() != Precision::F32 {
        println!(
            "precision: {} weights and activations on the GPU, f32 arithmetic",
            report.precision
        );
    }
    println!(
        "params: train form {} -> deploy form {} (fused in {:.1} ms)",
        report.params_train, report.params_deploy, report.fuse_ms
    );
    println!(
        "accuracy on {} held-out digits: train form {:.2}%, deploy form {:.2}% (PyTorch: {:.2}%)",
        report.test_images,
        100.0 * report.accuracy_train,
        100.0 * report.accuracy_deploy,
        100.0 * report.accuracy_pytorch
    );
    println!(
        "max |logits(train) - logits(deploy)| = {:.3e}; max |ours - PyTorch| = {:.3e}",
        report.max_abs_logit_diff, report.max_abs_diff_vs_pytorch
    );
    if let Some(q) = &report.int8 {
        println!(
            "int8 ({} calibration on {}): on the other {} digits, accuracy f32 {:.2}%, int8 \
             {:.2}%, top-1 agreement {:.2}%, max |logits(f32) - logits(int8)| = {:.3e}; \
             logits SQNR on the calibration images {:.1} dB",
            q.method,
            q.calibration,
            q.held_out_images,
            100.0 * q.accuracy_f32,
            100.0 * q.accuracy_int8,
            100.0 * q.top1_agreement,
            q.max_abs_logit_diff,
            q.calibration_logits_sqnr_db
        );
    }
    let first = test.images8.slice(s![0, .., ..]);
    let pred = repvgg_model::argmax_rows(&ld)[0];
    println!(
        "first test digit (label {}, predicted {pred}):",
        test.labels[0]
    );
    for row in first.outer_iter() {
        println!(
            "  {}",
            row.iter()
                .map(|&v| [' ', '.', ':', '*', '#'][(v / 4.0).round().clamp(0.0, 4.0) as usize])
                .collect::<String>()
        );
    }
    println!();
    print_rows(&report.speed, false)
}
