//! Winograd minimal filtering for 3x3 stride-1 convolutions (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", CVPR 2016).
//!
//! `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A` computes an `m x m` output tile from an `(m+2) x (m+2)`
//! input tile. The kernel transform `G g Gᵀ` is done once, in f64, when a network is prepared;
//! the input and output transforms run per tile, one SIMD vector of channels at a time
//! (contiguous in NHWC), and the products become `(m+2)²` GEMMs over (tiles x channels).
//!
//! Two tile sizes: F(2x2,3x3) (4x4 input tiles, 2.25x fewer multiplications than a direct conv)
//! and F(4x4,3x3) (6x6 input tiles, 4x fewer; a little more rounding, see the crate's tests).

use pulp::Simd;

pub use repvgg_math::winograd::Tile;

/// The 1-D transforms of one tile size, written out term by term so that their constants are
/// in the code: a loop over a matrix passed by reference kept a compare and a branch per
/// coefficient at run time (the matrices reach the SIMD code through a pointer). Each output
/// is the sum of its matrix row's non-zero terms in column order, the first as a product, so
/// the results are those of the matrix products, bit for bit.
pub(crate) trait Transform1d<const A: usize, const M: usize> {
    /// `Bᵀ d`.
    fn input<S: Simd>(simd: S, d: [S::f32s; A]) -> [S::f32s; A];
    /// `Aᵀ m`.
    fn output<S: Simd>(simd: S, m: [S::f32s; A]) -> [S::f32s; M];
}

/// F(2x2, 3x3): [`BT2`] and [`AT2`].
pub(crate) struct F2;

/// F(4x4, 3x3): [`BT4`] and [`AT4`].
pub(crate) struct F4;

impl Transform1d<4, 2> for F2 {
    #[inline(always)]
    fn input<S: Simd>(simd: S, [d0, d1, d2, d3]: [S::f32s; 4]) -> [S::f32s; 4] {
        [
            simd.sub_f32s(d0, d2),
            simd.add_f32s(d1, d2),
            simd.sub_f32s(d2, d1),
            simd.sub_f32s(d1, d3),
        ]
    }

    #[inline(always)]
    fn output<S: Simd>(simd: S, [m0, m1, m2, m3]: [S::f32s; 4]) -> [S::f32s; 2] {
        [
            simd.add_f32s(simd.add_f32s(m0, m1), m2),
            simd.sub_f32s(simd.sub_f32s(m1, m2), m3),
        ]
    }
}

impl Transform1d<6, 4> for F4 {
    #[inline(always)]
    fn input<S: Simd>(simd: S, [d0, d1, d2, d3, d4, d5]: [S::f32s; 6]) -> [S::f32s; 6] {
        let c = |v: f32| simd.splat_f32s(v);
        let fma = |a: f32, x, acc| simd.mul_add_f32s(c(a), x, acc);
        [
            simd.add_f32s(fma(-5.0, d2, simd.mul_f32s(c(4.0), d0)), d4),
            simd.add_f32s(
                simd.add_f32s(fma(-4.0, d2, simd.mul_f32s(c(-4.0), d1)), d3),
                d4,
            ),
            simd.add_f32s(
                simd.sub_f32s(fma(-4.0, d2, simd.mul_f32s(c(4.0), d1)), d3),
                d4,
            ),
            simd.add_f32s(
                fma(2.0, d3, simd.sub_f32s(simd.mul_f32s(c(-2.0), d1), d2)),
                d4,
            ),
            simd.add_f32s(
                fma(-2.0, d3, simd.sub_f32s(simd.mul_f32s(c(2.0), d1), d2)),
                d4,
            ),
            simd.add_f32s(fma(-5.0, d3, simd.mul_f32s(c(4.0), d1)), d5),
        ]
    }

    #[inline(always)]
    fn output<S: Simd>(simd: S, [m0, m1, m2, m3, m4, m5]: [S::f32s; 6]) -> [S::f32s; 4] {
        let c = |v: f32| simd.splat_f32s(v);
        let fma = |a: f32, x, acc| simd.mul_add_f32s(c(a), x, acc);
        let (sum, diff) = (simd.add_f32s(m1, m2), simd.sub_f32s(m1, m2));
        [
            simd.add_f32s(
                simd.add_f32s(simd.add_f32s(simd.add_f32s(m0, m1), m2), m3),
                m4,
            ),
            fma(-2.0, m4, fma(2.0, m3, diff)),
            fma(4.0, m4, fma(4.0, m3, sum)),
            simd.add_f32s(fma(-8.0, m4, fma(8.0, m3, diff)), m5),
        ]
    }
}

/// Column `j` of a square tile of vectors.
#[inline(always)]
fn column<V: Copy, const A: usize>(tile: &[[V; A]; A], j: usize) -> [V; A] {
    let mut col = tile[0];
    for (c, row) in col.iter_mut().zip(tile) {
        *c = row[j];
    }
    col
}

/// `out = Bᵀ d B` on every lane of a tile of vectors (`[row][col]`, one vector of channels
/// each): the 1-D transform on every column, then on every row.
#[inline(always)]
pub(crate) fn sandwich<S: Simd, T: Transform1d<A, M>, const A: usize, const M: usize>(
    simd: S,
    d: &[[S::f32s; A]; A],
) -> [[S::f32s; A]; A] {
    let mut tmp = *d;
    for j in 0..A {
        for (row, v) in tmp.iter_mut().zip(T::input(simd, column(d, j))) {
            row[j] = v;
        }
    }
    for row in &mut tmp {
        *row = T::input(simd, *row);
    }
    tmp
}

/// `y = Aᵀ m A` on every lane: the `M x M` outputs of an `A x A` tile of vectors.
#[inline(always)]
pub(crate) fn output_sandwich<S: Simd, T: Transform1d<A, M>, const A: usize, const M: usize>(
    simd: S,
    m: &[[S::f32s; A]; A],
) -> [[S::f32s; M]; M] {
    let zero = simd.splat_f32s(0.0);
    let mut tmp = [[zero; A]; M];
    for j in 0..A {
        for (row, v) in tmp.iter_mut().zip(T::output(simd, column(m, j))) {
            row[j] = v;
        }
    }
    let mut y = [[zero; M]; M];
    for (y_i, tmp_i) in y.iter_mut().zip(&tmp) {
        *y_i = T::output(simd, *tmp_i);
    }
    y
}

#[cfg(test)]
const BT2: [[f32; 4]; 4] = [
    [1.0, 0.0, -1.0, 0.0],
    [0.0, 1.0, 1.0, 0.0],
    [0.0, -1.0, 1.0, 0.0],
    [0.0, 1.0, 0.0, -1.0],
];
#[cfg(test)]
const AT2: [[f32; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];

#[cfg(test)]
const BT4: [[f32; 6]; 6] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];
#[cfg(test)]
const AT4: [[f32; 6]; 4] = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
    [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
    [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
];

#[cfg(test)]
mod tests {
    use super::*;

    /// 1-D check of each tile size: Aᵀ[(G g) ⊙ (Bᵀ d)] equals the direct correlation.
    fn one_d(tile: Tile, bt: &[Vec<f32>], at: &[Vec<f32>]) {
        let a = tile.alpha();
        let m = tile.m();
        let d: Vec<f64> = (0..a).map(|i| (i as f64 * 0.37).sin() + 0.1).collect();
        let g = [0.3, -1.1, 0.7];
        let gg: Vec<f64> = tile
            .g()
            .iter()
            .map(|r| r.iter().zip(&g).map(|(x, y)| x * y).sum())
            .collect();
        let bd: Vec<f64> = bt
            .iter()
            .map(|r| r.iter().zip(&d).map(|(x, y)| f64::from(*x) * y).sum())
            .collect();
        for (i, row) in at.iter().enumerate() {
            let y: f64 = row
                .iter()
                .enumerate()
                .map(|(k, &c)| f64::from(c) * gg[k] * bd[k])
                .sum();
            let direct: f64 = (0..3).map(|k| d[i + k] * g[k]).sum();
            assert!(
                (y - direct).abs() < 1e-12,
                "{tile:?} output {i}: {y} vs {direct}"
            );
        }
        assert_eq!(at.len(), m);
    }

    #[test]
    fn one_dimensional_identities() {
        one_d(
            Tile::F2,
            &BT2.iter().map(|r| r.to_vec()).collect::<Vec<_>>(),
            &AT2.iter().map(|r| r.to_vec()).collect::<Vec<_>>(),
        );
        one_d(
            Tile::F4,
            &BT4.iter().map(|r| r.to_vec()).collect::<Vec<_>>(),
            &AT4.iter().map(|r| r.to_vec()).collect::<Vec<_>>(),
        );
    }

    /// `rows · v` in f64 and the sum of the terms' magnitudes (the scale of its rounding).
    fn apply<const A: usize>(rows: &[[f32; A]], v: &[f32; A]) -> Vec<(f64, f64)> {
        rows.iter()
            .map(|r| {
                let terms = r.iter().zip(v).map(|(&c, &x)| f64::from(c) * f64::from(x));
                (terms.clone().sum(), terms.map(f64::abs).sum())
            })
            .collect()
    }

    fn close(got: f32, (want, scale): (f64, f64), what: &str) {
        assert!(
            (f64::from(got) - want).abs() <= 1e-6 * scale.max(1e-30),
            "{what}: {got} vs {want}"
        );
    }

    /// Values far from round numbers, of both signs and several magnitudes.
    fn values<const A: usize>(seed: usize) -> [f32; A] {
        core::array::from_fn(|i| ((seed * 7 + i * 13) as f32 * 0.731).sin() * (1 + i % 3) as f32)
    }

    /// The written-out 1-D transforms are the matrices [`BT2`], [`AT2`], [`BT4`], [`AT4`].
    fn one_d_matches<T: Transform1d<A, M>, const A: usize, const M: usize>(
        bt: &[[f32; A]; A],
        at: &[[f32; A]; M],
    ) {
        let simd = pulp::Scalar::new();
        for seed in 0..20 {
            let v = values::<A>(seed);
            for (i, (got, want)) in T::input(simd, v).iter().zip(apply(bt, &v)).enumerate() {
                close(*got, want, &format!("input {i} of {A}"));
            }
            for (i, (got, want)) in T::output(simd, v).iter().zip(apply(at, &v)).enumerate() {
                close(*got, want, &format!("output {i} of {A}"));
            }
        }
    }

    #[test]
    fn written_out_transforms_are_the_matrices() {
        one_d_matches::<F2, 4, 2>(&BT2, &AT2);
        one_d_matches::<F4, 6, 4>(&BT4, &AT4);
    }

    /// The 2-D transforms: `Bᵀ d B` and `Aᵀ m A` against f64 products of the matrices.
    fn two_d_matches<T: Transform1d<A, M>, const A: usize, const M: usize>(
        bt: &[[f32; A]; A],
        at: &[[f32; A]; M],
    ) {
        let simd = pulp::Scalar::new();
        let d: [[f32; A]; A] = core::array::from_fn(values::<A>);
        // (X d Xᵀ)[i][j] = sum_a sum_b X[i][a] d[a][b] X[j][b], with its magnitude sum.
        let both = |x: &[[f32; A]], i: usize, j: usize| -> (f64, f64) {
            let mut s = (0.0, 0.0);
            for (a, d_a) in d.iter().enumerate() {
                for (b, &v) in d_a.iter().enumerate() {
                    let t = f64::from(x[i][a]) * f64::from(v) * f64::from(x[j][b]);
                    s = (s.0 + t, s.1 + t.abs());
                }
            }
            s
        };
        check_tile(
            &sandwich::<_, T, A, M>(simd, &d),
            |i, j| both(bt, i, j),
            "input",
            A,
        );
        check_tile(
            &output_sandwich::<_, T, A, M>(simd, &d),
            |i, j| both(at, i, j),
            "output",
            A,
        );
    }

    /// Every value of a transformed tile against its f64 value and scale.
    fn check_tile<const K: usize>(
        got: &[[f32; K]; K],
        want: impl Fn(usize, usize) -> (f64, f64),
        what: &str,
        a: usize,
    ) {
        for (i, row) in got.iter().enumerate() {
            for (j, &g) in row.iter().enumerate() {
                close(g, want(i, j), &format!("{what} tile [{i}][{j}] of {a}"));
            }
        }
    }

    #[test]
    fn tile_transforms_are_the_matrix_products() {
        two_d_matches::<F2, 4, 2>(&BT2, &AT2);
        two_d_matches::<F4, 6, 4>(&BT4, &AT4);
    }

    #[test]
    fn sizes() {
        assert_eq!(
            (Tile::F2.m(), Tile::F2.alpha(), Tile::F2.positions()),
            (2, 4, 16)
        );
        assert_eq!(
            (Tile::F4.m(), Tile::F4.alpha(), Tile::F4.positions()),
            (4, 6, 36)
        );
    }
}
