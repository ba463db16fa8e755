//! Winograd minimal filtering F(m x m, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", CVPR 2016): the tile sizes and the kernel transform `G g Gᵀ`, in f64, shared
//! by the engines that run the input and output transforms (the CPU's SIMD code, the GPU's WGSL).
//!
//! A GPU network runs `y = conv3x3(x)` as three layers: the input transform
//! (`[N, P C, TH, TW]`, channel `p * C + ci` for position `p` of the `P = alpha²` tile), the
//! grouped 1x1 convolution [`product_spec`] with the weights of [`transform_weights`] (one group
//! per position and original group), and the output transform with the conv's epilogue.

use ndarray::{Array4, ArrayView4};

use crate::{ConvSpec, Result};

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
    pub fn g(self) -> Vec<[f64; 3]> {
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

/// Whether Winograd F(m x m, 3x3) computes `spec`: a 3x3 conv with stride 1 and padding 1.
pub fn applies(spec: &ConvSpec) -> bool {
    spec.kernel_size == 3 && spec.stride == 1 && spec.padding == 1
}

/// The grouped 1x1 convolution over the positions of `tile` that replaces `spec`:
/// `P * in_channels` to `P * out_channels` channels in `P * groups` groups.
///
/// # Errors
/// [`crate::MathError`] when the channel counts overflow a valid spec.
pub fn product_spec(spec: &ConvSpec, tile: Tile) -> Result<ConvSpec> {
    let p = tile.positions();
    ConvSpec::new(
        p * spec.in_channels,
        p * spec.out_channels,
        1,
        1,
        0,
        p * spec.groups,
    )
}

/// `G g Gᵀ` of every 3x3 filter of `weight` (`[cout, cin / groups, 3, 3]`), computed in f64, as
/// the weights of [`product_spec`]: `[P * cout, cin / groups, 1, 1]`, output channel
/// `p * cout + co`.
pub fn transform_weights(weight: ArrayView4<'_, f32>, tile: Tile) -> Array4<f32> {
    let (cout, cin_g, _, _) = weight.dim();
    let positions = tile.positions();
    let mut out = Array4::zeros((positions * cout, cin_g, 1, 1));
    for co in 0..cout {
        for ci in 0..cin_g {
            let k: [[f64; 3]; 3] =
                std::array::from_fn(|r| std::array::from_fn(|c| f64::from(weight[(co, ci, r, c)])));
            for (p, v) in tile.transform_kernel(&k).into_iter().enumerate() {
                out[(p * cout + co, ci, 0, 0)] = v as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One tile in f64 through the three transforms (Bᵀ d B, U, Aᵀ M A) equals the direct 3x3
    /// correlation of the 4x4 patch: checks the weight transform against the F(2x2) matrices the
    /// engines' input and output transforms use.
    #[test]
    fn weight_transform_with_the_f2_matrices_is_a_3x3_correlation() {
        let g: Vec<f32> = (0..9).map(|i| (i as f32 * 0.37).sin()).collect();
        let w = Array4::from_shape_vec((1, 1, 3, 3), g.clone()).expect("shape");
        let u = transform_weights(w.view(), Tile::F2);
        let d: Vec<f64> = (0..16).map(|i| (i as f64 * 0.61).cos()).collect();
        let bt = [
            [1.0, 0.0, -1.0, 0.0],
            [0.0, 1.0, 1.0, 0.0],
            [0.0, -1.0, 1.0, 0.0],
            [0.0, 1.0, 0.0, -1.0],
        ];
        let at = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];
        let mut v = [[0.0f64; 4]; 4];
        for a in 0..4 {
            for b in 0..4 {
                for i in 0..4 {
                    for j in 0..4 {
                        v[a][b] += bt[a][i] * d[i * 4 + j] * bt[b][j];
                    }
                }
            }
        }
        for oy in 0..2 {
            for ox in 0..2 {
                let mut y = 0.0;
                for a in 0..4 {
                    for b in 0..4 {
                        y += at[oy][a] * f64::from(u[(a * 4 + b, 0, 0, 0)]) * v[a][b] * at[ox][b];
                    }
                }
                let mut direct = 0.0;
                for ky in 0..3 {
                    for kx in 0..3 {
                        direct += f64::from(g[ky * 3 + kx]) * d[(oy + ky) * 4 + ox + kx];
                    }
                }
                assert!((y - direct).abs() < 1e-6, "({oy}, {ox}): {y} vs {direct}");
            }
        }
    }

    #[test]
    fn the_product_has_a_group_per_position() {
        let spec = ConvSpec::new(8, 16, 3, 1, 1, 2).expect("spec");
        assert!(applies(&spec));
        assert!(!applies(&ConvSpec::new(8, 16, 3, 2, 1, 1).expect("spec")));
        let p = product_spec(&spec, Tile::F4).expect("product");
        assert_eq!((p.in_channels, p.out_channels, p.groups), (288, 576, 72));
        assert_eq!((p.kernel_size, p.stride, p.padding), (1, 1, 0));
    }
}
