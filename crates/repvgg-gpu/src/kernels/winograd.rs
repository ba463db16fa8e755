//! Winograd F(m x m, 3x3) for 3x3 convolutions with stride 1 and padding 1, with m = 2 or 4
//! ([`Tile`]): the weight transform (at upload, in f64), and the input and output transforms
//! around a grouped 1x1 convolution over the P = (m + 2)^2 positions (`wino_input.wgsl`,
//! `wino_output.wgsl`: entry `main` for F(2x2), `f4` for F(4x4), and `f4_wide`, 4 tiles per
//! invocation: for F(4x4) input transforms of maps whose tile rows split into 4s, and output
//! transforms of maps 13 to 16 wide, a tile row each; `f4_chain`, an output transform and the
//! next conv's input transform in one dispatch, where the plan chains them: [`chains`]).
//!
//! `y = conv3x3(x)` becomes three layers of the network:
//! `v = input_transform(x)` (`[N, P C, TH, TW]`, channel `p * C + ci` for position `p` of the
//! (m + 2)^2 tile), `m = conv1x1(v)` with `P * groups` groups and the transformed weights
//! `U_p = G g G^T` (one group per position and original group), and
//! `y = output_transform(m)` with the conv's epilogue. The middle layer is an ordinary conv, so
//! it runs whatever kernel the adapter runs best. Multiplies per output and input channel:
//! 16/4 = 4 (F2, 2.25x fewer than the direct 9) or 36/16 = 2.25 (F4, 4x fewer).

use ndarray::{Array4, ArrayView4};
use repvgg_math::ConvSpec;
use repvgg_math::winograd::Tile;

use super::conv::{Caps, ConvKernel, subgroup_fits};
use super::{
    DispatchSpec, FLAG_BIAS, FLAG_RELU, FLAG_RESIDUAL, FLAG_SCALE, key, linear_grid, params, u,
};
use crate::error::Result;
use crate::precision::Precision;
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

/// Input channels per group from which the main path takes Winograd F(4x4) on a software
/// adapter: from 48 (A0's 56x56 stage) on, the 4x fewer multiplies beat the cost of the two
/// transforms on lavapipe, by more the wider the layer. Figures: docs/gpu.md, "Measured
/// figures behind the rules".
const MAIN_PATH_MIN_CHANNELS: usize = 48;

/// Whether a network built for `kernel` runs `spec` through Winograd, and with which tile:
/// where it applies, F(2x2) when forced with [`ConvKernel::Winograd`], F(4x4) when forced
/// with [`ConvKernel::Winograd4`]; on the main path ([`ConvKernel::Tiled`]) F(4x4) on a
/// `software` adapter (lavapipe) in f32 for convs of at least [`MAIN_PATH_MIN_CHANNELS`] input
/// channels per group. There the grouped 1x1 conv it leaves runs on the subgroup kernel at
/// nearly the direct conv's rate per multiply, with 4x fewer multiplies. Not in f16 (F(4x4)'s
/// transforms amplify rounding: 10 x 10 in the input transform), not on hardware GPUs, where
/// no measurement was at hand, and only where the product fits the subgroup kernel (its
/// 36 * cin weight rows within the adapter's texture size: B3's 768-channel layers do not, and
/// the gemm kernel that would take them is far slower on lavapipe; docs/gpu.md). The cost: the
/// transformed weights take 4x the memory of the 3x3 ones.
pub(crate) fn chosen(
    kernel: ConvKernel,
    spec: &ConvSpec,
    caps: &Caps,
    precision: Precision,
) -> Option<Tile> {
    if !applies(spec) {
        return None;
    }
    match kernel {
        ConvKernel::Winograd => Some(Tile::F2),
        ConvKernel::Winograd4 => Some(Tile::F4),
        ConvKernel::Tiled
            if caps.software
                && precision == Precision::F32
                && spec.in_channels / spec.groups >= MAIN_PATH_MIN_CHANNELS
                && gemm_spec(spec, Tile::F4).is_ok_and(|g| subgroup_fits(caps, &g)) =>
        {
            Some(Tile::F4)
        }
        _ => None,
    }
}

/// The entry point of both transforms' shaders for `tile`.
fn entry(tile: Tile) -> &'static str {
    match tile {
        Tile::F2 => "main",
        Tile::F4 => "f4",
    }
}

/// The pipeline of a transform `shader` for `tile`.
fn transform_key(shader: Shader, tile: Tile) -> crate::shader::PipelineKey {
    let mut k = key(shader);
    k.entry = entry(tile);
    k
}

/// The grouped 1x1 convolution over the positions of `tile`.
pub(crate) fn gemm_spec(spec: &ConvSpec, tile: Tile) -> Result<ConvSpec> {
    let p = tile.positions();
    Ok(ConvSpec::new(
        p * spec.in_channels,
        p * spec.out_channels,
        1,
        1,
        0,
        p * spec.groups,
    )?)
}

/// `G g G^T` of every 3x3 filter, computed in f64, as the weights of [`gemm_spec`]:
/// `[P * cout, cin / groups, 1, 1]`, output channel `p * cout + co`.
pub(crate) fn transform_weights(weight: ArrayView4<'_, f32>, tile: Tile) -> Array4<f32> {
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

/// Invocations per workgroup of `f4_wide` (`WIDE_WG` in `wino_input.wgsl`).
const WIDE_WG: usize = 16;

/// Whether the F(4x4) input transform of a map `tw` tiles wide runs 4 tiles per invocation
/// (`f4_wide`, storing 4 tiles' values at once): where the tile rows split into 4s.
pub(crate) fn wide_input(tile: Tile, tw: usize) -> bool {
    tile == Tile::F4 && tw.is_multiple_of(4)
}

/// Whether the F(4x4) output transform of a map `tw` tiles wide with planes of `plane` values
/// runs a tile row of 4 tiles per invocation (`f4_wide` in `wino_output.wgsl`, loading the 4
/// tiles' products and storing their 4 whole output rows as vec4s): where a row is 4 tiles
/// (13 to 16 wide), the planes are a multiple of 4 values and there is no residual.
pub(crate) fn wide_output(tile: Tile, tw: usize, plane: usize, residual: bool) -> bool {
    tile == Tile::F4 && tw == 4 && plane.is_multiple_of(4) && !residual
}

/// `W` of `f4_wide` in `wino_input.wgsl` for an `h` x `w` map `tw` tiles wide: `w` where each
/// invocation's strip is 6 whole rows (4 tiles a row, 13 to 16 wide) and the planes are whole
/// vec4s, so that it loads the strip as aligned quads; 0 (scalar loads) elsewhere.
pub(crate) fn wide_input_rows(tw: usize, h: usize, w: usize) -> usize {
    if tw == 4 && (h * w).is_multiple_of(4) {
        w
    } else {
        0
    }
}

/// Whether an F(4x4) output transform into an `oh` x `ow` map and the next conv's F(4x4) input
/// transform of it run as one dispatch (`f4_chain` in `wino_output.wgsl`, one invocation per
/// plane, the map never stored): maps of 4 x 4 tiles (13 to 16 each way) whose planes are whole
/// vec4s. The plan also asks that the map go nowhere else and that no residual be added.
pub(crate) fn chains(tile: Tile, oh: usize, ow: usize) -> bool {
    tile == Tile::F4 && oh.div_ceil(4) == 4 && ow.div_ceil(4) == 4 && (oh * ow).is_multiple_of(4)
}

/// The output transform's epilogue flags (`FLAG_*` in `wino_output.wgsl`).
fn epilogue_flags(scale: bool, bias: bool, residual: bool, relu: bool) -> u32 {
    [
        (scale, FLAG_SCALE),
        (bias, FLAG_BIAS),
        (residual, FLAG_RESIDUAL),
        (relu, FLAG_RELU),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .fold(0, |flags, (_, f)| flags | f)
}

/// Invocations per workgroup of `f4_chain`.
const CHAIN_WG: usize = 8;

/// The output transform into a `y` = `[n, c, oh, ow]` map chained with the next conv's input
/// transform of it ([`chains`]).
pub(crate) fn chain(
    y: [usize; 4],
    scale: bool,
    bias: bool,
    relu: bool,
    max_dim: u32,
) -> Result<DispatchSpec> {
    let [n, c, oh, ow] = y;
    let p = WinoOutputParams {
        total: u(n * c * 16),
        c: u(c),
        oh: u(oh),
        ow: u(ow),
        th: 4,
        tw: 4,
        flags: epilogue_flags(scale, bias, false, relu),
        ..WinoOutputParams::default()
    };
    let mut k = key(Shader::WinogradOutput).constant("W", u(ow));
    k.entry = "f4_chain";
    Ok(DispatchSpec::new(
        k,
        &p,
        linear_grid(n * c, CHAIN_WG, max_dim)?,
    ))
}

/// The input transform of an `x` = `[n, c, h, w]` input.
pub(crate) fn input(x: [usize; 4], tile: Tile, max_dim: u32) -> Result<DispatchSpec> {
    let [n, c, h, w] = x;
    let (th, tw) = (h.div_ceil(tile.m()), w.div_ceil(tile.m()));
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
    // `f4_wide`: one invocation per 4 tiles.
    let (k, invocations, wg) = if wide_input(tile, tw) {
        let mut k = key(Shader::WinogradInput).constant("W", u(wide_input_rows(tw, h, w)));
        k.entry = "f4_wide";
        (k, total / 4, WIDE_WG)
    } else {
        (transform_key(Shader::WinogradInput, tile), total, WG)
    };
    Ok(DispatchSpec::new(
        k,
        &p,
        linear_grid(invocations, wg, max_dim)?,
    ))
}

/// The output transform into a `y` = `[n, c, oh, ow]` output, with the conv's epilogue.
pub(crate) fn output(
    y: [usize; 4],
    tile: Tile,
    scale: bool,
    bias: bool,
    residual: bool,
    relu: bool,
    max_dim: u32,
) -> Result<DispatchSpec> {
    let [n, c, oh, ow] = y;
    let (th, tw) = (oh.div_ceil(tile.m()), ow.div_ceil(tile.m()));
    let total = n * c * th * tw;
    let p = WinoOutputParams {
        total: u(total),
        c: u(c),
        oh: u(oh),
        ow: u(ow),
        th: u(th),
        tw: u(tw),
        flags: epilogue_flags(scale, bias, residual, relu),
        ..WinoOutputParams::default()
    };
    // `f4_wide`: one invocation per tile row of 4 tiles.
    let (k, invocations, wg) = if wide_output(tile, tw, oh * ow, residual) {
        let mut k = key(Shader::WinogradOutput).constant("W", u(ow));
        k.entry = "f4_wide";
        (k, total / 4, WIDE_WG)
    } else {
        (transform_key(Shader::WinogradOutput, tile), total, WG)
    };
    Ok(DispatchSpec::new(
        k,
        &p,
        linear_grid(invocations, wg, max_dim)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The main path takes F(4x4) only on software adapters, in f32, for wide 3x3 stride-1
    /// convs; forcing picks the tile on any adapter and precision; other convs stay direct.
    #[test]
    fn winograd_is_chosen_where_it_measured_faster_or_when_forced() {
        let conv = |c: usize, stride: usize, groups: usize| {
            ConvSpec::new(c, c, 3, stride, 1, groups).expect("spec")
        };
        let wide = conv(48, 1, 1);
        let (f32_, f16_) = (Precision::F32, Precision::F16);
        let lavapipe = Caps::software_for_tests(16384);
        let hardware = Caps {
            software: false,
            ..lavapipe
        };
        let tiled = |spec: &ConvSpec, caps: &Caps, precision| {
            chosen(ConvKernel::Tiled, spec, caps, precision)
        };
        assert_eq!(tiled(&wide, &lavapipe, f32_), Some(Tile::F4));
        assert_eq!(tiled(&wide, &hardware, f32_), None);
        assert_eq!(tiled(&wide, &lavapipe, f16_), None);
        assert_eq!(tiled(&conv(47, 1, 1), &lavapipe, f32_), None);
        // 96 channels in 4 groups: 24 per group.
        assert_eq!(tiled(&conv(96, 1, 4), &lavapipe, f32_), None);
        assert_eq!(tiled(&conv(192, 2, 1), &lavapipe, f32_), None);
        // The product's 36 * cin weight rows must fit a texture: 455 * 36 = 16380 does, 456
        // (and B3's 768) does not; nor does anything without subgroups.
        assert_eq!(tiled(&conv(455, 1, 1), &lavapipe, f32_), Some(Tile::F4));
        assert_eq!(tiled(&conv(456, 1, 1), &lavapipe, f32_), None);
        assert_eq!(tiled(&conv(768, 1, 1), &lavapipe, f32_), None);
        let no_subgroups = Caps {
            subgroup_min: None,
            ..lavapipe
        };
        assert_eq!(tiled(&wide, &no_subgroups, f32_), None);
        for caps in [lavapipe, hardware, no_subgroups] {
            for precision in [f32_, f16_] {
                let pick = |k, s: &ConvSpec| chosen(k, s, &caps, precision);
                let s = conv(8, 1, 2);
                assert_eq!(pick(ConvKernel::Winograd, &s), Some(Tile::F2));
                assert_eq!(pick(ConvKernel::Winograd4, &s), Some(Tile::F4));
                assert_eq!(pick(ConvKernel::Winograd4, &conv(8, 2, 1)), None);
                assert_eq!(pick(ConvKernel::Subgroup, &wide), None);
                assert_eq!(pick(ConvKernel::Gemm, &wide), None);
            }
        }
    }

    /// Strips loaded as quads on A0's 14x14 maps, not on 13x13 (planes of 169) nor where a
    /// tile row is 8 tiles (an invocation's strip is then not whole rows).
    #[test]
    fn wide_input_loads_whole_row_strips_as_quads() {
        assert_eq!(wide_input_rows(4, 14, 14), 14);
        assert_eq!(wide_input_rows(4, 13, 16), 16);
        assert_eq!(wide_input_rows(4, 13, 13), 0);
        assert_eq!(wide_input_rows(8, 32, 32), 0);
    }

    /// A tile row per output-transform invocation only for F(4x4) on maps of 4 tile columns
    /// whose planes are whole vec4s, without a residual: A0's 14x14 maps.
    #[test]
    fn wide_output_transform_on_rows_of_four_tiles() {
        assert!(wide_output(Tile::F4, 4, 14 * 14, false));
        assert!(wide_output(Tile::F4, 4, 16 * 13, false));
        assert!(!wide_output(Tile::F4, 4, 14 * 14, true));
        assert!(!wide_output(Tile::F4, 4, 13 * 13, false));
        assert!(!wide_output(Tile::F4, 8, 32 * 32, false));
        assert!(!wide_output(Tile::F4, 7, 28 * 28, false));
        assert!(!wide_output(Tile::F2, 4, 8 * 8, false));
    }

    /// 4 tiles per input-transform invocation only for F(4x4) on maps of 4, 8, ... tile columns
    /// (13 to 16, 29 to 32 ... wide).
    #[test]
    fn wide_input_transform_where_tile_rows_split_into_fours() {
        assert!(wide_input(Tile::F4, 4) && wide_input(Tile::F4, 8));
        assert!(!wide_input(Tile::F4, 7) && !wide_input(Tile::F4, 14));
        assert!(!wide_input(Tile::F2, 4));
    }

    /// One tile in f64 through the three transforms (B^T d B, U, A^T M A) equals the direct
    /// 3x3 correlation of the 4x4 patch: checks the weight transform against the shaders'
    /// matrices.
    #[test]
    fn weight_transform_with_the_shader_matrices_is_a_3x3_correlation() {
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
}
