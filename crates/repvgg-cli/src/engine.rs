//! Where a model runs: the CPU (repvgg-model's forward) or a GPU (repvgg-gpu through
//! repvgg-model). One interface for `demo`, `bench` and `classify`.

use std::time::{Duration, Instant};

use anyhow::Result;
use ndarray::{Array2, Array4};
use repvgg_model::{DeployModel, TrainModel};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DeviceChoice {
    Auto,
    Cpu,
    Gpu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    Train,
    Deploy,
}

impl Form {
    pub fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Deploy => "deploy",
        }
    }
}

pub(crate) enum Engine<'m> {
    Cpu { train: &'m TrainModel, deploy: &'m DeployModel },
}

impl<'m> Engine<'m> {
    /// Picks the device; the second value says why the CPU was used when a GPU was wanted.
    pub fn choose(choice: DeviceChoice, train: &'m TrainModel, deploy: &'m DeployModel) -> Result<(Self, Option<String>)> {
        match choice {
            DeviceChoice::Cpu => Ok((Self::Cpu { train, deploy }, None)),
            DeviceChoice::Gpu => anyhow::bail!("--device gpu is not available yet in this build; use --device cpu"),
            DeviceChoice::Auto => Ok((Self::Cpu { train, deploy }, Some("GPU support is not built in yet".into()))),
        }
    }

    pub fn device(&self) -> &'static str {
        match self {
            Self::Cpu { .. } => "cpu",
        }
    }

    pub fn adapter(&self) -> String {
        match self {
            Self::Cpu { .. } => format!("cpu ({} threads)", std::thread::available_parallelism().map_or(1, |n| n.get())),
        }
    }

    pub fn logits(&self, form: Form, x: &Array4<f32>) -> Result<Array2<f32>> {
        match (self, form) {
            (Self::Cpu { train, .. }, Form::Train) => Ok(train.forward(x.view())?),
            (Self::Cpu { deploy, .. }, Form::Deploy) => Ok(deploy.forward(x.view())?),
        }
    }

    /// One timed forward (wall time around a blocking run).
    pub fn time_once(&self, form: Form, x: &Array4<f32>) -> Result<Duration> {
        let t = Instant::now();
        std::hint::black_box(self.logits(form, x)?);
        Ok(t.elapsed())
    }

    pub fn peak_activation_bytes(&self, form: Form, batch: usize, h: usize, w: usize) -> Result<u64> {
        Ok(match (self, form) {
            (Self::Cpu { train, .. }, Form::Train) => crate::bench::cpu_peak_activation_bytes(*train, batch, h, w, 3),
            (Self::Cpu { deploy, .. }, Form::Deploy) => crate::bench::cpu_peak_activation_bytes(*deploy, batch, h, w, 1),
        })
    }
}
