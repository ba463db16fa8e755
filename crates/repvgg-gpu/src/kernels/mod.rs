//! Kernels: for each WGSL file, the `#[repr(C)]` parameter struct its `var<uniform> p` holds
//! (checked against the WGSL layout naga reflects, in this module's tests), and how a layer's
//! parameters and workgroup counts are computed.

pub(crate) mod conv;
pub(crate) mod simple;
pub(crate) mod tiles;
pub(crate) mod winograd;

use crate::error::{GpuError, Result};
use crate::shader::{PipelineKey, Shader};

/// Epilogue flags shared by the WGSL files (`FLAG_*` there).
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
/// explicit padding fields).
macro_rules! params {
    ($(#[$m:meta])* $name:ident for $shader:expr => { $($(#[$fm:meta])* $f:ident),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
        pub(crate) struct $name {
            $($(#[$fm])* pub $f: u32,)*
        }

        impl $name {
            /// The shader whose `Params` struct this mirrors.
            #[allow(dead_code)]
            pub(crate) const SHADER: Shader = $shader;
            /// `(field, byte offset)`, in declaration order, for the layout test.
            #[cfg(test)]
            pub(crate) const FIELDS: &'static [(&'static str, usize)] =
                &[$((stringify!($f), std::mem::offset_of!($name, $f)),)*];
        }
    };
}
pub(crate) use params;

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

/// The pipeline of `shader` with its default entry point and no override constants.
pub(crate) fn key(shader: Shader) -> PipelineKey {
    PipelineKey::new(shader)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precision::Precision;

    #[test]
    fn grid_spreads_workgroups_over_two_dimensions() {
        assert_eq!(grid(0, 65535).ok(), Some([1, 1]));
        assert_eq!(grid(65535, 65535).ok(), Some([65535, 1]));
        assert_eq!(grid(65536, 65535).ok(), Some([65535, 2]));
        assert!(grid(65535 * 65535 + 1, 65535).is_err());
    }

    /// `(name, offset)` of each member of the struct type of the uniform `p`, and its size.
    fn wgsl_params(shader: Shader, precision: Precision) -> (Vec<(String, usize)>, usize) {
        let module = naga::front::wgsl::parse_str(&shader.source_for(precision))
            .unwrap_or_else(|e| panic!("{} ({precision}): {e}", shader.file_name()));
        let (_, var) = module
            .global_variables
            .iter()
            .find(|(_, v)| v.name.as_deref() == Some("p"))
            .unwrap_or_else(|| panic!("{} has no `p`", shader.file_name()));
        assert_eq!(
            var.space,
            naga::AddressSpace::Uniform,
            "{}",
            shader.file_name()
        );
        match &module.types[var.ty].inner {
            naga::TypeInner::Struct { members, span } => (
                members
                    .iter()
                    .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
                    .collect(),
                *span as usize,
            ),
            other => panic!("{}: `p` is {other:?}", shader.file_name()),
        }
    }

    /// The struct matches the WGSL `Params` of every form of the shader (f32, and f16 where
    /// it has one).
    fn check<P>(fields: &[(&str, usize)], shader: Shader) {
        let rust: Vec<(String, usize)> = fields.iter().map(|(n, o)| (n.to_string(), *o)).collect();
        let forms: &[Precision] = if shader.has_f16() {
            &Precision::ALL
        } else {
            &[Precision::F32]
        };
        for &precision in forms {
            let (wgsl, span) = wgsl_params(shader, precision);
            assert_eq!(
                rust,
                wgsl,
                "{} ({precision}) Params vs its Rust struct",
                shader.file_name()
            );
            assert_eq!(
                std::mem::size_of::<P>(),
                span,
                "{} ({precision}) Params size",
                shader.file_name()
            );
            assert!(span <= MAX_PARAMS_BYTES && span.is_multiple_of(16));
        }
    }

    /// A shader with an f16 form declares its storage alias (else its "f16" build would still
    /// store f32), and the f16 build really stores f16; the f32 build is the file as written.
    #[test]
    fn f16_forms_swap_the_storage_alias() {
        use crate::precision::ALIAS_ST_F32;
        for shader in Shader::ALL {
            assert_eq!(shader.source_for(Precision::F32), shader.source());
            if shader.has_f16() {
                assert_eq!(
                    shader.source().matches(ALIAS_ST_F32).count(),
                    1,
                    "{}",
                    shader.file_name()
                );
                let h = shader.source_for(Precision::F16);
                assert!(h.starts_with("enable f16;"), "{}", shader.file_name());
                assert!(h.contains("alias st = f16;"), "{}", shader.file_name());
            } else {
                assert_eq!(shader.source_for(Precision::F16), shader.source());
            }
        }
    }

    #[test]
    fn every_params_struct_matches_its_wgsl_layout() {
        use conv::{ConvGemmParams, ConvNaiveParams, ConvSubgroupParams, ConvTiledParams};
        use simple::{AffineParams, GapParams, LinearParams, ScaleParams};
        use winograd::{WinoInputParams, WinoOutputParams};
        check::<ConvGemmParams>(ConvGemmParams::FIELDS, ConvGemmParams::SHADER);
        check::<ConvTiledParams>(ConvTiledParams::FIELDS, ConvTiledParams::SHADER);
        check::<ConvSubgroupParams>(ConvSubgroupParams::FIELDS, ConvSubgroupParams::SHADER);
        check::<ConvNaiveParams>(ConvNaiveParams::FIELDS, ConvNaiveParams::SHADER);
        check::<AffineParams>(AffineParams::FIELDS, AffineParams::SHADER);
        check::<GapParams>(GapParams::FIELDS, GapParams::SHADER);
        check::<LinearParams>(LinearParams::FIELDS, LinearParams::SHADER);
        check::<ScaleParams>(ScaleParams::FIELDS, ScaleParams::SHADER);
        check::<WinoInputParams>(WinoInputParams::FIELDS, WinoInputParams::SHADER);
        check::<WinoOutputParams>(WinoOutputParams::FIELDS, WinoOutputParams::SHADER);
        let mut checked = vec![
            ConvGemmParams::SHADER,
            ConvTiledParams::SHADER,
            ConvSubgroupParams::SHADER,
            ConvNaiveParams::SHADER,
            AffineParams::SHADER,
            GapParams::SHADER,
            LinearParams::SHADER,
            ScaleParams::SHADER,
            WinoInputParams::SHADER,
            WinoOutputParams::SHADER,
        ];
        checked.sort_by_key(|s| s.file_name());
        assert_eq!(
            checked,
            Shader::ALL,
            "a shader without a checked Params struct"
        );
    }
}
