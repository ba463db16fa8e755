//! `wino_input.wgsl`: the Winograd F(m x m, 3x3) input transform of a 3x3 stride-1 conv
//! (`repvgg_math::winograd`): entry `main` for F(2x2), `f4` for F(4x4), and `f4_wide`, 4 tiles
//! per invocation, for F(4x4) maps whose tile rows split into 4s.

use repvgg_math::winograd::Tile;

use super::layer::{At, Bind, Layer, Run, seq};
use super::{DispatchSpec, linear_grid, params, u};
use crate::error::Result;
use crate::shader::{PipelineKey, Shader};

params! {
    /// `wino_input.wgsl`.
    WinoInputParams for Shader::WinogradInput => { total, c, h, w, th, tw, _pad0, _pad1 }
}

/// Invocations per workgroup (`WG` in the WGSL).
const WG: usize = 64;
/// Invocations per workgroup of `f4_wide` (`WIDE_WG`).
const WIDE_WG: usize = 16;

/// Whether the F(4x4) input transform of a map `tw` tiles wide runs 4 tiles per invocation
/// (`f4_wide`, storing 4 tiles' values at once): where the tile rows split into 4s.
pub(crate) fn wide(tile: Tile, tw: usize) -> bool {
    tile == Tile::F4 && tw.is_multiple_of(4)
}

/// `W` of `f4_wide` for an `h` x `w` map `tw` tiles wide: `w` where each invocation's strip is
/// 6 whole rows (4 tiles a row, 13 to 16 wide) and the planes are whole vec4s, so that it loads
/// the strip as aligned quads; 0 (scalar loads) elsewhere.
pub(crate) fn wide_rows(tw: usize, h: usize, w: usize) -> usize {
    if tw == 4 && (h * w).is_multiple_of(4) {
        w
    } else {
        0
    }
}

/// The input transform of an `x` = `[n, c, h, w]` input.
pub(crate) fn dispatch(x: [usize; 4], tile: Tile, max_dim: u32) -> Result<DispatchSpec> {
    let [n, c, h, w] = x;
    let (th, tw) = (h.div_ceil(tile.m()), w.div_ceil(tile.m()));
    let total = n * c * th * tw;
    let p = WinoInputParams {
        total: u(total),
        c: u(c),
        h: u(h),
        w: u(w),
        th: u(th),
        tw: u(tw),
        ..WinoInputParams::default()
    };
    let mut key = PipelineKey::new(Shader::WinogradInput);
    let (invocations, wg) = if wide(tile, tw) {
        key = key.constant("W", u(wide_rows(tw, h, w)));
        key.entry = "f4_wide";
        (total / 4, WIDE_WG)
    } else {
        key.entry = entry(tile);
        (total, WG)
    };
    Ok(DispatchSpec::new(
        key,
        &p,
        linear_grid(invocations, wg, max_dim)?,
    ))
}

/// The entry point of both transforms' shaders for `tile`, one tile per invocation.
pub(crate) fn entry(tile: Tile) -> &'static str {
    match tile {
        Tile::F2 => "main",
        Tile::F4 => "f4",
    }
}

/// The Winograd input transform of a 3x3 stride-1 conv's input (the lowering pass puts it
/// before the conv's product).
#[derive(Clone, Debug)]
pub(crate) struct WinoInput {
    pub tile: Tile,
}

impl Layer for WinoInput {
    fn name(&self) -> &'static str {
        match self.tile {
            Tile::F2 => "winograd f2 input",
            Tile::F4 => "winograd f4 input",
        }
    }

    fn out_shape(&self, at: &At<'_>) -> Result<[usize; 4]> {
        let [n, c, h, w] = at.x_shape();
        let m = self.tile.m();
        Ok([n, self.tile.positions() * c, h.div_ceil(m), w.div_ceil(m)])
    }

    fn dispatch(&self, at: &At<'_>, run: &Run<'_>) -> Result<DispatchSpec> {
        dispatch(at.x_shape(), self.tile, run.caps.max_workgroups)
    }

    fn bindings(&self, at: &At<'_>, key: &PipelineKey, _: Option<usize>) -> Vec<(u32, Bind)> {
        if key.entry == "f4_wide" {
            // f4_wide writes through v4 (3), not v (2), and may read through x4 (4).
            vec![
                (0, Bind::Params),
                (1, Bind::Tensor(at.x)),
                (3, Bind::Tensor(at.y)),
                (4, Bind::Tensor(at.x)),
            ]
        } else {
            seq(&[Bind::Params, Bind::Tensor(at.x), Bind::Tensor(at.y)])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strips loaded as quads on A0's 14x14 maps, not on 13x13 (planes of 169) nor where a
    /// tile row is 8 tiles (an invocation's strip is then not whole rows).
    #[test]
    fn wide_input_loads_whole_row_strips_as_quads() {
        assert_eq!(wide_rows(4, 14, 14), 14);
        assert_eq!(wide_rows(4, 13, 16), 16);
        assert_eq!(wide_rows(4, 13, 13), 0);
        assert_eq!(wide_rows(8, 32, 32), 0);
    }

    /// 4 tiles per invocation only for F(4x4) on maps of 4, 8, ... tile columns (13 to 16,
    /// 29 to 32 ... wide).
    #[test]
    fn wide_input_transform_where_tile_rows_split_into_fours() {
        assert!(wide(Tile::F4, 4) && wide(Tile::F4, 8));
        assert!(!wide(Tile::F4, 7) && !wide(Tile::F4, 14));
        assert!(!wide(Tile::F2, 4));
    }
}
