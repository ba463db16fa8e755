//! Plain tensor files for the CLI contract: an `input` tensor in, named outputs out; and the
//! safe way every output file of the workspace is written ([`write_atomically`]).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{Array4, ArrayD, ArrayViewD};
use safetensors::{Dtype, SafeTensorError, SafeTensors, View};

use crate::error::{ModelError, Result};

/// Reads the tensor `input` (or the file's only tensor) as `[N, C, H, W]` f32.
pub fn read_input(path: &Path) -> Result<Array4<f32>> {
    let bytes = std::fs::read(path).map_err(|error| ModelError::Io {
        path: path.into(),
        error,
    })?;
    read_input_bytes(&bytes, path)
}

/// [`read_input`] of a file held in memory; `path` only names it in errors. The name, dtype
/// and rank are checked before any data is converted.
pub fn read_input_bytes(bytes: &[u8], path: &Path) -> Result<Array4<f32>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format_error(&e, bytes, path))?;
    let names = st.names();
    let name = if st.tensor("input").is_ok() {
        "input".to_string()
    } else if names.len() == 1 {
        names[0].to_string()
    } else {
        let mut names: Vec<&str> = names.iter().map(|s| &s[..]).collect();
        names.sort_unstable();
        return Err(ModelError::Input {
            expected: format!(
                "a tensor named `input` (or a single tensor) in {}, found {names:?}",
                path.display()
            ),
            found: vec![],
        });
    };
    let view = st.tensor(&name).map_err(|e| ModelError::Format {
        path: path.into(),
        reason: e.to_string(),
    })?;
    if view.dtype() != Dtype::F32 {
        return Err(ModelError::Input {
            expected: format!(
                "`{name}` in {} stored as F32 (it is {:?})",
                path.display(),
                view.dtype()
            ),
            found: view.shape().to_vec(),
        });
    }
    let shape = view.shape().to_vec();
    let [n, c, h, w] = shape[..] else {
        return Err(ModelError::Input {
            expected: format!("`{name}` in {} of rank 4 [N, C, H, W]", path.display()),
            found: shape,
        });
    };
    // `deserialize` checked that the data holds exactly `N*C*H*W` f32 values.
    let data: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Array4::from_shape_vec([n, c, h, w], data).map_err(|e| ModelError::Format {
        path: path.into(),
        reason: e.to_string(),
    })
}

/// A [`ModelError::Format`] for a file `deserialize` rejected, saying what the layout
/// expects where the crate's message alone would not (`header too small`, ...).
pub(crate) fn format_error(e: &SafeTensorError, bytes: &[u8], path: &Path) -> ModelError {
    let len = bytes.len();
    let header_len = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes);
    let reason = match (e, header_len) {
        (SafeTensorError::HeaderTooSmall, _) if len == 0 => {
            "the file is empty; expected an 8-byte header length, a JSON header and tensor data"
                .to_string()
        }
        (SafeTensorError::HeaderTooSmall, _) => format!(
            "the file is {len} bytes, shorter than the 8-byte header length it must start with"
        ),
        (SafeTensorError::InvalidHeaderLength, Some(n)) => format!(
            "its header length field says {n} bytes, but only {} follow it",
            len - 8
        ),
        (SafeTensorError::HeaderTooLarge, Some(n)) => {
            format!("its header length field says {n} bytes; at most 100 MB are allowed")
        }
        (SafeTensorError::MetadataIncompleteBuffer, _) => format!(
            "the header's tensor byte ranges do not end where the file ends ({len} bytes): a \
             tensor lies past the end of the file, or bytes are left over"
        ),
        (SafeTensorError::InvalidOffset(name), _) => format!(
            "tensor `{name}`: its data_offsets do not start where the previous tensor's end \
             (expected contiguous, non-overlapping byte ranges)"
        ),
        (SafeTensorError::TensorInvalidInfo, _) => {
            "a tensor's byte range does not hold exactly shape x dtype-size bytes".to_string()
        }
        _ => e.to_string(),
    };
    ModelError::Format {
        path: path.into(),
        reason,
    }
}

/// Writes named f32 tensors to a safetensors file (through [`write_atomically`]), refusing to
/// overwrite any of `inputs`.
pub fn write_tensors(path: &Path, tensors: &[(String, ArrayD<f32>)]) -> Result<()> {
    write_tensors_guarded(path, tensors, &[])
}

/// [`write_tensors`] that refuses to replace any of `inputs` (the files the result was made from).
pub fn write_tensors_guarded(
    path: &Path,
    tensors: &[(String, ArrayD<f32>)],
    inputs: &[&Path],
) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(k, a)| (k.clone(), F32Tensor::new(a.shape().to_vec(), a.view())));
    write_atomically(path, inputs, |tmp| {
        safetensors::serialize_to_file(views, None, tmp).map_err(|e| e.to_string())
    })
}

/// An f32 tensor saved straight from an array: its little-endian bytes are made when the
/// serializer asks for them, one tensor at a time, so saving holds no copy of all the weights.
pub(crate) struct F32Tensor<'a> {
    shape: Vec<usize>,
    values: ArrayViewD<'a, f32>,
}

impl<'a> F32Tensor<'a> {
    /// `values` saved with `shape` (same element count; e.g. `[r, c]` saved as `[r, c, 1, 1]`),
    /// in `values`' logical order.
    pub(crate) fn new(shape: Vec<usize>, values: ArrayViewD<'a, f32>) -> Self {
        Self { shape, values }
    }
}

impl View for F32Tensor<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.values.len() * 4
    }
}

/// Whether two paths name one existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Writes `path` through a temporary file created next to it (same directory, so the final
/// rename is atomic on one file system): `write` fills the temporary file, which is flushed to
/// disk and then renamed over `path`. A failed or interrupted run leaves `path` as it was (absent
/// or the previous complete file), never truncated; the temporary file is removed on failure.
/// `path` naming one of `inputs` is refused before anything is written.
pub fn write_atomically(
    path: &Path,
    inputs: &[&Path],
    write: impl FnOnce(&Path) -> std::result::Result<(), String>,
) -> Result<()> {
    let err = |reason: String| ModelError::Save {
        path: path.into(),
        reason,
    };
    if let Some(input) = inputs.iter().find(|i| same_file(path, i)) {
        return Err(err(format!(
            "it is the input {}; choose another output path",
            input.display()
        )));
    }
    if path.is_dir() {
        return Err(err("it is a directory; give a file path".into()));
    }
    let name = path
        .file_name()
        .ok_or_else(|| err("no file name in the output path".into()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| err(format!("cannot create a file in {}: {e}", dir.display())))?;
    let result = write(&tmp)
        .and_then(|()| {
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| e.to_string())
        })
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| e.to_string()));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("y.bin");
        std::fs::write(&out, b"previous").expect("write");
        let e = write_atomically(&out, &[], |tmp| {
            std::fs::write(tmp, b"half").map_err(|e| e.to_string())?;
            Err("interrupted".into())
        })
        .expect_err("fails");
        assert!(e.to_string().contains("interrupted"), "{e}");
        assert_eq!(std::fs::read(&out).expect("read"), b"previous");
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(left.len(), 1, "temporary file left behind: {left:?}");
        write_atomically(&out, &[], |tmp| {
            std::fs::write(tmp, b"new").map_err(|e| e.to_string())
        })
        .expect("writes");
        assert_eq!(std::fs::read(&out).expect("read"), b"new");
    }

    #[test]
    fn the_input_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("x.bin");
        std::fs::write(&input, b"input").expect("write");
        let alias = dir.path().join(".").join("x.bin");
        let e = write_atomically(&alias, &[&input], |_| Ok(())).expect_err("refused");
        assert!(e.to_string().contains("it is the input"), "{e}");
        assert_eq!(std::fs::read(&input).expect("read"), b"input");
        let e = write_atomically(dir.path(), &[], |_| Ok(())).expect_err("a directory");
        assert!(e.to_string().contains("directory"), "{e}");
        let e = write_atomically(&dir.path().join("no/such/dir/y.bin"), &[], |_| Ok(()))
            .expect_err("no dir");
        assert!(e.to_string().contains("cannot create a file in"), "{e}");
    }
}
