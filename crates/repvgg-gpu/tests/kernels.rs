//! Every kernel alone against the `repvgg-math` oracle, outputs NaN-filled beforehand.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

mod common;

use common::{Rng, assert_close, assert_close_sum};
use ndarray::{Array1, Array4, Axis};
use proptest::prelude::*;
use repvgg_gpu::{ConvKernel, GpuContext, NetworkBuilder, Precision, ops, test_context};
use repvgg_math::winograd::Tile;
use repvgg_math::{ConvSpec, ops as cpu};

fn ctx() -> Option<GpuContext> {
    test_context()
}

/// The context where the subgroup kernel can run: None (with a message) on adapters without
/// subgroups of 8 or more, and where there is no adapter and CI does not require one.
fn subgroup_ctx() -> Option<GpuContext> {
    let ctx = ctx()?;
    if !ctx.has_subgroups_of_8() {
        eprintln!("no subgroups of 8 or more: the subgroup kernel cannot run here");
        return None;
    }
    Some(ctx)
}

/// The oracle in f64 (so the comparison measures the GPU's error alone), with the epilogue.
fn reference_conv(
    x: &Array4<f32>,
    w: &Array4<f32>,
    spec: &ConvSpec,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    relu: bool,
) -> Array4<f32> {
    let x64 = x.mapv(f64::from);
    let w64 = w.mapv(f64::from);
    let mut y = cpu::conv2d_reference(x64.view(), w64.view(), None, spec).expect("oracle");
    for (o, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
        let s = scale.map_or(1.0, |s| f64::from(s[o]));
        let b = bias.map_or(0.0, |b| f64::from(b[o]));
        plane.mapv_inplace(|v| {
            let v = v * s + b;
            if relu { v.max(0.0) } else { v }
        });
    }
    y.mapv(|v| v as f32)
}

#[derive(Debug, Clone)]
struct Case {
    n: usize,
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    ks: usize,
    stride: usize,
    pad: usize,
    h: usize,
    w: usize,
    relu: bool,
    bias: bool,
    scale: bool,
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
        (
            prop::sample::select(vec![1usize, 3]),
            1usize..=2,
            0usize..=2,
        ),
        (1usize..=11, 1usize..=11),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |((n, groups, cin_g, cout_g), (ks, stride, pad), (h, w), (relu, bias, scale, seed))| {
                Case {
                    n,
                    groups,
                    cin_g,
                    cout_g,
                    ks,
                    stride,
                    pad: pad.min(ks / 2 + 1),
                    h: h.max(ks),
                    w: w.max(ks),
                    relu,
                    bias,
                    scale,
                    seed,
                }
            },
        )
}

fn check_conv(ctx: &GpuContext, c: &Case, kernel: ConvKernel) {
    let spec = ConvSpec::new(
        c.cin_g * c.groups,
        c.cout_g * c.groups,
        c.ks,
        c.stride,
        c.pad,
        c.groups,
    )
    .expect("valid spec");
    let mut rng = Rng::new(c.seed);
    let x = rng.array4([c.n, spec.in_channels, c.h, c.w]);
    let w = rng.array4(spec.weight_shape());
    let bias = c.bias.then(|| rng.vec(spec.out_channels));
    let scale = c.scale.then(|| rng.vec_in(spec.out_channels, 0.5, 2.0));
    let got = ops::conv2d_fused(
        ctx,
        x.view(),
        w.view(),
        &spec,
        scale.as_deref(),
        bias.as_deref(),
        c.relu,
        kernel,
    )
    .expect("GPU conv");
    let want = reference_conv(&x, &w, &spec, scale.as_deref(), bias.as_deref(), c.relu);
    let abs_scale = scale
        .as_ref()
        .map(|s| s.iter().map(|v| v.abs()).collect::<Vec<_>>());
    // F(4x4, 3x3) grows the rounding through its transforms (Bᵀ's rows sum up to 10 in
    // absolute value per dimension, Aᵀ's up to 18): measured up to ~9 f32 epsilons of
    // Σ|x·w| on A0's shapes, allowed 32 (16x the 2 epsilons allowed a direct sum).
    let growth = match kernel.winograd_tile(ctx, &spec, Precision::F32) {
        Some(Tile::F4) => WINOGRAD4_GROWTH,
        _ => 1.0,
    };
    let magnitude = growth
        * reference_conv(
            &x.mapv(f32::abs),
            &w.mapv(f32::abs),
            &spec,
            abs_scale.as_deref(),
            None,
            false,
        );
    assert_close_sum(
        &format!("{kernel:?} conv {c:?}"),
        got.view(),
        want.view(),
        magnitude.view(),
        1e-5,
    );
}

/// How much more rounding than a direct sum Winograd F(4x4, 3x3) is allowed (see check_conv).
const WINOGRAD4_GROWTH: f32 = 16.0;

fn config(default_cases: u32) -> ProptestConfig {
    common::proptest_config(default_cases, 4)
}

#[test]
fn tiled_conv_matches_oracle_on_random_shapes() {
    let Some(ctx) = ctx() else { return };
    proptest!(config(16), |(c in cases())| check_conv(&ctx, &c, ConvKernel::Auto));
}

#[test]
fn naive_conv_matches_oracle_on_random_shapes() {
    let Some(ctx) = ctx() else { return };
    proptest!(config(12), |(c in cases())| check_conv(&ctx, &c, ConvKernel::Naive));
}

#[test]
fn gemm_conv_matches_oracle_on_random_shapes() {
    let Some(ctx) = ctx() else { return };
    proptest!(config(12), |(c in cases())| check_conv(&ctx, &c, ConvKernel::Gemm));
}

/// Split-K forced on every conv: as many K slices as the sum has K tiles (up to 16), so the
/// random shapes run 1 to 4 slices, ragged last slices included.
#[test]
fn split_k_conv_matches_oracle_on_random_shapes() {
    let Some(ctx) = ctx() else { return };
    proptest!(config(10), |(c in cases())| check_conv(&ctx, &c, ConvKernel::SplitK));
}

/// `c` made a 3x3 stride-1 padding-1 conv, the convs Winograd computes.
fn three(c: Case) -> Case {
    Case {
        ks: 3,
        stride: 1,
        pad: 1,
        ..c
    }
}

/// Winograd F(2x2, 3x3) and F(4x4, 3x3) on random 3x3 stride-1 convs: odd and even sizes, 1x1
/// to 11x11 maps (partial tiles of every remainder), groups, batch 2, every epilogue.
#[test]
fn winograd_convs_match_oracle_on_random_shapes() {
    let Some(ctx) = ctx() else { return };
    proptest!(config(10), |(c in cases())| {
        check_conv(&ctx, &three(c.clone()), ConvKernel::Winograd);
        check_conv(&ctx, &three(c), ConvKernel::Winograd4);
    });
}

/// F(4x4) on maps 13 to 16 and 29 to 32 wide (4 and 8 tile columns): the input transform's
/// `f4_wide` entry, 4 tiles per invocation, with every remainder of the map's width and height.
#[test]
fn winograd4_on_maps_whose_tile_columns_split_into_fours() {
    let Some(ctx) = ctx() else { return };
    let wide = (
        cases(),
        prop::sample::select(vec![13usize, 14, 15, 16, 29, 30, 31, 32]),
    )
        .prop_map(|(c, w)| Case { w, ..three(c) });
    proptest!(config(6), |(c in wide)| check_conv(&ctx, &c, ConvKernel::Winograd4));
}

/// 65 to 96 output channels per group: the subgroup kernel's 12-channel invocations (`CH4` 3),
/// directly and as the Winograd products (1x1 convs over flattened maps).
#[test]
fn subgroup_conv_with_twelve_channels_per_invocation() {
    let Some(ctx) = subgroup_ctx() else { return };
    let wide = (cases(), 65usize..=96).prop_map(|(c, cout_g)| Case {
        cout_g,
        stride: c.stride.min(2),
        ..c
    });
    proptest!(config(6), |(c in wide)| {
        check_conv(&ctx, &c, ConvKernel::Subgroup);
        check_conv(&ctx, &three(c.clone()), ConvKernel::Winograd4);
        check_conv(&ctx, &three(c), ConvKernel::Winograd);
    });
}

/// Flat 1x1 convs (stride 1, no padding: the Winograd products' shape) with 1 to 13 input
/// channels per group: the subgroup kernel's steps of 4, 2 and 1 input channels (`KU`).
#[test]
fn subgroup_one_by_one_convs_step_through_several_input_channels() {
    let Some(ctx) = subgroup_ctx() else { return };
    let flat = (cases(), 1usize..=13, 1usize..=40).prop_map(|(c, cin_g, cout_g)| Case {
        ks: 1,
        stride: 1,
        pad: 0,
        cin_g,
        cout_g,
        ..c
    });
    proptest!(config(8), |(c in flat)| check_conv(&ctx, &c, ConvKernel::Subgroup));
}

/// Flat 1x1 convs on planes of a multiple of 4 pixels: the subgroup kernel's loads of 4 pixels
/// a lane (`VLD`: 1, 2 or 4 input channels a load, as the tile width and the channels per K
/// step allow), including planes whose last tile runs past the row (5x44, 7x36, 1x136).
#[test]
fn subgroup_one_by_one_convs_load_four_pixels_at_once() {
    let Some(ctx) = subgroup_ctx() else { return };
    let planes = [
        (1, 4),
        (2, 4),
        (1, 12),
        (4, 4),
        (1, 20),
        (2, 24),
        (5, 44),
        (7, 36),
        (1, 136),
        (7, 40),
    ];
    for (h, w) in planes {
        let channels = prop::sample::select(vec![1usize, 2, 3, 4, 6, 8, 12]);
        let flat = (cases(), channels, 1usize..=40).prop_map(move |(c, cin_g, cout_g)| Case {
            ks: 1,
            stride: 1,
            pad: 0,
            h,
            w,
            cin_g,
            cout_g,
            ..c
        });
        proptest!(config(2), |(c in flat)| check_conv(&ctx, &c, ConvKernel::Subgroup));
    }
}

/// Inputs 4 to 64 wide, 3x3 (padding 1) and 1x1 (padding 0), stride 1 and 2: the subgroup
/// kernel's loads of a tile's input rows as aligned quads (`VROW`, where rows are a multiple of
/// 4 wide and tiles start 4-aligned), with quads past every edge of the image.
#[test]
fn subgroup_convs_load_input_rows_as_quads() {
    let Some(ctx) = subgroup_ctx() else { return };
    // A 1x1 conv of stride 1 and no padding is flat (its loads are VLD's, not VROW's).
    let quads = (cases(), 1usize..=16, 1usize..=2).prop_map(|(c, k, stride)| Case {
        stride: if c.ks == 1 { 2 } else { stride },
        pad: c.ks / 2,
        w: 4 * k,
        h: c.h.max(c.ks),
        ..c
    });
    proptest!(config(20), |(c in quads)| check_conv(&ctx, &c, ConvKernel::Subgroup));
}

/// Inputs 2 to 30 wide but not a multiple of 4, 3x3 (padding 1) and strided 1x1, stride 1 and
/// 2: where a tile spans whole rows, the subgroup kernel loads its input rows as one block of
/// aligned quads (`VBLK`, A0's 14x14 -> 7x7 conv), rows above and below the image zeroed.
#[test]
fn subgroup_convs_load_whole_row_blocks() {
    let Some(ctx) = subgroup_ctx() else { return };
    // (kernel, stride, width): 14 wide at stride 1 reads both padding columns and the padding
    // row below through the block.
    let shapes = [
        (3, 1, 14),
        (3, 2, 14),
        (1, 2, 14),
        (3, 2, 10),
        (3, 2, 6),
        (3, 2, 30),
        (3, 1, 2),
    ];
    for (ks, stride, w) in shapes {
        let blocks = (cases(), 1usize..=8).prop_map(move |(c, hh)| Case {
            ks,
            stride,
            pad: ks / 2,
            w,
            h: (2 * hh).max(ks),
            ..c
        });
        proptest!(config(3), |(c in blocks)| check_conv(&ctx, &c, ConvKernel::Subgroup));
    }
}

/// Outputs 4 to 32 wide, 3x3 and flat 1x1: the subgroup kernel's stores of 4 pixels at once
/// (`VEC`, where tile rows, output rows and planes are multiples of 4).
#[test]
fn subgroup_convs_store_four_pixels_at_once_on_widths_of_fours() {
    let Some(ctx) = subgroup_ctx() else { return };
    let fours = (cases(), 1usize..=8, any::<bool>()).prop_map(|(c, k, flat)| Case {
        ks: if flat { 1 } else { 3 },
        stride: 1,
        pad: usize::from(!flat),
        w: 4 * k,
        ..c
    });
    proptest!(config(8), |(c in fours)| check_conv(&ctx, &c, ConvKernel::Subgroup));
}

#[test]
fn subgroup_conv_matches_oracle_on_random_shapes_where_available() {
    let Some(ctx) = subgroup_ctx() else { return };
    let fits = |c: &Case| c.stride <= 2;
    proptest!(config(6), |(c in cases())| if fits(&c) { check_conv(&ctx, &c, ConvKernel::Subgroup) });
}

/// RepVGG-A0's own layer shapes at 224x224 (batch 1; 112x112 and 56x56 maps, 192 channels,
/// 4 groups, a 1280-channel 1x1), every conv kernel that can run them.
#[test]
fn a0_layer_shapes_with_every_kernel() {
    let Some(ctx) = ctx() else { return };
    let case =
        |cin: usize, cout: usize, ks: usize, stride: usize, size: usize, groups: usize| Case {
            n: 1,
            groups,
            cin_g: cin / groups,
            cout_g: cout / groups,
            ks,
            stride,
            pad: ks / 2,
            h: size,
            w: size,
            relu: true,
            bias: true,
            scale: false,
            seed: (cin * 7 + cout + size) as u64,
        };
    let shapes = [
        case(48, 48, 3, 2, 112, 1),
        case(48, 48, 3, 1, 56, 1),
        case(96, 96, 3, 1, 28, 4),
        case(192, 192, 3, 1, 14, 1),
        case(192, 1280, 1, 2, 14, 1),
    ];
    // (The workgroup kernel is slow on CPU adapters; random shapes cover it.)
    let mut kernels = vec![ConvKernel::Auto, ConvKernel::Gemm];
    if ctx.has_subgroups_of_8() {
        kernels.push(ConvKernel::Subgroup);
    }
    for c in &shapes {
        for &k in &kernels {
            check_conv(&ctx, c, k);
        }
        if c.ks == 3 && c.stride == 1 {
            check_conv(&ctx, c, ConvKernel::Winograd);
            check_conv(&ctx, c, ConvKernel::Winograd4);
        }
        // Split-K where a GPU would take it: the 14x14 layers (108 and 12 K tiles).
        if c.h == 14 {
            check_conv(&ctx, c, ConvKernel::SplitK);
        }
    }
    // Batch 2 and an odd map through Winograd at a real stage width.
    let odd = Case {
        n: 2,
        h: 15,
        w: 13,
        scale: true,
        ..case(96, 96, 3, 1, 15, 1)
    };
    check_conv(&ctx, &odd, ConvKernel::Winograd);
    check_conv(&ctx, &odd, ConvKernel::Winograd4);
}

#[test]
fn workgroup_conv_matches_oracle_on_random_shapes() {
    let Some(ctx) = ctx() else { return };
    proptest!(config(8), |(c in cases())| check_conv(&ctx, &c, ConvKernel::Workgroup));
}

#[test]
fn tiled_conv_spans_several_tiles_in_every_dimension() {
    // 130 output channels (3 channel tiles), K = 40 * 9 = 360 (23 K tiles), 2 * 9 * 10 = 180
    // output pixels (3 pixel tiles), stride 2, odd non-square input.
    let Some(ctx) = ctx() else { return };
    for (groups, stride) in [(1, 2), (2, 1)] {
        let c = Case {
            n: 2,
            groups,
            cin_g: 40 / groups,
            cout_g: 130 / groups,
            ks: 3,
            stride,
            pad: 1,
            h: 17,
            w: 19,
            relu: true,
            bias: true,
            scale: true,
            seed: 7,
        };
        check_conv(&ctx, &c, ConvKernel::Auto);
        check_conv(&ctx, &c, ConvKernel::Gemm);
        check_conv(&ctx, &c, ConvKernel::SplitK);
        check_conv(&ctx, &c, ConvKernel::Workgroup);
    }
}

/// The gemm kernel splits K on its own where a layer would launch fewer workgroups than the
/// device wants (8 on a software adapter, 128 on a GPU): 192 channels on a 3x3 map launch two,
/// so the 108 K tiles run as 4 slices on lavapipe (8 / 2 wanted) and 12 on a GPU (64 wanted,
/// at most 108 / 8 = 13 slices of 8 tiles or more: 13 slices of 9 tiles, 12 of them needed); a
/// 12x12 map launches 10, enough for lavapipe, still 12 slices on a GPU. Outputs NaN-filled, with every epilogue (scale, bias, residual, ReLU) in the second
/// pass, against the f64 oracle; the profile names the split.
#[test]
fn gemm_splits_k_where_a_layer_would_leave_the_device_idle() {
    let Some(ctx) = ctx() else { return };
    let spec = ConvSpec::conv3x3(192, 192, 1, 1).expect("spec");
    let mut rng = Rng::new(21);
    let w = rng.array4(spec.weight_shape());
    let scale = rng.vec_in(192, 0.5, 2.0);
    let bias = rng.vec(192);
    let mut b = NetworkBuilder::new(&ctx)
        .kernel(ConvKernel::Gemm)
        .nan_fill(true);
    let x = b.input(192);
    let ep = repvgg_gpu::Epilogue {
        scale: Some(scale.clone()),
        bias: Some(bias.clone()),
        residual: Some(x),
        activation: repvgg_gpu::Activation::Relu,
    };
    let y = b.conv(x, w.view(), spec, ep).expect("conv");
    b.output("y", y);
    let net = b.build().expect("build");
    let software = ctx.is_software();
    let slices = |on_software: &str, on_hardware: &str| {
        if software { on_software } else { on_hardware }.to_string()
    };
    for (size, expected) in [
        (3, slices("conv gemm split-K x4", "conv gemm split-K x12")),
        (12, slices("conv gemm", "conv gemm split-K x12")),
    ] {
        let n = 1;
        let input = rng.array4([n, 192, size, size]);
        let got = net.run(input.view()).expect("run");
        let conv = reference_conv(&input, &w, &spec, Some(&scale), Some(&bias), false);
        let want = (conv + &input).mapv(|v| v.max(0.0));
        let magnitude = reference_conv(
            &input.mapv(f32::abs),
            &w.mapv(f32::abs),
            &spec,
            Some(&scale),
            None,
            false,
        ) + input.mapv(f32::abs);
        assert_close_sum(
            &format!("split-K conv {n}x{size}x{size}"),
            got["y"].view(),
            want.into_dyn().view(),
            magnitude.into_dyn().view(),
            1e-5,
        );
        if !ctx.has_timestamps() {
            eprintln!("no timestamp queries: the profile cannot name the split here");
            continue;
        }
        let layers = net.profile(n, size, size, 0, 1).expect("profile");
        assert_eq!(layers[0].kernel, expected, "{size}x{size}");
    }
}

#[test]
fn depthwise_and_one_by_one_convs() {
    let Some(ctx) = ctx() else { return };
    let base = Case {
        n: 1,
        groups: 8,
        cin_g: 1,
        cout_g: 1,
        ks: 3,
        stride: 1,
        pad: 1,
        h: 6,
        w: 5,
        relu: false,
        bias: true,
        scale: false,
        seed: 3,
    };
    for kernel in [
        ConvKernel::Auto,
        ConvKernel::Gemm,
        ConvKernel::Workgroup,
        ConvKernel::Naive,
    ] {
        check_conv(&ctx, &base, kernel);
        check_conv(
            &ctx,
            &Case {
                ks: 1,
                pad: 0,
                groups: 1,
                cin_g: 12,
                cout_g: 70,
                ..base.clone()
            },
            kernel,
        );
        check_conv(
            &ctx,
            &Case {
                ks: 1,
                pad: 0,
                stride: 2,
                groups: 1,
                cin_g: 5,
                cout_g: 3,
                ..base.clone()
            },
            kernel,
        );
    }
}

#[test]
fn affine_matches_batch_norm() {
    let Some(ctx) = ctx() else { return };
    let mut rng = Rng::new(11);
    let x = rng.array4([2, 5, 7, 3]);
    let bn = repvgg_math::BatchNorm::new(
        rng.array1(5),
        rng.array1(5),
        rng.array1(5),
        Array1::from(rng.vec_in(5, 0.5, 2.0)),
        1e-5,
    )
    .expect("bn");
    let (scale, shift) = bn.scale_shift().expect("scale/shift");
    let scale: Vec<f32> = scale.iter().map(|&v| v as f32).collect();
    let shift: Vec<f32> = shift.iter().map(|&v| v as f32).collect();
    for relu in [false, true] {
        let got = ops::affine(&ctx, x.view(), &scale, &shift, relu).expect("affine");
        let mut want = cpu::batch_norm(x.view(), &bn).expect("bn");
        if relu {
            want = cpu::relu(want.view());
        }
        assert_close("affine", got.view(), want.view(), 1e-5);
    }
}

#[test]
fn global_avg_pool_matches_oracle() {
    let Some(ctx) = ctx() else { return };
    let mut rng = Rng::new(5);
    // 1x1, odd, and both sides of the switch from one invocation per row (at most 64
    // pixels: 8x8) to one workgroup per row (65 and more).
    for shape in [
        [3, 4, 1, 1],
        [2, 3, 5, 7],
        [1, 3, 8, 8],
        [1, 3, 5, 13],
        [1, 2, 13, 11],
    ] {
        let x = rng.array4(shape);
        let got = ops::global_avg_pool(&ctx, x.view()).expect("gap");
        let want = cpu::global_avg_pool(x.view()).expect("gap");
        assert_close("global average pool", got.view(), want.view(), 1e-5);
    }
}

#[test]
fn linear_matches_oracle() {
    let Some(ctx) = ctx() else { return };
    let mut rng = Rng::new(9);
    let x = rng.array2([3, 37]);
    let w = rng.array2([65, 37]);
    let b = rng.array1(65);
    let got = ops::linear(&ctx, x.view(), w.view(), b.as_slice()).expect("linear");
    let want = cpu::linear(x.view(), w.view(), Some(b.view())).expect("linear");
    assert_close("linear", got.view(), want.view(), 1e-5);
    let got = ops::linear(&ctx, x.view(), w.view(), None).expect("linear");
    let want = cpu::linear(x.view(), w.view(), None).expect("linear");
    assert_close("linear without bias", got.view(), want.view(), 1e-5);
    // Outputs in whole vec4s and not (the transposed weight is padded to 4 columns), A0's
    // head (1280 -> 1000), and fewer outputs than one vec4.
    for (n, fin, fout) in [(2, 9, 8), (1, 1280, 1000), (2, 5, 3)] {
        let x = rng.array2([n, fin]);
        let w = rng.array2([fout, fin]);
        let b = rng.array1(fout);
        let got = ops::linear(&ctx, x.view(), w.view(), b.as_slice()).expect("linear");
        let want = cpu::linear(x.view(), w.view(), Some(b.view())).expect("linear");
        let mag =
            cpu::linear(x.mapv(f32::abs).view(), w.mapv(f32::abs).view(), None).expect("linear");
        assert_close_sum(
            &format!("linear {fin} -> {fout}"),
            got.view(),
            want.view(),
            mag.view(),
            1e-5,
        );
    }
}

#[test]
fn squeeze_excitation_matches_cpu_composition() {
    let Some(ctx) = ctx() else { return };
    let mut rng = Rng::new(13);
    let (n, c, r) = (2, 8, 3);
    let x = rng.array4([n, c, 5, 6]);
    let (w1, b1, w2, b2) = (
        rng.array2([r, c]),
        rng.array1(r),
        rng.array2([c, r]),
        rng.array1(c),
    );
    for relu in [false, true] {
        let mut b = NetworkBuilder::new(&ctx).nan_fill(true);
        let input = b.input(c);
        let y = common::se(
            &mut b,
            input,
            w1.view(),
            b1.as_slice().expect("contiguous"),
            w2.view(),
            b2.as_slice().expect("contiguous"),
            relu,
        )
        .expect("se");
        b.output("y", y);
        let got = b.build().expect("build").run(x.view()).expect("run")["y"]
            .clone()
            .into_dimensionality::<ndarray::Ix4>()
            .expect("4-d");
        let pooled = cpu::global_avg_pool(x.view()).expect("gap");
        let hidden = cpu::relu(
            cpu::linear(pooled.view(), w1.view(), Some(b1.view()))
                .expect("fc1")
                .view(),
        );
        let s = cpu::linear(hidden.view(), w2.view(), Some(b2.view()))
            .expect("fc2")
            .mapv(|v| 1.0 / (1.0 + (-v).exp()));
        let mut want = x.clone();
        for ((b, ch, _, _), v) in want.indexed_iter_mut() {
            *v *= s[[b, ch]];
            if relu {
                *v = v.max(0.0);
            }
        }
        assert_close("squeeze-excitation", got.view(), want.view(), 1e-5);
    }
}
