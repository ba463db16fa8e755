//! safetensors checkpoints: timm and official DingXiaoH/RepVGG naming, train or deploy form,
//! f32/f16/bf16, architecture inferred from the tensors, strict key checking.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ndarray::{Array1, Array2, Array4};
use repvgg_math::fuse::{ConvBn, RepVggBranches};
use repvgg_math::{BatchNorm, FusedConv};
use safetensors::{Dtype, SafeTensors};

use crate::config::{BlockSpec, RepVggConfig};
use crate::error::{KeyProblem, KeyProblems, ModelError, Result};
use crate::model::{
    DeployBlock, DeployModel, Head, RepVgg, SqueezeExcite, TrainBlock, TrainModel, block_spec,
};

/// BatchNorm eps used by timm and the official code.
pub const BN_EPS: f64 = 1e-5;

/// Key naming of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Naming {
    /// timm: `stem`, `stages.i.j.conv_kxk.conv|bn`, `conv_1x1`, `identity`, `reparam_conv`,
    /// `attn.fc1|fc2`, `head.fc`.
    #[default]
    Timm,
    /// DingXiaoH/RepVGG: `stage0`, `stageN.j.rbr_dense.conv|bn`, `rbr_1x1`, `rbr_identity`,
    /// `rbr_reparam`, `se.down|up`, `linear`.
    Official,
}

pub use crate::vocab::Form;

impl Naming {
    /// `timm` or `official`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Timm => "timm",
            Self::Official => "official",
        }
    }
}

impl std::fmt::Display for Naming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Naming {
    type Err = crate::vocab::ParseWordError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "timm" => Ok(Self::Timm),
            "official" | "dingxiaoh" => Ok(Self::Official),
            _ => Err(crate::vocab::ParseWordError {
                what: "key naming",
                got: s.into(),
                expected: "timm or official",
            }),
        }
    }
}

/// A model as loaded: whichever form the file held.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadedModel {
    /// The file held the multi-branch train form.
    Train(TrainModel),
    /// The file held the fused deploy form.
    Deploy(DeployModel),
}

impl LoadedModel {
    /// The architecture, whichever the form.
    pub fn config(&self) -> &RepVggConfig {
        match self {
            Self::Train(m) => &m.config,
            Self::Deploy(m) => &m.config,
        }
    }
    /// Which form the file held.
    pub fn form(&self) -> Form {
        match self {
            Self::Train(_) => Form::Train,
            Self::Deploy(_) => Form::Deploy,
        }
    }
    /// The deployed form: fused now if the file held the train form.
    pub fn into_deploy(self) -> Result<DeployModel> {
        match self {
            Self::Train(m) => m.fuse(),
            Self::Deploy(m) => Ok(m),
        }
    }
}

/// A loaded checkpoint and what the loader found out about the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The model, in the form the file held.
    pub model: LoadedModel,
    /// The key naming the file used.
    pub naming: Naming,
    /// The stored dtype(s), e.g. `F32` or `BF16`.
    pub dtypes: Vec<String>,
}

struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// What the first pass over the file's bytes found: every float tensor widened to f32.
#[derive(Default)]
struct Parsed {
    raw: BTreeMap<String, Tensor>,
    problems: Vec<KeyProblem>,
    dtypes: BTreeSet<String>,
    naming: Naming,
}

/// Reads and checks a checkpoint file. The file's bytes are dropped once the tensors are
/// widened to f32, and the tensors then move into the model, so at most one extra copy of the
/// weights is alive at a time (two for f16/bf16 files, whose f32 form is twice their size).
pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let parsed = {
        let bytes = std::fs::read(path).map_err(|error| ModelError::Io {
            path: path.into(),
            error,
        })?;
        if crate::sniff::is_pth(&bytes) {
            // The state dict is read into memory; the file's bytes are dropped before building.
            let parsed = read_pth(&bytes, path)?;
            drop(bytes);
            parsed
        } else {
            parse(&bytes, path)?
        }
    };
    finish(parsed, path)
}

/// Parses a checkpoint held in memory; `path` only names it in errors.
/// PyTorch `.pth` files (zip or legacy) are recognised by their content; see [`crate::pth`].
pub fn load_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
    let parsed = if crate::sniff::is_pth(bytes) {
        read_pth(bytes, path)?
    } else {
        parse(bytes, path)?
    };
    finish(parsed, path)
}

/// The tensors of a `.pth` state dict, as [`parse`] reads a safetensors file's; each is dropped
/// once widened to f32.
#[cfg(feature = "pth")]
fn read_pth(bytes: &[u8], path: &Path) -> Result<Parsed> {
    let mut parsed = Parsed::default();
    for (name, t) in crate::pth::read_state_dict(bytes, path)? {
        parsed.add(&name, t.dtype, &t.shape, &t.data);
    }
    Ok(parsed)
}

#[cfg(not(feature = "pth"))]
fn read_pth(_: &[u8], _: &Path) -> Result<Parsed> {
    Err(ModelError::NotCompiled {
        feature: "pth",
        what: "reading PyTorch .pth checkpoints",
    })
}

fn parse(bytes: &[u8], path: &Path) -> Result<Parsed> {
    // `deserialize` checks that every tensor's byte range lies inside the file, that the
    // ranges tile the data section without overlap, and that each range holds exactly
    // `shape.product() * dtype size` bytes (checked multiplication), so every size below is
    // bounded by the file's length.
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| crate::tensor_io::format_error(&e, bytes, path))?;
    let mut parsed = Parsed::default();
    for (name, view) in st.tensors() {
        parsed.add(&name, view.dtype(), view.shape(), view.data());
    }
    Ok(parsed)
}

impl Parsed {
    /// One tensor of the file: `data` holds exactly `shape.product() * dtype size` bytes
    /// (checked by the file's reader).
    fn add(&mut self, name: &str, dtype: Dtype, shape: &[usize], data: &[u8]) {
        let name = name.strip_prefix("module.").unwrap_or(name).to_string();
        if name.ends_with("num_batches_tracked") {
            return;
        }
        if name.starts_with("stage0.") || name.starts_with("linear.") || name.contains(".rbr_") {
            self.naming = Naming::Official;
        }
        match to_f32(dtype, data) {
            Some(data) => {
                self.dtypes.insert(format!("{dtype:?}"));
                let bad = data.iter().filter(|v| !v.is_finite()).count();
                if bad > 0 {
                    self.problems.push(KeyProblem::NonFinite {
                        key: name.clone(),
                        count: bad,
                    });
                }
                self.raw.insert(
                    name,
                    Tensor {
                        shape: shape.to_vec(),
                        data,
                    },
                );
            }
            None => self.problems.push(KeyProblem::Dtype {
                key: name,
                dtype: format!("{dtype:?}"),
            }),
        }
    }
}

fn finish(parsed: Parsed, path: &Path) -> Result<Checkpoint> {
    let Parsed {
        raw,
        problems,
        dtypes,
        naming,
    } = parsed;
    // Work in timm naming; remember each canonical key's original name for messages.
    let mut tensors = BTreeMap::new();
    let mut original = BTreeMap::new();
    for (k, t) in raw {
        let canon = if naming == Naming::Official {
            official_to_timm(&k)
        } else {
            k.clone()
        };
        original.insert(canon.clone(), k);
        tensors.insert(canon, t);
    }
    let rename = |k: &str| {
        original.get(k).cloned().unwrap_or_else(|| {
            if naming == Naming::Official {
                timm_to_official(k)
            } else {
                k.into()
            }
        })
    };
    let problems: Vec<KeyProblem> = problems;

    let arch_err = |reason: String| ModelError::Architecture {
        path: path.into(),
        reason,
    };
    let deploy = tensors.keys().any(|k| k.contains("reparam_conv."));
    let train = tensors.keys().any(|k| k.contains("conv_kxk."));
    let form = match (train, deploy) {
        (true, false) => Form::Train,
        (false, true) => Form::Deploy,
        (true, true) => return Err(arch_err("it mixes train-form (conv_kxk/rbr_dense) and deploy-form (reparam_conv/rbr_reparam) blocks".into())),
        (false, false) => {
            return Err(arch_err(format!(
                "no `conv_kxk`/`rbr_dense` or `reparam_conv`/`rbr_reparam` tensors among {} keys{}",
                tensors.len(),
                if problems.is_empty() { String::new() } else { format!(" ({})", KeyProblems(problems.clone())) }
            )));
        }
    };
    let config = infer_config(&tensors, form).map_err(arch_err)?;

    // Strict comparison of the key sets.
    let expected = expected_keys(&config, form);
    let mut problems = problems;
    for (key, shape) in &expected {
        match tensors.get(key) {
            None => {
                if !problems
                    .iter()
                    .any(|p| matches!(p, KeyProblem::Dtype { key: k, .. } if *k == rename(key)))
                {
                    problems.push(KeyProblem::Missing {
                        key: rename(key),
                        expected: shape.clone(),
                    });
                }
            }
            Some(t) if t.shape != *shape => problems.push(KeyProblem::Shape {
                key: rename(key),
                expected: shape.clone(),
                found: t.shape.clone(),
            }),
            Some(_) => {}
        }
    }
    for (key, t) in &tensors {
        if !expected.contains_key(key) {
            problems.push(KeyProblem::Unexpected {
                key: rename(key),
                found: t.shape.clone(),
            });
        }
    }
    if !problems.is_empty() {
        return Err(ModelError::Keys {
            path: path.into(),
            problems: KeyProblems(problems),
        });
    }

    let model = build(&config, form, tensors)?;
    Ok(Checkpoint {
        model,
        naming,
        dtypes: dtypes.into_iter().collect(),
    })
}

fn to_f32(dtype: Dtype, d: &[u8]) -> Option<Vec<f32>> {
    let words = |n: usize| d.chunks_exact(n);
    Some(match dtype {
        Dtype::F32 => words(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => words(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => words(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// Block key prefixes in timm naming: `stem`, `stages.i.j`.
pub(crate) fn block_prefix(stage: usize, block: usize) -> String {
    if stage == 0 {
        "stem".into()
    } else {
        format!("stages.{}.{block}", stage - 1)
    }
}

fn infer_config(
    t: &BTreeMap<String, Tensor>,
    form: Form,
) -> std::result::Result<RepVggConfig, String> {
    // Blocks present: stem plus stages.i.j. The indices come from the file, so they are only
    // trusted once they form contiguous ranges: a count is never larger than the number of
    // tensors actually present, whatever index a name claims.
    let mut blocks_of: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for k in t.keys() {
        if let Some(rest) = k.strip_prefix("stages.") {
            let mut it = rest.split('.');
            if let (Some(Ok(i)), Some(Ok(j))) = (
                it.next().map(str::parse::<usize>),
                it.next().map(str::parse::<usize>),
            ) {
                blocks_of.entry(i).or_default().insert(j);
            }
        }
    }
    if blocks_of.is_empty() {
        return Err("no `stages.i.j` / `stageN.j` blocks".into());
    }
    // The first index of `0..` that a sorted set lacks, if the set is not exactly `0..len`.
    let first_gap = |set: &mut dyn Iterator<Item = usize>| {
        set.enumerate()
            .find(|(want, got)| want != got)
            .map(|(want, _)| want)
    };
    if let Some(i) = first_gap(&mut blocks_of.keys().copied()) {
        let last = blocks_of.keys().next_back().copied().unwrap_or(0);
        return Err(format!(
            "stage {} has no blocks, but stage {} does (stage numbers must have no gaps)",
            i + 1,
            u128::from(last as u64) + 1
        ));
    }
    let mut depths = Vec::with_capacity(blocks_of.len());
    for (i, js) in &blocks_of {
        if let Some(j) = first_gap(&mut js.iter().copied()) {
            let last = js.iter().next_back().copied().unwrap_or(0);
            return Err(format!(
                "stage {}: block {j} is missing, but block {last} is present",
                i + 1
            ));
        }
        depths.push(js.len());
    }
    let main = match form {
        Form::Train => "conv_kxk.conv.weight",
        Form::Deploy => "reparam_conv.weight",
    };
    // (out channels, in channels per group) of a block from whichever tensor is present.
    let block_dims = |p: &str| -> Option<(usize, Option<usize>)> {
        if let Some(w) = t.get(&format!("{p}.{main}")).filter(|w| w.shape.len() == 4) {
            return Some((w.shape[0], Some(w.shape[1])));
        }
        if let Some(w) = t
            .get(&format!("{p}.conv_1x1.conv.weight"))
            .filter(|w| w.shape.len() == 4)
        {
            return Some((w.shape[0], Some(w.shape[1])));
        }
        [
            "conv_kxk.bn.weight",
            "reparam_conv.bias",
            "conv_1x1.bn.weight",
        ]
        .iter()
        .find_map(|s| {
            t.get(&format!("{p}.{s}"))
                .map(|v| (v.shape.iter().product(), None))
        })
    };
    let (stem_out, stem_in) =
        block_dims("stem").ok_or("no stem (`stem.*` / `stage0.*`) tensors")?;
    let in_channels =
        stem_in.ok_or("the stem's conv weight is missing, so the input channels are unknown")?;
    let mut layer_groups = vec![1];
    let se_of = |p: &str| {
        t.get(&format!("{p}.attn.fc1.weight"))
            .and_then(|w| w.shape.first().copied())
    };
    let mut layer_se = vec![se_of("stem")];
    let mut stage_channels = Vec::new();
    let mut cin = stem_out;
    for (i, &d) in depths.iter().enumerate() {
        let mut width = 0;
        for j in 0..d {
            let p = block_prefix(i + 1, j);
            let (out, per_group) =
                block_dims(&p).ok_or_else(|| format!("block `{p}` has no conv or BN tensors"))?;
            let groups = match per_group {
                Some(pg) if pg > 0 && cin % pg == 0 => cin / pg,
                Some(pg) => {
                    return Err(format!(
                        "block `{p}`: {cin} input channels cannot be split into groups of {pg}"
                    ));
                }
                None => 1,
            };
            layer_groups.push(groups);
            layer_se.push(se_of(&p));
            width = out;
            cin = out;
        }
        stage_channels.push(width);
    }
    let head = t
        .get("head.fc.weight")
        .ok_or("no classifier (`head.fc.weight` / `linear.weight`)")?;
    let num_classes = head.shape.first().copied().unwrap_or(0);
    let cfg = RepVggConfig {
        name: "custom".into(),
        in_channels,
        num_classes,
        stem_channels: stem_out,
        stage_channels,
        depths,
        layer_groups,
        layer_se,
    };
    // Name it after a paper variant when it is one.
    let named = RepVggConfig::all_named().into_iter().find(|n| {
        RepVggConfig {
            name: n.name.clone(),
            num_classes: n.num_classes,
            in_channels: n.in_channels,
            ..cfg.clone()
        } == *n
    });
    let cfg = match named {
        Some(n) => RepVggConfig {
            name: n.name,
            ..cfg
        },
        None => cfg,
    };
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

fn bn_keys(p: &str, c: usize, out: &mut BTreeMap<String, Vec<usize>>) {
    for s in ["weight", "bias", "running_mean", "running_var"] {
        out.insert(format!("{p}.{s}"), vec![c]);
    }
}

/// Every tensor (timm naming) a model of this config and form holds, with its shape.
pub fn expected_keys(config: &RepVggConfig, form: Form) -> BTreeMap<String, Vec<usize>> {
    let mut out = BTreeMap::new();
    for (si, stage) in config.blocks().iter().enumerate() {
        for (j, b) in stage.iter().enumerate() {
            let p = block_prefix(si, j);
            let (o, ig) = (b.out_channels, b.in_channels / b.groups.max(1));
            match form {
                Form::Train => {
                    out.insert(format!("{p}.conv_kxk.conv.weight"), vec![o, ig, 3, 3]);
                    bn_keys(&format!("{p}.conv_kxk.bn"), o, &mut out);
                    out.insert(format!("{p}.conv_1x1.conv.weight"), vec![o, ig, 1, 1]);
                    bn_keys(&format!("{p}.conv_1x1.bn"), o, &mut out);
                    if b.identity {
                        bn_keys(&format!("{p}.identity"), o, &mut out);
                    }
                }
                Form::Deploy => {
                    out.insert(format!("{p}.reparam_conv.weight"), vec![o, ig, 3, 3]);
                    out.insert(format!("{p}.reparam_conv.bias"), vec![o]);
                }
            }
            if let Some(r) = b.se_hidden {
                out.insert(format!("{p}.attn.fc1.weight"), vec![r, o, 1, 1]);
                out.insert(format!("{p}.attn.fc1.bias"), vec![r]);
                out.insert(format!("{p}.attn.fc2.weight"), vec![o, r, 1, 1]);
                out.insert(format!("{p}.attn.fc2.bias"), vec![o]);
            }
        }
    }
    out.insert(
        "head.fc.weight".into(),
        vec![config.num_classes, config.feature_channels()],
    );
    out.insert("head.fc.bias".into(), vec![config.num_classes]);
    out
}

fn build(config: &RepVggConfig, form: Form, t: BTreeMap<String, Tensor>) -> Result<LoadedModel> {
    // Each tensor's data moves into the model (no copy); keys and shapes were checked, so a
    // miss here is a bug, reported rather than panicking.
    let store = std::cell::RefCell::new(t);
    let take = |k: &str| -> Result<Tensor> {
        store.borrow_mut().remove(k).ok_or_else(|| {
            ModelError::Config(format!("internal: `{k}` vanished after the key check"))
        })
    };
    let arr1 = |k: &str| -> Result<Array1<f32>> { Ok(Array1::from(take(k)?.data)) };
    let arr2 = |k: &str, r: usize, c: usize| -> Result<Array2<f32>> {
        Array2::from_shape_vec((r, c), take(k)?.data)
            .map_err(|e| ModelError::Config(format!("{k}: {e}")))
    };
    let arr4 = |k: &str| -> Result<Array4<f32>> {
        let x = take(k)?;
        let s: [usize; 4] = x.shape.as_slice().try_into().map_err(|_| {
            ModelError::Config(format!(
                "internal: `{k}` has shape {:?}, not rank 4",
                x.shape
            ))
        })?;
        Array4::from_shape_vec(s, x.data).map_err(|e| ModelError::Config(format!("{k}: {e}")))
    };
    let bn = |p: &str| -> Result<BatchNorm<f32>> {
        Ok(BatchNorm::new(
            arr1(&format!("{p}.weight"))?,
            arr1(&format!("{p}.bias"))?,
            arr1(&format!("{p}.running_mean"))?,
            arr1(&format!("{p}.running_var"))?,
            BN_EPS,
        )?)
    };
    let se = |p: &str, b: &BlockSpec| -> Result<Option<SqueezeExcite>> {
        b.se_hidden
            .map(|r| {
                Ok(SqueezeExcite {
                    fc1_weight: arr2(&format!("{p}.attn.fc1.weight"), r, b.out_channels)?,
                    fc1_bias: arr1(&format!("{p}.attn.fc1.bias"))?,
                    fc2_weight: arr2(&format!("{p}.attn.fc2.weight"), b.out_channels, r)?,
                    fc2_bias: arr1(&format!("{p}.attn.fc2.bias"))?,
                })
            })
            .transpose()
    };
    let head = Head {
        weight: arr2(
            "head.fc.weight",
            config.num_classes,
            config.feature_channels(),
        )?,
        bias: arr1("head.fc.bias")?,
    };
    let blocks = config.blocks();
    Ok(match form {
        Form::Train => {
            let stages = map_blocks(&blocks, |p, b| {
                let branches = RepVggBranches {
                    spec: block_spec(b)?,
                    dense: ConvBn::new(
                        arr4(&format!("{p}.conv_kxk.conv.weight"))?,
                        None,
                        bn(&format!("{p}.conv_kxk.bn"))?,
                    ),
                    one_by_one: Some(ConvBn::new(
                        arr4(&format!("{p}.conv_1x1.conv.weight"))?,
                        None,
                        bn(&format!("{p}.conv_1x1.bn"))?,
                    )),
                    identity: if b.identity {
                        Some(bn(&format!("{p}.identity"))?)
                    } else {
                        None
                    },
                };
                Ok(TrainBlock {
                    branches,
                    se: se(p, b)?,
                })
            })?;
            LoadedModel::Train(RepVgg {
                config: config.clone(),
                stages,
                head,
            })
        }
        Form::Deploy => {
            let stages = map_blocks(&blocks, |p, b| {
                let conv = FusedConv {
                    weight: arr4(&format!("{p}.reparam_conv.weight"))?,
                    bias: arr1(&format!("{p}.reparam_conv.bias"))?,
                    spec: block_spec(b)?,
                };
                Ok(DeployBlock {
                    conv,
                    se: se(p, b)?,
                })
            })?;
            LoadedModel::Deploy(RepVgg {
                config: config.clone(),
                stages,
                head,
            })
        }
    })
}

/// Builds every block of every stage (stem first) from its timm key prefix and shape.
fn map_blocks<B>(
    blocks: &[Vec<BlockSpec>],
    f: impl Fn(&str, &BlockSpec) -> Result<B>,
) -> Result<Vec<Vec<B>>> {
    blocks
        .iter()
        .enumerate()
        .map(|(si, st)| {
            st.iter()
                .enumerate()
                .map(|(j, b)| f(&block_prefix(si, j), b))
                .collect()
        })
        .collect()
}

/// `stage0.x` → `stem.x`, `stageN.j.rbr_dense.x` → `stages.{N-1}.j.conv_kxk.x`, and so on.
pub fn official_to_timm(key: &str) -> String {
    let mut parts: Vec<String> = key.split('.').map(str::to_string).collect();
    if let Some(first) = parts.first().cloned() {
        if first == "linear" {
            parts.splice(0..1, ["head".to_string(), "fc".to_string()]);
        } else if let Some(n) = first
            .strip_prefix("stage")
            .and_then(|n| n.parse::<usize>().ok())
        {
            if n == 0 {
                parts[0] = "stem".into();
            } else {
                parts.splice(0..1, ["stages".to_string(), (n - 1).to_string()]);
            }
        }
    }
    let mut out: Vec<String> = Vec::with_capacity(parts.len());
    for p in parts {
        match (out.last().map(String::as_str), p.as_str()) {
            (_, "rbr_dense") => out.push("conv_kxk".into()),
            (_, "rbr_1x1") => out.push("conv_1x1".into()),
            (_, "rbr_identity") => out.push("identity".into()),
            (_, "rbr_reparam") => out.push("reparam_conv".into()),
            (Some("se"), "down") => {
                out.pop();
                out.extend(["attn".into(), "fc1".into()]);
            }
            (Some("se"), "up") => {
                out.pop();
                out.extend(["attn".into(), "fc2".into()]);
            }
            _ => out.push(p),
        }
    }
    out.join(".")
}

/// The inverse of [`official_to_timm`].
pub fn timm_to_official(key: &str) -> String {
    let parts: Vec<&str> = key.split('.').collect();
    let mut out: Vec<String> = Vec::with_capacity(parts.len());
    let mut i = 0;
    while i < parts.len() {
        let p = parts[i];
        match (i, p) {
            (0, "stem") => out.push("stage0".into()),
            (0, "stages") if i + 1 < parts.len() => {
                match parts[1]
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| n.checked_add(1))
                {
                    Some(n) => out.push(format!("stage{n}")),
                    None => out.extend(["stages".into(), parts[1].into()]),
                }
                i += 1;
            }
            (0, "head") if parts.get(1) == Some(&"fc") => {
                out.push("linear".into());
                i += 1;
            }
            (_, "conv_kxk") => out.push("rbr_dense".into()),
            (_, "conv_1x1") => out.push("rbr_1x1".into()),
            (_, "identity") => out.push("rbr_identity".into()),
            (_, "reparam_conv") => out.push("rbr_reparam".into()),
            (_, "attn") if matches!(parts.get(i + 1), Some(&"fc1") | Some(&"fc2")) => {
                out.extend([
                    "se".into(),
                    if parts[i + 1] == "fc1" {
                        "down".into()
                    } else {
                        "up".into()
                    },
                ]);
                i += 1;
            }
            _ => out.push(p.into()),
        }
        i += 1;
    }
    out.join(".")
}

/// Every tensor of a deployed model (timm naming) as a view with the shape it is saved with,
/// in key order.
fn deploy_views(
    model: &DeployModel,
) -> BTreeMap<String, (Vec<usize>, ndarray::ArrayViewD<'_, f32>)> {
    let mut out = BTreeMap::new();
    for (si, stage) in model.stages.iter().enumerate() {
        for (j, b) in stage.iter().enumerate() {
            let p = block_prefix(si, j);
            let w = &b.conv.weight;
            out.insert(
                format!("{p}.reparam_conv.weight"),
                (w.shape().to_vec(), w.view().into_dyn()),
            );
            let bias = &b.conv.bias;
            out.insert(
                format!("{p}.reparam_conv.bias"),
                (bias.shape().to_vec(), bias.view().into_dyn()),
            );
            if let Some(se) = &b.se {
                let (r, c) = se.fc1_weight.dim();
                out.insert(
                    format!("{p}.attn.fc1.weight"),
                    (vec![r, c, 1, 1], se.fc1_weight.view().into_dyn()),
                );
                out.insert(
                    format!("{p}.attn.fc1.bias"),
                    (vec![r], se.fc1_bias.view().into_dyn()),
                );
                out.insert(
                    format!("{p}.attn.fc2.weight"),
                    (vec![c, r, 1, 1], se.fc2_weight.view().into_dyn()),
                );
                out.insert(
                    format!("{p}.attn.fc2.bias"),
                    (vec![c], se.fc2_bias.view().into_dyn()),
                );
            }
        }
    }
    let h = &model.head;
    out.insert(
        "head.fc.weight".into(),
        (h.weight.shape().to_vec(), h.weight.view().into_dyn()),
    );
    out.insert(
        "head.fc.bias".into(),
        (h.bias.shape().to_vec(), h.bias.view().into_dyn()),
    );
    out
}

/// All tensors of a deployed model (timm naming, f32), in key order.
pub fn deploy_tensors(model: &DeployModel) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    deploy_views(model)
        .into_iter()
        .map(|(k, (shape, v))| (k, (shape, v.iter().copied().collect())))
        .collect()
}

/// Writes a deployed model as f32 safetensors in the given naming (through
/// [`tensor_io::write_atomically`](crate::tensor_io::write_atomically): never a truncated file).
pub fn save_deploy(model: &DeployModel, path: impl AsRef<Path>, naming: Naming) -> Result<()> {
    save_deploy_guarded(model, path.as_ref(), naming, &[])
}

/// [`save_deploy`] that refuses to replace any of `inputs` (e.g. the checkpoint it came from).
pub fn save_deploy_guarded(
    model: &DeployModel,
    path: &Path,
    naming: Naming,
    inputs: &[&Path],
) -> Result<()> {
    let views = deploy_views(model).into_iter().map(|(k, (shape, v))| {
        let k = if naming == Naming::Official {
            timm_to_official(&k)
        } else {
            k
        };
        (k, crate::tensor_io::F32Tensor::new(shape, v))
    });
    let meta = std::collections::HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("repvgg_arch".to_string(), model.config.name.clone()),
    ]);
    crate::tensor_io::write_atomically(path, inputs, |tmp| {
        safetensors::serialize_to_file(views, Some(meta), tmp).map_err(|e| e.to_string())
    })
}
