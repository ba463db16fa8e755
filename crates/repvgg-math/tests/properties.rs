//! Equivalence properties of the re-parameterization, in f64 (relative error ≤ 1e-10) and f32
//! (the bound documented on `common::assert_close`). `PROPTEST_CASES` raises the case count.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

mod common;

use common::*;
use ndarray::{Array4, Axis, concatenate, s};
use proptest::prelude::*;
use repvgg_math::fuse::{ConvBn, RepVggBranches, identity_kernel, pad_1x1_to_3x3};
use repvgg_math::{ConvSpec, Element, ops};

/// A random convolution problem: channels as groups x per-group, every divisor reachable.
#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    batch: usize,
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    stride: usize,
    h: usize,
    w: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<u64>(),
        1usize..=2,
        1usize..=4,
        1usize..=4,
        1usize..=4,
        1usize..=2,
        1usize..=17,
        1usize..=17,
    )
        .prop_map(|(seed, batch, groups, cin_g, cout_g, stride, h, w)| Case {
            seed,
            batch,
            groups,
            cin_g,
            cout_g,
            stride,
            h,
            w,
        })
}

impl Case {
    fn cin(&self) -> usize {
        self.groups * self.cin_g
    }
    fn cout(&self) -> usize {
        self.groups * self.cout_g
    }
    fn spec(&self, k: usize) -> ConvSpec {
        ConvSpec::new(self.cin(), self.cout(), k, self.stride, k / 2, self.groups)
            .expect("valid spec")
    }
}

/// conv then BN == the fused conv with bias.
fn conv_bn_is_fused<T: Element>(c: &Case, k: usize, with_bias: bool) -> Result<(), TestCaseError> {
    let mut rng = Rng(c.seed);
    let spec = c.spec(k);
    let x = stored::<T, _>(&rng.array4([c.batch, c.cin(), c.h, c.w], 1.0));
    let w = stored::<T, _>(&rng.array4(spec.weight_shape(), 0.5));
    let b = with_bias.then(|| stored::<T, _>(&rng.array1(c.cout(), 0.5)));
    let bn = bn_stored::<T>(&rng.batch_norm(c.cout()));

    let want = bn_f64(
        &ops::conv2d_reference(x.view(), w.view(), b.as_ref().map(|b| b.view()), &spec).unwrap(),
        &bn,
    );
    let mag = bn_mag(&conv_mag(&x, &w, b.as_ref(), &spec), &bn);

    let (xt, wt, bt, bnt) = (
        to_t::<T, _>(&x),
        to_t::<T, _>(&w),
        b.as_ref().map(to_t::<T, _>),
        bn_to_t::<T>(&bn),
    );
    let (wf, bf) =
        repvgg_math::fuse::fuse_conv_bn(wt.view(), bt.as_ref().map(|b| b.view()), &bnt).unwrap();
    let fused = ops::conv2d_reference(xt.view(), wf.view(), Some(bf.view()), &spec).unwrap();
    let terms = c.cin_g * k * k;
    assert_close("fused conv+bn", fused.view(), &want, &mag, terms)?;
    let unfused = ConvBn::new(wt, bt, bnt).forward(xt.view(), &spec).unwrap();
    assert_close("conv then bn", unfused.view(), &want, &mag, terms)
}

/// A 1x1 conv (padding 0) == its kernel zero-padded to 3x3 (padding 1): exactly, since the
/// padded taps only add exact zeros.
fn one_by_one_is_padded<T: Element>(c: &Case) -> Result<(), TestCaseError> {
    let mut rng = Rng(c.seed);
    let x: Array4<T> = to_t(&rng.array4([c.batch, c.cin(), c.h, c.w], 1.0));
    let w1: Array4<T> = to_t(&rng.array4(c.spec(1).weight_shape(), 1.0));
    let w3 = pad_1x1_to_3x3(w1.view()).unwrap();
    prop_assert_eq!(w3.shape(), &[c.cout(), c.cin_g, 3, 3]);
    let a = ops::conv2d_reference(x.view(), w1.view(), None, &c.spec(1)).unwrap();
    let b = ops::conv2d_reference(x.view(), w3.view(), None, &c.spec(3)).unwrap();
    assert_exact("1x1 vs padded 3x3", a.view(), b.view())
}

/// A conv with the identity kernel returns its input, for every group count and odd k.
fn identity_kernel_is_identity<T: Element>(
    seed: u64,
    channels: usize,
    groups: usize,
    k: usize,
    h: usize,
    w: usize,
) -> Result<(), TestCaseError> {
    let mut rng = Rng(seed);
    let x: Array4<T> = to_t(&rng.array4([2, channels, h, w], 3.0));
    let id = identity_kernel::<T>(channels, groups, k).unwrap();
    let spec = ConvSpec::new(channels, channels, k, 1, k / 2, groups).unwrap();
    let y = ops::conv2d_reference(x.view(), id.view(), None, &spec).unwrap();
    assert_exact("identity conv", y.view(), x.view())?;
    let y = ops::conv2d(x.view(), id.view(), None, &spec).unwrap();
    assert_exact("identity conv (fast path)", y.view(), x.view())
}

/// The whole block: bn(conv3(x)) + bn(conv1(x)) + bn(x) == fused conv3 with bias.
fn block_is_fused<T: Element>(
    c: &Case,
    one_by_one: bool,
    conv_bias: bool,
) -> Result<(), TestCaseError> {
    let mut rng = Rng(c.seed);
    let spec = c.spec(3);
    let spec1 = c.spec(1);
    let spec1 = ConvSpec {
        padding: 0,
        ..spec1
    };
    let x = stored::<T, _>(&rng.array4([c.batch, c.cin(), c.h, c.w], 1.0));
    let w3 = stored::<T, _>(&rng.array4(spec.weight_shape(), 0.4));
    let b3 = conv_bias.then(|| stored::<T, _>(&rng.array1(c.cout(), 0.5)));
    let bn3 = bn_stored::<T>(&rng.batch_norm(c.cout()));
    let w1 = stored::<T, _>(&rng.array4(spec1.weight_shape(), 0.8));
    let b1 = conv_bias.then(|| stored::<T, _>(&rng.array1(c.cout(), 0.5)));
    let bn1 = bn_stored::<T>(&rng.batch_norm(c.cout()));
    let has_id = c.cin() == c.cout() && c.stride == 1;
    let bnid = bn_stored::<T>(&rng.batch_norm(c.cout()));

    // Independent f64 reference: each branch with the oracle conv and the test-local BN.
    let mut want = bn_f64(
        &ops::conv2d_reference(x.view(), w3.view(), b3.as_ref().map(|b| b.view()), &spec).unwrap(),
        &bn3,
    );
    let mut mag = bn_mag(&conv_mag(&x, &w3, b3.as_ref(), &spec), &bn3);
    if one_by_one {
        want += &bn_f64(
            &ops::conv2d_reference(x.view(), w1.view(), b1.as_ref().map(|b| b.view()), &spec1)
                .unwrap(),
            &bn1,
        );
        mag += &bn_mag(&conv_mag(&x, &w1, b1.as_ref(), &spec1), &bn1);
    }
    if has_id {
        want += &bn_f64(&x, &bnid);
        mag += &bn_mag(&x.mapv(f64::abs), &bnid);
    }

    let block = RepVggBranches {
        spec,
        dense: ConvBn::new(to_t(&w3), b3.as_ref().map(to_t), bn_to_t(&bn3)),
        one_by_one: one_by_one
            .then(|| ConvBn::new(to_t(&w1), b1.as_ref().map(to_t), bn_to_t(&bn1))),
        identity: has_id.then(|| bn_to_t(&bnid)),
    };
    let xt: Array4<T> = to_t(&x);
    let fused = block.fuse().unwrap();
    prop_assert_eq!(fused.spec, spec);
    let terms = c.cin_g * 9;
    let y = ops::conv2d_reference(
        xt.view(),
        fused.weight.view(),
        Some(fused.bias.view()),
        &spec,
    )
    .unwrap();
    assert_close("fused block (oracle conv)", y.view(), &want, &mag, terms)?;
    assert_close(
        "fused block (fast conv)",
        fused.forward(xt.view()).unwrap().view(),
        &want,
        &mag,
        terms,
    )?;
    assert_close(
        "multi-branch block",
        block.forward(xt.view()).unwrap().view(),
        &want,
        &mag,
        3 * terms,
    )?;

    // The f32 fusion is the correctly rounded f64 fusion of the same stored values.
    let block64 = RepVggBranches {
        spec,
        dense: ConvBn::new(w3, b3, bn3),
        one_by_one: one_by_one.then_some(ConvBn::new(w1, b1, bn1)),
        identity: has_id.then_some(bnid),
    };
    let f64fused = block64.fuse().unwrap().cast::<T>();
    prop_assert_eq!(&fused.weight, &f64fused.weight);
    prop_assert_eq!(&fused.bias, &f64fused.bias);
    Ok(())
}

/// conv(x, K1) + conv(x, K2) == conv(x, K1 + K2).
fn conv_is_linear<T: Element>(c: &Case, k: usize) -> Result<(), TestCaseError> {
    let mut rng = Rng(c.seed);
    let spec = c.spec(k);
    let x = stored::<T, _>(&rng.array4([c.batch, c.cin(), c.h, c.w], 1.0));
    let k1 = stored::<T, _>(&rng.array4(spec.weight_shape(), 1.0));
    let k2 = stored::<T, _>(&rng.array4(spec.weight_shape(), 1.0));
    let ksum: Array4<f64> = &k1 + &k2;
    let want = &ops::conv2d_reference(x.view(), k1.view(), None, &spec).unwrap()
        + &ops::conv2d_reference(x.view(), k2.view(), None, &spec).unwrap();
    let mag = &conv_mag(&x, &k1, None, &spec) + &conv_mag(&x, &k2, None, &spec);
    let (xt, k1t, k2t) = (to_t::<T, _>(&x), to_t::<T, _>(&k1), to_t::<T, _>(&k2));
    let ksum_t = &k1t + &k2t;
    let lhs = &ops::conv2d_reference(xt.view(), k1t.view(), None, &spec).unwrap()
        + &ops::conv2d_reference(xt.view(), k2t.view(), None, &spec).unwrap();
    let rhs = ops::conv2d_reference(xt.view(), ksum_t.view(), None, &spec).unwrap();
    let terms = c.cin_g * k * k;
    assert_close("conv(x,K1)+conv(x,K2)", lhs.view(), &want, &mag, terms)?;
    // `ksum` is exact in f64; in f32 the kernel sum rounds once more (covered by the +8).
    let _ = ksum;
    assert_close("conv(x,K1+K2)", rhs.view(), &want, &mag, terms)
}

/// A grouped conv == each group's conv on its channel slice, concatenated (exactly).
fn grouped_is_concat<T: Element>(c: &Case, k: usize) -> Result<(), TestCaseError> {
    let mut rng = Rng(c.seed);
    let spec = c.spec(k);
    let x: Array4<T> = to_t(&rng.array4([c.batch, c.cin(), c.h, c.w], 1.0));
    let w: Array4<T> = to_t(&rng.array4(spec.weight_shape(), 1.0));
    let grouped = ops::conv2d_reference(x.view(), w.view(), None, &spec).unwrap();
    let per_group = ConvSpec::new(c.cin_g, c.cout_g, k, c.stride, k / 2, 1).unwrap();
    let parts: Vec<Array4<T>> = (0..c.groups)
        .map(|g| {
            let xg = x.slice(s![.., g * c.cin_g..(g + 1) * c.cin_g, .., ..]);
            let wg = w.slice(s![g * c.cout_g..(g + 1) * c.cout_g, .., .., ..]);
            ops::conv2d_reference(xg, wg, None, &per_group).unwrap()
        })
        .collect();
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    let concat = concatenate(Axis(1), &views).unwrap();
    assert_exact(
        "grouped vs concatenated groups",
        grouped.view(),
        concat.view(),
    )
}

/// The fast conv (im2col + GEMM) == the oracle, any kernel, stride, padding, groups, bias.
fn fast_is_oracle<T: Element>(
    c: &Case,
    k: usize,
    stride: usize,
    pad: usize,
    bias: bool,
) -> Result<(), TestCaseError> {
    let mut rng = Rng(c.seed);
    let spec = ConvSpec::new(c.cin(), c.cout(), k, stride, pad, c.groups).unwrap();
    if spec.output_size(c.h, c.w).is_err() {
        return Ok(());
    }
    let x = stored::<T, _>(&rng.array4([c.batch, c.cin(), c.h, c.w], 1.0));
    let w = stored::<T, _>(&rng.array4(spec.weight_shape(), 1.0));
    let b = bias.then(|| stored::<T, _>(&rng.array1(c.cout(), 1.0)));
    let want =
        ops::conv2d_reference(x.view(), w.view(), b.as_ref().map(|b| b.view()), &spec).unwrap();
    let mag = conv_mag(&x, &w, b.as_ref(), &spec);
    let (xt, wt, bt) = (
        to_t::<T, _>(&x),
        to_t::<T, _>(&w),
        b.as_ref().map(to_t::<T, _>),
    );
    let fast = ops::conv2d(xt.view(), wt.view(), bt.as_ref().map(|b| b.view()), &spec).unwrap();
    let oracle =
        ops::conv2d_reference(xt.view(), wt.view(), bt.as_ref().map(|b| b.view()), &spec).unwrap();
    let terms = c.cin_g * k * k;
    assert_close("oracle conv", oracle.view(), &want, &mag, terms)?;
    assert_close("fast conv", fast.view(), &want, &mag, terms)?;
    let relu = ops::conv2d_act(
        xt.view(),
        wt.view(),
        bt.as_ref().map(|b| b.view()),
        &spec,
        ops::Activation::Relu,
    )
    .unwrap();
    assert_close(
        "fast conv + relu",
        relu.view(),
        &want.mapv(|v| v.max(0.0)),
        &mag,
        terms,
    )
}

proptest! {
    #[test]
    fn conv_then_bn_equals_fused_conv(c in case(), k in prop_oneof![Just(1usize), Just(3), Just(5)], bias in any::<bool>()) {
        conv_bn_is_fused::<f64>(&c, k, bias)?;
        conv_bn_is_fused::<f32>(&c, k, bias)?;
    }

    #[test]
    fn one_by_one_equals_zero_padded_three_by_three(c in case()) {
        one_by_one_is_padded::<f64>(&c)?;
        one_by_one_is_padded::<f32>(&c)?;
    }

    #[test]
    fn identity_kernel_conv_returns_input(
        seed in any::<u64>(), channels in 1usize..=12, gsel in any::<prop::sample::Index>(),
        k in prop_oneof![Just(1usize), Just(3), Just(5)], h in 1usize..=17, w in 1usize..=17,
    ) {
        let divs = divisors(channels);
        let groups = divs[gsel.index(divs.len())];
        identity_kernel_is_identity::<f64>(seed, channels, groups, k, h, w)?;
        identity_kernel_is_identity::<f32>(seed, channels, groups, k, h, w)?;
    }

    #[test]
    fn multi_branch_block_equals_fused_conv(c in case(), one_by_one in prop::bool::weighted(0.85), conv_bias in any::<bool>(), square in prop::bool::weighted(0.6)) {
        // Bias the draw towards in == out, stride 1 so the identity branch is exercised often.
        let c = if square { Case { cout_g: c.cin_g, stride: if c.seed % 3 == 0 { 2 } else { 1 }, ..c } } else { c };
        block_is_fused::<f64>(&c, one_by_one, conv_bias)?;
        block_is_fused::<f32>(&c, one_by_one, conv_bias)?;
    }

    #[test]
    fn conv_is_linear_in_the_kernel(c in case(), k in prop_oneof![Just(1usize), Just(3)]) {
        conv_is_linear::<f64>(&c, k)?;
        conv_is_linear::<f32>(&c, k)?;
    }

    #[test]
    fn grouped_conv_equals_concatenated_group_convs(c in case(), k in prop_oneof![Just(1usize), Just(3)]) {
        grouped_is_concat::<f64>(&c, k)?;
        grouped_is_concat::<f32>(&c, k)?;
    }

    #[test]
    fn fast_conv_equals_oracle(c in case(), k in 1usize..=5, stride in 1usize..=3, pad in 0usize..=2, bias in any::<bool>()) {
        fast_is_oracle::<f64>(&c, k, stride, pad, bias)?;
        fast_is_oracle::<f32>(&c, k, stride, pad, bias)?;
    }
}

/// Big enough for the fast path's column-split branch (many tiles), checked once.
#[test]
fn fast_conv_equals_oracle_on_tiled_shapes() {
    for (cin, cout, hw, groups) in [(8, 16, 64, 1), (48, 48, 40, 4), (3, 8, 90, 1)] {
        let c = Case {
            seed: 7,
            batch: 2,
            groups,
            cin_g: cin / groups,
            cout_g: cout / groups,
            stride: 1,
            h: hw,
            w: hw + 3,
        };
        fast_is_oracle::<f32>(&c, 3, 1, 1, true).unwrap();
        fast_is_oracle::<f64>(&c, 3, 2, 1, false).unwrap();
    }
}

/// Convolutions shaped to reach the fast path's tiling branches (see `conv2d_act` in
/// `src/ops.rs`: `TILE_ELEMS = 64 Ki` im2col elements per task, `cols_per_task =
/// clamp(TILE_ELEMS / kk, 16, npix)`, column split when `npix >= 2 * cols_per_task`, else
/// output-channel chunks of `max(cout_g / 8, 8)` rows), every one small:
/// - column split: `cin_g` 100..=130 with a 3x3 kernel (kk ~ 1000, 56..=72 columns per task)
///   on 10..=16 px sides: 2 to 4 tasks from 12x12 up, the last one usually partial, 1 or 2
///   groups (the smallest draws take the row path);
/// - row chunks: `cout_g` 9..=90 on at most 8x8 px: 2 to 11 chunks of 8..=11 rows, the last
///   one usually partial, 1 to 3 groups.
fn tiled_case() -> impl Strategy<Value = (Case, usize, usize, usize)> {
    let columns = (
        any::<u64>(),
        1usize..=2,
        1usize..=2,
        100usize..=130,
        1usize..=3,
    )
        .prop_flat_map(|(seed, batch, groups, cin_g, cout_g)| {
            (10usize..=16, 10usize..=16).prop_map(move |(h, w)| {
                let c = Case {
                    seed,
                    batch,
                    groups,
                    cin_g,
                    cout_g,
                    stride: 1,
                    h,
                    w,
                };
                (c, 3, 1, 1)
            })
        });
    let rows = (
        any::<u64>(),
        1usize..=2,
        1usize..=3,
        1usize..=4,
        9usize..=90,
        1usize..=8,
        1usize..=8,
        1usize..=3,
        1usize..=2,
    )
        .prop_map(|(seed, batch, groups, cin_g, cout_g, h, w, k, stride)| {
            let c = Case {
                seed,
                batch,
                groups,
                cin_g,
                cout_g,
                stride,
                h,
                w,
            };
            (c, k, stride, k / 2)
        });
    prop_oneof![columns, rows]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn fast_conv_equals_oracle_on_every_tiling_path((c, k, stride, pad) in tiled_case(), bias in any::<bool>()) {
        fast_is_oracle::<f64>(&c, k, stride, pad, bias)?;
        fast_is_oracle::<f32>(&c, k, stride, pad, bias)?;
    }
}

/// The edges of the tiling, each checked once: the 16-column floor (kk > 4096), a column
/// split into exactly two tasks and one pixel short of it (the row path), a single row chunk
/// (`cout_g` = 8) next to two (9), many chunks of `cout_g / 8` rows (cout_g = 97: 12-row
/// chunks, the last of one row), grouped, with and without bias.
#[test]
fn fast_conv_equals_oracle_at_tiling_edges() {
    // (groups, cin_g, cout_g, h, w, k, stride, pad)
    let edges = [
        (1, 456, 2, 7, 7, 3, 1, 1), // kk = 4104: 15 columns per task, raised to 16: 4 tasks
        (2, 1024, 2, 8, 16, 1, 1, 0), // kk = 1024: 64 columns, npix = 128: exactly 2 tasks
        (2, 1024, 2, 127, 1, 1, 1, 0), // npix = 127: one short, the row path
        (3, 2, 8, 5, 5, 3, 1, 1),   // one row chunk per group
        (3, 2, 9, 5, 5, 3, 2, 1),   // two chunks (8 + 1 rows) per group
        (2, 3, 97, 4, 6, 3, 1, 1),  // chunks of 12 rows: 8 x 12 + 1
    ];
    for (i, &(groups, cin_g, cout_g, h, w, k, stride, pad)) in edges.iter().enumerate() {
        let c = Case {
            seed: 11 + i as u64,
            batch: 2,
            groups,
            cin_g,
            cout_g,
            stride,
            h,
            w,
        };
        for bias in [false, true] {
            fast_is_oracle::<f64>(&c, k, stride, pad, bias).unwrap();
            fast_is_oracle::<f32>(&c, k, stride, pad, bias).unwrap();
        }
    }
}

/// The property helpers fail on a NaN or an infinity, on either side.
#[test]
fn comparison_helpers_fail_on_non_finite_values() {
    let want = Array4::<f64>::from_elem((1, 1, 1, 2), 1.0);
    let mag = Array4::<f64>::from_elem((1, 1, 1, 2), 1.0);
    for bad in [f32::NAN, f32::INFINITY] {
        let got = Array4::<f32>::from_shape_vec((1, 1, 1, 2), vec![1.0, bad]).unwrap();
        assert!(
            assert_close::<f32>("bad", got.view(), &want, &mag, 1).is_err(),
            "{bad}"
        );
        let ok = Array4::<f32>::from_elem((1, 1, 1, 2), 1.0);
        assert!(
            assert_exact::<f32>("bad", got.view(), ok.view()).is_err(),
            "{bad}"
        );
        let want_bad = want.mapv(|_| f64::from(bad));
        assert!(
            assert_close::<f32>("bad ref", ok.view(), &want_bad, &mag, 1).is_err(),
            "{bad}"
        );
    }
    // An infinity equal on both sides is still a failure.
    let inf = Array4::<f32>::from_elem((1, 1, 1, 2), f32::INFINITY);
    let inf64 = inf.mapv(f64::from);
    assert!(assert_close::<f32>("inf", inf.view(), &inf64, &mag, 1).is_err());
    assert!(assert_exact::<f32>("inf", inf.view(), inf.view()).is_err());
}
