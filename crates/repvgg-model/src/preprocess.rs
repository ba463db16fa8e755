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

/// Largest network input side [`PretrainedConfig`] accepts.
pub const MAX_INPUT_SIZE: usize = 16_384;
/// Largest shorter-side resize target [`PretrainedConfig`] accepts.
pub const MAX_SCALE_SIZE: usize = 65_536;
/// Largest image side decoded (PNG allows 2^31 - 1; JPEG stops at 65535, WebP at 16383).
pub const MAX_IMAGE_SIDE: u32 = 1 << 18;
/// Largest image decoded, in pixels (64 Mpx: 8192 x 8192).
pub const MAX_IMAGE_PIXELS: u64 = 1 << 26;
/// Largest allocation the image decoder may make (an RGBA 16-bit image of
/// [`MAX_IMAGE_PIXELS`]).
pub const MAX_IMAGE_ALLOC: u64 = 8 * MAX_IMAGE_PIXELS;

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
    /// Resampling filter of the resize.
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
        if self.input_size > MAX_INPUT_SIZE || self.scale_size() > MAX_SCALE_SIZE {
            return Err(ModelError::Config(format!(
                "preprocessing: input_size {} and crop_pct {} resize to {} px; at most {MAX_INPUT_SIZE} (input) and {MAX_SCALE_SIZE} (resize) are supported",
                self.input_size,
                self.crop_pct,
                self.scale_size()
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
        // Only the centre crop of the resized image is computed: memory is O(output), however
        // far an extreme aspect ratio (1 x 100000) would enlarge the whole image.
        Ok(resize_center_crop(
            img,
            (nw, nh),
            (self.input_size, self.input_size),
            self.interpolation,
        ))
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
    let bytes = std::fs::read(path).map_err(|error| ModelError::Io {
        path: path.into(),
        error,
    })?;
    decode_rgb(&bytes, path)
}

/// Decodes an image held in memory; `path` only names it in errors. The header is read first
/// and an image beyond [`MAX_IMAGE_SIDE`] per side or [`MAX_IMAGE_PIXELS`] in all is refused
/// before any pixel is decoded (a decompression bomb costs nothing); the decoder itself runs
/// under `image::Limits` too.
pub fn decode_rgb(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    // Decoder messages can span lines; an error is reported on one.
    let err = |reason: String| ModelError::Image {
        path: path.into(),
        reason: reason.split_whitespace().collect::<Vec<_>>().join(" "),
    };
    let format = image::guess_format(bytes).map_err(|_| err("unrecognised file format".into()))?;
    if !matches!(
        format,
        image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::WebP
    ) {
        return Err(err(format!("{format:?} images are not supported")));
    }
    let reader = || image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let (w, h) = reader().into_dimensions().map_err(|e| err(e.to_string()))?;
    if w == 0 || h == 0 {
        return Err(err(format!("the image is empty ({w}x{h} pixels)")));
    }
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE || u64::from(w) * u64::from(h) > MAX_IMAGE_PIXELS {
        return Err(err(format!(
            "the image is {w}x{h} pixels; at most {MAX_IMAGE_SIDE} per side and {} megapixels are decoded",
            MAX_IMAGE_PIXELS >> 20
        )));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_ALLOC);
    let mut r = reader();
    r.limits(limits);
    let img = r.decode().map_err(|e| err(e.to_string()))?;
    Ok(img.into_rgb8())
}

/// torchvision's `Resize(int)`: the shorter side becomes `size`, the longer
/// `int(size * long / short)`. Returns `(width, height)`.
pub fn shorter_side_size(w: usize, h: usize, size: usize) -> (usize, usize) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    // Python's `int(size * long / short)`: an exact product, one rounding in the division
    // (saturating for an empty image, which callers reject first).
    let new_long = ((size as u128 * long as u128) as f64 / short as f64) as usize;
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
    coeffs_range(in_size, out_size, 0..out_size, filter)
}

/// [`coeffs`] of the output positions in `range` only (entry `i` is position
/// `range.start + i`): each position's coefficients depend on the sizes alone, so these equal
/// the full table's.
fn coeffs_range(
    in_size: usize,
    out_size: usize,
    range: std::ops::Range<usize>,
    filter: Interpolation,
) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ss = 1.0 / filterscale;
    let mut bounds = Vec::with_capacity(range.len());
    let mut weights = Vec::with_capacity(range.len());
    for xx in range {
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

/// `center_crop(&resize_rgb8(img, out_w, out_h, filter), crop_w, crop_h)`, pixel for pixel,
/// computing only the pixels the crop keeps: the horizontal pass runs on the input rows the
/// kept output rows read and only for the kept columns, then the vertical pass on those. Memory
/// is O(crop + kept columns x read rows), never O(out_w x out_h), so a 1 x 100000 image
/// (enlarged to 256 x 25.6M before the crop) costs kilobytes.
pub fn resize_center_crop(
    img: &RgbImage,
    (out_w, out_h): (usize, usize),
    (crop_w, crop_h): (usize, usize),
    filter: Interpolation,
) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let offset = |size: usize, crop: usize| -> i64 {
        if crop > size {
            -(((crop - size) / 2) as i64)
        } else {
            half_round_even(size - crop) as i64
        }
    };
    let (ox, oy) = (offset(out_w, crop_w), offset(out_h, crop_h));
    // The resized image's columns and rows inside the crop.
    let kept = |o: i64, crop: usize, size: usize| {
        let lo = o.max(0) as usize;
        let hi = ((o + crop as i64).max(0) as usize).min(size);
        lo..hi.max(lo)
    };
    let (xs, ys) = (kept(ox, crop_w, out_w), kept(oy, crop_h, out_h));
    let mut out = RgbImage::new(crop_w as u32, crop_h as u32);
    if xs.is_empty() || ys.is_empty() || w == 0 || h == 0 {
        return out;
    }
    let src = img.as_raw();
    // Horizontal pass (skipped, as Pillow skips it, when the width does not change).
    let cx = (out_w != w).then(|| {
        let c = coeffs_range(w, out_w, xs.clone(), filter);
        let k: Vec<Vec<i64>> = c.weights.iter().map(|k| fixed_point(k)).collect();
        (c.bounds, k)
    });
    // Vertical coefficients first: they say which input rows the kept rows read.
    let cy = (out_h != h).then(|| {
        let c = coeffs_range(h, out_h, ys.clone(), filter);
        let k: Vec<Vec<i64>> = c.weights.iter().map(|k| fixed_point(k)).collect();
        (c.bounds, k)
    });
    let rows = match &cy {
        Some((bounds, _)) => {
            let lo = bounds.iter().map(|b| b.0).min().unwrap_or(0);
            let hi = bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(lo);
            lo..hi.max(lo)
        }
        None => ys.clone(),
    };
    let nx = xs.len();
    // The horizontally resampled rows `rows`, kept columns only: [rows.len(), nx, 3].
    let mut mid = vec![0u8; rows.len() * nx * 3];
    for (r, sy) in rows.clone().enumerate() {
        for (i, x) in xs.clone().enumerate() {
            let dst = &mut mid[(r * nx + i) * 3..(r * nx + i) * 3 + 3];
            match &cx {
                None => dst.copy_from_slice(&src[(sy * w + x) * 3..(sy * w + x) * 3 + 3]),
                Some((bounds, kk)) => {
                    let (start, n) = bounds[i];
                    let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
                    for (j, &kv) in kk[i].iter().enumerate().take(n) {
                        let base = (sy * w + start + j) * 3;
                        for (a, &v) in acc.iter_mut().zip(&src[base..base + 3]) {
                            *a += i64::from(v) * kv;
                        }
                    }
                    for (d, &a) in dst.iter_mut().zip(&acc) {
                        *d = clip8(a);
                    }
                }
            }
        }
    }
    let dst: &mut [u8] = &mut out;
    for (t, y) in ys.clone().enumerate() {
        let oy_out = (y as i64 - oy) as usize;
        for i in 0..nx {
            let ox_out = (xs.start + i) as i64 - ox;
            let base = (oy_out * crop_w + ox_out as usize) * 3;
            let px = &mut dst[base..base + 3];
            match &cy {
                None => {
                    let m = ((y - rows.start) * nx + i) * 3;
                    px.copy_from_slice(&mid[m..m + 3]);
                }
                Some((bounds, kk)) => {
                    let (start, n) = bounds[t];
                    let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
                    for (j, &kv) in kk[t].iter().enumerate().take(n) {
                        let m = ((start + j - rows.start) * nx + i) * 3;
                        for (a, &v) in acc.iter_mut().zip(&mid[m..m + 3]) {
                            *a += i64::from(v) * kv;
                        }
                    }
                    for (d, &a) in px.iter_mut().zip(&acc) {
                        *d = clip8(a);
                    }
                }
            }
        }
    }
    out
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
    let small = resize_framed(ink.view(), (top, left), side, background, n);
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

/// [`resize_plane`] (Pillow `BOX`) to `n x n` of the `side x side` square whose pixel `(y, x)`
/// is `img[top + y, left + x]` inside the image and `background` outside, without building
/// the square: a 1 x 100000 image frames into a 100000 x 100000 square (40 GB as f32), and
/// this costs O(image + side) instead. Rows of the square outside the image share one
/// horizontal result, and each output column's weight on the background is summed once.
fn resize_framed(
    img: ArrayView2<'_, f32>,
    (top, left): (i64, i64),
    side: usize,
    background: f32,
    n: usize,
) -> Array2<f32> {
    let (h, w) = img.dim();
    let filter = Interpolation::Box;
    let cx = coeffs(side, n, filter);
    // Square columns [x0, x1) fall inside the image.
    let x0 = (-left).clamp(0, side as i64) as usize;
    let x1 = (w as i64 - left).clamp(x0 as i64, side as i64) as usize;
    let bg = f64::from(background);
    // Per output column: the background's share (weights of columns outside the image).
    let outside: Vec<f64> = (0..n)
        .map(|ox| {
            let (start, len) = cx.bounds[ox];
            cx.weights[ox]
                .iter()
                .take(len)
                .enumerate()
                .filter(|(i, _)| !(x0..x1).contains(&(start + i)))
                .map(|(_, k)| k)
                .sum::<f64>()
        })
        .collect();
    let background_row: Vec<f32> = outside
        .iter()
        .zip(&cx.weights)
        .map(|(_, k)| (bg * k.iter().sum::<f64>()) as f32)
        .collect();
    let horizontal = |y: usize| -> Vec<f32> {
        let sy = top + y as i64;
        if sy < 0 || sy >= h as i64 {
            return background_row.clone();
        }
        let row = img.row(sy as usize);
        (0..n)
            .map(|ox| {
                let (start, len) = cx.bounds[ox];
                let lo = start.max(x0);
                let hi = (start + len).min(x1);
                let inside: f64 = (lo..hi.max(lo))
                    .map(|x| f64::from(row[(left + x as i64) as usize]) * cx.weights[ox][x - start])
                    .sum();
                (bg * outside[ox] + inside) as f32
            })
            .collect()
    };
    let cy = coeffs(side, n, filter);
    let mut out = Array2::zeros((n, n));
    for oy in 0..n {
        let (start, len) = cy.bounds[oy];
        let mut acc = vec![0.0f64; n];
        for (i, k) in cy.weights[oy].iter().take(len).enumerate() {
            for (a, v) in acc.iter_mut().zip(horizontal(start + i)) {
                *a += f64::from(v) * k;
            }
        }
        for (ox, a) in acc.into_iter().enumerate() {
            out[[oy, ox]] = a as f32;
        }
    }
    out
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

    /// The crop-aware resize equals resize-then-crop pixel for pixel, for every filter,
    /// shrinking and enlarging, each pass skipped or not, crops larger and smaller than the image.
    #[test]
    fn crop_aware_resize_equals_resize_then_crop() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let filters = [
            Interpolation::Box,
            Interpolation::Bilinear,
            Interpolation::Bicubic,
        ];
        let mut cases = 0;
        for (w, h) in [(1, 1), (1, 9), (9, 1), (5, 7), (13, 4), (16, 16), (31, 17)] {
            let img = RgbImage::from_fn(w, h, |_, _| {
                let v = next();
                image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
            });
            for (ow, oh) in [(w as usize, h as usize), (3, 5), (11, 2), (40, 23), (7, 7)] {
                for (cw, ch) in [(1, 1), (3, 4), (7, 7), (12, 30), (50, 3)] {
                    for f in filters {
                        let want = center_crop(&resize_rgb8(&img, ow, oh, f), cw, ch);
                        let got = resize_center_crop(&img, (ow, oh), (cw, ch), f);
                        assert_eq!(got, want, "{w}x{h} -> {ow}x{oh}, crop {cw}x{ch}, {f:?}");
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 7 * 5 * 5 * 3);
    }

    /// Regression: a valid 1 x 100000 image is enlarged to 256 x 25,600,000 before the centre
    /// crop; resizing the whole of it took 22.5 GB. Only the crop is computed now.
    #[test]
    fn extreme_aspect_ratio_costs_only_the_crop() {
        let cfg = PretrainedConfig::imagenet_224();
        for (w, h) in [(1u32, 100_000u32), (100_000, 1)] {
            let img = RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(x % 251) as u8, (y % 241) as u8, 9])
            });
            assert_eq!(
                shorter_side_size(w as usize, h as usize, 256),
                if w == 1 {
                    (256, 25_600_000)
                } else {
                    (25_600_000, 256)
                }
            );
            let out = cfg.resize_crop(&img).expect("resize");
            assert_eq!(out.dimensions(), (224, 224));
            let x = cfg.transform(&img).expect("transform");
            assert!(x.iter().all(|v| v.is_finite()));
        }
    }

    /// A PNG whose header claims 50000 x 50000 pixels (a decompression bomb's shape) is refused
    /// from its header, before any pixel is decoded.
    #[test]
    fn oversized_images_are_refused_from_the_header() {
        let bytes = png_header_only(50_000, 50_000);
        let e = decode_rgb(&bytes, Path::new("bomb.png")).expect_err("too large");
        assert!(
            e.to_string().contains("bomb.png") && e.to_string().contains("50000x50000 pixels"),
            "{e}"
        );
        let e = decode_rgb(
            &png_header_only(1, MAX_IMAGE_SIDE + 1),
            Path::new("tall.png"),
        )
        .expect_err("too tall");
        assert!(e.to_string().contains("per side"), "{e}");
    }

    /// A PNG signature, an IHDR chunk (8-bit greyscale) and an empty IDAT: enough for the
    /// header to be read.
    pub(crate) fn png_header_only(w: u32, h: u32) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend((data.len() as u32).to_be_bytes());
            let mut body = kind.to_vec();
            body.extend(data);
            out.extend(&body);
            out.extend(crc32fast::hash(&body).to_be_bytes());
        }
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend(w.to_be_bytes());
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([8, 0, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(
            &mut out,
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        );
        chunk(&mut out, b"IEND", &[]);
        out
    }

    /// The framed resize equals building the square and resizing it (up to f64 summation
    /// order), and a 1 x 100000 image frames without a 100000^2 square.
    #[test]
    fn framed_resize_equals_the_materialized_square() {
        let img = Array2::from_shape_fn((23, 9), |(y, x)| ((y * 7 + x * 3) % 11) as f32 / 10.0);
        for (top, left, side) in [
            (0i64, -7i64, 23usize),
            (-3, 0, 12),
            (5, 2, 8),
            (-40, -40, 100),
        ] {
            let square = Array2::from_shape_fn((side, side), |(y, x)| {
                let (sy, sx) = (top + y as i64, left + x as i64);
                if sy >= 0 && sx >= 0 && (sy as usize) < 23 && (sx as usize) < 9 {
                    img[[sy as usize, sx as usize]]
                } else {
                    0.25
                }
            });
            let want = resize_plane(square.view(), 8, 8, Interpolation::Box);
            let got = resize_framed(img.view(), (top, left), side, 0.25, 8);
            let d = repvgg_math::compare::max_abs_diff(&got, &want);
            assert!(d <= 1e-6, "{top} {left} {side}: {d}");
        }
        let tall = Array2::from_shape_fn((100_000, 1), |(y, _)| if y % 3 == 0 { 0.0 } else { 1.0 });
        let d = digit_8x8(tall.view());
        assert_eq!(d.dim(), (8, 8));
        assert!(d.iter().all(|v| v.is_finite()));
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
