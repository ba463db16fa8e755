//! Every shader's module (its shared parts from `shaders/common/`, then its own file) parses and
//! validates with naga, on the CPU (no adapter needed); every WGSL file in `shaders/` is the
//! source of exactly one `Shader`, every file in `shaders/common/` of one `ShaderPart`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

use std::path::PathBuf;

use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};
use repvgg_gpu::{Precision, Shader, ShaderPart};

/// The crate's `shaders`: a link to the repository's top-level `shaders/` (a copy in a
/// packaged crate), the folder `Shader` includes its sources from.
fn shader_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("shaders")
}

fn wgsl_files() -> Vec<PathBuf> {
    wgsl_files_in(shader_dir())
}

fn wgsl_files_in(dir: PathBuf) -> Vec<PathBuf> {
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
    for shader in Shader::ALL {
        let source = shader.source_for(Precision::F32);
        let name = shader.file_name();
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{name}:\n{}", e.emit_to_string(&source)));
        // Baseline WebGPU capabilities, plus subgroup operations (the subgroup convs need them;
        // the network only uses them where the device has them).
        let mut validator = Validator::new(
            ValidationFlags::all(),
            Capabilities::default() | Capabilities::SUBGROUP,
        );
        validator
            .subgroup_stages(ShaderStages::COMPUTE)
            .subgroup_operations(SubgroupOperationSet::all());
        validator
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}:\n{}", e.emit_to_string(&source)));
        validated += 1;
    }
    assert_eq!(
        validated,
        wgsl_files().len(),
        "shaders/ and Shader::ALL disagree"
    );
}

/// Each shared part is prepended to at least one shader, the prelude to every one, and a
/// module carries each of its parts once, ahead of its own text.
#[test]
fn every_part_is_shared_and_comes_first() {
    for part in ShaderPart::ALL {
        assert!(
            Shader::ALL.iter().any(|s| s.parts().contains(&part)),
            "{part:?} is prepended to no shader"
        );
    }
    for shader in Shader::ALL {
        assert_eq!(
            shader.parts().first(),
            Some(&ShaderPart::Prelude),
            "{shader:?}"
        );
        let source = shader.source_for(Precision::F32);
        let mut at = 0;
        for part in shader
            .parts()
            .iter()
            .map(|p| p.source())
            .chain([shader.source()])
        {
            let found = source[at..]
                .find(part)
                .unwrap_or_else(|| panic!("{shader:?}: a part is missing or out of order"));
            at += found + part.len();
        }
        assert_eq!(at, source.len(), "{shader:?}: text after its own file");
    }
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
    let parts = wgsl_files_in(shader_dir().join("common"));
    assert_eq!(
        parts.len(),
        ShaderPart::ALL.len(),
        "shaders/common and ShaderPart::ALL"
    );
    for part in ShaderPart::ALL {
        let on_disk = std::fs::read_to_string(shader_dir().join(part.file_name()))
            .unwrap_or_else(|e| panic!("{:?} names {}: {e}", part, part.file_name()));
        assert_eq!(
            on_disk,
            part.source(),
            "{part:?}: compiled-in text differs from disk"
        );
    }
}
