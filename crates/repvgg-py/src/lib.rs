//! `repvgg._repvgg`, the extension module behind the Python package `repvgg`: the library's
//! [`repvgg_model::Model`] and [`repvgg_model::Runner`] over numpy arrays.
//!
//! Every call that computes releases the GIL, so one runner serves many Python threads (the
//! runner is `Sync`; each call gets the single-threaded result). Library errors become the
//! exceptions of `repvgg.errors` with the messages the `repvgg` binary prints.

mod errors;
mod input;

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use repvgg_model::onnx::ExportOptions;
use repvgg_model::{
    Device, Engine, Form, Model, ModelError, Naming, Precision, RunOptions, Runner,
};

use crate::errors::{InputError, guarded};
use crate::input::ImageSource;

/// A word argument (`device`, `precision`, `form`, `naming`) parsed by the library's own
/// `FromStr`, so Python accepts exactly what the CLI accepts.
fn word<T>(arg: &str, value: &str) -> PyResult<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| InputError::new_err(format!("{arg}: {e}")))
}

/// The engine of `device`, opened once per process: opening a GPU creates a wgpu device and
/// compiles pipelines, which every runner on the same device can share.
fn engine(device: &Device) -> Result<Engine, ModelError> {
    static ENGINES: Mutex<Vec<(Device, Engine)>> = Mutex::new(Vec::new());
    let mut engines = ENGINES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, e)) = engines.iter().find(|(d, _)| d == device) {
        return Ok(e.clone());
    }
    let e = Engine::open(device)?;
    engines.push((device.clone(), e.clone()));
    Ok(e)
}

/// A RepVGG model, loaded from a checkpoint or fused from another.
#[pyclass(name = "Model", module = "repvgg", frozen)]
struct PyModel {
    inner: Model,
}

#[pymethods]
impl PyModel {
    /// The variant's name (`repvgg_a0`, ...).
    #[getter]
    fn arch(&self) -> String {
        self.inner.arch().to_string()
    }

    /// Number of classes (columns of the logits).
    #[getter]
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }

    /// `"train"` (multi-branch) or `"deploy"` (fused).
    #[getter]
    fn form(&self) -> String {
        self.inner.form().to_string()
    }

    /// Input channels the model takes.
    #[getter]
    fn in_channels(&self) -> usize {
        self.inner.config().in_channels
    }

    /// The checkpoint's key naming: `"timm"` or `"official"`.
    #[getter]
    fn naming(&self) -> String {
        self.inner.naming().to_string()
    }

    /// The file it was loaded from, if any.
    #[getter]
    fn path(&self) -> Option<PathBuf> {
        self.inner.path().map(PathBuf::from)
    }

    /// The deployed (fused) form; a deploy-form model is returned as it is.
    fn fuse(&self, py: Python<'_>) -> PyResult<PyModel> {
        let inner = py.detach(|| guarded("fusing", || self.inner.fuse()))?;
        Ok(PyModel { inner })
    }

    /// Saves the deployed form as safetensors in `naming` (`"timm"` or `"official"`).
    #[pyo3(signature = (path, naming = "timm"))]
    fn save(&self, py: Python<'_>, path: PathBuf, naming: &str) -> PyResult<()> {
        let naming: Naming = word("naming", naming)?;
        py.detach(|| guarded("saving", || self.inner.save(&path, naming)))
    }

    /// Writes the deployed form as ONNX (input `input` [N, C, H, W], output `logits`).
    #[pyo3(signature = (path, opset = repvgg_model::onnx::DEFAULT_OPSET))]
    fn export_onnx(&self, py: Python<'_>, path: PathBuf, opset: i64) -> PyResult<()> {
        let opts = ExportOptions {
            opset,
            source: self
                .inner
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        };
        py.detach(|| guarded("exporting ONNX", || self.inner.export_onnx(&path, &opts)))
    }

    /// Prepares the model to run: `device` is `"auto"`, `"cpu"`, `"gpu"` or `"gpu:NAME"`,
    /// `precision` `"f32"`, `"f16"` (GPUs) or `"int8"` (CPU; a file from `repvgg quantize`),
    /// `threads` the CPU worker threads (default: every
    /// core), `form` `"deploy"` (fused, the fast one) or `"train"` (every branch).
    #[pyo3(signature = (device = "auto", precision = "f32", threads = None, form = "deploy"))]
    fn runner(
        &self,
        py: Python<'_>,
        device: &str,
        precision: &str,
        threads: Option<usize>,
        form: &str,
    ) -> PyResult<PyRunner> {
        if threads == Some(0) {
            return Err(InputError::new_err(
                "threads: expected at least 1 (or None for every core), found 0",
            ));
        }
        let device: Device = word("device", device)?;
        let opts = RunOptions::default()
            .device(device.clone())
            .precision(word::<Precision>("precision", precision)?)
            .form(word::<Form>("form", form)?)
            .threads(threads);
        let inner = py.detach(|| {
            guarded("preparing the runner", || {
                self.inner.runner_on(&engine(&device)?, opts)
            })
        })?;
        Ok(PyRunner { inner })
    }

    fn __repr__(&self) -> String {
        format!(
            "repvgg.Model(arch={:?}, form={:?}, num_classes={})",
            self.inner.arch(),
            self.inner.form().to_string(),
            self.inner.num_classes()
        )
    }
}

/// One form of one model prepared on one device. Calling it runs a batch.
#[pyclass(name = "Runner", module = "repvgg", frozen)]
struct PyRunner {
    inner: Runner,
}

#[pymethods]
impl PyRunner {
    /// Which device runs the model and why, one line.
    #[getter]
    fn device(&self) -> String {
        self.inner.device().to_string()
    }

    /// The adapter (GPU) or the CPU and its threads.
    #[getter]
    fn adapter(&self) -> String {
        self.inner.adapter()
    }

    /// `"deploy"` or `"train"`.
    #[getter]
    fn form(&self) -> String {
        self.inner.form().to_string()
    }

    /// The precision that runs (an `"auto"` fallback to the CPU runs f32).
    #[getter]
    fn precision(&self) -> String {
        self.inner.precision().to_string()
    }

    /// Number of classes.
    #[getter]
    fn num_classes(&self) -> usize {
        self.inner.config().num_classes
    }

    /// Logits `[N, classes]` (float32) of `x`, a float32 `[N, C, H, W]` array; with
    /// `features=True`, a dict of `stage0` .. `stageN` (`[N, C, H, W]`) and `logits`.
    #[pyo3(signature = (x, features = false))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        features: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let batch = input::batch(x, "x")?;
        let view = batch.view()?;
        if !features {
            let logits = py.detach(|| guarded("running the model", || self.inner.run(view)))?;
            return Ok(input::to_numpy(py, logits)?.into_any());
        }
        let f = py.detach(|| guarded("running the model", || self.inner.run_features(view)))?;
        let out = PyDict::new(py);
        for (i, stage) in f.stages.into_iter().enumerate() {
            out.set_item(format!("stage{i}"), input::to_numpy(py, stage)?)?;
        }
        out.set_item("logits", input::to_numpy(py, f.logits)?)?;
        Ok(out.into_any())
    }

    /// `runner(x)` is `runner.run(x)`: logits `[N, classes]`.
    fn __call__<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, x, false)
    }

    /// The `top` classes of each image, preprocessed as timm does for the variant (or as the
    /// digits model wants). `images`: a list of paths and uint8 `[H, W, 3]` RGB arrays, or one
    /// uint8 `[N, H, W, 3]` array.
    #[pyo3(signature = (images, top = 5))]
    fn classify(
        &self,
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        top: usize,
    ) -> PyResult<Vec<Vec<PyClassResult>>> {
        let sources = input::images(images)?;
        let classes = py.detach(|| {
            guarded("classifying", || {
                let decoded = sources
                    .into_iter()
                    .map(|s| match s {
                        ImageSource::Path(p) => repvgg_model::preprocess::load_rgb(&p),
                        ImageSource::Pixels(img) => Ok(img),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                self.inner.classify(&decoded, top)
            })
        })?;
        Ok(classes
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|c| PyClassResult {
                        index: c.index,
                        label: c.label,
                        short_label: c.short_label,
                        prob: c.prob,
                    })
                    .collect()
            })
            .collect())
    }

    fn __repr__(&self) -> String {
        format!(
            "repvgg.Runner(arch={:?}, form={:?}, precision={:?}, adapter={:?})",
            self.inner.config().name,
            self.inner.form().to_string(),
            self.inner.precision().to_string(),
            self.inner.adapter()
        )
    }
}

/// One of an image's top classes.
#[pyclass(name = "Class", module = "repvgg", frozen, get_all)]
struct PyClassResult {
    /// The class index (the logit's column).
    index: usize,
    /// The full label (ImageNet's synonyms, the digit, or `class N`).
    label: String,
    /// The short label (ImageNet's first synonym).
    short_label: String,
    /// Softmax probability.
    prob: f32,
}

#[pymethods]
impl PyClassResult {
    fn __repr__(&self) -> String {
        format!(
            "repvgg.Class(index={}, label={:?}, prob={:.4})",
            self.index, self.short_label, self.prob
        )
    }
}

/// Loads a checkpoint: `.safetensors` or PyTorch `.pth`/`.pt` (read without torch), timm or
/// official naming, train or deploy form; the variant is inferred from the tensors.
#[pyfunction]
fn load(py: Python<'_>, path: PathBuf) -> PyResult<PyModel> {
    let inner = py.detach(|| guarded("loading", || Model::load(&path)))?;
    Ok(PyModel { inner })
}

/// [`load`] of a checkpoint's bytes in memory; `name` only names them in errors.
#[pyfunction]
#[pyo3(signature = (data, name = "<bytes>"))]
fn load_bytes(py: Python<'_>, data: &Bound<'_, PyBytes>, name: &str) -> PyResult<PyModel> {
    let bytes = data.as_bytes();
    let name = PathBuf::from(name);
    let inner = py.detach(|| guarded("loading", || Model::from_bytes(bytes, &name)))?;
    Ok(PyModel { inner })
}

/// The embedded digits model (8x8 handwritten digits), the demo's model.
#[pyfunction]
fn digits() -> PyResult<PyModel> {
    Ok(PyModel {
        inner: guarded("loading the digits model", Model::digits)?,
    })
}

#[pymodule]
fn _repvgg(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyModel>()?;
    m.add_class::<PyRunner>()?;
    m.add_class::<PyClassResult>()?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(load_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(digits, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
