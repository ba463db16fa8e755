//! `f32` buffers that start on a 64-byte boundary, so that the kernels' full-vector loads and
//! stores (16 lanes on AVX-512) never straddle two cache lines. Packed weights, activations and
//! scratch live in them; every offset the kernels use is a multiple of 16 values when the
//! channel counts are, which keeps them aligned too.

use core::fmt;
use core::ops::{Deref, DerefMut};

/// One cache line of values.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A fixed-length, 64-byte aligned `f32` buffer.
#[derive(Clone, Default)]
pub struct AlignedVec {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedVec {
    /// `len` copies of `value`.
    pub fn filled(len: usize, value: f32) -> Self {
        Self {
            lines: vec![Line([value; 16]); len.div_ceil(16)],
            len,
        }
    }
}

impl Deref for AlignedVec {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }
}

impl DerefMut for AlignedVec {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

impl fmt::Debug for AlignedVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlignedVec(len {})", self.len)
    }
}

/// One cache line of bytes.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct ByteLine([u8; 64]);

/// A 64-byte aligned byte buffer that can grow (the int8 engine's activations and weights: its
/// tile loads read 64-byte rows, which then sit on one cache line each).
#[derive(Clone, Default)]
pub struct AlignedBytes {
    lines: Vec<ByteLine>,
    len: usize,
}

impl AlignedBytes {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        let mut v = Self::default();
        v.resize(len);
        v
    }

    /// Sets the length to `len`; bytes past the old length are zero the first time the buffer
    /// holds them, and keep what they last held after a shrink.
    pub fn resize(&mut self, len: usize) {
        let lines = len.div_ceil(64);
        if lines > self.lines.len() {
            self.lines.resize(lines, ByteLine([0; 64]));
        }
        self.len = len;
    }

    /// The bytes as `i8`.
    pub fn as_i8(&self) -> &[i8] {
        bytemuck::cast_slice(self)
    }
}

impl Deref for AlignedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }
}

impl DerefMut for AlignedBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

impl fmt::Debug for AlignedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlignedBytes(len {})", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_buffers_start_on_a_cache_line_through_resizes() {
        let mut v = AlignedBytes::zeroed(3);
        assert_eq!(&*v, &[0, 0, 0]);
        for len in [0, 1, 63, 64, 65, 1000, 10] {
            v.resize(len);
            assert_eq!(v.len(), len);
            assert_eq!(v.as_ptr() as usize % 64, 0, "len {len}");
            v.fill(len as u8);
            assert!(v.iter().all(|&b| b == len as u8));
            assert_eq!(v.as_i8().len(), len);
        }
        let grown = {
            let mut w = AlignedBytes::zeroed(10);
            w.resize(200);
            w
        };
        assert!(grown.iter().all(|&b| b == 0), "new bytes are zero");
        assert_eq!(format!("{grown:?}"), "AlignedBytes(len 200)");
    }

    #[test]
    fn starts_on_a_cache_line_and_holds_exactly_len_values() {
        for len in [0, 1, 15, 16, 17, 1000] {
            let src: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let mut v = AlignedVec::filled(len, f32::NAN);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|x| x.is_nan()));
            v.copy_from_slice(&src);
            assert_eq!(&*v, &src[..]);
            assert_eq!(v.as_ptr() as usize % 64, 0, "len {len}");
            assert_eq!(format!("{v:?}"), format!("AlignedVec(len {len})"));
            let c = v.clone();
            assert_eq!(&*c, &src[..]);
            assert_eq!(c.as_ptr() as usize % 64, 0, "clone of len {len}");
        }
    }
}
