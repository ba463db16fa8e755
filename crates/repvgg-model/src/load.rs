//! [`Model`]: a RepVGG of any variant, in either form, from any checkpoint format and naming —
//! the entry point of the library.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::checkpoint::{self, Checkpoint, LoadedModel, Naming};
use crate::config::RepVggConfig;
use crate::error::Result;
use crate::model::{DeployModel, TrainModel};
use crate::quant::QuantizedModel;
use crate::runner::{Engine, RunOptions, Runner, Source};
use crate::vocab::{Device, Form, Precision};

/// What a model's classes are and how its inputs are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    /// An ImageNet-style classifier (timm's preprocessing of its variant).
    ImageNet,
    /// The embedded digits model.
    Digits,
}

/// The forms a model holds: the train form (fused on first need), or the deployed form only.
#[derive(Debug, Clone)]
enum Held {
    Train {
        model: Arc<TrainModel>,
        fused: Arc<OnceLock<Arc<DeployModel>>>,
    },
    Deploy(Arc<DeployModel>),
}

/// A RepVGG model: loaded from a checkpoint or built in memory, in train (multi-branch) or
/// deploy (fused) form. Cloning is cheap (the weights are shared).
///
/// ```no_run
/// # fn main() -> Result<(), repvgg_model::ModelError> {
/// use repvgg_model::{Model, RunOptions};
/// let model = Model::load("RepVGG-A0-train.pth")?; // .safetensors or .pth, any naming and form
/// let runner = model.runner(RunOptions::default())?; // fused, device auto, f32
/// println!("{}", runner.device());
/// let x = ndarray::Array4::<f32>::zeros((1, 3, 224, 224));
/// let logits = runner.run(x.view())?; // [1, 1000]
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Model {
    held: Held,
    naming: Naming,
    dtypes: Vec<String>,
    path: Option<PathBuf>,
    task: Task,
    /// The int8 form, when the model was quantized or loaded from an int8 file.
    quantized: Option<Arc<QuantizedModel>>,
}

impl Model {
    fn new(model: LoadedModel, naming: Naming, dtypes: Vec<String>, path: Option<PathBuf>) -> Self {
        let held = match model {
            LoadedModel::Train(m) => Held::Train {
                model: Arc::new(m),
                fused: Arc::new(OnceLock::new()),
            },
            LoadedModel::Deploy(m) => Held::Deploy(Arc::new(m)),
        };
        Self {
            held,
            naming,
            dtypes,
            path,
            task: Task::ImageNet,
            quantized: None,
        }
    }

    /// A model of a quantized one: its deployed form holds the dequantized weights.
    fn from_quantized(q: QuantizedModel, path: Option<PathBuf>, task: Task) -> Self {
        let q = Arc::new(q);
        Self {
            held: Held::Deploy(Arc::clone(&q.deploy)),
            naming: Naming::Timm,
            dtypes: vec!["I8".into(), "F32".into()],
            path,
            task,
            quantized: Some(q),
        }
    }

    fn from_checkpoint(ck: Checkpoint, path: Option<PathBuf>) -> Self {
        Self::new(ck.model, ck.naming, ck.dtypes, path)
    }

    /// Loads a checkpoint: `.safetensors` or PyTorch `.pth`/`.pt` (zip or legacy, read
    /// without Python by a restricted unpickler), timm or official DingXiaoH naming, train or
    /// deploy form, f32/f16/bf16; the variant is inferred from the tensors.
    ///
    /// # Errors
    /// A [`crate::ModelError`] that names the file and what is wrong with it.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if crate::quant::sniff_int8_file(path) {
            return Ok(Self::from_quantized(
                QuantizedModel::load(path)?,
                Some(path.to_path_buf()),
                Task::ImageNet,
            ));
        }
        Ok(Self::from_checkpoint(
            checkpoint::load(path)?,
            Some(path.to_path_buf()),
        ))
    }

    /// [`Model::load`] of bytes in memory; `name` only names them in errors.
    pub fn from_bytes(bytes: &[u8], name: &Path) -> Result<Self> {
        if crate::quant::is_int8_file(bytes) {
            return Ok(Self::from_quantized(
                QuantizedModel::from_bytes(bytes, name)?,
                None,
                Task::ImageNet,
            ));
        }
        Ok(Self::from_checkpoint(
            checkpoint::load_bytes(bytes, name)?,
            None,
        ))
    }

    /// The embedded digits model (8x8 handwritten digits, train form), the demo's model.
    pub fn digits() -> Result<Self> {
        let mut m = Self::from(crate::digits::model()?);
        m.task = Task::Digits;
        Ok(m)
    }

    /// The variant's architecture.
    pub fn config(&self) -> &RepVggConfig {
        match &self.held {
            Held::Train { model, .. } => &model.config,
            Held::Deploy(d) => &d.config,
        }
    }

    /// The variant's name, e.g. `a0` or `b1g4` (`custom` when inferred but unnamed).
    pub fn arch(&self) -> &str {
        &self.config().name
    }

    /// Number of classes of the head.
    pub fn num_classes(&self) -> usize {
        self.config().num_classes
    }

    /// The form this model holds: [`Form::Train`] when it has the branches (it can also run
    /// fused), [`Form::Deploy`] when it was loaded fused.
    pub fn form(&self) -> Form {
        match self.held {
            Held::Train { .. } => Form::Train,
            Held::Deploy(_) => Form::Deploy,
        }
    }

    /// The key naming of the file it came from (timm for models built in memory).
    pub fn naming(&self) -> Naming {
        self.naming
    }

    /// The file's stored dtypes, e.g. `["F32"]` (empty for models built in memory).
    pub fn dtypes(&self) -> &[String] {
        &self.dtypes
    }

    /// The file it was loaded from.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The train form, when the model has it.
    pub fn train_model(&self) -> Option<&TrainModel> {
        match &self.held {
            Held::Train { model, .. } => Some(model),
            Held::Deploy(_) => None,
        }
    }

    /// The deployed form: fused now (once) when the model holds the train form.
    pub fn deploy_model(&self) -> Result<Arc<DeployModel>> {
        match &self.held {
            Held::Deploy(d) => Ok(Arc::clone(d)),
            Held::Train { model, fused } => {
                if let Some(d) = fused.get() {
                    return Ok(Arc::clone(d));
                }
                let d = Arc::new(model.fuse()?);
                // Another thread may have fused it meanwhile; both results are the same.
                Ok(Arc::clone(fused.get_or_init(|| d)))
            }
        }
    }

    /// The deployed form as a model of its own (shares the fused weights).
    pub fn fuse(&self) -> Result<Model> {
        Ok(Self {
            held: Held::Deploy(self.deploy_model()?),
            naming: self.naming,
            dtypes: self.dtypes.clone(),
            path: self.path.clone(),
            task: self.task,
            quantized: self.quantized.clone(),
        })
    }

    /// The int8 form, when this model was quantized ([`Model::quantize`]) or loaded from an
    /// int8 file.
    pub fn quantized(&self) -> Option<&QuantizedModel> {
        self.quantized.as_deref()
    }

    /// Calibrates the deployed form on `batches` (NCHW, preprocessed as this model's inputs)
    /// and returns the quantized model (which runs with [`Precision::Int8`], and saves with
    /// [`QuantizedModel::save`]) and the per-layer report.
    ///
    /// # Errors
    /// See [`crate::quant::quantize`].
    #[cfg(feature = "cpu")]
    pub fn quantize(
        &self,
        batches: &[ndarray::Array4<f32>],
        opts: &crate::quant::QuantOptions,
    ) -> Result<(Model, crate::quant::QuantReport)> {
        let (q, report) = crate::quant::quantize(&*self.deploy_model()?, batches, opts)?;
        let mut m = Self::from_quantized(q, self.path.clone(), self.task);
        m.naming = self.naming;
        Ok((m, report))
    }

    /// Saves the deployed form (fused first if needed) as safetensors in `naming`.
    pub fn save(&self, path: impl AsRef<Path>, naming: Naming) -> Result<()> {
        checkpoint::save_deploy(&*self.deploy_model()?, path, naming)
    }

    /// Writes the deployed form as an ONNX model (input `input` `[N, C, H, W]`, output
    /// `logits`); a quantized model ([`Model::quantized`]) as ONNX QDQ of its int8 form
    /// (see [`crate::onnx`]).
    #[cfg(feature = "onnx")]
    pub fn export_onnx(
        &self,
        path: impl AsRef<Path>,
        opts: &crate::onnx::ExportOptions,
    ) -> Result<()> {
        match &self.quantized {
            Some(q) => crate::onnx::save_quantized(q, path, opts),
            None => crate::onnx::save(&*self.deploy_model()?, path, opts),
        }
    }

    /// How images become this model's input (timm's config of the variant, or the digits
    /// model's own).
    #[cfg(feature = "images")]
    pub fn preprocessing(&self) -> crate::classify::Preprocessing {
        match self.task {
            Task::Digits => crate::classify::Preprocessing::Digits,
            Task::ImageNet => crate::classify::Preprocessing::for_config(self.config()),
        }
    }

    /// Prepares `opts.form` of this model on `opts.device` (the device policy for
    /// [`crate::Device::Auto`]); [`Runner::device`] says which device and why.
    ///
    /// # Errors
    /// The device cannot be opened, the form is missing ([`crate::ModelError::NotTrainForm`]
    /// for the train form of a fused model), or the engine refuses the model.
    pub fn runner(&self, opts: RunOptions) -> Result<Runner> {
        // The reduced CPU precisions pick the CPU engine under the device policy.
        let engine = match (&opts.device, opts.precision) {
            (Device::Auto, Precision::Int8 | Precision::Bf16) => Engine::cpu(),
            (d, _) => Engine::open(d)?,
        };
        self.runner_on(&engine, opts)
    }

    /// [`Model::runner`] on an engine already open (several runners, one device);
    /// `opts.device` only decides how an `Auto` fallback is worded.
    pub fn runner_on(&self, engine: &Engine, opts: RunOptions) -> Result<Runner> {
        let source = match (opts.form, &self.quantized) {
            (Form::Deploy, Some(q)) => Source::Int8(Arc::clone(q)),
            (Form::Train, _) if matches!(opts.precision, Precision::Int8 | Precision::Bf16) => {
                return Err(crate::ModelError::Unsupported(format!(
                    "precision {} runs the deployed form only (--form deploy)",
                    opts.precision
                )));
            }
            (Form::Deploy, None) => Source::Deploy(self.deploy_model()?),
            (Form::Train, _) => match &self.held {
                Held::Train { model, .. } => Source::Train(Arc::clone(model)),
                Held::Deploy(_) => {
                    return Err(crate::ModelError::NotTrainForm {
                        path: self
                            .path
                            .clone()
                            .unwrap_or_else(|| PathBuf::from("this model")),
                    });
                }
            },
        };
        Runner::new(
            engine,
            source,
            opts,
            #[cfg(feature = "images")]
            self.preprocessing(),
        )
    }
}

impl From<TrainModel> for Model {
    fn from(m: TrainModel) -> Self {
        Self::new(LoadedModel::Train(m), Naming::Timm, Vec::new(), None)
    }
}

impl From<DeployModel> for Model {
    fn from(m: DeployModel) -> Self {
        Self::new(LoadedModel::Deploy(m), Naming::Timm, Vec::new(), None)
    }
}

impl From<LoadedModel> for Model {
    fn from(m: LoadedModel) -> Self {
        Self::new(m, Naming::Timm, Vec::new(), None)
    }
}
