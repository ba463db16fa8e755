//! The WGSL sources, one concern per file in `shaders/`, and the key pipelines are cached by.

use std::borrow::Cow;

use crate::precision::{Precision, Storage};

/// One WGSL file of `shaders/`: a kernel, with its entry points. Its module is the file after
/// the [`ShaderPart`]s it names ([`Shader::parts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    /// Implicit-GEMM convolution with a per-layer tile (64-256 invocations, up to 8x8 outputs
    /// each, register-staged K tiles): the main path on GPUs. Entry `reduce`: the second pass
    /// of a split-K conv (adds the K slices' partial sums, then the epilogue).
    ConvGemm,
    /// Implicit-GEMM convolution: shared-memory tiles, 4x4 outputs per invocation, fused
    /// epilogue (scale, bias, residual, ReLU).
    ConvTiled,
    /// 1x1 or 3x3 convolution, stride 1 or 2, on the subgroup tile
    /// ([`ShaderPart::SubgroupTile`]): the im2col rows shared through subgroup shuffles,
    /// weights in a texture. The fast path where subgroups of at least 8 invocations exist.
    ConvSubgroupDirect,
    /// 1x1 stride-1 convolution without padding (a Winograd product) on the subgroup tile: the
    /// map as one row, several input channels per K step.
    ConvSubgroupFlat,
    /// One output per invocation: the baseline the tiled kernel is measured against.
    ConvNaive,
    /// Per-channel `x * scale + shift`, optional residual and ReLU (a BN on its own branch).
    Affine,
    /// Global average pool `[N, C, H, W] -> [N, C]`.
    GlobalAvgPool,
    /// Fully connected layer with optional bias and ReLU or sigmoid.
    Linear,
    /// Per-image, per-channel scaling `x[n, c, ..] * s[n, c]`, optional ReLU (the last step of
    /// squeeze-and-excitation).
    ChannelScale,
    /// Winograd F(2x2, 3x3) input transform: 4x4 patches to 16 position-major channels.
    WinogradInput,
    /// Winograd F(2x2, 3x3) output transform with the conv epilogue.
    WinogradOutput,
}

/// WGSL that several shaders share, in `shaders/common/`, prepended to a shader's own file when
/// its module is created ([`Shader::source_for`]), the way the f16 form rewrites the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShaderPart {
    /// Every shader's: the storage element types (`st`, `st4`) and the epilogue flags.
    Prelude,
    /// The fused epilogue (scale, bias, residual, ReLU) of every kernel that ends a conv.
    Epilogue,
    /// The tile of the two subgroup convolutions: parameters, bindings, the weight texture
    /// loads and the stores.
    SubgroupTile,
}

impl ShaderPart {
    /// Every part, in the order a shader's module takes them.
    pub const ALL: [ShaderPart; 3] = [
        ShaderPart::Prelude,
        ShaderPart::Epilogue,
        ShaderPart::SubgroupTile,
    ];

    /// File name inside `shaders/`.
    pub fn file_name(self) -> &'static str {
        match self {
            ShaderPart::Prelude => "common/prelude.wgsl",
            ShaderPart::Epilogue => "common/epilogue.wgsl",
            ShaderPart::SubgroupTile => "common/conv_subgroup_tile.wgsl",
        }
    }

    /// WGSL source, compiled into the crate.
    pub fn source(self) -> &'static str {
        match self {
            ShaderPart::Prelude => include_str!("../shaders/common/prelude.wgsl"),
            ShaderPart::Epilogue => include_str!("../shaders/common/epilogue.wgsl"),
            ShaderPart::SubgroupTile => {
                include_str!("../shaders/common/conv_subgroup_tile.wgsl")
            }
        }
    }
}

impl Shader {
    /// Every shader, in file-name order.
    pub const ALL: [Shader; 11] = [
        Shader::Affine,
        Shader::ChannelScale,
        Shader::ConvGemm,
        Shader::ConvNaive,
        Shader::ConvSubgroupDirect,
        Shader::ConvSubgroupFlat,
        Shader::ConvTiled,
        Shader::GlobalAvgPool,
        Shader::Linear,
        Shader::WinogradInput,
        Shader::WinogradOutput,
    ];

    /// File name inside `shaders/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Shader::ConvGemm => "conv_gemm.wgsl",
            Shader::ConvTiled => "conv_tiled.wgsl",
            Shader::ConvSubgroupDirect => "conv_subgroup_direct.wgsl",
            Shader::ConvSubgroupFlat => "conv_subgroup_flat.wgsl",
            Shader::ConvNaive => "conv_naive.wgsl",
            Shader::Affine => "affine.wgsl",
            Shader::GlobalAvgPool => "gap.wgsl",
            Shader::Linear => "linear.wgsl",
            Shader::ChannelScale => "channel_scale.wgsl",
            Shader::WinogradInput => "wino_input.wgsl",
            Shader::WinogradOutput => "wino_output.wgsl",
        }
    }

    /// The shader's own WGSL file, compiled into the crate (without its parts).
    pub fn source(self) -> &'static str {
        match self {
            Shader::ConvGemm => include_str!("../shaders/conv_gemm.wgsl"),
            Shader::ConvTiled => include_str!("../shaders/conv_tiled.wgsl"),
            Shader::ConvSubgroupDirect => include_str!("../shaders/conv_subgroup_direct.wgsl"),
            Shader::ConvSubgroupFlat => include_str!("../shaders/conv_subgroup_flat.wgsl"),
            Shader::ConvNaive => include_str!("../shaders/conv_naive.wgsl"),
            Shader::Affine => include_str!("../shaders/affine.wgsl"),
            Shader::GlobalAvgPool => include_str!("../shaders/gap.wgsl"),
            Shader::Linear => include_str!("../shaders/linear.wgsl"),
            Shader::ChannelScale => include_str!("../shaders/channel_scale.wgsl"),
            Shader::WinogradInput => include_str!("../shaders/wino_input.wgsl"),
            Shader::WinogradOutput => include_str!("../shaders/wino_output.wgsl"),
        }
    }

    /// The shared parts its module starts with, in order: the prelude always, the epilogue
    /// for the kernels that end a conv (and the affine map, the same arithmetic), the
    /// subgroup tile for the two subgroup convolutions.
    pub fn parts(self) -> &'static [ShaderPart] {
        use ShaderPart::{Epilogue, Prelude, SubgroupTile};
        match self {
            Shader::ConvSubgroupDirect | Shader::ConvSubgroupFlat => {
                &[Prelude, Epilogue, SubgroupTile]
            }
            Shader::ConvGemm
            | Shader::ConvTiled
            | Shader::ConvNaive
            | Shader::Affine
            | Shader::WinogradOutput => &[Prelude, Epilogue],
            Shader::GlobalAvgPool
            | Shader::Linear
            | Shader::ChannelScale
            | Shader::WinogradInput => &[Prelude],
        }
    }

    /// Whether the shader has an f16 form (stores through the `st` alias): every kernel of the
    /// main path; the baselines `conv_tiled.wgsl` and `conv_naive.wgsl` are f32 only.
    pub fn has_f16(self) -> bool {
        !matches!(self, Shader::ConvTiled | Shader::ConvNaive)
    }

    /// The module's WGSL for `precision`: its [`Shader::parts`], then its own file; for f16
    /// (when [`Shader::has_f16`]) with `enable f16;` and the storage aliases made f16.
    pub fn source_for(self, precision: Precision) -> Cow<'static, str> {
        let mut text = String::new();
        for part in self.parts() {
            text.push_str(part.source());
            text.push('\n');
        }
        text.push_str(self.source());
        Cow::Owned(if self.has_f16() {
            precision.specialise(text)
        } else {
            text
        })
    }
}

/// What a compute pipeline is cached by: shader, precision, entry point and override constants.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PipelineKey {
    pub shader: Shader,
    pub precision: Precision,
    pub entry: &'static str,
    pub constants: Vec<(&'static str, u32)>,
}

impl PipelineKey {
    pub fn new(shader: Shader) -> Self {
        Self {
            shader,
            precision: Precision::F32,
            entry: "main",
            constants: Vec::new(),
        }
    }

    pub fn constant(mut self, name: &'static str, value: u32) -> Self {
        self.constants.push((name, value));
        self
    }

    /// The value of override constant `name`; 0 where the key does not set it.
    pub fn value(&self, name: &str) -> u32 {
        self.constants
            .iter()
            .find(|(k, _)| *k == name)
            .map_or(0, |(_, v)| *v)
    }
}
