//! Storage precision of weights and activations on the GPU.
//!
//! [`Precision::F16`] keeps every weight and activation as IEEE half in GPU memory (half the
//! bytes and bandwidth) while the kernels accumulate in f32: loads convert to f32, stores round
//! to f16 (round to nearest even). Per-channel scale, bias and shift stay f32. The network's
//! input is rounded to f16 at upload and its outputs widened back to f32 at read-back, so the
//! caller always gives and gets f32.
//!
//! Every shader stores through the element types `st` and `st4` that the shared prelude
//! (`shaders/common/prelude.wgsl`) declares as `alias st = f32;` and `alias st4 = vec4<f32>;`,
//! and converts explicitly on every load (`f32(x[i])`) and store (`st(v)`); for a shader with
//! an f16 form, [`crate::Shader::source_for`] turns those aliases into f16 and prepends
//! `enable f16;`. The f32 build is the files as written.

pub use repvgg_math::{ParsePrecisionError, Precision};

/// What the GPU engine does with a [`Precision`]: buffer sizes, encoding, shader forms.
pub(crate) trait Storage: Copy {
    /// Bytes of a buffer of `len` elements: rounded up to a multiple of 4 (copies and
    /// bindings are in whole words) and at least 4 (a binding is never empty).
    fn buffer_bytes(self, len: usize) -> u64;
    /// `data` as stored, little-endian, zero-padded to [`Storage::buffer_bytes`].
    fn encode(self, data: &[f32]) -> Vec<u8>;
    /// The first `len` elements stored in `bytes`, as f32 (fewer if `bytes` is short).
    fn decode(self, bytes: &[u8], len: usize) -> Vec<f32>;
    /// `bytes` of NaN in this precision (`bytes` a multiple of 4).
    fn nan_fill(self, bytes: usize) -> Vec<u8>;
    /// The WGSL source `f32_source` (written with `st`/`st4` aliases of f32) for this
    /// precision.
    fn specialise(self, f32_source: String) -> String;
}

impl Storage for Precision {
    fn buffer_bytes(self, len: usize) -> u64 {
        (len as u64 * self.bytes()).next_multiple_of(4).max(4)
    }

    fn encode(self, data: &[f32]) -> Vec<u8> {
        let mut out = match self {
            Precision::F32 => bytemuck::cast_slice(data).to_vec(),
            Precision::F16 => data
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
        };
        out.resize(self.buffer_bytes(data.len()) as usize, 0);
        out
    }

    fn decode(self, bytes: &[u8], len: usize) -> Vec<f32> {
        match self {
            Precision::F32 => bytes
                .chunks_exact(4)
                .take(len)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Precision::F16 => bytes
                .chunks_exact(2)
                .take(len)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    }

    fn nan_fill(self, bytes: usize) -> Vec<u8> {
        let word = match self {
            Precision::F32 => f32::NAN.to_bits(),
            Precision::F16 => {
                let h = u32::from(half::f16::NAN.to_bits());
                h | (h << 16)
            }
        };
        word.to_le_bytes().into_iter().cycle().take(bytes).collect()
    }

    fn specialise(self, f32_source: String) -> String {
        match self {
            Precision::F32 => f32_source,
            Precision::F16 => format!(
                "enable f16;\n{}",
                f32_source
                    .replace(ALIAS_ST_F32, "alias st = f16;")
                    .replace(ALIAS_ST4_F32, "alias st4 = vec4<f16>;")
                    .replace(TEXELS_F32, "texture_storage_2d<rgba16float, read>")
            ),
        }
    }
}

/// The storage-type declarations a shader with an f16 form carries.
pub(crate) const ALIAS_ST_F32: &str = "alias st = f32;";
pub(crate) const ALIAS_ST4_F32: &str = "alias st4 = vec4<f32>;";
/// A read-only weight texture: rgba32float, and rgba16float in the f16 form (the format the
/// upload gives its texture for that precision).
pub(crate) const TEXELS_F32: &str = "texture_storage_2d<rgba32float, read>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_round_to_words_and_values_round_trip() {
        assert_eq!(Precision::F32.buffer_bytes(0), 4);
        assert_eq!(Precision::F16.buffer_bytes(0), 4);
        assert_eq!(Precision::F16.buffer_bytes(3), 8);
        assert_eq!(Precision::F16.buffer_bytes(4), 8);
        assert_eq!(Precision::F32.buffer_bytes(3), 12);
        let v = [1.0f32, -2.5, 65504.0, 1.0e-3, 0.1];
        for p in Precision::ALL {
            let bytes = p.encode(&v);
            assert_eq!(bytes.len() as u64, p.buffer_bytes(v.len()), "{p}");
            let back = p.decode(&bytes, v.len());
            assert_eq!(back.len(), v.len());
            for (a, b) in v.iter().zip(&back) {
                // f16: 11 significant bits, relative error at most 2^-11.
                let tol = if p == Precision::F16 {
                    a.abs() / 2048.0
                } else {
                    0.0
                };
                assert!((a - b).abs() <= tol, "{p}: {a} -> {b}");
            }
        }
        assert!(
            Precision::F16
                .decode(&Precision::F16.nan_fill(8), 4)
                .iter()
                .all(|v| v.is_nan())
        );
        assert!(
            Precision::F32
                .decode(&Precision::F32.nan_fill(8), 2)
                .iter()
                .all(|v| v.is_nan())
        );
    }

    #[test]
    fn the_f16_source_enables_f16_and_swaps_only_the_aliases() {
        let src = "// c\nalias st = f32;\nalias st4 = vec4<f32>;\nvar<private> a: f32;\n\
                   var t: texture_storage_2d<rgba32float, read>;\n";
        assert_eq!(Precision::F32.specialise(src.to_owned()), src);
        let h = Precision::F16.specialise(src.to_owned());
        assert!(h.starts_with("enable f16;\n"));
        assert!(h.contains("alias st = f16;") && h.contains("alias st4 = vec4<f16>;"));
        assert!(h.contains("var t: texture_storage_2d<rgba16float, read>;"));
        assert!(h.contains("var<private> a: f32;"));
    }
}
