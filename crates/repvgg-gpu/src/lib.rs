//! RepVGG inference on any GPU through wgpu compute shaders (Vulkan, Metal, DX12; never GL).
//!
//! This crate knows kernels and buffers, not RepVGG variants or checkpoints: the model crate
//! composes networks through [`NetworkBuilder`].
//!
//! * [`GpuContext`]: adapter selection (`WGPU_BACKEND`, `WGPU_ADAPTER_NAME`), device, adapter
//!   info, error scopes, the pipeline cache (by shader, entry point and override constants).
//! * [`NetworkBuilder`] / [`GpuNetwork`]: weights uploaded once in the layout the kernel wants;
//!   each batch runs as one submission with activations in reused buffers; a batch too big for
//!   one storage binding is split automatically.
//! * [`ops`]: every kernel alone (upload, dispatch, read back), for tests and benchmarks.
//! * [`Shader`]: the WGSL files of `shaders/`, one concern each.
//!
//! # Convolution kernels
//!
//! Every convolution is an implicit GEMM `Y[m, q] = sum_k W[m, k] X[k, q]` over output channels
//! `m`, output pixels `q` and taps `k = (ci, ky, kx)`, with scale, bias, residual and ReLU fused
//! into the store ([`Epilogue`]). [`ConvKernel::Tiled`] picks the best implementation:
//!
//! * `conv_subgroup.wgsl` where the adapter has subgroups of at least 8 invocations (lavapipe,
//!   NVIDIA, AMD, Intel): a workgroup computes 64 channels x up to 32 pixels, 8 x 32 outputs in
//!   each invocation's registers; the im2col gather loads each input value once per workgroup
//!   and shares it through `subgroupShuffle`; weights are an rgba32float texture (4 channels per
//!   fetch). On lavapipe a storage-buffer or workgroup-memory load inside a loop costs about
//!   70 ns per 8 lanes, some 100 FMAs, while texture fetches (4 values for ~30 ns) and shuffles
//!   are cheap: this kernel runs the 3x3 layers of RepVGG-A0 40-150x faster than the naive one.
//! * `conv_tiled.wgsl` everywhere else: 64 x 64 output tiles, 16-deep K tiles of weights and of
//!   the im2col-gathered input in workgroup memory, 4 x 4 outputs per invocation, vec4 loads.
//! * `conv_naive.wgsl` ([`ConvKernel::Naive`]): one output per invocation, the baseline.

mod context;
mod error;
mod network;
pub mod ops;
mod shader;

pub use context::{
    AdapterSummary, GpuContext, SUPPORTED_BACKENDS, require_gpu_from_env, test_context,
};
pub use error::{GpuError, Result};
pub use network::{ConvKernel, Epilogue, GpuNetwork, NetworkBuilder, TensorId};
pub use shader::Shader;
pub use wgpu;
