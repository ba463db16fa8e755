//! The `repvgg` binary's contract: flags, outputs, exit codes and one-line errors.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_repvgg"))
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = bin().args(args).output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn tensors(p: &Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let vals: Vec<f64> = match v.dtype() {
                safetensors::Dtype::F64 => v
                    .data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                safetensors::Dtype::F32 => v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                d => panic!("{k}: unexpected dtype {d:?}"),
            };
            (k, (v.shape().to_vec(), vals))
        })
        .collect()
}

/// Max |a - b|; NaN (failing every comparison) on a NaN, an infinity or a length mismatch.
fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    repvgg_math::compare::max_abs_diff_slices(a, b)
}

#[test]
fn max_diff_fails_on_nan_and_inf() {
    for bad in [f64::NAN, f64::INFINITY] {
        let d = max_diff(&[0.0, bad], &[0.0, 1.0]);
        assert!(!(d < 1e-5) && !(d <= 1e30) && d.is_nan(), "{bad}: {d}");
    }
    assert_eq!(max_diff(&[1.0, 2.0], &[1.5, 2.0]), 0.5);
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn infer_writes_logits_and_features_matching_timm() {
    let dir = tempfile::tempdir().unwrap();
    let io = tensors(&fixture("g4_narrow.io.safetensors"));
    let cases = [
        ("deploy", "g4_narrow.train.safetensors"),
        ("train", "g4_narrow.official.train.safetensors"),
        ("deploy", "g4_narrow.deploy.safetensors"),
    ];
    for (form, weights) in cases {
        let out = dir.path().join(format!("{form}-{weights}"));
        let (ok, _, err) = run(&[
            "infer",
            "--weights",
            s(&fixture(weights)),
            "--input",
            s(&fixture("g4_narrow.io.safetensors")),
            "--output",
            s(&out),
            "--form",
            form,
            "--features",
        ]);
        assert!(ok, "{weights} --form {form}: {err}");
        let got = tensors(&out);
        assert_eq!(got.len(), 6, "{:?}", got.keys());
        assert_eq!(got["logits"].0, vec![2, 10]);
        for k in ["logits", "stage0", "stage1", "stage2", "stage3", "stage4"] {
            let want = &io[&format!("{form}.{k}")];
            assert_eq!(got[k].0, want.0, "{k}");
            let d = max_diff(&got[k].1, &want.1);
            assert!(d < 1e-5, "{weights} {form} {k}: {d}");
        }
    }
}

#[test]
fn infer_errors_are_one_line_and_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("y.safetensors");
    let io = fixture("a_narrow.io.safetensors");
    let (ok, _, err) = run(&[
        "infer",
        "--weights",
        s(&fixture("a_narrow.deploy.safetensors")),
        "--input",
        s(&io),
        "--output",
        s(&out),
        "--form",
        "train",
    ]);
    assert!(!ok);
    assert!(
        err.contains("deployed (fused) model") && err.trim().lines().count() == 1,
        "{err}"
    );

    let not_input = fixture("tiny_nonsquare.train.safetensors");
    let (ok, _, err) = run(&[
        "infer",
        "--weights",
        s(&fixture("a_narrow.train.safetensors")),
        "--input",
        s(&not_input),
        "--output",
        s(&out),
    ]);
    assert!(!ok);
    assert!(err.contains("a tensor named `input`"), "{err}");

    let missing = dir.path().join("missing.safetensors");
    let (ok, _, err) = run(&[
        "infer",
        "--weights",
        s(&missing),
        "--input",
        s(&io),
        "--output",
        s(&out),
    ]);
    assert!(
        !ok && err.contains("missing.safetensors") && err.starts_with("error:"),
        "{err}"
    );
    assert!(!out.exists(), "no output on failure");
}

#[test]
fn infer_rejects_input_with_wrong_channels() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("y.safetensors");
    let x = dir.path().join("x.safetensors");
    let data = vec![0u8; 2 * 16 * 16 * 4];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 1, 16, 16], &data)
            .unwrap();
    std::fs::write(
        &x,
        safetensors::serialize(vec![("pixels", view)], None).unwrap(),
    )
    .unwrap();
    let (ok, _, err) = run(&[
        "infer",
        "--weights",
        s(&fixture("a_narrow.train.safetensors")),
        "--input",
        s(&x),
        "--output",
        s(&out),
    ]);
    assert!(!ok);
    assert!(
        err.contains("expected [N, 3, H, W]") && err.contains("[2, 1, 16, 16]"),
        "{err}"
    );
}

#[test]
fn convert_round_trips_through_official_naming() {
    let dir = tempfile::tempdir().unwrap();
    let conv = dir.path().join("official.safetensors");
    let (ok, _, err) = run(&[
        "convert",
        "--weights",
        s(&fixture("d2se_narrow.train.safetensors")),
        "--output",
        s(&conv),
        "--naming",
        "official",
    ]);
    assert!(ok, "{err}");
    let t = tensors(&conv);
    assert!(
        t.contains_key("stage0.rbr_reparam.weight") && t.contains_key("stage1.0.se.down.weight"),
        "{:?}",
        t.keys()
    );
    let out = dir.path().join("y.safetensors");
    let (ok, _, err) = run(&[
        "infer",
        "--weights",
        s(&conv),
        "--input",
        s(&fixture("d2se_narrow.io.safetensors")),
        "--output",
        s(&out),
    ]);
    assert!(ok, "{err}");
    let io = tensors(&fixture("d2se_narrow.io.safetensors"));
    assert!(max_diff(&tensors(&out)["logits"].1, &io["deploy.logits"].1) < 1e-5);
}

#[test]
fn summary_json_matches_the_paper_for_a0() {
    let (ok, out, err) = run(&["summary", "--arch", "a0", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["arch"], "a0");
    assert_eq!(v["params_deploy"], 8_309_384);
    assert_eq!(v["params_train"], 9_108_968);
    assert_eq!(v["macs"].as_u64().unwrap() / 1_000_000, 1361);
    let (ok, out, _) = run(&[
        "summary",
        "--weights",
        s(&fixture("tiny_nonsquare.deploy.safetensors")),
        "--size",
        "48x40",
    ]);
    assert!(ok);
    assert!(out.contains("params:"), "{out}");
    let (ok, _, err) = run(&["summary", "--arch", "z9"]);
    assert!(!ok && err.contains("unknown architecture `z9`"), "{err}");
    let (ok, _, err) = run(&["summary", "--arch", "a0", "--size", "0x4"]);
    assert!(!ok && err.contains("positive"), "{err}");
}

/// `repvgg infer --device gpu` of the d2se_narrow fixture's input with the `weights` fixture in
/// `form`, written to `out`, then `extra`.
fn infer_d2se_on_gpu(
    weights: &str,
    out: &Path,
    form: &str,
    extra: &[&str],
) -> (bool, String, String) {
    let (weights, input) = (fixture(weights), fixture("d2se_narrow.io.safetensors"));
    let mut args = vec![
        "infer",
        "--weights",
        s(&weights),
        "--input",
        s(&input),
        "--output",
        s(out),
        "--form",
        form,
        "--device",
        "gpu",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn infer_on_the_gpu_matches_timm_in_both_forms() {
    if repvgg_gpu::test_context().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let io = tensors(&fixture("d2se_narrow.io.safetensors"));
    for form in ["train", "deploy"] {
        let out = dir.path().join(format!("{form}.safetensors"));
        let (ok, _, err) = infer_d2se_on_gpu(
            "d2se_narrow.official.train.safetensors",
            &out,
            form,
            &["--features"],
        );
        assert!(ok, "--device gpu --form {form}: {err}");
        let got = tensors(&out);
        for k in ["logits", "stage0", "stage4"] {
            let d = max_diff(&got[k].1, &io[&format!("{form}.{k}")].1);
            assert!(d < 1e-5, "gpu {form} {k}: {d}");
        }
    }
}

#[test]
fn gpu_bench_and_info_report_the_adapter() {
    let Some(ctx) = repvgg_gpu::test_context() else {
        return;
    };
    let (ok, out, err) = run(&["info"]);
    assert!(
        ok && out.contains("backend:") && out.contains("adapter:"),
        "{out}{err}"
    );
    let mut args = vec![
        "bench", "--device", "gpu", "--arch", "a0", "--batch", "1", "--size", "32", "--form",
        "both", "--iters", "1", "--warmup", "1", "--json",
    ];
    // With timestamp queries, the profile too, and with it tuning's network check (on
    // stderr, since stdout carries JSON).
    let profile = ctx.has_timestamps();
    if profile {
        args.push("--profile");
    }
    let (ok, out, err) = run(&args);
    assert!(ok, "{err}");
    if profile {
        assert_eq!(err.matches("tuning's network check: ").count(), 2, "{err}");
    }
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert_eq!(r["device"], "gpu");
        for k in [
            "adapter",
            "form",
            "batch",
            "median_ms",
            "images_per_s",
            "gflops",
            "peak_activation_bytes",
        ] {
            assert!(!r[k].is_null(), "{k} missing in {r}");
        }
        assert!(r["median_ms"].as_f64().unwrap() > 0.0);
    }
}

/// On the CPU, `bench` reports the multiply-adds each form executes: the train form's extra
/// 1x1 convs make it more, and Winograd makes both less than the direct count behind `gflops`.
#[test]
fn cpu_bench_reports_executed_multiply_adds() {
    let (ok, out, err) = bench_a0_tiny("cpu", &["--form", "both", "--json"]);
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let macs = |i: usize| rows[i]["executed_macs"].as_u64().expect("executed_macs");
    assert_eq!(rows[0]["form"], "train", "{rows}");
    assert_eq!(rows[1]["form"], "deploy", "{rows}");
    let (train, deploy) = (macs(0), macs(1));
    assert!(train > deploy && deploy > 0, "{train} vs {deploy}");
    // Direct multiply-adds of the deploy form, from gflops = 2 * macs / seconds.
    let direct = rows[1]["gflops"].as_f64().unwrap() * 1e9 * rows[1]["median_ms"].as_f64().unwrap()
        / 1e3
        / 2.0;
    assert!(
        (deploy as f64) < 0.9 * direct,
        "{deploy} vs direct {direct}"
    );
    let (ok, out, err) = bench_a0_tiny("cpu", &["--form", "both"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("the train form executes") && out.contains("multiply-adds"),
        "{out}"
    );
}

/// `repvgg bench --device DEVICE --arch a0 --batch 1 --size 32 --iters 1 --warmup 0`, then
/// `extra`: the smallest real bench run.
fn bench_a0_tiny(device: &str, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "bench",
        "--device",
        device,
        "--arch",
        "a0",
        "--batch",
        "1",
        "--size",
        "32",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--warmup-ms",
        "0",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn bf16_bench_times_the_deployed_form_or_names_what_the_cpu_lacks() {
    // `--form` defaults to both; reduced precisions time the fused network alone.
    let (ok, out, err) = bench_a0_tiny("cpu", &["--precision", "bf16", "--json"]);
    if !ok {
        assert!(
            err.contains("precision bf16") && err.contains("AVX512-BF16"),
            "{err}"
        );
        return;
    }
    assert!(err.contains("deployed form only"), "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["form"], "deploy");
    assert_eq!(rows[0]["precision"], "bf16");
    assert!(
        rows[0]["adapter"].as_str().unwrap().contains("bf16"),
        "{rows:?}"
    );
    assert!(rows[0]["median_ms"].as_f64().unwrap() > 0.0);
    // An explicit train form is refused by name.
    let (ok, _, err) = bench_a0_tiny("cpu", &["--precision", "bf16", "--form", "train"]);
    assert!(!ok && err.contains("deployed form only"), "{err}");
}

#[test]
fn precision_f16_on_the_gpu_and_its_errors() {
    // f16 is a GPU option: on the CPU it is refused, whether or not a GPU exists.
    let (ok, _, err) = bench_a0_tiny("cpu", &["--precision", "f16"]);
    assert!(!ok && err.contains("GPU only"), "{err}");
    let Some(ctx) = repvgg_gpu::test_context() else {
        return;
    };
    if !ctx.has_f16() {
        let (ok, _, err) = bench_a0_tiny("gpu", &["--precision", "f16"]);
        assert!(!ok && err.contains("SHADER_F16"), "{err}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let io = tensors(&fixture("d2se_narrow.io.safetensors"));
    for form in ["train", "deploy"] {
        let out = dir.path().join(format!("{form}.f16.safetensors"));
        let (ok, _, err) = infer_d2se_on_gpu(
            "d2se_narrow.train.safetensors",
            &out,
            form,
            &["--precision", "f16"],
        );
        assert!(ok, "--precision f16 --form {form}: {err}");
        let d = max_diff(&tensors(&out)["logits"].1, &io[&format!("{form}.logits")].1);
        assert!(d < 1e-2, "f16 {form} logits: {d}");
    }
    let (ok, out, err) =
        bench_a0_tiny("gpu", &["--form", "deploy", "--precision", "f16", "--json"]);
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["precision"], "f16", "{rows}");
    // The f32-only baselines refuse f16 with one line naming the kernel.
    let (ok, _, err) = bench_a0_tiny(
        "gpu",
        &[
            "--form",
            "deploy",
            "--precision",
            "f16",
            "--kernel",
            "naive",
        ],
    );
    assert!(
        !ok && err.contains("naive conv kernel has no f16 form"),
        "{err}"
    );
}

#[test]
fn demo_int8_calibrates_on_its_own_digits_and_compares_with_f32() {
    let args = [
        "demo",
        "--device",
        "cpu",
        "--precision",
        "int8",
        "--batch",
        "1,4",
        "--iters",
        "1",
    ];
    let (ok, out, err) = run(&[&args[..], &["--json"]].concat());
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let q = &v["int8"];
    let total = v["test_images"].as_u64().unwrap();
    assert_eq!(q["held_out_images"].as_u64(), Some(total - 64), "{q}");
    assert_eq!(q["calibration"], "the first 64 test digits", "{q}");
    assert_eq!(q["method"], "minmax", "{q}");
    let (f, i) = (
        q["accuracy_f32"].as_f64().unwrap(),
        q["accuracy_int8"].as_f64().unwrap(),
    );
    assert!(f > 0.9 && f - i <= 0.005, "f32 {f}, int8 {i}");
    assert!(q["top1_agreement"].as_f64().unwrap() >= 0.98, "{q}");
    // Train and deploy forms in f32, then the int8 network, per batch size.
    let precisions: Vec<&str> = v["speed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["precision"].as_str().unwrap())
        .collect();
    assert_eq!(precisions, ["f32", "f32", "int8", "f32", "f32", "int8"]);
    // The text report says the same in a line of its own; plain f32 has no int8 part.
    let (ok, out, err) = run(&args);
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("int8 (minmax calibration on the first 64 test digits)")),
        "{out}"
    );
    let (ok, out, err) = run(&[
        "demo", "--device", "cpu", "--batch", "1", "--iters", "1", "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v.get("int8").is_none(), "{v}");
}

#[test]
fn demo_int8_calibrates_on_given_images_and_names_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    // Eight test digits as a tensor file of preprocessed inputs.
    let t = repvgg_model::digits::test_set().unwrap();
    let x = t.input.slice(ndarray::s![..8, .., .., ..]).to_owned();
    let calib = dir.path().join("calib.safetensors");
    repvgg_model::tensor_io::write_tensors(&calib, &[("input".into(), x.into_dyn())]).unwrap();
    let (ok, out, err) = run(&[
        "demo",
        "--device",
        "cpu",
        "--precision",
        "int8",
        "--calib",
        calib.to_str().unwrap(),
        "--batch",
        "1",
        "--iters",
        "1",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["int8"]["calibration"], "8 --calib images", "{v}");
    assert_eq!(v["int8"]["held_out_images"], v["test_images"], "{v}");
    let missing = dir.path().join("missing.png");
    let (ok, _, err) = run(&[
        "demo",
        "--device",
        "cpu",
        "--precision",
        "int8",
        "--calib",
        missing.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("missing.png"), "{err}");
}
