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
mod config;
pub mod cpu;
pub mod digits;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gpu;
pub mod imagenet;
mod model;
pub mod onnx;
pub mod preprocess;
pub mod pth;
pub mod summary;
pub mod tensor_io;

pub use checkpoint::{Checkpoint, Form, LoadedModel, Naming};
pub use config::{BlockSpec, NAMES, OFFICIAL_GROUPED_LAYERS, RepVggConfig};
pub use error::{KeyProblem, KeyProblems, ModelError, Result};
pub use model::{
    Block, DeployBlock, DeployModel, Features, Head, RepVgg, SqueezeExcite, TrainBlock, TrainModel,
    argmax_rows, block_spec, max_abs_diff,
};
