//! Reading the timm reference fixtures (see `scripts/ref/`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

/// Every tensor of a safetensors file, widened to f64.
pub fn read_f64(path: &std::path::Path) -> BTreeMap<String, ArrayD<f64>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter_map(|(k, v)| {
            let d = v.data();
            let vals: Vec<f64> = match v.dtype() {
                Dtype::F64 => d
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                Dtype::F32 => d
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                Dtype::I64 => d
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                _ => return None,
            };
            Some((k, ArrayD::from_shape_vec(IxDyn(v.shape()), vals).unwrap()))
        })
        .collect()
}

/// Names of the fixtures in the manifest.
pub fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Max |a - b| between an f32 result and an f64 reference (panics on shape mismatch); NaN when
/// either side holds a NaN or infinity, so no `d < tol` can pass ([`repvgg_math::compare`]).
pub fn max_diff(got: &ArrayD<f32>, want: &ArrayD<f64>) -> f64 {
    assert_eq!(got.shape(), want.shape(), "shape");
    repvgg_math::compare::max_abs_diff(got, want)
}

/// Distance in f32 ulps between `got` and the f64 value `want` rounded to f32.
pub fn ulps(got: f32, want: f64) -> u32 {
    let w = want as f32;
    let (a, b) = (got.to_bits() as i64, w.to_bits() as i64);
    // Map the sign-magnitude bit patterns onto a monotone integer line.
    let key = |x: i64| {
        if x & 0x8000_0000 != 0 {
            0x8000_0000 - x
        } else {
            x + 0x8000_0000
        }
    };
    (key(a) - key(b)).unsigned_abs() as u32
}

/// Writes tensors (f32) into a safetensors file.
pub fn write_f32(path: &std::path::Path, tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, (s, d))| {
            (
                k.clone(),
                s.clone(),
                d.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<_> = bytes
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Reads the f32/f64 tensors of a checkpoint as f32 (skipping integer ones).
pub fn read_f32(path: &std::path::Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    read_f64(path)
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .map(|(k, v)| {
            (
                k,
                (v.shape().to_vec(), v.iter().map(|x| *x as f32).collect()),
            )
        })
        .collect()
}
