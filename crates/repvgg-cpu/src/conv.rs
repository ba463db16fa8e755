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
//!
//! This module holds the conv's preparation and its entry point; the Winograd execution is in
//! `winograd_run`, the im2col GEMM path in `im2col`, the cutting into chunks in `schedule`.

use ndarray::ArrayView4;
use pulp::Arch;
use repvgg_math::{Activation, ConvSpec, Epilogue};

use crate::aligned::AlignedVec;
use crate::error::{CpuError, Result};
use crate::im2col::pack_gemm;
use crate::schedule::run_chunks;
use crate::winograd::Tile;
use crate::winograd_run::{WinogradRun, pack_winograd};

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
pub(crate) enum Kernel {
    /// The transformed kernels of the tile sizes kept.
    Winograd(Wino),
    /// `w[g]`: the `[(ky * k + kx) * cin_g + ci] x cout_g` matrix, packed in panels; `direct`
    /// when the input is the im2col matrix.
    Gemm { w: AlignedVec, direct: bool },
}

/// Winograd weights, `u[g][pos]`: the `cin_g x cout_g` transformed kernels, packed in panels.
#[derive(Debug, Clone)]
pub(crate) enum Wino {
    /// One tile size.
    One(Tile, AlignedVec),
    /// Both, each run picking one (see [`Wino::pick`]).
    Both { f4: AlignedVec, f2: AlignedVec },
}

impl Wino {
    /// The tile (and its weights) for a run: F(4x4) when the run has at least
    /// [`F4_MIN_TILES`] of its tiles (enough rows to amortise reading its 2.25x larger
    /// weights), else F(2x2), when both are kept.
    pub(crate) fn pick(&self, g: &Geometry) -> (Tile, &[f32]) {
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
    /// Images in the batch.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

/// A convolution with its weights packed for its algorithm.
#[derive(Debug, Clone)]
pub struct PreparedConv {
    pub(crate) spec: ConvSpec,
    pub(crate) kernel: Kernel,
    /// Per-output-channel epilogue: `y = conv * scale + shift`, `+= out` when `accumulate`,
    /// then ReLU when `relu`.
    pub(crate) scale: Vec<f32>,
    pub(crate) shift: Vec<f32>,
    pub(crate) accumulate: bool,
    pub(crate) relu: bool,
}

/// Input channels from which [`ConvAlgo::Auto`] keeps F(4x4) beside F(2x2). Counted over all
/// groups: the transforms' cost follows the channel count, and F(4x4) transforms fewer values
/// per output pixel (2.25 in and out, against 4), which is what grouped layers need.
pub const WIDE: usize = 40;

/// F(4x4) tiles per run from which a conv that keeps both tile sizes uses F(4x4).
pub const F4_MIN_TILES: usize = 48;

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

    /// The conv's channels, kernel, stride, padding and groups.
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
}

impl std::fmt::Display for ConvAlgo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Winograd(Tile::F4) => "f4",
            Self::Winograd(Tile::F2) => "f2",
            Self::Gemm => "gemm",
        })
    }
}

/// A word that names no [`ConvAlgo`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a CPU convolution algorithm: expected auto, f4, f2 or gemm")]
pub struct ParseConvAlgoError(pub String);

impl std::str::FromStr for ConvAlgo {
    type Err = ParseConvAlgoError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "f4" => Ok(Self::Winograd(Tile::F4)),
            "f2" => Ok(Self::Winograd(Tile::F2)),
            "gemm" => Ok(Self::Gemm),
            _ => Err(ParseConvAlgoError(s.into())),
        }
    }
}
