//! `wino_output.wgsl`: the Winograd F(m x m, 3x3) output transform with the conv's epilogue:
//! entry `main` for F(2x2), `f4` for F(4x4), `f4_wide` (a tile row of 4 tiles per invocation,
//! maps 13 to 16 wide) and `f4_chain` (the output transform and the next conv's input
//! transform in one dispatch, where the plan chains them: [`chains`]).

use repvgg_math::winograd::Tile;

use super::layer::{At, Bind, Layer, Run, epilogue_only};
use super::{ConvEpilogue, DispatchSpec, EpilogueTerms, linear_grid, params, u, wino_input};
use crate::error::Result;
use crate::shader::{PipelineKey, Shader};

params! {
    /// `wino_output.wgsl`.
    WinoOutputParams for Shader::WinogradOutput => { total, c, oh, ow, th, tw, flags, _pad0 }
}

/// Invocations per workgroup (`WG` in the WGSL).
const WG: usize = 64;
/// Invocations per workgroup of `f4_wide` (`WIDE_WG`).
const WIDE_WG: usize = 16;
/// Invocations per workgroup of `f4_chain`.
const CHAIN_WG: usize = 8;

/// Whether the F(4x4) output transform of a map `tw` tiles wide with planes of `plane` values
/// runs a tile row of 4 tiles per invocation (`f4_wide`, loading the 4 tiles' products and
/// storing their 4 whole output rows as vec4s): where a row is 4 tiles (13 to 16 wide), the
/// planes are a multiple of 4 values and there is no residual.
pub(crate) fn wide(tile: Tile, tw: usize, plane: usize, residual: bool) -> bool {
    tile == Tile::F4 && tw == 4 && plane.is_multiple_of(4) && !residual
}

/// Whether an F(4x4) output transform into an `oh` x `ow` map and the next conv's F(4x4) input
/// transform of it run as one dispatch (`f4_chain`, one invocation per plane, the map never
/// stored): maps of 4 x 4 tiles (13 to 16 each way) whose planes are whole vec4s. The plan also
/// asks that the map go nowhere else and that no residual be added.
pub(crate) fn chains(tile: Tile, oh: usize, ow: usize) -> bool {
    tile == Tile::F4 && oh.div_ceil(4) == 4 && ow.div_ceil(4) == 4 && (oh * ow).is_multiple_of(4)
}

/// The output transform into a `y` = `[n, c, oh, ow]` map chained with the next conv's input
/// transform of it ([`chains`]); the epilogue has no residual.
pub(crate) fn chain(y: [usize; 4], ep: ConvEpilogue, max_dim: u32) -> Result<DispatchSpec> {
    let [n, c, oh, ow] = y;
    let p = WinoOutputParams {
        total: u(n * c * 16),
        c: u(c),
        oh: u(oh),
        ow: u(ow),
        th: 4,
        tw: 4,
        flags: ConvEpilogue {
            residual: false,
            ..ep
        }
        .flags(),
        ..WinoOutputParams::default()
    };
    let mut k = PipelineKey::new(Shader::WinogradOutput).constant("W", u(ow));
    k.entry = "f4_chain";
    Ok(DispatchSpec::new(
        k,
        &p,
        linear_grid(n * c, CHAIN_WG, max_dim)?,
    ))
}

/// The output transform into a `y` = `[n, c, oh, ow]` output, with the conv's epilogue.
pub(crate) fn dispatch(
    y: [usize; 4],
    tile: Tile,
    ep: ConvEpilogue,
    max_dim: u32,
) -> Result<DispatchSpec> {
    let [n, c, oh, ow] = y;
    let (th, tw) = (oh.div_ceil(tile.m()), ow.div_ceil(tile.m()));
    let total = n * c * th * tw;
    let p = WinoOutputParams {
        total: u(total),
        c: u(c),
        oh: u(oh),
        ow: u(ow),
        th: u(th),
        tw: u(tw),
        flags: ep.flags(),
        ..WinoOutputParams::default()
    };
    let mut key = PipelineKey::new(Shader::WinogradOutput);
    let (invocations, wg) = if wide(tile, tw, oh * ow, ep.residual) {
        key = key.constant("W", u(ow));
        key.entry = "f4_wide";
        (total / 4, WIDE_WG)
    } else {
        key.entry = wino_input::entry(tile);
        (total, WG)
    };
    Ok(DispatchSpec::new(
        key,
        &p,
        linear_grid(invocations, wg, max_dim)?,
    ))
}

/// The Winograd output transform of a conv's products into the shape of the conv's input
/// `like` (stride 1, padding 1: the same height and width), then the conv's epilogue.
#[derive(Clone, Debug)]
pub(crate) struct WinoOutput {
    pub like: usize,
    pub tile: Tile,
    /// The conv's epilogue terms; the residual is the tensor `residual`.
    pub terms: EpilogueTerms,
    pub residual: Option<usize>,
}

impl Layer for WinoOutput {
    fn name(&self) -> &'static str {
        match self.tile {
            Tile::F2 => "winograd f2 output",
            Tile::F4 => "winograd f4 output",
        }
    }

    fn reads(&self) -> Option<usize> {
        self.residual
    }

    fn out_shape(&self, at: &At<'_>) -> Result<[usize; 4]> {
        let [n, _, h, w] = at.shapes[self.like];
        let c = at.x_shape()[1] / self.tile.positions();
        at.check_residual(self.residual, [n, c, h, w])
    }

    fn dispatch(&self, at: &At<'_>, run: &Run<'_>) -> Result<DispatchSpec> {
        let max_dim = run.caps.max_workgroups;
        if run.chained {
            chain(at.y_shape(), self.terms.with(self.residual), max_dim)
        } else {
            dispatch(
                at.y_shape(),
                self.tile,
                self.terms.with(self.residual),
                max_dim,
            )
        }
    }

    fn bindings(&self, at: &At<'_>, key: &PipelineKey, next_y: Option<usize>) -> Vec<(u32, Bind)> {
        match (key.entry, next_y) {
            // f4_chain reads the products through m4 (6) and writes the next step's output
            // (the next conv's transformed input) through v4 (8).
            ("f4_chain", Some(next)) => vec![
                (0, Bind::Params),
                (6, Bind::Tensor(at.x)),
                (2, Bind::Scale),
                (3, Bind::Bias),
                (8, Bind::Tensor(next)),
            ],
            // f4_wide reads through m4 (6), writes through y4 (7), has no residual.
            ("f4_wide", _) => vec![
                (0, Bind::Params),
                (6, Bind::Tensor(at.x)),
                (2, Bind::Scale),
                (3, Bind::Bias),
                (7, Bind::Tensor(at.y)),
            ],
            _ => epilogue_only(at, self.residual),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tile row per invocation only for F(4x4) on maps of 4 tile columns whose planes are
    /// whole vec4s, without a residual: A0's 14x14 maps.
    #[test]
    fn wide_output_transform_on_rows_of_four_tiles() {
        assert!(wide(Tile::F4, 4, 14 * 14, false));
        assert!(wide(Tile::F4, 4, 16 * 13, false));
        assert!(!wide(Tile::F4, 4, 14 * 14, true));
        assert!(!wide(Tile::F4, 4, 13 * 13, false));
        assert!(!wide(Tile::F4, 8, 32 * 32, false));
        assert!(!wide(Tile::F4, 7, 28 * 28, false));
        assert!(!wide(Tile::F2, 4, 8 * 8, false));
    }

    #[test]
    fn chains_take_maps_of_four_by_four_tiles_with_whole_vec4_planes() {
        assert!(chains(Tile::F4, 14, 14) && chains(Tile::F4, 13, 16));
        assert!(!chains(Tile::F4, 13, 13) && !chains(Tile::F4, 28, 28));
        assert!(!chains(Tile::F4, 12, 12) && !chains(Tile::F2, 14, 14));
    }
}
