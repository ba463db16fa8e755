//! Images in, top-k classes out: the preprocessing of a model's task and [`Runner::classify`].

use image::RgbImage;
use ndarray::{Array2, Array4, ArrayView2, Axis, concatenate};

use crate::config::RepVggConfig;
use crate::error::{ModelError, Result};
use crate::imagenet;
use crate::preprocess::{self, PretrainedConfig};
use crate::runner::Runner;

/// How images become a model's input, and what its classes are called.
#[derive(Debug, Clone, PartialEq)]
pub enum Preprocessing {
    /// timm's pretrained config of the variant: resize the shorter side, center crop, normalize
    /// (see [`PretrainedConfig`]). Classes are ImageNet's when there are 1000 of them.
    ImageNet(PretrainedConfig),
    /// The embedded digits model ([`crate::digits`]): grayscale, framed and averaged to 8x8
    /// like sklearn's digits, then upsampled ([`preprocess::digits_input`]). Classes `0`-`9`.
    Digits,
}

impl Preprocessing {
    /// timm's preprocessing of `config`'s variant.
    pub fn for_config(config: &RepVggConfig) -> Self {
        Self::ImageNet(PretrainedConfig::for_config(config))
    }

    /// One image as a `[1, C, H, W]` input.
    ///
    /// # Errors
    /// [`ModelError::Image`] when the image cannot be resized (an empty image).
    pub fn input(&self, img: &RgbImage) -> Result<Array4<f32>> {
        match self {
            Self::ImageNet(cfg) => cfg.transform(img),
            Self::Digits => Ok(preprocess::digits_input(img)),
        }
    }
}

/// One of an image's top classes.
#[derive(Debug, Clone, PartialEq)]
pub struct Class {
    /// The class index (the logit's column).
    pub index: usize,
    /// The class's full label: ImageNet's synonyms, the digit, or `class N`.
    pub label: String,
    /// Its short label (ImageNet's first synonym).
    pub short_label: String,
    /// Softmax probability.
    pub prob: f32,
}

/// Row-wise softmax, the row's maximum subtracted first.
pub fn softmax(logits: ArrayView2<'_, f32>) -> Array2<f32> {
    let mut p = logits.to_owned();
    for mut row in p.axis_iter_mut(Axis(0)) {
        let m = row.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|v| (v - m).exp());
        let s = row.sum();
        row.mapv_inplace(|v| v / s);
    }
    p
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Images per forward call of [`Runner::classify`].
const CHUNK: usize = 16;

impl Runner {
    /// How this runner's model turns images into input.
    pub fn preprocessing(&self) -> &Preprocessing {
        &self.preprocessing
    }

    /// The full and the short label of class `index`.
    pub fn labels(&self, index: usize) -> (String, String) {
        let classes = self.config().num_classes;
        match &self.preprocessing {
            Preprocessing::Digits => (index.to_string(), index.to_string()),
            Preprocessing::ImageNet(_) if classes == imagenet::NUM_CLASSES => (
                imagenet::label(index).map_or_else(|| format!("class {index}"), str::to_string),
                imagenet::short_label(index)
                    .map_or_else(|| format!("class {index}"), str::to_string),
            ),
            Preprocessing::ImageNet(_) => (format!("class {index}"), format!("class {index}")),
        }
    }

    /// The `top` classes of each row of `logits`, most probable first.
    pub fn top_classes(&self, logits: ArrayView2<'_, f32>, top: usize) -> Vec<Vec<Class>> {
        let probs = softmax(logits);
        probs
            .outer_iter()
            .map(|row| {
                let row = row.to_vec();
                top_k(&row, top)
                    .into_iter()
                    .map(|index| {
                        let (label, short_label) = self.labels(index);
                        Class {
                            index,
                            label,
                            short_label,
                            prob: row[index],
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// The `top` classes of each image, preprocessed as the model's task wants
    /// ([`Runner::preprocessing`]: timm's config of the variant, or the digits model's own).
    ///
    /// # Errors
    /// [`ModelError::Input`] when `top` is 0 or the model does not take the images' channels;
    /// preprocessing and engine errors otherwise.
    pub fn classify(&self, images: &[RgbImage], top: usize) -> Result<Vec<Vec<Class>>> {
        if top == 0 {
            return Err(ModelError::Input {
                expected: "at least one class to report (top >= 1)".into(),
                found: vec![0],
            });
        }
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(CHUNK) {
            let inputs = chunk
                .iter()
                .map(|img| self.preprocessing.input(img))
                .collect::<Result<Vec<_>>>()?;
            let views: Vec<_> = inputs.iter().map(Array4::view).collect();
            let x = concatenate(Axis(0), &views).map_err(|e| ModelError::Input {
                expected: format!("images preprocessed to one size ({e})"),
                found: inputs
                    .first()
                    .map(|x| x.shape().to_vec())
                    .unwrap_or_default(),
            })?;
            let logits = self.run(x.view())?;
            out.extend(self.top_classes(logits.view(), top));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_top_k_breaks_ties_by_index() {
        let p = softmax(ndarray::arr2(&[[1.0, 3.0, 2.0, 3.0], [1e4, 0.0, -1e4, 0.0]]).view());
        for row in p.outer_iter() {
            assert!((row.sum() - 1.0).abs() < 1e-6, "{row:?}");
        }
        let row = p.row(0).to_vec();
        assert_eq!(top_k(&row, 3), vec![1, 3, 2]);
        assert_eq!(top_k(&row, 10).len(), 4);
        // No overflow for large logits: the max is subtracted first.
        assert_eq!(p[[1, 0]], 1.0);
    }
}
