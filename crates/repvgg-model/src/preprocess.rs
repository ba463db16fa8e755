//! Images in, network inputs out: decoding (JPEG, PNG, WebP) and the preprocessing of timm's
//! pretrained RepVGG configs, plus the embedded digits model's own.
//!
//! [`PretrainedConfig::transform`] is timm's eval transform (`resolve_data_config` +
//! `create_transform`): resize the shorter side to `floor(size / crop_pct)` (the longer side to
//! `int(short * long / short_in)`, as torchvision computes it), centre crop `size x size`, scale to
//! `0..1`, normalize with the mean and std. The resize reproduces Pillow's resampling (separable,
//! antialiased when shrinking, 8-bit fixed point after each pass) exactly, so the result equals
//! timm's tensor bit for bit on the same decoded pixels (this module's tests check it against
//! `tests/fixtures/classify`, made by `scripts/ref/gen_classify_fixture.py`).

use std::path::Path;

use ndarray::{Array2, Array4, ArrayView2, Axis};
use serde::Serialize;

pub use image;
use image::RgbImage;

use crate::config::RepVggConfig;
use crate::digits;
use crate::error::{ModelError, Result};

/// `timm.data.IMAGENET_DEFAULT_MEAN`.
pub const IMAGENET_DEFAULT_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// `timm.data.IMAGENET_DEFAULT_STD`.
pub const IMAGENET_DEFAULT_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Resampling filter of the resize, with Pillow's definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Pillow `BOX`: area averaging.
    Box,
    /// Pillow `BILINEAR` (triangle filter, widened when shrinking).
    Bilinear,
    /// Pillow `BICUBIC` (a = -0.5).
    Bicubic,
}

impl Interpolation {
    fn support(self) -> f64 {
        match self {
            Self::Box => 0.5,
            Self::Bilinear => 1.0,
            Self::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Self::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Self::Bilinear => {
                let x = x.abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }
            Self::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// The data config of a timm pretrained RepVGG (`pretrained_cfg` in timm's `byobnet.py`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PretrainedConfig {
    /// Side of the square network input.
    pub input_size: usize,
    /// Fraction of the resized image kept by the centre crop.
    pub crop_pct: f64,
    pub interpolation: Interpolation,
    /// Per-channel mean (RGB) subtracted after scaling to `0..1`.
    pub mean: [f32; 3],
    /// Per-channel std (RGB) divided by after subtracting the mean.
    pub std: [f32; 3],
}

impl PretrainedConfig {
    /// timm's `_cfg()` default: 224, crop_pct 0.875, bilinear, ImageNet mean/std. Every
    /// `repvgg_a0` ... `repvgg_b3g4` (`.rvgg_in1k`) uses it.
    pub fn imagenet_224() -> Self {
        Self {
            input_size: 224,
            crop_pct: 0.875,
            interpolation: Interpolation::Bilinear,
            mean: IMAGENET_DEFAULT_MEAN,
            std: IMAGENET_DEFAULT_STD,
        }
    }

    /// `repvgg_d2se.rvgg_in1k`: 320, crop_pct 1.0, bilinear, ImageNet mean/std.
    pub fn d2se() -> Self {
        Self {
            input_size: 320,
            crop_pct: 1.0,
            ..Self::imagenet_224()
        }
    }

    /// The config of a variant by name: `d2se`, `repvgg_d2se` and `repvgg_d2se.rvgg_in1k` give
    /// [`d2se`](Self::d2se); everything else (a0 ... b3g4, custom) the 224 default.
    pub fn for_variant(name: &str) -> Self {
        let base = name.split('.').next().unwrap_or(name);
        let key = base.to_ascii_lowercase().replace(['-', '_'], "");
        match key.strip_prefix("repvgg").unwrap_or(&key) {
            "d2se" => Self::d2se(),
            _ => Self::imagenet_224(),
        }
    }

    /// The config for a model's architecture ([`RepVggConfig::name`]).
    pub fn for_config(config: &RepVggConfig) -> Self {
        Self::for_variant(&config.name)
    }

    /// Side the shorter image edge is resized to: `floor(input_size / crop_pct)`.
    pub fn scale_size(&self) -> usize {
        (self.input_size as f64 / self.crop_pct).floor() as usize
    }

    fn check(&self) -> Result<()> {
        if self.input_size == 0
            || !(self.crop_pct > 0.0 && self.crop_pct.is_finite())
            || self.scale_size() == 0
        {
            return Err(ModelError::Config(format!(
                "preprocessing: input_size {} and crop_pct {} give no image",
                self.input_size, self.crop_pct
            )));
        }
        if self.std.iter().any(|s| *s == 0.0 || !s.is_finite())
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err(ModelError::Config(format!(
                "preprocessing: invalid mean {:?} / std {:?}",
                self.mean, self.std
            )));
        }
        Ok(())
    }

    /// Resize and centre crop, still 8-bit: the pixels timm's transform normalizes.
    pub fn resize_crop(&self, img: &RgbImage) -> Result<RgbImage> {
        self.check()?;
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err(ModelError::Config(
                "preprocessing: the image is empty".into(),
            ));
        }
        let (nw, nh) = shorter_side_size(w as usize, h as usize, self.scale_size());
        let resized = resize_rgb8(img, nw, nh, self.interpolation);
        Ok(center_crop(&resized, self.input_size, self.input_size))
    }

    /// `ToTensor` + `Normalize` of an already resized and cropped image: `[1, 3, H, W]`.
    pub fn normalize(&self, img: &RgbImage) -> Array4<f32> {
        let (w, h) = img.dimensions();
        let mut out = Array4::zeros((1, 3, h as usize, w as usize));
        for (x, y, p) in img.enumerate_pixels() {
            for c in 0..3 {
                out[[0, c, y as usize, x as usize]] =
                    (f32::from(p[c]) / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        out
    }

    /// timm's whole eval transform: `[1, 3, input_size, input_size]` f32.
    pub fn transform(&self, img: &RgbImage) -> Result<Array4<f32>> {
        Ok(self.normalize(&self.resize_crop(img)?))
    }
}

/// Reads and decodes an image (JPEG, PNG or WebP, recognised by its content) to 8-bit RGB, as
/// `PIL.Image.open(path).convert('RGB')` does (alpha dropped, grey replicated).
pub fn load_rgb(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.into(),
        source,
    })?;
    decode_rgb(&bytes, path)
}

/// Decodes an image held in memory; `path` only names it in errors.
pub fn decode_rgb(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    let err = |reason: String| ModelError::Image {
        path: path.into(),
        reason,
    };
    let format = image::guess_format(bytes).map_err(|_| err("unrecognised file format".into()))?;
    if !matches!(
        format,
        image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::WebP
    ) {
        return Err(err(format!("{format:?} images are not supported")));
    }
    let img = image::load_from_memory_with_format(bytes, format).map_err(|e| err(e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(err("the image is empty".into()));
    }
    Ok(img.to_rgb8())
}

/// torchvision's `Resize(int)`: the shorter side becomes `size`, the longer
/// `int(size * long / short)`. Returns `(width, height)`.
pub fn shorter_side_size(w: usize, h: usize, size: usize) -> (usize, usize) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((size * long) as f64 / short as f64) as usize;
    if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// Python's `round()` of `n / 2` (ties to even), as torchvision's centre crop computes offsets.
fn half_round_even(n: usize) -> usize {
    let k = n / 2;
    if n % 2 == 1 && k % 2 == 1 { k + 1 } else { k }
}

/// torchvision's `CenterCrop`: offsets `round((size - crop) / 2)`, zero padding when the image
/// is smaller than the crop.
pub fn center_crop(img: &RgbImage, crop_w: usize, crop_h: usize) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let offset = |size: usize, crop: usize| -> i64 {
        if crop > size {
            -(((crop - size) / 2) as i64)
        } else {
            half_round_even(size - crop) as i64
        }
    };
    let (ox, oy) = (offset(w, crop_w), offset(h, crop_h));
    let mut out = RgbImage::new(crop_w as u32, crop_h as u32);
    for (x, y, p) in out.enumerate_pixels_mut() {
        let (sx, sy) = (i64::from(x) + ox, i64::from(y) + oy);
        if sx >= 0 && sy >= 0 && (sx as usize) < w && (sy as usize) < h {
            *p = *img.get_pixel(sx as u32, sy as u32);
        }
    }
    out
}

/// Pillow's resampling coefficients (`precompute_coeffs` in `Resample.c`): for every output
/// position the first input index and its normalized weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    weights: Vec<Vec<f64>>,
}

fn coeffs(in_size: usize, out_size: usize, filter: Interpolation) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ss = 1.0 / filterscale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's `(int)` truncates toward zero; the bounds are then clamped to the image.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64)
            .min(in_size as i64)
            .max(xmin as i64) as usize;
        let mut k: Vec<f64> = (xmin..xmax)
            .map(|x| filter.weight((x as f64 - center + 0.5) * ss))
            .collect();
        let total: f64 = k.iter().sum();
        if total != 0.0 {
            k.iter_mut().for_each(|v| *v /= total);
        }
        bounds.push((xmin, xmax - xmin));
        weights.push(k);
    }
    Coeffs { bounds, weights }
}

/// Pillow's 8-bit fixed point: `PRECISION_BITS = 32 - 8 - 2`.
const PRECISION_BITS: u32 = 22;

fn fixed_point(w: &[f64]) -> Vec<i64> {
    let one = f64::from(1u32 << PRECISION_BITS);
    w.iter()
        .map(|&v| {
            if v < 0.0 {
                (-0.5 + v * one) as i64
            } else {
                (0.5 + v * one) as i64
            }
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// One separable pass over 8-bit RGB along `axis` (0 = horizontal), Pillow's rounding.
fn pass_rgb8(img: &RgbImage, out_len: usize, horizontal: bool, filter: Interpolation) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let in_len = if horizontal { w } else { h };
    let c = coeffs(in_len, out_len, filter);
    let kk: Vec<Vec<i64>> = c.weights.iter().map(|k| fixed_point(k)).collect();
    let (ow, oh) = if horizontal {
        (out_len, h)
    } else {
        (w, out_len)
    };
    let mut out = RgbImage::new(ow as u32, oh as u32);
    let src = img.as_raw();
    let dst: &mut [u8] = &mut out;
    for y in 0..oh {
        for x in 0..ow {
            let o = if horizontal { x } else { y };
            let (start, n) = c.bounds[o];
            let k = &kk[o];
            let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
            for (i, &kv) in k.iter().enumerate().take(n) {
                let (sx, sy) = if horizontal {
                    (start + i, y)
                } else {
                    (x, start + i)
                };
                let base = (sy * w + sx) * 3;
                for (a, &v) in acc.iter_mut().zip(&src[base..base + 3]) {
                    *a += i64::from(v) * kv;
                }
            }
            let base = (y * ow + x) * 3;
            for (d, &a) in dst[base..base + 3].iter_mut().zip(&acc) {
                *d = clip8(a);
            }
        }
    }
    out
}

/// Pillow's `Image.resize((w, h), filter)` of an 8-bit RGB image: horizontal pass, then
/// vertical, each rounded to 8 bits; a pass is skipped when its size does not change.
pub fn resize_rgb8(img: &RgbImage, out_w: usize, out_h: usize, filter: Interpolation) -> RgbImage {
    let mut cur = img.clone();
    if out_w != cur.width() as usize {
        cur = pass_rgb8(&cur, out_w, true, filter);
    }
    if out_h != cur.height() as usize {
        cur = pass_rgb8(&cur, out_h, false, filter);
    }
    cur
}

/// Pillow's resampling of one float plane (no rounding): `[out_h, out_w]`.
pub fn resize_plane(
    src: ArrayView2<'_, f32>,
    out_h: usize,
    out_w: usize,
    filter: Interpolation,
) -> Array2<f32> {
    let (h, w) = src.dim();
    let cx = coeffs(w, out_w, filter);
    let horiz = Array2::from_shape_fn((h, out_w), |(y, x)| {
        let (start, n) = cx.bounds[x];
        cx.weights[x]
            .iter()
            .take(n)
            .enumerate()
            .map(|(i, k)| f64::from(src[[y, start + i]]) * k)
            .sum::<f64>() as f32
    });
    let cy = coeffs(h, out_h, filter);
    Array2::from_shape_fn((out_h, out_w), |(y, x)| {
        let (start, n) = cy.bounds[y];
        cy.weights[y]
            .iter()
            .take(n)
            .enumerate()
            .map(|(i, k)| f64::from(horiz[[start + i, x]]) * k)
            .sum::<f64>() as f32
    })
}

/// Grey levels in `0..1` with Pillow's `L` weights (ITU-R 601: 0.299 R + 0.587 G + 0.114 B).
pub fn to_gray(img: &RgbImage) -> Array2<f32> {
    let (w, h) = img.dimensions();
    Array2::from_shape_fn((h as usize, w as usize), |(y, x)| {
        let p = img.get_pixel(x as u32, y as u32);
        (0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])) / 255.0
    })
}

/// Fraction of the way from the background to the brightest ink above which a pixel counts
/// as ink when framing the digit.
pub const INK_THRESHOLD: f32 = 0.1;

/// An sklearn-style 8x8 digit (values `0..16`, bright ink on a dark ground) from a grey image
/// in `0..1` of any size:
/// 1. inverted when the background is light (mean > 0.5), so the ink is bright;
/// 2. framed like sklearn's digits, which always span all 8 rows: the bounding box of the ink
///    (pixels more than [`INK_THRESHOLD`] of the way from the background, the mean of the border
///    pixels, to the brightest) is centred in a square of its longer side, filled with the
///    background;
/// 3. area-averaged to 8x8 (Pillow `BOX`), as sklearn's digits average 4x4 blocks of 32x32 bitmaps;
/// 4. stretched so its darkest cell is 0 and its brightest 16 (all 0 for a blank image).
pub fn digit_8x8(gray: ArrayView2<'_, f32>) -> Array2<f32> {
    let n = digits::SOURCE_SIZE;
    let (h, w) = gray.dim();
    if h == 0 || w == 0 {
        return Array2::zeros((n, n));
    }
    let mean = gray.mean().unwrap_or(0.0);
    let ink = if mean > 0.5 {
        gray.mapv(|v| 1.0 - v)
    } else {
        gray.to_owned()
    };
    let border: Vec<f32> = ink
        .indexed_iter()
        .filter(|((y, x), _)| *y == 0 || *x == 0 || *y == h - 1 || *x == w - 1)
        .map(|(_, v)| *v)
        .collect();
    let background = border.iter().sum::<f32>() / border.len().max(1) as f32;
    let brightest = ink.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    if brightest - background < 1e-6 {
        return Array2::zeros((n, n));
    }
    let threshold = background + INK_THRESHOLD * (brightest - background);
    let (mut y0, mut y1, mut x0, mut x1) = (h, 0, w, 0);
    for ((y, x), &v) in ink.indexed_iter() {
        if v > threshold {
            (y0, y1, x0, x1) = (y0.min(y), y1.max(y + 1), x0.min(x), x1.max(x + 1));
        }
    }
    let side = (y1 - y0).max(x1 - x0);
    // Top-left corner of the square, centred on the box (may lie outside the image).
    let (top, left) = (
        y0 as i64 - ((side - (y1 - y0)) / 2) as i64,
        x0 as i64 - ((side - (x1 - x0)) / 2) as i64,
    );
    let square = Array2::from_shape_fn((side, side), |(y, x)| {
        let (sy, sx) = (top + y as i64, left + x as i64);
        if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
            ink[[sy as usize, sx as usize]]
        } else {
            background
        }
    });
    let small = resize_plane(square.view(), n, n, Interpolation::Box);
    let (lo, hi) = small
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if hi - lo < 1e-6 {
        return Array2::zeros((n, n));
    }
    small.mapv(|v| (v - lo) / (hi - lo) * 16.0)
}

/// The embedded digits model's input for one image: [`digit_8x8`] then
/// [`digits::preprocess`], `[1, 1, 32, 32]`.
pub fn digits_input(img: &RgbImage) -> Array4<f32> {
    let d = digit_8x8(to_gray(img).view()).insert_axis(Axis(0));
    digits::preprocess(d.view())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::model::max_abs_diff;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/classify")
            .join(name)
    }

    /// Our transform against timm's own (`resolve_data_config` + `create_transform`) on the two
    /// fixture images, for repvgg_a0 (224, shrinks image a) and repvgg_d2se (320, enlarges both).
    #[test]
    fn matches_timm_eval_transform() {
        let text = std::fs::read_to_string(fixture("manifest.json")).expect("manifest");
        let manifest: serde_json::Value = serde_json::from_str(&text).expect("json");
        let outputs = manifest["outputs"].as_array().expect("outputs");
        assert_eq!(outputs.len(), 4);
        for o in outputs {
            let model = o["model"].as_str().expect("model");
            let cfg = PretrainedConfig::for_variant(model);
            let timm = &manifest["models"][model];
            assert_eq!(
                timm["input_size"][1].as_u64(),
                Some(cfg.input_size as u64),
                "{model}"
            );
            assert_eq!(timm["crop_pct"].as_f64(), Some(cfg.crop_pct), "{model}");
            assert_eq!(timm["interpolation"].as_str(), Some("bilinear"), "{model}");
            for c in 0..3 {
                assert_eq!(
                    timm["mean"][c].as_f64().map(|v| v as f32),
                    Some(cfg.mean[c]),
                    "{model}"
                );
                assert_eq!(
                    timm["std"][c].as_f64().map(|v| v as f32),
                    Some(cfg.std[c]),
                    "{model}"
                );
            }
            let img =
                load_rgb(fixture(o["image"].as_str().expect("image"))).expect("fixture image");
            let theirs_u8 =
                load_rgb(fixture(o["file"].as_str().expect("file"))).expect("timm output");
            let ours_u8 = cfg.resize_crop(&img).expect("resize");
            assert_eq!(ours_u8.dimensions(), theirs_u8.dimensions());
            let px = ours_u8
                .as_raw()
                .iter()
                .zip(theirs_u8.as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .max();
            let ours = cfg.transform(&img).expect("transform");
            let theirs = cfg.normalize(&theirs_u8);
            let d = max_abs_diff(&ours, &theirs);
            eprintln!(
                "{}: max |pixel diff| {px:?}, max |diff| after normalisation {d:e}",
                o["file"]
            );
            assert_eq!(px, Some(0), "{}", o["file"]);
            assert_eq!(d, 0.0, "{}", o["file"]);
        }
    }

    #[test]
    fn unreadable_images_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("noise.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\n not really a png").expect("write");
        let e = load_rgb(&bad).expect_err("corrupt");
        assert!(
            matches!(e, ModelError::Image { .. }) && e.to_string().contains("noise.png"),
            "{e}"
        );
        let text = dir.path().join("notes.png");
        std::fs::write(&text, b"hello").expect("write");
        let e = load_rgb(&text).expect_err("not an image");
        assert!(
            e.to_string().contains("notes.png") && e.to_string().contains("unrecognised"),
            "{e}"
        );
        let e = load_rgb(dir.path().join("missing.jpg")).expect_err("missing");
        assert!(
            matches!(e, ModelError::Io { .. }) && e.to_string().contains("missing.jpg"),
            "{e}"
        );
    }

    #[test]
    fn configs_follow_timm() {
        let a = PretrainedConfig::for_variant("a0");
        assert_eq!(
            (a.input_size, a.crop_pct, a.scale_size()),
            (224, 0.875, 256)
        );
        assert_eq!(PretrainedConfig::for_variant("repvgg_b3g4.rvgg_in1k"), a);
        let d = PretrainedConfig::for_variant("repvgg_d2se.rvgg_in1k");
        assert_eq!((d.input_size, d.crop_pct, d.scale_size()), (320, 1.0, 320));
        assert_eq!(PretrainedConfig::for_config(&RepVggConfig::d2se()), d);
        assert_eq!(PretrainedConfig::for_config(&RepVggConfig::b1g2()), a);
    }

    #[test]
    fn torchvision_sizes_and_offsets() {
        assert_eq!(shorter_side_size(300, 200, 256), (384, 256));
        assert_eq!(shorter_side_size(97, 131, 256), (256, 345));
        // (257 - 224) / 2 = 16.5 rounds to 16 (even), (259 - 224) / 2 = 17.5 to 18.
        assert_eq!(half_round_even(33), 16);
        assert_eq!(half_round_even(35), 18);
        assert_eq!(half_round_even(32), 16);
    }

    #[test]
    fn resize_to_same_size_is_identity_and_box_averages() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([(x * 40) as u8, (y * 50) as u8, 7]));
        assert_eq!(resize_rgb8(&img, 5, 4, Interpolation::Bilinear), img);
        let plane = Array2::from_shape_fn((4, 4), |(y, x)| (y * 4 + x) as f32);
        let half = resize_plane(plane.view(), 2, 2, Interpolation::Box);
        assert_eq!(half, ndarray::arr2(&[[2.5, 4.5], [10.5, 12.5]]));
    }

    #[test]
    fn digit_is_framed_like_sklearn() {
        // A 10x20 black bar in a 100x100 white image fills all 8 rows, centred in width.
        let gray = Array2::from_shape_fn((100, 100), |(y, x)| {
            if (40..60).contains(&y) && (45..55).contains(&x) {
                0.0
            } else {
                1.0
            }
        });
        let d = digit_8x8(gray.view());
        for y in 0..8 {
            assert_eq!(
                (d[[y, 1]], d[[y, 2]], d[[y, 5]], d[[y, 6]]),
                (0.0, 16.0, 16.0, 0.0),
                "row {y}: {d}"
            );
        }
    }

    #[test]
    fn digit_inverts_light_background_and_stretches() {
        // Black "ink" column on white, 16x16.
        let gray = Array2::from_shape_fn(
            (16, 16),
            |(_, x)| if (6..10).contains(&x) { 0.0 } else { 1.0 },
        );
        let d = digit_8x8(gray.view());
        assert_eq!(d[[0, 3]], 16.0);
        assert_eq!(d[[0, 0]], 0.0);
        assert_eq!(
            digit_8x8(Array2::from_elem((3, 5), 0.7).view()),
            Array2::<f32>::zeros((8, 8))
        );
    }
}
