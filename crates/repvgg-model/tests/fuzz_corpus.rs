//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`: minimized inputs, the seeds
//! and every finding) through the entry points the fuzz targets drive, so each finding stays
//! fixed on stable Rust. Fuzzing itself: `cargo +nightly fuzz run <target>` in `fuzz/`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::path::PathBuf;

use repvgg_model::fuzzing;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

fn replay(target: &str, f: fn(&[u8])) {
    let inputs = corpus(target);
    assert!(!inputs.is_empty(), "fuzz/corpus/{target} is empty");
    for (path, bytes) in inputs {
        // A panic names the input that caused it.
        let r = std::panic::catch_unwind(|| f(&bytes));
        assert!(r.is_ok(), "{target}: {} panicked", path.display());
    }
}

#[test]
fn checkpoint_corpus_replays() {
    replay("checkpoint", fuzzing::checkpoint_bytes);
}

#[test]
fn image_corpus_replays() {
    replay("image", fuzzing::image_bytes);
}

#[test]
fn input_corpus_replays() {
    replay("input", fuzzing::input_bytes);
}

/// The structure-aware target's inputs, decoded as libFuzzer's `fuzz_target!` does
/// (`arbitrary_take_rest`); bytes that decode to nothing are skipped, as there.
fn pickle_input(data: &[u8]) {
    use arbitrary::Arbitrary;
    let u = arbitrary::Unstructured::new(data);
    if let Ok(p) = fuzzing::PickleProgram::arbitrary_take_rest(u) {
        fuzzing::pickle_program(&p);
    }
}

#[test]
fn pickle_corpus_replays() {
    replay("pickle", pickle_input);
}
