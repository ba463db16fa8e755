//! Re-parameterization math for RepVGG (Ding et al., "RepVGG: Making VGG-style ConvNets Great
//! Again", CVPR 2021, arXiv:2101.03697) and the reference CPU operators it is proven against.
//!
//! This crate is pure math over [`ndarray`]: it knows nothing of GPUs or of model variants.
//!
//! * [`ops`]: NCHW operators — [`ops::conv2d`] (im2col + GEMM, multi-threaded) and its oracle
//!   [`ops::conv2d_reference`] (a direct loop), batch-norm inference, ReLU, add, global average
//!   pool, linear. Generic over `f32` and `f64` through [`Element`].
//! * [`compare`]: NaN-aware differences (a NaN or infinity anywhere fails), used by every test.
//! * [`Epilogue`], [`Activation`], [`Precision`]: the vocabulary the engines share (what a conv
//!   does to its result before storing it; how values are stored).
//! * [`fuse`]: conv+BN folding, 1x1 → 3x3 padding, identity → 3x3 kernel, and the whole
//!   RepVGG block → one 3x3 conv with bias. The arithmetic is done in `f64` whatever the
//!   storage type, then rounded once.
//!
//! ```
//! use ndarray::Array4;
//! use repvgg_math::{BatchNorm, ConvSpec, fuse::{ConvBn, RepVggBranches}};
//!
//! let spec = ConvSpec::new(4, 4, 3, 1, 1, 1).unwrap();
//! let bn = || BatchNorm::<f32>::identity(4);
//! let block = RepVggBranches {
//!     spec,
//!     dense: ConvBn::new(Array4::from_elem((4, 4, 3, 3), 0.1), None, bn()),
//!     one_by_one: Some(ConvBn::new(Array4::from_elem((4, 4, 1, 1), 0.2), None, bn())),
//!     identity: Some(bn()),
//! };
//! let fused = block.fuse().unwrap();
//! let x = Array4::from_elem((1, 4, 5, 5), 1.0f32);
//! let (a, b) = (block.forward(x.view()).unwrap(), fused.forward(x.view()).unwrap());
//! assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-5));
//! ```

#![warn(missing_docs)]

pub mod compare;
mod epilogue;
mod error;
pub mod fuse;
pub mod ops;
mod precision;
mod types;
pub mod winograd;

pub use epilogue::{Activation, Epilogue};
pub use error::{MathError, Result};
pub use fuse::{ConvBn, RepVggBranches};
pub use precision::{ParsePrecisionError, Precision};
pub use types::{BatchNorm, ConvSpec, Element, FusedConv};
