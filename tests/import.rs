//! Import from the layouts Hugging Face models come in: sharded checkpoints, a snapshot inside a
//! Hugging Face cache (symlinks into blobs/), the cache entry itself, and sentence-transformers
//! configs that cannot be reproduced.

mod common;

use common::{copy_dir, fixtures, import, read_npy_dir};
use inferox::LoadPackage;
use inferox::manifest::ArtifactRole;
use inferox::{Error, ImportEvent, ImportOptions, LoadOptions, NamedTensors};
use safetensors::tensor::{SafeTensors, TensorView};
use std::collections::BTreeMap;
use std::path::Path;

fn tiny_model() -> std::path::PathBuf {
    fixtures().join("bert/bert_gelu_pooler/model")
}

fn run_fixture_inputs(package: &inferox::Package) -> NamedTensors {
    let inputs: NamedTensors = read_npy_dir(&fixtures().join("bert/bert_gelu_pooler/inputs"))
        .into_iter()
        .collect();
    package
        .load(&LoadOptions::default())
        .unwrap()
        .run(&inputs)
        .unwrap()
}

#[test]
fn sharded_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    copy_dir(&tiny_model(), &model);
    let bytes = std::fs::read(model.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let mut weight_map = BTreeMap::new();
    for (i, part) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let views: Vec<(String, TensorView)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        std::fs::write(
            model.join(&file),
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();
        for n in part {
            weight_map.insert(n.clone(), file.clone());
        }
    }
    std::fs::remove_file(model.join("model.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        model.join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    let (_d, sharded) = import(&model);
    let candle = &sharded.info().backends["candle"];
    assert_eq!(candle.paths(ArtifactRole::Weights).count(), 2);
    assert_eq!(candle.paths(ArtifactRole::WeightsIndex).count(), 1);
    common::assert_matches_json_schemas(sharded.root());
    let (_d2, single) = import(&tiny_model());
    assert_eq!(sharded.info().parameters, single.info().parameters);
    assert_eq!(run_fixture_inputs(&sharded), run_fixture_inputs(&single));

    // A shard named by the index but missing is an import error naming it.
    std::fs::remove_file(model.join("model-00002-of-00002.safetensors")).unwrap();
    let err = inferox::import(
        &model,
        &dir.path().join("x"),
        &ImportOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("model-00002-of-00002.safetensors"),
        "{err}"
    );
}

/// Lays out `src` as the Hugging Face cache does: blobs named by hash, a snapshot of symlinks,
/// and refs/main. Returns (cache entry, snapshot).
#[cfg(unix)]
fn hf_cache(root: &Path, src: &Path, commit: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let entry = root.join("models--inferox--tiny-bert");
    let snapshot = entry.join("snapshots").join(commit);
    std::fs::create_dir_all(entry.join("blobs")).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(entry.join("refs")).unwrap();
    std::fs::write(entry.join("refs/main"), commit).unwrap();
    for file in std::fs::read_dir(src).unwrap() {
        let file = file.unwrap();
        let (_, sha) = {
            let bytes = std::fs::read(file.path()).unwrap();
            use sha2::Digest;
            (bytes.len(), format!("{:x}", sha2::Sha256::digest(&bytes)))
        };
        std::fs::copy(file.path(), entry.join("blobs").join(&sha)).unwrap();
        std::os::unix::fs::symlink(
            format!("../../blobs/{sha}"),
            snapshot.join(file.file_name()),
        )
        .unwrap();
    }
    (entry, snapshot)
}

#[cfg(unix)]
#[test]
fn hugging_face_cache_snapshot_and_entry() {
    let dir = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let (entry, snapshot) = hf_cache(dir.path(), &tiny_model(), commit);

    let (_d, package) = import(&snapshot);
    let source = &package.metadata().source;
    assert_eq!(source.kind, inferox::manifest::SourceKind::HfCache);
    assert_eq!(source.repo_id.as_deref(), Some("inferox/tiny-bert"));
    assert_eq!(source.commit.as_deref(), Some(commit));
    assert_eq!(package.info().source.revision.as_deref(), Some(commit));
    // The package holds real files, not links into the cache.
    let weights = package.root().join("backends/candle/model.safetensors");
    assert!(
        !std::fs::symlink_metadata(&weights)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    package.verify().unwrap();

    let (_d2, from_entry) = import(&entry);
    assert_eq!(
        from_entry.metadata().source.revision.as_deref(),
        Some("main")
    );
    assert_eq!(from_entry.metadata().source.commit.as_deref(), Some(commit));
    assert_eq!(
        run_fixture_inputs(&from_entry),
        run_fixture_inputs(&package)
    );

    let options = ImportOptions {
        revision: Some("v2".into()),
        ..Default::default()
    };
    let err = inferox::import(&entry, &dir.path().join("x"), &options, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("no ref `v2`"), "{err}");
}

#[test]
fn unsupported_sentence_transformers_modules() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    copy_dir(&tiny_model(), &model);
    std::fs::create_dir_all(model.join("1_Pooling")).unwrap();
    std::fs::write(
        model.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 32, "pooling_mode_cls_token": true}"#,
    )
    .unwrap();
    std::fs::write(
        model.join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"idx":2,"name":"2","path":"2_Dense","type":"sentence_transformers.models.Dense"}]"#,
    )
    .unwrap();
    let err = inferox::import(
        &model,
        &dir.path().join("a"),
        &ImportOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, Error::Import { .. }), "{err}");
    assert!(
        err.to_string().contains("2_Dense") && err.to_string().contains("--force"),
        "{err}"
    );

    let mut warnings = Vec::new();
    let options = ImportOptions {
        force: true,
        ..Default::default()
    };
    let package = inferox::import(&model, &dir.path().join("b"), &options, &mut |e| {
        if let ImportEvent::Warning(w) = e {
            warnings.push(w.to_string());
        }
    })
    .unwrap();
    assert!(package.info().sentence_embedding.is_none());
    assert_eq!(warnings.len(), 1, "{warnings:?}");

    // Without the Dense module the settings are read: CLS pooling, no normalisation.
    std::fs::write(
        model.join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#,
    )
    .unwrap();
    let (_d, package) = import(&model);
    let st = package.info().sentence_embedding.clone().unwrap();
    assert_eq!(st.pooling, inferox::manifest::Pooling::Cls);
    assert!(!st.normalize);
    assert_eq!(st.max_seq_length, 40, "bounded by the position table");
    let loaded = package.load(&LoadOptions::default()).unwrap();
    let emb = loaded.embed(&["the man", "a dog runs fast"]).unwrap();
    let encoded = loaded.encode(&["the man"], true).unwrap();
    let hidden = loaded.run(&encoded.inputs).unwrap();
    let first = &hidden.get("last_hidden_state").unwrap().as_f32().unwrap()[..32];
    assert_eq!(
        emb[0], first,
        "CLS pooling is the first token's hidden state"
    );
}

#[cfg(not(feature = "tflite"))]
#[test]
fn tflite_models_need_the_tflite_feature() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("pkg");
    let e = inferox::import(
        &common::fixtures().join("tflite/float_cnn"),
        &dest,
        &ImportOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(&e, inferox::Error::BackendNotCompiled { feature, .. } if feature == "tflite"),
        "{e}"
    );
    assert!(
        e.hint().unwrap().contains("--features tflite"),
        "{:?}",
        e.hint()
    );
    assert!(!dest.exists());
}

#[cfg(not(feature = "torch"))]
#[test]
fn asking_for_torch_names_the_feature() {
    let (_d, package) = import(&common::fixtures().join("bert/bert_gelu_pooler/model"));
    let e = package
        .load(&LoadOptions {
            backend: Some("torch".into()),
            ..Default::default()
        })
        .err()
        .unwrap();
    assert!(
        matches!(&e, inferox::Error::BackendNotCompiled { feature, .. } if feature == "torch"),
        "{e}"
    );
}
