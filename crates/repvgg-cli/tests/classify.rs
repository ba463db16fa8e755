//! `repvgg classify` as a person runs it: digit PNGs drawn from the embedded test split, corrupt
//! and missing files, folders, globs, `--top`, `--json`, an ImageNet-style checkpoint, and
//! `--hf` with no network.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use repvgg_model::digits;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_repvgg"));
    // Never touch the user's hub cache or the network from a test.
    c.env_remove("HF_ENDPOINT").env("HF_HUB_OFFLINE", "1");
    c
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Test digits PyTorch classifies correctly: `(index, label)`, one per label 0..9.
fn good_digits() -> Vec<(usize, usize)> {
    let test = digits::test_set().expect("embedded test set");
    let pred = repvgg_model::argmax_rows(&test.torch_logits);
    (0..10)
        .map(|label| {
            let i = (0..test.labels.len())
                .find(|&i| test.labels[i] == label && pred[i] == label)
                .expect("a correct digit");
            (i, label)
        })
        .collect()
}

/// Draws test digit `index` as a 64x64 PNG, black ink on white, as a person would scan it.
fn write_digit(path: &Path, index: usize) {
    let test = digits::test_set().expect("embedded test set");
    let img = image::GrayImage::from_fn(64, 64, |x, y| {
        let v = test.images8[[index, (y / 8) as usize, (x / 8) as usize]];
        image::Luma([255 - (v / 16.0 * 255.0).round() as u8])
    });
    img.save(path).expect("write png");
}

fn write_noise(path: &Path) {
    let bytes: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(path, bytes).expect("write noise");
}

#[test]
fn digit_png_is_classified_as_its_label() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (index, label) = good_digits()[7];
    let p = dir.path().join("seven.png");
    write_digit(&p, index);
    let out = bin().args(["classify", s(&p)]).output().expect("runs");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let line = stdout.lines().next().expect("one line");
    assert!(line.starts_with(&format!("{}: {label} (", s(&p))), "{line}");
    assert_eq!(line.matches('%').count(), 5, "default --top 5: {line}");
}

#[test]
fn every_label_is_read_back_from_a_folder_in_sorted_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (index, label) in good_digits() {
        write_digit(&dir.path().join(format!("digit_{label}.png")), index);
    }
    std::fs::write(dir.path().join("notes.txt"), "not an image").expect("write");
    let out = bin()
        .args(["classify", s(dir.path()), "--top", "1"])
        .output()
        .expect("runs");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 10, "{stdout}");
    for (label, line) in lines.iter().enumerate() {
        let name = format!("digit_{label}.png: {label} (");
        assert!(line.contains(&name), "expected `{name}` in `{line}`");
    }
}

#[test]
fn the_whole_test_split_drawn_as_pngs_keeps_its_accuracy() {
    // Every held-out digit, drawn as a person would scan it, through the real decode and
    // grayscale preprocessing: the accuracy must stay near PyTorch's on the raw tensors.
    let test = digits::test_set().expect("embedded test set");
    let n = test.labels.len();
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..n {
        write_digit(&dir.path().join(format!("{i:04}.png")), i);
    }
    let out = bin()
        .args(["classify", s(dir.path()), "--top", "1", "--json"])
        .output()
        .expect("runs");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let items = v.as_array().expect("array");
    assert_eq!(items.len(), n);
    let hits = items
        .iter()
        .enumerate()
        .filter(|(i, item)| item["top"][0]["index"].as_u64() == Some(test.labels[*i] as u64))
        .count();
    let accuracy = hits as f64 / n as f64;
    eprintln!(
        "drawn test split: {hits}/{n} = {accuracy:.4} (PyTorch on tensors: {:.4})",
        digits::PYTORCH_TEST_ACCURACY
    );
    assert!(accuracy >= 0.97, "{accuracy}");
}

#[test]
fn corrupt_and_missing_files_are_named_and_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (index, label) = good_digits()[3];
    let good = dir.path().join("good.png");
    write_digit(&good, index);
    let corrupt = dir.path().join("corrupt.png");
    write_noise(&corrupt);
    let missing = dir.path().join("missing.png");
    let out = bin()
        .args(["classify", s(&corrupt), s(&good), s(&missing)])
        .output()
        .expect("runs");
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "must fail when an image failed");
    assert!(
        stdout.contains(&format!("{}: {label} (", s(&good))),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let corrupt_line = stderr
        .lines()
        .find(|l| l.contains("corrupt.png"))
        .expect("corrupt named");
    assert!(
        corrupt_line.contains("not a readable JPEG, PNG or WebP image"),
        "{corrupt_line}"
    );
    let missing_line = stderr
        .lines()
        .find(|l| l.contains("missing.png"))
        .expect("missing named");
    assert!(missing_line.contains("cannot read"), "{missing_line}");
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|l| l == "error: 2 of 3 images failed"),
        "{stderr}"
    );
}

#[test]
fn glob_patterns_expand_and_json_lists_every_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let digits = good_digits();
    for &(index, label) in &digits[..3] {
        write_digit(&dir.path().join(format!("d{label}.png")), index);
    }
    write_noise(&dir.path().join("d9.png"));
    write_digit(&dir.path().join("other.png"), digits[5].0);
    let pattern = dir.path().join("d*.png");
    let out = bin()
        .args(["classify", s(&pattern), "--top", "3", "--json"])
        .output()
        .expect("runs");
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "d9.png is corrupt");
    assert!(
        stderr.contains("d9.png") && stderr.contains("1 of 4 images failed"),
        "{stderr}"
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON array");
    let items = v.as_array().expect("array");
    assert_eq!(items.len(), 4, "other.png does not match d*.png: {stdout}");
    for (label, item) in items[..3].iter().enumerate() {
        assert!(
            item["path"]
                .as_str()
                .is_some_and(|p| p.ends_with(&format!("d{label}.png"))),
            "{item}"
        );
        let top = item["top"].as_array().expect("top");
        assert_eq!(top.len(), 3, "--top 3");
        assert_eq!(top[0]["index"].as_u64(), Some(label as u64));
        assert_eq!(top[0]["label"].as_str(), Some(label.to_string().as_str()));
        let probs: Vec<f64> = top
            .iter()
            .map(|g| g["prob"].as_f64().expect("prob"))
            .collect();
        assert!(
            probs.windows(2).all(|w| w[0] >= w[1]) && probs.iter().sum::<f64>() <= 1.0 + 1e-5,
            "{probs:?}"
        );
    }
    assert!(
        items[3]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("d9.png"))
    );
    assert!(
        items[3]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a readable")),
        "{}",
        items[3]
    );
    assert!(items[3].get("top").is_none());
}

#[test]
fn top_three_prints_three_entries_and_unmatched_glob_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("five.png");
    write_digit(&p, good_digits()[5].0);
    let out = bin()
        .args(["classify", "--top", "3", s(&p)])
        .output()
        .expect("runs");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim_end().matches('%').count(), 3, "{stdout}");
    assert_eq!(stdout.trim_end().split(", ").count(), 3, "{stdout}");

    let none = dir.path().join("*.webp");
    let out = bin().args(["classify", s(&none)]).output().expect("runs");
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("*.webp") && stderr.contains("no file matches"),
        "{stderr}"
    );
}

#[test]
fn imagenet_style_checkpoint_runs_end_to_end() {
    // 10 classes, 3 channels: labels fall back to `class N`, timm's 224 preprocessing applies.
    let weights = fixture("a_narrow.train.safetensors");
    let a = fixture("classify/a_320x280.png");
    let b = fixture("classify/b_97x131.png");
    let out = bin()
        .args([
            "classify",
            "--weights",
            s(&weights),
            "--top",
            "3",
            s(&a),
            s(&b),
        ])
        .output()
        .expect("runs");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for (line, p) in lines.iter().zip([&a, &b]) {
        assert!(line.starts_with(&format!("{}: class ", s(p))), "{line}");
        assert_eq!(line.matches("class ").count(), 3, "{line}");
    }
}

#[test]
fn hf_offline_fails_fast_with_a_clear_message() {
    let home = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let out = bin()
        .env("HF_HOME", home.path())
        .args([
            "classify",
            "--hf",
            "timm/repvgg_a0.rvgg_in1k",
            s(&fixture("classify/a_320x280.png")),
        ])
        .output()
        .expect("runs");
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        stderr.contains("HF_HUB_OFFLINE") && stderr.contains("--weights"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn hf_unreachable_hub_fails_fast_with_a_clear_message() {
    // A local port nobody listens on stands for a hub with no route to it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let home = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let out = bin()
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_HOME", home.path())
        .env("HF_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .args([
            "classify",
            "--hf",
            "timm/repvgg_a0.rvgg_in1k",
            s(&fixture("classify/a_320x280.png")),
        ])
        .output()
        .expect("runs");
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        stderr.contains("unreachable") && stderr.contains("--weights FILE"),
        "{stderr}"
    );
}

#[test]
fn hf_uses_the_hub_cache_when_offline() {
    let home = tempfile::tempdir().expect("tempdir");
    let repo = home.path().join("hub/models--timm--repvgg_a0.rvgg_in1k");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo.join("refs")).expect("mkdir");
    std::fs::create_dir_all(repo.join("snapshots").join(commit)).expect("mkdir");
    std::fs::write(repo.join("refs/main"), commit).expect("write ref");
    std::fs::copy(
        fixture("a_narrow.deploy.safetensors"),
        repo.join("snapshots")
            .join(commit)
            .join("model.safetensors"),
    )
    .expect("copy");
    let out = bin()
        .env("HF_HOME", home.path())
        .args([
            "classify",
            "--hf",
            "timm/repvgg_a0.rvgg_in1k",
            "--top",
            "2",
            s(&fixture("classify/b_97x131.png")),
        ])
        .output()
        .expect("runs");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("b_97x131.png: class "), "{stdout}");
}
