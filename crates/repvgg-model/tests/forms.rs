//! The two forms of random networks agree; configs follow the paper's rules.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

use ndarray::Array4;
use proptest::prelude::*;
use repvgg_model::{
    Block, ModelError, OFFICIAL_GROUPED_LAYERS, RepVggConfig, TrainModel, max_abs_diff,
};

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random custom networks (depths, widths, groups, SE, classes, input channels, odd and
    /// non-square inputs): the fused network equals the multi-branch one, stage by stage.
    #[test]
    fn fused_network_equals_multi_branch(
        d in prop::array::uniform4(1usize..=3), a in 1usize..=3, b in 1usize..=4, g in prop_oneof![Just(1usize), Just(2), Just(4)],
        se in any::<bool>(), classes in 1usize..=12, cin in 1usize..=4, h in 5usize..=40, w in 5usize..=40, seed in any::<u64>(),
    ) {
        // Widths that are multiples of 8 keep every group count valid.
        let cfg = RepVggConfig::custom(d, a as f64 * 0.125, b as f64 * 0.0625).unwrap()
            .with_official_groups(g).unwrap().with_classes(classes).unwrap().with_in_channels(cin).unwrap();
        let cfg = if se { cfg.with_se(4).unwrap() } else { cfg };
        let train = TrainModel::random(&cfg, seed).unwrap();
        let deploy = train.fuse().unwrap();
        prop_assert!(deploy.blocks().all(|b| b.spec().kernel_size == 3));
        let x = Array4::from_shape_fn((2, cin, h, w), |(n, c, y, xx)| (((n * 7 + c * 5 + y * 3 + xx) % 11) as f32 - 5.0) / 5.0);
        let ft = train.forward_features(x.view()).unwrap();
        let fd = deploy.forward_features(x.view()).unwrap();
        prop_assert_eq!(ft.stages.len(), 5);
        for (i, (s, t)) in ft.stages.iter().zip(&fd.stages).enumerate() {
            let scale = s.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let d = max_abs_diff(s, t);
            prop_assert!(d <= 1e-5 * scale * 10.0, "stage{} differs by {} (scale {})", i, d, scale);
        }
        prop_assert_eq!(ft.logits.dim(), (2, classes));
        let d = max_abs_diff(&ft.logits, &fd.logits);
        prop_assert!(d <= 1e-4, "logits differ by {}", d);
    }
}

#[test]
fn paper_variants_follow_the_width_and_group_rules() {
    let a0 = RepVggConfig::a0();
    assert_eq!(
        (a0.stem_channels, a0.stage_channels.clone()),
        (48, vec![48, 96, 192, 1280])
    );
    let b1 = RepVggConfig::b1();
    assert_eq!(
        (b1.stem_channels, b1.stage_channels.clone()),
        (64, vec![128, 256, 512, 2048])
    );
    let b3g4 = RepVggConfig::b3g4();
    let blocks: Vec<_> = b3g4.blocks().into_iter().flatten().collect();
    assert_eq!(blocks.len(), 28);
    for b in &blocks {
        let want = if OFFICIAL_GROUPED_LAYERS.contains(&b.layer) {
            4
        } else {
            1
        };
        assert_eq!(b.groups, want, "layer {}", b.layer);
        assert_eq!(
            b.stride,
            if [0, 1, 5, 11, 27].contains(&b.layer) {
                2
            } else {
                1
            },
            "layer {}",
            b.layer
        );
    }
    let d2se = RepVggConfig::d2se();
    assert_eq!(d2se.depths, vec![8, 14, 24, 1]);
    assert!(
        d2se.blocks()
            .iter()
            .flatten()
            .all(|b| b.se_hidden == Some(b.out_channels / 16))
    );
    assert_eq!(RepVggConfig::all_named().len(), 14);
    assert_eq!(
        RepVggConfig::by_name("RepVGG-B2g4").unwrap(),
        RepVggConfig::b2g4()
    );
    assert_eq!(RepVggConfig::by_name("repvgg_a1").unwrap().name, "a1");
}

#[test]
fn impossible_configs_are_rejected() {
    let e = RepVggConfig::custom([2, 4, 14, 1], 0.01, 1.0).unwrap_err();
    assert!(e.to_string().contains("stem width=0"), "{e}");
    let e = RepVggConfig::custom([2, 0, 14, 1], 1.0, 1.0).unwrap_err();
    assert!(e.to_string().contains("stage 2 has 0 blocks"), "{e}");
    let e = RepVggConfig::custom([1, 1, 1, 1], -1.0, 1.0).unwrap_err();
    assert!(matches!(e, ModelError::Config(_)));
    // 48 channels cannot be split into 5 groups.
    let e = RepVggConfig::a0().with_official_groups(5).unwrap_err();
    assert!(
        e.to_string().contains("cannot be split into 5 groups"),
        "{e}"
    );
    let e = RepVggConfig::a0().with_layer_groups(99, 2).unwrap_err();
    assert!(e.to_string().contains("layer 99 does not exist"), "{e}");
    assert!(RepVggConfig::a0().with_classes(0).is_err());
    assert!(RepVggConfig::a0().with_se(0).is_err());
    assert!(matches!(
        RepVggConfig::by_name("c7"),
        Err(ModelError::UnknownArch(_))
    ));
}

#[test]
fn bad_inputs_are_typed_errors() {
    let cfg = RepVggConfig::custom([1, 1, 1, 1], 0.125, 0.0625).unwrap();
    let m = TrainModel::random(&cfg, 3).unwrap().fuse().unwrap();
    let e = m.forward(Array4::zeros((1, 1, 16, 16)).view()).unwrap_err();
    assert!(e.to_string().contains("expected [N, 3, H, W]"), "{e}");
    let e = m.forward(Array4::zeros((0, 3, 16, 16)).view()).unwrap_err();
    assert!(matches!(e, ModelError::Input { .. }));
    let mut x = Array4::zeros((1, 3, 8, 8));
    x[[0, 1, 2, 3]] = f32::NAN;
    let e = m.forward(x.view()).unwrap_err();
    assert!(e.to_string().contains("NaN"), "{e}");
    // A 1x1 input still passes five stride-2 layers (padding 1).
    assert_eq!(
        m.forward(Array4::zeros((1, 3, 1, 1)).view()).unwrap().dim(),
        (1, 1000)
    );
}
