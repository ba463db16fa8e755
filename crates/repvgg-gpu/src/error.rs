//! The one error type of this crate.

use thiserror::Error;

/// Result alias for this crate.
pub type Result<T, E = GpuError> = std::result::Result<T, E>;

/// Everything that can go wrong between a request and its result on the GPU.
///
/// Each variant names what was involved; none of them is ever turned into a panic.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GpuError {
    /// No usable adapter (no GPU driver, or the one requested by the environment is absent).
    #[error(
        "no GPU adapter found{detail}. On Linux install Mesa's Vulkan driver \
         (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`, which provides the lavapipe \
         software adapter) or a vendor driver; set WGPU_BACKEND=vulkan|metal|dx12 and \
         WGPU_ADAPTER_NAME=<substring> to choose one"
    )]
    NoAdapter {
        /// What was looked for and what was seen, prefixed with ": " (or empty).
        detail: String,
    },
    /// The adapter refused to create a device with the features and limits asked for.
    #[error("could not create a device on adapter {adapter:?}: {message}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// wgpu's reason.
        message: String,
    },
    /// wgpu reported a validation error (a bug here, or a request beyond the device's limits).
    #[error("GPU validation error while {context}: {message}")]
    Validation {
        /// What was being done.
        context: String,
        /// wgpu's description.
        message: String,
    },
    /// The device ran out of memory.
    #[error("GPU out of memory while {context}: {message}")]
    OutOfMemory {
        /// What was being done.
        context: String,
        /// wgpu's description.
        message: String,
    },
    /// An internal error of the driver or of wgpu.
    #[error("GPU internal error while {context}: {message}")]
    Internal {
        /// What was being done.
        context: String,
        /// wgpu's description.
        message: String,
    },
    /// The device was lost (driver reset, hang, or `destroy`).
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// An input (or argument) the network or kernel cannot take: wrong channels, too small, ...
    #[error("{what}: expected {expected}, found {found}")]
    Shape {
        /// The argument or tensor.
        what: String,
        /// What it should have been.
        expected: String,
        /// What it was.
        found: String,
    },
    /// One image alone needs an activation bigger than one storage binding can hold, so no
    /// batch split can help.
    #[error(
        "one image of {height}x{width} needs a {image_bytes}-byte activation buffer, more than \
         the {limit}-byte storage binding limit; use a smaller input"
    )]
    BatchTooLarge {
        /// The input's height.
        height: usize,
        /// The input's width.
        width: usize,
        /// Bytes of the largest activation of one image.
        image_bytes: u64,
        /// The device's storage binding limit, in bytes.
        limit: u64,
    },
    /// A `TensorId` that this builder did not hand out.
    #[error("unknown tensor id {0}: not created by this builder")]
    UnknownTensor(usize),
    /// An invalid convolution spec or other math-level argument.
    #[error(transparent)]
    Math(#[from] repvgg_math::MathError),
    /// Mapping a result buffer failed.
    #[error("reading results back from the GPU failed: {0}")]
    Readback(String),
    /// The adapter cannot run what was asked for (a kernel that needs a missing feature).
    #[error("unsupported on this adapter: {0}")]
    Unsupported(String),
    /// f16 storage was asked for on a device without the `SHADER_F16` feature.
    #[error(
        "f16 precision needs the SHADER_F16 feature (WGSL `enable f16;`), which adapter \
         {adapter} does not offer; use f32 precision"
    )]
    F16Unavailable {
        /// The adapter's name, backend and device type.
        adapter: String,
    },
    /// f16 storage was asked for with a forced kernel that exists in f32 only.
    #[error(
        "the {kernel} conv kernel has no f16 form; with f16 precision use the tiled (default), \
         gemm, subgroup or winograd kernel, or use f32 precision"
    )]
    F16Kernel {
        /// The kernel's name.
        kernel: &'static str,
    },
    /// The network was built without the requested piece (no outputs, ...).
    #[error("invalid network: {0}")]
    InvalidNetwork(String),
}

impl GpuError {
    pub(crate) fn shape(
        what: impl Into<String>,
        expected: impl std::fmt::Display,
        found: impl std::fmt::Display,
    ) -> Self {
        Self::Shape {
            what: what.into(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }

    pub(crate) fn from_wgpu(context: &str, e: wgpu::Error) -> Self {
        let context = context.to_string();
        match e {
            wgpu::Error::OutOfMemory { source } => Self::OutOfMemory {
                context,
                message: source.to_string(),
            },
            wgpu::Error::Validation { description, .. } => {
                if description.contains("lost") || description.contains("Lost") {
                    Self::DeviceLost(format!("while {context}: {description}"))
                } else {
                    Self::Validation {
                        context,
                        message: description,
                    }
                }
            }
            wgpu::Error::Internal { description, .. } => Self::Internal {
                context,
                message: description,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wgpu_errors_map_to_typed_errors_naming_the_context() {
        let oom = wgpu::Error::OutOfMemory {
            source: Box::new(std::io::Error::other("no room for 4 GiB")),
        };
        let e = GpuError::from_wgpu("uploading weights", oom);
        assert!(
            matches!(&e, GpuError::OutOfMemory { context, message } if context == "uploading weights" && message.contains("4 GiB"))
        );
        assert!(
            e.to_string()
                .contains("GPU out of memory while uploading weights"),
            "{e}"
        );

        let internal = wgpu::Error::Internal {
            source: Box::new(std::io::Error::other("x")),
            description: "driver bug".into(),
        };
        assert!(matches!(
            GpuError::from_wgpu("running", internal),
            GpuError::Internal { .. }
        ));
    }

    /// A real out-of-range request caught by the error scopes becomes a typed error, not a panic.
    #[test]
    fn an_oversized_buffer_is_caught_by_the_scopes() {
        let Some(ctx) = crate::test_context() else {
            return;
        };
        let too_big = ctx.limits().max_buffer_size.saturating_add(4);
        let r: Result<()> = ctx.scoped("allocating an oversized buffer", || {
            let _b = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("too big"),
                size: too_big,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            Ok(())
        });
        let e = r.expect_err("a buffer over max_buffer_size must fail");
        assert!(
            matches!(
                e,
                GpuError::Validation { .. } | GpuError::OutOfMemory { .. }
            ),
            "{e}"
        );
        assert!(
            e.to_string().contains("allocating an oversized buffer"),
            "{e}"
        );
        // The device is still usable afterwards.
        ctx.scoped("a normal buffer", || {
            let _b = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: 256,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            Ok(())
        })
        .expect("small buffer");
    }
}
