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
        /// Which channel count (input or output).
        what: &'static str,
        /// The channel count.
        channels: usize,
        /// The group count.
        groups: usize,
    },
    /// A convolution specification is impossible (zero sizes, even kernel to pad, ...).
    #[error("invalid convolution spec: {reason}")]
    InvalidSpec {
        /// What is wrong with it.
        reason: String,
    },
    /// The identity branch exists only when the block maps C channels to C at stride 1.
    #[error(
        "identity branch needs in_channels == out_channels and stride 1, \
         found in_channels={in_channels}, out_channels={out_channels}, stride={stride}"
    )]
    InvalidIdentity {
        /// The block's input channels.
        in_channels: usize,
        /// The block's output channels.
        out_channels: usize,
        /// The block's stride.
        stride: usize,
    },
    /// An array does not have the shape the operation expects.
    #[error("{what}: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// The array.
        what: String,
        /// The shape it should have had.
        expected: Vec<usize>,
        /// The shape it had.
        found: Vec<usize>,
    },
    /// Batch-norm statistics whose lengths differ from each other or from the channel count.
    #[error("batch norm {what}: expected {expected} values (one per channel), found {found}")]
    BatchNormLength {
        /// Which statistic.
        what: &'static str,
        /// The channel count.
        expected: usize,
        /// Its length.
        found: usize,
    },
    /// `running_var + eps` is not strictly positive (or eps is not finite): no valid scale.
    #[error("batch norm channel {channel}: running_var + eps = {value} is not > 0")]
    BatchNormVariance {
        /// The channel.
        channel: usize,
        /// `running_var + eps` there.
        value: f64,
    },
    /// The input is too small for the kernel.
    #[error(
        "input {height}x{width} is smaller than the kernel {kernel}x{kernel} with padding {padding}"
    )]
    InputTooSmall {
        /// The input's height.
        height: usize,
        /// The input's width.
        width: usize,
        /// The kernel size.
        kernel: usize,
        /// The padding on each side.
        padding: usize,
    },
}
