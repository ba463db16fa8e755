use thiserror::Error;

/// Result alias for this crate.
pub type Result<T, E = MathError> = std::result::Result<T, E>;

/// Every way a request to this crate can be invalid. Each variant names the shapes involved.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum MathError {
    /// A channel count is not divisible by the group count.
    #[error("{what}: {channels} channels are not divisible by groups={groups}")]
    GroupsMismatch {
        what: &'static str,
        channels: usize,
        groups: usize,
    },
    /// A convolution specification is impossible (zero sizes, even kernel to pad, ...).
    #[error("invalid convolution spec: {reason}")]
    InvalidSpec { reason: String },
    /// The identity branch exists only when the block maps C channels to C at stride 1.
    #[error(
        "identity branch needs in_channels == out_channels and stride 1, \
         found in_channels={in_channels}, out_channels={out_channels}, stride={stride}"
    )]
    InvalidIdentity {
        in_channels: usize,
        out_channels: usize,
        stride: usize,
    },
    /// An array does not have the shape the operation expects.
    #[error("{what}: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        what: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// Batch-norm statistics whose lengths differ from each other or from the channel count.
    #[error("batch norm {what}: expected {expected} values (one per channel), found {found}")]
    BatchNormLength {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    /// `running_var + eps` is not strictly positive (or eps is not finite): no valid scale.
    #[error("batch norm channel {channel}: running_var + eps = {value} is not > 0")]
    BatchNormVariance { channel: usize, value: f64 },
    /// The input is too small for the kernel.
    #[error(
        "input {height}x{width} is smaller than the kernel {kernel}x{kernel} with padding {padding}"
    )]
    InputTooSmall {
        height: usize,
        width: usize,
        kernel: usize,
        padding: usize,
    },
}
