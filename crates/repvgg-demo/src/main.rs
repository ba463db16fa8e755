//! `repvgg-demo [--weights FILE]`: the desktop demo.

use std::path::PathBuf;

use eframe::egui;
use repvgg_demo::{DemoApp, DeviceRequest};

fn parse_device(v: &str) -> Result<DeviceRequest, String> {
    match v {
        "auto" => Ok(DeviceRequest::Auto),
        "cpu" => Ok(DeviceRequest::Cpu),
        "gpu" => Ok(DeviceRequest::Gpu),
        other => Err(format!("--device `{other}`: expected auto, cpu or gpu")),
    }
}

fn parse_args() -> Result<(Option<PathBuf>, DeviceRequest), String> {
    let mut weights = None;
    let mut device = DeviceRequest::Auto;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--weights" => {
                weights = Some(PathBuf::from(
                    args.next().ok_or("--weights needs a FILE argument")?,
                ));
            }
            "--device" => {
                device = parse_device(&args.next().ok_or("--device needs auto, cpu or gpu")?)?;
            }
            s if s.starts_with("--device=") => device = parse_device(&s["--device=".len()..])?,
            s if s.starts_with("--weights=") => {
                weights = Some(PathBuf::from(&s["--weights=".len()..]));
            }
            "-h" | "--help" => {
                println!(
                    "usage: repvgg-demo [--weights IMAGENET_CHECKPOINT.safetensors] [--device auto|cpu|gpu]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok((weights, device))
}

fn main() {
    let (weights, device) = match parse_args() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("repvgg-demo: {e}");
            std::process::exit(2);
        }
    };
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_inner_size([720.0, 780.0])
            .with_title("RepVGG demo"),
        ..Default::default()
    };
    let r = eframe::run_native(
        "RepVGG demo",
        options,
        Box::new(move |cc| {
            Ok(Box::new(DemoApp::from_creation_context(
                cc, weights, device,
            )))
        }),
    );
    if let Err(e) = r {
        eprintln!("repvgg-demo: {e}");
        std::process::exit(1);
    }
}
