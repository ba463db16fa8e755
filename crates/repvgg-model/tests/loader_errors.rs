//! Every loader failure gives one clear error naming the offending keys and files.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

mod common;

use std::collections::BTreeMap;

use common::*;
use repvgg_model::{KeyProblem, ModelError, checkpoint};

fn base() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    read_f32(&fixture("a_narrow.train.safetensors"))
}

fn load_modified(f: impl FnOnce(&mut BTreeMap<String, (Vec<usize>, Vec<f32>)>)) -> ModelError {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let mut t = base();
    f(&mut t);
    write_f32(&p, &t);
    checkpoint::load(&p).expect_err("the modified checkpoint must not load")
}

fn problems(e: &ModelError) -> Vec<KeyProblem> {
    match e {
        ModelError::Keys { problems, .. } => problems.0.clone(),
        other => panic!("expected a key error, got {other}"),
    }
}

#[test]
fn unmodified_base_loads() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    write_f32(&p, &base());
    checkpoint::load(&p).unwrap();
}

#[test]
fn missing_keys_are_all_listed() {
    let e = load_modified(|t| {
        t.remove("stages.1.1.conv_1x1.bn.running_var");
        t.remove("stages.0.1.identity.weight");
    });
    let msg = e.to_string();
    assert!(msg.contains("2 problem(s)"), "{msg}");
    assert!(
        msg.contains("missing `stages.1.1.conv_1x1.bn.running_var` (expected shape [16])"),
        "{msg}"
    );
    assert!(
        msg.contains("missing `stages.0.1.identity.weight` (expected shape [8])"),
        "{msg}"
    );
    assert!(msg.contains("m.safetensors"), "{msg}");
}

#[test]
fn unexpected_keys_are_listed() {
    let e = load_modified(|t| {
        t.insert("stages.0.0.extra.weight".into(), (vec![3], vec![1.0; 3]));
        t.insert("head.fc.scale".into(), (vec![1], vec![1.0]));
    });
    let p = problems(&e);
    assert_eq!(p.len(), 2, "{e}");
    assert!(
        p.contains(&KeyProblem::Unexpected {
            key: "stages.0.0.extra.weight".into(),
            found: vec![3]
        }),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("unexpected `head.fc.scale` (shape [1])"),
        "{e}"
    );
}

#[test]
fn shape_mismatch_names_expected_and_found() {
    let e = load_modified(|t| {
        let v = t.get_mut("stages.2.0.conv_kxk.bn.weight").unwrap();
        *v = (vec![15], vec![1.0; 15]);
    });
    assert_eq!(
        problems(&e),
        vec![KeyProblem::Shape {
            key: "stages.2.0.conv_kxk.bn.weight".into(),
            expected: vec![16],
            found: vec![15]
        }]
    );
    assert!(
        e.to_string().contains("expected shape [16], found [15]"),
        "{e}"
    );
}

#[test]
fn non_finite_values_are_rejected() {
    let e = load_modified(|t| {
        let v = t.get_mut("stages.0.0.conv_kxk.conv.weight").unwrap();
        v.1[0] = f32::NAN;
        v.1[5] = f32::INFINITY;
    });
    assert_eq!(
        problems(&e),
        vec![KeyProblem::NonFinite {
            key: "stages.0.0.conv_kxk.conv.weight".into(),
            count: 2
        }]
    );
    assert!(e.to_string().contains("2 non-finite values"), "{e}");
}

#[test]
fn official_names_are_reported_in_official_naming() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("o.safetensors");
    let mut t = read_f32(&fixture("a_narrow.official.train.safetensors"));
    t.remove("stage2.1.rbr_identity.running_mean").unwrap();
    write_f32(&p, &t);
    let e = checkpoint::load(&p).unwrap_err();
    assert!(
        e.to_string()
            .contains("missing `stage2.1.rbr_identity.running_mean`"),
        "{e}"
    );
}

#[test]
fn module_prefix_is_stripped() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ddp.safetensors");
    let t: BTreeMap<_, _> = base()
        .into_iter()
        .map(|(k, v)| (format!("module.{k}"), v))
        .collect();
    write_f32(&p, &t);
    let ck = checkpoint::load(&p).unwrap();
    assert_eq!(ck.model.config().stage_channels, vec![8, 16, 16, 32]);
}

#[test]
fn truncated_and_foreign_files_give_format_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("a_narrow.train.safetensors")).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = checkpoint::load(&cut).unwrap_err();
    assert!(matches!(e, ModelError::Format { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("cut.safetensors is not a valid safetensors file"),
        "{e}"
    );

    let png = dir.path().join("image.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n not a checkpoint").unwrap();
    assert!(matches!(
        checkpoint::load(&png),
        Err(ModelError::Format { .. })
    ));

    let missing = dir.path().join("nope.safetensors");
    let e = checkpoint::load(&missing).unwrap_err();
    assert!(
        matches!(e, ModelError::Io { .. }) && e.to_string().contains("nope.safetensors"),
        "{e}"
    );
}

#[test]
fn not_a_repvgg_and_mixed_forms_are_architecture_errors() {
    let e = load_modified(|t| t.retain(|k, _| k.starts_with("head")));
    assert!(matches!(e, ModelError::Architecture { .. }), "{e}");
    let e = load_modified(|t| {
        t.insert(
            "stages.0.1.reparam_conv.weight".into(),
            (vec![8, 8, 3, 3], vec![0.0; 576]),
        );
    });
    assert!(e.to_string().contains("mixes train-form"), "{e}");
    let e = load_modified(|t| t.retain(|k, _| !k.starts_with("head")));
    assert!(e.to_string().contains("no classifier"), "{e}");
}

#[test]
fn integer_tensors_other_than_num_batches_tracked_are_dtype_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("int.safetensors");
    let t = base();
    let mut bytes: Vec<(String, Vec<usize>, Vec<u8>)> = t
        .iter()
        .map(|(k, (s, d))| {
            (
                k.clone(),
                s.clone(),
                d.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    // Replace one BN bias by an int32 tensor of the right shape.
    let slot = bytes
        .iter_mut()
        .find(|(k, _, _)| k == "stem.conv_kxk.bn.bias")
        .unwrap();
    slot.2 = vec![0u8; 8 * 4];
    let views: Vec<_> = bytes
        .iter()
        .map(|(k, s, b)| {
            let dt = if k == "stem.conv_kxk.bn.bias" {
                safetensors::Dtype::I32
            } else {
                safetensors::Dtype::F32
            };
            (
                k.clone(),
                safetensors::tensor::TensorView::new(dt, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(&p, safetensors::serialize(views, None).unwrap()).unwrap();
    let e = checkpoint::load(&p).unwrap_err();
    assert_eq!(
        problems(&e),
        vec![KeyProblem::Dtype {
            key: "stem.conv_kxk.bn.bias".into(),
            dtype: "I32".into()
        }],
        "{e}"
    );
}

#[test]
fn key_renaming_round_trips() {
    for k in base().keys() {
        let o = checkpoint::timm_to_official(k);
        assert_eq!(checkpoint::official_to_timm(&o), *k, "{k} -> {o}");
    }
    assert_eq!(
        checkpoint::timm_to_official("stages.3.0.attn.fc2.bias"),
        "stage4.0.se.up.bias"
    );
    assert_eq!(
        checkpoint::timm_to_official("head.fc.weight"),
        "linear.weight"
    );
    assert_eq!(
        checkpoint::official_to_timm("stage0.rbr_reparam.weight"),
        "stem.reparam_conv.weight"
    );
}

/// Regression: a 212-byte file holding one tensor named `stages.99999999999.0...` made the
/// loader allocate 800 GB (the index sized the stage list) and abort; `j + 1` could overflow.
/// Stage and block counts are now bounded by the tensors present.
#[test]
fn absurd_block_indices_are_errors_not_allocations() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.safetensors");
    let one = |name: &str| {
        let mut t = BTreeMap::new();
        t.insert(name.to_string(), (vec![1, 1, 1, 1], vec![0.5f32]));
        write_f32(&p, &t);
        checkpoint::load(&p).expect_err("must not load")
    };
    let e = one("stages.99999999999.0.conv_kxk.conv.weight");
    assert!(matches!(e, ModelError::Architecture { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("stage 1 has no blocks, but stage 100000000000 does"),
        "{e}"
    );
    let e = one("stage99999999999.0.rbr_dense.conv.weight");
    assert!(
        e.to_string()
            .contains("stage 1 has no blocks, but stage 99999999999 does"),
        "{e}"
    );
    let e = one(&format!("stages.0.{}.conv_kxk.conv.weight", usize::MAX));
    assert!(
        e.to_string().contains(&format!(
            "stage 1: block 0 is missing, but block {} is present",
            usize::MAX
        )),
        "{e}"
    );
    // The same indices next to a whole model.
    let e = load_modified(|t| {
        t.insert(
            format!("stages.0.{}.conv_kxk.conv.weight", usize::MAX),
            (vec![1], vec![0.0]),
        );
    });
    assert!(e.to_string().contains("stage 1: block 2 is missing"), "{e}");
    let e = load_modified(|t| {
        t.insert(
            "stages.99999999999.0.conv_kxk.conv.weight".into(),
            (vec![1], vec![0.0]),
        );
    });
    assert!(e.to_string().contains("stage 5 has no blocks"), "{e}");
}

/// Every tensor's bytes lie inside the file: offsets past the end or overlapping are format
/// errors found before any tensor is read.
#[test]
fn tensor_offsets_are_checked_against_the_file() {
    let header = |json: &str, data: usize| {
        let mut b = (json.len() as u64).to_le_bytes().to_vec();
        b.extend(json.as_bytes());
        b.extend(vec![0u8; data]);
        b
    };
    for (what, bytes) in [
        (
            "past the end",
            header(
                r#"{"a":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4000000000]}}"#,
                8,
            ),
        ),
        (
            "overlapping",
            header(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                12,
            ),
        ),
        (
            "shape overflow",
            header(
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}"#,
                4,
            ),
        ),
    ] {
        let e =
            checkpoint::load_bytes(&bytes, std::path::Path::new("m.safetensors")).expect_err(what);
        assert!(matches!(e, ModelError::Format { .. }), "{what}: {e}");
    }
}
