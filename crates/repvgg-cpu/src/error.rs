use thiserror::Error;

/// Errors of the CPU engine: bad shapes, bad specs, a network built wrong.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CpuError {
    /// A tensor or weight does not have the shape the operation needs.
    #[error("{what}: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// The argument, buffer or tensor.
        what: String,
        /// The shape it should have had.
        expected: Vec<usize>,
        /// The shape it had.
        found: Vec<usize>,
    },
    /// A convolution or network that the engine cannot run.
    #[error("invalid network: {0}")]
    Invalid(String),
    /// An error of the math crate (convolution spec checks).
    #[error(transparent)]
    Math(#[from] repvgg_math::MathError),
    /// A thread pool could not be created.
    #[error("thread pool: {0}")]
    ThreadPool(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, CpuError>;
