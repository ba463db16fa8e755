//! Parameter counts and multiply-adds.

use serde::Serialize;

use crate::config::RepVggConfig;

/// One row of the per-layer table (deployed form).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerRow {
    pub name: String,
    pub in_channels: usize,
    pub out_channels: usize,
    pub stride: usize,
    pub groups: usize,
    pub output: (usize, usize),
    pub identity: bool,
    pub se_hidden: Option<usize>,
    pub params_train: u64,
    pub params_deploy: u64,
    pub macs: u64,
}

/// Whole-network figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub arch: String,
    pub input: (usize, usize),
    pub params_train: u64,
    pub params_deploy: u64,
    /// Multiply-adds of the deployed network per image (convs, SE 1x1 convs, linear head).
    pub macs: u64,
    pub layers: Vec<LayerRow>,
}

/// Counts from the configuration alone (no weights needed).
pub fn summarize(config: &RepVggConfig, height: usize, width: usize) -> Summary {
    let mut layers = Vec::new();
    let (mut h, mut w) = (height, width);
    for (si, stage) in config.blocks().iter().enumerate() {
        for (j, b) in stage.iter().enumerate() {
            let (o, ig) = (
                b.out_channels as u64,
                (b.in_channels / b.groups.max(1)) as u64,
            );
            h = h.saturating_sub(1) / b.stride + 1;
            w = w.saturating_sub(1) / b.stride + 1;
            let se = b.se_hidden.map_or(0, |r| 2 * r as u64 * o + r as u64 + o);
            // Train: 3x3 conv + BN(gamma, beta), 1x1 conv + BN, identity BN.
            let train =
                o * ig * 9 + 2 * o + o * ig + 2 * o + if b.identity { 2 * o } else { 0 } + se;
            let deploy = o * ig * 9 + o + se;
            let macs = o * ig * 9 * (h * w) as u64 + b.se_hidden.map_or(0, |r| 2 * r as u64 * o);
            layers.push(LayerRow {
                name: if si == 0 {
                    "stem".into()
                } else {
                    format!("stage{si}.{j}")
                },
                in_channels: b.in_channels,
                out_channels: b.out_channels,
                stride: b.stride,
                groups: b.groups,
                output: (h, w),
                identity: b.identity,
                se_hidden: b.se_hidden,
                params_train: train,
                params_deploy: deploy,
                macs,
            });
        }
    }
    let (c, k) = (config.feature_channels() as u64, config.num_classes as u64);
    layers.push(LayerRow {
        name: "head.fc".into(),
        in_channels: c as usize,
        out_channels: k as usize,
        stride: 1,
        groups: 1,
        output: (1, 1),
        identity: false,
        se_hidden: None,
        params_train: c * k + k,
        params_deploy: c * k + k,
        macs: c * k,
    });
    Summary {
        arch: config.name.clone(),
        input: (height, width),
        params_train: layers.iter().map(|l| l.params_train).sum(),
        params_deploy: layers.iter().map(|l| l.params_deploy).sum(),
        macs: layers.iter().map(|l| l.macs).sum(),
        layers,
    }
}
