//! `repvgg bench`: train vs deploy form, median time, images/s, GFLOP/s, peak activations.

use std::time::Duration;

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array4;
use repvgg_gpu::ConvKernel;
use repvgg_model::cpu::{ConvAlgo, Tile};
use repvgg_model::{RepVggConfig, TrainModel, summary};
use serde::Serialize;

use crate::engine::{Engine, Form, PrecisionArg, check_cpu_precision, gpu_context};
use crate::{DeviceArg, parse_size};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BenchForm {
    Train,
    Deploy,
    Both,
}

#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    #[arg(long, default_value = "a0")]
    pub arch: String,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub batch: Vec<usize>,
    #[arg(long, default_value = "224", value_parser = parse_size)]
    pub size: (usize, usize),
    #[arg(long, value_enum, default_value_t = BenchForm::Both)]
    pub form: BenchForm,
    /// Timed iterations per row (after warm-up).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long)]
    pub json: bool,
    /// CPU convolution algorithm, for A/B runs: auto (Winograd F(4x4) where it pays, GEMM
    /// elsewhere), f4 / f2 (Winograd with that tile for every 3x3 stride-1 conv) or gemm.
    #[arg(long, value_enum, default_value_t = CpuAlgoArg::Auto)]
    pub cpu_algo: CpuAlgoArg,
    /// GPU convolution kernel: tiled (main path: per layer and adapter; on lavapipe in f32
    /// Winograd F(4x4) for 3x3 stride-1 convs of 48+ channels), or force gemm, workgroup,
    /// subgroup, naive (one output per invocation, the baseline), winograd (F(2x2, 3x3) for
    /// every 3x3 stride-1 conv, the rest as tiled) or winograd4 (F(4x4, 3x3) likewise).
    #[arg(long, value_enum, default_value_t = KernelArg::Tiled)]
    pub kernel: KernelArg,
    /// GPU storage precision: f32, or f16 weights and activations with f32 arithmetic (needs
    /// the adapter's SHADER_F16; not with --kernel workgroup or naive).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
    /// Also print a per-layer table: time, GFLOP/s, share of the run and the kernel or algorithm
    /// of every layer (GPU: timestamp queries, on stderr with --json; CPU: median wall time of
    /// each op over the timed iterations).
    #[arg(long)]
    pub profile: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum CpuAlgoArg {
    Auto,
    F4,
    F2,
    Gemm,
}

impl From<CpuAlgoArg> for ConvAlgo {
    fn from(a: CpuAlgoArg) -> Self {
        match a {
            CpuAlgoArg::Auto => ConvAlgo::Auto,
            CpuAlgoArg::F4 => ConvAlgo::Winograd(Tile::F4),
            CpuAlgoArg::F2 => ConvAlgo::Winograd(Tile::F2),
            CpuAlgoArg::Gemm => ConvAlgo::Gemm,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum KernelArg {
    Tiled,
    Gemm,
    /// The gemm kernel with every conv's sum split over K (A/B runs of split-K).
    SplitK,
    Workgroup,
    Subgroup,
    Naive,
    /// Winograd F(2x2, 3x3) on every 3x3 stride-1 conv.
    Winograd,
    /// Winograd F(4x4, 3x3) on every 3x3 stride-1 conv.
    Winograd4,
}

impl From<KernelArg> for ConvKernel {
    fn from(k: KernelArg) -> Self {
        match k {
            KernelArg::Tiled => ConvKernel::Tiled,
            KernelArg::Gemm => ConvKernel::Gemm,
            KernelArg::SplitK => ConvKernel::SplitK,
            KernelArg::Workgroup => ConvKernel::Workgroup,
            KernelArg::Subgroup => ConvKernel::Subgroup,
            KernelArg::Naive => ConvKernel::Naive,
            KernelArg::Winograd => ConvKernel::Winograd,
            KernelArg::Winograd4 => ConvKernel::Winograd4,
        }
    }
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

pub(crate) fn run(a: &BenchArgs) -> Result<()> {
    let config = RepVggConfig::by_name(&a.arch)?;
    let (h, w) = a.size;
    if a.batch.contains(&0) {
        bail!("--batch: batch sizes must be at least 1");
    }
    let macs = summary::summarize(&config, h, w)?.macs;
    let train = TrainModel::random(&config, 0)?;
    let deploy = train.fuse()?;
    let forms: Vec<Form> = match a.form {
        BenchForm::Train => vec![Form::Train],
        BenchForm::Deploy => vec![Form::Deploy],
        BenchForm::Both => vec![Form::Train, Form::Deploy],
    };
    let engine = match a.device {
        DeviceArg::Cpu => {
            check_cpu_precision(a.precision)?;
            Engine::cpu_with(
                forms.contains(&Form::Train).then_some(&train),
                forms.contains(&Form::Deploy).then_some(&deploy),
                a.cpu_algo.into(),
            )?
        }
        DeviceArg::Gpu => {
            let (ctx, adapter) = gpu_context()?;
            let want = |f: Form| forms.contains(&f);
            Engine::gpu(
                &ctx,
                adapter,
                want(Form::Train).then_some(&train),
                want(Form::Deploy).then_some(&deploy),
                a.kernel.into(),
                a.precision.into(),
            )?
        }
    };
    let total = (a.batch.len() * forms.len() * (a.iters + a.warmup)) as u64;
    let pb = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rows = Vec::new();
    for &batch in &a.batch {
        let x = Array4::from_shape_fn((batch, config.in_channels, h, w), |(n, c, y, xx)| {
            ((n + 3 * c + 5 * y + 7 * xx) % 17) as f32 / 8.5 - 1.0
        });
        for &form in &forms {
            pb.set_message(format!(
                "{} {} {} b{batch}",
                engine.device(),
                config.name,
                form.name()
            ));
            let med =
                median(engine.time(form, &x, a.warmup, a.iters, &|| pb.inc(1))?).as_secs_f64();
            rows.push(Row {
                device: engine.device().into(),
                adapter: engine.adapter(),
                arch: config.name.clone(),
                form: form.name().into(),
                precision: engine.precision().to_string(),
                batch,
                height: h,
                width: w,
                median_ms: med * 1e3,
                images_per_s: batch as f64 / med,
                gflops: 2.0 * macs as f64 * batch as f64 / med / 1e9,
                peak_activation_bytes: engine.peak_activation_bytes(form, batch, h, w)?,
                executed_macs: engine.executed_macs(form, batch, h, w)?,
            });
        }
    }
    pb.finish_and_clear();
    print_rows(&rows, a.json)?;
    if a.profile && a.device == DeviceArg::Gpu {
        let shape = (h, w);
        crate::engine::print_profiles(&engine, &forms, &a.batch, shape, a.warmup, a.iters, a.json)?;
    } else if a.profile {
        for &batch in &a.batch {
            let x = Array4::from_shape_fn((batch, config.in_channels, h, w), |(n, c, y, xx)| {
                ((n + 3 * c + 5 * y + 7 * xx) % 17) as f32 / 8.5 - 1.0
            });
            for &form in &forms {
                let runs = (0..a.iters.max(1))
                    .map(|_| engine.profile(form, &x))
                    .collect::<Result<Vec<_>>>()?;
                print_profile(&config.name, form.name(), batch, &runs);
            }
        }
    }
    Ok(())
}

/// The per-layer table: median time of each op over `runs`.
fn print_profile(arch: &str, form: &str, batch: usize, runs: &[Vec<repvgg_model::cpu::OpTime>]) {
    let Some(first) = runs.first() else { return };
    let med: Vec<f64> = (0..first.len())
        .map(|i| {
            let mut v: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.get(i).map(|t| t.seconds))
                .collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        })
        .collect();
    let total: f64 = med.iter().sum();
    println!(
        "\n{arch} {form} batch {batch}: per-layer profile (median of {} runs), {:.2} ms in all",
        runs.len(),
        total * 1e3
    );
    println!(
        "{:>3} {:<48} {:>9} {:>9} {:>7}",
        "#", "op", "ms", "GFLOP/s", "share"
    );
    for (i, (t, s)) in first.iter().zip(&med).enumerate() {
        let gf = if *s > 0.0 && t.flops > 0 {
            t.flops as f64 / s / 1e9
        } else {
            0.0
        };
        println!(
            "{:>3} {:<48} {:>9.3} {:>9.1} {:>6.1}%",
            i,
            t.op,
            s * 1e3,
            gf,
            100.0 * s / total.max(1e-12)
        );
    }
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
