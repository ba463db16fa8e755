#![no_main]

//! Structure-aware: a sequence of pickle opcodes (`arbitrary`-derived), rendered to pickle
//! bytes, wrapped in torch's zip layout or the legacy stream, and loaded.

use libfuzzer_sys::fuzz_target;
use repvgg_model::fuzzing::{PickleProgram, pickle_program};

fuzz_target!(|p: PickleProgram| pickle_program(&p));
