//! Plain tensor files for the CLI contract: an `input` tensor in, named outputs out.

use std::path::Path;

use ndarray::{Array4, ArrayD};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{ModelError, Result};

/// Reads the tensor `input` (or the file's only tensor) as `[N, C, H, W]` f32.
pub fn read_input(path: &Path) -> Result<Array4<f32>> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.into(),
        source,
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Format {
        path: path.into(),
        reason: e.to_string(),
    })?;
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
                "`{name}` as F32 in {}, found {:?}",
                path.display(),
                view.dtype()
            ),
            found: view.shape().to_vec(),
        });
    }
    let data: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let shape = view.shape().to_vec();
    if shape.len() != 4 {
        return Err(ModelError::Input {
            expected: format!("`{name}` of rank 4 [N, C, H, W]"),
            found: shape,
        });
    }
    Array4::from_shape_vec([shape[0], shape[1], shape[2], shape[3]], data).map_err(|e| {
        ModelError::Format {
            path: path.into(),
            reason: e.to_string(),
        }
    })
}

/// Writes named f32 tensors to a safetensors file.
pub fn write_tensors(path: &Path, tensors: &[(String, ArrayD<f32>)]) -> Result<()> {
    let save_err = |reason: String| ModelError::Save {
        path: path.into(),
        reason,
    };
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, a)| {
            (
                k.clone(),
                a.shape().to_vec(),
                a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(k, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (k.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| save_err(e.to_string()))?;
    let data = safetensors::serialize(views, None).map_err(|e| save_err(e.to_string()))?;
    std::fs::write(path, data).map_err(|e| save_err(e.to_string()))
}
