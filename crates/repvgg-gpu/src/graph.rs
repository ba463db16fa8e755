//! The network under construction, before anything touches a GPU: tensors, layers with their
//! weights, outputs, and every check that needs no device.
//!
//! [`crate::NetworkBuilder`] wraps a [`Graph`] with a device; [`Graph::finish`] validates the
//! whole network and keeps only the layers some output depends on. Lowering passes rewrite
//! layers into others the kernels run: a linear layer on a flat tensor becomes a 1x1 conv
//! ([`Graph::linear`]), and [`FinishedGraph::lower_winograd`] turns the convs it is told to into
//! Winograd transforms around a grouped 1x1 product.

use std::sync::atomic::{AtomicU32, Ordering};

use ndarray::{Array2, Array4, ArrayView2, ArrayView4};
use repvgg_math::winograd::{self, Tile};
use repvgg_math::{Activation, ConvSpec};

use crate::error::{GpuError, Result};
use crate::kernels::EpilogueTerms;
use crate::kernels::affine::Affine;
use crate::kernels::channel_scale::ChannelScale;
use crate::kernels::conv::Conv;
use crate::kernels::gap::Gap;
use crate::kernels::linear::Linear;
use crate::kernels::op::Op;
use crate::kernels::wino_input::WinoInput;
use crate::kernels::wino_output::WinoOutput;

static NEXT_GRAPH: AtomicU32 = AtomicU32::new(1);

/// A tensor of a network under construction: the input, or the output of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorId {
    graph: u32,
    index: u32,
}

/// What a convolution does to its result before storing it, in this order:
/// `y = conv(x) * scale + bias; y += residual; y = activation(y)` (see
/// [`repvgg_math::Epilogue`]). The activation of a conv is [`Activation::None`] or
/// [`Activation::Relu`].
pub type Epilogue = repvgg_math::Epilogue<TensorId>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TensorMeta {
    pub channels: usize,
    /// `[N, C]` (reported with two axes) rather than `[N, C, H, W]`.
    pub flat: bool,
}

/// One layer: its input, what it is ([`Op`]: the kind, with everything about it but its
/// weights) and its weights.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub x: usize,
    pub op: Op,
    pub data: LayerData,
    /// The conv this layer belongs to, by its index in [`FinishedGraph::convs`] (set by
    /// [`Graph::finish`]; a Winograd conv's three layers share their conv's).
    pub conv: Option<usize>,
}

/// A layer's weights, as given to the builder.
#[derive(Debug, Default, Clone)]
pub(crate) struct LayerData {
    pub weight: Weight,
    /// Per output channel: the epilogue's scale (the affine map's scale).
    pub scale: Option<Vec<f32>>,
    /// Per output channel: the epilogue's bias (the affine map's shift).
    pub bias: Option<Vec<f32>>,
}

/// A layer's weight array.
#[derive(Debug, Default, Clone)]
pub(crate) enum Weight {
    #[default]
    None,
    /// A conv's `[cout, cin / groups, k, k]`.
    Conv(Array4<f32>),
    /// A linear layer's `[out, in]`.
    Matrix(Array2<f32>),
}

impl Node {
    fn new(x: usize, op: Op, data: LayerData) -> Self {
        Self {
            x,
            op,
            data,
            conv: None,
        }
    }

    /// The tensors this layer reads.
    pub fn inputs(&self) -> Vec<usize> {
        std::iter::once(self.x)
            .chain(self.op.layer().reads())
            .collect()
    }
}

/// A validated network: the layers some output needs, in order, each with its output tensor.
/// Cloned (weights and all) where tuning assembles it twice to compare kernel choices.
#[derive(Debug, Clone)]
pub(crate) struct FinishedGraph {
    pub tensors: Vec<TensorMeta>,
    pub input: usize,
    pub nodes: Vec<(Node, usize)>,
    pub outputs: Vec<(String, usize)>,
}

/// A conv of a [`FinishedGraph`], as its kernel choice sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvSite {
    pub spec: ConvSpec,
    /// The tensor it reads.
    pub x: usize,
    /// Whether its epilogue adds a residual.
    pub residual: bool,
}

impl FinishedGraph {
    /// The conv layers, in order.
    pub fn convs(&self) -> Vec<ConvSite> {
        self.nodes
            .iter()
            .filter_map(|(node, _)| match &node.op {
                Op::Conv(c) => Some(ConvSite {
                    spec: c.spec,
                    x: node.x,
                    residual: c.residual.is_some(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Runs conv `i` (in the order of [`FinishedGraph::convs`]) as Winograd F(m x m, 3x3) with
    /// `tiles[i]` where that is `Some`: input transform, grouped 1x1 conv over the (m + 2)^2
    /// positions with the transformed weights (`repvgg_math::winograd`), output transform
    /// with the epilogue. The product takes the conv's place in the order of convs.
    ///
    /// # Errors
    /// [`GpuError::Unsupported`] for a tile on a conv Winograd does not compute.
    pub fn lower_winograd(mut self, tiles: &[Option<Tile>]) -> Result<Self> {
        let nodes = std::mem::take(&mut self.nodes);
        let mut out = Vec::with_capacity(nodes.len());
        let mut convs = 0;
        for (node, y) in nodes {
            let (x, conv, weight, scale, bias, index) = match node {
                Node {
                    x,
                    op: Op::Conv(conv),
                    data:
                        LayerData {
                            weight: Weight::Conv(weight),
                            scale,
                            bias,
                        },
                    conv: index,
                } => (x, conv, weight, scale, bias, index),
                other => {
                    out.push((other, y));
                    continue;
                }
            };
            let tile = tiles.get(convs).copied().flatten();
            convs += 1;
            let Some(tile) = tile else {
                let data = LayerData {
                    weight: Weight::Conv(weight),
                    scale,
                    bias,
                };
                let node = Node {
                    conv: index,
                    ..Node::new(x, Op::Conv(conv), data)
                };
                out.push((node, y));
                continue;
            };
            let Conv {
                spec,
                terms,
                residual,
            } = conv;
            if !winograd::applies(&spec) {
                return Err(GpuError::Unsupported(format!(
                    "Winograd F(m x m, 3x3) needs a 3x3 conv with stride 1 and padding 1, not \
                     {k}x{k} with stride {} and padding {}",
                    spec.stride,
                    spec.padding,
                    k = spec.kernel_size
                )));
            }
            let product = winograd::product_spec(&spec, tile)?;
            let v = self.add_tensor(product.in_channels);
            let m = self.add_tensor(product.out_channels);
            let layer = |x, op, data| Node {
                conv: index,
                ..Node::new(x, op, data)
            };
            out.push((
                layer(
                    x,
                    Op::WinogradInput(WinoInput { tile }),
                    LayerData::default(),
                ),
                v,
            ));
            let op = Op::Conv(Conv {
                spec: product,
                terms: EpilogueTerms::default(),
                residual: None,
            });
            let data = LayerData {
                weight: Weight::Conv(winograd::transform_weights(weight.view(), tile)),
                ..LayerData::default()
            };
            out.push((layer(v, op, data), m));
            let op = Op::WinogradOutput(WinoOutput {
                like: x,
                tile,
                terms,
                residual,
            });
            let data = LayerData {
                weight: Weight::None,
                scale,
                bias,
            };
            out.push((layer(m, op, data), y));
        }
        self.nodes = out;
        Ok(self)
    }

    fn add_tensor(&mut self, channels: usize) -> usize {
        self.tensors.push(TensorMeta {
            channels,
            flat: false,
        });
        self.tensors.len() - 1
    }
}

/// Tensors, layers and outputs of a network under construction.
#[derive(Debug)]
pub(crate) struct Graph {
    id: u32,
    tensors: Vec<TensorMeta>,
    inputs: Vec<usize>,
    nodes: Vec<(Node, usize)>,
    outputs: Vec<(String, usize)>,
    /// An error from a call that cannot return one (`output`), reported by `finish`.
    deferred_error: Option<GpuError>,
}

fn check_len(what: &str, v: &[f32], expected: usize) -> Result<()> {
    if v.len() == expected {
        Ok(())
    } else {
        Err(GpuError::shape(
            what,
            format!("{expected} values"),
            format!("{} values", v.len()),
        ))
    }
}

impl Graph {
    pub fn new() -> Self {
        Self {
            id: NEXT_GRAPH.fetch_add(1, Ordering::Relaxed),
            tensors: Vec::new(),
            inputs: Vec::new(),
            nodes: Vec::new(),
            outputs: Vec::new(),
            deferred_error: None,
        }
    }

    fn new_tensor(&mut self, channels: usize, flat: bool) -> TensorId {
        self.tensors.push(TensorMeta { channels, flat });
        TensorId {
            graph: self.id,
            index: (self.tensors.len() - 1) as u32,
        }
    }

    fn resolve(&self, t: TensorId) -> Result<(usize, TensorMeta)> {
        let i = t.index as usize;
        match self.tensors.get(i) {
            Some(meta) if t.graph == self.id => Ok((i, *meta)),
            _ => Err(GpuError::UnknownTensor(i)),
        }
    }

    fn push(&mut self, node: Node, channels: usize, flat: bool) -> TensorId {
        let y = self.new_tensor(channels, flat);
        self.nodes.push((node, y.index as usize));
        y
    }

    fn residual(&self, r: Option<TensorId>, what: &str, channels: usize) -> Result<Option<usize>> {
        let Some(r) = r else { return Ok(None) };
        let (r, rm) = self.resolve(r)?;
        if rm.channels != channels {
            return Err(GpuError::shape(what, channels, rm.channels));
        }
        Ok(Some(r))
    }

    pub fn input(&mut self, channels: usize) -> TensorId {
        let t = self.new_tensor(channels, false);
        self.inputs.push(t.index as usize);
        t
    }

    pub fn conv(
        &mut self,
        x: TensorId,
        weight: ArrayView4<'_, f32>,
        spec: ConvSpec,
        epilogue: Epilogue,
    ) -> Result<TensorId> {
        self.conv_node(x, weight, spec, epilogue, false)
    }

    /// A checked conv node; `flat` marks its output `[N, C]` (a linear layer run as a conv).
    fn conv_node(
        &mut self,
        x: TensorId,
        weight: ArrayView4<'_, f32>,
        spec: ConvSpec,
        epilogue: Epilogue,
        flat: bool,
    ) -> Result<TensorId> {
        let (x, residual, relu) = self.check_conv(x, &weight, &spec, &epilogue)?;
        let op = Op::Conv(Conv {
            spec,
            terms: EpilogueTerms {
                scale: epilogue.scale.is_some(),
                bias: epilogue.bias.is_some(),
                relu,
            },
            residual,
        });
        let data = LayerData {
            weight: Weight::Conv(weight.to_owned()),
            scale: epilogue.scale,
            bias: epilogue.bias,
        };
        Ok(self.push(Node::new(x, op, data), spec.out_channels, flat))
    }

    /// Checks a conv's input, weight, epilogue and residual; returns the input, the residual
    /// and whether the epilogue ends with a ReLU.
    fn check_conv(
        &self,
        x: TensorId,
        weight: &ArrayView4<'_, f32>,
        spec: &ConvSpec,
        epilogue: &Epilogue,
    ) -> Result<(usize, Option<usize>, bool)> {
        spec.validate()?;
        spec.check_weight(weight)?;
        let (x, xm) = self.resolve(x)?;
        if xm.channels != spec.in_channels {
            return Err(GpuError::shape(
                "conv input channels",
                spec.in_channels,
                xm.channels,
            ));
        }
        if let Some(s) = &epilogue.scale {
            check_len("conv epilogue scale", s, spec.out_channels)?;
        }
        if let Some(b) = &epilogue.bias {
            check_len("conv epilogue bias", b, spec.out_channels)?;
        }
        let residual = self.residual(
            epilogue.residual,
            "conv residual channels",
            spec.out_channels,
        )?;
        let relu = match epilogue.activation {
            Activation::None => false,
            Activation::Relu => true,
            Activation::Sigmoid => {
                return Err(GpuError::Unsupported(
                    "a convolution's epilogue ends with no activation or a ReLU, not a sigmoid"
                        .into(),
                ));
            }
        };
        Ok((x, residual, relu))
    }

    pub fn affine(
        &mut self,
        x: TensorId,
        scale: &[f32],
        shift: &[f32],
        residual: Option<TensorId>,
        relu: bool,
    ) -> Result<TensorId> {
        let (x, xm) = self.resolve(x)?;
        check_len("affine scale", scale, xm.channels)?;
        check_len("affine shift", shift, xm.channels)?;
        let residual = self.residual(residual, "affine residual channels", xm.channels)?;
        let data = LayerData {
            weight: Weight::None,
            scale: Some(scale.to_vec()),
            bias: Some(shift.to_vec()),
        };
        let node = Node::new(x, Op::Affine(Affine { residual, relu }), data);
        Ok(self.push(node, xm.channels, xm.flat))
    }

    pub fn channel_scale(&mut self, x: TensorId, s: TensorId, relu: bool) -> Result<TensorId> {
        let (x, xm) = self.resolve(x)?;
        let (s, sm) = self.resolve(s)?;
        if sm.channels != xm.channels || !sm.flat {
            return Err(GpuError::shape(
                "channel scale [N, C]",
                format!("[N, {}] (a pooled or linear output)", xm.channels),
                format!(
                    "{} channels{}",
                    sm.channels,
                    if sm.flat { "" } else { " with spatial axes" }
                ),
            ));
        }
        let op = Op::ChannelScale(ChannelScale { s, relu });
        let node = Node::new(x, op, LayerData::default());
        Ok(self.push(node, xm.channels, xm.flat))
    }

    pub fn global_avg_pool(&mut self, x: TensorId) -> Result<TensorId> {
        let (x, xm) = self.resolve(x)?;
        let node = Node::new(x, Op::Gap(Gap), LayerData::default());
        Ok(self.push(node, xm.channels, true))
    }

    pub fn linear(
        &mut self,
        x: TensorId,
        weight: ArrayView2<'_, f32>,
        bias: Option<&[f32]>,
        act: Activation,
    ) -> Result<TensorId> {
        let (xi, xm) = self.resolve(x)?;
        let (out_f, in_f) = weight.dim();
        if in_f == 0 || out_f == 0 {
            return Err(GpuError::shape(
                "linear weight [out, in]",
                "non-empty",
                format!("{:?}", weight.shape()),
            ));
        }
        if let Some(b) = bias {
            check_len("linear bias", b, out_f)?;
        }
        // On a flat [N, C] tensor, a linear layer without activation or with a ReLU is a 1x1
        // conv of a 1x1 map, and runs on the conv kernels: tiled over outputs and images, with
        // split-K where a GPU would be idle, instead of linear.wgsl's one loop over `in` per
        // four outputs (several times faster for A0's head on lavapipe; docs/gpu.md). Its
        // output stays flat. A sigmoid (squeeze-and-excitation) has no conv epilogue and stays
        // linear.
        if xm.flat && in_f == xm.channels && act != Activation::Sigmoid {
            let spec = ConvSpec::new(in_f, out_f, 1, 1, 0, 1)?;
            let weight = weight
                .as_standard_layout()
                .into_shape_with_order((out_f, in_f, 1, 1))
                .map_err(|e| GpuError::shape("linear weight [out, in]", "contiguous", e))?;
            let epilogue = Epilogue {
                bias: bias.map(<[f32]>::to_vec),
                activation: act,
                ..Epilogue::default()
            };
            return self.conv_node(x, weight.view(), spec, epilogue, true);
        }
        let op = Op::Linear(Linear {
            in_f,
            out_f,
            bias: bias.is_some(),
            act,
        });
        let data = LayerData {
            weight: Weight::Matrix(weight.to_owned()),
            scale: None,
            bias: bias.map(<[f32]>::to_vec),
        };
        Ok(self.push(Node::new(xi, op, data), out_f, true))
    }

    pub fn output(&mut self, name: &str, x: TensorId) {
        match self.resolve(x) {
            Ok((i, _)) => {
                self.outputs.retain(|(n, _)| n != name);
                self.outputs.push((name.to_string(), i));
            }
            Err(e) => self.deferred_error = self.deferred_error.take().or(Some(e)),
        }
    }

    /// Validates the network and keeps only the layers that some output depends on.
    pub fn finish(mut self) -> Result<FinishedGraph> {
        if let Some(e) = self.deferred_error.take() {
            return Err(e);
        }
        let &[input] = self.inputs.as_slice() else {
            return Err(GpuError::InvalidNetwork(format!(
                "a network needs exactly one input, this one has {}",
                self.inputs.len()
            )));
        };
        if self.outputs.is_empty() {
            return Err(GpuError::InvalidNetwork("no outputs were named".into()));
        }
        let mut needed = vec![false; self.tensors.len()];
        for (_, t) in &self.outputs {
            needed[*t] = true;
        }
        for (node, y) in self.nodes.iter().rev() {
            if needed[*y] {
                for t in node.inputs() {
                    needed[t] = true;
                }
            }
        }
        let mut convs = 0..;
        let nodes = self
            .nodes
            .into_iter()
            .filter(|(_, y)| needed[*y])
            .map(|(mut node, y)| {
                if matches!(node.op, Op::Conv(_)) {
                    node.conv = convs.next();
                }
                (node, y)
            })
            .collect();
        Ok(FinishedGraph {
            tensors: self.tensors,
            input,
            nodes,
            outputs: self.outputs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(g: &mut Graph, x: TensorId, cin: usize, cout: usize) -> TensorId {
        let spec = ConvSpec::conv3x3(cin, cout, 1, 1).expect("spec");
        let w = Array4::zeros(spec.weight_shape());
        g.conv(x, w.view(), spec, Epilogue::default())
            .expect("conv")
    }

    #[test]
    fn finish_keeps_only_what_outputs_need() {
        let mut g = Graph::new();
        let x = g.input(3);
        let a = conv(&mut g, x, 3, 4);
        let _unused = conv(&mut g, a, 4, 5);
        let b = g.global_avg_pool(a).expect("gap");
        g.output("b", b);
        let f = g.finish().expect("finish");
        assert_eq!(f.nodes.len(), 2);
        assert!(matches!(
            f.nodes[1].0,
            Node {
                x: 1,
                op: Op::Gap(_),
                conv: None,
                ..
            }
        ));
        assert_eq!(f.nodes[0].0.conv, Some(0));
        assert_eq!(f.outputs, vec![("b".to_string(), 3)]);
    }

    #[test]
    fn misuse_is_a_typed_error_without_a_device() {
        let mut g = Graph::new();
        let x = g.input(3);
        let spec = ConvSpec::conv3x3(3, 4, 1, 1).expect("spec");
        let bad_w = Array4::zeros((4, 3, 1, 1));
        assert!(matches!(
            g.conv(x, bad_w.view(), spec, Epilogue::default()),
            Err(GpuError::Math(_))
        ));
        let w = Array4::zeros(spec.weight_shape());
        assert!(matches!(
            g.conv(x, w.view(), spec, Epilogue::bias(vec![0.0; 3])),
            Err(GpuError::Shape { .. })
        ));
        let y = conv(&mut g, x, 3, 4);
        let wrong = conv(&mut g, x, 3, 5);
        assert!(matches!(
            g.conv(
                x,
                w.view(),
                spec,
                Epilogue {
                    residual: Some(wrong),
                    ..Epilogue::default()
                }
            ),
            Err(GpuError::Shape { .. })
        ));
        // A conv's epilogue ends with nothing or a ReLU.
        assert!(matches!(
            g.conv(
                x,
                w.view(),
                spec,
                Epilogue::new().with_activation(Activation::Sigmoid)
            ),
            Err(GpuError::Unsupported(_))
        ));
        let pooled5 = g.global_avg_pool(wrong).expect("gap");
        assert!(matches!(
            g.channel_scale(y, pooled5, false),
            Err(GpuError::Shape { .. })
        ));
        // The scale must be [N, C], not an activation with spatial axes.
        assert!(matches!(
            g.channel_scale(y, y, false),
            Err(GpuError::Shape { .. })
        ));
        let mut other = Graph::new();
        let foreign = other.input(3);
        assert!(matches!(
            g.global_avg_pool(foreign),
            Err(GpuError::UnknownTensor(_))
        ));
        g.output("foreign", foreign);
        assert!(matches!(g.finish(), Err(GpuError::UnknownTensor(_))));
        assert!(matches!(
            Graph::new().finish(),
            Err(GpuError::InvalidNetwork(_))
        ));
    }

    /// A Winograd conv becomes input transform, product and output transform, in that order,
    /// the product among the convs where the conv was; a tile on a stride-2 conv is an error.
    #[test]
    fn winograd_lowering_replaces_the_conv_by_three_layers() {
        let mut g = Graph::new();
        let x = g.input(3);
        let a = conv(&mut g, x, 3, 4);
        let b = conv(&mut g, a, 4, 4);
        g.output("b", b);
        let f = g.finish().expect("finish");
        assert_eq!(f.convs().len(), 2);
        let lowered = f.lower_winograd(&[None, Some(Tile::F4)]).expect("lowered");
        assert_eq!(lowered.nodes.len(), 4);
        assert!(matches!(
            lowered.nodes[1].0,
            Node {
                x: 1,
                op: Op::WinogradInput(WinoInput { tile: Tile::F4 }),
                ..
            }
        ));
        assert!(matches!(
            lowered.nodes[3].0.op,
            Op::WinogradOutput(WinoOutput { like: 1, .. })
        ));
        // All three layers belong to the second conv.
        let owners: Vec<_> = lowered.nodes.iter().map(|(n, _)| n.conv).collect();
        assert_eq!(owners, [Some(0), Some(1), Some(1), Some(1)]);
        assert_eq!(lowered.nodes[3].1, 2);
        let convs = lowered.convs();
        assert_eq!(convs.len(), 2);
        assert_eq!(
            (convs[1].spec.in_channels, convs[1].spec.groups),
            (36 * 4, 36)
        );
        let mut g = Graph::new();
        let x = g.input(3);
        let spec = ConvSpec::conv3x3(3, 4, 2, 1).expect("spec");
        let w = Array4::zeros(spec.weight_shape());
        let y = g
            .conv(x, w.view(), spec, Epilogue::default())
            .expect("conv");
        g.output("y", y);
        let f = g.finish().expect("finish");
        assert!(matches!(
            f.lower_winograd(&[Some(Tile::F2)]),
            Err(GpuError::Unsupported(_))
        ));
    }
}
