//! Int8 inference on the CPU: u8 activations (per-tensor scale and zero point), s8 weights
//! (per-output-channel scales, symmetric), s32 accumulation, requantized to u8 in each conv's
//! epilogue, so activations stay u8 from the first conv to the head.
//!
//! * [`Int8Kernel`]: the integer GEMM's instruction sets (AVX-512 VNNI, AVX2, scalar), picked at
//!   run time or forced; [`gemm_u8i8`] the GEMM itself.
//! * [`QuantConv`]: one conv: on AMX tiles or AVX-512 VNNI read straight from its padded input,
//!   else im2col to u8 and the GEMM.
//! * [`Int8Network`]: a chain of such convs (a deployed RepVGG without squeeze-excite), its f32
//!   input quantized on entry, the global average pool in f32 and the linear layer's weights
//!   as s8 per class.
//!
//! The quantization parameters come from the caller (calibration lives in `repvgg-model`).

mod conv;
mod gemm;
mod network;
mod simd;

pub use conv::QuantConv;
pub use gemm::{
    Int8Kernel, KG, MR, NR, Requant, gemm_u8i8, pack, pack_rows, packed_len, packed_row_index,
    packed_rows_len, padded_k, padded_n, panel_width, panels, requantize,
};
pub use network::{Int8Network, Int8Options};

pub(crate) use gemm::pack_steps;
pub(crate) use network::clear_border;
pub(crate) use simd::has_vnni;

use crate::error::{CpuError, Result};

/// How a tensor's f32 values map to u8: `x ≈ scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActQuant {
    /// Step between two codes; finite and positive.
    pub scale: f32,
    /// The code of 0.0 (0 after a ReLU).
    pub zero_point: u8,
}

impl ActQuant {
    /// A scale with zero point 0 (a tensor after a ReLU).
    pub fn relu(scale: f32) -> Self {
        Self {
            scale,
            zero_point: 0,
        }
    }

    /// The code of `x`: `clamp(round_ties_even(x / scale) + zero_point, 0, 255)`.
    #[inline]
    pub fn quantize(self, x: f32) -> u8 {
        ((x / self.scale).round_ties_even() + f32::from(self.zero_point)).clamp(0.0, 255.0) as u8
    }

    /// The value of code `q`.
    #[inline]
    pub fn dequantize(self, q: u8) -> f32 {
        self.scale * (f32::from(q) - f32::from(self.zero_point))
    }

    pub(crate) fn check(self, what: &str) -> Result<()> {
        if self.scale.is_finite() && self.scale > 0.0 {
            Ok(())
        } else {
            Err(CpuError::Invalid(format!(
                "{what} scale must be finite and positive, found {}",
                self.scale
            )))
        }
    }
}
