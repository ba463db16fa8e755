//! One 64-channel 56x56 RepVGG block on the CPU: the three-branch training form vs the fused
//! 3x3 conv, batch 1 and 8. Before timing it prints the peak heap bytes of one forward of each.
//!
//! `cargo bench --bench block_cpu`
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly
#![allow(unsafe_code)] // the counting allocator below

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use ndarray::{Array1, Array4};
use repvgg::math::fuse::{ConvBn, RepVggBranches};
use repvgg::math::ops::{self, Activation};
use repvgg::math::{BatchNorm, ConvSpec};

/// Wraps the system allocator and records the peak of live heap bytes.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn block(c: usize, seed: u64) -> RepVggBranches<f32> {
    let mut s = seed;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let mut bn = |c: usize| {
        BatchNorm::new(
            Array1::from_shape_fn(c, |_| 1.0 + next()),
            Array1::from_shape_fn(c, |_| next()),
            Array1::from_shape_fn(c, |_| next()),
            Array1::from_shape_fn(c, |_| 1.5 + next()),
            1e-5,
        )
        .expect("equal lengths")
    };
    let (bn3, bn1, bnid) = (bn(c), bn(c), bn(c));
    let mut next = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
        ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
    };
    RepVggBranches {
        spec: ConvSpec::conv3x3(c, c, 1, 1).expect("valid spec"),
        dense: ConvBn::new(Array4::from_shape_fn((c, c, 3, 3), |_| next()), None, bn3),
        one_by_one: Some(ConvBn::new(
            Array4::from_shape_fn((c, c, 1, 1), |_| next()),
            None,
            bn1,
        )),
        identity: Some(bnid),
    }
}

fn multi_branch(b: &RepVggBranches<f32>, x: &Array4<f32>) -> Array4<f32> {
    let mut y = b.forward(x.view()).expect("valid block");
    ops::relu_inplace(&mut y);
    y
}

fn fused(f: &repvgg::math::FusedConv<f32>, x: &Array4<f32>) -> Array4<f32> {
    ops::conv2d_act(
        x.view(),
        f.weight.view(),
        Some(f.bias.view()),
        &f.spec,
        Activation::Relu,
    )
    .expect("valid conv")
}

fn peak_of(f: impl FnOnce() -> Array4<f32>) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let y = black_box(f());
    let peak = PEAK.load(Ordering::Relaxed) - base;
    drop(y);
    peak
}

fn bench_block(c: &mut Criterion) {
    let (ch, hw) = (64, 56);
    let b = block(ch, 42);
    let f = b.fuse().expect("fusable block");
    let mut group = c.benchmark_group("block_64x56x56");
    group.sample_size(20);
    for batch in [1usize, 8] {
        let x = Array4::from_shape_fn((batch, ch, hw, hw), |(n, c, h, w)| {
            ((n + 3 * c + 5 * h + 7 * w) % 11) as f32 / 11.0 - 0.5
        });
        let flops = 2 * batch as u64 * f.spec.macs(hw, hw).expect("fits");
        group.throughput(Throughput::Elements(flops));
        group.bench_with_input(BenchmarkId::new("multi_branch", batch), &x, |bench, x| {
            bench.iter(|| multi_branch(&b, x))
        });
        group.bench_with_input(BenchmarkId::new("fused", batch), &x, |bench, x| {
            bench.iter(|| fused(&f, x))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_block);

fn main() {
    let b = block(64, 42);
    let f = b.fuse().expect("fusable block");
    for batch in [1usize, 8] {
        let x = Array4::from_elem((batch, 64, 56, 56), 0.25f32);
        let input = x.len() * 4;
        let pm = peak_of(|| multi_branch(&b, &x));
        let pf = peak_of(|| fused(&f, &x));
        println!(
            "peak heap during one forward, batch {batch} (input {input} B not counted): multi-branch {pm} B, fused {pf} B, ratio {:.2}",
            pm as f64 / pf as f64
        );
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
