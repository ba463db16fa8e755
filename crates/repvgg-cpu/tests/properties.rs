//! The CPU engine against the f64 oracle (`repvgg_math::ops::conv2d_reference` on f64 arrays):
//! every algorithm (Winograd F(2x2) and F(4x4), im2col GEMM, direct 1x1), every tile edge
//! (sizes that are not multiples of the tile, 1-pixel images), groups, strides 1-3, padding 0-2,
//! batches > 1, chunked and single-chunk paths, epilogues (scale, shift, accumulate, ReLU), and
//! the network ops around convs. Work buffers start as NaN, so an element a kernel forgets to
//! write shows up as a failure.

use ndarray::{Array1, Array2, Array4, Axis};
use proptest::prelude::*;
use repvgg_cpu::{Activation, ConvAlgo, CpuOptions, Epilogue, NetworkBuilder, PreparedConv, Tile};
use repvgg_math::ConvSpec;
use repvgg_math::ops::conv2d_reference;

/// Deterministic pseudo-random values in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| lo + (hi - lo) * (self.next() * 0.5 + 0.5))
            .collect()
    }
}

/// Error bound per algorithm, in units of f32 epsilon times Σ|x·w| of the output: the GEMM's
/// `(K + 8)`-term dot product, and for Winograd the growth of the transforms (the largest
/// coefficient products of Bᵀ, G and Aᵀ), measured then given a 4x margin.
fn bound_factor(algo: ConvAlgo, spec: &ConvSpec) -> f64 {
    let k = (spec.in_channels / spec.groups * spec.kernel_size * spec.kernel_size) as f64;
    let winograd = spec.kernel_size == 3 && spec.stride == 1 && spec.padding <= 2;
    match algo {
        ConvAlgo::Winograd(Tile::F2) if winograd => 8.0 * (k + 8.0),
        ConvAlgo::Auto if winograd && spec.in_channels < repvgg_cpu::WIDE => 8.0 * (k + 8.0),
        ConvAlgo::Auto | ConvAlgo::Winograd(Tile::F4) if winograd => 64.0 * (k + 8.0),
        _ => 2.0 * (k + 8.0),
    }
}

fn to_f64(a: &Array4<f32>) -> Array4<f64> {
    a.mapv(f64::from)
}

struct Case {
    spec: ConvSpec,
    n: usize,
    h: usize,
    w: usize,
    seed: u64,
    algo: ConvAlgo,
    scale: bool,
    relu: bool,
    accumulate: bool,
}

/// A weight of `s`'s shape, values in [-1, 1).
fn random_weight(rng: &mut Rng, s: &ConvSpec) -> Result<Array4<f32>, TestCaseError> {
    let ws = s.weight_shape();
    Array4::from_shape_vec(
        (ws[0], ws[1], ws[2], ws[3]),
        rng.vec(ws.iter().product(), -1.0, 1.0),
    )
    .map_err(fail)
}

/// Runs one conv through a network (input → [base conv] → conv → head) and compares the conv's
/// output (marked as an output) with the oracle.
fn check(c: &Case) -> Result<(), TestCaseError> {
    let s = c.spec;
    let mut rng = Rng(c.seed);
    let x = Array4::from_shape_vec(
        (c.n, s.in_channels, c.h, c.w),
        rng.vec(c.n * s.in_channels * c.h * c.w, -1.0, 1.0),
    )
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let weight = random_weight(&mut rng, &s)?;
    let scale = c.scale.then(|| rng.vec(s.out_channels, 0.3, 2.0));
    let shift = rng.vec(s.out_channels, -0.5, 0.5);
    let Ok((oh, ow)) = s.output_size(c.h, c.w) else {
        return Ok(());
    };

    let opts = CpuOptions {
        threads: None,
        algo: c.algo,
    };
    let mut b = NetworkBuilder::new(opts);
    let input = b.input(s.in_channels).map_err(fail)?;
    // For accumulation, a base tensor of the output's shape: a 1x1 conv when the spatial size is
    // kept, else the oracle cannot line it up; so only cases with oh,ow == h,w accumulate.
    let accumulate = c.accumulate && (oh, ow) == (c.h, c.w);
    let base_w = Array4::from_shape_vec(
        (s.out_channels, s.in_channels, 1, 1),
        rng.vec(s.out_channels * s.in_channels, -1.0, 1.0),
    )
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let base_spec = ConvSpec::new(s.in_channels, s.out_channels, 1, 1, 0, 1).map_err(fail)?;
    let ep = Epilogue {
        scale: scale.clone(),
        bias: Some(shift.clone()),
        residual: None,
        activation: Activation::relu_if(c.relu),
    };
    let y = if accumulate {
        let t = b
            .conv(input, base_w.view(), base_spec, Epilogue::default())
            .map_err(fail)?;
        b.conv(input, weight.view(), s, ep.with_residual(t))
            .map_err(fail)?
    } else {
        b.conv(input, weight.view(), s, ep).map_err(fail)?
    };
    b.output(y).map_err(fail)?;
    let head_w = Array2::<f32>::from_elem((1, s.out_channels), 0.5);
    b.head(y, head_w.view(), &[0.25]).map_err(fail)?;
    let net = b.build().map_err(fail)?;
    let got = net.run(x.view()).map_err(fail)?;
    let got_y = &got.outputs[0];
    prop_assert_eq!(got_y.shape(), &[c.n, s.out_channels, oh, ow]);

    // Oracle in f64.
    let x64 = to_f64(&x);
    let conv = conv2d_reference(x64.view(), to_f64(&weight).view(), None, &s).map_err(fail)?;
    let mag = conv2d_reference(
        x64.mapv(f64::abs).view(),
        to_f64(&weight).mapv(f64::abs).view(),
        None,
        &s,
    )
    .map_err(fail)?;
    let base = if accumulate {
        Some(conv2d_reference(x64.view(), to_f64(&base_w).view(), None, &base_spec).map_err(fail)?)
    } else {
        None
    };
    let factor = bound_factor(c.algo, &s);
    let eps = f64::from(f32::EPSILON);
    for ((idx, &g), &r) in got_y.indexed_iter().zip(conv.iter()) {
        let ch = idx.1;
        let sc = scale.as_ref().map_or(1.0, |v| f64::from(v[ch]));
        let mut want = r * sc + f64::from(shift[ch]);
        let mut m = mag[idx] * sc.abs() + f64::from(shift[ch]).abs();
        if let Some(bs) = &base {
            want += bs[idx];
            m += bs[idx].abs() + 1.0;
        }
        if c.relu {
            want = want.max(0.0);
        }
        let err = (f64::from(g) - want).abs();
        prop_assert!(
            g.is_finite() && err <= factor * eps * (m + 1e-30),
            "{:?} algo {:?} at {:?}: got {} want {} (err {:e}, bound {:e})",
            s,
            c.algo,
            idx,
            g,
            want,
            err,
            factor * eps * m
        );
    }
    // The head: mean over pixels, then 0.5 * Σ + 0.25.
    let mean = got_y
        .mapv(f64::from)
        .mean_axis(Axis(3))
        .and_then(|a| a.mean_axis(Axis(2)));
    if let Some(mean) = mean {
        for (i, row) in mean.axis_iter(Axis(0)).enumerate() {
            let want = 0.5 * row.sum() + 0.25;
            let l = f64::from(got.logits[[i, 0]]);
            prop_assert!(
                (l - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "logit {i}: {l} vs {want}"
            );
        }
    }
    Ok(())
}

fn fail<E: std::fmt::Display>(e: E) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn algo() -> impl Strategy<Value = ConvAlgo> {
    prop_oneof![
        Just(ConvAlgo::Auto),
        Just(ConvAlgo::Winograd(Tile::F2)),
        Just(ConvAlgo::Winograd(Tile::F4)),
        Just(ConvAlgo::Gemm),
    ]
}

fn spec() -> impl Strategy<Value = ConvSpec> {
    (
        1usize..=4,
        1usize..=3,
        1usize..=3,
        prop::sample::select(vec![1usize, 3, 5]),
        1usize..=3,
        0usize..=2,
    )
        .prop_flat_map(|(groups, cin_g, cout_g, k, stride, pad)| {
            // Channel counts per group, scaled so that some cases cross the 16-lane blocks.
            (
                Just(groups),
                prop::sample::select(vec![cin_g, cin_g * 7, 17]),
                prop::sample::select(vec![cout_g, cout_g * 6, 19]),
                Just(k),
                Just(stride),
                Just(pad),
            )
        })
        .prop_filter_map("valid spec", |(groups, cin_g, cout_g, k, stride, pad)| {
            ConvSpec::new(cin_g * groups, cout_g * groups, k, stride, pad, groups).ok()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn conv_matches_the_f64_oracle(
        spec in spec(),
        n in 1usize..=3,
        h in 1usize..=19,
        w in 1usize..=19,
        seed in any::<u64>(),
        algo in algo(),
        scale in any::<bool>(),
        relu in any::<bool>(),
        accumulate in any::<bool>(),
    ) {
        check(&Case { spec, n, h, w, seed, algo, scale, relu, accumulate })?;
    }

    /// 3x3 stride-1 convs, the Winograd path, on sizes that cross tile and chunk boundaries
    /// (many tile rows, several chunks) and channel counts past one 16-lane block.
    #[test]
    fn winograd_tiles_and_chunks(
        cin in prop::sample::select(vec![3usize, 16, 17]),
        cout in prop::sample::select(vec![5usize, 18]),
        groups in prop::sample::select(vec![1usize, 2]),
        n in 1usize..=2,
        h in 2usize..=33,
        w in 2usize..=33,
        pad in 0usize..=2,
        seed in any::<u64>(),
        tile in prop::sample::select(vec![Tile::F2, Tile::F4]),
        accumulate in any::<bool>(),
    ) {
        let cin = cin * groups;
        let cout = cout * groups;
        let spec = ConvSpec::new(cin, cout, 3, 1, pad, groups).map_err(fail)?;
        check(&Case { spec, n, h, w, seed, algo: ConvAlgo::Winograd(tile), scale: true, relu: true, accumulate })?;
    }

    /// The scratch a run asks for is what it uses: on runs small enough for one chunk (one image
    /// of at most 4x4, padded to at most 8x8), every element of a NaN-filled scratch of exactly
    /// `scratch_len` is overwritten, and the output is finite. A plan that reserved more (or a
    /// run that used less) than its buffers need fails here; one that reserved less fails the
    /// run's own length check.
    #[test]
    fn single_chunk_runs_use_all_of_their_scratch(
        spec in spec(),
        h in 1usize..=4,
        w in 1usize..=4,
        seed in any::<u64>(),
        algo in algo(),
    ) {
        let mut rng = Rng(seed);
        let weight = random_weight(&mut rng, &spec)?;
        let conv = PreparedConv::new(weight.view(), spec, Epilogue::default(), algo).map_err(fail)?;
        let Ok(g) = conv.geometry(1, h, w) else {
            return Ok(());
        };
        let x = rng.vec(h * w * spec.in_channels, -1.0, 1.0);
        let mut out = vec![f32::NAN; g.oh * g.ow * spec.out_channels];
        let need = conv.scratch_len(&g, rayon::current_num_threads());
        let mut scratch = vec![f32::NAN; need];
        conv.run(&x, &g, &mut out, &mut scratch).map_err(fail)?;
        prop_assert!(out.iter().all(|v| v.is_finite()), "output not fully written");
        let unused = scratch.iter().filter(|v| v.is_nan()).count();
        prop_assert_eq!(unused, 0, "{} of {} scratch elements unused by {}", unused, need, conv.algorithm());
    }
}

/// A-like real layer shapes (scaled spatially so the test stays fast) through every algorithm.
#[test]
fn a0_like_layer_shapes() -> Result<(), TestCaseError> {
    let shapes = [
        (3, 48, 2, 17, 1, 2),
        (48, 48, 1, 14, 1, 2),
        (48, 96, 2, 14, 1, 1),
        (96, 96, 1, 9, 1, 1),
        (192, 192, 1, 7, 1, 1),
        (192, 192, 1, 7, 4, 1),
        (192, 256, 2, 7, 1, 1),
        // Enough tiles (>= F4_MIN_TILES) for Auto to pick F(4x4) over F(2x2) at run time.
        (48, 48, 1, 30, 1, 1),
        (96, 96, 1, 29, 4, 1),
    ];
    for (i, &(cin, cout, stride, size, groups, n)) in shapes.iter().enumerate() {
        for algo in [ConvAlgo::Auto, ConvAlgo::Gemm] {
            let spec = ConvSpec::new(cin, cout, 3, stride, 1, groups).map_err(fail)?;
            check(&Case {
                spec,
                n,
                h: size,
                w: size,
                seed: i as u64,
                algo,
                scale: i % 2 == 0,
                relu: true,
                accumulate: i % 3 == 0,
            })?;
        }
    }
    Ok(())
}

/// Winograd runs large enough to be cut into several chunks of tile rows (128 tiles a chunk):
/// a chunk that does not start at tile row 0 must transform its own tiles, in and out. Batches
/// of 3 and 4 images of 33x33 give F(4x4) 243 and 324 tiles (with 2 threads: 2 ragged chunks
/// of 14 + 13 tile rows, 4 chunks of 9) and F(2x2) 867 and 1156 tiles (8 and 10 chunks).
#[test]
fn winograd_runs_in_several_chunks() -> Result<(), TestCaseError> {
    for (i, (tile, n)) in [(Tile::F4, 3), (Tile::F4, 4), (Tile::F2, 3), (Tile::F2, 4)]
        .into_iter()
        .enumerate()
    {
        let spec = ConvSpec::new(5, 7, 3, 1, 1, 1).map_err(fail)?;
        check(&Case {
            spec,
            n,
            h: 33,
            w: 33,
            seed: 100 + i as u64,
            algo: ConvAlgo::Winograd(tile),
            scale: true,
            relu: i % 2 == 0,
            accumulate: i % 2 == 1,
        })?;
    }
    Ok(())
}

/// Runs of several chunks on pools of 3 and 4 threads: the chunks are cut into one group per
/// thread, and with more than two groups the split recurses into groups that do not start at
/// chunk 0 (with 2 threads every split starts there). Winograd F(4x4) and F(2x2) and an
/// im2col GEMM (3 images of 33x33: 3267 pixels, chunks of at most 1024).
#[test]
fn several_chunks_on_three_and_four_threads() -> Result<(), TestCaseError> {
    for threads in [3, 4] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(fail)?;
        for (i, algo) in [
            ConvAlgo::Winograd(Tile::F4),
            ConvAlgo::Winograd(Tile::F2),
            ConvAlgo::Gemm,
        ]
        .into_iter()
        .enumerate()
        {
            let spec = ConvSpec::new(5, 7, 3, 1, 1, 1).map_err(fail)?;
            pool.install(|| {
                check(&Case {
                    spec,
                    n: 3,
                    h: 33,
                    w: 33,
                    seed: 200 + (threads * 10 + i) as u64,
                    algo,
                    scale: true,
                    relu: i % 2 == 0,
                    accumulate: i % 2 == 1,
                })
            })?;
        }
    }
    Ok(())
}

/// The element-wise ops: identity BN added to a sum, SE, ReLU, and liveness (a chain longer than
/// two buffers), against an f64 computation of the same graph.
#[test]
fn network_ops_match_f64() -> Result<(), TestCaseError> {
    let (n, c, h, w) = (2, 20, 9, 7);
    let mut rng = Rng(7);
    let x =
        Array4::from_shape_vec((n, c, h, w), rng.vec(n * c * h * w, -1.0, 1.0)).map_err(fail)?;
    let spec = ConvSpec::new(c, c, 3, 1, 1, 1).map_err(fail)?;
    let w1 = Array4::from_shape_vec((c, c, 3, 3), rng.vec(c * c * 9, -0.3, 0.3)).map_err(fail)?;
    let w2 = Array4::from_shape_vec((c, c, 3, 3), rng.vec(c * c * 9, -0.3, 0.3)).map_err(fail)?;
    let (sc, sh) = (rng.vec(c, 0.5, 1.5), rng.vec(c, -0.2, 0.2));
    // A train-form 1x1 branch with its BN, added into the 3x3 branch's output.
    let spec1 = ConvSpec::new(c, c, 1, 1, 0, 1).map_err(fail)?;
    let w3 = Array4::from_shape_vec((c, c, 1, 1), rng.vec(c * c, -0.3, 0.3)).map_err(fail)?;
    let (sc1, sh1) = (rng.vec(c, 0.5, 1.5), rng.vec(c, -0.2, 0.2));
    let hidden = 4;
    let fc1 = Array2::from_shape_vec((hidden, c), rng.vec(hidden * c, -0.5, 0.5)).map_err(fail)?;
    let fc1b = rng.vec(hidden, -0.1, 0.1);
    let fc2 = Array2::from_shape_vec((c, hidden), rng.vec(hidden * c, -0.5, 0.5)).map_err(fail)?;
    let fc2b = rng.vec(c, -0.1, 0.1);
    let head_w = Array2::from_shape_vec((3, c), rng.vec(3 * c, -1.0, 1.0)).map_err(fail)?;
    let head_b = rng.vec(3, -1.0, 1.0);

    let mut b = NetworkBuilder::new(CpuOptions {
        threads: Some(2),
        algo: ConvAlgo::Gemm,
    });
    let t0 = b.input(c).map_err(fail)?;
    let t1 = b
        .conv(t0, w1.view(), spec, Epilogue::new().relu())
        .map_err(fail)?;
    let t2 = b
        .conv(t1, w2.view(), spec, Epilogue::default())
        .map_err(fail)?;
    let bn1 = Epilogue::affine(sc1.clone(), sh1.clone()).with_residual(t2);
    let t2 = b.conv(t1, w3.view(), spec1, bn1).map_err(fail)?;
    let t2 = b
        .affine_add(t1, sc.clone(), sh.clone(), t2, false)
        .map_err(fail)?;
    let t2 = b
        .squeeze_excite(t2, fc1.view(), &fc1b, fc2.view(), &fc2b, true)
        .map_err(fail)?;
    let t3 = b
        .conv(t2, w1.view(), spec, Epilogue::default())
        .map_err(fail)?;
    let t3 = b.relu(t3).map_err(fail)?;
    b.output(t1).map_err(fail)?;
    b.head(t3, head_w.view(), &head_b).map_err(fail)?;
    let net = b.build().map_err(fail)?;
    let got = net.run(x.view()).map_err(fail)?;
    // Twice: the second run reuses the pooled workspace and must give the same bits.
    let again = net.run(x.view()).map_err(fail)?;
    prop_assert_eq!(&got, &again);

    let conv = |a: &Array4<f64>, wt: &Array4<f32>| {
        conv2d_reference(a.view(), to_f64(wt).view(), None, &spec)
    };
    let y1 = conv(&to_f64(&x), &w1).map_err(fail)?.mapv(|v| v.max(0.0));
    let mut y2 = conv(&y1, &w2).map_err(fail)?;
    let one = conv2d_reference(y1.view(), to_f64(&w3).view(), None, &spec1).map_err(fail)?;
    for ((b_, ch, yy, xx), v) in y2.indexed_iter_mut() {
        *v += one[[b_, ch, yy, xx]] * f64::from(sc1[ch]) + f64::from(sh1[ch]);
        *v += y1[[b_, ch, yy, xx]] * f64::from(sc[ch]) + f64::from(sh[ch]);
    }
    // SE then ReLU.
    for mut img in y2.outer_iter_mut() {
        let mean: Array1<f64> = img
            .mean_axis(Axis(2))
            .and_then(|a| a.mean_axis(Axis(1)))
            .ok_or_else(|| fail("mean"))?;
        let hid: Vec<f64> = (0..hidden)
            .map(|j| {
                ((0..c)
                    .map(|k| f64::from(fc1[[j, k]]) * mean[k])
                    .sum::<f64>()
                    + f64::from(fc1b[j]))
                .max(0.0)
            })
            .collect();
        for (ch, mut plane) in img.outer_iter_mut().enumerate() {
            let z = (0..hidden)
                .map(|j| f64::from(fc2[[ch, j]]) * hid[j])
                .sum::<f64>()
                + f64::from(fc2b[ch]);
            let g = 1.0 / (1.0 + (-z).exp());
            plane.mapv_inplace(|v| (v * g).max(0.0));
        }
    }
    let y3 = conv(&y2, &w1).map_err(fail)?.mapv(|v| v.max(0.0));
    for (i, img) in y3.outer_iter().enumerate() {
        let mean = img
            .mean_axis(Axis(2))
            .and_then(|a| a.mean_axis(Axis(1)))
            .ok_or_else(|| fail("mean"))?;
        for k in 0..3 {
            let want = (0..c)
                .map(|j| f64::from(head_w[[k, j]]) * mean[j])
                .sum::<f64>()
                + f64::from(head_b[k]);
            let g = f64::from(got.logits[[i, k]]);
            prop_assert!(
                g.is_finite() && (g - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "logit [{i},{k}]: {g} vs {want}"
            );
        }
    }
    for (g, r) in got.outputs[0].iter().zip(y1.iter()) {
        prop_assert!(g.is_finite() && (f64::from(*g) - r).abs() <= 1e-5 * (1.0 + r.abs()));
    }
    Ok(())
}

/// Bad wiring and bad weights are errors that name the problem, never panics.
#[test]
fn builder_errors_name_the_problem() {
    let spec = ConvSpec::new(4, 8, 3, 1, 1, 1).expect("spec");
    let w = Array4::<f32>::zeros((8, 4, 3, 3));
    let mut b = NetworkBuilder::new(CpuOptions::default());
    let x = b.input(3).expect("input");
    let e = b
        .conv(x, w.view(), spec, Epilogue::default())
        .expect_err("channel mismatch");
    assert!(e.to_string().contains("input channels"), "{e}");
    let mut b = NetworkBuilder::new(CpuOptions::default());
    let x = b.input(4).expect("input");
    let mut bad = w.clone();
    bad[[0, 0, 0, 0]] = f32::NAN;
    let e = b
        .conv(x, bad.view(), spec, Epilogue::default())
        .expect_err("NaN weight");
    assert!(e.to_string().contains("NaN"), "{e}");
    let e = b
        .conv(x, w.view(), spec, Epilogue::bias(vec![0.0; 3]))
        .expect_err("short bias");
    assert!(e.to_string().contains("bias"), "{e}");
    let e = b
        .conv(
            x,
            w.view(),
            spec,
            Epilogue::new().with_activation(Activation::Sigmoid),
        )
        .expect_err("sigmoid epilogue");
    assert!(e.to_string().contains("sigmoid"), "{e}");
    let e = b
        .conv(x, w.view(), spec, Epilogue::new().with_residual(x))
        .expect_err("residual of the input's channels");
    assert!(e.to_string().contains("residual channels"), "{e}");
    let y = b
        .conv(x, w.view(), spec, Epilogue::default())
        .expect("conv");
    let hw = Array2::<f32>::zeros((2, 8));
    b.head(y, hw.view(), &[0.0, 0.0]).expect("head");
    let net = b.build().expect("build");
    let e = net
        .run(Array4::<f32>::zeros((1, 5, 4, 4)).view())
        .expect_err("wrong channels");
    assert!(e.to_string().contains("network input"), "{e}");
    let e = net
        .run(Array4::<f32>::zeros((0, 4, 4, 4)).view())
        .expect_err("empty batch");
    assert!(e.to_string().contains("network input"), "{e}");
}

/// Auto keeps both Winograd tiles from WIDE input channels and picks per run: F(2x2) while a
/// run has fewer than F4_MIN_TILES F(4x4) tiles (batch 1, small maps), F(4x4) from there; below
/// WIDE channels only F(2x2) exists.
#[test]
fn auto_picks_the_winograd_tile_by_run_size() {
    let prep = |cin: usize, groups: usize| {
        let spec = ConvSpec::new(cin, cin, 3, 1, 1, groups).expect("spec");
        let w = Array4::<f32>::from_elem((cin, cin / groups, 3, 3), 0.5);
        PreparedConv::new(w.view(), spec, Epilogue::default(), ConvAlgo::Auto).expect("conv")
    };
    let wide = prep(repvgg_cpu::WIDE, 4);
    assert_eq!(wide.algorithm(), "winograd-f4|f2");
    // 14x14 -> 4x4 = 16 F(4x4) tiles per image.
    let side = 14;
    let per_image = (side / 4 + 1) * (side / 4 + 1);
    let small = repvgg_cpu::F4_MIN_TILES.div_ceil(per_image) - 1;
    let g = |n: usize| wide.geometry(n, side, side).expect("geometry");
    assert_eq!(wide.algorithm_for(&g(small)), "winograd-f2");
    assert_eq!(wide.algorithm_for(&g(small + 1)), "winograd-f4");
    let narrow = prep(repvgg_cpu::WIDE - 1, 1);
    assert_eq!(narrow.algorithm(), "winograd-f2");
    assert_eq!(
        narrow.algorithm_for(&narrow.geometry(64, 56, 56).expect("geometry")),
        "winograd-f2"
    );
}

/// `executed_macs` counts what each algorithm multiplies: the direct count for GEMM and
/// im2col, tiles x (m + 2)^2 positions x (in / groups) x out for Winograd F(m x m); a network
/// adds its convs (accumulating branches included) and its head.
#[test]
fn executed_macs_count_what_each_algorithm_multiplies() {
    // 3 images of 10x10, 8 -> 16 channels in 2 groups: 4 x 16 = 64 multiply-adds per tap.
    let spec = ConvSpec::new(8, 16, 3, 1, 1, 2).expect("spec");
    let w = Array4::<f32>::from_elem((16, 4, 3, 3), 0.5);
    let prep = |algo| PreparedConv::new(w.view(), spec, Epilogue::default(), algo).expect("conv");
    let g = prep(ConvAlgo::Gemm).geometry(3, 10, 10).expect("geometry");
    let direct = 3 * 100 * 64 * 9;
    for (algo, executed) in [
        (ConvAlgo::Gemm, direct),
        // ceil(10 / 2)^2 = 25 tiles of 4x4 = 16 positions.
        (ConvAlgo::Winograd(Tile::F2), 3 * 25 * 16 * 64),
        // ceil(10 / 4)^2 = 9 tiles of 6x6 = 36 positions.
        (ConvAlgo::Winograd(Tile::F4), 3 * 9 * 36 * 64),
    ] {
        let conv = prep(algo);
        assert_eq!(conv.direct_macs(&g), direct, "{algo:?}");
        assert_eq!(conv.executed_macs(&g), executed, "{algo:?}");
    }
    // Stride 2 runs as im2col + GEMM under every choice: 5x5 outputs, direct.
    let s2 = ConvSpec::new(8, 16, 3, 2, 1, 2).expect("spec");
    let conv = PreparedConv::new(
        w.view(),
        s2,
        Epilogue::default(),
        ConvAlgo::Winograd(Tile::F2),
    )
    .expect("conv");
    let g2 = conv.geometry(3, 10, 10).expect("geometry");
    assert_eq!(conv.executed_macs(&g2), 3 * 25 * 64 * 9);

    // A network: the F(2x2) conv, a 1x1 branch accumulated into it (16 -> 16, 100 pixels),
    // and a head of 5 classes.
    let mut b = NetworkBuilder::new(CpuOptions {
        algo: ConvAlgo::Winograd(Tile::F2),
        ..CpuOptions::default()
    });
    let x = b.input(8).expect("input");
    let y = b
        .conv(x, w.view(), spec, Epilogue::default())
        .expect("conv");
    let one = ConvSpec::new(8, 16, 1, 1, 0, 1).expect("spec");
    let w1 = Array4::<f32>::from_elem((16, 8, 1, 1), 0.25);
    let y = b
        .conv(x, w1.view(), one, Epilogue::new().with_residual(y))
        .expect("1x1 branch");
    let hw = Array2::<f32>::zeros((5, 16));
    b.head(y, hw.view(), &[0.0; 5]).expect("head");
    let net = b.build().expect("build");
    assert_eq!(
        net.executed_macs(3, 10, 10).expect("macs"),
        3 * 25 * 16 * 64 + 3 * 100 * 8 * 16 + 3 * 16 * 5
    );
}
