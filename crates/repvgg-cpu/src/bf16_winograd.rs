//! Winograd F(2x2, 3x3) for the bf16 convs on CPUs with AVX512-BF16 but no AMX: the 3x3
//! stride-1 convs run as 16 products of bf16 matrices (2.25x fewer multiply-adds than the
//! direct conv, whose `vdpbf16ps` sums already run near the CPU's peak).
//!
//! Per run of up to 32 output tiles (2 x 2 pixels each), on one thread:
//! 1. the input transform `Bᵀ d B` of each tile's 4 x 4 inputs, in f32 from the bf16 inputs
//!    (exact: sums and differences of at most four values), rounded to bf16 (to nearest, ties to
//!    even);
//! 2. per transformed position, the tiles times that position's transformed weights
//!    (`G g Gᵀ`, computed in f64 from the f32 weights, rounded to bf16) on the in-place vector
//!    kernel of [`crate::bf16_simd`], summed in f32;
//! 3. the output transform `Aᵀ m A` in f32, the bias, the ReLU and the rounding to bf16.
//!
//! The error: each product's operands are bf16 roundings of exact transformed values, so an
//! output lies within one bf16 rounding of the exact conv of the bf16 inputs plus `2⁻⁷ x` its
//! Winograd magnitude (`Σ |Aᵀ| (|G| |g| |G|ᵀ ⊙ |Bᵀ| |d| |B|) |A|` over the input channels) and
//! the f32 sums' bound; the tests check that bound against an f64 oracle.

use rayon::prelude::*;
use repvgg_math::ConvSpec;
use repvgg_math::winograd::Tile;

use crate::aligned::AlignedBytes;
use crate::bf16_simd::{self, Job, Store};
use crate::direct::MR;
use crate::error::{CpuError, Result};
use crate::int8::padded_n;

/// Tiles of one pass of the three steps: four blocks of [`MR`].
const TILES: usize = 4 * MR;

/// Transformed positions of a tile.
const POS: usize = 16;

/// Output columns per job when few tiles split the columns over the threads.
const SPLIT: usize = 48;

/// Whether the Winograd path runs `spec` on an `h x w` input: a 3x3 conv with stride 1,
/// padding 1 and one group, channels in whole vectors of 16 and whole tiles of output.
pub(crate) fn applies(spec: &ConvSpec, h: usize, w: usize) -> bool {
    repvgg_math::winograd::applies(spec)
        && spec.groups == 1
        && spec.in_channels.is_multiple_of(16)
        && spec.out_channels.is_multiple_of(16)
        && h.is_multiple_of(2)
        && w.is_multiple_of(2)
}

/// The transformed weights: per position, the `in x out` matrix rounded to bf16 and packed as
/// the bf16 convs pack theirs (`weight` `[out, in, 3, 3]`, f32).
pub(crate) fn pack(weight: &ndarray::ArrayView4<'_, f32>, spec: &ConvSpec) -> AlignedBytes {
    let (cin, cout) = (spec.in_channels, spec.out_channels);
    // u[co][ci][pos], in f64 from the f32 weights.
    let mut u = vec![0.0f64; cout * cin * POS];
    for co in 0..cout {
        for ci in 0..cin {
            let mut k = [[0.0f64; 3]; 3];
            for (ky, row) in k.iter_mut().enumerate() {
                for (kx, v) in row.iter_mut().enumerate() {
                    *v = f64::from(weight[[co, ci, ky, kx]]);
                }
            }
            let at = (co * cin + ci) * POS;
            u[at..at + POS].copy_from_slice(&Tile::F2.transform_kernel(&k));
        }
    }
    let per = cin * padded_n(cout) * 2;
    let mut out = AlignedBytes::zeroed(POS * per);
    for pos in 0..POS {
        let packed = crate::bf16::pack(cin, cout, |ci, co| u[(co * cin + ci) * POS + pos] as f32);
        out[pos * per..(pos + 1) * per].copy_from_slice(bytemuck::cast_slice(&packed));
    }
    out
}

/// One conv's run: what every pass shares.
struct Pass<'a> {
    spec: &'a ConvSpec,
    /// [`pack`]'s matrices.
    u: &'a [u8],
    bias: &'a [f32],
    /// Zeros, one per packed column: the products' own bias.
    zeros: &'a [f32],
    xp: &'a [u8],
    /// Padded input rows and columns.
    hp: usize,
    wp: usize,
    /// Tiles per row and per column of an image.
    th: usize,
    tw: usize,
    /// Padded output rows and columns, and the border.
    ohp: usize,
    owp: usize,
    q: usize,
}

impl Pass<'_> {
    /// Tile `t`'s (over the batch, row by row) image, tile row and tile column.
    fn tile(&self, t: usize) -> (usize, usize, usize) {
        let (img, rest) = (t / (self.th * self.tw), t % (self.th * self.tw));
        (img, rest / self.tw, rest % self.tw)
    }

    /// Value offset of tile `t`'s top left output pixel in the padded output.
    fn place(&self, t: usize) -> usize {
        let (img, ty, tx) = self.tile(t);
        ((img * self.ohp + 2 * ty + self.q) * self.owp + self.q + 2 * tx) * self.spec.out_channels
    }

    /// The input transforms of tiles `t0..` into `v` (`16 x in` values a tile, as many tiles
    /// as `v` holds).
    fn input(&self, t0: usize, v: &mut [u16]) {
        let cin = self.spec.in_channels;
        let xv: &[u16] = bytemuck::cast_slice(&self.xp[..self.xp.len() / 2 * 2]);
        for (i, vt) in v.chunks_exact_mut(POS * cin).enumerate() {
            let (img, ty, tx) = self.tile(t0 + i);
            let corner = ((img * self.hp + 2 * ty) * self.wp + 2 * tx) * cin;
            let done = bf16_simd::winograd_input(xv, corner, self.wp * cin, cin, vt);
            debug_assert!(
                done,
                "the bf16 Winograd path ran on a CPU without AVX512-BF16"
            );
        }
    }

    /// The products of `count` transformed tiles in `v` with the weights' columns `cols`, into
    /// `m` (f32 bytes, `[tile][position][cols]`), in runs of [`TILES`].
    fn products(&self, v: &[u8], count: usize, cols: std::ops::Range<usize>, m: &mut [u8]) {
        let (cin, cout) = (self.spec.in_channels, self.spec.out_channels);
        let width = cols.len();
        let per = cin * padded_n(cout) * 2;
        for r0 in (0..count).step_by(TILES) {
            let run = TILES.min(count - r0);
            let blocks = run.div_ceil(MR);
            let tile = |b: usize, r: usize| r0 + (b * MR + r).min(run - 1);
            let xs: [[usize; MR]; TILES / MR] =
                std::array::from_fn(|b| std::array::from_fn(|r| tile(b, r) * POS * cin * 2));
            let len = run - (blocks - 1) * MR;
            for pos in 0..POS {
                let taps = [pos * cin * 2];
                let job = Job {
                    x: v,
                    taps: &taps,
                    seg: cin * 2,
                    b: &self.u[pos * per..(pos + 1) * per],
                    n: cout,
                    bias: self.zeros,
                    cols: cols.clone(),
                    store: Store::F32,
                };
                let ys: [[usize; MR]; TILES / MR] = std::array::from_fn(|b| {
                    std::array::from_fn(|r| (tile(b, r) * POS + pos) * width * 4)
                });
                let done = bf16_simd::direct(&job, &xs[..blocks], &ys[..blocks], len, m);
                debug_assert!(
                    done,
                    "the bf16 Winograd path ran on a CPU without AVX512-BF16"
                );
            }
        }
    }

    /// Tiles `t0..t1` (over the batch, row by row) into `out`, which holds the output from
    /// byte `y0` on.
    fn tiles(&self, t0: usize, t1: usize, out: &mut [u8], y0: usize, bufs: &mut Buffers) {
        let (cin, cout) = (self.spec.in_channels, self.spec.out_channels);
        let count = t1 - t0;
        bufs.v.resize(count * POS * cin * 2);
        bufs.m.resize(count * POS * cout * 4);
        self.input(t0, bytemuck::cast_slice_mut(&mut bufs.v[..]));
        self.products(&bufs.v, count, 0..cout, &mut bufs.m);
        let m: &[f32] = bytemuck::cast_slice(&bufs.m[..]);
        let y: &mut [u16] = bytemuck::cast_slice_mut(out);
        for (i, mt) in m.chunks_exact(POS * cout).enumerate() {
            let at = self.place(t0 + i) - y0 / 2;
            let done = bf16_simd::winograd_output(mt, self.bias, cout, y, at, self.owp * cout);
            debug_assert!(
                done,
                "the bf16 Winograd path ran on a CPU without AVX512-BF16"
            );
        }
    }
}

/// Each worker's transformed tiles and products, kept between runs.
#[derive(Default)]
struct Buffers {
    v: AlignedBytes,
    m: AlignedBytes,
}

thread_local! {
    static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::new(Buffers::default());
    /// The calling thread's transformed tiles when the threads share them (few tiles).
    static SHARED: std::cell::RefCell<AlignedBytes> = std::cell::RefCell::new(AlignedBytes::default());
}

/// Runs the conv of `spec` ([`applies`]) with the transformed weights `u` ([`pack`]) and `bias`
/// on `xp`, its bf16 input stored with its padding of 1 (`n x (h + 2) x (w + 2) x in`), into
/// `y`, its bf16 output stored with a border of `q` pixels (not written); `bias` and `zeros`
/// hold [`padded_n`]`(out)` values.
///
/// # Errors
/// [`CpuError::Shape`] when `xp` or `y` are too short.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    spec: &ConvSpec,
    u: &[u8],
    bias: &[f32],
    xp: &[u8],
    (n, h, w): (usize, usize, usize),
    y: &mut [u8],
    q: usize,
    threads: usize,
) -> Result<()> {
    let (cin, cout) = (spec.in_channels, spec.out_channels);
    let (hp, wp, ohp, owp) = (h + 2, w + 2, h + 2 * q, w + 2 * q);
    for (what, len, want) in [
        ("input", xp.len(), n * hp * wp * cin * 2),
        ("output", y.len(), n * ohp * owp * cout * 2),
        ("weights", u.len(), POS * cin * padded_n(cout) * 2),
    ] {
        if len < want {
            return Err(CpuError::Shape {
                what: format!("bf16 Winograd {what}"),
                expected: vec![want],
                found: vec![len],
            });
        }
    }
    let (th, tw) = (h / 2, w / 2);
    let rows = n * th;
    if rows * tw == 0 {
        return Ok(());
    }
    let zeros = vec![0.0f32; padded_n(cout)];
    let pass = Pass {
        spec,
        u,
        bias,
        zeros: &zeros,
        xp,
        hp,
        wp,
        th,
        tw,
        ohp,
        owp,
        q,
    };
    let jobs = rows.min(4 * threads.max(1));
    let tiles = rows * tw;
    if tiles < jobs * TILES && threads > 1 && cout.div_ceil(SPLIT) >= 2 * threads {
        // Few tiles and many columns (late layers at small batches): jobs of tile rows would
        // each read all the weights for a short run. Instead every tile is transformed once, then the columns
        // split over the threads (each reading only its part of the weights), each job
        // writing its own block of outputs, copied into place after.
        // Buffers kept between runs: fresh ones of this size cost more in page faults than
        // the products.
        let mut v = SHARED.with_borrow_mut(std::mem::take);
        v.resize(tiles * POS * cin * 2);
        let per = (TILES * POS * cin * 2).min(v.len());
        v.par_chunks_mut(per).enumerate().for_each(|(i, vc)| {
            pass.input(i * per / (POS * cin * 2), bytemuck::cast_slice_mut(vc));
        });
        let blocks: Vec<(usize, usize, Vec<u16>)> = (0..cout.div_ceil(SPLIT))
            .into_par_iter()
            .map(|s| {
                let cols = s * SPLIT..((s + 1) * SPLIT).min(cout);
                let width = cols.len();
                let mut out = vec![0u16; tiles * 4 * width];
                BUFFERS.with_borrow_mut(|bufs| {
                    bufs.m.resize(tiles * POS * width * 4);
                    pass.products(&v, tiles, cols.clone(), &mut bufs.m);
                    let m: &[f32] = bytemuck::cast_slice(&bufs.m[..]);
                    // Tile by tile: its 2 x 2 pixels of `width` channels.
                    for (i, mt) in m.chunks_exact(POS * width).enumerate() {
                        let bias = &bias[cols.start..];
                        let done = bf16_simd::winograd_output(
                            mt,
                            bias,
                            width,
                            &mut out,
                            i * 4 * width,
                            2 * width,
                        );
                        debug_assert!(
                            done,
                            "the bf16 Winograd path ran on a CPU without AVX512-BF16"
                        );
                    }
                });
                (cols.start, width, out)
            })
            .collect();
        SHARED.with_borrow_mut(|shared| *shared = v);
        let yv: &mut [u16] = bytemuck::cast_slice_mut(&mut y[..n * ohp * owp * cout * 2]);
        for (c0, width, out) in blocks {
            for (t, block) in out.chunks_exact(4 * width).enumerate() {
                let at = pass.place(t) + c0;
                for (a, pair) in block.chunks_exact(2 * width).enumerate() {
                    let to = at + a * owp * cout;
                    for (b, px) in pair.chunks_exact(width).enumerate() {
                        yv[to + b * cout..to + b * cout + width].copy_from_slice(px);
                    }
                }
            }
        }
        return Ok(());
    }
    // Jobs of whole tile rows (two output rows each: a range of the output of its own), a few
    // per thread.
    let first_byte = |r: usize| {
        let (img, ty) = (r / th, r % th);
        ((img * ohp + 2 * ty + q) * owp + q) * cout * 2
    };
    let mut parts = Vec::with_capacity(jobs);
    let (mut rest, mut at) = (&mut y[..], 0);
    for j in 0..jobs {
        let (r0, r1) = (j * rows / jobs, (j + 1) * rows / jobs);
        let (start, end) = (first_byte(r0), first_byte(r1 - 1) + (owp + w) * cout * 2);
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(start - at);
        let (mine, tail) = tail.split_at_mut(end - start);
        rest = tail;
        at = end;
        parts.push((r0 * tw, r1 * tw, start, mine));
    }
    parts.into_par_iter().for_each(|(t0, t1, start, out)| {
        BUFFERS.with_borrow_mut(|bufs| {
            for a in (t0..t1).step_by(TILES) {
                pass.tiles(a, (a + TILES).min(t1), out, start, bufs);
            }
        });
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buffers one value short are refused by name before any kernel runs (on any CPU).
    #[test]
    fn short_buffers_are_refused_by_name() {
        let spec = ConvSpec::new(16, 32, 3, 1, 1, 1).unwrap();
        let (n, h, w, q) = (2, 4, 6, 1);
        let x_len = n * (h + 2) * (w + 2) * 16 * 2;
        let y_len = n * (h + 2 * q) * (w + 2 * q) * 32 * 2;
        let u_len = POS * 16 * padded_n(32) * 2;
        let bias = vec![0f32; padded_n(32)];
        for (what, x_len, y_len, u_len) in [
            ("input", x_len - 2, y_len, u_len),
            ("output", x_len, y_len - 2, u_len),
            ("weights", x_len, y_len, u_len - 2),
        ] {
            let (xp, u) = (vec![0u8; x_len], vec![0u8; u_len]);
            let mut y = vec![0u8; y_len];
            let e = run(&spec, &u, &bias, &xp, (n, h, w), &mut y, q, 2).unwrap_err();
            assert!(
                e.to_string().contains(&format!("bf16 Winograd {what}")),
                "{what}: {e}"
            );
        }
    }
}
