//! The ONNX export runs in tract (an independent, pure-Rust ONNX runtime) and gives our CPU
//! forward's logits; its structure (names, dynamic batch, ops, metadata) is as documented.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

mod common;

use common::fixture;
use ndarray::Array4;
use prost::Message;
use repvgg_model::onnx::{self, ExportOptions, pb};
use repvgg_model::{DeployModel, checkpoint};
use tract_onnx::prelude::*;

fn deploy(name: &str) -> DeployModel {
    checkpoint::load(fixture(name))
        .unwrap()
        .model
        .into_deploy()
        .unwrap()
}

/// A deterministic input in roughly [-2, 2].
fn input(n: usize, c: usize, h: usize, w: usize) -> Array4<f32> {
    let mut s = 0x1234_5678_u32;
    Array4::from_shape_fn((n, c, h, w), |_| {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (s >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
    })
}

fn run_tract(bytes: &[u8], x: &Array4<f32>) -> (Vec<usize>, Vec<f32>) {
    let (n, c, h, w) = x.dim();
    let model = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(bytes))
        .unwrap()
        .with_input_fact(0, f32::fact([n, c, h, w]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let t = Tensor::from_shape(&[n, c, h, w], x.as_slice().unwrap()).unwrap();
    let out = model.run(tvec!(t.into())).unwrap();
    let v = out[0].to_plain_array_view::<f32>().unwrap();
    (v.shape().to_vec(), v.iter().copied().collect())
}

#[test]
fn tract_runs_the_export_like_our_forward() {
    // plain, grouped (g4) and SE (d2se); fused by us from the train form.
    for name in [
        "a_narrow.train.safetensors",
        "g4_narrow.train.safetensors",
        "d2se_narrow.train.safetensors",
    ] {
        let m = deploy(name);
        let bytes = onnx::export(&m, &ExportOptions::default()).unwrap();
        for batch in [1, 3] {
            let x = input(batch, 3, 32, 32);
            let want = m.forward(x.view()).unwrap();
            let (shape, got) = run_tract(&bytes, &x);
            assert_eq!(shape, want.shape(), "{name} batch {batch}");
            let diff = got
                .iter()
                .zip(want.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            eprintln!(
                "{name} batch {batch}: max |tract - ours| = {diff:.3e} (max |logit| {scale:.2})"
            );
            assert!(diff <= 1e-5, "{name} batch {batch}: {diff}");
        }
    }
}

#[test]
fn export_structure_names_dynamic_batch_ops_and_metadata() {
    let m = deploy("d2se_narrow.train.safetensors");
    let opts = ExportOptions {
        opset: 18,
        source: "d2se_narrow.train.safetensors".into(),
    };
    let model = pb::ModelProto::decode(onnx::export(&m, &opts).unwrap().as_slice()).unwrap();
    assert_eq!(model.opset_import[0].version, Some(18));
    assert_eq!(model.ir_version, Some(8));
    let g = model.graph.unwrap();
    let dims = |v: &pb::ValueInfoProto| -> Vec<String> {
        let Some(pb::TypeValue::TensorType(t)) = v.r#type.clone().unwrap().value else {
            panic!("not a tensor type")
        };
        t.shape
            .unwrap()
            .dim
            .into_iter()
            .map(|d| match d.value.unwrap() {
                pb::DimValue::DimValue(v) => v.to_string(),
                pb::DimValue::DimParam(p) => p,
            })
            .collect()
    };
    assert_eq!(g.input.len(), 1);
    assert_eq!(g.input[0].name.as_deref(), Some("input"));
    assert_eq!(dims(&g.input[0]), ["N", "3", "H", "W"]);
    assert_eq!(g.output[0].name.as_deref(), Some("logits"));
    assert_eq!(dims(&g.output[0]), ["N", "10"]);
    let ops: Vec<&str> = g.node.iter().filter_map(|n| n.op_type.as_deref()).collect();
    let count = |op: &str| ops.iter().filter(|o| **o == op).count();
    let blocks = m.blocks().count();
    // One 3x3 conv + two 1x1 SE convs per block (every d2se block has SE).
    assert_eq!(count("Conv"), 3 * blocks);
    assert_eq!(count("Sigmoid"), blocks);
    assert_eq!(count("Mul"), blocks);
    assert_eq!(count("GlobalAveragePool"), blocks + 1);
    assert_eq!(
        &ops[ops.len() - 3..],
        ["GlobalAveragePool", "Flatten", "Gemm"]
    );
    assert_eq!(g.node.last().unwrap().output, ["logits"]);
    // Every conv weight is an initializer with the fused values.
    let stem = g
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some("stem.reparam_conv.weight"))
        .unwrap();
    let w = &m.stages[0][0].conv.weight;
    assert_eq!(
        stem.dims,
        w.shape().iter().map(|&d| d as i64).collect::<Vec<_>>()
    );
    let raw: Vec<f32> = stem
        .raw_data
        .as_ref()
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(raw, w.iter().copied().collect::<Vec<_>>());
    let meta: std::collections::BTreeMap<_, _> = model
        .metadata_props
        .iter()
        .map(|e| (e.key.clone().unwrap(), e.value.clone().unwrap()))
        .collect();
    assert_eq!(meta["source"], "d2se_narrow.train.safetensors");
    assert_eq!(meta["arch"], m.config.name);
    for k in ["mean", "std", "input_size", "crop_pct"] {
        assert!(meta.contains_key(k), "{k}");
    }
}

#[test]
fn plain_export_has_no_se_nodes_and_grouped_convs_keep_groups() {
    let m = deploy("g4_narrow.deploy.safetensors");
    let model = pb::ModelProto::decode(
        onnx::export(&m, &ExportOptions::default())
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    let g = model.graph.unwrap();
    assert!(
        !g.node
            .iter()
            .any(|n| n.op_type.as_deref() == Some("Sigmoid"))
    );
    let groups: Vec<i64> = g
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("Conv"))
        .map(|n| {
            n.attribute
                .iter()
                .find(|a| a.name.as_deref() == Some("group"))
                .and_then(|a| a.i)
                .unwrap()
        })
        .collect();
    let want: Vec<i64> = m.blocks().map(|b| b.conv.spec.groups as i64).collect();
    assert_eq!(groups, want);
    assert!(groups.contains(&4), "{groups:?}");
}

#[test]
fn unsupported_opset_is_an_error_and_save_is_atomic() {
    let m = deploy("a_narrow.deploy.safetensors");
    let e = onnx::export(
        &m,
        &ExportOptions {
            opset: 9,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("opset 9"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.onnx");
    onnx::save(&m, &p, &ExportOptions::default()).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["m.onnx"], "no temporary file left behind");
    // A folder that does not exist: an error, nothing written.
    let bad = dir.path().join("missing").join("m.onnx");
    assert!(onnx::save(&m, &bad, &ExportOptions::default()).is_err());
}

/// Our int8 engine's logits, the QDQ export's in tract, and what the export is made of.
mod qdq {
    use super::*;
    use ndarray::{Array2, Axis, s};
    use repvgg_model::quant::{QuantOptions, QuantizedModel};
    use repvgg_model::{Device, Model, Precision, RepVggConfig, RunOptions, TrainModel, digits};

    fn int8(model: &Model, x: &Array4<f32>) -> Array2<f32> {
        model
            .runner(
                RunOptions::default()
                    .device(Device::Cpu)
                    .precision(Precision::Int8),
            )
            .unwrap()
            .run(x.view())
            .unwrap()
    }

    fn top1_agreement(a: &Array2<f32>, b: &Array2<f32>) -> f64 {
        let (a, b) = (repvgg_model::argmax_rows(a), repvgg_model::argmax_rows(b));
        a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
    }

    /// `q` with every bias moved to the INT32 grid the QDQ export stores it on (steps of input
    /// scale x weight scale, computed in f32 as the export does).
    fn bias_on_grid(q: &QuantizedModel) -> QuantizedModel {
        let mut d = (*q.deploy).clone();
        let mut s_in = q.input_scale;
        for l in &q.layers {
            let b = &mut d.stages[l.stage][l.block].conv.bias;
            for (o, v) in b.iter_mut().enumerate() {
                let step = s_in * l.weight_scale[o];
                *v = (f64::from(*v) / f64::from(step)).round_ties_even() as i32 as f32 * step;
            }
            s_in = l.output_scale;
        }
        QuantizedModel {
            deploy: std::sync::Arc::new(d),
            ..q.clone()
        }
    }

    /// Largest and mean |a - b|.
    fn diffs(a: &[f32], b: &[f32]) -> (f32, f32) {
        assert_eq!(a.len(), b.len());
        let d: Vec<f32> = a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect();
        assert!(d.iter().all(|v| v.is_finite()), "non-finite logits");
        let mean = d.iter().sum::<f32>() / d.len() as f32;
        (d.into_iter().fold(0.0, f32::max), mean)
    }

    /// Runs the QDQ export of `q` in tract on `x` and compares it with our int8 engine.
    ///
    /// Both compute the same quantized graph; they differ in where they round. The engine sums
    /// exact s32 products and requantizes `acc * mult + bias / out_scale` in f32 with the f32
    /// bias; the export stores the bias as INT32 in steps of `input scale x weight scale` (ONNX
    /// Runtime's convention, which its integer convs need), off by up to half a step, i.e. half
    /// of `mult` output codes; and tract sums dequantized products in f32 and quantizes with
    /// `x * (1 / scale)`. An activation that close to a half code rounds to the neighbouring
    /// code. Two checks separate the two causes:
    ///
    /// 1. With the bias already on the INT32 grid in our engine too, only f32 rounding differs:
    ///    a one-code difference is rare (a value within a few ulps of a half code), so the mean
    ///    logit difference must stay under 1e-4 of the largest logit (f32 activations in place
    ///    of u8 codes move it by over an order of magnitude more, so a graph that quantized a
    ///    tensor wrongly or not at all fails) and the largest under 1%.
    /// 2. The export as written (the calibrated f32 bias rounded to INT32): the bias rounding
    ///    moves about `mult / 4` of the codes by one, the largest difference stays under the
    ///    bound the engine meets against its f64 fake-quantized reference (5% of the largest
    ///    logit), the mean under a tenth of that, and the top-1 class is the same for nearly
    ///    every image.
    fn compare(name: &str, model: &Model, x: &Array4<f32>, min_agreement: f64) {
        let q: &QuantizedModel = model.quantized().unwrap();
        let ours = int8(model, x);
        let range = ours.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let opts = ExportOptions::default();

        let grid = bias_on_grid(q);
        let ours_grid = grid
            .network(repvgg_model::cpu::Int8Options::default())
            .unwrap()
            .run(x.view())
            .unwrap();
        let (_, tract_grid) = run_tract(&onnx::export_quantized(&grid, &opts).unwrap(), x);
        let (max_g, mean_g) = diffs(&tract_grid, ours_grid.as_slice().unwrap());

        let (shape, got) = run_tract(&onnx::export_quantized(q, &opts).unwrap(), x);
        assert_eq!(shape, ours.shape(), "{name}");
        let tract = Array2::from_shape_vec(ours.dim(), got).unwrap();
        let (max, mean) = diffs(tract.as_slice().unwrap(), ours.as_slice().unwrap());
        let agree = top1_agreement(&tract, &ours);
        eprintln!(
            "{name}: {} images, max |logit| {range:.3}; bias on the INT32 grid: max |tract - \
             ours| {max_g:.2e}, mean {mean_g:.2e}; as exported: max {max:.2e}, mean {mean:.2e}, \
             top-1 agreement {:.2}%",
            x.dim().0,
            100.0 * agree
        );
        assert!(
            mean_g <= 1e-4 * range,
            "{name}: grid mean {mean_g}, range {range}"
        );
        assert!(
            max_g <= 0.01 * range,
            "{name}: grid max {max_g}, range {range}"
        );
        assert!(max <= 0.05 * range, "{name}: max {max}, range {range}");
        assert!(mean <= 0.005 * range, "{name}: mean {mean}, range {range}");
        assert!(agree >= min_agreement, "{name}: top-1 agreement {agree}");
    }

    #[test]
    fn tract_runs_the_qdq_export_like_our_int8_engine() {
        // The digits model calibrated on 64 of its test images, run on the other ones.
        let t = digits::test_set().unwrap();
        let calib: Vec<Array4<f32>> = t
            .input
            .slice(s![..64, .., .., ..])
            .axis_chunks_iter(Axis(0), 16)
            .map(|c| c.to_owned())
            .collect();
        let (q, _) = Model::digits()
            .unwrap()
            .quantize(&calib, &QuantOptions::default())
            .unwrap();
        let held = t.input.slice(s![64.., .., .., ..]).to_owned();
        compare("digits", &q, &held, 0.99);
        // A grouped A-family net at 32x32 (stride 2, groups 2), calibrated on its inputs.
        let config = RepVggConfig::custom([1, 1, 2, 1], 0.5, 0.5)
            .unwrap()
            .with_official_groups(2)
            .unwrap();
        let model = Model::from(TrainModel::random(&config, 7).unwrap());
        let x = input(8, 3, 32, 32);
        let (q, _) = model
            .quantize(std::slice::from_ref(&x), &QuantOptions::default())
            .unwrap();
        compare("random grouped", &q, &x, 7.0 / 8.0);
    }

    #[test]
    fn qdq_export_quantizes_every_conv_per_channel_and_the_head_per_class() {
        let t = digits::test_set().unwrap();
        let calib = vec![t.input.slice(s![..32, .., .., ..]).to_owned()];
        let (qm, _) = Model::digits()
            .unwrap()
            .quantize(&calib, &QuantOptions::default())
            .unwrap();
        let q = qm.quantized().unwrap();
        let opts = ExportOptions {
            opset: 13,
            source: "digits".into(),
        };
        let model =
            pb::ModelProto::decode(onnx::export_quantized(q, &opts).unwrap().as_slice()).unwrap();
        assert_eq!(model.opset_import[0].version, Some(13));
        let g = model.graph.unwrap();
        let init = |name: &str| {
            g.initializer
                .iter()
                .find(|t| t.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("no initializer {name}"))
        };
        let f32s = |t: &pb::TensorProto| -> Vec<f32> {
            t.raw_data
                .as_ref()
                .unwrap()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        let i8s = |t: &pb::TensorProto| -> Vec<i8> {
            t.raw_data
                .as_ref()
                .unwrap()
                .iter()
                .map(|&b| b as i8)
                .collect()
        };
        // The `axis` of the `DequantizeLinear` node `name`.
        let dequantize_axis = |name: &str| -> Option<i64> {
            let dq = g
                .node
                .iter()
                .find(|n| n.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("no node {name}"));
            assert_eq!(dq.op_type.as_deref(), Some("DequantizeLinear"), "{name}");
            dq.attribute
                .iter()
                .find(|a| a.name.as_deref() == Some("axis"))
                .and_then(|a| a.i)
        };
        let ops: Vec<&str> = g.node.iter().filter_map(|n| n.op_type.as_deref()).collect();
        let count = |op: &str| ops.iter().filter(|o| **o == op).count();
        let convs = q.layers.len();
        assert_eq!(count("Conv"), convs);
        // Input and every conv output: Q then DQ; every conv weight and bias and the head's
        // weight: a DQ.
        assert_eq!(count("QuantizeLinear"), convs + 1);
        assert_eq!(count("DequantizeLinear"), 3 * convs + 2);
        assert_eq!(&ops[..2], ["QuantizeLinear", "DequantizeLinear"]);
        assert_eq!(
            &ops[ops.len() - 4..],
            ["GlobalAveragePool", "Flatten", "DequantizeLinear", "Gemm"]
        );
        // The input's calibrated scale and zero point.
        assert_eq!(f32s(init("input.scale")), [q.input_scale]);
        let zp = init("input.zero_point");
        assert_eq!(zp.data_type, Some(pb::UINT8));
        assert_eq!(zp.raw_data.as_deref(), Some(&[q.input_zero_point][..]));
        let mut in_scale = q.input_scale;
        for l in &q.layers {
            let p = if l.stage == 0 {
                "stem".to_string()
            } else {
                format!("stages.{}.{}", l.stage - 1, l.block)
            };
            let w = init(&format!("{p}.reparam_conv.weight_quantized"));
            assert_eq!(w.data_type, Some(pb::INT8), "{p}");
            assert_eq!(i8s(w), l.weight.iter().copied().collect::<Vec<_>>(), "{p}");
            assert_eq!(
                f32s(init(&format!("{p}.reparam_conv.weight_scale"))),
                l.weight_scale
            );
            assert_eq!(
                dequantize_axis(&format!("{p}.reparam_conv.weight")),
                Some(0),
                "{p}: per output channel"
            );
            // The bias: INT32 codes whose dequantized value is the f32 bias within half a step.
            let b = init(&format!("{p}.reparam_conv.bias_quantized"));
            assert_eq!(b.data_type, Some(pb::INT32), "{p}");
            let bs = f32s(init(&format!("{p}.reparam_conv.bias_scale")));
            let bias = &q.deploy.stages[l.stage][l.block].conv.bias;
            for (o, c) in b.raw_data.as_ref().unwrap().chunks_exact(4).enumerate() {
                let code = i32::from_le_bytes(c.try_into().unwrap());
                assert_eq!(bs[o], in_scale * l.weight_scale[o], "{p} bias scale {o}");
                let d = (f64::from(code) * f64::from(bs[o]) - f64::from(bias[o])).abs();
                assert!(
                    d <= 0.5 * f64::from(bs[o]) * 1.001,
                    "{p} bias {o}: off by {d}"
                );
            }
            assert_eq!(f32s(init(&format!("{p}.output.scale"))), [l.output_scale]);
            assert_eq!(
                init(&format!("{p}.output.zero_point")).raw_data.as_deref(),
                Some(&[0u8][..])
            );
            in_scale = l.output_scale;
        }
        // The head: the int8 engine's codes per class, dequantized along axis 0; the bias f32.
        let (hq, hs) = repvgg_model::quant::quantize_head(q.deploy.head.weight.view());
        let w = init("head.fc.weight_quantized");
        assert_eq!(w.data_type, Some(pb::INT8));
        assert_eq!(
            w.dims,
            q.deploy
                .head
                .weight
                .shape()
                .iter()
                .map(|&d| d as i64)
                .collect::<Vec<_>>()
        );
        assert_eq!(i8s(w), hq.iter().copied().collect::<Vec<_>>());
        assert_eq!(f32s(init("head.fc.weight_scale")), hs);
        assert_eq!(
            dequantize_axis("head.fc.weight"),
            Some(0),
            "head: per class"
        );
        assert_eq!(init("head.fc.bias").data_type, Some(pb::FLOAT));
        let meta: std::collections::BTreeMap<_, _> = model
            .metadata_props
            .iter()
            .map(|e| (e.key.clone().unwrap(), e.value.clone().unwrap()))
            .collect();
        assert!(meta["form"].contains("int8 QDQ"), "{}", meta["form"]);
    }

    #[test]
    fn model_export_onnx_writes_qdq_for_a_quantized_model_only() {
        let t = digits::test_set().unwrap();
        let calib = vec![t.input.slice(s![..16, .., .., ..]).to_owned()];
        let f = Model::digits().unwrap();
        let (q, _) = f.quantize(&calib, &QuantOptions::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ops = |m: &Model, name: &str| -> Vec<String> {
            let p = dir.path().join(name);
            m.export_onnx(&p, &ExportOptions::default()).unwrap();
            let bytes = std::fs::read(&p).unwrap();
            let g = pb::ModelProto::decode(bytes.as_slice())
                .unwrap()
                .graph
                .unwrap();
            g.node.into_iter().filter_map(|n| n.op_type).collect()
        };
        let (fo, qo) = (ops(&f, "f32.onnx"), ops(&q, "int8.onnx"));
        assert!(!fo.iter().any(|o| o.contains("Quantize")), "{fo:?}");
        assert!(qo.iter().any(|o| o == "QuantizeLinear"), "{qo:?}");
        // Opsets before per-axis DequantizeLinear (13) are refused.
        let e = onnx::export_quantized(
            q.quantized().unwrap(),
            &ExportOptions {
                opset: 12,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("opset 12"), "{e}");
    }
}
