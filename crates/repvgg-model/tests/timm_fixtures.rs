//! Both forms against timm's float64 outputs, our fusion against timm's float64 fusion, for
//! every committed fixture and naming.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

mod common;

use common::*;
use repvgg_math::compare::{max_abs_diff, max_abs_diff_slices, worst};
use repvgg_model::{LoadedModel, Naming, checkpoint};

const TOL: f64 = 1e-5;

fn fixture_names() -> Vec<String> {
    manifest()["fixtures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

fn files_of(name: &str) -> Vec<(String, String, String)> {
    let m = manifest();
    let f = m["fixtures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap()
        .clone();
    f["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["file"].as_str().unwrap().into(),
                x["form"].as_str().unwrap().into(),
                x["naming"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[test]
fn every_fixture_matches_timm_in_both_forms() {
    let names = fixture_names();
    assert!(names.len() >= 5, "manifest lists {} fixtures", names.len());
    let mut checked = 0;
    for name in &names {
        let io = read_f64(&fixture(&format!("{name}.io.safetensors")));
        let input = io["input"]
            .mapv(|v| v as f32)
            .into_dimensionality()
            .unwrap();
        for (file, form, naming) in files_of(name) {
            if form == "io" {
                continue;
            }
            let ck = checkpoint::load(fixture(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(
                ck.naming,
                if naming == "official" {
                    Naming::Official
                } else {
                    Naming::Timm
                },
                "{file}"
            );
            let forms: Vec<(&str, repvgg_model::Features)> = match ck.model {
                LoadedModel::Train(m) => {
                    assert_eq!(form, "train", "{file}");
                    let fused = m.fuse().unwrap();
                    vec![
                        ("train", m.forward_features(input.view()).unwrap()),
                        ("deploy", fused.forward_features(input.view()).unwrap()),
                    ]
                }
                LoadedModel::Deploy(m) => {
                    assert_eq!(form, "deploy", "{file}");
                    vec![("deploy", m.forward_features(input.view()).unwrap())]
                }
            };
            for (f, feats) in forms {
                let logits = feats.logits.into_dyn();
                let d = max_diff(&logits, &io[&format!("{f}.logits")]);
                assert!(d <= TOL, "{file} {f} logits: max |diff| {d}");
                assert_eq!(feats.stages.len(), 5);
                for (i, s) in feats.stages.iter().enumerate() {
                    let d = max_diff(&s.clone().into_dyn(), &io[&format!("{f}.stage{i}")]);
                    assert!(d <= TOL, "{file} {f} stage{i}: max |diff| {d}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} comparisons ran");
}

#[test]
fn fused_weights_are_within_two_ulps_of_float64_fusion_and_beat_timm_f32() {
    for name in fixture_names() {
        let io = read_f64(&fixture(&format!("{name}.io.safetensors")));
        let ck = checkpoint::load(fixture(&format!("{name}.train.safetensors"))).unwrap();
        let LoadedModel::Train(m) = ck.model else {
            panic!("{name}: train file loaded as deploy")
        };
        let ours = checkpoint::deploy_tensors(&m.fuse().unwrap());
        // timm's own f32 fusion, when the fixture has it.
        let timm_path = fixture(&format!("{name}.deploy.safetensors"));
        let timm = timm_path.exists().then(|| read_f64(&timm_path));
        let mut compared = 0;
        let (mut our_err, mut timm_err) = (0f64, 0f64);
        for (key, (shape, data)) in &ours {
            let Some(want) = io.get(&format!("deploy64.{key}")) else {
                continue;
            };
            assert_eq!(want.shape(), &shape[..], "{name} {key}");
            for (g, w) in data.iter().zip(want.iter()) {
                let u = ulps(*g, *w);
                assert!(
                    u <= 2,
                    "{name} {key}: {g} is {u} ulps from the f64 fusion {w}"
                );
            }
            our_err = worst(our_err, max_abs_diff_slices(data, want.as_slice().unwrap()));
            if let Some(t) = &timm {
                timm_err = worst(timm_err, max_abs_diff(&t[key], want));
            }
            compared += 1;
        }
        assert!(
            compared >= 8,
            "{name}: only {compared} fused tensors had a float64 reference"
        );
        if timm.is_some() {
            assert!(
                our_err <= timm_err,
                "{name}: our max error {our_err} vs timm f32 {timm_err}"
            );
        }
    }
}

#[test]
fn deploy_files_in_both_namings_hold_the_same_model() {
    for name in ["a_narrow", "g4_narrow", "d2se_narrow"] {
        let t = checkpoint::load(fixture(&format!("{name}.deploy.safetensors"))).unwrap();
        let o = checkpoint::load(fixture(&format!("{name}.official.deploy.safetensors"))).unwrap();
        assert_eq!((t.naming, o.naming), (Naming::Timm, Naming::Official));
        assert_eq!(t.model, o.model, "{name}");
    }
}

#[test]
fn inferred_architecture_matches_the_manifest() {
    let m = manifest();
    for f in m["fixtures"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        let ck = checkpoint::load(fixture(&format!("{name}.train.safetensors"))).unwrap();
        let cfg = ck.model.config();
        let layers = f["layers"].as_array().unwrap();
        let blocks: Vec<_> = cfg.blocks().into_iter().flatten().collect();
        assert_eq!(blocks.len(), layers.len(), "{name}");
        for (b, l) in blocks.iter().zip(layers) {
            assert_eq!(
                b.in_channels as u64,
                l["in_chs"].as_u64().unwrap(),
                "{name} layer {}",
                b.layer
            );
            assert_eq!(
                b.out_channels as u64,
                l["out_chs"].as_u64().unwrap(),
                "{name} layer {}",
                b.layer
            );
            assert_eq!(
                b.stride as u64,
                l["stride"].as_u64().unwrap(),
                "{name} layer {}",
                b.layer
            );
            assert_eq!(
                b.groups as u64,
                l["groups"].as_u64().unwrap(),
                "{name} layer {}",
                b.layer
            );
            assert_eq!(
                b.identity,
                l["identity"].as_bool().unwrap(),
                "{name} layer {}",
                b.layer
            );
            assert_eq!(
                b.se_hidden.map(|v| v as u64),
                l["se_rd_chs"].as_u64(),
                "{name} layer {}",
                b.layer
            );
        }
        assert_eq!(
            cfg.in_channels as u64,
            f["timm_config"]["in_chans"].as_u64().unwrap()
        );
        assert_eq!(
            cfg.num_classes as u64,
            f["timm_config"]["num_classes"].as_u64().unwrap()
        );
    }
}

#[test]
fn saved_deploy_model_reloads_identically_in_both_namings() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint::load(fixture("d2se_narrow.train.safetensors")).unwrap();
    let fused = ck.model.into_deploy().unwrap();
    for naming in [Naming::Timm, Naming::Official] {
        let p = dir.path().join(format!("{naming:?}.safetensors"));
        checkpoint::save_deploy(&fused, &p, naming).unwrap();
        let back = checkpoint::load(&p).unwrap();
        assert_eq!(back.naming, naming);
        let LoadedModel::Deploy(back) = back.model else {
            panic!("saved deploy loaded as train")
        };
        assert_eq!(back.stages, fused.stages);
        assert_eq!(back.head, fused.head);
    }
    // The official file uses the official names.
    let keys: Vec<String> = read_f64(&dir.path().join("Official.safetensors"))
        .into_keys()
        .collect();
    assert!(
        keys.contains(&"stage0.rbr_reparam.weight".to_string())
            && keys.contains(&"linear.bias".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.ends_with("se.down.weight")),
        "{keys:?}"
    );
}

#[test]
fn half_precision_checkpoints_load() {
    for (name, dtype) in [("a_narrow_f16", "F16"), ("a_narrow_bf16", "BF16")] {
        let ck = checkpoint::load(fixture(&format!("{name}.train.safetensors"))).unwrap();
        assert_eq!(ck.dtypes, vec![dtype.to_string()]);
    }
}

/// The CPU engine (its default choice, Winograd F(2x2) and plain GEMM everywhere: what ships and
/// the A/B options) in both forms, every fixture, logits and every stage, within 1e-5 of timm's
/// float64 outputs; NaN fails. Forced F(4x4) on these narrow fixtures (the default uses it from
/// 40 channels) measured 9.8e-6 here: it is held to 2e-5 so that another CPU's GEMM summation
/// order cannot flake it.
#[test]
fn cpu_engine_matches_timm_in_both_forms_with_every_algorithm() {
    use repvgg_model::cpu::{ConvAlgo, CpuModel, CpuOptions, Tile};
    let mut checked = 0;
    let mut worst = [0.0f64; 4];
    for name in &fixture_names() {
        let io = read_f64(&fixture(&format!("{name}.io.safetensors")));
        let input: ndarray::Array4<f32> = io["input"]
            .mapv(|v| v as f32)
            .into_dimensionality()
            .unwrap();
        let Some((file, _, _)) = files_of(name).into_iter().find(|(_, f, _)| f == "train") else {
            continue;
        };
        let LoadedModel::Train(train) = checkpoint::load(fixture(&file)).unwrap().model else {
            panic!("{file}: expected a train-form checkpoint");
        };
        let deploy = train.fuse().unwrap();
        for (ai, algo) in [
            ConvAlgo::Auto,
            ConvAlgo::Winograd(Tile::F2),
            ConvAlgo::Gemm,
            ConvAlgo::Winograd(Tile::F4),
        ]
        .into_iter()
        .enumerate()
        {
            let tol = if ai == 3 { 2e-5 } else { TOL };
            let opts = CpuOptions {
                threads: Some(2),
                algo,
            };
            for (f, m) in [
                ("train", CpuModel::train(&train, opts, true).unwrap()),
                ("deploy", CpuModel::deploy(&deploy, opts, true).unwrap()),
            ] {
                let feats = m.forward_features(input.view()).unwrap();
                let mut outs = vec![("logits".to_string(), feats.logits.into_dyn())];
                assert_eq!(feats.stages.len(), 5, "{file} {f}");
                for (i, s) in feats.stages.into_iter().enumerate() {
                    outs.push((format!("stage{i}"), s.into_dyn()));
                }
                for (k, got) in outs {
                    assert!(
                        got.iter().all(|v| v.is_finite()),
                        "{file} {f} {algo:?} {k}: NaN/inf"
                    );
                    let d = max_diff(&got, &io[&format!("{f}.{k}")]);
                    worst[ai] = worst[ai].max(d);
                    assert!(d <= tol, "{file} {f} {algo:?} {k}: max |diff| {d}");
                }
                checked += 1;
            }
        }
    }
    eprintln!(
        "worst |diff| vs timm float64: default {:e}, F2 {:e}, GEMM {:e}, F4 {:e}",
        worst[0], worst[1], worst[2], worst[3]
    );
    assert!(checked >= 40, "only {checked} comparisons ran");
}

/// The comparisons these tests (and `repvgg demo`) use fail on a NaN or an infinity.
#[test]
fn comparisons_fail_on_nan_and_inf() {
    let want = ndarray::ArrayD::<f64>::zeros(ndarray::IxDyn(&[2, 2]));
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut got = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[2, 2]));
        got[[1, 0]] = bad;
        let d = max_diff(&got, &want);
        assert!(!(d < TOL) && !(d <= 1e30), "{bad}: {d}");
        let a = ndarray::Array2::<f32>::zeros((2, 2));
        let d = repvgg_model::max_abs_diff(&a, &got.clone().into_dimensionality().unwrap());
        assert!(!(d < 1e-4) && !(d <= 1e30), "{bad}: {d}");
    }
    assert!(worst(0.0, f64::NAN).is_nan());
}
