//! f16 storage (`Precision::F16`): every kernel with an f16 form against the f64 oracle on random
//! and A0-like shapes, outputs NaN-filled beforehand; the typed errors for f32-only kernels and
//! for devices without `SHADER_F16`.
//!
//! Tolerance. With inputs and weights rounded to f16 (unit roundoff u = 2^-11) and f32
//! accumulation, an output `y = s * sum x w + b (+ r)` is off by at most
//! `2u * |s| * sum |x| |w|` (both factors rounded) `+ u * |r|` (the residual was stored in f16)
//! `+ u * |y|` (the store rounds), plus f32 rounding. The checks allow
//! `3u * magnitude + 2u * |want| + 1e-6` where `magnitude = |s| * sum |x| |w| + |r|`: 1.5x the
//! bound. Winograd also stores its transformed input `V` and the products `M` in f16; those
//! roundings reach the output through `A^T M A` (up to 9 terms) and are bounded by
//! `WINOGRAD_FACTOR` times the direct bound (see there).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

mod common;

use common::Rng;
use ndarray::{Array, Array2, Array4, ArrayD, ArrayView, Axis, Dimension, Ix2, Ix4};
use proptest::prelude::*;
use repvgg_gpu::{
    Activation, ConvKernel, Epilogue, GpuContext, GpuError, NetworkBuilder, Precision, TensorId,
    test_context, wgpu,
};
use repvgg_math::winograd::Tile;
use repvgg_math::{ConvSpec, ops as cpu};

/// f16's unit roundoff.
const U: f64 = 1.0 / 2048.0;
/// Winograd F(2x2, 3x3) in f16 vs the direct bound: V = B^T d B sums 4 inputs, U = G g G^T
/// sums up to 9 weights with coefficients <= 1/4..1, and Y = A^T M A sums 9 products, so each
/// rounding is amplified by at most ~4 relative to sum |x| |w| (measured worst on the random
/// and A0 cases here: below 1.5x the direct bound); 4 leaves room.
const WINOGRAD_FACTOR: f64 = 4.0;
/// Winograd F(4x4, 3x3) in f16 (forced only: the main path keeps f16 direct): Bᵀ's rows sum
/// up to 10 in absolute value per dimension, so V's roundings reach up to ~100 x max |d|, and
/// Aᵀ's up to 18; measured worst 6x the direct bound on the random cases here (3.8x on A0's
/// shapes), 16 leaves room.
const WINOGRAD4_FACTOR: f64 = 16.0;

/// The shared test device if it has `SHADER_F16`. Without it, f16 must be refused with the
/// typed error (asserted here), and the f16 kernel tests have nothing to run.
fn f16_ctx() -> Option<GpuContext> {
    let ctx = test_context()?;
    if ctx.has_f16() {
        return Some(ctx);
    }
    let err = f16_network(&ctx).expect_err("f16 without SHADER_F16 must fail");
    assert!(matches!(err, GpuError::F16Unavailable { .. }), "{err}");
    eprintln!("{}: no SHADER_F16, f16 refused as expected", ctx.describe());
    None
}

/// A one-conv f16 network on `ctx`.
fn f16_network(ctx: &GpuContext) -> repvgg_gpu::Result<repvgg_gpu::GpuNetwork> {
    let spec = ConvSpec::conv3x3(3, 4, 1, 1)?;
    let w = Array4::from_elem(spec.weight_shape(), 0.5f32);
    let mut b = NetworkBuilder::new(ctx).precision(Precision::F16);
    let x = b.input(3);
    let y = b.conv(x, w.view(), spec, Epilogue::default())?;
    b.output("y", y);
    b.build()
}

/// Runs a one-layer f16 network (NaN-filled activations) on `x`.
fn run_f16(
    ctx: &GpuContext,
    x: &Array4<f32>,
    kernel: ConvKernel,
    layer: impl FnOnce(&mut NetworkBuilder, TensorId) -> repvgg_gpu::Result<TensorId>,
) -> ArrayD<f32> {
    let mut b = NetworkBuilder::new(ctx)
        .kernel(kernel)
        .precision(Precision::F16)
        .nan_fill(true);
    let input = b.input(x.shape()[1]);
    let y = layer(&mut b, input).expect("layer");
    b.output("y", y);
    let net = b.build().expect("build");
    assert_eq!(net.precision(), Precision::F16);
    net.run(x.view()).expect("run").remove("y").expect("output")
}

/// `|got - want| <= factor * 3u * magnitude + 2u * |want| + 1e-6` everywhere, no NaN; returns
/// the worst error relative to that bound's first two terms.
fn assert_f16_close<D: Dimension>(
    what: &str,
    got: ArrayView<'_, f32, D>,
    want: ArrayView<'_, f64, D>,
    magnitude: ArrayView<'_, f64, D>,
    factor: f64,
) -> f64 {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    let mut worst = 0.0f64;
    for (((idx, &g), &w), &m) in got.indexed_iter().zip(want.iter()).zip(magnitude.iter()) {
        let g = f64::from(g);
        let bound = factor * 3.0 * U * m + 2.0 * U * w.abs();
        let err = (g - w).abs();
        assert!(
            g.is_finite() && err <= bound + 1e-6,
            "{what}: at {idx:?} got {g}, want {w}, |err| {err:.3e} > bound {bound:.3e}"
        );
        worst = worst.max(err / (bound / factor).max(1e-30));
    }
    worst
}

/// `sum x w` and `sum |x| |w|` in f64, a direct loop over contiguous output rows (the
/// `repvgg-math` reference is ~100x slower on A0's shapes; checked against it below).
fn conv_f64(x: &Array4<f32>, w: &Array4<f32>, spec: &ConvSpec) -> (Array4<f64>, Array4<f64>) {
    let (n, cin, h, wd) = x.dim();
    let (cout, g, ks, s, p) = (
        spec.out_channels,
        spec.groups,
        spec.kernel_size,
        spec.stride,
        spec.padding,
    );
    let (cin_g, cout_g) = (cin / g, cout / g);
    let oh = (h + 2 * p - ks) / s + 1;
    let ow = (wd + 2 * p - ks) / s + 1;
    let xs = x.as_standard_layout();
    let xv = xs.as_slice().expect("contiguous");
    let ws = w.as_standard_layout();
    let wv = ws.as_slice().expect("contiguous");
    let mut y = vec![0.0f64; n * cout * oh * ow];
    let mut m = vec![0.0f64; n * cout * oh * ow];
    for b in 0..n {
        for o in 0..cout {
            let out = (b * cout + o) * oh * ow;
            for ci in 0..cin_g {
                let plane = &xv[(b * cin + (o / cout_g) * cin_g + ci) * h * wd..][..h * wd];
                for ky in 0..ks {
                    for kx in 0..ks {
                        let wk = f64::from(wv[((o * cin_g + ci) * ks + ky) * ks + kx]);
                        for oy in 0..oh {
                            let Some(iy) = (oy * s + ky).checked_sub(p).filter(|&iy| iy < h) else {
                                continue;
                            };
                            for ox in 0..ow {
                                let Some(ix) = (ox * s + kx).checked_sub(p).filter(|&ix| ix < wd)
                                else {
                                    continue;
                                };
                                let xk = f64::from(plane[iy * wd + ix]);
                                y[out + oy * ow + ox] += wk * xk;
                                m[out + oy * ow + ox] += (wk * xk).abs();
                            }
                        }
                    }
                }
            }
        }
    }
    let shape = (n, cout, oh, ow);
    (
        Array4::from_shape_vec(shape, y).expect("shape"),
        Array4::from_shape_vec(shape, m).expect("shape"),
    )
}

/// The f64 oracle of a conv with its epilogue, and the magnitude `|s| * sum |x| |w| + |r|`.
fn conv_oracle(
    x: &Array4<f32>,
    w: &Array4<f32>,
    spec: &ConvSpec,
    ep: &Epilogue,
    residual: Option<&Array4<f32>>,
) -> (Array4<f64>, Array4<f64>) {
    let (mut y, mut m) = conv_f64(x, w, spec);
    for (o, (mut yp, mut mp)) in y
        .axis_iter_mut(Axis(1))
        .zip(m.axis_iter_mut(Axis(1)))
        .enumerate()
    {
        let s = ep.scale.as_ref().map_or(1.0, |s| f64::from(s[o]));
        let b = ep.bias.as_ref().map_or(0.0, |b| f64::from(b[o]));
        yp.mapv_inplace(|v| v * s + b);
        mp.mapv_inplace(|v| v * s.abs());
    }
    if let Some(r) = residual {
        y.zip_mut_with(r, |v, &r| *v += f64::from(r));
        m.zip_mut_with(r, |v, &r| *v += f64::from(r).abs());
    }
    if ep.activation == Activation::Relu {
        y.mapv_inplace(|v| v.max(0.0));
    }
    (y, m)
}

/// The fast f64 loop equals the `repvgg-math` reference (groups, stride 2, padding, odd sizes).
#[test]
fn the_f64_loop_matches_the_reference_conv() {
    let mut rng = Rng::new(3);
    for (spec, hw) in [
        (ConvSpec::new(4, 6, 3, 2, 1, 2).expect("spec"), (7, 6)),
        (ConvSpec::new(3, 5, 1, 1, 0, 1).expect("spec"), (4, 5)),
        (ConvSpec::new(8, 8, 3, 1, 1, 4).expect("spec"), (5, 5)),
    ] {
        let x = rng.array4([2, spec.in_channels, hw.0, hw.1]);
        let w = rng.array4(spec.weight_shape());
        let (y, m) = conv_f64(&x, &w, &spec);
        let x64 = x.mapv(f64::from);
        let w64 = w.mapv(f64::from);
        let want = cpu::conv2d_reference(x64.view(), w64.view(), None, &spec).expect("ref");
        let want_m = cpu::conv2d_reference(
            x64.mapv(f64::abs).view(),
            w64.mapv(f64::abs).view(),
            None,
            &spec,
        )
        .expect("ref");
        assert_eq!(y.dim(), want.dim());
        for ((a, b), (c, d)) in y.iter().zip(&want).zip(m.iter().zip(&want_m)) {
            assert!(
                (a - b).abs() < 1e-12 && (c - d).abs() < 1e-12,
                "{a} {b} {c} {d}"
            );
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    n: usize,
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    ks: usize,
    stride: usize,
    h: usize,
    w: usize,
    relu: bool,
    scale: bool,
    residual: bool,
    seed: u64,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        (
            1usize..=2,
            prop::sample::select(vec![1usize, 2, 4]),
            1usize..=6,
            1usize..=9,
        ),
        (prop::sample::select(vec![1usize, 3]), 1usize..=2),
        (1usize..=11, 1usize..=11),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |((n, groups, cin_g, cout_g), (ks, stride), (h, w), (relu, scale, residual, seed))| {
                Case {
                    n,
                    groups,
                    cin_g,
                    cout_g,
                    ks,
                    stride,
                    h,
                    w,
                    relu,
                    scale,
                    residual,
                    seed,
                }
            },
        )
}

/// One conv case in f16 with `kernel`; returns the worst error relative to the bound. A case
/// with a residual adds the network's input itself (so the conv keeps channels and size).
fn check_conv(ctx: &GpuContext, c: &Case, kernel: ConvKernel) -> f64 {
    let (cout_g, stride) = if c.residual {
        (c.cin_g, 1)
    } else {
        (c.cout_g, c.stride)
    };
    let spec = ConvSpec::new(
        c.cin_g * c.groups,
        cout_g * c.groups,
        c.ks,
        stride,
        c.ks / 2,
        c.groups,
    )
    .expect("valid spec");
    let mut rng = Rng::new(c.seed);
    let x = rng.array4([c.n, spec.in_channels, c.h, c.w]);
    let w = rng.array4(spec.weight_shape());
    let ep = Epilogue {
        scale: c.scale.then(|| rng.vec_in(spec.out_channels, 0.5, 2.0)),
        bias: Some(rng.vec(spec.out_channels)),
        residual: None,
        activation: Activation::relu_if(c.relu),
    };
    let (want, magnitude) = conv_oracle(&x, &w, &spec, &ep, c.residual.then_some(&x));
    let got = run_f16(ctx, &x, kernel, |b, t| {
        let ep = Epilogue {
            residual: c.residual.then_some(t),
            ..ep.clone()
        };
        b.conv(t, w.view(), spec, ep)
    })
    .into_dimensionality::<Ix4>()
    .expect("4-d");
    let factor = match kernel.winograd_tile(ctx, &spec, Precision::F16) {
        Some(Tile::F2) => WINOGRAD_FACTOR,
        Some(Tile::F4) => WINOGRAD4_FACTOR,
        None => 1.0,
    };
    assert_f16_close(
        &format!("f16 {kernel:?} conv {c:?}"),
        got.view(),
        want.view(),
        magnitude.view(),
        factor,
    )
}

fn config(default_cases: u32) -> ProptestConfig {
    common::proptest_config(default_cases, 16)
}

/// The main path (the subgroup kernel on lavapipe, gemm on hardware) in f16.
#[test]
fn f16_tiled_conv_matches_oracle_on_random_shapes() {
    let Some(ctx) = f16_ctx() else { return };
    proptest!(config(8), |(c in cases())| { check_conv(&ctx, &c, ConvKernel::Auto); });
}

#[test]
fn f16_gemm_conv_matches_oracle_on_random_shapes() {
    let Some(ctx) = f16_ctx() else { return };
    proptest!(config(6), |(c in cases())| { check_conv(&ctx, &c, ConvKernel::Gemm); });
}

#[test]
fn f16_split_k_conv_matches_oracle_on_random_shapes() {
    let Some(ctx) = f16_ctx() else { return };
    proptest!(config(5), |(c in cases())| { check_conv(&ctx, &c, ConvKernel::SplitK); });
}

/// F(2x2, 3x3) and F(4x4, 3x3) in f16 on random 3x3 stride-1 convs.
#[test]
fn f16_winograd_convs_match_oracle_on_random_shapes() {
    let Some(ctx) = f16_ctx() else { return };
    proptest!(config(5), |(c in cases())| {
        let c = Case { ks: 3, stride: 1, ..c };
        check_conv(&ctx, &c, ConvKernel::Winograd);
        check_conv(&ctx, &c, ConvKernel::Winograd4);
    });
}

#[test]
fn f16_subgroup_conv_matches_oracle_on_random_shapes_where_available() {
    let Some(ctx) = f16_ctx() else { return };
    if !ctx.has_subgroups_of_8() {
        eprintln!("no subgroups of 8 or more: the subgroup kernel cannot run here");
        return;
    }
    proptest!(config(4), |(c in cases())| { check_conv(&ctx, &c, ConvKernel::Subgroup); });
}

/// A0's stride-1 shapes (48@56, 96 g4@28, 192@14) and its stride-2 / 1x1 ones, batch 1, with
/// the main path and gemm (and Winograd on the 3x3 stride-1 ones).
#[test]
fn f16_a0_layer_shapes() {
    let Some(ctx) = f16_ctx() else { return };
    let case =
        |cin: usize, cout: usize, ks: usize, stride: usize, size: usize, groups: usize| Case {
            n: 1,
            groups,
            cin_g: cin / groups,
            cout_g: cout / groups,
            ks,
            stride,
            h: size,
            w: size,
            relu: true,
            scale: false,
            residual: false,
            seed: (cin * 7 + cout + size) as u64,
        };
    let shapes = [
        case(48, 48, 3, 1, 56, 1),
        case(96, 96, 3, 1, 28, 4),
        case(192, 192, 3, 1, 14, 1),
        case(96, 192, 3, 2, 28, 1),
        case(192, 1280, 1, 2, 14, 1),
    ];
    let mut worst = 0.0f64;
    for c in &shapes {
        for k in [ConvKernel::Auto, ConvKernel::Gemm] {
            worst = worst.max(check_conv(&ctx, c, k));
        }
        if c.ks == 3 && c.stride == 1 {
            let r = check_conv(&ctx, c, ConvKernel::Winograd);
            eprintln!("winograd {c:?}: worst error {r:.3} of the direct bound");
            let r = check_conv(&ctx, c, ConvKernel::Winograd4);
            eprintln!("winograd4 {c:?}: worst error {r:.3} of the direct bound");
        }
    }
    // With a residual (the train form's 1x1 + identity sums) at a real stage width.
    let with_residual = Case {
        residual: true,
        scale: true,
        ..case(96, 96, 3, 1, 28, 4)
    };
    worst = worst.max(check_conv(&ctx, &with_residual, ConvKernel::Auto));
    // Split-K (f32 partial sums, f16 output) with a residual, at the 14x14 stage.
    let split = Case {
        residual: true,
        scale: true,
        ..case(192, 192, 3, 1, 14, 1)
    };
    worst = worst.max(check_conv(&ctx, &split, ConvKernel::SplitK));
    eprintln!("f16 A0 shapes: worst error {worst:.3} of the bound");
    // f32 storage would be ~1e-5 of this bound: f16 must really be in the buffers.
    assert!(
        worst > 1e-3,
        "errors at f32 level ({worst}): is f16 really stored?"
    );
}

fn to_f64<D: Dimension>(a: &Array<f32, D>) -> Array<f64, D> {
    a.mapv(f64::from)
}

/// Affine (with residual), global average pool, linear (every activation) and channel scale
/// in f16, odd element counts included (f16 buffers round up to whole words).
#[test]
fn f16_small_kernels_match_oracle() {
    let Some(ctx) = f16_ctx() else { return };
    let mut rng = Rng::new(21);
    for shape in [[1, 3, 1, 1], [2, 5, 7, 3], [1, 7, 13, 11]] {
        let x = rng.array4(shape);
        let c = shape[1];
        let scale = rng.vec_in(c, 0.5, 2.0);
        let shift = rng.vec(c);
        // Affine with the input as residual, then ReLU.
        let got = run_f16(&ctx, &x, ConvKernel::Auto, |b, t| {
            b.affine(t, &scale, &shift, Some(t), true)
        })
        .into_dimensionality::<Ix4>()
        .expect("4-d");
        let mut want = to_f64(&x);
        let mut mag = want.clone();
        for ((_, ch, _, _), v) in want.indexed_iter_mut() {
            *v = (*v * f64::from(scale[ch]) + f64::from(shift[ch]) + *v).max(0.0);
        }
        for ((_, ch, _, _), v) in mag.indexed_iter_mut() {
            *v = v.abs() * (f64::from(scale[ch]) + 1.0);
        }
        assert_f16_close("f16 affine", got.view(), want.view(), mag.view(), 1.0);

        // Global average pool: mean of values each rounded once.
        let got = run_f16(&ctx, &x, ConvKernel::Auto, |b, t| b.global_avg_pool(t))
            .into_dimensionality::<Ix2>()
            .expect("2-d");
        let want = cpu::global_avg_pool(to_f64(&x).view()).expect("gap");
        let mag = cpu::global_avg_pool(to_f64(&x).mapv(f64::abs).view()).expect("gap");
        assert_f16_close(
            "f16 global avg pool",
            got.view(),
            want.view(),
            mag.view(),
            1.0,
        );

        // Channel scale by the pooled values, with ReLU.
        let got = run_f16(&ctx, &x, ConvKernel::Auto, |b, t| {
            let s = b.global_avg_pool(t)?;
            b.channel_scale(t, s, true)
        })
        .into_dimensionality::<Ix4>()
        .expect("4-d");
        let pooled = cpu::global_avg_pool(to_f64(&x).view()).expect("gap");
        let pooled_mag = cpu::global_avg_pool(to_f64(&x).mapv(f64::abs).view()).expect("gap");
        let mut want = to_f64(&x);
        let mut mag = want.clone();
        for ((n, ch, _, _), v) in want.indexed_iter_mut() {
            *v = (*v * pooled[[n, ch]]).max(0.0);
        }
        // s itself carries the pool's error (bound on |s| * ... through pooled_mag).
        for ((n, ch, _, _), v) in mag.indexed_iter_mut() {
            *v = v.abs() * (pooled[[n, ch]].abs() + pooled_mag[[n, ch]]);
        }
        assert_f16_close(
            "f16 channel scale",
            got.view(),
            want.view(),
            mag.view(),
            1.0,
        );
    }
    // Linear with every activation, an odd number of outputs.
    let (n, fin, fout) = (3, 37, 65);
    let x = rng.array4([n, fin, 1, 1]);
    let w = rng.array2([fout, fin]);
    let bias = rng.vec(fout);
    let x2: Array2<f64> = to_f64(&x).into_shape_with_order((n, fin)).expect("2-d");
    let w64 = to_f64(&w);
    let lin = x2.dot(&w64.t())
        + &ndarray::Array1::from(bias.iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
    let mag = x2.mapv(f64::abs).dot(&w64.mapv(f64::abs).t());
    for act in [Activation::None, Activation::Relu, Activation::Sigmoid] {
        let got = run_f16(&ctx, &x, ConvKernel::Auto, |b, t| {
            b.linear_act(t, w.view(), Some(&bias), act)
        })
        .into_dimensionality::<Ix2>()
        .expect("2-d");
        let want = match act {
            Activation::None => lin.clone(),
            Activation::Relu => lin.mapv(|v| v.max(0.0)),
            _ => lin.mapv(|v| 1.0 / (1.0 + (-v).exp())),
        };
        // The sigmoid's slope is at most 1/4: the pre-activation bound covers it.
        assert_f16_close(
            &format!("f16 linear {act:?}"),
            got.view(),
            want.view(),
            mag.view(),
            1.0,
        );
    }
}

/// f16 storage halves what a batch keeps allocated.
#[test]
fn f16_halves_activation_bytes() {
    let Some(ctx) = f16_ctx() else { return };
    let spec = ConvSpec::conv3x3(3, 8, 1, 1).expect("spec");
    let w = Array4::from_elem(spec.weight_shape(), 0.25f32);
    let bytes = |p: Precision| {
        let mut b = NetworkBuilder::new(&ctx).precision(p);
        let x = b.input(3);
        let y = b
            .conv(x, w.view(), spec, Epilogue::default())
            .expect("conv");
        b.output("y", y);
        b.build()
            .expect("build")
            .peak_activation_bytes(2, 16, 16)
            .expect("bytes")
    };
    assert_eq!(bytes(Precision::F32), 2 * bytes(Precision::F16));
}

/// The baselines exist in f32 only: f16 with them is a typed error naming the kernel.
#[test]
fn f16_with_an_f32_only_kernel_is_a_typed_error() {
    let Some(ctx) = f16_ctx() else { return };
    for (kernel, name) in [
        (ConvKernel::Naive, "naive"),
        (ConvKernel::Workgroup, "workgroup"),
    ] {
        let spec = ConvSpec::conv3x3(3, 4, 1, 1).expect("spec");
        let w = Array4::from_elem(spec.weight_shape(), 0.5f32);
        let mut b = NetworkBuilder::new(&ctx)
            .kernel(kernel)
            .precision(Precision::F16);
        let x = b.input(3);
        let y = b
            .conv(x, w.view(), spec, Epilogue::default())
            .expect("conv");
        b.output("y", y);
        let err = b.build().expect_err("f32-only kernel in f16");
        assert!(
            matches!(err, GpuError::F16Kernel { kernel: k } if k == name),
            "{err}"
        );
        assert!(err.to_string().contains("f16"), "{err}");
    }
}

/// A device created without `SHADER_F16` (on the same adapter) refuses f16 with an error naming
/// the feature and the adapter; f32 still runs on it.
#[test]
fn f16_on_a_device_without_shader_f16_is_a_typed_error() {
    let Some(shared) = test_context() else { return };
    let info = shared.adapter_info().clone();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::from(info.backend),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters =
        pollster::block_on(instance.enumerate_adapters(wgpu::Backends::from(info.backend)));
    let adapter = adapters
        .into_iter()
        .find(|a| a.get_info().name == info.name)
        .expect("the test adapter again");
    let limits = adapter.limits();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("no f16"),
        required_features: wgpu::Features::empty(),
        required_limits: limits.clone(),
        ..Default::default()
    }))
    .expect("device without features");
    let ctx = GpuContext::from_device(device, queue, adapter.get_info(), limits);
    assert!(!ctx.has_f16());
    let err = f16_network(&ctx).expect_err("f16 without SHADER_F16");
    assert!(matches!(err, GpuError::F16Unavailable { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("SHADER_F16") && msg.contains(&info.name),
        "{msg}"
    );
    // f32 is fine on the same device.
    let spec = ConvSpec::conv3x3(3, 4, 1, 1).expect("spec");
    let w = Array4::from_elem(spec.weight_shape(), 0.5f32);
    let mut b = NetworkBuilder::new(&ctx).kernel(ConvKernel::Gemm);
    let x = b.input(3);
    let y = b
        .conv(x, w.view(), spec, Epilogue::default())
        .expect("conv");
    b.output("y", y);
    let out = b
        .build()
        .expect("f32 build")
        .run(Array4::from_elem((1, 3, 4, 4), 1.0f32).view())
        .expect("f32 run");
    assert_eq!(out["y"].shape(), &[1, 4, 4, 4]);
}
