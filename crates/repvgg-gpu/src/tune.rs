//! Per-adapter autotuning: for each distinct conv shape of a network's workload, time the
//! candidates of its tuning set ([`Candidate::set`]) on the adapter with timestamp
//! queries, keep the fastest, and persist the choice in the tuning cache.
//!
//! The cache is one file per adapter in the cache directory ([`GpuContext::cache_dir`]),
//! `tuning-<crc of the identity>.bin`: [`checked_file`]'s header, then text lines, the first
//! the identity (adapter name, driver, driver details, backend), each other a key (precision
//! and shape) and a candidate. A damaged file, another adapter's, or one from an older format
//! reads as empty and is written anew at the next save; an entry whose candidate this version
//! does not know or cannot run is skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ndarray::Array4;
use repvgg_math::ConvSpec;

use crate::caps::Caps;
use crate::checked_file;
use crate::context::GpuContext;
use crate::error::Result;
use crate::graph::{ConvSite, Epilogue, FinishedGraph, Graph};
use crate::network::{Assembly, GpuNetwork};
use crate::plan::{Step, Topology};
use crate::precision::Precision;
use crate::select::{self, Candidate, ChoiceSource, ConvChoice};
use crate::tuning::{TunedShape, Tuning, TuningReport};

/// The tuning cache file's magic and format version.
const MAGIC: &[u8; 8] = b"RVGGTUN1";
/// Largest tuning cache file read back (a line per shape: far more than any model has).
const MAX_FILE: u64 = 4 << 20;
/// A candidate replaces the rules' choice only when this much faster (timing noise).
const MARGIN: f64 = 0.97;
/// Untimed runs of each candidate, after every candidate of a shape is built.
const WARMUP: usize = 2;
/// Rounds over a shape's candidates, one timed run of each per round: the best counts.
/// Interleaved, so that a slow moment of the adapter (a software one shares the CPU with
/// everything else) does not fall on one candidate's runs only.
const ROUNDS: usize = 5;

/// The time budget of [`Tuning::Cached`] and [`Tuning::Force`] per network unless the builder
/// sets one ([`crate::NetworkBuilder::tuning_budget`]).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2);

/// The choices of one adapter, as the tuning cache holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TuningCache {
    identity: String,
    entries: BTreeMap<String, Candidate>,
    path: Option<PathBuf>,
    dirty: bool,
}

impl TuningCache {
    /// The identity line of `ctx`'s adapter: name, driver, driver details, backend.
    pub fn identity(ctx: &GpuContext) -> String {
        let i = ctx.adapter_info();
        [
            i.name.as_str(),
            i.driver.as_str(),
            i.driver_info.as_str(),
            i.backend.to_str(),
        ]
        .map(|s| s.replace(['\t', '\n'], " "))
        .join("\t")
    }

    /// The cache of `identity` in `dir` (`None`: kept in memory only), read from its file when
    /// that file is intact and this adapter's.
    pub fn open(identity: String, dir: Option<&Path>) -> Self {
        let path = dir.map(|d| {
            d.join(format!(
                "tuning-{:08x}.bin",
                crc32fast::hash(identity.as_bytes())
            ))
        });
        let entries = path
            .as_deref()
            .and_then(|p| checked_file::read(MAGIC, p, MAX_FILE))
            .and_then(|bytes| parse(&identity, &bytes))
            .unwrap_or_default();
        Self {
            identity,
            entries,
            path,
            dirty: false,
        }
    }

    pub fn get(&self, key: &str) -> Option<Candidate> {
        self.entries.get(key).copied()
    }

    pub fn insert(&mut self, key: String, c: Candidate) {
        if self.entries.insert(key, c) != Some(c) {
            self.dirty = true;
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Writes the file when entries changed since it was read. Returns whether it wrote.
    pub fn save(&mut self) -> std::io::Result<bool> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        if !self.dirty {
            return Ok(false);
        }
        let mut text = self.identity.clone();
        for (k, c) in &self.entries {
            text += &format!("\n{k}\t{c}");
        }
        checked_file::write(MAGIC, path, text.as_bytes())?;
        self.dirty = false;
        Ok(true)
    }
}

/// The entries of a cache payload for `identity`; `None` for another adapter's or a payload
/// that is not text.
fn parse(identity: &str, bytes: &[u8]) -> Option<BTreeMap<String, Candidate>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.split('\n');
    if lines.next()? != identity {
        return None;
    }
    Some(
        lines
            .filter_map(|l| {
                let (k, c) = l.split_once('\t')?;
                Some((k.to_string(), Candidate::parse(c)?))
            })
            .collect(),
    )
}

/// The cache key of a conv reading `x` (`[N, C, H, W]`) in `precision`.
pub(crate) fn key(precision: Precision, spec: &ConvSpec, x: [usize; 4], residual: bool) -> String {
    let [n, _, h, w] = x;
    format!(
        "{precision} {}>{} k{} s{} p{} g{} {n}x{h}x{w}{}",
        spec.in_channels,
        spec.out_channels,
        spec.kernel_size,
        spec.stride,
        spec.padding,
        spec.groups,
        if residual { " residual" } else { "" }
    )
}

/// What the tuner is asked to do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Job {
    pub mode: Tuning,
    pub budget: Duration,
    /// The workload: batch, height, width of the network's input.
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub precision: Precision,
}

/// The choice of every conv of `graph` (in the order of [`FinishedGraph::convs`]): from the
/// cache, timed now, or the rules'; and what tuning did.
pub(crate) fn choose(
    ctx: &GpuContext,
    caps: &Caps,
    graph: &FinishedGraph,
    job: Job,
) -> Result<(Vec<ConvChoice>, TuningReport)> {
    let convs = graph.convs();
    let rules = |c: &ConvSite| ConvChoice {
        candidate: select::rule(caps, &c.spec, job.precision),
        source: ChoiceSource::Rules,
    };
    let mut report = TuningReport {
        mode: job.mode,
        budget: job.budget,
        ..TuningReport::default()
    };
    let skip = |report: &mut TuningReport, why: String| {
        report.skipped = Some(why);
        Ok((convs.iter().map(rules).collect(), report.clone()))
    };
    if job.mode == Tuning::Off {
        return skip(&mut report, "the rules choose".into());
    }
    if !ctx.has_timestamps() {
        return skip(
            &mut report,
            "the adapter has no timestamp queries: the rules choose".into(),
        );
    }
    let steps = graph.nodes.iter().map(|(n, y)| Step::of(n, *y)).collect();
    let topo = Topology {
        tensors: graph.tensors.clone(),
        input: graph.input,
        steps,
        outputs: graph.outputs.clone(),
        precision: job.precision,
        chains: |_, _, _| false,
    };
    let shapes = match topo.shapes(job.batch, job.height, job.width) {
        Ok(s) => s,
        Err(e) => return skip(&mut report, format!("the workload does not fit: {e}")),
    };
    let keys: Vec<String> = convs
        .iter()
        .map(|c| key(job.precision, &c.spec, shapes[c.x], c.residual))
        .collect();
    let mut cache = TuningCache::open(TuningCache::identity(ctx), ctx.cache_dir());
    report.cache_file = cache.path().map(Path::to_path_buf);
    // Distinct shapes, the most multiply-adds first: those gain most from tuning.
    let mut order: Vec<usize> = (0..convs.len()).collect();
    order.sort_by_key(|&i| {
        let [n, _, h, w] = shapes[convs[i].x];
        std::cmp::Reverse(convs[i].spec.macs(h, w).unwrap_or(0) * n as u64)
    });
    let mut decided: BTreeMap<&str, ConvChoice> = BTreeMap::new();
    let start = Instant::now();
    let mut timed_one = false;
    for i in order {
        let (c, k) = (&convs[i], keys[i].as_str());
        if decided.contains_key(k) {
            continue;
        }
        let cached = cache
            .get(k)
            .filter(|cand| cand.runs(caps, &c.spec, job.precision));
        let choice = match cached {
            Some(candidate) if job.mode == Tuning::Cached => {
                report.cached += 1;
                ConvChoice {
                    candidate,
                    source: ChoiceSource::Cache,
                }
            }
            // The first shape timed by a build is timed whole, whatever the budget, so that
            // every build makes progress; the others stop at the budget.
            _ if start.elapsed() >= job.budget => {
                report.untuned += 1;
                rules(c)
            }
            _ => match measure(
                ctx,
                caps,
                c,
                shapes[c.x],
                job,
                std::mem::replace(&mut timed_one, true).then_some(start + job.budget),
            )? {
                Some(tuned) => {
                    let candidate = tuned.chosen;
                    cache.insert(k.to_string(), candidate);
                    report.tuned.push(TunedShape {
                        key: k.to_string(),
                        ..tuned
                    });
                    ConvChoice {
                        candidate,
                        source: ChoiceSource::Tuned,
                    }
                }
                None => {
                    report.untuned += 1;
                    rules(c)
                }
            },
        };
        decided.insert(k, choice);
    }
    report.spent = start.elapsed();
    // Best effort: a cache that cannot be written costs tuning time later, nothing else.
    let _ = cache.save();
    let choices = keys.iter().map(|k| decided[k.as_str()]).collect();
    Ok((choices, report))
}

/// Times every candidate of `c`'s tuning set on an input of shape `x`, each as a network of
/// the one conv (with the conv's bias and ReLU): all built and warmed up first, then timed in
/// [`ROUNDS`] interleaved rounds, the best run of each counting; picks one. `None` when
/// `deadline` passes before every candidate was timed (the shape is then left to the rules,
/// and not cached).
fn measure(
    ctx: &GpuContext,
    caps: &Caps,
    c: &ConvSite,
    x: [usize; 4],
    job: Job,
    deadline: Option<Instant>,
) -> Result<Option<TunedShape>> {
    let set = Candidate::set(caps, &c.spec, job.precision);
    let weight = Array4::from_shape_fn(c.spec.weight_shape(), |(o, i, ky, kx)| {
        ((o * 31 + i * 17 + ky * 5 + kx) % 13) as f32 / 13.0 - 0.5
    });
    let bias = vec![0.01f32; c.spec.out_channels];
    // Build every candidate first (pipelines compile here, on a software adapter on the
    // CPU that times them), then warm each up, then time them in rounds.
    let mut nets = Vec::with_capacity(set.len());
    for &candidate in &set {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        let mut g = Graph::new();
        let input = g.input(c.spec.in_channels);
        let ep = Epilogue::bias(bias.clone()).relu();
        let y = g.conv(input, weight.view(), c.spec, ep)?;
        g.output("y", y);
        let choice = ConvChoice {
            candidate,
            source: ChoiceSource::Forced,
        };
        let how = Assembly {
            precision: job.precision,
            max_binding: None,
            nan_fill: false,
        };
        // A candidate that fails here (a device limit the rules never meet) is left out.
        let net = GpuNetwork::assemble(ctx, *caps, g.finish()?, &[choice], how, None);
        if let Ok(net) = net
            && net.bench(x[0], x[2], x[3], WARMUP, 0).is_ok()
        {
            nets.push((candidate, net, Duration::MAX));
        }
    }
    for _ in 0..ROUNDS {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        for (_, net, best) in &mut nets {
            if let Ok(runs) = net.bench(x[0], x[2], x[3], 0, 1)
                && let Some(t) = runs.into_iter().min()
            {
                *best = (*best).min(t);
            }
        }
    }
    let times: Vec<(Candidate, Duration)> = nets
        .into_iter()
        .filter(|(_, _, t)| *t < Duration::MAX)
        .map(|(c, _, t)| (c, t))
        .collect();
    let rule = set[0];
    let rule_time = times.iter().find(|(c, _)| *c == rule).map(|(_, t)| *t);
    let fastest = times.iter().min_by_key(|(_, t)| *t).copied();
    let chosen = match (fastest, rule_time) {
        (Some((c, t)), Some(r)) if t.as_secs_f64() < MARGIN * r.as_secs_f64() => c,
        (Some((c, _)), None) => c,
        _ => rule,
    };
    Ok(Some(TunedShape {
        key: String::new(),
        times,
        chosen,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use repvgg_math::winograd::Tile;

    fn filled(dir: &Path, identity: &str) -> TuningCache {
        let mut c = TuningCache::open(identity.into(), Some(dir));
        c.insert(
            "f32 48>48 k3 s1 p1 g1 1x56x56".into(),
            Candidate::Winograd {
                tile: Tile::F4,
                inner: select::DirectConv::Subgroup { ch4: 3 },
            },
        );
        c.insert(
            "f16 3>48 k3 s2 p1 g1 8x224x224".into(),
            Candidate::Direct(select::DirectConv::Gemm { split_k: false }),
        );
        assert_eq!(c.save().ok(), Some(true));
        c
    }

    #[test]
    fn the_cache_round_trips_per_adapter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let saved = filled(dir.path(), "llvmpipe\tllvmpipe\tMesa\tvulkan");
        let back = TuningCache::open("llvmpipe\tllvmpipe\tMesa\tvulkan".into(), Some(dir.path()));
        assert_eq!(back.entries, saved.entries);
        assert_eq!(back.entries.len(), 2);
        // Unchanged: no write.
        let mut back = back;
        assert_eq!(back.save().ok(), Some(false));
        // Another adapter has another file, empty.
        let other = TuningCache::open("NVIDIA\tnvidia\t550\tvulkan".into(), Some(dir.path()));
        assert!(other.entries.is_empty() && other.path() != saved.path());
    }

    /// Truncated, bit-flipped, foreign (another identity in this adapter's file, another
    /// kind of file) and garbage files read as empty, and the next save rewrites them whole.
    #[test]
    fn damaged_and_foreign_files_are_ignored_and_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = "llvmpipe\tllvmpipe\tMesa\tvulkan";
        let saved = filled(dir.path(), id);
        let path = saved.path().expect("path").to_path_buf();
        let good = std::fs::read(&path).expect("read");
        let mut damaged: Vec<Vec<u8>> = vec![
            good[..good.len() - 1].to_vec(),
            good[..10].to_vec(),
            Vec::new(),
            b"not a cache at all".to_vec(),
            checked_file::encode(b"RVGGPLC1", &good[20..]),
            // Intact, but another adapter's identity.
            checked_file::encode(
                MAGIC,
                b"SwiftShader\tx\ty\tvulkan\nf32 1>1 k1 s1 p0 g1 1x1x1\tgemm",
            ),
            // Intact and ours, with an unknown candidate: that entry alone is dropped.
            checked_file::encode(
                MAGIC,
                format!("{id}\nk1\tf8+warp\nk2\tsubgroup12").as_bytes(),
            ),
        ];
        for i in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[i] ^= 0x04;
            damaged.push(bad);
        }
        for (n, bytes) in damaged.iter().enumerate() {
            std::fs::write(&path, bytes).expect("write");
            let mut c = TuningCache::open(id.into(), Some(dir.path()));
            if n == 6 {
                assert_eq!(c.entries.len(), 1, "case {n}");
                assert_eq!(c.get("k2"), Candidate::parse("subgroup12"));
                continue;
            }
            assert!(c.entries.is_empty(), "case {n}");
            c.insert("k".into(), Candidate::parse("gemm").expect("gemm"));
            assert_eq!(c.save().ok(), Some(true), "case {n}");
            let back = TuningCache::open(id.into(), Some(dir.path()));
            assert_eq!(back.entries, c.entries, "case {n}");
        }
    }

    #[test]
    fn keys_name_precision_shape_and_residual() {
        let spec = ConvSpec::conv3x3(48, 96, 2, 1).expect("spec");
        assert_eq!(
            key(Precision::F16, &spec, [8, 48, 56, 56], true),
            "f16 48>96 k3 s2 p1 g1 8x56x56 residual"
        );
        assert_ne!(
            key(Precision::F32, &spec, [1, 48, 56, 56], false),
            key(Precision::F32, &spec, [8, 48, 56, 56], false)
        );
    }
}
