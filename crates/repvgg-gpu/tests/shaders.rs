//! Every WGSL file in `shaders/` parses and validates with naga, on the CPU (no adapter needed),
//! and is the source of exactly one `Shader`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

use std::path::PathBuf;

use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};
use repvgg_gpu::{Precision, Shader};

/// The crate's `shaders`: a link to the repository's top-level `shaders/` (a copy in a
/// packaged crate), the folder `Shader` includes its sources from.
fn shader_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("shaders")
}

fn wgsl_files() -> Vec<PathBuf> {
    let dir = shader_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shader_parses_and_validates() {
    let mut validated = 0;
    for path in wgsl_files() {
        let source = std::fs::read_to_string(&path).expect("readable shader");
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}:\n{}", path.display(), e.emit_to_string(&source)));
        // Baseline WebGPU capabilities, plus subgroup operations (the subgroup conv needs them;
        // the network only uses it where the device has them).
        let mut validator = Validator::new(
            ValidationFlags::all(),
            Capabilities::default() | Capabilities::SUBGROUP,
        );
        validator
            .subgroup_stages(ShaderStages::COMPUTE)
            .subgroup_operations(SubgroupOperationSet::all());
        validator
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}:\n{}", path.display(), e.emit_to_string(&source)));
        validated += 1;
    }
    assert!(
        validated > 0,
        "no .wgsl file found in {}: did the folder move?",
        shader_dir().display()
    );
    assert_eq!(
        validated,
        Shader::ALL.len(),
        "shaders/ and Shader::ALL disagree"
    );
}

/// The f16 form of every shader that has one parses and validates with f16 enabled.
#[test]
fn every_f16_form_parses_and_validates() {
    let mut validated = 0;
    for shader in Shader::ALL.into_iter().filter(|s| s.has_f16()) {
        let source = shader.source_for(Precision::F16);
        let name = shader.file_name();
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{name} (f16):\n{}", e.emit_to_string(&source)));
        let mut validator = Validator::new(
            ValidationFlags::all(),
            Capabilities::default() | Capabilities::SUBGROUP | Capabilities::SHADER_FLOAT16,
        );
        validator
            .subgroup_stages(ShaderStages::COMPUTE)
            .subgroup_operations(SubgroupOperationSet::all());
        validator
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name} (f16):\n{}", e.emit_to_string(&source)));
        validated += 1;
    }
    // Every kernel of the main path: all but the two f32-only baselines.
    assert_eq!(validated, Shader::ALL.len() - 2);
}

#[test]
fn every_shader_file_is_a_shader_variant_and_the_same_text() {
    let names: Vec<&str> = Shader::ALL.iter().map(|s| s.file_name()).collect();
    let files = wgsl_files();
    assert!(
        !files.is_empty(),
        "no shaders found in {}",
        shader_dir().display()
    );
    for path in &files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name");
        assert!(
            names.contains(&name),
            "{name} is in shaders/ but no `Shader` variant loads it"
        );
    }
    for shader in Shader::ALL {
        let on_disk = std::fs::read_to_string(shader_dir().join(shader.file_name()))
            .unwrap_or_else(|e| panic!("{:?} names {}: {e}", shader, shader.file_name()));
        assert_eq!(
            on_disk,
            shader.source(),
            "{shader:?}: compiled-in text differs from disk"
        );
    }
}
