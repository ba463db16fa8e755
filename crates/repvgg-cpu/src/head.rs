//! The linear layer of the reduced-precision networks at small batches: class rows of narrow
//! weights (s8 codes, bf16 bits) read once for all images. At batch 1 the layer is bound by
//! reading its weights, so narrow rows beat an f32 GEMM; from [`GEMM_BATCH`] images on the
//! networks run the f32 GEMM on the same values instead.

use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

/// Images from which the networks run the linear layer as the f32 GEMM.
pub(crate) const GEMM_BATCH: usize = 4;

/// Classes per parallel block.
const BLOCK: usize = 64;

/// A weight of a class row: its value as f32.
pub(crate) trait Weight: Copy + Sync {
    fn value(self) -> f32;
}

/// s8 codes (the int8 network scales each class's sums after).
impl Weight for i8 {
    #[inline(always)]
    fn value(self) -> f32 {
        f32::from(self)
    }
}

/// bf16 bits.
impl Weight for u16 {
    #[inline(always)]
    fn value(self) -> f32 {
        crate::bf16::from_bf16(self)
    }
}

/// `out[j * n + i] = pooled[i] · rows[j]` for the class rows `rows` (`[classes][c]`) and the
/// `n` pooled images (`pooled`, `[n][c]`): blocks of classes in parallel.
fn class_sums<W: Weight>(pooled: &[f32], c: usize, rows: &[W], out: &mut [f32]) {
    let n = pooled.len().checked_div(c).unwrap_or(0);
    out.par_chunks_mut(BLOCK * n.max(1))
        .enumerate()
        .for_each(|(blk, dst)| {
            let j0 = blk * BLOCK;
            let count = dst.len() / n.max(1);
            Arch::new().dispatch(Rows {
                pooled,
                c,
                rows: &rows[j0 * c..(j0 + count) * c],
                out: dst,
            });
        });
}

/// The logits `[n][classes]` of the `n` pooled images (`[n][c]`): each class's sum times
/// `scale` plus `bias`, from the class rows `rows` (`[classes][c]`) below [`GEMM_BATCH`]
/// images, else through the f32 GEMM on `packed` (the same weights as f32, in its panels).
pub(crate) fn logits<W: Weight>(
    n: usize,
    pooled: &[f32],
    c: usize,
    (rows, packed): (&[W], &[f32]),
    scale: &[f32],
    bias: &[f32],
) -> Vec<f32> {
    if n >= GEMM_BATCH {
        return by_gemm(n, pooled, c, packed, scale, bias);
    }
    let classes = bias.len();
    let mut by_class = vec![0.0f32; classes * n];
    class_sums(pooled, c, rows, &mut by_class);
    (0..n * classes)
        .map(|at| {
            let (i, j) = (at / classes, at % classes);
            by_class[j * n + i] * scale[j] + bias[j]
        })
        .collect()
}

/// The logits `[n][classes]` of the `n` pooled images (`[n][c]`) through the f32 GEMM with the
/// weights packed in its panels (`[c, classes]`), each class's sum times `scale` plus `bias`.
fn by_gemm(
    n: usize,
    pooled: &[f32],
    c: usize,
    packed: &[f32],
    scale: &[f32],
    bias: &[f32],
) -> Vec<f32> {
    let classes = bias.len();
    let mut logits = vec![0.0f32; n * classes];
    crate::gemm::gemm(
        n,
        c,
        classes,
        pooled,
        c,
        packed,
        &mut logits,
        classes,
        Some(crate::gemm::ColEpilogue {
            scale,
            shift: bias,
            accumulate: false,
            relu: false,
        }),
        true,
    );
    logits
}

/// [`class_sums`] of one block of classes, in 16 lanes of partial sums.
struct Rows<'a, W> {
    pooled: &'a [f32],
    c: usize,
    rows: &'a [W],
    out: &'a mut [f32],
}

impl<W: Weight> WithSimd for Rows<'_, W> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        const L: usize = 16;
        let c = self.c;
        if c == 0 {
            self.out.fill(0.0);
            return;
        }
        let n = self.pooled.len() / c;
        for (row, dst) in self
            .rows
            .chunks_exact(c)
            .zip(self.out.chunks_exact_mut(n.max(1)))
        {
            for (p, d) in self.pooled.chunks_exact(c).zip(dst.iter_mut()) {
                let mut acc = [0.0f32; L];
                let (pc, pt) = p.split_at(c / L * L);
                let (rc, rt) = row.split_at(c / L * L);
                for (pv, rv) in pc.chunks_exact(L).zip(rc.chunks_exact(L)) {
                    for l in 0..L {
                        acc[l] += pv[l] * rv[l].value();
                    }
                }
                let tail: f32 = pt.iter().zip(rt).map(|(a, &b)| a * b.value()).sum();
                *d = acc.iter().sum::<f32>() + tail;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Checks [`class_sums`] of `rows` against f64 dot products within the bound of an f32
    /// sum of products: one rounding per term and per addition, of the terms' magnitudes.
    /// `value` is the oracle's own reading of a weight (not [`Weight::value`]).
    fn check<W: Weight>(
        pooled: &[f32],
        c: usize,
        rows: &[W],
        value: impl Fn(W) -> f64,
    ) -> Result<(), TestCaseError> {
        let n = pooled.len() / c.max(1);
        let classes = rows.len() / c.max(1);
        let mut out = vec![f32::NAN; classes * n];
        class_sums(pooled, c, rows, &mut out);
        for j in 0..classes {
            for i in 0..n {
                let terms = (0..c).map(|k| f64::from(pooled[i * c + k]) * value(rows[j * c + k]));
                let (want, size) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
                let got = f64::from(out[j * n + i]);
                let bound = (c as f64 + 1.0) * f64::from(f32::EPSILON) * size;
                prop_assert!(
                    (got - want).abs() <= bound,
                    "class {} image {}: {} against {}",
                    j,
                    i,
                    got,
                    want
                );
            }
        }
        Ok(())
    }

    proptest! {
        /// Channel counts below, at and past the sixteen lanes (the tails), any batch, more
        /// classes than one parallel block; s8 codes and bf16 bits.
        #[test]
        fn class_sums_match_f64_dot_products(
            n in 1usize..6, c in 1usize..70, classes in 1usize..140, seed in any::<u64>(),
        ) {
            let mut s = seed | 1;
            let mut next = move || {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 33) as u32
            };
            let pooled: Vec<f32> = (0..n * c).map(|_| (next() % 2001) as f32 / 100.0).collect();
            let q: Vec<i8> = (0..classes * c).map(|_| ((next() % 255) as i32 - 127) as i8).collect();
            check(&pooled, c, &q, f64::from)?;
            let b: Vec<u16> = (0..classes * c)
                .map(|_| crate::bf16::to_bf16((next() % 2001) as f32 / 1000.0 - 1.0))
                .collect();
            // bf16 bits are the high half of the f32's.
            check(&pooled, c, &b, |v| f64::from(f32::from_bits(u32::from(v) << 16)))?;
        }
    }

    #[test]
    fn no_channels_give_zero_sums() {
        let mut out = vec![f32::NAN; 3];
        class_sums::<i8>(&[], 0, &[], &mut out);
        assert_eq!(out, [0.0; 3]);
    }
}
