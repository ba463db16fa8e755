//! `repvgg tune`: time the GPU conv candidates of a variant's layers ahead of time, keep the
//! fastest in the tuning cache, check them on the whole network against the rules' choices
//! (the verdict ends the report's line), and print each conv shape's candidates and times.

use std::time::Duration;

use anyhow::{Result, bail};
use repvgg_model::gpu::Tuning;
use repvgg_model::{Device, Engine, Model, RepVggConfig, TrainModel};

use crate::bench::Forms;
use crate::{parse_size, report_tuning};

#[derive(clap::Args, Debug)]
pub(crate) struct TuneArgs {
    #[arg(long, default_value = "a0")]
    pub arch: String,
    /// Batch sizes, comma-separated: each is tuned on its own.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub batch: Vec<usize>,
    #[arg(long, default_value = "224", value_parser = parse_size)]
    pub size: (usize, usize),
    /// train, deploy or both.
    #[arg(long, default_value = "both", value_parser = crate::bench::parse_forms)]
    pub form: Forms,
    /// Storage precision: f32 or f16.
    #[arg(long, default_value_t = repvgg_model::Precision::F32)]
    pub precision: repvgg_model::Precision,
    /// The adapter: gpu, or gpu:NAME.
    #[arg(long, default_value = "gpu")]
    pub device: Device,
    /// Time only the shapes the cache lacks (default: time every shape again).
    #[arg(long)]
    pub cached: bool,
    /// Seconds of timing per network at most.
    #[arg(long, default_value_t = 3600.0)]
    pub budget: f64,
}

pub(crate) fn run(a: &TuneArgs) -> Result<()> {
    let config = RepVggConfig::by_name(&a.arch)?;
    let (h, w) = a.size;
    if a.batch.contains(&0) {
        bail!("--batch: batch sizes must be at least 1");
    }
    let engine = Engine::open(&a.device)?;
    if !engine.is_gpu() {
        bail!("repvgg tune times GPU kernels: --device must name a GPU");
    }
    let model = Model::from(TrainModel::random(&config, 0)?);
    let mode = if a.cached {
        Tuning::Cached
    } else {
        Tuning::Force
    };
    println!("adapter: {}", engine.adapter());
    for &batch in &a.batch {
        for &form in &a.form.0 {
            let opts = repvgg_model::RunOptions::default()
                .device(a.device.clone())
                .precision(a.precision)
                .form(form)
                .tuning(mode)
                .tuning_budget(Duration::from_secs_f64(a.budget.clamp(0.0, 1e6)))
                .tune_for(batch, h, w);
            let r = model.runner_on(&engine, opts)?;
            let Some(report) = r.tuning_report() else {
                bail!("the GPU engine made no tuning report");
            };
            println!(
                "\n{} {form} {} batch {batch} {h}x{w}: {report}",
                config.name, a.precision
            );
            for shape in &report.tuned {
                println!("  {}", shape.key);
                let rule = shape.times.first().map(|(c, _)| *c);
                for (c, t) in &shape.times {
                    let mark = match (*c == shape.chosen, Some(*c) == rule) {
                        (true, true) => "  <- chosen (the rules' choice)",
                        (true, false) => "  <- chosen",
                        (false, true) => "  (the rules' choice)",
                        (false, false) => "",
                    };
                    println!(
                        "    {:<20} {:>10.3} ms{mark}",
                        c.to_string(),
                        t.as_secs_f64() * 1e3
                    );
                }
            }
            report_tuning(&r);
        }
    }
    Ok(())
}
