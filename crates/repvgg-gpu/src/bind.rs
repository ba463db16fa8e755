//! Resources of one input shape: activation buffers, the layers' parameters in one uniform
//! buffer, and a bind group per layer.

use std::num::NonZeroU64;

use wgpu::util::DeviceExt;

use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::kernels::{
    ConvShape, DispatchSpec, MAX_PARAMS_BYTES, affine, channel_scale, gap, linear, wino_input,
    wino_output,
};
use crate::plan::{Op, Plan};
use crate::select;
use crate::shader::Shader;
use crate::upload::{ConvWeights, LayerGpu, Uploaded};

/// GPU resources for one input shape: activation buffers, parameters, bind groups.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub key: (usize, usize, usize),
    pub plan: Plan,
    pub slots: Vec<wgpu::Buffer>,
    /// Split-K partial sums, when a layer splits at these shapes (held by the bind groups).
    #[allow(dead_code)]
    pub scratch: Option<wgpu::Buffer>,
    /// One per layer.
    pub dispatches: Vec<Dispatch>,
}

/// A layer's recorded work: one dispatch, and a second right after it for a split-K conv.
#[derive(Debug)]
pub(crate) struct Dispatch {
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group: wgpu::BindGroup,
    pub groups: [u32; 3],
    pub then: Option<Box<Dispatch>>,
    /// K slices of a split-K conv, 1 otherwise.
    pub k_slices: usize,
    /// The layer runs inside the previous layer's dispatch ([`Plan::chained`]): not recorded.
    pub skip: bool,
}

impl Dispatch {
    /// Records this dispatch (and its second pass) into `pass`, unless it is chained.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        if self.skip {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
        if let Some(then) = &self.then {
            then.record(pass);
        }
    }
}

/// Pipeline, parameters and workgroups of layer `i` of `net` for the shapes of `plan`.
pub(crate) fn dispatch_spec(net: &Uploaded, i: usize, plan: &Plan) -> Result<DispatchSpec> {
    let step = &net.topo.steps[i];
    let x = plan.shapes[step.x];
    let y = plan.shapes[step.y];
    let max_dim = net.caps.max_workgroups;
    let chained = plan.chained.get(i).copied().unwrap_or(false);
    let mut spec = match (&step.op, &net.layers[i]) {
        (Op::WinogradOutput { .. }, LayerGpu::WinogradOutput { ep, .. }) if chained => {
            wino_output::chain(y, *ep, max_dim)?
        }
        (Op::Conv { spec, .. }, LayerGpu::Conv { imp, ep, .. }) => {
            let shape = ConvShape {
                spec,
                x,
                y,
                ep: *ep,
            };
            select::dispatch(*imp, shape, &net.caps)?
        }
        (Op::Affine { residual }, LayerGpu::Affine { relu, .. }) => {
            affine::dispatch(x, residual.is_some(), *relu, max_dim)?
        }
        (Op::Gap, LayerGpu::Gap) => gap::dispatch(x, max_dim)?,
        (Op::Linear { in_f, out_f }, LayerGpu::Linear { bias, act, .. }) => {
            linear::dispatch(x[0], *in_f, *out_f, bias.is_some(), *act, max_dim)?
        }
        (Op::ChannelScale { .. }, LayerGpu::ChannelScale { relu }) => {
            channel_scale::dispatch(x, *relu, max_dim)?
        }
        (Op::WinogradInput { tile }, LayerGpu::WinogradInput { .. }) => {
            wino_input::dispatch(x, *tile, max_dim)?
        }
        (Op::WinogradOutput { tile, .. }, LayerGpu::WinogradOutput { ep, .. }) => {
            wino_output::dispatch(y, *tile, *ep, max_dim)?
        }
        (op, layer) => {
            return Err(GpuError::InvalidNetwork(format!(
                "layer {i}: {op:?} was uploaded as {}",
                layer.kernel_name()
            )));
        }
    };
    spec.key.precision = net.topo.precision;
    if let Some(then) = spec.then.as_deref_mut() {
        then.key.precision = net.topo.precision;
    }
    Ok(spec)
}

/// Buffers, parameters and bind groups of every layer of `net` for the shapes of `plan`.
pub(crate) fn prepare<'a>(
    ctx: &GpuContext,
    net: &'a Uploaded,
    key: (usize, usize, usize),
    plan: Plan,
) -> Result<Prepared> {
    let device = ctx.device();
    let limits = ctx.limits();
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
    let align = MAX_PARAMS_BYTES
        .next_multiple_of((limits.min_uniform_buffer_offset_alignment as usize).max(1));
    let specs = (0..net.layers.len())
        .map(|i| dispatch_spec(net, i, &plan))
        .collect::<Result<Vec<_>>>()?;
    // One parameter slot per pass: a layer's own, then its second pass (split-K) if any.
    let passes: Vec<&DispatchSpec> = specs
        .iter()
        .flat_map(|s| std::iter::once(s).chain(s.then.as_deref()))
        .collect();
    let mut params = vec![0u8; align * passes.len().max(1)];
    for (i, s) in passes.iter().enumerate() {
        params[i * align..i * align + s.params.len()].copy_from_slice(&s.params);
    }
    let params_buf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("layer parameters"),
        contents: &params,
        usage: wgpu::BufferUsages::UNIFORM,
    });
    // The split-K partial sums of whichever layer runs: one buffer for all of them.
    let scratch_bytes = specs.iter().map(|s| s.scratch_bytes).max().unwrap_or(0);
    let scratch = (scratch_bytes > 0).then(|| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("split-K partial sums"),
            size: scratch_bytes,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    });
    let uniform_at = |slot: usize, len: usize| {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &params_buf,
            offset: (slot * align) as u64,
            size: NonZeroU64::new(len as u64),
        })
    };
    let mut slot = 0;
    let mut dispatches = Vec::with_capacity(net.layers.len());
    for (i, (layer, spec)) in net.layers.iter().zip(specs).enumerate() {
        let step = &net.topo.steps[i];
        let chained = plan.chained.get(i).copied().unwrap_or(false);
        let pipeline = ctx.pipeline(&spec.key)?;
        let act = |t: usize| {
            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &slots[plan.slot_of[t]],
                offset: 0,
                size: NonZeroU64::new(net.topo.bytes(&plan.shapes[t])),
            })
        };
        let dummy = || net.dummy.as_entire_binding();
        let opt = |b: &'a Option<wgpu::Buffer>| -> wgpu::BindingResource<'a> {
            b.as_ref().unwrap_or(&net.dummy).as_entire_binding()
        };
        let uniform = uniform_at(slot, spec.params.len());
        slot += 1;
        let partial = || match (&scratch, spec.scratch_bytes) {
            (Some(b), bytes) if bytes > 0 => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: b,
                offset: 0,
                size: NonZeroU64::new(bytes),
            }),
            _ => net.dummy_rw.as_entire_binding(),
        };
        let residual = match &step.op {
            Op::Conv { residual, .. }
            | Op::Affine { residual }
            | Op::WinogradOutput { residual, .. } => *residual,
            _ => None,
        };
        let mut then = None;
        // (binding, resource) pairs: in order from 0 (`seq`), except the entries below.
        let wide = spec.key.entry == "f4_wide";
        let numbered: Vec<(u32, wgpu::BindingResource<'_>)> = match (layer, &step.op) {
            (
                LayerGpu::Conv {
                    weight,
                    scale,
                    bias,
                    ..
                },
                _,
            ) => {
                let mut r = vec![
                    uniform,
                    act(step.x),
                    match weight {
                        ConvWeights::Buffer(b) => b.as_entire_binding(),
                        ConvWeights::Texture(v) => wgpu::BindingResource::TextureView(v),
                    },
                    opt(scale),
                    opt(bias),
                    residual.map_or_else(dummy, act),
                    act(step.y),
                ];
                if spec.key.shader == Shader::ConvGemm {
                    r.push(partial());
                }
                if matches!(
                    spec.key.shader,
                    Shader::ConvSubgroupDirect | Shader::ConvSubgroupFlat
                ) {
                    let key = &spec.key;
                    // y4: the output again, as vec4s, where the shader stores through it
                    // (whole vec4s then); a placeholder otherwise (it may be too small).
                    r.push(if key.value("VEC") > 0 {
                        act(step.y)
                    } else {
                        net.dummy_rw.as_entire_binding()
                    });
                    // x4: the input again, as vec4s, where the shader loads through it (flat:
                    // VLD; direct: VROW or VBLK).
                    let quads = ["VLD", "VROW", "VBLK"].iter().any(|k| key.value(k) > 0);
                    r.push(if quads { act(step.x) } else { dummy() });
                }
                if let Some(second) = spec.then.as_deref() {
                    // `reduce` binds what it uses, at the same numbers as `main`.
                    let pipeline = ctx.pipeline(&second.key)?;
                    let resources = vec![
                        (0, uniform_at(slot, second.params.len())),
                        (3, opt(scale)),
                        (4, opt(bias)),
                        (5, residual.map_or_else(dummy, act)),
                        (6, act(step.y)),
                        (7, partial()),
                    ];
                    slot += 1;
                    then = Some(Box::new(Dispatch {
                        bind_group: bind_group(device, &pipeline, second, resources),
                        pipeline,
                        groups: second.groups,
                        then: None,
                        k_slices: 1,
                        skip: false,
                    }));
                }
                seq(r)
            }
            (LayerGpu::Affine { scale, shift, .. }, _) => seq(vec![
                uniform,
                act(step.x),
                scale.as_entire_binding(),
                shift.as_entire_binding(),
                residual.map_or_else(dummy, act),
                act(step.y),
            ]),
            (LayerGpu::Gap, _) => seq(vec![uniform, act(step.x), act(step.y)]),
            (LayerGpu::Linear { weight, bias, .. }, _) => seq(vec![
                uniform,
                act(step.x),
                weight.as_entire_binding(),
                opt(bias),
                act(step.y),
            ]),
            (LayerGpu::ChannelScale { .. }, Op::ChannelScale { s }) => {
                seq(vec![uniform, act(step.x), act(*s), act(step.y)])
            }
            // f4_wide writes through v4 (3), not v (2), and may read through x4 (4).
            (LayerGpu::WinogradInput { .. }, _) if wide => vec![
                (0, uniform),
                (1, act(step.x)),
                (3, act(step.y)),
                (4, act(step.x)),
            ],
            (LayerGpu::WinogradInput { .. }, _) => seq(vec![uniform, act(step.x), act(step.y)]),
            // f4_chain reads the products through m4 (6) and writes the next step's output
            // (the next conv's transformed input) through v4 (8).
            (LayerGpu::WinogradOutput { scale, bias, .. }, _) if chained => vec![
                (0, uniform),
                (6, act(step.x)),
                (2, opt(scale)),
                (3, opt(bias)),
                (8, act(net.topo.steps[i + 1].y)),
            ],
            // f4_wide reads through m4 (6), writes through y4 (7), has no residual.
            (LayerGpu::WinogradOutput { scale, bias, .. }, _) if wide => vec![
                (0, uniform),
                (6, act(step.x)),
                (2, opt(scale)),
                (3, opt(bias)),
                (7, act(step.y)),
            ],
            (LayerGpu::WinogradOutput { scale, bias, .. }, _) => seq(vec![
                uniform,
                act(step.x),
                opt(scale),
                opt(bias),
                residual.map_or_else(dummy, act),
                act(step.y),
            ]),
            (layer, op) => {
                return Err(GpuError::InvalidNetwork(format!(
                    "layer {i}: {op:?} was uploaded as {}",
                    layer.kernel_name()
                )));
            }
        };
        dispatches.push(Dispatch {
            bind_group: bind_group(device, &pipeline, &spec, numbered),
            pipeline,
            groups: spec.groups,
            then,
            k_slices: spec.k_slices,
            skip: i > 0 && plan.chained[i - 1],
        });
    }
    Ok(Prepared {
        key,
        plan,
        slots,
        scratch,
        dispatches,
    })
}

/// `resources` at bindings 0, 1, 2, ...
fn seq(resources: Vec<wgpu::BindingResource<'_>>) -> Vec<(u32, wgpu::BindingResource<'_>)> {
    (0..).zip(resources).collect()
}

/// The bind group of `spec`'s pipeline: `(binding, resource)` pairs.
fn bind_group(
    device: &wgpu::Device,
    pipeline: &wgpu::ComputePipeline,
    spec: &DispatchSpec,
    resources: Vec<(u32, wgpu::BindingResource<'_>)>,
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry<'_>> = resources
        .into_iter()
        .map(|(binding, resource)| wgpu::BindGroupEntry { binding, resource })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(spec.key.shader.file_name()),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    })
}
