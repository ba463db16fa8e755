//! Drawing [`DemoApp`] with egui.

use std::path::PathBuf;

use eframe::egui::{self, Color32, Pos2, Rect, Sense, Stroke, Vec2};

use crate::{BRUSH_RADIUS, DemoApp, Form, form_index, form_label, median};

const FORM_COLORS: [Color32; 2] = [
    Color32::from_rgb(230, 120, 40),
    Color32::from_rgb(40, 140, 230),
];

impl eframe::App for DemoApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let dropped = ui.ctx().input(|i| i.raw.dropped_files.clone());
        for f in dropped {
            self.classify_image_for_ui(f.path().to_path_buf());
        }
        egui::Frame::central_panel(ui.style()).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| self.contents(ui));
        });
    }
}

impl DemoApp {
    fn contents(&mut self, ui: &mut egui::Ui) {
        ui.heading("RepVGG digits demo");
        ui.label(format!("Device: {}", self.device_text));
        if let Some(e) = &self.model_error {
            ui.colored_label(Color32::RED, e);
        }
        ui.horizontal_top(|ui| {
            ui.vertical(|ui| self.canvas_column(ui));
            ui.add_space(16.0);
            ui.vertical(|ui| self.result_column(ui));
        });
        ui.separator();
        self.latency_plot(ui);
        ui.separator();
        self.imagenet_section(ui);
    }

    fn canvas_column(&mut self, ui: &mut egui::Ui) {
        ui.label("Draw a digit (0-9):");
        let size = self.canvas.size() as f32;
        let (response, painter) = ui.allocate_painter(Vec2::splat(size), Sense::drag());
        let rect = response.rect;
        let mut changed = false;
        if response.dragged() || response.drag_started() {
            if let Some(pos) = response.interact_pointer_pos() {
                let p = ((pos.x - rect.min.x), (pos.y - rect.min.y));
                let from = self.last_pointer.unwrap_or(p);
                self.canvas.line(from, p, BRUSH_RADIUS);
                self.last_pointer = Some(p);
                self.loaded_test = None;
                self.texture_dirty = true;
                changed = true;
            }
        } else {
            self.last_pointer = None;
        }
        if self.texture_dirty || self.texture.is_none() {
            let img = self.canvas.to_color_image();
            match &mut self.texture {
                Some(t) => t.set(img, egui::TextureOptions::LINEAR),
                None => {
                    self.texture = Some(ui.ctx().load_texture(
                        "canvas",
                        img,
                        egui::TextureOptions::LINEAR,
                    ));
                }
            }
            self.texture_dirty = false;
        }
        if let Some(t) = &self.texture {
            painter.image(
                t.id(),
                rect,
                Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
                Color32::WHITE,
            );
        }
        painter.rect_stroke(
            rect,
            0.0,
            Stroke::new(1.0, Color32::GRAY),
            egui::StrokeKind::Outside,
        );
        if changed {
            self.refresh();
        }
        ui.horizontal(|ui| {
            if ui.button("Clear").clicked() {
                self.clear();
            }
            if ui.button("Load test digit").clicked() {
                self.load_next_test_digit();
            }
        });
        if let Some((i, label)) = self.loaded_test {
            ui.label(format!("Test digit #{i} (true label {label})"));
        }
    }

    fn result_column(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.label("Form:");
            let mut form = self.form;
            ui.radio_value(&mut form, Form::Deploy, form_label(Form::Deploy));
            ui.radio_value(&mut form, Form::Train, form_label(Form::Train));
            self.set_form(form);
        });
        let text = match self.prediction {
            Some(p) => format!("Prediction: {p}"),
            None => "Prediction: -".to_string(),
        };
        ui.label(egui::RichText::new(text).size(36.0).strong());
        if let Some(e) = &self.last_error {
            ui.colored_label(Color32::RED, e);
        }
        let probs = self.probs.clone().unwrap_or_else(|| vec![0.0; 10]);
        for (d, p) in probs.iter().enumerate() {
            ui.horizontal(|ui| {
                ui.monospace(format!("{d}"));
                let bar = egui::ProgressBar::new(*p)
                    .desired_width(220.0)
                    .text(format!("{:5.1}%", p * 100.0));
                let bar = if Some(d) == self.prediction {
                    bar.fill(Color32::from_rgb(40, 160, 80))
                } else {
                    bar
                };
                ui.add(bar);
            });
        }
    }

    fn latency_plot(&mut self, ui: &mut egui::Ui) {
        ui.label("Latency per inference (ms): thin = each run, thick = running median of 15");
        ui.horizontal(|ui| {
            for form in [Form::Deploy, Form::Train] {
                let v = self.latencies(form);
                let m = median(v).map_or("-".to_string(), |m| format!("{m:.2} ms"));
                ui.colored_label(
                    FORM_COLORS[form_index(form)],
                    format!("{}: median {m} over {} runs", form_label(form), v.len()),
                );
            }
        });
        let (rect, _) = ui.allocate_exact_size(Vec2::new(560.0, 140.0), Sense::hover());
        let painter = ui.painter_at(rect);
        painter.rect_filled(rect, 2.0, ui.visuals().extreme_bg_color);
        let max = self
            .latencies
            .iter()
            .flatten()
            .copied()
            .fold(0.0_f64, f64::max)
            .max(1e-3)
            * 1.1;
        let len = self
            .latencies
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(0)
            .max(2);
        let to_screen = |i: usize, v: f64| {
            Pos2::new(
                rect.min.x + rect.width() * i as f32 / (len - 1) as f32,
                rect.max.y - rect.height() * (v / max) as f32,
            )
        };
        for form in [Form::Deploy, Form::Train] {
            let v = &self.latencies[form_index(form)];
            let c = FORM_COLORS[form_index(form)];
            let raw: Vec<Pos2> = v
                .iter()
                .enumerate()
                .map(|(i, &x)| to_screen(i, x))
                .collect();
            let med: Vec<Pos2> = (0..v.len())
                .map(|i| to_screen(i, median(&v[i.saturating_sub(14)..=i]).unwrap_or(0.0)))
                .collect();
            if raw.len() >= 2 {
                painter.add(egui::Shape::line(
                    raw,
                    Stroke::new(1.0, c.gamma_multiply(0.6)),
                ));
                painter.add(egui::Shape::line(med, Stroke::new(2.5, c)));
            } else if let Some(p) = raw.first() {
                painter.circle_filled(*p, 3.0, c);
            }
        }
        painter.text(
            rect.left_top() + Vec2::new(4.0, 2.0),
            egui::Align2::LEFT_TOP,
            format!("{max:.2} ms"),
            egui::FontId::monospace(11.0),
            ui.visuals().text_color(),
        );
    }

    fn imagenet_section(&mut self, ui: &mut egui::Ui) {
        ui.heading("ImageNet");
        match (&self.imagenet, &self.imagenet_error) {
            (Some(net), _) => {
                ui.label(format!(
                    "Weights: {} — drop an image file on the window or type a path:",
                    net.path.display()
                ));
            }
            (None, Some(e)) => {
                ui.colored_label(Color32::RED, format!("Weights failed to load: {e}"));
            }
            (None, None) => {
                ui.label(
                    "No ImageNet weights. Start with `repvgg-demo --weights repvgg_a0.safetensors` \
                     (a timm or official RepVGG checkpoint) to classify dropped images.",
                );
            }
        }
        ui.horizontal(|ui| {
            let label = ui.label("Image path:");
            let edit = ui
                .text_edit_singleline(&mut self.image_path)
                .labelled_by(label.id);
            let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if (ui.button("Classify").clicked() || enter) && !self.image_path.trim().is_empty() {
                let path = PathBuf::from(self.image_path.trim());
                self.classify_image_for_ui(path);
            }
        });
        if let Some((name, result)) = &self.image_result {
            match result {
                Ok(guesses) => {
                    ui.label(format!("{name}:"));
                    for g in guesses {
                        ui.horizontal(|ui| {
                            ui.add(
                                egui::ProgressBar::new(g.prob)
                                    .desired_width(160.0)
                                    .text(format!("{:5.1}%", g.prob * 100.0)),
                            );
                            ui.label(format!("{} (#{})", g.label, g.class));
                        });
                    }
                }
                Err(e) => {
                    ui.colored_label(Color32::RED, format!("Error: {name}: {e}"));
                }
            }
        }
    }
}
