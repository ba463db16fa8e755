//! Networks: a graph of layers built once (weights uploaded, layouts chosen), then run on
//! batches with one submission per batch, activations in reused buffers.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ndarray::{Array2, Array4, ArrayD, ArrayView2, ArrayView4, IxDyn};
use repvgg_math::ConvSpec;
use wgpu::util::DeviceExt;

use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::shader::{PipelineKey, Shader};

/// Output-channel tile of `conv_tiled.wgsl` (`TM`).
pub(crate) const TILE_M: usize = 64;
/// Pixel tile of `conv_tiled.wgsl` (`TN`).
pub(crate) const TILE_N: usize = 64;
/// Reduction tile of `conv_tiled.wgsl` (`TK`).
pub(crate) const TILE_K: usize = 16;

/// Bindings never exceed this, whatever the device offers, so that indices fit in `u32`.
const MAX_BINDING: u64 = 1 << 31;
/// Prepared (shape-specific) resources kept per network.
const PLAN_CACHE: usize = 4;

static NEXT_BUILDER: AtomicU32 = AtomicU32::new(1);

/// A tensor of a network under construction: the input, or the output of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorId {
    builder: u32,
    index: u32,
}

/// Which convolution kernel a network uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConvKernel {
    /// The main path: [`ConvKernel::Subgroup`] where the adapter and the conv allow it,
    /// otherwise [`ConvKernel::Workgroup`].
    #[default]
    Tiled,
    /// Implicit GEMM with workgroup-shared tiles and 4x4 register blocks (`conv_tiled.wgsl`):
    /// runs on every adapter.
    Workgroup,
    /// Implicit GEMM sharing the im2col tile through subgroup shuffles, weights in a texture
    /// (`conv_subgroup.wgsl`): needs subgroups of at least 8 invocations, kernel size 1 or 3,
    /// stride 1 or 2.
    Subgroup,
    /// One output per invocation (`conv_naive.wgsl`): the baseline.
    Naive,
}

/// How one conv layer runs, decided when its weights are uploaded.
#[derive(Debug)]
enum ConvImpl {
    Workgroup { m_pad: usize, k_pad: usize },
    Subgroup { m_tiles: usize },
    Naive,
}

#[derive(Debug)]
enum ConvWeights {
    Buffer(wgpu::Buffer),
    Texture(wgpu::TextureView),
}

/// Channels per workgroup of `conv_subgroup.wgsl` (8 invocations x 8 channels).
pub(crate) const SUBGROUP_M: usize = 64;
/// Most output pixels one workgroup of `conv_subgroup.wgsl` takes along a row.
const SUBGROUP_MAX_NB: usize = 32;

/// What a convolution does to its result before storing it, in this order:
/// `y = conv(x) * scale + bias; y += residual; if relu { y = max(y, 0) }`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Epilogue {
    /// Per-output-channel multiplier (a batch norm folded into this conv's epilogue).
    pub scale: Option<Vec<f32>>,
    /// Per-output-channel bias.
    pub bias: Option<Vec<f32>>,
    /// A tensor of the output's shape, added.
    pub residual: Option<TensorId>,
    /// Clamp at zero, last.
    pub relu: bool,
}

impl Epilogue {
    /// Bias only.
    pub fn bias(bias: Vec<f32>) -> Self {
        Self {
            bias: Some(bias),
            ..Self::default()
        }
    }

    /// Sets the ReLU flag.
    pub fn with_relu(mut self, relu: bool) -> Self {
        self.relu = relu;
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    None = 0,
    Relu = 1,
    Sigmoid = 2,
}

#[derive(Clone, Copy, Debug)]
struct TensorMeta {
    channels: usize,
    /// `[N, C]` (reported with two axes) rather than `[N, C, H, W]`.
    flat: bool,
}

#[derive(Debug)]
enum Node {
    Conv {
        x: usize,
        spec: ConvSpec,
        weight: Array4<f32>,
        scale: Option<Vec<f32>>,
        bias: Option<Vec<f32>>,
        residual: Option<usize>,
        relu: bool,
    },
    Affine {
        x: usize,
        scale: Vec<f32>,
        shift: Vec<f32>,
        residual: Option<usize>,
        relu: bool,
    },
    Gap {
        x: usize,
    },
    Linear {
        x: usize,
        weight: Array2<f32>,
        bias: Option<Vec<f32>>,
        act: Act,
    },
    SeScale {
        x: usize,
        s: usize,
        relu: bool,
    },
}

/// Builds a [`GpuNetwork`]: one input, layers, named outputs.
///
/// ```no_run
/// # fn main() -> Result<(), repvgg_gpu::GpuError> {
/// use ndarray::Array4;
/// use repvgg_gpu::{Epilogue, GpuContext, NetworkBuilder};
/// use repvgg_math::ConvSpec;
///
/// let ctx = GpuContext::new()?;
/// let mut b = NetworkBuilder::new(&ctx);
/// let x = b.input(3);
/// let spec = ConvSpec::conv3x3(3, 8, 2, 1)?;
/// let w = Array4::from_elem(spec.weight_shape(), 0.1f32);
/// let y = b.conv(x, w.view(), spec, Epilogue::bias(vec![0.0; 8]).with_relu(true))?;
/// let p = b.global_avg_pool(y)?;
/// b.output("pooled", p);
/// let net = b.build()?;
/// let out = net.run(Array4::from_elem((2, 3, 16, 16), 1.0f32).view())?;
/// assert_eq!(out["pooled"].shape(), &[2, 8]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct NetworkBuilder {
    ctx: GpuContext,
    id: u32,
    kernel: ConvKernel,
    max_binding: Option<u64>,
    nan_fill: bool,
    tensors: Vec<TensorMeta>,
    inputs: Vec<usize>,
    nodes: Vec<(Node, usize)>,
    outputs: Vec<(String, usize)>,
    /// An error from a call that cannot return one (`output`), reported by `build`.
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

impl NetworkBuilder {
    /// An empty network on `ctx`, using [`ConvKernel::Tiled`].
    pub fn new(ctx: &GpuContext) -> Self {
        Self {
            ctx: ctx.clone(),
            id: NEXT_BUILDER.fetch_add(1, Ordering::Relaxed),
            kernel: ConvKernel::default(),
            max_binding: None,
            nan_fill: false,
            tensors: Vec::new(),
            inputs: Vec::new(),
            nodes: Vec::new(),
            outputs: Vec::new(),
            deferred_error: None,
        }
    }

    /// The convolution kernel for every conv of this network.
    pub fn kernel(mut self, kernel: ConvKernel) -> Self {
        self.kernel = kernel;
        self
    }

    /// Caps the bytes of one activation binding below the device's
    /// `max_storage_buffer_binding_size`, so that batch splitting can be exercised.
    pub fn max_binding_bytes(mut self, bytes: u64) -> Self {
        self.max_binding = Some(bytes);
        self
    }

    /// Fills every activation buffer with NaN before each run, so that an element a kernel
    /// fails to write shows up (for tests; costs an upload per buffer).
    #[doc(hidden)]
    pub fn nan_fill(mut self, on: bool) -> Self {
        self.nan_fill = on;
        self
    }

    fn new_tensor(&mut self, channels: usize, flat: bool) -> TensorId {
        self.tensors.push(TensorMeta { channels, flat });
        TensorId {
            builder: self.id,
            index: (self.tensors.len() - 1) as u32,
        }
    }

    fn resolve(&self, t: TensorId) -> Result<(usize, TensorMeta)> {
        let i = t.index as usize;
        match self.tensors.get(i) {
            Some(meta) if t.builder == self.id => Ok((i, *meta)),
            _ => Err(GpuError::UnknownTensor(i)),
        }
    }

    fn push(&mut self, node: Node, channels: usize, flat: bool) -> TensorId {
        let y = self.new_tensor(channels, flat);
        self.nodes.push((node, y.index as usize));
        y
    }

    /// The network's input, `[N, channels, H, W]`. A network has exactly one.
    pub fn input(&mut self, channels: usize) -> TensorId {
        let t = self.new_tensor(channels, false);
        self.inputs.push(t.index as usize);
        t
    }

    /// A convolution of `x` with `weight` (`spec.weight_shape()`), then `epilogue`.
    ///
    /// # Errors
    /// [`GpuError::Shape`] when the weight, channels, scale, bias or residual do not match
    /// `spec`; [`GpuError::Math`] for an invalid spec; [`GpuError::UnknownTensor`].
    pub fn conv(
        &mut self,
        x: TensorId,
        weight: ArrayView4<'_, f32>,
        spec: ConvSpec,
        epilogue: Epilogue,
    ) -> Result<TensorId> {
        spec.validate()?;
        spec.check_weight(&weight)?;
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
        let residual = match epilogue.residual {
            Some(r) => {
                let (r, rm) = self.resolve(r)?;
                if rm.channels != spec.out_channels {
                    return Err(GpuError::shape(
                        "conv residual channels",
                        spec.out_channels,
                        rm.channels,
                    ));
                }
                Some(r)
            }
            None => None,
        };
        let node = Node::Conv {
            x,
            spec,
            weight: weight.to_owned(),
            scale: epilogue.scale,
            bias: epilogue.bias,
            residual,
            relu: epilogue.relu,
        };
        Ok(self.push(node, spec.out_channels, false))
    }

    /// Per-channel `y = x * scale + shift`, then `+ residual`, then ReLU: a batch norm on a
    /// branch of its own (RepVGG's identity branch).
    ///
    /// # Errors
    /// [`GpuError::Shape`] when `scale`, `shift` or the residual do not match `x`'s channels.
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
        let residual = match residual {
            Some(r) => {
                let (r, rm) = self.resolve(r)?;
                if rm.channels != xm.channels {
                    return Err(GpuError::shape(
                        "affine residual channels",
                        xm.channels,
                        rm.channels,
                    ));
                }
                Some(r)
            }
            None => None,
        };
        let node = Node::Affine {
            x,
            scale: scale.to_vec(),
            shift: shift.to_vec(),
            residual,
            relu,
        };
        Ok(self.push(node, xm.channels, xm.flat))
    }

    /// Squeeze-and-excitation: `y = x * sigmoid(fc2(relu(fc1(gap(x)))))`, then optional ReLU.
    /// `fc1_w` is `[r, c]`, `fc2_w` is `[c, r]` (the two 1x1 convs, squeezed).
    ///
    /// # Errors
    /// [`GpuError::Shape`] when the weights or biases do not match `x`'s channels.
    pub fn se(
        &mut self,
        x: TensorId,
        fc1_w: ArrayView2<'_, f32>,
        fc1_b: &[f32],
        fc2_w: ArrayView2<'_, f32>,
        fc2_b: &[f32],
        relu: bool,
    ) -> Result<TensorId> {
        let (xi, xm) = self.resolve(x)?;
        let (r, c) = fc1_w.dim();
        if c != xm.channels {
            return Err(GpuError::shape(
                "SE fc1 weight [r, c]",
                format!("[_, {}]", xm.channels),
                format!("{:?}", fc1_w.shape()),
            ));
        }
        if fc2_w.dim() != (c, r) {
            return Err(GpuError::shape(
                "SE fc2 weight [c, r]",
                format!("[{c}, {r}]"),
                format!("{:?}", fc2_w.shape()),
            ));
        }
        check_len("SE fc1 bias", fc1_b, r)?;
        check_len("SE fc2 bias", fc2_b, c)?;
        let pooled = self.push(Node::Gap { x: xi }, c, true);
        let hidden = self.push(
            Node::Linear {
                x: pooled.index as usize,
                weight: fc1_w.to_owned(),
                bias: Some(fc1_b.to_vec()),
                act: Act::Relu,
            },
            r,
            true,
        );
        let excite = self.push(
            Node::Linear {
                x: hidden.index as usize,
                weight: fc2_w.to_owned(),
                bias: Some(fc2_b.to_vec()),
                act: Act::Sigmoid,
            },
            c,
            true,
        );
        let node = Node::SeScale {
            x: xi,
            s: excite.index as usize,
            relu,
        };
        Ok(self.push(node, c, xm.flat))
    }

    /// Global average pool, `[N, C, H, W] -> [N, C]`.
    ///
    /// # Errors
    /// [`GpuError::UnknownTensor`].
    pub fn global_avg_pool(&mut self, x: TensorId) -> Result<TensorId> {
        let (x, xm) = self.resolve(x)?;
        Ok(self.push(Node::Gap { x }, xm.channels, true))
    }

    /// Fully connected layer, `weight` is `[out, in]`; `x` is flattened per image (`in` must
    /// equal `C * H * W` when the network runs).
    ///
    /// # Errors
    /// [`GpuError::Shape`] when the bias length is not `out`.
    pub fn linear(
        &mut self,
        x: TensorId,
        weight: ArrayView2<'_, f32>,
        bias: Option<&[f32]>,
    ) -> Result<TensorId> {
        let (x, _) = self.resolve(x)?;
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
        let node = Node::Linear {
            x,
            weight: weight.to_owned(),
            bias: bias.map(<[f32]>::to_vec),
            act: Act::None,
        };
        Ok(self.push(node, out_f, true))
    }

    /// Names `x` as an output of [`GpuNetwork::run`]. A second call with one name replaces it.
    /// A `TensorId` from another builder makes [`NetworkBuilder::build`] fail.
    pub fn output(&mut self, name: &str, x: TensorId) {
        match self.resolve(x) {
            Ok((i, _)) => {
                self.outputs.retain(|(n, _)| n != name);
                self.outputs.push((name.to_string(), i));
            }
            Err(e) => self.deferred_error = self.deferred_error.take().or(Some(e)),
        }
    }

    /// Uploads every weight once, in the layout the chosen kernel wants.
    ///
    /// # Errors
    /// [`GpuError::InvalidNetwork`] without exactly one input or without outputs,
    /// [`GpuError::UnknownTensor`] for an output from another builder, GPU errors from the
    /// uploads.
    pub fn build(mut self) -> Result<GpuNetwork> {
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
        // Only the layers that some output depends on.
        let mut needed = vec![false; self.tensors.len()];
        for (_, t) in &self.outputs {
            needed[*t] = true;
        }
        for (node, y) in self.nodes.iter().rev() {
            if needed[*y] {
                for t in node_inputs(node) {
                    needed[t] = true;
                }
            }
        }
        let ctx = self.ctx.clone();
        let kernel = self.kernel;
        let max_binding_device = ctx.limits().max_storage_buffer_binding_size;
        let layers = ctx.scoped("uploading network weights", || {
            let mut layers = Vec::new();
            for (node, y) in self.nodes {
                if needed[y] {
                    layers.push(upload_layer(&ctx, node, y, kernel, max_binding_device)?);
                }
            }
            Ok(layers)
        })?;
        let dummy = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("unused binding"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let limit = self
            .max_binding
            .unwrap_or(u64::MAX)
            .min(max_binding_device)
            .min(ctx.limits().max_buffer_size)
            .min(MAX_BINDING);
        Ok(GpuNetwork {
            ctx,
            input,
            tensors: self.tensors,
            layers,
            outputs: self.outputs,
            max_binding: limit,
            nan_fill: self.nan_fill,
            dummy,
            cache: Mutex::new(Vec::new()),
            busy: Mutex::new(()),
        })
    }
}

fn node_inputs(node: &Node) -> Vec<usize> {
    match node {
        Node::Conv { x, residual, .. } | Node::Affine { x, residual, .. } => {
            std::iter::once(*x).chain(*residual).collect()
        }
        Node::Gap { x } | Node::Linear { x, .. } => vec![*x],
        Node::SeScale { x, s, .. } => vec![*x, *s],
    }
}

/// A layer on the GPU: its tensors, its parameters and its uploaded weights.
#[derive(Debug)]
enum Layer {
    Conv {
        x: usize,
        y: usize,
        spec: ConvSpec,
        imp: ConvImpl,
        weight: ConvWeights,
        scale: Option<wgpu::Buffer>,
        bias: Option<wgpu::Buffer>,
        residual: Option<usize>,
        relu: bool,
    },
    Affine {
        x: usize,
        y: usize,
        scale: wgpu::Buffer,
        shift: wgpu::Buffer,
        residual: Option<usize>,
        relu: bool,
    },
    Gap {
        x: usize,
        y: usize,
    },
    Linear {
        x: usize,
        y: usize,
        in_f: usize,
        out_f: usize,
        weight: wgpu::Buffer,
        bias: Option<wgpu::Buffer>,
        act: Act,
    },
    SeScale {
        x: usize,
        s: usize,
        y: usize,
        relu: bool,
    },
}

impl Layer {
    fn output(&self) -> usize {
        match self {
            Layer::Conv { y, .. }
            | Layer::Affine { y, .. }
            | Layer::Gap { y, .. }
            | Layer::Linear { y, .. }
            | Layer::SeScale { y, .. } => *y,
        }
    }

    fn inputs(&self) -> Vec<usize> {
        match self {
            Layer::Conv { x, residual, .. } | Layer::Affine { x, residual, .. } => {
                std::iter::once(*x).chain(*residual).collect()
            }
            Layer::Gap { x, .. } | Layer::Linear { x, .. } => vec![*x],
            Layer::SeScale { x, s, .. } => vec![*x, *s],
        }
    }
}

fn upload(ctx: &GpuContext, label: &str, data: &[f32]) -> wgpu::Buffer {
    // A binding needs at least one element; pad tiny buffers to 16 bytes.
    let mut padded;
    let data = if data.len() < 4 {
        padded = data.to_vec();
        padded.resize(4, 0.0);
        &padded[..]
    } else {
        data
    };
    ctx.device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(data),
            usage: wgpu::BufferUsages::STORAGE,
        })
}

/// The GEMM weight layout of the tiled kernels: `[group][k][m]` with
/// `k = (ci * ks + ky) * ks + kx`, `k` zero-padded to a multiple of `k_multiple` and `m` to a
/// multiple of `m_multiple`. Returns the data, padded `m` and padded `k`.
pub(crate) fn gemm_weight_layout(
    weight: &ArrayView4<'_, f32>,
    spec: &ConvSpec,
    m_multiple: usize,
    k_multiple: usize,
) -> (Vec<f32>, usize, usize) {
    let [_, cin_g, ks, _] = spec.weight_shape();
    let cout_g = spec.out_channels / spec.groups;
    let k_total = cin_g * ks * ks;
    let k_pad = k_total.div_ceil(k_multiple) * k_multiple;
    let m_pad = cout_g.div_ceil(m_multiple) * m_multiple;
    let mut data = vec![0.0f32; spec.groups * k_pad * m_pad];
    for ((o, ci, ky, kx), &v) in weight.indexed_iter() {
        let (g, m) = (o / cout_g, o % cout_g);
        let k = (ci * ks + ky) * ks + kx;
        data[(g * k_pad + k) * m_pad + m] = v;
    }
    (data, m_pad, k_pad)
}

/// Output tile of `conv_subgroup.wgsl` for an `ow` x `oh` output: columns (the row in as few
/// equal pieces of at most 32 as possible, rounded up to a multiple of 4 so that few pipeline
/// variants exist) and rows (as many as fit in 32 pixels and in the 9 input rows the shader
/// holds).
fn subgroup_tile(ow: usize, oh: usize, ks: usize, stride: usize) -> (usize, usize) {
    let nbw = ow.div_ceil(ow.div_ceil(SUBGROUP_MAX_NB)).div_ceil(4) * 4;
    let max_rows = (9 - ks) / stride + 1;
    let rows = (SUBGROUP_MAX_NB / nbw).min(max_rows).min(oh).max(1);
    (nbw, rows)
}

/// Whether `conv_subgroup.wgsl` can run `spec` on `ctx`.
fn subgroup_fits(ctx: &GpuContext, spec: &ConvSpec) -> bool {
    let cout_g = spec.out_channels / spec.groups;
    let k_rows = spec.in_channels * spec.kernel_size * spec.kernel_size;
    let width = cout_g.div_ceil(SUBGROUP_M) * SUBGROUP_M / 4;
    let max_dim = ctx.limits().max_texture_dimension_2d as usize;
    ctx.has_subgroups_of_8()
        && matches!(spec.kernel_size, 1 | 3)
        && matches!(spec.stride, 1 | 2)
        && width <= max_dim
        && k_rows <= max_dim
}

/// Uploads `data` (`height` rows of `width` rgba texels) as an rgba32float texture.
fn upload_texture(
    ctx: &GpuContext,
    data: &[f32],
    width: usize,
    height: usize,
) -> wgpu::TextureView {
    let texture = ctx.device().create_texture_with_data(
        ctx.queue(),
        &wgpu::TextureDescriptor {
            label: Some("conv weight"),
            size: wgpu::Extent3d {
                width: u(width),
                height: u(height),
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage: wgpu::TextureUsages::TEXTURE_BINDING,
            view_formats: &[],
        },
        wgpu::util::TextureDataOrder::LayerMajor,
        bytemuck::cast_slice(data),
    );
    texture.create_view(&wgpu::TextureViewDescriptor::default())
}

fn upload_layer(
    ctx: &GpuContext,
    node: Node,
    y: usize,
    kernel: ConvKernel,
    max_binding: u64,
) -> Result<Layer> {
    let check_size = |what: &str, len: usize| {
        let bytes = len as u64 * 4;
        if bytes > max_binding {
            Err(GpuError::shape(
                what,
                format!("at most {max_binding} bytes (the device's storage binding limit)"),
                format!("{bytes} bytes"),
            ))
        } else {
            Ok(())
        }
    };
    let opt = |label: &str, v: &Option<Vec<f32>>| v.as_deref().map(|v| upload(ctx, label, v));
    Ok(match node {
        Node::Conv {
            x,
            spec,
            weight,
            scale,
            bias,
            residual,
            relu,
        } => {
            let subgroup = match kernel {
                ConvKernel::Tiled => subgroup_fits(ctx, &spec),
                ConvKernel::Subgroup if subgroup_fits(ctx, &spec) => true,
                ConvKernel::Subgroup => {
                    return Err(GpuError::Unsupported(format!(
                        "the subgroup conv kernel needs subgroups of at least 8 invocations \
                         (this adapter: SUBGROUP {}, min size {}), kernel size 1 or 3 and \
                         stride 1 or 2 (this conv: {}x{}, stride {})",
                        ctx.device().features().contains(wgpu::Features::SUBGROUP),
                        ctx.adapter_info().subgroup_min_size,
                        spec.kernel_size,
                        spec.kernel_size,
                        spec.stride
                    )));
                }
                ConvKernel::Workgroup | ConvKernel::Naive => false,
            };
            let (imp, weight) = if subgroup {
                let (data, m_pad, _) = gemm_weight_layout(&weight.view(), &spec, SUBGROUP_M, 1);
                let height = data.len() / m_pad;
                let view = upload_texture(ctx, &data, m_pad / 4, height);
                (
                    ConvImpl::Subgroup {
                        m_tiles: m_pad / SUBGROUP_M,
                    },
                    ConvWeights::Texture(view),
                )
            } else if kernel == ConvKernel::Naive {
                let w = weight.as_standard_layout();
                let data: Vec<f32> = w.iter().copied().collect();
                check_size("conv weight", data.len())?;
                (
                    ConvImpl::Naive,
                    ConvWeights::Buffer(upload(ctx, "conv weight", &data)),
                )
            } else {
                let (data, m_pad, k_pad) =
                    gemm_weight_layout(&weight.view(), &spec, TILE_M, TILE_K);
                check_size("conv weight", data.len())?;
                (
                    ConvImpl::Workgroup { m_pad, k_pad },
                    ConvWeights::Buffer(upload(ctx, "conv weight", &data)),
                )
            };
            Layer::Conv {
                x,
                y,
                spec,
                imp,
                weight,
                scale: opt("conv scale", &scale),
                bias: opt("conv bias", &bias),
                residual,
                relu,
            }
        }
        Node::Affine {
            x,
            scale,
            shift,
            residual,
            relu,
        } => Layer::Affine {
            x,
            y,
            scale: upload(ctx, "affine scale", &scale),
            shift: upload(ctx, "affine shift", &shift),
            residual,
            relu,
        },
        Node::Gap { x } => Layer::Gap { x, y },
        Node::Linear {
            x,
            weight,
            bias,
            act,
        } => {
            let (out_f, in_f) = weight.dim();
            check_size("linear weight", out_f * in_f)?;
            let w = weight.as_standard_layout();
            let data: Vec<f32> = w.iter().copied().collect();
            Layer::Linear {
                x,
                y,
                in_f,
                out_f,
                weight: upload(ctx, "linear weight", &data),
                bias: opt("linear bias", &bias),
                act,
            }
        }
        Node::SeScale { x, s, relu } => Layer::SeScale { x, s, y, relu },
    })
}

/// Shapes and buffer assignment of a network for one input shape: pure bookkeeping.
#[derive(Debug, Clone)]
struct Plan {
    shapes: Vec<[usize; 4]>,
    slot_of: Vec<usize>,
    slot_bytes: Vec<u64>,
}

/// A buffer for `bytes`: the smallest free one that is big enough, else the biggest free one
/// (grown), else a new one.
fn alloc(bytes: u64, free: &mut Vec<usize>, slot_bytes: &mut Vec<u64>) -> usize {
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

fn bytes_of(shape: &[usize; 4]) -> u64 {
    (shape.iter().product::<usize>() as u64 * 4).max(4)
}

/// GPU resources for one input shape: activation buffers, parameters, bind groups.
#[derive(Debug)]
struct Prepared {
    key: (usize, usize, usize),
    plan: Plan,
    slots: Vec<wgpu::Buffer>,
    dispatches: Vec<Dispatch>,
}

#[derive(Debug)]
struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
}

/// A network on the GPU, ready to run on batches of any size and input shape it can take.
#[derive(Debug)]
pub struct GpuNetwork {
    ctx: GpuContext,
    input: usize,
    tensors: Vec<TensorMeta>,
    layers: Vec<Layer>,
    outputs: Vec<(String, usize)>,
    max_binding: u64,
    nan_fill: bool,
    dummy: wgpu::Buffer,
    cache: Mutex<Vec<Arc<Prepared>>>,
    /// Runs share activation buffers: one at a time.
    busy: Mutex<()>,
}

const FLAG_SCALE: u32 = 1;
const FLAG_BIAS: u32 = 2;
const FLAG_RESIDUAL: u32 = 4;
const FLAG_RELU: u32 = 8;

fn whole(b: &wgpu::Buffer) -> wgpu::BindingResource<'_> {
    b.as_entire_binding()
}

fn or_dummy<'a>(b: Option<&'a wgpu::Buffer>, dummy: &'a wgpu::Buffer) -> wgpu::BindingResource<'a> {
    b.unwrap_or(dummy).as_entire_binding()
}

fn u(v: usize) -> u32 {
    // Every count here is bounded by a binding of at most 2^31 bytes.
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Spreads `count` workgroups over x and y (shaders linearise `x + y * num_workgroups.x`).
fn grid(count: usize, max_dim: u32) -> Result<[u32; 2]> {
    let max = max_dim as usize;
    let count = count.max(1);
    if count <= max {
        return Ok([u(count), 1]);
    }
    let rows = count.div_ceil(max);
    if rows > max {
        return Err(GpuError::shape(
            "workgroups of one dispatch",
            format!("at most {max} x {max}"),
            count,
        ));
    }
    Ok([u(max), u(rows)])
}

impl GpuNetwork {
    /// The context this network runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Channels the input must have.
    pub fn input_channels(&self) -> usize {
        self.tensors[self.input].channels
    }

    /// Output names, in the order they were declared.
    pub fn output_names(&self) -> Vec<String> {
        self.outputs.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Bytes one activation binding may take (device limit, or the builder's cap).
    pub fn max_binding_bytes(&self) -> u64 {
        self.max_binding
    }

    fn plan(&self, batch: usize, height: usize, width: usize) -> Result<Plan> {
        if height == 0 || width == 0 {
            return Err(GpuError::shape(
                "input height x width",
                "non-empty",
                format!("{height}x{width}"),
            ));
        }
        let mut shapes = vec![[0usize; 4]; self.tensors.len()];
        shapes[self.input] = [batch, self.input_channels(), height, width];
        for (i, layer) in self.layers.iter().enumerate() {
            let shape = self.layer_shape(i, layer, &shapes, height, width)?;
            shapes[layer.output()] = shape;
        }
        // Liveness: a tensor's buffer is free after its last reader; outputs live to the end.
        let mut last_use = vec![0usize; self.tensors.len()];
        for (i, layer) in self.layers.iter().enumerate() {
            for t in layer.inputs() {
                last_use[t] = i;
            }
        }
        for (_, t) in &self.outputs {
            last_use[*t] = usize::MAX;
        }
        let mut slot_of = vec![usize::MAX; self.tensors.len()];
        let mut slot_bytes: Vec<u64> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        slot_of[self.input] = alloc(bytes_of(&shapes[self.input]), &mut free, &mut slot_bytes);
        let mut frees = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let y = layer.output();
            slot_of[y] = alloc(bytes_of(&shapes[y]), &mut free, &mut slot_bytes);
            let mut ins = layer.inputs();
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
        })
    }

    fn layer_shape(
        &self,
        i: usize,
        layer: &Layer,
        shapes: &[[usize; 4]],
        height: usize,
        width: usize,
    ) -> Result<[usize; 4]> {
        let check_residual = |r: &Option<usize>, out: [usize; 4]| -> Result<[usize; 4]> {
            match r {
                Some(r) if shapes[*r] != out => Err(GpuError::shape(
                    format!("residual of layer {i} for a {height}x{width} input"),
                    format!("{out:?}"),
                    format!("{:?}", shapes[*r]),
                )),
                _ => Ok(out),
            }
        };
        match layer {
            Layer::Conv {
                x, spec, residual, ..
            } => {
                let [n, _, h, w] = shapes[*x];
                let (oh, ow) = spec.output_size(h, w).map_err(|_| {
                    GpuError::shape(
                        format!(
                            "input height x width (layer {i}, a {k}x{k} conv with padding {p} \
                             and stride {s}, would see {h}x{w})",
                            k = spec.kernel_size,
                            p = spec.padding,
                            s = spec.stride
                        ),
                        "a larger input",
                        format!("{height}x{width}"),
                    )
                })?;
                check_residual(residual, [n, spec.out_channels, oh, ow])
            }
            Layer::Affine { x, residual, .. } => check_residual(residual, shapes[*x]),
            Layer::Gap { x, .. } => {
                let [n, c, _, _] = shapes[*x];
                Ok([n, c, 1, 1])
            }
            Layer::Linear { x, in_f, out_f, .. } => {
                let [n, c, h, w] = shapes[*x];
                if c * h * w != *in_f {
                    return Err(GpuError::shape(
                        format!(
                            "features into linear layer {i} (C*H*W of its input, for a \
                             {height}x{width} input)"
                        ),
                        in_f,
                        c * h * w,
                    ));
                }
                Ok([n, *out_f, 1, 1])
            }
            Layer::SeScale { x, .. } => Ok(shapes[*x]),
        }
    }

    /// Images per submission for inputs of `height` x `width`: as many as keep every
    /// activation within one storage binding.
    fn chunk(&self, batch: usize, height: usize, width: usize) -> Result<usize> {
        let one = self.plan(1, height, width)?;
        let image_bytes = one.shapes.iter().map(bytes_of).max().unwrap_or(4);
        if image_bytes > self.max_binding {
            return Err(GpuError::BatchTooLarge {
                height,
                width,
                image_bytes,
                limit: self.max_binding,
            });
        }
        Ok(((self.max_binding / image_bytes) as usize).clamp(1, batch.max(1)))
    }

    fn check_input(&self, shape: &[usize]) -> Result<()> {
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

    fn prepared(&self, batch: usize, height: usize, width: usize) -> Result<Arc<Prepared>> {
        let key = (batch, height, width);
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(pos) = cache.iter().position(|p| p.key == key) {
                let p = cache.remove(pos);
                cache.push(Arc::clone(&p));
                return Ok(p);
            }
        }
        let plan = self.plan(batch, height, width)?;
        let prepared = Arc::new(
            self.ctx
                .scoped("allocating activations", || self.prepare(key, plan))?,
        );
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= PLAN_CACHE {
            cache.remove(0);
        }
        cache.push(Arc::clone(&prepared));
        Ok(prepared)
    }

    fn prepare(&self, key: (usize, usize, usize), plan: Plan) -> Result<Prepared> {
        let device = self.ctx.device();
        let limits = self.ctx.limits();
        let max_dim = limits.max_compute_workgroups_per_dimension;
        let slots: Vec<wgpu::Buffer> = plan
            .slot_bytes
            .iter()
            .map(|&size| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("activation"),
                    size,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_DST
                        | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                })
            })
            .collect();
        let align = u64::from(limits.min_uniform_buffer_offset_alignment).max(64);
        let mut params = vec![0u8; (align as usize) * self.layers.len().max(1)];
        let mut specs = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let (key, words, groups) = self.dispatch_params(layer, &plan, max_dim)?;
            let start = i * align as usize;
            params[start..start + 64].copy_from_slice(bytemuck::cast_slice(&words));
            specs.push((key, groups));
        }
        let params_buf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("layer parameters"),
            contents: &params,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut dispatches = Vec::with_capacity(self.layers.len());
        for (i, (layer, (key, groups))) in self.layers.iter().zip(specs).enumerate() {
            let pipeline = self.ctx.pipeline(&key)?;
            let act = |t: usize| {
                wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &slots[plan.slot_of[t]],
                    offset: 0,
                    size: NonZeroU64::new(bytes_of(&plan.shapes[t])),
                })
            };
            let dummy = self.dummy.as_entire_binding();
            let uniform = wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &params_buf,
                offset: i as u64 * align,
                size: NonZeroU64::new(64),
            });
            let resources: Vec<wgpu::BindingResource<'_>> = match layer {
                Layer::Conv {
                    x,
                    y,
                    weight,
                    scale,
                    bias,
                    residual,
                    ..
                } => vec![
                    uniform,
                    act(*x),
                    match weight {
                        ConvWeights::Buffer(b) => whole(b),
                        ConvWeights::Texture(v) => wgpu::BindingResource::TextureView(v),
                    },
                    or_dummy(scale.as_ref(), &self.dummy),
                    or_dummy(bias.as_ref(), &self.dummy),
                    residual.map_or(dummy.clone(), act),
                    act(*y),
                ],
                Layer::Affine {
                    x,
                    y,
                    scale,
                    shift,
                    residual,
                    ..
                } => vec![
                    uniform,
                    act(*x),
                    whole(scale),
                    whole(shift),
                    residual.map_or(dummy.clone(), act),
                    act(*y),
                ],
                Layer::Gap { x, y } => vec![uniform, act(*x), act(*y)],
                Layer::Linear {
                    x, y, weight, bias, ..
                } => vec![
                    uniform,
                    act(*x),
                    whole(weight),
                    or_dummy(bias.as_ref(), &self.dummy),
                    act(*y),
                ],
                Layer::SeScale { x, s, y, .. } => vec![uniform, act(*x), act(*s), act(*y)],
            };
            let entries: Vec<wgpu::BindGroupEntry<'_>> = resources
                .into_iter()
                .enumerate()
                .map(|(binding, resource)| wgpu::BindGroupEntry {
                    binding: binding as u32,
                    resource,
                })
                .collect();
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(key.shader.file_name()),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
            dispatches.push(Dispatch {
                pipeline,
                bind_group,
                groups,
            });
        }
        Ok(Prepared {
            key,
            plan,
            slots,
            dispatches,
        })
    }

    /// Pipeline, 16 parameter words and workgroup counts of one layer.
    fn dispatch_params(
        &self,
        layer: &Layer,
        plan: &Plan,
        max_dim: u32,
    ) -> Result<(PipelineKey, [u32; 16], [u32; 3])> {
        let mut p = [0u32; 16];
        Ok(match layer {
            Layer::Conv {
                x,
                y,
                spec,
                imp,
                scale,
                bias,
                residual,
                relu,
                ..
            } => {
                let [n, cin, h, w] = plan.shapes[*x];
                let [_, cout, oh, ow] = plan.shapes[*y];
                let cin_g = cin / spec.groups;
                let cout_g = cout / spec.groups;
                let ks = spec.kernel_size;
                let flags = if scale.is_some() { FLAG_SCALE } else { 0 }
                    | if bias.is_some() { FLAG_BIAS } else { 0 }
                    | if residual.is_some() { FLAG_RESIDUAL } else { 0 }
                    | if *relu { FLAG_RELU } else { 0 };
                let check_z = |z: usize| {
                    if z > max_dim as usize {
                        Err(GpuError::shape(
                            "output-channel tiles x groups of a conv",
                            format!("at most {max_dim}"),
                            z,
                        ))
                    } else {
                        Ok(u(z))
                    }
                };
                match imp {
                    ConvImpl::Workgroup { m_pad, k_pad } => {
                        let m_tiles = m_pad / TILE_M;
                        p.copy_from_slice(&[
                            u(n),
                            u(cin),
                            u(h),
                            u(w),
                            u(cout),
                            u(oh),
                            u(ow),
                            u(spec.stride),
                            u(spec.padding),
                            u(cin_g),
                            u(cout_g),
                            u(cin_g * ks * ks),
                            u(*m_pad),
                            u(*k_pad),
                            flags,
                            u(m_tiles),
                        ]);
                        let z = check_z(m_tiles * spec.groups)?;
                        let [gx, gy] = grid((n * oh * ow).div_ceil(TILE_N), max_dim)?;
                        let key = PipelineKey::new(Shader::ConvTiled).constant("KS", u(ks));
                        (key, p, [gx, gy, z])
                    }
                    ConvImpl::Subgroup { m_tiles } => {
                        let (nbw, rows) = subgroup_tile(ow, oh, ks, spec.stride);
                        let (blocks_x, blocks_y) = (ow.div_ceil(nbw), oh.div_ceil(rows));
                        p.copy_from_slice(&[
                            u(n),
                            u(cin),
                            u(h),
                            u(w),
                            u(cout),
                            u(oh),
                            u(ow),
                            u(spec.padding),
                            u(cin_g),
                            u(cout_g),
                            flags,
                            u(blocks_x),
                            u(blocks_y),
                            u(*m_tiles),
                            0,
                            0,
                        ]);
                        let z = check_z(m_tiles * spec.groups)?;
                        let [gx, gy] = grid(n * blocks_y * blocks_x, max_dim)?;
                        let key = PipelineKey::new(Shader::ConvSubgroup)
                            .constant("KS", u(ks))
                            .constant("STRIDE", u(spec.stride))
                            .constant("NBW", u(nbw))
                            .constant("R", u(rows));
                        (key, p, [gx, gy, z])
                    }
                    ConvImpl::Naive => {
                        p[..13].copy_from_slice(&[
                            u(n),
                            u(cin),
                            u(h),
                            u(w),
                            u(cout),
                            u(oh),
                            u(ow),
                            u(spec.stride),
                            u(spec.padding),
                            u(cin_g),
                            u(cout_g),
                            u(ks),
                            flags,
                        ]);
                        let [gx, gy] = grid((n * cout * oh * ow).div_ceil(64), max_dim)?;
                        (PipelineKey::new(Shader::ConvNaive), p, [gx, gy, 1])
                    }
                }
            }
            Layer::Affine {
                x, residual, relu, ..
            } => {
                let [n, c, h, w] = plan.shapes[*x];
                let flags = if residual.is_some() { FLAG_RESIDUAL } else { 0 }
                    | if *relu { FLAG_RELU } else { 0 };
                p[..4].copy_from_slice(&[u(n * c * h * w), u(c), u(h * w), flags]);
                let [gx, gy] = grid((n * c * h * w).div_ceil(256), max_dim)?;
                (PipelineKey::new(Shader::Affine), p, [gx, gy, 1])
            }
            Layer::Gap { x, .. } => {
                let [n, c, h, w] = plan.shapes[*x];
                p[..2].copy_from_slice(&[u(n * c), u(h * w)]);
                let [gx, gy] = grid(n * c, max_dim)?;
                (PipelineKey::new(Shader::GlobalAvgPool), p, [gx, gy, 1])
            }
            Layer::Linear {
                x,
                in_f,
                out_f,
                bias,
                act,
                ..
            } => {
                let n = plan.shapes[*x][0];
                let flags = if bias.is_some() { FLAG_BIAS } else { 0 };
                p[..5].copy_from_slice(&[u(n), u(*in_f), u(*out_f), flags, *act as u32]);
                let [gx, gy] = grid((n * out_f).div_ceil(64), max_dim)?;
                (PipelineKey::new(Shader::Linear), p, [gx, gy, 1])
            }
            Layer::SeScale { x, relu, .. } => {
                let [n, c, h, w] = plan.shapes[*x];
                let flags = if *relu { FLAG_RELU } else { 0 };
                p[..3].copy_from_slice(&[u(n * c * h * w), u(h * w), flags]);
                let [gx, gy] = grid((n * c * h * w).div_ceil(256), max_dim)?;
                (PipelineKey::new(Shader::SeScale), p, [gx, gy, 1])
            }
        })
    }

    fn encode_pass(
        &self,
        prep: &Prepared,
        encoder: &mut wgpu::CommandEncoder,
        timestamps: Option<(&wgpu::QuerySet, u32)>,
    ) {
        let timestamp_writes = timestamps.map(|(query_set, i)| wgpu::ComputePassTimestampWrites {
            query_set,
            beginning_of_pass_write_index: Some(i),
            end_of_pass_write_index: Some(i + 1),
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("network"),
            timestamp_writes,
        });
        for d in &prep.dispatches {
            pass.set_pipeline(&d.pipeline);
            pass.set_bind_group(0, &d.bind_group, &[]);
            pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
        }
    }

    fn upload_input(&self, prep: &Prepared, data: &[f32]) {
        let queue = self.ctx.queue();
        if self.nan_fill {
            for slot in &prep.slots {
                let nan = vec![f32::NAN; (slot.size() / 4) as usize];
                queue.write_buffer(slot, 0, bytemuck::cast_slice(&nan));
            }
        }
        let slot = &prep.slots[prep.plan.slot_of[self.input]];
        queue.write_buffer(slot, 0, bytemuck::cast_slice(data));
    }

    fn batches(&self, batch: usize, height: usize, width: usize) -> Result<Vec<(usize, usize)>> {
        let chunk = self.chunk(batch, height, width)?;
        Ok((0..batch)
            .step_by(chunk)
            .map(|start| (start, chunk.min(batch - start)))
            .collect())
    }

    /// Runs the network on an NCHW batch and returns every named output (`[N, C, H, W]`, or
    /// `[N, C]` after a pool or linear layer).
    ///
    /// All layers of a batch go into one submission; a batch whose activations would exceed
    /// one storage binding is split into chunks that fit, and the results concatenated.
    ///
    /// # Errors
    /// [`GpuError::Shape`] for an input the network cannot take (wrong channels, too small),
    /// [`GpuError::BatchTooLarge`] when one image alone exceeds the binding limit, GPU errors.
    pub fn run(&self, input: ArrayView4<'_, f32>) -> Result<BTreeMap<String, ArrayD<f32>>> {
        self.check_input(input.shape())?;
        let (n, c, h, w) = input.dim();
        let batches = self.batches(n, h, w)?;
        let _busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        let input = input.as_standard_layout();
        let data = input.as_slice().ok_or_else(|| {
            GpuError::Readback("input is not contiguous after as_standard_layout".into())
        })?;
        let image = c * h * w;
        let preps = batches
            .iter()
            .map(|&(_, len)| self.prepared(len, h, w))
            .collect::<Result<Vec<_>>>()?;
        let device = self.ctx.device();
        let readbacks = self.ctx.scoped("running the network", || {
            let mut readbacks = Vec::with_capacity(batches.len());
            for (&(start, len), prep) in batches.iter().zip(&preps) {
                self.upload_input(prep, &data[start * image..(start + len) * image]);
                let mut encoder = device.create_command_encoder(&Default::default());
                self.encode_pass(prep, &mut encoder, None);
                let total: u64 = self
                    .outputs
                    .iter()
                    .map(|(_, t)| bytes_of(&prep.plan.shapes[*t]))
                    .sum();
                let readback = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size: total,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let mut offset = 0;
                for (_, t) in &self.outputs {
                    let bytes = bytes_of(&prep.plan.shapes[*t]);
                    let src = &prep.slots[prep.plan.slot_of[*t]];
                    encoder.copy_buffer_to_buffer(src, 0, &readback, offset, bytes);
                    offset += bytes;
                }
                self.ctx.queue().submit([encoder.finish()]);
                readbacks.push(readback);
            }
            Ok(readbacks)
        })?;
        let chunks: Vec<Vec<f32>> = read_back(&self.ctx, &readbacks)?
            .iter()
            .map(|b| to_f32(b))
            .collect();
        // Concatenate the chunks along the batch axis, output by output.
        let mut result = BTreeMap::new();
        let mut offsets = vec![0usize; chunks.len()];
        for (name, t) in &self.outputs {
            let [_, oc, oh, ow] = preps[0].plan.shapes[*t];
            let mut all = Vec::with_capacity(n * oc * oh * ow);
            for (ci, (chunk, prep)) in chunks.iter().zip(&preps).enumerate() {
                let len = prep.plan.shapes[*t].iter().product::<usize>();
                all.extend_from_slice(&chunk[offsets[ci]..offsets[ci] + len]);
                offsets[ci] += bytes_of(&prep.plan.shapes[*t]) as usize / 4;
            }
            let shape: Vec<usize> = if self.tensors[*t].flat {
                vec![n, oc * oh * ow]
            } else {
                vec![n, oc, oh, ow]
            };
            let arr = ArrayD::from_shape_vec(IxDyn(&shape), all)
                .map_err(|e| GpuError::Readback(format!("output {name}: {e}")))?;
            result.insert(name.clone(), arr);
        }
        Ok(result)
    }

    /// Times the network on a batch of `batch` images of `height` x `width` (synthetic data):
    /// `warmup` untimed runs, then one duration per run of `iters`.
    ///
    /// Durations are GPU time from timestamp queries at the pass boundaries when the device has
    /// `TIMESTAMP_QUERY` (summed over the chunks of a split batch); otherwise wall time around
    /// the submissions and an explicit wait for the queue.
    ///
    /// # Errors
    /// As [`GpuNetwork::run`].
    pub fn bench(
        &self,
        batch: usize,
        height: usize,
        width: usize,
        warmup: usize,
        iters: usize,
    ) -> Result<Vec<Duration>> {
        self.check_input(&[batch, self.input_channels(), height, width])?;
        let batches = self.batches(batch, height, width)?;
        let _busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        let preps = batches
            .iter()
            .map(|&(_, len)| self.prepared(len, height, width))
            .collect::<Result<Vec<_>>>()?;
        let image = self.input_channels() * height * width;
        let data: Vec<f32> = (0..batches[0].1 * image)
            .map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0)
            .collect();
        let device = self.ctx.device();
        let count = u(2 * batches.len());
        let queries = if self.ctx.has_timestamps() {
            Some(self.ctx.scoped("creating timestamp queries", || {
                let set = device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("bench timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count,
                });
                let resolve = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamp resolve"),
                    size: 8 * u64::from(count),
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                let readback = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamp readback"),
                    size: 8 * u64::from(count),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                Ok((set, resolve, readback))
            })?)
        } else {
            None
        };
        let period = f64::from(self.ctx.queue().get_timestamp_period());
        let mut times = Vec::with_capacity(iters);
        for it in 0..warmup + iters {
            let start = Instant::now();
            self.ctx.scoped("benchmarking the network", || {
                for (ci, ((_, len), prep)) in batches.iter().zip(&preps).enumerate() {
                    self.upload_input(prep, &data[..len * image]);
                    let mut encoder = device.create_command_encoder(&Default::default());
                    let ts = queries.as_ref().map(|(set, _, _)| (set, 2 * u(ci)));
                    self.encode_pass(prep, &mut encoder, ts);
                    if ci + 1 == batches.len()
                        && let Some((set, resolve, readback)) = &queries
                    {
                        encoder.resolve_query_set(set, 0..count, resolve, 0);
                        encoder.copy_buffer_to_buffer(
                            resolve,
                            0,
                            readback,
                            0,
                            8 * u64::from(count),
                        );
                    }
                    self.ctx.queue().submit([encoder.finish()]);
                }
                Ok(())
            })?;
            self.ctx.wait()?;
            let wall = start.elapsed();
            let gpu = match &queries {
                Some((_, _, readback)) => {
                    let bytes = read_back(&self.ctx, std::slice::from_ref(readback))?;
                    let ticks: Vec<u64> = bytes[0]
                        .chunks_exact(8)
                        .map(|c| {
                            u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                        })
                        .collect();
                    let ns: f64 = ticks
                        .chunks_exact(2)
                        .map(|p| p[1].saturating_sub(p[0]) as f64 * period)
                        .sum();
                    (ns > 0.0).then(|| Duration::from_nanos(ns as u64))
                }
                None => None,
            };
            if it >= warmup {
                times.push(gpu.unwrap_or(wall));
            }
        }
        Ok(times)
    }

    /// Bytes of activation buffers a batch of `batch` images of `height` x `width` keeps
    /// allocated (buffers are reused once their tensor is dead; for a split batch, the
    /// biggest chunk).
    ///
    /// # Errors
    /// As [`GpuNetwork::run`], for the shape alone.
    pub fn peak_activation_bytes(&self, batch: usize, height: usize, width: usize) -> Result<u64> {
        self.check_input(&[batch, self.input_channels(), height, width])?;
        let chunk = self.chunk(batch, height, width)?;
        Ok(self.plan(chunk, height, width)?.slot_bytes.iter().sum())
    }

    /// Multiply-accumulates of conv and linear layers (SE's included) for one image.
    ///
    /// # Errors
    /// [`GpuError::Shape`] when the network cannot take a `height` x `width` input.
    pub fn macs(&self, height: usize, width: usize) -> Result<u64> {
        let plan = self.plan(1, height, width)?;
        let mut total = 0u64;
        for layer in &self.layers {
            total += match layer {
                Layer::Conv { x, spec, .. } => {
                    let [_, _, h, w] = plan.shapes[*x];
                    spec.macs(h, w)?
                }
                Layer::Linear { in_f, out_f, .. } => (in_f * out_f) as u64,
                _ => 0,
            };
        }
        Ok(total)
    }
}

/// Maps `buffers` (MAP_READ), waits for the queue, and copies their bytes out.
pub(crate) fn read_back(ctx: &GpuContext, buffers: &[wgpu::Buffer]) -> Result<Vec<Vec<u8>>> {
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, b) in buffers.iter().enumerate() {
        let tx = tx.clone();
        b.map_async(wgpu::MapMode::Read, .., move |r| {
            // A closed receiver only means the caller already gave up.
            let _ = tx.send((i, r));
        });
    }
    drop(tx);
    ctx.wait()?;
    let results: Vec<_> = rx.try_iter().collect();
    if results.len() != buffers.len() {
        return Err(GpuError::Readback(format!(
            "{} of {} buffers were mapped after waiting for the queue",
            results.len(),
            buffers.len()
        )));
    }
    for (i, r) in results {
        r.map_err(|e| GpuError::Readback(format!("mapping buffer {i}: {e}")))?;
    }
    let mut out = Vec::with_capacity(buffers.len());
    for b in buffers {
        let bytes = {
            let view = b
                .get_mapped_range(..)
                .map_err(|e| GpuError::Readback(e.to_string()))?;
            view.to_vec()
        };
        b.unmap();
        out.push(bytes);
    }
    Ok(out)
}

fn to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn grid_spreads_workgroups_over_two_dimensions() {
        assert_eq!(grid(0, 65535).ok(), Some([1, 1]));
        assert_eq!(grid(65535, 65535).ok(), Some([65535, 1]));
        assert_eq!(grid(65536, 65535).ok(), Some([65535, 2]));
        assert!(grid(65535 * 65535 + 1, 65535).is_err());
    }

    #[test]
    fn gemm_layout_puts_output_channels_fastest_and_zero_pads() {
        let spec = ConvSpec::new(4, 6, 3, 1, 1, 2).expect("spec");
        let w = Array4::from_shape_fn(spec.weight_shape(), |(o, i, y, x)| {
            (o * 1000 + i * 100 + y * 10 + x) as f32
        });
        let (data, m_pad, k_pad) = gemm_weight_layout(&w.view(), &spec, 4, 16);
        assert_eq!((m_pad, k_pad), (4, 32));
        assert_eq!(data.len(), 2 * 32 * 4);
        // Group 1, m = 2 (channel 5), ci = 1, ky = 2, kx = 0: k = (1 * 3 + 2) * 3 = 15.
        assert_eq!(data[(32 + 15) * 4 + 2], 5120.0);
        // Padding: m = 3 does not exist in a group of 3, k = 18.. does not exist.
        assert_eq!(data[(32 + 15) * 4 + 3], 0.0);
        assert!(data[(32 + 18) * 4..(32 + 32) * 4].iter().all(|&v| v == 0.0));
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
