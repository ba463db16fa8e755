//! Which device `--device auto` takes: hardware GPUs only, never a software adapter.

use crate::context::GpuContext;

/// The device `--device auto` runs on: a hardware GPU, or the reason it takes the CPU.
///
/// A software adapter (see [`crate::is_software_adapter`]) is never taken here: the CPU path is faster
/// than a rasterizer emulating a GPU on the same cores. Callers that want it anyway use
/// [`GpuContext::new`].
#[derive(Debug)]
pub enum AutoDevice {
    /// A hardware adapter, with a one-line description.
    Gpu(GpuContext),
    /// Why the CPU runs instead (no adapter, or only a software one), one line.
    Cpu(String),
}

impl AutoDevice {
    /// Picks: a hardware adapter when wgpu finds one, else the CPU with the reason.
    pub fn pick() -> Self {
        match GpuContext::new() {
            Ok(ctx) if ctx.is_software() => Self::Cpu(format!(
                "{} is a software adapter (device type {:?}), slower than the CPU path; \
                 --device gpu runs on it anyway",
                ctx.describe(),
                ctx.adapter_info().device_type
            )),
            Ok(ctx) => Self::Gpu(ctx),
            Err(e) => Self::Cpu(format!(
                "no GPU adapter: {}",
                e.to_string().replace('\n', " ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::context::is_software_adapter;

    fn info(name: &str, driver: &str, device_type: wgpu::DeviceType) -> wgpu::AdapterInfo {
        let mut i = wgpu::AdapterInfo::new(device_type, wgpu::Backend::Vulkan);
        i.name = name.into();
        i.driver = driver.into();
        i
    }

    #[test]
    fn software_adapters_are_recognised_by_type_and_by_name() {
        use wgpu::DeviceType::*;
        let lavapipe = info("llvmpipe (LLVM 15.0.6, 256 bits)", "llvmpipe", Cpu);
        assert!(is_software_adapter(&lavapipe));
        // A driver that reports a software rasterizer as some other type.
        assert!(is_software_adapter(&info(
            "SwiftShader Device (Subzero)",
            "SwiftShader driver",
            Other
        )));
        assert!(is_software_adapter(&info(
            "Microsoft Basic Render Driver",
            "",
            IntegratedGpu
        )));
        assert!(!is_software_adapter(&info(
            "NVIDIA H200",
            "NVIDIA",
            DiscreteGpu
        )));
        assert!(!is_software_adapter(&info("Apple M2", "", IntegratedGpu)));
    }
}
