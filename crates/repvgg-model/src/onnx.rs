//! ONNX export of the deployed (fused) network.
//!
//! The graph: per block `Conv` (3x3, bias, the block's stride and groups), for SE blocks
//! `GlobalAveragePool → Conv 1x1 → Relu → Conv 1x1 → Sigmoid → Mul`, then `Relu`; the head is
//! `GlobalAveragePool → Flatten → Gemm`. Input `input` `[N, C, H, W]` f32 with symbolic `N`, `H`, `W`;
//! output `logits` `[N, classes]`. Initializers are the fused f32 weights, named like timm's keys.
//! Model metadata records the architecture, the source checkpoint and timm's preprocessing.
//!
//! A quantized model ([`export_quantized`], [`crate::QuantizedModel`]) is written as ONNX QDQ,
//! the graph the int8 engine computes: `QuantizeLinear → DequantizeLinear` (uint8, the calibrated
//! scale and zero point) on the input; per conv `DequantizeLinear` of the INT8 weight
//! (per output channel, `axis = 0`) and of the INT32 bias (scale `input scale * weight scale`,
//! `axis = 0`), `Conv → Relu`, then `QuantizeLinear → DequantizeLinear` of the output (uint8,
//! zero point 0); the head (pool, flatten, `Gemm`) in f32 with the linear layer's weights the
//! engine's INT8 codes per class (`DequantizeLinear`, `axis = 0`), as it runs them. ONNX Runtime
//! folds these groups into its integer convs (`QLinearConv`).
//!
//! The protobuf messages are the subset of ONNX's published `onnx.proto` (onnx/onnx, `onnx.proto`,
//! proto2) that this export writes, declared with `prost` derives with the `.proto`'s field
//! numbers, so no `protoc` is needed at build time.

use std::path::Path;

use prost::Message;

use ndarray::ArrayView4;
use repvgg_math::{Activation, ConvSpec, Epilogue};

use crate::error::{ModelError, Result};
use crate::model::{DeployModel, Head, SqueezeExcite};
use crate::preprocess::PretrainedConfig;
use crate::quant::{QuantLayer, QuantizedModel};
use crate::walk::{Layers, Part, Site};

/// Default ONNX opset.
pub const DEFAULT_OPSET: i64 = 17;
/// Opsets this export can target (every op used is unchanged across them).
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=21;

/// Export options.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// ONNX opset (default 17; 13..=21).
    pub opset: i64,
    /// Recorded as metadata `source` (e.g. the checkpoint path).
    pub source: String,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            opset: DEFAULT_OPSET,
            source: String::new(),
        }
    }
}

/// The IR version that goes with an opset (ONNX's versioning table).
fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

/// The serialized ONNX model.
pub fn export(model: &DeployModel, opts: &ExportOptions) -> Result<Vec<u8>> {
    Ok(build(model, opts)?.encode_to_vec())
}

/// The serialized ONNX QDQ model of a quantized model (see the module docs).
///
/// # Errors
/// An opset outside [`OPSETS`], or a bias too large for INT32 at its scale (naming the layer).
pub fn export_quantized(model: &QuantizedModel, opts: &ExportOptions) -> Result<Vec<u8>> {
    Ok(build_graph(&model.deploy, Some(model), opts)?.encode_to_vec())
}

/// Exports and writes atomically: a temporary file in the same folder, renamed over `path`.
pub fn save(model: &DeployModel, path: impl AsRef<Path>, opts: &ExportOptions) -> Result<()> {
    write_atomically(path.as_ref(), &export(model, opts)?)
}

/// [`export_quantized`], written atomically like [`save`].
pub fn save_quantized(
    model: &QuantizedModel,
    path: impl AsRef<Path>,
    opts: &ExportOptions,
) -> Result<()> {
    write_atomically(path.as_ref(), &export_quantized(model, opts)?)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let save_err = |reason: String| ModelError::Save {
        path: path.into(),
        reason,
    };
    let name = path
        .file_name()
        .ok_or_else(|| save_err("not a file path".into()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(save_err(e.to_string()));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        save_err(e.to_string())
    })
}

/// The ONNX graph being written: nodes, initializers, and the value names [`Layers`] hands
/// out as tensors (by index).
struct Graph<'q> {
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    names: Vec<String>,
    /// The int8 form, for a QDQ graph.
    quant: Option<&'q QuantizedModel>,
    /// QDQ: the scale of the activation the next conv reads.
    act_scale: f32,
}

impl Graph<'_> {
    fn init(&mut self, name: &str, dims: &[usize], data: impl Iterator<Item = f32>) -> String {
        self.init_raw(
            name,
            dims,
            pb::FLOAT,
            data.flat_map(f32::to_le_bytes).collect(),
        )
    }

    /// An initializer of `data_type` from its little-endian bytes.
    fn init_raw(&mut self, name: &str, dims: &[usize], data_type: i32, bytes: Vec<u8>) -> String {
        self.inits.push(pb::TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(data_type),
            name: Some(name.into()),
            raw_data: Some(bytes),
        });
        name.into()
    }
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: Vec<pb::AttributeProto>,
    ) -> String {
        let out = name.to_string();
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: Some(name.into()),
            op_type: Some(op.into()),
            attribute: attrs,
        });
        out
    }
}

fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(pb::ATTR_INTS),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(pb::ATTR_INT),
        i: Some(v),
        ..Default::default()
    }
}

/// A value's handle: its index in [`Graph::names`].
type Value = usize;

impl Graph<'_> {
    fn value(&mut self, name: String) -> Value {
        self.names.push(name);
        self.names.len() - 1
    }

    fn name(&self, v: Value) -> Result<&str> {
        self.names
            .get(v)
            .map(String::as_str)
            .ok_or_else(|| ModelError::Config(format!("ONNX export: no value {v}")))
    }

    /// `op(inputs)` as a node named `name`, its output a new value.
    fn op(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[Value],
        attrs: Vec<pb::AttributeProto>,
    ) -> Result<Value> {
        let ins: Vec<String> = inputs
            .iter()
            .map(|&v| self.name(v).map(str::to_string))
            .collect::<Result<_>>()?;
        let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
        let out = self.node(op, name, &refs, attrs);
        Ok(self.value(out))
    }

    /// A per-channel vector as a `[C, 1, 1]` initializer (broadcasts over `[N, C, H, W]`).
    fn channel_init(&mut self, name: &str, v: &[f32]) -> Value {
        let n = self.init(name, &[v.len(), 1, 1], v.iter().copied());
        self.value(n)
    }

    /// `act(x * scale + bias + residual)` after `x`, nodes named from `p`.
    fn epilogue(&mut self, p: &str, mut x: Value, ep: &Epilogue<Value>) -> Result<Value> {
        if let Some(scale) = &ep.scale {
            let s = self.channel_init(&format!("{p}.scale"), scale);
            x = self.op("Mul", &format!("{p}.mul"), &[x, s], vec![])?;
            if let Some(bias) = &ep.bias {
                let b = self.channel_init(&format!("{p}.shift"), bias);
                x = self.op("Add", &format!("{p}.add"), &[x, b], vec![])?;
            }
        }
        if let Some(r) = ep.residual {
            x = self.op("Add", &format!("{p}.sum"), &[x, r], vec![])?;
        }
        self.activation(p, x, ep.activation)
    }

    fn activation(&mut self, p: &str, x: Value, act: Activation) -> Result<Value> {
        let block = p.rsplit_once('.').map_or(p, |(b, _)| b);
        match act {
            Activation::None => Ok(x),
            // The block's ReLU: one per block, named after the block.
            Activation::Relu => self.op("Relu", &format!("{block}.relu"), &[x], vec![]),
            Activation::Sigmoid => self.op("Sigmoid", &format!("{p}.sigmoid"), &[x], vec![]),
        }
    }
}

impl Graph<'_> {
    /// `DequantizeLinear(QuantizeLinear(x))` to uint8 of `scale` and `zero_point` (per tensor),
    /// nodes named `{p}.quantize` and `{p}.dequantize`.
    fn qdq_u8(&mut self, p: &str, x: Value, scale: f32, zero_point: u8) -> Result<Value> {
        let s = self.init_raw(
            &format!("{p}.scale"),
            &[],
            pb::FLOAT,
            scale.to_le_bytes().to_vec(),
        );
        let z = self.init_raw(&format!("{p}.zero_point"), &[], pb::UINT8, vec![zero_point]);
        let [s, z] = [s, z].map(|n| self.value(n));
        let q = self.op(
            "QuantizeLinear",
            &format!("{p}.quantize"),
            &[x, s, z],
            vec![],
        )?;
        self.op(
            "DequantizeLinear",
            &format!("{p}.dequantize"),
            &[q, s, z],
            vec![],
        )
    }

    /// A per-output-channel `DequantizeLinear` (`axis = 0`) of an initializer `codes` of
    /// `data_type` with `scales`, zero points 0; the node (and its value) is named `name`.
    fn dequantized_init(
        &mut self,
        name: &str,
        dims: &[usize],
        data_type: i32,
        codes: Vec<u8>,
        scales: &[f32],
    ) -> Result<Value> {
        let zeros = vec![0u8; scales.len() * if data_type == pb::INT32 { 4 } else { 1 }];
        let q = self.init_raw(&format!("{name}_quantized"), dims, data_type, codes);
        let s = self.init(
            &format!("{name}_scale"),
            &[scales.len()],
            scales.iter().copied(),
        );
        let z = self.init_raw(
            &format!("{name}_zero_point"),
            &[scales.len()],
            data_type,
            zeros,
        );
        let [q, s, z] = [q, s, z].map(|n| self.value(n));
        self.op("DequantizeLinear", name, &[q, s, z], vec![int("axis", 0)])
    }

    /// The QDQ form of a deployed conv (`p`: its tensors' prefix, `conv`: the node's name): the
    /// int8 weight and int32 bias dequantized per channel, `Conv → Relu`, the output quantized
    /// to the layer's scale.
    fn quant_conv(
        &mut self,
        l: &QuantLayer,
        p: &str,
        conv: &str,
        x: Value,
        ep: Epilogue<Value>,
        attrs: Vec<pb::AttributeProto>,
    ) -> Result<Value> {
        let name = l.name();
        let (Some(bias), None, None) = (ep.bias.as_ref(), &ep.scale, ep.residual) else {
            return Err(ModelError::Config(format!(
                "ONNX QDQ export: {name} is not a deployed conv with a bias"
            )));
        };
        if ep.activation != Activation::Relu || l.weight.shape()[0] != bias.len() {
            return Err(ModelError::Config(format!(
                "ONNX QDQ export: {name} is not a deployed conv with a ReLU and one bias per \
                 output channel"
            )));
        }
        let w = self.dequantized_init(
            &format!("{p}.weight"),
            l.weight.shape(),
            pb::INT8,
            l.weight.iter().map(|&v| v as u8).collect(),
            &l.weight_scale,
        )?;
        // The bias in steps of input scale x weight scale, as ONNX Runtime's quantizer stores it.
        let bias_scale: Vec<f32> = l.weight_scale.iter().map(|&s| self.act_scale * s).collect();
        let mut codes = Vec::with_capacity(4 * bias.len());
        for (o, (&b, &s)) in bias.iter().zip(&bias_scale).enumerate() {
            let q = (f64::from(b) / f64::from(s)).round_ties_even();
            if !(q.abs() <= f64::from(i32::MAX)) {
                return Err(ModelError::Unsupported(format!(
                    "ONNX QDQ export: the bias {b} of {name} channel {o} does not fit INT32 at \
                     its scale {s} (input scale x weight scale)"
                )));
            }
            codes.extend((q as i32).to_le_bytes());
        }
        let b = self.dequantized_init(
            &format!("{p}.bias"),
            &[bias.len()],
            pb::INT32,
            codes,
            &bias_scale,
        )?;
        let y = self.op("Conv", conv, &[x, w, b], attrs)?;
        let y = self.activation(conv, y, Activation::Relu)?;
        let block = conv.rsplit_once('.').map_or(conv, |(b, _)| b);
        self.act_scale = l.output_scale;
        self.qdq_u8(&format!("{block}.output"), y, l.output_scale, 0)
    }
}

/// timm's name of a conv of a block part.
fn part_name(part: Part) -> &'static str {
    match part {
        Part::Reparam => "reparam_conv",
        Part::Dense => "conv_kxk",
        Part::OneByOne => "conv_1x1",
        Part::Identity => "identity",
        Part::Se => "attn",
    }
}

impl Layers for Graph<'_> {
    type Tensor = Value;

    fn input(&mut self, _channels: usize) -> Result<Value> {
        let x = self.value("input".into());
        match self.quant {
            Some(q) => {
                self.act_scale = q.input_scale;
                self.qdq_u8("input", x, q.input_scale, q.input_zero_point)
            }
            None => Ok(x),
        }
    }

    fn conv(
        &mut self,
        at: Site,
        x: Value,
        weight: ArrayView4<'_, f32>,
        spec: ConvSpec,
        ep: Epilogue<Value>,
    ) -> Result<Value> {
        let b = block_prefix(at.stage, at.block);
        let (p, conv) = match at.part {
            Part::Reparam => (format!("{b}.reparam_conv"), format!("{b}.conv")),
            part => {
                let p = format!("{b}.{}", part_name(part));
                (format!("{p}.conv"), p)
            }
        };
        let (k, pad, s) = (
            spec.kernel_size as i64,
            spec.padding as i64,
            spec.stride as i64,
        );
        let attrs = vec![
            ints("kernel_shape", &[k, k]),
            ints("pads", &[pad, pad, pad, pad]),
            ints("strides", &[s, s]),
            ints("dilations", &[1, 1]),
            int("group", spec.groups as i64),
        ];
        if let Some(q) = self.quant {
            let l = q
                .layers
                .iter()
                .find(|l| (l.stage, l.block) == (at.stage, at.block) && at.part == Part::Reparam)
                .ok_or_else(|| {
                    ModelError::Config(format!(
                        "ONNX QDQ export: the conv {conv} has no int8 layer"
                    ))
                })?;
            return self.quant_conv(l, &p, &conv, x, ep, attrs);
        }
        let w = self.init(
            &format!("{p}.weight"),
            weight.shape(),
            weight.iter().copied(),
        );
        let w = self.value(w);
        let mut inputs = vec![x, w];
        // A bias alone goes into the Conv; after a scale it is an Add of the epilogue.
        let mut ep = ep;
        if ep.scale.is_none()
            && let Some(bias) = ep.bias.take()
        {
            let bn = self.init(&format!("{p}.bias"), &[bias.len()], bias.iter().copied());
            inputs.push(self.value(bn));
        }
        let y = self.op("Conv", &conv, &inputs, attrs)?;
        self.epilogue(&conv, y, &ep)
    }

    fn affine_add(
        &mut self,
        at: Site,
        x: Value,
        scale: Vec<f32>,
        shift: Vec<f32>,
        sum: Value,
        act: Activation,
    ) -> Result<Value> {
        let p = format!(
            "{}.{}",
            block_prefix(at.stage, at.block),
            part_name(at.part)
        );
        let ep = Epilogue::affine(scale, shift)
            .with_residual(sum)
            .with_activation(act);
        self.epilogue(&p, x, &ep)
    }

    fn squeeze_excite(
        &mut self,
        at: Site,
        y: Value,
        se: &SqueezeExcite,
        act: Activation,
    ) -> Result<Value> {
        let p = block_prefix(at.stage, at.block);
        let (r, ch) = se.fc1_weight.dim();
        let pooled = self.op("GlobalAveragePool", &format!("{p}.attn.pool"), &[y], vec![])?;
        let w1 = self.init(
            &format!("{p}.attn.fc1.weight"),
            &[r, ch, 1, 1],
            se.fc1_weight.iter().copied(),
        );
        let b1 = self.init(
            &format!("{p}.attn.fc1.bias"),
            &[r],
            se.fc1_bias.iter().copied(),
        );
        let w2 = self.init(
            &format!("{p}.attn.fc2.weight"),
            &[ch, r, 1, 1],
            se.fc2_weight.iter().copied(),
        );
        let b2 = self.init(
            &format!("{p}.attn.fc2.bias"),
            &[ch],
            se.fc2_bias.iter().copied(),
        );
        let [w1, b1, w2, b2] = [w1, b1, w2, b2].map(|n| self.value(n));
        let one = || {
            vec![
                ints("kernel_shape", &[1, 1]),
                ints("pads", &[0, 0, 0, 0]),
                ints("strides", &[1, 1]),
            ]
        };
        let h = self.op("Conv", &format!("{p}.attn.fc1"), &[pooled, w1, b1], one())?;
        let h = self.op("Relu", &format!("{p}.attn.relu"), &[h], vec![])?;
        let h = self.op("Conv", &format!("{p}.attn.fc2"), &[h, w2, b2], one())?;
        let gate = self.op("Sigmoid", &format!("{p}.attn.gate"), &[h], vec![])?;
        let y = self.op("Mul", &format!("{p}.attn.mul"), &[y, gate], vec![])?;
        self.activation(&format!("{p}.attn"), y, act)
    }

    fn stage_output(&mut self, _: usize, _: Value) -> Result<()> {
        Ok(())
    }

    fn head(&mut self, x: Value, head: &Head) -> Result<()> {
        let pooled = self.op("GlobalAveragePool", "head.global_pool", &[x], vec![])?;
        let flat = self.op("Flatten", "head.flatten", &[pooled], vec![int("axis", 1)])?;
        let hw = match self.quant {
            // The int8 engine's head: s8 weights per class (`axis = 0` of `[classes, C]`).
            Some(_) => {
                let (codes, scales) = crate::quant::quantize_head(head.weight.view());
                self.dequantized_init(
                    "head.fc.weight",
                    head.weight.shape(),
                    pb::INT8,
                    codes.into_iter().map(|v| v as u8).collect(),
                    &scales,
                )?
            }
            None => {
                let hw = self.init(
                    "head.fc.weight",
                    head.weight.shape(),
                    head.weight.iter().copied(),
                );
                self.value(hw)
            }
        };
        let hb = self.init("head.fc.bias", head.bias.shape(), head.bias.iter().copied());
        let hb = self.value(hb);
        // The last node's output is the graph output `logits`.
        self.op("Gemm", "logits", &[flat, hw, hb], vec![int("transB", 1)])?;
        Ok(())
    }
}

fn block_prefix(stage: usize, block: usize) -> String {
    if stage == 0 {
        "stem".into()
    } else {
        format!("stages.{}.{block}", stage - 1)
    }
}

fn dim_param(s: &str) -> pb::Dimension {
    pb::Dimension {
        value: Some(pb::DimValue::DimParam(s.into())),
    }
}

fn dim_value(v: usize) -> pb::Dimension {
    pb::Dimension {
        value: Some(pb::DimValue::DimValue(v as i64)),
    }
}

fn value_info(name: &str, dims: Vec<pb::Dimension>) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(pb::TypeProto {
            value: Some(pb::TypeValue::TensorType(pb::TensorType {
                elem_type: Some(pb::FLOAT),
                shape: Some(pb::TensorShapeProto { dim: dims }),
            })),
        }),
    }
}

fn build(model: &DeployModel, opts: &ExportOptions) -> Result<pb::ModelProto> {
    build_graph(model, None, opts)
}

/// The model of `model`, QDQ with the int8 parameters of `quant` when given (whose `deploy` is
/// `model`).
fn build_graph(
    model: &DeployModel,
    quant: Option<&QuantizedModel>,
    opts: &ExportOptions,
) -> Result<pb::ModelProto> {
    if !OPSETS.contains(&opts.opset) {
        return Err(ModelError::Config(format!(
            "ONNX opset {} is not supported (use {}..={})",
            opts.opset,
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    let cfg = &model.config;
    if let Some(q) = quant {
        crate::quant::check_quantizable(&q.deploy)?;
    }
    let mut g = Graph {
        nodes: Vec::new(),
        inits: Vec::new(),
        names: Vec::new(),
        quant,
        act_scale: 1.0,
    };
    crate::walk::deploy(&mut g, model)?;
    let Graph { nodes, inits, .. } = g;
    let pre = PretrainedConfig::for_config(cfg);
    let fmt3 = |v: [f32; 3]| format!("[{}, {}, {}]", v[0], v[1], v[2]);
    let meta = [
        ("arch", cfg.name.clone()),
        ("source", opts.source.clone()),
        (
            "form",
            match quant {
                Some(q) => format!(
                    "deploy (fused 3x3 conv per block), int8 QDQ: uint8 activations per tensor, \
                     int8 weights per output channel, calibration {}",
                    q.method
                ),
                None => "deploy (fused 3x3 conv per block)".into(),
            },
        ),
        ("num_classes", cfg.num_classes.to_string()),
        (
            "input",
            "input: float32 [N, 3, H, W], RGB, normalized".into(),
        ),
        ("output", "logits: float32 [N, num_classes]".into()),
        ("input_size", pre.input_size.to_string()),
        ("crop_pct", pre.crop_pct.to_string()),
        ("interpolation", "bilinear".into()),
        ("mean", fmt3(pre.mean)),
        ("std", fmt3(pre.std)),
    ];
    Ok(pb::ModelProto {
        ir_version: Some(ir_version(opts.opset)),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opts.opset),
        }],
        producer_name: Some("repvgg".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(format!(
            "RepVGG {} (deployed form{}), exported by repvgg",
            cfg.name,
            if quant.is_some() { ", int8 QDQ" } else { "" }
        )),
        graph: Some(pb::GraphProto {
            node: nodes,
            name: Some(format!("repvgg_{}", cfg.name)),
            initializer: inits,
            input: vec![value_info(
                "input",
                vec![
                    dim_param("N"),
                    dim_value(cfg.in_channels),
                    dim_param("H"),
                    dim_param("W"),
                ],
            )],
            output: vec![value_info(
                "logits",
                vec![dim_param("N"), dim_value(cfg.num_classes)],
            )],
        }),
        metadata_props: meta
            .into_iter()
            .map(|(k, v)| pb::StringStringEntryProto {
                key: Some(k.into()),
                value: Some(v),
            })
            .collect(),
    })
}

/// The messages of ONNX's `onnx.proto` this export writes (field numbers as published).
#[allow(missing_docs)]
pub mod pb {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const INT32: i32 = 6;
    pub const ATTR_INT: i32 = 2;
    pub const ATTR_INTS: i32 = 7;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        #[prost(int64, optional, tag = "1")]
        pub ir_version: Option<i64>,
        #[prost(message, repeated, tag = "8")]
        pub opset_import: Vec<OperatorSetIdProto>,
        #[prost(string, optional, tag = "2")]
        pub producer_name: Option<String>,
        #[prost(string, optional, tag = "3")]
        pub producer_version: Option<String>,
        #[prost(string, optional, tag = "6")]
        pub doc_string: Option<String>,
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
        #[prost(message, repeated, tag = "14")]
        pub metadata_props: Vec<StringStringEntryProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OperatorSetIdProto {
        #[prost(string, optional, tag = "1")]
        pub domain: Option<String>,
        #[prost(int64, optional, tag = "2")]
        pub version: Option<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StringStringEntryProto {
        #[prost(string, optional, tag = "1")]
        pub key: Option<String>,
        #[prost(string, optional, tag = "2")]
        pub value: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        #[prost(string, optional, tag = "2")]
        pub name: Option<String>,
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfoProto>,
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfoProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        #[prost(string, optional, tag = "3")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "4")]
        pub op_type: Option<String>,
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(int32, optional, tag = "20")]
        pub r#type: Option<i32>,
        #[prost(int64, optional, tag = "3")]
        pub i: Option<i64>,
        /// proto2 `repeated int64`: unpacked.
        #[prost(int64, repeated, packed = "false", tag = "8")]
        pub ints: Vec<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        #[prost(int64, repeated, packed = "false", tag = "1")]
        pub dims: Vec<i64>,
        #[prost(int32, optional, tag = "2")]
        pub data_type: Option<i32>,
        #[prost(string, optional, tag = "8")]
        pub name: Option<String>,
        #[prost(bytes = "vec", optional, tag = "9")]
        pub raw_data: Option<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(message, optional, tag = "2")]
        pub r#type: Option<TypeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeProto {
        #[prost(oneof = "TypeValue", tags = "1")]
        pub value: Option<TypeValue>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum TypeValue {
        #[prost(message, tag = "1")]
        TensorType(TensorType),
    }

    /// `TypeProto.Tensor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorType {
        #[prost(int32, optional, tag = "1")]
        pub elem_type: Option<i32>,
        #[prost(message, optional, tag = "2")]
        pub shape: Option<TensorShapeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {
        #[prost(message, repeated, tag = "1")]
        pub dim: Vec<Dimension>,
    }

    /// `TensorShapeProto.Dimension`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        #[prost(oneof = "DimValue", tags = "1, 2")]
        pub value: Option<DimValue>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum DimValue {
        #[prost(int64, tag = "1")]
        DimValue(i64),
        #[prost(string, tag = "2")]
        DimParam(String),
    }
}
