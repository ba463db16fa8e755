//! The embedded trained model: a small RepVGG (train form) trained with timm on scikit-learn's
//! handwritten digits (see `scripts/ref/train_digits.py` and `assets/digits/meta.json`), and its
//! held-out test split. Works offline: both files are compiled into the crate.

use std::path::Path;

use ndarray::{Array3, Array4, ArrayView2, ArrayView3};
use safetensors::{Dtype, SafeTensors};

use crate::checkpoint::{self, LoadedModel};
use crate::error::{ModelError, Result};
use crate::model::TrainModel;

/// The train-form checkpoint (timm naming, f32), 1 input channel, 10 classes, 32x32 input.
pub const CHECKPOINT: &[u8] = include_bytes!("../assets/digits/repvgg_digits.train.safetensors");
/// The test split: `images8` `[N, 8, 8]` (0..16), `input` `[N, 1, 32, 32]`, `labels` `[N]` i64,
/// `logits` / `logits_deploy` `[N, 10]` from PyTorch.
pub const TEST_SET: &[u8] = include_bytes!("../assets/digits/test.safetensors");
/// Accuracy of the PyTorch train form on the test split, from `meta.json`.
pub const PYTORCH_TEST_ACCURACY: f64 = 0.9944444298744202;
/// Side of the network's input.
pub const INPUT_SIZE: usize = 32;
/// Side of the source digits.
pub const SOURCE_SIZE: usize = 8;

/// The embedded model, train form.
pub fn model() -> Result<TrainModel> {
    match checkpoint::load_bytes(CHECKPOINT, Path::new("<embedded digits model>"))?.model {
        LoadedModel::Train(m) => Ok(m),
        LoadedModel::Deploy(_) => Err(ModelError::Config(
            "the embedded digits model is not in train form".into(),
        )),
    }
}

/// The held-out digits.
#[derive(Debug, Clone)]
pub struct TestSet {
    /// Raw 8x8 digits, values 0..16.
    pub images8: Array3<f32>,
    /// Preprocessed by PyTorch: `[N, 1, 32, 32]`.
    pub input: Array4<f32>,
    /// The true digit (0..=9) of every image, `N` entries.
    pub labels: Vec<usize>,
    /// PyTorch's logits of the train form, `[N, 10]`.
    pub torch_logits: ndarray::Array2<f32>,
}

/// Decodes the embedded test split.
pub fn test_set() -> Result<TestSet> {
    let path = Path::new("<embedded digits test set>");
    let fmt = |reason: String| ModelError::Format {
        path: path.into(),
        reason,
    };
    let st = SafeTensors::deserialize(TEST_SET).map_err(|e| fmt(e.to_string()))?;
    let f32s = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
        let v = st.tensor(name).map_err(|e| fmt(e.to_string()))?;
        if v.dtype() != Dtype::F32 {
            return Err(fmt(format!("`{name}` is {:?}, expected F32", v.dtype())));
        }
        Ok((
            v.shape().to_vec(),
            v.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    };
    let (s8, d8) = f32s("images8")?;
    let (si, di) = f32s("input")?;
    let (sl, dl) = f32s("logits")?;
    let labels = st.tensor("labels").map_err(|e| fmt(e.to_string()))?;
    if labels.dtype() != Dtype::I64 {
        return Err(fmt(format!(
            "`labels` is {:?}, expected I64",
            labels.dtype()
        )));
    }
    let labels: Vec<usize> = labels
        .data()
        .chunks_exact(8)
        .map(|c| {
            i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]).max(0) as usize
        })
        .collect();
    let shape_err = |e: ndarray::ShapeError| fmt(e.to_string());
    let images8 = Array3::from_shape_vec((s8[0], s8[1], s8[2]), d8).map_err(shape_err)?;
    let input = Array4::from_shape_vec((si[0], si[1], si[2], si[3]), di).map_err(shape_err)?;
    let torch_logits = ndarray::Array2::from_shape_vec((sl[0], sl[1]), dl).map_err(shape_err)?;
    if labels.len() != images8.shape()[0] || input.shape()[0] != labels.len() {
        return Err(fmt(format!(
            "{} labels for {} images",
            labels.len(),
            images8.shape()[0]
        )));
    }
    Ok(TestSet {
        images8,
        input,
        labels,
        torch_logits,
    })
}

/// PyTorch's `interpolate(mode='bilinear', align_corners=False)` source index and weights.
fn bilinear_taps(dst: usize, in_size: usize, out_size: usize) -> (usize, usize, f32) {
    let scale = in_size as f32 / out_size as f32;
    let src = ((dst as f32 + 0.5) * scale - 0.5).max(0.0);
    let i0 = (src as usize).min(in_size - 1);
    let i1 = if i0 + 1 < in_size { i0 + 1 } else { i0 };
    (i0, i1, src - i0 as f32)
}

/// Bilinear resize of one plane, PyTorch `align_corners=False` semantics (no antialias).
pub fn resize_bilinear(
    src: ArrayView2<'_, f32>,
    out_h: usize,
    out_w: usize,
) -> ndarray::Array2<f32> {
    let (h, w) = src.dim();
    ndarray::Array2::from_shape_fn((out_h, out_w), |(y, x)| {
        let (y0, y1, ly) = bilinear_taps(y, h, out_h);
        let (x0, x1, lx) = bilinear_taps(x, w, out_w);
        let top = src[[y0, x0]] * (1.0 - lx) + src[[y0, x1]] * lx;
        let bottom = src[[y1, x0]] * (1.0 - lx) + src[[y1, x1]] * lx;
        top * (1.0 - ly) + bottom * ly
    })
}

/// The digits preprocessing: `x / 16`, bilinear 8x8 → 32x32, `(x - 0.5) / 0.5`.
/// Input `[N, 8, 8]` with values 0..16; output `[N, 1, 32, 32]`.
pub fn preprocess(images8: ArrayView3<'_, f32>) -> Array4<f32> {
    let n = images8.shape()[0];
    let mut out = Array4::zeros((n, 1, INPUT_SIZE, INPUT_SIZE));
    for (i, img) in images8.outer_iter().enumerate() {
        let scaled = img.mapv(|v| v / 16.0);
        let up = resize_bilinear(scaled.view(), INPUT_SIZE, INPUT_SIZE);
        out.slice_mut(ndarray::s![i, 0, .., ..])
            .assign(&up.mapv(|v| (v - 0.5) / 0.5));
    }
    out
}

/// Fraction of rows whose argmax equals the label.
pub fn accuracy(logits: &ndarray::Array2<f32>, labels: &[usize]) -> f64 {
    let pred = crate::model::argmax_rows(logits);
    let hits = pred.iter().zip(labels).filter(|(p, l)| p == l).count();
    hits as f64 / labels.len().max(1) as f64
}
