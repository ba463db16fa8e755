//! Parameter and multiply-add counts against the paper (Table 4 and 5) and timm.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

use repvgg_model::{RepVggConfig, TrainModel, summary::summarize};

/// Paper, Tables 4 and 5: deployed params (millions, 2 decimals) and FLOPs (billions of
/// multiply-adds, 1 decimal) at 224x224.
const PAPER: [(&str, f64, f64); 11] = [
    ("a0", 8.30, 1.4),
    ("a1", 12.78, 2.4),
    ("a2", 25.49, 5.1),
    ("b0", 14.33, 3.1),
    ("b1", 51.82, 11.8),
    ("b1g2", 41.36, 8.8),
    ("b1g4", 36.12, 7.3),
    ("b2", 80.31, 18.4),
    ("b2g4", 55.77, 11.3),
    ("b3", 110.96, 26.2),
    ("b3g4", 75.62, 16.1),
];

/// timm 1.0.31 `sum(p.numel() for p in model.parameters())`, train form (scripts/ref).
const TIMM_TRAIN: [(&str, u64); 11] = [
    ("a0", 9_108_968),
    ("a1", 14_092_264),
    ("a2", 28_210_600),
    ("b0", 15_817_960),
    ("b1", 57_415_016),
    ("b1g4", 39_966_056),
    ("b2", 89_022_376),
    ("b2g4", 61_758_376),
    ("b3", 123_085_288),
    ("b3g4", 83_825_128),
    ("d2se", 133_334_836),
];

#[test]
fn d2se_matches_timm_in_both_forms() {
    // timm 1.0.31: repvgg_d2se has 133,334,836 parameters, 120,387,572 after reparameterize_model.
    let s = summarize(&RepVggConfig::d2se(), 320, 320).unwrap();
    assert_eq!(
        (s.params_train, s.params_deploy),
        (133_334_836, 120_387_572)
    );
    assert!(
        s.layers
            .iter()
            .take(47)
            .all(|l| l.se_hidden == Some(l.out_channels / 16))
    );
}

#[test]
fn paper_table_params_and_flops() {
    for (name, params_m, gflops) in PAPER {
        let s = summarize(&RepVggConfig::by_name(name).unwrap(), 224, 224).unwrap();
        // The paper truncates the parameter count (A0: 8,309,384 is printed 8.30) and rounds FLOPs.
        let p = (s.params_deploy / 10_000) as f64 / 100.0;
        let f = (s.macs as f64 / 1e9 * 10.0).round() / 10.0;
        assert_eq!(
            p, params_m,
            "{name}: params {} vs paper {params_m}M",
            s.params_deploy
        );
        assert_eq!(f, gflops, "{name}: macs {} vs paper {gflops}B", s.macs);
    }
}

#[test]
fn train_params_match_timm() {
    for (name, want) in TIMM_TRAIN {
        let s = summarize(&RepVggConfig::by_name(name).unwrap(), 224, 224).unwrap();
        assert_eq!(s.params_train, want, "{name}");
    }
}

#[test]
fn a0_macs_exact() {
    // 1.361 GMAC per image, as the peers note states.
    let s = summarize(&RepVggConfig::a0(), 224, 224).unwrap();
    assert_eq!(s.macs / 1_000_000, 1361, "{}", s.macs);
    assert_eq!(s.layers.len(), 1 + 21 + 1);
    assert_eq!(s.layers[0].output, (112, 112));
    assert_eq!(s.layers[21].output, (7, 7));
}

#[test]
fn summary_counts_equal_the_built_models() {
    for cfg in [
        RepVggConfig::a0(),
        RepVggConfig::custom([1, 2, 3, 1], 0.25, 0.5)
            .unwrap()
            .with_se(4)
            .unwrap(),
    ] {
        let m = TrainModel::random(&cfg, 1).unwrap();
        let s = summarize(&cfg, 64, 64).unwrap();
        assert_eq!(s.params_train, m.num_params() as u64, "{}", cfg.name);
        assert_eq!(
            s.params_deploy,
            m.fuse().unwrap().num_params() as u64,
            "{}",
            cfg.name
        );
    }
}
