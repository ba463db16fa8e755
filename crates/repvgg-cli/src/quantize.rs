//! `repvgg quantize`: calibrate a checkpoint on images and write its int8 file; and the
//! calibration behind `--precision int8 --calib` of the other commands.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ndarray::{Array4, Axis, concatenate};
use repvgg_model::quant::{CalibMethod, QuantOptions};
use repvgg_model::{Model, Precision, preprocess, tensor_io};

use crate::DeviceArgs;

/// Images per calibration batch.
const BATCH: usize = 8;

#[derive(clap::Args, Debug)]
pub(crate) struct QuantizeArgs {
    /// Checkpoint (.safetensors or .pth; timm or official naming, train or deploy form).
    #[arg(long)]
    pub weights: PathBuf,
    /// Calibration images: files, folders or glob patterns, preprocessed as `classify` does;
    /// or `.safetensors` tensor files of inputs already preprocessed (`input` [N, C, H, W] f32,
    /// as `infer` reads).
    #[arg(long, required = true, num_args = 1..)]
    pub calib: Vec<PathBuf>,
    /// How many calibration images to use (the first ones, in order).
    #[arg(long, default_value_t = 64)]
    pub images: usize,
    /// How activation clips are chosen: minmax, percentile (99.99%) or mse.
    #[arg(long, default_value_t = CalibMethod::MinMax)]
    pub method: CalibMethod,
    /// Where to write the int8 model (safetensors).
    #[arg(long)]
    pub output: PathBuf,
    /// Print only the report's summary line (logits SQNR, top-1 agreement), not its per-layer
    /// table.
    #[arg(long)]
    pub quiet: bool,
}

/// Whether `--calib` names a tensor file of preprocessed inputs rather than an image.
fn is_tensor_file(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// The first `images` images of `calib` (image files, or tensor files of preprocessed inputs)
/// as batches of the model's input.
pub(crate) fn calib_batches(
    model: &Model,
    calib: &[PathBuf],
    images: usize,
) -> Result<Vec<Array4<f32>>> {
    if images == 0 {
        bail!("--images: calibration needs at least one image");
    }
    let prep = model.preprocessing();
    let mut xs = Vec::new();
    for item in crate::classify::expand(calib) {
        if xs.len() == images {
            break;
        }
        let path = item.map_err(|(p, e)| anyhow::anyhow!("--calib {p}: {e}"))?;
        if is_tensor_file(&path) {
            let t = tensor_io::read_input(&path)
                .with_context(|| format!("--calib {}", path.display()))?;
            let c = model.config().in_channels;
            if t.shape()[1] != c {
                bail!(
                    "--calib {}: expected preprocessed inputs [N, {c}, H, W] for this model, \
                     found shape {:?}",
                    path.display(),
                    t.shape()
                );
            }
            for x in t.axis_chunks_iter(Axis(0), 1) {
                if xs.len() == images {
                    break;
                }
                xs.push(x.to_owned());
            }
            continue;
        }
        let img = preprocess::load_rgb(&path)?;
        xs.push(
            prep.input(&img)
                .with_context(|| format!("--calib {}", path.display()))?,
        );
    }
    if xs.is_empty() {
        bail!("--calib: no images found");
    }
    xs.chunks(BATCH)
        .map(|c| {
            let views: Vec<_> = c.iter().map(|x| x.view()).collect();
            concatenate(Axis(0), &views).context("stacking calibration images")
        })
        .collect()
}

/// `model` ready for `run.precision`: int8 needs a quantized model, or `--calib` images to make
/// one now.
pub(crate) fn prepare(model: Model, run: &DeviceArgs) -> Result<Model> {
    if run.precision != Precision::Int8 || model.quantized().is_some() {
        return Ok(model);
    }
    if run.calib.is_empty() {
        bail!(
            "--precision int8 needs an int8 model (`repvgg quantize` writes one) or calibration \
             images (--calib DIR|GLOB)"
        );
    }
    let batches = calib_batches(&model, &run.calib, run.calib_images)?;
    let opts = QuantOptions {
        method: run.method,
        ..QuantOptions::default()
    };
    let (q, report) = model.quantize(&batches, &opts)?;
    eprintln!(
        "int8: calibrated on {} images ({}); logits SQNR {:.1} dB, top-1 agreement {:.1}%",
        report.images,
        run.method,
        report.logits_sqnr_db,
        100.0 * report.top1_agreement
    );
    Ok(q)
}

pub(crate) fn run(a: &QuantizeArgs) -> Result<()> {
    let model = Model::load(&a.weights)?;
    let batches = calib_batches(&model, &a.calib, a.images)?;
    let opts = QuantOptions {
        method: a.method,
        ..QuantOptions::default()
    };
    let (q, report) = model.quantize(&batches, &opts)?;
    let Some(qm) = q.quantized() else {
        bail!("quantization returned no int8 model");
    };
    if std::fs::canonicalize(&a.output).ok() == std::fs::canonicalize(&a.weights).ok()
        && a.output.exists()
    {
        bail!(
            "--output {} is the input checkpoint; choose another path",
            a.output.display()
        );
    }
    qm.save(&a.output)?;
    if a.quiet {
        eprintln!("{}", report.to_string().lines().last().unwrap_or_default());
    } else {
        println!("{report}");
    }
    eprintln!(
        "wrote {} ({} int8, {} calibration)",
        a.output.display(),
        model.arch(),
        a.method
    );
    Ok(())
}
