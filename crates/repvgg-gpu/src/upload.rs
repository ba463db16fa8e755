//! Weights onto the GPU, once per network, in the layout each layer's kernel wants.

use repvgg_math::winograd::Tile;
use wgpu::util::DeviceExt;

use crate::caps::Caps;
use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::graph::Node;
use crate::kernels::{ConvEpilogue, WeightData, linear, u};
use crate::plan::Topology;
use crate::precision::{Precision, Storage};
use crate::select::{self, ConvImpl, DirectConv};
use repvgg_math::Activation;

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
                    let direct = match node {
                        Node::Conv { .. } => *directs.next().ok_or_else(|| {
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

/// Where a conv's weights live.
#[derive(Debug)]
pub(crate) enum ConvWeights {
    Buffer(wgpu::Buffer),
    Texture(wgpu::TextureView),
}

/// A layer's GPU side: its kernel choice, flags and uploaded parameters (the shapes live in the
/// matching [`crate::plan::Step`]).
#[derive(Debug)]
pub(crate) enum LayerGpu {
    Conv {
        imp: ConvImpl,
        ep: ConvEpilogue,
        weight: ConvWeights,
        scale: Option<wgpu::Buffer>,
        bias: Option<wgpu::Buffer>,
    },
    Affine {
        scale: wgpu::Buffer,
        shift: wgpu::Buffer,
        relu: bool,
    },
    Gap,
    Linear {
        weight: wgpu::Buffer,
        bias: Option<wgpu::Buffer>,
        act: Activation,
    },
    ChannelScale {
        relu: bool,
    },
    WinogradInput {
        tile: Tile,
    },
    WinogradOutput {
        tile: Tile,
        ep: ConvEpilogue,
        scale: Option<wgpu::Buffer>,
        bias: Option<wgpu::Buffer>,
    },
}

impl LayerGpu {
    /// The kernel, for reports (`--profile`).
    pub fn kernel_name(&self) -> &'static str {
        match self {
            LayerGpu::Conv { imp, .. } => match imp {
                ConvImpl::Gemm(_) => "conv gemm",
                ConvImpl::Workgroup(_) => "conv workgroup",
                ConvImpl::Subgroup(_) => "conv subgroup",
                ConvImpl::Naive => "conv naive",
            },
            LayerGpu::Affine { .. } => "affine",
            LayerGpu::Gap => "global avg pool",
            LayerGpu::Linear { .. } => "linear",
            LayerGpu::ChannelScale { .. } => "channel scale",
            LayerGpu::WinogradInput { tile: Tile::F2 } => "winograd f2 input",
            LayerGpu::WinogradInput { tile: Tile::F4 } => "winograd f4 input",
            LayerGpu::WinogradOutput { tile: Tile::F2, .. } => "winograd f2 output",
            LayerGpu::WinogradOutput { tile: Tile::F4, .. } => "winograd f4 output",
        }
    }
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
    let opt = |label: &str, v: &Option<Vec<f32>>| v.as_deref().map(|v| buffer(ctx, label, v));
    Ok(match node {
        Node::Conv {
            spec,
            weight,
            scale,
            bias,
            residual,
            relu,
            ..
        } => {
            if precision == Precision::F16 && !direct.shader().has_f16() {
                return Err(GpuError::F16Kernel {
                    kernel: direct.kernel_name(),
                });
            }
            let (imp, data) = select::prepare(direct, caps, spec, weight.view())?;
            let weight = match data {
                WeightData::Buffer(d) => {
                    check_size("conv weight", d.len())?;
                    ConvWeights::Buffer(stored(ctx, "conv weight", &d, precision))
                }
                WeightData::Texture {
                    data,
                    width,
                    height,
                } => ConvWeights::Texture(texture(ctx, &data, width, height, precision)),
            };
            LayerGpu::Conv {
                imp,
                ep: ConvEpilogue {
                    scale: scale.is_some(),
                    bias: bias.is_some(),
                    residual: residual.is_some(),
                    relu: *relu,
                },
                weight,
                scale: opt("conv scale", scale),
                bias: opt("conv bias", bias),
            }
        }
        Node::Affine {
            scale, shift, relu, ..
        } => LayerGpu::Affine {
            scale: buffer(ctx, "affine scale", scale),
            shift: buffer(ctx, "affine shift", shift),
            relu: *relu,
        },
        Node::Gap { .. } => LayerGpu::Gap,
        Node::Linear {
            weight, bias, act, ..
        } => {
            let data = linear::weight_layout(weight);
            check_size("linear weight", data.len())?;
            LayerGpu::Linear {
                weight: stored(ctx, "linear weight", &data, precision),
                bias: opt("linear bias", bias),
                act: *act,
            }
        }
        Node::ChannelScale { relu, .. } => LayerGpu::ChannelScale { relu: *relu },
        Node::WinogradInput { tile, .. } => LayerGpu::WinogradInput { tile: *tile },
        Node::WinogradOutput {
            scale,
            bias,
            relu,
            tile,
            residual,
            ..
        } => LayerGpu::WinogradOutput {
            tile: *tile,
            ep: ConvEpilogue {
                scale: scale.is_some(),
                bias: bias.is_some(),
                residual: residual.is_some(),
                relu: *relu,
            },
            scale: opt("winograd scale", scale),
            bias: opt("winograd bias", bias),
        },
    })
}
