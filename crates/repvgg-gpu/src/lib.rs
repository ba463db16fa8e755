//! RepVGG inference on any GPU through wgpu compute shaders (Vulkan, Metal, DX12; never GL).
//!
//! This crate knows kernels and buffers, not RepVGG variants or checkpoints: the model crate
//! composes networks through [`NetworkBuilder`].
//!
//! * [`GpuContext`]: adapter selection (`WGPU_BACKEND`, `WGPU_ADAPTER_NAME`), device, adapter
//!   info, error scopes, the pipelines (by shader, entry point and override constants) and a
//!   pipeline cache persisted in the user's cache directory ([`ContextOptions`]). Shaders whose
//!   indices are proven in range run without runtime bounds checks (`trusted`, the crate's
//!   only `unsafe` code).
//! * [`NetworkBuilder`] / [`GpuNetwork`]: weights uploaded once in the layout the kernel wants;
//!   each batch runs as one submission with activations in reused buffers; a batch too big for
//!   one storage binding is split automatically. Inside, from the ground up, device-free:
//!   `kernels` (one file per WGSL file: its `#[repr(C)]` parameter struct, where it applies,
//!   its tiles and weight layout, its dispatch; and the layer kinds, one struct each in the
//!   file of the kernel that runs it, listed by one enum, `Op`, and asked through one trait,
//!   `Layer`, for their shapes, work, dispatch and bindings), `graph` (building, validation,
//!   lowering passes), `plan` (shapes, liveness, batch splitting), `select` (which kernel a
//!   conv runs: [`ConvKernel`], [`Candidate`], the rules); then `upload` and `bind` (weights;
//!   buffers and bind groups per input shape, from the bindings each layer lists), `timing`
//!   (timestamp queries, read-back), `network` (running and timing a network), `tune`
//!   (per-adapter autotuning, [`Tuning`]) and `builder`.
//! * [`ops`]: every kernel alone (upload, dispatch, read back), for tests and benchmarks.
//! * [`Shader`]: the WGSL files of `shaders/`, one kernel each, after the [`ShaderPart`]s of
//!   `shaders/common/` they share (the prelude: storage types and flags; the fused epilogue;
//!   the subgroup convolutions' tile), prepended when the module is created.
//!
//! # Example
//!
//! A 3x3 conv with bias and ReLU, then a global average pool, on the first adapter wgpu finds
//! (the example returns early on a machine without one):
//!
//! ```
//! # fn main() -> Result<(), repvgg_gpu::GpuError> {
//! use ndarray::Array4;
//! use repvgg_gpu::{Epilogue, GpuContext, NetworkBuilder, Precision};
//! use repvgg_math::ConvSpec;
//!
//! let ctx = match GpuContext::new() {
//!     Ok(ctx) => ctx,
//!     Err(e) => {
//!         eprintln!("no GPU: {e}");
//!         return Ok(());
//!     }
//! };
//! let mut b = NetworkBuilder::new(&ctx).precision(Precision::F32);
//! let x = b.input(3);
//! let spec = ConvSpec::conv3x3(3, 8, 1, 1)?;
//! let w = Array4::from_elem(spec.weight_shape(), 0.1f32);
//! let y = b.conv(x, w.view(), spec, Epilogue::bias(vec![0.5; 8]).relu())?;
//! let pooled = b.global_avg_pool(y)?;
//! b.output("pooled", pooled);
//! let net = b.build()?;
//!
//! let out = net.run(Array4::from_elem((2, 3, 16, 16), 1.0f32).view())?;
//! assert_eq!(out["pooled"].shape(), &[2, 8]);
//! # Ok(()) }
//! ```
//!
//! # Convolution kernels
//!
//! Every convolution is an implicit GEMM `Y[m, q] = sum_k W[m, k] X[k, q]` over output channels
//! `m`, output pixels `q` and taps `k = (ci, ky, kx)`, with scale, bias, residual and ReLU fused
//! into the store ([`Epilogue`]). [`ConvKernel::Auto`] picks per layer and adapter: the
//! fastest [`Candidate`] timed on the adapter where tuning runs ([`Tuning`],
//! [`NetworkBuilder::tune_for`]), else these rules:
//!
//! * `conv_gemm.wgsl` on GPUs: a tile configured per layer (channels at upload so that padding
//!   is least, pixels per input shape so that the dispatch fills the device), 64-256
//!   invocations with 4x4 to 8x8 outputs each, K tiles staged through registers into workgroup
//!   memory while the previous one is consumed.
//!   A dispatch with fewer workgroups than the device wants (late layers at batch 1) splits
//!   its sum over K into slices and adds their f32 partial sums in a second pass (entry point
//!   `reduce`), which applies the epilogue ([`ConvKernel::SplitK`] forces the split everywhere).
//! * `conv_subgroup_direct.wgsl` and `conv_subgroup_flat.wgsl` (a 1x1 stride-1 conv without
//!   padding, its map as one row) on software adapters (lavapipe) when the conv is 1x1 or 3x3
//!   with stride 1 or 2, over the tile they share: one full subgroup per workgroup, 8 or 12 channels (whichever pads the
//!   layer's channels least) x up to 32 pixels per invocation, the im2col gather shared
//!   through `subgroupShuffle`, weights in an rgba32float texture (rgba16float with
//!   [`Precision::F16`]). On lavapipe a storage-buffer or workgroup-memory load is a loop over
//!   the SIMD lanes, many times an FMA, while texture fetches and shuffles are cheap (figures:
//!   docs/gpu.md and docs/lavapipe.md).
//! * Winograd F(4x4, 3x3) on the main path of software adapters in f32, for 3x3 stride-1
//!   convs of 48 or more input channels per group: `wino_input.wgsl` (entry `f4`), a grouped
//!   1x1 conv over the 36 positions on the subgroup kernel (its map flattened to one row; the
//!   weights transformed at upload in f64, 4x the memory of the 3x3 ones) and
//!   `wino_output.wgsl` with the epilogue. 4x fewer multiplies, faster than the direct conv on
//!   lavapipe from 48 channels on (figures: docs/gpu.md). See [`ConvKernel::winograd_tile`].
//! * `conv_tiled.wgsl` ([`ConvKernel::Workgroup`]): 64 x 64 tiles, 4 x 4 outputs per invocation.
//! * `conv_naive.wgsl` ([`ConvKernel::Naive`]): one output per invocation, the baseline.
//! * [`ConvKernel::Winograd`] / [`ConvKernel::Winograd4`] (forced): Winograd F(2x2, 3x3) /
//!   F(4x4, 3x3) for every 3x3 stride-1 conv, on any adapter and precision, the same three
//!   layers (16 or 36 positions).
//!
//! # Precision
//!
//! [`Precision::F16`] ([`NetworkBuilder::precision`]) stores weights and activations as f16
//! with f32 arithmetic inside the kernels, on adapters with `SHADER_F16`; every kernel of the
//! main path has an f16 form generated from the same WGSL file (see [`Precision`]). The
//! baselines `conv_tiled.wgsl` and `conv_naive.wgsl` are f32 only.

#![warn(missing_docs)]

mod bind;
mod builder;
mod caps;
mod checked_file;
mod context;
mod device_policy;
mod error;
mod graph;
mod kernels;
mod network;
pub mod ops;
mod options;
mod plan;
mod precision;
mod select;
mod shader;
mod timing;
mod trusted;
mod tune;
mod tuning;
mod upload;

pub use builder::NetworkBuilder;
pub use context::{
    AdapterSummary, GpuContext, SUPPORTED_BACKENDS, is_software_adapter, require_gpu_from_env,
    test_context,
};
pub use device_policy::AutoDevice;
pub use error::{GpuError, Result};
pub use graph::{Epilogue, TensorId};
pub use network::GpuNetwork;
pub use options::ContextOptions;
pub use precision::{ParsePrecisionError, Precision};
pub use repvgg_math::Activation;
pub use repvgg_math::winograd::Tile;
pub use select::{
    Candidate, ChoiceSource, ConvChoice, ConvKernel, DirectConv, ParseConvKernelError,
};
pub use shader::{Shader, ShaderPart};
pub use timing::LayerTiming;
pub use tune::DEFAULT_BUDGET as DEFAULT_TUNING_BUDGET;
pub use tuning::{Kept, NetworkCheck, ParseTuningError, TunedShape, Tuning, TuningReport};
pub use wgpu;
