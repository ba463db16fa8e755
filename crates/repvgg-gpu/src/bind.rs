//! Resources of one input shape: activation buffers, the layers' parameters in one uniform
//! buffer, and a bind group per layer, from the bindings each layer kind lists
//! ([`crate::kernels::layer::Layer::bindings`]).

use std::num::NonZeroU64;

use wgpu::util::DeviceExt;

use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::kernels::layer::{Bind, Run};
use crate::kernels::{DispatchSpec, MAX_PARAMS_BYTES};
use crate::plan::Plan;
use crate::upload::{LayerWeights, Uploaded};

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
    let (h, w) = input_hw(net, plan);
    let run = Run {
        caps: &net.caps,
        chained: plan.chained.get(i).copied().unwrap_or(false),
        conv: net.layers[i].conv.as_ref(),
    };
    let mut spec = step
        .op
        .layer()
        .dispatch(&step.at(i, &plan.shapes, h, w), &run)?;
    spec.key.precision = net.topo.precision;
    if let Some(then) = spec.then.as_deref_mut() {
        then.key.precision = net.topo.precision;
    }
    Ok(spec)
}

/// The network input's height and width in `plan`, for messages.
fn input_hw(net: &Uploaded, plan: &Plan) -> (usize, usize) {
    let [_, _, h, w] = plan.shapes[net.topo.input];
    (h, w)
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
    let (in_h, in_w) = input_hw(net, &plan);
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
        let at = step.at(i, &plan.shapes, in_h, in_w);
        let next_y = chained
            .then(|| net.topo.steps.get(i + 1).map(|s| s.y))
            .flatten();
        // `params`: the parameters of the pass the bindings are for.
        let resource = |b: Bind, params| {
            Ok(match b {
                Bind::Params => params,
                Bind::Tensor(t) => act(t),
                Bind::Weight => match &layer.weight {
                    Some(LayerWeights::Buffer(b)) => b.as_entire_binding(),
                    Some(LayerWeights::Texture(v)) => wgpu::BindingResource::TextureView(v),
                    None => {
                        return Err(GpuError::InvalidNetwork(format!(
                            "layer {i} ({}) binds weights it was not uploaded with",
                            net.kernel_name(i)
                        )));
                    }
                },
                Bind::Scale => opt(&layer.scale),
                Bind::Bias => opt(&layer.bias),
                Bind::Partial => partial(),
                Bind::Unused => dummy(),
                Bind::UnusedRw => net.dummy_rw.as_entire_binding(),
            })
        };
        let numbered = (step.op.layer().bindings(&at, &spec.key, next_y).into_iter())
            .map(|(n, b)| Ok((n, resource(b, uniform.clone())?)))
            .collect::<Result<Vec<_>>>()?;
        let mut then = None;
        if let Some(second) = spec.then.as_deref() {
            // The second pass has parameters of its own, in the next slot.
            let pipeline = ctx.pipeline(&second.key)?;
            let params = uniform_at(slot, second.params.len());
            slot += 1;
            let resources = (step.op.layer().second_bindings(&at).into_iter())
                .map(|(n, b)| Ok((n, resource(b, params.clone())?)))
                .collect::<Result<Vec<_>>>()?;
            then = Some(Box::new(Dispatch {
                bind_group: bind_group(device, &pipeline, second, resources),
                pipeline,
                groups: second.groups,
                then: None,
                k_slices: 1,
                skip: false,
            }));
        }
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
