//! `repvgg`: RepVGG (Ding et al., CVPR 2021, arXiv:2101.03697) in Rust — re-parameterization
//! that matches timm, every variant, `.safetensors` and PyTorch `.pth` checkpoints in, ONNX out,
//! and fast inference on the CPU and on any GPU wgpu reaches.
//!
//! One door: load a [`Model`], prepare a [`Runner`] with [`RunOptions`], run NCHW batches.
//!
//! ```no_run
//! use repvgg::{Device, Model, RunOptions};
//!
//! # fn main() -> repvgg::Result<()> {
//! let model = Model::load("RepVGG-A0-train.pth")?; // any format, naming, form, variant
//! let runner = model.runner(RunOptions::default().device(Device::Auto))?;
//! println!("{}", runner.device()); // which device it took, and why
//! let x = ndarray::Array4::<f32>::zeros((1, 3, 224, 224));
//! let logits = runner.run(x.view())?; // [1, 1000]
//! let features = runner.run_features(x.view())?; // stage0..stage4 and the logits
//! # let _ = (logits, features);
//! # Ok(())
//! # }
//! ```
//!
//! The crates underneath, for those who build their own networks:
//! [`math`] (fusion and the reference operators, the tests' oracle), [`cpu`] (the CPU engine),
//! [`gpu`] (the wgpu engine) and [`model`] (variants, checkpoints, ONNX, the runner).

#![warn(missing_docs)]

#[cfg(feature = "cpu")]
pub use repvgg_cpu as cpu;
#[cfg(feature = "gpu")]
pub use repvgg_gpu as gpu;
pub use repvgg_math as math;
pub use repvgg_model as model;

pub use repvgg_model::{
    AdapterFilter, Device, Engine, Form, Model, ModelError, Naming, Precision, Profile,
    RepVggConfig, Result, RunOptions, Runner,
};
#[cfg(feature = "images")]
pub use repvgg_model::{Class, Preprocessing};
