//! ONNX export of the deployed (fused) network.
//!
//! The graph: per block `Conv` (3x3, bias, the block's stride and groups), for SE blocks
//! `GlobalAveragePool → Conv 1x1 → Relu → Conv 1x1 → Sigmoid → Mul`, then `Relu`; the head is
//! `GlobalAveragePool → Flatten → Gemm`. Input `input` `[N, C, H, W]` f32 with symbolic `N`, `H`, `W`;
//! output `logits` `[N, classes]`. Initializers are the fused f32 weights, named like timm's keys.
//! Model metadata records the architecture, the source checkpoint and timm's preprocessing.
//!
//! The protobuf messages are the subset of ONNX's published `onnx.proto` (onnx/onnx, `onnx.proto`,
//! proto2) that this export writes, declared with `prost` derives with the `.proto`'s field
//! numbers, so no `protoc` is needed at build time.

use std::path::Path;

use prost::Message;

use crate::error::{ModelError, Result};
use crate::model::DeployModel;
use crate::preprocess::PretrainedConfig;

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

/// Exports and writes atomically: a temporary file in the same folder, renamed over `path`.
pub fn save(model: &DeployModel, path: impl AsRef<Path>, opts: &ExportOptions) -> Result<()> {
    let path = path.as_ref();
    let bytes = export(model, opts)?;
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
    if let Err(e) = std::fs::write(&tmp, &bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(save_err(e.to_string()));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        save_err(e.to_string())
    })
}

struct Graph {
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
}

impl Graph {
    fn init(&mut self, name: &str, dims: &[usize], data: impl Iterator<Item = f32>) -> String {
        self.inits.push(pb::TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(pb::FLOAT),
            name: Some(name.into()),
            raw_data: Some(data.flat_map(f32::to_le_bytes).collect()),
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
    if !OPSETS.contains(&opts.opset) {
        return Err(ModelError::Config(format!(
            "ONNX opset {} is not supported (use {}..={})",
            opts.opset,
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    let cfg = &model.config;
    let mut g = Graph {
        nodes: Vec::new(),
        inits: Vec::new(),
    };
    let mut x = "input".to_string();
    for (si, stage) in model.stages.iter().enumerate() {
        for (j, b) in stage.iter().enumerate() {
            let p = block_prefix(si, j);
            let c = &b.conv;
            let w = g.init(
                &format!("{p}.reparam_conv.weight"),
                c.weight.shape(),
                c.weight.iter().copied(),
            );
            let bias = g.init(
                &format!("{p}.reparam_conv.bias"),
                c.bias.shape(),
                c.bias.iter().copied(),
            );
            let s = c.spec.stride as i64;
            let mut y = g.node(
                "Conv",
                &format!("{p}.conv"),
                &[&x, &w, &bias],
                vec![
                    ints("kernel_shape", &[3, 3]),
                    ints("pads", &[1, 1, 1, 1]),
                    ints("strides", &[s, s]),
                    ints("dilations", &[1, 1]),
                    int("group", c.spec.groups as i64),
                ],
            );
            if let Some(se) = &b.se {
                let (r, ch) = se.fc1_weight.dim();
                let pooled = g.node(
                    "GlobalAveragePool",
                    &format!("{p}.attn.pool"),
                    &[&y],
                    vec![],
                );
                let w1 = g.init(
                    &format!("{p}.attn.fc1.weight"),
                    &[r, ch, 1, 1],
                    se.fc1_weight.iter().copied(),
                );
                let b1 = g.init(
                    &format!("{p}.attn.fc1.bias"),
                    &[r],
                    se.fc1_bias.iter().copied(),
                );
                let w2 = g.init(
                    &format!("{p}.attn.fc2.weight"),
                    &[ch, r, 1, 1],
                    se.fc2_weight.iter().copied(),
                );
                let b2 = g.init(
                    &format!("{p}.attn.fc2.bias"),
                    &[ch],
                    se.fc2_bias.iter().copied(),
                );
                let one = || {
                    vec![
                        ints("kernel_shape", &[1, 1]),
                        ints("pads", &[0, 0, 0, 0]),
                        ints("strides", &[1, 1]),
                    ]
                };
                let h = g.node(
                    "Conv",
                    &format!("{p}.attn.fc1"),
                    &[&pooled, &w1, &b1],
                    one(),
                );
                let h = g.node("Relu", &format!("{p}.attn.relu"), &[&h], vec![]);
                let h = g.node("Conv", &format!("{p}.attn.fc2"), &[&h, &w2, &b2], one());
                let gate = g.node("Sigmoid", &format!("{p}.attn.gate"), &[&h], vec![]);
                y = g.node("Mul", &format!("{p}.attn.mul"), &[&y, &gate], vec![]);
            }
            x = g.node("Relu", &format!("{p}.relu"), &[&y], vec![]);
        }
    }
    let pooled = g.node("GlobalAveragePool", "head.global_pool", &[&x], vec![]);
    let flat = g.node("Flatten", "head.flatten", &[&pooled], vec![int("axis", 1)]);
    let hw = g.init(
        "head.fc.weight",
        model.head.weight.shape(),
        model.head.weight.iter().copied(),
    );
    let hb = g.init(
        "head.fc.bias",
        model.head.bias.shape(),
        model.head.bias.iter().copied(),
    );
    // The last node's output is the graph output `logits`.
    g.node("Gemm", "logits", &[&flat, &hw, &hb], vec![int("transB", 1)]);

    let pre = PretrainedConfig::for_config(cfg);
    let fmt3 = |v: [f32; 3]| format!("[{}, {}, {}]", v[0], v[1], v[2]);
    let meta = [
        ("arch", cfg.name.clone()),
        ("source", opts.source.clone()),
        ("form", "deploy (fused 3x3 conv per block)".into()),
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
            "RepVGG {} (deployed form), exported by repvgg",
            cfg.name
        )),
        graph: Some(pb::GraphProto {
            node: g.nodes,
            name: Some(format!("repvgg_{}", cfg.name)),
            initializer: g.inits,
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
