//! Getting a device: adapter selection, device creation, adapter info, error scopes and the
//! pipeline cache.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::error::{GpuError, Result};
use crate::options::ContextOptions;
use crate::precision::Precision;
use crate::shader::{PipelineKey, Shader};
use crate::trusted::{self, DiskCache};

/// The backends this crate runs on. GL is never used: its compute support is too limited and a
/// silent fall-back to it would hide a missing Vulkan driver.
pub const SUPPORTED_BACKENDS: wgpu::Backends = wgpu::Backends::VULKAN
    .union(wgpu::Backends::METAL)
    .union(wgpu::Backends::DX12);

/// A device and its queue, with what this crate caches per device (pipelines, shader modules).
///
/// Cheap to clone: clones share the device and the caches.
#[derive(Clone)]
pub struct GpuContext {
    inner: Arc<Inner>,
}

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    lost: Arc<Mutex<Option<String>>>,
    modules: Mutex<HashMap<(Shader, Precision), wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    /// Runtime bounds checks in every shader (else dropped where proven unneeded).
    runtime_checks: bool,
    disk_cache: Option<DiskCache>,
    /// Where this crate's caches live (`ContextOptions::pipeline_cache_dir`).
    cache_dir: Option<std::path::PathBuf>,
    /// A pipeline was built since the disk cache was last saved.
    unsaved: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(c) = &self.disk_cache
            && self.unsaved.load(Ordering::Relaxed)
        {
            // Best effort: a cache that cannot be written costs start-up time, nothing else.
            let _ = c.save();
        }
    }
}

impl fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .finish_non_exhaustive()
    }
}

/// What an adapter is and what it can do: printed by `repvgg info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Adapter name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub name: String,
    /// Backend API: `vulkan`, `metal` or `dx12`.
    pub backend: String,
    /// Driver name, e.g. `llvmpipe`.
    pub driver: String,
    /// Driver version details.
    pub driver_info: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `Cpu`, ...
    pub device_type: String,
    /// Features enabled on the device (wgpu names).
    pub features: Vec<String>,
    /// Largest storage-buffer binding, bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer, bytes.
    pub max_buffer_size: u64,
    /// Workgroup shared memory, bytes.
    pub max_compute_workgroup_storage_size: u32,
    /// Invocations per workgroup.
    pub max_compute_invocations_per_workgroup: u32,
    /// Workgroups per dispatch dimension.
    pub max_compute_workgroups_per_dimension: u32,
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "adapter:      {}", self.name)?;
        writeln!(f, "backend:      {}", self.backend)?;
        writeln!(f, "device type:  {}", self.device_type)?;
        writeln!(f, "driver:       {} ({})", self.driver, self.driver_info)?;
        writeln!(f, "features:     {}", self.features.join(", "))?;
        writeln!(
            f,
            "limits:       storage binding {} MiB, buffer {} MiB, workgroup storage {} KiB, \
             {} invocations/workgroup, {} workgroups/dimension",
            self.max_storage_buffer_binding_size >> 20,
            self.max_buffer_size >> 20,
            self.max_compute_workgroup_storage_size >> 10,
            self.max_compute_invocations_per_workgroup,
            self.max_compute_workgroups_per_dimension
        )
    }
}

/// Whether `REPVGG_REQUIRE_GPU=1` asks GPU tests to fail, not skip, when there is no adapter.
pub fn require_gpu_from_env() -> bool {
    std::env::var("REPVGG_REQUIRE_GPU").is_ok_and(|v| v.trim() == "1")
}

/// The context GPU tests use: `Some` with a device, or `None` after printing why the test is
/// skipped.
///
/// All callers in one process share one device (created on the first call), so pipelines
/// compiled by one test serve the others. A test that must own its device (e.g. to destroy it)
/// calls [`GpuContext::new`] after this returned `Some`.
///
/// # Panics
/// When `REPVGG_REQUIRE_GPU=1` and no device can be created, so that CI fails instead of
/// silently skipping every GPU test.
#[doc(hidden)]
pub fn test_context() -> Option<GpuContext> {
    static SHARED: OnceLock<Result<GpuContext, String>> = OnceLock::new();
    match SHARED.get_or_init(|| GpuContext::new().map_err(|e| e.to_string())) {
        Ok(ctx) => Some(ctx.clone()),
        Err(e) if require_gpu_from_env() => {
            panic!("REPVGG_REQUIRE_GPU=1 but no GPU context could be created: {e}")
        }
        Err(e) => {
            eprintln!("skipping GPU test: {e}");
            None
        }
    }
}

fn backends_from_env() -> Result<wgpu::Backends> {
    let Some(requested) = wgpu::Backends::from_env() else {
        return Ok(SUPPORTED_BACKENDS);
    };
    let usable = requested & SUPPORTED_BACKENDS;
    if usable.is_empty() {
        return Err(GpuError::NoAdapter {
            detail: format!(
                ": WGPU_BACKEND={:?} names no backend this crate runs on (vulkan, metal, dx12)",
                std::env::var("WGPU_BACKEND").unwrap_or_default()
            ),
        });
    }
    Ok(usable)
}

async fn select_adapter(
    instance: &wgpu::Instance,
    backends: wgpu::Backends,
    wanted: Option<&str>,
) -> Result<wgpu::Adapter> {
    if let Some(wanted) = wanted {
        let wanted_lc = wanted.to_lowercase();
        let adapters = instance.enumerate_adapters(backends).await;
        let seen: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?})", i.name, i.backend)
            })
            .collect();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&wanted_lc))
            .ok_or_else(|| GpuError::NoAdapter {
                detail: format!(
                    ": the adapter name {wanted:?} (from WGPU_ADAPTER_NAME or the requested \
                     device) matches none of [{}]",
                    seen.join(", ")
                ),
            });
    }
    let power_preference =
        wgpu::PowerPreference::from_env().unwrap_or(wgpu::PowerPreference::HighPerformance);
    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference,
            ..Default::default()
        })
        .await
        .map_err(|e| GpuError::NoAdapter {
            detail: format!(" for backends {backends:?}: {e}"),
        })
}

impl GpuContext {
    /// Picks an adapter and creates a device on it.
    ///
    /// `WGPU_BACKEND` (e.g. `vulkan`) restricts the backends, `WGPU_ADAPTER_NAME` picks the first
    /// adapter whose name contains the given substring (case-insensitive), `WGPU_POWER_PREF`
    /// overrides the default high-performance preference. The GL backend is never used.
    ///
    /// # Errors
    /// [`GpuError::NoAdapter`] when no adapter matches (with a hint on how to get one),
    /// [`GpuError::RequestDevice`] when the adapter refuses the device.
    ///
    /// The options come from [`ContextOptions::from_env`] (`REPVGG_PIPELINE_CACHE`,
    /// `REPVGG_SHADER_CHECKS`).
    pub fn new() -> Result<Self> {
        Self::with_options(&ContextOptions::from_env())
    }

    /// [`GpuContext::new`] with explicit options.
    ///
    /// # Errors
    /// As [`GpuContext::new`].
    pub fn with_options(options: &ContextOptions) -> Result<Self> {
        pollster::block_on(Self::new_async(options))
    }

    async fn new_async(options: &ContextOptions) -> Result<Self> {
        let backends = backends_from_env()?;
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends,
            flags: wgpu::InstanceFlags::from_build_config().with_env(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapter = select_adapter(&instance, backends, options.adapter_name.as_deref()).await?;
        let info = adapter.get_info();
        if !SUPPORTED_BACKENDS.contains(wgpu::Backends::from(info.backend)) {
            return Err(GpuError::NoAdapter {
                detail: format!(
                    ": only a {:?} adapter ({}) was found",
                    info.backend, info.name
                ),
            });
        }
        let wanted = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP
            | wgpu::Features::PIPELINE_CACHE;
        let features = adapter.features() & wanted;
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("repvgg-gpu"),
                required_features: features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            })?;
        let lost = Arc::new(Mutex::new(None));
        let lost_cb = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            *lost_cb.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(format!("{reason:?}: {message}"));
        });
        // Every call of ours runs inside error scopes; anything else is reported, not panicked on.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            eprintln!("repvgg-gpu: uncaptured wgpu error: {e}");
        }));
        Ok(Self::build(device, queue, info, limits, lost, options))
    }

    /// Wraps a device that an application already owns (e.g. eframe's).
    ///
    /// `limits` must be the limits the device was created with. The application's error and
    /// device-lost handlers are left alone; this crate's calls still run inside error scopes.
    /// Options come from [`ContextOptions::from_env`]; the pipeline cache is persisted only when
    /// the device has [`wgpu::Features::PIPELINE_CACHE`].
    pub fn from_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        limits: wgpu::Limits,
    ) -> Self {
        let options = ContextOptions::from_env();
        Self::build(
            device,
            queue,
            info,
            limits,
            Arc::new(Mutex::new(None)),
            &options,
        )
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        limits: wgpu::Limits,
        lost: Arc<Mutex<Option<String>>>,
        options: &ContextOptions,
    ) -> Self {
        let disk_cache = options
            .pipeline_cache_dir
            .as_deref()
            .and_then(|dir| DiskCache::open(&device, &info, dir));
        Self {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                limits,
                lost,
                modules: Mutex::new(HashMap::new()),
                pipelines: Mutex::new(HashMap::new()),
                runtime_checks: options.runtime_checks,
                disk_cache,
                cache_dir: options.pipeline_cache_dir.clone(),
                unsaved: AtomicBool::new(false),
            }),
        }
    }

    /// The device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// The device's limits.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// The adapter's own description.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// Name, backend, driver, features and key limits.
    pub fn info(&self) -> AdapterSummary {
        let i = &self.inner.info;
        let l = &self.inner.limits;
        AdapterSummary {
            name: i.name.clone(),
            backend: i.backend.to_str().to_string(),
            driver: i.driver.clone(),
            driver_info: i.driver_info.clone(),
            device_type: format!("{:?}", i.device_type),
            features: self
                .inner
                .device
                .features()
                .iter_names()
                .map(|(n, _)| n.to_string())
                .collect(),
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
            max_buffer_size: l.max_buffer_size,
            max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
        }
    }

    /// `name (backend, device type)`, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) (vulkan, Cpu)`.
    pub fn describe(&self) -> String {
        let i = &self.inner.info;
        format!("{} ({}, {:?})", i.name, i.backend.to_str(), i.device_type)
    }

    /// Whether the adapter is a software implementation on the CPU (see [`is_software_adapter`]).
    pub fn is_software(&self) -> bool {
        is_software_adapter(&self.inner.info)
    }

    /// Whether the device has `shader-f16` enabled.
    pub fn has_f16(&self) -> bool {
        self.inner
            .device
            .features()
            .contains(wgpu::Features::SHADER_F16)
    }

    /// Whether the subgroup convolutions (`conv_subgroup_direct.wgsl`, `conv_subgroup_flat.wgsl`)
    /// can run: the device has subgroup operations and every subgroup has at least 8
    /// invocations.
    pub fn has_subgroups_of_8(&self) -> bool {
        self.inner
            .device
            .features()
            .contains(wgpu::Features::SUBGROUP)
            && self.inner.info.subgroup_min_size >= 8
    }

    /// Whether GPU timestamps can be written at pass boundaries.
    pub fn has_timestamps(&self) -> bool {
        self.inner
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// The file of the persisted pipeline cache, when there is one (see [`ContextOptions`]).
    pub fn pipeline_cache_path(&self) -> Option<&Path> {
        self.inner.disk_cache.as_ref().map(DiskCache::path)
    }

    /// The directory of this crate's caches, the pipeline cache and the tuning cache
    /// ([`ContextOptions::pipeline_cache_dir`]), when they are persisted.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.inner.cache_dir.as_deref()
    }

    /// Writes the pipeline cache to its file when pipelines were built since the last save
    /// (also done when a network prepares a new shape, and when the last clone is dropped).
    /// Returns whether it wrote.
    ///
    /// # Errors
    /// The file system's error; the cache in memory stays usable.
    pub fn save_pipeline_cache(&self) -> std::io::Result<bool> {
        match &self.inner.disk_cache {
            Some(c) if self.inner.unsaved.swap(false, Ordering::Relaxed) => c.save(),
            _ => Ok(false),
        }
    }

    /// Fails with [`GpuError::DeviceLost`] once the device-lost callback has fired.
    pub(crate) fn check_lost(&self) -> Result<()> {
        let lost = self
            .inner
            .lost
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match lost.as_ref() {
            Some(reason) => Err(GpuError::DeviceLost(reason.clone())),
            None => Ok(()),
        }
    }

    /// Runs `f` inside out-of-memory, internal and validation error scopes and turns what they
    /// caught into a [`GpuError`] naming `context`.
    pub(crate) fn scoped<T>(&self, context: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check_lost()?;
        let device = &self.inner.device;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let validation = pollster::block_on(validation.pop());
        let internal = pollster::block_on(internal.pop());
        let oom = pollster::block_on(oom.pop());
        if let Some(e) = oom.or(validation).or(internal) {
            self.check_lost()?;
            return Err(GpuError::from_wgpu(context, e));
        }
        out
    }

    /// Waits for all submitted work, mapping a lost device or a timeout to an error.
    pub(crate) fn wait(&self) -> Result<()> {
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::DeviceLost(format!("waiting for the queue: {e}")))?;
        self.check_lost()
    }

    /// The cached compute pipeline for `key`, built on first use.
    pub(crate) fn pipeline(&self, key: &PipelineKey) -> Result<wgpu::ComputePipeline> {
        {
            let cache = self
                .inner
                .pipelines
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(p) = cache.get(key) {
                return Ok(p.clone());
            }
        }
        let module = self.module(key.shader, key.precision)?;
        let constants: Vec<(&str, f64)> = key
            .constants
            .iter()
            .map(|(name, v)| (*name, f64::from(*v)))
            .collect();
        let pipeline = self.scoped(&format!("building pipeline {key:?}"), || {
            Ok(self
                .inner
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(key.shader.file_name()),
                    layout: None,
                    module: &module,
                    entry_point: Some(key.entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &constants,
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: self.inner.disk_cache.as_ref().map(|c| &c.cache),
                }))
        })?;
        self.inner.unsaved.store(true, Ordering::Relaxed);
        let mut cache = self
            .inner
            .pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(cache.entry(key.clone()).or_insert(pipeline).clone())
    }

    fn module(&self, shader: Shader, precision: Precision) -> Result<wgpu::ShaderModule> {
        {
            let cache = self
                .inner
                .modules
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(m) = cache.get(&(shader, precision)) {
                return Ok(m.clone());
            }
        }
        let what = format!("compiling {} ({precision})", shader.file_name());
        let module = self.scoped(&what, || {
            Ok(trusted::shader_module(
                &self.inner.device,
                shader,
                precision,
                !self.inner.runtime_checks,
            ))
        })?;
        let mut cache = self
            .inner
            .modules
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(cache.entry((shader, precision)).or_insert(module).clone())
    }
}

/// Whether an adapter is a software implementation running on the CPU (lavapipe/llvmpipe,
/// SwiftShader, WARP): wgpu reports [`wgpu::DeviceType::Cpu`] for them, and the names are checked
/// too for drivers that report another type.
pub fn is_software_adapter(info: &wgpu::AdapterInfo) -> bool {
    let name = info.name.to_lowercase();
    let driver = info.driver.to_lowercase();
    info.device_type == wgpu::DeviceType::Cpu
        || [
            "llvmpipe",
            "lavapipe",
            "swiftshader",
            "microsoft basic render driver",
        ]
        .iter()
        .any(|s| name.contains(s) || driver.contains(s))
}
