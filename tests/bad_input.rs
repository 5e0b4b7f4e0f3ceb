//! Bad input never panics: each case gets the specific error, naming the file, field, tensor or
//! input at fault — and an interrupted or failed import leaves no package behind.

mod common;

use common::{copy_dir, fixtures, import, read_npy_dir};
use inferox::LoadPackage;
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
    // Config numbers are checked against the tensors at import, before anything is sized.
    let err = import_err(&model);
    assert!(matches!(err, Error::Config { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("config.json")
            && msg.contains("intermediate_size = 40")
            && msg.contains("encoder.layer.0.intermediate.dense.weight")
            && msg.contains("[37, 32]"),
        "{msg}"
    );
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
    let loaded = package.load(&LoadOptions::default()).unwrap();
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
        Error::Io {
            path,
            error: source,
        } => {
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
    let model = package.load(&LoadOptions::default()).unwrap();
    let good: NamedTensors = read_npy_dir(&case.join("inputs")).into_iter().collect();
    let run = |model: &inferox::LoadedModel, edit: &dyn Fn(&mut NamedTensors)| {
        let mut inputs = good.clone();
        edit(&mut inputs);
        match model.run(&inputs) {
            Err(Error::Input { name, message }) => format!("{name}: {message}"),
            Err(other) => panic!("expected an input error, got {other}"),
            Ok(_) => panic!("bad input accepted"),
        }
    };
    let e = run(&model, &|i| {
        i.insert(
            "input_ids",
            HostTensor::from_f32(vec![3, 12], vec![1.0; 36]).unwrap(),
        );
    });
    assert_eq!(e, "input_ids: dtype is float32, expected int64");
    let e = run(&model, &|i| {
        i.insert(
            "input_ids",
            HostTensor::from_i64(vec![3, 12], vec![99; 36]).unwrap(),
        );
    });
    assert_eq!(e, "input_ids: holds 99, outside 0..99");
    let e = run(&model, &|i| {
        i.insert(
            "attention_mask",
            HostTensor::from_i64(vec![3, 11], vec![1; 33]).unwrap(),
        );
    });
    assert!(e.starts_with("attention_mask: dimension `sequence`"), "{e}");
    let e = run(&model, &|i| {
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
    let e = run(&model, &|i| {
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

/// Names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Regression: `import --overwrite` replaced a directory of the user's notes with the package.
/// An overwrite replaces only a package (every file listed in its metadata.json) or an empty
/// directory; anything else is refused, untouched, with nothing left beside it.
#[test]
fn overwrite_replaces_only_what_inferox_wrote() {
    let (_d, model) = model_copy();
    let dir = tempfile::tempdir().unwrap();
    let overwrite = ImportOptions {
        overwrite: true,
        ..Default::default()
    };
    let refused = |dest: &Path, why: &str| {
        let err = inferox::import(&model, dest, &overwrite, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::NotReplaceable { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&dest.display().to_string()) && text.contains(why),
            "{text}"
        );
        assert!(
            err.hint()
                .unwrap()
                .contains("only replaces an inferox package")
        );
    };

    // A directory of the user's files.
    let notes = dir.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("todo.txt"), b"my notes").unwrap();
    refused(&notes, "not an inferox package");
    assert_eq!(std::fs::read(notes.join("todo.txt")).unwrap(), b"my notes");

    // A regular file: refused, and no .partial or .old directory left behind.
    let file = dir.path().join("file.pkg");
    std::fs::write(&file, b"data").unwrap();
    refused(&file, "is a file");
    assert_eq!(std::fs::read(&file).unwrap(), b"data");

    // A symbolic link (even to a package) is not replaced through.
    let real = dir.path().join("real.pkg");
    inferox::import(&model, &real, &ImportOptions::default(), &mut |_| {}).unwrap();
    let link = dir.path().join("link.pkg");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    refused(&link, "symbolic link");

    // A package that holds a file of the user's.
    std::fs::write(real.join("my-results.csv"), b"1,2,3").unwrap();
    refused(&real, "`my-results.csv` is not one of the package's files");
    std::fs::create_dir(real.join("extra")).unwrap();
    std::fs::remove_file(real.join("my-results.csv")).unwrap();
    std::fs::write(real.join("extra/mine.txt"), b"x").unwrap();
    refused(&real, "`extra/mine.txt`");
    std::fs::remove_dir_all(real.join("extra")).unwrap();

    // A package of ours and an empty directory are replaced.
    inferox::import(&model, &real, &overwrite, &mut |_| {}).unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    inferox::import(&model, &empty, &overwrite, &mut |_| {}).unwrap();
    assert!(Package::open(&empty).is_ok());

    assert_eq!(
        names_in(dir.path()),
        ["empty", "file.pkg", "link.pkg", "notes", "real.pkg"],
        "something was left behind"
    );
}

/// A manifest that is a symbolic link is refused at open, wherever it points.
#[test]
fn manifest_symlinks_are_refused_at_open() {
    let (_d, model) = model_copy();
    let (_dir, package) = import(&model);
    let root = package.root().to_path_buf();
    let copy = root.parent().unwrap().join("metadata-copy.json");
    std::fs::rename(root.join("metadata.json"), &copy).unwrap();
    std::os::unix::fs::symlink(&copy, root.join("metadata.json")).unwrap();
    let err = Package::open(&root).unwrap_err();
    assert!(matches!(err, Error::PathEscape { .. }), "{err}");
    assert!(err.to_string().contains("metadata.json"), "{err}");
}

/// A writable copy of a fixture directory under `fixtures()`.
fn fixture_copy(rel: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    copy_dir(&fixtures().join(rel), &model);
    (dir, model)
}

/// Sets `field` of `dir/config.json` to the raw JSON `value`.
fn set_config(dir: &Path, field: &str, value: &str) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config[field] = serde_json::from_str(value).unwrap();
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
}

/// Regression: absurd numbers in config.json imported fine, then panicked (`capacity
/// overflow`) or tried to allocate terabytes. Every number is checked against the weights at
/// import, and again at load (a package edited after import).
#[test]
fn absurd_config_numbers_are_config_errors() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "decoders/llama/model",
            "num_hidden_layers",
            "18446744073709551615",
            "the weights hold 2 layers",
        ),
        (
            "decoders/llama/model",
            "num_hidden_layers",
            "3",
            "field `num_hidden_layers` is 3",
        ),
        (
            "decoders/llama/model",
            "head_dim",
            "9223372036854775808",
            "head_dim",
        ),
        (
            "decoders/llama/model",
            "hidden_size",
            "4294967296",
            "hidden_size = 4294967296",
        ),
        (
            "decoders/llama/model",
            "num_attention_heads",
            "0",
            "num_attention_heads",
        ),
        (
            "decoders/llama/model",
            "max_position_embeddings",
            "18446744073709551615",
            "max_position_embeddings",
        ),
        (
            "decoders/llama/model",
            "rms_norm_eps",
            "-1.0",
            "rms_norm_eps",
        ),
        (
            "decoders/gpt2/model",
            "n_layer",
            "1000000000000",
            "field `n_layer`",
        ),
        (
            "decoders/gpt2/model",
            "n_positions",
            "9223372036854775807",
            "n_positions",
        ),
        (
            "decoders/gpt2/model",
            "n_inner",
            "18446744073709551615",
            "n_inner",
        ),
        (
            "bert/bert_gelu_pooler/model",
            "num_hidden_layers",
            "18446744073709551615",
            "field `num_hidden_layers`",
        ),
        (
            "bert/bert_gelu_pooler/model",
            "vocab_size",
            "1099511627776",
            "vocab_size = 1099511627776",
        ),
        (
            "bert/bert_gelu_pooler/model",
            "layer_norm_eps",
            "0",
            "layer_norm_eps",
        ),
    ];
    for (fixture, field, value, want) in cases {
        let (_d, model) = fixture_copy(fixture);
        set_config(&model, field, value);
        let err = import_err(&model);
        let msg = err.to_string();
        assert!(
            matches!(err, Error::Config { .. })
                && msg.contains("config.json")
                && msg.contains(want),
            "{fixture} {field}={value}: {msg}"
        );
    }
    // Edited inside a package after import: refused at load with the same error.
    let (_d, model) = fixture_copy("decoders/llama/model");
    let (_dir, package) = import(&model);
    let config = package.root().join("backends/candle/config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    // Same size, so opening the package does not notice (only --verify's hashes would).
    std::fs::write(
        &config,
        text.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 9"),
    )
    .unwrap();
    let err = Package::open(package.root())
        .unwrap()
        .load(&LoadOptions::default())
        .err()
        .expect("load accepted 9 layers for 2");
    assert!(
        matches!(err, Error::Config { .. })
            && err.to_string().contains("field `num_hidden_layers` is 9"),
        "{err}"
    );
}

/// Rewrites the u32 value of GGUF metadata key `key` in `bytes`.
fn set_gguf_u32(bytes: &mut [u8], key: &str, value: u32) {
    let mut pattern = (key.len() as u64).to_le_bytes().to_vec();
    pattern.extend(key.as_bytes());
    let at = bytes
        .windows(pattern.len())
        .position(|w| w == pattern.as_slice())
        .unwrap_or_else(|| panic!("{key} not in the GGUF file"));
    let ty = at + pattern.len();
    assert_eq!(
        u32::from_le_bytes(bytes[ty..ty + 4].try_into().unwrap()),
        4,
        "{key} is not u32"
    );
    bytes[ty + 4..ty + 8].copy_from_slice(&value.to_le_bytes());
}

/// Regression: a GGUF with `llama.block_count = 4294967295` imported and validated, then
/// tried to allocate 3.7 TB.
#[test]
fn absurd_gguf_metadata_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("model.gguf");
    let original = std::fs::read(fixtures().join("gguf/llama-mixed.gguf")).unwrap();
    for (key, value, want) in [
        (
            "llama.block_count",
            u32::MAX,
            "field `llama.block_count` is 4294967295",
        ),
        (
            "llama.attention.head_count",
            0,
            "llama.attention.head_count",
        ),
        (
            "llama.feed_forward_length",
            u32::MAX,
            "llama.feed_forward_length = 4294967295",
        ),
        ("llama.context_length", 0, "llama.context_length"),
    ] {
        let mut bytes = original.clone();
        set_gguf_u32(&mut bytes, key, value);
        std::fs::write(&gguf, &bytes).unwrap();
        let err = import_err(&gguf);
        let msg = err.to_string();
        assert!(
            matches!(err, Error::Config { .. }) && msg.contains("model.gguf") && msg.contains(want),
            "{key}={value}: {msg}"
        );
    }
}

/// NaN weights give an error naming the output, not NaN embeddings with success; the caller
/// may ask for them anyway.
#[test]
fn non_finite_outputs_are_errors() {
    let (_d, model) = model_copy();
    rewrite_weights(&model, |name, dtype, shape, data| {
        let mut data = data.to_vec();
        if name.ends_with("embeddings.LayerNorm.weight") {
            data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        }
        Some((dtype, shape.to_vec(), data))
    });
    let (_dir, package) = import(&model);
    let loaded = package.load(&LoadOptions::default()).unwrap();
    match loaded.run_text(&["hello"], true) {
        Err(Error::NonFinite { name, .. }) => assert_eq!(name, "last_hidden_state"),
        Err(other) => panic!("expected NonFinite, got {other}"),
        Ok(_) => panic!("NaN outputs were handed out"),
    }
    let options = LoadOptions {
        allow_non_finite: true,
        ..Default::default()
    };
    let loaded = package.load(&options).unwrap();
    let out = loaded.run_text(&["hello"], true).unwrap();
    let hidden = out.get("last_hidden_state").unwrap();
    assert!(hidden.data().first_non_finite().is_some());
}

/// Import reads and copies only the source's own files: a side file linked to /etc/passwd
/// is refused, and every JSON side file must parse.
#[test]
fn import_never_follows_links_out_of_the_source() {
    let (_d, model) = model_copy();
    std::os::unix::fs::symlink("/etc/passwd", model.join("preprocessor_config.json")).unwrap();
    let err = import_err(&model);
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Import { .. })
            && msg.contains("preprocessor_config.json")
            && msg.contains("/etc/passwd")
            && msg.contains("outside the source directory"),
        "{msg}"
    );
    std::fs::remove_file(model.join("preprocessor_config.json")).unwrap();
    // A link that stays inside the source is fine.
    std::fs::write(model.join("real.json"), b"{\"do_resize\": true}").unwrap();
    std::os::unix::fs::symlink("real.json", model.join("preprocessor_config.json")).unwrap();
    let (_dir, package) = import(&model);
    assert!(package.file("preprocessor_config.json").is_ok());
    // A JSON side file that is not JSON is refused.
    std::fs::write(model.join("real.json"), b"root:x:0:0:root").unwrap();
    let err = import_err(&model);
    assert!(matches!(err, Error::Json { .. }), "{err}");
    assert!(
        err.to_string().contains("preprocessor_config.json"),
        "{err}"
    );
}

/// A write that fails for lack of space names the destination, not the source, and leaves
/// nothing behind.
#[test]
fn disk_full_names_the_destination() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("pkg");
    let src = dir.path().join("src.bin");
    std::fs::write(&src, vec![7u8; 1 << 16]).unwrap();
    let mut writer = PackageWriter::create(&dest, false).unwrap();
    // The file being written is /dev/full, which answers every write with ENOSPC.
    let partial = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains(".partial-"))
        .unwrap();
    std::os::unix::fs::symlink("/dev/full", partial.join("big.bin")).unwrap();
    let err = writer.copy_file(&src, "big.bin", &mut |_| {}).unwrap_err();
    match &err {
        Error::DiskFull { path } => assert!(path.ends_with("big.bin"), "{err}"),
        other => panic!("expected DiskFull, got {other}"),
    }
    drop(writer);
    assert_eq!(names_in(dir.path()), ["src.bin"]);
}

/// Regression: `import --revision ../../x` was accepted and recorded (and, for a cache entry,
/// read `refs/../../x`).
#[test]
fn revisions_and_repo_ids_are_checked_at_import() {
    let (_d, model) = model_copy();
    for (revision, repo_id) in [
        (Some("../../x"), None),
        (None, Some("../../x")),
        (Some("a b"), None),
    ] {
        let options = ImportOptions {
            revision: revision.map(str::to_string),
            repo_id: repo_id.map(str::to_string),
            ..Default::default()
        };
        let out = model.parent().unwrap().join("out.pkg");
        let err = inferox::import(&model, &out, &options, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(!out.exists());
    }
}

/// Found by the mutation test: damaged tokenizer.json files make the `tokenizers` crate panic
/// (a template naming an undefined special token; a malformed `decoder`). They are
/// Error::Tokenizer naming the file.
#[test]
fn tokenizer_panics_are_errors() {
    let (_d, model) = model_copy();
    let (_dir, package) = import(&model);
    let path = package.root().join("tokenizer.json");
    let original = std::fs::read_to_string(&path).unwrap();
    let mut tokenizer: serde_json::Value = serde_json::from_str(&original).unwrap();
    tokenizer["post_processor"]["single"][0]["SpecialToken"]["id"] = "\u{0}".into();
    let damaged = serde_json::to_string(&tokenizer).unwrap();
    // Keep the recorded size so that only the tokenizer notices.
    let padded = format!("{damaged:<width$}", width = original.len());
    assert_eq!(
        padded.len(),
        original.len(),
        "the damaged file must not be longer"
    );
    std::fs::write(&path, &padded).unwrap();
    let loaded = Package::open(package.root())
        .unwrap()
        .load(&LoadOptions::default())
        .unwrap();
    match loaded.run_text(&["hello"], true) {
        Err(Error::Tokenizer { path: p, message }) => {
            assert!(p.ends_with("tokenizer.json"), "{}", p.display());
            assert!(message.contains("failed on this input"), "{message}");
        }
        Err(other) => panic!("expected a tokenizer error, got {other}"),
        Ok(_) => panic!("a damaged tokenizer encoded"),
    }
    // A malformed decoder section panics while loading.
    tokenizer["post_processor"] = serde_json::Value::Null;
    tokenizer["decoder"] = serde_json::json!({"type": "ByteLevel", "add_prefix_space": 1});
    let damaged = serde_json::to_string(&tokenizer).unwrap();
    std::fs::write(&path, format!("{damaged:<width$}", width = original.len())).unwrap();
    let err = Package::open(package.root())
        .unwrap()
        .load(&LoadOptions::default())
        .and_then(|m| m.run_text(&["hello"], true).map(|_| ()))
        .unwrap_err();
    assert!(matches!(err, Error::Tokenizer { .. }), "{err}");
}
