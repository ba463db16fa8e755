//! `repvgg bench`: train vs deploy form, median time, images/s, GFLOP/s, peak activations.

use std::time::Duration;

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array4;
use repvgg_gpu::ConvKernel;
use repvgg_model::{Block, RepVgg, RepVggConfig, TrainModel, summary};
use serde::Serialize;

use crate::engine::{Engine, Form, gpu_context};
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
    /// GPU convolution kernel: tiled (main path) or naive (one output per invocation, baseline).
    #[arg(long, value_enum, default_value_t = KernelArg::Tiled)]
    pub kernel: KernelArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum KernelArg {
    Tiled,
    Workgroup,
    Subgroup,
    Naive,
}

impl From<KernelArg> for ConvKernel {
    fn from(k: KernelArg) -> Self {
        match k {
            KernelArg::Tiled => ConvKernel::Tiled,
            KernelArg::Workgroup => ConvKernel::Workgroup,
            KernelArg::Subgroup => ConvKernel::Subgroup,
            KernelArg::Naive => ConvKernel::Naive,
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
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub median_ms: f64,
    pub images_per_s: f64,
    pub gflops: f64,
    pub peak_activation_bytes: u64,
}

pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Peak bytes of live activations in a plain CPU forward: the largest input + output pair of a
/// block, plus the multi-branch form's per-branch temporaries.
pub(crate) fn cpu_peak_activation_bytes<B: Block>(
    m: &RepVgg<B>,
    batch: usize,
    h: usize,
    w: usize,
    branches: usize,
) -> u64 {
    let (mut hh, mut ww, mut cin) = (h, w, m.config.in_channels);
    let mut peak = 0u64;
    for b in m.blocks() {
        let s = b.spec();
        hh = hh.saturating_sub(1) / s.stride + 1;
        ww = ww.saturating_sub(1) / s.stride + 1;
        let input = (batch * cin * (hh * s.stride) * (ww * s.stride)) as u64;
        let out = (batch * s.out_channels * hh * ww) as u64;
        peak = peak.max(4 * (input + out * branches as u64));
        cin = s.out_channels;
    }
    peak
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
        DeviceArg::Cpu => Engine::Cpu {
            train: Some(&train),
            deploy: Some(&deploy),
        },
        DeviceArg::Gpu => {
            let (ctx, adapter) = gpu_context()?;
            let want = |f: Form| forms.contains(&f);
            Engine::gpu(
                &ctx,
                adapter,
                want(Form::Train).then_some(&train),
                want(Form::Deploy).then_some(&deploy),
                a.kernel.into(),
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
                batch,
                height: h,
                width: w,
                median_ms: med * 1e3,
                images_per_s: batch as f64 / med,
                gflops: 2.0 * macs as f64 * batch as f64 / med / 1e9,
                peak_activation_bytes: engine.peak_activation_bytes(form, batch, h, w)?,
            });
        }
    }
    pb.finish_and_clear();
    print_rows(&rows, a.json)
}

pub(crate) fn print_rows(rows: &[Row], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    println!(
        "{:<6} {:<28} {:<6} {:<7} {:>6} {:>11} {:>10} {:>9} {:>14}",
        "device",
        "adapter",
        "arch",
        "form",
        "batch",
        "median_ms",
        "images/s",
        "GFLOP/s",
        "peak_act_MiB"
    );
    for r in rows {
        println!(
            "{:<6} {:<28} {:<6} {:<7} {:>6} {:>11.2} {:>10.1} {:>9.1} {:>14.1}",
            r.device,
            r.adapter.chars().take(28).collect::<String>(),
            r.arch,
            r.form,
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
        }
    }
    Ok(())
}
