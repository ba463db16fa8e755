//! RepVGG inference on the CPU: kernels and an execution plan, no model variants.
//!
//! A [`Network`] is built once from convolutions and element-wise layers (weights packed for
//! their algorithm at that point) and run many times. Activations are NHWC from the input to the
//! head; buffers are shared by liveness and reused between runs.
//!
//! * 3x3 stride-1 convs (most of RepVGG's work) run as Winograd: layers of at least [`WIDE`]
//!   channels keep both F(4x4,3x3) and F(2x2,3x3) weights and each run picks F(4x4) when it has
//!   enough tiles ([`F4_MIN_TILES`]) to pay for reading its 2.25x larger weights (batch 1's
//!   14x14 layers run F(2x2), whose weights stay in the last-level cache); narrow layers use
//!   F(2x2). The kernel transform is precomputed in f64, the input and output transforms run on
//!   SIMD vectors of channels, and the products are one GEMM per transformed position,
//!   bias/BN affine/ReLU fused into the output transform ([`winograd`]).
//! * Every other conv is a GEMM over an im2col block gathered per chunk of output pixels (1x1
//!   stride-1 convs multiply the input directly); groups are per-group GEMMs.
//! * GEMMs multiply the activations in place with weights packed once into column panels
//!   (`gemm`): a register-blocked microkernel (8 rows x 32 columns on AVX-512, 3 x 32 on AVX2)
//!   compiled for the best instruction set found at run time through [`pulp`], the conv's
//!   epilogue fused into its store, threads splitting the panels so that a weight byte is read
//!   once per run at batch 1. No `unsafe` in the f32 path.
//! * Reduced precision: [`int8`] (u8 x s8 -> s32 on AMX tiles, AVX-512 VNNI, AVX2 or portable
//!   code) and [`bf16`] (bf16 x bf16 -> f32 on AMX-BF16 tiles). Their `unsafe` lives in two
//!   small modules, each call with its `// SAFETY:` argument: the int8 GEMM's SIMD entry points
//!   and the AMX tiles.
//! * Threads: rayon. Work is split into chunks of whole output rows; when a layer has fewer
//!   chunks than threads (batch 1, late layers), the work inside a chunk is split instead. A
//!   run executes on a worker of its pool while the other workers wait for its jobs spinning,
//!   not asleep (`pool`).
//!
//! # Example
//!
//! One 3x3 conv with bias and ReLU, then the classifier head (global average pool and a linear
//! layer):
//!
//! ```
//! # fn main() -> Result<(), repvgg_cpu::CpuError> {
//! use ndarray::{Array2, Array4};
//! use repvgg_cpu::{CpuOptions, Epilogue, NetworkBuilder};
//! use repvgg_math::ConvSpec;
//!
//! let mut b = NetworkBuilder::new(CpuOptions::default());
//! let x = b.input(3)?;
//! let spec = ConvSpec::conv3x3(3, 8, 1, 1)?;
//! let w = Array4::from_elem(spec.weight_shape(), 0.1f32);
//! let y = b.conv(x, w.view(), spec, Epilogue::bias(vec![0.5; 8]).relu())?;
//! b.head(y, Array2::from_elem((10, 8), 0.01f32).view(), &[0.0; 10])?;
//! let net = b.build()?;
//!
//! let out = net.run(Array4::from_elem((2, 3, 16, 16), 1.0f32).view())?;
//! assert_eq!(out.logits.dim(), (2, 10));
//! assert!(out.logits.iter().all(|v| v.is_finite()));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod aligned;
mod amx;
pub mod bf16;
mod bf16_simd;
mod bf16_winograd;
mod builder;
mod conv;
mod direct;
mod elementwise;
mod error;
mod gemm;
mod head;
mod im2col;
pub mod int8;
mod network;
mod plan;
mod pool;
mod schedule;
mod tiled;
pub mod winograd;
mod winograd_run;

pub use builder::{CpuOptions, Epilogue, NetworkBuilder, TensorId};
pub use conv::{ConvAlgo, F4_MIN_TILES, Geometry, ParseConvAlgoError, PreparedConv, WIDE};
pub use error::{CpuError, Result};
pub use network::{Network, OpTime, RunOutput};
pub use repvgg_math::Activation;
pub use winograd::Tile;
