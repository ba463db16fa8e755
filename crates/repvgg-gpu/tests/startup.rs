//! Start-up: the persisted pipeline cache (written, reused, and a damaged file ignored, never
//! crashed on) and shaders with and without runtime bounds checks giving the same results.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::path::Path;

use common::{Rng, assert_close};
use ndarray::{Array2, Array4, ArrayD};
use repvgg_gpu::{ContextOptions, Epilogue, GpuContext, NetworkBuilder, test_context};
use repvgg_math::ConvSpec;

/// A conv + ReLU, a pool and a linear layer: three trusted shaders, run into NaN-filled
/// buffers; returns the logits.
fn run(ctx: &GpuContext) -> ArrayD<f32> {
    let mut rng = Rng::new(7);
    let spec = ConvSpec::conv3x3(5, 12, 1, 1).expect("spec");
    let w = rng.array4(spec.weight_shape());
    let lin: Array2<f32> = rng.array2([3, 12]);
    let mut b = NetworkBuilder::new(ctx).nan_fill(true);
    let x = b.input(5);
    let y = b
        .conv(x, w.view(), spec, Epilogue::bias(rng.vec(12)).relu())
        .expect("conv");
    let p = b.global_avg_pool(y).expect("gap");
    let l = b.linear(p, lin.view(), None).expect("linear");
    b.output("logits", l);
    let net = b.build().expect("build");
    let input: Array4<f32> = rng.array4([2, 5, 9, 7]);
    net.run(input.view())
        .expect("run")
        .remove("logits")
        .expect("logits")
}

fn with_cache(dir: &Path) -> GpuContext {
    GpuContext::with_options(&ContextOptions {
        pipeline_cache_dir: Some(dir.to_path_buf()),
        runtime_checks: false,
        ..ContextOptions::from_env()
    })
    .expect("context")
}

#[test]
fn pipeline_cache_is_written_reused_and_a_damaged_file_is_ignored() {
    let Some(shared) = test_context() else { return };
    let reference = run(&shared);
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = with_cache(dir.path());
    let vulkan = ctx.adapter_info().backend == repvgg_gpu::wgpu::Backend::Vulkan
        && ctx
            .device()
            .features()
            .contains(repvgg_gpu::wgpu::Features::PIPELINE_CACHE);
    let Some(path) = ctx.pipeline_cache_path().map(Path::to_path_buf) else {
        assert!(
            !vulkan,
            "a Vulkan adapter with PIPELINE_CACHE must get a cache"
        );
        return;
    };
    assert!(path.starts_with(dir.path()));
    assert_close("cached", run(&ctx).view(), reference.view(), 1e-5);
    drop(ctx);
    let good = std::fs::read(&path).expect("the cache file was written");
    assert!(good.starts_with(b"RVGGPLC1") && good.len() > 20);

    // Reused: a fresh context seeded from the file gives the same result.
    assert_close(
        "warm",
        run(&with_cache(dir.path())).view(),
        reference.view(),
        1e-5,
    );

    // Damaged files: each is ignored (empty cache), the network still runs right, and the
    // file is rewritten whole.
    let mut flipped = good.clone();
    let mid = good.len() / 2;
    flipped[mid] ^= 0xff;
    let mut bad_header = good.clone();
    bad_header[0] = b'X';
    let damaged: [(&str, Vec<u8>); 5] = [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("bit flip", flipped),
        ("bad header", bad_header),
        (
            "garbage",
            (0..4096u32).map(|i| (i * 31 % 256) as u8).collect(),
        ),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in damaged {
        std::fs::write(&path, &bytes).expect("write");
        let ctx = with_cache(dir.path());
        assert_close(what, run(&ctx).view(), reference.view(), 1e-5);
        ctx.save_pipeline_cache().expect("save");
        drop(ctx);
        let again = std::fs::read(&path).expect("rewritten");
        assert!(
            again.starts_with(b"RVGGPLC1") && again.len() > 20,
            "{what}: not rewritten"
        );
    }
}

#[test]
fn shaders_without_bounds_checks_match_the_checked_ones() {
    let Some(ctx) = test_context() else { return };
    let checked = GpuContext::with_options(&ContextOptions {
        pipeline_cache_dir: None,
        runtime_checks: true,
        ..ContextOptions::from_env()
    })
    .expect("context");
    assert_eq!(checked.pipeline_cache_path(), None);
    // Bit-identical: dropping checks must not change an in-range computation.
    assert_eq!(run(&ctx), run(&checked));
}
