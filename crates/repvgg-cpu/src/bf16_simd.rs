//! The bf16 convs' `unsafe` for CPUs with AVX512-BF16 but no AMX (AMD Zen 4 and 5, Intel
//! Cooper Lake): blocks of 8 output pixels read in place times three vectors of weight columns
//! with `vdpbf16ps` ([`direct`]: the convs, and the products of the Winograd convs), the bias,
//! ReLU and the rounding to bf16 (or an f32 store) fused into its end; the Winograd F(2x2, 3x3)
//! transforms ([`winograd_input`], [`winograd_output`]); and the gathered blocks of the convs
//! that cannot be read in place ([`block`]).
//!
//! Entering a function compiled with `#[target_feature]` for instruction sets the build target
//! does not guarantee is `unsafe`: each entry checks exactly those features at run time first.
//! Inside, loads go through bounds-checked slices and `bytemuck`, with two other `unsafe`
//! operations: reinterpreting 512 bits of bf16 pairs as the `__m512bh` type the instruction
//! takes, a transmute between types of the same size for which every bit pattern is valid; and
//! in [`direct`], each pixel's four input bytes read through a raw pointer (slices for eight
//! pixels would not fit the registers), inside the bounds `Job::check` asserts before the
//! kernel runs. Tests back every check, and the tests (`bf16`) run each path against the f64
//! oracle on every machine that has it.
#![allow(unsafe_code)]

/// Rows (output pixels) of a block: those of the in-place driver ([`crate::direct::MR`]).
pub(crate) const MR: usize = crate::direct::MR;

/// Whether this CPU has what [`block`] needs: AVX-512 F and BW, and AVX512-BF16.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `bf16(relu(a · b + bias))` for a block of [`MR`] rows: `a` the rows' packed sums
/// (`[k / 2][MR][2]` bf16 bits), `b` one weight panel (`[k / 2][w][2]`, `w` 16 or 32), `bias`
/// `w` values. `None` (nothing computed) on a CPU without AVX512-BF16.
///
/// # Panics
/// When the lengths do not fit together.
pub(crate) fn block(a: &[u16], b: &[u16], w: usize, bias: &[f32]) -> Option<[[u16; 32]; MR]> {
    assert!(w == 16 || w == 32, "panel of {w} columns");
    assert!(
        a.len().is_multiple_of(2 * MR),
        "packed rows of {} values",
        a.len()
    );
    let steps = a.len() / (2 * MR);
    assert!(
        b.len() >= steps * w * 2 && bias.len() >= w,
        "panel or bias too short"
    );
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: `x86::block` enables avx512f, avx512bw and avx512bf16, which `available`
        // checked on this CPU.
        return Some(unsafe { x86::block(a, b, w, bias, steps) });
    }
    None
}

/// What [`direct`] stores per column of a pixel: `bf16(relu(sum + bias))` (two bytes), or
/// `sum + bias` in f32 (four bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Store {
    Bf16Relu,
    F32,
}

impl Store {
    /// Bytes of one stored value.
    pub(crate) fn bytes(self) -> usize {
        match self {
            Self::Bf16Relu => 2,
            Self::F32 => 4,
        }
    }
}

/// Blocks of [`MR`] pixels read in place (the bf16 twin of the int8 direct job): pixel `r`'s
/// sum runs over `taps` segments of `seg` bytes (bf16 pairs), segment `t` at `x[xs[r] +
/// taps[t]..]`, in the order of the packed weights' steps; columns `cols` of pixel `r` are
/// stored from byte `ys[r]` on.
#[derive(Debug)]
pub(crate) struct Job<'a> {
    /// The padded input, bf16 values as bytes.
    pub x: &'a [u8],
    /// Byte offset of each segment from a pixel's base.
    pub taps: &'a [usize],
    /// Bytes per segment: a multiple of four (whole pairs).
    pub seg: usize,
    /// The packed weights of `n` columns as bytes: `[panel][taps x seg / 4][width][2]` bf16.
    pub b: &'a [u8],
    /// Columns.
    pub n: usize,
    /// Per packed column ([`crate::int8::padded_n`]`(n)` values).
    pub bias: &'a [f32],
    /// The columns to compute (from a multiple of 16).
    pub cols: std::ops::Range<usize>,
    pub store: Store,
}

impl Job<'_> {
    /// Panics unless every byte the kernel reads for the blocks at `xs` and writes for them at
    /// `ys` (all pixels of every block but the last, of the last the first `len`) lies inside
    /// the slices.
    pub(crate) fn check(&self, xs: &[[usize; MR]], ys: &[[usize; MR]], len: usize, y_len: usize) {
        crate::direct::check_blocks(
            (self.x.len(), self.taps, self.seg),
            &self.cols,
            self.n,
            xs,
            ys,
            len,
            (y_len, self.cols.len() * self.store.bytes()),
        );
        let np = crate::int8::padded_n(self.n);
        assert!(
            self.b.len() == self.taps.len() * self.seg * np,
            "packed weights of the wrong length"
        );
        assert!(self.bias.len() >= np, "bias shorter than the columns");
    }
}

/// Runs `job` on the blocks of pixels at `xs` into `y` (see [`Job::check`]); `false` (nothing
/// done) on a CPU without AVX512-BF16.
pub(crate) fn direct(
    job: &Job<'_>,
    xs: &[[usize; MR]],
    ys: &[[usize; MR]],
    len: usize,
    y: &mut [u8],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if available() {
        job.check(xs, ys, len, y.len());
        // SAFETY: `x86::direct` enables avx512f, avx512bw and avx512bf16, which `available`
        // checked on this CPU just above; its reads of `x` rely on the bounds `check` asserted.
        unsafe { x86::direct(job, xs, ys, len, y) };
        return true;
    }
    let _ = (job, xs, ys, len, y);
    false
}

/// The Winograd F(2x2, 3x3) input transform of one tile: `v[pos][c] = bf16(Bᵀ d B)` for
/// every channel, `d[i][j]` the 16 bf16 values of channel `c` at `x[at + i * row + j * ch + c]`
/// (`ch` channels a pixel, a multiple of 16). `false` (nothing done) on a CPU without
/// AVX512-BF16.
///
/// # Panics
/// When the tile or `v` (`16 x ch` values) lie outside the slices.
pub(crate) fn winograd_input(x: &[u16], at: usize, row: usize, ch: usize, v: &mut [u16]) -> bool {
    assert!(ch.is_multiple_of(16), "{ch} channels");
    assert!(at + 3 * row + 4 * ch <= x.len(), "tile read past the input");
    assert!(v.len() >= 16 * ch, "transformed tile of {} values", v.len());
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: `x86::winograd_input` enables avx512f and avx512bw, which `available`
        // checked on this CPU; it reads and writes through bounds-checked slices only.
        unsafe { x86::winograd_input(x, at, row, ch, v) };
        return true;
    }
    false
}

/// The Winograd F(2x2, 3x3) output transform of one tile: `y = bf16(relu(Aᵀ m A + bias))`,
/// `m[pos][c]` (f32, `16 x ch` values), output pixel `(a, b)` of channel `c` at `y[at + a *
/// row + b * ch + c]`. `false` (nothing done) on a CPU without AVX512-BF16.
///
/// # Panics
/// When `m`, `bias` or the tile lie outside the slices.
pub(crate) fn winograd_output(
    m: &[f32],
    bias: &[f32],
    ch: usize,
    y: &mut [u16],
    at: usize,
    row: usize,
) -> bool {
    assert!(ch.is_multiple_of(16), "{ch} channels");
    assert!(
        m.len() >= 16 * ch && bias.len() >= ch,
        "products or bias too short"
    );
    assert!(at + row + 2 * ch <= y.len(), "tile written past the output");
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: as in `winograd_input`.
        unsafe { x86::winograd_output(m, bias, ch, y, at, row) };
        return true;
    }
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use super::MR;

    /// 32 bf16 values as the operand type of `vdpbf16ps`.
    #[inline(always)]
    fn pairs(v: &[u16]) -> __m512bh {
        let bits: __m512i = bytemuck::pod_read_unaligned(bytemuck::cast_slice(&v[..32]));
        // SAFETY: both types are 512 bits of plain data; every bit pattern is a valid value of
        // each.
        unsafe { core::mem::transmute::<__m512i, __m512bh>(bits) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) fn block(
        a: &[u16],
        b: &[u16],
        w: usize,
        bias: &[f32],
        steps: usize,
    ) -> [[u16; 32]; MR] {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let halves = w / 16;
        for s in 0..steps {
            let bs = &b[s * w * 2..(s + 1) * w * 2];
            let b0 = pairs(&bs[..32]);
            let b1 = if halves == 2 { pairs(&bs[32..64]) } else { b0 };
            let rows = &a[s * 2 * MR..(s + 1) * 2 * MR];
            for (r, acc) in acc.iter_mut().enumerate() {
                let pair = u32::from(rows[2 * r]) | u32::from(rows[2 * r + 1]) << 16;
                let bits = _mm512_set1_epi32(pair as i32);
                // SAFETY: as in `pairs`.
                let av = unsafe { core::mem::transmute::<__m512i, __m512bh>(bits) };
                acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                if halves == 2 {
                    acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
                }
            }
        }
        finish(&acc, halves, bias)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) fn direct(
        job: &super::Job<'_>,
        xs: &[[usize; MR]],
        ys: &[[usize; MR]],
        len: usize,
        y: &mut [u8],
    ) {
        const NR: usize = crate::int8::NR;
        let kp = job.taps.len() * job.seg;
        // Vector `j` holds columns `16 j..16 j + 16`: half `j % 2` of panel `j / 2` (panels
        // before the last are NR wide), `4 x width` bytes a step.
        let vector = |j: usize| {
            let (p, w) = (j / 2, crate::int8::panel_width(job.n, j / 2));
            let panel = &job.b[p * NR * kp..(p * NR + w) * kp];
            (&panel[(j % 2) * 64..], w * 4)
        };
        let (j0, nv) = (job.cols.start / 16, job.cols.end.div_ceil(16));
        let last = xs.len() - 1;
        let e = job.store.bytes();
        let mut j = j0;
        while j < nv {
            let v = crate::direct::vectors(nv - j);
            let c0 = 16 * j;
            let cols = job.cols.end - c0;
            let bias = &job.bias[c0..];
            for (bi, (xb, yb)) in xs.iter().zip(ys).enumerate() {
                let at: [usize; MR] = std::array::from_fn(|r| yb[r] + (c0 - job.cols.start) * e);
                let rows = if bi == last { len } else { MR };
                match v {
                    3 => {
                        let vecs = [vector(j), vector(j + 1), vector(j + 2)];
                        let acc = sums::<3>(job, xb, vecs);
                        store::<3>(&acc, &at, rows, cols, bias, job.store, y);
                    }
                    2 => {
                        let acc = sums::<2>(job, xb, [vector(j), vector(j + 1)]);
                        store::<2>(&acc, &at, rows, cols, bias, job.store, y);
                    }
                    _ => {
                        let acc = sums::<1>(job, xb, [vector(j)]);
                        store::<1>(&acc, &at, rows, cols, bias, job.store, y);
                    }
                }
            }
            j += v;
        }
    }

    /// The sums of [`MR`] pixels times `V` vectors of 16 columns, each given by its first
    /// step's bytes and the bytes between two steps.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[inline]
    fn sums<const V: usize>(
        job: &super::Job<'_>,
        xs: &[usize; MR],
        vecs: [(&[u8], usize); V],
    ) -> [[__m512; V]; MR] {
        let steps = job.seg / 4;
        let mut acc = [[_mm512_setzero_ps(); V]; MR];
        // One pointer per pixel: slices (a pointer and a length each) for nine pixels would
        // not fit the general registers beside the loop's own.
        let rows: [*const u8; MR] = std::array::from_fn(|r| job.x[xs[r]..].as_ptr());
        for (t, &off) in job.taps.iter().enumerate() {
            for i in 0..steps {
                let step = t * steps + i;
                let mut bv = [_mm512_setzero_si512(); V];
                for (bv, &(b, sb)) in bv.iter_mut().zip(&vecs) {
                    *bv = bytemuck::pod_read_unaligned(&b[step * sb..step * sb + 64]);
                }
                for (acc_r, &row) in acc.iter_mut().zip(&rows) {
                    // SAFETY: `Job::check` asserted `xs[r] + max(taps) + seg <= x.len()` for
                    // every pixel, and here `off <= max(taps)`, `4 i + 4 <= seg`: the four
                    // bytes lie inside `x`.
                    let pair = unsafe { row.add(off + 4 * i).cast::<i32>().read_unaligned() };
                    // SAFETY: as in `pairs`.
                    let av = unsafe {
                        core::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(pair))
                    };
                    for (acc, &bv) in acc_r.iter_mut().zip(&bv) {
                        // SAFETY: as in `pairs`.
                        let bh = unsafe { core::mem::transmute::<__m512i, __m512bh>(bv) };
                        *acc = _mm512_dpbf16_ps(*acc, av, bh);
                    }
                }
            }
        }
        acc
    }

    /// Rows `..rows` of `acc` plus the bias (columns `..cols` of the vectors), each row stored
    /// at `y[at[r]..]` as `store` says.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    fn store<const V: usize>(
        acc: &[[__m512; V]; MR],
        at: &[usize; MR],
        rows: usize,
        cols: usize,
        bias: &[f32],
        store: super::Store,
        y: &mut [u8],
    ) {
        let mut bv = [_mm512_setzero_ps(); V];
        for (v, bv) in bv.iter_mut().enumerate() {
            *bv = bytemuck::pod_read_unaligned(bytemuck::cast_slice(&bias[v * 16..v * 16 + 16]));
        }
        for (acc_r, &at) in acc.iter().zip(at).take(rows) {
            for v in 0..V {
                let c0 = v * 16;
                if c0 >= cols {
                    break;
                }
                let n = (cols - c0).min(16);
                let z = _mm512_add_ps(acc_r[v], bv[v]);
                match store {
                    super::Store::Bf16Relu => {
                        let q: [u8; 32] = bytemuck::cast(round_relu(z));
                        let to = at + 2 * c0;
                        if n == 16 {
                            y[to..to + 32].copy_from_slice(&q);
                        } else {
                            y[to..to + 2 * n].copy_from_slice(&q[..2 * n]);
                        }
                    }
                    super::Store::F32 => {
                        let q: [u8; 64] = bytemuck::cast(z);
                        let to = at + 4 * c0;
                        if n == 16 {
                            y[to..to + 64].copy_from_slice(&q);
                        } else {
                            y[to..to + 4 * n].copy_from_slice(&q[..4 * n]);
                        }
                    }
                }
            }
        }
    }

    /// 16 bf16 values widened to f32.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    fn widen(x: &[u16]) -> __m512 {
        let h: __m256i = bytemuck::pod_read_unaligned(bytemuck::cast_slice(&x[..16]));
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }

    /// To nearest, ties to even (finite values and infinities).
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    fn narrow(z: __m512) -> [u16; 16] {
        let bits = _mm512_castps_si512(z);
        let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        let up = _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
        bytemuck::cast(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(up)))
    }

    /// `Bᵀ` of F(2x2, 3x3) on four vectors: `[d0 - d2, d1 + d2, d2 - d1, d1 - d3]`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn bt(d: [__m512; 4]) -> [__m512; 4] {
        [
            _mm512_sub_ps(d[0], d[2]),
            _mm512_add_ps(d[1], d[2]),
            _mm512_sub_ps(d[2], d[1]),
            _mm512_sub_ps(d[1], d[3]),
        ]
    }

    /// `Aᵀ` of F(2x2, 3x3) on four vectors: `[m0 + m1 + m2, m1 - m2 - m3]`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn at(m: [__m512; 4]) -> [__m512; 2] {
        [
            _mm512_add_ps(_mm512_add_ps(m[0], m[1]), m[2]),
            _mm512_sub_ps(_mm512_sub_ps(m[1], m[2]), m[3]),
        ]
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn winograd_input(x: &[u16], at: usize, row: usize, ch: usize, v: &mut [u16]) {
        for c in (0..ch).step_by(16) {
            let mut t = [[_mm512_setzero_ps(); 4]; 4];
            for j in 0..4 {
                let col = bt(std::array::from_fn(|i| {
                    widen(&x[at + i * row + j * ch + c..])
                }));
                for i in 0..4 {
                    t[i][j] = col[i];
                }
            }
            for (i, ti) in t.iter().enumerate() {
                for (j, &val) in bt(*ti).iter().enumerate() {
                    let to = (i * 4 + j) * ch + c;
                    v[to..to + 16].copy_from_slice(&narrow(val));
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn winograd_output(
        m: &[f32],
        bias: &[f32],
        ch: usize,
        y: &mut [u16],
        base: usize,
        row: usize,
    ) {
        for c in (0..ch).step_by(16) {
            let load = |pos: usize| -> __m512 {
                bytemuck::pod_read_unaligned(bytemuck::cast_slice(&m[pos * ch + c..][..16]))
            };
            // Aᵀ m: the columns' transforms, as rows of two.
            let cols: [[__m512; 2]; 4] =
                std::array::from_fn(|j| at(std::array::from_fn(|i| load(i * 4 + j))));
            let t: [[__m512; 4]; 2] = std::array::from_fn(|a| std::array::from_fn(|j| cols[j][a]));
            let bv: __m512 = bytemuck::pod_read_unaligned(bytemuck::cast_slice(&bias[c..c + 16]));
            for (a, ta) in t.iter().enumerate() {
                for (b, &val) in at(*ta).iter().enumerate() {
                    let z = _mm512_max_ps(_mm512_add_ps(val, bv), _mm512_setzero_ps());
                    let to = base + a * row + b * ch + c;
                    y[to..to + 16].copy_from_slice(&narrow(z));
                }
            }
        }
    }

    /// `bf16(max(z, 0))`, to nearest with ties to even (finite values after the max).
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    fn round_relu(z: __m512) -> __m256i {
        let z = _mm512_max_ps(z, _mm512_setzero_ps());
        let bits = _mm512_castps_si512(z);
        let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        let up = _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
        _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(up))
    }

    /// `bf16(relu(acc + bias))` per row, `halves` 16-column halves.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    fn finish(acc: &[[__m512; 2]; MR], halves: usize, bias: &[f32]) -> [[u16; 32]; MR] {
        let mut out = [[0u16; 32]; MR];
        for (o, acc) in out.iter_mut().zip(acc) {
            for h in 0..halves {
                let bv: __m512 =
                    bytemuck::pod_read_unaligned(bytemuck::cast_slice(&bias[h * 16..h * 16 + 16]));
                let z = _mm512_max_ps(_mm512_add_ps(acc[h], bv), _mm512_setzero_ps());
                // To nearest, ties to even (finite values after the ReLU's max).
                let bits = _mm512_castps_si512(z);
                let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
                let up = _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
                let q: [u16; 16] =
                    bytemuck::cast(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(up)));
                o[h * 16..h * 16 + 16].copy_from_slice(&q);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    fn panics(f: impl FnOnce()) -> bool {
        catch_unwind(AssertUnwindSafe(f)).is_err()
    }

    /// Every length the kernels index by is checked before they run: exact lengths pass, and
    /// each one short by a value fails on its own.
    #[test]
    fn every_length_the_kernels_rely_on_is_checked() {
        let steps = 3;
        let a = vec![0u16; steps * 2 * MR];
        let bias = [0.5f32; 32];
        for w in [16, 32] {
            let b = vec![0u16; steps * w * 2];
            assert!(!panics(|| {
                block(&a, &b, w, &bias[..w]);
            }));
            assert!(panics(|| {
                block(&a, &b[..b.len() - 1], w, &bias[..w]);
            }));
            assert!(panics(|| {
                block(&a, &b, w, &bias[..w - 1]);
            }));
            assert!(panics(|| {
                block(&a[..a.len() - 1], &b, w, &bias[..w]);
            }));
        }
        assert!(panics(|| {
            block(&a, &vec![0u16; steps * 48], 24, &bias);
        }));
    }

    /// What the in-place kernel and the Winograd transforms read and write is checked before
    /// they run: exact lengths pass, each one short by a value fails on its own.
    #[test]
    fn every_byte_the_direct_kernel_and_the_transforms_touch_is_checked() {
        let (taps, seg, n) = ([0usize, 40, 100], 8, 20);
        let x = vec![0u8; 200];
        let b = vec![0u8; taps.len() * seg * 32];
        let bias = vec![0f32; 32];
        let xs: [usize; MR] = std::array::from_fn(|r| if r == MR - 1 { 92 } else { r * 13 });
        for store in [Store::Bf16Relu, Store::F32] {
            let width = n * store.bytes();
            let ys: [usize; MR] = std::array::from_fn(|r| r * width);
            let job = || Job {
                x: &x,
                taps: &taps,
                seg,
                b: &b,
                n,
                bias: &bias,
                cols: 0..n,
                store,
            };
            let check = |job: &Job<'_>, xs: [usize; MR], len: usize, y_len: usize| {
                !panics(|| job.check(&[xs], &[ys], len, y_len))
            };
            assert!(check(&job(), xs, MR, MR * width), "exact lengths pass");
            let short = Job {
                x: &x[..199],
                ..job()
            };
            assert!(!check(&short, xs, MR, MR * width));
            let mut far = xs;
            far[2] = 93;
            assert!(!check(&job(), far, MR, MR * width));
            assert!(!check(&job(), xs, MR, MR * width - 1));
            assert!(check(&job(), xs, MR - 1, (MR - 1) * width));
            assert!(!check(&job(), xs, 0, MR * width));
            assert!(!check(&job(), xs, MR + 1, MR * width));
            for bad in [
                Job { seg: 6, ..job() },
                Job {
                    b: &b[1..],
                    ..job()
                },
                Job {
                    bias: &bias[..31],
                    ..job()
                },
                Job {
                    cols: 8..n,
                    ..job()
                },
                Job {
                    cols: 16..n + 1,
                    ..job()
                },
            ] {
                assert!(!check(&bad, xs, MR, MR * width), "{bad:?}");
            }
        }
        // Transforms: a 4 x 4 tile of 16 channels, rows 100 values apart.
        let (ch, row) = (16, 100);
        let xt = vec![0u16; 3 * row + 4 * ch];
        let mut v = vec![0u16; 16 * ch];
        assert!(!panics(|| {
            winograd_input(&xt, 0, row, ch, &mut v);
        }));
        assert!(panics(|| {
            winograd_input(&xt[1..], 0, row, ch, &mut v);
        }));
        assert!(panics(|| {
            winograd_input(&xt, 0, row, ch, &mut v[1..]);
        }));
        assert!(panics(|| {
            winograd_input(&xt, 0, row, 8, &mut v);
        }));
        let (m, bias) = (vec![0f32; 16 * ch], vec![0f32; ch]);
        let mut y = vec![0u16; row + 2 * ch];
        assert!(!panics(|| {
            winograd_output(&m, &bias, ch, &mut y, 0, row);
        }));
        assert!(panics(|| {
            winograd_output(&m[1..], &bias, ch, &mut y, 0, row);
        }));
        assert!(panics(|| {
            winograd_output(&m, &bias[1..], ch, &mut y, 0, row);
        }));
        assert!(panics(|| {
            winograd_output(&m, &bias, ch, &mut y, 1, row);
        }));
    }

    /// The in-place kernel against f64 sums in both stores, over 20 columns (a whole vector
    /// and a partial one) of small multiples of 1/8, so that every f32 sum is exact: each
    /// column lands in its place, rounded (bf16 after ReLU) or not (f32), and the bytes after
    /// a pixel's columns stay untouched.
    #[test]
    fn the_in_place_kernel_stores_every_column_of_a_partial_vector() {
        if !available() {
            return;
        }
        let (taps, seg, n) = ([0usize, 40, 100], 8, 20);
        let half = seg / 2;
        let val = |i: usize| ((i * 37 % 23) as f32 - 11.0) / 8.0;
        // Pixel `r` reads from byte `12 r` to its last segment's end: exactly the input.
        let x: Vec<u8> = (0..(12 * (MR - 1) + taps[2] + seg) / 2)
            .flat_map(|i| crate::bf16::to_bf16(val(i)).to_le_bytes())
            .collect();
        let wt = |k: usize, j: usize| val(k * 7 + j + 3);
        let b: Vec<u8> =
            bytemuck::cast_slice(&crate::bf16::pack(taps.len() * half, n, wt)).to_vec();
        let bias: Vec<f32> = (0..32).map(|j| j as f32 / 4.0 - 3.0).collect();
        let xs: [usize; MR] = std::array::from_fn(|r| r * 12);
        let f = crate::bf16::from_bf16;
        for store in [Store::Bf16Relu, Store::F32] {
            let e = store.bytes();
            let stride = n * e + 8;
            let ys: [usize; MR] = std::array::from_fn(|r| r * stride);
            let mut y = vec![0xA5u8; MR * stride];
            let job = Job {
                x: &x,
                taps: &taps,
                seg,
                b: &b,
                n,
                bias: &bias,
                cols: 0..n,
                store,
            };
            assert!(direct(&job, &[xs], &[ys], MR, &mut y));
            for r in 0..MR {
                for (j, &bj) in bias.iter().enumerate().take(n) {
                    let mut sum = f64::from(bj);
                    for (t, &tap) in taps.iter().enumerate() {
                        for i in 0..half {
                            let at = xs[r] + tap + 2 * i;
                            let v = f(u16::from_le_bytes([x[at], x[at + 1]]));
                            sum += f64::from(v) * f64::from(wt(t * half + i, j));
                        }
                    }
                    let at = ys[r] + j * e;
                    match store {
                        Store::Bf16Relu => assert_eq!(
                            u16::from_le_bytes([y[at], y[at + 1]]),
                            crate::bf16::to_bf16(sum.max(0.0) as f32),
                            "{store:?} pixel {r} column {j}: sum {sum}"
                        ),
                        Store::F32 => assert_eq!(
                            f32::from_le_bytes([y[at], y[at + 1], y[at + 2], y[at + 3]]),
                            sum as f32,
                            "{store:?} pixel {r} column {j}"
                        ),
                    }
                }
                let rest = &y[ys[r] + n * e..ys[r] + stride];
                assert!(rest.iter().all(|&v| v == 0xA5), "{store:?} pixel {r}");
            }
        }
    }

    /// One block against the products summed in f64, on whatever the CPU has (nothing to
    /// compare where it lacks AVX512-BF16: `block` says so with `None`).
    #[test]
    fn a_block_sums_its_products_then_adds_the_bias_and_rounds() {
        let steps = 5;
        let val = |i: usize| crate::bf16::to_bf16(((i * 37 % 23) as f32 - 11.0) / 8.0);
        let a: Vec<u16> = (0..steps * 2 * MR).map(val).collect();
        let b: Vec<u16> = (0..steps * 64).map(|i| val(i + 5)).collect();
        let bias: Vec<f32> = (0..32).map(|j| j as f32 / 4.0 - 3.0).collect();
        let Some(out) = block(&a, &b, 32, &bias) else {
            assert!(!available());
            return;
        };
        let f = crate::bf16::from_bf16;
        for r in 0..MR {
            for j in 0..32 {
                let mut sum = f64::from(bias[j]);
                for s in 0..steps {
                    for e in 0..2 {
                        sum += f64::from(f(a[s * 2 * MR + r * 2 + e]))
                            * f64::from(f(b[(s * 32 + j) * 2 + e]));
                    }
                }
                // Small integers over 64: every sum is exact in f32, so only the final rounding
                // to bf16 remains.
                let want = crate::bf16::to_bf16(sum.max(0.0) as f32);
                assert_eq!(out[r][j], want, "row {r} column {j}: sum {sum}");
            }
        }
    }
}
