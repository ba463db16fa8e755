//! Planning a run without a GPU: shapes of every tensor for an input shape, liveness and buffer
//! assignment, batch splitting, multiply-accumulate counts.

use repvgg_math::winograd::Tile;

use crate::error::{GpuError, Result};
use crate::graph::{Node, TensorMeta};
use crate::kernels::layer::At;
use crate::kernels::op::Op;
use crate::kernels::wino_input::WinoInput;
use crate::kernels::wino_output::WinoOutput;
use crate::precision::{Precision, Storage};

/// One layer: input `x`, output `y`, and what it is.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub x: usize,
    pub y: usize,
    pub op: Op,
}

impl Step {
    pub fn of(node: &Node, y: usize) -> Self {
        Self {
            x: node.x,
            y,
            op: node.op.clone(),
        }
    }

    /// The tensors it reads.
    pub fn inputs(&self) -> Vec<usize> {
        std::iter::once(self.x)
            .chain(self.op.layer().reads())
            .collect()
    }

    /// Where it runs, in the shapes `shapes` of a plan for a `height` x `width` input; `i`: its
    /// index.
    pub fn at<'a>(
        &self,
        i: usize,
        shapes: &'a [[usize; 4]],
        height: usize,
        width: usize,
    ) -> At<'a> {
        At {
            layer: i,
            x: self.x,
            y: self.y,
            shapes,
            input_hw: (height, width),
        }
    }
}

/// Whether an output transform of `tile` into an `oh` x `ow` map and the next conv's input
/// transform of it can run as one dispatch (the kernel's rule, given by the network).
pub(crate) type ChainRule = fn(Tile, usize, usize) -> bool;

/// The network's structure: tensors, steps in execution order, the input and named outputs.
#[derive(Debug)]
pub(crate) struct Topology {
    pub tensors: Vec<TensorMeta>,
    pub input: usize,
    pub steps: Vec<Step>,
    pub outputs: Vec<(String, usize)>,
    /// How activations are stored.
    pub precision: Precision,
    /// Which maps a chained pair of transforms takes ([`Plan::chained`]).
    pub chains: ChainRule,
}

/// Shapes and buffer assignment of a network for one input shape.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// `[N, C, H, W]` of every tensor (`[N, C, 1, 1]` for flat ones).
    pub shapes: Vec<[usize; 4]>,
    /// The buffer (slot) each tensor lives in.
    pub slot_of: Vec<usize>,
    /// Bytes of each slot.
    pub slot_bytes: Vec<u64>,
    /// `chained[i]`: step `i` (an F(4x4) output transform) and step `i + 1` (the next conv's
    /// input transform of its map) run as one dispatch, at step `i` ([`Topology::chains`]);
    /// step `i + 1`'s output is written then.
    pub chained: Vec<bool>,
}

/// Bytes of a tensor of `shape` stored in `precision` (a multiple of 4, at least 4: a
/// binding is never empty).
pub(crate) fn bytes_of(shape: &[usize; 4], precision: Precision) -> u64 {
    precision.buffer_bytes(shape.iter().product::<usize>())
}

/// A buffer for `bytes`: the smallest free one that is big enough, else the biggest free one
/// (grown), else a new one.
pub(crate) fn alloc(bytes: u64, free: &mut Vec<usize>, slot_bytes: &mut Vec<u64>) -> usize {
    let fits = free
        .iter()
        .enumerate()
        .filter(|(_, s)| slot_bytes[**s] >= bytes)
        .min_by_key(|(_, s)| slot_bytes[**s])
        .map(|(i, _)| i);
    let best = fits.or_else(|| {
        free.iter()
            .enumerate()
            .max_by_key(|(_, s)| slot_bytes[**s])
            .map(|(i, _)| i)
    });
    match best {
        Some(i) => {
            let s = free.swap_remove(i);
            slot_bytes[s] = slot_bytes[s].max(bytes);
            s
        }
        None => {
            slot_bytes.push(bytes);
            slot_bytes.len() - 1
        }
    }
}

impl Topology {
    /// Bytes of an activation of `shape`.
    pub fn bytes(&self, shape: &[usize; 4]) -> u64 {
        bytes_of(shape, self.precision)
    }

    pub fn input_channels(&self) -> usize {
        self.tensors[self.input].channels
    }

    /// Fails unless `shape` is `[N >= 1, input channels, H, W]`.
    pub fn check_input(&self, shape: &[usize]) -> Result<()> {
        let c = self.input_channels();
        if shape.len() != 4 || shape[1] != c {
            return Err(GpuError::shape(
                "network input [N, C, H, W]",
                format!("[_, {c}, _, _]"),
                format!("{shape:?}"),
            ));
        }
        if shape[0] == 0 {
            return Err(GpuError::shape("batch size", "at least 1", 0));
        }
        Ok(())
    }

    /// Every tensor's shape for a `batch` of `height` x `width` inputs.
    pub fn shapes(&self, batch: usize, height: usize, width: usize) -> Result<Vec<[usize; 4]>> {
        if height == 0 || width == 0 {
            return Err(GpuError::shape(
                "input height x width",
                "non-empty",
                format!("{height}x{width}"),
            ));
        }
        let mut shapes = vec![[0usize; 4]; self.tensors.len()];
        shapes[self.input] = [batch, self.input_channels(), height, width];
        for (i, step) in self.steps.iter().enumerate() {
            shapes[step.y] = step
                .op
                .layer()
                .out_shape(&step.at(i, &shapes, height, width))?;
        }
        Ok(shapes)
    }

    /// Shapes plus buffers: a tensor's buffer is free again after its last reader; the input and
    /// the outputs live to the end.
    pub fn plan(&self, batch: usize, height: usize, width: usize) -> Result<Plan> {
        let shapes = self.shapes(batch, height, width)?;
        let mut last_use = vec![0usize; self.tensors.len()];
        for (i, step) in self.steps.iter().enumerate() {
            for t in step.inputs() {
                last_use[t] = i;
            }
        }
        for (_, t) in &self.outputs {
            last_use[*t] = usize::MAX;
        }
        let chained = self.chained(&shapes, &last_use);
        let mut slot_of = vec![usize::MAX; self.tensors.len()];
        let mut slot_bytes: Vec<u64> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        slot_of[self.input] = alloc(self.bytes(&shapes[self.input]), &mut free, &mut slot_bytes);
        let mut frees = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            // A chained pair writes the second step's output at the first: its buffer is
            // taken before the first step's inputs are freed.
            let written = std::iter::once(step.y).chain(
                chained
                    .get(i)
                    .copied()
                    .unwrap_or(false)
                    .then(|| self.steps[i + 1].y),
            );
            for t in written {
                if slot_of[t] == usize::MAX {
                    slot_of[t] = alloc(self.bytes(&shapes[t]), &mut free, &mut slot_bytes);
                }
            }
            let mut ins = step.inputs();
            ins.dedup();
            for t in ins {
                if last_use[t] == i && !frees.contains(&slot_of[t]) {
                    frees.push(slot_of[t]);
                }
            }
            free.append(&mut frees);
        }
        Ok(Plan {
            shapes,
            slot_of,
            slot_bytes,
            chained,
        })
    }

    /// Which steps run chained with the next ([`Plan::chained`]): an F(4x4) output transform
    /// without residual whose map only the next step, an F(4x4) input transform, reads, on maps
    /// [`Topology::chains`] takes.
    fn chained(&self, shapes: &[[usize; 4]], last_use: &[usize]) -> Vec<bool> {
        let mut chained = vec![false; self.steps.len()];
        for (i, pair) in self.steps.windows(2).enumerate() {
            let (out, next) = (&pair[0], &pair[1]);
            let [_, _, oh, ow] = shapes[out.y];
            chained[i] = matches!(
                out.op,
                Op::WinogradOutput(WinoOutput {
                    tile: Tile::F4,
                    residual: None,
                    ..
                })
            ) && matches!(next.op, Op::WinogradInput(WinoInput { tile: Tile::F4 }))
                && next.x == out.y
                && last_use[out.y] == i + 1
                && !(i > 0 && chained[i - 1])
                && (self.chains)(Tile::F4, oh, ow);
        }
        chained
    }

    /// Images per submission: as many as keep every activation within `max_binding` bytes.
    pub fn chunk(
        &self,
        batch: usize,
        height: usize,
        width: usize,
        max_binding: u64,
    ) -> Result<usize> {
        let one = self.shapes(1, height, width)?;
        let image_bytes = one.iter().map(|s| self.bytes(s)).max().unwrap_or(4);
        if image_bytes > max_binding {
            return Err(GpuError::BatchTooLarge {
                height,
                width,
                image_bytes,
                limit: max_binding,
            });
        }
        Ok(((max_binding / image_bytes) as usize).clamp(1, batch.max(1)))
    }

    /// `(first image, images)` of each submission of a batch.
    pub fn batches(
        &self,
        batch: usize,
        height: usize,
        width: usize,
        max_binding: u64,
    ) -> Result<Vec<(usize, usize)>> {
        let chunk = self.chunk(batch, height, width, max_binding)?;
        Ok((0..batch)
            .step_by(chunk)
            .map(|start| (start, chunk.min(batch - start)))
            .collect())
    }

    /// Multiply-accumulates of conv and linear layers for one image.
    pub fn macs(&self, height: usize, width: usize) -> Result<u64> {
        let shapes = self.shapes(1, height, width)?;
        let mut total = 0u64;
        for (i, step) in self.steps.iter().enumerate() {
            total += step.op.layer().macs(&step.at(i, &shapes, height, width))?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::EpilogueTerms;
    use crate::kernels::conv::Conv;
    use crate::kernels::gap::Gap;
    use crate::kernels::linear::Linear;
    use repvgg_math::{Activation, ConvSpec};

    fn conv(spec: ConvSpec, residual: Option<usize>) -> Op {
        Op::Conv(Conv {
            spec,
            terms: EpilogueTerms::default(),
            residual,
        })
    }

    fn meta(channels: usize, flat: bool) -> TensorMeta {
        TensorMeta { channels, flat }
    }

    /// input(3) -> conv3x3 s2 (8) -> conv3x3 (8) + residual -> gap -> linear(8 -> 5)
    fn topology() -> Topology {
        let c1 = ConvSpec::conv3x3(3, 8, 2, 1).expect("spec");
        let c2 = ConvSpec::conv3x3(8, 8, 1, 1).expect("spec");
        Topology {
            tensors: vec![
                meta(3, false),
                meta(8, false),
                meta(8, false),
                meta(8, true),
                meta(5, true),
            ],
            input: 0,
            steps: vec![
                Step {
                    x: 0,
                    y: 1,
                    op: conv(c1, None),
                },
                Step {
                    x: 1,
                    y: 2,
                    op: conv(c2, Some(1)),
                },
                Step {
                    x: 2,
                    y: 3,
                    op: Op::Gap(Gap),
                },
                Step {
                    x: 3,
                    y: 4,
                    op: Op::Linear(Linear {
                        in_f: 8,
                        out_f: 5,
                        bias: false,
                        act: Activation::None,
                    }),
                },
            ],
            outputs: vec![("logits".into(), 4)],
            precision: Precision::F32,
            chains: |_, _, _| false,
        }
    }

    #[test]
    fn shapes_follow_the_layers() {
        let t = topology();
        let s = t.shapes(2, 15, 16).expect("shapes");
        assert_eq!(s[1], [2, 8, 8, 8]);
        assert_eq!(s[4], [2, 5, 1, 1]);
        assert!(matches!(t.shapes(1, 0, 4), Err(GpuError::Shape { .. })));
        assert!(t.check_input(&[1, 4, 8, 8]).is_err());
        assert!(t.check_input(&[0, 3, 8, 8]).is_err());
        assert!(t.check_input(&[1, 3, 8, 8]).is_ok());
    }

    #[test]
    fn live_tensors_never_share_a_buffer() {
        let t = topology();
        let p = t.plan(2, 15, 16).expect("plan");
        // Step 1 reads tensor 1 (x and residual) while writing tensor 2.
        assert_ne!(p.slot_of[1], p.slot_of[2]);
        // The input lives to the end... of its last reader: step 0. Tensor 2 may take its slot.
        for (i, step) in t.steps.iter().enumerate() {
            for x in step.inputs() {
                assert_ne!(p.slot_of[x], p.slot_of[step.y], "step {i}");
            }
        }
        for (i, s) in p.shapes.iter().enumerate() {
            assert!(p.slot_bytes[p.slot_of[i]] >= t.bytes(s), "tensor {i}");
        }
        // Fewer buffers than tensors: something was reused.
        assert!(p.slot_bytes.len() < t.tensors.len());
    }

    /// Two F(4x4) Winograd convs in a row (8 channels): input transform, product, output
    /// transform, twice; `map_out` names the first conv's map as an output too.
    fn winograd_pair(map_out: bool) -> Topology {
        let gemm = ConvSpec::new(36 * 8, 36 * 8, 1, 1, 0, 36).expect("spec");
        let product = |x, y| Step {
            x,
            y,
            op: conv(gemm, None),
        };
        let input = |x, y| Step {
            x,
            y,
            op: Op::WinogradInput(WinoInput { tile: Tile::F4 }),
        };
        let output = |x, y, like| Step {
            x,
            y,
            op: Op::WinogradOutput(WinoOutput {
                like,
                tile: Tile::F4,
                terms: EpilogueTerms::default(),
                residual: None,
            }),
        };
        let mut outputs = vec![("y".to_string(), 6)];
        if map_out {
            outputs.push(("map".to_string(), 3));
        }
        Topology {
            tensors: [8, 288, 288, 8, 288, 288, 8]
                .map(|c| meta(c, false))
                .to_vec(),
            input: 0,
            steps: vec![
                input(0, 1),
                product(1, 2),
                output(2, 3, 0),
                input(3, 4),
                product(4, 5),
                output(5, 6, 3),
            ],
            outputs,
            precision: Precision::F32,
            // The rule of `wino_output.wgsl`'s `f4_chain`.
            chains: |tile, oh, ow| {
                tile == Tile::F4
                    && oh.div_ceil(4) == 4
                    && ow.div_ceil(4) == 4
                    && (oh * ow).is_multiple_of(4)
            },
        }
    }

    #[test]
    fn winograd_transforms_chain_where_the_map_goes_only_to_the_next_conv() {
        let t = winograd_pair(false);
        let p = t.plan(2, 14, 14).expect("plan");
        assert_eq!(p.chained, [false, false, true, false, false, false]);
        // The chained pair writes tensor 4 at step 2, while step 2 reads tensor 2.
        assert_ne!(p.slot_of[4], p.slot_of[2]);
        assert_ne!(p.slot_of[4], p.slot_of[3]);
        // Maps of 4 x 4 tiles with planes of whole vec4s only; not where the map is an output.
        assert!(t.plan(1, 13, 16).expect("plan").chained[2]);
        assert!(!t.plan(1, 13, 13).expect("plan").chained[2]);
        assert!(!t.plan(1, 28, 28).expect("plan").chained[2]);
        assert!(!t.plan(1, 12, 12).expect("plan").chained[2]);
        let kept = winograd_pair(true).plan(2, 14, 14).expect("plan");
        assert!(kept.chained.iter().all(|c| !c));
    }

    #[test]
    fn batches_split_at_the_binding_limit() {
        let t = topology();
        // The largest tensor of one 16x16 image: the 3 x 16 x 16 input, 3072 bytes.
        assert_eq!(t.chunk(10, 16, 16, 4 * 3072).expect("chunk"), 4);
        assert_eq!(
            t.batches(10, 16, 16, 4 * 3072).expect("batches"),
            vec![(0, 4), (4, 4), (8, 2)]
        );
        assert!(matches!(
            t.chunk(1, 16, 16, 3000),
            Err(GpuError::BatchTooLarge { .. })
        ));
        // conv1 27 * 8 * 64, conv2 72 * 8 * 64, linear 40.
        assert_eq!(t.macs(16, 16).expect("macs"), 27 * 512 + 72 * 512 + 40);
        // f16: half the bytes per image, twice the images per binding.
        let h = Topology {
            precision: Precision::F16,
            ..topology()
        };
        assert_eq!(h.chunk(10, 16, 16, 4 * 3072).expect("chunk"), 8);
        // Odd element counts round up to whole words: [1, 5, 1, 1] is 10 bytes -> 12.
        assert_eq!(h.bytes(&[1, 5, 1, 1]), 12);
        assert_eq!(h.bytes(&[1, 1, 1, 1]), 4);
        let p = h.plan(1, 15, 15).expect("plan");
        for (i, s) in p.shapes.iter().enumerate() {
            let b = p.slot_bytes[p.slot_of[i]];
            assert!(b >= h.bytes(s) && b.is_multiple_of(4), "tensor {i}");
        }
    }

    #[test]
    fn alloc_reuses_the_best_fitting_free_buffer_and_grows_the_biggest() {
        let mut free = Vec::new();
        let mut sizes = Vec::new();
        let a = alloc(100, &mut free, &mut sizes);
        let b = alloc(50, &mut free, &mut sizes);
        assert_eq!((a, b, sizes.len()), (0, 1, 2));
        free.extend([a, b]);
        // 40 bytes fit both; the 50-byte buffer fits best.
        assert_eq!(alloc(40, &mut free, &mut sizes), b);
        // 200 bytes fit none: the biggest free buffer grows.
        assert_eq!(alloc(200, &mut free, &mut sizes), a);
        assert_eq!(sizes, vec![200, 50]);
        assert_eq!(alloc(10, &mut free, &mut sizes), 2);
    }
}
