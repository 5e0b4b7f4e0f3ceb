//! The tflite backend (TensorFlow Lite through tflitec). Fixtures come from
//! tests/golden/generate_tflite.py (tensorflow-cpu 2.19.1): a float CNN, a float model with an
//! embedding lookup and dense layers, and a full-integer int8 CNN, with the outputs
//! `tf.lite.Interpreter` gave. Float outputs must match within 1e-5, int8 outputs exactly.

mod common;

use common::{assert_matches_json_schemas, fixtures, import, max_abs_diff, read_npy_dir};
use inferox::LoadPackage;
use inferox::schema::{Dim, Preprocessing};
use inferox::{DType, Error, ImportOptions, LoadOptions, NamedTensors};
use std::path::PathBuf;

const CASES: [&str; 3] = ["float_cnn", "embedding_dense", "int8_cnn"];

fn case(name: &str) -> PathBuf {
    fixtures().join("tflite").join(name)
}

fn with_threads(threads: usize) -> LoadOptions {
    LoadOptions {
        threads: Some(threads),
        ..Default::default()
    }
}

fn dtype(name: &str) -> DType {
    serde_json::from_value(serde_json::Value::String(name.into())).unwrap()
}

#[test]
fn schema_is_read_from_the_model() {
    for name in CASES {
        let dir = case(name);
        let (_tmp, package) = import(&dir);
        assert_matches_json_schemas(package.root());
        package.verify().unwrap();
        let info = package.info();
        assert_eq!(info.model_type, "graph");
        assert_eq!(
            info.backends["tflite"].format,
            inferox::ExecutionFormat::Tflite
        );
        let reference: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
        // The manifest records a quantized graph's quantization: the dtype of its first
        // quantized tensor, as the reference lists them (inputs, then outputs).
        let quantized = ["inputs", "outputs"]
            .iter()
            .flat_map(|k| reference[*k].as_array().unwrap())
            .find(|r| r["scale"].as_f64().is_some())
            .map(|r| dtype(r["dtype"].as_str().unwrap()).to_string());
        assert_eq!(info.backends["tflite"].quantization, quantized, "{name}");
        for (specs, refs) in [
            (&info.io.inputs, &reference["inputs"]),
            (&info.io.outputs, &reference["outputs"]),
        ] {
            let refs = refs.as_array().unwrap();
            assert_eq!(specs.len(), refs.len(), "{name}");
            for (spec, r) in specs.iter().zip(refs) {
                assert_eq!(
                    spec.name,
                    r["name"].as_str().unwrap(),
                    "{name}: signature name"
                );
                assert_eq!(spec.dtype, dtype(r["dtype"].as_str().unwrap()), "{name}");
                let shape: Vec<Dim> = r["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| Dim::Fixed(d.as_u64().unwrap() as usize))
                    .collect();
                assert_eq!(spec.shape, shape, "{name}: {}", spec.name);
                match (&spec.quantization, r["scale"].as_f64()) {
                    (Some(q), Some(scale)) => {
                        assert!((q.scale - scale).abs() <= scale * 1e-7, "{name}: scale");
                        assert_eq!(q.zero_point, r["zero_point"].as_i64().unwrap());
                    }
                    (None, None) => {}
                    (got, want) => panic!("{name}: quantization {got:?}, reference {want:?}"),
                }
            }
        }
    }
}

#[test]
fn outputs_match_the_python_interpreter() {
    for name in CASES {
        let dir = case(name);
        let (_tmp, package) = import(&dir);
        let inputs: NamedTensors = read_npy_dir(&dir.join("inputs")).into_iter().collect();
        let expected = read_npy_dir(&dir.join("outputs"));
        for threads in [1, 2] {
            let model = package.load(&with_threads(threads)).unwrap();
            assert_eq!(model.backend(), "tflite");
            let outputs = model.run(&inputs).unwrap();
            assert_eq!(outputs.len(), expected.len());
            for (output, want) in &expected {
                let got = outputs.get(output).unwrap();
                assert_eq!(got.dtype(), want.dtype(), "{name}");
                if want.dtype().is_float() {
                    let e = max_abs_diff(got, want);
                    assert!(e <= 1e-5, "{name}/{output} ({threads} threads): {e}");
                } else {
                    assert_eq!(got, want, "{name}/{output} ({threads} threads)");
                }
            }
        }
    }
}

#[test]
fn int8_model_quantizes_at_the_boundary_on_request() {
    let dir = case("int8_cnn");
    let (_tmp, package) = import(&dir);
    let options = LoadOptions {
        dequantize: true,
        ..Default::default()
    };
    let model = package.load(&options).unwrap();
    assert_eq!(model.io().inputs[0].dtype, DType::Float32);
    let inputs: NamedTensors = read_npy_dir(&dir.join("float_inputs"))
        .into_iter()
        .collect();
    let outputs = model.run(&inputs).unwrap();
    for (name, want) in read_npy_dir(&dir.join("float_outputs")) {
        assert_eq!(
            outputs.get(&name),
            Some(&want),
            "{name}: dequantized output"
        );
    }
    // Without the option the boundary is int8, and float input is refused by the schema.
    let raw = package.load(&LoadOptions::default()).unwrap();
    let e = raw.run(&inputs).unwrap_err().to_string();
    assert!(e.contains("image") && e.contains("expected int8"), "{e}");
    // A float model has nothing to dequantize.
    let (_t, float) = import(&case("float_cnn"));
    let e = float.load(&options).err().unwrap().to_string();
    assert!(e.contains("no quantized inputs or outputs"), "{e}");
}

#[test]
fn optional_files_come_along() {
    let (_a, cnn) = import(&case("float_cnn"));
    assert!(cnn.root().join("preprocessor_config.json").is_file());
    match &cnn.info().io.inputs[0].preprocessing {
        Some(Preprocessing::Image(image)) => {
            assert_eq!(image.mean, [0.5, 0.5, 0.5]);
            assert_eq!(image.std, [0.5, 0.5, 0.5]);
            assert_eq!(image.layout, "nhwc");
            assert!((image.rescale_factor - 1.0 / 255.0).abs() < 1e-12);
        }
        other => panic!("image hint expected, got {other:?}"),
    }
    let (_b, emb) = import(&case("embedding_dense"));
    assert!(emb.root().join("backends/tflite/config.json").is_file());
    assert_eq!(emb.info().labels.get(&2).map(String::as_str), Some("c"));
}

#[test]
fn bad_models_and_inputs_are_clear_errors() {
    // A truncated flatbuffer is refused at import, naming the file; nothing is written.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let bytes = std::fs::read(case("float_cnn").join("model.tflite")).unwrap();
    std::fs::write(src.join("model.tflite"), &bytes[..bytes.len() / 3]).unwrap();
    let dest = tmp.path().join("pkg");
    let e = inferox::import(&src, &dest, &ImportOptions::default(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.tflite") && e.contains("not a TensorFlow Lite model"),
        "{e}"
    );
    assert!(!dest.exists());
    // Two models in one directory: which one is meant is not guessed.
    std::fs::write(src.join("model.tflite"), &bytes).unwrap();
    std::fs::write(src.join("other.tflite"), &bytes).unwrap();
    let e = inferox::import(&src, &dest, &ImportOptions::default(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 .tflite files"), "{e}");

    let (_t, package) = import(&case("float_cnn"));
    let model = package.load(&LoadOptions::default()).unwrap();
    let e = model.run(&NamedTensors::new()).unwrap_err();
    assert!(
        matches!(&e, Error::Input { name, .. } if name == "image"),
        "{e}"
    );
    let mut wrong = NamedTensors::new();
    wrong.insert(
        "image",
        inferox::HostTensor::from_f32(vec![1, 8, 8, 3], vec![0.0; 192]).unwrap(),
    );
    let e = model.run(&wrong).unwrap_err().to_string();
    assert!(e.contains("dimension 1 is 8, expected 16"), "{e}");
    let e = package
        .load(&LoadOptions {
            device: inferox::Device::Cuda(0),
            ..Default::default()
        })
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("runs on the CPU"), "{e}");
}

#[test]
fn cli_imports_and_runs_with_threads_and_dequantize() {
    let bin = env!("CARGO_BIN_EXE_inferox");
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("int8.pkg");
    let dir = case("int8_cnn");
    let status = std::process::Command::new(bin)
        .args([
            "import",
            dir.to_str().unwrap(),
            "--output",
            pkg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let input = format!("image={}", dir.join("float_inputs/image.npy").display());
    let out = std::process::Command::new(bin)
        .args([
            "run",
            pkg.to_str().unwrap(),
            "--backend",
            "tflite",
            "--threads",
            "2",
        ])
        .args(["--dequantize", "--input", &input, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<f32> = json["outputs"]["logits"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let want = inferox::npy::read_npy(&dir.join("float_outputs/logits.npy")).unwrap();
    assert_eq!(got, want.as_f32().unwrap());
}
