//! The safe half of the vector convs that read their input in place (AVX-512 VNNI for int8,
//! AVX512-BF16 for bf16), shared by both: how a conv reads its padded input ([`Reads`]), the
//! walk over output pixels in blocks of [`MR`], and the split over threads. Everything counts
//! bytes (a value is [`DirectConv::ELEM`] bytes), as [`crate::tiled`] does for the AMX tiles.
//!
//! Each pixel of a block has its own first tap in the input, so a block may run across output
//! rows and images: no pixel is computed twice and no block is short but the last.

use rayon::prelude::*;
use repvgg_math::ConvSpec;

use crate::error::{CpuError, Result};
use crate::tiled::TileConv;

/// Output pixels of a block: one register row each. Nine rows of three vectors keep 27 of the
/// 32 vector registers on sums, so that each vector of weights loaded serves nine products.
pub(crate) const MR: usize = 9;

/// Blocks one call of [`DirectConv::blocks`] takes (each vector of weights runs over all of
/// them before the next).
const RUN: usize = 16;

/// Output columns per job when the columns are split over the threads (three vectors of 16).
const SPLIT: usize = 48;

/// Vectors of 16 columns a direct kernel takes at once when `left` remain: three (24
/// accumulators) while that does not leave a single one, else two, a lone one only at the
/// end of a single vector.
pub(crate) fn vectors(left: usize) -> usize {
    match left {
        3.. if left != 4 => 3,
        1 => 1,
        _ => 2,
    }
}

/// How a conv reads its input stored with its padding: a pixel's sum runs over `taps`
/// segments of `seg` bytes (a multiple of four), segment `t` at byte `taps[t]` from the
/// pixel's first tap, in the order of the packed weights' steps. With `rows`, the segments are
/// kernel rows (`k` taps of `in` channels, consecutive values, the bytes past them meeting
/// zero weights) and the weights are the kernel rows' matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reads {
    pub taps: Vec<usize>,
    pub seg: usize,
    pub rows: bool,
}

impl Reads {
    /// How a conv of `spec` with values of `elem` bytes reads an input of `wp` padded columns:
    /// when a group's channels are whole groups of four bytes, kernel row by kernel row for
    /// one group (a row's taps are one run of values, so the kernels' loops run three times
    /// longer) and tap by tap for several; else (one group) by kernel rows rounded up to four
    /// bytes; `None` for grouped convs of other channel counts.
    pub(crate) fn of(spec: &ConvSpec, elem: usize, wp: usize) -> Option<Self> {
        let (k, cin) = (spec.kernel_size, spec.in_channels);
        let run = cin / spec.groups * elem;
        let kernel_rows = || (0..k).map(|ky| ky * wp * cin * elem).collect();
        if !run.is_multiple_of(4) {
            crate::tiled::rows_kc(spec, elem).map(|kc| Self {
                taps: kernel_rows(),
                seg: kc,
                rows: true,
            })
        } else if spec.groups == 1 {
            // A kernel row's taps lie next to each other: one segment of `k x in` values, in
            // the order of the packed weights' steps.
            Some(Self {
                taps: kernel_rows(),
                seg: k * run,
                rows: false,
            })
        } else {
            Some(Self {
                taps: (0..k * k)
                    .map(|t| ((t / k) * wp + t % k) * cin * elem)
                    .collect(),
                seg: run,
                rows: false,
            })
        }
    }
}

/// The checks both direct kernels rely on, panicking unless: `seg` is a positive multiple of
/// four bytes; `cols` starts at a multiple of 16 and lies within `n` columns; `xs` and `ys`
/// hold the same (positive) number of blocks and the last block `1..=MR` pixels; every pixel's
/// furthest segment ends inside the input of `x_len` bytes; and every stored pixel's `width`
/// bytes end inside the output of `y_len` bytes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_blocks(
    (x_len, taps, seg): (usize, &[usize], usize),
    cols: &std::ops::Range<usize>,
    n: usize,
    xs: &[[usize; MR]],
    ys: &[[usize; MR]],
    len: usize,
    (y_len, width): (usize, usize),
) {
    assert!(seg > 0 && seg.is_multiple_of(4), "segment of {seg} bytes");
    assert!(
        cols.start.is_multiple_of(16) && cols.start < cols.end && cols.end <= n,
        "columns {cols:?} of {n}"
    );
    assert!(
        !xs.is_empty() && xs.len() == ys.len(),
        "{} blocks of inputs for {} of outputs",
        xs.len(),
        ys.len()
    );
    assert!(len > 0 && len <= MR, "{len} rows in a block");
    let span = taps.iter().max().copied().unwrap_or(0) + seg;
    for &x in xs.iter().flatten() {
        assert!(x + span <= x_len, "pixel read past the input");
    }
    let stored = (ys.len() - 1) * MR + len;
    for &y in ys.iter().flatten().take(stored) {
        assert!(y + width <= y_len, "pixel written past the output");
    }
}

/// A conv the direct vector kernels run: one the AMX driver runs too (its value size, name,
/// geometry and padded input are [`TileConv`]'s), with a vector kernel for blocks of pixels.
pub(crate) trait DirectConv: TileConv {
    /// Runs blocks of pixels of group `g`, output columns `cols` of the group: block `b`'s
    /// pixel `r` reads `xp` from byte `xs[b][r]` on as `reads` says and stores its columns
    /// from byte `ys[b][r]` of `out` on; every pixel of every block but the last, of the last
    /// the first `len`. `false` when the CPU lacks the kernel (nothing done).
    #[allow(clippy::too_many_arguments)]
    fn blocks(
        &self,
        reads: &Reads,
        xp: &[u8],
        g: usize,
        cols: std::ops::Range<usize>,
        xs: &[[usize; MR]],
        ys: &[[usize; MR]],
        len: usize,
        out: &mut [u8],
    ) -> bool;
}

/// Runs `conv` on `xp`, its input stored with its padding (the border and the slack holding
/// the input's zero value), into `y` stored with a border of `q` pixels (`n x (oh + 2q) x
/// (ow + 2q) x out` values; the border is not written), reading as `reads` says.
///
/// # Errors
/// [`CpuError::Shape`] when `xp` or `y` are too short.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_padded<T: DirectConv>(
    conv: &T,
    reads: &Reads,
    xp: &[u8],
    (n, h, w): (usize, usize, usize),
    y: &mut [u8],
    q: usize,
    threads: usize,
) -> Result<()> {
    let s = conv.spec();
    let e = T::ELEM;
    let (oh, ow) = s.output_size(h, w)?;
    let (ohp, owp) = (oh + 2 * q, ow + 2 * q);
    let (cin, cout, groups) = (s.in_channels, s.out_channels, s.groups);
    for (what, len, want) in [
        ("input", xp.len(), crate::tiled::padded_len(conv, n, h, w)),
        ("output", y.len(), n * ohp * owp * cout * e),
    ] {
        if len < want {
            return Err(CpuError::Shape {
                what: format!("padded {} convolution {what}", T::NAME),
                expected: vec![want],
                found: vec![len],
            });
        }
    }
    let m = n * oh * ow;
    if m == 0 {
        return Ok(());
    }
    let (hp, wp) = (h + 2 * s.padding, w + 2 * s.padding);
    let (cin_g, cout_g) = (cin / groups, cout / groups);
    let blocks = m.div_ceil(MR);
    // Pixel `px`'s first tap in `xp` and its place in `y`, pixel by pixel from `p0` on (no
    // divisions per pixel: they cost as much as the stem's sums).
    let walk = |p0: usize| {
        let (img, rest) = (p0 / (oh * ow), p0 % (oh * ow));
        let (mut img, mut oy, mut ox) = (img, rest / ow, rest % ow);
        (p0..).map(move |px| {
            let at = (
                px,
                ((img * hp + oy * s.stride) * wp + ox * s.stride) * cin * e,
                ((img * ohp + oy + q) * owp + q + ox) * cout * e,
            );
            ox += 1;
            if ox == ow {
                (ox, oy) = (0, oy + 1);
                if oy == oh {
                    (oy, img) = (0, img + 1);
                }
            }
            at
        })
    };
    let place = |px: usize| walk(px).next().map_or(0, |(_, _, y)| y);
    // Runs pixels `p0..p1` of group `g`, columns `cols`, into `out`, pixel `px` of place `y`
    // at `out[at(px, y)..]`.
    let pixels = |g: usize,
                  cols: std::ops::Range<usize>,
                  (p0, p1): (usize, usize),
                  out: &mut [u8],
                  at: &dyn Fn(usize, usize) -> usize| {
        let x0 = g * cin_g * e;
        let mut next = walk(p0);
        for r0 in (p0..p1).step_by(RUN * MR) {
            let count = (RUN * MR).min(p1 - r0);
            let nb = count.div_ceil(MR);
            let (mut xs, mut ys) = ([[0; MR]; RUN], [[0; MR]; RUN]);
            for (i, (px, xb, yb)) in next.by_ref().take(count).enumerate() {
                (xs[i / MR][i % MR], ys[i / MR][i % MR]) = (xb + x0, at(px, yb));
            }
            // Rows past the last pixel read its input again and are not stored.
            let len = count - (nb - 1) * MR;
            for r in len..MR {
                (xs[nb - 1][r], ys[nb - 1][r]) = (xs[nb - 1][len - 1], ys[nb - 1][len - 1]);
            }
            let done = conv.blocks(reads, xp, g, cols.clone(), &xs[..nb], &ys[..nb], len, out);
            debug_assert!(done, "the {} vector path ran on a CPU without it", T::NAME);
        }
    };
    if blocks >= 4 * threads.max(1) || threads <= 1 {
        // Many pixels: runs of them over the threads, each running every column into the
        // output bytes its pixels own; blocks shared out evenly, a few runs per thread.
        let jobs = blocks.min(4 * threads.max(1));
        let mut parts = Vec::with_capacity(jobs);
        let (mut rest, mut at) = (&mut y[..], 0);
        for j in 0..jobs {
            let (p0, p1) = (
                j * blocks / jobs * MR,
                ((j + 1) * blocks / jobs * MR).min(m),
            );
            let (start, end) = (place(p0), place(p1 - 1) + cout * e);
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(start - at);
            let (mine, tail) = tail.split_at_mut(end - start);
            rest = tail;
            at = end;
            parts.push((p0, p1, start, mine));
        }
        parts.into_par_iter().for_each(|(p0, p1, start, out)| {
            for g in 0..groups {
                let at = |_, y: usize| y - start + g * cout_g * e;
                pixels(g, 0..cout_g, (p0, p1), out, &at);
            }
        });
    } else {
        // Few pixels (late layers at small batches): the columns split over the threads in
        // runs of three vectors, so that each weight byte is read once per run; each job
        // writes its own block, copied into place after.
        let per = cout_g.div_ceil(SPLIT);
        let parts: Vec<(usize, usize, Vec<u8>)> = (0..groups * per)
            .into_par_iter()
            .map(|jc| {
                let (g, c0) = (jc / per, jc % per * SPLIT);
                let cols = c0..(c0 + SPLIT).min(cout_g);
                let width = cols.len() * e;
                let mut out = vec![0u8; m * width];
                pixels(g, cols, (0, m), &mut out, &|px, _| px * width);
                ((g * cout_g + c0) * e, width, out)
            })
            .collect();
        for (c0, width, out) in parts {
            for ((_, _, at), orow) in walk(0).zip(out.chunks_exact(width)) {
                y[at + c0..at + c0 + width].copy_from_slice(orow);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn spec(cin: usize, cout: usize, k: usize, groups: usize) -> ConvSpec {
        ConvSpec::new(cin, cout, k, 1, k / 2, groups).unwrap()
    }

    /// The checks cover the stored places of every block, past the first too, and only
    /// those: the last block's rows past `len` are read (their inputs checked) but not stored.
    #[test]
    fn block_checks_cover_every_stored_place_and_only_those() {
        let (x_len, taps, seg) = (200, [0usize, 8], 4);
        let (n, width) = (16, 16);
        let y_len = 2 * MR * width;
        let xs = [[0usize; MR]; 2];
        let ys: [[usize; MR]; 2] = [
            std::array::from_fn(|r| r * width),
            std::array::from_fn(|r| (MR + r) * width),
        ];
        let run = |xs: [[usize; MR]; 2], ys: [[usize; MR]; 2], len: usize| {
            std::panic::catch_unwind(|| {
                check_blocks(
                    (x_len, &taps, seg),
                    &(0..n),
                    n,
                    &xs,
                    &ys,
                    len,
                    (y_len, width),
                );
            })
            .is_ok()
        };
        assert!(run(xs, ys, MR));
        // A stored place of the second block past the output.
        let mut far = ys;
        far[1][3] = y_len;
        assert!(!run(xs, far, MR));
        assert!(!run(xs, far, 4));
        // The same place past `len`: not stored, not checked.
        assert!(run(xs, far, 3));
        // Every row's input is read, past `len` too.
        let mut past = xs;
        past[1][5] = x_len - 8 - seg + 1;
        assert!(!run(past, ys, 2));
        past[1][5] = x_len - 8 - seg;
        assert!(run(past, ys, 2));
    }

    /// Convs and an input (`n, h, w`) with more pixels per job than one kernel call takes
    /// ([`RUN`] blocks) on one thread, and more than the few-pixel path's one call on many:
    /// one group, the stem's odd channels (kernel rows), two groups.
    pub(crate) fn several_calls() -> ([ConvSpec; 3], (usize, usize, usize)) {
        let stem = ConvSpec::new(3, 48, 3, 2, 1, 1).unwrap();
        let specs = [spec(8, 16, 3, 1), stem, spec(16, 32, 3, 2)];
        let (n, h, w) = (2, 40, 41);
        for s in &specs {
            let (oh, ow) = s.output_size(h, w).unwrap();
            assert!(n * oh * ow > 4 * RUN * MR, "one call per job");
        }
        (specs, (n, h, w))
    }

    /// Runs of three, never a lone vector after others: 4 = 2 + 2, 5 = 3 + 2, 7 = 3 + 2 + 2.
    #[test]
    fn vectors_run_in_threes_and_twos() {
        let runs = |mut left: usize| {
            let mut v = Vec::new();
            while left > 0 {
                let take = vectors(left);
                v.push(take);
                left -= take;
            }
            v
        };
        assert_eq!(runs(1), [1]);
        assert_eq!(runs(2), [2]);
        assert_eq!(runs(3), [3]);
        assert_eq!(runs(4), [2, 2]);
        assert_eq!(runs(5), [3, 2]);
        assert_eq!(runs(6), [3, 3]);
        assert_eq!(runs(7), [3, 2, 2]);
        assert_eq!(runs(12), [3, 3, 3, 3]);
        for n in 2..40 {
            assert!(!runs(n).contains(&1), "{n}: {:?}", runs(n));
        }
    }

    /// Whole groups of four bytes of channels are read by kernel rows in one group (`k x in`
    /// values a row), tap by tap in several, each tap `(ky x wp + kx) x in` values from the
    /// pixel's first (all channels of the input, not the group's); one group of other channel
    /// counts by kernel rows (`k x in` values rounded up to four bytes); in every case each row
    /// `wp x in` values below the last; grouped odd channels not at all.
    #[test]
    fn convs_read_tap_by_tap_or_by_kernel_rows() {
        let wp = 16;
        let taps3 = |c: usize, e: usize| -> Vec<usize> {
            [
                (0, 0),
                (0, 1),
                (0, 2),
                (1, 0),
                (1, 1),
                (1, 2),
                (2, 0),
                (2, 1),
                (2, 2),
            ]
            .iter()
            .map(|&(ky, kx)| (ky * wp + kx) * c * e)
            .collect()
        };
        let want = |taps: Vec<usize>, seg: usize, rows: bool| Some(Reads { taps, seg, rows });
        // One group: kernel rows of 3 x in values, each row `wp x in` values below the last.
        let rows3 = |c: usize, e: usize| vec![0, wp * c * e, 2 * wp * c * e];
        assert_eq!(
            Reads::of(&spec(192, 192, 3, 1), 1, wp),
            want(rows3(192, 1), 3 * 192, false)
        );
        assert_eq!(
            Reads::of(&spec(96, 96, 3, 1), 2, wp),
            want(rows3(96, 2), 3 * 192, false)
        );
        // Stride 2 reads the same rows from each pixel's first tap.
        assert_eq!(
            Reads::of(&ConvSpec::new(48, 96, 3, 2, 1, 1).unwrap(), 1, wp),
            want(rows3(48, 1), 3 * 48, false)
        );
        // Four groups of 16 channels: a group's 16 bytes, taps over all 64 channels.
        assert_eq!(
            Reads::of(&spec(64, 64, 3, 4), 1, wp),
            want(taps3(64, 1), 16, false)
        );
        // The stem: kernel rows of 3 x 3 values, 9 bytes read as 12 (u8), 18 as 20 (bf16).
        assert_eq!(
            Reads::of(&spec(3, 48, 3, 1), 1, wp),
            want(vec![0, wp * 3, 2 * wp * 3], 12, true)
        );
        assert_eq!(
            Reads::of(&spec(3, 48, 3, 1), 2, wp),
            want(vec![0, wp * 6, 2 * wp * 6], 20, true)
        );
        // A 1x1 conv reads one tap.
        assert_eq!(Reads::of(&spec(8, 8, 1, 1), 1, wp), want(vec![0], 8, false));
        assert_eq!(Reads::of(&spec(6, 4, 3, 2), 1, wp), None);
    }

    /// Runs `conv`'s kernel on two blocks of output pixels `0..MR + len` of one image `w`
    /// wide (its input `xp` padded by one pixel, `in_px` bytes a pixel), stored densely
    /// (`out_px` bytes a pixel), for every `len`; the rows past `len` of the last block point
    /// at their own places after them. Those must stay untouched and the others equal `want`
    /// (the conv's output, dense).
    pub(crate) fn last_block_stores_only_its_pixels<T: DirectConv>(
        conv: &T,
        xp: &[u8],
        w: usize,
        (in_px, out_px): (usize, usize),
        want: &[u8],
    ) {
        let spec = conv.spec();
        let reads = Reads::of(spec, T::ELEM, w + 2).unwrap();
        let first = |p: usize| ((p / w) * (w + 2) + p % w) * in_px;
        for len in 1..=MR {
            let xs = [
                std::array::from_fn(&first),
                std::array::from_fn(|r| first(MR + r.min(len - 1))),
            ];
            let ys = [
                std::array::from_fn(|r| r * out_px),
                std::array::from_fn(|r| (MR + r) * out_px),
            ];
            let mut out = vec![0xA5u8; 2 * MR * out_px];
            let cols = 0..spec.out_channels;
            assert!(conv.blocks(&reads, xp, 0, cols, &xs, &ys, len, &mut out));
            let done = (MR + len) * out_px;
            assert_eq!(&out[..done], &want[..done], "{} len {len}", T::NAME);
            assert!(
                out[done..].iter().all(|&v| v == 0xA5),
                "{} len {len}: rows past it stored",
                T::NAME
            );
        }
    }
}
