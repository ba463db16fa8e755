//! Which kernel a convolution runs: the forced modes ([`ConvKernel`]), the candidates one
//! conv may run ([`Candidate`]) and the hand rules that pick one without measuring (the choice
//! on a cold start, and wherever the adapter cannot time candidates). The kernels themselves,
//! one file per WGSL file, are below in `kernels`; the tuner that measures candidates is above,
//! in `tune`.

use ndarray::ArrayView4;
use repvgg_math::ConvSpec;
use repvgg_math::winograd::{self, Tile};

use crate::caps::Caps;
use crate::error::{GpuError, Result};
use crate::kernels::conv_kernel::ConvImpl;
use crate::kernels::{WeightData, conv_gemm, conv_naive, conv_subgroup, conv_tiled};
use crate::precision::Precision;
use crate::shader::Shader;

/// A word that names no [`ConvKernel`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a GPU convolution kernel: expected auto, gemm, split-k, workgroup, subgroup, \
     naive, winograd or winograd4"
)]
pub struct ParseConvKernelError(pub String);

/// Which convolution kernel a network uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConvKernel {
    /// Chosen per layer: the fastest [`Candidate`] measured on this adapter where tuning is on
    /// and the adapter has timestamp queries ([`crate::Tuning`]), else the hand rules: on a
    /// software adapter (lavapipe: 8-wide subgroups, no real workgroup memory) Winograd F(4x4)
    /// for wide 3x3 stride-1 convs in f32 and [`ConvKernel::Subgroup`] where the conv allows it;
    /// everywhere else [`ConvKernel::Gemm`].
    #[default]
    Auto,
    /// Implicit GEMM with a tile configured per layer (`conv_gemm.wgsl`): 64-256 invocations,
    /// 4x4 to 8x8 outputs per invocation, register-staged K tiles. Runs on every adapter. A
    /// layer that would launch fewer workgroups than the device wants (late layers at batch 1
    /// on a hardware GPU) splits its sum over K into slices whose partial sums a second pass
    /// adds up (`conv_gemm.wgsl`'s entry point `reduce`, with the epilogue).
    Gemm,
    /// [`ConvKernel::Gemm`] with the sum always split over K, into as many slices as it has K
    /// tiles, up to 16: for tests and A/B runs of the split-K path.
    SplitK,
    /// Implicit GEMM with workgroup-shared tiles and 4x4 register blocks (`conv_tiled.wgsl`):
    /// runs on every adapter.
    Workgroup,
    /// Implicit GEMM sharing the im2col tile through subgroup shuffles, weights in a texture
    /// (`conv_subgroup_direct.wgsl`, `conv_subgroup_flat.wgsl`): needs subgroups of at least
    /// 8 invocations, kernel size 1 or 3, stride 1 or 2.
    Subgroup,
    /// One output per invocation (`conv_naive.wgsl`): the baseline.
    Naive,
    /// Winograd F(2x2, 3x3) for every 3x3 conv with stride 1 and padding 1 (input transform,
    /// a grouped 1x1 conv over the 16 positions, output transform with the epilogue); every
    /// other conv, and the 1x1 conv inside, as the rules of [`ConvKernel::Auto`] run them.
    Winograd,
    /// [`ConvKernel::Winograd`] with F(4x4, 3x3): 36 positions, 4x fewer multiplies than the
    /// direct conv (F(2x2): 2.25x), a little more rounding.
    Winograd4,
}

impl ConvKernel {
    /// The word for this kernel (`auto`, `gemm`, `split-k`, ...), as `FromStr` reads it.
    pub fn name(self) -> &'static str {
        match self {
            ConvKernel::Auto => "auto",
            ConvKernel::Gemm => "gemm",
            ConvKernel::SplitK => "split-k",
            ConvKernel::Workgroup => "workgroup",
            ConvKernel::Subgroup => "subgroup",
            ConvKernel::Naive => "naive",
            ConvKernel::Winograd => "winograd",
            ConvKernel::Winograd4 => "winograd4",
        }
    }

    /// Every kernel, in declaration order (for A/B runs and tests that try them all).
    pub const ALL: [ConvKernel; 8] = [
        ConvKernel::Auto,
        ConvKernel::Gemm,
        ConvKernel::SplitK,
        ConvKernel::Workgroup,
        ConvKernel::Subgroup,
        ConvKernel::Naive,
        ConvKernel::Winograd,
        ConvKernel::Winograd4,
    ];

    /// The Winograd tile a network built with this kernel on `ctx` in `precision` runs `spec`
    /// with by the rules (tuning may choose otherwise for [`ConvKernel::Auto`]), or `None` for
    /// a direct conv.
    pub fn winograd_tile(
        self,
        ctx: &crate::context::GpuContext,
        spec: &ConvSpec,
        precision: Precision,
    ) -> Option<Tile> {
        match self.candidate(&Caps::of(ctx), spec, precision) {
            Ok(Candidate::Winograd { tile, .. }) => Some(tile),
            _ => None,
        }
    }

    /// The candidate this kernel runs `spec` with on `caps` in `precision`, by the rules.
    ///
    /// # Errors
    /// [`GpuError::Unsupported`] for [`ConvKernel::Subgroup`] where it cannot run `spec`.
    pub(crate) fn candidate(
        self,
        caps: &Caps,
        spec: &ConvSpec,
        precision: Precision,
    ) -> Result<Candidate> {
        let direct = |k: DirectConv| Ok(Candidate::Direct(k));
        let wino = |tile| {
            Ok(match winograd::product_spec(spec, tile) {
                Ok(product) if winograd::applies(spec) => Candidate::Winograd {
                    tile,
                    inner: rule_direct(caps, &product),
                },
                _ => Candidate::Direct(rule_direct(caps, spec)),
            })
        };
        match self {
            ConvKernel::Auto => Ok(rule(caps, spec, precision)),
            ConvKernel::Gemm => direct(DirectConv::Gemm { split_k: false }),
            ConvKernel::SplitK => direct(DirectConv::Gemm { split_k: true }),
            ConvKernel::Workgroup => direct(DirectConv::Workgroup),
            ConvKernel::Naive => direct(DirectConv::Naive),
            ConvKernel::Subgroup if conv_subgroup::fits(caps, spec, None) => {
                direct(DirectConv::Subgroup {
                    ch4: rule_ch4(caps, spec),
                })
            }
            ConvKernel::Subgroup => Err(GpuError::Unsupported(format!(
                "the subgroup conv kernel needs subgroups of at least 8 invocations \
                 (this adapter: {}), kernel size 1 or 3 and stride 1 or 2 (this conv: {}x{}, \
                 stride {})",
                caps.subgroup_min
                    .map_or("no subgroups".to_string(), |s| format!("min size {s}")),
                spec.kernel_size,
                spec.kernel_size,
                spec.stride
            ))),
            ConvKernel::Winograd => wino(Tile::F2),
            ConvKernel::Winograd4 => wino(Tile::F4),
        }
    }
}

impl std::fmt::Display for ConvKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ConvKernel {
    type Err = ParseConvKernelError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let word = s.trim().to_ascii_lowercase().replace('_', "-");
        let word = if word == "splitk" {
            "split-k".into()
        } else {
            word
        };
        ConvKernel::ALL
            .into_iter()
            .find(|k| k.name() == word)
            .ok_or_else(|| ParseConvKernelError(s.into()))
    }
}

/// One conv kernel with its configuration, for a direct conv or a Winograd product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DirectConv {
    /// The subgroup convolutions with `4 * ch4` channels per invocation (`ch4`: 2 or 3).
    Subgroup {
        /// vec4 accumulators per pixel: 2 or 3.
        ch4: u8,
    },
    /// `conv_gemm.wgsl`; `split_k`: always split the sum over K (else only where the
    /// dispatch would leave the device idle).
    Gemm {
        /// Always split the sum over K.
        split_k: bool,
    },
    /// `conv_tiled.wgsl`.
    Workgroup,
    /// `conv_naive.wgsl`.
    Naive,
}

/// One way to run one convolution: what the tuner times, and what a test can force on every
/// conv of a network ([`crate::NetworkBuilder::candidate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Candidate {
    /// The conv on one kernel.
    Direct(DirectConv),
    /// Winograd F(m x m, 3x3) with `tile` (3x3 stride-1 convs with padding 1): input
    /// transform, the grouped 1x1 product on `inner`, output transform with the epilogue.
    Winograd {
        /// F(2x2) or F(4x4).
        tile: Tile,
        /// The kernel of the product.
        inner: DirectConv,
    },
}

impl std::fmt::Display for DirectConv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirectConv::Subgroup { ch4 } => write!(f, "subgroup{}", 4 * ch4),
            DirectConv::Gemm { split_k: false } => f.write_str("gemm"),
            DirectConv::Gemm { split_k: true } => f.write_str("gemm-splitk"),
            DirectConv::Workgroup => f.write_str("workgroup"),
            DirectConv::Naive => f.write_str("naive"),
        }
    }
}

impl std::fmt::Display for Candidate {
    /// `subgroup8`, `gemm`, `f4+subgroup12`, ...: as [`Candidate::parse`] reads it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Candidate::Direct(d) => d.fmt(f),
            Candidate::Winograd { tile, inner } => write!(f, "f{}+{inner}", tile.m()),
        }
    }
}

impl DirectConv {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "subgroup8" => DirectConv::Subgroup { ch4: 2 },
            "subgroup12" => DirectConv::Subgroup { ch4: 3 },
            "gemm" => DirectConv::Gemm { split_k: false },
            "gemm-splitk" => DirectConv::Gemm { split_k: true },
            "workgroup" => DirectConv::Workgroup,
            "naive" => DirectConv::Naive,
            _ => return None,
        })
    }

    /// The kernel's name, as `--kernel` spells it.
    pub(crate) fn kernel_name(self) -> &'static str {
        match self {
            DirectConv::Subgroup { .. } => "subgroup",
            DirectConv::Gemm { .. } => "gemm",
            DirectConv::Workgroup => "workgroup",
            DirectConv::Naive => "naive",
        }
    }

    /// The WGSL file this kernel runs (the subgroup kernel: its direct form; its flat form,
    /// for 1x1 convs without padding, has the same precisions).
    pub(crate) fn shader(self) -> Shader {
        match self {
            DirectConv::Subgroup { .. } => Shader::ConvSubgroupDirect,
            DirectConv::Gemm { .. } => Shader::ConvGemm,
            DirectConv::Workgroup => Shader::ConvTiled,
            DirectConv::Naive => Shader::ConvNaive,
        }
    }

    /// Whether it can run `spec` on `caps` in `precision`.
    fn runs(self, caps: &Caps, spec: &ConvSpec, precision: Precision) -> bool {
        (precision == Precision::F32 || self.shader().has_f16())
            && match self {
                DirectConv::Subgroup { ch4 } => {
                    conv_subgroup::fits(caps, spec, Some(usize::from(ch4)))
                }
                _ => true,
            }
    }
}

impl Candidate {
    /// The candidate [`Display`](std::fmt::Display) wrote as `s`, or `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let wino = |rest: &str, tile| {
            DirectConv::parse(rest).map(|inner| Candidate::Winograd { tile, inner })
        };
        if let Some(rest) = s.strip_prefix("f2+") {
            wino(rest, Tile::F2)
        } else if let Some(rest) = s.strip_prefix("f4+") {
            wino(rest, Tile::F4)
        } else {
            DirectConv::parse(s).map(Candidate::Direct)
        }
    }

    /// The Winograd tile, or `None` for a direct conv.
    pub fn winograd_tile(self) -> Option<Tile> {
        match self {
            Candidate::Direct(_) => None,
            Candidate::Winograd { tile, .. } => Some(tile),
        }
    }

    /// The kernel of the conv itself (of the product, for Winograd).
    pub fn direct(self) -> DirectConv {
        match self {
            Candidate::Direct(d) | Candidate::Winograd { inner: d, .. } => d,
        }
    }

    /// Whether it can run `spec` on `caps` in `precision`.
    pub(crate) fn runs(self, caps: &Caps, spec: &ConvSpec, precision: Precision) -> bool {
        match self {
            Candidate::Direct(d) => d.runs(caps, spec, precision),
            Candidate::Winograd { tile, inner } => {
                winograd::applies(spec)
                    && winograd::product_spec(spec, tile)
                        .is_ok_and(|p| inner.runs(caps, &p, precision))
            }
        }
    }

    /// Every candidate the tuner may time for `spec` on `ctx`'s adapter in `precision`, the
    /// rules' choice first: the subgroup kernel with 8 and 12 channels per invocation where it
    /// fits, the gemm kernel (forced split-K too on hardware adapters, where the split pays),
    /// the workgroup kernel on hardware adapters in f32, and Winograd F(2x2) (and F(4x4) in
    /// f32: its transforms amplify f16 rounding too much) with the product on the rules'
    /// kernel.
    pub fn tuning_set(
        ctx: &crate::context::GpuContext,
        spec: &ConvSpec,
        precision: Precision,
    ) -> Vec<Candidate> {
        Self::set(&Caps::of(ctx), spec, precision)
    }

    /// [`Candidate::tuning_set`] for an adapter described by `caps`.
    pub(crate) fn set(caps: &Caps, spec: &ConvSpec, precision: Precision) -> Vec<Candidate> {
        let mut set = vec![rule(caps, spec, precision)];
        let mut add = |c: Candidate| {
            if !set.contains(&c) && c.runs(caps, spec, precision) {
                set.push(c);
            }
        };
        for ch4 in [2, 3] {
            add(Candidate::Direct(DirectConv::Subgroup { ch4 }));
        }
        add(Candidate::Direct(DirectConv::Gemm { split_k: false }));
        if !caps.software {
            add(Candidate::Direct(DirectConv::Gemm { split_k: true }));
            add(Candidate::Direct(DirectConv::Workgroup));
        }
        let tiles: &[Tile] = match precision {
            Precision::F32 => &[Tile::F4, Tile::F2],
            Precision::F16 => &[Tile::F2],
        };
        for &tile in tiles {
            if let Ok(product) = winograd::product_spec(spec, tile)
                && winograd::applies(spec)
            {
                add(Candidate::Winograd {
                    tile,
                    inner: rule_direct(caps, &product),
                });
            }
        }
        set
    }
}

/// Where a conv's candidate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChoiceSource {
    /// The hand rules: tuning off, an adapter without timestamp queries, or a conv the time
    /// budget did not reach.
    Rules,
    /// Forced by the builder ([`crate::NetworkBuilder::kernel`] other than `Auto`, or
    /// [`crate::NetworkBuilder::candidate`]).
    Forced,
    /// The tuning cache on disk.
    Cache,
    /// Measured while this network was built.
    Tuned,
}

impl ChoiceSource {
    /// `rules`, `forced`, `cache` or `tuned`.
    pub fn name(self) -> &'static str {
        match self {
            ChoiceSource::Rules => "rules",
            ChoiceSource::Forced => "forced",
            ChoiceSource::Cache => "cache",
            ChoiceSource::Tuned => "tuned",
        }
    }
}

/// The candidate a conv runs and where that choice came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvChoice {
    /// What runs.
    pub candidate: Candidate,
    /// Why.
    pub source: ChoiceSource,
}

impl std::fmt::Display for ConvChoice {
    /// `f4+subgroup12 (cache)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.candidate, self.source.name())
    }
}

/// Input channels per group from which the rules take Winograd F(4x4) on a software adapter:
/// where the 4x fewer multiplies beat the cost of the two transforms on lavapipe (docs/gpu.md,
/// "Measured figures behind the rules").
const WINOGRAD_MIN_CHANNELS: usize = 48;

/// The hand rules' candidate for `spec` on `caps` in `precision`: Winograd F(4x4) with the
/// product on the subgroup kernel on a software adapter in f32, for 3x3 stride-1 convs of at
/// least [`WINOGRAD_MIN_CHANNELS`] input channels per group whose product fits the subgroup
/// kernel (its 36 * cin weight rows within the texture size); otherwise the direct conv of
/// [`rule_direct`]. Not in f16 (F(4x4)'s transforms amplify rounding: 10 x 10 in the input
/// transform), not on hardware GPUs, where no measurement was at hand (tuning measures there).
/// The cost: the transformed weights take 4x the memory of the 3x3 ones.
pub(crate) fn rule(caps: &Caps, spec: &ConvSpec, precision: Precision) -> Candidate {
    if caps.software
        && precision == Precision::F32
        && winograd::applies(spec)
        && spec.in_channels / spec.groups >= WINOGRAD_MIN_CHANNELS
        && let Ok(product) = winograd::product_spec(spec, Tile::F4)
        && conv_subgroup::fits(caps, &product, None)
    {
        return Candidate::Winograd {
            tile: Tile::F4,
            inner: DirectConv::Subgroup {
                ch4: rule_ch4(caps, &product),
            },
        };
    }
    Candidate::Direct(rule_direct(caps, spec))
}

/// The rules' direct kernel: the subgroup kernel on a software adapter where it fits (lavapipe
/// runs each storage or workgroup-memory load as a loop over the SIMD lanes, while texture
/// fetches and shuffles are cheap: docs/lavapipe.md), else the gemm kernel.
pub(crate) fn rule_direct(caps: &Caps, spec: &ConvSpec) -> DirectConv {
    if caps.software && conv_subgroup::fits(caps, spec, None) {
        DirectConv::Subgroup {
            ch4: rule_ch4(caps, spec),
        }
    } else {
        DirectConv::Gemm { split_k: false }
    }
}

fn rule_ch4(caps: &Caps, spec: &ConvSpec) -> u8 {
    let sg = caps.subgroup_min.unwrap_or(8) as usize;
    conv_subgroup::subgroup_ch4(spec.out_channels / spec.groups, sg) as u8
}

/// The implementation of `direct` for `spec` on `caps`, with its weights laid out.
///
/// # Errors
/// [`GpuError::Unsupported`] where the subgroup kernel cannot run `spec`.
pub(crate) fn prepare(
    direct: DirectConv,
    caps: &Caps,
    spec: &ConvSpec,
    weight: ArrayView4<'_, f32>,
) -> Result<(ConvImpl, WeightData)> {
    Ok(match direct {
        DirectConv::Subgroup { ch4 } => {
            let ch4 = usize::from(ch4);
            if !conv_subgroup::fits(caps, spec, Some(ch4)) {
                return Err(GpuError::Unsupported(format!(
                    "the subgroup conv kernel with {} channels per invocation cannot run a \
                     {k}x{k} conv with stride {} and {} output channels per group on this adapter",
                    4 * ch4,
                    spec.stride,
                    spec.out_channels / spec.groups,
                    k = spec.kernel_size
                )));
            }
            let (c, w) = conv_subgroup::prepare(spec, weight, caps, Some(ch4));
            (ConvImpl::Subgroup(c), w)
        }
        DirectConv::Gemm { split_k } => {
            let (c, w) = conv_gemm::prepare(spec, weight, split_k);
            (ConvImpl::Gemm(c), w)
        }
        DirectConv::Workgroup => {
            let (c, w) = conv_tiled::prepare(spec, weight);
            (ConvImpl::Workgroup(c), w)
        }
        DirectConv::Naive => (ConvImpl::Naive, conv_naive::prepare(weight)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(c: usize, stride: usize, groups: usize) -> ConvSpec {
        ConvSpec::new(c, c, 3, stride, 1, groups).expect("spec")
    }

    /// The rules take F(4x4) only on software adapters, in f32, for wide 3x3 stride-1 convs;
    /// forcing picks the tile on any adapter and precision; other convs stay direct.
    #[test]
    fn winograd_is_chosen_where_it_measured_faster_or_when_forced() {
        let wide = conv(48, 1, 1);
        let (f32_, f16_) = (Precision::F32, Precision::F16);
        let lavapipe = Caps::software_for_tests(16384);
        let hardware = Caps {
            software: false,
            ..lavapipe
        };
        let tile = |k: ConvKernel, spec: &ConvSpec, caps: &Caps, precision| {
            k.candidate(caps, spec, precision)
                .ok()
                .and_then(Candidate::winograd_tile)
        };
        let auto =
            |spec: &ConvSpec, caps: &Caps, precision| tile(ConvKernel::Auto, spec, caps, precision);
        assert_eq!(auto(&wide, &lavapipe, f32_), Some(Tile::F4));
        assert_eq!(auto(&wide, &hardware, f32_), None);
        assert_eq!(auto(&wide, &lavapipe, f16_), None);
        assert_eq!(auto(&conv(47, 1, 1), &lavapipe, f32_), None);
        // 96 channels in 4 groups: 24 per group.
        assert_eq!(auto(&conv(96, 1, 4), &lavapipe, f32_), None);
        assert_eq!(auto(&conv(192, 2, 1), &lavapipe, f32_), None);
        // The product's 36 * cin weight rows must fit a texture: 455 * 36 = 16380 does, 456
        // (and B3's 768) does not; nor does anything without subgroups.
        assert_eq!(auto(&conv(455, 1, 1), &lavapipe, f32_), Some(Tile::F4));
        assert_eq!(auto(&conv(456, 1, 1), &lavapipe, f32_), None);
        assert_eq!(auto(&conv(768, 1, 1), &lavapipe, f32_), None);
        let no_subgroups = Caps {
            subgroup_min: None,
            ..lavapipe
        };
        assert_eq!(auto(&wide, &no_subgroups, f32_), None);
        for caps in [lavapipe, hardware, no_subgroups] {
            for precision in [f32_, f16_] {
                let pick = |k, s: &ConvSpec| tile(k, s, &caps, precision);
                let s = conv(8, 1, 2);
                assert_eq!(pick(ConvKernel::Winograd, &s), Some(Tile::F2));
                assert_eq!(pick(ConvKernel::Winograd4, &s), Some(Tile::F4));
                assert_eq!(pick(ConvKernel::Winograd4, &conv(8, 2, 1)), None);
                assert_eq!(pick(ConvKernel::Subgroup, &wide), None);
                assert_eq!(pick(ConvKernel::Gemm, &wide), None);
            }
        }
    }

    #[test]
    fn kernel_choice_follows_the_adapter_and_the_conv() {
        let spec = ConvSpec::conv3x3(8, 16, 1, 1).expect("spec");
        let with = Caps::software_for_tests(8192);
        let hardware = Caps {
            software: false,
            ..with
        };
        let without = Caps {
            subgroup_min: None,
            ..with
        };
        let f32_ = Precision::F32;
        let imp = |k: ConvKernel, caps: &Caps, spec: &ConvSpec| {
            let c = k.candidate(caps, spec, f32_)?;
            prepare(
                c.direct(),
                caps,
                spec,
                ndarray::Array4::zeros(spec.weight_shape()).view(),
            )
            .map(|(i, _)| i)
        };
        assert!(matches!(
            imp(ConvKernel::Auto, &with, &spec),
            Ok(ConvImpl::Subgroup(conv_subgroup::Config {
                m_tiles: 1,
                sg: 8,
                ch4: 2
            }))
        ));
        let gemm16 = ConvImpl::Gemm(conv_gemm::Config {
            rows: conv_gemm::GemmRows { wy: 8, tmv: 1 },
            m_pad: 32,
            k_pad: 80,
            force_split: false,
        });
        assert_eq!(imp(ConvKernel::Auto, &without, &spec).ok(), Some(gemm16));
        assert_eq!(imp(ConvKernel::Auto, &hardware, &spec).ok(), Some(gemm16));
        assert!(matches!(
            imp(ConvKernel::SplitK, &with, &spec),
            Ok(ConvImpl::Gemm(conv_gemm::Config {
                force_split: true,
                ..
            }))
        ));
        assert!(matches!(
            imp(ConvKernel::Workgroup, &with, &spec),
            Ok(ConvImpl::Workgroup(conv_tiled::Config {
                m_pad: 64,
                k_pad: 80
            }))
        ));
        assert!(matches!(
            imp(ConvKernel::Subgroup, &without, &spec),
            Err(GpuError::Unsupported(_))
        ));
        let five = ConvSpec::new(3, 4, 5, 1, 2, 1).expect("spec");
        assert!(matches!(
            imp(ConvKernel::Subgroup, &with, &five),
            Err(GpuError::Unsupported(_))
        ));
        let naive = prepare(
            DirectConv::Naive,
            &with,
            &spec,
            ndarray::Array4::zeros(spec.weight_shape()).view(),
        );
        assert!(matches!(
            naive,
            Ok((ConvImpl::Naive, WeightData::Buffer(d))) if d.len() == 16 * 8 * 9
        ));
    }

    /// The tuning set starts with the rules' choice, holds only candidates that run the conv,
    /// no duplicates, and every candidate's name reads back as itself.
    #[test]
    fn tuning_sets_start_with_the_rule_and_hold_only_runnable_candidates() {
        let lavapipe = Caps::software_for_tests(16384);
        let hardware = Caps {
            software: false,
            ..lavapipe
        };
        let specs = [
            conv(48, 1, 1),
            conv(48, 2, 1),
            conv(8, 1, 2),
            ConvSpec::new(3, 48, 1, 2, 0, 1).expect("spec"),
            ConvSpec::new(3, 4, 5, 1, 2, 1).expect("spec"),
            ConvSpec::new(1280, 1000, 1, 1, 0, 1).expect("spec"),
        ];
        for caps in [lavapipe, hardware] {
            for precision in Precision::ALL {
                for spec in &specs {
                    let set = Candidate::set(&caps, spec, precision);
                    assert_eq!(set[0], rule(&caps, spec, precision));
                    for (i, c) in set.iter().enumerate() {
                        assert!(c.runs(&caps, spec, precision), "{c} {spec:?}");
                        assert!(!set[..i].contains(c));
                        assert_eq!(Candidate::parse(&c.to_string()), Some(*c));
                        if precision == Precision::F16 {
                            assert_ne!(c.winograd_tile(), Some(Tile::F4));
                        }
                    }
                }
            }
        }
        assert_eq!(Candidate::parse("f3+gemm"), None);
        assert_eq!(Candidate::parse("subgroup16"), None);
    }

    /// Every WGSL file has a parameter struct, checked against its layout in its kernel file.
    #[test]
    fn every_shader_has_a_params_struct() {
        use crate::kernels::*;
        let mut checked: Vec<Shader> = [
            conv_gemm::ConvGemmParams::SHADERS,
            conv_tiled::ConvTiledParams::SHADERS,
            conv_subgroup::ConvSubgroupParams::SHADERS,
            conv_naive::ConvNaiveParams::SHADERS,
            affine::AffineParams::SHADERS,
            gap::GapParams::SHADERS,
            linear::LinearParams::SHADERS,
            channel_scale::ScaleParams::SHADERS,
            wino_input::WinoInputParams::SHADERS,
            wino_output::WinoOutputParams::SHADERS,
        ]
        .concat();
        checked.sort_by_key(|s| s.file_name());
        assert_eq!(checked, Shader::ALL);
    }
}
