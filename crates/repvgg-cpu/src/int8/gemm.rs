//! The integer GEMM of the int8 convs: `c[m x n] = requant(a[m x k] · b[k x n])` with `a` u8
//! (activations, packed in blocks of [`MR`] rows, four steps of the sum per row together: the
//! im2col gather writes this layout, [`pack_rows`] makes it from a plain matrix), `b` s8
//! (weights, packed once into column panels of [`NR`] columns, four steps of the sum per column
//! together: the layout `vpdpbusd` reads),
//! s32 accumulation and the requantization fused into the store: per column `j`,
//!
//! ```text
//! c[i][j] = clamp(round_ties_even(fma(f32(acc + comp[j]), mult[j], add[j])), 0, 255)
//! ```
//!
//! (the clamp at 0 is the ReLU of the conv; the f32 arithmetic is the same on every instruction
//! set, so every path gives the same bytes, which the tests check against an integer oracle).
//!
//! Three paths, chosen at run time ([`Int8Kernel`]): AVX-512 VNNI (`vpdpbusd`, 8 rows x 32
//! columns), AVX2 (u8 and s8 widened to i16, `vpmaddwd`: exact, where `vpmaddubsw` would
//! saturate its i16 pair sums at 2 x 255 x 127) and portable scalar loops. The intrinsics live in
//! `simd`, the crate's only `unsafe` module.

use std::fmt;
use std::str::FromStr;

use crate::direct::MR as PX;
use crate::int8::simd;

/// Columns per packed panel (the last panel of a matrix may be [`NR`] / 2 wide).
pub const NR: usize = 32;

/// Steps of the sum packed together for one column (`vpdpbusd` sums four u8 x s8 products).
pub const KG: usize = 4;

/// Rows per packed block of `a`.
pub const MR: usize = 8;

/// Bytes of `m` rows of `kp` steps packed by [`pack_rows`] (whole blocks of [`MR`] rows).
pub fn packed_rows_len(m: usize, kp: usize) -> usize {
    m.div_ceil(MR) * MR * kp
}

/// Where step `kk` of row `i` sits in rows packed with `kp` steps: `[i / MR][kk / 4][i % MR][kk % 4]`.
#[inline(always)]
pub fn packed_row_index(i: usize, kk: usize, kp: usize) -> usize {
    (i / MR) * MR * kp + (kk / KG) * (MR * KG) + (i % MR) * KG + kk % KG
}

/// Packs the `m x k` matrix `f(row, step)` as rows for [`gemm_u8i8`] with
/// `kp = padded_k(k)`: zero in the padding steps and rows.
pub fn pack_rows(m: usize, k: usize, f: impl Fn(usize, usize) -> u8) -> Vec<u8> {
    let kp = padded_k(k);
    let mut out = vec![0u8; packed_rows_len(m, kp)];
    for i in 0..m {
        for kk in 0..k {
            out[packed_row_index(i, kk, kp)] = f(i, kk);
        }
    }
    out
}

/// The steps of an `k`-long sum rounded up to whole groups of [`KG`] (padded with zeros).
pub fn padded_k(k: usize) -> usize {
    k.div_ceil(KG) * KG
}

/// Panels of an `n`-column matrix.
pub fn panels(n: usize) -> usize {
    n.div_ceil(NR)
}

/// Width of panel `p`: [`NR`], or for a last panel of at most `NR / 2` columns, `NR / 2`.
pub fn panel_width(n: usize, p: usize) -> usize {
    let rest = n - p * NR;
    if rest >= NR {
        NR
    } else if rest <= NR / 2 {
        NR / 2
    } else {
        NR
    }
}

/// Columns of all panels together (`n` rounded up to the panel widths).
pub fn padded_n(n: usize) -> usize {
    (0..panels(n)).map(|p| panel_width(n, p)).sum()
}

/// Bytes of a `k x n` matrix packed by [`pack`].
pub fn packed_len(k: usize, n: usize) -> usize {
    padded_k(k) * padded_n(n)
}

/// Packs the `k x n` matrix `f(row, col)` as `[panel][k / 4][width][4]`, zero-padded to whole
/// groups of four steps and whole panels.
pub fn pack(k: usize, n: usize, f: impl Fn(usize, usize) -> i8) -> Vec<i8> {
    pack_steps(k, n, KG, f)
}

/// Packs the `k x n` matrix `f(row, col)` as `[panel][k / kg][width][kg]` (the panels of
/// [`pack`], `kg` steps of the sum per column together), zero-padded to whole groups of `kg`
/// steps and whole panels: the layout of [`pack`] (`kg` = 4 s8 values) and of the bf16 convs
/// (`kg` = 2 bf16 values), both four bytes a step group.
pub(crate) fn pack_steps<T: Copy + Default>(
    k: usize,
    n: usize,
    kg: usize,
    f: impl Fn(usize, usize) -> T,
) -> Vec<T> {
    let kp = k.next_multiple_of(kg);
    let mut out = Vec::with_capacity(kp * padded_n(n));
    for p in 0..panels(n) {
        for kq in 0..kp / kg {
            for c in 0..panel_width(n, p) {
                let j = p * NR + c;
                for t in 0..kg {
                    let kk = kq * kg + t;
                    out.push(if j < n && kk < k {
                        f(kk, j)
                    } else {
                        T::default()
                    });
                }
            }
        }
    }
    out
}

/// The per-column requantization (each slice holds [`padded_n`] values: one per packed column).
#[derive(Debug, Clone, Copy)]
pub struct Requant<'a> {
    /// Added to the s32 sum (the input zero point's correction, `-z * sum of the column`).
    pub comp: &'a [i32],
    /// `input scale * weight scale / output scale`.
    pub mult: &'a [f32],
    /// `bias / output scale`.
    pub add: &'a [f32],
}

/// One output value from its sum: the formula of the module docs, the reference for every path.
#[inline(always)]
pub fn requantize(acc: i32, comp: i32, mult: f32, add: f32) -> u8 {
    let z = (acc.wrapping_add(comp) as f32).mul_add(mult, add);
    z.clamp(0.0, 255.0).round_ties_even() as u8
}

/// An instruction set the int8 GEMM runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Int8Kernel {
    /// Intel AMX tiles (`tdpbusd`) for convs of whole groups of four channels, AVX-512 VNNI
    /// for the rest (the stem) and for plain GEMMs.
    Amx,
    /// AVX-512 F/BW with VNNI (`vpdpbusd`).
    Avx512Vnni,
    /// AVX2 with FMA (`vpmaddwd` on widened values).
    Avx2,
    /// Portable loops.
    Scalar,
}

impl Int8Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Int8Kernel; 4] = [Self::Amx, Self::Avx512Vnni, Self::Avx2, Self::Scalar];

    /// The word for this kernel: `amx`, `vnni`, `avx2` or `scalar`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Amx => "amx",
            Self::Avx512Vnni => "vnni",
            Self::Avx2 => "avx2",
            Self::Scalar => "scalar",
        }
    }

    /// The CPU features this kernel needs, as `/proc/cpuinfo` names them.
    pub fn features(self) -> &'static str {
        match self {
            Self::Amx => {
                "amx_tile, amx_int8, avx512f, avx512bw, avx512vnni (and the Linux tile permission)"
            }
            Self::Avx512Vnni => "avx512f, avx512bw, avx512vnni",
            Self::Avx2 => "avx2, fma",
            Self::Scalar => "none",
        }
    }

    /// Whether this CPU can run it.
    pub fn is_available(self) -> bool {
        match self {
            Self::Amx => crate::amx::available(crate::amx::Op::U8I8),
            Self::Avx512Vnni => simd::has_vnni(),
            Self::Avx2 => simd::has_avx2(),
            Self::Scalar => true,
        }
    }

    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        Self::ALL
            .into_iter()
            .find(|k| k.is_available())
            .unwrap_or(Self::Scalar)
    }

    /// Every kernel this CPU runs, fastest first (the tests run each).
    pub fn available() -> Vec<Self> {
        Self::ALL.into_iter().filter(|k| k.is_available()).collect()
    }
}

impl fmt::Display for Int8Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for Int8Kernel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "amx" | "amx-int8" => Ok(Self::Amx),
            "vnni" | "avx512vnni" | "avx512-vnni" => Ok(Self::Avx512Vnni),
            "avx2" => Ok(Self::Avx2),
            "scalar" => Ok(Self::Scalar),
            _ => Err(format!(
                "`{s}` is not an int8 kernel: expected amx, vnni, avx2 or scalar"
            )),
        }
    }
}

/// One panel's work: `m` rows `a` (packed by blocks, see [`pack_rows`]) times the panel `b`
/// (`[kp / 4][w][4]`), `cols` (at most `w`) columns stored at stride `c_rs`.
#[derive(Debug)]
pub(crate) struct PanelJob<'a> {
    pub m: usize,
    pub kp: usize,
    pub a: &'a [u8],
    pub w: usize,
    pub b: &'a [i8],
    pub cols: usize,
    pub c: &'a mut [u8],
    pub c_rs: usize,
    /// `w` values each (this panel's columns).
    pub rq: Requant<'a>,
}

impl PanelJob<'_> {
    /// Checks every length the kernels rely on (the `simd` module's safety arguments cite it).
    pub(crate) fn check(&self) {
        assert!(
            self.kp.is_multiple_of(KG),
            "sum length not a multiple of {KG}"
        );
        assert!(self.w == NR || self.w == NR / 2, "panel width {}", self.w);
        assert!(
            self.cols <= self.w && self.cols > 0,
            "columns outside the panel"
        );
        assert!(
            self.b.len() == self.kp * self.w,
            "panel of the wrong length"
        );
        assert!(self.c_rs >= self.cols, "row stride too short");
        assert!(
            self.a.len() >= packed_rows_len(self.m, self.kp),
            "a too short"
        );
        if let Some(last) = self.m.checked_sub(1) {
            assert!(self.c.len() >= last * self.c_rs + self.cols, "c too short");
        }
        assert!(
            self.rq.comp.len() >= self.w
                && self.rq.mult.len() >= self.w
                && self.rq.add.len() >= self.w,
            "requantization shorter than the panel"
        );
    }
}

/// One block of up to [`crate::direct::MR`] output pixels of a conv read straight from its
/// padded input (no im2col): pixel `r`'s sum runs over `taps` segments of `seg` bytes each,
/// segment `t` at `x[xs[r] + taps[t]..]`, in the order of the packed weights' steps; row `r <
/// len` of the result is stored at `y[ys[r]..]`.
#[derive(Debug)]
pub(crate) struct DirectJob<'a> {
    /// The padded input (u8).
    pub x: &'a [u8],
    /// Byte offset of each segment from a pixel's base.
    pub taps: &'a [usize],
    /// Bytes per segment: a multiple of [`KG`].
    pub seg: usize,
    /// The packed weights of `n` columns, `taps.len() * seg` steps ([`pack`]'s layout).
    pub b: &'a [i8],
    /// Columns.
    pub n: usize,
    /// [`padded_n`]`(n)` values each.
    pub rq: Requant<'a>,
    /// The columns to compute (from a multiple of 16), stored from each pixel's place on.
    pub cols: std::ops::Range<usize>,
}

impl DirectJob<'_> {
    /// Panics unless every byte the kernels read for the blocks of pixels at `xs` and write
    /// for them at `ys` (all pixels of every block but the last, its first `len`) lies inside
    /// the slices.
    pub(crate) fn check(&self, xs: &[[usize; PX]], ys: &[[usize; PX]], len: usize, y_len: usize) {
        crate::direct::check_blocks(
            (self.x.len(), self.taps, self.seg),
            &self.cols,
            self.n,
            xs,
            ys,
            len,
            (y_len, self.cols.len()),
        );
        let np = padded_n(self.n);
        assert!(
            self.b.len() == self.taps.len() * self.seg * np,
            "packed weights of the wrong length"
        );
        assert!(
            self.rq.comp.len() >= np && self.rq.mult.len() >= np && self.rq.add.len() >= np,
            "requantization shorter than the columns"
        );
    }
}

/// `c = requant(a · b)` for a whole packed matrix: `a` `m x kp` packed by [`pack_rows`], `b` from
/// [`pack`] (`k x n`, `kp = padded_k(k)`), `c` `m x n` (row stride `c_rs`), `rq` with
/// [`padded_n`]`(n)` values per slice, on `kernel` (which must be available: see
/// [`Int8Kernel::is_available`]; an unavailable one runs the scalar loops).
#[allow(clippy::too_many_arguments)]
pub fn gemm_u8i8(
    kernel: Int8Kernel,
    m: usize,
    kp: usize,
    n: usize,
    a: &[u8],
    b: &[i8],
    c: &mut [u8],
    c_rs: usize,
    rq: Requant<'_>,
) {
    // Nothing to do for no rows ([`run_panel`] returns) or no columns (no panels).
    assert!(b.len() >= kp * padded_n(n), "packed matrix too short");
    let mut col0 = 0;
    for p in 0..panels(n) {
        let w = panel_width(n, p);
        let cols = w.min(n - p * NR);
        run_panel(
            kernel,
            PanelJob {
                m,
                kp,
                a,
                w,
                b: &b[col0 * kp..(col0 + w) * kp],
                cols,
                c: &mut c[p * NR..],
                c_rs,
                rq: Requant {
                    comp: &rq.comp[col0..col0 + w],
                    mult: &rq.mult[col0..col0 + w],
                    add: &rq.add[col0..col0 + w],
                },
            },
        );
        col0 += w;
    }
}

/// Runs one panel on `kernel`.
pub(crate) fn run_panel(kernel: Int8Kernel, mut job: PanelJob<'_>) {
    if job.m == 0 {
        return;
    }
    job.check();
    let done = match kernel {
        Int8Kernel::Amx | Int8Kernel::Avx512Vnni => simd::vnni_panel(&mut job),
        Int8Kernel::Avx2 => simd::avx2_panel(&mut job),
        Int8Kernel::Scalar => false,
    };
    if !done {
        scalar_panel(&mut job);
    }
}

/// The portable path (and the layout's plain statement).
fn scalar_panel(job: &mut PanelJob<'_>) {
    let mut acc = [0i32; NR];
    for i in 0..job.m {
        acc.fill(0);
        let blk = &job.a[(i / MR) * MR * job.kp..(i / MR + 1) * MR * job.kp];
        let r = i % MR;
        for (a_step, step) in blk
            .chunks_exact(MR * KG)
            .zip(job.b.chunks_exact(KG * job.w))
        {
            let a4 = &a_step[r * KG..(r + 1) * KG];
            for (acc_c, b4) in acc.iter_mut().zip(step.chunks_exact(KG)) {
                for (&a, &b) in a4.iter().zip(b4) {
                    *acc_c += i32::from(a) * i32::from(b);
                }
            }
        }
        let out = &mut job.c[i * job.c_rs..i * job.c_rs + job.cols];
        for (j, o) in out.iter_mut().enumerate() {
            *o = requantize(acc[j], job.rq.comp[j], job.rq.mult[j], job.rq.add[j]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_length_the_kernels_rely_on_is_checked() {
        let (m, kp, w, cols, c_rs) = (3, 8, NR, NR - 1, NR + 2);
        let a = vec![0u8; packed_rows_len(m, kp)];
        let b = vec![0i8; kp * w];
        let (comp, mult, add) = (vec![0i32; w], vec![0f32; w], vec![0f32; w]);
        let c_len = (m - 1) * c_rs + cols;
        // A job of exactly the lengths it needs, then one length wrong at a time: the panic's
        // message, or `None` when the check passes.
        let run = |case: usize| -> Option<String> {
            let mut c = vec![0u8; if case == 11 { c_len - 1 } else { c_len }];
            let mut job = PanelJob {
                m,
                kp,
                a: &a,
                w,
                b: &b,
                cols,
                c: &mut c,
                c_rs,
                rq: Requant {
                    comp: &comp,
                    mult: &mult,
                    add: &add,
                },
            };
            match case {
                1 => job.m = 0,
                2 => job.kp = 6,
                3 => job.w = NR / 2 + 1,
                4 => job.cols = w + 1,
                5 => job.cols = 0,
                6 => job.b = &b[1..],
                7 => job.c_rs = cols - 1,
                8 => job.a = &a[1..],
                9 => job.rq.comp = &comp[1..],
                10 => job.rq.mult = &mult[1..],
                12 => job.rq.add = &add[1..],
                _ => {}
            }
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.check()));
            res.err().map(|e| {
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            })
        };
        assert_eq!(run(0), None, "exact lengths pass");
        assert_eq!(run(1), None, "no rows pass");
        let wants = [
            (2, "multiple of"),
            (3, "panel width"),
            (4, "columns outside"),
            (5, "columns outside"),
            (6, "wrong length"),
            (7, "row stride"),
            (8, "a too short"),
            (9, "requantization"),
            (10, "requantization"),
            (11, "c too short"),
            (12, "requantization"),
        ];
        for (case, want) in wants {
            let got = run(case).unwrap_or_else(|| panic!("case {case} passed the check"));
            assert!(got.contains(want), "case {case}: {got}");
        }
    }

    /// The oracle: plain i32 sums over the unpacked matrices, then [`requantize`].
    /// `DirectJob::check` is what the VNNI direct kernel's unchecked reads rely on: every
    /// pixel's last segment must end inside the input, every stored row inside the output.
    #[test]
    fn every_byte_the_direct_kernel_reads_or_writes_is_checked() {
        let (taps, seg, n) = ([0usize, 40, 100], 8, 20);
        let x = vec![0u8; 200];
        let b = vec![0i8; taps.len() * seg * padded_n(n)];
        let (comp, mult, add) = (vec![0i32; 32], vec![0f32; 32], vec![0f32; 32]);
        // The furthest pixel reads x[92 + 100..200]: exactly the input's end.
        let xs: [usize; PX] = std::array::from_fn(|r| if r == PX - 1 { 92 } else { r * 13 });
        let ys: [usize; PX] = std::array::from_fn(|r| r * n);
        let run = |case: usize| -> Option<String> {
            let job = DirectJob {
                x: if case == 1 { &x[..199] } else { &x },
                taps: &taps,
                seg: if case == 2 { 6 } else { seg },
                b: if case == 3 { &b[1..] } else { &b },
                n,
                rq: Requant {
                    comp: if case == 4 { &comp[..16] } else { &comp },
                    mult: &mult,
                    add: &add,
                },
                cols: match case {
                    9 => 8..n,
                    10 => 16..n + 1,
                    11 => 16..16,
                    _ => 0..n,
                },
            };
            let len = match case {
                5 => 0,
                6 => PX + 1,
                _ => PX,
            };
            let y_len = if case == 7 { PX * n - 1 } else { PX * n };
            let mut xs = xs;
            if case == 8 {
                xs[3] = 93;
            }
            let res = std::panic::catch_unwind(|| job.check(&[xs], &[ys], len, y_len));
            res.err().map(|e| {
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            })
        };
        assert_eq!(run(0), None, "exact lengths pass");
        let wants = [
            (1, "read past the input"),
            (2, "segment of 6 bytes"),
            (3, "wrong length"),
            (4, "requantization"),
            (5, "0 rows"),
            (6, &format!("{} rows", PX + 1)),
            (7, "written past the output"),
            (8, "read past the input"),
            (9, "columns 8..20"),
            (10, "columns 16..21"),
            (11, "columns 16..16"),
        ];
        for (case, want) in wants {
            let got = run(case).unwrap_or_else(|| panic!("case {case} passed the check"));
            assert!(got.contains(want), "case {case}: {got}");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn oracle(
        m: usize,
        k: usize,
        n: usize,
        a: &[u8],
        a_rs: usize,
        b: &[i8],
        comp: &[i32],
        mult: &[f32],
        add: &[f32],
    ) -> Vec<u8> {
        let mut c = vec![0u8; m * n];
        for i in 0..m {
            for j in 0..n {
                let acc: i32 = (0..k)
                    .map(|kk| i32::from(a[i * a_rs + kk]) * i32::from(b[kk * n + j]))
                    .sum();
                c[i * n + j] = requantize(acc, comp[j], mult[j], add[j]);
            }
        }
        c
    }

    fn check(m: usize, k: usize, n: usize, seed: u64, extreme: bool) {
        let kp = padded_k(k);
        let a_rs = kp + 5;
        let c_rs = n + 3;
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        // a: u8 over the whole range (padding steps past k are zero, as im2col writes them).
        // `extreme`: a 255 and b +-127 everywhere half the time, the largest pair sums (where
        // `vpmaddubsw` would saturate).
        let mut a = vec![0u8; m * a_rs];
        for i in 0..m {
            for kk in 0..k {
                let v = next();
                a[i * a_rs + kk] = if extreme && v % 2 == 0 {
                    255
                } else {
                    (v >> 1) as u8
                };
            }
        }
        let b: Vec<i8> = (0..k * n)
            .map(|_| {
                let v = next();
                match (extreme, v % 4) {
                    (true, 0) => 127,
                    (true, 1) => -127,
                    _ => ((v >> 2) % 255) as i32 as u8 as i8,
                }
            })
            .map(|v| v.max(-127))
            .collect();
        let packed = pack(k, n, |r, j| b[r * n + j]);
        let np = padded_n(n);
        let comp: Vec<i32> = (0..np).map(|_| (next() % 20001) as i32 - 10000).collect();
        // Multipliers that bring sums of this size into and past 0..255, so that both clamps
        // and the rounding of halves are exercised.
        let span = (k as f32 * 255.0 * 127.0).sqrt();
        let mult: Vec<f32> = (0..np)
            .map(|_| (next() % 1000) as f32 / 1000.0 * 4.0 / span)
            .collect();
        let add: Vec<f32> = (0..np)
            .map(|_| (next() % 400) as f32 / 2.0 - 60.0)
            .collect();
        let rq = Requant {
            comp: &comp,
            mult: &mult,
            add: &add,
        };
        let want = oracle(m, k, n, &a, a_rs, &b, &comp, &mult, &add);
        // Padding rows hold junk: the kernels must neither use nor store them.
        let mut ap = pack_rows(m, k, |i, kk| a[i * a_rs + kk]);
        for i in m..m.div_ceil(MR) * MR {
            for kk in 0..kp {
                ap[packed_row_index(i, kk, kp)] = 0xCD;
            }
        }
        for kernel in Int8Kernel::available() {
            let mut c = vec![0xA5u8; m * c_rs];
            gemm_u8i8(kernel, m, kp, n, &ap, &packed, &mut c, c_rs, rq);
            for i in 0..m {
                for j in 0..c_rs {
                    let got = c[i * c_rs + j];
                    if j >= n {
                        assert_eq!(got, 0xA5, "{kernel}: padding column {j} of row {i} written");
                    } else {
                        assert_eq!(
                            got,
                            want[i * n + j],
                            "{kernel}: m {m} k {k} n {n}: c[{i}][{j}]"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_row_block_and_column_tail_matches_the_integer_oracle() {
        for m in [1, 2, 3, 5, 7, 8, 9, 16, 17] {
            for n in [1, 8, 15, 16, 17, 31, 32, 33, 48, 49, 64, 70] {
                for k in [1, 3, 4, 5, 27, 36] {
                    check(m, k, n, (m * 1000 + n * 10 + k) as u64, m % 2 == 0);
                }
            }
        }
    }

    #[test]
    fn long_sums_match_the_integer_oracle() {
        // 1728 = 9 x 192 (A0's last conv): sums past 2^24, where the f32 conversion rounds.
        check(9, 1728, 40, 7, true);
        check(17, 4608, 16, 8, false);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_shapes_match_the_integer_oracle(
            m in 1usize..20, k in 1usize..80, n in 1usize..100, seed in any::<u64>()
        ) {
            check(m, k, n, seed, true);
        }
    }

    #[test]
    fn requantize_rounds_halves_to_even_and_clamps() {
        assert_eq!(requantize(5, 0, 0.5, 0.0), 2);
        assert_eq!(requantize(7, 0, 0.5, 0.0), 4);
        assert_eq!(requantize(-100, 0, 1.0, 0.0), 0);
        assert_eq!(requantize(1000, 0, 1.0, 0.0), 255);
        assert_eq!(requantize(10, -4, 1.0, 0.5), 6);
        assert_eq!(
            requantize(i32::MAX, 1, 1.0, 0.0),
            0,
            "wraps like the SIMD add"
        );
    }

    #[test]
    fn packing_layout() {
        // k 5 (padded to 8), n 40: a 32-wide panel and a 16-wide one.
        assert_eq!(
            (panels(40), panel_width(40, 0), panel_width(40, 1)),
            (2, 32, 16)
        );
        assert_eq!((panel_width(49, 1), padded_n(49)), (32, 64));
        assert_eq!(packed_len(5, 40), 8 * 48);
        let p = pack(5, 40, |r, c| (r * 40 + c) as i8);
        for r in 0..8 {
            for c in 0..48 {
                let (panel, cc) = (c / NR, c % NR);
                let w = panel_width(40, panel);
                let at = panel * NR * 8 + (r / 4) * w * 4 + cc * 4 + r % 4;
                let want = if r < 5 && c < 40 {
                    (r * 40 + c) as i8
                } else {
                    0
                };
                assert_eq!(p[at], want, "row {r} col {c}");
            }
        }
    }

    #[test]
    fn kernel_words_parse() {
        for k in Int8Kernel::ALL {
            assert_eq!(k.name().parse::<Int8Kernel>(), Ok(k));
        }
        assert!("sse".parse::<Int8Kernel>().is_err());
        assert!(Int8Kernel::Scalar.is_available());
        assert!(Int8Kernel::detect().is_available());
    }
}
