//! `repvgg bench`: train vs deploy form, median time, images/s, GFLOP/s, peak activations.

use std::time::Duration;

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array4;
use repvgg_model::cpu::ConvAlgo;
use repvgg_model::cpu::{Bf16Kernel, Int8Kernel};
use repvgg_model::gpu::ConvKernel;
use repvgg_model::quant::QuantOptions;
use repvgg_model::{
    Device, Engine, Form, Model, Precision, RepVggConfig, Runner, TrainModel, summary,
};
use serde::Serialize;

use crate::{DeviceArgs, parse_size};

/// `--form`: train, deploy, or both (train first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Forms(pub Vec<Form>);

pub(crate) fn parse_forms(s: &str) -> Result<Forms, String> {
    if s.trim().eq_ignore_ascii_case("both") {
        return Ok(Forms(Form::ALL.to_vec()));
    }
    s.parse::<Form>()
        .map(|f| Forms(vec![f]))
        .map_err(|e| format!("{e} (or both)"))
}

#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    pub run: DeviceArgs,
    #[arg(long, default_value = "a0")]
    pub arch: String,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub batch: Vec<usize>,
    #[arg(long, default_value = "224", value_parser = parse_size)]
    pub size: (usize, usize),
    /// train, deploy or both.
    #[arg(long, default_value = "both", value_parser = parse_forms)]
    pub form: Forms,
    /// Timed iterations per row (after warm-up).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Untimed runs before the timed ones.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// On the CPU engine, also keep running untimed for at least this many milliseconds before
    /// timing: after idle this machine's cores take some 100 ms of load to reach full speed,
    /// which a few warm-up runs at batch 1 do not cover.
    #[arg(long, default_value_t = 300)]
    pub warmup_ms: u64,
    #[arg(long)]
    pub json: bool,
    /// CPU convolution algorithm, for A/B runs: auto (chosen per layer; see docs/benchmarks.md),
    /// f4 / f2 (Winograd with that tile for every 3x3 stride-1 conv) or gemm.
    #[arg(long, default_value_t = ConvAlgo::Auto)]
    pub cpu_algo: ConvAlgo,
    /// GPU convolution kernel: auto (chosen per layer and adapter: tuned, or the rules; see
    /// docs/gpu.md), or force
    /// gemm, split-k, workgroup, subgroup, naive (one output per invocation, the baseline),
    /// winograd (F(2x2, 3x3) for every 3x3 stride-1 conv, the rest as auto) or winograd4
    /// (F(4x4, 3x3) likewise).
    #[arg(long, default_value_t = ConvKernel::Auto)]
    pub kernel: ConvKernel,
    /// Also print a per-layer table: time, GFLOP/s, share of the run and the kernel or algorithm
    /// of every layer (GPU: timestamp queries, on stderr with --json; CPU: median wall time of
    /// each op over the timed iterations).
    #[arg(long)]
    pub profile: bool,
    /// The int8 GEMM's instruction set with --precision int8, for A/B runs: vnni, avx2 or
    /// scalar (default: the fastest this CPU has).
    #[arg(long)]
    pub int8_kernel: Option<Int8Kernel>,
    /// The bf16 convs' instruction set with --precision bf16, for A/B runs: amx or avx512-bf16
    /// (default: the fastest this CPU has).
    #[arg(long)]
    pub bf16_kernel: Option<Bf16Kernel>,
}

/// Standard normal values (Box-Muller over a fixed LCG), `seed` choosing the stream.
pub(crate) fn random_normal(shape: (usize, usize, usize, usize), seed: u64) -> Array4<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    Array4::from_shape_simple_fn(shape, || {
        let (u, v) = (uniform(), uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    })
}

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub device: String,
    pub adapter: String,
    pub arch: String,
    pub form: String,
    /// f32, or f16 (GPU storage precision).
    pub precision: String,
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub median_ms: f64,
    pub images_per_s: f64,
    pub gflops: f64,
    pub peak_activation_bytes: u64,
    /// Multiply-adds the CPU engine executes for the batch, Winograd convs counted in the
    /// transformed domain (`gflops` counts every conv as direct); absent on the GPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executed_macs: Option<u64>,
}

pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// A deterministic batch in [-1, 1).
pub(crate) fn synthetic_batch(batch: usize, c: usize, h: usize, w: usize) -> Array4<f32> {
    Array4::from_shape_fn((batch, c, h, w), |(n, c, y, xx)| {
        ((n + 3 * c + 5 * y + 7 * xx) % 17) as f32 / 8.5 - 1.0
    })
}

/// One timed row of `runner` on `x`.
pub(crate) fn row(
    runner: &Runner,
    engine: &Engine,
    x: &Array4<f32>,
    (warmup, iters, warmup_ms): (usize, usize, u64),
    macs: u64,
    tick: &mut dyn FnMut(),
) -> Result<Row> {
    let (batch, _, h, w) = x.dim();
    if engine.kind() == "cpu" {
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(warmup_ms) {
            std::hint::black_box(runner.run(x.view())?);
        }
    }
    let med = median(runner.time(x.view(), warmup, iters, tick)?).as_secs_f64();
    Ok(Row {
        device: engine.kind().into(),
        adapter: runner.adapter(),
        arch: runner.config().name.clone(),
        form: runner.form().to_string(),
        precision: runner.precision().to_string(),
        batch,
        height: h,
        width: w,
        median_ms: med * 1e3,
        images_per_s: batch as f64 / med,
        gflops: 2.0 * macs as f64 * batch as f64 / med / 1e9,
        peak_activation_bytes: runner.peak_activation_bytes(batch, h, w)?,
        executed_macs: runner.executed_macs(batch, h, w)?,
    })
}

pub(crate) fn run(a: &BenchArgs) -> Result<()> {
    let config = RepVggConfig::by_name(&a.arch)?;
    let (h, w) = a.size;
    if a.batch.contains(&0) {
        bail!("--batch: batch sizes must be at least 1");
    }
    let macs = summary::summarize(&config, h, w)?.macs;
    let mut model = Model::from(TrainModel::random(&config, 0)?);
    if a.run.precision == Precision::Int8 {
        // Random weights calibrated on random inputs, as the peers' int8 benchmark does.
        let batches: Vec<Array4<f32>> = (0..2)
            .map(|i| random_normal((8, config.in_channels, h, w), i))
            .collect();
        let opts = QuantOptions {
            method: a.run.method,
            ..QuantOptions::default()
        };
        model = model.quantize(&batches, &opts)?.0;
    }
    // Reduced precisions run the fused network only: `both` (the default) times it alone.
    let forms: Vec<Form> =
        if matches!(a.run.precision, Precision::Int8 | Precision::Bf16) && a.form.0.len() > 1 {
            eprintln!(
                "precision {}: timing the deployed form only (the train form runs in f32)",
                a.run.precision
            );
            vec![Form::Deploy]
        } else {
            a.form.0.clone()
        };
    let engine = match (&a.run.device, a.run.precision) {
        (Device::Auto, Precision::Int8 | Precision::Bf16) => Engine::cpu(),
        (d, _) => Engine::open(d)?,
    };
    let opts = a
        .run
        .options()
        .cpu_algo(a.cpu_algo)
        .gpu_kernel(a.kernel)
        .int8_kernel(a.int8_kernel)
        .bf16_kernel(a.bf16_kernel);
    // One runner per batch and form: the GPU engine tunes its kernels for that batch.
    let runners = a
        .batch
        .iter()
        .map(|&batch| {
            forms
                .iter()
                .map(|&f| {
                    let r = model.runner_on(&engine, opts.clone().form(f).tune_for(batch, h, w))?;
                    crate::report_tuning(&r);
                    Ok(r)
                })
                .collect::<repvgg_model::Result<Vec<_>>>()
        })
        .collect::<repvgg_model::Result<Vec<_>>>()?;
    let total = (a.batch.len() * forms.len() * (a.iters + a.warmup)) as u64;
    let pb = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let inputs: Vec<Array4<f32>> = a
        .batch
        .iter()
        .map(|&batch| synthetic_batch(batch, config.in_channels, h, w))
        .collect();
    let mut rows = Vec::new();
    for ((&batch, x), runners) in a.batch.iter().zip(&inputs).zip(&runners) {
        for r in runners {
            pb.set_message(format!(
                "{} {} {} b{batch}",
                engine.kind(),
                config.name,
                r.form()
            ));
            let timing = (a.warmup, a.iters, a.warmup_ms);
            rows.push(row(r, &engine, x, timing, macs, &mut || pb.inc(1))?);
        }
    }
    pb.finish_and_clear();
    print_rows(&rows, a.json)?;
    if a.profile {
        for ((&batch, x), runners) in a.batch.iter().zip(&inputs).zip(&runners) {
            for r in runners {
                let p = r.profile(x.view(), a.warmup, a.iters)?;
                let form = r.form().to_string();
                crate::profile::print(&p, &config.name, &form, batch, (h, w), a.json);
                if let Some(t) = r.tuning_report() {
                    let line = format!("tuning's network check: {}", t.network);
                    if a.json {
                        eprintln!("{line}");
                    } else {
                        println!("{line}");
                    }
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn print_rows(rows: &[Row], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    println!(
        "{:<6} {:<28} {:<6} {:<7} {:<4} {:>6} {:>11} {:>10} {:>9} {:>14}",
        "device",
        "adapter",
        "arch",
        "form",
        "prec",
        "batch",
        "median_ms",
        "images/s",
        "GFLOP/s",
        "peak_act_MiB"
    );
    for r in rows {
        println!(
            "{:<6} {:<28} {:<6} {:<7} {:<4} {:>6} {:>11.2} {:>10.1} {:>9.1} {:>14.1}",
            r.device,
            r.adapter.chars().take(28).collect::<String>(),
            r.arch,
            r.form,
            r.precision,
            r.batch,
            r.median_ms,
            r.images_per_s,
            r.gflops,
            r.peak_activation_bytes as f64 / (1 << 20) as f64
        );
    }
    for pair in rows.chunks(2) {
        if let [t, d] = pair
            && t.form == "train"
            && d.form == "deploy"
        {
            println!(
                "batch {}: deploy is {:.2}x the train form's images/s",
                t.batch,
                d.images_per_s / t.images_per_s
            );
            if let (Some(tm), Some(dm)) = (t.executed_macs, d.executed_macs) {
                println!(
                    "batch {}: the train form executes {:.2}x the deploy form's multiply-adds \
                     ({} vs {}; Winograd convs counted in the transformed domain)",
                    t.batch,
                    tm as f64 / dm.max(1) as f64,
                    count(tm),
                    count(dm)
                );
            }
        }
    }
    Ok(())
}

/// A count in G or M, three significant digits or more: `0.848 G`, `4.13 M`.
fn count(n: u64) -> String {
    let n = n as f64;
    if n >= 1e8 {
        format!("{:.3} G", n / 1e9)
    } else {
        format!("{:.3} M", n / 1e6)
    }
}
