//! The element-wise kernels of a CPU network: input layout conversion, a batch norm added to a
//! sum, squeeze-and-excitation, average pooling.

use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use crate::builder::SqueezeExcite;

/// `dst[n][p][ch] = src[n][ch][p]` for `hw` pixels per image, in parallel over blocks of pixels
/// (batch 1 too); three channels (images) as three plane streams.
pub(crate) fn nchw_to_nhwc(src: &[f32], dst: &mut [f32], c: usize, hw: usize) {
    const PIXELS: usize = 4096;
    if c == 0 || hw == 0 {
        return;
    }
    dst.par_chunks_mut(hw * c)
        .zip(src.par_chunks(c * hw))
        .for_each(|(d, s)| {
            d.par_chunks_mut(PIXELS * c)
                .enumerate()
                .for_each(|(blk, d)| {
                    let p0 = blk * PIXELS;
                    let n = d.len() / c;
                    if c == 3 {
                        let (r, g, b) = (
                            &s[p0..p0 + n],
                            &s[hw + p0..hw + p0 + n],
                            &s[2 * hw + p0..2 * hw + p0 + n],
                        );
                        for (((px, &r), &g), &b) in d.chunks_exact_mut(3).zip(r).zip(g).zip(b) {
                            px.copy_from_slice(&[r, g, b]);
                        }
                    } else {
                        for (i, px) in d.chunks_exact_mut(c).enumerate() {
                            for (ch, v) in px.iter_mut().enumerate() {
                                *v = s[ch * hw + p0 + i];
                            }
                        }
                    }
                });
        });
}

/// `dst += src * scale + shift` per channel, then ReLU (NHWC rows of `scale.len()` channels).
pub(crate) struct Affine<'a> {
    pub dst: &'a mut [f32],
    pub src: &'a [f32],
    pub scale: &'a [f32],
    pub shift: &'a [f32],
    pub relu: bool,
}

impl WithSimd for Affine<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let ch = self.scale.len();
        for (d, s) in self.dst.chunks_exact_mut(ch).zip(self.src.chunks_exact(ch)) {
            for ((o, &v), (&sc, &sh)) in d.iter_mut().zip(s).zip(self.scale.iter().zip(self.shift))
            {
                let z = *o + (v * sc + sh);
                *o = if self.relu { z.max(0.0) } else { z };
            }
        }
    }
}

/// `out[c]`: the mean over the pixels of one NHWC image `img` of `out.len()` channels.
pub(crate) struct MeanPixels<'a> {
    pub out: &'a mut [f32],
    pub img: &'a [f32],
}

impl WithSimd for MeanPixels<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let ch = self.out.len();
        self.out.fill(0.0);
        let mut count = 0usize;
        for px in self.img.chunks_exact(ch) {
            for (o, v) in self.out.iter_mut().zip(px) {
                *o += v;
            }
            count += 1;
        }
        let inv = count.max(1) as f32;
        for o in self.out.iter_mut() {
            *o /= inv;
        }
    }
}

/// Squeeze-and-excitation of one NHWC image in place, then ReLU.
pub(crate) struct SeImage<'a> {
    pub img: &'a mut [f32],
    pub ch: usize,
    pub se: &'a SqueezeExcite,
    pub relu: bool,
}

impl WithSimd for SeImage<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { img, ch, se, relu } = self;
        let mut mean = vec![0.0f32; ch];
        MeanPixels {
            out: &mut mean,
            img,
        }
        .with_simd(simd);
        let hidden: Vec<f32> = (0..se.hidden)
            .map(|j| {
                let w = &se.fc1_w[j * ch..(j + 1) * ch];
                let z = w.iter().zip(&mean).map(|(a, b)| a * b).sum::<f32>() + se.fc1_b[j];
                z.max(0.0)
            })
            .collect();
        let gate: Vec<f32> = (0..ch)
            .map(|c| {
                let w = &se.fc2_w[c * se.hidden..(c + 1) * se.hidden];
                let z = w.iter().zip(&hidden).map(|(a, b)| a * b).sum::<f32>() + se.fc2_b[c];
                1.0 / (1.0 + (-z).exp())
            })
            .collect();
        for px in img.chunks_exact_mut(ch) {
            for (v, g) in px.iter_mut().zip(&gate) {
                let z = *v * g;
                *v = if relu { z.max(0.0) } else { z };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_layout_conversion_moves_every_value_once() {
        for c in [1, 2, 3, 5] {
            for hw in [1, 7, 4095, 4096, 4097, 9000] {
                let n = 2;
                let src: Vec<f32> = (0..n * c * hw).map(|i| i as f32).collect();
                let mut dst = vec![f32::NAN; n * c * hw];
                nchw_to_nhwc(&src, &mut dst, c, hw);
                for img in 0..n {
                    for p in 0..hw {
                        for ch in 0..c {
                            assert_eq!(
                                dst[(img * hw + p) * c + ch],
                                src[(img * c + ch) * hw + p],
                                "c {c} hw {hw} image {img} pixel {p} channel {ch}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// `dst[x * c + ch] = planes[ch * w + x]`: `c` rows of `w` values (one per channel) interleaved
/// into one NHWC row. Three channels (every RGB input) get a loop of their own, which the
/// compiler turns into shuffles instead of three strided passes.
pub(crate) fn interleave<T: Copy>(planes: &[T], c: usize, dst: &mut [T]) {
    fn fixed<T: Copy, const C: usize>(planes: &[T], dst: &mut [T]) {
        let w = dst.len() / C;
        let rows: [&[T]; C] = std::array::from_fn(|ch| &planes[ch * w..(ch + 1) * w]);
        for (x, px) in dst.chunks_exact_mut(C).enumerate() {
            for ch in 0..C {
                px[ch] = rows[ch][x];
            }
        }
    }
    match c {
        3 => fixed::<T, 3>(planes, dst),
        1 => dst.copy_from_slice(&planes[..dst.len()]),
        _ => {
            let w = dst.len() / c.max(1);
            for ch in 0..c {
                for (d, &v) in dst
                    .iter_mut()
                    .skip(ch)
                    .step_by(c)
                    .zip(&planes[ch * w..(ch + 1) * w])
                {
                    *d = v;
                }
            }
        }
    }
}

#[cfg(test)]
mod interleave_tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn interleaving_puts_each_channel_value_at_its_pixel(c in 1usize..6, w in 0usize..40) {
            let planes: Vec<u32> = (0..c * w).map(|i| i as u32).collect();
            let mut dst = vec![u32::MAX; c * w];
            super::interleave(&planes, c, &mut dst);
            for x in 0..w {
                for ch in 0..c {
                    prop_assert_eq!(dst[x * c + ch], planes[ch * w + x]);
                }
            }
        }
    }
}
