//! The README's library example: load a checkpoint, prepare a runner (fused, the device policy
//! picks the device), run a batch, classify.
//!
//! `cargo run --release --example quickstart -- [path/to/repvgg.safetensors|.pth] [image ...]`
//!
//! Without a checkpoint it runs the embedded digits model. With `REPVGG_QUICKSTART_ITERS=N` it
//! also times N runs of one image and prints the median (the figure `repvgg bench` reports).

use std::time::Instant;

use repvgg::{Model, Preprocessing, RunOptions};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    // Any checkpoint: .safetensors or .pth, timm or official naming, train or deploy form.
    let model = match args.next() {
        Some(path) => Model::load(path)?,
        None => Model::digits()?,
    };
    // Deploy form (fused), device auto (a hardware GPU, else the CPU engine), f32.
    let runner = model.runner(RunOptions::default())?;
    println!(
        "{} ({} form file) on {}",
        model.arch(),
        model.form(),
        runner.device()
    );

    // The input size the model was trained at.
    let size = match model.preprocessing() {
        Preprocessing::ImageNet(cfg) => cfg.input_size,
        Preprocessing::Digits => repvgg::model::digits::INPUT_SIZE,
    };
    let x = ndarray::Array4::<f32>::zeros((1, model.config().in_channels, size, size));
    let logits = runner.run(x.view())?;
    println!("logits: {:?}", logits.shape());

    let features = runner.run_features(x.view())?;
    for (i, s) in features.stages.iter().enumerate() {
        println!("stage{i}: {:?}", s.shape());
    }

    let images = args
        .map(repvgg::model::preprocess::load_rgb)
        .collect::<repvgg::Result<Vec<_>>>()?;
    for (i, top) in runner.classify(&images, 5)?.iter().enumerate() {
        let best: Vec<String> = top
            .iter()
            .map(|c| format!("{} {:.1}%", c.short_label, 100.0 * c.prob))
            .collect();
        println!("image {i}: {}", best.join(", "));
    }

    let iters: usize = std::env::var("REPVGG_QUICKSTART_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if iters > 0 {
        let mut times: Vec<f64> = (0..iters + 2)
            .map(|_| {
                let t = Instant::now();
                runner.run(x.view()).map(|_| t.elapsed().as_secs_f64())
            })
            .collect::<repvgg::Result<_>>()?;
        times.drain(..2);
        times.sort_by(f64::total_cmp);
        println!("median of {iters} runs: {:.2} ms", times[iters / 2] * 1e3);
    }
    Ok(())
}
