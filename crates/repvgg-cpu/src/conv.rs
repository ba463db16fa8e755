//! One convolution, prepared once (weights packed for its algorithm) and run many times on NHWC
//! activations, with a per-channel affine, an optional accumulation into the output and ReLU
//! fused into its epilogue.
//!
//! Algorithms:
//! * Winograd F(4x4,3x3) or F(2x2,3x3) for 3x3 stride-1 convs: input transform per tile
//!   (one SIMD vector of channels per step), one GEMM per transformed position over (tiles x in) · (in x out),
//!   output transform with the epilogue.
//! * GEMM for everything else: 1x1 stride-1 convs multiply the NHWC input directly; other convs
//!   gather an im2col block per chunk of output pixels (whole channel runs per tap, no per-element
//!   index arithmetic) and multiply it with the packed `[(ky, kx, ci) x out]` weight.
//!
//! Groups are per-group GEMMs on column slices of the same buffers. Work is split into chunks of
//! whole output rows (disjoint output regions) run in parallel with rayon; when a layer has fewer
//! chunks than threads (batch 1, late layers), the GEMMs and transforms inside a chunk run in
//! parallel instead.

use ndarray::ArrayView4;
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;
use repvgg_math::{Activation, ConvSpec, Epilogue};

use crate::aligned::AlignedVec;
use crate::error::{CpuError, Result};
use crate::gemm::{self, ColEpilogue};
use crate::winograd::{self, Tile, Transform1d};
use core::marker::PhantomData;

/// How a convolution is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConvAlgo {
    /// Winograd for 3x3 stride-1 convs — F(4x4,3x3) from [`WIDE`] input channels per group,
    /// F(2x2,3x3) below — and GEMM for the rest.
    #[default]
    Auto,
    /// Winograd with this tile for 3x3 stride-1 convs, GEMM for the rest.
    Winograd(Tile),
    /// GEMM (im2col or direct 1x1) for every conv.
    Gemm,
}

#[derive(Debug, Clone)]
enum Kernel {
    /// The transformed kernels of the tile sizes kept.
    Winograd(Wino),
    /// `w[g]`: the `[(ky * k + kx) * cin_g + ci] x cout_g` matrix, packed in panels; `direct`
    /// when the input is the im2col matrix.
    Gemm { w: AlignedVec, direct: bool },
}

/// Winograd weights, `u[g][pos]`: the `cin_g x cout_g` transformed kernels, packed in panels.
#[derive(Debug, Clone)]
enum Wino {
    /// One tile size.
    One(Tile, AlignedVec),
    /// Both, each run picking one (see [`Wino::pick`]).
    Both { f4: AlignedVec, f2: AlignedVec },
}

impl Wino {
    /// The tile (and its weights) for a run: F(4x4) when the run has at least
    /// [`F4_MIN_TILES`] of its tiles (enough rows to amortise reading its 2.25x larger
    /// weights), else F(2x2), when both are kept.
    fn pick(&self, g: &Geometry) -> (Tile, &[f32]) {
        match self {
            Self::One(tile, u) => (*tile, u),
            Self::Both { f4, .. } if g.n * g.oh.div_ceil(4) * g.ow.div_ceil(4) >= F4_MIN_TILES => {
                (Tile::F4, f4)
            }
            Self::Both { f2, .. } => (Tile::F2, f2),
        }
    }
}

/// Sizes of one run of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
}

/// A convolution with its weights packed for its algorithm.
#[derive(Debug, Clone)]
pub struct PreparedConv {
    spec: ConvSpec,
    kernel: Kernel,
    scale: Vec<f32>,
    shift: Vec<f32>,
    accumulate: bool,
    relu: bool,
}

/// Input channels from which [`ConvAlgo::Auto`] keeps F(4x4) beside F(2x2). Counted over all
/// groups: the transforms' cost follows the channel count, and F(4x4) transforms fewer values
/// per output pixel (2.25 in and out, against 4), which is what grouped layers need.
pub const WIDE: usize = 40;

/// F(4x4) tiles per run from which a conv that keeps both tile sizes uses F(4x4).
pub const F4_MIN_TILES: usize = 48;

/// Winograd tiles per chunk and im2col elements per chunk: sizes that keep a chunk's buffers in
/// the L2 cache.
const TILES_PER_CHUNK: usize = 128;
const COL_ELEMS: usize = 256 * 1024;

impl PreparedConv {
    /// Packs `weight` (`[out, in / groups, k, k]`) for `algo`. Fails on a weight that does not
    /// match `spec`, on non-finite weights, on epilogue vectors of the wrong length and on a
    /// sigmoid activation (a conv ends with nothing or a ReLU).
    ///
    /// The epilogue's residual handle is not read: a residual (any value, `()` when calling
    /// this directly) makes [`PreparedConv::run`] add the result to what `out` holds.
    pub fn new<R>(
        weight: ArrayView4<'_, f32>,
        spec: ConvSpec,
        epilogue: Epilogue<R>,
        algo: ConvAlgo,
    ) -> Result<Self> {
        spec.validate()?;
        spec.check_weight(&weight)?;
        if weight.iter().any(|v| !v.is_finite()) {
            return Err(CpuError::Invalid(
                "convolution weight holds NaN or inf".into(),
            ));
        }
        let cout = spec.out_channels;
        let check = |what: &str, v: &Option<Vec<f32>>, fill: f32| -> Result<Vec<f32>> {
            match v {
                None => Ok(vec![fill; cout]),
                Some(v) if v.len() == cout && v.iter().all(|x| x.is_finite()) => Ok(v.clone()),
                Some(v) if v.len() == cout => Err(CpuError::Invalid(format!(
                    "convolution epilogue {what} holds NaN or inf"
                ))),
                Some(v) => Err(CpuError::Shape {
                    what: format!("convolution epilogue {what}"),
                    expected: vec![cout],
                    found: vec![v.len()],
                }),
            }
        };
        let scale = check("scale", &epilogue.scale, 1.0)?;
        let shift = check("bias", &epilogue.bias, 0.0)?;
        let relu = match epilogue.activation {
            Activation::None => false,
            Activation::Relu => true,
            Activation::Sigmoid => {
                return Err(CpuError::Invalid(
                    "a convolution's epilogue ends with no activation or a ReLU, not a sigmoid"
                        .into(),
                ));
            }
        };
        let winograd_ok = spec.kernel_size == 3 && spec.stride == 1 && spec.padding <= 2;
        // F(4x4) does 1.8x fewer multiplications than F(2x2), but its transforms cost more per
        // channel, it rounds a little more and its transformed weights are 2.25x larger: it pays
        // on wide layers with many tiles. Wide layers keep both, and each run picks by its tile
        // count (see `Wino::pick`).
        let pack = |tile| pack_winograd(&weight, &spec, tile);
        let kernel = match algo {
            ConvAlgo::Auto if winograd_ok && spec.in_channels >= WIDE => {
                Kernel::Winograd(Wino::Both {
                    f4: pack(Tile::F4),
                    f2: pack(Tile::F2),
                })
            }
            ConvAlgo::Auto if winograd_ok => Kernel::Winograd(Wino::One(Tile::F2, pack(Tile::F2))),
            ConvAlgo::Winograd(t) if winograd_ok => Kernel::Winograd(Wino::One(t, pack(t))),
            _ => Kernel::Gemm {
                w: pack_gemm(&weight, &spec),
                direct: spec.kernel_size == 1 && spec.stride == 1 && spec.padding == 0,
            },
        };
        Ok(Self {
            spec,
            kernel,
            scale,
            shift,
            accumulate: epilogue.residual.is_some(),
            relu,
        })
    }

    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    /// Whether the epilogue adds to the output tensor (it had a residual).
    pub fn accumulates(&self) -> bool {
        self.accumulate
    }

    /// The algorithm picked: "winograd-f4", "winograd-f2", "winograd-f4|f2" (chosen per run by
    /// [`PreparedConv::algorithm_for`]), "gemm-1x1" or "im2col-gemm".
    pub fn algorithm(&self) -> &'static str {
        match &self.kernel {
            Kernel::Winograd(Wino::Both { .. }) => "winograd-f4|f2",
            Kernel::Winograd(Wino::One(Tile::F4, _)) => "winograd-f4",
            Kernel::Winograd(Wino::One(Tile::F2, _)) => "winograd-f2",
            Kernel::Gemm { direct: true, .. } => "gemm-1x1",
            Kernel::Gemm { direct: false, .. } => "im2col-gemm",
        }
    }

    /// The algorithm a run of these sizes uses.
    pub fn algorithm_for(&self, g: &Geometry) -> &'static str {
        match &self.kernel {
            Kernel::Winograd(w) => match w.pick(g).0 {
                Tile::F4 => "winograd-f4",
                Tile::F2 => "winograd-f2",
            },
            Kernel::Gemm { .. } => self.algorithm(),
        }
    }

    /// Multiply-adds of a run of these sizes as a direct convolution.
    pub fn direct_macs(&self, g: &Geometry) -> u64 {
        let s = &self.spec;
        (g.n * g.oh * g.ow) as u64 * self.group_macs() * (s.kernel_size * s.kernel_size) as u64
    }

    /// Multiply-adds a run of these sizes performs in its GEMMs, with the algorithm it uses:
    /// the direct count for the GEMM paths; for Winograd F(m x m, 3x3), tiles x (m + 2)^2
    /// positions x (in / groups) x out. The Winograd tile transforms (a few adds per element)
    /// are not counted.
    pub fn executed_macs(&self, g: &Geometry) -> u64 {
        match &self.kernel {
            Kernel::Winograd(w) => {
                let tile = w.pick(g).0;
                let m = tile.m();
                let tiles = (g.n * g.oh.div_ceil(m) * g.ow.div_ceil(m)) as u64;
                tiles * tile.positions() as u64 * self.group_macs()
            }
            Kernel::Gemm { .. } => self.direct_macs(g),
        }
    }

    /// Multiply-adds of one output pixel and one kernel tap: `(in / groups) x out`.
    fn group_macs(&self) -> u64 {
        let s = &self.spec;
        (s.in_channels / s.groups * s.out_channels) as u64
    }

    /// Output size for an `n x h x w` input.
    pub fn geometry(&self, n: usize, h: usize, w: usize) -> Result<Geometry> {
        let (oh, ow) = self.spec.output_size(h, w)?;
        Ok(Geometry { n, h, w, oh, ow })
    }

    /// f32 elements of scratch one run needs with `threads` worker threads.
    pub fn scratch_len(&self, g: &Geometry, threads: usize) -> usize {
        let plan = self.plan(g, threads);
        plan.slots * plan.slot_len
    }

    fn plan(&self, g: &Geometry, threads: usize) -> Plan {
        let threads = threads.max(1);
        let (cin, cout) = (self.spec.in_channels, self.spec.out_channels);
        match &self.kernel {
            Kernel::Winograd(wino) => {
                let (tile, _) = wino.pick(g);
                let m = tile.m();
                let (th, tw) = (g.oh.div_ceil(m), g.ow.div_ceil(m));
                let rows = g.n * th;
                let (chunks, per) = split(rows, rows * tw, TILES_PER_CHUNK, threads);
                let slot_len = per * tw * tile.positions() * (cin + cout);
                Plan {
                    units: rows,
                    per_chunk: per,
                    chunks,
                    slots: chunks.min(threads),
                    slot_len,
                    inner_par: chunks < threads,
                }
            }
            Kernel::Gemm { direct, .. } => {
                let p = g.n * g.oh * g.ow;
                let kg = self.spec.kernel_size.pow(2) * cin / self.spec.groups;
                let target = (COL_ELEMS / kg.max(1)).clamp(16, 1024);
                let (chunks, per) = split(p, p, target, threads);
                let col = if *direct { 0 } else { per * kg };
                Plan {
                    units: p,
                    per_chunk: per,
                    chunks,
                    slots: chunks.min(threads),
                    slot_len: col,
                    inner_par: chunks < threads,
                }
            }
        }
    }

    /// Runs the convolution on an NHWC input `x` (`n*h*w*in` values) into `out`
    /// (`n*oh*ow*out` values), using `scratch` (at least [`PreparedConv::scratch_len`]).
    pub fn run(&self, x: &[f32], g: &Geometry, out: &mut [f32], scratch: &mut [f32]) -> Result<()> {
        let (cin, cout) = (self.spec.in_channels, self.spec.out_channels);
        let (oh, ow) = self.spec.output_size(g.h, g.w)?;
        if (oh, ow) != (g.oh, g.ow) {
            return Err(CpuError::Shape {
                what: "convolution output size".into(),
                expected: vec![oh, ow],
                found: vec![g.oh, g.ow],
            });
        }
        let threads = rayon::current_num_threads();
        let plan = self.plan(g, threads);
        let scratch_need = plan.slots * plan.slot_len;
        for (what, have, want) in [
            ("input", x.len(), g.n * g.h * g.w * cin),
            ("output", out.len(), g.n * oh * ow * cout),
        ] {
            if have != want {
                return Err(CpuError::Shape {
                    what: format!("convolution {what} buffer (elements)"),
                    expected: vec![want],
                    found: vec![have],
                });
            }
        }
        if scratch.len() < scratch_need {
            return Err(CpuError::Shape {
                what: "convolution scratch buffer (elements, at least)".into(),
                expected: vec![scratch_need],
                found: vec![scratch.len()],
            });
        }
        let arch = Arch::new();
        match &self.kernel {
            Kernel::Winograd(wino) => {
                let (tile, u) = wino.pick(g);
                let m = tile.m();
                let th = oh.div_ceil(m);
                // Output rows (n * oh + oy) where tile row r starts.
                let row_start = |r: usize| ((r / th) * oh + (r % th) * m).min(g.n * oh);
                let offset = |r: usize| row_start(r) * ow * cout;
                run_chunks(&plan, out, scratch, &offset, &|r0, r1, region, slot| {
                    let wg = WinogradRun {
                        conv: self,
                        tile,
                        u,
                        x,
                        g,
                        th,
                        arch,
                    };
                    wg.chunk(r0, r1, region, slot, plan.inner_par, &offset);
                });
            }
            Kernel::Gemm { w, direct } => {
                let offset = |p: usize| p * cout;
                run_chunks(&plan, out, scratch, &offset, &|p0, p1, region, slot| {
                    self.gemm_chunk(w, *direct, x, g, p0, p1, region, slot, plan.inner_par, arch);
                });
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm_chunk(
        &self,
        w: &[f32],
        direct: bool,
        x: &[f32],
        g: &Geometry,
        p0: usize,
        p1: usize,
        region: &mut [f32],
        slot: &mut [f32],
        inner_par: bool,
        arch: Arch,
    ) {
        let s = &self.spec;
        let (cin, cout, groups) = (s.in_channels, s.out_channels, s.groups);
        let (cin_g, cout_g) = (cin / groups, cout / groups);
        let kg = s.kernel_size * s.kernel_size * cin_g;
        let rows = p1 - p0;
        let col = &mut slot[..if direct { 0 } else { rows * kg }];
        let panels = gemm::packed_len(kg, cout_g);
        for gi in 0..groups {
            let (a, a_rs): (&[f32], usize) = if direct {
                (&x[p0 * cin + gi * cin_g..], cin)
            } else {
                arch.dispatch(Im2col {
                    x,
                    g,
                    spec: s,
                    group: gi,
                    p0,
                    col: &mut *col,
                });
                (&*col, kg)
            };
            let cols = gi * cout_g..(gi + 1) * cout_g;
            let epi = ColEpilogue {
                scale: &self.scale[cols.clone()],
                shift: &self.shift[cols],
                accumulate: self.accumulate,
                relu: self.relu,
            };
            gemm::gemm(
                rows,
                kg,
                cout_g,
                a,
                a_rs,
                &w[gi * panels..(gi + 1) * panels],
                &mut region[gi * cout_g..],
                cout,
                Some(epi),
                inner_par,
            );
        }
    }
}

/// How a run is cut: `units` (tile rows or output pixels) in `chunks` of `per_chunk`, processed
/// `slots` at a time, each with `slot_len` scratch elements.
#[derive(Debug, Clone, Copy)]
struct Plan {
    units: usize,
    per_chunk: usize,
    chunks: usize,
    slots: usize,
    slot_len: usize,
    inner_par: bool,
}

impl Plan {
    /// The first unit of chunk `c` (`units` for the end of the last chunk).
    fn unit(&self, c: usize) -> usize {
        (c * self.per_chunk).min(self.units)
    }
}

/// Chunks `units` (of `work` total work items) into about `work / target` chunks, rounded up to
/// a multiple of `threads` when there is more than one, so that every thread gets the same share.
/// Returns (chunks, units per chunk).
fn split(units: usize, work: usize, target: usize, threads: usize) -> (usize, usize) {
    if units == 0 {
        return (0, 1);
    }
    let mut chunks = work.div_ceil(target.max(1)).max(1);
    if chunks > 1 {
        chunks = chunks.div_ceil(threads) * threads;
    }
    chunks = chunks.min(units);
    let per = units.div_ceil(chunks);
    (units.div_ceil(per), per)
}

/// The work on one chunk: `(first unit, end unit, output region, scratch slot)`.
type ChunkFn<'a> = dyn Fn(usize, usize, &mut [f32], &mut [f32]) + Sync + 'a;

/// Runs `f(first, end, output region, scratch slot)` for every chunk. The chunks are cut into
/// `slots` contiguous groups, one per thread, each with its own scratch slot and run in order:
/// one fork per run, not one per round of `slots` chunks (a thread that waits between rounds
/// falls asleep, and waking it costs about as much as a small chunk). `offset(u)` is where unit
/// `u`'s output starts in `out` (monotonic).
fn run_chunks(
    plan: &Plan,
    out: &mut [f32],
    scratch: &mut [f32],
    offset: &(dyn Fn(usize) -> usize + Sync),
    f: &ChunkFn<'_>,
) {
    let begin = offset(plan.unit(0));
    let end = offset(plan.unit(plan.chunks));
    split_groups(
        plan,
        0..plan.chunks,
        plan.slots.min(plan.chunks).max(1),
        &mut out[begin..end],
        &mut scratch[..plan.slots * plan.slot_len],
        offset,
        f,
    );
}

/// Runs the chunks `chunks` as `groups` contiguous groups in parallel (`region` is their
/// output, `scratch` holds `groups` slots).
fn split_groups(
    plan: &Plan,
    chunks: std::ops::Range<usize>,
    groups: usize,
    region: &mut [f32],
    scratch: &mut [f32],
    offset: &(dyn Fn(usize) -> usize + Sync),
    f: &ChunkFn<'_>,
) {
    if groups <= 1 {
        let mut rest = region;
        let mut at = offset(plan.unit(chunks.start));
        for c in chunks {
            let next = offset(plan.unit(c + 1));
            let (band, tail) = rest.split_at_mut(next - at);
            f(
                plan.unit(c),
                plan.unit(c + 1),
                band,
                &mut scratch[..plan.slot_len],
            );
            rest = tail;
            at = next;
        }
        return;
    }
    let (left, mid) = halve(&chunks, groups);
    let at = offset(plan.unit(mid)) - offset(plan.unit(chunks.start));
    let (ra, rb) = region.split_at_mut(at);
    let (sa, sb) = scratch.split_at_mut(left * plan.slot_len);
    rayon::join(
        || split_groups(plan, chunks.start..mid, left, ra, sa, offset, f),
        || split_groups(plan, mid..chunks.end, groups - left, rb, sb, offset, f),
    );
}

/// Where `groups` (at least 2) cut `chunks` in two: the first `groups / 2` groups and the chunks
/// they take, their share rounded down. Recursing on both halves gives every group the same
/// number of chunks, give or take one.
fn halve(chunks: &std::ops::Range<usize>, groups: usize) -> (usize, usize) {
    let left = groups / 2;
    (left, chunks.start + chunks.len() * left / groups)
}

fn pack_gemm(weight: &ArrayView4<'_, f32>, s: &ConvSpec) -> AlignedVec {
    let (cout_g, cin_g, k) = (
        s.out_channels / s.groups,
        s.in_channels / s.groups,
        s.kernel_size,
    );
    let kg = k * k * cin_g;
    let per_group = gemm::packed_len(kg, cout_g);
    let mut w = AlignedVec::filled(s.groups * per_group, 0.0);
    for (g, wg) in w.chunks_exact_mut(per_group).enumerate() {
        gemm::pack_into(wg, kg, cout_g, |row, co| {
            let (tap, ci) = (row / cin_g, row % cin_g);
            weight[[g * cout_g + co, ci, tap / k, tap % k]]
        });
    }
    w
}

fn pack_winograd(weight: &ArrayView4<'_, f32>, s: &ConvSpec, tile: Tile) -> AlignedVec {
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

/// Gathers the im2col rows of output pixels `p0..p0 + rows` for one group:
/// `col[p][(ky * k + kx) * cin_g + ci]`, zeros where the tap falls in the padding.
struct Im2col<'a> {
    x: &'a [f32],
    g: &'a Geometry,
    spec: &'a ConvSpec,
    group: usize,
    p0: usize,
    col: &'a mut [f32],
}

impl WithSimd for Im2col<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let Self {
            x,
            g,
            spec,
            group,
            p0,
            col,
        } = self;
        let (k, s, pad) = (spec.kernel_size, spec.stride, spec.padding);
        let cin = spec.in_channels;
        let cin_g = cin / spec.groups;
        let kg = k * k * cin_g;
        let c0 = group * cin_g;
        for (i, dst) in col.chunks_exact_mut(kg).enumerate() {
            let p = p0 + i;
            let (n, rem) = (p / (g.oh * g.ow), p % (g.oh * g.ow));
            let (oy, ox) = (rem / g.ow, rem % g.ow);
            // Taps kx = 0..k of one kernel row read consecutive input pixels: when the group
            // is the whole input (groups = 1) and the row lies inside the image, they are one
            // contiguous run of k * cin values.
            let ix0 = (ox * s).wrapping_sub(pad);
            let row_inside = ox * s >= pad && ix0 + k <= g.w;
            for ky in 0..k {
                let iy = (oy * s + ky).wrapping_sub(pad);
                let drow = &mut dst[ky * k * cin_g..(ky + 1) * k * cin_g];
                if iy >= g.h {
                    drow.fill(0.0);
                    continue;
                }
                if row_inside && cin_g == cin {
                    let src = ((n * g.h + iy) * g.w + ix0) * cin;
                    copy_run(drow, &x[src..src + k * cin]);
                    continue;
                }
                for (kx, d) in drow.chunks_exact_mut(cin_g).enumerate() {
                    let ix = (ox * s + kx).wrapping_sub(pad);
                    if ix < g.w {
                        let src = ((n * g.h + iy) * g.w + ix) * cin + c0;
                        copy_run(d, &x[src..src + cin_g]);
                    } else {
                        d.fill(0.0);
                    }
                }
            }
        }
    }
}

/// Copies one pixel's channel run; short runs (the stem's 3 channels) without a `memcpy` call.
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    if let (Ok(d), Ok(s)) = (
        <&mut [f32; 27]>::try_from(&mut *dst),
        <&[f32; 27]>::try_from(src),
    ) {
        // Fixed-size moves for the stem's runs (3 taps x 3 channels, or a whole 3x3x3 patch).
        *d = *s;
    } else if let (Ok(d), Ok(s)) = (
        <&mut [f32; 9]>::try_from(&mut *dst),
        <&[f32; 9]>::try_from(src),
    ) {
        *d = *s;
    } else if dst.len() <= 8 {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    } else {
        dst.copy_from_slice(src);
    }
}

/// One Winograd convolution run.
struct WinogradRun<'a> {
    conv: &'a PreparedConv,
    tile: Tile,
    u: &'a [f32],
    x: &'a [f32],
    g: &'a Geometry,
    th: usize,
    arch: Arch,
}

impl WinogradRun<'_> {
    /// Tile rows `r0..r1` (over n * th): transforms, GEMMs, output transform into `region`.
    fn chunk(
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
    use super::{halve, inside_image};

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

    /// The chunk counts of the groups that [`halve`] makes, recursively, in order.
    fn groups_of(chunks: std::ops::Range<usize>, groups: usize, out: &mut Vec<(usize, usize)>) {
        if groups <= 1 {
            out.push((chunks.start, chunks.end));
            return;
        }
        let (left, mid) = halve(&chunks, groups);
        assert!(
            (chunks.start..=chunks.end).contains(&mid),
            "{chunks:?} cut at {mid}"
        );
        groups_of(chunks.start..mid, left, out);
        groups_of(mid..chunks.end, groups - left, out);
    }

    /// Every thread gets a contiguous run of chunks, together all of them in order, and the
    /// same number give or take one (a thread with one chunk more than the others sets the
    /// conv's time), for every chunk count and group count, from any first chunk.
    #[test]
    fn groups_are_contiguous_and_balanced() {
        for start in [0, 5] {
            for n in 0..=64 {
                for groups in 1..=8 {
                    let mut got = Vec::new();
                    groups_of(start..start + n, groups, &mut got);
                    assert_eq!(got.len(), groups);
                    assert_eq!(got[0].0, start);
                    assert_eq!(got[groups - 1].1, start + n);
                    for w in got.windows(2) {
                        assert_eq!(w[0].1, w[1].0, "{n} chunks, {groups} groups: {got:?}");
                    }
                    let sizes: Vec<usize> = got.iter().map(|(a, b)| b - a).collect();
                    let (lo, hi) = (n / groups, n.div_ceil(groups));
                    assert!(
                        sizes.iter().all(|s| (lo..=hi).contains(s)),
                        "{n} chunks, {groups} groups: {sizes:?}"
                    );
                }
            }
        }
    }
}
