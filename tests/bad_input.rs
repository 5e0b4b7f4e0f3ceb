//! Bad input never panics: each case gets the specific error, naming the file, field, tensor or
//! input at fault — and an interrupted or failed import leaves no package behind.

mod common;

use common::{copy_dir, fixtures, import, read_npy_dir};
use inferox::package::PackageWriter;
use inferox::{Error, HostTensor, ImportOptions, LoadOptions, NamedTensors, Package};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::path::{Path, PathBuf};

/// A writable copy of the tiny BERT fixture.
fn model_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    copy_dir(&fixtures().join("bert/bert_gelu_pooler/model"), &model);
    (dir, model)
}

fn import_err(src: &Path) -> Error {
    let out = src.parent().unwrap().join("out.pkg");
    let err = inferox::import(src, &out, &ImportOptions::default(), &mut |_| {}).unwrap_err();
    assert!(!out.exists(), "a failed import left {}", out.display());
    err
}

/// Rewrites model.safetensors through `edit(name, dtype, shape, data) -> replacement or None`.
fn rewrite_weights(
    model: &Path,
    edit: impl Fn(&str, Dtype, &[usize], &[u8]) -> Option<(Dtype, Vec<usize>, Vec<u8>)>,
) {
    let path = model.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut kept: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        if let Some((dtype, shape, data)) = edit(&name, view.dtype(), view.shape(), view.data()) {
            kept.push((name, dtype, shape, data));
        }
    }
    let views: Vec<(String, TensorView)> = kept
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn load_err(model: &Path) -> Error {
    let (_dir, package) = import(model);
    match package.load(&LoadOptions::default()) {
        Ok(_) => panic!("load succeeded"),
        Err(e) => e,
    }
}

#[test]
fn truncated_safetensors() {
    let (_d, model) = model_copy();
    let path = model.join("model.safetensors");
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 100).unwrap();
    let err = import_err(&model);
    assert!(matches!(err, Error::Weights { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("truncated"),
        "{msg}"
    );
    assert!(err.hint().unwrap().contains("download it again"));
}

#[test]
fn truncated_weights_in_a_package_are_caught_on_open() {
    let (_d, model) = model_copy();
    let (_dir, package) = import(&model);
    let weights = package.root().join("backends/candle/model.safetensors");
    let len = std::fs::metadata(&weights).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = Package::open(package.root()).unwrap_err();
    match &err {
        Error::SizeMismatch {
            path,
            expected,
            found,
        } => {
            assert!(path.ends_with("backends/candle/model.safetensors"));
            assert_eq!((*expected, *found), (len, len / 2));
        }
        other => panic!("expected SizeMismatch, got {other}"),
    }
}

#[test]
fn corrupted_bytes_fail_verification() {
    let (_d, model) = model_copy();
    let (_dir, package) = import(&model);
    let weights = package.root().join("backends/candle/model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&weights, bytes).unwrap();
    let reopened = Package::open(package.root()).expect("sizes still match");
    let err = reopened.verify().unwrap_err();
    assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("model.safetensors: sha256 is"),
        "{err}"
    );
}

#[test]
fn missing_tensor() {
    let (_d, model) = model_copy();
    let gone = "encoder.layer.1.output.dense.weight";
    rewrite_weights(&model, |n, d, s, b| {
        (n != gone).then(|| (d, s.to_vec(), b.to_vec()))
    });
    match load_err(&model) {
        Error::MissingTensor { tensor, files } => {
            assert_eq!(tensor, gone);
            assert!(files[0].ends_with("backends/candle/model.safetensors"));
        }
        other => panic!("expected MissingTensor, got {other}"),
    }
}

#[test]
fn wrong_weight_dtype() {
    let (_d, model) = model_copy();
    let bad = "encoder.layer.0.intermediate.dense.weight";
    rewrite_weights(&model, |n, d, s, b| {
        if n == bad {
            let numel: usize = s.iter().product();
            Some((Dtype::I64, s.to_vec(), vec![0u8; numel * 8]))
        } else {
            Some((d, s.to_vec(), b.to_vec()))
        }
    });
    match load_err(&model) {
        Error::TensorDtype { tensor, found, .. } => {
            assert_eq!(tensor, bad);
            assert_eq!(found, "I64");
        }
        other => panic!("expected TensorDtype, got {other}"),
    }
}

#[test]
fn wrong_weight_shape() {
    let (_d, model) = model_copy();
    let config = model.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("\"intermediate_size\": 37", "\"intermediate_size\": 40"),
    )
    .unwrap();
    match load_err(&model) {
        Error::TensorShape {
            tensor,
            expected,
            found,
            ..
        } => {
            assert_eq!(tensor, "encoder.layer.0.intermediate.dense.weight");
            assert_eq!((expected, found), (vec![40, 32], vec![37, 32]));
        }
        other => panic!("expected TensorShape, got {other}"),
    }
}

#[test]
fn malformed_json() {
    let (_d, model) = model_copy();
    std::fs::write(model.join("config.json"), "{\"model_type\": \"bert\",").unwrap();
    let err = import_err(&model);
    assert!(matches!(err, Error::Json { .. }), "{err}");
    assert!(
        err.to_string().contains("config.json: malformed JSON"),
        "{err}"
    );

    let (_d2, model) = model_copy();
    let (_dir, package) = import(&model);
    std::fs::write(package.root().join("model_info.json"), "[1, 2").unwrap();
    let err = Package::open(package.root()).unwrap_err();
    assert!(
        err.to_string().contains("model_info.json: malformed JSON"),
        "{err}"
    );

    let (_d3, model) = model_copy();
    let config = model.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("\"hidden_act\": \"gelu\"", "\"hidden_act\": \"mystery\""),
    )
    .unwrap();
    let err = import_err(&model);
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("mystery"), "{err}");
}

#[test]
fn unknown_model_type() {
    let (_d, model) = model_copy();
    let config = model.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "\"model_type\": \"bert\"",
            "\"model_type\": \"frobnicator\"",
        ),
    )
    .unwrap();
    match import_err(&model) {
        Error::UnknownModelType {
            model_type,
            registered,
        } => {
            assert_eq!(model_type, "frobnicator");
            assert!(registered.contains(&"bert".to_string()));
        }
        other => panic!("expected UnknownModelType, got {other}"),
    }
    // --force keeps the files, records no backend, and loading says why.
    let out = model.parent().unwrap().join("forced.pkg");
    let mut warnings = Vec::new();
    let options = ImportOptions {
        force: true,
        ..Default::default()
    };
    let package = inferox::import(&model, &out, &options, &mut |e| {
        if let inferox::ImportEvent::Warning(w) = e {
            warnings.push(w.to_string());
        }
    })
    .unwrap();
    assert!(package.info().backends.is_empty());
    assert!(
        warnings.iter().any(|w| w.contains("frobnicator")),
        "{warnings:?}"
    );
    common::assert_matches_json_schemas(package.root());
    match package.load(&LoadOptions::default()) {
        Err(Error::UnknownModelType { model_type, .. }) => assert_eq!(model_type, "frobnicator"),
        Err(other) => panic!("expected UnknownModelType, got {other}"),
        Ok(_) => panic!("loaded an unregistered model type"),
    }
}

/// Edits model_info.json and re-records its size and hash, as a crafted package would.
fn edit_model_info(package: &Package, edit: impl Fn(&mut serde_json::Value)) {
    let path = package.root().join("model_info.json");
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut value);
    let bytes = serde_json::to_vec(&value).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let meta_path = package.root().join("metadata.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    for file in meta["files"].as_array_mut().unwrap() {
        if file["path"] == "model_info.json" {
            use sha2::Digest;
            file["size"] = bytes.len().into();
            file["sha256"] = format!("{:x}", sha2::Sha256::digest(&bytes)).into();
        }
    }
    std::fs::write(meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
}

#[test]
fn path_escape_in_manifest() {
    for bad in ["../../../../etc/passwd", "/etc/passwd", "backends/../../x"] {
        let (_d, model) = model_copy();
        let (_dir, package) = import(&model);
        edit_model_info(&package, |v| {
            v["backends"]["candle"]["artifacts"][0]["path"] = bad.into();
        });
        match Package::open(package.root()) {
            Err(Error::PathEscape { field, path }) => {
                assert_eq!(path, bad);
                assert!(
                    field.contains("backends.candle.artifacts[0].path"),
                    "{field}"
                );
            }
            Err(other) => panic!("{bad}: expected PathEscape, got {other}"),
            Ok(_) => panic!("{bad}: accepted"),
        }
    }
}

#[cfg(unix)]
#[test]
fn symlink_escape_in_package() {
    let (_d, model) = model_copy();
    let (_dir, package) = import(&model);
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("config.json");
    let link = package.root().join("backends/candle/config.json");
    std::fs::copy(&link, &target).unwrap();
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    match Package::open(package.root()) {
        Err(Error::PathEscape { path, .. }) => assert_eq!(path, "backends/candle/config.json"),
        Err(other) => panic!("expected PathEscape, got {other}"),
        Ok(_) => panic!("a symlink out of the package was accepted"),
    }
}

#[test]
fn newer_format_version_is_refused() {
    let (_d, model) = model_copy();
    let (_dir, package) = import(&model);
    edit_model_info(&package, |v| v["format_version"] = 2.into());
    match Package::open(package.root()) {
        Err(Error::FormatVersion {
            found, supported, ..
        }) => assert_eq!((found, supported), (2, 1)),
        Err(other) => panic!("expected FormatVersion, got {other}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn empty_text_list() {
    let (_d, model) = model_copy();
    let (_dir, package) = import(&model);
    let mut loaded = package.load(&LoadOptions::default()).unwrap();
    let err = loaded.run_text(&[], true).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument(ref m) if m == "no texts given"),
        "{err}"
    );
    // A package without sentence-embedding settings says so instead of guessing a pooling.
    let err = loaded.embed(&["hello"]).unwrap_err();
    assert!(err.to_string().contains("--pooling"), "{err}");
}

#[test]
fn missing_directory() {
    let missing = Path::new("/nonexistent/inferox/model");
    let err = inferox::import(
        missing,
        Path::new("/tmp/never"),
        &ImportOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    match &err {
        Error::Io { path, source } => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io NotFound, got {other}"),
    }
    let err = Package::open(missing).unwrap_err();
    assert!(
        err.to_string().starts_with("/nonexistent/inferox/model: "),
        "{err}"
    );
    let empty = tempfile::tempdir().unwrap();
    let err = Package::open(empty.path()).unwrap_err();
    assert!(
        matches!(err, Error::NotAPackage { ref missing, .. } if missing == "model_info.json"),
        "{err}"
    );
    let err = import_err(empty.path());
    assert!(err.to_string().contains("no config.json"), "{err}");
}

#[test]
fn bad_inputs_name_the_input() {
    let case = fixtures().join("bert/bert_gelu_pooler");
    let (_dir, package) = import(&case.join("model"));
    let mut model = package.load(&LoadOptions::default()).unwrap();
    let good: NamedTensors = read_npy_dir(&case.join("inputs")).into_iter().collect();
    let run = |model: &mut inferox::LoadedModel, edit: &dyn Fn(&mut NamedTensors)| {
        let mut inputs = good.clone();
        edit(&mut inputs);
        match model.run(&inputs) {
            Err(Error::Input { name, message }) => format!("{name}: {message}"),
            Err(other) => panic!("expected an input error, got {other}"),
            Ok(_) => panic!("bad input accepted"),
        }
    };
    let e = run(&mut model, &|i| {
        i.insert(
            "input_ids",
            HostTensor::from_f32(vec![3, 12], vec![1.0; 36]).unwrap(),
        );
    });
    assert_eq!(e, "input_ids: dtype is float32, expected int64");
    let e = run(&mut model, &|i| {
        i.insert(
            "input_ids",
            HostTensor::from_i64(vec![3, 12], vec![99; 36]).unwrap(),
        );
    });
    assert_eq!(e, "input_ids: holds 99, outside 0..99");
    let e = run(&mut model, &|i| {
        i.insert(
            "attention_mask",
            HostTensor::from_i64(vec![3, 11], vec![1; 33]).unwrap(),
        );
    });
    assert!(e.starts_with("attention_mask: dimension `sequence`"), "{e}");
    let e = run(&mut model, &|i| {
        i.insert(
            "input_ids",
            HostTensor::from_i64(vec![1, 41], vec![5; 41]).unwrap(),
        );
        i.remove("attention_mask");
        i.remove("token_type_ids");
    });
    assert_eq!(
        e,
        "input_ids: dimension `sequence` (axis 1) is 41, more than the maximum of 40"
    );
    let e = run(&mut model, &|i| {
        i.remove("input_ids");
    });
    assert_eq!(e, "input_ids: missing (it is required)");
}

#[test]
fn backend_choice_errors() {
    let (_d, model) = model_copy();
    let (_dir, package) = import(&model);
    let load = |backend: &str| {
        let options = LoadOptions {
            backend: Some(backend.into()),
            ..Default::default()
        };
        match package.load(&options) {
            Err(e) => e,
            Ok(_) => panic!("{backend} loaded"),
        }
    };
    #[cfg(not(feature = "torch"))]
    match load("torch") {
        Error::BackendNotCompiled { feature, .. } => assert_eq!(feature, "torch"),
        other => panic!("expected BackendNotCompiled, got {other}"),
    }
    match load("onnx") {
        Error::UnknownBackend { known, .. } => assert!(known.contains(&"candle".to_string())),
        other => panic!("expected UnknownBackend, got {other}"),
    }
}

#[test]
fn failed_and_interrupted_writes_leave_no_package() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("pkg");
    {
        let mut writer = PackageWriter::create(&dest, false).unwrap();
        writer.write_bytes("a.txt", b"half a package").unwrap();
        // dropped without finish(), as on an error
    }
    assert!(!dest.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temporary directory left behind"
    );

    // What a killed import leaves (a hidden partial directory of a dead process) is cleaned up.
    let stale = dir.path().join(".pkg.partial-999999999");
    std::fs::create_dir(&stale).unwrap();
    let (_d, model) = model_copy();
    inferox::import(&model, &dest, &ImportOptions::default(), &mut |_| {}).unwrap();
    assert!(!stale.exists());
    assert!(Package::open(&dest).is_ok());

    // An existing package is not replaced unless asked.
    let err = inferox::import(&model, &dest, &ImportOptions::default(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    let options = ImportOptions {
        overwrite: true,
        ..Default::default()
    };
    inferox::import(&model, &dest, &options, &mut |_| {}).unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["pkg"]);
}
