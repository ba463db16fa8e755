//! The crate's only `unsafe` code, two wgpu calls:
//!
//! * shader modules created without runtime bounds checks
//!   ([`wgpu::Device::create_shader_module_trusted`]) for the shaders whose every index is
//!   proven in range ([`bounds_proof`]); the others keep wgpu's checks;
//! * a [`wgpu::PipelineCache`] persisted in the user's cache directory
//!   ([`wgpu::Device::create_pipeline_cache`]), fed only bytes that a previous
//!   [`wgpu::PipelineCache::get_data`] returned for the same adapter, as checked by a header
//!   and a CRC-32 of our own (`checked_file`); anything else (missing, truncated, corrupt, another adapter's) is
//!   ignored and the cache starts empty.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::checked_file;
use crate::precision::Precision;
use crate::shader::Shader;

/// The part of both subgroup convolutions' arguments that is about their shared tile.
macro_rules! subgroup_tile_proof {
    () => {
        "acc: CH4 * q + j with j < CH4 <= 3 and q < R * NBW, R * NBW * CH4 <= 64 \
         (subgroup_tile); wk: 3 * (ky * 3 + kx) + j <= 26 and 3 * u + j <= 11; ep_s/ep_b[j], \
         j < CH4 <= 3; x: coordinates clamped into the image, img clamped to n - 1, \
         ci < cin_g; texture: m0/4 + j < m_pad/4 for j < CH4 (m0 a multiple of 4 * CH4 below \
         m_pad, a multiple of 4 * CH4 * SG) and row < groups * cin_g * KS * KS; y/residual: \
         only where img < n, oy < oh, ox < ow and m < cout_g; scale/bias only for m < cout_g \
         when flagged; y4 (VEC): pixel groups of 4 only where the group's first pixel is \
         inside the output, rows and planes multiples of 4; "
    };
}

/// Why every index `shader` computes is in range for the buffers, textures and arrays it is
/// bound to by this crate, or `None` where the shader keeps wgpu's runtime checks.
///
/// The arguments count elements, so they hold for the f16 form of a shader too: its buffers
/// hold the same number of elements (`Precision::buffer_bytes` rounds up, never down), and the
/// f16 kernel tests run the same NaN-filled random and A0 shapes.
///
/// The arguments rely on what the Rust side guarantees: parameters from `kernels::*::dispatch`,
/// buffers sized from the same shapes (`plan`), an optional scale/bias/residual read only when
/// its flag says it is bound. The kernel tests back them: every trusted kernel runs on random
/// shapes (edges: 1x1 images, odd sizes, groups, batch > 1, channel counts just past a tile)
/// and A0's real layer shapes into NaN-filled outputs and is compared with an f64 oracle.
pub(crate) fn bounds_proof(shader: Shader) -> Option<&'static str> {
    match shader {
        Shader::ConvGemm => Some(
            "weights: a_base + (k0 + kk) * m_pad/4 + ia % bm4 with g < groups, k0 + kk < k_pad \
             and m0/4 + ia % bm4 < m_pad/4 (m0 < m_pad, a multiple of BM), inside the \
             groups * k_pad * m_pad upload; x: only read where 0 <= iy < h and 0 <= ix < w, \
             with ci < cin_g (k < k_total) and img clamped to n - 1; a_tile/b_tile: \
             kk * bm4 + ty + i * WY < 16 * bm4 <= 512 (WY <= 16, TMV <= 2), likewise for B; \
             acc: 4 * TMV * TNV <= 16; y/residual: only where q < n * oh * ow and m < cout_g; \
             scale/bias[oc] with oc < cout, only when flagged; k0 < k_end <= k_pad for every \
             slice; partial (split-K only, flagged): slice * n * cout * ohw + idx with \
             slice < slices (wid.z < m_tiles * groups * slices) and idx < n * cout * ohw, inside \
             the slices * n * cout * ohw scratch binding; reduce: i < total = n * cout * ohw \
             (y, residual), partial[s * total + i] with s < splits (the scratch holds splits * \
             total), scale/bias[oc] with oc = (i / ohw) % cout < cout, only when flagged",
        ),
        // The tile (common/conv_subgroup_tile.wgsl) is the same in both; each adds its loads.
        Shader::ConvSubgroupDirect => Some(concat!(
            subgroup_tile_proof!(),
            "seg: t * 9 + j with t < (R - 1) * STRIDE + KS <= 9 (subgroup_tile) and j <= 8, \
             and e / SG <= ((NBW - 1) * STRIDE + KS - 1) / SG <= 64 / 8; x4 (VROW): row and \
             column clamped into the plane (columns to at most w - 4, w a multiple of 4); \
             segq[i / SG] with i < ((R - 1) * STRIDE + KS) * row_quads <= 20 * SG \
             (subgroup_loads_row_quads); x4 (VBLK): clamped to [0, arrayLength - 1], \
             segq[f / 4 / SG] with f < off + ((R - 1) * STRIDE + KS) * VBLK <= 80 * SG \
             (subgroup_loads_row_block)",
        )),
        Shader::ConvSubgroupFlat => Some(concat!(
            subgroup_tile_proof!(),
            "the map dispatched as a 1 x (h * w) row (R = KS = STRIDE = 1, no padding) \
             addresses the same elements as the 2-D map; seg: u * 9 + j with u < KU <= 4 and \
             j <= 3; x4 (VLD): channel ci + l * VLD + c < ci + KU <= cin_g (KU divides \
             cin_g), column clamped to at most w - 4 in a plane of a multiple of 4; segv[l], \
             l < 4",
        )),
        Shader::Affine => Some(
            "i < total = n * c * hw, the length of x, y and residual; c = (i / hw) % c indexes \
             the c-long scale and shift (bound as the epilogue's bias)",
        ),
        Shader::ChannelScale => {
            Some("i < total = n * c * hw, the length of x and y; i / hw < n * c, the length of s")
        }
        Shader::GlobalAvgPool => Some(
            "per row: row < rows = n * c and i < hw, so x[row * hw + i] < n * c * hw and y[row] \
             < n * c; per workgroup: the same, and partial[lid + stride] with lid < stride <= 32 \
             of 64",
        ),
        Shader::Linear => Some(
            "i < batch * out4, so n < batch and o4 < out4; x[n * in_f + k] with k < in_f (the \
             plan checks in_f = C * H * W); wt[k * out4 + o4] < in_f * out4, the padded \
             transposed upload; bias[o] and y[n * out_f + o] only for o < out_f",
        ),
        Shader::WinogradInput => Some(
            "i < total = n * c * th * tw; x only where 0 <= iy < h and 0 <= ix < w of plane \
             i / tiles < n * c; r[j] with j < 4, bd[a][j] and row[b] with a, b, j < 6; v (P = 16 \
             for main, 36 for f4): (img * P * c + ci) * tiles + t + (P - 1) * c * tiles \
             < n * P * c * tiles, the [n, P c, th, tw] output the entry's tile sizes; \
             f4_wide: 4 i < total, v4 at (that index for the invocation's first tile) / 4, \
             tiles a multiple of 4; x4 (W > 0) clamped to [0, arrayLength - 1], wide_q[k] with \
             k < (3 + 6 W + 3) / 4 <= 25 (W <= 16)",
        ),
        Shader::WinogradOutput => Some(
            "i < total = n * c * th * tw; m (P = 16 for main, 36 for f4): \
             (img * P * c + co) * tiles + t + (P - 1) * c * tiles < n * P * c * tiles, the \
             grouped 1x1 conv's output; am[a] with a < 6, col[r] with r < 4; y/residual: \
             plane * oh * ow + oy * ow + ox only where oy < oh and ox < ow (oy = m ty < oh \
             since th = ceil(oh / m)); scale/bias[co], co < c, when flagged; f4_wide (tw = 4, \
             planes of whole vec4s): 4 i < total; m4: o4 + 35 * c * th < n * 36 * c * th, the \
             products in vec4s; y4: (plane * oh * W + 4 ty * W) / 4 + q with q < W, only where \
             the quad's last row 4 ty + (4 q + 3) / W < oh; f4_chain (4 x 4 tiles, planes of \
             whole vec4s): plane < n * c (16 plane < total); m4 and v4: (img * 36 * c + ch) * 4 \
             + ty + 35 * 4 c < n * 36 * c * 4, both [n, 36 c, 4, 4] in vec4s; chain_y[4 row + \
             col / 4] only for 0 <= row, col < 16",
        ),
        // Baselines, kept with every runtime check.
        Shader::ConvTiled | Shader::ConvNaive => None,
    }
}

/// The module of `shader`: without runtime bounds checks when `trusted` and [`bounds_proof`]
/// has an argument for it, else with every check.
pub(crate) fn shader_module(
    device: &wgpu::Device,
    shader: Shader,
    precision: Precision,
    trusted: bool,
) -> wgpu::ShaderModule {
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(shader.file_name()),
        source: wgpu::ShaderSource::Wgsl(shader.source_for(precision)),
    };
    if !trusted || bounds_proof(shader).is_none() {
        return device.create_shader_module(desc);
    }
    let mut checks = wgpu::ShaderRuntimeChecks::checked();
    checks.bounds_checks = false;
    // SAFETY: only bounds checks are dropped (loop bounding, division checks stay), and only
    // for a shader whose every index `bounds_proof` argues in range for the bindings this crate
    // gives it; the kernel tests (random shapes and edges, NaN-filled outputs, f64 oracle)
    // exercise exactly those bindings.
    unsafe { device.create_shader_module_trusted(desc, checks) }
}

/// The pipeline cache file's magic and format version.
const MAGIC: &[u8; 8] = b"RVGGPLC1";
/// Largest pipeline cache file read back.
const MAX_FILE: u64 = 1 << 30;

/// A pipeline cache backed by one file.
#[derive(Debug)]
pub(crate) struct DiskCache {
    pub cache: wgpu::PipelineCache,
    path: PathBuf,
    /// CRC of what the file holds now (to skip rewriting the same bytes).
    saved: Mutex<Option<u32>>,
}

impl DiskCache {
    /// The cache for `info`'s adapter in `dir`, seeded from its file when that file is intact;
    /// `None` when the device lacks `PIPELINE_CACHE` or wgpu has no cache key for the backend
    /// (only Vulkan has one).
    pub fn open(device: &wgpu::Device, info: &wgpu::AdapterInfo, dir: &Path) -> Option<Self> {
        if !device.features().contains(wgpu::Features::PIPELINE_CACHE) {
            return None;
        }
        let key = wgpu::util::pipeline_cache_key(info)?;
        let path = dir.join(format!("{key}.bin"));
        let file = checked_file::read(MAGIC, &path, MAX_FILE);
        let data = file.as_deref();
        let saved = data.map(crc32fast::hash);
        // SAFETY: `data` is either `None` or bytes that passed `checked_file::decode`: our
        // header, the exact length and the CRC-32 of what `save` wrote, and `save` writes only
        // what `PipelineCache::get_data` returned; the file name is wgpu's `pipeline_cache_key` of
        // this adapter, and wgpu checks its own header (adapter key, version) again, falling
        // back to an empty cache (`fallback: true`) when the data is not for this device.
        let cache = unsafe {
            device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                label: Some("repvgg pipeline cache"),
                data,
                fallback: true,
            })
        };
        Some(Self {
            cache,
            path,
            saved: Mutex::new(saved),
        })
    }

    /// Where the cache lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the cache's data when it changed since the last save (through a temporary file
    /// renamed over the old one, so a reader never sees half a file). Returns whether it wrote.
    pub fn save(&self) -> std::io::Result<bool> {
        let Some(data) = self.cache.get_data() else {
            return Ok(false);
        };
        let crc = crc32fast::hash(&data);
        let mut saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        if *saved == Some(crc) {
            return Ok(false);
        }
        checked_file::write(MAGIC, &self.path, &data)?;
        *saved = Some(crc);
        Ok(true)
    }
}
