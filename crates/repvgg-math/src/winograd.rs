//! Winograd minimal filtering F(m x m, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", CVPR 2016): the tile sizes and the kernel transform `G g Gᵀ`, in f64, shared
//! by the engines that run the input and output transforms (the CPU's SIMD code, the GPU's WGSL).

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
