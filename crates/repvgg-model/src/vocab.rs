//! The words every layer shares: which [`Form`] of a model runs, on which [`Device`], in which
//! [`Precision`]. Each parses from and prints as the word the CLI takes (`FromStr`/`Display`), so
//! an application parses its flags straight into them.

use std::fmt;
use std::str::FromStr;

/// A word that names none of a vocabulary's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{got}` is not a {what}: expected {expected}")]
pub struct ParseWordError {
    /// What was being parsed ("form", "device").
    pub what: &'static str,
    /// The word given.
    pub got: String,
    /// The words accepted.
    pub expected: &'static str,
}

/// The precision a model runs in.
///
/// * `f32`: everywhere.
/// * `f16`: f16 storage, f32 arithmetic, on GPUs that have `SHADER_F16`.
/// * `bf16`: bf16 weights and activations with f32 accumulation, on CPUs with AVX512-BF16 or
///   AMX-BF16 (the kernels are not part of this version: asking for it reports what the CPU
///   has).
/// * `int8`: the CPU engine's int8 network (u8 activations, s8 weights), from a quantized
///   model ([`crate::QuantizedModel`], `repvgg quantize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// 32-bit floats.
    #[default]
    F32,
    /// 16-bit float storage (GPU).
    F16,
    /// bfloat16 (CPU, AVX512-BF16).
    Bf16,
    /// Calibrated int8 (CPU).
    Int8,
}

impl Precision {
    /// Every precision.
    pub const ALL: [Precision; 4] = [Self::F32, Self::F16, Self::Bf16, Self::Int8];

    /// `f32`, `f16`, `bf16` or `int8`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
            Self::Int8 => "int8",
        }
    }

    /// The GPU engine's storage precision for this one, when the GPU runs it.
    pub fn storage(self) -> Option<repvgg_math::Precision> {
        match self {
            Self::F32 => Some(repvgg_math::Precision::F32),
            Self::F16 => Some(repvgg_math::Precision::F16),
            Self::Bf16 | Self::Int8 => None,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for Precision {
    type Err = ParseWordError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "int8" | "i8" | "u8s8" => Ok(Self::Int8),
            _ => Err(ParseWordError {
                what: "precision",
                got: s.into(),
                expected: "f32, f16, bf16 or int8",
            }),
        }
    }
}

/// Which form of a model runs or is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Form {
    /// The training-time network: 3x3, 1x1 and identity branches, each with its batch norm,
    /// computed separately and summed (timm's eval mode).
    Train,
    /// The re-parameterized network: one fused 3x3 conv with bias per block.
    #[default]
    Deploy,
}

impl Form {
    /// Both forms, train first.
    pub const ALL: [Form; 2] = [Form::Train, Form::Deploy];

    /// The word for this form: `train` or `deploy`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Deploy => "deploy",
        }
    }
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Form {
    type Err = ParseWordError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Self::Train),
            "deploy" | "fused" => Ok(Self::Deploy),
            _ => Err(ParseWordError {
                what: "form",
                got: s.into(),
                expected: "train or deploy",
            }),
        }
    }
}

/// Which GPU adapter [`Device::Gpu`] takes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum AdapterFilter {
    /// The adapter wgpu prefers (high performance), or the one `WGPU_ADAPTER_NAME` names.
    #[default]
    Any,
    /// The first adapter whose name contains this text (case-insensitive).
    Named(String),
}

/// Where a model runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// The device policy: a hardware GPU when wgpu finds one, else the CPU engine. A software
    /// adapter (lavapipe, SwiftShader, WARP) is never taken here: the CPU engine is faster than
    /// a rasterizer emulating a GPU on the same cores.
    #[default]
    Auto,
    /// The CPU engine (Winograd and GEMM kernels, every core unless told otherwise).
    Cpu,
    /// A GPU through wgpu (Vulkan, Metal, DX12), software adapters included.
    Gpu(AdapterFilter),
}

impl Device {
    /// Any GPU adapter: `Device::Gpu(AdapterFilter::Any)`.
    pub const GPU: Device = Device::Gpu(AdapterFilter::Any);
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Gpu(AdapterFilter::Any) => f.write_str("gpu"),
            Self::Gpu(AdapterFilter::Named(n)) => write!(f, "gpu:{n}"),
        }
    }
}

impl FromStr for Device {
    type Err = ParseWordError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let (word, name) = match t.split_once(':') {
            Some((w, n)) => (w, Some(n.trim())),
            None => (t, None),
        };
        let err = || ParseWordError {
            what: "device",
            got: s.into(),
            expected: "auto, cpu, gpu or gpu:NAME (an adapter whose name contains NAME)",
        };
        match (word.to_ascii_lowercase().as_str(), name) {
            ("auto", None) => Ok(Self::Auto),
            ("cpu", None) => Ok(Self::Cpu),
            ("gpu", None) => Ok(Self::GPU),
            ("gpu", Some(n)) if !n.is_empty() => Ok(Self::Gpu(AdapterFilter::Named(n.into()))),
            _ => Err(err()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_through_display_and_from_str() {
        for f in Form::ALL {
            assert_eq!(f.to_string().parse::<Form>(), Ok(f));
        }
        for d in [
            Device::Auto,
            Device::Cpu,
            Device::GPU,
            Device::Gpu(AdapterFilter::Named("RTX 4090".into())),
        ] {
            assert_eq!(d.to_string().parse::<Device>(), Ok(d.clone()));
        }
        assert_eq!("GPU".parse::<Device>(), Ok(Device::GPU));
        assert_eq!(" Deploy ".parse::<Form>(), Ok(Form::Deploy));
        for p in Precision::ALL {
            assert_eq!(p.to_string().parse::<Precision>(), Ok(p));
        }
        assert_eq!("BFloat16".parse::<Precision>(), Ok(Precision::Bf16));
        assert_eq!(
            "int4".parse::<Precision>().unwrap_err().to_string(),
            "`int4` is not a precision: expected f32, f16, bf16 or int8"
        );
    }

    #[test]
    fn unknown_words_name_what_was_expected() {
        let e = "tpu".parse::<Device>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`tpu` is not a device: expected auto, cpu, gpu or gpu:NAME (an adapter whose name \
             contains NAME)"
        );
        assert!("gpu:".parse::<Device>().is_err());
        assert!("cpu:x".parse::<Device>().is_err());
        let e = "fuse".parse::<Form>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`fuse` is not a form: expected train or deploy"
        );
    }
}
