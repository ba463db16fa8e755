//! How a conv run is cut into chunks of whole output rows and spread over threads.

use crate::conv::{Geometry, Kernel, PreparedConv};

/// Winograd tiles per chunk and im2col elements per chunk: sizes that keep a chunk's buffers in
/// the L2 cache.
const TILES_PER_CHUNK: usize = 128;
const COL_ELEMS: usize = 256 * 1024;

impl PreparedConv {
    pub(crate) fn plan(&self, g: &Geometry, threads: usize) -> Plan {
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
}

/// How a run is cut: `units` (tile rows or output pixels) in `chunks` of `per_chunk`, processed
/// `slots` at a time, each with `slot_len` scratch elements.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub units: usize,
    pub per_chunk: usize,
    pub chunks: usize,
    pub slots: usize,
    pub slot_len: usize,
    pub inner_par: bool,
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
pub(crate) fn run_chunks(
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

#[cfg(test)]
mod tests {
    use super::halve;

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
