//! Winograd execution of a 3x3 stride-1 conv on NHWC activations (the transforms themselves are
//! in [`crate::winograd`]): per chunk of tile rows, the input transform (one SIMD vector of
//! channels per step), one GEMM per transformed position over `(tiles x in) · (in x out)`, and
//! the output transform with the epilogue; plus the weights' transform at preparation.

use core::marker::PhantomData;

use ndarray::ArrayView4;
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;
use repvgg_math::ConvSpec;

use crate::aligned::AlignedVec;
use crate::conv::{Geometry, PreparedConv};
use crate::gemm;
use crate::winograd::{self, Tile, Transform1d};

/// The kernels of `weight` transformed for `tile` (in f64), packed per group and position.
pub(crate) fn pack_winograd(weight: &ArrayView4<'_, f32>, s: &ConvSpec, tile: Tile) -> AlignedVec {
    let (cout_g, cin_g) = (s.out_channels / s.groups, s.in_channels / s.groups);
    let npos = tile.positions();
    // t[g][co][ci][pos], transformed in f64.
    let mut t = vec![0.0f32; s.groups * cout_g * cin_g * npos];
    for g in 0..s.groups {
        for co in 0..cout_g {
            for ci in 0..cin_g {
                let mut k = [[0.0f64; 3]; 3];
                for (ky, row) in k.iter_mut().enumerate() {
                    for (kx, v) in row.iter_mut().enumerate() {
                        *v = f64::from(weight[[g * cout_g + co, ci, ky, kx]]);
                    }
                }
                let at = ((g * cout_g + co) * cin_g + ci) * npos;
                for (pos, v) in tile.transform_kernel(&k).into_iter().enumerate() {
                    t[at + pos] = v as f32;
                }
            }
        }
    }
    // u[g][pos], packed straight into the aligned buffer.
    let per_matrix = gemm::packed_len(cin_g, cout_g);
    let mut u = AlignedVec::filled(s.groups * npos * per_matrix, 0.0);
    for (i, ui) in u.chunks_exact_mut(per_matrix).enumerate() {
        let (g, pos) = (i / npos, i % npos);
        gemm::pack_into(ui, cin_g, cout_g, |ci, co| {
            t[((g * cout_g + co) * cin_g + ci) * npos + pos]
        });
    }
    u
}

/// One Winograd convolution run.
pub(crate) struct WinogradRun<'a> {
    pub conv: &'a PreparedConv,
    pub tile: Tile,
    /// The transformed weights, `u[g][pos]` packed in panels.
    pub u: &'a [f32],
    /// The NHWC input.
    pub x: &'a [f32],
    pub g: &'a Geometry,
    /// Tile rows per image.
    pub th: usize,
    pub arch: Arch,
}

impl WinogradRun<'_> {
    /// Tile rows `r0..r1` (over n * th): transforms, GEMMs, output transform into `region`.
    pub(crate) fn chunk(
        &self,
        r0: usize,
        r1: usize,
        region: &mut [f32],
        slot: &mut [f32],
        inner_par: bool,
        offset: &(dyn Fn(usize) -> usize + Sync),
    ) {
        let s = &self.conv.spec;
        let (cin, cout, groups) = (s.in_channels, s.out_channels, s.groups);
        let (cin_g, cout_g) = (cin / groups, cout / groups);
        let npos = self.tile.positions();
        let tw = self.g.ow.div_ceil(self.tile.m());
        let tiles = (r1 - r0) * tw;
        let (v, rest) = slot.split_at_mut(tiles * npos * cin);
        let mbuf = &mut rest[..npos * tiles * cout];

        // 1. Input transform: v[t][pos][ci].
        let tile_len = npos * cin;
        let per_task = (tiles / (4 * rayon::current_num_threads())).max(1);
        let input = |(i, vt): (usize, &mut [f32])| {
            let t0 = r0 * tw + i * per_task;
            match self.tile {
                Tile::F2 => self.arch.dispatch(InputTiles::<winograd::F2, 4, 2> {
                    run: self,
                    t0,
                    tw,
                    transform: PhantomData,
                    v: vt,
                }),
                Tile::F4 => self.arch.dispatch(InputTiles::<winograd::F4, 6, 4> {
                    run: self,
                    t0,
                    tw,
                    transform: PhantomData,
                    v: vt,
                }),
            }
        };
        if inner_par {
            v.par_chunks_mut(per_task * tile_len)
                .enumerate()
                .for_each(input);
        } else {
            v.chunks_mut(per_task * tile_len)
                .enumerate()
                .for_each(input);
        }

        // 2. One GEMM per position (and group): m[pos][t][co] = v[t][pos][:] · u[pos].
        let panels = gemm::packed_len(cin_g, cout_g);
        let gemm_pos = |(pos, mp): (usize, &mut [f32])| {
            for gi in 0..groups {
                let ub = (gi * npos + pos) * panels;
                gemm::gemm(
                    tiles,
                    cin_g,
                    cout_g,
                    &v[pos * cin + gi * cin_g..],
                    npos * cin,
                    &self.u[ub..ub + panels],
                    &mut mp[gi * cout_g..],
                    cout,
                    None,
                    false,
                );
            }
        };
        if inner_par {
            mbuf.par_chunks_mut(tiles * cout)
                .enumerate()
                .for_each(gemm_pos);
        } else {
            mbuf.chunks_mut(tiles * cout).enumerate().for_each(gemm_pos);
        }

        // 3. Output transform, one tile row at a time (a disjoint band of output rows).
        let mbuf = &*mbuf;
        let base = offset(r0);
        let row = |r: usize, band: &mut [f32]| match self.tile {
            Tile::F2 => self.arch.dispatch(OutputRow::<winograd::F2, 4, 2> {
                run: self,
                r,
                first_tile: (r - r0) * tw,
                tiles,
                tw,
                transform: PhantomData,
                m: mbuf,
                band,
            }),
            Tile::F4 => self.arch.dispatch(OutputRow::<winograd::F4, 6, 4> {
                run: self,
                r,
                first_tile: (r - r0) * tw,
                tiles,
                tw,
                transform: PhantomData,
                m: mbuf,
                band,
            }),
        };
        split_rows(r0..r1, region, base, offset, inner_par, &row);
    }
}

/// Runs `f(r, band)` for every tile row in `rows`, `band` being its part of `region` (which
/// starts at element `base` of the output).
fn split_rows(
    rows: std::ops::Range<usize>,
    region: &mut [f32],
    base: usize,
    offset: &(dyn Fn(usize) -> usize + Sync),
    parallel: bool,
    f: &(dyn Fn(usize, &mut [f32]) + Sync),
) {
    if rows.len() == 1 || !parallel {
        let mut rest = region;
        let mut start = base;
        for r in rows {
            let end = offset(r + 1);
            let (band, tail) = rest.split_at_mut(end - start);
            f(r, band);
            rest = tail;
            start = end;
        }
        return;
    }
    let mid = rows.start + rows.len() / 2;
    let at = offset(mid) - base;
    let (a, b) = region.split_at_mut(at);
    rayon::join(
        || split_rows(rows.start..mid, a, base, offset, parallel, f),
        || split_rows(mid..rows.end, b, base + at, offset, parallel, f),
    );
}

struct InputTiles<'a, T, const A: usize, const M: usize> {
    run: &'a WinogradRun<'a>,
    /// Global index (over n * th * tw) of the first tile.
    t0: usize,
    tw: usize,
    transform: PhantomData<T>,
    /// `[tiles][pos][cin]`.
    v: &'a mut [f32],
}

impl<T: Transform1d<A, M>, const A: usize, const M: usize> WithSimd for InputTiles<'_, T, A, M> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let run = self.run;
        let g = run.g;
        let s = &run.conv.spec;
        let cin = s.in_channels;
        let m = A - 2;
        let pad = s.padding;
        let npos = A * A;
        let l = S::F32_LANES;
        let zero = simd.splat_f32s(0.0);
        for (i, vt) in self.v.chunks_exact_mut(npos * cin).enumerate() {
            let t = self.t0 + i;
            let (r, tx) = (t / self.tw, t % self.tw);
            let (n, ty) = (r / run.th, r % run.th);
            let y0 = ty * m;
            let x0 = tx * m;
            // Rows and columns of the tile inside the image (the rest is padding: zeros).
            let inside = |o: usize, e: usize| (o + A).saturating_sub(pad).min(e);
            let (ya, yb) = (y0.saturating_sub(pad), inside(y0, g.h));
            let (xa, xb) = (x0.saturating_sub(pad), inside(x0, g.w));
            // A tile wholly inside the image loads every value; an edge tile starts from zeros.
            let interior = inside_image(y0, A, pad, g.h) && inside_image(x0, A, pad, g.w);
            let mut c0 = 0;
            while c0 < cin {
                let cl = l.min(cin - c0);
                let d = if interior {
                    let src0 = ((n * g.h + y0 - pad) * g.w + x0 - pad) * cin + c0;
                    core::array::from_fn(|a| {
                        core::array::from_fn(|b| {
                            let src = src0 + (a * g.w + b) * cin;
                            load::<S>(simd, &run.x[src..src + cl])
                        })
                    })
                } else {
                    let mut d = [[zero; A]; A];
                    for (a, d_a) in d.iter_mut().enumerate() {
                        let iy = (y0 + a).wrapping_sub(pad);
                        if iy < ya || iy >= yb {
                            continue;
                        }
                        for (b, v) in d_a.iter_mut().enumerate() {
                            let ix = (x0 + b).wrapping_sub(pad);
                            if ix >= xa && ix < xb {
                                let src = ((n * g.h + iy) * g.w + ix) * cin + c0;
                                *v = load::<S>(simd, &run.x[src..src + cl]);
                            }
                        }
                    }
                    d
                };
                let out = winograd::sandwich::<S, T, A, M>(simd, &d);
                for (pos, v) in out.iter().flatten().enumerate() {
                    store::<S>(simd, &mut vt[pos * cin + c0..pos * cin + c0 + cl], *v);
                }
                c0 += cl;
            }
        }
    }
}

/// Whether the `a` input rows (or columns) of a tile that starts at output row `o` all lie in
/// the image (`extent` rows, `pad` of padding before it): rows `o - pad .. o - pad + a`.
#[inline(always)]
fn inside_image(o: usize, a: usize, pad: usize, extent: usize) -> bool {
    o >= pad && o + a - pad <= extent
}

/// Loads a vector from `src` (a full vector, or fewer values and zeros).
#[inline(always)]
fn load<S: Simd>(simd: S, src: &[f32]) -> S::f32s {
    if src.len() == S::F32_LANES {
        bytemuck::pod_read_unaligned(bytemuck::cast_slice(src))
    } else {
        simd.partial_load_f32s(src)
    }
}

/// Stores the first `dst.len()` lanes of `v`.
#[inline(always)]
fn store<S: Simd>(simd: S, dst: &mut [f32], v: S::f32s) {
    if dst.len() == S::F32_LANES {
        dst.copy_from_slice(bytemuck::cast_slice(core::slice::from_ref(&v)));
    } else {
        simd.partial_store_f32s(dst, v);
    }
}

struct OutputRow<'a, T, const A: usize, const M: usize> {
    run: &'a WinogradRun<'a>,
    /// Global tile row (over n * th).
    r: usize,
    /// Index of this row's first tile within the chunk.
    first_tile: usize,
    /// Tiles in the chunk.
    tiles: usize,
    tw: usize,
    transform: PhantomData<T>,
    /// `[pos][tile][cout]`.
    m: &'a [f32],
    /// The output rows of this tile row, NHWC.
    band: &'a mut [f32],
}

impl<T: Transform1d<A, M>, const A: usize, const M: usize> WithSimd for OutputRow<'_, T, A, M> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let run = self.run;
        let g = run.g;
        let conv = run.conv;
        let cout = conv.spec.out_channels;
        let ty = self.r % run.th;
        let rows_here = M.min(g.oh - ty * M);
        let (acc, relu) = (conv.accumulate, conv.relu);
        let l = S::F32_LANES;
        let zero = simd.splat_f32s(0.0);
        for tx in 0..self.tw {
            let t = self.first_tile + tx;
            let cols_here = M.min(g.ow - tx * M);
            let mut c0 = 0;
            while c0 < cout {
                let cl = l.min(cout - c0);
                let mut mb = [[zero; A]; A];
                for (pos, v) in mb.iter_mut().flatten().enumerate() {
                    let src = (pos * self.tiles + t) * cout + c0;
                    *v = load::<S>(simd, &self.m[src..src + cl]);
                }
                let y = winograd::output_sandwich::<S, T, A, M>(simd, &mb);
                let scale = load::<S>(simd, &conv.scale[c0..c0 + cl]);
                let shift = load::<S>(simd, &conv.shift[c0..c0 + cl]);
                for (i, y_i) in y.iter().enumerate().take(rows_here) {
                    for (j, &v) in y_i.iter().enumerate().take(cols_here) {
                        let dst = (i * g.ow + tx * M + j) * cout + c0;
                        let d = &mut self.band[dst..dst + cl];
                        let mut z = simd.mul_add_f32s(v, scale, shift);
                        if acc {
                            z = simd.add_f32s(z, load::<S>(simd, d));
                        }
                        if relu {
                            z = simd.max_f32s(z, zero);
                        }
                        store::<S>(simd, d, z);
                    }
                }
                c0 += cl;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::inside_image;

    /// The tile test against the rows themselves: an interior tile loads every value without
    /// checks, and one classed as an edge tile only costs a zero fill.
    #[test]
    fn interior_tiles_are_exactly_those_inside_the_image() {
        for a in [4usize, 6] {
            for pad in 0..=2 {
                for extent in 0..=12 {
                    for o in 0..=14 {
                        let rows_inside =
                            (0..a).all(|i| (o + i).checked_sub(pad).is_some_and(|r| r < extent));
                        assert_eq!(
                            inside_image(o, a, pad, extent),
                            rows_inside,
                            "tile at {o}, {a} rows, pad {pad}, extent {extent}"
                        );
                    }
                }
            }
        }
    }
}
