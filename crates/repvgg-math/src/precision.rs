//! How an engine stores weights and activations.

use std::fmt;
use std::str::FromStr;

/// How weights and activations are stored (arithmetic is always f32).
///
/// Parses from and prints as `f32` / `f16` (also accepted: `fp32`, `float32`, `fp16`,
/// `float16`, `half`, in any case), so command-line parsers can take it directly:
///
/// ```
/// use repvgg_math::Precision;
///
/// assert_eq!("f16".parse::<Precision>(), Ok(Precision::F16));
/// assert_eq!(Precision::F32.to_string(), "f32");
/// let err = "f64".parse::<Precision>().unwrap_err();
/// assert_eq!(err.to_string(), r#"unknown precision "f64": expected one of f32, f16"#);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// 32-bit floats everywhere.
    #[default]
    F32,
    /// 16-bit floats in memory, f32 accumulation (on the GPU: needs the adapter's
    /// `SHADER_F16` feature).
    F16,
}

impl Precision {
    /// Every precision.
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::F16];

    /// `"f32"` or `"f16"`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }

    /// Bytes of one stored element.
    pub fn bytes(self) -> u64 {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A precision name that [`Precision`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision {0:?}: expected one of f32, f16")]
pub struct ParsePrecisionError(pub String);

impl FromStr for Precision {
    type Err = ParsePrecisionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Precision::F16),
            _ => Err(ParsePrecisionError(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>(), Ok(p));
            assert_eq!(p.to_string(), p.name());
        }
        assert_eq!("FP16".parse::<Precision>(), Ok(Precision::F16));
        assert!("f64".parse::<Precision>().is_err());
        assert_eq!(Precision::default(), Precision::F32);
        assert_eq!(format!("{:>4}", Precision::F16), " f16");
    }
}
