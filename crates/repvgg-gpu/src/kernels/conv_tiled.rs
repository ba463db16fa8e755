//! `conv_tiled.wgsl`: implicit-GEMM convolution with 64 x 64 workgroup-shared tiles and 4 x 4
//! outputs per invocation; runs on every adapter (f32 only).

use ndarray::ArrayView4;

use super::{
    ConvShape, DispatchSpec, WeightData, check_z, conv_params, gemm_weight_layout, grid, params, u,
};
use crate::error::Result;
use crate::shader::{PipelineKey, Shader};

params! {
    /// `conv_tiled.wgsl`.
    ConvTiledParams for Shader::ConvTiled => {
        n, cin, h, w, cout, oh, ow, stride, pad, cin_g, cout_g, k_total, m_pad, k_pad, flags,
        m_tiles,
    }
}

/// Output-channel tile (`TM` in the WGSL).
const TILE_M: usize = 64;
/// Pixel tile (`TN`).
const TILE_N: usize = 64;
/// Reduction tile (`TK`).
const TILE_K: usize = 16;

/// How one conv runs on this kernel, fixed at upload: its padded weight matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Config {
    pub m_pad: usize,
    pub k_pad: usize,
}

/// The configuration for `spec` and its weights in the layout it reads.
pub(crate) fn prepare(
    spec: &repvgg_math::ConvSpec,
    weight: ArrayView4<'_, f32>,
) -> (Config, WeightData) {
    let (data, m_pad, k_pad) = gemm_weight_layout(&weight, spec, TILE_M, TILE_K);
    (Config { m_pad, k_pad }, WeightData::Buffer(data))
}

/// Pipeline, parameters and workgroups of a conv.
pub(crate) fn dispatch(c: Config, s: ConvShape<'_>, max_dim: u32) -> Result<DispatchSpec> {
    let spec = s.spec;
    let [n, cin, _, _] = s.x;
    let [_, _, oh, ow] = s.y;
    let ks = spec.kernel_size;
    let m_tiles = c.m_pad / TILE_M;
    let p = conv_params!(ConvTiledParams from s, {
        k_total: u(cin / spec.groups * ks * ks),
        m_pad: u(c.m_pad),
        k_pad: u(c.k_pad),
        m_tiles: u(m_tiles),
    });
    let z = check_z(m_tiles * spec.groups, max_dim)?;
    let [gx, gy] = grid((n * oh * ow).div_ceil(TILE_N), max_dim)?;
    let key = PipelineKey::new(Shader::ConvTiled).constant("KS", u(ks));
    Ok(DispatchSpec::new(key, &p, [gx, gy, z]))
}
