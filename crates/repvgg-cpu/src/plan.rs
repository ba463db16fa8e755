//! Planning a CPU network's buffers, with no input: liveness slots when it is built, and per
//! input shape the size of every tensor, buffer and scratch.

use crate::builder::Op;
use crate::error::{CpuError, Result};
use crate::network::Network;

/// Decides buffer sharing: every tensor's liveness slot, and the number of slots. A tensor
/// takes a slot whose tensor is dead (greedy, in op order); in-place ops keep their tensor's
/// slot; the outputs and the head's input live to the end.
pub(crate) fn assign_slots(
    channels: &[usize],
    ops: &[Op],
    outputs: &[usize],
    head_input: usize,
) -> Result<(Vec<usize>, usize)> {
    let n_ops = ops.len();
    // Last op index using each tensor; outputs and the head's input live to the end.
    let mut last = vec![0usize; channels.len()];
    for (i, op) in ops.iter().enumerate() {
        for t in op.reads() {
            last[t] = i;
        }
        if let Some(t) = op.defines() {
            last[t] = last[t].max(i);
        }
    }
    for &t in outputs.iter().chain([&head_input]) {
        last[t] = n_ops;
    }
    // Greedy slot assignment: a new tensor takes a slot whose tensor is dead.
    let mut slot_of = vec![usize::MAX; channels.len()];
    let mut busy: Vec<Option<usize>> = vec![Some(0)];
    slot_of[0] = 0;
    for (i, op) in ops.iter().enumerate() {
        if let Some(t) = op.defines() {
            let free = busy.iter().position(Option::is_none);
            let s = free.unwrap_or_else(|| {
                busy.push(None);
                busy.len() - 1
            });
            busy[s] = Some(t);
            slot_of[t] = s;
        }
        for b in busy.iter_mut() {
            if b.is_some_and(|t| last[t] <= i) {
                *b = None;
            }
        }
    }
    if let Some(t) = (0..channels.len()).find(|&t| slot_of[t] == usize::MAX) {
        return Err(CpuError::Invalid(format!(
            "tensor {t} is used before it is computed"
        )));
    }
    Ok((slot_of, busy.len()))
}

/// Spatial size of every tensor, and the largest scratch any op needs.
pub(crate) struct Shapes {
    pub hw: Vec<(usize, usize)>,
    pub scratch: usize,
}

impl Network {
    /// The spatial size of every tensor for an `n x h x w` input, and the scratch its convs
    /// need with `threads` threads; fails on shapes that only an input reveals.
    pub(crate) fn shapes(&self, n: usize, h: usize, w: usize, threads: usize) -> Result<Shapes> {
        let mut hw = vec![(0, 0); self.channels.len()];
        hw[0] = (h, w);
        let mut scratch = 0;
        for op in &self.ops {
            match op {
                Op::Conv { x, y, conv } => {
                    let (ih, iw) = hw[*x];
                    let g = conv.geometry(n, ih, iw)?;
                    if conv.accumulates() && hw[*y] != (g.oh, g.ow) {
                        return Err(CpuError::Shape {
                            what: "accumulating convolution output".into(),
                            expected: vec![hw[*y].0, hw[*y].1],
                            found: vec![g.oh, g.ow],
                        });
                    }
                    hw[*y] = (g.oh, g.ow);
                    scratch = scratch.max(conv.scratch_len(&g, threads));
                }
                Op::AffineAdd { x, y, .. } => {
                    if hw[*x] != hw[*y] {
                        return Err(CpuError::Shape {
                            what: "affine branch (input and sum must have one size)".into(),
                            expected: vec![hw[*y].0, hw[*y].1],
                            found: vec![hw[*x].0, hw[*x].1],
                        });
                    }
                }
                Op::Se { .. } | Op::Relu { .. } => {}
            }
        }
        Ok(Shapes { hw, scratch })
    }

    /// Elements of every buffer for a batch of `n`.
    pub(crate) fn slot_lens(&self, n: usize, s: &Shapes) -> Vec<usize> {
        let mut lens = vec![0usize; self.slots];
        for (t, &slot) in self.slot_of.iter().enumerate() {
            let (h, w) = s.hw[t];
            lens[slot] = lens[slot].max(n * h * w * self.channels[t]);
        }
        lens
    }
}
