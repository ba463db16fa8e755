//! One int8 convolution: s8 weights packed once, u8 NHWC activations in and out, an im2col
//! block of u8 per chunk of output pixels (padding filled with the input's zero point, so the
//! zero point's correction is one constant per output channel), multiplied by the integer GEMM
//! with the requantization, bias and ReLU fused into its store.

use ndarray::ArrayView4;
use rayon::prelude::*;
use repvgg_math::ConvSpec;

use crate::aligned::AlignedBytes;
use crate::error::{CpuError, Result};
use crate::int8::gemm::{
    self, Int8Kernel, KG, MR, PanelJob, Requant, packed_rows_len, padded_k, padded_n,
};
use crate::int8::{ActQuant, amx};

/// Bytes of im2col rows one chunk gathers (they stay in L2 while every panel reads them).
const COL_BYTES: usize = 48 * 1024;

/// Pixel groups the AMX path gathers at a time for a conv of too few channels.
const GATHER_GROUPS: usize = 32;

/// Bytes of a kernel row the AMX gather copies as one fixed-size block (the stem's 3 x 3).
const SHORT_SPAN: usize = 16;

/// The largest multiple of four up to a tile row's bytes that divides `len`.
fn amx_chunk(len: usize) -> Option<usize> {
    (1..=amx::MAX_KC / KG)
        .rev()
        .map(|q| q * KG)
        .find(|kc| len.is_multiple_of(*kc))
}

/// The tile row of [`AmxMode::Rows`] for `spec`, if it fits that mode: one group, channels not
/// groups of four, a kernel row of at most a tile row's bytes (rounded up to four).
fn rows_kc(spec: &ConvSpec) -> Option<usize> {
    let kc = (spec.kernel_size * spec.in_channels).next_multiple_of(KG);
    (spec.groups == 1 && !spec.in_channels.is_multiple_of(KG) && kc <= amx::MAX_KC).then_some(kc)
}

/// Up to [`amx::MAX_ROWS`] output pixels of one tile: each one's first tap in the padded
/// input and its place in the output.
#[derive(Debug, Clone, Copy)]
struct Group {
    x: [usize; amx::MAX_ROWS],
    y: [usize; amx::MAX_ROWS],
    len: usize,
}

impl Group {
    /// The tile's pixels for [`amx::conv`], each row's output place `place(its place)`.
    fn pixels(&self, mut place: impl FnMut(usize) -> usize) -> amx::Pixels {
        let mut px = amx::Pixels {
            x: self.x[0],
            y: [0; amx::MAX_ROWS],
            len: self.len,
        };
        for (d, &at) in px.y.iter_mut().zip(&self.y).take(self.len) {
            *d = place(at);
        }
        px
    }
}

/// What every AMX job of one run shares.
struct Pass<'a> {
    conv: &'a QuantConv,
    mode: AmxMode,
    xp: &'a [u8],
    taps: &'a [usize],
    rows: usize,
    /// Bytes of a padded input row.
    row_bytes: usize,
}

impl Pass<'_> {
    /// The output columns of `panels` (per conv group) for the pixels of `chunk`, into `out`
    /// at the places of `pix` (its `y`; its `x` is `chunk`'s first taps).
    fn run(
        &self,
        chunk: &[Group],
        pix: &[amx::Pixels],
        panels: std::ops::Range<usize>,
        out: &mut [u8],
    ) {
        let s = &self.conv.spec;
        let (cin, cout) = (s.in_channels, s.out_channels);
        let (cin_g, cout_g) = (cin / s.groups, cout / s.groups);
        let (c0, c1) = (panels.start * gemm::NR, (panels.end * gemm::NR).min(cout_g));
        // The packed columns of the range (panels before the last are all NR wide) of group
        // `g`'s matrix, or of the kernel rows' matrix when given its steps `rows_kp`.
        let cols = |g: usize, rows_kp: Option<usize>| {
            let (wg, rq) = self.conv.group(g);
            let (wg, kp) = match rows_kp {
                Some(kp) => (self.conv.rows_w.as_i8(), kp),
                None => (wg, self.conv.kp),
            };
            let pc1 = c0
                + (panels.start..panels.end)
                    .map(|p| gemm::panel_width(cout_g, p))
                    .sum::<usize>();
            (
                &wg[c0 * kp..pc1 * kp],
                Requant {
                    comp: &rq.comp[c0..pc1],
                    mult: &rq.mult[c0..pc1],
                    add: &rq.add[c0..pc1],
                },
            )
        };
        let mut local = pix.to_vec();
        match self.mode {
            AmxMode::Direct { kc } => {
                for g in 0..s.groups {
                    let (b, rq) = cols(g, None);
                    for (d, px) in local.iter_mut().zip(pix) {
                        d.x = px.x + g * cin_g;
                        for (dy, &py) in d.y.iter_mut().zip(&px.y).take(px.len) {
                            *dy = py + g * cout_g;
                        }
                    }
                    let job = amx::Job {
                        x: self.xp,
                        taps: self.taps,
                        stride: s.stride * cin,
                        kc,
                        chunks: cin_g / kc,
                        rows: self.rows,
                        b,
                        n: c1 - c0,
                        rq,
                    };
                    let done = amx::conv(&job, &local, out);
                    debug_assert!(done, "the AMX path ran on a CPU without it");
                }
            }
            AmxMode::Rows { kc } => {
                let (b, rq) = cols(0, Some(s.kernel_size * kc));
                let job = amx::Job {
                    x: self.xp,
                    taps: self.taps,
                    stride: s.stride * cin,
                    kc,
                    chunks: 1,
                    rows: self.rows,
                    b,
                    n: c1 - c0,
                    rq,
                };
                let done = amx::conv(&job, pix, out);
                debug_assert!(done, "the AMX path ran on a CPU without it");
            }
            AmxMode::Gathered { kc } => {
                // Each pixel's taps gathered into one row of `kp` bytes (a kernel row's taps are
                // `k x in` consecutive bytes of the padded input); steps past the taps meet
                // zero weights.
                let kp = self.conv.kp;
                let (b, rq) = cols(0, None);
                let (k, rows) = (s.kernel_size, self.rows);
                let span = k * cin;
                let mut buf =
                    AlignedBytes::zeroed(GATHER_GROUPS.min(chunk.len()) * rows * kp + SHORT_SPAN);
                for (sub, psub) in chunk
                    .chunks(GATHER_GROUPS)
                    .zip(local.chunks_mut(GATHER_GROUPS))
                {
                    for (j, (g, px)) in sub.iter().zip(psub.iter_mut()).enumerate() {
                        for r in 0..g.len {
                            let dst = (j * rows + r) * kp;
                            for ky in 0..k {
                                let (from, to) = (g.x[r] + ky * self.row_bytes, dst + ky * span);
                                if span <= SHORT_SPAN {
                                    // One fixed-size copy; what it writes past the span the
                                    // next copy overwrites, or it meets zero weights.
                                    buf[to..to + SHORT_SPAN]
                                        .copy_from_slice(&self.xp[from..from + SHORT_SPAN]);
                                } else {
                                    buf[to..to + span].copy_from_slice(&self.xp[from..from + span]);
                                }
                            }
                        }
                        px.x = j * rows * kp;
                    }
                    let job = amx::Job {
                        x: &buf,
                        taps: &[0],
                        stride: kp,
                        kc,
                        chunks: kp / kc,
                        rows,
                        b,
                        n: c1 - c0,
                        rq,
                    };
                    let done = amx::conv(&job, psub, out);
                    debug_assert!(done, "the AMX path ran on a CPU without it");
                }
            }
        }
    }
}

/// How the AMX path reads a conv's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AmxMode {
    /// Tiles straight from the padded input, tap by tap, `kc` channels at a time (a conv
    /// group's channels are whole groups of four).
    Direct { kc: usize },
    /// Tiles straight from the padded input, one kernel row at a time: a row's `k` taps of
    /// `in` channels are consecutive bytes, read `kc` at a time (the span rounded up to four;
    /// the bytes past it meet zero weights). One group whose channels are not groups of four
    /// and whose kernel row fits a tile row (the stem's 3 x 3 x 3).
    Rows { kc: usize },
    /// The taps of each pixel gathered into rows first, `kc` steps at a time (one group whose
    /// channels are not groups of four and whose kernel row is wider than a tile row; narrow
    /// outputs).
    Gathered { kc: usize },
}

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
        let rows_w = rows_kc(&spec).map_or_else(AlignedBytes::default, |kc| {
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
        if kernel == Int8Kernel::Amx && self.amx_mode().is_some() {
            let mut xp = AlignedBytes::zeroed(self.padded_len(n, h, w));
            self.pad_input(x, n, h, w, &mut xp);
            return self.run_padded(&xp, n, h, w, y, 0, threads);
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

    /// How the AMX path runs this conv, or `None` when it does not (grouped convs whose
    /// groups' channels are not whole groups of four).
    pub(crate) fn amx_mode(&self) -> Option<AmxMode> {
        let cin_g = self.spec.in_channels / self.spec.groups;
        if cin_g.is_multiple_of(KG) {
            amx_chunk(cin_g).map(|kc| AmxMode::Direct { kc })
        } else if let Some(kc) = rows_kc(&self.spec) {
            Some(AmxMode::Rows { kc })
        } else if self.spec.groups == 1 {
            amx_chunk(self.kp).map(|kc| AmxMode::Gathered { kc })
        } else {
            None
        }
    }

    /// Bytes of the padded input [`QuantConv::run_padded`] reads for `n x h x w`: `[n][h + 2p]
    /// [w + 2p][in]` and the slack the last tile's rows read past its end.
    pub(crate) fn padded_len(&self, n: usize, h: usize, w: usize) -> usize {
        let s = &self.spec;
        let p = s.padding;
        n * (h + 2 * p) * (w + 2 * p) * s.in_channels
            + amx::MAX_ROWS * s.stride * s.in_channels
            + amx::MAX_KC
    }

    /// Copies `x` (`n x h x w x in`) into `xp` with this conv's padding, the border and the
    /// slack holding the input's zero point.
    pub(crate) fn pad_input(&self, x: &[u8], n: usize, h: usize, w: usize, xp: &mut [u8]) {
        let (p, c) = (self.spec.padding, self.spec.in_channels);
        let z = self.input.zero_point;
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let row = wp * c;
        let (body, slack) = xp.split_at_mut(n * hp * row);
        slack.fill(z);
        body.par_chunks_mut(row).enumerate().for_each(|(r, dst)| {
            let (img, yy) = (r / hp, r % hp);
            if yy < p || yy >= h + p {
                dst.fill(z);
                return;
            }
            let src = &x[((img * h + yy - p) * w) * c..((img * h + yy - p + 1) * w) * c];
            dst[..p * c].fill(z);
            dst[p * c..(p + w) * c].copy_from_slice(src);
            dst[(p + w) * c..].fill(z);
        });
    }

    /// Runs on `xp`, the input padded by [`QuantConv::pad_input`] (or written so), into `y`
    /// stored with a border of `q` pixels (`n x (oh + 2q) x (ow + 2q) x out`; the border is not
    /// written), on the AMX tiles.
    ///
    /// # Errors
    /// [`CpuError::Shape`] when `xp` or `y` are too short; [`CpuError::Invalid`] when the conv
    /// does not fit the AMX path ([`QuantConv::amx_mode`]) or the CPU lacks it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_padded(
        &self,
        xp: &[u8],
        n: usize,
        h: usize,
        w: usize,
        y: &mut [u8],
        q: usize,
        threads: usize,
    ) -> Result<()> {
        let s = &self.spec;
        let Some(mode) = self.amx_mode() else {
            return Err(CpuError::Invalid(format!(
                "the AMX int8 path needs whole groups of four input channels per conv group, \
                 found {} in each of {} groups",
                s.in_channels / s.groups,
                s.groups
            )));
        };
        let (oh, ow) = s.output_size(h, w)?;
        let (cin, cout, p, k) = (s.in_channels, s.out_channels, s.padding, s.kernel_size);
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let (ohp, owp) = (oh + 2 * q, ow + 2 * q);
        for (what, len, want) in [
            ("padded int8 input", xp.len(), self.padded_len(n, h, w)),
            ("padded int8 output", y.len(), n * ohp * owp * cout),
        ] {
            if len < want {
                return Err(CpuError::Shape {
                    what: what.into(),
                    expected: vec![want],
                    found: vec![len],
                });
            }
        }
        if n * oh * ow == 0 {
            return Ok(());
        }
        let m = n * oh * ow;
        // Narrow outputs (the last stage's 7 x 7) fill whole tiles when gathered.
        let mode = match mode {
            AmxMode::Direct { .. } | AmxMode::Rows { .. }
                if s.groups == 1 && 2 * ow <= amx::MAX_ROWS && oh > 1 =>
            {
                match amx_chunk(self.kp) {
                    Some(kc) => AmxMode::Gathered { kc },
                    None => mode,
                }
            }
            m => m,
        };
        let at_in = |img: usize, oy: usize, ox: usize| {
            ((img * hp + oy * s.stride) * wp + ox * s.stride) * cin
        };
        let at_out =
            |img: usize, oy: usize, ox: usize| ((img * ohp + oy + q) * owp + q + ox) * cout;
        let mut groups = Vec::new();
        let rows = match mode {
            AmxMode::Direct { .. } | AmxMode::Rows { .. } => {
                // Each output row in `per_row` runs of `rows` pixels (the last shorter): a
                // tile's rows are `stride x in` bytes apart in the input.
                let per_row = ow.div_ceil(amx::MAX_ROWS);
                let rows = ow.div_ceil(per_row);
                for img in 0..n {
                    for oy in 0..oh {
                        for ox in (0..ow).step_by(rows) {
                            let len = rows.min(ow - ox);
                            let mut g = Group {
                                x: [0; amx::MAX_ROWS],
                                y: [0; amx::MAX_ROWS],
                                len,
                            };
                            for r in 0..len {
                                g.x[r] = at_in(img, oy, ox + r);
                                g.y[r] = at_out(img, oy, ox + r);
                            }
                            groups.push(g);
                        }
                    }
                }
                rows
            }
            AmxMode::Gathered { .. } => {
                // Runs of consecutive output pixels across rows and images.
                let rows = amx::MAX_ROWS.min(m);
                groups.reserve(m.div_ceil(rows));
                // The pixel's place counted along (no division per pixel).
                let (mut img, mut oy, mut ox) = (0, 0, 0);
                for p0 in (0..m).step_by(rows) {
                    let len = rows.min(m - p0);
                    let mut g = Group {
                        x: [0; amx::MAX_ROWS],
                        y: [0; amx::MAX_ROWS],
                        len,
                    };
                    for r in 0..len {
                        g.x[r] = at_in(img, oy, ox);
                        g.y[r] = at_out(img, oy, ox);
                        ox += 1;
                        if ox == ow {
                            ox = 0;
                            oy += 1;
                            if oy == oh {
                                oy = 0;
                                img += 1;
                            }
                        }
                    }
                    groups.push(g);
                }
                rows
            }
        };
        let taps: Vec<usize> = match mode {
            // Each kernel row's first tap.
            AmxMode::Rows { .. } => (0..k).map(|ky| ky * wp * cin).collect(),
            _ => (0..k * k).map(|t| ((t / k) * wp + t % k) * cin).collect(),
        };
        let pass = Pass {
            conv: self,
            mode,
            xp,
            taps: &taps,
            rows,
            row_bytes: wp * cin,
        };
        let pairs = groups.len().div_ceil(2);
        let np = gemm::panels(cout / s.groups);
        // Few pixels (late layers at small batches): the panels are split too, so that the
        // threads share the work evenly and each reads only its part of the weights; each job
        // writes its own block, copied into place after.
        let splits = if s.groups == 1 && threads > 1 && pairs < 4 * threads {
            np.min((4 * threads).div_ceil(pairs))
        } else {
            1
        };
        if splits > 1 {
            let per = np.div_ceil(splits);
            let jobs: Vec<(usize, usize)> = (0..pairs)
                .flat_map(|pr| (0..np).step_by(per).map(move |p0| (pr, p0)))
                .collect();
            let blocks: Vec<(usize, usize, Vec<u8>)> = jobs
                .into_par_iter()
                .map(|(pr, p0)| {
                    let chunk = &groups[2 * pr..(2 * pr + 2).min(groups.len())];
                    let p1 = (p0 + per).min(np);
                    let (c0, c1) = (p0 * gemm::NR, (p1 * gemm::NR).min(cout));
                    let cols = c1 - c0;
                    let mut out = vec![0u8; chunk.iter().map(|g| g.len).sum::<usize>() * cols];
                    // Rows of the block, in order.
                    let mut row = 0;
                    let pix: Vec<amx::Pixels> = chunk
                        .iter()
                        .map(|g| {
                            g.pixels(|_| {
                                row += 1;
                                (row - 1) * cols
                            })
                        })
                        .collect();
                    pass.run(chunk, &pix, p0..p1, &mut out);
                    (2 * pr, c0, out)
                })
                .collect();
            for (first, c0, out) in blocks {
                let cols = out.len() / groups[first..].iter().take(2).map(|g| g.len).sum::<usize>();
                let places = groups[first..]
                    .iter()
                    .take(2)
                    .flat_map(|g| g.y[..g.len].iter());
                for (&at, src) in places.zip(out.chunks_exact(cols)) {
                    y[at + c0..at + c0 + cols].copy_from_slice(src);
                }
            }
            return Ok(());
        }
        // Jobs of whole pairs of groups, a few per thread, each with the output bytes its
        // pixels own.
        let jobs = pairs.min(4 * threads.max(1)).max(1);
        let per_job = pairs.div_ceil(jobs) * 2;
        let mut parts = Vec::with_capacity(jobs);
        let mut rest = &mut y[..];
        let mut at = 0;
        for chunk in groups.chunks(per_job) {
            let (first, last) = (&chunk[0], &chunk[chunk.len() - 1]);
            let (start, end) = (first.y[0], last.y[last.len - 1] + cout);
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(start - at);
            let (mine, tail) = tail.split_at_mut(end - start);
            rest = tail;
            at = end;
            parts.push((chunk, start, mine));
        }
        parts.into_par_iter().for_each(|(chunk, y0, out)| {
            let pix: Vec<amx::Pixels> = chunk.iter().map(|g| g.pixels(|at| at - y0)).collect();
            pass.run(chunk, &pix, 0..np, out);
        });
        Ok(())
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
