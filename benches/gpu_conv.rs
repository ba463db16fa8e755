//! GFLOP/s of the GPU conv kernels on every distinct 3x3 conv shape of RepVGG-A0 at 224x224,
//! main (auto) kernel against the naive one-output-per-invocation baseline, on one adapter.
//!
//! `cargo bench --bench gpu_conv` (append `-- Naive` or `-- Auto` to filter). Criterion's
//! throughput is in FLOP (2 x MACs), so its `Gelem/s` reads as GFLOP/s. Every sample is GPU time
//! measured by `GpuNetwork::bench`: timestamp queries where the adapter has them, otherwise wall
//! time around the submission and an explicit wait for the queue. Without an adapter the bench
//! prints why and does nothing (it fails instead under `REPVGG_REQUIRE_GPU=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::Array4;
use repvgg::gpu::{ConvKernel, Epilogue, GpuNetwork, NetworkBuilder, test_context};
use repvgg::math::ConvSpec;

/// (in, out, stride, input size) of every distinct 3x3 conv of RepVGG-A0 at 224x224.
const A0_CONV3X3: [(usize, usize, usize, usize); 8] = [
    (3, 48, 2, 224),
    (48, 48, 2, 112),
    (48, 48, 1, 56),
    (48, 96, 2, 56),
    (96, 96, 1, 28),
    (96, 192, 2, 28),
    (192, 192, 1, 14),
    (192, 1280, 2, 14),
];

fn conv_net(
    ctx: &repvgg::gpu::GpuContext,
    kernel: ConvKernel,
    spec: ConvSpec,
) -> Result<GpuNetwork, repvgg::gpu::GpuError> {
    let mut b = NetworkBuilder::new(ctx).kernel(kernel);
    let x = b.input(spec.in_channels);
    let w = Array4::from_shape_fn(spec.weight_shape(), |(o, i, y, x)| {
        ((o * 31 + i * 7 + y * 3 + x) % 17) as f32 / 17.0 - 0.5
    });
    // The deployed block: conv + bias + ReLU, fused.
    let epilogue = Epilogue::bias(vec![0.1; spec.out_channels]).relu();
    let y = b.conv(x, w.view(), spec, epilogue)?;
    b.output("y", y);
    b.build()
}

fn gpu_conv(c: &mut Criterion) {
    let Some(ctx) = test_context() else { return };
    eprintln!("adapter: {} ({})", ctx.info().name, ctx.info().backend);
    let mut group = c.benchmark_group("a0_conv3x3");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (cin, cout, stride, size) in A0_CONV3X3 {
        let Ok(spec) = ConvSpec::conv3x3(cin, cout, stride, 1) else {
            continue;
        };
        let label = format!("{cin}to{cout}_s{stride}_{size}");
        for kernel in [ConvKernel::Auto, ConvKernel::Naive] {
            let net = match conv_net(&ctx, kernel, spec) {
                Ok(net) => net,
                Err(e) => {
                    eprintln!("{label} {kernel:?}: {e}");
                    continue;
                }
            };
            let Ok(macs) = net.macs(size, size) else {
                continue;
            };
            group.throughput(Throughput::Elements(2 * macs));
            group.bench_function(BenchmarkId::new(format!("{kernel:?}"), &label), |b| {
                b.iter_custom(|iters| match net.bench(1, size, size, 0, iters as usize) {
                    Ok(times) => times.iter().sum(),
                    Err(e) => panic!("{label} {kernel:?}: {e}"),
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, gpu_conv);
criterion_main!(benches);
