//! The bad-input table (`docs/errors.md`): every row is run here, and the table must match
//! what the binary prints: the first line of stderr and the exit code. Nothing may panic or
//! abort. Paths are shown as `$DIR` (the test's temporary folder) and `$FIXTURES`
//! (`tests/fixtures`).
//!
//! `REPVGG_PRINT_ERRORS_TABLE=1 cargo test -p repvgg-cli --test bad_inputs -- --nocapture`
//! prints the table as the binary produces it, to review and paste into the doc.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use repvgg_model::fuzzing::{
    nested_dicts, nested_lists, nested_tuples, open_marks, pickle, self_appending_list,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A safetensors file from a raw JSON header and `data` bytes.
fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header.as_bytes());
    b.extend(data);
    b
}

/// A safetensors file of f32 tensors.
fn f32_file(tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, (s, d))| {
            (
                k.clone(),
                s.clone(),
                d.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<_> = bytes
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// The f32 tensors of a fixture checkpoint.
fn base_weights() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(fixtures().join("a_narrow.train.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(k, v)| {
            let d = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (k, (v.shape().to_vec(), d))
        })
        .collect()
}

fn modified(f: impl FnOnce(&mut BTreeMap<String, (Vec<usize>, Vec<f32>)>)) -> Vec<u8> {
    let mut t = base_weights();
    f(&mut t);
    f32_file(&t)
}

/// An input tensor file holding one tensor `input` of `dtype` and `shape` (zeros).
fn input_file(dtype: safetensors::Dtype, shape: &[usize]) -> Vec<u8> {
    let n: usize = shape.iter().product::<usize>() * dtype.bitsize() / 8;
    let data = vec![0u8; n];
    let v = safetensors::tensor::TensorView::new(dtype, shape.to_vec(), &data).unwrap();
    safetensors::serialize(vec![("input", v)], None).unwrap()
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([((x + 3 * y) % 256) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A PNG signature and IHDR (8-bit grey) claiming `w` x `h`, and an empty IDAT.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32fast::hash(&body).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// One row: an id (as in the doc), files to create in `$DIR`, the arguments (`$DIR/...` and
/// `$FIXTURES/...` are expanded), extra environment.
struct Case {
    id: &'static str,
    files: Vec<(&'static str, Vec<u8>)>,
    args: Vec<&'static str>,
    env: Vec<(&'static str, String)>,
    /// Needs a GPU adapter (lavapipe here): skipped without one unless `REPVGG_REQUIRE_GPU=1`.
    gpu: bool,
}

fn case(id: &'static str, files: Vec<(&'static str, Vec<u8>)>, args: &[&'static str]) -> Case {
    Case {
        id,
        files,
        args: args.to_vec(),
        env: vec![],
        gpu: false,
    }
}

/// A deploy-form checkpoint whose stem is `stem` channels wide and whose four stages are one
/// 8-channel block each: a tiny network with a wide first activation (`stem * H * W` bytes per
/// image), to reach the GPU's storage-binding limit with small files.
fn wide_stem_deploy(stem: usize) -> Vec<u8> {
    let mut t = BTreeMap::new();
    let mut conv = |name: &str, o: usize, i: usize| {
        let n = o * i * 9;
        let scale = 1.0 / (i as f32 * 9.0).sqrt();
        let w = (0..n)
            .map(|k| ((k * 7919 % 1009) as f32 / 504.5 - 1.0) * scale)
            .collect();
        t.insert(format!("{name}.reparam_conv.weight"), (vec![o, i, 3, 3], w));
        let b = (0..o).map(|k| (k % 5) as f32 * 0.01).collect();
        t.insert(format!("{name}.reparam_conv.bias"), (vec![o], b));
    };
    conv("stem", stem, 3);
    conv("stages.0.0", 8, stem);
    for s in 1..4 {
        conv(&format!("stages.{s}.0"), 8, 8);
    }
    t.insert(
        "head.fc.weight".into(),
        (
            vec![10, 8],
            (0..80).map(|k| (k % 9) as f32 * 0.1 - 0.4).collect(),
        ),
    );
    t.insert("head.fc.bias".into(), (vec![10], vec![0.0; 10]));
    f32_file(&t)
}

/// An input file `input` `[n, 3, h, w]` of varied values.
fn ramp_input(n: usize, h: usize, w: usize) -> Vec<u8> {
    let data = (0..n * 3 * h * w)
        .map(|k| ((k * 31 % 255) as f32) / 127.5 - 1.0)
        .collect();
    f32_file(&BTreeMap::from([(
        "input".to_string(),
        (vec![n, 3, h, w], data),
    )]))
}

/// lavapipe's (and wgpu's default) `max_storage_buffer_binding_size`: 128 MiB.
const STEM: usize = 256;

const INFER: [&str; 5] = [
    "infer",
    "--input",
    "$FIXTURES/a_narrow.io.safetensors",
    "--output",
    "$DIR/y.safetensors",
];

fn infer_with(weights: &'static str) -> Vec<&'static str> {
    let mut a = INFER.to_vec();
    a.extend(["--weights", weights]);
    a
}

fn infer_input(input: &'static str) -> Vec<&'static str> {
    vec![
        "infer",
        "--weights",
        "$FIXTURES/a_narrow.train.safetensors",
        "--input",
        input,
        "--output",
        "$DIR/y.safetensors",
    ]
}

/// The hostile `.pth` rows' file.
const WP: &str = "$DIR/w.pth";

/// How deep the hostile `.pth` files nest: about two million opcodes, a ~2 MB file.
const DEEP: usize = 2_000_000;

fn pth(id: &'static str, bytes: Vec<u8>, args: &[&'static str]) -> Case {
    Case {
        id,
        files: vec![("w.pth", bytes)],
        args: args.to_vec(),
        env: vec![],
        gpu: false,
    }
}

fn summary_of(weights: &'static str) -> Vec<&'static str> {
    vec!["summary", "--weights", weights]
}

/// A pickle in torch's zip layout, no storages.
fn zip(pickle: Vec<u8>) -> Vec<u8> {
    repvgg_model::fuzzing::torch_zip(&pickle, &[])
}

/// `{'w': _rebuild_tensor_v2(storage '0' of 4 floats, 0, size, stride)}`, `rank` dimensions.
fn tensor_of_rank(rank: usize) -> Vec<u8> {
    let mut b = vec![b'}', 0x8c, 1, b'w'];
    b.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    b.extend([b'(', 0x8c, 7]);
    b.extend(b"storage");
    b.extend(b"ctorch\nFloatStorage\n");
    b.extend([0x8c, 1, b'0', 0x8c, 3]);
    b.extend(b"cpu");
    b.extend([b'K', 4, b't', b'Q', b'K', 0]);
    for _ in 0..2 {
        b.push(b'(');
        b.extend(std::iter::repeat_n([b'K', 1], rank).flatten());
        b.push(b't');
    }
    b.extend([b't', b'R', b's']);
    pickle(b)
}

/// A safetensors file whose JSON header nests `depth` arrays.
fn deep_json_safetensors(depth: usize) -> Vec<u8> {
    let header = format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
    raw_safetensors(&header, &[])
}

fn cases() -> Vec<Case> {
    use safetensors::Dtype;
    let w = "$DIR/w.safetensors";
    let x = "$DIR/x.safetensors";
    let weights = |id, bytes: Vec<u8>| Case {
        id,
        files: vec![("w.safetensors", bytes)],
        args: infer_with(w),
        env: vec![],
        gpu: false,
    };
    let input = |id, bytes: Vec<u8>| Case {
        id,
        files: vec![("x.safetensors", bytes)],
        args: infer_input(x),
        env: vec![],
        gpu: false,
    };
    let classify = |id, name: &'static str, bytes: Vec<u8>, arg: &'static str| Case {
        id,
        files: vec![(name, bytes)],
        args: vec!["classify", arg],
        env: vec![],
        gpu: false,
    };
    let one_tensor = |name: &str| {
        let mut t = BTreeMap::new();
        t.insert(name.to_string(), (vec![1, 1, 1, 1], vec![0.5f32]));
        f32_file(&t)
    };
    let mut i32_bias = {
        let t = base_weights();
        let mut bytes: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = t
            .iter()
            .map(|(k, (s, d))| {
                (
                    k.clone(),
                    s.clone(),
                    d.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    Dtype::F32,
                )
            })
            .collect();
        for b in &mut bytes {
            if b.0 == "stem.conv_kxk.bn.bias" {
                b.3 = Dtype::I32;
            }
        }
        let views: Vec<_> = bytes
            .iter()
            .map(|(k, s, b, d)| {
                (
                    k.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        vec![safetensors::serialize(views, None).unwrap()]
    };
    let jpg = jpeg(64, 48);
    vec![
        weights("empty-checkpoint", vec![]),
        weights("truncated-header", vec![0x10, 0, 0]),
        weights(
            "header-length-past-eof",
            raw_safetensors("{}", b"")
                .into_iter()
                .enumerate()
                .map(|(i, b)| if i == 0 { 200 } else { b })
                .collect(),
        ),
        weights("invalid-header-json", raw_safetensors("{\"a\": [1, 2", b"")),
        weights(
            "tensor-offsets-out-of-range",
            raw_safetensors(
                r#"{"a":{"dtype":"F32","shape":[1000000],"data_offsets":[0,4000000]}}"#,
                &[0; 16],
            ),
        ),
        weights(
            "tensor-offsets-overlapping",
            raw_safetensors(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                &[0; 12],
            ),
        ),
        weights("unsupported-dtype", i32_bias.remove(0)),
        weights(
            "nan-weights",
            modified(|t| {
                let v = t.get_mut("stages.0.0.conv_kxk.conv.weight").unwrap();
                v.1[0] = f32::NAN;
                v.1[1] = f32::INFINITY;
            }),
        ),
        weights(
            "missing-key",
            modified(|t| {
                t.remove("stages.1.1.conv_1x1.bn.running_var");
            }),
        ),
        weights(
            "unexpected-key",
            modified(|t| {
                t.insert("head.fc.scale".into(), (vec![1], vec![1.0]));
            }),
        ),
        weights(
            "misshapen-key",
            modified(|t| {
                let v = t.get_mut("stages.2.0.conv_kxk.bn.weight").unwrap();
                *v = (vec![15], vec![1.0; 15]);
            }),
        ),
        weights(
            "mixed-train-deploy",
            modified(|t| {
                t.insert(
                    "stages.0.1.reparam_conv.weight".into(),
                    (vec![8, 8, 3, 3], vec![0.0; 576]),
                );
            }),
        ),
        weights(
            "absurd-stage-index",
            one_tensor("stages.99999999999.0.conv_kxk.conv.weight"),
        ),
        weights(
            "absurd-block-index",
            one_tensor("stages.0.18446744073709551615.conv_kxk.conv.weight"),
        ),
        weights("not-a-repvgg", one_tensor("encoder.layer.0.weight")),
        input("input-wrong-rank", input_file(Dtype::F32, &[3, 16, 16])),
        input(
            "input-wrong-channels",
            input_file(Dtype::F32, &[1, 1, 16, 16]),
        ),
        input("input-wrong-dtype", input_file(Dtype::F16, &[1, 3, 16, 16])),
        Case {
            args: [
                &infer_input(x)[..],
                &["--device", "cpu", "--precision", "int8"],
            ]
            .concat(),
            ..input(
                "int8-without-calibration",
                input_file(Dtype::F32, &[1, 3, 16, 16]),
            )
        },
        case(
            "calib-tensor-wrong-channels",
            vec![("x.safetensors", input_file(Dtype::F32, &[2, 3, 8, 8]))],
            &[
                "demo",
                "--device",
                "cpu",
                "--precision",
                "int8",
                "--calib",
                x,
            ],
        ),
        input("input-batch-0", input_file(Dtype::F32, &[0, 3, 16, 16])),
        input(
            "input-nan",
            f32_file(&BTreeMap::from([(
                "input".to_string(),
                (vec![1, 3, 4, 4], {
                    let mut v = vec![0.0f32; 48];
                    v[5] = f32::NAN;
                    v
                }),
            )])),
        ),
        Case {
            id: "weights-path-missing",
            files: vec![],
            args: infer_with("$DIR/nope.safetensors"),
            env: vec![],
            gpu: false,
        },
        Case {
            id: "output-unwritable",
            files: vec![],
            args: vec![
                "infer",
                "--weights",
                "$FIXTURES/a_narrow.train.safetensors",
                "--input",
                "$FIXTURES/a_narrow.io.safetensors",
                "--output",
                "$DIR/no/such/folder/y.safetensors",
            ],
            env: vec![],
            gpu: false,
        },
        Case {
            id: "output-is-the-input",
            files: vec![(
                "w.safetensors",
                std::fs::read(fixtures().join("a_narrow.train.safetensors")).unwrap(),
            )],
            args: vec!["convert", "--weights", w, "--output", w],
            env: vec![],
            gpu: false,
        },
        classify("image-0x0", "empty.png", png_header(0, 0), "$DIR/empty.png"),
        classify(
            "image-1x100000",
            "tall.png",
            png(1, 100_000),
            "$DIR/tall.png",
        ),
        classify(
            "image-decompression-bomb",
            "bomb.png",
            png_header(50_000, 50_000),
            "$DIR/bomb.png",
        ),
        classify(
            "image-truncated-jpeg",
            "cut.jpg",
            jpg[..jpg.len() / 2].to_vec(),
            "$DIR/cut.jpg",
        ),
        classify(
            "image-unsupported-format",
            "anim.gif",
            b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(),
            "$DIR/anim.gif",
        ),
        classify(
            "image-not-an-image",
            "notes.png",
            b"hello".to_vec(),
            "$DIR/notes.png",
        ),
        Case {
            id: "image-folder-without-images",
            files: vec![("empty/readme.txt", b"no images".to_vec())],
            args: vec!["classify", "$DIR/empty"],
            env: vec![],
            gpu: false,
        },
        Case {
            id: "image-path-missing",
            files: vec![],
            args: vec!["classify", "$DIR/nope.jpg"],
            env: vec![],
            gpu: false,
        },
        Case {
            id: "image-good-and-bad",
            files: vec![("ok.png", png(40, 40)), ("bad.png", b"nope".to_vec())],
            args: vec!["classify", "$DIR/bad.png", "$DIR/ok.png"],
            env: vec![],
            gpu: false,
        },
        Case {
            id: "image-glob-no-match",
            files: vec![],
            args: vec!["classify", "$DIR/*.webp"],
            env: vec![],
            gpu: false,
        },
        case("top-0", vec![], &["classify", "--top", "0", "$DIR/x.png"]),
        case(
            "size-0",
            vec![],
            &["summary", "--arch", "a0", "--size", "0"],
        ),
        case(
            "size-overflow",
            vec![],
            &["summary", "--arch", "a0", "--size", "4294967296x4294967296"],
        ),
        case(
            "size-not-a-number",
            vec![],
            &["summary", "--arch", "a0", "--size", "big"],
        ),
        case("unknown-arch", vec![], &["summary", "--arch", "z9"]),
        // Hostile `.pth` files (~2 MB of legal pickle nesting a million levels deep) used to
        // overflow the stack (exit 134); each now stops at its limit (docs/errors.md).
        pth(
            "pth-nested-tuples",
            zip(nested_tuples(DEEP)),
            &infer_with(WP),
        ),
        pth("pth-open-marks", zip(open_marks(DEEP)), &summary_of(WP)),
        pth(
            "pth-nested-lists",
            zip(nested_lists(DEEP / 2)),
            &infer_with(WP),
        ),
        pth(
            "pth-nested-dicts",
            zip(nested_dicts(DEEP / 4)),
            &summary_of(WP),
        ),
        pth(
            "pth-list-holding-itself",
            zip(self_appending_list(DEEP / 3)),
            &infer_with(WP),
        ),
        pth(
            "pth-legacy-nested-tuples",
            repvgg_model::fuzzing::legacy_pth(&nested_tuples(DEEP), &[]),
            &summary_of(WP),
        ),
        pth(
            "pth-tensor-rank",
            repvgg_model::fuzzing::torch_zip(
                &tensor_of_rank(100_000),
                &[("0", &vec![0u8; 16][..])],
            ),
            &infer_with(WP),
        ),
        pth(
            "pth-aliased-storage",
            repvgg_model::fuzzing::torch_zip(
                &repvgg_model::fuzzing::aliased_tensors_pickle(100_000, 16384),
                &[("0", &vec![0u8; 4 * 16384][..])],
            ),
            &infer_with(WP),
        ),
        Case {
            id: "safetensors-nested-json-header",
            files: vec![("w.safetensors", deep_json_safetensors(1_000_000))],
            args: summary_of(w),
            env: vec![],
            gpu: false,
        },
        Case {
            id: "gpu-no-adapter",
            files: vec![],
            args: vec![
                "infer",
                "--weights",
                "$FIXTURES/a_narrow.train.safetensors",
                "--input",
                "$FIXTURES/a_narrow.io.safetensors",
                "--output",
                "$DIR/y.safetensors",
                "--device",
                "gpu",
            ],
            env: vec![("WGPU_ADAPTER_NAME", "no such adapter, surely".into())],
            gpu: false,
        },
        Case {
            id: "hf-offline-no-cache",
            files: vec![],
            args: vec!["classify", "--hf", "timm/repvgg_a0.rvgg_in1k", "$DIR/x.png"],
            env: vec![
                ("HF_HUB_OFFLINE", "1".into()),
                ("HF_HOME", "$DIR/hf".into()),
            ],
            gpu: false,
        },
        Case {
            id: "train-form-from-deploy-file",
            files: vec![],
            args: vec![
                "infer",
                "--weights",
                "$FIXTURES/a_narrow.deploy.safetensors",
                "--input",
                "$FIXTURES/a_narrow.io.safetensors",
                "--output",
                "$DIR/y.safetensors",
                "--form",
                "train",
            ],
            env: vec![],
            gpu: false,
        },
        Case {
            // 160 images of 64x64: the stem's output is 160 MiB, more than one 128 MiB
            // storage binding; the engine splits the batch (128 + 32 images) and the logits
            // equal the CPU's (checked below).
            id: "gpu-batch-beyond-buffer-limits",
            files: vec![
                ("wide.safetensors", wide_stem_deploy(STEM)),
                ("x.safetensors", ramp_input(160, 64, 64)),
            ],
            args: vec![
                "infer",
                "--weights",
                "$DIR/wide.safetensors",
                "--input",
                "$DIR/x.safetensors",
                "--output",
                "$DIR/y.safetensors",
                "--device",
                "gpu",
            ],
            env: vec![],
            gpu: true,
        },
        Case {
            // One 725x725 image: its stem output alone (256 x 363 x 363 x 4 bytes) exceeds
            // the binding limit, so no batch split can help.
            id: "gpu-image-beyond-buffer-limits",
            files: vec![
                ("wide.safetensors", wide_stem_deploy(STEM)),
                ("x.safetensors", ramp_input(1, 725, 725)),
            ],
            args: vec![
                "infer",
                "--weights",
                "$DIR/wide.safetensors",
                "--input",
                "$DIR/x.safetensors",
                "--output",
                "$DIR/y.safetensors",
                "--device",
                "gpu",
            ],
            env: vec![],
            gpu: true,
        },
    ]
}

/// Whether Mesa's lavapipe adapter is there: the GPU rows' figures are its limits (a 128 MiB
/// storage binding), so they run on it, whatever other adapter the machine has. Without it
/// they are skipped, unless `REPVGG_REQUIRE_GPU=1`, which makes its absence a failure.
fn lavapipe_available() -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_repvgg"))
        .arg("info")
        .env("WGPU_ADAPTER_NAME", LAVAPIPE)
        .output()
        .expect("runs");
    let ok = out.status.success();
    let required = std::env::var("REPVGG_REQUIRE_GPU").is_ok_and(|v| v.trim() == "1");
    assert!(
        ok || !required,
        "REPVGG_REQUIRE_GPU=1 but `repvgg info` finds no lavapipe adapter:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok
}

/// lavapipe's adapter name (`llvmpipe (LLVM ...)`), for `WGPU_ADAPTER_NAME`.
const LAVAPIPE: &str = "llvmpipe";

/// `(first line of stderr, exit code)` of one case, with paths replaced by `$DIR`/`$FIXTURES`.
fn run(c: &Case, dir: &Path) -> (String, i32, String) {
    let d = dir.to_str().unwrap();
    let f = fixtures().canonicalize().unwrap();
    let expand = |a: &str| {
        a.replace("$DIR", d)
            .replace("$FIXTURES", f.to_str().unwrap())
    };
    for (name, bytes) in &c.files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_repvgg"));
    cmd.args(c.args.iter().map(|a| expand(a)))
        .env_remove("HF_ENDPOINT")
        .env_remove("REPVGG_REQUIRE_GPU")
        .env("HF_HUB_OFFLINE", "1")
        .env("NO_COLOR", "1");
    if c.gpu {
        cmd.env("WGPU_ADAPTER_NAME", LAVAPIPE);
    }
    for (k, v) in &c.env {
        cmd.env(k, expand(v));
    }
    let out = cmd.output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let first = stderr.lines().next().unwrap_or("").to_string();
    let mut shown = first
        .replace(d, "$DIR")
        .replace(f.to_str().unwrap(), "$FIXTURES");
    // The adapters a machine has differ: shown as `$ADAPTERS`.
    let list = "matches none of [";
    if let Some(i) = shown.find(list).map(|i| i + list.len())
        && let Some(j) = shown[i..].find(']')
    {
        shown.replace_range(i..i + j, "$ADAPTERS");
    }
    // A signal (abort, OOM kill) has no exit code: report it as -1, which no row expects.
    (shown, out.status.code().unwrap_or(-1), stderr)
}

/// The rows of `docs/errors.md`: id -> (first line, exit code). Every table row must parse.
fn doc_rows(text: &str) -> BTreeMap<String, (String, i32)> {
    let mut rows = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        // | `id` | what | `first line` | exit |
        let cells: Vec<&str> = line.split(" | ").map(str::trim).collect();
        assert_eq!(cells.len(), 4, "docs/errors.md: not a 4-column row: {line}");
        let id = cells[0].trim_start_matches("| `").trim_end_matches('`');
        let first = if cells[2] == "(none)" {
            String::new()
        } else {
            cells[2]
                .strip_prefix("`` ")
                .and_then(|c| c.strip_suffix(" ``"))
                .unwrap_or_else(|| panic!("docs/errors.md: first line not in `` ``: {line}"))
                .replace("\\|", "|")
        };
        let code: i32 = cells[3]
            .trim_end_matches('|')
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("docs/errors.md: bad exit code: {line}"));
        let dup = rows.insert(id.to_string(), (first, code));
        assert!(dup.is_none(), "docs/errors.md: {id} twice");
    }
    rows
}

fn doc_text() -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/errors.md"))
        .unwrap_or_default()
}

/// The `logits` of an output file.
fn logits(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("logits").unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// What a successful row must also have produced.
fn check_result(c: &Case, dir: &Path) {
    if c.id == "gpu-batch-beyond-buffer-limits" {
        // The split GPU run must equal the CPU's, image by image.
        let gpu = logits(&dir.join("y.safetensors"));
        let cpu_out = dir.join("cpu.safetensors");
        let out = Command::new(env!("CARGO_BIN_EXE_repvgg"))
            .args(["infer", "--weights"])
            .arg(dir.join("wide.safetensors"))
            .arg("--input")
            .arg(dir.join("x.safetensors"))
            .arg("--output")
            .arg(&cpu_out)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cpu = logits(&cpu_out);
        assert_eq!(gpu.len(), 160 * 10);
        let d = repvgg_math::compare::max_abs_diff_slices(&gpu, &cpu);
        let scale = repvgg_math::compare::max_abs_diff_slices(&cpu, &vec![0.0f32; cpu.len()]);
        assert!(scale > 1e-3, "logits all ~0: the check would be vacuous");
        assert!(
            d <= 1e-4 * scale.max(1.0),
            "GPU (split) vs CPU logits: {d} (scale {scale})"
        );
        // Distinct images give distinct logits, so a chunk written to the wrong place shows.
        assert_ne!(gpu[..10], gpu[1280..1290]);
    }
}

#[test]
fn the_doc_parser_reads_rows_and_rejects_malformed_ones() {
    let rows = doc_rows(
        "| id | a | b | c |\n|---|---|---|---|\n| `x` | what | `` error: `a` \\| b `` | 1 |\n\
         | `y` | fine | (none) | 0 |\n",
    );
    assert_eq!(rows["x"], ("error: `a` | b".to_string(), 1));
    assert_eq!(rows["y"], (String::new(), 0));
    let bad = std::panic::catch_unwind(|| doc_rows("| `x` | what | error | 1 |\n"));
    assert!(
        bad.is_err(),
        "a first line outside backticks must be rejected"
    );
    let bad = std::panic::catch_unwind(|| doc_rows("| `x` | what | `` e `` | one |\n"));
    assert!(bad.is_err(), "a non-numeric exit code must be rejected");
}

#[test]
fn every_bad_input_gets_its_documented_error() {
    let cases = cases();
    let print = std::env::var("REPVGG_PRINT_ERRORS_TABLE").is_ok();
    let doc = doc_rows(&doc_text());
    let has_gpu = lavapipe_available();
    let mut failures = Vec::new();
    for c in &cases {
        if c.gpu && !has_gpu {
            // lavapipe_available() panicked under REPVGG_REQUIRE_GPU=1, so this is a real skip.
            eprintln!("{}: skipped, no lavapipe adapter", c.id);
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let t = std::time::Instant::now();
        let (first, code, stderr) = run(c, dir.path());
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "{}: panicked:\n{stderr}",
            c.id
        );
        assert!(
            code == 0 || code == 1 || code == 2,
            "{}: exit {code} (a signal?):\n{stderr}",
            c.id
        );
        if code == 0 {
            check_result(c, dir.path());
        }
        if print {
            let shown = if first.is_empty() {
                "(none)".to_string()
            } else {
                format!("`` {} ``", first.replace('|', "\\|"))
            };
            println!("| `{}` | | {shown} | {code} |", c.id);
            eprintln!("{}: {:.2} s", c.id, t.elapsed().as_secs_f64());
        }
        match doc.get(c.id) {
            None => failures.push(format!("{}: no row in docs/errors.md", c.id)),
            Some((want, want_code)) => {
                if *want != first || *want_code != code {
                    failures.push(format!(
                        "{}:\n  doc:    {want} (exit {want_code})\n  binary: {first} (exit {code})",
                        c.id
                    ));
                }
            }
        }
    }
    for id in doc.keys() {
        if !cases.iter().any(|c| c.id == id) {
            failures.push(format!("{id}: documented but not tested"));
        }
    }
    assert!(doc.len() >= 25, "only {} rows in docs/errors.md", doc.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
