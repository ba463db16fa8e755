//! Recognising a PyTorch checkpoint by its first bytes. Always compiled, so that a build
//! without `.pth` support still tells a `.pth` file from a safetensors one and says what is
//! missing; the `pth` module re-exports these.

/// True for a `torch.save` zip archive (PyTorch ≥ 1.6).
pub fn is_torch_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// True for a legacy (non-zip) `torch.save` file: a binary pickle, not a safetensors header.
pub fn is_legacy_pickle(bytes: &[u8]) -> bool {
    bytes.len() > 8 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]) && bytes[8] != b'{'
}

/// True if these bytes are a `.pth` file (zip or legacy layout).
pub fn is_pth(bytes: &[u8]) -> bool {
    is_torch_zip(bytes) || is_legacy_pickle(bytes)
}
