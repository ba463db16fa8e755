//! The demo driven as a person would: click "Load test digit", read the prediction shown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use repvgg_demo::{DemoApp, Device, Form, Precision, form_label};

fn harness() -> Harness<'static, DemoApp> {
    let builder = Harness::builder().with_size(egui::Vec2::new(760.0, 1100.0));
    // The wgpu test renderer needs an adapter; without one the app falls back to the CPU.
    let builder = if repvgg_gpu::GpuContext::new().is_ok() {
        builder.wgpu()
    } else {
        eprintln!("no GPU adapter: running the UI test without the wgpu renderer");
        builder
    };
    // `Gpu`: the software adapters of CI runners are taken too, so the GPU path is what runs.
    builder.build_eframe(|cc| DemoApp::from_creation_context(cc, None, Device::GPU, Precision::F32))
}

#[test]
fn load_test_digit_shows_its_label_in_both_forms() {
    let mut h = harness();
    h.run();
    eprintln!("device: {}", h.state().device_text());
    h.get_by_label("Prediction: -");
    let label = h.state().test_set().expect("test digits").labels[0];

    h.get_by_label("Load test digit").click();
    h.run();
    let expected = format!("Prediction: {label}");
    h.get_by_label(&expected);
    h.get_by_label(&format!("Test digit #0 (true label {label})"));
    assert_eq!(h.state().form(), Form::Deploy);

    h.get_by_label(form_label(Form::Train)).click();
    h.run();
    assert_eq!(h.state().form(), Form::Train);
    h.get_by_label(&expected);
    assert!(!h.state().latencies(Form::Deploy).is_empty());
    assert!(!h.state().latencies(Form::Train).is_empty());

    h.get_by_label("Clear").click();
    h.run();
    h.get_by_label("Prediction: -");
}

#[test]
fn without_weights_a_hint_is_shown_and_bad_paths_are_errors() {
    let mut h = harness();
    h.run();
    h.get_by_label_contains("--weights");
    h.state_mut()
        .classify_image_for_ui("/nonexistent/cat.jpg".into());
    h.run();
    h.get_by_label_contains("Error: /nonexistent/cat.jpg");
}
