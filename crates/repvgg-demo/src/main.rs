//! `repvgg-demo [--weights FILE]`: the desktop demo.

use std::path::PathBuf;

use eframe::egui;
use repvgg_demo::DemoApp;

fn parse_args() -> Result<Option<PathBuf>, String> {
    let mut weights = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--weights" => {
                weights = Some(PathBuf::from(
                    args.next().ok_or("--weights needs a FILE argument")?,
                ));
            }
            s if s.starts_with("--weights=") => {
                weights = Some(PathBuf::from(&s["--weights=".len()..]));
            }
            "-h" | "--help" => {
                println!("usage: repvgg-demo [--weights IMAGENET_CHECKPOINT.safetensors]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(weights)
}

fn main() {
    let weights = match parse_args() {
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
        Box::new(move |cc| Ok(Box::new(DemoApp::from_creation_context(cc, weights)))),
    );
    if let Err(e) = r {
        eprintln!("repvgg-demo: {e}");
        std::process::exit(1);
    }
}
