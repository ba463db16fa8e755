//! `repvgg`: run, fuse, convert and inspect RepVGG models.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use ndarray::ArrayD;
use repvgg_model::gpu::Tuning;
use repvgg_model::{
    Device, Engine, Features, Form, Model, Naming, Precision, RepVggConfig, RunOptions, summary,
    tensor_io,
};

mod bench;
mod classify;
mod demo;
mod export;
mod profile;
mod quantize;
mod tune;

#[derive(Parser, Debug)]
#[command(
    name = "repvgg",
    version,
    about = "RepVGG re-parameterization and inference"
)]
struct Cli {
    /// CPU worker threads (default: RAYON_NUM_THREADS, else every core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a checkpoint on an input tensor file and write the logits (and stage outputs).
    Infer(InferArgs),
    /// Fuse a checkpoint and save the deployed form (safetensors, or ONNX for `--output X.onnx`).
    Convert(ConvertArgs),
    /// Fuse a checkpoint and write it as an ONNX model (dynamic batch, input `input`, output
    /// `logits`); an int8 file as ONNX QDQ.
    Export(export::ExportArgs),
    /// Parameters, multiply-adds and a per-layer table of a variant or a checkpoint.
    Summary(SummaryArgs),
    /// The GPU adapter this machine would use (backend, driver, features, limits).
    Info,
    /// Time train vs deploy form on the CPU or GPU.
    Bench(bench::BenchArgs),
    /// Time every GPU conv candidate of a variant's layers on this adapter ahead of time, keep
    /// the fastest in the tuning cache (where the whole network is faster with them than with
    /// the hand rules' choices), and print each shape's candidates and times.
    Tune(tune::TuneArgs),
    /// The embedded digits model: fuse, classify on the GPU (or CPU), compare forms, time them.
    Demo(demo::DemoArgs),
    /// Top-k classes of images, folders or globs: the embedded digits model, or ImageNet weights.
    Classify(classify::ClassifyArgs),
    /// Calibrate a checkpoint on images and write its int8 model (safetensors), with a
    /// per-layer report of the quantization's error.
    Quantize(quantize::QuantizeArgs),
}

/// The options every command that runs a model shares.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct DeviceArgs {
    /// auto: a hardware GPU when there is one, else the CPU engine (a software adapter such as
    /// lavapipe only with `gpu`); cpu; gpu; or gpu:NAME, the first adapter whose name contains
    /// NAME. The output says which device ran and why.
    #[arg(long, default_value_t = Device::Auto)]
    pub device: Device,
    /// Precision: f32; f16 weights and activations with f32 arithmetic (GPUs with
    /// SHADER_F16); int8 (CPU: an int8 file from `repvgg quantize`, or --calib images); bf16
    /// (CPU, deploy form: bf16 weights and activations, f32 sums, on CPUs with Intel AMX-BF16
    /// or AVX512-BF16; elsewhere the error names what the CPU lacks). Inputs and outputs are f32
    /// either way.
    #[arg(long, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// With --precision int8 and an f32 model: calibration images (files, folders, globs), or
    /// `.safetensors` files of preprocessed inputs.
    #[arg(long, num_args = 1..)]
    pub calib: Vec<PathBuf>,
    /// How many --calib images to use.
    #[arg(long, default_value_t = 64)]
    pub calib_images: usize,
    /// How --calib chooses activation clips: minmax, percentile or mse.
    #[arg(long, default_value_t = repvgg_model::CalibMethod::MinMax)]
    pub method: repvgg_model::CalibMethod,
    /// GPU kernel tuning: cached (time each conv shape once per adapter, within
    /// --tuning-budget, check the choices on the whole network against the hand rules', and
    /// reuse both from the cache directory), force (time again) or off (the hand rules). See
    /// `repvgg tune`.
    #[arg(long, default_value_t = Tuning::Cached)]
    pub tuning: Tuning,
    /// Seconds tuning may spend timing per network (a candidate started is timed to its end).
    #[arg(long, default_value_t = repvgg_model::gpu::DEFAULT_TUNING_BUDGET.as_secs_f64())]
    pub tuning_budget: f64,
}

impl DeviceArgs {
    pub fn options(&self) -> RunOptions {
        RunOptions::default()
            .device(self.device.clone())
            .precision(self.precision)
            .tuning(self.tuning)
            .tuning_budget(Duration::from_secs_f64(self.tuning_budget.clamp(0.0, 1e6)))
    }
}

/// One line on stderr saying what tuning did for `runner`, where it timed or skipped shapes
/// or checked its choices on the whole network (the line ends with that check's verdict).
pub(crate) fn report_tuning(runner: &repvgg_model::Runner) {
    if let Some(r) = runner.tuning_report()
        && (!r.tuned.is_empty()
            || r.untuned > 0
            || matches!(r.network, repvgg_model::gpu::NetworkCheck::Measured { .. }))
    {
        eprintln!("{} form: {r}", runner.form());
    }
}

#[derive(clap::Args, Debug)]
struct InferArgs {
    /// Checkpoint (.safetensors or PyTorch .pth/.pt), timm or official naming, train or deploy form.
    #[arg(long)]
    weights: PathBuf,
    /// Input tensor file: `input` [N, C, H, W] f32, or the file's only tensor.
    #[arg(long)]
    input: PathBuf,
    /// Where to write `logits` (and `stage0`..`stageN` with --features).
    #[arg(long)]
    output: PathBuf,
    /// deploy (default) fuses a train-form file at load; train runs the multi-branch form.
    #[arg(long, default_value_t = Form::Deploy)]
    form: Form,
    #[command(flatten)]
    run: DeviceArgs,
    /// Also write every stage's output (stage0 = stem).
    #[arg(long)]
    features: bool,
}

#[derive(clap::Args, Debug)]
struct ConvertArgs {
    #[arg(long)]
    weights: PathBuf,
    #[arg(long)]
    output: PathBuf,
    /// Key naming of the written file: timm or official.
    #[arg(long, default_value_t = Naming::Timm)]
    naming: Naming,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["arch", "weights"])))]
struct SummaryArgs {
    /// A named variant: a0, a1, a2, b0, b1, b1g2, b1g4, b2, b2g2, b2g4, b3, b3g2, b3g4, d2se.
    #[arg(long)]
    arch: Option<String>,
    /// A checkpoint whose architecture is inferred.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Input size, `S` or `HxW`.
    #[arg(long, default_value = "224", value_parser = parse_size)]
    size: (usize, usize),
    #[arg(long)]
    json: bool,
}

/// Parses `224` or `224x160`.
pub(crate) fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let parse = |v: &str| v.trim().parse::<usize>().ok().filter(|&n| n > 0);
    match s.split_once(['x', 'X']) {
        Some((h, w)) => match (parse(h), parse(w)) {
            (Some(h), Some(w)) => Ok((h, w)),
            _ => Err(format!(
                "`{s}`: expected HxW with positive integers, e.g. 224x160"
            )),
        },
        None => parse(s)
            .map(|n| (n, n))
            .ok_or_else(|| format!("`{s}`: expected a positive integer or HxW")),
    }
}

fn infer(a: &InferArgs) -> Result<()> {
    let model = quantize::prepare(Model::load(&a.weights)?, &a.run)?;
    let x = tensor_io::read_input(&a.input)?;
    let runner = model.runner(a.run.options().form(a.form))?;
    let feats = if a.features {
        runner.run_features(x.view())
    } else {
        runner.run(x.view()).map(|logits| Features {
            stages: Vec::new(),
            logits,
        })
    }
    .with_context(|| format!("running {} on {}", a.weights.display(), a.input.display()))?;
    let mut out: Vec<(String, ArrayD<f32>)> = vec![("logits".into(), feats.logits.into_dyn())];
    out.extend(
        feats
            .stages
            .into_iter()
            .enumerate()
            .map(|(i, s)| (format!("stage{i}"), s.into_dyn())),
    );
    tensor_io::write_tensors_guarded(&a.output, &out, &[&a.weights, &a.input])?;
    Ok(())
}

fn convert(a: &ConvertArgs) -> Result<()> {
    let model = Model::load(&a.weights)?;
    if export::is_onnx_path(&a.output) {
        return export::write_onnx(
            &model,
            &a.weights,
            &a.output,
            repvgg_model::onnx::DEFAULT_OPSET,
        );
    }
    let deploy = model.deploy_model()?;
    repvgg_model::checkpoint::save_deploy_guarded(&deploy, &a.output, a.naming, &[&a.weights])?;
    eprintln!(
        "wrote {} ({} deploy-form, {} naming)",
        a.output.display(),
        model.arch(),
        a.naming
    );
    Ok(())
}

fn summary_cmd(a: &SummaryArgs) -> Result<()> {
    let config = match (&a.arch, &a.weights) {
        (Some(arch), _) => RepVggConfig::by_name(arch)?,
        (None, Some(w)) => Model::load(w)?.config().clone(),
        (None, None) => bail!("give --arch NAME or --weights FILE"),
    };
    let (h, w) = a.size;
    let s = summary::summarize(&config, h, w)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("RepVGG {} at {h}x{w}", s.arch);
    println!(
        "{:<12} {:>6} {:>6} {:>3} {:>3} {:>9} {:>3} {:>5} {:>12} {:>12} {:>14}",
        "layer", "in", "out", "s", "g", "output", "id", "se", "params_train", "params_dep", "MACs"
    );
    for l in &s.layers {
        println!(
            "{:<12} {:>6} {:>6} {:>3} {:>3} {:>9} {:>3} {:>5} {:>12} {:>12} {:>14}",
            l.name,
            l.in_channels,
            l.out_channels,
            l.stride,
            l.groups,
            format!("{}x{}", l.output.0, l.output.1),
            if l.identity { "y" } else { "-" },
            l.se_hidden.map_or("-".into(), |v| v.to_string()),
            l.params_train,
            l.params_deploy,
            l.macs
        );
    }
    println!(
        "params: train {} ({:.2}M), deploy {} ({:.2}M); MACs {} ({:.3}G)",
        s.params_train,
        s.params_train as f64 / 1e6,
        s.params_deploy,
        s.params_deploy as f64 / 1e6,
        s.macs,
        s.macs as f64 / 1e9
    );
    Ok(())
}

fn info() -> Result<()> {
    println!("repvgg {}", env!("CARGO_PKG_VERSION"));
    println!(
        "cpu threads:  {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let gpu = Engine::open(&Device::GPU).context("opening a GPU")?;
    if let Some(ctx) = gpu.gpu_context() {
        print!("{}", ctx.info());
    }
    println!("auto device:  {}", Engine::open(&Device::Auto)?.reason());
    Ok(())
}

/// `--threads N`: the size of the global rayon pool the CPU engine runs on.
fn set_threads(threads: Option<usize>) -> Result<()> {
    match threads {
        None => Ok(()),
        Some(0) => bail!("--threads: expected at least 1 thread, found 0"),
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("--threads: creating the thread pool"),
    }
}

/// Keeps Mesa's Vulkan device-select layer from probing the window system.
///
/// The layer asks a Wayland compositor which GPU drives the display; without a session
/// (`XDG_RUNTIME_DIR` unset, as on servers and CI) libwayland prints `error: XDG_RUNTIME_DIR is
/// invalid or not set` on every instance, although this compute-only program never opens a
/// window. Where there is no session to ask, the layer has nothing to contribute, so it is
/// turned off the way Mesa documents (`NODEVICE_SELECT=1`), unless the user set up device
/// selection themselves.
#[allow(unsafe_code)]
fn quiet_window_system_probe() {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let session =
        std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_absolute());
    if session || set("NODEVICE_SELECT") || set("MESA_VK_DEVICE_SELECT") || set("DRI_PRIME") {
        return;
    }
    // SAFETY: called first thing in `main`, before this program starts any thread, so no
    // other thread can be reading or writing the environment concurrently.
    unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
}

fn main() -> ExitCode {
    quiet_window_system_probe();
    let cli = Cli::parse();
    let r = set_threads(cli.threads).and_then(|()| match &cli.command {
        Command::Infer(a) => infer(a),
        Command::Convert(a) => convert(a),
        Command::Export(a) => export::run(a),
        Command::Summary(a) => summary_cmd(a),
        Command::Info => info(),
        Command::Bench(a) => bench::run(a),
        Command::Tune(a) => tune::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Classify(a) => classify::run(a),
        Command::Quantize(a) => quantize::run(a),
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
