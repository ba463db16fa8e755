//! The safe half of the AMX convolutions, shared by the int8 and bf16 convs: which way a conv
//! reads its input ([`AmxMode`]), the pixel groups of a run, the split over threads, and the
//! jobs handed to [`crate::amx`]. Everything counts bytes (a value is [`TileConv::ELEM`] bytes),
//! so that one driver serves u8 and bf16 activations.

use rayon::prelude::*;
use repvgg_math::ConvSpec;

use crate::aligned::AlignedBytes;
use crate::amx::{self, Epilogue};
use crate::error::{CpuError, Result};
use crate::int8::{NR, panel_width, panels};

/// A conv the AMX driver runs: its geometry, its packed weights and how its sums are finished.
pub(crate) trait TileConv: Sync {
    /// Bytes of one activation value (input and output).
    const ELEM: usize;
    /// What the run's error messages call the conv ("int8", "bf16").
    const NAME: &'static str;
    /// The conv's channels, kernel, stride, padding and groups.
    fn spec(&self) -> &ConvSpec;
    /// Bytes of one packed weight column: a group's `k x k x in / groups` values, padded to
    /// whole groups of four bytes.
    fn kp(&self) -> usize;
    /// Group `g`'s packed weights (`[kp / 4][w][4]` bytes per panel) and epilogue; with `rows`,
    /// the [`AmxMode::Rows`] matrix (one group) instead.
    fn columns(&self, g: usize, rows: bool) -> (&[u8], Epilogue<'_>);
}

/// Pixel groups the AMX path gathers at a time for a conv of too few channels.
const GATHER_GROUPS: usize = 32;

/// Bytes of a kernel row the AMX gather copies as one fixed-size block (the stem's 3 x 3).
const SHORT_SPAN: usize = 16;

/// The largest multiple of four up to a tile row's bytes that divides `len` bytes.
fn amx_chunk(len: usize) -> Option<usize> {
    (1..=amx::MAX_KC / 4)
        .rev()
        .map(|q| q * 4)
        .find(|kc| len.is_multiple_of(*kc))
}

/// The tile row of [`AmxMode::Rows`] for `spec` with values of `elem` bytes, if it fits that
/// mode: one group, a pixel's channels not whole groups of four bytes, a kernel row of at most
/// a tile row's bytes (rounded up to four).
pub(crate) fn rows_kc(spec: &ConvSpec, elem: usize) -> Option<usize> {
    let kc = (spec.kernel_size * spec.in_channels * elem).next_multiple_of(4);
    (spec.groups == 1 && !(spec.in_channels * elem).is_multiple_of(4) && kc <= amx::MAX_KC)
        .then_some(kc)
}

/// Up to [`amx::MAX_ROWS`] output pixels of one tile: each one's first tap in the padded
/// input and its place in the output.
#[derive(Debug, Clone, Copy)]
struct Group {
    x: [usize; amx::MAX_ROWS],
    y: [usize; amx::MAX_ROWS],
    len: usize,
}

impl Group {
    /// The tile's pixels for [`amx::conv`], each row's output place `place(its place)`.
    fn pixels(&self, mut place: impl FnMut(usize) -> usize) -> amx::Pixels {
        let mut px = amx::Pixels {
            x: self.x[0],
            y: [0; amx::MAX_ROWS],
            len: self.len,
        };
        for (d, &at) in px.y.iter_mut().zip(&self.y).take(self.len) {
            *d = place(at);
        }
        px
    }
}

/// The pixel groups of a run, worked out when a job needs them (none stored: a batch of 8 has
/// thousands). Group `i` is a run of at most `rows` consecutive output pixels: within one
/// output row (`per_row` groups a row), or, `gathered`, across rows and images.
struct Layout {
    gathered: bool,
    rows: usize,
    per_row: usize,
    count: usize,
    /// Output pixels of the run (`n x oh x ow`).
    m: usize,
    oh: usize,
    ow: usize,
    /// Padded input rows and columns, the stride, bytes of an input pixel.
    hp: usize,
    wp: usize,
    stride: usize,
    in_px: usize,
    /// Padded output rows and columns, its border, bytes of an output pixel.
    ohp: usize,
    owp: usize,
    q: usize,
    out_px: usize,
}

impl Layout {
    /// Group `i`'s first pixel (its index in output order) and its number of pixels.
    fn span(&self, i: usize) -> (usize, usize) {
        if self.gathered {
            let p0 = i * self.rows;
            (p0, self.rows.min(self.m - p0))
        } else {
            let (line, part) = (i / self.per_row, i % self.per_row);
            let ox = part * self.rows;
            (line * self.ow + ox, self.rows.min(self.ow - ox))
        }
    }

    /// Group `i`'s pixels: their first taps and output places.
    fn group(&self, i: usize) -> Group {
        let (p0, len) = self.span(i);
        let mut g = Group {
            x: [0; amx::MAX_ROWS],
            y: [0; amx::MAX_ROWS],
            len,
        };
        let plane = self.oh * self.ow;
        let (mut img, rest) = (p0 / plane, p0 % plane);
        let (mut oy, mut ox) = (rest / self.ow, rest % self.ow);
        for r in 0..len {
            g.x[r] = ((img * self.hp + oy * self.stride) * self.wp + ox * self.stride) * self.in_px;
            g.y[r] = ((img * self.ohp + oy + self.q) * self.owp + self.q + ox) * self.out_px;
            ox += 1;
            if ox == self.ow {
                ox = 0;
                oy += 1;
                if oy == self.oh {
                    oy = 0;
                    img += 1;
                }
            }
        }
        g
    }
}

/// Groups one call of [`Pass::run`] takes (its pixels' places live on the stack).
const BATCH: usize = 32;

/// What every AMX job of one run shares.
struct Pass<'a, T> {
    conv: &'a T,
    mode: AmxMode,
    xp: &'a [u8],
    taps: &'a [usize],
    rows: usize,
    /// Bytes of a padded input row.
    row_bytes: usize,
}

impl<T: TileConv> Pass<'_, T> {
    /// The output columns of `panels` (per conv group) for the pixels of `chunk`, into `out`
    /// at the places of `pix` (its `y`; its `x` is `chunk`'s first taps).
    fn run(
        &self,
        chunk: &[Group],
        pix: &[amx::Pixels],
        panels: std::ops::Range<usize>,
        out: &mut [u8],
    ) {
        let s = self.conv.spec();
        let e = T::ELEM;
        let (cin, cout) = (s.in_channels, s.out_channels);
        let (cin_g, cout_g) = (cin / s.groups, cout / s.groups);
        let (c0, c1) = (panels.start * NR, (panels.end * NR).min(cout_g));
        // The packed columns of the range (panels before the last are all NR wide) of group
        // `g`'s matrix, or of the kernel rows' matrix when given its bytes per column `rows_kp`.
        let cols = |g: usize, rows_kp: Option<usize>| {
            let (wg, epi) = self.conv.columns(g, rows_kp.is_some());
            let kp = rows_kp.unwrap_or_else(|| self.conv.kp());
            let pc1 = c0
                + (panels.start..panels.end)
                    .map(|p| panel_width(cout_g, p))
                    .sum::<usize>();
            (&wg[c0 * kp..pc1 * kp], epi.columns(c0..pc1))
        };
        let mut local = pix.to_vec();
        match self.mode {
            AmxMode::Direct { kc } => {
                for g in 0..s.groups {
                    let (b, epi) = cols(g, None);
                    for (d, px) in local.iter_mut().zip(pix) {
                        d.x = px.x + g * cin_g * e;
                        for (dy, &py) in d.y.iter_mut().zip(&px.y).take(px.len) {
                            *dy = py + g * cout_g * e;
                        }
                    }
                    let job = amx::Job {
                        x: self.xp,
                        taps: self.taps,
                        stride: s.stride * cin * e,
                        kc,
                        chunks: cin_g * e / kc,
                        rows: self.rows,
                        b,
                        n: c1 - c0,
                        epi,
                    };
                    let done = amx::conv(&job, &local, out);
                    debug_assert!(done, "the AMX path ran on a CPU without it");
                }
            }
            AmxMode::Rows { kc } => {
                let (b, epi) = cols(0, Some(s.kernel_size * kc));
                let job = amx::Job {
                    x: self.xp,
                    taps: self.taps,
                    stride: s.stride * cin * e,
                    kc,
                    chunks: 1,
                    rows: self.rows,
                    b,
                    n: c1 - c0,
                    epi,
                };
                let done = amx::conv(&job, pix, out);
                debug_assert!(done, "the AMX path ran on a CPU without it");
            }
            AmxMode::Gathered { kc } => {
                // Each pixel's taps gathered into one row of `kp` bytes (a kernel row's taps are
                // `k x in` consecutive values of the padded input); bytes past the taps meet
                // zero weights (and hold zeros or copies of finite inputs).
                let kp = self.conv.kp();
                let (b, epi) = cols(0, None);
                let (k, rows) = (s.kernel_size, self.rows);
                let span = k * cin * e;
                let need = GATHER_GROUPS.min(chunk.len()) * rows * kp + SHORT_SPAN;
                GATHER.with_borrow_mut(|buf| {
                    if buf.len() < need {
                        *buf = AlignedBytes::zeroed(need);
                    }
                    for (sub, psub) in chunk
                        .chunks(GATHER_GROUPS)
                        .zip(local.chunks_mut(GATHER_GROUPS))
                    {
                        for (j, (g, px)) in sub.iter().zip(psub.iter_mut()).enumerate() {
                            for r in 0..g.len {
                                let dst = (j * rows + r) * kp;
                                // The steps past the taps (at most three bytes) meet zero
                                // weights: zeros, not what an earlier run left (bf16 bits of NaN
                                // would spoil the sum).
                                buf[dst + k * span..dst + kp].fill(0);
                                for ky in 0..k {
                                    let (from, to) =
                                        (g.x[r] + ky * self.row_bytes, dst + ky * span);
                                    if span <= SHORT_SPAN {
                                        // One fixed-size copy; what it writes past the span the
                                        // next copy overwrites, or it meets zero weights.
                                        buf[to..to + SHORT_SPAN]
                                            .copy_from_slice(&self.xp[from..from + SHORT_SPAN]);
                                    } else {
                                        buf[to..to + span]
                                            .copy_from_slice(&self.xp[from..from + span]);
                                    }
                                }
                            }
                            px.x = j * rows * kp;
                        }
                        let job = amx::Job {
                            x: &buf[..],
                            taps: &[0],
                            stride: kp,
                            kc,
                            chunks: kp / kc,
                            rows,
                            b,
                            n: c1 - c0,
                            epi,
                        };
                        let done = amx::conv(&job, psub, out);
                        debug_assert!(done, "the AMX path ran on a CPU without it");
                    }
                });
            }
        }
    }
}

thread_local! {
    /// Each worker's gathered rows ([`AmxMode::Gathered`]), kept between runs: allocating and
    /// zeroing them per job cost more than the gather.
    static GATHER: std::cell::RefCell<AlignedBytes> = std::cell::RefCell::new(AlignedBytes::default());
}

/// How the AMX path reads a conv's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AmxMode {
    /// Tiles straight from the padded input, tap by tap, `kc` bytes of channels at a time (a
    /// conv group's channels are whole groups of four bytes).
    Direct { kc: usize },
    /// Tiles straight from the padded input, one kernel row at a time: a row's `k` taps of
    /// `in` channels are consecutive values, read `kc` bytes at a time (the span rounded up to
    /// four bytes; the bytes past it meet zero weights). One group whose channels are not
    /// groups of four bytes and whose kernel row fits a tile row (the stem's 3 x 3 x 3).
    Rows { kc: usize },
    /// The taps of each pixel gathered into rows first, `kc` bytes at a time (one group whose
    /// channels are not groups of four bytes and whose kernel row is wider than a tile row;
    /// narrow outputs).
    Gathered { kc: usize },
}

/// How the AMX path runs `conv`, or `None` when it does not (grouped convs whose groups'
/// channels are not whole groups of four bytes).
pub(crate) fn mode<T: TileConv>(conv: &T) -> Option<AmxMode> {
    let s = conv.spec();
    let run = s.in_channels / s.groups * T::ELEM;
    if run.is_multiple_of(4) {
        amx_chunk(run).map(|kc| AmxMode::Direct { kc })
    } else if let Some(kc) = rows_kc(s, T::ELEM) {
        Some(AmxMode::Rows { kc })
    } else if s.groups == 1 {
        amx_chunk(conv.kp()).map(|kc| AmxMode::Gathered { kc })
    } else {
        None
    }
}

/// Bytes of the padded input [`run_padded`] reads for `n x h x w`: `[n][h + 2p][w + 2p][in]`
/// values and the slack the last tile's rows read past its end.
pub(crate) fn padded_len<T: TileConv>(conv: &T, n: usize, h: usize, w: usize) -> usize {
    let s = conv.spec();
    let p = s.padding;
    (n * (h + 2 * p) * (w + 2 * p) * s.in_channels + amx::MAX_ROWS * s.stride * s.in_channels)
        * T::ELEM
        + amx::MAX_KC
}

/// Copies `x` (`n x h x w` pixels of `px` bytes) into `xp` with a border of `p` pixels, the
/// border and whatever follows the images (the slack of [`padded_len`]) filled with `fill`.
/// Rows in parallel.
pub(crate) fn pad(
    x: &[u8],
    (n, h, w): (usize, usize, usize),
    px: usize,
    p: usize,
    fill: u8,
    xp: &mut [u8],
) {
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    let row = wp * px;
    let (body, slack) = xp.split_at_mut(n * hp * row);
    slack.fill(fill);
    if row == 0 {
        return;
    }
    body.par_chunks_mut(row).enumerate().for_each(|(r, dst)| {
        let (img, yy) = (r / hp, r % hp);
        if yy < p || yy >= h + p {
            dst.fill(fill);
            return;
        }
        let src = &x[((img * h + yy - p) * w) * px..((img * h + yy - p + 1) * w) * px];
        dst[..p * px].fill(fill);
        dst[p * px..(p + w) * px].copy_from_slice(src);
        dst[(p + w) * px..].fill(fill);
    });
}

/// Runs `conv` on `xp`, its input stored with its padding (the border and the slack holding
/// the input's zero value), into `y` stored with a border of `q` pixels (`n x (oh + 2q) x
/// (ow + 2q) x out` values; the border is not written), on the AMX tiles.
///
/// # Errors
/// [`CpuError::Shape`] when `xp` or `y` are too short; [`CpuError::Invalid`] when the conv
/// does not fit the AMX path ([`mode`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_padded<T: TileConv>(
    conv: &T,
    xp: &[u8],
    n: usize,
    h: usize,
    w: usize,
    y: &mut [u8],
    q: usize,
    threads: usize,
) -> Result<()> {
    let s = conv.spec();
    let e = T::ELEM;
    let Some(mode) = mode(conv) else {
        return Err(CpuError::Invalid(format!(
            "the AMX {} path needs whole groups of four bytes of input channels per conv \
             group, found {} channels of {e} bytes in each of {} groups",
            T::NAME,
            s.in_channels / s.groups,
            s.groups
        )));
    };
    let (oh, ow) = s.output_size(h, w)?;
    let (cin, cout, p, k) = (s.in_channels, s.out_channels, s.padding, s.kernel_size);
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    let (ohp, owp) = (oh + 2 * q, ow + 2 * q);
    for (what, len, want) in [
        ("input", xp.len(), padded_len(conv, n, h, w)),
        ("output", y.len(), n * ohp * owp * cout * e),
    ] {
        if len < want {
            return Err(CpuError::Shape {
                what: format!("padded {} {what}", T::NAME),
                expected: vec![want],
                found: vec![len],
            });
        }
    }
    if n * oh * ow == 0 {
        return Ok(());
    }
    let m = n * oh * ow;
    // Narrow outputs (the last stage's 7 x 7) fill whole tiles when gathered.
    let mode = match mode {
        AmxMode::Direct { .. } | AmxMode::Rows { .. }
            if s.groups == 1 && 2 * ow <= amx::MAX_ROWS && oh > 1 =>
        {
            match amx_chunk(conv.kp()) {
                Some(kc) => AmxMode::Gathered { kc },
                None => mode,
            }
        }
        m => m,
    };
    let gathered = matches!(mode, AmxMode::Gathered { .. });
    // Direct and rows: each output row in `per_row` runs of `rows` pixels (the last shorter),
    // a tile's rows `stride x in` values apart in the input; gathered: runs of consecutive
    // output pixels across rows and images.
    let per_row = ow.div_ceil(amx::MAX_ROWS);
    let rows = if gathered {
        amx::MAX_ROWS.min(m)
    } else {
        ow.div_ceil(per_row)
    };
    let layout = Layout {
        gathered,
        rows,
        per_row,
        count: if gathered {
            m.div_ceil(rows)
        } else {
            n * oh * per_row
        },
        m,
        oh,
        ow,
        hp,
        wp,
        stride: s.stride,
        in_px: cin * e,
        ohp,
        owp,
        q,
        out_px: cout * e,
    };
    let taps: Vec<usize> = match mode {
        // Each kernel row's first tap.
        AmxMode::Rows { .. } => (0..k).map(|ky| ky * wp * cin * e).collect(),
        _ => (0..k * k)
            .map(|t| ((t / k) * wp + t % k) * cin * e)
            .collect(),
    };
    let pass = Pass {
        conv,
        mode,
        xp,
        taps: &taps,
        rows,
        row_bytes: wp * cin * e,
    };
    let count = layout.count;
    let pairs = count.div_ceil(2);
    let np = panels(cout / s.groups);
    // Few pixels (late layers at small batches): about one job per thread, the panels split
    // between them first (each thread reads only its part of the weights, once for all its
    // pixel pairs), the pairs too when there are fewer panels than threads. Each job writes
    // its own block, copied into place after.
    if s.groups == 1 && threads > 1 && pairs < 4 * threads {
        let (col_parts, pair_parts) = split_few(np, pairs, threads);
        let (per_c, per_p) = (np.div_ceil(col_parts), pairs.div_ceil(pair_parts));
        let jobs: Vec<(usize, usize)> = (0..pairs)
            .step_by(per_p)
            .flat_map(|pr| (0..np).step_by(per_c).map(move |p0| (pr, p0)))
            .collect();
        // The groups of the pairs from `pr` on, in output order.
        let chunk_of = |pr: usize| -> Vec<Group> {
            (2 * pr..(2 * (pr + per_p)).min(count))
                .map(|i| layout.group(i))
                .collect()
        };
        let blocks: Vec<Block> = jobs
            .into_par_iter()
            .map(|(pr, p0)| {
                let chunk = chunk_of(pr);
                let p1 = (p0 + per_c).min(np);
                let (c0, c1) = (p0 * NR, (p1 * NR).min(cout));
                // Bytes of a block row.
                let cols = (c1 - c0) * e;
                let pixels = chunk.iter().map(|g| g.len).sum::<usize>();
                let mut out = vec![0u8; pixels * cols];
                // Rows of the block, in order.
                let mut row = 0;
                let pix: Vec<amx::Pixels> = chunk
                    .iter()
                    .map(|g| {
                        g.pixels(|_| {
                            row += 1;
                            (row - 1) * cols
                        })
                    })
                    .collect();
                for (c, px) in chunk.chunks(BATCH).zip(pix.chunks(BATCH)) {
                    pass.run(c, px, p0..p1, &mut out);
                }
                Block {
                    first: layout.span(2 * pr).0,
                    pixels,
                    at: c0 * e,
                    out,
                }
            })
            .collect();
        place_blocks(&layout, n, &blocks, y, threads);
        return Ok(());
    }
    // Jobs of whole pairs of groups, two per thread (the other workers wait for them
    // spinning: fewer, larger jobs read each weight fewer times), each with the output bytes its
    // pixels own (groups are in output order).
    let jobs = pairs.min(2 * threads.max(1)).max(1);
    let per_job = pairs.div_ceil(jobs) * 2;
    let mut parts = Vec::with_capacity(jobs);
    let mut rest = &mut y[..];
    let mut at = 0;
    for first in (0..count).step_by(per_job) {
        let end_group = (first + per_job).min(count);
        let last = layout.group(end_group - 1);
        let (start, end) = (layout.group(first).y[0], last.y[last.len - 1] + cout * e);
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(start - at);
        let (mine, tail) = tail.split_at_mut(end - start);
        rest = tail;
        at = end;
        parts.push((first..end_group, start, mine));
    }
    parts.into_par_iter().for_each(|(range, y0, out)| {
        let mut batch = Vec::with_capacity(BATCH);
        let mut pix = Vec::with_capacity(BATCH);
        for b0 in range.clone().step_by(BATCH) {
            batch.clear();
            batch.extend((b0..(b0 + BATCH).min(range.end)).map(|i| layout.group(i)));
            pix.clear();
            pix.extend(batch.iter().map(|g| g.pixels(|at| at - y0)));
            pass.run(&batch, &pix, 0..np, out);
        }
    });
    Ok(())
}

/// The outputs of one few-pixel job: rows of `out` for the `pixels` consecutive output pixels
/// from `first` (in output order), each holding the bytes of a pixel's outputs from byte `at`.
struct Block {
    first: usize,
    pixels: usize,
    at: usize,
    out: Vec<u8>,
}

/// Copies each block's rows to their pixels' places in `y` (`n` images): the padded output
/// rows split over the threads, each thread copying its rows' part of every block (so no
/// thread waits while one copies everything).
fn place_blocks(layout: &Layout, n: usize, blocks: &[Block], y: &mut [u8], threads: usize) {
    let (ow, q, px) = (layout.ow, layout.q, layout.out_px);
    let row_bytes = layout.owp * px;
    let rows = n * layout.ohp;
    let per = rows.div_ceil(threads.max(1)).max(1);
    y[..rows * row_bytes]
        .par_chunks_mut(per * row_bytes)
        .enumerate()
        .for_each(|(part, ys)| {
            for (r, yrow) in ys.chunks_exact_mut(row_bytes).enumerate() {
                let padded = part * per + r;
                let (img, py) = (padded / layout.ohp, padded % layout.ohp);
                if py < q || py >= q + layout.oh {
                    continue;
                }
                let p0 = (img * layout.oh + py - q) * ow;
                for b in blocks {
                    let cols = b.out.len() / b.pixels.max(1);
                    let (lo, hi) = (p0.max(b.first), (p0 + ow).min(b.first + b.pixels));
                    for p in lo..hi {
                        let dst = (q + p - p0) * px + b.at;
                        let src = (p - b.first) * cols;
                        yrow[dst..dst + cols].copy_from_slice(&b.out[src..src + cols]);
                    }
                }
            }
        });
}

/// How a run of few pixel pairs splits over `threads`: (column parts, pair parts) with at
/// least as many jobs as threads where the work allows, columns split first (each part is
/// whole panels of `np`), then the `pairs`.
fn split_few(np: usize, pairs: usize, threads: usize) -> (usize, usize) {
    let cols = np.min(threads).max(1);
    (cols, threads.div_ceil(cols).min(pairs).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bf16::Bf16Conv;
    use crate::int8::{ActQuant, QuantConv};
    use ndarray::Array4;

    fn int8(spec: ConvSpec) -> QuantConv {
        let c = spec.out_channels;
        let w = Array4::<i8>::zeros(spec.weight_shape());
        QuantConv::new(
            w.view(),
            &vec![1.0; c],
            &vec![0.0; c],
            spec,
            ActQuant::relu(1.0),
            1.0,
        )
        .unwrap()
    }

    fn bf16(spec: ConvSpec) -> Bf16Conv {
        let w = Array4::<f32>::zeros(spec.weight_shape());
        Bf16Conv::new(w.view(), &vec![0.0; spec.out_channels], spec).unwrap()
    }

    /// Few pixel pairs: one job per thread where the work allows, whole panels split first
    /// and never more parts than panels or pairs.
    #[test]
    fn few_pairs_split_the_panels_first() {
        assert_eq!(split_few(6, 7, 2), (2, 1));
        assert_eq!(split_few(40, 2, 2), (2, 1));
        assert_eq!(split_few(3, 5, 4), (3, 2));
        assert_eq!(split_few(1, 7, 4), (1, 4));
        assert_eq!(split_few(2, 1, 4), (2, 1));
        assert_eq!(split_few(6, 3, 1), (1, 1));
        for np in 1..12 {
            for pairs in 1..12 {
                for threads in 1..9 {
                    let (c, p) = split_few(np, pairs, threads);
                    assert!(c >= 1 && c <= np && p >= 1 && p <= pairs);
                    assert!(c * p >= threads.min(np * pairs), "{np} {pairs} {threads}");
                }
            }
        }
    }

    #[test]
    fn chunks_are_the_widest_multiple_of_four_bytes_that_divides() {
        assert_eq!(amx_chunk(192), Some(64));
        assert_eq!(amx_chunk(96), Some(48));
        assert_eq!(amx_chunk(200), Some(40));
        assert_eq!(amx_chunk(12), Some(12));
        assert_eq!(amx_chunk(6), None);
    }

    /// Each conv of A0's shapes reads its input the way the module docs say, in u8 and in bf16:
    /// the chunk is the widest tile row that divides a group's channel bytes, the stem reads
    /// kernel rows (9 or 18 bytes of taps in a 12- or 20-byte tile row), a kernel row wider
    /// than a tile row is gathered, and odd grouped channels have no AMX path.
    #[test]
    fn every_conv_shape_gets_its_amx_mode() {
        let spec = |cin, cout, groups| ConvSpec::new(cin, cout, 3, 1, 1, groups).unwrap();
        assert_eq!(mode(&int8(spec(3, 48, 1))), Some(AmxMode::Rows { kc: 12 }));
        assert_eq!(mode(&bf16(spec(3, 48, 1))), Some(AmxMode::Rows { kc: 20 }));
        assert_eq!(
            mode(&int8(spec(48, 48, 1))),
            Some(AmxMode::Direct { kc: 48 })
        );
        assert_eq!(
            mode(&bf16(spec(48, 48, 1))),
            Some(AmxMode::Direct { kc: 48 })
        );
        assert_eq!(
            mode(&int8(spec(192, 192, 1))),
            Some(AmxMode::Direct { kc: 64 })
        );
        assert_eq!(
            mode(&bf16(spec(96, 96, 1))),
            Some(AmxMode::Direct { kc: 64 })
        );
        assert_eq!(
            mode(&bf16(spec(16, 16, 4))),
            Some(AmxMode::Direct { kc: 8 })
        );
        // 3 x 22 bytes > 64: gathered in chunks of the packed column (200 bytes = 5 x 40).
        assert_eq!(
            mode(&int8(spec(22, 16, 1))),
            Some(AmxMode::Gathered { kc: 40 })
        );
        // 3 x 11 x 2 bytes > 64: 99 values padded to 100, 200 bytes.
        assert_eq!(
            mode(&bf16(spec(11, 16, 1))),
            Some(AmxMode::Gathered { kc: 40 })
        );
        assert_eq!(mode(&int8(spec(6, 4, 2))), None);
        assert_eq!(rows_kc(&spec(5, 8, 1), 2), Some(32));
        assert_eq!(rows_kc(&spec(8, 8, 1), 1), None);
    }

    #[test]
    fn short_buffers_are_refused_before_any_tile_runs() {
        let c = bf16(ConvSpec::new(8, 16, 3, 1, 1, 1).unwrap());
        let (n, h, w, q) = (2, 5, 4, 1);
        let xp = vec![0u8; padded_len(&c, n, h, w)];
        // The output with its border: 2 x 7 x 6 pixels of 16 values, two bytes each.
        let want = n * (h + 2 * q) * (w + 2 * q) * 16 * 2;
        let mut y = vec![0u8; want - 1];
        let e = run_padded(&c, &xp, n, h, w, &mut y, q, 1).unwrap_err();
        assert!(e.to_string().contains("padded bf16 output"), "{e}");
        let mut y = vec![0u8; want];
        let e = run_padded(&c, &xp[..xp.len() - 1], n, h, w, &mut y, q, 1).unwrap_err();
        assert!(e.to_string().contains("padded bf16 input"), "{e}");
        let odd = int8(ConvSpec::new(6, 4, 3, 1, 1, 2).unwrap());
        let e = run_padded(&odd, &xp, 1, 2, 2, &mut y, 0, 1).unwrap_err();
        assert!(e.to_string().contains("groups of four bytes"), "{e}");
    }

    #[test]
    fn padded_inputs_hold_the_border_and_the_last_tiles_slack() {
        let c = bf16(ConvSpec::new(6, 8, 3, 2, 1, 1).unwrap());
        // 2 images of (5 + 2) x (4 + 2) pixels of 6 values, then 16 rows of stride 2 x 6
        // values, two bytes each, and a tile row of slack.
        assert_eq!(
            padded_len(&c, 2, 5, 4),
            (2 * 7 * 6 * 6 + 16 * 2 * 6) * 2 + 64
        );
        let q = int8(ConvSpec::new(6, 8, 3, 2, 1, 1).unwrap());
        assert_eq!(padded_len(&q, 2, 5, 4), 2 * 7 * 6 * 6 + 16 * 2 * 6 + 64);
    }
}
