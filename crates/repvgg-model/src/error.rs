use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// Result alias for this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// One thing wrong with a checkpoint's tensors.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum KeyProblem {
    /// The architecture needs this tensor and the file lacks it.
    Missing {
        /// The tensor's name in the checkpoint.
        key: String,
        /// The shape the architecture needs.
        expected: Vec<usize>,
    },
    /// The file has a tensor the architecture does not use.
    Unexpected {
        /// The tensor's name in the checkpoint.
        key: String,
        /// The tensor's shape in the file.
        found: Vec<usize>,
    },
    /// The tensor exists with another shape.
    Shape {
        /// The tensor's name in the checkpoint.
        key: String,
        /// The shape the architecture needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// The tensor holds NaN or infinite values.
    NonFinite {
        /// The tensor's name in the checkpoint.
        key: String,
        /// How many of its values are NaN or infinite.
        count: usize,
    },
    /// The tensor's dtype cannot be read as a float.
    Dtype {
        /// The tensor's name in the checkpoint.
        key: String,
        /// The dtype the file gives it (F32, F16 and BF16 are accepted).
        dtype: String,
    },
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { key, expected } => {
                write!(f, "missing `{key}` (expected shape {expected:?})")
            }
            Self::Unexpected { key, found } => write!(f, "unexpected `{key}` (shape {found:?})"),
            Self::Shape {
                key,
                expected,
                found,
            } => {
                write!(f, "`{key}`: expected shape {expected:?}, found {found:?}")
            }
            Self::NonFinite { key, count } => {
                write!(f, "`{key}`: {count} non-finite values (NaN or inf)")
            }
            Self::Dtype { key, dtype } => {
                write!(f, "`{key}`: dtype {dtype}, expected F32, F16 or BF16")
            }
        }
    }
}

/// A list of [`KeyProblem`]s, printed one per line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyProblems(pub Vec<KeyProblem>);

impl fmt::Display for KeyProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong building, loading, running or saving a model.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The file cannot be read. The OS error is part of the message, not a `source()`, so
    /// that an error chain (`anyhow`'s `{:#}`) does not print it twice.
    #[error("cannot read {path}: {error}")]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// Not a safetensors file, or a truncated one.
    #[error("{path} is not a valid safetensors file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Why the file is not valid safetensors.
        reason: String,
    },
    /// A PyTorch `.pth` file that cannot be read safely: a truncated zip, a pickle global outside
    /// the tensor allow-list, an offset or size past the data.
    #[error("{path}: cannot load as a PyTorch checkpoint: {reason}")]
    Pth {
        /// The `.pth` file.
        path: PathBuf,
        /// Why it cannot be loaded.
        reason: String,
    },
    /// The tensors do not form a RepVGG the loader can recognise.
    #[error("{path}: not a RepVGG checkpoint: {reason}")]
    Architecture {
        /// The checkpoint file.
        path: PathBuf,
        /// Why its tensors do not match a RepVGG.
        reason: String,
    },
    /// Every key that is missing, unexpected, misshapen or non-finite.
    #[error("{path}: {} problem(s) with the checkpoint's tensors: {problems}", problems.0.len())]
    Keys {
        /// The checkpoint file.
        path: PathBuf,
        /// Every problem found, not just the first.
        problems: KeyProblems,
    },
    /// An impossible configuration.
    #[error("invalid RepVGG config: {0}")]
    Config(String),
    /// The train form was requested from a deploy-form checkpoint.
    #[error(
        "{path} holds a deployed (fused) model; the train-time form cannot be recovered from it"
    )]
    NotTrainForm {
        /// The deploy-form checkpoint.
        path: PathBuf,
    },
    /// An input the network cannot take.
    #[error("input: expected {expected}, found shape {found:?}")]
    Input {
        /// A description of the input the network takes.
        expected: String,
        /// The shape that was given.
        found: Vec<usize>,
    },
    /// An architecture name that is not one of the paper's variants; holds the name given.
    #[error(
        "unknown architecture `{0}` (known: a0, a1, a2, b0, b1, b1g2, b1g4, b2, b2g2, b2g4, b3, b3g2, b3g4, d2se)"
    )]
    UnknownArch(String),
    /// An error from `repvgg_math`: a bad shape, group count or batch-norm statistic.
    #[error(transparent)]
    Math(#[from] repvgg_math::MathError),
    /// An error of the GPU engine.
    #[cfg(feature = "gpu")]
    #[error(transparent)]
    Gpu(#[from] repvgg_gpu::GpuError),
    /// An error of the CPU engine.
    #[cfg(feature = "cpu")]
    #[error(transparent)]
    Cpu(#[from] repvgg_cpu::CpuError),
    /// Something this build leaves out: the cargo feature that brings it.
    #[error("{what} needs repvgg-model's `{feature}` feature, which this build leaves out")]
    NotCompiled {
        /// The cargo feature.
        feature: &'static str,
        /// What was asked for.
        what: &'static str,
    },
    /// A combination the engines do not run, e.g. f16 on the CPU.
    #[error("{0}")]
    Unsupported(String),
    /// An output file that cannot be written.
    #[error("writing {path}: {reason}")]
    Save {
        /// The file being written.
        path: PathBuf,
        /// Why writing failed.
        reason: String,
    },
    /// An image that cannot be decoded: corrupt, truncated, or not JPEG, PNG or WebP.
    #[error("{path}: not a readable JPEG, PNG or WebP image ({reason})")]
    Image {
        /// The image file.
        path: PathBuf,
        /// Why it cannot be decoded.
        reason: String,
    },
}
