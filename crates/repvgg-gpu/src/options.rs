//! How a [`crate::GpuContext`] is set up: the persisted pipeline cache and shader checks.

use std::path::PathBuf;

/// Options of [`crate::GpuContext::with_options`].
///
/// [`ContextOptions::default`] persists the pipeline cache in the user's cache directory
/// (`$XDG_CACHE_HOME/repvgg` or `~/.cache/repvgg` on Linux, `~/Library/Caches/repvgg` on macOS,
/// `%LOCALAPPDATA%\repvgg` on Windows) and drops runtime bounds checks from the shaders proven
/// not to need them. [`ContextOptions::from_env`] applies the environment on top.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextOptions {
    /// Directory of the persisted pipeline cache (one file per adapter); `None` turns the
    /// persisted cache off. Used where the backend has pipeline caches (Vulkan).
    pub pipeline_cache_dir: Option<PathBuf>,
    /// Keep wgpu's runtime bounds checks in every shader (for A/B runs and debugging).
    pub runtime_checks: bool,
    /// Take the first adapter whose name contains this text (case-insensitive); `None`: the
    /// adapter wgpu prefers. [`ContextOptions::from_env`] reads `WGPU_ADAPTER_NAME`.
    pub adapter_name: Option<String>,
}

impl Default for ContextOptions {
    fn default() -> Self {
        Self {
            pipeline_cache_dir: dirs::cache_dir().map(|d| d.join("repvgg")),
            runtime_checks: false,
            adapter_name: None,
        }
    }
}

impl ContextOptions {
    /// The defaults, then `REPVGG_PIPELINE_CACHE` (`off`, `0` or `false`: no persisted cache;
    /// anything else: the directory to keep it in), `REPVGG_SHADER_CHECKS=1` (keep every
    /// runtime check) and `WGPU_ADAPTER_NAME` (the adapter to take).
    pub fn from_env() -> Self {
        let mut o = Self::from_vars(
            std::env::var_os("REPVGG_PIPELINE_CACHE").map(PathBuf::from),
            std::env::var("REPVGG_SHADER_CHECKS").ok(),
        );
        o.adapter_name = std::env::var("WGPU_ADAPTER_NAME")
            .ok()
            .filter(|n| !n.trim().is_empty());
        o
    }

    fn from_vars(cache: Option<PathBuf>, checks: Option<String>) -> Self {
        let mut o = Self::default();
        if let Some(dir) = cache {
            let off = ["off", "0", "false", "no"]
                .iter()
                .any(|s| dir.as_os_str().eq_ignore_ascii_case(s));
            o.pipeline_cache_dir = if off || dir.as_os_str().is_empty() {
                None
            } else {
                Some(dir)
            };
        }
        if let Some(v) = checks {
            o.runtime_checks = matches!(v.trim(), "1" | "on" | "true" | "yes");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_turns_the_cache_off_or_moves_it_and_keeps_checks() {
        let d = ContextOptions::default();
        assert!(!d.runtime_checks);
        assert_eq!(ContextOptions::from_vars(None, None), d);
        for off in ["off", "OFF", "0", "false", ""] {
            let o = ContextOptions::from_vars(Some(off.into()), None);
            assert_eq!(o.pipeline_cache_dir, None, "{off:?}");
        }
        let o = ContextOptions::from_vars(Some("/tmp/x".into()), Some("1".into()));
        assert_eq!(o.pipeline_cache_dir, Some(PathBuf::from("/tmp/x")));
        assert!(o.runtime_checks);
        assert!(!ContextOptions::from_vars(None, Some("0".into())).runtime_checks);
    }
}
