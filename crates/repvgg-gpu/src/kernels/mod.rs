//! Kernels and the layer kinds they run. One file per WGSL file of `shaders/`, each owning the
//! `#[repr(C)]` parameter struct its `var<uniform> p` holds (checked against the WGSL layout
//! naga reflects, in its tests), the rules of where it applies and how it tiles, the weight
//! layout it wants and its dispatch (parameters and workgroup counts); the file of a layer kind
//! also holds its struct, implementing [`layer::Layer`] (shapes, work, bindings), which
//! [`op::Op`] lists. The conv layer ([`conv`]) runs on one of the conv kernels; which one is
//! chosen above them, in `select`. Pure arithmetic: nothing here touches a device.

pub(crate) mod affine;
pub(crate) mod channel_scale;
pub(crate) mod conv;
pub(crate) mod conv_gemm;
pub(crate) mod conv_kernel;
pub(crate) mod conv_naive;
pub(crate) mod conv_subgroup;
pub(crate) mod conv_tiled;
pub(crate) mod gap;
pub(crate) mod layer;
pub(crate) mod linear;
pub(crate) mod op;
pub(crate) mod wino_input;
pub(crate) mod wino_output;

use ndarray::ArrayView4;
use repvgg_math::ConvSpec;

use crate::error::{GpuError, Result};
use crate::shader::PipelineKey;

/// Epilogue flags shared by the WGSL files (`FLAG_*` in the prelude, [`crate::shader`]).
pub(crate) const FLAG_SCALE: u32 = 1;
pub(crate) const FLAG_BIAS: u32 = 2;
pub(crate) const FLAG_RESIDUAL: u32 = 4;
pub(crate) const FLAG_RELU: u32 = 8;
/// `conv_gemm.wgsl`: store raw K-slice sums into `partial` (split-K).
pub(crate) const FLAG_PARTIAL: u32 = 16;

/// Bytes of the largest parameter struct; every layer gets a slot of at least this size.
pub(crate) const MAX_PARAMS_BYTES: usize = 80;

/// Declares a parameter struct of `u32` fields, laid out as WGSL lays out the struct of the
/// same field names (all `u32`: offsets 0, 4, 8, ...; the size a multiple of 16 through
/// explicit padding fields), with a test that checks it against the shader's `Params`.
macro_rules! params {
    ($(#[$m:meta])* $name:ident for $($shader:expr),+ => { $($(#[$fm:meta])* $f:ident),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
        pub(crate) struct $name {
            $($(#[$fm])* pub $f: u32,)*
        }

        impl $name {
            /// The shaders whose `Params` struct this mirrors.
            #[allow(dead_code)]
            pub(crate) const SHADERS: &[crate::shader::Shader] = &[$($shader),+];
        }

        #[cfg(test)]
        #[test]
        fn params_struct_matches_its_wgsl_layout() {
            let fields: &[(&str, usize)] =
                &[$((stringify!($f), std::mem::offset_of!($name, $f)),)*];
            for &shader in $name::SHADERS {
                crate::kernels::check_params_layout(fields, std::mem::size_of::<$name>(), shader);
            }
        }
    };
}
pub(crate) use params;

/// A conv kernel's parameter struct `$params`: the fields the conv kernels' `Params` share
/// (`n, cin, h, w, cout, oh, ow, stride, pad, cin_g, cout_g` and the epilogue's `flags`) from
/// `$shape` (a [`ConvShape`]), then the kernel's own fields as given (all of them).
macro_rules! conv_params {
    ($params:ident from $shape:expr, { $($f:ident: $v:expr),* $(,)? }) => {{
        let s: &crate::kernels::ConvShape<'_> = &$shape;
        let [n, cin, h, w] = s.x;
        let [_, cout, oh, ow] = s.y;
        let u = crate::kernels::u;
        $params {
            n: u(n),
            cin: u(cin),
            h: u(h),
            w: u(w),
            cout: u(cout),
            oh: u(oh),
            ow: u(ow),
            stride: u(s.spec.stride),
            pad: u(s.spec.padding),
            cin_g: u(cin / s.spec.groups),
            cout_g: u(cout / s.spec.groups),
            flags: s.ep.flags(),
            $($f: $v,)*
        }
    }};
}
pub(crate) use conv_params;

/// A layer ready to dispatch: its pipeline, its parameters (bytes of a params struct) and its
/// workgroup counts; a split-K conv has a second pass that reads a scratch buffer the first
/// one fills.
#[derive(Debug, Clone)]
pub(crate) struct DispatchSpec {
    pub key: PipelineKey,
    pub params: Vec<u8>,
    pub groups: [u32; 3],
    /// The second pass, run right after this one.
    pub then: Option<Box<DispatchSpec>>,
    /// Bytes of f32 scratch the two passes share (0 without a second pass).
    pub scratch_bytes: u64,
    /// K slices of a split-K conv (1 otherwise), for the profile.
    pub k_slices: usize,
}

impl DispatchSpec {
    pub fn new<P: bytemuck::Pod>(key: PipelineKey, params: &P, groups: [u32; 3]) -> Self {
        Self {
            key,
            params: bytemuck::bytes_of(params).to_vec(),
            groups,
            then: None,
            scratch_bytes: 0,
            k_slices: 1,
        }
    }
}

/// `v` as a `u32`: every count here is bounded by a binding of at most 2^31 bytes.
pub(crate) fn u(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Spreads `count` workgroups over x and y (shaders linearise `x + y * num_workgroups.x`).
pub(crate) fn grid(count: usize, max_dim: u32) -> Result<[u32; 2]> {
    let max = max_dim as usize;
    let count = count.max(1);
    if count <= max {
        return Ok([u(count), 1]);
    }
    let rows = count.div_ceil(max);
    if rows > max {
        return Err(GpuError::shape(
            "workgroups of one dispatch",
            format!("at most {max} x {max}"),
            count,
        ));
    }
    Ok([u(max), u(rows)])
}

/// A one-dimensional dispatch of `total` invocations in workgroups of `wg`.
pub(crate) fn linear_grid(total: usize, wg: usize, max_dim: u32) -> Result<[u32; 3]> {
    let [x, y] = grid(total.div_ceil(wg), max_dim)?;
    Ok([x, y, 1])
}

/// `z` workgroups (output-channel tiles x groups) within the device's `max_dim`.
pub(crate) fn check_z(z: usize, max_dim: u32) -> Result<u32> {
    if z > max_dim as usize {
        Err(GpuError::shape(
            "output-channel tiles x groups of a conv",
            format!("at most {max_dim}"),
            z,
        ))
    } else {
        Ok(u(z))
    }
}

/// The terms of a layer's epilogue besides the residual, which the layer holds as the tensor it
/// adds: [`EpilogueTerms::with`] makes the flags its kernel reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EpilogueTerms {
    pub scale: bool,
    pub bias: bool,
    pub relu: bool,
}

impl EpilogueTerms {
    /// The epilogue with the residual `residual` (added where `Some`).
    pub fn with(self, residual: Option<usize>) -> ConvEpilogue {
        ConvEpilogue {
            scale: self.scale,
            bias: self.bias,
            residual: residual.is_some(),
            relu: self.relu,
        }
    }
}

/// The epilogue of a conv or output transform, as the flags its kernel reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConvEpilogue {
    pub scale: bool,
    pub bias: bool,
    pub residual: bool,
    pub relu: bool,
}

impl ConvEpilogue {
    pub fn flags(self) -> u32 {
        let flag = |on: bool, f: u32| if on { f } else { 0 };
        flag(self.scale, FLAG_SCALE)
            | flag(self.bias, FLAG_BIAS)
            | flag(self.residual, FLAG_RESIDUAL)
            | flag(self.relu, FLAG_RELU)
    }
}

/// A conv from input shape `x` to output shape `y`, as its kernel's dispatch sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvShape<'a> {
    pub spec: &'a ConvSpec,
    pub x: [usize; 4],
    pub y: [usize; 4],
    pub ep: ConvEpilogue,
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

/// Checks a parameter struct (`fields`: name and byte offset, `size`) against the WGSL
/// `Params` of every form of `shader` (f32, and f16 where it has one).
#[cfg(test)]
pub(crate) fn check_params_layout(
    fields: &[(&str, usize)],
    size: usize,
    shader: crate::shader::Shader,
) {
    use crate::precision::Precision;
    let rust: Vec<(String, usize)> = fields.iter().map(|(n, o)| (n.to_string(), *o)).collect();
    let forms: &[Precision] = if shader.has_f16() {
        &Precision::ALL
    } else {
        &[Precision::F32]
    };
    for &precision in forms {
        let name = shader.file_name();
        let module = naga::front::wgsl::parse_str(&shader.source_for(precision))
            .unwrap_or_else(|e| panic!("{name} ({precision}): {e}"));
        let (_, var) = module
            .global_variables
            .iter()
            .find(|(_, v)| v.name.as_deref() == Some("p"))
            .unwrap_or_else(|| panic!("{name} has no `p`"));
        assert_eq!(var.space, naga::AddressSpace::Uniform, "{name}");
        let (wgsl, span) = match &module.types[var.ty].inner {
            naga::TypeInner::Struct { members, span } => (
                members
                    .iter()
                    .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
                    .collect::<Vec<_>>(),
                *span as usize,
            ),
            other => panic!("{name}: `p` is {other:?}"),
        };
        assert_eq!(rust, wgsl, "{name} ({precision}) Params vs its Rust struct");
        assert_eq!(size, span, "{name} ({precision}) Params size");
        assert!(span <= MAX_PARAMS_BYTES && span.is_multiple_of(16));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn grid_spreads_workgroups_over_two_dimensions() {
        assert_eq!(grid(0, 65535).ok(), Some([1, 1]));
        assert_eq!(grid(65535, 65535).ok(), Some([65535, 1]));
        assert_eq!(grid(65536, 65535).ok(), Some([65535, 2]));
        assert!(grid(65535 * 65535 + 1, 65535).is_err());
    }

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
}
