//! PyTorch `.pth` loading: every valid fixture gives the tensors of its safetensors twin bit for
//! bit; hostile files are rejected with errors naming the global / offset, and nothing runs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::fixture;
use repvgg_model::{ModelError, checkpoint, pth};
use safetensors::SafeTensors;

fn pth_fixture(name: &str) -> PathBuf {
    fixture("pth").join(name)
}

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(pth_fixture("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// (dtype, shape, bytes) of every tensor in a safetensors file.
fn safetensors_raw(path: &Path) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                (
                    format!("{:?}", v.dtype()),
                    v.shape().to_vec(),
                    v.data().to_vec(),
                ),
            )
        })
        .collect()
}

fn pth_raw(path: &Path) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    pth::read_state_dict(&bytes, path)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|(k, t)| {
            let k = k.strip_prefix("module.").map(str::to_string).unwrap_or(k);
            (k, (format!("{:?}", t.dtype), t.shape, t.data))
        })
        .collect()
}

fn valid() -> Vec<(String, String)> {
    manifest()["valid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["file"].as_str().unwrap().to_string(),
                v["source"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn every_valid_pth_has_the_safetensors_tensors_bit_for_bit() {
    let files = valid();
    assert!(files.len() >= 8, "{files:?}");
    for (file, source) in files {
        let got = pth_raw(&pth_fixture(&file));
        let want = safetensors_raw(&fixture(&source));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{file}: key sets differ from {source}"
        );
        for (k, w) in &want {
            let g = &got[k];
            assert_eq!(g.0, w.0, "{file}: `{k}` dtype");
            assert_eq!(g.1, w.1, "{file}: `{k}` shape");
            assert!(g.2 == w.2, "{file}: `{k}` bytes differ");
        }
    }
}

#[test]
fn every_valid_pth_loads_like_its_safetensors_twin() {
    for (file, source) in valid() {
        let a = checkpoint::load(pth_fixture(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let b = checkpoint::load(fixture(&source)).unwrap();
        assert_eq!(a.naming, b.naming, "{file}");
        assert_eq!(a.dtypes, b.dtypes, "{file}");
        assert_eq!(a.model.form(), b.model.form(), "{file}");
        assert!(a.model == b.model, "{file}: the models differ");
    }
}

#[test]
fn pth_layouts_cover_the_issue() {
    let m = manifest();
    let layouts: Vec<&str> = m["valid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["layout"].as_str().unwrap())
        .collect();
    for want in [
        "module.",
        "'model'",
        "'state_dict'",
        "float16",
        "bfloat16",
        "views",
        "legacy",
    ] {
        assert!(
            layouts.iter().any(|l| l.contains(want)),
            "no fixture with {want}"
        );
    }
    let forms: Vec<_> = valid()
        .iter()
        .map(|(f, _)| {
            let c = checkpoint::load(pth_fixture(f)).unwrap();
            (c.model.form(), c.naming)
        })
        .collect();
    use repvgg_model::{Form, Naming};
    for want in [
        (Form::Train, Naming::Timm),
        (Form::Deploy, Naming::Timm),
        (Form::Train, Naming::Official),
        (Form::Deploy, Naming::Official),
    ] {
        assert!(forms.contains(&want), "no fixture in {want:?}");
    }
}

fn load_err(name: &str) -> String {
    let e = checkpoint::load(pth_fixture(name)).expect_err("a hostile file must not load");
    assert!(matches!(e, ModelError::Pth { .. }), "{name}: {e:?}");
    e.to_string()
}

#[test]
fn reduce_to_os_system_is_rejected_naming_the_global_and_runs_nothing() {
    let marker = manifest()["marker"].as_str().unwrap().to_string();
    let _ = std::fs::remove_file(&marker);
    let msg = load_err("evil_system.pth");
    assert!(
        msg.contains("pickle global `posix.system` is not allowed"),
        "{msg}"
    );
    assert!(msg.contains("evil_system.pth"), "{msg}");
    assert!(!Path::new(&marker).exists(), "the payload ran");
}

#[test]
fn unknown_global_is_rejected_by_name() {
    let msg = load_err("evil_global.pth");
    assert!(
        msg.contains("pickle global `argparse.Namespace` is not allowed"),
        "{msg}"
    );
}

#[test]
fn truncated_zip_is_rejected() {
    let msg = load_err("truncated.pth");
    assert!(msg.contains("not a readable zip archive"), "{msg}");
}

#[test]
fn storage_offset_past_the_end_is_rejected() {
    let msg = load_err("bad_offset.pth");
    assert!(msg.contains("storage offset 1000000"), "{msg}");
    assert!(
        msg.contains("past the end of storage `0` (8 elements)"),
        "{msg}"
    );
}

#[test]
fn huge_declared_storage_is_rejected_before_allocating() {
    let msg = load_err("bad_numel.pth");
    assert!(
        msg.contains("storage `0` declares 1099511627776 elements"),
        "{msg}"
    );
    assert!(msg.contains("holds 32 bytes"), "{msg}");
}

/// Every truncation and many byte corruptions of small real files give Ok or an error, never a
/// panic (deterministic: every prefix, and each byte set to a few values).
#[test]
fn corrupted_files_never_panic() {
    for name in [
        "evil_global.pth",
        "bad_offset.pth",
        "a_narrow.deploy.legacy.pth",
    ] {
        let good = std::fs::read(pth_fixture(name)).unwrap();
        let p = Path::new(name);
        let n = good.len().min(4096);
        for cut in 0..n {
            let _ = pth::read_state_dict(&good[..cut], p);
        }
        for i in 0..n {
            for v in [0x00, 0x7f, 0xff, good[i] ^ 0x01] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = pth::read_state_dict(&bad, p);
            }
        }
    }
}

#[test]
fn safetensors_is_not_mistaken_for_pth() {
    for f in [
        "a_narrow.train.safetensors",
        "d2se_narrow.deploy.safetensors",
    ] {
        let bytes = std::fs::read(fixture(f)).unwrap();
        assert!(!pth::is_pth(&bytes), "{f}");
    }
    for (f, _) in valid() {
        let bytes = std::fs::read(pth_fixture(&f)).unwrap();
        assert!(pth::is_pth(&bytes), "{f}");
    }
}
