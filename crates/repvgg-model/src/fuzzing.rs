//! The entry points the fuzz targets in `fuzz/` drive, shared with the test that replays
//! their corpus (`tests/fuzz_corpus.rs`), so CI keeps every finding. Each takes arbitrary
//! bytes and must return (an error is fine) without panicking, aborting or allocating more
//! than the input justifies.

use std::path::Path;

use ndarray::Array4;

use crate::checkpoint;
use crate::preprocess::{self, PretrainedConfig};
use crate::tensor_io;

/// Checkpoint bytes → load → fuse → one tiny forward pass when the model is small.
pub fn checkpoint_bytes(data: &[u8]) {
    let Ok(ck) = checkpoint::load_bytes(data, Path::new("fuzz.safetensors")) else {
        return;
    };
    let Ok(deploy) = ck.model.into_deploy() else {
        return;
    };
    let c = deploy.config.in_channels;
    if c <= 16 && deploy.num_params() <= 1 << 16 {
        let x = Array4::from_elem((1, c, 5, 4), 0.5f32);
        let _ = deploy.forward(x.view());
    }
}

/// Image bytes → decode → timm's eval transform (224 and d2se's 320) and the digits
/// preprocessing.
pub fn image_bytes(data: &[u8]) {
    let Ok(img) = preprocess::decode_rgb(data, Path::new("fuzz.img")) else {
        return;
    };
    for cfg in [PretrainedConfig::imagenet_224(), PretrainedConfig::d2se()] {
        let _ = cfg.transform(&img);
    }
    let _ = preprocess::digits_input(&img);
}

/// Input-tensor bytes → `infer`'s checks: read the `input` tensor and check it against a
/// 3-channel network.
pub fn input_bytes(data: &[u8]) {
    let Ok(x) = tensor_io::read_input_bytes(data, Path::new("fuzz.safetensors")) else {
        return;
    };
    let _ = crate::model::check_input(3, &x.view());
}

/// A `torch.save` zip archive (PyTorch ≥ 1.6 layout, stored entries) holding `pickle` as
/// `archive/data.pkl` and each storage as `archive/data/<key>`.
pub fn torch_zip(pickle: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default())
        .large_file(pickle.len() > u32::MAX as usize / 2);
    let mut entries = vec![
        ("archive/data.pkl".to_string(), pickle),
        ("archive/byteorder".to_string(), b"little".as_slice()),
        ("archive/version".to_string(), b"3\n".as_slice()),
    ];
    entries.extend(
        storages
            .iter()
            .map(|(k, b)| (format!("archive/data/{k}"), *b)),
    );
    for (name, bytes) in entries {
        // Writing to memory cannot fail; a name the writer refuses is left out.
        if zip.start_file(name, opts).is_ok() {
            let _ = zip.write_all(bytes);
        }
    }
    zip.finish().map(|c| c.into_inner()).unwrap_or_default()
}

/// A pickle of `{"w0": t, "w1": t, ...}`: `names` names for one tensor `t`, all of storage `0`
/// (`numel` f32 values): a file whose state dict is `names` times its storage.
pub fn aliased_tensors_pickle(names: usize, numel: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0x02, b'}'];
    for i in 0..names {
        short_str(&mut p, &format!("w{i}"));
        if i == 0 {
            render_tensor(&mut p, 0, numel, 0, numel);
            p.extend([b'q', 1]);
        } else {
            p.extend([b'h', 1]);
        }
        p.push(b's');
    }
    p.push(b'.');
    p
}

/// A legacy (pre-1.6) `torch.save` file: the magic number, protocol version and sys-info
/// pickles, `object` (a pickle, as written), the storage keys, then each storage's element
/// count and bytes (elements of 4 bytes: f32 storages).
pub fn legacy_pth(object: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = vec![0x80, 0x02, 0x8a, 0x0a];
    out.extend(&0x1950_a86a_20f9_469c_fc6c_u128.to_le_bytes()[..10]);
    out.push(b'.');
    out.extend([0x80, 0x02, b'M', 0xe9, 0x03, b'.']); // 1001
    out.extend([0x80, 0x02, b'}', b'.']); // sys info
    out.extend(object);
    out.extend([0x80, 0x02, b']', b'(']);
    for (k, _) in storages {
        out.push(b'X');
        out.extend((k.len() as u32).to_le_bytes());
        out.extend(k.as_bytes());
    }
    out.extend([b'e', b'.']);
    for (_, b) in storages {
        out.extend((b.len() as u64 / 4).to_le_bytes());
        out.extend(*b);
    }
    out
}

/// A global a [`PickleOp::Global`] names: the allowed ones, and one that is not.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum PickleGlobal {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    FloatStorage,
    HalfStorage,
    LongStorage,
    OsSystem,
}

/// One pickle opcode and its argument, for the structure-aware `pickle` fuzz target.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum PickleOp {
    Proto(u8),
    Stop,
    Mark,
    Pop,
    PopMark,
    Dup,
    PyNone,
    Bool(bool),
    BinInt(i32),
    BinInt1(u8),
    BinInt2(u16),
    Long1(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    EmptyTuple,
    Tuple,
    Tuple1,
    Tuple2,
    Tuple3,
    EmptyList,
    List,
    Append,
    Appends,
    EmptyDict,
    Dict,
    SetItem,
    SetItems,
    Global(PickleGlobal),
    StackGlobal,
    Reduce,
    Build,
    BinPersId,
    BinPut(u8),
    LongBinPut(u32),
    Memoize,
    BinGet(u8),
    LongBinGet(u32),
    /// `('storage', torch.FloatStorage, key, 'cpu', numel)` and BINPERSID: a storage in a few
    /// bytes of input (storages `0`..`3` exist in the file).
    Storage {
        key: u8,
        numel: u16,
    },
    /// `_rebuild_tensor_v2(<that storage>, offset, (size,), (1,), False, OrderedDict())`.
    Tensor {
        key: u8,
        numel: u16,
        offset: u16,
        size: u16,
    },
    /// The `ops` opcodes before this one, `times` more times: how a few bytes of input reach
    /// the deep nesting (millions of opcodes) a hostile file uses.
    Repeat {
        ops: u8,
        times: u32,
    },
    /// Any byte, as an opcode.
    Raw(u8),
}

/// A pickle and how it is wrapped: in torch's zip layout or the legacy stream.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PickleProgram {
    pub legacy: bool,
    pub ops: Vec<PickleOp>,
}

/// The most bytes [`render_pickle`] writes (a repeat stops there).
pub const MAX_RENDERED_PICKLE: usize = 4 << 20;

fn global_line(g: PickleGlobal) -> &'static [u8] {
    match g {
        PickleGlobal::OrderedDict => b"ccollections\nOrderedDict\n",
        PickleGlobal::RebuildTensorV2 => b"ctorch._utils\n_rebuild_tensor_v2\n",
        PickleGlobal::RebuildParameter => b"ctorch._utils\n_rebuild_parameter\n",
        PickleGlobal::FloatStorage => b"ctorch\nFloatStorage\n",
        PickleGlobal::HalfStorage => b"ctorch\nHalfStorage\n",
        PickleGlobal::LongStorage => b"ctorch\nLongStorage\n",
        PickleGlobal::OsSystem => b"cposix\nsystem\n",
    }
}

/// `_rebuild_tensor_v2(storage, offset, (size,), (1,), False, OrderedDict())`.
fn render_tensor(out: &mut Vec<u8>, key: u8, numel: u16, offset: u16, size: u16) {
    out.extend(global_line(PickleGlobal::RebuildTensorV2));
    out.push(b'(');
    storage_pid(out, key, numel);
    out.push(b'M');
    out.extend(offset.to_le_bytes());
    out.push(b'M');
    out.extend(size.to_le_bytes());
    out.extend([0x85, b'K', 1, 0x85, 0x89]);
    out.extend(global_line(PickleGlobal::OrderedDict));
    out.extend([b')', b'R', b't', b'R']);
}

/// `('storage', torch.FloatStorage, key, 'cpu', numel)` and BINPERSID.
fn storage_pid(out: &mut Vec<u8>, key: u8, numel: u16) {
    out.push(b'(');
    short_str(out, "storage");
    out.extend(global_line(PickleGlobal::FloatStorage));
    short_str(out, &(key % 4).to_string());
    short_str(out, "cpu");
    out.push(b'M');
    out.extend(numel.to_le_bytes());
    out.extend([b't', b'Q']);
}

fn short_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(255)];
    out.push(0x8c);
    out.push(b.len() as u8);
    out.extend(b);
}

/// The pickle bytes of `ops` (protocol 2 header, no STOP added), at most
/// [`MAX_RENDERED_PICKLE`] of them.
pub fn render_pickle(ops: &[PickleOp]) -> Vec<u8> {
    let mut out = vec![0x80, 0x02];
    // Where each rendered opcode starts, for `Repeat`.
    let mut starts: Vec<usize> = Vec::new();
    for op in ops {
        if out.len() > MAX_RENDERED_PICKLE {
            break;
        }
        let at = out.len();
        match op {
            PickleOp::Proto(p) => out.extend([0x80, *p]),
            PickleOp::Stop => out.push(b'.'),
            PickleOp::Mark => out.push(b'('),
            PickleOp::Pop => out.push(b'0'),
            PickleOp::PopMark => out.push(b'1'),
            PickleOp::Dup => out.push(b'2'),
            PickleOp::PyNone => out.push(b'N'),
            PickleOp::Bool(b) => out.push(if *b { 0x88 } else { 0x89 }),
            PickleOp::BinInt(v) => {
                out.push(b'J');
                out.extend(v.to_le_bytes());
            }
            PickleOp::BinInt1(v) => out.extend([b'K', *v]),
            PickleOp::BinInt2(v) => {
                out.push(b'M');
                out.extend(v.to_le_bytes());
            }
            PickleOp::Long1(b) => {
                let b = &b[..b.len().min(255)];
                out.extend([0x8a, b.len() as u8]);
                out.extend(b);
            }
            PickleOp::Float(v) => {
                out.push(b'G');
                out.extend(v.to_be_bytes());
            }
            PickleOp::Str(s) => short_str(&mut out, s),
            PickleOp::Bytes(b) => {
                out.push(b'B');
                out.extend((b.len() as u32).to_le_bytes());
                out.extend(b);
            }
            PickleOp::EmptyTuple => out.push(b')'),
            PickleOp::Tuple => out.push(b't'),
            PickleOp::Tuple1 => out.push(0x85),
            PickleOp::Tuple2 => out.push(0x86),
            PickleOp::Tuple3 => out.push(0x87),
            PickleOp::EmptyList => out.push(b']'),
            PickleOp::List => out.push(b'l'),
            PickleOp::Append => out.push(b'a'),
            PickleOp::Appends => out.push(b'e'),
            PickleOp::EmptyDict => out.push(b'}'),
            PickleOp::Dict => out.push(b'd'),
            PickleOp::SetItem => out.push(b's'),
            PickleOp::SetItems => out.push(b'u'),
            PickleOp::Global(g) => out.extend(global_line(*g)),
            PickleOp::StackGlobal => out.push(0x93),
            PickleOp::Reduce => out.push(b'R'),
            PickleOp::Build => out.push(b'b'),
            PickleOp::BinPersId => out.push(b'Q'),
            PickleOp::BinPut(i) => out.extend([b'q', *i]),
            PickleOp::LongBinPut(i) => {
                out.push(b'r');
                out.extend(i.to_le_bytes());
            }
            PickleOp::Memoize => out.push(0x94),
            PickleOp::BinGet(i) => out.extend([b'h', *i]),
            PickleOp::LongBinGet(i) => {
                out.push(b'j');
                out.extend(i.to_le_bytes());
            }
            PickleOp::Storage { key, numel } => storage_pid(&mut out, *key, *numel),
            PickleOp::Tensor {
                key,
                numel,
                offset,
                size,
            } => render_tensor(&mut out, *key, *numel, *offset, *size),
            PickleOp::Repeat { ops, times } => {
                let n = usize::from(*ops).min(starts.len());
                if n > 0 {
                    let from = starts[starts.len() - n];
                    let chunk = out[from..].to_vec();
                    let room = MAX_RENDERED_PICKLE.saturating_sub(out.len());
                    let reps = (*times as usize).min(room.checked_div(chunk.len()).unwrap_or(0));
                    for _ in 0..reps {
                        out.extend(&chunk);
                    }
                }
            }
            PickleOp::Raw(b) => out.push(*b),
        }
        starts.push(at);
    }
    out
}

/// The storages a rendered pickle may refer to: keys `0`..`3`, 64 f32 values each.
fn fuzz_storages() -> Vec<(String, Vec<u8>)> {
    (0..4)
        .map(|k| {
            let data = (0..64u32)
                .flat_map(|i| (i as f32 * 0.25 - 4.0 + k as f32).to_le_bytes())
                .collect();
            (k.to_string(), data)
        })
        .collect()
}

/// A [`PickleProgram`] rendered, wrapped as a `.pth` file and loaded like [`checkpoint_bytes`]
/// (through [`crate::pth::read_state_dict`] and the checkpoint loader).
pub fn pickle_program(p: &PickleProgram) {
    let mut pickle = render_pickle(&p.ops);
    pickle.push(b'.');
    let storages = fuzz_storages();
    let refs: Vec<(&str, &[u8])> = storages
        .iter()
        .map(|(k, b)| (k.as_str(), b.as_slice()))
        .collect();
    let file = if p.legacy {
        legacy_pth(&pickle, &refs)
    } else {
        torch_zip(&pickle, &refs)
    };
    let _ = crate::pth::read_state_dict(&file, Path::new("fuzz.pth"));
    checkpoint_bytes(&file);
}

// Hostile pickles for the nesting limits (tests of the library and of the CLI).

/// Protocol 2, `body`, STOP.
pub fn pickle(body: impl IntoIterator<Item = u8>) -> Vec<u8> {
    let mut p = vec![0x80, 0x02];
    p.extend(body);
    p.push(b'.');
    p
}

/// `()` then TUPLE1 `n` times: `((((),),),)...`.
pub fn nested_tuples(n: usize) -> Vec<u8> {
    pickle(std::iter::once(b')').chain(std::iter::repeat_n(0x85, n)))
}

/// MARK `n` times (then None).
pub fn open_marks(n: usize) -> Vec<u8> {
    pickle(std::iter::repeat_n(b'(', n).chain([b'N']))
}

/// `n + 1` empty lists, then APPEND `n` times: each list appended into the one below it.
pub fn nested_lists(n: usize) -> Vec<u8> {
    pickle(std::iter::repeat_n(b']', n + 1).chain(std::iter::repeat_n(b'a', n)))
}

/// `{}, 0` `n` times and `{}`, then SETITEM `n` times: `{0: {0: {0: ...}}}`.
pub fn nested_dicts(n: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for _ in 0..n {
        body.extend([b'}', b'K', 0]);
    }
    body.push(b'}');
    body.extend(std::iter::repeat_n(b's', n));
    pickle(body)
}

/// A list memoized then appended to itself `n` times (a cycle, as Python's memo allows).
pub fn self_appending_list(n: usize) -> Vec<u8> {
    let mut body = vec![b']', b'q', 0];
    for _ in 0..n {
        body.extend([b'h', 0, b'a']);
    }
    pickle(body)
}
