//! RepVGG inference on any GPU through wgpu compute shaders (Vulkan, Metal, DX12; never GL).
//!
//! This crate knows kernels and buffers, not RepVGG variants or checkpoints: the model crate
//! composes networks through [`NetworkBuilder`].
//!
//! * [`GpuContext`]: adapter selection (`WGPU_BACKEND`, `WGPU_ADAPTER_NAME`), device, adapter
//!   info, error scopes, the pipeline cache.
//! * [`NetworkBuilder`] / [`GpuNetwork`]: weights uploaded once in the layout the kernel wants;
//!   each batch runs as one submission with activations in reused buffers; a batch too big for
//!   one storage binding is split automatically.
//! * [`ops`]: every kernel alone (upload, dispatch, read back), for tests and benchmarks.
//! * [`Shader`]: the WGSL files of `shaders/`, one concern each. The main convolution is an
//!   implicit GEMM with workgroup-shared tiles and 4x4 register blocks (`conv_tiled.wgsl`);
//!   `conv_naive.wgsl` (one output per invocation) is the baseline it is measured against.

mod context;
mod error;
mod network;
pub mod ops;
mod shader;

pub use context::{AdapterSummary, GpuContext, SUPPORTED_BACKENDS, require_gpu_from_env, test_context};
pub use error::{GpuError, Result};
pub use network::{ConvKernel, Epilogue, GpuNetwork, NetworkBuilder, TensorId};
pub use shader::Shader;
pub use wgpu;
