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

/// The tile size of a Winograd convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tile {
    /// F(2x2, 3x3): 4x4 input tiles, 16 GEMMs.
    F2,
    /// F(4x4, 3x3): 6x6 input tiles, 36 GEMMs.
    F4,
}

impl Tile {
    /// Output pixels per tile side (`m`).
    pub const fn m(self) -> usize {
        match self {
            Self::F2 => 2,
            Self::F4 => 4,
        }
    }

    /// Input pixels per tile side (`m + 2`).
    pub const fn alpha(self) -> usize {
        self.m() + 2
    }

    /// Number of transformed positions, i.e. GEMMs per convolution (`alpha²`).
    pub const fn positions(self) -> usize {
        self.alpha() * self.alpha()
    }

    /// `G`, as f64 rows.
    fn g(self) -> Vec<[f64; 3]> {
        match self {
            Self::F2 => vec![
                [1.0, 0.0, 0.0],
                [0.5, 0.5, 0.5],
                [0.5, -0.5, 0.5],
                [0.0, 0.0, 1.0],
            ],
            Self::F4 => vec![
                [1.0 / 4.0, 0.0, 0.0],
                [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
                [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
                [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
                [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
                [0.0, 0.0, 1.0],
            ],
        }
    }

    /// Transforms one 3x3 kernel (`k[ky][kx]`, f64) into `alpha x alpha` values, row-major.
    pub fn transform_kernel(self, k: &[[f64; 3]; 3]) -> Vec<f64> {
        let g = self.g();
        let a = self.alpha();
        // t = G k  (alpha x 3), then u = t Gᵀ (alpha x alpha).
        let mut t = vec![[0.0f64; 3]; a];
        for (ti, gi) in t.iter_mut().zip(&g) {
            for (c, tc) in ti.iter_mut().enumerate() {
                *tc = (0..3).map(|j| gi[j] * k[j][c]).sum();
            }
        }
        let mut u = Vec::with_capacity(a * a);
        for ti in &t {
            for gj in &g {
                u.push((0..3).map(|c| ti[c] * gj[c]).sum());
            }
        }
        u
    }
}

/// `out = Bᵀ d B` on every lane of a tile of vectors (`[row][col]`, one vector of channels
/// each). The matrix is a constant, so the zero terms fold away.
#[inline(always)]
pub(crate) fn sandwich<S: Simd, const A: usize>(
    simd: S,
    bt: &[[f32; A]; A],
    d: &[[S::f32s; A]; A],
) -> [[S::f32s; A]; A] {
    let zero = simd.splat_f32s(0.0);
    let mut tmp = [[zero; A]; A];
    for (tmp_a, bt_a) in tmp.iter_mut().zip(bt) {
        for (d_i, &c) in d.iter().zip(bt_a) {
            if c == 0.0 {
                continue;
            }
            let cv = simd.splat_f32s(c);
            for (t, &s) in tmp_a.iter_mut().zip(d_i) {
                *t = simd.mul_add_f32s(cv, s, *t);
            }
        }
    }
    let mut out = [[zero; A]; A];
    for (out_a, tmp_a) in out.iter_mut().zip(&tmp) {
        for (o, bt_b) in out_a.iter_mut().zip(bt) {
            for (&t, &c) in tmp_a.iter().zip(bt_b) {
                if c != 0.0 {
                    *o = simd.mul_add_f32s(simd.splat_f32s(c), t, *o);
                }
            }
        }
    }
    out
}

/// `y = Aᵀ m A` on every lane: the `M x M` outputs of an `A x A` tile of vectors.
#[inline(always)]
pub(crate) fn output_sandwich<S: Simd, const A: usize, const M: usize>(
    simd: S,
    at: &[[f32; A]; M],
    m: &[[S::f32s; A]; A],
) -> [[S::f32s; M]; M] {
    let zero = simd.splat_f32s(0.0);
    let mut tmp = [[zero; A]; M];
    for (tmp_i, at_i) in tmp.iter_mut().zip(at) {
        for (m_a, &c) in m.iter().zip(at_i) {
            if c == 0.0 {
                continue;
            }
            let cv = simd.splat_f32s(c);
            for (t, &s) in tmp_i.iter_mut().zip(m_a) {
                *t = simd.mul_add_f32s(cv, s, *t);
            }
        }
    }
    let mut y = [[zero; M]; M];
    for (y_i, tmp_i) in y.iter_mut().zip(&tmp) {
        for (o, at_j) in y_i.iter_mut().zip(at) {
            for (&t, &c) in tmp_i.iter().zip(at_j) {
                if c != 0.0 {
                    *o = simd.mul_add_f32s(simd.splat_f32s(c), t, *o);
                }
            }
        }
    }
    y
}

pub(crate) const BT2: [[f32; 4]; 4] = [
    [1.0, 0.0, -1.0, 0.0],
    [0.0, 1.0, 1.0, 0.0],
    [0.0, -1.0, 1.0, 0.0],
    [0.0, 1.0, 0.0, -1.0],
];
pub(crate) const AT2: [[f32; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];

pub(crate) const BT4: [[f32; 6]; 6] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];
pub(crate) const AT4: [[f32; 6]; 4] = [
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
