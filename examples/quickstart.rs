//! The README's library example: load a checkpoint, fuse it, run it on the GPU (or the CPU).
//!
//! `cargo run --release --example quickstart -- path/to/repvgg.safetensors`
#![allow(clippy::unwrap_used)]

use repvgg::gpu::GpuContext;
use repvgg::model::gpu::{GpuModel, GpuOptions};
use repvgg::model::{checkpoint, digits};

fn main() -> anyhow::Result<()> {
    // A timm or official checkpoint, train or deploy form; without one, the embedded digits model.
    let deploy = match std::env::args().nth(1) {
        Some(path) => checkpoint::load(path)?.model.into_deploy()?, // fuses a train-form file
        None => digits::model()?.fuse()?,
    };
    let c = &deploy.config;
    let x = ndarray::Array4::<f32>::zeros((1, c.in_channels, 224, 224));
    let logits = match GpuContext::new() {
        Ok(ctx) => GpuModel::deploy(&ctx, &deploy, GpuOptions::default())?.forward(x.view())?,
        Err(e) => {
            eprintln!("no GPU ({e}); using the CPU");
            deploy.forward(x.view())?
        }
    };
    println!("{} logits: {:?}", c.name, logits.shape());
    Ok(())
}
