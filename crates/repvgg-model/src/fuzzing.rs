//! The entry points the fuzz targets in `fuzz/` drive, shared with the test that replays
//! their corpus (`tests/fuzz_corpus.rs`), so CI keeps every finding. Each takes arbitrary
//! bytes and must return (an error is fine) without panicking, aborting or allocating more
//! than the input justifies.

use std::path::Path;

use ndarray::Array4;

use crate::checkpoint;
use crate::preprocess::{self, PretrainedConfig};
use crate::tensor_io;

/// Checkpoint bytes → load → fuse → one tiny forward pass when the model is small.
pub fn checkpoint_bytes(data: &[u8]) {
    let Ok(ck) = checkpoint::load_bytes(data, Path::new("fuzz.safetensors")) else {
        return;
    };
    let Ok(deploy) = ck.model.into_deploy() else {
        return;
    };
    let c = deploy.config.in_channels;
    if c <= 16 && deploy.num_params() <= 1 << 16 {
        let x = Array4::from_elem((1, c, 5, 4), 0.5f32);
        let _ = deploy.forward(x.view());
    }
}

/// Image bytes → decode → timm's eval transform (224 and d2se's 320) and the digits
/// preprocessing.
pub fn image_bytes(data: &[u8]) {
    let Ok(img) = preprocess::decode_rgb(data, Path::new("fuzz.img")) else {
        return;
    };
    for cfg in [PretrainedConfig::imagenet_224(), PretrainedConfig::d2se()] {
        let _ = cfg.transform(&img);
    }
    let _ = preprocess::digits_input(&img);
}

/// Input-tensor bytes → `infer`'s checks: read the `input` tensor and check it against a
/// 3-channel network.
pub fn input_bytes(data: &[u8]) {
    let Ok(x) = tensor_io::read_input_bytes(data, Path::new("fuzz.safetensors")) else {
        return;
    };
    let _ = crate::model::check_input(3, &x.view());
}
