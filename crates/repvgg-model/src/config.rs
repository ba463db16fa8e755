//! Architecture descriptions: the paper's variants and custom ones.

use serde::Serialize;

use crate::error::{ModelError, Result};

/// The layers a RepVGG `gN` variant groups: the official layers 2, 4, ..., 26, counting the
/// stem as layer 0 and continuing across stages.
pub const OFFICIAL_GROUPED_LAYERS: [usize; 13] = [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26];

/// One RepVGG block's shape: what the checkpoint must hold for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BlockSpec {
    /// Global layer index (stem = 0).
    pub layer: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Stride of the 3x3 and 1x1 convolutions (2 for the stem and each stage's first block).
    pub stride: usize,
    /// Convolution groups; both channel counts are divisible by it.
    pub groups: usize,
    /// Whether the block has the BN-only identity branch (in = out, stride 1).
    pub identity: bool,
    /// Hidden width of the squeeze-excite module, if any.
    pub se_hidden: Option<usize>,
}

/// A whole network: stem, stages, head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepVggConfig {
    /// A short name (`a0`, ..., or `custom`).
    pub name: String,
    /// Channels of the input image (3 for RGB).
    pub in_channels: usize,
    /// Outputs of the classifier head.
    pub num_classes: usize,
    /// Output width of the stem (layer 0).
    pub stem_channels: usize,
    /// Output width of each stage (the paper has four).
    pub stage_channels: Vec<usize>,
    /// Blocks per stage.
    pub depths: Vec<usize>,
    /// Groups of every layer, stem first (`1 + Σ depths` entries).
    pub layer_groups: Vec<usize>,
    /// Squeeze-excite hidden width of every layer, stem first, `None` for no SE.
    pub layer_se: Vec<Option<usize>>,
}

/// Width of a RepVGG stage: `int(base * multiplier)` as the official code computes it.
fn width(base: usize, multiplier: f64) -> usize {
    (base as f64 * multiplier) as usize
}

impl RepVggConfig {
    /// A custom RepVGG: blocks per stage, width multipliers `a` (stages 1-3) and `b` (last).
    /// Stem width `min(64, int(64a))`, stage widths `int(64a), int(128a), int(256a), int(512b)`.
    pub fn custom(depths: [usize; 4], a: f64, b: f64) -> Result<Self> {
        if !(a > 0.0 && b > 0.0 && a.is_finite() && b.is_finite()) {
            return Err(ModelError::Config(format!(
                "width multipliers must be > 0, found a={a}, b={b}"
            )));
        }
        let stem = 64.min(width(64, a));
        let stage_channels = vec![width(64, a), width(128, a), width(256, a), width(512, b)];
        let layers = 1 + depths.iter().sum::<usize>();
        let cfg = Self {
            name: "custom".into(),
            in_channels: 3,
            num_classes: 1000,
            stem_channels: stem,
            stage_channels,
            depths: depths.to_vec(),
            layer_groups: vec![1; layers],
            layer_se: vec![None; layers],
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Groups the official layers 2, 4, ..., 26 by `groups` (the paper's `gN` variants).
    pub fn with_official_groups(mut self, groups: usize) -> Result<Self> {
        for &l in &OFFICIAL_GROUPED_LAYERS {
            if let Some(g) = self.layer_groups.get_mut(l) {
                *g = groups;
            }
        }
        self.validate()?;
        Ok(self)
    }

    /// Sets the groups of one layer (stem = 0).
    pub fn with_layer_groups(mut self, layer: usize, groups: usize) -> Result<Self> {
        let n = self.layer_groups.len();
        let slot = self.layer_groups.get_mut(layer).ok_or_else(|| {
            ModelError::Config(format!(
                "layer {layer} does not exist (the network has {n} layers)"
            ))
        })?;
        *slot = groups;
        self.validate()?;
        Ok(self)
    }

    /// Adds a squeeze-excite module with hidden width `C / reduction` to every block (stem too,
    /// as the official `use_se` does).
    pub fn with_se(mut self, reduction: usize) -> Result<Self> {
        if reduction == 0 {
            return Err(ModelError::Config("SE reduction must be at least 1".into()));
        }
        let outs: Vec<usize> = self
            .blocks()
            .iter()
            .flatten()
            .map(|b| b.out_channels)
            .collect();
        self.layer_se = outs.iter().map(|c| Some((c / reduction).max(1))).collect();
        self.validate()?;
        Ok(self)
    }

    /// Sets the number of classes of the head.
    pub fn with_classes(mut self, classes: usize) -> Result<Self> {
        self.num_classes = classes;
        self.validate()?;
        Ok(self)
    }

    /// Sets the number of input channels.
    pub fn with_in_channels(mut self, channels: usize) -> Result<Self> {
        self.in_channels = channels;
        self.validate()?;
        Ok(self)
    }

    /// Sets the name (no validation).
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    fn paper(name: &str, depths: [usize; 4], a: f64, b: f64, groups: usize) -> Self {
        let cfg = Self::custom(depths, a, b).and_then(|c| {
            if groups > 1 {
                c.with_official_groups(groups)
            } else {
                Ok(c)
            }
        });
        match cfg {
            Ok(c) => c.named(name),
            Err(e) => unreachable!("the paper's {name} is a valid config: {e}"),
        }
    }

    const A: [usize; 4] = [2, 4, 14, 1];
    const B: [usize; 4] = [4, 6, 16, 1];

    /// RepVGG-A0: blocks (2, 4, 14, 1), width multipliers a=0.75, b=2.5.
    pub fn a0() -> Self {
        Self::paper("a0", Self::A, 0.75, 2.5, 1)
    }
    /// RepVGG-A1: blocks (2, 4, 14, 1), width multipliers a=1, b=2.5.
    pub fn a1() -> Self {
        Self::paper("a1", Self::A, 1.0, 2.5, 1)
    }
    /// RepVGG-A2: blocks (2, 4, 14, 1), width multipliers a=1.5, b=2.75.
    pub fn a2() -> Self {
        Self::paper("a2", Self::A, 1.5, 2.75, 1)
    }
    /// RepVGG-B0: blocks (4, 6, 16, 1), width multipliers a=1, b=2.5.
    pub fn b0() -> Self {
        Self::paper("b0", Self::B, 1.0, 2.5, 1)
    }
    /// RepVGG-B1: blocks (4, 6, 16, 1), width multipliers a=2, b=4.
    pub fn b1() -> Self {
        Self::paper("b1", Self::B, 2.0, 4.0, 1)
    }
    /// RepVGG-B1g2: B1 (a=2, b=4) with groups 2 on the official layers.
    pub fn b1g2() -> Self {
        Self::paper("b1g2", Self::B, 2.0, 4.0, 2)
    }
    /// RepVGG-B1g4: B1 (a=2, b=4) with groups 4 on the official layers.
    pub fn b1g4() -> Self {
        Self::paper("b1g4", Self::B, 2.0, 4.0, 4)
    }
    /// RepVGG-B2: blocks (4, 6, 16, 1), width multipliers a=2.5, b=5.
    pub fn b2() -> Self {
        Self::paper("b2", Self::B, 2.5, 5.0, 1)
    }
    /// RepVGG-B2g2: B2 (a=2.5, b=5) with groups 2 on the official layers.
    pub fn b2g2() -> Self {
        Self::paper("b2g2", Self::B, 2.5, 5.0, 2)
    }
    /// RepVGG-B2g4: B2 (a=2.5, b=5) with groups 4 on the official layers.
    pub fn b2g4() -> Self {
        Self::paper("b2g4", Self::B, 2.5, 5.0, 4)
    }
    /// RepVGG-B3: blocks (4, 6, 16, 1), width multipliers a=3, b=5.
    pub fn b3() -> Self {
        Self::paper("b3", Self::B, 3.0, 5.0, 1)
    }
    /// RepVGG-B3g2: B3 (a=3, b=5) with groups 2 on the official layers.
    pub fn b3g2() -> Self {
        Self::paper("b3g2", Self::B, 3.0, 5.0, 2)
    }
    /// RepVGG-B3g4: B3 (a=3, b=5) with groups 4 on the official layers.
    pub fn b3g4() -> Self {
        Self::paper("b3g4", Self::B, 3.0, 5.0, 4)
    }
    /// RepVGG-D2se: blocks (8, 14, 24, 1), widths 2.5/5, SE (reduction 16) in every block.
    pub fn d2se() -> Self {
        match Self::paper("d2se", [8, 14, 24, 1], 2.5, 5.0, 1).with_se(16) {
            Ok(c) => c,
            Err(e) => unreachable!("d2se is a valid config: {e}"),
        }
    }

    /// Every named variant, in the paper's order.
    pub fn all_named() -> Vec<Self> {
        NAMES.iter().filter_map(|n| Self::by_name(n).ok()).collect()
    }

    /// Looks a variant up by name (`a0`, `repvgg_a0`, `RepVGG-A0` all work).
    pub fn by_name(name: &str) -> Result<Self> {
        let key = name.to_ascii_lowercase().replace(['-', '_'], "");
        let key = key.strip_prefix("repvgg").unwrap_or(&key);
        Ok(match key {
            "a0" => Self::a0(),
            "a1" => Self::a1(),
            "a2" => Self::a2(),
            "b0" => Self::b0(),
            "b1" => Self::b1(),
            "b1g2" => Self::b1g2(),
            "b1g4" => Self::b1g4(),
            "b2" => Self::b2(),
            "b2g2" => Self::b2g2(),
            "b2g4" => Self::b2g4(),
            "b3" => Self::b3(),
            "b3g2" => Self::b3g2(),
            "b3g4" => Self::b3g4(),
            "d2se" => Self::d2se(),
            _ => return Err(ModelError::UnknownArch(name.into())),
        })
    }

    /// Number of layers (stem + every block).
    pub fn num_layers(&self) -> usize {
        1 + self.depths.iter().sum::<usize>()
    }

    /// Width of the features before the head.
    pub fn feature_channels(&self) -> usize {
        self.stage_channels
            .last()
            .copied()
            .unwrap_or(self.stem_channels)
    }

    /// Blocks grouped by stage; stage 0 is the stem alone. Strides: 2 for the stem and the
    /// first block of every stage, 1 elsewhere.
    pub fn blocks(&self) -> Vec<Vec<BlockSpec>> {
        let mut out = Vec::with_capacity(self.depths.len() + 1);
        let g = |l: usize| self.layer_groups.get(l).copied().unwrap_or(1);
        let se = |l: usize| self.layer_se.get(l).copied().flatten();
        out.push(vec![BlockSpec {
            layer: 0,
            in_channels: self.in_channels,
            out_channels: self.stem_channels,
            stride: 2,
            groups: g(0),
            identity: false,
            se_hidden: se(0),
        }]);
        let (mut layer, mut cin) = (1, self.stem_channels);
        for (&depth, &cout) in self.depths.iter().zip(&self.stage_channels) {
            let mut stage = Vec::with_capacity(depth);
            for j in 0..depth {
                let stride = if j == 0 { 2 } else { 1 };
                stage.push(BlockSpec {
                    layer,
                    in_channels: cin,
                    out_channels: cout,
                    stride,
                    groups: g(layer),
                    identity: cin == cout && stride == 1,
                    se_hidden: se(layer),
                });
                cin = cout;
                layer += 1;
            }
            out.push(stage);
        }
        out
    }

    /// Checks that the configuration can be built.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(ModelError::Config(m));
        if self.depths.is_empty() || self.depths.len() != self.stage_channels.len() {
            return err(format!(
                "{} stage depths but {} stage widths",
                self.depths.len(),
                self.stage_channels.len()
            ));
        }
        if let Some(i) = self.depths.iter().position(|&d| d == 0) {
            return err(format!("stage {} has 0 blocks", i + 1));
        }
        if self.in_channels == 0 || self.num_classes == 0 || self.stem_channels == 0 {
            return err(format!(
                "in_channels={}, num_classes={}, stem width={} must all be at least 1",
                self.in_channels, self.num_classes, self.stem_channels
            ));
        }
        if let Some(i) = self.stage_channels.iter().position(|&c| c == 0) {
            return err(format!(
                "stage {} has width 0 (width multiplier too small)",
                i + 1
            ));
        }
        let n = self.num_layers();
        if self.layer_groups.len() != n || self.layer_se.len() != n {
            return err(format!(
                "{n} layers but {} group entries and {} SE entries",
                self.layer_groups.len(),
                self.layer_se.len()
            ));
        }
        for b in self.blocks().iter().flatten() {
            if b.groups == 0 || b.in_channels % b.groups != 0 || b.out_channels % b.groups != 0 {
                return err(format!(
                    "layer {}: {} -> {} channels cannot be split into {} groups",
                    b.layer, b.in_channels, b.out_channels, b.groups
                ));
            }
            if b.se_hidden == Some(0) {
                return err(format!("layer {}: SE hidden width 0", b.layer));
            }
        }
        Ok(())
    }

    /// Output size of the last stage for an input of `h` x `w` (each layer: 3x3, pad 1).
    pub fn feature_size(&self, h: usize, w: usize) -> (usize, usize) {
        let mut hw = (h, w);
        for b in self.blocks().iter().flatten() {
            hw = (
                hw.0.saturating_sub(1) / b.stride + 1,
                hw.1.saturating_sub(1) / b.stride + 1,
            );
        }
        hw
    }
}

/// The named variants.
pub const NAMES: [&str; 14] = [
    "a0", "a1", "a2", "b0", "b1", "b1g2", "b1g4", "b2", "b2g2", "b2g4", "b3", "b3g2", "b3g4",
    "d2se",
];
