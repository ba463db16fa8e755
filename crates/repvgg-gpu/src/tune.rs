//! Per-adapter autotuning: for each distinct conv shape of a network's workload, time the
//! candidates of its tuning set ([`Candidate::set`]) on the adapter with timestamp
//! queries, keep the fastest, and persist the choice in the tuning cache. Then, where some
//! conv's tuned choice differs from the rules', check the tuned choices on the whole network:
//! choices each faster on a network of their one conv can still make the whole network
//! slower. The network is assembled with the tuned choices and with the rules', both are
//! timed on the workload as a shape's candidates are (warm-up runs, then interleaved rounds,
//! the best run counting), and the tuned choices are kept only when faster by [`MARGIN`]; the
//! verdict is cached too. [`Tuning::Cached`] reuses a cached verdict on the same tuned choices
//! without timing, [`Tuning::Force`] checks again, [`Tuning::Off`] never checks. Tuned choices
//! the check has not passed are not used: where the time budget is spent before the check
//! can run, the rules choose and no verdict is cached (the next build checks first).
//!
//! The cache is one file per adapter in the cache directory ([`GpuContext::cache_dir`]),
//! `tuning-<crc of the identity>.bin`: [`checked_file`]'s header, then text lines, the first
//! the identity (adapter name, driver, driver details, backend), each other a key and a value
//! separated by a tab:
//! - a conv shape's choice: the key (precision and shape, [`key`]), then the candidate, as
//!   in `f32 48>48 k3 s1 p1 g1 1x56x56\tf4+subgroup12`;
//! - a network's verdict: the key `net PRECISION NxHxW C convs HASH` (the workload's
//!   precision, batch and input size, the number of convs and the 64-bit FNV-1a hash, in 16
//!   hex digits, of the convs' keys in order, joined by newlines; [`network_key`]), then
//!   `tuned` or `rules` and the FNV-1a hash of the tuned choices checked (the candidates'
//!   names in conv order, joined by newlines; [`fingerprint`]), as in
//!   `net f32 1x224x224 22 convs 0123456789abcdef\trules fedcba9876543210`. A verdict on
//!   other tuned choices than a build's (a shape tuned since) does not apply to it.
//!
//! A damaged file, another adapter's, or one from an older format reads as empty and is
//! written anew at the next save; an entry whose candidate this version does not know or
//! cannot run, and a verdict line that does not parse, are skipped.

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
use crate::tuning::{Kept, NetworkCheck, TunedShape, Tuning, TuningReport};

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
    /// Network-level verdicts, by [`network_key`].
    verdicts: BTreeMap<String, Verdict>,
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
        let (entries, verdicts) = path
            .as_deref()
            .and_then(|p| checked_file::read(MAGIC, p, MAX_FILE))
            .and_then(|bytes| parse(&identity, &bytes))
            .unwrap_or_default();
        Self {
            identity,
            entries,
            verdicts,
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

    pub fn verdict(&self, key: &str) -> Option<Verdict> {
        self.verdicts.get(key).copied()
    }

    pub fn insert_verdict(&mut self, key: String, v: Verdict) {
        if self.verdicts.insert(key, v) != Some(v) {
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
        for (k, v) in &self.verdicts {
            text += &format!("\n{k}\t{v}");
        }
        checked_file::write(MAGIC, path, text.as_bytes())?;
        self.dirty = false;
        Ok(true)
    }
}

/// The entries and verdicts of a cache payload.
type Parsed = (BTreeMap<String, Candidate>, BTreeMap<String, Verdict>);

/// The entries and verdicts of a cache payload for `identity`; `None` for another adapter's or
/// a payload that is not text. A line that does not parse is skipped.
fn parse(identity: &str, bytes: &[u8]) -> Option<Parsed> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.split('\n');
    if lines.next()? != identity {
        return None;
    }
    let (mut entries, mut verdicts) = (BTreeMap::new(), BTreeMap::new());
    for l in lines {
        let Some((k, v)) = l.split_once('\t') else {
            continue;
        };
        if k.starts_with(NETWORK_PREFIX) {
            if let Some(v) = Verdict::parse(v) {
                verdicts.insert(k.to_string(), v);
            }
        } else if let Some(c) = Candidate::parse(v) {
            entries.insert(k.to_string(), c);
        }
    }
    Some((entries, verdicts))
}

/// The start of a verdict's key (a conv's key starts with its precision).
const NETWORK_PREFIX: &str = "net ";

/// A network-level verdict as the cache holds it: which set was kept, for which tuned choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub kept: Kept,
    /// The [`fingerprint`] of the tuned choices checked: a verdict on other choices (a shape
    /// tuned again, or tuned since) does not apply.
    pub tuned: u64,
}

impl Verdict {
    /// `tuned 0123456789abcdef` or `rules 0123456789abcdef`, as `Display` writes it.
    fn parse(s: &str) -> Option<Self> {
        let (kept, fp) = s.split_once(' ')?;
        let kept = match kept {
            "tuned" => Kept::Tuned,
            "rules" => Kept::Rules,
            _ => return None,
        };
        if fp.len() != 16 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Self {
            kept,
            tuned: u64::from_str_radix(fp, 16).ok()?,
        })
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:016x}", self.kept, self.tuned)
    }
}

/// 64-bit FNV-1a of `parts` joined by newlines: stable across builds and platforms, so that
/// a cached verdict's key and fingerprint mean the same to every version reading them.
fn fnv1a<S: AsRef<str>>(parts: impl IntoIterator<Item = S>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.into_iter().enumerate() {
        let sep: &[u8] = if i == 0 { b"" } else { b"\n" };
        for &b in sep.iter().chain(part.as_ref().as_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The cache key of a network-level verdict: `net PRECISION NxHxW C convs HASH`, the
/// workload, the number of convs and the FNV-1a hash of their [`key`]s in order.
pub(crate) fn network_key(job: Job, conv_keys: &[String]) -> String {
    format!(
        "{NETWORK_PREFIX}{} {}x{}x{} {} convs {:016x}",
        job.precision,
        job.batch,
        job.height,
        job.width,
        conv_keys.len(),
        fnv1a(conv_keys)
    )
}

/// The FNV-1a hash of each conv's candidate (its name), in order.
pub(crate) fn fingerprint(choices: &[ConvChoice]) -> u64 {
    fnv1a(choices.iter().map(|c| c.candidate.to_string()))
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

/// Chooses the kernel of every conv of `graph` (from the cache, timed now, or the rules'),
/// checks tuned choices on the whole network (from the cache's verdict, or timed now), and
/// assembles the network with the choices kept, its [`TuningReport`] attached.
pub(crate) fn build(
    ctx: &GpuContext,
    caps: &Caps,
    graph: FinishedGraph,
    job: Job,
    how: Assembly,
) -> Result<GpuNetwork> {
    let convs = graph.convs();
    let rules: Vec<ConvChoice> = convs
        .iter()
        .map(|c| ConvChoice {
            candidate: select::rule(caps, &c.spec, job.precision),
            source: ChoiceSource::Rules,
        })
        .collect();
    let mut report = TuningReport {
        mode: job.mode,
        budget: job.budget,
        ..TuningReport::default()
    };
    let assemble =
        |graph, choices: &[ConvChoice]| GpuNetwork::assemble(ctx, *caps, graph, choices, how, None);
    let skipped = |mut report: TuningReport, why: String| {
        report.network = NetworkCheck::NotRun("tuning did not run".into());
        report.skipped = Some(why);
        report
    };
    if job.mode == Tuning::Off {
        let report = skipped(report, "the rules choose".into());
        return Ok(assemble(graph, &rules)?.with_tuning_report(report));
    }
    if !ctx.has_timestamps() {
        let why = "the adapter has no timestamp queries: the rules choose";
        let report = skipped(report, why.into());
        return Ok(assemble(graph, &rules)?.with_tuning_report(report));
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
        Err(e) => {
            let report = skipped(report, format!("the workload does not fit: {e}"));
            return Ok(assemble(graph, &rules)?.with_tuning_report(report));
        }
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
                rules[i]
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
                    rules[i]
                }
            },
        };
        decided.insert(k, choice);
    }
    let tuned: Vec<ConvChoice> = keys.iter().map(|k| decided[k.as_str()]).collect();
    let net = if tuned
        .iter()
        .zip(&rules)
        .all(|(t, r)| t.candidate == r.candidate)
    {
        report.network = NetworkCheck::NotRun("every tuned choice is the rules' one".into());
        assemble(graph, &tuned)?
    } else {
        let verdict_key = network_key(job, &keys);
        let fingerprint = fingerprint(&tuned);
        let verdict = cache
            .verdict(&verdict_key)
            .filter(|v| v.tuned == fingerprint);
        match verdict {
            Some(v) if job.mode == Tuning::Cached => {
                report.network = NetworkCheck::Cached(v.kept);
                match v.kept {
                    Kept::Tuned => assemble(graph, &tuned)?,
                    Kept::Rules => assemble(graph, &rules)?,
                }
            }
            // Choices the check has not passed are not used: the rules choose until a later
            // build checks them (its first timing job, so timed whole).
            _ if start.elapsed() >= job.budget => {
                report.network =
                    NetworkCheck::NotRun("the time budget was spent before it could run".into());
                assemble(graph, &rules)?
            }
            _ => {
                let deadline = timed_one.then_some(start + job.budget);
                let (net, check) =
                    check_network(ctx, caps, graph, [&tuned, &rules], job, how, deadline)?;
                if let NetworkCheck::Measured { kept, .. } = check {
                    let verdict = Verdict {
                        kept,
                        tuned: fingerprint,
                    };
                    cache.insert_verdict(verdict_key, verdict);
                }
                report.network = check;
                net
            }
        }
    };
    report.spent = start.elapsed();
    // Best effort: a cache that cannot be written costs tuning time later, nothing else.
    let _ = cache.save();
    Ok(net.with_tuning_report(report))
}

/// Times `graph` assembled with the tuned choices and with the rules' (`[tuned, rules]`) on
/// the job's workload: both built and warmed up first, then timed in [`ROUNDS`] interleaved
/// rounds, the best run of each counting, as [`measure`] times a shape's candidates. Returns
/// the network kept and the verdict: the tuned one only when faster by [`MARGIN`]. The rules'
/// network, and [`NetworkCheck::NotRun`], when `deadline` passes first or a tuned run fails.
fn check_network(
    ctx: &GpuContext,
    caps: &Caps,
    graph: FinishedGraph,
    [tuned, rules]: [&[ConvChoice]; 2],
    job: Job,
    how: Assembly,
    deadline: Option<Instant>,
) -> Result<(GpuNetwork, NetworkCheck)> {
    let tuned_net = GpuNetwork::assemble(ctx, *caps, graph.clone(), tuned, how, None);
    let rules_net = GpuNetwork::assemble(ctx, *caps, graph, rules, how, None)?;
    let not_run = |why: String| NetworkCheck::NotRun(why);
    let tuned_net = match tuned_net {
        Ok(n) => n,
        Err(e) => {
            let why = format!("the network with the tuned choices failed to build: {e}");
            return Ok((rules_net, not_run(why)));
        }
    };
    let [t, r] = match time_pair([&tuned_net, &rules_net], job, deadline) {
        Ok(times) => times,
        Err(why) => return Ok((rules_net, not_run(why))),
    };
    let kept = if t.as_secs_f64() < MARGIN * r.as_secs_f64() {
        Kept::Tuned
    } else {
        Kept::Rules
    };
    let net = match kept {
        Kept::Tuned => tuned_net,
        Kept::Rules => rules_net,
    };
    Ok((
        net,
        NetworkCheck::Measured {
            tuned: t,
            rules: r,
            kept,
        },
    ))
}

/// The best GPU time of each of `nets` on the job's workload: [`WARMUP`] untimed runs each,
/// then [`ROUNDS`] rounds of one timed run each, the first network alternating. Why not, when
/// `deadline` passes first or a run fails.
fn time_pair(
    nets: [&GpuNetwork; 2],
    job: Job,
    deadline: Option<Instant>,
) -> std::result::Result<[Duration; 2], String> {
    let past = || deadline.is_some_and(|d| Instant::now() >= d);
    let out_of_time = || "the time budget ran out during it".to_string();
    let (n, h, w) = (job.batch, job.height, job.width);
    for net in nets {
        if past() {
            return Err(out_of_time());
        }
        net.bench(n, h, w, WARMUP, 0)
            .map_err(|e| format!("a run failed: {e}"))?;
    }
    let mut best = [Duration::MAX; 2];
    for round in 0..ROUNDS {
        if past() {
            return Err(out_of_time());
        }
        // Each network first in every other round: neither always runs after the other.
        for i in [round % 2, 1 - round % 2] {
            let runs = nets[i]
                .bench(n, h, w, 0, 1)
                .map_err(|e| format!("a run failed: {e}"))?;
            if let Some(t) = runs.into_iter().min() {
                best[i] = best[i].min(t);
            }
        }
    }
    if best.contains(&Duration::MAX) {
        return Err("no run was timed".into());
    }
    Ok(best)
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
        c.insert_verdict(
            "net f32 1x56x56 2 convs 0123456789abcdef".into(),
            Verdict {
                kept: Kept::Rules,
                tuned: 0xfedc_ba98_7654_3210,
            },
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
        assert_eq!(back.verdicts, saved.verdicts);
        assert_eq!(
            back.verdict("net f32 1x56x56 2 convs 0123456789abcdef"),
            Some(Verdict {
                kept: Kept::Rules,
                tuned: 0xfedc_ba98_7654_3210
            })
        );
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
            assert!(c.entries.is_empty() && c.verdicts.is_empty(), "case {n}");
            c.insert("k".into(), Candidate::parse("gemm").expect("gemm"));
            assert_eq!(c.save().ok(), Some(true), "case {n}");
            let back = TuningCache::open(id.into(), Some(dir.path()));
            assert_eq!(back.entries, c.entries, "case {n}");
        }
    }

    /// A verdict line whose value does not parse is skipped, the others kept; a verdict's
    /// value under a conv's key, or a candidate under a verdict's key, is skipped too.
    #[test]
    fn damaged_verdict_lines_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = "llvmpipe\tllvmpipe\tMesa\tvulkan";
        let path = TuningCache::open(id.into(), Some(dir.path()))
            .path()
            .expect("path")
            .to_path_buf();
        let lines = [
            "net ok\trules 0123456789abcdef",
            "net ok2\ttuned FEDCBA9876543210",
            "net a\tmaybe 0123456789abcdef",
            "net b\trules 0123",
            "net c\trules 0123456789abcdeg",
            "net d\ttuned +123456789abcdef",
            "net e\ttuned 0123456789abcdef0",
            "net f\tgemm",
            "net g\trules",
            "net h",
            "f32 1>1 k1 s1 p0 g1 1x1x1\trules 0123456789abcdef",
            "f32 2>2 k1 s1 p0 g1 1x1x1\tgemm",
        ];
        let text = format!("{id}\n{}", lines.join("\n"));
        std::fs::write(&path, checked_file::encode(MAGIC, text.as_bytes())).expect("write");
        let c = TuningCache::open(id.into(), Some(dir.path()));
        assert_eq!(c.verdicts.len(), 2, "{:?}", c.verdicts);
        assert_eq!(c.verdict("net ok").map(|v| v.kept), Some(Kept::Rules));
        assert_eq!(
            c.verdict("net ok2"),
            Some(Verdict {
                kept: Kept::Tuned,
                tuned: 0xfedc_ba98_7654_3210
            })
        );
        assert_eq!(c.entries.len(), 1, "{:?}", c.entries);
        assert!(c.get("f32 2>2 k1 s1 p0 g1 1x1x1").is_some());
    }

    #[test]
    fn verdict_keys_name_the_workload_and_hash_the_convs() {
        // FNV-1a 64's published vectors: the hash does not depend on this build.
        assert_eq!(fnv1a([""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(["a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(["a", "b"]), fnv1a(["a\nb"]));
        let job = |batch| Job {
            mode: Tuning::Cached,
            budget: Duration::ZERO,
            batch,
            height: 224,
            width: 200,
            precision: Precision::F16,
        };
        let keys = vec!["f16 3>48 k3 s2 p1 g1 1x224x200".to_string(), "x".into()];
        let k = network_key(job(1), &keys);
        assert!(k.starts_with("net f16 1x224x200 2 convs "), "{k}");
        assert_eq!(k.len(), "net f16 1x224x200 2 convs ".len() + 16, "{k}");
        assert_ne!(k, network_key(job(8), &keys));
        assert_ne!(k, network_key(job(1), &keys[..1]));
        let swapped = [keys[1].clone(), keys[0].clone()];
        assert_ne!(k, network_key(job(1), &swapped));
        let choice = |candidate| ConvChoice {
            candidate,
            source: ChoiceSource::Tuned,
        };
        let gemm = Candidate::parse("gemm").expect("gemm");
        let sub = Candidate::parse("subgroup8").expect("subgroup8");
        assert_eq!(
            fingerprint(&[choice(gemm), choice(sub)]),
            fnv1a(["gemm", "subgroup8"])
        );
        assert_ne!(
            fingerprint(&[choice(gemm), choice(sub)]),
            fingerprint(&[choice(sub), choice(gemm)])
        );
    }

    /// On the adapter, with per-shape entries in the cache that differ from the rules': a
    /// cached verdict decides a cached build without timing (the rules' choices for `rules`,
    /// the cached ones for `tuned`); tuning off takes the rules and leaves the verdict alone;
    /// a damaged verdict is ignored, and with the budget spent the rules choose and no verdict
    /// is cached; with a budget the check times both networks and caches its verdict, which
    /// the next cached build reuses; a forced build checks again.
    #[test]
    fn the_network_check_decides_and_its_verdict_is_cached() {
        use crate::{ContextOptions, NetworkBuilder};
        let Some(shared) = crate::test_context() else {
            return;
        };
        if !shared.has_timestamps() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let options = ContextOptions {
            pipeline_cache_dir: Some(dir.path().to_path_buf()),
            ..ContextOptions::default()
        };
        let ctx = GpuContext::with_options(&options).expect("context");
        let caps = Caps::of(&ctx);
        let (n, h, w) = (1, 12, 10);
        let specs = [
            ConvSpec::conv3x3(3, 8, 2, 1).expect("spec"),
            ConvSpec::conv3x3(8, 8, 1, 1).expect("spec"),
        ];
        let inputs = [[n, 3, h, w], [n, 8, h / 2, w / 2]];
        let build = |tuning, budget| {
            let mut b = NetworkBuilder::new(&ctx)
                .tuning(tuning)
                .tuning_budget(budget)
                .tune_for(n, h, w);
            let mut y = b.input(3);
            for (i, spec) in specs.iter().enumerate() {
                let weight = Array4::from_shape_fn(spec.weight_shape(), |(o, c, ky, kx)| {
                    ((o * 7 + c * 3 + ky + kx + i) % 5) as f32 / 5.0 - 0.4
                });
                let ep = Epilogue::bias(vec![0.05; spec.out_channels]).relu();
                y = b.conv(y, weight.view(), *spec, ep).expect("conv");
            }
            b.output("y", y);
            b.build().expect("build")
        };
        let rules: Vec<Candidate> = specs
            .iter()
            .map(|s| select::rule(&caps, s, Precision::F32))
            .collect();
        // Per shape, a candidate other than the rules' where the set has one.
        let others: Vec<Candidate> = specs
            .iter()
            .map(|s| {
                let set = Candidate::set(&caps, s, Precision::F32);
                set.iter().copied().find(|c| *c != set[0]).unwrap_or(set[0])
            })
            .collect();
        assert_ne!(others, rules, "no conv has a candidate but the rules'");
        let keys: Vec<String> = specs
            .iter()
            .zip(inputs)
            .map(|(s, x)| key(Precision::F32, s, x, false))
            .collect();
        let job = Job {
            mode: Tuning::Cached,
            budget: Duration::ZERO,
            batch: n,
            height: h,
            width: w,
            precision: Precision::F32,
        };
        let verdict_key = network_key(job, &keys);
        let tuned: Vec<ConvChoice> = others
            .iter()
            .map(|&candidate| ConvChoice {
                candidate,
                source: ChoiceSource::Cache,
            })
            .collect();
        let identity = TuningCache::identity(&ctx);
        let write = |verdict: Option<&str>| {
            let c = TuningCache::open(identity.clone(), Some(dir.path()));
            let path = c.path().expect("path").to_path_buf();
            let mut text = identity.clone();
            for (k, cand) in keys.iter().zip(&others) {
                text += &format!("\n{k}\t{cand}");
            }
            if let Some(v) = verdict {
                text += &format!("\n{verdict_key}\t{v}");
            }
            std::fs::write(&path, checked_file::encode(MAGIC, text.as_bytes())).expect("write");
        };
        let read_verdict =
            || TuningCache::open(identity.clone(), Some(dir.path())).verdict(&verdict_key);
        let candidates = |net: &GpuNetwork| -> Vec<Candidate> {
            net.conv_choices().iter().map(|c| c.candidate).collect()
        };
        let long = Duration::from_secs(600);
        let fp = fingerprint(&tuned);

        // A cached `rules` verdict: the rules' choices, nothing timed.
        write(Some(&format!("rules {fp:016x}")));
        let net = build(Tuning::Cached, long);
        let r = net.tuning_report().expect("report");
        assert_eq!(r.network, NetworkCheck::Cached(Kept::Rules), "{r}");
        assert_eq!((r.cached, r.tuned.len()), (2, 0), "{r}");
        assert_eq!(candidates(&net), rules);
        assert!(
            net.conv_choices()
                .iter()
                .all(|c| c.source == ChoiceSource::Rules)
        );

        // A cached `tuned` verdict: the cached choices.
        write(Some(&format!("tuned {fp:016x}")));
        let net = build(Tuning::Cached, long);
        let r = net.tuning_report().expect("report");
        assert_eq!(r.network, NetworkCheck::Cached(Kept::Tuned), "{r}");
        assert_eq!(candidates(&net), others);
        assert!(
            net.conv_choices()
                .iter()
                .all(|c| c.source == ChoiceSource::Cache)
        );

        // Tuning off: the rules, no check, the verdict left as it was.
        let net = build(Tuning::Off, long);
        let r = net.tuning_report().expect("report");
        assert!(matches!(r.network, NetworkCheck::NotRun(_)), "{r}");
        assert_eq!(candidates(&net), rules);
        assert_eq!(read_verdict().map(|v| v.kept), Some(Kept::Tuned));

        // A verdict on other tuned choices does not apply; a damaged one is ignored. Without
        // budget the check cannot run: the rules choose, and no verdict is cached.
        for damaged in [
            format!("rules {:016x}", fp ^ 1),
            format!("rules {fp:x}z"),
            format!("kept {fp:016x}"),
        ] {
            write(Some(&damaged));
            let net = build(Tuning::Cached, Duration::ZERO);
            let r = net.tuning_report().expect("report");
            assert!(
                matches!(r.network, NetworkCheck::NotRun(_)),
                "{damaged}: {r}"
            );
            assert_eq!(candidates(&net), rules, "{damaged}");
            let v = read_verdict();
            assert!(v.is_none_or(|v| v.tuned != fp), "{damaged}: {v:?}");
        }

        // No verdict, a budget: the check times both networks and caches its verdict.
        write(None);
        let net = build(Tuning::Cached, long);
        let r = net.tuning_report().expect("report").clone();
        let NetworkCheck::Measured {
            tuned: t,
            rules: rt,
            kept,
        } = r.network
        else {
            panic!("the check did not run: {r}");
        };
        assert!(t > Duration::ZERO && rt > Duration::ZERO, "{r}");
        assert_eq!(r.tuned.len(), 0, "{r}");
        let want = match kept {
            Kept::Tuned => &others,
            Kept::Rules => &rules,
        };
        assert_eq!(&candidates(&net), want, "{r}");
        assert_eq!(read_verdict(), Some(Verdict { kept, tuned: fp }));
        assert!(r.to_string().contains("network check: "), "{r}");
        // Reused by the next cached build.
        let net = build(Tuning::Cached, long);
        let again = net.tuning_report().expect("report");
        assert_eq!(again.network, NetworkCheck::Cached(kept), "{again}");
        assert_eq!(&candidates(&net), want);
        // A forced build never takes a cached verdict.
        let net = build(Tuning::Force, long);
        let forced = net.tuning_report().expect("report");
        assert!(
            !matches!(forced.network, NetworkCheck::Cached(_)),
            "{forced}"
        );
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
