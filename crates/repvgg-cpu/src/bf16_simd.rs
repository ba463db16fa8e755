//! The bf16 convs' `unsafe` for CPUs with AVX512-BF16 but no AMX (AMD Zen 4 and 5, Intel
//! Cooper Lake): a block of 8 output pixels times one weight panel with `vdpbf16ps`, the bias,
//! ReLU and the rounding to bf16 fused into its end.
//!
//! Entering a function compiled with `#[target_feature]` for instruction sets the build target
//! does not guarantee is `unsafe`: [`block`] checks exactly those features at run time first.
//! Inside, loads go through bounds-checked slices and `bytemuck`, and the one other `unsafe`
//! operation, reinterpreting 512 bits of bf16 pairs as the `__m512bh` type the instruction takes,
//! is a transmute between types of the same size for which every bit pattern is valid. The
//! tests (`bf16`) run this path against the f64 oracle on every machine that has it.
#![allow(unsafe_code)]

/// Rows (output pixels) of a block.
pub(crate) const MR: usize = 8;

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

/// Rows of a block read straight from the activations: each output pixel's sum runs over the
/// taps, `pairs` pairs of bf16 channels each (a conv group's channels, an even count), stored as
/// u32 words. Row `r`'s pair `j` of tap `t` is `x[rows[r] + taps[t] + j]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Direct<'a> {
    pub x: &'a [u32],
    pub rows: [usize; MR],
    pub taps: &'a [usize],
    pub pairs: usize,
}

/// [`block`] with its rows read as [`Direct`] says (the weights' steps in the same tap-major
/// order); `None` on a CPU without AVX512-BF16.
///
/// # Panics
/// When the lengths do not fit together, or a row reads past `x`.
pub(crate) fn block_direct(
    a: &Direct<'_>,
    b: &[u16],
    w: usize,
    bias: &[f32],
) -> Option<[[u16; 32]; MR]> {
    assert!(w == 16 || w == 32, "panel of {w} columns");
    let steps = a.taps.len() * a.pairs;
    assert!(
        b.len() >= steps * w * 2 && bias.len() >= w,
        "panel or bias too short"
    );
    let last = a.rows.iter().max().copied().unwrap_or(0)
        + a.taps.iter().max().copied().unwrap_or(0)
        + a.pairs;
    assert!(last <= a.x.len(), "rows read past the activations");
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: `x86::block_direct` enables avx512f, avx512bw and avx512bf16, which
        // `available` checked on this CPU.
        return Some(unsafe { x86::block_direct(a, b, w, bias) });
    }
    None
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
    pub(super) fn block_direct(
        a: &super::Direct<'_>,
        b: &[u16],
        w: usize,
        bias: &[f32],
    ) -> [[u16; 32]; MR] {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let halves = w / 16;
        let mut s = 0;
        for &tap in a.taps {
            for j in 0..a.pairs {
                let bs = &b[s * w * 2..(s + 1) * w * 2];
                let b0 = pairs(&bs[..32]);
                let b1 = if halves == 2 { pairs(&bs[32..64]) } else { b0 };
                for (r, acc) in acc.iter_mut().enumerate() {
                    let bits = _mm512_set1_epi32(a.x[a.rows[r] + tap + j] as i32);
                    // SAFETY: as in `pairs`.
                    let av = unsafe { core::mem::transmute::<__m512i, __m512bh>(bits) };
                    acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                    if halves == 2 {
                        acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
                    }
                }
                s += 1;
            }
        }
        finish(&acc, halves, bias)
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
            // In place: 2 taps of 3 pairs (6 steps), rows 4 words apart.
            let x = vec![0u32; 7 * 4 + 3 + 3];
            let direct = Direct {
                x: &x,
                rows: std::array::from_fn(|r| r * 4),
                taps: &[0, 3],
                pairs: 3,
            };
            let b = vec![0u16; 6 * w * 2];
            assert!(!panics(|| {
                block_direct(&direct, &b, w, &bias[..w]);
            }));
            assert!(panics(|| {
                block_direct(&direct, &b[..b.len() - 1], w, &bias[..w]);
            }));
            assert!(panics(|| {
                block_direct(&direct, &b, w, &bias[..w - 1]);
            }));
            let short = Direct {
                x: &x[..x.len() - 1],
                ..direct
            };
            assert!(panics(|| {
                block_direct(&short, &b, w, &bias[..w]);
            }));
        }
        assert!(panics(|| {
            block(&a, &vec![0u16; steps * 48], 24, &bias);
        }));
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
