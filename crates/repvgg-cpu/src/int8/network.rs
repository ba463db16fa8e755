//! A chain of int8 convs with its input quantization and head.

use std::sync::{Mutex, PoisonError};

use ndarray::{Array2, Array4, ArrayView2, ArrayView4, s};
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use crate::aligned::{AlignedBytes, AlignedVec};
use crate::error::{CpuError, Result};
use crate::int8::{ActQuant, Int8Kernel, QuantConv};
use crate::network::{Laps, OpTime};

/// Options of an [`Int8Network`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Int8Options {
    /// Worker threads; `None` uses rayon's global pool.
    pub threads: Option<usize>,
    /// The GEMM's instruction set; `None` takes the fastest this CPU has.
    pub kernel: Option<Int8Kernel>,
}

/// Convs in a chain, each reading the previous one's u8 output, then global average pooling in
/// f32 and a linear layer of s8 weights per class. `Send + Sync`.
#[derive(Debug)]
pub struct Int8Network {
    in_channels: usize,
    input: ActQuant,
    convs: Vec<QuantConv>,
    classes: usize,
    /// `[classes][C]`: each class's weights as s8, symmetric, scaled by `head_scale`.
    head_q: Vec<i8>,
    /// The same codes as f32, `[C, classes]` in the f32 GEMM's panels (`head_scale` and the
    /// bias applied in its store, as the s8 path applies them): from [`crate::head::GEMM_BATCH`]
    /// images on, a GEMM reads them faster than the s8 rows convert.
    head_wt: AlignedVec,
    head_scale: Vec<f32>,
    head_bias: Vec<f32>,
    kernel: Int8Kernel,
    pool: Option<rayon::ThreadPool>,
    /// Three activation buffers per concurrent run, kept between runs.
    buffers: Mutex<Vec<[AlignedBytes; 3]>>,
}

impl Int8Network {
    /// A network of `convs` in order on an input of `in_channels` quantized as the first conv's
    /// input says, then the head: the linear layer's s8 `weight [classes, C]`, symmetric per
    /// class (`w ≈ weight[j][c] * scale[j]`), and its f32 `bias`.
    ///
    /// # Errors
    /// [`CpuError::Invalid`] for no convs, a kernel this CPU lacks (naming the missing features),
    /// convs whose input quantization is not the previous output's, a non-finite head bias or a
    /// head scale that is not finite and positive;
    /// [`CpuError::Shape`] for channels that do not chain.
    pub fn new(
        in_channels: usize,
        convs: Vec<QuantConv>,
        head_weight: ArrayView2<'_, i8>,
        head_scale: &[f32],
        head_bias: &[f32],
        opts: Int8Options,
    ) -> Result<Self> {
        let kernel = match opts.kernel {
            None => Int8Kernel::detect(),
            Some(k) if k.is_available() => k,
            Some(k) => {
                return Err(CpuError::Invalid(format!(
                    "the {k} int8 kernel needs the CPU features {}, which this CPU lacks",
                    k.features()
                )));
            }
        };
        let Some(first) = convs.first() else {
            return Err(CpuError::Invalid(
                "an int8 network needs at least one conv".into(),
            ));
        };
        let input = first.input();
        let mut c = in_channels;
        let mut scale = None;
        for (i, conv) in convs.iter().enumerate() {
            if conv.spec().in_channels != c {
                return Err(CpuError::Shape {
                    what: format!("int8 conv {i} input channels"),
                    expected: vec![c],
                    found: vec![conv.spec().in_channels],
                });
            }
            if let Some(s) = scale
                && conv.input() != ActQuant::relu(s)
            {
                return Err(CpuError::Invalid(format!(
                    "int8 conv {i} reads its input as {:?}, but conv {} wrote it with scale {s} \
                     and zero point 0",
                    conv.input(),
                    i - 1
                )));
            }
            c = conv.spec().out_channels;
            scale = Some(conv.output_scale());
        }
        let classes = head_weight.shape()[0];
        if head_weight.shape()[1] != c || head_scale.len() != classes || head_bias.len() != classes
        {
            return Err(CpuError::Shape {
                what: "classifier weight, scales and bias".into(),
                expected: vec![classes, c, classes, classes],
                found: vec![
                    head_weight.shape()[0],
                    head_weight.shape()[1],
                    head_scale.len(),
                    head_bias.len(),
                ],
            });
        }
        if head_bias.iter().any(|v| !v.is_finite()) {
            return Err(CpuError::Invalid("classifier bias holds NaN or inf".into()));
        }
        if let Some(s) = head_scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(CpuError::Invalid(format!(
                "classifier weight scale {s}: expected a finite positive scale per class"
            )));
        }
        // Row-major `[classes][C]` codes, whatever the view's layout.
        let head_q: Vec<i8> = head_weight.iter().copied().collect();
        let mut head_wt = AlignedVec::filled(crate::gemm::packed_len(c, classes), 0.0);
        crate::gemm::pack_into(&mut head_wt, c, classes, |ci, j| {
            f32::from(head_weight[[j, ci]])
        });
        let head_scale = head_scale.to_vec();
        let pool = crate::builder::thread_pool(opts.threads)?;
        Ok(Self {
            in_channels,
            input,
            convs,
            classes,
            head_q,
            head_wt,
            head_scale,
            head_bias: head_bias.to_vec(),
            kernel,
            pool,
            buffers: Mutex::new(Vec::new()),
        })
    }

    /// The GEMM's instruction set.
    pub fn kernel(&self) -> Int8Kernel {
        self.kernel
    }

    /// Threads a run uses.
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or_else(
            rayon::current_num_threads,
            rayon::ThreadPool::current_num_threads,
        )
    }

    /// The convs, in order.
    pub fn convs(&self) -> &[QuantConv] {
        &self.convs
    }

    /// Multiply-adds of a run of `n x h x w` (convs and head).
    pub fn macs(&self, n: usize, mut h: usize, mut w: usize) -> Result<u64> {
        let mut total = 0;
        for c in &self.convs {
            total += c.macs(n, h, w)?;
            (h, w) = c.spec().output_size(h, w)?;
        }
        let last = self
            .convs
            .last()
            .map_or(self.in_channels, |c| c.spec().out_channels);
        Ok(total + (n * last * self.classes) as u64)
    }

    /// Bytes of u8 activations and im2col scratch alive at the peak of a run of `n x h x w`
    /// (the input and output of the widest conv, as stored: padded where a conv reads
    /// them, and its gathered rows).
    pub fn activation_bytes(&self, n: usize, mut h: usize, mut w: usize) -> Result<u64> {
        let threads = self.threads();
        let mut peak = 0;
        for (i, c) in self.convs.iter().enumerate() {
            let s = c.spec();
            let (oh, ow) = s.output_size(h, w)?;
            let input = match self.padded(i) {
                Some(c) => c.padded_len(n, h, w),
                None => n * h * w * s.in_channels,
            };
            let output = match self.padded(i + 1) {
                Some(next) => next.padded_len(n, oh, ow),
                None => n * oh * ow * s.out_channels,
            };
            let scratch = if self.padded(i).is_some() {
                0
            } else {
                c.scratch_bytes(n * oh * ow, threads)
            };
            peak = peak.max(input + output + scratch);
            (h, w) = (oh, ow);
        }
        Ok(peak as u64)
    }

    /// Conv `i` when it reads its input stored with its padding (on the AMX tiles, or in place
    /// on VNNI).
    fn padded(&self, i: usize) -> Option<&QuantConv> {
        let c = self.convs.get(i)?;
        c.reads_padded(self.kernel).then_some(c)
    }

    /// Logits `[N, classes]` of an NCHW f32 batch.
    ///
    /// # Errors
    /// [`CpuError::Shape`] for a batch of another channel count or an image too small for the
    /// convs.
    pub fn run(&self, x: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
        Ok(self.run_inner(x, false, None)?.0)
    }

    /// One run of `x`, timed step by step: the input's quantization, each conv (its shape,
    /// output size and kernel; its flops counted as a direct conv's, 2 per multiply-add), the
    /// head's average pool and its linear layer.
    ///
    /// # Errors
    /// As [`Int8Network::run`].
    pub fn profile(&self, x: ArrayView4<'_, f32>) -> Result<Vec<OpTime>> {
        let mut times = Vec::with_capacity(self.convs.len() + 3);
        self.run_inner(x, false, Some(&mut times))?;
        Ok(times)
    }

    /// Logits and every conv's output, dequantized to f32 NCHW (for calibration reports).
    ///
    /// # Errors
    /// As [`Int8Network::run`].
    pub fn run_layers(&self, x: ArrayView4<'_, f32>) -> Result<(Array2<f32>, Vec<Array4<f32>>)> {
        self.run_inner(x, true, None)
    }

    fn run_inner(
        &self,
        x: ArrayView4<'_, f32>,
        keep: bool,
        prof: Option<&mut Vec<OpTime>>,
    ) -> Result<(Array2<f32>, Vec<Array4<f32>>)> {
        crate::pool::run(self.pool.as_ref(), || self.run_here(x, keep, prof))
    }

    fn run_here(
        &self,
        x: ArrayView4<'_, f32>,
        keep: bool,
        prof: Option<&mut Vec<OpTime>>,
    ) -> Result<(Array2<f32>, Vec<Array4<f32>>)> {
        let mut laps = Laps::new(prof);
        let mut lap = |what: &dyn Fn() -> (String, u64)| laps.lap(what);
        let (n, c, mut h, mut w) = x.dim();
        if c != self.in_channels {
            return Err(CpuError::Shape {
                what: "int8 network input".into(),
                expected: vec![n, self.in_channels, h, w],
                found: vec![n, c, h, w],
            });
        }
        let threads = rayon::current_num_threads();
        let [mut a, mut b, mut t] = self
            .buffers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default();
        // On AMX and VNNI, a conv reads its input stored with its padding: the
        // conv before it writes there (or the quantization of the input, for the first).
        let padded = |i: usize| self.padded(i);
        match padded(0) {
            Some(first) => {
                a.resize(first.padded_len(n, h, w));
                quantize_padded(x, self.input, &mut a, first.spec().padding);
            }
            None => {
                a.resize(n * h * w * c);
                quantize_padded(x, self.input, &mut a, 0);
            }
        }
        lap(&|| ("quantize input to u8".into(), 0));
        let mut layers = Vec::new();
        let mut cur = c;
        for (i, conv) in self.convs.iter().enumerate() {
            let (oh, ow) = conv.spec().output_size(h, w)?;
            let co = conv.spec().out_channels;
            let next = padded(i + 1);
            if padded(i).is_some() {
                // Straight into the next conv's padded layout when it has one.
                let q = next.map_or(0, |nc| nc.spec().padding);
                let len = next.map_or(n * oh * ow * co, |nc| nc.padded_len(n, oh, ow));
                b.resize(len);
                clear_border(&mut b, n, oh, ow, co, q);
                conv.run_padded(self.kernel, &a, n, h, w, &mut b, q, threads)?;
            } else {
                b.resize(n * oh * ow * co);
                conv.run(self.kernel, &a, n, h, w, &mut b, threads)?;
                if let Some(nc) = next {
                    t.resize(nc.padded_len(n, oh, ow));
                    nc.pad_input(&b, n, oh, ow, &mut t);
                    std::mem::swap(&mut b, &mut t);
                }
            }
            std::mem::swap(&mut a, &mut b);
            lap(&|| {
                let kernel = if self.kernel == Int8Kernel::Amx && conv.amx_mode().is_some() {
                    Int8Kernel::Amx
                } else if self.kernel == Int8Kernel::Amx {
                    // Convs the tiles do not take run on VNNI.
                    Int8Kernel::Avx512Vnni
                } else {
                    self.kernel
                };
                let s = conv.spec();
                let op = format!(
                    "conv {}x{}/{} {}->{} g{} {oh}x{ow} int8 {kernel}",
                    s.kernel_size, s.kernel_size, s.stride, s.in_channels, co, s.groups
                );
                // The input's size, which `output_size` above has already accepted.
                (op, 2 * conv.macs(n, h, w).unwrap_or_default())
            });
            (h, w, cur) = (oh, ow, co);
            if keep {
                let q = ActQuant::relu(conv.output_scale());
                let p = next.map_or(0, |nc| nc.spec().padding);
                let (hp, wp) = (h + 2 * p, w + 2 * p);
                let t = Array4::from_shape_fn((n, co, h, w), |(i, ch, y, xx)| {
                    q.dequantize(a[((i * hp + y + p) * wp + xx + p) * co + ch])
                });
                layers.push(t);
            }
        }
        // Global average pool of the dequantized codes, then the linear layer.
        let scale = self.convs.last().map_or(1.0, QuantConv::output_scale);
        let hw = h * w;
        let mut pooled = vec![0.0f32; n * cur];
        pooled
            .par_chunks_mut(cur.max(1))
            .enumerate()
            .for_each(|(i, p)| {
                let mut sums = vec![0u32; cur];
                for px in a[i * hw * cur..(i + 1) * hw * cur].chunks_exact(cur) {
                    for (s, &v) in sums.iter_mut().zip(px) {
                        *s += u32::from(v);
                    }
                }
                for (d, s) in p.iter_mut().zip(sums) {
                    *d = s as f32 * scale / hw as f32;
                }
            });
        lap(&|| (format!("head: average pool {h}x{w}x{cur}"), 0));
        let classes = self.classes;
        // Below a few images each class row of s8 codes is read once for all of them.
        let logits = crate::head::logits(
            n,
            &pooled,
            cur,
            (&self.head_q, &self.head_wt),
            &self.head_scale,
            &self.head_bias,
        );
        let logits = Array2::from_shape_vec((n, classes), logits)
            .map_err(|e| CpuError::Invalid(e.to_string()))?;
        lap(&|| {
            (
                format!(
                    "head: linear {cur}->{classes}, {}",
                    if n >= crate::head::GEMM_BATCH {
                        "f32 GEMM on the s8 codes, scaled in its store"
                    } else {
                        "s8 weights"
                    }
                ),
                2 * (n * cur * classes) as u64,
            )
        });
        self.buffers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push([a, b, t]);
        Ok((logits, layers))
    }
}

/// Zeroes the border of `q` pixels around `n` images of `h x w x c` stored padded in `buf`, and
/// whatever follows them (a padded layout's slack).
pub(crate) fn clear_border(buf: &mut [u8], n: usize, h: usize, w: usize, c: usize, q: usize) {
    let (hp, wp) = (h + 2 * q, w + 2 * q);
    let row = wp * c;
    let (body, slack) = buf.split_at_mut(n * hp * row);
    slack.fill(0);
    if q == 0 {
        return;
    }
    for (r, line) in body.chunks_exact_mut(row).enumerate() {
        let y = r % hp;
        if y < q || y >= h + q {
            line.fill(0);
        } else {
            line[..q * c].fill(0);
            line[(q + w) * c..].fill(0);
        }
    }
}

/// `x` (NCHW f32) quantized into `out` (NHWC u8) with a border of `p` pixels, the border and
/// whatever follows the images (a padded layout's slack) holding the zero point. Rows of
/// images in parallel.
fn quantize_padded(x: ArrayView4<'_, f32>, q: ActQuant, out: &mut [u8], p: usize) {
    let (n, c, h, w) = x.dim();
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    let row = wp * c;
    let z = q.zero_point;
    let (body, slack) = out.split_at_mut(n * hp * row);
    slack.fill(z);
    if row == 0 {
        return;
    }
    body.par_chunks_mut(row).enumerate().for_each_init(
        || vec![0u8; c * w],
        |codes, (r, dst)| {
            let (img, yy) = (r / hp, r % hp);
            if yy < p || yy >= h + p {
                dst.fill(z);
                return;
            }
            dst[..p * c].fill(z);
            dst[(p + w) * c..].fill(z);
            for (ch, codes) in codes.chunks_exact_mut(w.max(1)).enumerate().take(c) {
                let src = x.slice(s![img, ch, yy - p, ..]);
                match src.as_slice() {
                    Some(src) => quantize_row(src, q, codes),
                    None => codes
                        .iter_mut()
                        .zip(src.iter())
                        .for_each(|(d, &v)| *d = q.quantize(v)),
                }
            }
            crate::elementwise::interleave(codes, c, &mut dst[p * c..(p + w) * c]);
        },
    );
}

/// [`ActQuant::quantize`] over a row, in a form the compiler turns into vector code (compiled
/// for the best instruction set found at run time, through [`pulp`]): ties to even by adding
/// 1.5 x 2^23, whose sum's low bits then hold the rounded code (exact for the clamped codes,
/// far below 2^22), where `round_ties_even` would be a call per value on the baseline x86_64;
/// NaN goes to the low clamp, as the scalar rule's cast sends it to 0.
fn quantize_row(src: &[f32], q: ActQuant, out: &mut [u8]) {
    Arch::new().dispatch(QuantizeRow { src, q, out });
}

struct QuantizeRow<'a> {
    src: &'a [f32],
    q: ActQuant,
    out: &'a mut [u8],
}

impl WithSimd for QuantizeRow<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        const MAGIC: f32 = 12_582_912.0;
        let base = MAGIC.to_bits() as i32;
        let zp = i32::from(self.q.zero_point);
        for (d, &v) in self.out.iter_mut().zip(self.src) {
            // Not `clamp`: NaN must go to the low clamp, as `max` sends it, where `clamp`
            // would keep it.
            #[allow(clippy::manual_clamp)]
            let t = (v / self.q.scale).max(-512.0).min(512.0);
            let code = (t + MAGIC).to_bits() as i32 - base + zp;
            *d = code.clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn row_quantization_matches_the_scalar_rule(
            codes in prop::collection::vec(-400i32..400, 1..40),
            frac in prop::collection::vec(prop::sample::select(vec![0.0f32, 0.5, -0.5, 0.25, 0.49999, 0.50001]), 1..40),
            scale in 1e-3f32..10.0, zero_point in any::<u8>(),
        ) {
            let q = ActQuant { scale, zero_point };
            let mut xs: Vec<f32> = codes.iter().zip(frac.iter().cycle()).map(|(&k, &f)| (k as f32 + f) * scale).collect();
            xs.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30, 0.0, -0.0]);
            let mut got = vec![0u8; xs.len()];
            quantize_row(&xs, q, &mut got);
            for (x, g) in xs.iter().zip(&got) {
                prop_assert_eq!(*g, q.quantize(*x), "x = {}", x);
            }
        }
    }

    #[test]
    fn padded_quantization_fills_the_border_with_the_zero_point() {
        let q = ActQuant {
            scale: 0.5,
            zero_point: 7,
        };
        let x = ndarray::Array4::from_shape_fn((2, 3, 2, 3), |(i, c, y, xx)| {
            (i * 50 + c * 10 + y * 3 + xx) as f32
        });
        // A transposed view: not contiguous rows, the scalar path.
        let xt = x
            .clone()
            .permuted_axes([0, 1, 3, 2])
            .as_standard_layout()
            .into_owned();
        let xt = xt.view().permuted_axes([0, 1, 3, 2]);
        for view in [x.view(), xt] {
            let p = 1;
            let mut out = vec![0xAAu8; 2 * 4 * 5 * 3 + 5];
            quantize_padded(view, q, &mut out, p);
            for img in 0..2 {
                for yy in 0..4 {
                    for xx in 0..5 {
                        for c in 0..3 {
                            let got = out[((img * 4 + yy) * 5 + xx) * 3 + c];
                            let inside = (1..3).contains(&yy) && (1..4).contains(&xx);
                            let want = if inside {
                                q.quantize(x[[img, c, yy - 1, xx - 1]])
                            } else {
                                7
                            };
                            assert_eq!(got, want, "image {img} row {yy} column {xx} channel {c}");
                        }
                    }
                }
            }
            assert!(out[2 * 4 * 5 * 3..].iter().all(|&v| v == 7));
        }
    }
}
