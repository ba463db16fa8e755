//! RepVGG networks: every variant of the paper (Ding et al., CVPR 2021, arXiv:2101.03697), the
//! official repository (DingXiaoH/RepVGG) and timm, in train-time and deployed form, and the one
//! way to run them.
//!
//! Load a [`Model`] (any checkpoint format, naming, form and variant), prepare a [`Runner`] with
//! [`RunOptions`] (device, form, precision, threads), run NCHW batches:
//!
//! ```
//! use repvgg_model::{Device, Model, RunOptions};
//!
//! let model = Model::digits()?; // the embedded demo model; `Model::load(path)` for a file
//! let runner = model.runner(RunOptions::default().device(Device::Cpu))?;
//! let x = ndarray::Array4::<f32>::zeros((2, 1, 32, 32));
//! assert_eq!(runner.run(x.view())?.shape(), &[2, 10]);
//! # Ok::<(), repvgg_model::ModelError>(())
//! ```
//!
//! * [`Model`], [`Runner`], [`Engine`]: the entry point; [`Device`], [`Form`], [`Precision`]:
//!   the vocabulary every layer and the CLI share.
//! * [`RepVggConfig`]: `a0()` ... `b3g4()`, `d2se()` and custom configs.
//! * [`TrainModel`] (multi-branch) and [`DeployModel`] (plain 3x3 convs); [`TrainModel::fuse`].
//!   Their `forward` is the reference operators' (the tests' oracle), never a runner's fallback.
//! * [`walk`]: the network as layers, written once for every backend.
//! * [`checkpoint`]: safetensors in timm or official naming, architecture inferred from the file;
//!   `pth`: PyTorch `.pth` checkpoints, read without Python by a bounded, restricted unpickler.
//! * `onnx`: the deployed network as an ONNX model; [`summary`]: parameters and multiply-adds.
//!
//! Cargo features (all on by default): `cpu` and `gpu` (the engines), `images` (decoding and
//! timm's preprocessing, `Runner::classify`), `pth`, `onnx`. Without an engine a runner
//! reports [`ModelError::NotCompiled`].

#![warn(missing_docs)]

pub mod checkpoint;
#[cfg(feature = "images")]
pub mod classify;
mod config;
#[cfg(feature = "cpu")]
pub mod cpu;
pub mod digits;
mod error;
#[cfg(all(feature = "images", feature = "pth"))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod imagenet;
mod load;
mod model;
#[cfg(feature = "onnx")]
pub mod onnx;
#[cfg(feature = "images")]
pub mod preprocess;
#[cfg(feature = "pth")]
pub mod pth;
pub mod quant;
pub mod runner;
mod sniff;

pub mod summary;
pub mod tensor_io;
pub mod vocab;
pub mod walk;

pub use checkpoint::{Checkpoint, LoadedModel, Naming};
#[cfg(feature = "images")]
pub use classify::{Class, Preprocessing};
pub use config::{BlockSpec, NAMES, OFFICIAL_GROUPED_LAYERS, RepVggConfig};
pub use error::{KeyProblem, KeyProblems, ModelError, Result};
pub use load::Model;
pub use model::{
    Block, DeployBlock, DeployModel, Features, Head, RepVgg, SqueezeExcite, TrainBlock, TrainModel,
    argmax_rows, block_spec, max_abs_diff,
};
pub use quant::{CalibMethod, QuantOptions, QuantReport, QuantizedModel};
#[cfg(feature = "gpu")]
pub use runner::TUNE_SIZE;
pub use runner::{Engine, Profile, RunOptions, Runner};
pub use vocab::{AdapterFilter, Device, Form, ParseWordError, Precision};
