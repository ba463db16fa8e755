//! RepVGG networks: every variant of the paper (Ding et al., CVPR 2021, arXiv:2101.03697), the
//! official repository (DingXiaoH/RepVGG) and timm, in train-time and deployed form.
//!
//! * [`RepVggConfig`]: `a0()` ... `b3g4()`, `d2se()` and custom configs.
//! * [`TrainModel`] (multi-branch) and [`DeployModel`] (plain 3x3 convs); [`TrainModel::fuse`].
//! * [`checkpoint`]: safetensors in timm or official naming, architecture inferred from the file.
//! * [`onnx`]: the deployed network as an ONNX model.
//! * [`pth`]: PyTorch `.pth` checkpoints, read without Python by a restricted unpickler.
//! * [`summary`]: parameter counts and multiply-adds, per layer.

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
pub mod runner;

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
pub use runner::{Engine, Profile, RunOptions, Runner};
pub use vocab::{AdapterFilter, Device, Form, ParseWordError, Precision};
