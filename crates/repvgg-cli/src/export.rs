//! `repvgg export`: the deployed (fused) network as an ONNX model; an int8 file as ONNX QDQ.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use repvgg_model::{Model, onnx};

#[derive(clap::Args, Debug)]
pub(crate) struct ExportArgs {
    /// Checkpoint (.safetensors or PyTorch .pth/.pt), timm or official naming, train or deploy
    /// form; an int8 file (`repvgg quantize`) is written as ONNX QDQ.
    #[arg(long)]
    pub weights: PathBuf,
    /// Where to write the ONNX model (written atomically: a temporary file, then a rename).
    #[arg(long)]
    pub output: PathBuf,
    /// ONNX opset (13..=21).
    #[arg(long, default_value_t = onnx::DEFAULT_OPSET)]
    pub opset: i64,
}

pub(crate) fn run(a: &ExportArgs) -> Result<()> {
    write_onnx(&Model::load(&a.weights)?, &a.weights, &a.output, a.opset)
}

/// Writes `model` as ONNX to `output`, recording `source` in the metadata.
pub(crate) fn write_onnx(model: &Model, source: &Path, output: &Path, opset: i64) -> Result<()> {
    let opts = onnx::ExportOptions {
        opset,
        source: source.file_name().map_or_else(
            || source.display().to_string(),
            |n| n.to_string_lossy().into(),
        ),
    };
    model
        .export_onnx(output, &opts)
        .with_context(|| format!("exporting {} to ONNX", source.display()))?;
    let form = if model.quantized().is_some() {
        "int8 QDQ"
    } else {
        "deploy-form"
    };
    eprintln!(
        "wrote {} ({} {form}, ONNX opset {opset}, input `input` [N,{},H,W], output `logits` [N,{}])",
        output.display(),
        model.arch(),
        model.config().in_channels,
        model.num_classes()
    );
    Ok(())
}

/// True when `convert --output` names an ONNX file.
pub(crate) fn is_onnx_path(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}
