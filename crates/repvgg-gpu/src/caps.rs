//! What the adapter offers that kernel choice depends on, as a device-free value (tests build
//! their own).

use crate::context::GpuContext;

/// Bindings never exceed this, whatever the device offers, so that indices fit in `u32`.
pub(crate) const MAX_BINDING: u64 = 1 << 31;

/// What the adapter offers that kernel choice depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Caps {
    /// The smallest subgroup size when the device has subgroup operations.
    pub subgroup_min: Option<u32>,
    pub max_texture_dim: u32,
    pub max_workgroups: u32,
    /// A CPU emulating a GPU (lavapipe, SwiftShader, WARP).
    pub software: bool,
    /// Workgroups a dispatch should have at least to fill the device.
    pub min_workgroups: usize,
    /// Bytes one storage binding may take: the device's binding and buffer limits, at most
    /// [`MAX_BINDING`] (activation bindings and the split-K scratch must fit).
    pub max_binding: u64,
}

impl Caps {
    /// What `ctx`'s device offers.
    pub fn of(ctx: &GpuContext) -> Self {
        let subgroups = ctx.device().features().contains(wgpu::Features::SUBGROUP);
        let software = ctx.is_software();
        let limits = ctx.limits();
        Self {
            subgroup_min: subgroups.then_some(ctx.adapter_info().subgroup_min_size),
            max_texture_dim: limits.max_texture_dimension_2d,
            max_workgroups: limits.max_compute_workgroups_per_dimension,
            software,
            // A CPU runs a few workgroups at a time; a GPU wants several per compute unit (wgpu
            // does not say how many units there are: 128 covers most discrete GPUs).
            min_workgroups: if software { 8 } else { 128 },
            max_binding: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size)
                .min(MAX_BINDING),
        }
    }

    /// A lavapipe-like software adapter (subgroups of 8) with textures up to
    /// `max_texture_dim`, for the kernel-choice tests.
    #[cfg(test)]
    pub(crate) fn software_for_tests(max_texture_dim: u32) -> Self {
        Self {
            subgroup_min: Some(8),
            max_texture_dim,
            max_workgroups: 65535,
            software: true,
            min_workgroups: 8,
            max_binding: 1 << 30,
        }
    }
}
