//! `repvgg`: one import for the whole workspace.
//!
//! Re-exports [`repvgg_math`] (fusion and reference CPU ops), [`repvgg_cpu`] (the CPU engine),
//! [`repvgg_gpu`] (wgpu kernels)
//! and [`repvgg_model`] (variants, checkpoints, train and deployed forms).

pub use repvgg_cpu as cpu;
pub use repvgg_gpu as gpu;
pub use repvgg_math as math;
pub use repvgg_model as model;
