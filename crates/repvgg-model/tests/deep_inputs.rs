//! Hostile files whose data nests without bound (issue 27): a ~2 MB `.pth` of legal pickle that
//! nests tuples, lists or dicts a million levels deep, or opens a million MARKs, used to
//! overflow the stack while the unpickler built or dropped the tree. Each file is generated
//! here (none is committed) and read on a thread with a deliberately small stack (256 KiB), so
//! a regression to anything recursive over the data fails loudly; each must give the exact
//! error naming the file and the limit. Also: a safetensors header of deeply nested JSON, whose
//! parser (serde_json) keeps its recursion limit.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::path::Path;

use repvgg_model::fuzzing::{legacy_pth, torch_zip};
use repvgg_model::fuzzing::{
    nested_dicts, nested_lists, nested_tuples, open_marks, pickle, self_appending_list,
};
use repvgg_model::pth::{MAX_PICKLE_NESTING, MAX_TENSOR_RANK};
use repvgg_model::{ModelError, checkpoint, pth, tensor_io};

/// How deep the hostile files nest: about two million opcodes, a ~2 MB file.
const DEEP: usize = 2_000_000;

/// Runs `f` on a thread with a 256 KiB stack and returns its result (a stack overflow aborts
/// the whole test binary: loud).
fn small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("the reader panicked")
}

/// `pickle` as a `torch.save` zip archive, read through `checkpoint::load` from a file, and
/// through `pth::read_state_dict` from memory, both on a small stack; the two errors must be
/// the same `ModelError::Pth`, whose message is returned (the file's path shown as `$FILE`).
fn load_zip(name: &str, pickle: Vec<u8>) -> String {
    load_file(name, torch_zip(&pickle, &[]))
}

fn load_legacy(name: &str, object: Vec<u8>) -> String {
    load_file(name, legacy_pth(&object, &[]))
}

fn load_file(name: &str, bytes: Vec<u8>) -> String {
    assert!(pth::is_pth(&bytes));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, &bytes).unwrap();
    let p = path.clone();
    let from_file = small_stack(move || checkpoint::load(&p).map(|_| ()));
    let p = path.clone();
    let from_memory = small_stack(move || pth::read_state_dict(&bytes, &p).map(|_| ()));
    let e = from_file.expect_err("a hostile file must not load");
    assert!(matches!(e, ModelError::Pth { .. }), "{e:?}");
    let e2 = from_memory.expect_err("a hostile file must not load");
    assert_eq!(e.to_string(), e2.to_string());
    e.to_string().replace(path.to_str().unwrap(), "$FILE")
}

/// The nesting error, naming the file and the limit.
fn nesting(at: usize) -> String {
    format!(
        "$FILE: cannot load as a PyTorch checkpoint: pickle: containers nest more than \
         {MAX_PICKLE_NESTING} levels deep (at pickle byte {at}); the limit is {MAX_PICKLE_NESTING}"
    )
}

#[test]
fn the_limits_are_the_documented_ones() {
    assert_eq!(MAX_PICKLE_NESTING, 64);
    assert_eq!(MAX_TENSOR_RANK, 16);
}

#[test]
fn deeply_nested_tuples_are_refused_at_the_nesting_limit() {
    let p = nested_tuples(DEEP);
    assert!(p.len() > 1_900_000);
    // `()` at byte 2 is one level; the TUPLE1 at byte 2 + k makes k + 1.
    assert_eq!(load_zip("tuples.pth", p), nesting(2 + MAX_PICKLE_NESTING));
}

#[test]
fn a_million_open_marks_are_refused_at_the_mark_limit() {
    let msg = load_zip("marks.pth", open_marks(DEEP));
    assert_eq!(
        msg,
        format!(
            "$FILE: cannot load as a PyTorch checkpoint: pickle: more than {MAX_PICKLE_NESTING} \
             MARKs open (at pickle byte {}); the limit is {MAX_PICKLE_NESTING}",
            2 + MAX_PICKLE_NESTING
        )
    );
}

#[test]
fn deeply_nested_lists_are_refused_at_the_nesting_limit() {
    // The lists are pushed (bytes 2..), then each APPEND nests one more level.
    let n = DEEP / 2;
    let first_append = 2 + n + 1;
    assert_eq!(
        load_zip("lists.pth", nested_lists(n)),
        nesting(first_append + MAX_PICKLE_NESTING - 1)
    );
}

#[test]
fn deeply_nested_dicts_are_refused_at_the_nesting_limit() {
    let n = DEEP / 4;
    let first_setitem = 2 + 3 * n + 1;
    assert_eq!(
        load_zip("dicts.pth", nested_dicts(n)),
        nesting(first_setitem + MAX_PICKLE_NESTING - 1)
    );
}

#[test]
fn a_list_appended_to_itself_is_refused_at_the_nesting_limit() {
    // Each APPEND of the list into itself nests one more level: the 64th goes past the limit.
    let at = 5 + 3 * (MAX_PICKLE_NESTING - 1) + 2;
    assert_eq!(
        load_zip("cycle.pth", self_appending_list(DEEP / 3)),
        nesting(at)
    );
}

#[test]
fn legacy_files_have_the_same_limits() {
    assert_eq!(
        load_legacy("tuples.legacy.pth", nested_tuples(DEEP)),
        nesting(2 + MAX_PICKLE_NESTING).replace(
            "checkpoint: pickle:",
            "checkpoint: legacy torch file, object pickle: pickle:"
        )
    );
    let msg = load_legacy("marks.legacy.pth", open_marks(DEEP));
    assert!(
        msg.starts_with(
            "$FILE: cannot load as a PyTorch checkpoint: legacy torch file, object pickle: \
             pickle: more than 64 MARKs open"
        ),
        "{msg}"
    );
}

#[test]
fn nesting_up_to_the_limit_is_read() {
    // 64 levels of tuples is legal: the error is then about what the file holds, not its depth.
    let msg = load_zip("ok_depth.pth", nested_tuples(MAX_PICKLE_NESTING - 1));
    assert_eq!(
        msg,
        "$FILE: cannot load as a PyTorch checkpoint: the file holds a tuple, not a dict of tensors"
    );
}

/// `{'w': _rebuild_tensor_v2(storage '0' of 4 floats, 0, size, stride)}` with `rank` dimensions
/// of size 1.
fn tensor_of_rank(rank: usize) -> Vec<u8> {
    let mut b = vec![b'}', 0x8c, 1, b'w'];
    b.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    b.extend([b'(', 0x8c, 7]);
    b.extend(b"storage");
    b.extend(b"ctorch\nFloatStorage\n");
    b.extend([0x8c, 1, b'0', 0x8c, 3]);
    b.extend(b"cpu");
    b.extend([b'K', 4, b't', b'Q', b'K', 0]);
    for _ in 0..2 {
        b.push(b'(');
        b.extend(std::iter::repeat_n([b'K', 1], rank).flatten());
        b.push(b't');
    }
    b.extend([b't', b'R', b's']);
    pickle(b)
}

#[test]
fn a_tensor_of_too_many_dimensions_is_refused_at_the_rank_limit() {
    let four = vec![0u8; 16];
    let ok = torch_zip(&tensor_of_rank(MAX_TENSOR_RANK), &[("0", four.as_slice())]);
    let t = pth::read_state_dict(&ok, Path::new("ok.pth")).unwrap();
    assert_eq!(t["w"].shape, vec![1; MAX_TENSOR_RANK]);
    let bad = torch_zip(&tensor_of_rank(100_000), &[("0", four.as_slice())]);
    let e = small_stack(move || pth::read_state_dict(&bad, Path::new("rank.pth"))).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "rank.pth: cannot load as a PyTorch checkpoint: tensor size has 100000 dimensions; \
             the limit is {MAX_TENSOR_RANK}"
        )
    );
}

/// A safetensors file whose JSON header nests `depth` arrays.
fn deep_json_safetensors(depth: usize) -> Vec<u8> {
    let header = format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header.as_bytes());
    b
}

#[test]
fn a_deeply_nested_safetensors_header_hits_the_json_recursion_limit() {
    let bytes = deep_json_safetensors(1_000_000);
    let b = bytes.clone();
    let e =
        small_stack(move || checkpoint::load_bytes(&b, Path::new("deep.safetensors"))).unwrap_err();
    assert!(matches!(e, ModelError::Format { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "deep.safetensors is not a valid safetensors file: invalid JSON in header: recursion \
         limit exceeded at line 1 column 132"
    );
    let e = small_stack(move || {
        tensor_io::read_input_bytes(&bytes, Path::new("deep_input.safetensors"))
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "deep_input.safetensors is not a valid safetensors file: invalid JSON in header: \
         recursion limit exceeded at line 1 column 132"
    );
}

/// A 1.1 MB `.pth` naming one 64 KiB storage 100000 times would be 6.5 GB of tensors: refused
/// at the size budget, before the first copy past it is made.
#[test]
fn many_names_for_one_storage_are_refused_at_the_size_budget() {
    use repvgg_model::fuzzing::aliased_tensors_pickle;
    use repvgg_model::pth::MAX_TENSOR_BYTES_PER_FILE_BYTE;
    let storage = vec![0u8; 4 * 16384];
    let two = torch_zip(
        &aliased_tensors_pickle(2, 16384),
        &[("0", storage.as_slice())],
    );
    let t = pth::read_state_dict(&two, Path::new("two.pth")).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t["w1"].data.len(), storage.len());

    let file = torch_zip(
        &aliased_tensors_pickle(100_000, 16384),
        &[("0", storage.as_slice())],
    );
    let len = file.len() as u64;
    let e = small_stack(move || pth::read_state_dict(&file, Path::new("alias.pth"))).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "alias.pth: cannot load as a PyTorch checkpoint: the state dict's tensors total more \
             than {} bytes, {MAX_TENSOR_BYTES_PER_FILE_BYTE} times the file's {len} bytes (the \
             limit; each tensor counts in full, even when several view one storage)",
            len * MAX_TENSOR_BYTES_PER_FILE_BYTE
        )
    );
}
