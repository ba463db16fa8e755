//! Int8 quantization end to end: the digits model's accuracy, the int8 network against a
//! fake-quantized f64 reference, every kernel giving the same logits, the file round trip, and
//! the errors a user meets.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use ndarray::{Array2, Array4, Axis, s};
use repvgg_math::ops;
use repvgg_model::cpu::Int8Kernel;
use repvgg_model::quant::{CalibMethod, QuantOptions, QuantizedModel};
use repvgg_model::{
    Device, Form, Model, Precision, Profile, RepVggConfig, RunOptions, TrainModel, digits,
};

/// Images of the test split used for calibration; the others measure accuracy.
const CALIB: usize = 64;

fn cpu() -> RunOptions {
    RunOptions::default().device(Device::Cpu)
}

fn digits_quantized(method: CalibMethod) -> (Model, Model, digits::TestSet) {
    let model = Model::digits().unwrap();
    let t = digits::test_set().unwrap();
    let calib: Vec<Array4<f32>> = t
        .input
        .slice(s![..CALIB, .., .., ..])
        .axis_chunks_iter(Axis(0), 16)
        .map(|c| c.to_owned())
        .collect();
    let opts = QuantOptions {
        method,
        ..QuantOptions::default()
    };
    let (q, report) = model.quantize(&calib, &opts).unwrap();
    assert_eq!(report.images, CALIB);
    assert_eq!(report.layers.len(), q.quantized().unwrap().layers.len());
    (model, q, t)
}

#[test]
fn digits_int8_accuracy_is_within_half_a_point_of_f32() {
    for method in CalibMethod::ALL {
        let (model, q, t) = digits_quantized(method);
        let held = t.input.slice(s![CALIB.., .., .., ..]);
        let labels = &t.labels[CALIB..];
        let f = model.runner(cpu()).unwrap().run(held).unwrap();
        let r = q.runner(cpu().precision(Precision::Int8)).unwrap();
        assert_eq!(r.precision(), Precision::Int8);
        let i = r.run(held).unwrap();
        let (af, ai) = (digits::accuracy(&f, labels), digits::accuracy(&i, labels));
        let agree = repvgg_model::argmax_rows(&f)
            .iter()
            .zip(&repvgg_model::argmax_rows(&i))
            .filter(|(a, b)| a == b)
            .count() as f64
            / labels.len() as f64;
        eprintln!(
            "digits {method}: f32 {:.2}%, int8 {:.2}%, top-1 agreement {:.2}% over {} images",
            100.0 * af,
            100.0 * ai,
            100.0 * agree,
            labels.len()
        );
        assert!(af - ai <= 0.005, "{method}: int8 {ai} vs f32 {af}");
        assert!(agree >= 0.98, "{method}: top-1 agreement {agree}");
    }
}

/// The int8 pipeline in f64 with explicit rounding: input quantized with its zero point, each
/// conv on the dequantized codes with the dequantized weights and the f32 bias, its ReLU output
/// rounded to the layer's scale and clamped to 255 codes, then pooling and the head.
fn fake_quant(q: &QuantizedModel, x: &Array4<f32>) -> Array2<f64> {
    let zp = f64::from(q.input_zero_point);
    let si = f64::from(q.input_scale);
    let mut a: Array4<f64> =
        x.mapv(|v| si * (((f64::from(v) / si).round_ties_even() + zp).clamp(0.0, 255.0) - zp));
    for l in &q.layers {
        let conv = &q.deploy.stages[l.stage][l.block].conv;
        let w = conv.weight.mapv(f64::from);
        let b = conv.bias.mapv(f64::from);
        let y = ops::conv2d(a.view(), w.view(), Some(b.view()), &conv.spec).unwrap();
        let so = f64::from(l.output_scale);
        a = y.mapv(|v| so * (v / so).round_ties_even().clamp(0.0, 255.0));
    }
    let pooled = ops::global_avg_pool(a.view()).unwrap();
    let h = &q.deploy.head;
    ops::linear(
        pooled.view(),
        h.weight.mapv(f64::from).view(),
        Some(h.bias.mapv(f64::from).view()),
    )
    .unwrap()
}

#[test]
fn int8_network_matches_a_fake_quantized_reference_on_every_kernel() {
    // A random A0-shaped network at 32x32 (stride 2 everywhere, 48..1280 channels) and a
    // grouped variant, calibrated on random inputs.
    let configs = [
        RepVggConfig::a0(),
        RepVggConfig::custom([1, 1, 2, 1], 0.5, 0.5)
            .unwrap()
            .with_official_groups(2)
            .unwrap(),
    ];
    for config in configs {
        let model = Model::from(TrainModel::random(&config, 3).unwrap());
        // Five images: the head runs as an f32 GEMM from four on, on its s8 rows below that.
        let x = Array4::from_shape_fn((5, 3, 32, 32), |(n, c, y, xx)| {
            (((n * 131 + c * 71 + y * 37 + xx * 13) % 97) as f32 / 48.0) - 1.0
        });
        let (q, _) = model
            .quantize(std::slice::from_ref(&x), &QuantOptions::default())
            .unwrap();
        let qm = q.quantized().unwrap();
        let want = fake_quant(qm, &x);
        let range = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-6);
        let mut first: Option<Array2<f32>> = None;
        for kernel in Int8Kernel::available() {
            let r = q
                .runner(cpu().precision(Precision::Int8).int8_kernel(Some(kernel)))
                .unwrap();
            let got = r.run(x.view()).unwrap();
            // The two heads agree up to f32 summation order.
            let two = r.run(x.slice(s![..2, .., .., ..])).unwrap();
            let d = two
                .iter()
                .zip(got.slice(s![..2, ..]))
                .fold(0.0f32, |m, (&a, &b)| m.max((a - b).abs()));
            assert!(d <= 1e-4 * range as f32, "{kernel}: heads differ by {d}");
            // The engine rounds in f32 where the reference rounds in f64: a code near a half
            // may differ by one, nothing more.
            let d = got
                .iter()
                .zip(&want)
                .fold(0.0f64, |m, (&g, &w)| m.max((f64::from(g) - w).abs()));
            assert!(
                d <= 0.05 * range,
                "{} {kernel}: logits off by {d} (range {range})",
                config.name
            );
            match &first {
                None => first = Some(got),
                Some(f) => assert_eq!(
                    f,
                    &got,
                    "{kernel} differs from {}",
                    Int8Kernel::available()[0]
                ),
            }
        }
    }
}

#[test]
fn int8_profiles_time_each_step_and_count_every_multiply_add() {
    let (_, q, t) = digits_quantized(CalibMethod::MinMax);
    let x = t.input.slice(s![..4, .., .., ..]).to_owned();
    let (n, _, h, w) = x.dim();
    let convs = q.quantized().unwrap().layers.len();
    for kernel in Int8Kernel::available() {
        let r = q
            .runner(cpu().precision(Precision::Int8).int8_kernel(Some(kernel)))
            .unwrap();
        let macs = r.executed_macs(n, h, w).unwrap().unwrap();
        let Profile::Cpu(runs) = r.profile(x.view(), 0, 2).unwrap() else {
            panic!("{kernel}: an int8 profile is a CPU profile");
        };
        assert_eq!(runs.len(), 2, "{kernel}: one list per run");
        for ops in &runs {
            let names: Vec<&str> = ops.iter().map(|o| o.op.as_str()).collect();
            assert_eq!(ops.len(), convs + 3, "{kernel}: {names:?}");
            assert!(names[0].starts_with("quantize input"), "{names:?}");
            assert!(
                names[1..=convs]
                    .iter()
                    .all(|o| o.starts_with("conv 3x3/") && o.contains(" int8 ")),
                "{names:?}"
            );
            assert!(
                names[convs + 1].starts_with("head: average pool"),
                "{names:?}"
            );
            assert!(names[convs + 2].starts_with("head: linear"), "{names:?}");
            assert!(
                ops.iter()
                    .all(|o| o.seconds.is_finite() && o.seconds >= 0.0)
            );
            assert_eq!(
                ops.iter().map(|o| o.flops).sum::<u64>(),
                2 * macs,
                "{kernel}"
            );
        }
    }
}

#[test]
fn int8_files_round_trip_and_run_the_same() {
    let (_, q, t) = digits_quantized(CalibMethod::Percentile);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("digits_int8.safetensors");
    q.quantized().unwrap().save(&path).unwrap();
    let back = Model::load(&path).unwrap();
    assert_eq!(back.quantized().unwrap(), q.quantized().unwrap());
    assert_eq!(back.quantized().unwrap().method, CalibMethod::Percentile);
    let opts = cpu().precision(Precision::Int8);
    let x = t.input.slice(s![..20, .., .., ..]);
    assert_eq!(
        q.runner(opts.clone()).unwrap().run(x).unwrap(),
        back.runner(opts).unwrap().run(x).unwrap()
    );
    // In f32 the loaded model runs its dequantized weights.
    let f = back.runner(cpu()).unwrap().run(x).unwrap();
    assert!(f.iter().all(|v| v.is_finite()));
    // The file is about a quarter of the f32 checkpoint's conv weights.
    let bytes = std::fs::metadata(&path).unwrap().len();
    let f32_path = dir.path().join("digits_f32.safetensors");
    Model::digits()
        .unwrap()
        .save(&f32_path, repvgg_model::Naming::Timm)
        .unwrap();
    assert!(bytes * 2 < std::fs::metadata(&f32_path).unwrap().len());
}

#[test]
fn damaged_int8_files_are_refused_by_name() {
    let (_, q, _) = digits_quantized(CalibMethod::MinMax);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.safetensors");
    let qm = q.quantized().unwrap();
    let mut bad = qm.clone();
    bad.layers[1].weight_scale[0] = -1.0;
    bad.save(&path).unwrap();
    let e = Model::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("weight_scale") && e.contains("finite and positive"),
        "{e}"
    );
    let mut bad = qm.clone();
    bad.layers[0].weight[[0, 0, 0, 0]] = i8::MIN;
    bad.save(&path).unwrap();
    let e = Model::load(&path).unwrap_err().to_string();
    assert!(e.contains("-128"), "{e}");
    let mut bad = qm.clone();
    bad.layers[2].output_scale = f32::NAN;
    bad.save(&path).unwrap();
    let e = Model::load(&path).unwrap_err().to_string();
    assert!(e.contains("output_scale"), "{e}");
    // Truncated: the safetensors reader's error, naming the file.
    qm.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = Model::load(&path).unwrap_err().to_string();
    assert!(e.contains("q.safetensors"), "{e}");
}

#[test]
fn reduced_precisions_say_what_they_need() {
    let model = Model::digits().unwrap();
    let e = model
        .runner(cpu().precision(Precision::Int8))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("int8 needs a quantized model") && e.contains("repvgg quantize"),
        "{e}"
    );
    // bf16 runs where the CPU has AMX-BF16 (tests/bf16.rs); elsewhere the refusal names what
    // the CPU lacks.
    if let Err(e) = model.runner(cpu().precision(Precision::Bf16)) {
        let e = e.to_string();
        assert!(e.contains("AVX512-BF16") && e.contains("neither"), "{e}");
    }
    let (_, q, _) = digits_quantized(CalibMethod::MinMax);
    let e = q
        .runner(cpu().precision(Precision::Int8).form(Form::Train))
        .unwrap_err()
        .to_string();
    assert!(e.contains("deployed form"), "{e}");
    let e = model
        .runner(
            cpu()
                .precision(Precision::Int8)
                .int8_kernel(Some(Int8Kernel::Scalar)),
        )
        .unwrap_err();
    assert!(e.to_string().contains("quantized"), "{e}");
    // Squeeze-excite variants are refused by name.
    let se = Model::from(
        TrainModel::random(
            &RepVggConfig::custom([1, 1, 1, 1], 0.25, 0.25)
                .unwrap()
                .with_se(4)
                .unwrap(),
            1,
        )
        .unwrap(),
    );
    let x = Array4::<f32>::zeros((1, 3, 32, 32));
    let e = se
        .quantize(std::slice::from_ref(&x), &QuantOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("squeeze-excite"), "{e}");
}

#[test]
fn clips_shrink_from_minmax_to_percentile_and_mse() {
    let (_, a, _) = digits_quantized(CalibMethod::MinMax);
    let (_, b, _) = digits_quantized(CalibMethod::Percentile);
    let (_, c, _) = digits_quantized(CalibMethod::Mse);
    let clips = |m: &Model| -> Vec<f32> {
        m.quantized()
            .unwrap()
            .layers
            .iter()
            .map(|l| l.output_scale)
            .collect()
    };
    let (a, b, c) = (clips(&a), clips(&b), clips(&c));
    for i in 0..a.len() {
        assert!(
            b[i] <= a[i] * 1.0001 && c[i] <= a[i] * 1.0001,
            "layer {i}: {} {} {}",
            a[i],
            b[i],
            c[i]
        );
    }
    assert!(
        b.iter().zip(&a).any(|(b, a)| b < a),
        "percentile never clipped"
    );
}
