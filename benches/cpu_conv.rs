//! GFLOP/s of the CPU engine on every distinct 3x3 conv shape of RepVGG-A0 at 224x224 (the
//! deployed kernel: conv + bias + ReLU), batch 1 and 8, each algorithm the engine has for it.
//!
//! `cargo bench --bench cpu_conv` (append e.g. `-- b1` to filter). Criterion's throughput is in
//! FLOP of the direct convolution (2 x MACs), so its `Gelem/s` reads as GFLOP/s; Winograd does
//! fewer real multiplications, which is the point. Threads: rayon's default (RAYON_NUM_THREADS).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::{Array2, Array4};
use repvgg::cpu::{ConvAlgo, CpuOptions, Epilogue, Network, NetworkBuilder, Tile};
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

fn conv_net(spec: ConvSpec, algo: ConvAlgo) -> Network {
    let mut b = NetworkBuilder::new(CpuOptions {
        threads: None,
        algo,
    });
    let x = b.input(spec.in_channels).unwrap();
    let w = Array4::from_shape_fn(spec.weight_shape(), |(o, i, y, x)| {
        ((o * 31 + i * 7 + y * 3 + x) % 17) as f32 / 17.0 - 0.5
    });
    let ep = Epilogue::bias(vec![0.1; spec.out_channels]).relu();
    let y = b.conv(x, w.view(), spec, ep).unwrap();
    let head = Array2::<f32>::from_elem((1, spec.out_channels), 0.01);
    b.head(y, head.view(), &[0.0]).unwrap();
    b.build().unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("a0_conv3x3_cpu");
    g.sample_size(10);
    for batch in [1usize, 8] {
        for &(cin, cout, stride, size) in &A0_CONV3X3 {
            let spec = ConvSpec::conv3x3(cin, cout, stride, 1).unwrap();
            let flops = 2 * spec.macs(size, size).unwrap() * batch as u64;
            let x = Array4::from_shape_fn((batch, cin, size, size), |(n, ch, y, xx)| {
                ((n + ch * 3 + y * 5 + xx * 7) % 13) as f32 / 13.0 - 0.5
            });
            let mut algos = vec![("gemm", ConvAlgo::Gemm)];
            if stride == 1 {
                algos.push(("winograd-f4", ConvAlgo::Winograd(Tile::F4)));
                algos.push(("winograd-f2", ConvAlgo::Winograd(Tile::F2)));
            }
            for (name, algo) in algos {
                let net = conv_net(spec, algo);
                g.throughput(Throughput::Elements(flops));
                let id = format!("b{batch}/{cin}->{cout}/s{stride}/{size}px/{name}");
                g.bench_with_input(BenchmarkId::from_parameter(id), &x, |bch, x| {
                    bch.iter(|| net.run(x.view()).unwrap())
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
