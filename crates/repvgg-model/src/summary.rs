//! Parameter counts and multiply-adds.

use serde::Serialize;

use crate::config::RepVggConfig;
use crate::error::{ModelError, Result};

/// One row of the per-layer table (deployed form).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerRow {
    /// `stem`, `stage{i}.{j}` or `head.fc`.
    pub name: String,
    /// Input channels (for the head: feature width).
    pub in_channels: usize,
    /// Output channels (for the head: classes).
    pub out_channels: usize,
    /// Convolution stride (1 for the head).
    pub stride: usize,
    /// Convolution groups (1 for the head).
    pub groups: usize,
    /// Output size `(height, width)` of the layer (`(1, 1)` for the head).
    pub output: (usize, usize),
    /// Whether the train form has the BN-only identity branch.
    pub identity: bool,
    /// Hidden width of the squeeze-excite module, if any.
    pub se_hidden: Option<usize>,
    /// Parameters of the train form: 3x3 and 1x1 convs, their BN gamma/beta, identity BN, SE.
    pub params_train: u64,
    /// Parameters of the deployed form: fused 3x3 weight and bias, SE.
    pub params_deploy: u64,
    /// Multiply-adds per image of the deployed layer.
    pub macs: u64,
}

/// Whole-network figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The configuration's name.
    pub arch: String,
    /// Input size `(height, width)` the counts are for.
    pub input: (usize, usize),
    /// Parameters of the train form, head included.
    pub params_train: u64,
    /// Parameters of the deployed form, head included.
    pub params_deploy: u64,
    /// Multiply-adds of the deployed network per image (convs, SE 1x1 convs, linear head).
    pub macs: u64,
    /// One row per layer, stem first, head last.
    pub layers: Vec<LayerRow>,
}

/// Checked u64 arithmetic: `None` on overflow.
fn mul(terms: &[u64]) -> Option<u64> {
    terms.iter().try_fold(1u64, |a, &b| a.checked_mul(b))
}

fn add(terms: &[u64]) -> Option<u64> {
    terms.iter().try_fold(0u64, |a, &b| a.checked_add(b))
}

/// Counts from the configuration alone (no weights needed), for an input of `height` x
/// `width`. Every count is checked u64 arithmetic: a size whose multiply-adds or parameter
/// count overflow is an error, not a wrapped number.
pub fn summarize(config: &RepVggConfig, height: usize, width: usize) -> Result<Summary> {
    let overflow = |what: &str| {
        ModelError::Config(format!(
            "summary of {} at {height}x{width}: the {what} overflow a 64-bit count",
            config.name
        ))
    };
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
            let params = || -> Option<(u64, u64, u64)> {
                let se = match b.se_hidden {
                    Some(r) => add(&[mul(&[2, r as u64, o])?, r as u64, o])?,
                    None => 0,
                };
                let k3 = mul(&[o, ig, 9])?;
                let k1 = mul(&[o, ig])?;
                let bn = mul(&[2, o])?;
                let id = if b.identity { bn } else { 0 };
                // Train: 3x3 conv + BN(gamma, beta), 1x1 conv + BN, identity BN.
                let train = add(&[k3, bn, k1, bn, id, se])?;
                let deploy = add(&[k3, o, se])?;
                let se_macs = b.se_hidden.map_or(Some(0), |r| mul(&[2, r as u64, o]))?;
                let macs = add(&[mul(&[k3, h as u64, w as u64])?, se_macs])?;
                Some((train, deploy, macs))
            };
            let (train, deploy, macs) =
                params().ok_or_else(|| overflow("multiply-adds or parameters"))?;
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
    let head_macs = mul(&[c, k]).ok_or_else(|| overflow("head parameters"))?;
    let head = add(&[head_macs, k]).ok_or_else(|| overflow("head parameters"))?;
    layers.push(LayerRow {
        name: "head.fc".into(),
        in_channels: c as usize,
        out_channels: k as usize,
        stride: 1,
        groups: 1,
        output: (1, 1),
        identity: false,
        se_hidden: None,
        params_train: head,
        params_deploy: head,
        macs: head_macs,
    });
    let total = |f: fn(&LayerRow) -> u64, what: &str| {
        layers
            .iter()
            .try_fold(0u64, |a, l| a.checked_add(f(l)))
            .ok_or_else(|| overflow(what))
    };
    Ok(Summary {
        arch: config.name.clone(),
        input: (height, width),
        params_train: total(|l| l.params_train, "parameters")?,
        params_deploy: total(|l| l.params_deploy, "parameters")?,
        macs: total(|l| l.macs, "multiply-adds")?,
        layers,
    })
}
