//! Desktop demo of the embedded RepVGG digits model: draw a digit, watch the fused model classify
//! it live on the GPU (eframe's own wgpu device when it has one), toggle the train/deploy form and
//! compare their latency; classify images with ImageNet weights given by `--weights`.
//!
//! [`DemoApp`] holds the state and the inference logic and works without a window; the
//! [`eframe::App`] impl only draws it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use eframe::egui;
use ndarray::{Array2, Array4, Axis};
use repvgg_gpu::{GpuContext, is_software_adapter};
use repvgg_model::classify::softmax;
use repvgg_model::digits::{self, TestSet};
use repvgg_model::preprocess::{digit_8x8, load_rgb};
use repvgg_model::{Engine, Model, RunOptions, Runner};

pub use repvgg_model::{Device, Form, Precision};

/// Side of the drawing canvas, in pixels (and points).
pub const CANVAS_SIZE: usize = 280;
/// Radius of the brush, in canvas pixels.
pub const BRUSH_RADIUS: f32 = 13.0;
/// Margin around a test digit painted into the canvas.
const DIGIT_MARGIN: usize = 20;
/// How many latencies per form the plot keeps.
const HISTORY: usize = 200;

/// The label the UI gives a form.
pub fn form_label(form: Form) -> &'static str {
    match form {
        Form::Train => "train (3 branches)",
        Form::Deploy => "deploy (fused)",
    }
}

/// Where a form's latencies are kept.
fn form_index(form: Form) -> usize {
    match form {
        Form::Train => 0,
        Form::Deploy => 1,
    }
}

/// A grayscale drawing surface: ink in `0..1` (1 = full ink), row-major, `size x size`.
#[derive(Debug, Clone, PartialEq)]
pub struct Canvas {
    size: usize,
    ink: Vec<f32>,
}

impl Canvas {
    /// A blank canvas.
    pub fn new(size: usize) -> Self {
        Self {
            size,
            ink: vec![0.0; size * size],
        }
    }

    /// Side in pixels.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Erases everything.
    pub fn clear(&mut self) {
        self.ink.fill(0.0);
    }

    /// Whether nothing is drawn.
    pub fn is_blank(&self) -> bool {
        self.ink.iter().all(|&v| v <= 0.0)
    }

    /// Ink at `(x, y)`.
    pub fn get(&self, x: usize, y: usize) -> f32 {
        self.ink[y * self.size + x]
    }

    /// A round brush dab centred at `(cx, cy)` with an anti-aliased edge.
    pub fn dab(&mut self, cx: f32, cy: f32, radius: f32) {
        let n = self.size as i64;
        let (x0, x1) = (
            (cx - radius - 1.0).floor() as i64,
            (cx + radius + 1.0).ceil() as i64,
        );
        let (y0, y1) = (
            (cy - radius - 1.0).floor() as i64,
            (cy + radius + 1.0).ceil() as i64,
        );
        for y in y0.max(0)..y1.min(n) {
            for x in x0.max(0)..x1.min(n) {
                let d = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
                let a = (radius + 0.5 - d).clamp(0.0, 1.0);
                let p = &mut self.ink[y as usize * self.size + x as usize];
                *p = p.max(a);
            }
        }
    }

    /// A thick stroke from `a` to `b` (canvas pixels).
    pub fn line(&mut self, a: (f32, f32), b: (f32, f32), radius: f32) {
        let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
        let steps = (len / (radius * 0.25).max(0.5)).ceil().max(1.0) as usize;
        for i in 0..=steps {
            let t = i as f32 / steps as f32;
            self.dab(a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t, radius);
        }
    }

    /// Paints an sklearn 8x8 digit (values `0..16`) as blocks filling the canvas less a margin.
    pub fn paint_digit8(&mut self, digit: ndarray::ArrayView2<'_, f32>) {
        self.clear();
        let (h, w) = digit.dim();
        let inner = self.size.saturating_sub(2 * DIGIT_MARGIN);
        if h == 0 || w == 0 || inner == 0 {
            return;
        }
        for y in 0..inner {
            for x in 0..inner {
                let v = digit[[y * h / inner, x * w / inner]];
                self.ink[(y + DIGIT_MARGIN) * self.size + x + DIGIT_MARGIN] =
                    (v / 16.0).clamp(0.0, 1.0);
            }
        }
    }

    /// The canvas as a grey image in `0..1` (bright ink on a dark ground).
    pub fn gray(&self) -> Array2<f32> {
        Array2::from_shape_fn((self.size, self.size), |(y, x)| self.get(x, y))
    }

    /// The digits model's input for this canvas: [`digit_8x8`] then [`digits::preprocess`],
    /// `[1, 1, 32, 32]`.
    pub fn model_input(&self) -> Array4<f32> {
        let d = digit_8x8(self.gray().view()).insert_axis(Axis(0));
        digits::preprocess(d.view())
    }

    /// RGBA pixels for display: dark ink on white.
    pub fn to_color_image(&self) -> egui::ColorImage {
        let px: Vec<u8> = self
            .ink
            .iter()
            .map(|&v| (255.0 * (1.0 - v.clamp(0.0, 1.0))).round() as u8)
            .collect();
        egui::ColorImage::from_gray([self.size, self.size], &px)
    }
}

/// Both forms of the digits model, prepared on one engine.
#[derive(Debug)]
struct Runners {
    train: Runner,
    deploy: Runner,
}

impl Runners {
    fn new(model: &Model, engine: &Engine, precision: Precision) -> repvgg_model::Result<Self> {
        let opts = RunOptions::default().precision(precision);
        Ok(Self {
            train: model.runner_on(engine, opts.clone().form(Form::Train))?,
            deploy: model.runner_on(engine, opts.form(Form::Deploy))?,
        })
    }

    fn get(&self, form: Form) -> &Runner {
        match form {
            Form::Train => &self.train,
            Form::Deploy => &self.deploy,
        }
    }
}

/// The ImageNet model given with `--weights`, prepared on the digits model's engine.
#[derive(Debug)]
struct ImageNet {
    path: PathBuf,
    runner: Runner,
}

/// One of the top-k ImageNet classes.
#[derive(Debug, Clone, PartialEq)]
pub struct Guess {
    /// Class index.
    pub class: usize,
    /// Label.
    pub label: String,
    /// Softmax probability.
    pub prob: f32,
}

/// The demo's state and logic, independent of any window.
pub struct DemoApp {
    canvas: Canvas,
    form: Form,
    engine: Option<Engine>,
    runners: Option<Runners>,
    precision: Precision,
    /// "GPU: name (backend)" or "CPU (no GPU adapter: reason)".
    device_text: String,
    /// Set when the model could not be built at all.
    model_error: Option<String>,
    probs: Option<Vec<f32>>,
    prediction: Option<usize>,
    last_error: Option<String>,
    latencies: [Vec<f64>; 2],
    test_set: Option<TestSet>,
    next_test: usize,
    loaded_test: Option<(usize, usize)>,
    imagenet: Option<ImageNet>,
    imagenet_error: Option<String>,
    image_path: String,
    image_result: Option<(String, Result<Vec<Guess>, String>)>,
    texture: Option<egui::TextureHandle>,
    texture_dirty: bool,
    last_pointer: Option<(f32, f32)>,
}

impl std::fmt::Debug for DemoApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoApp")
            .field("device", &self.device_text)
            .field("form", &self.form)
            .field("prediction", &self.prediction)
            .finish_non_exhaustive()
    }
}

impl DemoApp {
    /// Builds the app on `engine` (or on the CPU engine, saying why, when it is an error), with
    /// optional ImageNet weights, in f32. Never panics: failures end up as messages in the UI.
    pub fn new(engine: Result<Engine, String>, weights: Option<PathBuf>) -> Self {
        Self::with_precision(engine, weights, Precision::F32)
    }

    /// [`DemoApp::new`] with the models stored in `precision` on a GPU ([`Precision::F16`]:
    /// f16 weights and activations, f32 arithmetic; the device needs `SHADER_F16`, else the CPU
    /// engine runs and [`DemoApp::device_text`] says why). The CPU engine computes in f32.
    pub fn with_precision(
        engine: Result<Engine, String>,
        weights: Option<PathBuf>,
        precision: Precision,
    ) -> Self {
        let mut app = Self {
            canvas: Canvas::new(CANVAS_SIZE),
            form: Form::Deploy,
            engine: None,
            runners: None,
            precision,
            device_text: String::new(),
            model_error: None,
            probs: None,
            prediction: None,
            last_error: None,
            latencies: [Vec::new(), Vec::new()],
            test_set: None,
            next_test: 0,
            loaded_test: None,
            imagenet: None,
            imagenet_error: None,
            image_path: String::new(),
            image_result: None,
            texture: None,
            texture_dirty: true,
            last_pointer: None,
        };
        match digits::test_set() {
            Ok(t) => app.test_set = Some(t),
            Err(e) => app.last_error = Some(format!("test digits unavailable: {e}")),
        }
        let model = match Model::digits().and_then(|m| m.deploy_model().map(|_| m)) {
            Ok(m) => m,
            Err(e) => {
                app.model_error = Some(format!("embedded digits model failed to load: {e}"));
                app.device_text = "none".into();
                return app;
            }
        };
        let on_gpu = engine.and_then(|e| {
            if !e.is_gpu() {
                return Err(e.reason().trim_start_matches("cpu: ").to_string());
            }
            let r = Runners::new(&model, &e, precision).map_err(|err| err.to_string())?;
            Ok((e, r))
        });
        let (engine, runners) = match on_gpu {
            Ok((engine, runners)) => {
                app.device_text = format!("GPU: {}", engine.adapter());
                if precision != Precision::F32 {
                    app.device_text += &format!(", {precision}");
                }
                (engine, Ok(runners))
            }
            Err(reason) => {
                app.device_text = format!("CPU ({reason})");
                // The CPU engine computes in f32 whatever was asked of a GPU.
                let cpu = Engine::cpu();
                let r = Runners::new(&model, &cpu, Precision::F32);
                (cpu, r)
            }
        };
        match runners {
            Ok(r) => app.runners = Some(r),
            Err(e) => app.model_error = Some(format!("preparing the digits model failed: {e}")),
        }
        app.engine = Some(engine);
        if let Some(path) = weights {
            app.load_weights(path);
        }
        app
    }

    /// Builds the app on the device `device` asks for, the GPU models stored in `precision`.
    ///
    /// [`Device::Auto`] takes eframe's own wgpu device, else a device of its own, when it is a
    /// hardware GPU; a software adapter (lavapipe, SwiftShader, WARP) is slower than the CPU
    /// engine and runs only with [`Device::Gpu`]. The CPU engine runs when no GPU is taken, and
    /// [`DemoApp::device_text`] says why.
    pub fn from_creation_context(
        cc: &eframe::CreationContext<'_>,
        weights: Option<PathBuf>,
        device: Device,
        precision: Precision,
    ) -> Self {
        let build = |engine, weights| Self::with_precision(engine, weights, precision);
        if device == Device::Cpu {
            return build(Err("asked for with --device cpu".into()), weights);
        }
        let mut reasons = Vec::new();
        if let Some(rs) = &cc.wgpu_render_state {
            let info = rs.adapter.get_info();
            if device == Device::Auto && is_software_adapter(&info) {
                let why = format!(
                    "{} is a software adapter, slower than the CPU engine; --device gpu runs on it",
                    info.name
                );
                return build(Err(why), weights);
            }
            let ctx = GpuContext::from_device(
                rs.device.clone(),
                rs.queue.clone(),
                info,
                rs.device.limits(),
            );
            let app = build(Ok(Engine::from_gpu_context(ctx)), weights.clone());
            if app.on_gpu() {
                return app;
            }
            reasons.push(format!("eframe's device: {}", app.device_text));
        } else {
            reasons.push("eframe has no wgpu device".to_string());
        }
        match Engine::open(&device) {
            Ok(engine) if engine.is_gpu() => build(Ok(engine), weights),
            Ok(engine) => {
                reasons.push(engine.reason().trim_start_matches("cpu: ").to_string());
                build(Err(reasons.join("; ")), weights)
            }
            Err(e) => {
                reasons.push(format!("no GPU adapter: {e}"));
                build(Err(reasons.join("; ")), weights)
            }
        }
    }

    /// Loads ImageNet weights (any RepVGG checkpoint) onto the digits model's engine (the CPU
    /// engine when that fails); errors are shown in the UI.
    pub fn load_weights(&mut self, path: PathBuf) {
        self.imagenet = None;
        self.imagenet_error = None;
        let gpu = self.engine.as_ref().filter(|e| e.is_gpu());
        let opts = RunOptions::default().precision(self.precision);
        let prepared = Model::load(&path).and_then(|model| match gpu {
            Some(gpu) => model
                .runner_on(gpu, opts)
                .or_else(|_| model.runner_on(&Engine::cpu(), RunOptions::default())),
            None => model.runner_on(&Engine::cpu(), RunOptions::default()),
        });
        match prepared {
            Ok(runner) => self.imagenet = Some(ImageNet { path, runner }),
            Err(e) => self.imagenet_error = Some(format!("{}: {e}", path.display())),
        }
    }

    /// "GPU: name (backend)" or "CPU (no GPU adapter: reason)".
    pub fn device_text(&self) -> &str {
        &self.device_text
    }

    /// Whether the digits model runs on a GPU.
    pub fn on_gpu(&self) -> bool {
        self.runners.is_some() && self.engine.as_ref().is_some_and(Engine::is_gpu)
    }

    /// The form in use.
    pub fn form(&self) -> Form {
        self.form
    }

    /// Switches form and reclassifies the canvas.
    pub fn set_form(&mut self, form: Form) {
        if form != self.form {
            self.form = form;
            self.refresh();
        }
    }

    /// The canvas.
    pub fn canvas(&self) -> &Canvas {
        &self.canvas
    }

    /// The canvas, for drawing; call [`Self::refresh`] afterwards.
    pub fn canvas_mut(&mut self) -> &mut Canvas {
        self.texture_dirty = true;
        &mut self.canvas
    }

    /// Erases the canvas and the prediction.
    pub fn clear(&mut self) {
        self.canvas.clear();
        self.texture_dirty = true;
        self.loaded_test = None;
        self.refresh();
    }

    /// The last prediction, if the canvas is not blank.
    pub fn prediction(&self) -> Option<usize> {
        self.prediction
    }

    /// The last softmax probabilities.
    pub fn probabilities(&self) -> Option<&[f32]> {
        self.probs.as_deref()
    }

    /// Recorded latencies (ms) of a form.
    pub fn latencies(&self, form: Form) -> &[f64] {
        &self.latencies[form_index(form)]
    }

    /// The test digits (if they decoded).
    pub fn test_set(&self) -> Option<&TestSet> {
        self.test_set.as_ref()
    }

    /// Paints test digit `index` into the canvas and classifies it; returns its true label.
    pub fn load_test_digit(&mut self, index: usize) -> Option<usize> {
        let t = self.test_set.as_ref()?;
        let n = t.labels.len();
        if n == 0 {
            return None;
        }
        let i = index % n;
        let label = t.labels[i];
        let img = t.images8.index_axis(Axis(0), i).to_owned();
        self.canvas.paint_digit8(img.view());
        self.texture_dirty = true;
        self.loaded_test = Some((i, label));
        self.next_test = i + 1;
        self.refresh();
        Some(label)
    }

    /// Loads the next test digit (cycling).
    pub fn load_next_test_digit(&mut self) -> Option<usize> {
        self.load_test_digit(self.next_test)
    }

    /// Classifies the canvas in the current form: records the latency, updates the
    /// probabilities and the prediction. A blank canvas clears them.
    pub fn refresh(&mut self) {
        if self.canvas.is_blank() {
            self.probs = None;
            self.prediction = None;
            return;
        }
        match self.classify_canvas() {
            Ok(p) => {
                self.prediction = Some(p);
                self.last_error = None;
            }
            Err(e) => {
                self.prediction = None;
                self.probs = None;
                self.last_error = Some(e);
            }
        }
    }

    /// Runs the current form on the canvas; returns the predicted digit.
    pub fn classify_canvas(&mut self) -> Result<usize, String> {
        let runners = self
            .runners
            .as_ref()
            .ok_or_else(|| self.model_error.clone().unwrap_or_default())?;
        let x = self.canvas.model_input();
        let start = Instant::now();
        let logits = runners
            .get(self.form)
            .run(x.view())
            .map_err(|e| e.to_string())?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let hist = &mut self.latencies[form_index(self.form)];
        hist.push(ms);
        if hist.len() > HISTORY {
            hist.remove(0);
        }
        let probs = softmax(logits.view()).row(0).to_vec();
        let best = argmax(&probs).ok_or("the model returned no logits")?;
        self.probs = Some(probs);
        Ok(best)
    }

    /// Whether ImageNet weights are loaded.
    pub fn has_imagenet(&self) -> bool {
        self.imagenet.is_some()
    }

    /// Top-5 ImageNet classes of an image file.
    pub fn classify_image(&self, path: &Path) -> Result<Vec<Guess>, String> {
        let net = self
            .imagenet
            .as_ref()
            .ok_or("no ImageNet weights: start with --weights FILE")?;
        let img = load_rgb(path).map_err(|e| e.to_string())?;
        let top = net.runner.classify(&[img], 5).map_err(|e| e.to_string())?;
        Ok(top
            .into_iter()
            .flatten()
            .map(|c| Guess {
                class: c.index,
                label: c.label,
                prob: c.prob,
            })
            .collect())
    }

    /// Classifies an image and keeps the result for display.
    pub fn classify_image_for_ui(&mut self, path: PathBuf) {
        let r = self.classify_image(&path);
        self.image_result = Some((path.display().to_string(), r));
    }

    /// The last image result shown.
    pub fn image_result(&self) -> Option<&(String, Result<Vec<Guess>, String>)> {
        self.image_result.as_ref()
    }
}

fn argmax(v: &[f32]) -> Option<usize> {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

/// Median of `v` (`None` when empty).
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

mod ui;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn app() -> DemoApp {
        DemoApp::new(Engine::open(&Device::GPU).map_err(|e| e.to_string()), None)
    }

    #[test]
    fn first_20_test_digits_through_the_canvas() {
        let mut app = app();
        eprintln!("device: {}", app.device_text());
        let labels: Vec<usize> = app.test_set().expect("test set").labels[..20].to_vec();
        let mut right = 0;
        for (i, &label) in labels.iter().enumerate() {
            assert_eq!(app.load_test_digit(i), Some(label));
            let p = app.prediction().expect("a prediction");
            let probs = app.probabilities().expect("probabilities");
            assert_eq!(probs.len(), 10);
            assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-4);
            right += usize::from(p == label);
        }
        assert!(right >= 18, "{right}/20 right");
        assert_eq!(app.latencies(Form::Deploy).len(), 20);
    }

    #[test]
    fn both_forms_agree_on_a_drawn_stroke() {
        let mut app = app();
        // A vertical bar: a "1".
        app.canvas_mut()
            .line((140.0, 40.0), (140.0, 240.0), BRUSH_RADIUS);
        app.refresh();
        let deploy = app.prediction().expect("prediction");
        app.set_form(Form::Train);
        assert_eq!(app.prediction(), Some(deploy));
        assert_eq!(app.latencies(Form::Train).len(), 1);
        app.clear();
        assert_eq!(app.prediction(), None);
    }

    /// f16 on the GPU (lavapipe has `SHADER_F16`): the device line says so and the first 40
    /// test digits get the f32 app's classes; an adapter without f16 falls back to the CPU and
    /// says why.
    #[test]
    fn f16_models_classify_like_f32_and_say_so() {
        let engine = match Engine::open(&Device::GPU) {
            Ok(engine) => engine,
            Err(e) => {
                assert!(
                    std::env::var_os("REPVGG_REQUIRE_GPU").is_none(),
                    "REPVGG_REQUIRE_GPU is set but there is no adapter: {e}"
                );
                eprintln!("no GPU adapter: {e}");
                return;
            }
        };
        let f16 = engine.gpu_context().is_some_and(GpuContext::has_f16);
        let mut half = DemoApp::with_precision(Ok(engine.clone()), None, Precision::F16);
        eprintln!("device: {}", half.device_text());
        if !f16 {
            assert!(!half.on_gpu());
            assert!(
                half.device_text().contains("SHADER_F16"),
                "{}",
                half.device_text()
            );
            return;
        }
        assert!(half.on_gpu() && half.device_text().ends_with(", f16"));
        let mut full = DemoApp::new(Ok(engine), None);
        assert!(full.on_gpu() && !full.device_text().contains("f16"));
        for i in 0..40 {
            for form in [Form::Deploy, Form::Train] {
                half.set_form(form);
                full.set_form(form);
                half.load_test_digit(i);
                full.load_test_digit(i);
                assert_eq!(half.prediction(), full.prediction(), "digit {i}, {form:?}");
                let (p, q) = (half.probabilities(), full.probabilities());
                let (p, q) = (p.expect("f16 probabilities"), q.expect("f32 probabilities"));
                let diff = p
                    .iter()
                    .zip(q)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(
                    diff < 1e-2,
                    "digit {i}, {form:?}: probabilities differ by {diff}"
                );
            }
        }
    }

    #[test]
    fn cpu_fallback_says_why() {
        let mut app = DemoApp::new(Err("test".into()), None);
        assert!(!app.on_gpu());
        assert_eq!(app.device_text(), "CPU (test)");
        let label = app.load_test_digit(0).expect("label");
        assert_eq!(app.prediction(), Some(label));
    }

    #[test]
    fn imagenet_errors_are_messages() {
        let mut app = DemoApp::new(Err("test".into()), Some("/nonexistent.safetensors".into()));
        assert!(!app.has_imagenet());
        assert!(app.imagenet_error.is_some());
        assert!(app.classify_image(Path::new("/x.png")).is_err());
        app.classify_image_for_ui("/x.png".into());
        assert!(matches!(app.image_result(), Some((_, Err(_)))));
    }

    #[test]
    fn helpers() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[]), None);
        let p = softmax(ndarray::arr2(&[[1.0, 1.0]]).view());
        assert!((p[[0, 0]] - 0.5).abs() < 1e-6);
    }
}
