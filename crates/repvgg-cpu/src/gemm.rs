//! A packed-panel GEMM: `c[m x n] = a[m x k] · b[k x n]` with `b` (the weights) packed once,
//! at preparation, into column panels of [`NR`] columns (`[panel][k][NR]`, zero-padded), and an
//! optional per-column epilogue (scale, shift, accumulate, ReLU) fused into the store.
//!
//! The microkernel keeps `MR x NR` accumulators in registers (8 rows x 2 vectors on AVX-512,
//! 3 rows x 4 vectors on AVX2), broadcasts one `a` value per row and step and streams the panel
//! contiguously, so a panel is read from memory once per block of rows and then from L1/L2. The
//! rows of `a` are read in place (any row stride): no packing of the activations.
//!
//! Threads split the panels (never the rows), so at batch 1 every weight byte is streamed once
//! in all, not once per thread.

use ndarray::{ArrayViewMut2, Axis, ShapeBuilder};
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

/// Asks for the cache line holding `p` (any address: a prefetch never faults), on x86 through
/// pulp's safe SSE token (`prefetcht0`); elsewhere nothing.
#[inline(always)]
fn prefetch(#[allow(unused_variables)] p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    if let Some(sse) = pulp::core_arch::x86::Sse::try_new() {
        sse._mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
}

/// Steps of the sum that the first block of rows of a pass prefetches the weights ahead: at
/// batch 1 the weights come from memory, and the hardware prefetcher alone leaves that block
/// waiting on them.
const PREFETCH_STEPS: usize = 64;

/// f32s per 64-byte cache line.
const LINE_F32: usize = 16;

/// Columns per packed panel.
pub const NR: usize = 32;

/// The widest panel: a last panel of [`NR`] + `NR / 2` columns.
const MAX_W: usize = 48;
const _: () = assert!(MAX_W == NR + NR / 2);

/// Panels of an `n`-column matrix: every one [`NR`] wide but the last, which takes the rest when
/// that is at most `NR / 2` more than a panel (48 columns are one 48-wide panel, which the
/// microkernel runs as 8 rows x 3 vectors, not 32 + 16 with a half-empty second pass).
pub fn panels(n: usize) -> usize {
    let (full, rest) = (n / NR, n % NR);
    if full > 0 && (1..=NR / 2).contains(&rest) {
        full
    } else {
        n.div_ceil(NR)
    }
}

/// Width of panel `p` of an `n`-column matrix: [`NR`], or for the last panel its rest rounded
/// up to `NR / 2`, `NR` or `NR + NR / 2` columns (zero-padded).
pub fn panel_width(n: usize, p: usize) -> usize {
    if p + 1 < panels(n) {
        NR
    } else {
        (n - p * NR).div_ceil(NR / 2) * (NR / 2)
    }
}

/// Elements of a `k x n` matrix packed in panels.
pub fn packed_len(k: usize, n: usize) -> usize {
    (0..panels(n)).map(|p| k * panel_width(n, p)).sum()
}

/// Packs the `k x n` matrix `f(row, col)` into panels, filling `out` (exactly
/// [`packed_len`]`(k, n)` values: callers pack straight into the buffer that keeps them).
pub fn pack_into(out: &mut [f32], k: usize, n: usize, f: impl Fn(usize, usize) -> f32) {
    assert_eq!(
        out.len(),
        packed_len(k, n),
        "packed buffer of the wrong length"
    );
    let mut dst = out.iter_mut();
    for p in 0..panels(n) {
        for kk in 0..k {
            for c in 0..panel_width(n, p) {
                let j = p * NR + c;
                if let Some(d) = dst.next() {
                    *d = if j < n { f(kk, j) } else { 0.0 };
                }
            }
        }
    }
}

/// The per-column epilogue: `z = acc * scale + shift`, `z += c` when accumulating, ReLU.
#[derive(Debug, Clone, Copy)]
pub struct ColEpilogue<'a> {
    /// `n` values each (the columns of this GEMM).
    pub scale: &'a [f32],
    pub shift: &'a [f32],
    pub accumulate: bool,
    pub relu: bool,
}

impl<'a> ColEpilogue<'a> {
    /// The epilogue of columns `cols`.
    fn columns(self, cols: core::ops::Range<usize>) -> Self {
        Self {
            scale: &self.scale[cols.clone()],
            shift: &self.shift[cols],
            ..self
        }
    }
}

/// `c = a · b` (then the epilogue, if any): `a` row-major `m x k` with row stride `a_rs`,
/// `b` packed by [`pack_into`] (`k x n`), `c` row-major `m x n` with row stride `c_rs`.
/// `parallel` splits the panels over rayon's threads.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    a_rs: usize,
    b: &[f32],
    c: &mut [f32],
    c_rs: usize,
    epi: Option<ColEpilogue<'_>>,
    parallel: bool,
) {
    let arch = Arch::new();
    gemm_on(
        &|p| arch.dispatch(p),
        m,
        k,
        n,
        a,
        a_rs,
        b,
        c,
        c_rs,
        epi,
        parallel,
    );
}

/// Runs a panel on one instruction set.
type Dispatch<'d> = dyn for<'a, 'c> Fn(Panel<'a, 'c>) + Sync + 'd;

/// [`gemm`] with the instruction set chosen by `dispatch` (the tests run every one).
#[allow(clippy::too_many_arguments)]
fn gemm_on(
    dispatch: &Dispatch<'_>,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    a_rs: usize,
    b: &[f32],
    c: &mut [f32],
    c_rs: usize,
    epi: Option<ColEpilogue<'_>>,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(a_rs >= k && c_rs >= n, "row strides shorter than the rows");
    assert!(b.len() >= packed_len(k, n), "packed matrix too short");
    assert!(
        epi.is_none_or(|e| e.scale.len() >= n && e.shift.len() >= n),
        "epilogue shorter than the columns"
    );
    let a = &a[..(m - 1) * a_rs + k];
    let c = &mut c[..(m - 1) * c_rs + n];
    let Ok(mut cv) = ArrayViewMut2::from_shape((m, n).strides((c_rs, 1)), c) else {
        unreachable!("the slice covers (m - 1) * c_rs + n elements")
    };
    let run = |(p, blk): (usize, ArrayViewMut2<'_, f32>)| {
        let cols = p * NR..p * NR + blk.ncols();
        let w = panel_width(n, p);
        dispatch(Panel {
            k,
            a,
            a_rs,
            w,
            off: 0,
            b: &b[p * k * NR..p * k * NR + k * w],
            c: blk,
            epi: epi.map(|e| e.columns(cols.clone())),
        });
    };
    // Every panel but the last is NR columns wide; the last one takes the rest.
    let last = panels(n) - 1;
    let (mut full, rest) = cv.view_mut().split_at(Axis(1), last * NR);
    let full = full.axis_chunks_iter_mut(Axis(1), NR);
    if parallel && last > 0 && rayon::current_num_threads() > 1 {
        rayon::join(
            || full.into_par_iter().enumerate().for_each(run),
            || run((last, rest)),
        );
    } else {
        full.enumerate().for_each(run);
        run((last, rest));
    }
}

/// Steps of the sum per block when the sum is split (see `Panel::rows`): 256 steps of a
/// 32-column panel are 32 KiB, which stay in L1 while every row block uses them.
const KC: usize = 256;

/// The steps `range` of the sum that one pass over the rows does; `first` starts from zero
/// (else from the partial sums in `c`), `last` applies the epilogue.
struct KSteps {
    range: core::ops::Range<usize>,
    first: bool,
    last: bool,
}

/// One panel of columns (at most [`NR`]), every row.
struct Panel<'a, 'c> {
    k: usize,
    a: &'a [f32],
    a_rs: usize,
    /// Panel width (`NR / 2`, `NR` or `NR + NR / 2`): the row stride of `b`.
    w: usize,
    /// First column of the panel that `c` holds (a column block of a 48-wide panel on AVX2).
    off: usize,
    /// `[k][w]`.
    b: &'a [f32],
    c: ArrayViewMut2<'c, f32>,
    epi: Option<ColEpilogue<'a>>,
}

impl WithSimd for Panel<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        match (S::F32_LANES, self.w) {
            (16, 48) => self.rows::<S, 8, 3>(simd),
            (16, 32) => self.rows::<S, 8, 2>(simd),
            (16, 16) => self.rows::<S, 8, 1>(simd),
            (8, 48) => {
                // 32 + 16 columns: 3 x 6 vectors would not fit AVX2's 16 registers.
                let (left, right) = self.split_columns(NR);
                left.rows::<S, 3, 4>(simd);
                right.rows::<S, 6, 2>(simd);
            }
            (8, 32) => self.rows::<S, 3, 4>(simd),
            (8, 16) => self.rows::<S, 6, 2>(simd),
            _ => self.scalar(),
        }
    }
}

/// Calls `micro::<S, R, V, PF>` with `R` the row count `$mr` (1..=8) as a constant and `PF`
/// whether it prefetches the panel ahead.
macro_rules! by_rows {
    ($self:ident, $simd:ident, $mr:expr, $i0:expr, $V:ident, $PF:expr, $ks:expr) => {
        match $mr {
            8 => $self.micro::<S, 8, $V, $PF>($simd, $i0, $ks),
            7 => $self.micro::<S, 7, $V, $PF>($simd, $i0, $ks),
            6 => $self.micro::<S, 6, $V, $PF>($simd, $i0, $ks),
            5 => $self.micro::<S, 5, $V, $PF>($simd, $i0, $ks),
            4 => $self.micro::<S, 4, $V, $PF>($simd, $i0, $ks),
            3 => $self.micro::<S, 3, $V, $PF>($simd, $i0, $ks),
            2 => $self.micro::<S, 2, $V, $PF>($simd, $i0, $ks),
            _ => $self.micro::<S, 1, $V, $PF>($simd, $i0, $ks),
        }
    };
}

impl Panel<'_, '_> {
    /// The panel's columns `..at` and `at..` as two panels over the same packed rows.
    fn split_columns(self, at: usize) -> (Self, Self) {
        let (left, right) = self.c.split_at(Axis(1), at);
        let n = at + right.ncols();
        let (epi_l, epi_r) = (
            self.epi.map(|e| e.columns(0..at)),
            self.epi.map(|e| e.columns(at..n)),
        );
        (
            Panel {
                c: left,
                epi: epi_l,
                ..self
            },
            Panel {
                off: self.off + at,
                c: right,
                epi: epi_r,
                ..self
            },
        )
    }

    #[inline(always)]
    fn rows<S: Simd, const MR: usize, const V: usize>(mut self, simd: S) {
        // Balanced row blocks: 49 rows as 7 x 7, not 6 x 8 + 1 (a one-row block streams the
        // whole panel for a sixteenth of the arithmetic).
        let m = self.c.nrows();
        let blocks = m.div_ceil(MR);
        let (base, extra) = (m / blocks.max(1), m % blocks.max(1));
        // Long sums over a full panel are split into blocks of at most `KC` steps, each run
        // over every row while its slice of the panel stays in L1; the output rows hold the
        // partial sums in between, so this needs a full panel and no accumulation into `c`.
        let k = self.k;
        let full = self.c.ncols() == V * S::F32_LANES;
        let kblocks = if full && k > KC && !self.epi.is_some_and(|e| e.accumulate) {
            k.div_ceil(KC)
        } else {
            1
        };
        let kc = k.div_ceil(kblocks);
        for kb in 0..kblocks {
            let ks = KSteps {
                range: kb * kc..k.min((kb + 1) * kc),
                first: kb == 0,
                last: kb + 1 == kblocks,
            };
            let mut i0 = 0;
            for blk in 0..blocks {
                let mr = base + usize::from(blk < extra);
                if blk == 0 {
                    by_rows!(self, simd, mr, i0, V, true, &ks);
                } else {
                    by_rows!(self, simd, mr, i0, V, false, &ks);
                }
                i0 += mr;
            }
        }
    }

    /// Rows `i0..i0 + R`: `R x V` vector accumulators over the whole `k`, then the store.
    #[inline(always)]
    fn micro<S: Simd, const R: usize, const V: usize, const PF: bool>(
        &mut self,
        simd: S,
        i0: usize,
        ks: &KSteps,
    ) {
        let l = S::F32_LANES;
        let (k0, k1) = (ks.range.start, ks.range.end);
        let rows: [&[f32]; R] = core::array::from_fn(|r| {
            let s = (i0 + r) * self.a_rs;
            &self.a[s + k0..s + k1]
        });
        let w = V * l;
        let (stride, off) = (self.w, self.off);
        let b = &self.b[k0 * stride..k1 * stride];
        let zero = simd.splat_f32s(0.0);
        let mut acc = [[zero; V]; R];
        // Past the end of this pass's steps the prefetch runs on into the next block of steps,
        // the next panel (which the packing puts right after this one) or what follows the
        // matrix (the next Winograd position's weights).
        let ahead = b.as_ptr().wrapping_add(PREFETCH_STEPS * stride + off);
        for (kk, brow) in b.chunks_exact(stride).enumerate() {
            if PF {
                for line in 0..(V * l).div_ceil(LINE_F32) {
                    prefetch(ahead.wrapping_add(kk * stride + LINE_F32 * line));
                }
            }
            let brow = &brow[off..off + w];
            let bv: [S::f32s; V] = core::array::from_fn(|v| {
                bytemuck::pod_read_unaligned(bytemuck::cast_slice(&brow[v * l..(v + 1) * l]))
            });
            for (acc_r, row) in acc.iter_mut().zip(&rows) {
                let av = simd.splat_f32s(row[kk]);
                for (a, b) in acc_r.iter_mut().zip(&bv) {
                    *a = simd.mul_add_f32s(av, *b, *a);
                }
            }
        }
        let n = self.c.ncols();
        if n == w {
            // A full panel: the epilogue on vectors (after the last block of steps only).
            let epi = if ks.last { self.epi } else { None };
            let epi = epi.map(|e| {
                let v = |src: &[f32], i: usize| -> S::f32s {
                    bytemuck::pod_read_unaligned(bytemuck::cast_slice(&src[i * l..(i + 1) * l]))
                };
                let s: [S::f32s; V] = core::array::from_fn(|i| v(e.scale, i));
                let h: [S::f32s; V] = core::array::from_fn(|i| v(e.shift, i));
                (s, h, e.accumulate, e.relu)
            });
            for (r, acc_r) in acc.iter().enumerate() {
                let mut row = self.c.row_mut(i0 + r);
                let Some(dst) = row.as_slice_mut() else {
                    unreachable!("rows of c are contiguous")
                };
                for (i, (&a, d)) in acc_r.iter().zip(dst.chunks_exact_mut(l)).enumerate() {
                    let mut z = a;
                    if !ks.first {
                        // Add the partial sums of the earlier blocks of steps.
                        z = simd.add_f32s(z, bytemuck::pod_read_unaligned(bytemuck::cast_slice(d)));
                    }
                    if let Some((s, h, accumulate, relu)) = epi {
                        z = simd.mul_add_f32s(z, s[i], h[i]);
                        if accumulate {
                            z = simd
                                .add_f32s(z, bytemuck::pod_read_unaligned(bytemuck::cast_slice(d)));
                        }
                        if relu {
                            z = simd.max_f32s(z, zero);
                        }
                    }
                    d.copy_from_slice(bytemuck::cast_slice(core::slice::from_ref(&z)));
                }
            }
            return;
        }
        for (r, acc_r) in acc.iter().enumerate() {
            let mut vals = [0.0f32; MAX_W];
            vals[..w].copy_from_slice(bytemuck::cast_slice(acc_r.as_slice()));
            let mut row = self.c.row_mut(i0 + r);
            let Some(dst) = row.as_slice_mut() else {
                unreachable!("rows of c are contiguous")
            };
            store(dst, &vals[..n], self.epi);
        }
    }

    /// Any other vector width: plain loops, over a whole panel (only AVX2 splits a panel into
    /// column blocks).
    fn scalar(mut self) {
        debug_assert_eq!(self.off, 0, "the scalar path runs whole panels");
        let (m, n) = self.c.dim();
        for i in 0..m {
            let mut vals = [0.0f32; MAX_W];
            for kk in 0..self.k {
                let av = self.a[i * self.a_rs + kk];
                let brow = &self.b[kk * self.w..(kk + 1) * self.w];
                for (v, b) in vals.iter_mut().zip(brow) {
                    *v += av * b;
                }
            }
            let mut row = self.c.row_mut(i);
            let Some(dst) = row.as_slice_mut() else {
                unreachable!("rows of c are contiguous")
            };
            store(dst, &vals[..n], self.epi);
        }
    }
}

#[inline(always)]
fn store(dst: &mut [f32], vals: &[f32], epi: Option<ColEpilogue<'_>>) {
    match epi {
        None => dst.copy_from_slice(vals),
        Some(e) => {
            let it = dst.iter_mut().zip(vals).zip(e.scale).zip(e.shift);
            match (e.accumulate, e.relu) {
                (false, false) => it.for_each(|(((d, &v), &s), &h)| *d = v * s + h),
                (false, true) => it.for_each(|(((d, &v), &s), &h)| *d = (v * s + h).max(0.0)),
                (true, false) => it.for_each(|(((d, &v), &s), &h)| *d += v * s + h),
                (true, true) => it.for_each(|(((d, &v), &s), &h)| *d = (*d + v * s + h).max(0.0)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, k: usize, n: usize, a: &[f32], a_rs: usize, b: &[f32]) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for kk in 0..k {
                    c[i * n + j] += f64::from(a[i * a_rs + kk]) * f64::from(b[kk * n + j]);
                }
            }
        }
        c
    }

    fn check(m: usize, k: usize, n: usize, epi: bool, parallel: bool) {
        let a_rs = k + 3;
        let c_rs = n + 5;
        let a: Vec<f32> = (0..m * a_rs)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 24.0)
            .collect();
        let scale: Vec<f32> = (0..n).map(|j| 0.5 + j as f32 / 64.0).collect();
        let shift: Vec<f32> = (0..n).map(|j| j as f32 / 8.0 - 2.0).collect();
        let mut packed = vec![f32::NAN; packed_len(k, n)];
        pack_into(&mut packed, k, n, |r, j| b[r * n + j]);
        let init = |i: usize| (i % 7) as f32 - 3.0;
        let want = naive(m, k, n, &a, a_rs, &b);
        // Without an epilogue, or with each of its four (accumulate, relu) forms.
        let forms: &[Option<(bool, bool)>] = if epi {
            &[
                Some((false, false)),
                Some((false, true)),
                Some((true, false)),
                Some((true, true)),
            ]
        } else {
            &[None]
        };
        for &form in forms {
            let e = form.map(|(accumulate, relu)| ColEpilogue {
                scale: &scale,
                shift: &shift,
                accumulate,
                relu,
            });
            for (isa, dispatch) in isas() {
                let mut c: Vec<f32> = (0..m * c_rs).map(init).collect();
                gemm_on(
                    &*dispatch, m, k, n, &a, a_rs, &packed, &mut c, c_rs, e, parallel,
                );
                for i in 0..m {
                    for j in 0..c_rs {
                        let got = c[i * c_rs + j];
                        let before = init(i * c_rs + j);
                        if j >= n {
                            assert_eq!(got, before, "{isa}: padding column {j} of row {i} written");
                            continue;
                        }
                        let mut w = want[i * n + j];
                        if let Some((accumulate, relu)) = form {
                            w = w * f64::from(scale[j]) + f64::from(shift[j]);
                            if accumulate {
                                w += f64::from(before);
                            }
                            if relu {
                                w = w.max(0.0);
                            }
                        }
                        let tol = 1e-4 * (1.0 + w.abs()) * (k as f64).sqrt();
                        assert!(
                            (f64::from(got) - w).abs() <= tol,
                            "{isa} {form:?}: m {m} k {k} n {n}: c[{i}][{j}] = {got}, want {w}"
                        );
                    }
                }
            }
        }
    }

    /// Every instruction set this machine can run: the best one, AVX2 (x86-64-v3) when
    /// present, and the scalar fallback.
    fn isas() -> Vec<(&'static str, Box<Dispatch<'static>>)> {
        let mut v: Vec<(&'static str, Box<Dispatch<'static>>)> = vec![
            ("best", Box::new(|p| Arch::new().dispatch(p))),
            (
                "scalar",
                Box::new(|p| Simd::vectorize(pulp::Scalar::new(), p)),
            ),
        ];
        #[cfg(target_arch = "x86_64")]
        if let Some(v3) = pulp::x86::V3::try_new() {
            v.push(("avx2", Box::new(move |p| Simd::vectorize(v3, p))));
        }
        v
    }

    #[test]
    fn every_row_block_and_column_tail_matches_naive() {
        for m in [1, 2, 3, 5, 7, 8, 9, 16, 17, 25] {
            for n in [1, 15, 16, 31, 32, 33, 40, 48, 49, 70, 80, 96] {
                for k in [1, 3, 27] {
                    check(m, k, n, false, m % 2 == 0);
                    check(m, k, n, true, m % 2 == 1);
                }
            }
        }
    }

    #[test]
    fn panels_are_full_width_but_the_last_which_takes_the_rest() {
        let widths = |n: usize| {
            (0..panels(n))
                .map(|p| panel_width(n, p))
                .collect::<Vec<_>>()
        };
        assert_eq!(widths(1), [NR / 2]);
        assert_eq!(widths(NR / 2), [NR / 2]);
        assert_eq!(widths(NR / 2 + 1), [NR]);
        assert_eq!(widths(NR), [NR]);
        assert_eq!(widths(NR + 1), [NR + NR / 2]);
        assert_eq!(widths(NR + NR / 2), [NR + NR / 2]);
        assert_eq!(widths(NR + NR / 2 + 1), [NR, NR]);
        assert_eq!(widths(2 * NR), [NR, NR]);
        assert_eq!(widths(2 * NR + 1), [NR, NR + NR / 2]);
        assert_eq!(widths(3 * NR - 1), [NR, NR, NR]);
        assert_eq!(widths(40 * NR), [NR; 40]);
        for (k, n, len) in [
            (3, 48, 3 * 48),
            (5, 70, 5 * 80),
            (1, 1, 16),
            (7, 64, 7 * 64),
            (2, 40, 2 * 48),
            (4, 90, 4 * 96),
        ] {
            assert_eq!(packed_len(k, n), len, "k {k} n {n}");
            let mut out = vec![f32::NAN; 1 + len];
            out[0] = -1.0;
            pack_into(&mut out[1..], k, n, |r, c| (r * n + c) as f32);
            assert_eq!(out[0], -1.0, "writes nothing before its slice");
            assert!(
                !out[1..].iter().any(|v| v.is_nan()),
                "fills every packed value"
            );
            // Panel p, row r, column c sits at offset p * k * NR + r * width + c.
            let last = panels(n) - 1;
            for r in 0..k {
                for j in 0..n {
                    let p = (j / NR).min(last);
                    let c = j - p * NR;
                    let at = 1 + p * k * NR + r * panel_width(n, p) + c;
                    assert_eq!(out[at], (r * n + j) as f32, "k {k} n {n} row {r} col {j}");
                }
                // Columns past n in the last panel are zeros.
                let p = last;
                for c in n - p * NR..panel_width(n, p) {
                    assert_eq!(out[1 + p * k * NR + r * panel_width(n, p) + c], 0.0);
                }
            }
        }
    }

    #[test]
    fn empty_products_write_nothing() {
        let (a, mut c) = (vec![1.0f32; 8], vec![7.0f32; 8]);
        let mut b = vec![0.0; packed_len(2, 3)];
        pack_into(&mut b, 2, 3, |_, _| 1.0);
        gemm(0, 2, 3, &a, 2, &b, &mut c, 3, None, true);
        gemm(2, 2, 0, &a, 2, &b, &mut c, 3, None, false);
        assert_eq!(c, [7.0; 8]);
    }

    #[test]
    fn long_sums_split_in_blocks_match_naive() {
        // Around one, two and more blocks of KC steps, full and short panels, every row block.
        for k in [KC - 1, KC, KC + 1, 2 * KC, 2 * KC + 1, 3 * KC + 37] {
            for (m, n) in [(1, 32), (7, 16), (9, 48), (17, 64), (8, 33), (5, 80)] {
                check(m, k, n, true, m % 2 == 1);
                check(m, k, n, false, m % 2 == 0);
            }
        }
    }

    #[test]
    fn long_k_and_many_panels() {
        check(49, 1728, 130, true, true);
        check(3, 300, 1000, false, true);
    }
}
