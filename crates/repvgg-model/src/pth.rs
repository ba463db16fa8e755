//! PyTorch checkpoints (`torch.save`, `.pth` / `.pt`) read safely, without Python.
//!
//! A `torch.save` file is a zip archive holding `<name>/data.pkl` (a pickle of the saved object,
//! tensors referring to storages by key) and one raw little-endian file `<name>/data/<key>` per
//! storage. The legacy (pre-1.6) format is a plain sequence of pickles followed by the raw storages.
//!
//! Unpickling here is a small opcode interpreter that never calls anything: a pickle global is
//! only *named*, and the only globals accepted are those a tensor state_dict needs
//! (`torch._utils._rebuild_tensor_v2` / `_rebuild_parameter`, the `torch.*Storage` classes,
//! `collections.OrderedDict`), like `torch.load(weights_only=True)`. Anything else — `os.system`,
//! `argparse.Namespace`, a model class — is an error naming the global. Every length, offset,
//! size and stride is checked against the bytes actually present before it is used, so a crafted
//! file gives an error, never a panic or a huge allocation.
//!
//! Nothing here recurses over the file's data: the interpreter is a loop, containers live in a
//! flat heap and refer to each other by index (so dropping a deep or cyclic structure is a
//! loop too), and the nesting a file may build is capped ([`MAX_PICKLE_NESTING`]), as is a
//! tensor's rank ([`MAX_TENSOR_RANK`]). A crafted file therefore gets an error naming the file
//! and the limit, not a stack overflow, whatever the size of the stack it is read on.
//!
//! [`read_state_dict`] gives the tensors in memory; [`crate::checkpoint`] builds the model from
//! them with the same architecture inference and strict key checks as for safetensors.

use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read};
use std::path::Path;
use std::rc::Rc;

use safetensors::{Dtype, tensor::TensorView};

use crate::error::{ModelError, Result};

pub use crate::sniff::{is_legacy_pickle, is_pth, is_torch_zip};

/// One tensor of a state_dict: its dtype, shape and contiguous little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct PthTensor {
    /// The element type, as safetensors names it.
    pub dtype: Dtype,
    /// The tensor's shape, outermost dimension first.
    pub shape: Vec<usize>,
    /// The elements in row-major order, little-endian, `shape` product times the dtype's size.
    pub data: Vec<u8>,
}

/// Reads the state_dict of a `.pth` file: a bare `{name: tensor}` dict, or one found under
/// `state_dict`, `model` or `model_state_dict` (nested up to three levels). Keys are kept as stored
/// (`module.` prefixes included).
pub fn read_state_dict(bytes: &[u8], path: &Path) -> Result<BTreeMap<String, PthTensor>> {
    let err = |reason: String| ModelError::Pth {
        path: path.into(),
        reason,
    };
    let mut heap = Heap::default();
    let (root, mut storages) = if is_torch_zip(bytes) {
        read_zip(bytes, &mut heap).map_err(err)?
    } else if is_legacy_pickle(bytes) {
        read_legacy(bytes, &mut heap).map_err(err)?
    } else {
        return Err(err(
            "neither a torch zip archive nor a legacy torch pickle".into()
        ));
    };
    let dict = find_state_dict(&heap, &root).map_err(err)?;
    let mut out = BTreeMap::new();
    // Tensors may view one storage many times (each name is a copy): bounded by the file's size.
    let budget = (bytes.len() as u64).saturating_mul(MAX_TENSOR_BYTES_PER_FILE_BYTE);
    let mut total = 0u64;
    for (k, v) in heap.dict(&dict) {
        let Value::Str(name) = k else {
            return Err(err(format!("state_dict key {} is not a string", k.kind())));
        };
        let Value::Tensor(t) = v else {
            return Err(err(format!(
                "state_dict entry `{name}` is {}, not a tensor",
                v.kind()
            )));
        };
        total = total
            .saturating_add((t.numel as u64).saturating_mul(dtype_size(t.storage.dtype) as u64));
        if total > budget {
            return Err(err(format!(
                "the state dict's tensors total more than {budget} bytes, \
                 {MAX_TENSOR_BYTES_PER_FILE_BYTE} times the file's {} bytes (the limit; each \
                 tensor counts in full, even when several view one storage)",
                bytes.len()
            )));
        }
        let data = storages
            .materialize(t)
            .map_err(|e| err(format!("tensor `{name}`: {e}")))?;
        out.insert(
            name.to_string(),
            PthTensor {
                dtype: t.storage.dtype,
                shape: t.shape.clone(),
                data,
            },
        );
    }
    Ok(out)
}

/// Converts a `.pth` file to safetensors bytes: same tensor names, dtypes and values.
/// (Loading does not go through this: [`crate::checkpoint`] reads [`read_state_dict`]'s tensors
/// directly.)
pub fn to_safetensors(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let tensors = read_state_dict(bytes, path)?;
    let views = tensors
        .iter()
        .map(|(k, t)| TensorView::new(t.dtype, t.shape.clone(), &t.data).map(|v| (k.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ModelError::Pth {
            path: path.into(),
            reason: e.to_string(),
        })?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(meta)).map_err(|e| ModelError::Pth {
        path: path.into(),
        reason: e.to_string(),
    })
}

type Res<T> = std::result::Result<T, String>;

// ------------------------------------------------------------------------------------------
// Containers: zip archive and legacy stream.

fn read_zip<'a>(bytes: &'a [u8], heap: &mut Heap) -> Res<(Value, Storages<'a>)> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("not a readable zip archive ({e}); truncated or corrupt?"))?;
    let pkl: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.to_string()))
        .filter(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        .collect();
    let pkl = match pkl.as_slice() {
        [one] => one.clone(),
        [] => return Err("the zip archive has no `data.pkl`: not a torch.save file".into()),
        many => return Err(format!("the zip archive has several pickles: {many:?}")),
    };
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    if let Ok(order) = read_entry(&mut zip, &format!("{prefix}byteorder"), 16)
        && order != b"little"
    {
        return Err(format!(
            "byte order `{}` is not supported (only little-endian)",
            String::from_utf8_lossy(&order)
        ));
    }
    // The pickle itself is bounded by the archive size.
    let data = read_entry(&mut zip, &pkl, bytes.len() as u64)?;
    let root = Unpickler::new(&data, heap).run()?;
    Ok((
        root,
        Storages {
            source: Source::Zip { zip, prefix },
            cache: HashMap::new(),
        },
    ))
}

/// Reads a whole entry of at most `limit` bytes.
fn read_entry(zip: &mut zip::ZipArchive<Cursor<&[u8]>>, name: &str, limit: u64) -> Res<Vec<u8>> {
    let f = zip
        .by_name(name)
        .map_err(|e| format!("zip entry `{name}`: {e}"))?;
    if f.size() > limit {
        return Err(format!(
            "zip entry `{name}` declares {} bytes, more than the {limit} expected",
            f.size()
        ));
    }
    let mut out = Vec::new();
    f.take(limit)
        .read_to_end(&mut out)
        .map_err(|e| format!("zip entry `{name}`: {e}"))?;
    Ok(out)
}

/// The legacy format: magic number, protocol version, sys info, the object, the storage keys
/// (five pickles, their containers in one heap), then per storage key an 8-byte element count
/// and the raw elements.
fn read_legacy<'a>(bytes: &'a [u8], heap: &mut Heap) -> Res<(Value, Storages<'a>)> {
    const MAGIC: u128 = 0x1950_a86a_20f9_469c_fc6c;
    let mut pos = 0;
    let mut dtypes = HashMap::new();
    let mut next = |heap: &mut Heap, what: &str| -> Res<Value> {
        let mut u = Unpickler::new(bytes.get(pos..).unwrap_or_default(), heap);
        let v = u
            .run()
            .map_err(|e| format!("legacy torch file, {what} pickle: {e}"))?;
        pos += u.pos;
        dtypes.extend(u.seen);
        Ok(v)
    };
    match next(heap, "magic number")? {
        Value::BigInt(b) if b == MAGIC => {}
        _ => return Err("not a torch file (the legacy magic number is missing)".into()),
    }
    match next(heap, "protocol version")? {
        Value::Int(1001) => {}
        other => {
            return Err(format!(
                "legacy protocol version ({}) is not 1001",
                other.kind()
            ));
        }
    }
    next(heap, "sys info")?;
    let root = next(heap, "object")?;
    let keys = match next(heap, "storage keys")? {
        l @ Value::List(_) => heap.seq(&l).to_vec(),
        other => return Err(format!("storage keys are {}, not a list", other.kind())),
    };
    let mut table = HashMap::new();
    let mut cursor = pos;
    for k in keys {
        let Value::Str(key) = k else {
            return Err(format!("storage key {} is not a string", k.kind()));
        };
        let head: [u8; 8] = bytes
            .get(cursor..cursor.saturating_add(8))
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| format!("storage `{key}`: the file ends before its size"))?;
        let n = u64::from_le_bytes(head);
        cursor += 8;
        let width = dtypes
            .get(&*key)
            .map(|d| dtype_size(*d) as u64)
            .ok_or_else(|| format!("storage `{key}` is used by no tensor"))?;
        let len = n
            .checked_mul(width)
            .filter(|&l| l <= (bytes.len() - cursor) as u64)
            .ok_or_else(|| {
                format!("storage `{key}` declares {n} elements, more than the file holds")
            })?;
        table.insert(key.to_string(), (cursor, n));
        cursor += len as usize;
    }
    Ok((
        root,
        Storages {
            source: Source::Legacy { bytes, table },
            cache: HashMap::new(),
        },
    ))
}

enum Source<'a> {
    Zip {
        zip: zip::ZipArchive<Cursor<&'a [u8]>>,
        prefix: String,
    },
    Legacy {
        bytes: &'a [u8],
        table: HashMap<String, (usize, u64)>,
    },
}

struct Storages<'a> {
    source: Source<'a>,
    cache: HashMap<String, Rc<Vec<u8>>>,
}

impl Storages<'_> {
    /// The bytes of a storage, exactly `numel * element size` of them, checked against the file.
    fn storage(&mut self, s: &StorageRef) -> Res<Rc<Vec<u8>>> {
        if let Some(b) = self.cache.get(&s.key) {
            return Ok(b.clone());
        }
        let need = s
            .numel
            .checked_mul(dtype_size(s.dtype) as u64)
            .ok_or_else(|| format!("storage `{}` size overflows", s.key))?;
        let data = match &mut self.source {
            Source::Zip { zip, prefix } => {
                let name = format!("{prefix}data/{}", s.key);
                let f = zip
                    .by_name(&name)
                    .map_err(|e| format!("storage `{}` (zip entry `{name}`): {e}", s.key))?;
                let have = f.size();
                if have < need {
                    return Err(format!(
                        "storage `{}` declares {} elements of {:?} ({need} bytes) but holds {have} bytes",
                        s.key, s.numel, s.dtype
                    ));
                }
                let mut out = Vec::new();
                f.take(need)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("storage `{}`: {e}", s.key))?;
                if (out.len() as u64) < need {
                    return Err(format!(
                        "storage `{}` holds {} bytes, {need} expected (truncated)",
                        s.key,
                        out.len()
                    ));
                }
                out
            }
            Source::Legacy { bytes, table } => {
                let &(start, n) = table
                    .get(&s.key)
                    .ok_or_else(|| format!("storage `{}` is not in the file", s.key))?;
                if n != s.numel {
                    return Err(format!(
                        "storage `{}` declares {} elements, the file {n}",
                        s.key, s.numel
                    ));
                }
                bytes
                    .get(start..)
                    .and_then(|b| b.get(..usize::try_from(need).ok()?))
                    .ok_or_else(|| {
                        format!(
                            "storage `{}` ({need} bytes) runs past the end of the file",
                            s.key
                        )
                    })?
                    .to_vec()
            }
        };
        let data = Rc::new(data);
        self.cache.insert(s.key.clone(), data.clone());
        Ok(data)
    }

    /// A tensor's elements in row-major order, gathered from its storage view.
    fn materialize(&mut self, t: &TensorRef) -> Res<Vec<u8>> {
        let storage = self.storage(&t.storage)?;
        let es = dtype_size(t.storage.dtype);
        let numel = t.numel;
        if numel == 0 {
            return Ok(Vec::new());
        }
        // Checked at REDUCE time: offset + sum((size-1)*stride) < storage numel, numel <= storage numel.
        let contiguous = {
            let mut expect = 1usize;
            let mut ok = true;
            for (&n, &s) in t.shape.iter().zip(&t.stride).rev() {
                if n != 1 && s != expect {
                    ok = false;
                }
                expect = expect.saturating_mul(n);
            }
            ok
        };
        let start = t.offset * es;
        if contiguous {
            return storage
                .get(start..start + numel * es)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| "view past the end of its storage".into());
        }
        let mut out = Vec::with_capacity(numel * es);
        let mut idx = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let e = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            let b = storage
                .get(e * es..(e + 1) * es)
                .ok_or("view past the end of its storage")?;
            out.extend_from_slice(b);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Ok(out)
    }
}

fn dtype_size(d: Dtype) -> usize {
    match d {
        Dtype::F64 | Dtype::I64 => 8,
        Dtype::F32 | Dtype::I32 => 4,
        Dtype::F16 | Dtype::BF16 | Dtype::I16 => 2,
        _ => 1,
    }
}

/// The state dict inside the loaded object: a walk of at most four dicts down, never deeper.
fn find_state_dict(heap: &Heap, root: &Value) -> Res<Value> {
    let mut cur = root.clone();
    for _ in 0..4 {
        let Value::Dict(_) = &cur else {
            return Err(format!(
                "the file holds {}, not a dict of tensors",
                cur.kind()
            ));
        };
        let entries = heap.dict(&cur);
        if entries.is_empty() || entries.iter().any(|(_, v)| matches!(v, Value::Tensor(_))) {
            return Ok(cur);
        }
        let next = ["state_dict", "model", "model_state_dict"]
            .iter()
            .find_map(|want| {
                entries
                    .iter()
                    .find(|(k, v)| {
                        matches!(k, Value::Str(s) if &**s == *want) && matches!(v, Value::Dict(_))
                    })
                    .map(|(_, v)| v.clone())
            });
        match next {
            Some(v) => cur = v,
            None => {
                // At most 20 keys are named: a crafted dict may have millions.
                let keys: Vec<&str> = entries
                    .iter()
                    .filter_map(|(k, _)| match k {
                        Value::Str(s) => Some(&**s),
                        _ => None,
                    })
                    .take(20)
                    .collect();
                let more = if entries.len() > keys.len() {
                    " ..."
                } else {
                    ""
                };
                return Err(format!(
                    "no tensors and no `state_dict` / `model` entry among the keys {keys:?}{more}"
                ));
            }
        }
    }
    Err("state_dict nested too deeply".into())
}

// ------------------------------------------------------------------------------------------
// The restricted unpickler.

/// The deepest a pickle's containers (tuples, lists, dicts) may nest, and the most MARKs that
/// may be open at once. A state dict nests a few levels (dict → tensor arguments → size tuple);
/// the limit only stops a crafted file from building a tree millions of levels deep.
pub const MAX_PICKLE_NESTING: usize = 64;

/// The most dimensions a tensor may have (RepVGG's have at most 4). Each tensor built keeps its
/// size and stride, so this also bounds what one 5-byte REDUCE can allocate.
pub const MAX_TENSOR_RANK: usize = 16;

/// How many bytes of tensors a file may give per byte of its own: a tensor is a copy of (part
/// of) a storage the file holds, but many names may view the same storage, each a copy.
pub const MAX_TENSOR_BYTES_PER_FILE_BYTE: u64 = 2;

/// The only globals a pickle may name.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    Storage(Dtype),
}

fn resolve_global(module: &str, name: &str) -> Res<Global> {
    Ok(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch", "FloatStorage") => Global::Storage(Dtype::F32),
        ("torch", "HalfStorage") => Global::Storage(Dtype::F16),
        ("torch", "BFloat16Storage") => Global::Storage(Dtype::BF16),
        ("torch", "DoubleStorage") => Global::Storage(Dtype::F64),
        ("torch", "LongStorage") => Global::Storage(Dtype::I64),
        ("torch", "IntStorage") => Global::Storage(Dtype::I32),
        ("torch", "ShortStorage") => Global::Storage(Dtype::I16),
        ("torch", "CharStorage") => Global::Storage(Dtype::I8),
        ("torch", "ByteStorage") => Global::Storage(Dtype::U8),
        ("torch", "BoolStorage") => Global::Storage(Dtype::BOOL),
        _ => {
            return Err(format!(
                "pickle global `{module}.{name}` is not allowed: only tensors \
                 (torch._utils._rebuild_tensor_v2, torch.*Storage), collections.OrderedDict and \
                 plain containers are loaded, nothing is executed"
            ));
        }
    })
}

#[derive(Debug, Clone, PartialEq)]
struct StorageRef {
    dtype: Dtype,
    key: String,
    numel: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct TensorRef {
    storage: Rc<StorageRef>,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
    numel: usize,
}

/// A pickled value. Containers live in a [`Heap`] and a value only names one by its index, so
/// no value owns another: dropping, cloning or comparing a value never recurses, however deep
/// the file nests its containers, and a container holding itself (the memo allows it, as in
/// Python) is just an index pointing back. Strings and bytes are shared, so the memo and DUP
/// copy a pointer, never the text.
#[derive(Debug, Clone)]
#[allow(dead_code)] // scalar payloads are only kept for `Debug`
enum Value {
    None,
    Bool(bool),
    Int(i64),
    BigInt(u128),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(usize),
    List(usize),
    Dict(usize),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Bool(_) => "a bool",
            Self::Int(_) | Self::BigInt(_) => "an int",
            Self::Float(_) => "a float",
            Self::Str(_) => "a string",
            Self::Bytes(_) => "bytes",
            Self::Tuple(_) => "a tuple",
            Self::List(_) => "a list",
            Self::Dict(_) => "a dict",
            Self::Global(_) => "a class or function",
            Self::Storage(_) => "a storage",
            Self::Tensor(_) => "a tensor",
        }
    }
}

/// A tuple's or list's items, or a dict's pairs, and how deep the container nests (1: it holds
/// no container), as recorded when items were added.
struct Obj<T> {
    depth: usize,
    items: Vec<T>,
}

/// Every container of a file's pickles (the legacy format's five share one). Flat vectors of
/// flat items: their drop is a loop, never a recursion.
#[derive(Default)]
struct Heap {
    seqs: Vec<Obj<Value>>,
    dicts: Vec<Obj<(Value, Value)>>,
}

impl Heap {
    /// How deep `v` nests (0 for a scalar).
    fn depth(&self, v: &Value) -> usize {
        match v {
            Value::Tuple(i) | Value::List(i) => self.seqs.get(*i).map_or(0, |o| o.depth),
            Value::Dict(i) => self.dicts.get(*i).map_or(0, |o| o.depth),
            _ => 0,
        }
    }

    /// The depth of a container holding `items` (and already `depth` deep), checked against
    /// [`MAX_PICKLE_NESTING`].
    fn nest<'v>(
        &self,
        depth: usize,
        items: impl Iterator<Item = &'v Value>,
        at: usize,
    ) -> Res<usize> {
        let d = items
            .map(|v| self.depth(v) + 1)
            .fold(depth.max(1), usize::max);
        if d > MAX_PICKLE_NESTING {
            return Err(format!(
                "pickle: containers nest more than {MAX_PICKLE_NESTING} levels deep (at pickle \
                 byte {at}); the limit is {MAX_PICKLE_NESTING}"
            ));
        }
        Ok(d)
    }

    fn new_seq(&mut self, items: Vec<Value>, at: usize) -> Res<usize> {
        let depth = self.nest(1, items.iter(), at)?;
        self.seqs.push(Obj { depth, items });
        Ok(self.seqs.len() - 1)
    }

    fn new_dict(&mut self, items: Vec<(Value, Value)>, at: usize) -> Res<usize> {
        let depth = self.nest(1, items.iter().flat_map(|(k, v)| [k, v]), at)?;
        self.dicts.push(Obj { depth, items });
        Ok(self.dicts.len() - 1)
    }

    fn extend_seq(&mut self, id: usize, items: Vec<Value>, at: usize) -> Res<()> {
        let old = self.seqs.get(id).map_or(1, |o| o.depth);
        let depth = self.nest(old, items.iter(), at)?;
        let o = self.seqs.get_mut(id).ok_or("pickle: no such list")?;
        o.depth = depth;
        o.items.extend(items);
        Ok(())
    }

    fn extend_dict(&mut self, id: usize, items: Vec<(Value, Value)>, at: usize) -> Res<()> {
        let old = self.dicts.get(id).map_or(1, |o| o.depth);
        let depth = self.nest(old, items.iter().flat_map(|(k, v)| [k, v]), at)?;
        let o = self.dicts.get_mut(id).ok_or("pickle: no such dict")?;
        o.depth = depth;
        o.items.extend(items);
        Ok(())
    }

    /// A tuple's or list's items (empty for anything else).
    fn seq(&self, v: &Value) -> &[Value] {
        match v {
            Value::Tuple(i) | Value::List(i) => {
                self.seqs.get(*i).map_or(&[], |o| o.items.as_slice())
            }
            _ => &[],
        }
    }

    /// A dict's pairs (empty for anything else).
    fn dict(&self, v: &Value) -> &[(Value, Value)] {
        match v {
            Value::Dict(i) => self.dicts.get(*i).map_or(&[], |o| o.items.as_slice()),
            _ => &[],
        }
    }
}

struct Unpickler<'a, 'h> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    heap: &'h mut Heap,
    /// The dtype of every storage key met, for the legacy format's raw data.
    seen: HashMap<String, Dtype>,
}

impl<'a, 'h> Unpickler<'a, 'h> {
    fn new(data: &'a [u8], heap: &'h mut Heap) -> Self {
        Self {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            heap,
            seen: HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "pickle truncated: {n} bytes wanted at byte {} of {}",
                    self.pos,
                    self.data.len()
                )
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Res<u8> {
        Ok(self.take(1)?[0])
    }
    fn le<const N: usize>(&mut self) -> Res<[u8; N]> {
        let s = self.take(N)?;
        s.try_into().map_err(|_| "pickle truncated".to_string())
    }
    fn len_u32(&mut self) -> Res<usize> {
        Ok(u32::from_le_bytes(self.le()?) as usize)
    }
    fn len_u64(&mut self) -> Res<usize> {
        usize::try_from(u64::from_le_bytes(self.le()?)).map_err(|_| "length too large".into())
    }
    fn line(&mut self) -> Res<&'a str> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("pickle truncated: unterminated line")?;
        let s = self.take(n + 1)?;
        std::str::from_utf8(&s[..n]).map_err(|_| "pickle: a global name is not UTF-8".into())
    }
    fn string(&mut self, n: usize) -> Res<Value> {
        let b = self.take(n)?;
        Ok(Value::Str(
            std::str::from_utf8(b)
                .map_err(|_| format!("pickle: invalid UTF-8 string at byte {}", self.pos))?
                .into(),
        ))
    }
    fn pop(&mut self) -> Res<Value> {
        self.stack
            .pop()
            .ok_or_else(|| format!("pickle stack underflow at byte {}", self.pos))
    }
    fn pop_mark(&mut self) -> Res<Vec<Value>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| format!("pickle: no MARK before byte {}", self.pos))?;
        if m > self.stack.len() {
            return Err(format!("pickle: MARK past the stack at byte {}", self.pos));
        }
        Ok(self.stack.split_off(m))
    }
    fn top(&self) -> Res<&Value> {
        self.stack
            .last()
            .ok_or_else(|| format!("pickle stack underflow at byte {}", self.pos))
    }
    fn memo_get(&self, i: u32) -> Res<Value> {
        self.memo
            .get(&i)
            .cloned()
            .ok_or_else(|| format!("pickle: memo {i} read before it was written"))
    }
    fn memo_put(&mut self, i: u32) -> Res<()> {
        let v = self.top()?.clone();
        self.memo.insert(i, v);
        Ok(())
    }
    fn push_seq(&mut self, items: Vec<Value>, at: usize, list: bool) -> Res<()> {
        let id = self.heap.new_seq(items, at)?;
        self.stack.push(if list {
            Value::List(id)
        } else {
            Value::Tuple(id)
        });
        Ok(())
    }
    fn push_dict(&mut self, items: Vec<(Value, Value)>, at: usize) -> Res<()> {
        let id = self.heap.new_dict(items, at)?;
        self.stack.push(Value::Dict(id));
        Ok(())
    }
    /// Adds items to the list on top of the stack.
    fn append(&mut self, items: Vec<Value>, at: usize, what: &str) -> Res<()> {
        let top = self.top()?;
        let Value::List(id) = *top else {
            return Err(format!("pickle: {what} to {}", top.kind()));
        };
        self.heap.extend_seq(id, items, at)
    }
    /// Adds pairs to the dict on top of the stack.
    fn set_items(&mut self, items: Vec<(Value, Value)>, at: usize, what: &str) -> Res<()> {
        let top = self.top()?;
        let Value::Dict(id) = *top else {
            return Err(format!("pickle: {what} on {}", top.kind()));
        };
        self.heap.extend_dict(id, items, at)
    }

    /// Runs to STOP and returns the value; `self.pos` is then the number of bytes used.
    /// A loop over opcodes with the pickle's stack and marks on the heap: nothing here recurses.
    fn run(&mut self) -> Res<Value> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(format!("pickle protocol {p} is not supported"));
                    }
                }
                0x95 => {
                    self.le::<8>()?; // FRAME: a length hint only
                }
                b'.' => {
                    return self.pop();
                }
                b'(' => {
                    if self.marks.len() >= MAX_PICKLE_NESTING {
                        return Err(format!(
                            "pickle: more than {MAX_PICKLE_NESTING} MARKs open (at pickle byte \
                             {at}); the limit is {MAX_PICKLE_NESTING}"
                        ));
                    }
                    self.marks.push(self.stack.len());
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.stack.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.stack.push(Value::Int(v.into()));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    self.stack.push(long(b)?);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.le()?);
                    self.stack.push(Value::Float(v));
                }
                b'X' => {
                    let n = self.len_u32()?;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                b'B' | b'T' => {
                    let n = self.len_u32()?;
                    let b = self.take(n)?;
                    self.stack.push(Value::Bytes(b.into()));
                }
                b'C' | b'U' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    self.stack.push(Value::Bytes(b.into()));
                }
                0x8e => {
                    let n = self.len_u64()?;
                    let b = self.take(n)?;
                    self.stack.push(Value::Bytes(b.into()));
                }
                b')' => self.push_seq(Vec::new(), at, false)?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_seq(items, at, false)?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(format!("pickle stack underflow at byte {at}"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_seq(items, at, false)?;
                }
                b']' => self.push_seq(Vec::new(), at, true)?,
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_seq(items, at, true)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v], at, "APPEND")?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items, at, "APPENDS")?;
                }
                b'}' => self.push_dict(Vec::new(), at)?,
                b'd' => {
                    let items = pairs(self.pop_mark()?)?;
                    self.push_dict(items, at)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![(k, v)], at, "SETITEM")?;
                }
                b'u' => {
                    let items = pairs(self.pop_mark()?)?;
                    self.set_items(items, at, "SETITEMS")?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack
                        .push(Value::Global(resolve_global(module, name)?));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&module, &name) {
                        (Value::Str(m), Value::Str(n)) => {
                            let g = resolve_global(m, n)?;
                            self.stack.push(Value::Global(g));
                        }
                        _ => return Err("pickle: STACK_GLOBAL of non-strings".into()),
                    }
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = self.reduce(f, args, at)?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop()?;
                    match (self.top()?, &state) {
                        // OrderedDict state from nn.Module.state_dict(): the `_metadata` attribute.
                        (Value::Dict(_), Value::Dict(_) | Value::None) => {}
                        // A tensor's python attributes (none for plain tensors).
                        (Value::Tensor(_), _) => {}
                        (other, _) => {
                            return Err(format!(
                                "pickle: BUILD (set state) of {} is not allowed",
                                other.kind()
                            ));
                        }
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let s = persistent_load(&*self.heap, &pid)?;
                    if let Value::Storage(s) = &s {
                        self.seen.insert(s.key.clone(), s.dtype);
                    }
                    self.stack.push(s);
                }
                b'q' => {
                    let i = self.u8()?;
                    self.memo_put(i.into())?;
                }
                b'r' => {
                    let i = u32::from_le_bytes(self.le()?);
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = u32::try_from(self.memo.len()).map_err(|_| "memo too large")?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()?;
                    let v = self.memo_get(i.into())?;
                    self.stack.push(v);
                }
                b'j' => {
                    let i = u32::from_le_bytes(self.le()?);
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                other => {
                    return Err(format!(
                        "pickle opcode 0x{other:02x} at byte {at} is not supported (only the \
                         binary opcodes torch.save writes are)"
                    ));
                }
            }
        }
    }

    fn reduce(&mut self, f: Value, args: Value, at: usize) -> Res<Value> {
        let Value::Global(g) = f else {
            return Err(format!(
                "pickle: call of {}, not an allowed global",
                f.kind()
            ));
        };
        let Value::Tuple(_) = args else {
            return Err(format!(
                "pickle: call arguments are {}, not a tuple",
                args.kind()
            ));
        };
        match g {
            Global::OrderedDict => {
                if !self.heap.seq(&args).is_empty() {
                    return Err("pickle: OrderedDict(...) with arguments is not supported".into());
                }
                let id = self.heap.new_dict(Vec::new(), at)?;
                Ok(Value::Dict(id))
            }
            Global::RebuildParameter => match self.heap.seq(&args) {
                [t @ Value::Tensor(_), ..] => Ok(t.clone()),
                _ => Err("pickle: _rebuild_parameter without a tensor".into()),
            },
            Global::RebuildTensorV2 => {
                let heap = &*self.heap;
                let [Value::Storage(s), offset, size, stride, ..] = heap.seq(&args) else {
                    return Err(
                        "pickle: _rebuild_tensor_v2 needs (storage, offset, size, stride, ...)"
                            .into(),
                    );
                };
                rebuild_tensor(heap, s, offset, size, stride).map(Value::Tensor)
            }
            Global::Storage(_) => {
                Err("pickle: a storage class called directly is not supported".into())
            }
        }
    }
}

/// A little-endian two's complement integer of up to 16 bytes.
fn long(b: &[u8]) -> Res<Value> {
    if b.is_empty() {
        return Ok(Value::Int(0));
    }
    if b.len() > 16 {
        return Err(format!("pickle: a {}-byte integer is too large", b.len()));
    }
    let neg = b[b.len() - 1] & 0x80 != 0;
    let mut buf = [if neg { 0xff } else { 0 }; 16];
    buf[..b.len()].copy_from_slice(b);
    let v = i128::from_le_bytes(buf);
    Ok(match i64::try_from(v) {
        Ok(i) => Value::Int(i),
        Err(_) if v > 0 => Value::BigInt(v as u128),
        Err(_) => return Err("pickle: a negative integer is too large".into()),
    })
}

fn pairs(items: Vec<Value>) -> Res<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return Err("pickle: odd number of dict items".into());
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn as_usize(v: &Value, what: &str) -> Res<usize> {
    match v {
        Value::Int(i) => usize::try_from(*i).map_err(|_| format!("{what} {i} is negative")),
        Value::BigInt(b) => Err(format!("{what} {b} is too large")),
        other => Err(format!("{what} is {}, not an int", other.kind())),
    }
}

/// A tensor's size or stride: a tuple (or list) of at most [`MAX_TENSOR_RANK`] ints.
fn usize_tuple(heap: &Heap, v: &Value, what: &str) -> Res<Vec<usize>> {
    let items = match v {
        Value::Tuple(_) | Value::List(_) => heap.seq(v),
        other => return Err(format!("{what} is {}, not a tuple", other.kind())),
    };
    if items.len() > MAX_TENSOR_RANK {
        return Err(format!(
            "{what} has {} dimensions; the limit is {MAX_TENSOR_RANK}",
            items.len()
        ));
    }
    items.iter().map(|x| as_usize(x, what)).collect()
}

/// `('storage', torch.FloatStorage, key, location, numel[, view_metadata])`.
fn persistent_load(heap: &Heap, pid: &Value) -> Res<Value> {
    let Value::Tuple(_) = pid else {
        return Err(format!(
            "pickle: persistent id is {}, expected a storage tuple",
            pid.kind()
        ));
    };
    match heap.seq(pid) {
        [
            Value::Str(tag),
            Value::Global(Global::Storage(dtype)),
            Value::Str(key),
            _location,
            numel,
            rest @ ..,
        ] if &**tag == "storage" && rest.len() <= 1 => {
            let numel = as_usize(numel, "storage size")? as u64;
            if let Some(v) = rest.first()
                && !matches!(v, Value::None)
            {
                return Err("legacy storage views are not supported".into());
            }
            Ok(Value::Storage(Rc::new(StorageRef {
                dtype: *dtype,
                key: key.to_string(),
                numel,
            })))
        }
        _ => Err(
            "pickle: persistent id is not a ('storage', torch.*Storage, key, location, size) tuple"
                .into(),
        ),
    }
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, ...)`, the view checked against the storage.
fn rebuild_tensor(
    heap: &Heap,
    s: &Rc<StorageRef>,
    offset: &Value,
    size: &Value,
    stride: &Value,
) -> Res<Rc<TensorRef>> {
    let offset = as_usize(offset, "storage offset")?;
    let shape = usize_tuple(heap, size, "tensor size")?;
    let stride = usize_tuple(heap, stride, "tensor stride")?;
    if shape.len() != stride.len() {
        return Err(format!(
            "tensor size {shape:?} and stride {stride:?} differ in rank"
        ));
    }
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &n| a.checked_mul(n))
        .ok_or_else(|| format!("tensor size {shape:?} overflows"))?;
    if numel as u64 > s.numel {
        return Err(format!(
            "a tensor of size {shape:?} ({numel} elements) views storage `{}` of only {} elements",
            s.key, s.numel
        ));
    }
    if numel > 0 {
        let last = shape
            .iter()
            .zip(&stride)
            .try_fold(offset, |a, (&n, &st)| {
                a.checked_add((n - 1).checked_mul(st)?)
            })
            .ok_or("tensor view overflows")?;
        if last as u64 >= s.numel {
            return Err(format!(
                "storage offset {offset} with size {shape:?} and stride {stride:?} reaches \
                 element {last}, past the end of storage `{}` ({} elements)",
                s.key, s.numel
            ));
        }
    }
    Ok(Rc::new(TensorRef {
        storage: s.clone(),
        offset,
        shape,
        stride,
        numel,
    }))
}
