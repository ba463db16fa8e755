//! `.pth` weights work wherever `--weights` is accepted (same results as the safetensors twin),
//! hostile pickles fail with one line naming the global, `export` / `convert X.onnx` write ONNX.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn pth(name: &str) -> PathBuf {
    fixture("pth").join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_repvgg"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// (pth file, safetensors twin) from the fixture manifest.
fn valid() -> Vec<(String, String)> {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pth("manifest.json")).unwrap()).unwrap();
    m["valid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["file"].as_str().unwrap().into(),
                v["source"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// Name -> (dtype, shape, bytes): the header's metadata order may differ between runs.
fn tensors(p: &Path) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(k, t)| {
            (
                k,
                format!("{:?}", t.dtype()),
                t.shape().to_vec(),
                t.data().to_vec(),
            )
        })
        .collect();
    v.sort();
    v
}

fn ok(args: &[&str]) -> String {
    let (ok, out, err) = run(args);
    assert!(ok, "{args:?}: {err}");
    out
}

#[test]
fn infer_summary_convert_accept_pth_like_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    for (file, twin) in valid() {
        let base = twin.split('.').next().unwrap();
        let io = fixture(&format!("{base}.io.safetensors"));
        let mut outs = Vec::new();
        for (tag, w) in [("pth", pth(&file)), ("st", fixture(&twin))] {
            let y = dir.path().join(format!("{file}.{tag}.y.safetensors"));
            ok(&[
                "infer",
                "--weights",
                s(&w),
                "--input",
                s(&io),
                "--output",
                s(&y),
            ]);
            let c = dir.path().join(format!("{file}.{tag}.fused.safetensors"));
            ok(&["convert", "--weights", s(&w), "--output", s(&c)]);
            let summary = ok(&["summary", "--weights", s(&w), "--json"]);
            outs.push((std::fs::read(&y).unwrap(), tensors(&c), summary));
        }
        assert!(outs[0].0 == outs[1].0, "{file}: infer logits differ");
        assert!(outs[0].1 == outs[1].1, "{file}: converted files differ");
        assert_eq!(outs[0].2, outs[1].2, "{file}: summaries differ");
    }
}

#[test]
fn classify_accepts_pth() {
    let img = fixture("classify/a_320x280.png");
    let a = ok(&[
        "classify",
        "--weights",
        s(&pth("a_narrow.train.pth")),
        "--top",
        "3",
        s(&img),
    ]);
    let b = ok(&[
        "classify",
        "--weights",
        s(&fixture("a_narrow.train.safetensors")),
        "--top",
        "3",
        s(&img),
    ]);
    assert_eq!(a, b);
    assert!(a.contains("class "), "{a}");
}

#[test]
fn hostile_pth_fails_with_one_line_naming_the_global() {
    let dir = tempfile::tempdir().unwrap();
    let y = dir.path().join("y.safetensors");
    for (file, want) in [
        (
            "evil_system.pth",
            "pickle global `posix.system` is not allowed",
        ),
        (
            "evil_global.pth",
            "pickle global `argparse.Namespace` is not allowed",
        ),
        ("bad_offset.pth", "storage offset 1000000"),
        ("truncated.pth", "not a readable zip archive"),
    ] {
        let (ok, _, err) = run(&[
            "infer",
            "--weights",
            s(&pth(file)),
            "--input",
            s(&fixture("a_narrow.io.safetensors")),
            "--output",
            s(&y),
        ]);
        assert!(!ok, "{file}");
        assert!(err.contains(want) && err.contains(file), "{file}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!y.exists());
    }
}

#[test]
fn export_and_convert_to_onnx_write_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let w = pth("g4_narrow.official.train.model.pth");
    let a = dir.path().join("a.onnx");
    let (ok1, _, err) = run(&[
        "export",
        "--weights",
        s(&w),
        "--output",
        s(&a),
        "--opset",
        "17",
    ]);
    assert!(ok1, "{err}");
    assert!(err.contains("ONNX opset 17"), "{err}");
    let b = dir.path().join("b.ONNX");
    ok(&["convert", "--weights", s(&w), "--output", s(&b)]);
    let (a, b) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert!(a.len() > 50_000, "{}", a.len());
    assert!(a == b, "export and convert .onnx differ");

    let bad = dir.path().join("bad.onnx");
    let (ok2, _, err) = run(&[
        "export",
        "--weights",
        s(&w),
        "--output",
        s(&bad),
        "--opset",
        "9",
    ]);
    assert!(!ok2 && err.contains("opset 9") && !bad.exists(), "{err}");
}
