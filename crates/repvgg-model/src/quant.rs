//! Post-training int8 quantization of a deployed RepVGG, and its file.
//!
//! * Weights: per output channel, symmetric, s8 in `-127..=127`, scale `max |w| / 127` of the
//!   fused kernel (the fusion of the train form runs in f64; the deployed form holds its f32
//!   rounding).
//! * Activations: per tensor, u8. The input (the normalized image, which has negative values)
//!   takes a scale and a zero point from its calibrated range; every conv output is after a
//!   ReLU, zero point 0, scale `clip / 255` with `clip` from the calibration ([`CalibMethod`]).
//! * The bias stays f32 and is added in the requantization; the head's global average pool runs
//!   in f32 on the dequantized last activation, its linear layer on weights quantized per class
//!   when the network is built ([`quantize_head`]; the file keeps the f32 head).
//!
//! [`quantize`] calibrates on images and returns the [`QuantizedModel`] and a [`QuantReport`]
//! (per layer: weight and activation ranges, the SQNR of the weights alone and of the int8
//! network's output of that layer, so that a user sees which blocks lose accuracy).
//!
//! The file ([`QuantizedModel::save`]) is safetensors, deploy-form keys (timm naming) with:
//! `{block}.reparam_conv.weight` I8, `{block}.reparam_conv.weight_scale` F32 `[out]`,
//! `{block}.reparam_conv.output_scale` F32 `[1]`, the f32 bias and head as in a deployed
//! checkpoint, `input.scale` F32 `[1]` and `input.zero_point` U8 `[1]`; metadata
//! `format = repvgg-int8`, `repvgg_arch`, `calibration`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use ndarray::{Array2, Array4, ArrayView2, ArrayView4, Axis};
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};

use crate::checkpoint;
use crate::error::{ModelError, Result};
use crate::model::DeployModel;
use crate::vocab::ParseWordError;

/// The safetensors metadata value of `format` that marks an int8 file.
pub const FORMAT: &str = "repvgg-int8";

/// How a conv output's clipping value is chosen from the calibration activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CalibMethod {
    /// The largest value seen.
    #[default]
    MinMax,
    /// The 99.99th percentile of the values seen (outliers clipped).
    Percentile,
    /// The clip that minimizes the expected squared quantization error (rounding inside,
    /// clipping outside) over the values' histogram.
    Mse,
}

impl CalibMethod {
    /// Every method.
    pub const ALL: [CalibMethod; 3] = [Self::MinMax, Self::Percentile, Self::Mse];

    /// `minmax`, `percentile` or `mse`.
    pub fn name(self) -> &'static str {
        match self {
            Self::MinMax => "minmax",
            Self::Percentile => "percentile",
            Self::Mse => "mse",
        }
    }
}

impl fmt::Display for CalibMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for CalibMethod {
    type Err = ParseWordError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "minmax" | "min-max" | "max" => Ok(Self::MinMax),
            "percentile" => Ok(Self::Percentile),
            "mse" => Ok(Self::Mse),
            _ => Err(ParseWordError {
                what: "calibration method",
                got: s.into(),
                expected: "minmax, percentile or mse",
            }),
        }
    }
}

/// One quantized conv (a deployed block's fused 3x3).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantLayer {
    /// Stage (0 = stem) and block.
    pub stage: usize,
    /// Block within the stage.
    pub block: usize,
    /// `[out, in / groups, k, k]`, `-127..=127`.
    pub weight: Array4<i8>,
    /// Per output channel.
    pub weight_scale: Vec<f32>,
    /// Scale of the output (u8, zero point 0, after the ReLU).
    pub output_scale: f32,
}

impl QuantLayer {
    /// `stem` or `stageS.B` (S counted from 1, as the stage outputs are).
    pub fn name(&self) -> String {
        if self.stage == 0 {
            "stem".into()
        } else {
            format!("stage{}.{}", self.stage, self.block)
        }
    }
}

/// A deployed RepVGG with int8 weights and calibrated activation scales.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedModel {
    /// The deployed model with every conv weight replaced by its dequantized value
    /// (`q * scale`): architecture, f32 biases and head.
    pub deploy: Arc<DeployModel>,
    /// Scale of the quantized input.
    pub input_scale: f32,
    /// The code of 0.0 in the quantized input.
    pub input_zero_point: u8,
    /// Every conv, in order.
    pub layers: Vec<QuantLayer>,
    /// How the activation clips were chosen.
    pub method: CalibMethod,
}

/// Options of [`quantize`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantOptions {
    /// How conv outputs are clipped.
    pub method: CalibMethod,
    /// The percentile [`CalibMethod::Percentile`] keeps, in percent.
    pub percentile: f64,
    /// CPU threads of the calibration runs; `None`: every core.
    pub threads: Option<usize>,
}

impl Default for QuantOptions {
    fn default() -> Self {
        Self {
            method: CalibMethod::MinMax,
            percentile: 99.99,
            threads: None,
        }
    }
}

/// One layer's line of a [`QuantReport`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// `stem`, `stage1.0`, ...
    pub name: String,
    /// Smallest and largest fused weight.
    pub weight_min: f32,
    /// Largest fused weight.
    pub weight_max: f32,
    /// Largest per-channel `max |w|` over the median one: how much a per-tensor scale would
    /// waste (RepVGG's fused kernels are known for wide ratios).
    pub channel_range_ratio: f32,
    /// SQNR of the int8 weights against the f32 ones, dB.
    pub weight_sqnr_db: f64,
    /// Largest activation seen after the ReLU.
    pub act_max: f32,
    /// The clip chosen (`255 * output scale`).
    pub act_clip: f32,
    /// SQNR of the int8 network's output of this layer against the f32 network's, dB (errors of
    /// the earlier layers included).
    pub output_sqnr_db: f64,
}

/// What quantization costs, layer by layer and at the logits, on the calibration images.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantReport {
    /// Input range seen (min, max).
    pub input_range: (f32, f32),
    /// Every conv, in order.
    pub layers: Vec<LayerReport>,
    /// SQNR of the int8 logits against the f32 ones, dB.
    pub logits_sqnr_db: f64,
    /// Fraction of images whose int8 top-1 class is the f32 one.
    pub top1_agreement: f64,
    /// Images seen.
    pub images: usize,
}

impl fmt::Display for QuantReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<10} {:>9} {:>9} {:>7} {:>8} {:>9} {:>9} {:>8}",
            "layer", "w min", "w max", "ch max/", "w SQNR", "act max", "act clip", "out SQNR"
        )?;
        writeln!(
            f,
            "{:<10} {:>9} {:>9} {:>7} {:>8} {:>9} {:>9} {:>8}",
            "", "", "", "median", "dB", "", "", "dB"
        )?;
        for l in &self.layers {
            writeln!(
                f,
                "{:<10} {:>9.4} {:>9.4} {:>7.1} {:>8.1} {:>9.3} {:>9.3} {:>8.1}",
                l.name,
                l.weight_min,
                l.weight_max,
                l.channel_range_ratio,
                l.weight_sqnr_db,
                l.act_max,
                l.act_clip,
                l.output_sqnr_db
            )?;
        }
        write!(
            f,
            "input range {:.3}..{:.3}; logits SQNR {:.1} dB; top-1 agreement {:.2}% over {} images",
            self.input_range.0,
            self.input_range.1,
            self.logits_sqnr_db,
            100.0 * self.top1_agreement,
            self.images
        )
    }
}

/// Signal over noise, dB (infinite for no noise).
pub fn sqnr_db(signal: f64, noise: f64) -> f64 {
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}

/// Per-output-channel symmetric int8 of `w`: the codes and the scales.
pub fn quantize_weight(w: ArrayView4<'_, f32>) -> (Array4<i8>, Vec<f32>) {
    let out = w.shape()[0];
    let scales: Vec<f32> = (0..out)
        .map(|o| {
            let m = w
                .index_axis(Axis(0), o)
                .iter()
                .fold(0.0f32, |m, v| m.max(v.abs()));
            if m > 0.0 { m / 127.0 } else { 1.0 }
        })
        .collect();
    let q = Array4::from_shape_fn(w.dim(), |(o, i, y, x)| {
        (w[[o, i, y, x]] / scales[o])
            .round_ties_even()
            .clamp(-127.0, 127.0) as i8
    });
    (q, scales)
}

/// The linear head's weights `[classes, C]` as symmetric int8 per class (per row), as the int8
/// engine runs them: the codes and each class's scale (`w[j][c] ≈ q[j][c] * scale[j]`).
///
/// At small batches the layer is a matrix-vector product bound by reading its weights, a quarter
/// of the bytes in int8; its error is far below the activations' (127 steps each side of the
/// class's largest weight). The QDQ export stores the same codes.
pub fn quantize_head(w: ArrayView2<'_, f32>) -> (Array2<i8>, Vec<f32>) {
    // The rule of a conv's weights, each class a `[C, 1, 1]` kernel.
    let (q, scales) = quantize_weight(w.insert_axis(Axis(2)).insert_axis(Axis(3)));
    (
        q.index_axis_move(Axis(3), 0).index_axis_move(Axis(2), 0),
        scales,
    )
}

/// The clip of a post-ReLU activation from its histogram (`bins` counts over `[0, max]`).
fn clip_from_histogram(hist: &[u64], max: f32, method: CalibMethod, percentile: f64) -> f32 {
    let n = hist.len();
    let total: u64 = hist.iter().sum();
    if max <= 0.0 || total == 0 {
        return max;
    }
    let width = f64::from(max) / n as f64;
    match method {
        CalibMethod::MinMax => max,
        CalibMethod::Percentile => {
            let want = (percentile / 100.0 * total as f64).ceil() as u64;
            let mut seen = 0;
            for (i, &c) in hist.iter().enumerate() {
                seen += c;
                if seen >= want {
                    return ((i + 1) as f64 * width) as f32;
                }
            }
            max
        }
        CalibMethod::Mse => {
            let mut best = (f64::INFINITY, max);
            // Candidate clips: every 1/128th of the range, from 1/128 to all of it.
            for step in 1..=128 {
                let t = f64::from(max) * step as f64 / 128.0;
                let s = t / 255.0;
                let err: f64 = hist
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        let v = (i as f64 + 0.5) * width;
                        let e = if v <= t {
                            s * s / 12.0
                        } else {
                            (v - t).powi(2)
                        };
                        e * c as f64
                    })
                    .sum();
                if err < best.0 {
                    best = (err, t as f32);
                }
            }
            best.1
        }
    }
}

/// The stored tensors of a deployed model whose convs are quantized as `q`.
fn dequantized(model: &DeployModel, layers: &[QuantLayer]) -> DeployModel {
    let mut d = model.clone();
    for l in layers {
        let conv = &mut d.stages[l.stage][l.block].conv;
        conv.weight = Array4::from_shape_fn(l.weight.dim(), |(o, i, y, x)| {
            f32::from(l.weight[[o, i, y, x]]) * l.weight_scale[o]
        });
    }
    d
}

/// Refuses what the int8 engine does not run: squeeze-excite blocks.
pub(crate) fn check_quantizable(model: &DeployModel) -> Result<()> {
    if model.stages.iter().flatten().any(|b| b.se.is_some()) {
        return Err(ModelError::Unsupported(format!(
            "int8: {} has squeeze-excite blocks, which the int8 engine does not run",
            model.config.name
        )));
    }
    Ok(())
}

#[cfg(feature = "cpu")]
pub use calibrate::quantize;

#[cfg(feature = "cpu")]
mod calibrate {
    use super::*;
    use crate::cpu::{CpuModel, CpuOptions};
    use repvgg_cpu::int8::Int8Options;

    /// Bins of the activation histograms.
    const BINS: usize = 2048;

    /// Calibrates `model` on `batches` (NCHW, preprocessed like the model's inputs) and
    /// quantizes it; the report compares the int8 network with the f32 one on the same batches.
    ///
    /// # Errors
    /// No batch, squeeze-excite blocks, inputs that do not fit the model, engine errors.
    pub fn quantize(
        model: &DeployModel,
        batches: &[Array4<f32>],
        opts: &QuantOptions,
    ) -> Result<(QuantizedModel, QuantReport)> {
        check_quantizable(model)?;
        if batches.is_empty() {
            return Err(ModelError::Unsupported(
                "int8 calibration needs at least one image".into(),
            ));
        }
        let f32net = CpuModel::deploy_layers(
            model,
            CpuOptions {
                threads: opts.threads,
                ..CpuOptions::default()
            },
        )?;
        let sites: Vec<(usize, usize)> = model
            .stages
            .iter()
            .enumerate()
            .flat_map(|(s, b)| (0..b.len()).map(move |j| (s, j)))
            .collect();
        // Pass 1: ranges.
        let (mut lo, mut hi) = (0.0f32, 0.0f32);
        let mut act_max = vec![0.0f32; sites.len()];
        for x in batches {
            crate::model::check_input(model.config.in_channels, &x.view())?;
            lo = x.iter().fold(lo, |m, &v| m.min(v));
            hi = x.iter().fold(hi, |m, &v| m.max(v));
            let f = f32net.forward_features(x.view())?;
            for (m, t) in act_max.iter_mut().zip(&f.stages) {
                *m = t.iter().fold(*m, |m, &v| m.max(v));
            }
        }
        // Pass 2 (histogram methods): where the values lie.
        let clips: Vec<f32> = if opts.method == CalibMethod::MinMax {
            act_max.clone()
        } else {
            let mut hist = vec![vec![0u64; BINS]; sites.len()];
            for x in batches {
                let f = f32net.forward_features(x.view())?;
                for ((h, t), &m) in hist.iter_mut().zip(&f.stages).zip(&act_max) {
                    if m <= 0.0 {
                        continue;
                    }
                    let k = BINS as f32 / m;
                    for &v in t {
                        h[((v * k) as usize).min(BINS - 1)] += 1;
                    }
                }
            }
            hist.iter()
                .zip(&act_max)
                .map(|(h, &m)| clip_from_histogram(h, m, opts.method, opts.percentile))
                .collect()
        };
        let input_scale = ((hi - lo) / 255.0).max(f32::MIN_POSITIVE);
        let input_zero_point = (-lo / input_scale).round().clamp(0.0, 255.0) as u8;
        let layers: Vec<QuantLayer> = sites
            .iter()
            .zip(&clips)
            .map(|(&(stage, block), &clip)| {
                let conv = &model.stages[stage][block].conv;
                let (weight, weight_scale) = quantize_weight(conv.weight.view());
                QuantLayer {
                    stage,
                    block,
                    weight,
                    weight_scale,
                    // A layer that never fired still needs a positive scale.
                    output_scale: (clip / 255.0).max(1e-8),
                }
            })
            .collect();
        let q = QuantizedModel {
            deploy: Arc::new(dequantized(model, &layers)),
            input_scale,
            input_zero_point,
            layers,
            method: opts.method,
        };
        let report = report(
            model,
            &q,
            &f32net,
            batches,
            (lo, hi),
            &act_max,
            opts.threads,
        )?;
        Ok((q, report))
    }

    fn report(
        model: &DeployModel,
        q: &QuantizedModel,
        f32net: &CpuModel,
        batches: &[Array4<f32>],
        input_range: (f32, f32),
        act_max: &[f32],
        threads: Option<usize>,
    ) -> Result<QuantReport> {
        let net = q.network(Int8Options {
            threads,
            kernel: None,
        })?;
        let n = q.layers.len();
        let (mut sig, mut noise) = (vec![0.0f64; n], vec![0.0f64; n]);
        let (mut lsig, mut lnoise, mut agree, mut images) = (0.0, 0.0, 0usize, 0usize);
        for x in batches {
            let f = f32net.forward_features(x.view())?;
            let (logits, layers) = net.run_layers(x.view())?;
            for (i, (a, b)) in f.stages.iter().zip(&layers).enumerate() {
                for (&y, &z) in a.iter().zip(b) {
                    sig[i] += f64::from(y).powi(2);
                    noise[i] += f64::from(y - z).powi(2);
                }
            }
            for (&y, &z) in f.logits.iter().zip(&logits) {
                lsig += f64::from(y).powi(2);
                lnoise += f64::from(y - z).powi(2);
            }
            let (a, b) = (
                crate::model::argmax_rows(&f.logits),
                crate::model::argmax_rows(&logits),
            );
            agree += a.iter().zip(&b).filter(|(x, y)| x == y).count();
            images += a.len();
        }
        let layers = q
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let w = &model.stages[l.stage][l.block].conv.weight;
                let (mut ws, mut wn) = (0.0f64, 0.0f64);
                for ((o, ci, y, xx), &v) in w.indexed_iter() {
                    let d = f32::from(l.weight[[o, ci, y, xx]]) * l.weight_scale[o];
                    ws += f64::from(v).powi(2);
                    wn += f64::from(v - d).powi(2);
                }
                let mut ranges: Vec<f32> = l.weight_scale.iter().map(|s| s * 127.0).collect();
                ranges.sort_by(f32::total_cmp);
                let median = ranges[ranges.len() / 2];
                let top = ranges.last().copied().unwrap_or(0.0);
                LayerReport {
                    name: l.name(),
                    weight_min: w.iter().copied().fold(f32::INFINITY, f32::min),
                    weight_max: w.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                    channel_range_ratio: if median > 0.0 {
                        top / median
                    } else {
                        f32::INFINITY
                    },
                    weight_sqnr_db: sqnr_db(ws, wn),
                    act_max: act_max[i],
                    act_clip: l.output_scale * 255.0,
                    output_sqnr_db: sqnr_db(sig[i], noise[i]),
                }
            })
            .collect();
        Ok(QuantReport {
            input_range,
            layers,
            logits_sqnr_db: sqnr_db(lsig, lnoise),
            top1_agreement: agree as f64 / images.max(1) as f64,
            images,
        })
    }

    impl QuantizedModel {
        /// The int8 network of this model on the CPU engine.
        ///
        /// # Errors
        /// A kernel this CPU lacks (naming the missing features), inconsistent parameters.
        pub fn network(&self, opts: Int8Options) -> Result<repvgg_cpu::int8::Int8Network> {
            use repvgg_cpu::int8::{ActQuant, Int8Network, QuantConv};
            let mut input = ActQuant {
                scale: self.input_scale,
                zero_point: self.input_zero_point,
            };
            let mut convs = Vec::with_capacity(self.layers.len());
            for l in &self.layers {
                let conv = &self.deploy.stages[l.stage][l.block].conv;
                let bias = conv.bias.to_vec();
                convs.push(QuantConv::new(
                    l.weight.view(),
                    &l.weight_scale,
                    &bias,
                    conv.spec,
                    input,
                    l.output_scale,
                )?);
                input = ActQuant::relu(l.output_scale);
            }
            let h = &self.deploy.head;
            if h.weight.iter().any(|v| !v.is_finite()) {
                return Err(ModelError::Config(
                    "int8 network: the classifier weight holds NaN or inf".into(),
                ));
            }
            let (head_q, head_scale) = super::quantize_head(h.weight.view());
            Ok(Int8Network::new(
                self.deploy.config.in_channels,
                convs,
                head_q.view(),
                &head_scale,
                &h.bias.to_vec(),
                opts,
            )?)
        }
    }
}

impl QuantizedModel {
    /// Writes the int8 file (see the module docs), never a truncated one.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut bytes: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
        for (k, (shape, v)) in checkpoint::deploy_tensors(&self.deploy) {
            let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            bytes.insert(k, (Dtype::F32, shape, b));
        }
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        for l in &self.layers {
            let p = format!(
                "{}.reparam_conv",
                checkpoint::block_prefix(l.stage, l.block)
            );
            let w: Vec<u8> = l.weight.iter().map(|&v| v as u8).collect();
            bytes.insert(
                format!("{p}.weight"),
                (Dtype::I8, l.weight.shape().to_vec(), w),
            );
            bytes.insert(
                format!("{p}.weight_scale"),
                (
                    Dtype::F32,
                    vec![l.weight_scale.len()],
                    f32s(&l.weight_scale),
                ),
            );
            bytes.insert(
                format!("{p}.output_scale"),
                (Dtype::F32, vec![1], f32s(&[l.output_scale])),
            );
        }
        bytes.insert(
            "input.scale".into(),
            (Dtype::F32, vec![1], f32s(&[self.input_scale])),
        );
        bytes.insert(
            "input.zero_point".into(),
            (Dtype::U8, vec![1], vec![self.input_zero_point]),
        );
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("repvgg_arch".to_string(), self.deploy.config.name.clone()),
            ("calibration".to_string(), self.method.name().to_string()),
        ]);
        let views = bytes
            .iter()
            .map(|(k, (d, s, b))| {
                TensorView::new(*d, s.clone(), b)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| ModelError::Save {
                        path: path.into(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        crate::tensor_io::write_atomically(path, &[], |tmp| {
            safetensors::serialize_to_file(views, Some(meta), tmp).map_err(|e| e.to_string())
        })
    }

    /// Reads an int8 file written by [`QuantizedModel::save`].
    ///
    /// # Errors
    /// [`ModelError::Io`], [`ModelError::Format`] for a file that is not an int8 RepVGG,
    /// and the checkpoint loader's errors for its deploy-form tensors.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|error| ModelError::Io {
            path: path.into(),
            error,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// [`QuantizedModel::load`] of bytes in memory; `path` only names them in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |reason: String| ModelError::Format {
            path: path.into(),
            reason,
        };
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| crate::tensor_io::format_error(&e, bytes, path))?;
        let f32_of = |key: &str, len: usize| -> Result<Vec<f32>> {
            let v = st
                .tensor(key)
                .map_err(|_| bad(format!("no `{key}` tensor")))?;
            if v.dtype() != Dtype::F32 || v.shape().iter().product::<usize>() != len {
                return Err(bad(format!(
                    "`{key}`: expected F32 of {len} values, found {:?} {:?}",
                    v.dtype(),
                    v.shape()
                )));
            }
            let out: Vec<f32> = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if out.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(bad(format!(
                    "`{key}` holds a scale that is not finite and positive"
                )));
            }
            Ok(out)
        };
        let input_scale = f32_of("input.scale", 1)?[0];
        let zp = st
            .tensor("input.zero_point")
            .map_err(|_| bad("no `input.zero_point` tensor".into()))?;
        if zp.dtype() != Dtype::U8 || zp.data().len() != 1 {
            return Err(bad(format!(
                "`input.zero_point`: expected one U8, found {:?} {:?}",
                zp.dtype(),
                zp.shape()
            )));
        }
        let input_zero_point = zp.data()[0];
        // The deploy-form tensors with every I8 weight dequantized, through the checkpoint
        // loader (architecture inference, key and shape checks).
        let mut f32_tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
        let mut int8: BTreeMap<String, Int8Tensor> = BTreeMap::new();
        for (name, v) in st.tensors() {
            if name.starts_with("input.")
                || name.ends_with(".weight_scale")
                || name.ends_with(".output_scale")
            {
                continue;
            }
            match v.dtype() {
                Dtype::I8 => {
                    let shape = v.shape().to_vec();
                    let out = shape.first().copied().unwrap_or(0);
                    let scales = f32_of(&format!("{}_scale", name), out)?;
                    let q: Vec<i8> = v.data().iter().map(|&b| b as i8).collect();
                    if q.contains(&i8::MIN) {
                        return Err(bad(format!(
                            "`{name}` holds -128: symmetric weights are -127..=127"
                        )));
                    }
                    let per = q.len() / out.max(1);
                    let deq: Vec<u8> = q
                        .iter()
                        .enumerate()
                        .flat_map(|(i, &c)| (f32::from(c) * scales[i / per.max(1)]).to_le_bytes())
                        .collect();
                    f32_tensors.insert(name.clone(), (shape.clone(), deq));
                    int8.insert(name, (shape, q, scales));
                }
                _ => {
                    f32_tensors.insert(name.clone(), (v.shape().to_vec(), v.data().to_vec()));
                }
            }
        }
        let views = f32_tensors
            .iter()
            .map(|(k, (s, b))| {
                let d = if int8.contains_key(k) {
                    Dtype::F32
                } else {
                    st.tensor(k).map(|v| v.dtype()).unwrap_or(Dtype::F32)
                };
                TensorView::new(d, s.clone(), b)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| bad(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta = st_metadata(bytes);
        let f32_file =
            safetensors::serialize(views, Some(meta.clone())).map_err(|e| bad(e.to_string()))?;
        let deploy = checkpoint::load_bytes(&f32_file, path)?
            .model
            .into_deploy()?;
        check_quantizable(&deploy)?;
        let mut layers = Vec::new();
        for (stage, blocks) in deploy.stages.iter().enumerate() {
            for (block, b) in blocks.iter().enumerate() {
                let key = format!(
                    "{}.reparam_conv.weight",
                    checkpoint::block_prefix(stage, block)
                );
                let Some((shape, q, weight_scale)) = int8.remove(&key) else {
                    return Err(bad(format!(
                        "`{key}` is not I8: every conv of an int8 file is"
                    )));
                };
                let weight = Array4::from_shape_vec((shape[0], shape[1], shape[2], shape[3]), q)
                    .map_err(|e| bad(format!("`{key}`: {e}")))?;
                let _ = b;
                let output_scale = f32_of(&key.replace(".weight", ".output_scale"), 1)?[0];
                layers.push(QuantLayer {
                    stage,
                    block,
                    weight,
                    weight_scale,
                    output_scale,
                });
            }
        }
        let method = meta
            .get("calibration")
            .and_then(|m| m.parse().ok())
            .unwrap_or_default();
        Ok(Self {
            deploy: Arc::new(deploy),
            input_scale,
            input_zero_point,
            layers,
            method,
        })
    }
}

/// An I8 weight of an int8 file: shape, codes, per-output-channel scales.
type Int8Tensor = (Vec<usize>, Vec<i8>, Vec<f32>);

/// The metadata of a safetensors file (empty when it has none or is not one).
fn st_metadata(bytes: &[u8]) -> HashMap<String, String> {
    SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, m)| m.metadata().clone())
        .unwrap_or_default()
}

/// Whether `bytes` are an int8 file (safetensors whose metadata says `format = repvgg-int8`).
pub fn is_int8_file(bytes: &[u8]) -> bool {
    st_metadata(bytes)
        .get("format")
        .is_some_and(|f| f == FORMAT)
}

/// Whether the file at `path` is an int8 file, from its safetensors header alone (no error: a
/// file that cannot be read or is not safetensors is not one, and its loader says why).
pub fn sniff_int8_file(path: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut len = [0u8; 8];
    if f.read_exact(&mut len).is_err() {
        return false;
    }
    // A header longer than this is no header of ours (safetensors caps it at 100 MB).
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        return false;
    }
    let mut header = Vec::new();
    if f.take(n).read_to_end(&mut header).is_err() {
        return false;
    }
    // A header parses on its own as an empty file's: its tensors' offsets then point past the
    // end, so look for the metadata in the JSON itself.
    let text = String::from_utf8_lossy(&header);
    text.contains(&format!("\"format\":\"{FORMAT}\""))
}
