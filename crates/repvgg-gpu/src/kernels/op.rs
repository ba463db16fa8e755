//! The layer kinds, one variant each: a new kind is a kernel file with its struct (implementing
//! [`Layer`]), its WGSL file, and a variant here.

use super::layer::Layer;
use super::{affine, channel_scale, conv, gap, linear, wino_input, wino_output};

/// One layer, by kind.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Conv(conv::Conv),
    Affine(affine::Affine),
    Gap(gap::Gap),
    Linear(linear::Linear),
    ChannelScale(channel_scale::ChannelScale),
    WinogradInput(wino_input::WinoInput),
    WinogradOutput(wino_output::WinoOutput),
}

impl Op {
    /// The layer behind the kind.
    pub fn layer(&self) -> &dyn Layer {
        match self {
            Op::Conv(l) => l,
            Op::Affine(l) => l,
            Op::Gap(l) => l,
            Op::Linear(l) => l,
            Op::ChannelScale(l) => l,
            Op::WinogradInput(l) => l,
            Op::WinogradOutput(l) => l,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags};
    use ndarray::Array4;
    use repvgg_math::winograd::Tile;
    use repvgg_math::{Activation, ConvSpec};

    use super::*;
    use crate::caps::Caps;
    use crate::kernels::EpilogueTerms;
    use crate::kernels::conv_kernel::ConvImpl;
    use crate::kernels::layer::{At, Bind, Run};
    use crate::kernels::{conv_gemm, conv_subgroup, conv_tiled};
    use crate::precision::Precision;
    use crate::shader::PipelineKey;

    /// The binding numbers the entry point of `key` uses, as naga reflects them (wgpu derives
    /// the pipeline's bind group layout from exactly these).
    fn used_bindings(key: &PipelineKey) -> BTreeSet<u32> {
        let source = key.shader.source_for(Precision::F32);
        let module = naga::front::wgsl::parse_str(&source).expect("parses");
        let info = naga::valid::Validator::new(
            ValidationFlags::all(),
            Capabilities::default() | Capabilities::SUBGROUP,
        )
        .subgroup_stages(ShaderStages::COMPUTE)
        .subgroup_operations(SubgroupOperationSet::all())
        .validate(&module)
        .expect("validates");
        let (index, _) = (module.entry_points.iter().enumerate())
            .find(|(_, e)| e.name == key.entry)
            .unwrap_or_else(|| panic!("{:?} has no entry {}", key.shader, key.entry));
        let uses = info.get_entry_point(index);
        (module.global_variables.iter())
            .filter(|(h, _)| !uses[*h].is_empty())
            .filter_map(|(_, v)| v.binding.as_ref().map(|b| b.binding))
            .collect()
    }

    /// Tensors: 0 the input, 1 the output, 2 a second input (residual, excitation, the
    /// Winograd output's `like`), 3 the output of a layer chained into this one.
    fn check(op: &Op, x: [usize; 4], extra: [usize; 4], conv: Option<ConvImpl>, chained: bool) {
        let caps = Caps::software_for_tests(16384);
        fn at(shapes: &[[usize; 4]]) -> At<'_> {
            At {
                layer: 0,
                x: 0,
                y: 1,
                shapes,
                input_hw: (shapes[0][2], shapes[0][3]),
            }
        }
        let mut shapes = vec![x, [0; 4], extra, [1, 1, 1, 1]];
        let layer = op.layer();
        shapes[1] = layer.out_shape(&at(&shapes)).expect("shape");
        let run = Run {
            caps: &caps,
            chained,
            conv: conv.as_ref(),
        };
        let spec = layer.dispatch(&at(&shapes), &run).expect("dispatch");
        let next_y = chained.then_some(3);
        let passes = std::iter::once((&spec.key, layer.bindings(&at(&shapes), &spec.key, next_y)))
            .chain(
                spec.then
                    .as_deref()
                    .map(|s| (&s.key, layer.second_bindings(&at(&shapes)))),
            );
        for (key, binds) in passes {
            let what = format!("{op:?} as {key:?}");
            let numbers: BTreeSet<u32> = binds.iter().map(|(n, _)| *n).collect();
            assert_eq!(numbers.len(), binds.len(), "{what}: a binding twice");
            assert_eq!(
                numbers,
                used_bindings(key),
                "{what}: bindings vs the shader"
            );
            assert!(binds.contains(&(0, Bind::Params)), "{what}");
            let allowed: Vec<usize> = [0, 1]
                .into_iter()
                .chain(layer.reads())
                .chain(next_y)
                .collect();
            for (n, b) in &binds {
                if let Bind::Tensor(t) = b {
                    assert!(allowed.contains(t), "{what}: binding {n} is tensor {t}");
                }
            }
        }
    }

    /// Scale, bias and ReLU.
    const ALL_TERMS: EpilogueTerms = EpilogueTerms {
        scale: true,
        bias: true,
        relu: true,
    };

    fn conv_op(spec: ConvSpec, residual: bool) -> Op {
        Op::Conv(conv::Conv {
            spec,
            terms: ALL_TERMS,
            residual: residual.then_some(2),
        })
    }

    /// Every layer kind, on each of its kernels and entry points (the subgroup convs' load and
    /// store paths, split-K, the wide and chained Winograd transforms), binds exactly what its
    /// shader's entry point declares, its parameters at 0, and only the tensors it reads and
    /// writes.
    #[test]
    fn every_kind_binds_what_its_shader_uses() {
        let caps = Caps::software_for_tests(16384);
        let convs = [
            (ConvSpec::conv3x3(32, 48, 2, 1), [1, 32, 112, 112]),
            (ConvSpec::conv3x3(48, 48, 1, 1), [1, 48, 56, 56]),
            (ConvSpec::conv3x3(96, 96, 2, 1), [2, 96, 14, 14]),
            (ConvSpec::new(192, 192, 1, 1, 0, 1), [1, 192, 7, 7]),
            (ConvSpec::new(288, 288, 1, 1, 0, 36), [1, 288, 4, 4]),
            (ConvSpec::new(16, 24, 3, 1, 1, 2), [3, 16, 9, 11]),
        ];
        for (spec, x) in convs {
            let spec = spec.expect("spec");
            let w = Array4::<f32>::zeros(spec.weight_shape());
            let (oh, ow) = spec.output_size(x[2], x[3]).expect("output size");
            let y = [x[0], spec.out_channels, oh, ow];
            let imps = [
                ConvImpl::Naive,
                ConvImpl::Workgroup(conv_tiled::prepare(&spec, w.view()).0),
                ConvImpl::Gemm(conv_gemm::prepare(&spec, w.view(), false).0),
                ConvImpl::Gemm(conv_gemm::prepare(&spec, w.view(), true).0),
                ConvImpl::Subgroup(conv_subgroup::prepare(&spec, w.view(), &caps, None).0),
            ];
            for imp in imps {
                for residual in [false, true] {
                    check(&conv_op(spec, residual), x, y, Some(imp), false);
                }
            }
        }
        let x = [2, 8, 14, 14];
        let flat = [2, 8, 1, 1];
        for relu in [false, true] {
            for residual in [None, Some(2)] {
                let op = Op::Affine(affine::Affine { residual, relu });
                check(&op, x, x, None, false);
            }
            let op = Op::ChannelScale(channel_scale::ChannelScale { s: 2, relu });
            check(&op, x, flat, None, false);
        }
        check(&Op::Gap(gap::Gap), x, x, None, false);
        check(&Op::Gap(gap::Gap), [2, 8, 1, 3], x, None, false);
        for act in [Activation::None, Activation::Relu, Activation::Sigmoid] {
            for bias in [false, true] {
                let op = Op::Linear(linear::Linear {
                    in_f: 8 * 14 * 14,
                    out_f: 10,
                    bias,
                    act,
                });
                check(&op, x, x, None, false);
            }
        }
        // The transforms: F(2x2), F(4x4), wide rows of 4 tiles (14 and 16 wide), chained.
        for tile in [Tile::F2, Tile::F4] {
            for map in [[1, 8, 14, 14], [2, 8, 13, 16], [1, 8, 28, 28], [1, 8, 9, 7]] {
                check(
                    &Op::WinogradInput(wino_input::WinoInput { tile }),
                    map,
                    map,
                    None,
                    false,
                );
                let [n, c, h, w] = map;
                let m = tile.m();
                let products = [n, tile.positions() * c, h.div_ceil(m), w.div_ceil(m)];
                for residual in [None, Some(2)] {
                    let op = Op::WinogradOutput(wino_output::WinoOutput {
                        like: 2,
                        tile,
                        terms: ALL_TERMS,
                        residual,
                    });
                    check(&op, products, map, None, false);
                    let chains = wino_output::chains(tile, h, w);
                    if chains && residual.is_none() {
                        check(&op, products, map, None, true);
                    }
                }
            }
        }
    }
}
