//! The library's entry point timed as a user calls it: `Model` -> `Runner::run`, RepVGG-A0 at
//! 224x224 with random weights, on the CPU engine, each form, batch 1 and 8 (what `repvgg bench
//! --device cpu --arch a0` reports, here under criterion).
//!
//! `cargo bench --bench runner`
#![allow(clippy::unwrap_used, clippy::expect_used)] // benches fail loudly

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::Array4;
use repvgg::model::TrainModel;
use repvgg::{Device, Form, Model, RepVggConfig, RunOptions};

fn a0(c: &mut Criterion) {
    let model = Model::from(TrainModel::random(&RepVggConfig::a0(), 0).unwrap());
    let mut g = c.benchmark_group("a0_cpu");
    g.sample_size(10);
    for form in Form::ALL {
        let opts = RunOptions::default().device(Device::Cpu).form(form);
        let runner = model.runner(opts).unwrap();
        for batch in [1usize, 8] {
            let x = Array4::from_shape_fn((batch, 3, 224, 224), |(n, c, y, x)| {
                ((n + 3 * c + 5 * y + 7 * x) % 17) as f32 / 8.5 - 1.0
            });
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_with_input(BenchmarkId::new(form.name(), batch), &x, |b, x| {
                b.iter(|| runner.run(x.view()).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, a0);
criterion_main!(benches);
