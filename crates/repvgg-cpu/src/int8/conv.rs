//! One int8 convolution: s8 weights packed once, u8 NHWC activations in and out, the padding
//! filled with the input's zero point (so the zero point's correction is one constant per
//! output channel), the requantization, bias and ReLU fused into the store. On AMX the tiles
//! read the padded input ([`crate::tiled`]); on AVX-512 VNNI each pixel's taps are read in place
//! from it ([`crate::direct`]); elsewhere (and for grouped convs of odd channel counts) an
//! im2col block of u8 per chunk of output pixels is multiplied by the integer GEMM.

use ndarray::ArrayView4;
use rayon::prelude::*;
use repvgg_math::ConvSpec;

use crate::aligned::AlignedBytes;
use crate::amx::Epilogue;
use crate::direct::{self, DirectConv, Reads};
use crate::error::{CpuError, Result};
use crate::int8::ActQuant;
use crate::int8::gemm::{
    self, DirectJob, Int8Kernel, KG, MR, PanelJob, Requant, packed_rows_len, padded_k, padded_n,
};
use crate::int8::simd;
use crate::tiled::{self, AmxMode, TileConv};

/// Bytes of im2col rows one chunk gathers (they stay in L2 while every panel reads them).
const COL_BYTES: usize = 48 * 1024;

/// A convolution with s8 weights (per-output-channel scales), a u8 input of a known scale and
/// zero point, and a u8 output after ReLU (zero point 0).
#[derive(Debug, Clone)]
pub struct QuantConv {
    spec: ConvSpec,
    input: ActQuant,
    output_scale: f32,
    /// Steps of one group's sum, padded to whole groups of four.
    kp: usize,
    /// Per group: the packed `[(ky, kx, ci) x out_g]` matrix.
    w: AlignedBytes,
    /// For [`AmxMode::Rows`]: the packed `[(ky, step) x out]` matrix, `step` running over the
    /// kernel row's `(kx, ci)` and then zeros up to the row's `kc`; empty for other convs.
    rows_w: AlignedBytes,
    /// Per group, [`padded_n`]`(out_g)` values each.
    comp: Vec<i32>,
    mult: Vec<f32>,
    add: Vec<f32>,
}

impl QuantConv {
    /// Prepares `weight` (`[out, in / groups, k, k]`, s8, symmetric: -127..=127) with its
    /// per-output-channel `weight_scale`, the f32 `bias`, the input's quantization and the
    /// output's scale: the output is `clamp(round((conv(x) + bias) / output_scale), 0, 255)`,
    /// a ReLU and a u8 of zero point 0.
    ///
    /// # Errors
    /// [`CpuError::Shape`] when the weight, scales or bias do not match `spec`;
    /// [`CpuError::Invalid`] for scales that are not finite and positive, a non-finite bias or
    /// a weight of -128.
    pub fn new(
        weight: ArrayView4<'_, i8>,
        weight_scale: &[f32],
        bias: &[f32],
        spec: ConvSpec,
        input: ActQuant,
        output_scale: f32,
    ) -> Result<Self> {
        spec.validate()?;
        spec.check_weight(&weight)?;
        let cout = spec.out_channels;
        for (what, len) in [("weight scales", weight_scale.len()), ("bias", bias.len())] {
            if len != cout {
                return Err(CpuError::Shape {
                    what: format!("int8 convolution {what}"),
                    expected: vec![cout],
                    found: vec![len],
                });
            }
        }
        input.check("int8 convolution input")?;
        positive("int8 convolution output scale", &[output_scale])?;
        positive("int8 convolution weight scale", weight_scale)?;
        if bias.iter().any(|b| !b.is_finite()) {
            return Err(CpuError::Invalid(
                "int8 convolution bias holds NaN or inf".into(),
            ));
        }
        if weight.iter().any(|&v| v == i8::MIN) {
            return Err(CpuError::Invalid(
                "int8 convolution weight holds -128: symmetric weights are -127..=127".into(),
            ));
        }
        let (groups, k) = (spec.groups, spec.kernel_size);
        let (cin_g, cout_g) = (spec.in_channels / groups, cout / groups);
        let kg = k * k * cin_g;
        let kp = padded_k(kg);
        let np = padded_n(cout_g);
        let mut w = Vec::with_capacity(groups * gemm::packed_len(kg, cout_g));

        let (mut comp, mut mult, mut add) = (
            vec![0; groups * np],
            vec![0.0; groups * np],
            vec![0.0; groups * np],
        );
        for g in 0..groups {
            // Row (ky * k + kx) * cin_g + ci of the matrix, as im2col gathers it.
            let at = |r: usize, j: usize| {
                let (tap, ci) = (r / cin_g, r % cin_g);
                weight[[g * cout_g + j, ci, tap / k, tap % k]]
            };
            w.extend(gemm::pack(kg, cout_g, at));
            for j in 0..cout_g {
                let o = g * cout_g + j;
                let sum: i32 = (0..kg).map(|r| i32::from(at(r, j))).sum();
                // Packed columns run 0..cout_g within the group (the panels are consecutive).
                comp[g * np + j] = -i32::from(input.zero_point) * sum;
                mult[g * np + j] = input.scale * weight_scale[o] / output_scale;
                add[g * np + j] = bias[o] / output_scale;
            }
        }
        let aligned = |w: &[i8]| {
            let mut a = AlignedBytes::zeroed(w.len());
            a.copy_from_slice(bytemuck::cast_slice(w));
            a
        };
        let rows_w = tiled::rows_kc(&spec, 1).map_or_else(AlignedBytes::default, |kc| {
            let span = k * spec.in_channels;
            aligned(&gemm::pack(k * kc, cout, |r, j| {
                let (ky, t) = (r / kc, r % kc);
                if t < span {
                    weight[[j, t % spec.in_channels, ky, t / spec.in_channels]]
                } else {
                    0
                }
            }))
        });
        Ok(Self {
            spec,
            input,
            output_scale,
            kp,
            w: aligned(&w),
            rows_w,
            comp,
            mult,
            add,
        })
    }

    /// The conv's channels, kernel, stride, padding and groups.
    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    /// The input's quantization.
    pub fn input(&self) -> ActQuant {
        self.input
    }

    /// The output's scale (zero point 0).
    pub fn output_scale(&self) -> f32 {
        self.output_scale
    }

    /// Runs on `x` (NHWC u8, `n x h x w x in`) into `y` (NHWC u8, `n x oh x ow x out`) with
    /// `kernel`, on rayon's current pool of `threads`.
    ///
    /// # Errors
    /// [`CpuError::Shape`] when `x` or `y` do not hold the sizes the geometry needs.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        kernel: Int8Kernel,
        x: &[u8],
        n: usize,
        h: usize,
        w: usize,
        y: &mut [u8],
        threads: usize,
    ) -> Result<()> {
        let s = &self.spec;
        let (oh, ow) = s.output_size(h, w)?;
        for (what, len, want) in [
            ("int8 convolution input", x.len(), n * h * w * s.in_channels),
            (
                "int8 convolution output",
                y.len(),
                n * oh * ow * s.out_channels,
            ),
        ] {
            if len != want {
                return Err(CpuError::Shape {
                    what: what.into(),
                    expected: vec![want],
                    found: vec![len],
                });
            }
        }
        let m = n * oh * ow;
        if m == 0 {
            return Ok(());
        }
        if self.reads_padded(kernel) {
            let mut xp = AlignedBytes::zeroed(self.padded_len(n, h, w));
            self.pad_input(x, n, h, w, &mut xp);
            return self.run_padded(kernel, &xp, n, h, w, y, 0, threads);
        }
        let geo = Geo { h, w, oh, ow };
        let chunk = self.chunk_rows();
        let chunks = m.div_ceil(chunk);
        let cout = s.out_channels;
        let kp = self.kp;
        let groups = s.groups;
        if Self::by_rows(chunks, threads) {
            // Many chunks: each thread gathers its chunk and runs every panel on it.
            y.par_chunks_mut(chunk * cout).enumerate().for_each_init(
                || vec![0u8; packed_rows_len(chunk, kp)],
                |col, (ci, yc)| {
                    let p0 = ci * chunk;
                    let rows = yc.len() / cout;
                    for g in 0..groups {
                        self.im2col(x, &geo, g, p0, rows, col);
                        self.gemm_group(kernel, g, rows, col, &mut yc[g * (cout / groups)..], cout);
                    }
                },
            );
        } else {
            // Few rows (late layers at small batches): gather them all once, then split the
            // panels over the threads, so that each weight byte is read once per run.
            let per_group = packed_rows_len(m, kp);
            let mut col = vec![0u8; groups * per_group];
            col.par_chunks_mut(per_group)
                .enumerate()
                .for_each(|(g, c)| {
                    c.par_chunks_mut(chunk * kp)
                        .enumerate()
                        .for_each(|(ci, cc)| {
                            let rows = chunk.min(m - ci * chunk);
                            self.im2col(x, &geo, g, ci * chunk, rows, cc);
                        });
                });
            let cout_g = cout / groups;
            let np = gemm::panels(cout_g);
            let parts: Vec<(usize, usize, Vec<u8>)> = (0..groups * np)
                .into_par_iter()
                .map(|job| {
                    let (g, p) = (job / np, job % np);
                    let wd = gemm::panel_width(cout_g, p);
                    let cols = wd.min(cout_g - p * gemm::NR);
                    let mut out = vec![0u8; m * cols];
                    let (wg, rq) = self.group(g);
                    let c0 = p * gemm::NR;
                    gemm::run_panel(
                        kernel,
                        PanelJob {
                            m,
                            kp,
                            a: &col[g * per_group..(g + 1) * per_group],
                            w: wd,
                            b: &wg[c0 * kp..(c0 + wd) * kp],
                            cols,
                            c: &mut out,
                            c_rs: cols,
                            rq: Requant {
                                comp: &rq.comp[c0..c0 + wd],
                                mult: &rq.mult[c0..c0 + wd],
                                add: &rq.add[c0..c0 + wd],
                            },
                        },
                    );
                    (g * cout_g + c0, cols, out)
                })
                .collect();
            for (c0, cols, out) in parts {
                for (yr, orow) in y.chunks_exact_mut(cout).zip(out.chunks_exact(cols)) {
                    yr[c0..c0 + cols].copy_from_slice(orow);
                }
            }
        }
        Ok(())
    }

    /// Whether a run on `kernel` reads its input stored with its padding
    /// ([`Self::padded_len`], [`Self::run_padded`]): on the AMX tiles, or straight from the
    /// input on VNNI.
    pub(crate) fn reads_padded(&self, kernel: Int8Kernel) -> bool {
        match kernel {
            Int8Kernel::Amx if self.amx_mode().is_some() => true,
            Int8Kernel::Amx | Int8Kernel::Avx512Vnni => {
                simd::has_vnni() && Reads::of(&self.spec, 1, 1).is_some()
            }
            _ => false,
        }
    }

    /// Runs on `xp`, the input stored with its padding ([`Self::padded_len`]; the border and
    /// the slack holding the input's zero point), into `y` stored with a border of `q` pixels
    /// (`n x (oh + 2q) x (ow + 2q) x out`; the border is not written), on `kernel`, which must
    /// be one that [`Self::reads_padded`].
    ///
    /// # Errors
    /// [`CpuError::Shape`] when `xp` or `y` are too short; [`CpuError::Invalid`] for a kernel
    /// that does not read padded inputs.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_padded(
        &self,
        kernel: Int8Kernel,
        xp: &[u8],
        n: usize,
        h: usize,
        w: usize,
        y: &mut [u8],
        q: usize,
        threads: usize,
    ) -> Result<()> {
        if kernel == Int8Kernel::Amx && self.amx_mode().is_some() {
            return tiled::run_padded(self, xp, n, h, w, y, q, threads);
        }
        let s = &self.spec;
        match Reads::of(s, 1, w + 2 * s.padding) {
            Some(reads) if self.reads_padded(kernel) => {
                direct::run_padded(self, &reads, xp, (n, h, w), y, q, threads)
            }
            _ => Err(CpuError::Invalid(format!(
                "the int8 {kernel} kernel does not read padded inputs for this conv"
            ))),
        }
    }

    /// How the AMX path runs this conv, or `None` when it does not (grouped convs whose
    /// groups' channels are not whole groups of four).
    pub(crate) fn amx_mode(&self) -> Option<AmxMode> {
        tiled::mode(self)
    }

    /// Bytes of the padded input [`tiled::run_padded`] reads for `n x h x w`: `[n][h + 2p]
    /// [w + 2p][in]` and the slack the last tile's rows read past its end.
    pub(crate) fn padded_len(&self, n: usize, h: usize, w: usize) -> usize {
        tiled::padded_len(self, n, h, w)
    }

    /// Copies `x` (`n x h x w x in`) into `xp` with this conv's padding, the border and the
    /// slack holding the input's zero point.
    pub(crate) fn pad_input(&self, x: &[u8], n: usize, h: usize, w: usize, xp: &mut [u8]) {
        let (p, c) = (self.spec.padding, self.spec.in_channels);
        tiled::pad(x, (n, h, w), c, p, self.input.zero_point, xp);
    }

    /// Output pixels per im2col chunk.
    fn chunk_rows(&self) -> usize {
        (COL_BYTES / self.kp).clamp(8, 512) / 8 * 8
    }

    /// Whether a run of `chunks` chunks splits its rows (else its panels) over `threads`.
    fn by_rows(chunks: usize, threads: usize) -> bool {
        chunks >= 4 * threads.max(1) || threads <= 1
    }

    /// Bytes of im2col rows a run of `m` output pixels holds on `threads`.
    pub(crate) fn scratch_bytes(&self, m: usize, threads: usize) -> usize {
        let chunk = self.chunk_rows();
        if Self::by_rows(m.div_ceil(chunk), threads) {
            threads.max(1) * packed_rows_len(chunk, self.kp)
        } else {
            self.spec.groups * packed_rows_len(m, self.kp)
        }
    }

    /// Group `g`'s packed weights and requantization.
    fn group(&self, g: usize) -> (&[i8], Requant<'_>) {
        let cout_g = self.spec.out_channels / self.spec.groups;
        let (np, len) = (padded_n(cout_g), self.kp * padded_n(cout_g));
        (
            &self.w.as_i8()[g * len..(g + 1) * len],
            Requant {
                comp: &self.comp[g * np..(g + 1) * np],
                mult: &self.mult[g * np..(g + 1) * np],
                add: &self.add[g * np..(g + 1) * np],
            },
        )
    }

    fn gemm_group(
        &self,
        kernel: Int8Kernel,
        g: usize,
        rows: usize,
        col: &[u8],
        y: &mut [u8],
        c_rs: usize,
    ) {
        let cout_g = self.spec.out_channels / self.spec.groups;
        let (wg, rq) = self.group(g);
        gemm::gemm_u8i8(kernel, rows, self.kp, cout_g, col, wg, y, c_rs, rq);
    }

    /// Rows `p0..p0 + rows` (output pixels over the batch) of group `g`'s im2col matrix, packed
    /// for the GEMM (blocks of [`MR`] rows, four steps per row together; `p0` a multiple of
    /// [`MR`]): taps outside the image hold the input's zero point, steps past the taps 0.
    fn im2col(&self, x: &[u8], geo: &Geo, g: usize, p0: usize, rows: usize, col: &mut [u8]) {
        let s = &self.spec;
        let (k, stride, pad) = (s.kernel_size, s.stride, s.padding);
        let cin = s.in_channels;
        let cin_g = cin / s.groups;
        let kp = self.kp;
        let z = self.input.zero_point;
        // Channel runs of whole groups of four go straight to their packed places; others
        // (the stem's 3 channels) through one gathered row.
        let direct = cin_g.is_multiple_of(KG);
        let mut line = vec![0u8; if direct { 0 } else { kp }];
        let blocks = col[..packed_rows_len(rows, kp)].chunks_exact_mut(MR * kp);
        for (bi, blk) in blocks.enumerate() {
            let dst: &mut [[[u8; KG]; MR]] = bytemuck::cast_slice_mut(blk);
            for r in 0..MR.min(rows - bi * MR) {
                let p = p0 + bi * MR + r;
                let (img, rest) = (p / (geo.oh * geo.ow), p % (geo.oh * geo.ow));
                let (oy, ox) = (rest / geo.ow, rest % geo.ow);
                let tap = |t: usize| {
                    let (iy, ix) = (
                        (oy * stride + t / k).wrapping_sub(pad),
                        (ox * stride + t % k).wrapping_sub(pad),
                    );
                    (iy < geo.h && ix < geo.w)
                        .then(|| ((img * geo.h + iy) * geo.w + ix) * cin + g * cin_g)
                };
                if direct {
                    let per = cin_g / KG;
                    for t in 0..k * k {
                        let d = &mut dst[t * per..(t + 1) * per];
                        match tap(t) {
                            Some(at) => {
                                let src: &[[u8; KG]] = bytemuck::cast_slice(&x[at..at + cin_g]);
                                for (d, s) in d.iter_mut().zip(src) {
                                    d[r] = *s;
                                }
                            }
                            None => d.iter_mut().for_each(|d| d[r] = [z; KG]),
                        }
                    }
                    dst[k * k * per..].iter_mut().for_each(|d| d[r] = [0; KG]);
                } else {
                    let (taps, tail) = line.split_at_mut(k * k * cin_g);
                    tail.fill(0);
                    for (t, run) in taps.chunks_exact_mut(cin_g).enumerate() {
                        match tap(t) {
                            Some(at) => run.copy_from_slice(&x[at..at + cin_g]),
                            None => run.fill(z),
                        }
                    }
                    let src: &[[u8; KG]] = bytemuck::cast_slice(&line);
                    for (d, s) in dst.iter_mut().zip(src) {
                        d[r] = *s;
                    }
                }
            }
        }
    }

    /// Multiply-adds of one run.
    pub fn macs(&self, n: usize, h: usize, w: usize) -> Result<u64> {
        Ok(n as u64 * self.spec.macs(h, w)?)
    }
}

impl TileConv for QuantConv {
    const ELEM: usize = 1;
    const NAME: &'static str = "int8";

    fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    fn kp(&self) -> usize {
        self.kp
    }

    fn columns(&self, g: usize, rows: bool) -> (&[u8], Epilogue<'_>) {
        let (wg, rq) = self.group(g);
        let w = if rows { self.rows_w.as_i8() } else { wg };
        (bytemuck::cast_slice(w), Epilogue::U8(rq))
    }
}

impl DirectConv for QuantConv {
    fn blocks(
        &self,
        reads: &Reads,
        xp: &[u8],
        g: usize,
        cols: std::ops::Range<usize>,
        xs: &[[usize; direct::MR]],
        ys: &[[usize; direct::MR]],
        len: usize,
        out: &mut [u8],
    ) -> bool {
        let (wg, rq) = self.group(g);
        let job = DirectJob {
            x: xp,
            taps: &reads.taps,
            seg: reads.seg,
            b: if reads.rows { self.rows_w.as_i8() } else { wg },
            n: self.spec.out_channels / self.spec.groups,
            rq,
            cols,
        };
        simd::vnni_direct(&job, xs, ys, len, out)
    }
}

struct Geo {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

pub(crate) fn positive(what: &str, v: &[f32]) -> Result<()> {
    if v.iter().all(|s| s.is_finite() && *s > 0.0) {
        Ok(())
    } else {
        Err(CpuError::Invalid(format!(
            "{what} must be finite and positive"
        )))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::int8::requantize;
    use ndarray::Array4;
    use proptest::prelude::*;

    struct Case {
        spec: ConvSpec,
        n: usize,
        h: usize,
        w: usize,
        zero_point: u8,
        seed: u64,
    }

    /// A seeded stream of `u32` (an LCG's high bits), the int8 tests' random data.
    pub(in crate::int8) fn rng(seed: u64) -> impl FnMut() -> u32 {
        let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u32
        }
    }

    /// The oracle: a direct conv over i32 with the input's zero point subtracted (padding is
    /// real zero), then the same requantization formula.
    fn oracle(c: &QuantConv, wt: &Array4<i8>, x: &[u8], n: usize, h: usize, w: usize) -> Vec<u8> {
        let s = c.spec;
        let (oh, ow) = s.output_size(h, w).unwrap();
        let (cin, cout, k) = (s.in_channels, s.out_channels, s.kernel_size);
        let (cin_g, cout_g) = (cin / s.groups, cout / s.groups);
        let z = i32::from(c.input.zero_point);
        let np = padded_n(cout_g);
        let mut y = vec![0u8; n * oh * ow * cout];
        for img in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for o in 0..cout {
                        let g = o / cout_g;
                        let mut acc = 0i32;
                        for ci in 0..cin_g {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * s.stride + ky) as isize - s.padding as isize;
                                    let ix = (ox * s.stride + kx) as isize - s.padding as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let xv = x[((img * h + iy as usize) * w + ix as usize) * cin
                                        + g * cin_g
                                        + ci];
                                    acc += (i32::from(xv) - z) * i32::from(wt[[o, ci, ky, kx]]);
                                }
                            }
                        }
                        let j = g * np + o % cout_g;
                        // The zero point's correction is already inside `acc` here.
                        y[((img * oh + oy) * ow + ox) * cout + o] =
                            requantize(acc, 0, c.mult[j], c.add[j]);
                    }
                }
            }
        }
        y
    }

    /// Runs `case` on every kernel against the oracle. A case whose outputs mostly clamp (to 0
    /// or 255) tests little: `strict` fails on it, otherwise it is skipped and `false` returned.
    fn check(case: &Case, strict: bool) -> bool {
        let s = case.spec;
        let mut next = rng(case.seed);
        let wt = Array4::from_shape_fn(s.weight_shape(), |_| ((next() % 255) as i32 - 127) as i8);
        let cout = s.out_channels;
        let ws: Vec<f32> = (0..cout)
            .map(|_| 0.001 + (next() % 100) as f32 * 1e-4)
            .collect();
        let input = ActQuant {
            scale: 0.02,
            zero_point: case.zero_point,
        };
        // About the spread of the sums over 60 codes: half the outputs land inside 1..=254.
        let taps = (s.kernel_size.pow(2) * s.in_channels / s.groups) as f32;
        let out_scale = 0.02 * 0.006 * taps.sqrt() * 10731.0 / 60.0;
        // Within 100 codes of 0, every other channel's above: outputs that see only padding
        // (their sums are the bias alone) land inside the range in half the channels too.
        let bias: Vec<f32> = (0..cout)
            .map(|j| {
                let sign = if j % 2 == 0 { 1.0 } else { -1.0 };
                sign * (1 + next() % 100) as f32 * out_scale
            })
            .collect();
        let conv = QuantConv::new(wt.view(), &ws, &bias, s, input, out_scale).unwrap();
        let x: Vec<u8> = (0..case.n * case.h * case.w * s.in_channels)
            .map(|_| next() as u8)
            .collect();
        let want = oracle(&conv, &wt, &x, case.n, case.h, case.w);
        let spread = want.iter().filter(|&&v| v > 0 && v < 255).count();
        let exercised = want.len() < 64 || spread * 5 >= want.len();
        if !exercised && !strict {
            return false;
        }
        assert!(
            exercised,
            "the case exercises too few unclamped outputs: {spread} of {}",
            want.len()
        );
        for kernel in Int8Kernel::available() {
            // One thread: chunks of rows; many: the panels split over threads.
            for threads in [1, 64] {
                let mut y = vec![0xA5u8; want.len()];
                conv.run(kernel, &x, case.n, case.h, case.w, &mut y, threads)
                    .unwrap();
                if let Some(i) = (0..y.len()).find(|&i| y[i] != want[i]) {
                    panic!(
                        "{kernel}, {threads} threads, {:?} n {} {}x{} z {}: byte {i} = {}, want {}",
                        s, case.n, case.h, case.w, case.zero_point, y[i], want[i]
                    );
                }
            }
        }
        true
    }

    #[test]
    fn stride_padding_groups_and_zero_points_match_the_integer_oracle() {
        let specs = [
            ConvSpec::new(3, 48, 3, 2, 1, 1).unwrap(),
            ConvSpec::new(8, 16, 3, 1, 1, 1).unwrap(),
            ConvSpec::new(16, 40, 3, 2, 1, 2).unwrap(),
            ConvSpec::new(12, 12, 3, 1, 1, 4).unwrap(),
            ConvSpec::new(6, 33, 1, 1, 0, 1).unwrap(),
            ConvSpec::new(5, 70, 3, 1, 2, 1).unwrap(),
            ConvSpec::new(64, 96, 3, 2, 1, 2).unwrap(),
            // Sums of several chunks on the AMX path (96 = 2 x 48, 192 = 3 x 64 channels).
            ConvSpec::new(96, 40, 3, 1, 1, 1).unwrap(),
            ConvSpec::new(192, 24, 3, 2, 1, 1).unwrap(),
            // A kernel row wider than a tile row (3 x 22 > 64 bytes): gathered on AMX.
            ConvSpec::new(22, 16, 3, 1, 1, 1).unwrap(),
        ];
        for (i, spec) in specs.into_iter().enumerate() {
            // Rows wider than a tile (several pixel groups per row, the last one short).
            for (n, h, w) in [(1, 7, 7), (2, 9, 6), (1, 1, 1), (2, 3, 37)] {
                for zero_point in [0, 117] {
                    let case = Case {
                        spec,
                        n,
                        h,
                        w,
                        zero_point,
                        seed: (i * 100 + h) as u64,
                    };
                    check(&case, true);
                }
            }
        }
    }

    /// The in-place kernel stores every pixel of every block but the last, of the last only
    /// the first `len`: the rows past them (which the driver points at the last pixel again)
    /// are not written even when they point elsewhere.
    /// More pixels per job than one call of the in-place kernel takes (`direct::RUN` blocks),
    /// on one thread (four jobs of several calls each, the last call short) and on many (the
    /// columns split, every pixel in each job).
    #[test]
    fn jobs_of_several_kernel_calls_match_the_integer_oracle() {
        let (specs, (n, h, w)) = crate::direct::tests::several_calls();
        for (i, spec) in specs.into_iter().enumerate() {
            let case = Case {
                spec,
                n,
                h,
                w,
                zero_point: 117,
                seed: 900 + i as u64,
            };
            check(&case, true);
        }
    }

    #[test]
    fn the_last_block_stores_only_its_pixels() {
        if !simd::has_vnni() {
            return;
        }
        let spec = ConvSpec::new(16, 40, 3, 1, 1, 1).unwrap();
        let (h, w, cout) = (5, 5, 40);
        let mut next = rng(3);
        let wt =
            Array4::from_shape_fn(spec.weight_shape(), |_| ((next() % 255) as i32 - 127) as i8);
        let bias: Vec<f32> = (0..cout).map(|j| (j % 5) as f32 * 0.02).collect();
        let input = ActQuant {
            scale: 0.02,
            zero_point: 5,
        };
        let conv = QuantConv::new(wt.view(), &vec![0.002; cout], &bias, spec, input, 0.05).unwrap();
        let x: Vec<u8> = (0..h * w * 16).map(|_| next() as u8).collect();
        let mut want = vec![0u8; h * w * cout];
        conv.run(Int8Kernel::Scalar, &x, 1, h, w, &mut want, 1)
            .unwrap();
        let mut xp = vec![0u8; conv.padded_len(1, h, w)];
        conv.pad_input(&x, 1, h, w, &mut xp);
        crate::direct::tests::last_block_stores_only_its_pixels(&conv, &xp, w, (16, cout), &want);
    }

    /// Short padded buffers are refused with their names before the in-place kernel runs.
    #[test]
    fn the_in_place_kernel_refuses_short_buffers() {
        if !simd::has_vnni() {
            return;
        }
        let spec = ConvSpec::new(16, 8, 3, 1, 1, 1).unwrap();
        let wt = Array4::<i8>::zeros(spec.weight_shape());
        let conv = QuantConv::new(
            wt.view(),
            &[1.0; 8],
            &[0.0; 8],
            spec,
            ActQuant::relu(1.0),
            1.0,
        )
        .unwrap();
        let (n, h, w, q) = (2, 3, 4, 1);
        let xp = vec![0u8; conv.padded_len(n, h, w)];
        let want = n * (h + 2 * q) * (w + 2 * q) * 8;
        let kernel = Int8Kernel::Avx512Vnni;
        let mut y = vec![0u8; want - 1];
        let e = conv
            .run_padded(kernel, &xp, n, h, w, &mut y, q, 1)
            .unwrap_err();
        assert!(
            e.to_string().contains("padded int8 convolution output"),
            "{e}"
        );
        let mut y = vec![0u8; want];
        let e = conv
            .run_padded(kernel, &xp[..xp.len() - 1], n, h, w, &mut y, q, 1)
            .unwrap_err();
        assert!(
            e.to_string().contains("padded int8 convolution input"),
            "{e}"
        );
        conv.run_padded(kernel, &xp, n, h, w, &mut y, q, 1).unwrap();
    }

    /// Every kernel that reads padded inputs writes its outputs inside a border of `q` pixels
    /// (the next conv's padded input) exactly where the unpadded run puts them, and leaves the
    /// border alone: the tiles, the in-place VNNI kernel, each with one thread and many (the
    /// pixels split, or the columns at few pixels).
    #[test]
    fn padded_outputs_land_inside_their_border() {
        let specs = [
            ConvSpec::new(3, 48, 3, 2, 1, 1).unwrap(),
            ConvSpec::new(16, 40, 3, 2, 1, 2).unwrap(),
            ConvSpec::new(96, 40, 3, 1, 1, 1).unwrap(),
            ConvSpec::new(192, 24, 3, 2, 1, 1).unwrap(),
        ];
        let mut next = rng(7);
        for spec in specs {
            let cout = spec.out_channels;
            let wt =
                Array4::from_shape_fn(spec.weight_shape(), |_| ((next() % 255) as i32 - 127) as i8);
            let ws = vec![0.002; cout];
            let bias: Vec<f32> = (0..cout).map(|j| (j % 7) as f32 * 0.01).collect();
            let input = ActQuant {
                scale: 0.02,
                zero_point: 9,
            };
            let conv = QuantConv::new(wt.view(), &ws, &bias, spec, input, 0.05).unwrap();
            for (n, h, w) in [(2, 9, 6), (1, 3, 37), (3, 2, 2)] {
                let x: Vec<u8> = (0..n * h * w * spec.in_channels)
                    .map(|_| next() as u8)
                    .collect();
                let (oh, ow) = spec.output_size(h, w).unwrap();
                let mut xp = vec![0u8; conv.padded_len(n, h, w)];
                conv.pad_input(&x, n, h, w, &mut xp);
                for kernel in Int8Kernel::available() {
                    if !conv.reads_padded(kernel) {
                        continue;
                    }
                    for threads in [1, 64] {
                        let mut want = vec![0u8; n * oh * ow * cout];
                        conv.run(kernel, &x, n, h, w, &mut want, threads).unwrap();
                        assert!(
                            want.iter().any(|&v| v > 0 && v < 255),
                            "{spec:?}: all clamped"
                        );
                        for q in [1, 2] {
                            let (ohp, owp) = (oh + 2 * q, ow + 2 * q);
                            let mut y = vec![0xA5u8; n * ohp * owp * cout];
                            conv.run_padded(kernel, &xp, n, h, w, &mut y, q, threads)
                                .unwrap();
                            for (i, px) in y.chunks_exact(cout).enumerate() {
                                let (img, rest) = (i / (ohp * owp), i % (ohp * owp));
                                let (py, pxx) = (rest / owp, rest % owp);
                                let inside =
                                    (q..q + oh).contains(&py) && (q..q + ow).contains(&pxx);
                                let at = format!(
                                    "{kernel} {threads} threads q {q} {spec:?} {n}x{h}x{w} pixel {i}"
                                );
                                if inside {
                                    let j = ((img * oh + py - q) * ow + pxx - q) * cout;
                                    assert_eq!(px, &want[j..j + cout], "{at}");
                                } else {
                                    assert!(px.iter().all(|&v| v == 0xA5), "{at}: border written");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn random_convs_match_the_integer_oracle(
            cin_g in 1usize..9, cout_g in 1usize..40, groups in 1usize..4, k in prop::sample::select(vec![1usize, 3]),
            stride in 1usize..3, pad in 0usize..2, n in 1usize..3, h in 1usize..9, w in 1usize..9,
            zero_point in any::<u8>(), seed in any::<u64>()
        ) {
            let spec = ConvSpec::new(cin_g * groups, cout_g * groups, k, stride, pad.min(k / 2 + 1), groups).unwrap();
            prop_assume!(spec.output_size(h, w).is_ok());
            // Few output channels can clamp nearly every output at random: such draws are
            // replaced by others.
            prop_assume!(check(&Case { spec, n, h, w, zero_point, seed }, false));
        }
    }

    #[test]
    fn bad_parameters_are_refused_with_their_names() {
        let spec = ConvSpec::new(2, 2, 1, 1, 0, 1).unwrap();
        let wt = Array4::<i8>::zeros(spec.weight_shape());
        let q = ActQuant::relu(0.1);
        let e = QuantConv::new(wt.view(), &[1.0], &[0.0, 0.0], spec, q, 1.0).unwrap_err();
        assert!(e.to_string().contains("weight scales"), "{e}");
        let e = QuantConv::new(wt.view(), &[1.0, 0.0], &[0.0, 0.0], spec, q, 1.0).unwrap_err();
        assert!(
            e.to_string()
                .contains("weight scale must be finite and positive"),
            "{e}"
        );
        let e = QuantConv::new(wt.view(), &[1.0, 1.0], &[0.0, f32::NAN], spec, q, 1.0).unwrap_err();
        assert!(e.to_string().contains("bias"), "{e}");
        let mut bad = wt.clone();
        bad[[0, 0, 0, 0]] = i8::MIN;
        let e = QuantConv::new(bad.view(), &[1.0, 1.0], &[0.0, 0.0], spec, q, 1.0).unwrap_err();
        assert!(e.to_string().contains("-128"), "{e}");
        let e = QuantConv::new(
            wt.view(),
            &[1.0, 1.0],
            &[0.0, 0.0],
            spec,
            ActQuant::relu(-1.0),
            1.0,
        )
        .unwrap_err();
        assert!(e.to_string().contains("input scale"), "{e}");
        let conv = QuantConv::new(wt.view(), &[1.0, 1.0], &[0.0, 0.0], spec, q, 1.0).unwrap();
        let e = conv
            .run(Int8Kernel::Scalar, &[0; 7], 1, 2, 2, &mut [0; 8], 1)
            .unwrap_err();
        assert!(e.to_string().contains("input"), "{e}");
    }
}
