#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| repvgg_model::fuzzing::checkpoint_bytes(data));
