//! Writes a train-form checkpoint of a named variant with random weights (timm naming, f32),
//! e.g. to measure the loader's memory on a B3-sized file:
//!
//!     cargo run --release -p repvgg-model --example random_checkpoint -- b3 /tmp/b3.safetensors
//!     /usr/bin/time -v target/release/repvgg convert --weights /tmp/b3.safetensors --output /tmp/b3d.safetensors

use std::path::PathBuf;

use repvgg_model::{Form, RepVggConfig, checkpoint};
use safetensors::{Dtype, tensor::TensorView};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(arch), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: random_checkpoint ARCH OUT.safetensors".into());
    };
    let config = RepVggConfig::by_name(&arch)?;
    let keys = checkpoint::expected_keys(&config, Form::Train);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut unit = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = keys
        .into_iter()
        .map(|(k, shape)| {
            let n: usize = shape.iter().product();
            let var = k.ends_with("running_var");
            let bytes = (0..n)
                .flat_map(|_| {
                    let u = unit();
                    let v = if var { 0.5 + u } else { (u - 0.5) * 0.1 };
                    v.to_le_bytes()
                })
                .collect();
            (k, shape, bytes)
        })
        .collect();
    let views = data
        .iter()
        .map(|(k, s, b)| Ok((k.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let out = PathBuf::from(out);
    safetensors::serialize_to_file(views, None, &out)?;
    eprintln!(
        "wrote {} ({} train form, random)",
        out.display(),
        config.name
    );
    Ok(())
}
