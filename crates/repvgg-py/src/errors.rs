//! Rust errors as the Python exceptions of `repvgg.errors`, with the CLI's messages.

use std::any::Any;
use std::error::Error as StdError;
use std::panic::{AssertUnwindSafe, catch_unwind};

use pyo3::PyErr;
use repvgg_model::ModelError;

// The hierarchy is declared in Python (`python/repvgg/errors.py`), where an exception can also
// be an `OSError`, `ValueError`, `TypeError` or `RuntimeError`, so that `except ValueError`
// works as Python users expect.
pyo3::import_exception!(repvgg.errors, Error);
pyo3::import_exception!(repvgg.errors, FileError);
pyo3::import_exception!(repvgg.errors, CheckpointError);
pyo3::import_exception!(repvgg.errors, InputError);
pyo3::import_exception!(repvgg.errors, InputTypeError);
pyo3::import_exception!(repvgg.errors, DeviceError);

/// The message the `repvgg` binary prints for `e`: the error and its causes, joined by ": "
/// (anyhow's `{:#}`), on one line.
pub(crate) fn message(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        // `#[error(transparent)]` wrappers repeat their source's text.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out.replace('\n', " ")
}

/// The Python exception for a library error: which class depends on what went wrong, the
/// message is the CLI's.
pub(crate) fn to_py(e: ModelError) -> PyErr {
    let msg = message(&e);
    match e {
        ModelError::Io { .. } | ModelError::Save { .. } => FileError::new_err(msg),
        ModelError::Format { .. }
        | ModelError::Pth { .. }
        | ModelError::Architecture { .. }
        | ModelError::Keys { .. }
        | ModelError::NotTrainForm { .. }
        | ModelError::Config(_)
        | ModelError::UnknownArch(_) => CheckpointError::new_err(msg),
        ModelError::Input { .. } | ModelError::Image { .. } | ModelError::Math(_) => {
            InputError::new_err(msg)
        }
        ModelError::Gpu(_)
        | ModelError::Cpu(_)
        | ModelError::NotCompiled { .. }
        | ModelError::Unsupported(_) => DeviceError::new_err(msg),
        _ => Error::new_err(msg),
    }
}

/// Runs `f`, turning a panic (a bug of ours) into `repvgg.Error` instead of letting PyO3 raise
/// its `PanicException`, which is a `BaseException` that ordinary `except Exception` misses.
pub(crate) fn guarded<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, ModelError>,
) -> Result<T, PyErr> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py(e)),
        Err(payload) => Err(Error::new_err(format!(
            "internal error while {what}: {}; this is a bug in repvgg, please report it",
            panic_text(payload.as_ref())
        ))),
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a panic without a message"
    }
}
