//! `repvgg-demo [--weights FILE] [--device auto|cpu|gpu] [--precision f32|f16]`: the desktop
//! demo.

use std::path::PathBuf;

use eframe::egui;
use repvgg_demo::{DemoApp, Device, Precision};

fn parse_device(v: &str) -> Result<Device, String> {
    v.parse().map_err(|e| format!("--device: {e}"))
}

fn parse_precision(v: &str) -> Result<Precision, String> {
    v.parse().map_err(|e| format!("--precision: {e}"))
}

/// What the command line asks for.
struct Args {
    weights: Option<PathBuf>,
    device: Device,
    precision: Precision,
}

fn parse_args() -> Result<Args, String> {
    let mut weights = None;
    let mut device = Device::Auto;
    let mut precision = Precision::F32;
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
            "--precision" => {
                precision = parse_precision(&args.next().ok_or("--precision needs f32 or f16")?)?;
            }
            s if s.starts_with("--precision=") => {
                precision = parse_precision(&s["--precision=".len()..])?;
            }
            s if s.starts_with("--weights=") => {
                weights = Some(PathBuf::from(&s["--weights=".len()..]));
            }
            "-h" | "--help" => {
                println!(
                    "usage: repvgg-demo [--weights IMAGENET_CHECKPOINT.safetensors] [--device auto|cpu|gpu] \
                     [--precision f32|f16]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(Args {
        weights,
        device,
        precision,
    })
}

fn main() {
    let Args {
        weights,
        device,
        precision,
    } = match parse_args() {
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
                cc, weights, device, precision,
            )))
        }),
    );
    if let Err(e) = r {
        eprintln!("repvgg-demo: {e}");
        std::process::exit(1);
    }
}
