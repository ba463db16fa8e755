//! Winograd F(2x2, 3x3) for 3x3 convolutions with stride 1 and padding 1: the weight transform
//! (at upload, in f64), and the input and output transforms around a grouped 1x1 convolution
//! over the 16 positions (`wino_input.wgsl`, `wino_output.wgsl`).
//!
//! `y = conv3x3(x)` becomes three layers of the network:
//! `v = input_transform(x)` (`[N, 16 C, TH, TW]`, channel `p * C + ci` for position `p` of the
//! 4x4 tile), `m = conv1x1(v)` with `16 * groups` groups and the transformed weights
//! `U_p = G g G^T` (one group per position and original group), and
//! `y = output_transform(m)` with the conv's epilogue. The middle layer is an ordinary conv, so
//! it runs whatever kernel the adapter runs best. Multiplies per output: 16/4 per input
//! channel instead of 9, 2.25x fewer.

use ndarray::{Array4, ArrayView4};
use repvgg_math::ConvSpec;

use super::conv::ConvKernel;
use super::{
    DispatchSpec, FLAG_BIAS, FLAG_RELU, FLAG_RESIDUAL, FLAG_SCALE, key, linear_grid, params, u,
};
use crate::error::Result;
use crate::shader::Shader;

params! {
    /// `wino_input.wgsl`.
    WinoInputParams for Shader::WinogradInput => { total, c, h, w, th, tw, _pad0, _pad1 }
}

params! {
    /// `wino_output.wgsl`.
    WinoOutputParams for Shader::WinogradOutput => { total, c, oh, ow, th, tw, flags, _pad0 }
}

/// Invocations per workgroup of both transforms (`WG` in their WGSL).
const WG: usize = 64;

/// Whether `spec` is a conv Winograd F(2x2, 3x3) computes: 3x3, stride 1, padding 1.
pub(crate) fn applies(spec: &ConvSpec) -> bool {
    spec.kernel_size == 3 && spec.stride == 1 && spec.padding == 1
}

/// Whether a network built for `kernel` runs `spec` through Winograd: where it applies, and
/// only when forced with [`ConvKernel::Winograd`]. The main path ([`ConvKernel::Tiled`]) does
/// not take it: on lavapipe the grouped 1x1 conv it leaves runs at about half the subgroup
/// kernel's rate per multiply, so Winograd measured 1.0-2.1x slower than the direct 3x3 on every
/// A0 shape (`examples/conv_gflops`, notes of issue 9); no hardware GPU was at hand to measure.
pub(crate) fn chosen(kernel: ConvKernel, spec: &ConvSpec) -> bool {
    kernel == ConvKernel::Winograd && applies(spec)
}

/// Tiles along a side of `size` outputs.
pub(crate) fn tiles(size: usize) -> usize {
    size.div_ceil(2)
}

/// The grouped 1x1 convolution over the 16 positions.
pub(crate) fn gemm_spec(spec: &ConvSpec) -> Result<ConvSpec> {
    Ok(ConvSpec::new(
        16 * spec.in_channels,
        16 * spec.out_channels,
        1,
        1,
        0,
        16 * spec.groups,
    )?)
}

/// `G g G^T` of every 3x3 filter, computed in f64, as the weights of [`gemm_spec`]:
/// `[16 * cout, cin / groups, 1, 1]`, output channel `p * cout + co`.
pub(crate) fn transform_weights(weight: ArrayView4<'_, f32>) -> Array4<f32> {
    let (cout, cin_g, _, _) = weight.dim();
    let mut out = Array4::zeros((16 * cout, cin_g, 1, 1));
    for co in 0..cout {
        for ci in 0..cin_g {
            let g = |r: usize, c: usize| f64::from(weight[(co, ci, r, c)]);
            // G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], applied to columns then rows.
            let gv = |v: [f64; 3]| {
                [
                    v[0],
                    0.5 * (v[0] + v[1] + v[2]),
                    0.5 * (v[0] - v[1] + v[2]),
                    v[2],
                ]
            };
            // cols[c] = column c of G g.
            let cols: [[f64; 4]; 3] = std::array::from_fn(|c| gv([g(0, c), g(1, c), g(2, c)]));
            for r in 0..4 {
                let u4 = gv([cols[0][r], cols[1][r], cols[2][r]]);
                for (c, v) in u4.into_iter().enumerate() {
                    out[((r * 4 + c) * cout + co, ci, 0, 0)] = v as f32;
                }
            }
        }
    }
    out
}

/// The input transform of an `x` = `[n, c, h, w]` input.
pub(crate) fn input(x: [usize; 4], max_dim: u32) -> Result<DispatchSpec> {
    let [n, c, h, w] = x;
    let (th, tw) = (tiles(h), tiles(w));
    let total = n * c * th * tw;
    let p = WinoInputParams {
        total: u(total),
        c: u(c),
        h: u(h),
        w: u(w),
        th: u(th),
        tw: u(tw),
        ..WinoInputParams::default()
    };
    Ok(DispatchSpec::new(
        key(Shader::WinogradInput),
        &p,
        linear_grid(total, WG, max_dim)?,
    ))
}

/// The output transform into a `y` = `[n, c, oh, ow]` output, with the conv's epilogue.
pub(crate) fn output(
    y: [usize; 4],
    scale: bool,
    bias: bool,
    residual: bool,
    relu: bool,
    max_dim: u32,
) -> Result<DispatchSpec> {
    let [n, c, oh, ow] = y;
    let (th, tw) = (tiles(oh), tiles(ow));
    let total = n * c * th * tw;
    let flag = |on: bool, f: u32| if on { f } else { 0 };
    let p = WinoOutputParams {
        total: u(total),
        c: u(c),
        oh: u(oh),
        ow: u(ow),
        th: u(th),
        tw: u(tw),
        flags: flag(scale, FLAG_SCALE)
            | flag(bias, FLAG_BIAS)
            | flag(residual, FLAG_RESIDUAL)
            | flag(relu, FLAG_RELU),
        ..WinoOutputParams::default()
    };
    Ok(DispatchSpec::new(
        key(Shader::WinogradOutput),
        &p,
        linear_grid(total, WG, max_dim)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One tile in f64 through the three transforms (B^T d B, U, A^T M A) equals the direct
    /// 3x3 correlation of the 4x4 patch: checks the weight transform against the shaders'
    /// matrices.
    #[test]
    fn weight_transform_with_the_shader_matrices_is_a_3x3_correlation() {
        let g: Vec<f32> = (0..9).map(|i| (i as f32 * 0.37).sin()).collect();
        let w = Array4::from_shape_vec((1, 1, 3, 3), g.clone()).expect("shape");
        let u = transform_weights(w.view());
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
}
