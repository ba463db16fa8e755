//! Weights onto the GPU, once per network, in the layout each layer's kernel wants.

use wgpu::util::DeviceExt;

use crate::caps::Caps;
use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::graph::{Node, Weight};
use crate::kernels::conv_kernel::ConvImpl;
use crate::kernels::op::Op;
use crate::kernels::{WeightData, linear, u};
use crate::plan::Topology;
use crate::precision::{Precision, Storage};
use crate::select::{self, DirectConv};

/// A network's uploaded side: its structure, every layer's weights and kernel choice, and the
/// placeholders bound where a kernel's optional binding is unused.
#[derive(Debug)]
pub(crate) struct Uploaded {
    pub topo: Topology,
    pub layers: Vec<LayerGpu>,
    pub caps: Caps,
    pub dummy: wgpu::Buffer,
    /// Bound where a kernel's read-write buffer is unused (split-K's partial sums, unsplit).
    pub dummy_rw: wgpu::Buffer,
}

impl Uploaded {
    /// Uploads every layer of `nodes` (a conv with the kernel `directs` gives it, in order of
    /// the convs) in `precision`, as the steps of `topo`.
    pub fn new(
        ctx: &GpuContext,
        caps: Caps,
        topo: Topology,
        nodes: &[Node],
        directs: &[DirectConv],
    ) -> Result<Self> {
        let max_binding_device = ctx.limits().max_storage_buffer_binding_size;
        let precision = topo.precision;
        let mut directs = directs.iter();
        let layers = ctx.scoped("uploading network weights", || {
            nodes
                .iter()
                .map(|node| {
                    let direct = match node.op {
                        Op::Conv(_) => *directs.next().ok_or_else(|| {
                            GpuError::InvalidNetwork("a conv without a kernel".into())
                        })?,
                        _ => DirectConv::Naive,
                    };
                    layer(ctx, &caps, node, direct, precision, max_binding_device)
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let unused = |label| {
            ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        // Two: one buffer may not be bound read-only and read-write in one dispatch.
        Ok(Self {
            topo,
            layers,
            caps,
            dummy: unused("unused binding"),
            dummy_rw: unused("unused read-write binding"),
        })
    }
}

impl Uploaded {
    /// Layer `i`'s kernel, for reports (`--profile`) and errors.
    pub fn kernel_name(&self, i: usize) -> &'static str {
        match (self.topo.steps.get(i), self.layers.get(i)) {
            (Some(step), Some(layer)) => layer
                .conv
                .map_or_else(|| step.op.layer().name(), ConvImpl::name),
            _ => "no layer",
        }
    }
}

/// Where a layer's weights live (a texture: the subgroup convs').
#[derive(Debug)]
pub(crate) enum LayerWeights {
    Buffer(wgpu::Buffer),
    Texture(wgpu::TextureView),
}

/// A layer's GPU side: the conv kernel chosen for it (convs only) and its uploaded weights
/// (what it is and its shapes live in the matching [`crate::plan::Step`]).
#[derive(Debug)]
pub(crate) struct LayerGpu {
    pub conv: Option<ConvImpl>,
    pub weight: Option<LayerWeights>,
    pub scale: Option<wgpu::Buffer>,
    pub bias: Option<wgpu::Buffer>,
}

/// An f32 storage buffer holding `data` (padded to at least 16 bytes: a binding is never
/// empty): per-channel scale, bias and shift, whatever the precision.
pub(crate) fn buffer(ctx: &GpuContext, label: &str, data: &[f32]) -> wgpu::Buffer {
    stored(ctx, label, data, Precision::F32)
}

/// A storage buffer holding `data` stored in `precision` (weights), padded to at least 16
/// bytes: a binding is never empty, and an f16 `vec4` array needs whole 8-byte elements.
pub(crate) fn stored(
    ctx: &GpuContext,
    label: &str,
    data: &[f32],
    precision: Precision,
) -> wgpu::Buffer {
    let mut bytes = precision.encode(data);
    if bytes.len() < 16 {
        bytes.resize(16, 0);
    }
    ctx.device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: &bytes,
            usage: wgpu::BufferUsages::STORAGE,
        })
}

/// `data` (`height` rows of `width` rgba texels) as an rgba32float storage texture, or
/// rgba16float for f16 (the shader reads it read-only; `textureLoad` returns f32 either way).
fn texture(
    ctx: &GpuContext,
    data: &[f32],
    width: usize,
    height: usize,
    precision: Precision,
) -> wgpu::TextureView {
    let format = match precision {
        Precision::F32 => wgpu::TextureFormat::Rgba32Float,
        Precision::F16 => wgpu::TextureFormat::Rgba16Float,
    };
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
            format,
            usage: wgpu::TextureUsages::STORAGE_BINDING,
            view_formats: &[],
        },
        wgpu::util::TextureDataOrder::LayerMajor,
        &precision.encode(data),
    );
    texture.create_view(&wgpu::TextureViewDescriptor::default())
}

/// Uploads one layer's weights, stored in `precision`, a conv's in the layout of `direct`, its
/// kernel; `max_binding` is the device's storage-binding limit.
pub(crate) fn layer(
    ctx: &GpuContext,
    caps: &Caps,
    node: &Node,
    direct: DirectConv,
    precision: Precision,
    max_binding: u64,
) -> Result<LayerGpu> {
    let check_size = |what: &str, len: usize| {
        let bytes = precision.buffer_bytes(len);
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
    let (conv, weight) = match (&node.op, &node.data.weight) {
        (Op::Conv(c), Weight::Conv(weight)) => {
            if precision == Precision::F16 && !direct.shader().has_f16() {
                return Err(GpuError::F16Kernel {
                    kernel: direct.kernel_name(),
                });
            }
            let (imp, data) = select::prepare(direct, caps, &c.spec, weight.view())?;
            let weight = match data {
                WeightData::Buffer(d) => {
                    check_size("conv weight", d.len())?;
                    LayerWeights::Buffer(stored(ctx, "conv weight", &d, precision))
                }
                WeightData::Texture {
                    data,
                    width,
                    height,
                } => LayerWeights::Texture(texture(ctx, &data, width, height, precision)),
            };
            (Some(imp), Some(weight))
        }
        (Op::Conv(_), _) | (_, Weight::Conv(_)) => {
            return Err(GpuError::InvalidNetwork(format!(
                "a {} layer given the weights of another kind",
                node.op.layer().name()
            )));
        }
        (_, Weight::Matrix(weight)) => {
            let data = linear::weight_layout(weight);
            check_size("linear weight", data.len())?;
            let buffer = stored(ctx, "linear weight", &data, precision);
            (None, Some(LayerWeights::Buffer(buffer)))
        }
        (_, Weight::None) => (None, None),
    };
    let opt = |label: &str, v: &Option<Vec<f32>>| v.as_deref().map(|v| buffer(ctx, label, v));
    Ok(LayerGpu {
        conv,
        weight,
        scale: opt("layer scale", &node.data.scale),
        bias: opt("layer bias", &node.data.bias),
    })
}
