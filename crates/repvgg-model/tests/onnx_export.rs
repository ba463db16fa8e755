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
