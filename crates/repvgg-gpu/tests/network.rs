//! Networks built through `NetworkBuilder` against the same computation composed on the CPU with
//! `repvgg-math`; batch splitting; buffer reuse; every error path.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

mod common;

use std::collections::BTreeMap;

use common::{Rng, assert_close};
use ndarray::{Array1, Array2, Array4, ArrayD, Axis, Ix2, Ix4};
use repvgg_gpu::{
    Activation, Candidate, ChoiceSource, ConvKernel, DirectConv, Epilogue, GpuContext, GpuError,
    GpuNetwork, Kept, NetworkBuilder, NetworkCheck, Precision, TensorId, Tile, test_context,
};
use repvgg_math::{ConvSpec, ops as cpu};

/// One conv with its folded BN (scale, bias), as the model crate would hand it over.
struct Conv {
    spec: ConvSpec,
    w: Array4<f32>,
    scale: Vec<f32>,
    bias: Vec<f32>,
}

impl Conv {
    fn new(rng: &mut Rng, cin: usize, cout: usize, k: usize, stride: usize, groups: usize) -> Self {
        let spec = ConvSpec::new(cin, cout, k, stride, k / 2, groups).expect("spec");
        // Weights scaled by 1/sqrt(fan-in) keep activations O(1) through the layers.
        let fan_in = (cin / groups * k * k) as f32;
        let w = rng.array4(spec.weight_shape()).mapv(|v| v / fan_in.sqrt());
        Self {
            spec,
            w,
            scale: rng.vec_in(cout, 0.5, 1.5),
            bias: rng.vec_in(cout, -0.2, 0.2),
        }
    }

    fn gpu(
        &self,
        b: &mut NetworkBuilder,
        x: TensorId,
        residual: Option<TensorId>,
        relu: bool,
    ) -> TensorId {
        let epilogue = Epilogue {
            scale: Some(self.scale.clone()),
            bias: Some(self.bias.clone()),
            residual,
            activation: Activation::relu_if(relu),
        };
        b.conv(x, self.w.view(), self.spec, epilogue).expect("conv")
    }

    /// The same in f64.
    fn cpu(&self, x: &Array4<f64>) -> Array4<f64> {
        let w = self.w.mapv(f64::from);
        let mut y = cpu::conv2d_reference(x.view(), w.view(), None, &self.spec).expect("conv");
        for (o, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
            let (s, b) = (f64::from(self.scale[o]), f64::from(self.bias[o]));
            plane.mapv_inplace(|v| v * s + b);
        }
        y
    }
}

/// A small network that exercises every layer kind: a RepVGG stem (3x3 and 1x1 branches, each
/// with its BN folded into the epilogue, summed through the residual), a stride-1 multi-branch
/// block with an identity-BN branch (`affine`), a grouped conv, squeeze-excitation, a stride-2
/// conv, pooling and a linear head.
struct Net {
    stem3: Conv,
    stem1: Conv,
    id_scale: Vec<f32>,
    id_shift: Vec<f32>,
    b1: Conv,
    b3: Conv,
    grouped: Conv,
    se: (Array2<f32>, Vec<f32>, Array2<f32>, Vec<f32>),
    down: Conv,
    head: (Array2<f32>, Vec<f32>),
}

impl Net {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let c = 8;
        Self {
            stem3: Conv::new(&mut rng, 3, c, 3, 2, 1),
            stem1: Conv::new(&mut rng, 3, c, 1, 2, 1),
            id_scale: rng.vec_in(c, 0.5, 1.5),
            id_shift: rng.vec_in(c, -0.2, 0.2),
            b1: Conv::new(&mut rng, c, c, 1, 1, 1),
            b3: Conv::new(&mut rng, c, c, 3, 1, 1),
            grouped: Conv::new(&mut rng, c, c, 3, 1, 4),
            se: (
                rng.array2([2, c]),
                rng.vec(2),
                rng.array2([c, 2]),
                rng.vec(c),
            ),
            down: Conv::new(&mut rng, c, 2 * c, 3, 2, 2),
            head: (rng.array2([5, 2 * c]).mapv(|v| v / 4.0), rng.vec(5)),
        }
    }

    fn build(&self, b: &mut NetworkBuilder) -> TensorId {
        let x = b.input(3);
        let s1 = self.stem1.gpu(b, x, None, false);
        let stem = self.stem3.gpu(b, x, Some(s1), true);
        let id = b
            .affine(stem, &self.id_scale, &self.id_shift, None, false)
            .expect("affine");
        let one = self.b1.gpu(b, stem, Some(id), false);
        let block = self.b3.gpu(b, stem, Some(one), true);
        let grouped = self.grouped.gpu(b, block, None, true);
        let (w1, b1, w2, b2) = &self.se;
        let se = common::se(b, grouped, w1.view(), b1, w2.view(), b2, false).expect("se");
        let down = self.down.gpu(b, se, None, true);
        let pooled = b.global_avg_pool(down).expect("gap");
        let logits = b
            .linear(pooled, self.head.0.view(), Some(&self.head.1))
            .expect("linear");
        b.output("logits", logits);
        b.output("block", block);
        x
    }

    fn gpu(&self, ctx: &GpuContext, kernel: ConvKernel) -> GpuNetwork {
        let mut b = NetworkBuilder::new(ctx).kernel(kernel).nan_fill(true);
        self.build(&mut b);
        b.build().expect("build")
    }

    fn cpu(&self, x: &Array4<f32>) -> BTreeMap<String, ArrayD<f32>> {
        let x = x.mapv(f64::from);
        let relu = |a: Array4<f64>| cpu::relu(a.view());
        let add = |a: &Array4<f64>, b: &Array4<f64>| cpu::add(a.view(), b.view()).expect("add");
        let stem = relu(add(&self.stem3.cpu(&x), &self.stem1.cpu(&x)));
        let mut id = stem.clone();
        for (c, mut plane) in id.axis_iter_mut(Axis(1)).enumerate() {
            let (s, t) = (f64::from(self.id_scale[c]), f64::from(self.id_shift[c]));
            plane.mapv_inplace(|v| v * s + t);
        }
        let block = relu(add(&add(&self.b3.cpu(&stem), &self.b1.cpu(&stem)), &id));
        let grouped = relu(self.grouped.cpu(&block));
        let (w1, b1, w2, b2) = &self.se;
        let f64v = |v: &[f32]| Array1::from_iter(v.iter().map(|&a| f64::from(a)));
        let pooled = cpu::global_avg_pool(grouped.view()).expect("gap");
        let hidden = cpu::relu(
            cpu::linear(
                pooled.view(),
                w1.mapv(f64::from).view(),
                Some(f64v(b1).view()),
            )
            .expect("fc1")
            .view(),
        );
        let s = cpu::linear(
            hidden.view(),
            w2.mapv(f64::from).view(),
            Some(f64v(b2).view()),
        )
        .expect("fc2")
        .mapv(|v| 1.0 / (1.0 + (-v).exp()));
        let mut se = grouped.clone();
        for ((n, c, _, _), v) in se.indexed_iter_mut() {
            *v *= s[[n, c]];
        }
        let down = relu(self.down.cpu(&se));
        let pooled = cpu::global_avg_pool(down.view()).expect("gap");
        let logits = cpu::linear(
            pooled.view(),
            self.head.0.mapv(f64::from).view(),
            Some(f64v(&self.head.1).view()),
        )
        .expect("head");
        let mut out = BTreeMap::new();
        out.insert("logits".to_string(), logits.mapv(|v| v as f32).into_dyn());
        out.insert("block".to_string(), block.mapv(|v| v as f32).into_dyn());
        out
    }
}

fn compare(what: &str, got: &BTreeMap<String, ArrayD<f32>>, want: &BTreeMap<String, ArrayD<f32>>) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: output names"
    );
    for (name, w) in want {
        assert_close(&format!("{what}: {name}"), got[name].view(), w.view(), 1e-5);
    }
}

#[test]
fn multi_layer_network_matches_cpu_composition_with_every_kernel() {
    let Some(ctx) = test_context() else { return };
    let net = Net::new(1);
    let x = Rng::new(2).array4([2, 3, 13, 11]);
    let want = net.cpu(&x);
    for kernel in [
        ConvKernel::Auto,
        ConvKernel::Gemm,
        ConvKernel::SplitK,
        ConvKernel::Workgroup,
        ConvKernel::Naive,
        ConvKernel::Winograd,
        ConvKernel::Winograd4,
    ] {
        let gpu = net.gpu(&ctx, kernel);
        let got = gpu.run(x.view()).expect("run");
        assert_eq!(got["logits"].shape(), &[2, 5]);
        assert_eq!(got["block"].shape(), &[2, 8, 7, 6]);
        compare(&format!("{kernel:?}"), &got, &want);
    }
}

/// Every candidate the tuner may choose, and more (every kernel under each Winograd tile),
/// forced on every conv of the network it can run (the rules take the others), each against
/// the f64 oracle with NaN-filled activations.
#[test]
fn every_candidate_forced_matches_the_oracle() {
    let Some(ctx) = test_context() else { return };
    let net = Net::new(5);
    let x = Rng::new(6).array4([2, 3, 13, 11]);
    let want = net.cpu(&x);
    let directs = [
        DirectConv::Subgroup { ch4: 2 },
        DirectConv::Subgroup { ch4: 3 },
        DirectConv::Gemm { split_k: false },
        DirectConv::Gemm { split_k: true },
        DirectConv::Workgroup,
        DirectConv::Naive,
    ];
    let mut all: Vec<Candidate> = directs.iter().map(|&d| Candidate::Direct(d)).collect();
    for tile in [Tile::F2, Tile::F4] {
        for &inner in &directs[..4] {
            all.push(Candidate::Winograd { tile, inner });
        }
    }
    // What the tuner may time for this network's convs is among them.
    let specs = [
        &net.stem3,
        &net.stem1,
        &net.b1,
        &net.b3,
        &net.grouped,
        &net.down,
    ];
    for conv in specs {
        for precision in Precision::ALL {
            for c in Candidate::tuning_set(&ctx, &conv.spec, precision) {
                assert!(all.contains(&c), "{c} is not tested");
            }
        }
    }
    for candidate in all {
        let mut b = NetworkBuilder::new(&ctx)
            .candidate(candidate)
            .nan_fill(true);
        net.build(&mut b);
        let gpu = b.build().expect("build");
        let forced = gpu
            .conv_choices()
            .iter()
            .filter(|c| c.source == ChoiceSource::Forced)
            .inspect(|c| assert_eq!(c.candidate, candidate))
            .count();
        let runs_somewhere = match candidate {
            Candidate::Direct(DirectConv::Subgroup { .. })
            | Candidate::Winograd {
                inner: DirectConv::Subgroup { .. },
                ..
            } => ctx.has_subgroups_of_8(),
            _ => true,
        };
        assert_eq!(forced > 0, runs_somewhere, "{candidate}: {forced} convs");
        assert_eq!(
            gpu.conv_choices().len(),
            8,
            "six convs, the SE block's first linear layer and the head"
        );
        let got = gpu.run(x.view()).expect("run");
        compare(&format!("{candidate}"), &got, &want);
    }
}

#[test]
fn subgroup_kernel_when_available_matches_too() {
    let Some(ctx) = test_context() else { return };
    let net = Net::new(3);
    if !ctx.has_subgroups_of_8() {
        // Not a skip: without subgroups of 8 the kernel must be refused with a typed error.
        let mut b = NetworkBuilder::new(&ctx)
            .kernel(ConvKernel::Subgroup)
            .nan_fill(true);
        net.build(&mut b);
        match b.build().err() {
            Some(GpuError::Unsupported(m)) => {
                assert!(m.contains("subgroups of at least 8"), "{m}");
            }
            other => panic!("expected Unsupported without subgroups of 8, got {other:?}"),
        }
        return;
    }
    let x = Rng::new(4).array4([1, 3, 16, 9]);
    let got = net
        .gpu(&ctx, ConvKernel::Subgroup)
        .run(x.view())
        .expect("run");
    compare("Subgroup", &got, &net.cpu(&x));
}

#[test]
fn a_batch_over_the_binding_limit_is_split_and_gives_the_unsplit_result() {
    let Some(ctx) = test_context() else { return };
    let net = Net::new(5);
    let x = Rng::new(6).array4([5, 3, 12, 12]);
    let whole = net.gpu(&ctx, ConvKernel::Auto);
    // The biggest activation of one image: 8 channels x 6 x 6 floats (stem output).
    let image_bytes = 8 * 6 * 6 * 4;
    let mut b = NetworkBuilder::new(&ctx)
        .max_binding_bytes(2 * image_bytes + 4)
        .nan_fill(true);
    net.build(&mut b);
    let split = b.build().expect("build");
    let (a, s) = (
        whole.run(x.view()).expect("run"),
        split.run(x.view()).expect("split run"),
    );
    for name in ["logits", "block"] {
        assert_eq!(
            a[name], s[name],
            "{name}: split run differs from the unsplit one"
        );
    }
    // The split network only ever holds two images' activations.
    let (peak_whole, peak_split) = (
        whole.peak_activation_bytes(5, 12, 12).expect("peak"),
        split.peak_activation_bytes(5, 12, 12).expect("peak"),
    );
    assert!(
        peak_split * 2 <= peak_whole,
        "split peak {peak_split} vs whole {peak_whole}"
    );
    assert_eq!(
        peak_split,
        split.peak_activation_bytes(2, 12, 12).expect("peak")
    );
    compare("split", &s, &net.cpu(&x));
}

#[test]
fn runs_reuse_buffers_across_shapes_and_threads() {
    let Some(ctx) = test_context() else { return };
    let net = Net::new(7);
    let gpu = net.gpu(&ctx, ConvKernel::Auto);
    let mut rng = Rng::new(8);
    let small = rng.array4([1, 3, 9, 9]);
    let big = rng.array4([3, 3, 14, 10]);
    let first = gpu.run(small.view()).expect("run");
    let other = gpu.run(big.view()).expect("run");
    let again = gpu.run(small.view()).expect("run");
    assert_eq!(first, again, "a cached plan gives the same result");
    compare("second shape", &other, &net.cpu(&big));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| gpu.run(big.view()).expect("threaded run")))
            .collect();
        for h in handles {
            assert_eq!(h.join().expect("thread"), other);
        }
    });
}

#[test]
fn accounting_macs_peak_bytes_and_bench() {
    let Some(ctx) = test_context() else { return };
    let net = Net::new(9);
    let gpu = net.gpu(&ctx, ConvKernel::Auto);
    let (h, w) = (12, 10);
    let (oh, ow) = net.stem3.spec.output_size(h, w).expect("size");
    let (dh, dw) = net.down.spec.output_size(oh, ow).expect("size");
    let want = [
        net.stem3.spec.macs(h, w),
        net.stem1.spec.macs(h, w),
        net.b1.spec.macs(oh, ow),
        net.b3.spec.macs(oh, ow),
        net.grouped.spec.macs(oh, ow),
        net.down.spec.macs(oh, ow),
    ]
    .into_iter()
    .map(|m| m.expect("macs"))
    .sum::<u64>()
        + (2 * 8 + 8 * 2) // SE
        + 16 * 5; // head
    assert_eq!(gpu.macs(h, w).expect("macs"), want);
    let _ = (dh, dw);

    // Buffer reuse: far fewer bytes than one buffer per tensor, at least the biggest tensor.
    let batch = 4;
    let peak = gpu.peak_activation_bytes(batch, h, w).expect("peak");
    let biggest = (batch * 8 * oh * ow * 4) as u64;
    let every_tensor = (batch * 4 * (3 * h * w + 9 * 8 * oh * ow)) as u64;
    assert!(peak >= biggest && peak < every_tensor, "peak {peak}");

    let times = gpu.bench(batch, h, w, 1, 3).expect("bench");
    assert_eq!(times.len(), 3);
    assert!(times.iter().all(|t| !t.is_zero()), "{times:?}");
}

#[test]
fn the_timer_sees_a_slow_kernel_as_slower() {
    // Timestamps (or the wall clock) must wait for the work: the naive kernel on the same conv
    // has to take clearly longer than the tiled one.
    let Some(ctx) = test_context() else { return };
    let spec = ConvSpec::conv3x3(32, 64, 1, 1).expect("spec");
    let w = Rng::new(10).array4(spec.weight_shape());
    let time = |kernel| {
        let mut b = NetworkBuilder::new(&ctx).kernel(kernel);
        let x = b.input(32);
        let y = b
            .conv(x, w.view(), spec, Epilogue::default())
            .expect("conv");
        b.output("y", y);
        let net = b.build().expect("build");
        let mut t = net.bench(1, 24, 24, 1, 3).expect("bench");
        t.sort();
        t[1]
    };
    let (fast, slow) = (time(ConvKernel::Auto), time(ConvKernel::Naive));
    assert!(slow > fast, "naive {slow:?} vs tiled {fast:?}");
}

/// Threads that share one device each poll it, and a poll may run another thread's read-back
/// callbacks: every run still gets its own result, none an error.
#[test]
fn concurrent_read_backs_on_one_device_all_arrive() {
    let Some(ctx) = test_context() else { return };
    let x = Array4::from_elem([1, 3, 5, 4], 1.0f32);
    let want = tiny_net(&ctx, 1)
        .build()
        .expect("build")
        .run(x.view())
        .expect("run");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                // A network per thread: runs of one network take turns, of several do not.
                let net = tiny_net(&ctx, 1).build().expect("build");
                let (x, want) = (&x, &want);
                s.spawn(move || {
                    for i in 0..60 {
                        let got = net.run(x.view()).unwrap_or_else(|e| panic!("run {i}: {e}"));
                        assert_eq!(&got, want, "run {i}");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
    });
}

fn tiny_net(ctx: &GpuContext, pad: usize) -> NetworkBuilder {
    let mut b = NetworkBuilder::new(ctx);
    let x = b.input(3);
    let spec = ConvSpec::new(3, 4, 3, 1, pad, 1).expect("spec");
    let w = Array4::from_elem(spec.weight_shape(), 0.1f32);
    let y = b
        .conv(x, w.view(), spec, Epilogue::default())
        .expect("conv");
    b.output("y", y);
    b
}

#[test]
fn inputs_the_network_cannot_take_are_typed_errors() {
    let Some(ctx) = test_context() else { return };
    let net = tiny_net(&ctx, 0).build().expect("build");
    let shape_err = |r: Result<BTreeMap<String, ArrayD<f32>>, GpuError>, what: &str| match r {
        Err(GpuError::Shape { .. }) => {}
        other => panic!("{what}: expected GpuError::Shape, got {other:?}"),
    };
    shape_err(
        net.run(Array4::zeros((1, 4, 8, 8)).view()),
        "wrong channels",
    );
    shape_err(
        net.run(Array4::zeros((1, 3, 2, 8)).view()),
        "too small for a 3x3 conv without padding",
    );
    shape_err(net.run(Array4::zeros((0, 3, 8, 8)).view()), "empty batch");
    shape_err(net.run(Array4::zeros((1, 3, 0, 8)).view()), "empty image");
    assert!(matches!(
        net.bench(1, 3, 2, 0, 1),
        Err(GpuError::Shape { .. })
    ));
    assert!(matches!(net.macs(2, 2), Err(GpuError::Shape { .. })));
    // Still usable afterwards.
    let y = net
        .run(Array4::from_elem((1, 3, 4, 4), 1.0).view())
        .expect("run");
    assert_eq!(y["y"].shape(), &[1, 4, 2, 2]);
    assert!(y["y"].iter().all(|v| (v - 2.7).abs() < 1e-5));
}

#[test]
fn one_image_bigger_than_the_binding_limit_is_batch_too_large() {
    let Some(ctx) = test_context() else { return };
    let net = tiny_net(&ctx, 1)
        .max_binding_bytes(1024)
        .build()
        .expect("build");
    // 4 channels x 16 x 16 floats = 4 KiB per image > 1 KiB.
    match net.run(Array4::zeros((2, 3, 16, 16)).view()) {
        Err(GpuError::BatchTooLarge {
            image_bytes, limit, ..
        }) => assert_eq!((image_bytes, limit), (4096, 1024)),
        other => panic!("expected BatchTooLarge, got {other:?}"),
    }
    assert!(matches!(
        net.peak_activation_bytes(1, 16, 16),
        Err(GpuError::BatchTooLarge { .. })
    ));
    // Small images still run, one per chunk.
    let y = net
        .run(Array4::from_elem((3, 3, 8, 8), 1.0).view())
        .expect("run");
    assert_eq!(y["y"].shape(), &[3, 4, 8, 8]);
}

#[test]
fn builder_misuse_is_a_typed_error() {
    let Some(ctx) = test_context() else { return };
    let mut b = NetworkBuilder::new(&ctx);
    let x = b.input(3);
    let spec = ConvSpec::conv3x3(3, 4, 1, 1).expect("spec");
    let w = Array4::zeros(spec.weight_shape());
    let bad_w = Array4::zeros((4, 3, 1, 1));
    assert!(matches!(
        b.conv(x, bad_w.view(), spec, Epilogue::default()),
        Err(GpuError::Math(_))
    ));
    assert!(matches!(
        b.conv(x, w.view(), spec, Epilogue::bias(vec![0.0; 3])),
        Err(GpuError::Shape { .. })
    ));
    let wrong_in = ConvSpec::conv3x3(5, 4, 1, 1).expect("spec");
    assert!(matches!(
        b.conv(
            x,
            Array4::zeros(wrong_in.weight_shape()).view(),
            wrong_in,
            Epilogue::default()
        ),
        Err(GpuError::Shape { .. })
    ));
    assert!(matches!(
        b.affine(x, &[1.0; 2], &[0.0; 3], None, false),
        Err(GpuError::Shape { .. })
    ));
    let pooled = b.global_avg_pool(x).expect("gap");
    let four = b
        .linear(pooled, Array2::zeros((4, 3)).view(), None)
        .expect("linear");
    assert!(matches!(
        b.channel_scale(x, four, false),
        Err(GpuError::Shape { .. })
    ));
    assert!(matches!(
        b.linear(x, Array2::zeros((2, 3)).view(), Some(&[0.0; 3])),
        Err(GpuError::Shape { .. })
    ));
    let mut other = NetworkBuilder::new(&ctx);
    let foreign = other.input(3);
    assert!(matches!(
        b.global_avg_pool(foreign),
        Err(GpuError::UnknownTensor(_))
    ));

    // No outputs; an output from another builder; two inputs.
    assert!(matches!(b.build(), Err(GpuError::InvalidNetwork(_))));
    let mut b = NetworkBuilder::new(&ctx);
    let x = b.input(3);
    b.output("x", x);
    b.output("foreign", foreign);
    assert!(matches!(b.build(), Err(GpuError::UnknownTensor(_))));
    let mut two = NetworkBuilder::new(&ctx);
    let a = two.input(3);
    two.input(3);
    two.output("a", a);
    assert!(matches!(two.build(), Err(GpuError::InvalidNetwork(_))));

    // A 5x5 kernel cannot use the subgroup kernel.
    let mut sg = NetworkBuilder::new(&ctx).kernel(ConvKernel::Subgroup);
    let x = sg.input(3);
    let spec5 = ConvSpec::new(3, 4, 5, 1, 2, 1).expect("spec");
    let y = sg
        .conv(
            x,
            Array4::zeros(spec5.weight_shape()).view(),
            spec5,
            Epilogue::default(),
        )
        .expect("conv");
    sg.output("y", y);
    assert!(matches!(sg.build(), Err(GpuError::Unsupported(_))));
}

#[test]
fn mismatches_only_visible_at_run_time_are_shape_errors() {
    let Some(ctx) = test_context() else { return };
    // A residual taken before a stride-2 conv: channels agree, spatial size does not.
    let mut b = NetworkBuilder::new(&ctx);
    let x = b.input(4);
    let spec = ConvSpec::conv3x3(4, 4, 2, 1).expect("spec");
    let w = Array4::zeros(spec.weight_shape());
    let y = b
        .conv(
            x,
            w.view(),
            spec,
            Epilogue {
                residual: Some(x),
                ..Epilogue::default()
            },
        )
        .expect("conv");
    b.output("y", y);
    let net = b.build().expect("build");
    assert!(matches!(
        net.run(Array4::zeros((1, 4, 8, 8)).view()),
        Err(GpuError::Shape { .. })
    ));

    // A linear layer on an unpooled input: in = C * H * W only for one input size.
    let mut b = NetworkBuilder::new(&ctx);
    let x = b.input(2);
    let y = b
        .linear(x, Array2::zeros((3, 2 * 4 * 4)).view(), None)
        .expect("linear");
    b.output("y", y);
    let net = b.build().expect("build");
    let out = net
        .run(Array4::from_elem((2, 2, 4, 4), 1.0).view())
        .expect("4x4");
    assert_eq!(
        out["y"]
            .clone()
            .into_dimensionality::<Ix2>()
            .expect("2-D")
            .dim(),
        (2, 3)
    );
    assert!(matches!(
        net.run(Array4::zeros((1, 2, 5, 4)).view()),
        Err(GpuError::Shape { .. })
    ));
}

#[test]
fn a_lost_device_is_a_typed_error() {
    if test_context().is_none() {
        return;
    }
    // A device of its own: the shared one must survive this test.
    let ctx = GpuContext::new().expect("a second device on the same adapter");
    let net = tiny_net(&ctx, 1).build().expect("build");
    let x = Array4::from_elem((1, 3, 4, 4), 1.0f32);
    let before = net.run(x.view()).expect("run");
    assert_eq!(
        before["y"]
            .clone()
            .into_dimensionality::<Ix4>()
            .expect("4-D")
            .dim(),
        (1, 4, 4, 4)
    );
    ctx.device().destroy();
    match net.run(x.view()) {
        Err(GpuError::DeviceLost(_) | GpuError::Validation { .. }) => {}
        other => panic!("expected DeviceLost, got {other:?}"),
    }
}

#[test]
fn context_describes_its_adapter() {
    let Some(ctx) = test_context() else { return };
    let info = ctx.info();
    assert!(
        ["vulkan", "metal", "dx12"].contains(&info.backend.as_str()),
        "{info}"
    );
    assert!(info.max_storage_buffer_binding_size > 0);
    let text = info.to_string();
    assert!(
        text.contains(&info.name) && text.contains("backend"),
        "{text}"
    );
}

/// Runs this test binary again with an environment that leaves no adapter.
fn child_with_env(test: &str, vars: &[(&str, &str)]) {
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([test, "--exact", "--nocapture", "--include-ignored"])
        .env("REPVGG_GPU_CHILD", "1")
        .env_remove("REPVGG_REQUIRE_GPU")
        .envs(vars.iter().copied())
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "child {test} with {vars:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn no_adapter_is_a_typed_error_that_says_how_to_get_one() {
    if std::env::var("REPVGG_GPU_CHILD").is_ok() {
        match GpuContext::new() {
            Err(e @ GpuError::NoAdapter { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("mesa-vulkan-drivers"), "{msg}");
                // test_context skips (prints a reason) when the requirement is off.
                assert!(test_context().is_none());
            }
            other => panic!("expected NoAdapter, got {other:?}"),
        }
        return;
    }
    let me = "no_adapter_is_a_typed_error_that_says_how_to_get_one";
    child_with_env(me, &[("WGPU_ADAPTER_NAME", "no such adapter, surely")]);
    child_with_env(me, &[("WGPU_BACKEND", "gl")]);
}

#[test]
fn require_gpu_makes_a_missing_adapter_fatal() {
    if std::env::var("REPVGG_GPU_CHILD").is_ok() {
        assert!(repvgg_gpu::require_gpu_from_env());
        let caught = std::panic::catch_unwind(test_context);
        assert!(
            caught.is_err(),
            "test_context must panic under REPVGG_REQUIRE_GPU=1"
        );
        return;
    }
    child_with_env(
        "require_gpu_makes_a_missing_adapter_fatal",
        &[
            ("WGPU_ADAPTER_NAME", "no such adapter, surely"),
            ("REPVGG_REQUIRE_GPU", "1"),
        ],
    );
}

/// The shared comparison fails on NaN and on infinities (even equal ones on both sides).
#[test]
#[should_panic(expected = "first mismatch")]
fn assert_close_fails_on_nan() {
    let want = ndarray::Array1::from(vec![1.0f32, 2.0]);
    let got = ndarray::Array1::from(vec![1.0f32, f32::NAN]);
    assert_close("nan", got.view(), want.view(), 1e30);
}

#[test]
#[should_panic(expected = "first mismatch")]
fn assert_close_fails_on_equal_infinities() {
    let both = ndarray::Array1::from(vec![1.0f32, f32::INFINITY]);
    assert_close("inf", both.view(), both.view(), 1e30);
}

/// A linear layer on pooled features (no activation, or a ReLU) runs as a 1x1 conv on the
/// conv kernels, with every kernel; its output stays `[N, out]`, and a sigmoid stays on the
/// linear kernel. Checked against the CPU composition, batch 3 (the conv tiles over images).
#[test]
fn linear_on_pooled_features_runs_as_a_conv() {
    let Some(ctx) = test_context() else { return };
    let mut rng = Rng::new(41);
    let x = rng.array4([3, 37, 5, 6]);
    let (w1, b1) = (rng.array2([29, 37]), rng.array1(29));
    let (w2, b2) = (rng.array2([37, 29]), rng.array1(37));
    let (w3, b3) = (rng.array2([11, 29]), rng.array1(11));
    let pooled = x.mean_axis(Axis(3)).unwrap().mean_axis(Axis(2)).unwrap();
    let hidden = cpu::linear(pooled.view(), w1.view(), Some(b1.view()))
        .unwrap()
        .mapv(|v| v.max(0.0));
    let gate = cpu::linear(hidden.view(), w2.view(), Some(b2.view()))
        .unwrap()
        .mapv(|v| 1.0 / (1.0 + (-v).exp()));
    let logits = cpu::linear(hidden.view(), w3.view(), Some(b3.view())).unwrap();
    for kernel in ConvKernel::ALL {
        if kernel == ConvKernel::Subgroup && !ctx.has_subgroups_of_8() {
            continue;
        }
        let mut b = NetworkBuilder::new(&ctx).kernel(kernel).nan_fill(true);
        let t = b.input(37);
        let p = b.global_avg_pool(t).expect("gap");
        let h = b
            .linear_act(p, w1.view(), b1.as_slice(), Activation::Relu)
            .expect("fc1");
        let g = b
            .linear_act(h, w2.view(), b2.as_slice(), Activation::Sigmoid)
            .expect("fc2");
        // The head's weight as a transposed (column-major) view: reshaped to a conv weight.
        let w3t = w3.t().to_owned();
        let l = b.linear(h, w3t.t(), b3.as_slice()).expect("head");
        b.output("gate", g);
        b.output("logits", l);
        let net = b.build().expect("build");
        let out = net.run(x.view()).expect("run");
        let got = |k: &str| {
            out[k]
                .clone()
                .into_dimensionality::<Ix2>()
                .expect("[N, out]")
        };
        assert_close(
            &format!("{kernel:?} gate"),
            got("gate").view(),
            gate.view(),
            1e-5,
        );
        assert_close(
            &format!("{kernel:?} logits"),
            got("logits").view(),
            logits.view(),
            1e-5,
        );
        if ctx.has_timestamps() {
            let kinds: Vec<String> = net
                .profile(3, 5, 6, 0, 1)
                .expect("profile")
                .into_iter()
                .map(|l| l.kernel)
                .collect();
            assert_eq!(kinds.len(), 4, "{kinds:?}");
            assert!(
                kinds[1].starts_with("conv") && kinds[3].starts_with("conv"),
                "{kinds:?}"
            );
            assert_eq!(kinds[2], "linear", "{kinds:?}");
        }
    }
}

/// Three F(4x4) Winograd convs in a row on maps of 4 x 4 tiles: where a map goes only to the
/// next conv, its output transform and the next input transform run as one dispatch (the map
/// never stored). A map that is also an output, or that a later layer adds as a residual, is
/// stored as usual. Every case against the f64 CPU composition, on edge sizes 13 to 16 (13x13:
/// planes not whole vec4s, so never chained).
#[test]
fn winograd4_convs_in_a_row_chain_their_transforms() {
    let Some(ctx) = test_context() else { return };
    let mut rng = Rng::new(11);
    let c = 8;
    let convs: Vec<Conv> = (0..3).map(|_| Conv::new(&mut rng, c, c, 3, 1, 1)).collect();
    let relu = |a: Array4<f64>| cpu::relu(a.view());
    for (h, w) in [(14, 14), (13, 16), (16, 13), (16, 16), (16, 15), (13, 13)] {
        let x = rng.array4([2, c, h, w]);
        let x64 = x.mapv(f64::from);
        let y1 = relu(convs[0].cpu(&x64));
        let y2 = relu(convs[1].cpu(&y1));
        let y3 = convs[2].cpu(&y2);
        let y3_res = cpu::add(y3.view(), y2.view()).expect("add");
        // (the map after the first conv is an output, the second map is a residual)
        for (mid_out, residual) in [(false, false), (true, false), (false, true)] {
            let mut b = NetworkBuilder::new(&ctx)
                .kernel(ConvKernel::Winograd4)
                .nan_fill(true);
            let xi = b.input(c);
            let t1 = convs[0].gpu(&mut b, xi, None, true);
            let t2 = convs[1].gpu(&mut b, t1, None, true);
            let t3 = convs[2].gpu(&mut b, t2, residual.then_some(t2), false);
            b.output("y", t3);
            let mut want = BTreeMap::new();
            let y = if residual { &y3_res } else { &y3 };
            want.insert("y".to_string(), y.mapv(|v| v as f32).into_dyn());
            if mid_out {
                b.output("mid", t1);
                want.insert("mid".to_string(), y1.mapv(|v| v as f32).into_dyn());
            }
            let net = b.build().expect("build");
            let case = format!("{h}x{w}, mid output {mid_out}, residual {residual}");
            compare(&case, &net.run(x.view()).expect("run"), &want);
            // Which transforms ran chained: between convs 1 and 2 unless the map is an
            // output, between 2 and 3 unless it is a residual; never on 13x13.
            let chains = net
                .profile(2, h, w, 0, 1)
                .expect("profile")
                .iter()
                .filter(|l| l.kernel.contains("+ next input"))
                .count();
            let expected = if (h * w) % 4 != 0 {
                0
            } else {
                usize::from(!mid_out) + usize::from(!residual)
            };
            assert_eq!(chains, expected, "{case}: chained pairs");
        }
    }
}

/// Tuning times the candidates of each distinct conv shape, keeps the choices in the cache
/// directory of the context, and a second build takes them from there (with the verdict of
/// the network-level check, where it ran); the tuned network still matches the oracle. Without a budget nothing is timed and the rules choose; without
/// a workload, or with tuning off, the rules choose and no report is made.
#[test]
fn tuning_times_once_then_reuses_the_cache() {
    let Some(shared) = test_context() else { return };
    if !shared.has_timestamps() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let options = repvgg_gpu::ContextOptions {
        pipeline_cache_dir: Some(dir.path().to_path_buf()),
        ..repvgg_gpu::ContextOptions::default()
    };
    let ctx = GpuContext::with_options(&options).expect("context");
    // Two convs of distinct shapes: a stride-2 stem and a 3x3 stride-1 conv Winograd applies to.
    let mut rng = Rng::new(7);
    let (stem, conv) = (
        Conv::new(&mut rng, 3, 8, 3, 2, 1),
        Conv::new(&mut rng, 8, 8, 3, 1, 1),
    );
    let x = Rng::new(8).array4([2, 3, 13, 11]);
    let want = {
        let relu = |a: Array4<f64>| cpu::relu(a.view());
        let y = relu(conv.cpu(&relu(stem.cpu(&x.mapv(f64::from)))));
        BTreeMap::from([("y".to_string(), y.mapv(|v| v as f32).into_dyn())])
    };
    let graph = |b: &mut NetworkBuilder| {
        let input = b.input(3);
        let s = stem.gpu(b, input, None, true);
        let y = conv.gpu(b, s, None, true);
        b.output("y", y);
    };
    let build = |tuning, budget| {
        let mut b = NetworkBuilder::new(&ctx)
            .tuning(tuning)
            .tuning_budget(budget)
            .tune_for(2, 13, 11)
            .nan_fill(true);
        graph(&mut b);
        b.build().expect("build")
    };
    let long = std::time::Duration::from_secs(600);
    let first = build(repvgg_gpu::Tuning::Force, long);
    let report = first.tuning_report().expect("a report").clone();
    assert_eq!((report.cached, report.untuned), (0, 0), "{report}");
    assert_eq!(report.tuned.len(), 2, "{report}");
    for shape in &report.tuned {
        assert!(!shape.times.is_empty(), "{}", shape.key);
        assert!(shape.times.iter().any(|(c, _)| *c == shape.chosen));
    }
    let file = report.cache_file.clone().expect("a cache file");
    assert!(
        file.starts_with(dir.path()) && file.exists(),
        "{}",
        file.display()
    );
    // The tuned choices, unless the network-level check kept the rules' (then every conv's).
    let rules_kept = matches!(
        report.network,
        NetworkCheck::Measured {
            kept: Kept::Rules,
            ..
        }
    );
    let source = if rules_kept {
        ChoiceSource::Rules
    } else {
        ChoiceSource::Tuned
    };
    assert!(
        first.conv_choices().iter().all(|c| c.source == source),
        "{report}"
    );
    compare("tuned", &first.run(x.view()).expect("run"), &want);
    let second = build(repvgg_gpu::Tuning::Cached, long);
    let again = second.tuning_report().expect("a report");
    assert_eq!((again.cached, again.tuned.len()), (2, 0), "{again}");
    // The check's verdict comes from the cache (where it ran: not where every tuned choice
    // is the rules' one).
    match report.network {
        NetworkCheck::Measured { kept, .. } => {
            assert_eq!(again.network, NetworkCheck::Cached(kept), "{again}")
        }
        _ => assert_eq!(again.network, report.network, "{again}"),
    }
    let chosen = |n: &GpuNetwork| {
        n.conv_choices()
            .iter()
            .map(|c| c.candidate)
            .collect::<Vec<_>>()
    };
    assert_eq!(chosen(&second), chosen(&first));
    let source = if rules_kept {
        ChoiceSource::Rules
    } else {
        ChoiceSource::Cache
    };
    assert!(second.conv_choices().iter().all(|c| c.source == source));
    // No budget: nothing timed, the rules choose.
    let none = build(repvgg_gpu::Tuning::Force, std::time::Duration::ZERO);
    let r = none.tuning_report().expect("a report");
    assert_eq!((r.tuned.len(), r.untuned), (0, 2), "{r}");
    assert!(
        none.conv_choices()
            .iter()
            .all(|c| c.source == ChoiceSource::Rules)
    );
    let off = build(repvgg_gpu::Tuning::Off, long);
    assert!(
        off.conv_choices()
            .iter()
            .all(|c| c.source == ChoiceSource::Rules)
    );
    let mut b = NetworkBuilder::new(&ctx);
    graph(&mut b);
    assert!(b.build().expect("build").tuning_report().is_none());
}
