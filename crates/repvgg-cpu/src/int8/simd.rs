//! The crate's only `unsafe` code: entering the int8 GEMM's two SIMD kernels, functions
//! compiled with `#[target_feature]` for instruction sets that the build target does not
//! guarantee. Calling such a function is `unsafe` because running it on a CPU without those
//! features is undefined; each call below is preceded by a run-time check of exactly the
//! features the function enables.
//!
//! Inside the GEMM kernels little else is `unsafe`: the intrinsics they call take and return
//! values (no pointers), loads go through bounds-checked slices and `bytemuck`, and the lengths
//! they index by are asserted by `PanelJob::check` before either is entered. Each vector of
//! output codes is stored by a masked store (`vpmovdb` to memory) into a bounds-checked slice
//! of exactly the bytes its mask lets through. The direct kernel ([`vnni_direct`]) reads each
//! pixel's four input bytes through a raw pointer (slices for nine pixels would not fit the
//! registers): `DirectJob::check` asserts, before it runs, that every pixel's furthest segment
//! ends inside the input, and a test backs each of those checks. The tests (`int8::gemm`,
//! `int8::conv`) run each kernel this machine has against an integer oracle.
#![allow(unsafe_code)]

use crate::direct::MR as PX;
use crate::int8::gemm::{DirectJob, PanelJob};

/// Whether this CPU has what [`vnni_panel`] needs: AVX-512 F and BW, and VNNI.
pub(crate) fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether this CPU has what [`avx2_panel`] needs: AVX2 and FMA.
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Runs `job` with AVX-512 VNNI; `false` (nothing done) on a CPU without it.
pub(crate) fn vnni_panel(job: &mut PanelJob<'_>) -> bool {
    #[cfg(target_arch = "x86_64")]
    if has_vnni() {
        // SAFETY: `x86::vnni_panel` enables exactly avx512f, avx512bw and avx512vnni, which
        // `has_vnni` has detected on this CPU just above. The function touches memory only
        // through `job`'s slices (bounds-checked; lengths asserted by `PanelJob::check`).
        unsafe { x86::vnni_panel(job) };
        return true;
    }
    let _ = job;
    false
}

/// Runs blocks of a direct conv (`xs`, `ys`, `len`: [`DirectJob::check`]) with AVX-512 VNNI
/// into `y`; `false` (nothing done) on a CPU without it.
pub(crate) fn vnni_direct(
    job: &DirectJob<'_>,
    xs: &[[usize; PX]],
    ys: &[[usize; PX]],
    len: usize,
    y: &mut [u8],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if has_vnni() {
        job.check(xs, ys, len, y.len());
        // SAFETY: `x86::vnni_direct` enables exactly avx512f, avx512bw and avx512vnni, which
        // `has_vnni` has detected on this CPU just above. It touches memory only through the
        // slices of `job` and `y` (bounds-checked; the lengths asserted by `check`).
        unsafe { x86::vnni_direct(job, xs, ys, len, y) };
        return true;
    }
    let _ = (job, xs, ys, len, y);
    false
}

/// Runs `job` with AVX2; `false` (nothing done) on a CPU without it.
pub(crate) fn avx2_panel(job: &mut PanelJob<'_>) -> bool {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: `x86::avx2_panel` enables exactly avx2 and fma, which `has_avx2` has detected
        // on this CPU just above; memory is touched only through `job`'s checked slices.
        unsafe { x86::avx2_panel(job) };
        return true;
    }
    let _ = job;
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use crate::direct::MR as PX;
    use crate::int8::gemm::{DirectJob, KG, MR, NR, PanelJob, Requant, panel_width};

    /// Bytes of one step of a packed row block: [`MR`] rows x four steps.
    const A_STEP: usize = MR * KG;

    fn load512(bytes: &[u8]) -> __m512i {
        bytemuck::pod_read_unaligned(&bytes[..64])
    }

    fn load128(bytes: &[u8]) -> __m128i {
        bytemuck::pod_read_unaligned(&bytes[..16])
    }

    /// Row block `blk` of `a`: `kp / 4` steps of `[MR][4]` bytes.
    fn block<'a>(job: &'a PanelJob<'_>, blk: usize) -> &'a [[u8; A_STEP]] {
        let len = MR * job.kp;
        bytemuck::cast_slice(&job.a[blk * len..(blk + 1) * len])
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn vnni_panel(job: &mut PanelJob<'_>) {
        for blk in 0..job.m.div_ceil(MR) {
            if job.w == 2 * 16 {
                vnni_block::<2>(job, blk);
            } else {
                vnni_block::<1>(job, blk);
            }
        }
    }

    /// Rows `MR blk..` (all [`MR`] computed, those below `m` stored), `V` vectors of 16
    /// columns: `MR x V` accumulators over the whole sum, then the requantization on vectors.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    fn vnni_block<const V: usize>(job: &mut PanelJob<'_>, blk: usize) {
        let a = block(job, blk);
        let b: &[u8] = bytemuck::cast_slice(job.b);
        let mut acc = [[_mm512_setzero_si512(); V]; MR];
        // Chunks of a compile-time size: no bounds checks inside the loop.
        for (a8, step) in a.iter().zip(b.chunks_exact(V * 64)) {
            let mut bv = [_mm512_setzero_si512(); V];
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = load512(&step[v * 64..]);
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let a4 = [a8[r * 4], a8[r * 4 + 1], a8[r * 4 + 2], a8[r * 4 + 3]];
                let av = _mm512_set1_epi32(i32::from_le_bytes(a4));
                for (acc, &bv) in acc_r.iter_mut().zip(&bv) {
                    *acc = _mm512_dpbusd_epi32(*acc, av, bv);
                }
            }
        }
        let rows = (job.m - blk * MR).min(MR);
        let at: [usize; MR] = std::array::from_fn(|r| (blk * MR + r) * job.c_rs);
        store::<V, MR>(&acc, &at, rows, job.cols, &job.rq, job.c);
    }

    /// The requantization of rows `..rows` of `acc` (columns `..cols` of the panel whose
    /// values `rq` starts at), each row stored at `c[at[r]..]`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    fn store<const V: usize, const M: usize>(
        acc: &[[__m512i; V]; M],
        at: &[usize; M],
        rows: usize,
        cols: usize,
        rq: &Requant<'_>,
        c: &mut [u8],
    ) {
        let zero = _mm512_setzero_ps();
        let top = _mm512_set1_ps(255.0);
        let mut comp = [_mm512_setzero_si512(); V];
        let mut mult = [zero; V];
        let mut add = [zero; V];
        for v in 0..V {
            let cols = v * 16..v * 16 + 16;
            comp[v] = bytemuck::pod_read_unaligned(bytemuck::cast_slice(&rq.comp[cols.clone()]));
            mult[v] = bytemuck::pod_read_unaligned(bytemuck::cast_slice(&rq.mult[cols.clone()]));
            add[v] = bytemuck::pod_read_unaligned(bytemuck::cast_slice(&rq.add[cols]));
        }
        for (acc_r, &at) in acc.iter().zip(at).take(rows) {
            for v in 0..V {
                let c0 = v * 16;
                if c0 >= cols {
                    break;
                }
                let z = _mm512_cvtepi32_ps(_mm512_add_epi32(acc_r[v], comp[v]));
                let z = _mm512_fmadd_ps(z, mult[v], add[v]);
                let z = _mm512_min_ps(_mm512_max_ps(z, zero), top);
                let codes = _mm512_cvtps_epi32(z);
                let n = (cols - c0).min(16);
                let dst = &mut c[at + c0..at + c0 + n];
                let lanes: __mmask16 = if n == 16 { 0xFFFF } else { (1 << n) - 1 };
                // SAFETY: the mask lets the store write the first `n` lanes' bytes only, and
                // `dst` (bounds-checked above) holds `n` bytes.
                unsafe {
                    _mm512_mask_cvtepi32_storeu_epi8(dst.as_mut_ptr().cast(), lanes, codes);
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn vnni_direct(
        job: &DirectJob<'_>,
        xs: &[[usize; PX]],
        ys: &[[usize; PX]],
        len: usize,
        y: &mut [u8],
    ) {
        let kp = job.taps.len() * job.seg;
        let b: &[u8] = bytemuck::cast_slice(job.b);
        // Vector `j` holds columns `16 j..16 j + 16`: half `j % 2` of panel `j / 2` (panels
        // before the last are NR wide), `4 x width` bytes a step.
        let vector = |j: usize| {
            let (p, w) = (j / 2, panel_width(job.n, j / 2));
            let panel = &b[p * NR * kp..(p * NR + w) * kp];
            (&panel[(j % 2) * 64..], w * KG)
        };
        let (j0, nv) = (job.cols.start / 16, job.cols.end.div_ceil(16));
        let last = xs.len() - 1;
        let mut j = j0;
        while j < nv {
            let v = crate::direct::vectors(nv - j);
            let c0 = 16 * j;
            let cols = job.cols.end - c0;
            let rq = Requant {
                comp: &job.rq.comp[c0..],
                mult: &job.rq.mult[c0..],
                add: &job.rq.add[c0..],
            };
            // Each block in turn with this vector's weights (in L1 for short sums).
            for (bi, (xb, yb)) in xs.iter().zip(ys).enumerate() {
                let at: [usize; PX] = std::array::from_fn(|r| yb[r] + c0 - job.cols.start);
                let rows = if bi == last { len } else { PX };
                match v {
                    3 => {
                        let vecs = [vector(j), vector(j + 1), vector(j + 2)];
                        let acc = direct_sums::<3>(job, xb, vecs);
                        store::<3, PX>(&acc, &at, rows, cols, &rq, y);
                    }
                    2 => {
                        let acc = direct_sums::<2>(job, xb, [vector(j), vector(j + 1)]);
                        store::<2, PX>(&acc, &at, rows, cols, &rq, y);
                    }
                    _ => {
                        let acc = direct_sums::<1>(job, xb, [vector(j)]);
                        store::<1, PX>(&acc, &at, rows, cols, &rq, y);
                    }
                }
            }
            j += v;
        }
    }

    /// The sums of [`PX`] pixels times `V` vectors of 16 columns, each given by its first
    /// step's bytes and the bytes between two steps.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    fn direct_sums<const V: usize>(
        job: &DirectJob<'_>,
        xs: &[usize; PX],
        vecs: [(&[u8], usize); V],
    ) -> [[__m512i; V]; PX] {
        let steps = job.seg / KG;
        let total = job.taps.len() * steps;
        // Every step's 64 bytes of every vector lie inside its slice.
        for &(b, sb) in &vecs {
            assert!(
                total == 0 || (total - 1) * sb + 64 <= b.len(),
                "weight vector of {} bytes for {total} steps {sb} apart",
                b.len()
            );
        }
        let mut acc = [[_mm512_setzero_si512(); V]; PX];
        // One pointer per pixel and per vector: slices (a pointer and a length each) would not
        // fit the general registers beside the loop's own, and their bounds checks would cost
        // as many instructions as the products.
        let rows: [*const u8; PX] = std::array::from_fn(|r| job.x[xs[r]..].as_ptr());
        let cols: [(*const u8, usize); V] = vecs.map(|(b, sb)| (b.as_ptr(), sb));
        for (t, &off) in job.taps.iter().enumerate() {
            for i in 0..steps {
                let step = t * steps + i;
                let mut bv = [_mm512_setzero_si512(); V];
                for (bv, &(b, sb)) in bv.iter_mut().zip(&cols) {
                    // SAFETY: `step < total`, and the assert above keeps `step * sb + 64` bytes
                    // inside the vector's slice.
                    *bv = unsafe { b.add(step * sb).cast::<__m512i>().read_unaligned() };
                }
                for (acc_r, &row) in acc.iter_mut().zip(&rows) {
                    // SAFETY: `DirectJob::check` asserted `xs[r] + max(taps) + seg <= x.len()`
                    // for every pixel, and here `off <= max(taps)`, `KG * i + KG <= seg`: the
                    // four bytes lie inside `x`.
                    let a4 = unsafe { row.add(off + KG * i).cast::<i32>().read_unaligned() };
                    let av = _mm512_set1_epi32(a4);
                    for (acc, &bv) in acc_r.iter_mut().zip(&bv) {
                        *acc = _mm512_dpbusd_epi32(*acc, av, bv);
                    }
                }
            }
        }
        acc
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn avx2_panel(job: &mut PanelJob<'_>) {
        for blk in 0..job.m.div_ceil(MR) {
            for cb in 0..job.cols.div_ceil(8) {
                // Two halves of the block, 4 rows each (8 accumulators).
                avx2_micro(job, blk, 0, cb);
                if blk * MR + 4 < job.m {
                    avx2_micro(job, blk, 4, cb);
                }
            }
        }
    }

    /// Rows `MR blk + r0..+4`, columns `8 cb..8 cb + 8`. Each step's four weights of a column
    /// are widened to i16 and multiplied with the row's four u8 (widened) by `vpmaddwd`, which
    /// sums them in pairs into i32: two accumulators per row hold the two half-sums of columns
    /// 0-3 and 4-7, added together at the end.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn avx2_micro(job: &mut PanelJob<'_>, blk: usize, r0: usize, cb: usize) {
        const R: usize = 4;
        let a = block(job, blk);
        let b: &[u8] = bytemuck::cast_slice(job.b);
        let step_bytes = job.w * KG;
        let mut lo = [_mm256_setzero_si256(); R];
        let mut hi = [_mm256_setzero_si256(); R];
        for (a8, step) in a.iter().zip(b.chunks_exact(step_bytes)) {
            let blk = &step[cb * 32..cb * 32 + 32];
            let b_lo = _mm256_cvtepi8_epi16(load128(blk));
            let b_hi = _mm256_cvtepi8_epi16(load128(&blk[16..]));
            for r in 0..R {
                let at = (r0 + r) * 4;
                let [a0, a1, a2, a3] = [a8[at], a8[at + 1], a8[at + 2], a8[at + 3]].map(u64::from);
                let av = _mm256_set1_epi64x((a0 | a1 << 16 | a2 << 32 | a3 << 48) as i64);
                lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(av, b_lo));
                hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(av, b_hi));
            }
        }
        let c0 = cb * 8;
        let comp: __m256i =
            bytemuck::pod_read_unaligned(bytemuck::cast_slice(&job.rq.comp[c0..c0 + 8]));
        let mult: __m256 =
            bytemuck::pod_read_unaligned(bytemuck::cast_slice(&job.rq.mult[c0..c0 + 8]));
        let add: __m256 =
            bytemuck::pod_read_unaligned(bytemuck::cast_slice(&job.rq.add[c0..c0 + 8]));
        let n = (job.cols - c0).min(8);
        let rows = (job.m - blk * MR - r0).min(R);
        for r in 0..rows {
            // Lanes of hadd: [c0 c1 c4 c5 | c2 c3 c6 c7]; the permute puts them in order.
            let sum = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(lo[r], hi[r]));
            let z = _mm256_cvtepi32_ps(_mm256_add_epi32(sum, comp));
            let z = _mm256_fmadd_ps(z, mult, add);
            let z = _mm256_min_ps(_mm256_max_ps(z, _mm256_setzero_ps()), _mm256_set1_ps(255.0));
            let q: [i32; 8] = bytemuck::cast(_mm256_cvtps_epi32(z));
            let at = (blk * MR + r0 + r) * job.c_rs + c0;
            for (d, &v) in job.c[at..at + n].iter_mut().zip(&q) {
                *d = v as u8;
            }
        }
    }
}
