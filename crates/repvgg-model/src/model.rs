//! The two forms of one network: train-time (multi-branch) and deployed (one 3x3 conv per block).

use ndarray::{Array1, Array2, Array4, ArrayView4, Axis};
use repvgg_math::fuse::RepVggBranches;
use repvgg_math::ops::{self, Activation};
use repvgg_math::{ConvSpec, FusedConv};

use crate::config::{BlockSpec, RepVggConfig};
use crate::error::{ModelError, Result};

/// Squeeze-excite: `x * sigmoid(fc2(relu(fc1(gap(x)))))`, kept unfused.
#[derive(Debug, Clone, PartialEq)]
pub struct SqueezeExcite {
    /// `[hidden, C]`.
    pub fc1_weight: Array2<f32>,
    /// `[hidden]`.
    pub fc1_bias: Array1<f32>,
    /// `[C, hidden]`.
    pub fc2_weight: Array2<f32>,
    /// `[C]`.
    pub fc2_bias: Array1<f32>,
}

impl SqueezeExcite {
    /// Scales every channel of `x` (`[N, C, H, W]`) in place by its gate.
    pub fn forward(&self, x: &mut Array4<f32>) -> Result<()> {
        let pooled = ops::global_avg_pool(x.view())?;
        let mut h = ops::linear(
            pooled.view(),
            self.fc1_weight.view(),
            Some(self.fc1_bias.view()),
        )?;
        h.mapv_inplace(|v| v.max(0.0));
        let gate = ops::linear(h.view(), self.fc2_weight.view(), Some(self.fc2_bias.view()))?;
        for (mut img, g) in x.outer_iter_mut().zip(gate.outer_iter()) {
            for (mut plane, &gv) in img.outer_iter_mut().zip(g.iter()) {
                let s = 1.0 / (1.0 + (-gv).exp());
                plane.mapv_inplace(|v| v * s);
            }
        }
        Ok(())
    }

    /// Number of weights and biases of both linear layers.
    pub fn num_params(&self) -> usize {
        self.fc1_weight.len() + self.fc1_bias.len() + self.fc2_weight.len() + self.fc2_bias.len()
    }
}

/// The classifier: global average pool then linear.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    /// `[classes, C]`.
    pub weight: Array2<f32>,
    /// `[classes]`.
    pub bias: Array1<f32>,
}

/// A training-time block: three branches (as many as exist), optional SE, ReLU.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainBlock {
    /// The 3x3 conv+BN, the 1x1 conv+BN and the identity BN, with the block's conv spec.
    pub branches: RepVggBranches<f32>,
    /// The squeeze-excite module, applied after the branches are summed.
    pub se: Option<SqueezeExcite>,
}

/// A deployed block: one 3x3 conv with bias, optional SE, ReLU.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployBlock {
    /// The fused 3x3 conv: weight `[out, in/groups, 3, 3]`, bias `[out]`.
    pub conv: FusedConv<f32>,
    /// The squeeze-excite module, applied after the conv.
    pub se: Option<SqueezeExcite>,
}

/// What both block forms share: a forward pass (ReLU included) and a spec.
pub trait Block {
    /// The block's 3x3 convolution spec (channels, stride, groups).
    fn spec(&self) -> &ConvSpec;
    /// The squeeze-excite module, if the block has one.
    fn se(&self) -> Option<&SqueezeExcite>;
    /// Runs the block on `[N, C_in, H, W]`, giving `[N, C_out, H', W']` after ReLU.
    fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>>;
    /// Learnable parameters as PyTorch counts them (conv weights, BN gamma/beta, biases).
    fn num_params(&self) -> usize;
}

impl Block for TrainBlock {
    fn spec(&self) -> &ConvSpec {
        &self.branches.spec
    }
    fn se(&self) -> Option<&SqueezeExcite> {
        self.se.as_ref()
    }
    fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>> {
        let mut y = self.branches.forward(x)?;
        if let Some(se) = &self.se {
            se.forward(&mut y)?;
        }
        ops::relu_inplace(&mut y);
        Ok(y)
    }
    fn num_params(&self) -> usize {
        let b = &self.branches;
        let cb = |c: &repvgg_math::ConvBn<f32>| {
            c.weight.len() + c.bias.as_ref().map_or(0, |b| b.len()) + 2 * c.bn.channels()
        };
        cb(&b.dense)
            + b.one_by_one.as_ref().map_or(0, cb)
            + b.identity.as_ref().map_or(0, |bn| 2 * bn.channels())
            + self.se.as_ref().map_or(0, SqueezeExcite::num_params)
    }
}

impl Block for DeployBlock {
    fn spec(&self) -> &ConvSpec {
        &self.conv.spec
    }
    fn se(&self) -> Option<&SqueezeExcite> {
        self.se.as_ref()
    }
    fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>> {
        let c = &self.conv;
        match &self.se {
            None => Ok(ops::conv2d_act(
                x,
                c.weight.view(),
                Some(c.bias.view()),
                &c.spec,
                Activation::Relu,
            )?),
            Some(se) => {
                let mut y = ops::conv2d(x, c.weight.view(), Some(c.bias.view()), &c.spec)?;
                se.forward(&mut y)?;
                ops::relu_inplace(&mut y);
                Ok(y)
            }
        }
    }
    fn num_params(&self) -> usize {
        self.conv.weight.len()
            + self.conv.bias.len()
            + self.se.as_ref().map_or(0, SqueezeExcite::num_params)
    }
}

/// A RepVGG network in either form. `stages[0]` is the stem (one block).
#[derive(Debug, Clone, PartialEq)]
pub struct RepVgg<B> {
    /// The architecture.
    pub config: RepVggConfig,
    /// Blocks by stage, stem first, as `RepVggConfig::blocks` lists them.
    pub stages: Vec<Vec<B>>,
    /// The classifier.
    pub head: Head,
}

/// The multi-branch form.
pub type TrainModel = RepVgg<TrainBlock>;
/// The fused, plain form.
pub type DeployModel = RepVgg<DeployBlock>;

/// Logits and the output of every stage (stage 0 = stem).
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// The output of the last block of every stage, `[N, C, H, W]`.
    pub stages: Vec<Array4<f32>>,
    /// `[N, classes]`.
    pub logits: Array2<f32>,
}

impl<B: Block> RepVgg<B> {
    /// Checks that an input batch fits: `[N, in_channels, H, W]` with N, H, W ≥ 1, finite.
    pub fn check_input(&self, x: &ArrayView4<'_, f32>) -> Result<()> {
        check_input(self.config.in_channels, x)
    }

    /// Logits and every stage's output.
    pub fn forward_features(&self, x: ArrayView4<'_, f32>) -> Result<Features> {
        self.run(x, true)
    }

    /// Logits `[N, classes]`.
    pub fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
        Ok(self.run(x, false)?.logits)
    }

    fn run(&self, x: ArrayView4<'_, f32>, keep: bool) -> Result<Features> {
        self.check_input(&x)?;
        let mut stages = Vec::new();
        let mut cur: Option<Array4<f32>> = None;
        for stage in &self.stages {
            for block in stage {
                let next = match &cur {
                    Some(c) => block.forward(c.view())?,
                    None => block.forward(x.view())?,
                };
                cur = Some(next);
            }
            if keep && let Some(c) = &cur {
                stages.push(c.clone());
            }
        }
        let feats = cur.ok_or_else(|| ModelError::Config("network has no layers".into()))?;
        let pooled = ops::global_avg_pool(feats.view())?;
        let logits = ops::linear(
            pooled.view(),
            self.head.weight.view(),
            Some(self.head.bias.view()),
        )?;
        Ok(Features { stages, logits })
    }

    /// Every block in order, stem first.
    pub fn blocks(&self) -> impl Iterator<Item = &B> {
        self.stages.iter().flatten()
    }

    /// Learnable parameters (PyTorch's count).
    pub fn num_params(&self) -> usize {
        self.blocks().map(Block::num_params).sum::<usize>()
            + self.head.weight.len()
            + self.head.bias.len()
    }
}

impl TrainModel {
    /// Folds every block into one 3x3 conv (fusion in f64, rounded once to f32).
    pub fn fuse(&self) -> Result<DeployModel> {
        let stages = self
            .stages
            .iter()
            .map(|s| {
                s.iter()
                    .map(|b| {
                        Ok(DeployBlock {
                            conv: b.branches.fuse()?,
                            se: b.se.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RepVgg {
            config: self.config.clone(),
            stages,
            head: self.head.clone(),
        })
    }

    /// A randomly initialised train-form model (deterministic in `seed`), with BN statistics
    /// away from 0 and 1 and weights scaled to keep activations O(1). For tests and benches.
    pub fn random(config: &RepVggConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut rng = SplitMix(seed);
        let stages = config
            .blocks()
            .iter()
            .map(|stage| {
                stage
                    .iter()
                    .map(|b| random_block(b, &mut rng))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let c = config.feature_channels();
        let scale = (1.0 / c as f64).sqrt();
        let head = Head {
            weight: Array2::from_shape_fn((config.num_classes, c), |_| rng.sym(scale) as f32),
            bias: Array1::from_shape_fn(config.num_classes, |_| rng.sym(0.1) as f32),
        };
        Ok(RepVgg {
            config: config.clone(),
            stages,
            head,
        })
    }
}

/// A BN (after an optional conv bias) as `y = conv * scale + shift` per channel, folded in f64:
/// what both engines apply in a train-form conv's epilogue.
pub(crate) fn affine_of(
    bn: &repvgg_math::BatchNorm<f32>,
    conv_bias: Option<&ndarray::Array1<f32>>,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (scale, shift) = bn.scale_shift()?;
    let shift = shift
        .iter()
        .zip(&scale)
        .enumerate()
        .map(|(c, (sh, sc))| (sh + conv_bias.map_or(0.0, |b| f64::from(b[c])) * sc) as f32)
        .collect();
    Ok((scale.iter().map(|&s| s as f32).collect(), shift))
}

/// The 3x3 spec of a block.
pub fn block_spec(b: &BlockSpec) -> Result<ConvSpec> {
    Ok(ConvSpec::conv3x3(
        b.in_channels,
        b.out_channels,
        b.stride,
        b.groups,
    )?)
}

struct SplitMix(u64);

impl SplitMix {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn sym(&mut self, s: f64) -> f64 {
        (self.unit() * 2.0 - 1.0) * s
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

fn random_block(b: &BlockSpec, rng: &mut SplitMix) -> Result<TrainBlock> {
    let spec = block_spec(b)?;
    let c = b.out_channels;
    let fan_in = (b.in_channels / b.groups) as f64;
    let bn = |rng: &mut SplitMix| {
        repvgg_math::BatchNorm::new(
            Array1::from_shape_fn(c, |_| rng.range(0.4, 1.2) as f32),
            Array1::from_shape_fn(c, |_| rng.sym(0.5) as f32),
            Array1::from_shape_fn(c, |_| rng.sym(0.8) as f32),
            Array1::from_shape_fn(c, |_| rng.range(0.3, 3.0) as f32),
            1e-5,
        )
    };
    let s3 = (1.0 / (9.0 * fan_in)).sqrt();
    let s1 = (1.0 / fan_in).sqrt() * 0.5;
    let dense_w = Array4::from_shape_fn(spec.weight_shape(), |_| rng.sym(s3) as f32);
    let dense = repvgg_math::ConvBn::new(dense_w, None, bn(rng)?);
    let w1 = Array4::from_shape_fn((c, b.in_channels / b.groups, 1, 1), |_| rng.sym(s1) as f32);
    let one = repvgg_math::ConvBn::new(w1, None, bn(rng)?);
    let identity = if b.identity { Some(bn(rng)?) } else { None };
    let se = b.se_hidden.map(|r| SqueezeExcite {
        fc1_weight: Array2::from_shape_fn((r, c), |_| rng.sym((1.0 / c as f64).sqrt()) as f32),
        fc1_bias: Array1::from_shape_fn(r, |_| rng.sym(0.1) as f32),
        fc2_weight: Array2::from_shape_fn((c, r), |_| rng.sym((1.0 / r as f64).sqrt()) as f32),
        fc2_bias: Array1::from_shape_fn(c, |_| rng.sym(0.1) as f32),
    });
    Ok(TrainBlock {
        branches: RepVggBranches {
            spec,
            dense,
            one_by_one: Some(one),
            identity,
        },
        se,
    })
}

/// Checks an input batch for a network of `in_channels`: `[N, C, H, W]`, N, H, W ≥ 1, finite.
pub(crate) fn check_input(in_channels: usize, x: &ArrayView4<'_, f32>) -> Result<()> {
    let s = x.shape();
    if s[1] != in_channels || s.contains(&0) {
        return Err(ModelError::Input {
            expected: format!("[N, {in_channels}, H, W] with N, H, W >= 1"),
            found: s.to_vec(),
        });
    }
    // Blocks folded without an early exit: the compiler turns each into vector code.
    let finite = match x.as_slice_memory_order() {
        Some(v) => v
            .chunks(4096)
            .all(|c| c.iter().fold(true, |ok, v| ok & v.is_finite())),
        None => x.iter().all(|v| v.is_finite()),
    };
    if !finite {
        return Err(ModelError::Input {
            expected: "finite values (the input holds NaN or inf)".into(),
            found: s.to_vec(),
        });
    }
    Ok(())
}

/// Max |a - b| over two arrays of one shape; NaN if the shapes differ or either holds a NaN or
/// infinite value (see [`repvgg_math::compare`]), so no comparison against it can pass.
pub fn max_abs_diff<D: ndarray::Dimension>(
    a: &ndarray::Array<f32, D>,
    b: &ndarray::Array<f32, D>,
) -> f32 {
    repvgg_math::compare::max_abs_diff(a, b) as f32
}

/// Argmax of every row.
pub fn argmax_rows(logits: &Array2<f32>) -> Vec<usize> {
    logits
        .axis_iter(Axis(0))
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                )
                .0
        })
        .collect()
}
