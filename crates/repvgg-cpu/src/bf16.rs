//! Bf16 inference on the CPU: bf16 weights and activations, f32 sums, on Intel AMX tiles
//! (`tdpbf16ps`, AMX-BF16).
//!
//! * [`Bf16Conv`]: one conv with its weights rounded to bf16 and packed for the tiles, its bias
//!   in f32 and ReLU fused into the store, which rounds each output to bf16 (to nearest, ties to
//!   even). It runs through the same AMX driver as the int8 convs, on an input stored with its
//!   padding, and writes straight into the next conv's padded layout.
//! * [`Bf16Network`]: a chain of such convs (a deployed RepVGG without squeeze-excite), its f32
//!   input rounded to bf16 on entry, then the global average pool and the linear layer in f32.
//!
//! Error: each product of two bf16 values is exact in f32, and each sum is accumulated in f32,
//! so a conv's output differs from the exact conv of its bf16 inputs by at most one bf16
//! rounding (relative 2^-8) plus the f32 accumulation's error; the inputs' own rounding to bf16
//! adds 2^-8 relative per value. The tests check each conv against that bound.

use std::sync::{Mutex, PoisonError};

use ndarray::{Array2, ArrayView2, ArrayView4};
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;
use repvgg_math::ConvSpec;

use crate::aligned::{AlignedBytes, AlignedVec};
use crate::amx::{self, Epilogue, Op};
use crate::bf16_simd;
use crate::bf16_winograd;
use crate::direct::{self, DirectConv, Reads};
use crate::error::{CpuError, Result};
use crate::int8::{NR, clear_border, padded_n, panel_width, panels};
use crate::network::{Laps, OpTime};
use crate::tiled::{self, TileConv};

/// `x` rounded to bf16 (to nearest, ties to even; NaN stays a quiet NaN).
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let odd = (bits >> 16) & 1;
    (bits.wrapping_add(0x7FFF + odd) >> 16) as u16
}

/// The f32 value of bf16 bits `b` (exact).
#[inline]
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// An instruction set the bf16 convs run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bf16Kernel {
    /// Intel AMX tiles (`tdpbf16ps`): the implicit GEMM on padded activations.
    Amx,
    /// AVX512-BF16 (`vdpbf16ps`): blocks of 8 output pixels, their taps gathered, times the
    /// weight panels (AMD Zen 4 and 5, Intel Cooper Lake).
    Avx512Bf16,
}

impl Bf16Kernel {
    /// Whether this CPU (and OS, for the tiles) can run it.
    pub fn is_available(self) -> bool {
        match self {
            Self::Amx => amx::available(Op::Bf16),
            Self::Avx512Bf16 => crate::bf16_simd::available(),
        }
    }

    /// The kernels this CPU runs, fastest first.
    pub fn available() -> Vec<Self> {
        [Self::Amx, Self::Avx512Bf16]
            .into_iter()
            .filter(|k| k.is_available())
            .collect()
    }

    /// The fastest kernel this CPU runs, if any.
    pub fn detect() -> Option<Self> {
        Self::available().first().copied()
    }

    /// The CPU features it needs, as `/proc/cpuinfo` names them.
    pub fn features(self) -> &'static str {
        match self {
            Self::Amx => "amx_tile, amx_bf16, avx512f, avx512bw",
            Self::Avx512Bf16 => "avx512f, avx512bw, avx512_bf16",
        }
    }
}

impl std::str::FromStr for Bf16Kernel {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "amx" | "amx-bf16" => Ok(Self::Amx),
            "avx512-bf16" | "avx512bf16" | "avx512" => Ok(Self::Avx512Bf16),
            _ => Err(format!(
                "`{s}` is not a bf16 kernel: expected amx or avx512-bf16"
            )),
        }
    }
}

impl std::fmt::Display for Bf16Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Amx => "amx",
            Self::Avx512Bf16 => "avx512-bf16",
        })
    }
}

/// Whether this CPU runs the bf16 convs: AMX-BF16 tiles (with the OS's grant of the tile
/// state) or AVX512-BF16.
pub fn available() -> bool {
    Bf16Kernel::detect().is_some()
}

/// Why the bf16 convs do not run here, naming what this CPU or OS lacks; `None` when they do.
pub fn unavailable_reason() -> Option<String> {
    if available() {
        return None;
    }
    let lacks = amx::missing(Op::Bf16);
    let tiles = if lacks.is_empty() {
        "Intel AMX-BF16, whose tile state the operating system did not grant this process \
         (Linux 5.16 or later grants it)"
            .to_string()
    } else {
        format!("Intel AMX-BF16 (lacking {})", lacks.join(", "))
    };
    Some(format!(
        "the bf16 kernels need {tiles}, or AVX512-BF16 ({}); this CPU has neither",
        Bf16Kernel::Avx512Bf16.features()
    ))
}

/// Refuses a kernel this CPU lacks, naming its features.
fn check_kernel(kernel: Bf16Kernel) -> Result<()> {
    if kernel.is_available() {
        Ok(())
    } else {
        Err(CpuError::Invalid(format!(
            "the {kernel} bf16 kernel needs the CPU features {}, which this CPU lacks",
            kernel.features()
        )))
    }
}

/// Steps of the sum packed together for one column: two bf16 values make the four bytes of a
/// tile column's step.
const PAIR: usize = 2;

/// Packs the `k x n` matrix `f(row, col)` rounded to bf16 as `[panel][k / 2][width][2]` (the
/// int8 panels' widths), zero-padded to whole pairs of steps and whole panels.
pub(crate) fn pack(k: usize, n: usize, f: impl Fn(usize, usize) -> f32) -> Vec<u16> {
    crate::int8::pack_steps(k, n, PAIR, |r, c| to_bf16(f(r, c)))
}

fn aligned(v: &[u16]) -> AlignedBytes {
    let mut a = AlignedBytes::zeroed(2 * v.len());
    a.copy_from_slice(bytemuck::cast_slice(v));
    a
}

/// A convolution with bf16 weights, an f32 bias and ReLU, reading and writing bf16 NHWC
/// activations stored with their padding.
#[derive(Debug, Clone)]
pub struct Bf16Conv {
    spec: ConvSpec,
    /// Bytes of one packed column of a group's matrix.
    kp: usize,
    /// Per group: the packed `[(ky, kx, ci) x out_g]` matrix.
    w: AlignedBytes,
    /// For the AMX rows mode (the stem): the packed `[(ky, step) x out]` matrix, `step`
    /// running over the kernel row's `(kx, ci)` and then zeros up to the tile row; else empty.
    rows_w: AlignedBytes,
    /// Per group, [`padded_n`]`(out_g)` values.
    bias: Vec<f32>,
    /// On CPUs with AVX512-BF16, for 3x3 stride-1 convs: the Winograd F(2x2, 3x3) weights.
    winograd: Option<AlignedBytes>,
}

impl Bf16Conv {
    /// Prepares `weight` (`[out, in / groups, k, k]`, f32, rounded to bf16 here) and `bias`
    /// (kept in f32): the output is `bf16(relu(conv(x) + bias))`.
    ///
    /// # Errors
    /// [`CpuError::Shape`] when the weight or bias do not match `spec`; [`CpuError::Invalid`]
    /// for a non-finite weight or bias, or a grouped conv whose groups' channels are odd (the
    /// tiles read channels in pairs).
    pub fn new(weight: ArrayView4<'_, f32>, bias: &[f32], spec: ConvSpec) -> Result<Self> {
        spec.validate()?;
        spec.check_weight(&weight)?;
        let cout = spec.out_channels;
        if bias.len() != cout {
            return Err(CpuError::Shape {
                what: "bf16 convolution bias".into(),
                expected: vec![cout],
                found: vec![bias.len()],
            });
        }
        if weight.iter().chain(bias).any(|v| !v.is_finite()) {
            return Err(CpuError::Invalid(
                "bf16 convolution weight or bias holds NaN or inf".into(),
            ));
        }
        let (groups, k) = (spec.groups, spec.kernel_size);
        let (cin_g, cout_g) = (spec.in_channels / groups, cout / groups);
        let kg = k * k * cin_g;
        let np = padded_n(cout_g);
        let mut w = Vec::with_capacity(groups * kg.next_multiple_of(PAIR) * np);
        let mut padded_bias = vec![0.0; groups * np];
        for g in 0..groups {
            // Row (ky * k + kx) * cin_g + ci of the matrix: a tap's channels are consecutive.
            w.extend(pack(kg, cout_g, |r, j| {
                let (tap, ci) = (r / cin_g, r % cin_g);
                weight[[g * cout_g + j, ci, tap / k, tap % k]]
            }));
            padded_bias[g * np..g * np + cout_g].copy_from_slice(&bias[g * cout_g..][..cout_g]);
        }
        let rows_w = tiled::rows_kc(&spec, 2).map_or_else(AlignedBytes::default, |kc| {
            let (span, step) = (k * spec.in_channels, kc / 2);
            aligned(&pack(k * step, cout, |r, j| {
                let (ky, t) = (r / step, r % step);
                if t < span {
                    weight[[j, t % spec.in_channels, ky, t / spec.in_channels]]
                } else {
                    0.0
                }
            }))
        });
        let conv = Self {
            spec,
            kp: 2 * kg.next_multiple_of(PAIR),
            w: aligned(&w),
            rows_w,
            bias: padded_bias,
            winograd: (bf16_simd::available() && bf16_winograd::applies(&spec, 2, 2))
                .then(|| bf16_winograd::pack(&weight, &spec)),
        };
        if tiled::mode(&conv).is_none() {
            return Err(CpuError::Invalid(format!(
                "bf16 convolution {spec:?}: the tiles read channels in pairs, and its {groups} \
                 groups have {cin_g} input channels each"
            )));
        }
        Ok(conv)
    }

    /// The conv's channels, kernel, stride, padding and groups.
    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    /// Runs on `x` (NHWC bf16 bits, `n x h x w x in`) into `y` (NHWC bf16 bits, `n x oh x ow x
    /// out`) with `kernel`, on rayon's current pool of `threads`.
    ///
    /// # Errors
    /// [`CpuError::Shape`] when `x` or `y` do not hold the sizes the geometry needs;
    /// [`CpuError::Invalid`] for a kernel this CPU lacks, naming its features.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        kernel: Bf16Kernel,
        x: &[u16],
        n: usize,
        h: usize,
        w: usize,
        y: &mut [u16],
        threads: usize,
    ) -> Result<()> {
        check_kernel(kernel)?;
        let s = &self.spec;
        let (oh, ow) = s.output_size(h, w)?;
        for (what, len, want) in [
            ("bf16 convolution input", x.len(), n * h * w * s.in_channels),
            (
                "bf16 convolution output",
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
        let mut xp = AlignedBytes::zeroed(tiled::padded_len(self, n, h, w));
        let x: &[u8] = bytemuck::cast_slice(x);
        tiled::pad(x, (n, h, w), s.in_channels * 2, s.padding, 0, &mut xp);
        let out: &mut [u8] = bytemuck::cast_slice_mut(y);
        self.run_padded(kernel, &xp, n, h, w, out, 0, threads)
    }

    /// Runs on `xp`, the input stored with this conv's padding (border and slack zero, as
    /// [`tiled::padded_len`] sizes it), into `y` stored with a border of `q` pixels (not
    /// written), with `kernel`.
    #[allow(clippy::too_many_arguments)]
    fn run_padded(
        &self,
        kernel: Bf16Kernel,
        xp: &[u8],
        n: usize,
        h: usize,
        w: usize,
        y: &mut [u8],
        q: usize,
        threads: usize,
    ) -> Result<()> {
        match kernel {
            Bf16Kernel::Amx => tiled::run_padded(self, xp, n, h, w, y, q, threads),
            Bf16Kernel::Avx512Bf16 if self.winograd_on(kernel, h, w) => {
                let u = self.winograd.as_deref().unwrap_or_default();
                bf16_winograd::run(&self.spec, u, &self.bias, xp, (n, h, w), y, q, threads)
            }
            Bf16Kernel::Avx512Bf16 => match Reads::of(&self.spec, 2, w + 2 * self.spec.padding) {
                Some(reads) => direct::run_padded(self, &reads, xp, (n, h, w), y, q, threads),
                None => self.run_blocks(xp, n, h, w, y, q),
            },
        }
    }

    /// The AVX512-BF16 path of the convs [`direct`] cannot read in place (one group of odd
    /// channels whose kernel row exceeds a tile row): each output row's pixels in blocks of
    /// [`bf16_simd::MR`], their taps gathered from the padded input into the packed rows
    /// [`bf16_simd::block`] reads, times every weight panel; output rows in parallel.
    #[allow(clippy::too_many_arguments)]
    fn run_blocks(
        &self,
        xp: &[u8],
        n: usize,
        h: usize,
        w: usize,
        y: &mut [u8],
        q: usize,
    ) -> Result<()> {
        use crate::bf16_simd::{self, MR};
        let s = &self.spec;
        let (oh, ow) = s.output_size(h, w)?;
        let (cin, cout, k, st, p) = (
            s.in_channels,
            s.out_channels,
            s.kernel_size,
            s.stride,
            s.padding,
        );
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let (ohp, owp) = (oh + 2 * q, ow + 2 * q);
        for (what, len, want) in [
            ("input", xp.len(), tiled::padded_len(self, n, h, w)),
            ("output", y.len(), n * ohp * owp * cout * 2),
        ] {
            if len < want {
                return Err(CpuError::Shape {
                    what: format!("padded bf16 {what}"),
                    expected: vec![want],
                    found: vec![len],
                });
            }
        }
        let xv: &[u16] = bytemuck::try_cast_slice(&xp[..xp.len() / 2 * 2])
            .map_err(|e| CpuError::Invalid(format!("padded bf16 input: {e}")))?;
        let yv: &mut [u16] = bytemuck::try_cast_slice_mut(&mut y[..n * ohp * owp * cout * 2])
            .map_err(|e| CpuError::Invalid(format!("padded bf16 output: {e}")))?;
        let wv: &[u16] = bytemuck::try_cast_slice(&self.w[..])
            .map_err(|e| CpuError::Invalid(format!("bf16 weights: {e}")))?;
        let (cin_g, cout_g) = (cin / s.groups, cout / s.groups);
        let kg = k * k * cin_g;
        // Values of one packed column, and packed columns of a group.
        let (kpe, np) = (self.kp / 2, padded_n(cout_g));
        if owp * cout == 0 {
            return Ok(());
        }
        yv.par_chunks_mut(owp * cout).enumerate().for_each_init(
            || (vec![0u16; kg], vec![0u16; kpe * MR]),
            |(line, a), (r, row)| {
                let (img, yy) = (r / ohp, r % ohp);
                if yy < q || yy >= oh + q {
                    return;
                }
                let oy = yy - q;
                for x0 in (0..ow).step_by(MR) {
                    let len = MR.min(ow - x0);
                    for g in 0..s.groups {
                        // The pixels' taps gathered into `a`; rows past `len` and steps past
                        // the taps stay zero.
                        a.fill(0);
                        for rr in 0..len {
                            let ox = x0 + rr;
                            for tap in 0..k * k {
                                let (ky, kx) = (tap / k, tap % k);
                                let at = ((img * hp + oy * st + ky) * wp + ox * st + kx) * cin
                                    + g * cin_g;
                                line[tap * cin_g..(tap + 1) * cin_g]
                                    .copy_from_slice(&xv[at..at + cin_g]);
                            }
                            for (kk, &v) in line.iter().enumerate() {
                                a[(kk / 2) * 2 * MR + rr * 2 + kk % 2] = v;
                            }
                        }
                        for pp in 0..panels(cout_g) {
                            let wd = panel_width(cout_g, pp);
                            let cols = wd.min(cout_g - pp * NR);
                            let b0 = g * kpe * np + pp * NR * kpe;
                            let b = &wv[b0..b0 + kpe * wd];
                            let bias = &self.bias[g * np + pp * NR..g * np + pp * NR + wd];
                            let Some(out) = bf16_simd::block(a, b, wd, bias) else {
                                debug_assert!(false, "the AVX512-BF16 path ran without it");
                                return;
                            };
                            for (rr, o) in out.iter().enumerate().take(len) {
                                let at = (q + x0 + rr) * cout + g * cout_g + pp * NR;
                                row[at..at + cols].copy_from_slice(&o[..cols]);
                            }
                        }
                    }
                }
            },
        );
        Ok(())
    }

    /// Multiply-adds of one run.
    pub fn macs(&self, n: usize, h: usize, w: usize) -> Result<u64> {
        Ok(n as u64 * self.spec.macs(h, w)?)
    }

    /// Whether a run on `kernel` of an `h x w` input takes the Winograd F(2x2, 3x3) path (the
    /// AVX512-BF16 kernel, a 3x3 stride-1 conv, an output of whole 2 x 2 tiles).
    pub fn winograd_on(&self, kernel: Bf16Kernel, h: usize, w: usize) -> bool {
        kernel == Bf16Kernel::Avx512Bf16
            && self.winograd.is_some()
            && bf16_winograd::applies(&self.spec, h, w)
    }
}

impl TileConv for Bf16Conv {
    const ELEM: usize = 2;
    const NAME: &'static str = "bf16";

    fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    fn kp(&self) -> usize {
        self.kp
    }

    fn columns(&self, g: usize, rows: bool) -> (&[u8], Epilogue<'_>) {
        let np = padded_n(self.spec.out_channels / self.spec.groups);
        let bias = &self.bias[g * np..(g + 1) * np];
        let w = if rows {
            &self.rows_w[..]
        } else {
            &self.w[g * self.kp * np..(g + 1) * self.kp * np]
        };
        (w, Epilogue::Bf16 { bias })
    }
}

impl DirectConv for Bf16Conv {
    fn blocks(
        &self,
        reads: &Reads,
        xp: &[u8],
        g: usize,
        cols: std::ops::Range<usize>,
        xs: &[[usize; crate::direct::MR]],
        ys: &[[usize; crate::direct::MR]],
        len: usize,
        out: &mut [u8],
    ) -> bool {
        let (b, epi) = self.columns(g, reads.rows);
        let Epilogue::Bf16 { bias } = epi else {
            return false;
        };
        let job = bf16_simd::Job {
            x: xp,
            taps: &reads.taps,
            seg: reads.seg,
            b,
            n: self.spec.out_channels / self.spec.groups,
            bias,
            cols,
            store: bf16_simd::Store::Bf16Relu,
        };
        bf16_simd::direct(&job, xs, ys, len, out)
    }
}

/// Convs in a chain, each reading the previous one's bf16 output, then global average pooling
/// in f32 and a linear layer with bf16 weights and f32 sums. `Send + Sync`.
#[derive(Debug)]
pub struct Bf16Network {
    in_channels: usize,
    convs: Vec<Bf16Conv>,
    classes: usize,
    /// `[classes, C]` bf16 bits: the linear layer's weights for fewer than
    /// [`crate::head::GEMM_BATCH`] images (each class row read once for all of them).
    head_rows: Vec<u16>,
    /// The same weights as f32 values, `[C, classes]` packed in the f32 GEMM's panels, from
    /// [`crate::head::GEMM_BATCH`] images on.
    head_wt: AlignedVec,
    head_bias: Vec<f32>,
    /// Ones: the GEMM epilogue's scale.
    unit_scale: Vec<f32>,
    kernel: Bf16Kernel,
    pool: Option<rayon::ThreadPool>,
    /// Two activation buffers per concurrent run, kept between runs.
    buffers: Mutex<Vec<[AlignedBytes; 2]>>,
}

/// Options of a [`Bf16Network`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bf16Options {
    /// Worker threads; `None` uses rayon's global pool.
    pub threads: Option<usize>,
    /// The convs' instruction set; `None` takes the fastest this CPU has.
    pub kernel: Option<Bf16Kernel>,
}

impl Bf16Network {
    /// A network of `convs` in order on an input of `in_channels`, then the head: the linear
    /// layer's `weight [classes, C]` (rounded to bf16, as the convs' weights are) and f32
    /// `bias`.
    ///
    /// # Errors
    /// [`CpuError::Invalid`] for no convs, a CPU without the kernel (or any bf16 kernel; the
    /// error names what it lacks) or a non-finite head; [`CpuError::Shape`] for channels that do
    /// not chain.
    pub fn new(
        in_channels: usize,
        convs: Vec<Bf16Conv>,
        head_weight: ArrayView2<'_, f32>,
        head_bias: &[f32],
        opts: Bf16Options,
    ) -> Result<Self> {
        let kernel = match opts.kernel {
            Some(k) => {
                check_kernel(k)?;
                k
            }
            None => Bf16Kernel::detect()
                .ok_or_else(|| CpuError::Invalid(unavailable_reason().unwrap_or_default()))?,
        };
        if convs.is_empty() {
            return Err(CpuError::Invalid(
                "a bf16 network needs at least one conv".into(),
            ));
        }
        let mut c = in_channels;
        for (i, conv) in convs.iter().enumerate() {
            if conv.spec.in_channels != c {
                return Err(CpuError::Shape {
                    what: format!("bf16 conv {i} input channels"),
                    expected: vec![c],
                    found: vec![conv.spec.in_channels],
                });
            }
            c = conv.spec.out_channels;
        }
        let classes = head_weight.shape()[0];
        if head_weight.shape()[1] != c || head_bias.len() != classes {
            return Err(CpuError::Shape {
                what: "classifier weight and bias".into(),
                expected: vec![classes, c, classes],
                found: vec![
                    head_weight.shape()[0],
                    head_weight.shape()[1],
                    head_bias.len(),
                ],
            });
        }
        if head_weight.iter().chain(head_bias).any(|v| !v.is_finite()) {
            return Err(CpuError::Invalid(
                "classifier weight or bias holds NaN or inf".into(),
            ));
        }
        let head_rows: Vec<u16> = head_weight.iter().map(|&v| to_bf16(v)).collect();
        if head_rows.iter().any(|&v| !from_bf16(v).is_finite()) {
            return Err(CpuError::Invalid(
                "classifier weight outside bf16's range (magnitudes up to about 3.39e38)".into(),
            ));
        }
        let mut head_wt = AlignedVec::filled(crate::gemm::packed_len(c, classes), 0.0);
        crate::gemm::pack_into(&mut head_wt, c, classes, |ci, j| {
            from_bf16(head_rows[j * c + ci])
        });
        Ok(Self {
            in_channels,
            convs,
            classes,
            head_rows,
            head_wt,
            head_bias: head_bias.to_vec(),
            unit_scale: vec![1.0; classes],
            kernel,
            pool: crate::builder::thread_pool(opts.threads)?,
            buffers: Mutex::new(Vec::new()),
        })
    }

    /// The convs' instruction set.
    pub fn kernel(&self) -> Bf16Kernel {
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
    pub fn convs(&self) -> &[Bf16Conv] {
        &self.convs
    }

    /// Multiply-adds of a run of `n x h x w` (convs and head).
    pub fn macs(&self, n: usize, mut h: usize, mut w: usize) -> Result<u64> {
        let mut total = 0;
        for c in &self.convs {
            total += c.macs(n, h, w)?;
            (h, w) = c.spec.output_size(h, w)?;
        }
        Ok(total + (n * self.last_channels() * self.classes) as u64)
    }

    fn last_channels(&self) -> usize {
        self.convs
            .last()
            .map_or(self.in_channels, |c| c.spec.out_channels)
    }

    /// Bytes of bf16 activations alive at the peak of a run of `n x h x w` (the input and
    /// output of the widest conv, stored with their padding).
    pub fn activation_bytes(&self, n: usize, mut h: usize, mut w: usize) -> Result<u64> {
        let mut peak = 0;
        for (i, c) in self.convs.iter().enumerate() {
            let (oh, ow) = c.spec.output_size(h, w)?;
            let output = self
                .convs
                .get(i + 1)
                .map_or(n * oh * ow * c.spec.out_channels * 2, |next| {
                    tiled::padded_len(next, n, oh, ow)
                });
            peak = peak.max(tiled::padded_len(c, n, h, w) + output);
            (h, w) = (oh, ow);
        }
        Ok(peak as u64)
    }

    /// Logits `[N, classes]` of an NCHW f32 batch.
    ///
    /// # Errors
    /// [`CpuError::Shape`] for a batch of another channel count or an image too small for the
    /// convs; [`CpuError::Invalid`] for an input holding NaN or inf.
    pub fn run(&self, x: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
        self.run_inner(x, None)
    }

    /// One run of `x`, timed step by step: the input's rounding to bf16, each conv (its shape,
    /// output size; flops counted as a direct conv's, 2 per multiply-add), and the head.
    ///
    /// # Errors
    /// As [`Bf16Network::run`].
    pub fn profile(&self, x: ArrayView4<'_, f32>) -> Result<Vec<OpTime>> {
        let mut times = Vec::with_capacity(self.convs.len() + 2);
        self.run_inner(x, Some(&mut times))?;
        Ok(times)
    }

    fn run_inner(
        &self,
        x: ArrayView4<'_, f32>,
        prof: Option<&mut Vec<OpTime>>,
    ) -> Result<Array2<f32>> {
        crate::pool::run(self.pool.as_ref(), || self.run_here(x, prof))
    }

    fn run_here(
        &self,
        x: ArrayView4<'_, f32>,
        prof: Option<&mut Vec<OpTime>>,
    ) -> Result<Array2<f32>> {
        let mut laps = Laps::new(prof);
        let mut lap = |what: &dyn Fn() -> (String, u64)| laps.lap(what);
        let (n, c, mut h, mut w) = x.dim();
        if c != self.in_channels {
            return Err(CpuError::Shape {
                what: "bf16 network input".into(),
                expected: vec![n, self.in_channels, h, w],
                found: vec![n, c, h, w],
            });
        }
        let first = &self.convs[0];
        first.spec.output_size(h, w)?;
        let threads = rayon::current_num_threads();
        let [mut a, mut b] = self
            .buffers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default();
        let p = first.spec.padding;
        a.resize(tiled::padded_len(first, n, h, w));
        clear_border(&mut a, n, h, w, c * 2, p);
        if let Err(e) = round_padded(x, &mut a, p) {
            // The buffers stay usable: every run writes what it reads.
            self.buffers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push([a, b]);
            return Err(e);
        }
        lap(&|| ("round input to bf16".into(), 0));
        let mut cur = c;
        for (i, conv) in self.convs.iter().enumerate() {
            let (oh, ow) = conv.spec.output_size(h, w)?;
            let co = conv.spec.out_channels;
            let next = self.convs.get(i + 1);
            let q = next.map_or(0, |nc| nc.spec.padding);
            let len = next.map_or(n * oh * ow * co * 2, |nc| tiled::padded_len(nc, n, oh, ow));
            b.resize(len);
            clear_border(&mut b, n, oh, ow, co * 2, q);
            conv.run_padded(self.kernel, &a, n, h, w, &mut b, q, threads)?;
            std::mem::swap(&mut a, &mut b);
            lap(&|| {
                let s = &conv.spec;
                let algo = if conv.winograd_on(self.kernel, h, w) {
                    " winograd-f2"
                } else {
                    ""
                };
                let op = format!(
                    "conv {}x{}/{} {}->{} g{} {oh}x{ow} bf16 {}{algo}",
                    s.kernel_size,
                    s.kernel_size,
                    s.stride,
                    s.in_channels,
                    co,
                    s.groups,
                    self.kernel
                );
                // The input's size, which `output_size` above has already accepted.
                (op, 2 * conv.macs(n, h, w).unwrap_or_default())
            });
            (h, w, cur) = (oh, ow, co);
        }
        // Global average pool in f32, then the linear layer.
        let hw = h * w;
        let feats: &[u16] = bytemuck::cast_slice(&a[..n * hw * cur * 2]);
        let mut pooled = vec![0.0f32; n * cur];
        pooled
            .par_chunks_mut(cur.max(1))
            .zip(feats.par_chunks(hw * cur.max(1)))
            .for_each(|(p, img)| {
                for px in img.chunks_exact(cur) {
                    for (s, &v) in p.iter_mut().zip(px) {
                        *s += from_bf16(v);
                    }
                }
                p.iter_mut().for_each(|s| *s /= hw as f32);
            });
        // Below a few images each class row of bf16 weights is read once for all of them.
        let logits = crate::head::logits(
            n,
            &pooled,
            cur,
            (&self.head_rows, &self.head_wt),
            &self.unit_scale,
            &self.head_bias,
        );
        lap(&|| {
            (
                format!(
                    "head: average pool {h}x{w}x{cur}, linear {cur}->{}",
                    self.classes
                ),
                2 * (n * cur * self.classes) as u64,
            )
        });
        self.buffers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push([a, b]);
        Array2::from_shape_vec((n, self.classes), logits)
            .map_err(|e| CpuError::Invalid(e.to_string()))
    }
}

/// `x` (NCHW f32) rounded to bf16 into the inside of `out` (NHWC with a border of `p` pixels,
/// already zero). Rows of images in parallel, each channel's row rounded by [`RoundRow`] and
/// then interleaved.
///
/// # Errors
/// [`CpuError::Invalid`] when `x` holds NaN or inf.
fn round_padded(x: ArrayView4<'_, f32>, out: &mut [u8], p: usize) -> Result<()> {
    let (n, c, h, w) = x.dim();
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    let row = wp * c * 2;
    let arch = Arch::new();
    let bad = out[..n * hp * row]
        .par_chunks_mut(row.max(1))
        .enumerate()
        .map_init(
            || vec![0u16; c * w],
            |codes, (r, dst)| {
                let (img, yy) = (r / hp, r % hp);
                if yy < p || yy >= h + p {
                    return false;
                }
                let mut bad = false;
                for (ch, codes) in codes.chunks_exact_mut(w.max(1)).enumerate().take(c) {
                    let src = x.slice(ndarray::s![img, ch, yy - p, ..]);
                    bad |= match src.as_slice() {
                        Some(src) => arch.dispatch(RoundRow { src, out: codes }),
                        None => src.iter().zip(codes.iter_mut()).fold(false, |b, (&v, d)| {
                            *d = to_bf16(v);
                            b | !v.is_finite()
                        }),
                    };
                }
                // bf16 bits in little-endian byte order, as the tiles read them.
                let dst: &mut [u16] =
                    bytemuck::cast_slice_mut(&mut dst[p * c * 2..(p + w) * c * 2]);
                crate::elementwise::interleave(codes, c, dst);
                bad
            },
        )
        .reduce(|| false, |a, b| a | b);
    if bad {
        return Err(CpuError::Invalid(
            "bf16 network input holds NaN or inf".into(),
        ));
    }
    Ok(())
}

/// A row rounded to bf16 with [`to_bf16`]'s formula for finite values, in a form the compiler
/// turns into vector code (compiled for the best instruction set found at run time, through
/// [`pulp`]); `true` when the row holds NaN or inf (whose codes are then not to be used).
struct RoundRow<'a> {
    src: &'a [f32],
    out: &'a mut [u16],
}

impl WithSimd for RoundRow<'_> {
    type Output = bool;
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) -> bool {
        let mut special = 0u32;
        for (d, &v) in self.out.iter_mut().zip(self.src) {
            let bits = v.to_bits();
            // All-ones exponent: NaN or inf.
            special |= u32::from(bits & 0x7F80_0000 == 0x7F80_0000);
            *d = (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16;
        }
        special != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;
    use proptest::prelude::*;

    /// A seeded stream of f32 in [-1, 1).
    fn rng(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 23) as f32) * 2.0 - 1.0
        }
    }

    #[test]
    fn rounding_to_bf16_is_to_nearest_with_ties_to_even() {
        let cases = [
            (1.0f32, 0x3F80u16),
            (-2.5, 0xC020),
            // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even 1.
            (1.0 + 1.0 / 256.0, 0x3F80),
            // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to the even one above.
            (1.0 + 3.0 / 256.0, 0x3F82),
            (1.0 + 1.5 / 256.0, 0x3F81),
            (f32::INFINITY, 0x7F80),
            (f32::MAX, 0x7F80),
            (0.0, 0),
            (-0.0, 0x8000),
        ];
        for (x, want) in cases {
            assert_eq!(to_bf16(x), want, "{x}");
        }
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        for b in [0x3F80u16, 0x0001, 0x7F7F, 0xC2F6] {
            assert_eq!(to_bf16(from_bf16(b)), b);
        }
    }

    proptest! {
        #[test]
        fn row_rounding_matches_the_scalar_rule(xs in prop::collection::vec(any::<f32>(), 1..70)) {
            let mut got = vec![0u16; xs.len()];
            let special = Arch::new().dispatch(RoundRow { src: &xs, out: &mut got });
            prop_assert_eq!(special, xs.iter().any(|v| !v.is_finite()));
            for (x, g) in xs.iter().zip(&got) {
                if x.is_finite() {
                    prop_assert_eq!(*g, to_bf16(*x), "x = {}", x);
                }
            }
        }

        #[test]
        fn bf16_rounding_errs_by_at_most_half_a_step(x in -1e30f32..1e30) {
            let r = from_bf16(to_bf16(x));
            // Half a unit in the last of bf16's 8 significant bits.
            prop_assert!((r - x).abs() <= x.abs() * 2f32.powi(-8), "{x} -> {r}");
        }
    }

    /// The oracle: the exact (f64) conv of the bf16-rounded input and weights plus the bias,
    /// ReLU, as `[n][oh][ow][out]`; and each output's sum of |terms| (the accumulation's scale).
    fn oracle(
        spec: &ConvSpec,
        wt: &Array4<f32>,
        bias: &[f32],
        x: &[u16],
        n: usize,
        h: usize,
        w: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        let s = spec;
        let (oh, ow) = s.output_size(h, w).unwrap();
        let (cin, cout, k) = (s.in_channels, s.out_channels, s.kernel_size);
        let (cin_g, cout_g) = (cin / s.groups, cout / s.groups);
        let mut y = Vec::with_capacity(n * oh * ow * cout);
        let mut mag = Vec::with_capacity(y.capacity());
        for img in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for o in 0..cout {
                        let g = o / cout_g;
                        let (mut acc, mut abs) = (f64::from(bias[o]), f64::from(bias[o].abs()));
                        for ci in 0..cin_g {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * s.stride + ky) as isize - s.padding as isize;
                                    let ix = (ox * s.stride + kx) as isize - s.padding as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let xv = from_bf16(
                                        x[((img * h + iy as usize) * w + ix as usize) * cin
                                            + g * cin_g
                                            + ci],
                                    );
                                    let wv = from_bf16(to_bf16(wt[[o, ci, ky, kx]]));
                                    let t = f64::from(xv) * f64::from(wv);
                                    acc += t;
                                    abs += t.abs();
                                }
                            }
                        }
                        y.push(acc.max(0.0));
                        mag.push(abs);
                    }
                }
            }
        }
        (y, mag)
    }

    /// Per output (NHWC), the F(2x2, 3x3) magnitude of the module docs: over the input channels
    /// `Σ |Aᵀ| (|G| |g| |G|ᵀ ⊙ |Bᵀ| |d| |B|) |A|` at the output's place in its tile.
    fn winograd_magnitude(
        spec: &ConvSpec,
        wt: &Array4<f32>,
        x: &[u16],
        n: usize,
        h: usize,
        w: usize,
    ) -> Vec<f64> {
        let (cin, cout) = (spec.in_channels, spec.out_channels);
        let g = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, 0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        let bt = [
            [1.0, 0.0, 1.0, 0.0],
            [0.0, 1.0, 1.0, 0.0],
            [0.0, 1.0, 1.0, 0.0],
            [0.0, 1.0, 0.0, 1.0],
        ];
        let at = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]];
        // |G| |k| |G|ᵀ and |Bᵀ| |d| |B| (all coefficients taken absolute above).
        let sandwich = |l: &[[f64; 3]; 4], k: &[[f64; 3]; 3]| {
            let mut out = [[0.0; 4]; 4];
            for (i, oi) in out.iter_mut().enumerate() {
                for (j, o) in oi.iter_mut().enumerate() {
                    *o = (0..3)
                        .flat_map(|a| (0..3).map(move |b| (a, b)))
                        .map(|(a, b)| l[i][a] * k[a][b] * l[j][b])
                        .sum();
                }
            }
            out
        };
        let mut out = Vec::with_capacity(n * h * w * cout);
        for img in 0..n {
            for oy in 0..h {
                for ox in 0..w {
                    let (ty, tx, a, b) = (oy / 2, ox / 2, oy % 2, ox % 2);
                    for o in 0..cout {
                        let mut total = 0.0;
                        for ci in 0..cin {
                            let mut k = [[0.0; 3]; 3];
                            for (ky, row) in k.iter_mut().enumerate() {
                                for (kx, v) in row.iter_mut().enumerate() {
                                    *v = f64::from(wt[[o, ci, ky, kx]].abs());
                                }
                            }
                            let u = sandwich(&g, &k);
                            let mut d = [[0.0; 4]; 4];
                            for (i, row) in d.iter_mut().enumerate() {
                                for (j, v) in row.iter_mut().enumerate() {
                                    let (iy, ix) =
                                        ((2 * ty + i) as isize - 1, (2 * tx + j) as isize - 1);
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w
                                    {
                                        let at =
                                            ((img * h + iy as usize) * w + ix as usize) * cin + ci;
                                        *v = f64::from(from_bf16(x[at])).abs();
                                    }
                                }
                            }
                            let mut v = [[0.0; 4]; 4];
                            for (i, vi) in v.iter_mut().enumerate() {
                                for (j, vij) in vi.iter_mut().enumerate() {
                                    *vij = (0..4)
                                        .flat_map(|p| (0..4).map(move |q| (p, q)))
                                        .map(|(p, q)| bt[i][p] * d[p][q] * bt[j][q])
                                        .sum();
                                }
                            }
                            for i in 0..4 {
                                for j in 0..4 {
                                    total += at[a][i] * at[b][j] * u[i][j] * v[i][j];
                                }
                            }
                        }
                        out.push(total);
                    }
                }
            }
        }
        out
    }

    /// Runs a conv of `spec` on random data against the oracle: each output within one bf16
    /// rounding of the exact value plus the f32 accumulation's bound.
    /// Runs `spec` on every kernel the CPU has against the f64 oracle. With `guard`, the case
    /// must also keep a fifth of its outputs above the ReLU (the fixed cases, chosen to mean
    /// something); random shapes may be mostly border or have every bias negative, and are
    /// checked all the same.
    fn check(spec: ConvSpec, n: usize, h: usize, w: usize, seed: u64, guard: bool) {
        let mut next = rng(seed);
        let wt = Array4::from_shape_fn(spec.weight_shape(), |_| next());
        let bias: Vec<f32> = (0..spec.out_channels).map(|_| next() * 0.5).collect();
        let conv = Bf16Conv::new(wt.view(), &bias, spec).unwrap();
        let x: Vec<u16> = (0..n * h * w * spec.in_channels)
            .map(|_| to_bf16(next()))
            .collect();
        let (want, mag) = oracle(&spec, &wt, &bias, &x, n, h, w);
        let positive = want.iter().filter(|&&v| v > 0.0).count();
        assert!(
            !guard || want.len() < 16 || positive * 5 >= want.len(),
            "too few outputs above the ReLU: {positive} of {}",
            want.len()
        );
        let steps = (spec.kernel_size.pow(2) * spec.in_channels / spec.groups + 1) as f64;
        let mut winograd: Option<Vec<f64>> = None;
        for (kernel, threads) in Bf16Kernel::available()
            .into_iter()
            .flat_map(|k| [(k, 1), (k, 2), (k, 64)])
        {
            let mut y = vec![0xFFFFu16; want.len()];
            conv.run(kernel, &x, n, h, w, &mut y, threads).unwrap();
            // Winograd: each product's operands are bf16 roundings of the exact transformed
            // values (the weights' transform of the f32 weights, not of their bf16 roundings),
            // so 2^-7 of the transformed magnitude on top of the direct bound.
            let (wino, wmag) = if conv.winograd_on(kernel, h, w) {
                let wmag =
                    winograd.get_or_insert_with(|| winograd_magnitude(&spec, &wt, &x, n, h, w));
                (2f64.powi(-7), &*wmag)
            } else {
                (0.0, &mag)
            };
            // Beside each output's worst case, the whole: relative L2 within 2^-7 (one bf16
            // rounding is 2^-9; Winograd's measure about 2^-8).
            let (e2, w2) = y
                .iter()
                .zip(&want)
                .fold((0.0, 0.0), |(e2, w2), (&got, &want)| {
                    let d = f64::from(from_bf16(got)) - want;
                    (e2 + d * d, w2 + want * want)
                });
            assert!(
                e2 <= w2 * 2f64.powi(-14),
                "{kernel} {spec:?} n {n} {h}x{w}: relative L2 error {}",
                (e2 / w2).sqrt()
            );
            for (i, (((&got, &want), &mag), &wmag)) in
                y.iter().zip(&want).zip(&mag).zip(wmag).enumerate()
            {
                let got = f64::from(from_bf16(got));
                let bound = want.abs() * 2f64.powi(-8)
                    + 2.0 * steps * f64::from(f32::EPSILON) * mag.max(wmag)
                    + wino * wmag;
                assert!(
                    (got - want).abs() <= bound,
                    "{kernel} {spec:?} n {n} {h}x{w}, {threads} threads: value {i} = {got}, want {want} (bound {bound})"
                );
            }
        }
    }

    /// The Winograd F(2x2, 3x3) path (AVX512-BF16): whole tiles, several runs of tiles per
    /// job, tile rows split over threads, 16 and 48 columns, against the oracle and its bound.
    #[test]
    fn winograd_convs_match_the_oracle_within_its_bound() {
        if !bf16_simd::available() {
            return;
        }
        for (i, (spec, n, h, w)) in [
            (ConvSpec::new(16, 32, 3, 1, 1, 1).unwrap(), 1, 2, 2),
            (ConvSpec::new(32, 48, 3, 1, 1, 1).unwrap(), 2, 6, 10),
            (ConvSpec::new(16, 16, 3, 1, 1, 1).unwrap(), 1, 18, 16),
            (ConvSpec::new(48, 80, 3, 1, 1, 1).unwrap(), 3, 4, 8),
            // Fewer tile rows than tiles in a row.
            (ConvSpec::new(16, 32, 3, 1, 1, 1).unwrap(), 1, 2, 8),
            // Few tiles, many columns: at two threads the columns split over them.
            (ConvSpec::new(16, 192, 3, 1, 1, 1).unwrap(), 1, 4, 4),
            // The same path over more tiles than one run holds, the last run short.
            (ConvSpec::new(16, 192, 3, 1, 1, 1).unwrap(), 1, 12, 16),
        ]
        .into_iter()
        .enumerate()
        {
            let conv = Bf16Conv::new(
                Array4::zeros(spec.weight_shape()).view(),
                &vec![0.0; spec.out_channels],
                spec,
            )
            .unwrap();
            assert!(
                conv.winograd_on(Bf16Kernel::Avx512Bf16, h, w),
                "{spec:?} {h}x{w}"
            );
            assert!(!conv.winograd_on(Bf16Kernel::Avx512Bf16, h, w + 1));
            assert!(!conv.winograd_on(Bf16Kernel::Amx, h, w));
            check(spec, n, h, w, 900 + i as u64, true);
        }
    }

    /// The in-place kernel stores every pixel of every block but the last, of the last only
    /// the first `len`: the rows past them (which the driver points at the last pixel again)
    /// are not written even when they point elsewhere.
    #[test]
    fn the_last_block_stores_only_its_pixels() {
        if !bf16_simd::available() {
            return;
        }
        let spec = ConvSpec::new(16, 40, 3, 1, 1, 1).unwrap();
        let (h, w, cout) = (5, 5, 40);
        let mut next = rng(5);
        let wt = Array4::from_shape_fn(spec.weight_shape(), |_| next());
        let bias: Vec<f32> = (0..cout).map(|_| next() * 0.5).collect();
        let conv = Bf16Conv::new(wt.view(), &bias, spec).unwrap();
        let x: Vec<u16> = (0..h * w * 16).map(|_| to_bf16(next())).collect();
        let mut want = vec![0u16; h * w * cout];
        conv.run(Bf16Kernel::Avx512Bf16, &x, 1, h, w, &mut want, 1)
            .unwrap();
        let want: &[u8] = bytemuck::cast_slice(&want);
        let mut xp = AlignedBytes::zeroed(tiled::padded_len(&conv, 1, h, w));
        tiled::pad(bytemuck::cast_slice(&x), (1, h, w), 32, 1, 0, &mut xp);
        crate::direct::tests::last_block_stores_only_its_pixels(&conv, &xp, w, (32, 80), want);
    }

    /// Every kernel writes its outputs inside a border of `q` pixels (the next conv's padded
    /// input) exactly where the unpadded run puts them, and leaves the border alone: the
    /// tiles, the in-place AVX512-BF16 kernel and its Winograd path (16 and 48 channels, even
    /// sizes), each with one thread and many.
    #[test]
    fn padded_outputs_land_inside_their_border() {
        let mut next = rng(11);
        for (spec, n, h, w) in [
            (ConvSpec::new(3, 48, 3, 2, 1, 1).unwrap(), 2, 9, 6),
            (ConvSpec::new(16, 40, 3, 2, 1, 2).unwrap(), 1, 3, 37),
            (ConvSpec::new(16, 32, 3, 1, 1, 1).unwrap(), 2, 6, 10),
            (ConvSpec::new(48, 48, 3, 1, 1, 1).unwrap(), 1, 4, 4),
            (ConvSpec::new(11, 16, 3, 1, 1, 1).unwrap(), 3, 2, 2),
            (ConvSpec::new(16, 192, 3, 1, 1, 1).unwrap(), 1, 4, 6),
        ] {
            let cout = spec.out_channels;
            let wt = Array4::from_shape_fn(spec.weight_shape(), |_| next());
            let bias: Vec<f32> = (0..cout).map(|_| next() * 0.5).collect();
            let conv = Bf16Conv::new(wt.view(), &bias, spec).unwrap();
            let x: Vec<u16> = (0..n * h * w * spec.in_channels)
                .map(|_| to_bf16(next()))
                .collect();
            let (oh, ow) = spec.output_size(h, w).unwrap();
            let mut xp = AlignedBytes::zeroed(tiled::padded_len(&conv, n, h, w));
            let bytes: &[u8] = bytemuck::cast_slice(&x);
            tiled::pad(
                bytes,
                (n, h, w),
                spec.in_channels * 2,
                spec.padding,
                0,
                &mut xp,
            );
            for kernel in Bf16Kernel::available() {
                for threads in [1, 2, 64] {
                    let mut want = vec![0u16; n * oh * ow * cout];
                    conv.run(kernel, &x, n, h, w, &mut want, threads).unwrap();
                    assert!(want.iter().any(|&v| v != 0), "{spec:?}: every output 0");
                    for q in [1, 2] {
                        let (ohp, owp) = (oh + 2 * q, ow + 2 * q);
                        let mut y = vec![0xA5u8; n * ohp * owp * cout * 2];
                        conv.run_padded(kernel, &xp, n, h, w, &mut y, q, threads)
                            .unwrap();
                        let want: &[u8] = bytemuck::cast_slice(&want);
                        for (i, px) in y.chunks_exact(cout * 2).enumerate() {
                            let (img, rest) = (i / (ohp * owp), i % (ohp * owp));
                            let (py, pxx) = (rest / owp, rest % owp);
                            let inside = (q..q + oh).contains(&py) && (q..q + ow).contains(&pxx);
                            let at = format!(
                                "{kernel} {threads} threads q {q} {spec:?} {n}x{h}x{w} pixel {i}"
                            );
                            if inside {
                                let j = ((img * oh + py - q) * ow + pxx - q) * cout * 2;
                                assert_eq!(px, &want[j..j + cout * 2], "{at}");
                            } else {
                                assert!(px.iter().all(|&v| v == 0xA5), "{at}: border written");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn stride_padding_groups_and_every_amx_mode_match_the_oracle() {
        if !available() {
            let why = unavailable_reason().unwrap();
            assert!(why.contains("AMX") || why.contains("grant"), "{why}");
            return;
        }
        let specs = [
            // The stem: 3 channels, kernel rows on the tiles.
            ConvSpec::new(3, 48, 3, 2, 1, 1).unwrap(),
            ConvSpec::new(8, 16, 3, 1, 1, 1).unwrap(),
            ConvSpec::new(16, 40, 3, 2, 1, 2).unwrap(),
            ConvSpec::new(16, 16, 3, 1, 1, 4).unwrap(),
            ConvSpec::new(6, 33, 1, 1, 0, 1).unwrap(),
            ConvSpec::new(5, 70, 3, 1, 2, 1).unwrap(),
            // Sums of several chunks (96 channels = 3 x 64 bytes).
            ConvSpec::new(96, 40, 3, 1, 1, 1).unwrap(),
            ConvSpec::new(64, 96, 3, 2, 1, 2).unwrap(),
            // A kernel row wider than a tile row (3 x 11 x 2 > 64 bytes): gathered.
            ConvSpec::new(11, 16, 3, 1, 1, 1).unwrap(),
        ];
        for (i, spec) in specs.into_iter().enumerate() {
            for (n, h, w) in [(1, 7, 7), (2, 9, 6), (1, 1, 1), (2, 3, 37)] {
                check(spec, n, h, w, (i * 100 + h) as u64, true);
            }
        }
    }

    /// More pixels per job than one call of the in-place kernel takes (`direct::RUN` blocks),
    /// on one thread (four jobs of several calls each, the last call short) and on many (the
    /// columns split, every pixel in each job).
    #[test]
    fn jobs_of_several_kernel_calls_match_the_oracle() {
        if !available() {
            return;
        }
        let (specs, (n, h, w)) = crate::direct::tests::several_calls();
        for (i, spec) in specs.into_iter().enumerate() {
            check(spec, n, h, w, 900 + i as u64, true);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_convs_match_the_oracle(
            cin_g in 1usize..9, cout_g in 1usize..40, groups in 1usize..4, k in prop::sample::select(vec![1usize, 3]),
            stride in 1usize..3, pad in 0usize..2, n in 1usize..3, h in 1usize..9, w in 1usize..9, seed in any::<u64>()
        ) {
            prop_assume!(available());
            // The tiles read channels in pairs: grouped convs need an even count per group.
            let cin_g = if groups > 1 { 2 * cin_g } else { cin_g };
            let spec = ConvSpec::new(cin_g * groups, cout_g * groups, k, stride, pad.min(k / 2 + 1), groups).unwrap();
            prop_assume!(spec.output_size(h, w).is_ok());
            check(spec, n, h, w, seed, false);
        }
    }

    #[test]
    fn a_network_matches_its_convs_run_one_by_one_and_an_f64_head() {
        if !available() {
            let e = Bf16Network::new(
                3,
                vec![],
                Array2::zeros((2, 3)).view(),
                &[0.0; 2],
                Bf16Options::default(),
            )
            .unwrap_err();
            assert!(e.to_string().contains("AVX512-BF16"), "{e}");
            return;
        }
        let mut next = rng(7);
        let specs = [
            ConvSpec::new(3, 16, 3, 2, 1, 1).unwrap(),
            ConvSpec::new(16, 16, 3, 1, 1, 2).unwrap(),
            ConvSpec::new(16, 24, 3, 2, 1, 1).unwrap(),
        ];
        let convs: Vec<Bf16Conv> = specs
            .iter()
            .map(|&s| {
                // Centred (`next` is uniform on -1..3) and scaled to the fan-in, so that the
                // logits stay small and the head's check sees an offset of one.
                let fan = (s.in_channels / s.groups * s.kernel_size.pow(2)) as f32;
                let wt = Array4::from_shape_fn(s.weight_shape(), |_| (next() - 1.0) / fan.sqrt());
                let bias: Vec<f32> = (0..s.out_channels).map(|_| next() * 0.1).collect();
                Bf16Conv::new(wt.view(), &bias, s).unwrap()
            })
            .collect();
        let head = Array2::from_shape_fn((5, 24), |_| next() - 1.0);
        let head_bias: Vec<f32> = (0..5).map(|_| next()).collect();
        // Two images: the linear layer reads its bf16 rows; five: the f32 GEMM on their values.
        for (n, h, w) in [(2, 13, 11), (5, 9, 7)] {
            let x = Array4::from_shape_fn((n, 3, h, w), |_| next());
            for kernel in Bf16Kernel::available() {
                // The same steps through the public single-conv API, in NHWC.
                let mut cur: Vec<u16> = x
                    .view()
                    .permuted_axes([0, 2, 3, 1])
                    .iter()
                    .map(|&v| to_bf16(v))
                    .collect();
                let (mut hh, mut ww) = (h, w);
                for c in &convs {
                    let (oh, ow) = c.spec().output_size(hh, ww).unwrap();
                    let mut y = vec![0u16; n * oh * ow * c.spec().out_channels];
                    c.run(kernel, &cur, n, hh, ww, &mut y, 1).unwrap();
                    (cur, hh, ww) = (y, oh, ow);
                }
                let opts = Bf16Options {
                    threads: Some(2),
                    kernel: Some(kernel),
                };
                let net =
                    Bf16Network::new(3, convs.clone(), head.view(), &head_bias, opts).unwrap();
                assert_eq!(net.kernel(), kernel);
                for _ in 0..2 {
                    let got = net.run(x.view()).unwrap();
                    for img in 0..n {
                        let feats = &cur[img * hh * ww * 24..(img + 1) * hh * ww * 24];
                        for j in 0..5 {
                            let mut want = f64::from(head_bias[j]);
                            let mut mag = want.abs();
                            for ch in 0..24 {
                                let mean = feats
                                    .iter()
                                    .skip(ch)
                                    .step_by(24)
                                    .map(|&v| f64::from(from_bf16(v)))
                                    .sum::<f64>()
                                    / (hh * ww) as f64;
                                // The classifier's weights are rounded to bf16 too.
                                let wv = f64::from(from_bf16(to_bf16(head[[j, ch]])));
                                want += mean * wv;
                                mag += (mean * wv).abs();
                            }
                            let d = (f64::from(got[[img, j]]) - want).abs();
                            assert!(
                                d <= 1e-5 * mag + 1e-6,
                                "image {img} class {j}: {} vs {want}",
                                got[[img, j]]
                            );
                        }
                    }
                }
                let prof = net.profile(x.view()).unwrap();
                assert_eq!(prof.len(), 5);
                assert_eq!(
                    prof.iter().map(|t| t.flops).sum::<u64>(),
                    2 * net.macs(n, h, w).unwrap()
                );
                let mut bad = x.clone();
                bad[[1, 2, 3, 4]] = f32::NAN;
                let e = net.run(bad.view()).unwrap_err();
                assert!(e.to_string().contains("NaN"), "{e}");
            }
        }
    }

    #[test]
    fn bad_parameters_are_refused_with_their_names() {
        let spec = ConvSpec::new(2, 2, 1, 1, 0, 1).unwrap();
        let wt = Array4::<f32>::zeros(spec.weight_shape());
        let e = Bf16Conv::new(wt.view(), &[0.0], spec).unwrap_err();
        assert!(e.to_string().contains("bias"), "{e}");
        let e = Bf16Conv::new(wt.view(), &[0.0, f32::INFINITY], spec).unwrap_err();
        assert!(e.to_string().contains("NaN or inf"), "{e}");
        let odd = ConvSpec::new(6, 4, 3, 1, 1, 2).unwrap();
        let e =
            Bf16Conv::new(Array4::zeros(odd.weight_shape()).view(), &[0.0; 4], odd).unwrap_err();
        assert!(e.to_string().contains("pairs"), "{e}");
        if available() {
            let conv = Bf16Conv::new(wt.view(), &[0.0; 2], spec).unwrap();
            // Finite in f32, beyond bf16's largest value: the rounded classifier would be inf.
            let head = Array2::from_elem((3, 2), 3.4e38f32);
            let e = Bf16Network::new(2, vec![conv], head.view(), &[0.0; 3], Default::default())
                .unwrap_err();
            assert!(e.to_string().contains("outside bf16's range"), "{e}");
        }
    }
}
