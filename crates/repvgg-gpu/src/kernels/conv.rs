//! Convolution kernels: which one a layer runs, the weight layout it wants, its parameters.

use ndarray::ArrayView4;
use repvgg_math::ConvSpec;
use repvgg_math::winograd::Tile;

use super::{
    DispatchSpec, FLAG_BIAS, FLAG_PARTIAL, FLAG_RELU, FLAG_RESIDUAL, FLAG_SCALE, grid, linear_grid,
    params, u,
};
use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::precision::Precision;
use crate::shader::{PipelineKey, Shader};

pub(crate) use super::tiles::{
    GEMM_TK, GemmCols, GemmRows, SubgroupShape, TILE_K, TILE_M, TILE_N, k_split, subgroup_ch4,
    subgroup_key, subgroup_tile,
};

/// A word that names no [`ConvKernel`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a GPU convolution kernel: expected tiled, gemm, split-k, workgroup, subgroup, \
     naive, winograd or winograd4"
)]
pub struct ParseConvKernelError(pub String);

impl std::fmt::Display for ConvKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ConvKernel {
    type Err = ParseConvKernelError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let word = s.trim().to_ascii_lowercase().replace('_', "-");
        let word = if word == "splitk" {
            "split-k".into()
        } else {
            word
        };
        ConvKernel::ALL
            .into_iter()
            .find(|k| k.name() == word)
            .ok_or_else(|| ParseConvKernelError(s.into()))
    }
}

/// Which convolution kernel a network uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConvKernel {
    /// The main path, per layer: on a software adapter (lavapipe: 8-wide subgroups, no real
    /// workgroup memory) [`ConvKernel::Subgroup`] where the conv allows it; everywhere else
    /// [`ConvKernel::Gemm`].
    #[default]
    Tiled,
    /// Implicit GEMM with a tile configured per layer (`conv_gemm.wgsl`): 64-256 invocations,
    /// 4x4 to 8x8 outputs per invocation, register-staged K tiles. Runs on every adapter. A
    /// layer that would launch fewer workgroups than the device wants (late layers at batch 1
    /// on a hardware GPU) splits its sum over K into slices whose partial sums a second pass
    /// adds up (`conv_gemm.wgsl`'s entry point `reduce`, with the epilogue).
    Gemm,
    /// [`ConvKernel::Gemm`] with the sum always split over K, into as many slices as it has K
    /// tiles, up to 16: for tests and A/B runs of the split-K path.
    SplitK,
    /// Implicit GEMM with workgroup-shared tiles and 4x4 register blocks (`conv_tiled.wgsl`):
    /// runs on every adapter.
    Workgroup,
    /// Implicit GEMM sharing the im2col tile through subgroup shuffles, weights in a texture
    /// (`conv_subgroup.wgsl`): needs subgroups of at least 8 invocations, kernel size 1 or 3,
    /// stride 1 or 2.
    Subgroup,
    /// One output per invocation (`conv_naive.wgsl`): the baseline.
    Naive,
    /// Winograd F(2x2, 3x3) for every 3x3 conv with stride 1 and padding 1 (input transform,
    /// a grouped 1x1 conv over the 16 positions, output transform with the epilogue); every
    /// other conv, and the 1x1 conv inside, as [`ConvKernel::Tiled`].
    Winograd,
    /// [`ConvKernel::Winograd`] with F(4x4, 3x3): 36 positions, 4x fewer multiplies than the
    /// direct conv (F(2x2): 2.25x), a little more rounding.
    Winograd4,
}

impl ConvKernel {
    /// The word for this kernel (`tiled`, `gemm`, `split-k`, ...), as `FromStr` reads it.
    pub fn name(self) -> &'static str {
        match self {
            ConvKernel::Tiled => "tiled",
            ConvKernel::Gemm => "gemm",
            ConvKernel::SplitK => "split-k",
            ConvKernel::Workgroup => "workgroup",
            ConvKernel::Subgroup => "subgroup",
            ConvKernel::Naive => "naive",
            ConvKernel::Winograd => "winograd",
            ConvKernel::Winograd4 => "winograd4",
        }
    }

    /// Every kernel, in declaration order (for A/B runs and tests that try them all).
    pub const ALL: [ConvKernel; 8] = [
        ConvKernel::Tiled,
        ConvKernel::Gemm,
        ConvKernel::SplitK,
        ConvKernel::Workgroup,
        ConvKernel::Subgroup,
        ConvKernel::Naive,
        ConvKernel::Winograd,
        ConvKernel::Winograd4,
    ];

    /// The Winograd tile a network built with this kernel on `ctx` in `precision` runs `spec`
    /// with, or `None` for a direct conv: F(2x2) or F(4x4) where forced, and on the main path
    /// F(4x4) where it measured faster (software adapters, f32, wide 3x3 stride-1 convs whose
    /// product fits the subgroup kernel; figures in docs/gpu.md).
    pub fn winograd_tile(
        self,
        ctx: &GpuContext,
        spec: &ConvSpec,
        precision: Precision,
    ) -> Option<Tile> {
        super::winograd::chosen(self, spec, &crate::upload::caps(ctx), precision)
    }
}

params! {
    /// `conv_tiled.wgsl`.
    ConvTiledParams for Shader::ConvTiled => {
        n, cin, h, w, cout, oh, ow, stride, pad, cin_g, cout_g, k_total, m_pad, k_pad, flags,
        m_tiles,
    }
}

params! {
    /// `conv_gemm.wgsl`.
    ConvGemmParams for Shader::ConvGemm => {
        n, cin, h, w, cout, oh, ow, stride, pad, cin_g, cout_g, k_total, m_pad, k_pad, flags,
        m_tiles, groups, k_len, splits, _pad0,
    }
}

params! {
    /// `conv_subgroup.wgsl`.
    ConvSubgroupParams for Shader::ConvSubgroup => {
        n, cin, h, w, cout, oh, ow, pad, cin_g, cout_g, flags, blocks_x, blocks_y, m_tiles,
        _pad0, _pad1,
    }
}

params! {
    /// `conv_naive.wgsl`.
    ConvNaiveParams for Shader::ConvNaive => {
        n, cin, h, w, cout, oh, ow, stride, pad, cin_g, cout_g, ks, flags, _pad0, _pad1, _pad2,
    }
}

/// What the adapter offers that kernel choice depends on (a GPU-free copy, for tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Caps {
    /// The smallest subgroup size when the device has subgroup operations.
    pub subgroup_min: Option<u32>,
    pub max_texture_dim: u32,
    pub max_workgroups: u32,
    /// A CPU emulating a GPU (lavapipe, SwiftShader, WARP).
    pub software: bool,
    /// Workgroups a dispatch should have at least to fill the device.
    pub min_workgroups: usize,
    /// Bytes one storage binding may take: the device's binding and buffer limits, at most
    /// `MAX_BINDING` (activation bindings and the split-K scratch must fit).
    pub max_binding: u64,
}

#[cfg(test)]
impl Caps {
    /// A lavapipe-like software adapter (subgroups of 8) with textures up to
    /// `max_texture_dim`, for the kernel-choice tests.
    pub(crate) fn software_for_tests(max_texture_dim: u32) -> Self {
        Self {
            subgroup_min: Some(8),
            max_texture_dim,
            max_workgroups: 65535,
            software: true,
            min_workgroups: 8,
            max_binding: 1 << 30,
        }
    }
}

/// Invocations per workgroup of `conv_gemm.wgsl`'s `reduce` entry point.
const REDUCE_WG: usize = 256;

/// How one conv layer runs, decided when its weights are uploaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConvImpl {
    Gemm {
        rows: GemmRows,
        m_pad: usize,
        k_pad: usize,
        /// Always split the sum over K ([`ConvKernel::SplitK`]).
        force_split: bool,
    },
    Workgroup {
        m_pad: usize,
        k_pad: usize,
    },
    Subgroup {
        m_tiles: usize,
        sg: usize,
        /// vec4 accumulators per pixel (`CH4`, 2 or 3): 4 * ch4 channels per invocation.
        ch4: usize,
    },
    Naive,
}

impl ConvImpl {
    /// The WGSL file this implementation runs.
    pub fn shader(self) -> Shader {
        match self {
            ConvImpl::Gemm { .. } => Shader::ConvGemm,
            ConvImpl::Workgroup { .. } => Shader::ConvTiled,
            ConvImpl::Subgroup { .. } => Shader::ConvSubgroup,
            ConvImpl::Naive => Shader::ConvNaive,
        }
    }

    /// The kernel's name, as `--kernel` spells it.
    pub fn name(self) -> &'static str {
        match self {
            ConvImpl::Gemm { .. } => "gemm",
            ConvImpl::Workgroup { .. } => "workgroup",
            ConvImpl::Subgroup { .. } => "subgroup",
            ConvImpl::Naive => "naive",
        }
    }
}

/// The weights of a conv as the kernel wants them.
#[derive(Debug)]
pub(crate) enum WeightData {
    Buffer(Vec<f32>),
    /// `height` rows of `width` rgba32float texels.
    Texture {
        data: Vec<f32>,
        width: usize,
        height: usize,
    },
}

/// Whether `conv_subgroup.wgsl` can run `spec` with `caps`.
pub(crate) fn subgroup_fits(caps: &Caps, spec: &ConvSpec) -> bool {
    let cout_g = spec.out_channels / spec.groups;
    let k_rows = spec.in_channels * spec.kernel_size * spec.kernel_size;
    let sg = caps.subgroup_min.unwrap_or(8) as usize;
    let m = 4 * subgroup_ch4(cout_g, sg) * sg;
    let width = cout_g.div_ceil(m) * m / 4;
    let max_dim = caps.max_texture_dim as usize;
    caps.subgroup_min.is_some_and(|s| s >= 8)
        && matches!(spec.kernel_size, 1 | 3)
        && matches!(spec.stride, 1 | 2)
        && width <= max_dim
        && k_rows <= max_dim
}

/// The implementation of `kernel` for `spec`, with its weights laid out.
pub(crate) fn choose(
    kernel: ConvKernel,
    caps: &Caps,
    spec: &ConvSpec,
    weight: ArrayView4<'_, f32>,
) -> Result<(ConvImpl, WeightData)> {
    let subgroup = match kernel {
        ConvKernel::Tiled | ConvKernel::Winograd | ConvKernel::Winograd4 => {
            caps.software && subgroup_fits(caps, spec)
        }
        ConvKernel::Subgroup if subgroup_fits(caps, spec) => true,
        ConvKernel::Subgroup => {
            return Err(GpuError::Unsupported(format!(
                "the subgroup conv kernel needs subgroups of at least 8 invocations \
                 (this adapter: {}), kernel size 1 or 3 and stride 1 or 2 (this conv: {}x{}, \
                 stride {})",
                caps.subgroup_min
                    .map_or("no subgroups".to_string(), |s| format!("min size {s}")),
                spec.kernel_size,
                spec.kernel_size,
                spec.stride
            )));
        }
        ConvKernel::Gemm | ConvKernel::SplitK | ConvKernel::Workgroup | ConvKernel::Naive => false,
    };
    Ok(if subgroup {
        let sg = caps.subgroup_min.unwrap_or(8) as usize;
        let ch4 = subgroup_ch4(spec.out_channels / spec.groups, sg);
        let (data, m_pad, _) = gemm_weight_layout(&weight, spec, 4 * ch4 * sg, 1);
        let height = data.len() / m_pad;
        (
            ConvImpl::Subgroup {
                m_tiles: m_pad / (4 * ch4 * sg),
                sg,
                ch4,
            },
            WeightData::Texture {
                data,
                width: m_pad / 4,
                height,
            },
        )
    } else if matches!(
        kernel,
        ConvKernel::Tiled
            | ConvKernel::Gemm
            | ConvKernel::SplitK
            | ConvKernel::Winograd
            | ConvKernel::Winograd4
    ) {
        let rows = GemmRows::for_channels(spec.out_channels / spec.groups);
        let (data, m_pad, k_pad) = gemm_weight_layout(&weight, spec, rows.bm(), GEMM_TK);
        (
            ConvImpl::Gemm {
                rows,
                m_pad,
                k_pad,
                force_split: kernel == ConvKernel::SplitK,
            },
            WeightData::Buffer(data),
        )
    } else if kernel == ConvKernel::Naive {
        let data = weight.as_standard_layout().iter().copied().collect();
        (ConvImpl::Naive, WeightData::Buffer(data))
    } else {
        let (data, m_pad, k_pad) = gemm_weight_layout(&weight, spec, TILE_M, TILE_K);
        (
            ConvImpl::Workgroup { m_pad, k_pad },
            WeightData::Buffer(data),
        )
    })
}

/// The GEMM weight layout of the tiled kernels: `[group][k][m]` with
/// `k = (ci * ks + ky) * ks + kx`, `k` zero-padded to a multiple of `k_multiple` and `m` to a
/// multiple of `m_multiple`. Returns the data, padded `m` and padded `k`.
pub(crate) fn gemm_weight_layout(
    weight: &ArrayView4<'_, f32>,
    spec: &ConvSpec,
    m_multiple: usize,
    k_multiple: usize,
) -> (Vec<f32>, usize, usize) {
    let [_, cin_g, ks, _] = spec.weight_shape();
    let cout_g = spec.out_channels / spec.groups;
    let k_total = cin_g * ks * ks;
    let k_pad = k_total.div_ceil(k_multiple) * k_multiple;
    let m_pad = cout_g.div_ceil(m_multiple) * m_multiple;
    let mut data = vec![0.0f32; spec.groups * k_pad * m_pad];
    for ((o, ci, ky, kx), &v) in weight.indexed_iter() {
        let (g, m) = (o / cout_g, o % cout_g);
        let k = (ci * ks + ky) * ks + kx;
        data[(g * k_pad + k) * m_pad + m] = v;
    }
    (data, m_pad, k_pad)
}

/// The epilogue of a conv, as the flags its kernel reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConvEpilogue {
    pub scale: bool,
    pub bias: bool,
    pub residual: bool,
    pub relu: bool,
}

impl ConvEpilogue {
    fn flags(self) -> u32 {
        let flag = |on: bool, f: u32| if on { f } else { 0 };
        flag(self.scale, FLAG_SCALE)
            | flag(self.bias, FLAG_BIAS)
            | flag(self.residual, FLAG_RESIDUAL)
            | flag(self.relu, FLAG_RELU)
    }
}

/// Pipeline, parameters and workgroups of a conv from input shape `x` to output shape `y`.
pub(crate) fn dispatch(
    imp: ConvImpl,
    spec: &ConvSpec,
    ep: ConvEpilogue,
    x: [usize; 4],
    y: [usize; 4],
    caps: &Caps,
) -> Result<DispatchSpec> {
    let max_dim = caps.max_workgroups;
    let [n, cin, h, w] = x;
    let [_, cout, oh, ow] = y;
    let cin_g = cin / spec.groups;
    let cout_g = cout / spec.groups;
    let ks = spec.kernel_size;
    let flags = ep.flags();
    let check_z = |z: usize| {
        if z > max_dim as usize {
            Err(GpuError::shape(
                "output-channel tiles x groups of a conv",
                format!("at most {max_dim}"),
                z,
            ))
        } else {
            Ok(u(z))
        }
    };
    match imp {
        ConvImpl::Gemm {
            rows,
            m_pad,
            k_pad,
            force_split,
        } => {
            let m_tiles = m_pad / rows.bm();
            let tiles = m_tiles * spec.groups;
            check_z(tiles)?;
            let cols = GemmCols::for_pixels(n * oh * ow, tiles, caps.min_workgroups);
            let pixel_tiles = (n * oh * ow).div_ceil(cols.bn());
            let workgroups = pixel_tiles * tiles;
            let total = n * cout * oh * ow;
            let slice_bytes = (4 * total as u64).max(1);
            // As many slices as the scratch binding holds and workgroups z can count.
            let max_slices = usize::try_from(caps.max_binding / slice_bytes)
                .unwrap_or(usize::MAX)
                .min(max_dim as usize / tiles.max(1));
            let (slices, per_slice) = k_split(
                k_pad / GEMM_TK,
                workgroups,
                caps.min_workgroups,
                force_split,
                max_slices,
            );
            let z = check_z(tiles * slices)?;
            let p = ConvGemmParams {
                n: u(n),
                cin: u(cin),
                h: u(h),
                w: u(w),
                cout: u(cout),
                oh: u(oh),
                ow: u(ow),
                stride: u(spec.stride),
                pad: u(spec.padding),
                cin_g: u(cin_g),
                cout_g: u(cout_g),
                k_total: u(cin_g * ks * ks),
                m_pad: u(m_pad),
                k_pad: u(k_pad),
                flags: if slices > 1 { FLAG_PARTIAL } else { flags },
                m_tiles: u(m_tiles),
                groups: u(spec.groups),
                k_len: u(per_slice * GEMM_TK),
                splits: u(slices),
                ..ConvGemmParams::default()
            };
            let [gx, gy] = grid(pixel_tiles, max_dim)?;
            let key = PipelineKey::new(Shader::ConvGemm)
                .constant("KS", u(ks))
                .constant("WX", u(cols.wx))
                .constant("WY", u(rows.wy))
                .constant("TMV", u(rows.tmv))
                .constant("TNV", u(cols.tnv));
            let mut d = DispatchSpec::new(key, &p, [gx, gy, z]);
            if slices > 1 {
                let r = ConvGemmParams { flags, ..p };
                let mut key = PipelineKey::new(Shader::ConvGemm);
                key.entry = "reduce";
                let reduce = DispatchSpec::new(key, &r, linear_grid(total, REDUCE_WG, max_dim)?);
                d.then = Some(Box::new(reduce));
                d.scratch_bytes = slice_bytes * slices as u64;
                d.k_slices = slices;
            }
            Ok(d)
        }
        ConvImpl::Workgroup { m_pad, k_pad } => {
            let m_tiles = m_pad / TILE_M;
            let p = ConvTiledParams {
                n: u(n),
                cin: u(cin),
                h: u(h),
                w: u(w),
                cout: u(cout),
                oh: u(oh),
                ow: u(ow),
                stride: u(spec.stride),
                pad: u(spec.padding),
                cin_g: u(cin_g),
                cout_g: u(cout_g),
                k_total: u(cin_g * ks * ks),
                m_pad: u(m_pad),
                k_pad: u(k_pad),
                flags,
                m_tiles: u(m_tiles),
            };
            let z = check_z(m_tiles * spec.groups)?;
            let [gx, gy] = grid((n * oh * ow).div_ceil(TILE_N), max_dim)?;
            let key = PipelineKey::new(Shader::ConvTiled).constant("KS", u(ks));
            Ok(DispatchSpec::new(key, &p, [gx, gy, z]))
        }
        ConvImpl::Subgroup { m_tiles, sg, ch4 } => {
            // A 1x1 stride-1 conv without padding reads each pixel once: its map as one row
            // (the same memory) fills the tiles whatever the map's shape.
            let flat = ks == 1 && spec.stride == 1 && spec.padding == 0;
            let (h, w, oh, ow) = if flat {
                (1, h * w, 1, oh * ow)
            } else {
                (h, w, oh, ow)
            };
            let (nbw, rows) = subgroup_tile(ow, oh, ks, spec.stride, ch4);
            let (blocks_x, blocks_y) = (ow.div_ceil(nbw), oh.div_ceil(rows));
            let p = ConvSubgroupParams {
                n: u(n),
                cin: u(cin),
                h: u(h),
                w: u(w),
                cout: u(cout),
                oh: u(oh),
                ow: u(ow),
                pad: u(spec.padding),
                cin_g: u(cin_g),
                cout_g: u(cout_g),
                flags,
                blocks_x: u(blocks_x),
                blocks_y: u(blocks_y),
                m_tiles: u(m_tiles),
                ..ConvSubgroupParams::default()
            };
            let z = check_z(m_tiles * spec.groups)?;
            let [gx, gy] = grid(n * blocks_y * blocks_x, max_dim)?;
            let shape = SubgroupShape {
                h,
                w,
                oh,
                ow,
                nbw,
                rows,
                flat,
            };
            let key = subgroup_key(spec, &shape, sg, ch4, cin_g, ep.residual);
            Ok(DispatchSpec::new(key, &p, [gx, gy, z]))
        }
        ConvImpl::Naive => {
            let p = ConvNaiveParams {
                n: u(n),
                cin: u(cin),
                h: u(h),
                w: u(w),
                cout: u(cout),
                oh: u(oh),
                ow: u(ow),
                stride: u(spec.stride),
                pad: u(spec.padding),
                cin_g: u(cin_g),
                cout_g: u(cout_g),
                ks: u(ks),
                flags,
                ..ConvNaiveParams::default()
            };
            let [gx, gy] = grid((n * cout * oh * ow).div_ceil(64), max_dim)?;
            Ok(DispatchSpec::new(
                PipelineKey::new(Shader::ConvNaive),
                &p,
                [gx, gy, 1],
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn gemm_layout_puts_output_channels_fastest_and_zero_pads() {
        let spec = ConvSpec::new(4, 6, 3, 1, 1, 2).expect("spec");
        let w = Array4::from_shape_fn(spec.weight_shape(), |(o, i, y, x)| {
            (o * 1000 + i * 100 + y * 10 + x) as f32
        });
        let (data, m_pad, k_pad) = gemm_weight_layout(&w.view(), &spec, 4, 16);
        assert_eq!((m_pad, k_pad), (4, 32));
        assert_eq!(data.len(), 2 * 32 * 4);
        // Group 1, m = 2 (channel 5), ci = 1, ky = 2, kx = 0: k = (1 * 3 + 2) * 3 = 15.
        assert_eq!(data[(32 + 15) * 4 + 2], 5120.0);
        // Padding: m = 3 does not exist in a group of 3, k = 18.. does not exist.
        assert_eq!(data[(32 + 15) * 4 + 3], 0.0);
        assert!(data[(32 + 18) * 4..(32 + 32) * 4].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn kernel_choice_follows_the_adapter_and_the_conv() {
        let spec = ConvSpec::conv3x3(8, 16, 1, 1).expect("spec");
        let w = Array4::zeros(spec.weight_shape());
        let with = Caps::software_for_tests(8192);
        let hardware = Caps {
            software: false,
            ..with
        };
        let without = Caps {
            subgroup_min: None,
            ..with
        };
        let imp = |k, caps: &Caps, spec: &ConvSpec| {
            choose(k, caps, spec, Array4::zeros(spec.weight_shape()).view()).map(|(i, _)| i)
        };
        assert!(matches!(
            imp(ConvKernel::Tiled, &with, &spec),
            Ok(ConvImpl::Subgroup {
                m_tiles: 1,
                sg: 8,
                ch4: 2
            })
        ));
        let gemm16 = ConvImpl::Gemm {
            rows: GemmRows { wy: 8, tmv: 1 },
            m_pad: 32,
            k_pad: 80,
            force_split: false,
        };
        assert_eq!(imp(ConvKernel::Tiled, &without, &spec).ok(), Some(gemm16));
        assert_eq!(imp(ConvKernel::Tiled, &hardware, &spec).ok(), Some(gemm16));
        assert_eq!(
            imp(ConvKernel::SplitK, &with, &spec).ok(),
            Some(ConvImpl::Gemm {
                rows: GemmRows { wy: 8, tmv: 1 },
                m_pad: 32,
                k_pad: 80,
                force_split: true,
            })
        );
        assert!(matches!(
            imp(ConvKernel::Workgroup, &with, &spec),
            Ok(ConvImpl::Workgroup {
                m_pad: 64,
                k_pad: 80
            })
        ));
        assert!(matches!(
            imp(ConvKernel::Subgroup, &without, &spec),
            Err(GpuError::Unsupported(_))
        ));
        let five = ConvSpec::new(3, 4, 5, 1, 2, 1).expect("spec");
        assert!(matches!(
            imp(ConvKernel::Subgroup, &with, &five),
            Err(GpuError::Unsupported(_))
        ));
        assert!(matches!(
            choose(ConvKernel::Naive, &with, &spec, w.view()),
            Ok((ConvImpl::Naive, WeightData::Buffer(d))) if d.len() == 16 * 8 * 9
        ));
    }
}
