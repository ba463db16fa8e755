//! What a network may do to choose its convs' kernels by measuring them ([`Tuning`]), and what
//! it did ([`TuningReport`]). The tuner itself is `tune`.

use std::path::PathBuf;
use std::time::Duration;

use crate::select::Candidate;

/// Whether a network times its convs' candidates on the adapter, for each distinct conv shape
/// of the workload it is built for ([`crate::NetworkBuilder::tune_for`]), and keeps the
/// fastest. Choices persist in the tuning cache beside the pipeline cache
/// ([`crate::ContextOptions::pipeline_cache_dir`]), keyed by adapter, driver, backend,
/// precision and shape. Where tuned choices differ from the rules', the whole network is timed
/// with both sets and the tuned set kept only when clearly faster ([`NetworkCheck`]); that
/// verdict is cached too. Tuning needs timestamp queries: without them the rules choose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Tuning {
    /// The hand rules only (no timing, no network check).
    Off,
    /// Reuse the cached choices and network verdicts; time the shapes the cache lacks, as the
    /// time budget allows (the rest take the rules until a later build goes on), and add them
    /// to the cache; check tuned choices no cached verdict covers on the whole network.
    #[default]
    Cached,
    /// Time every shape again (as the budget allows), replacing cached choices, and check the
    /// choices on the whole network again.
    Force,
}

/// A word that names no [`Tuning`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a tuning mode: expected off, cached or force")]
pub struct ParseTuningError(pub String);

impl Tuning {
    /// `off`, `cached` or `force`.
    pub fn name(self) -> &'static str {
        match self {
            Tuning::Off => "off",
            Tuning::Cached => "cached",
            Tuning::Force => "force",
        }
    }
}

impl std::fmt::Display for Tuning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Tuning {
    type Err = ParseTuningError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "rules" => Ok(Tuning::Off),
            "cached" | "on" => Ok(Tuning::Cached),
            "force" => Ok(Tuning::Force),
            _ => Err(ParseTuningError(s.into())),
        }
    }
}

/// One conv shape the tuner timed.
#[derive(Debug, Clone, PartialEq)]
pub struct TunedShape {
    /// The shape as the cache keys it: precision, channels, kernel, stride, padding, groups,
    /// input `[N, C, H, W]`, residual.
    pub key: String,
    /// Each candidate's best GPU time, in the order timed (the rules' choice first); a
    /// candidate that failed to build or run is absent.
    pub times: Vec<(Candidate, Duration)>,
    /// The choice: the fastest, unless it beat the rules' choice by less than the tuner's
    /// margin (noise), then the rules' choice.
    pub chosen: Candidate,
}

/// Which set of kernel choices the network-level check of tuning kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kept {
    /// The tuned choices (from this build's timing or the tuning cache).
    Tuned,
    /// The hand rules' choices.
    Rules,
}

impl Kept {
    /// `tuned` or `rules`, as the tuning cache writes it.
    pub fn name(self) -> &'static str {
        match self {
            Kept::Tuned => "tuned",
            Kept::Rules => "rules",
        }
    }
}

impl std::fmt::Display for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the network-level check of tuning decided. Each shape's choice is timed on a network
/// of that one conv; choices each faster alone can still make the whole network slower. So
/// where some conv's tuned choice differs from the rules', the network is assembled with the
/// tuned choices and with the rules' ones and both are timed on the workload; the tuned set
/// is kept only when clearly faster, and the verdict is cached.
#[derive(Debug, Clone, PartialEq)]
pub enum NetworkCheck {
    /// The check did not run, and the network runs the rules' choices: why (tuning did not
    /// run, every tuned choice is the rules' one, the time budget was spent first, a run
    /// failed). No verdict is cached.
    NotRun(String),
    /// Timed by this build: the best GPU time of the network with the tuned choices and with
    /// the rules', and the set kept.
    Measured {
        /// The network with the tuned choices.
        tuned: Duration,
        /// The network with the rules' choices.
        rules: Duration,
        /// The set the network runs.
        kept: Kept,
    },
    /// An earlier build's verdict on these same tuned choices, from the tuning cache.
    Cached(Kept),
}

impl Default for NetworkCheck {
    fn default() -> Self {
        NetworkCheck::NotRun("tuning did not run".into())
    }
}

impl NetworkCheck {
    /// The set of choices the network runs.
    pub fn kept(&self) -> Kept {
        match self {
            NetworkCheck::NotRun(_) => Kept::Rules,
            NetworkCheck::Measured { kept, .. } | NetworkCheck::Cached(kept) => *kept,
        }
    }
}

impl std::fmt::Display for NetworkCheck {
    /// `tuned choices kept (12.345 ms, the rules' 13.000 ms)`, `rules' choices kept (from the
    /// cache)`, `not run (the time budget was spent first)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: &Duration| d.as_secs_f64() * 1e3;
        match self {
            NetworkCheck::NotRun(why) => write!(f, "not run ({why})"),
            NetworkCheck::Measured {
                tuned,
                rules,
                kept: Kept::Tuned,
            } => write!(
                f,
                "tuned choices kept ({:.3} ms, the rules' {:.3} ms)",
                ms(tuned),
                ms(rules)
            ),
            NetworkCheck::Measured {
                tuned,
                rules,
                kept: Kept::Rules,
            } => write!(
                f,
                "rules' choices kept ({:.3} ms, the tuned {:.3} ms)",
                ms(rules),
                ms(tuned)
            ),
            NetworkCheck::Cached(Kept::Tuned) => write!(f, "tuned choices kept (from the cache)"),
            NetworkCheck::Cached(Kept::Rules) => {
                write!(f, "rules' choices kept (from the cache)")
            }
        }
    }
}

/// What tuning did while a network was built.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TuningReport {
    /// The mode.
    pub mode: Tuning,
    /// The time budget for measuring.
    pub budget: Duration,
    /// Time spent measuring, the network-level check included.
    pub spent: Duration,
    /// Distinct conv shapes whose choice came from the cache.
    pub cached: usize,
    /// The shapes timed by this build.
    pub tuned: Vec<TunedShape>,
    /// Distinct conv shapes left to the rules (the budget ran out, or the adapter has no
    /// timestamp queries).
    pub untuned: usize,
    /// The tuning cache file, where there is one.
    pub cache_file: Option<PathBuf>,
    /// Why tuning did not run, where it did not.
    pub skipped: Option<String>,
    /// What the network-level check of the tuned choices decided ([`NetworkCheck`]).
    pub network: NetworkCheck,
}

impl std::fmt::Display for TuningReport {
    /// One line: `tuning (cached): 3 shapes from the cache, 4 timed in 1.52 s of a 2.00 s
    /// budget, 2 left to the rules; network check: CHECK; cache FILE`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(why) = &self.skipped {
            return write!(f, "tuning ({}): off, {why}", self.mode);
        }
        write!(
            f,
            "tuning ({}): {} conv shapes from the cache, {} timed in {:.2} s of a {:.2} s \
             budget, {} left to the rules",
            self.mode,
            self.cached,
            self.tuned.len(),
            self.spent.as_secs_f64(),
            self.budget.as_secs_f64(),
            self.untuned
        )?;
        write!(f, "; network check: {}", self.network)?;
        match &self.cache_file {
            Some(p) => write!(f, "; cache {}", p.display()),
            None => write!(f, "; not persisted"),
        }
    }
}
