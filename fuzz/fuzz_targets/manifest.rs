//! model_info.json + metadata.json → `Package::open`, then what `inspect` and `validate` do with
//! an opened package.
//!
//! Input: one flags byte, model_info.json, a NUL byte, metadata.json (JSON holds no raw NUL, so
//! the real manifests split cleanly; without a NUL, metadata.json is empty). Flags:
//! * bit 0: record model_info.json's actual size in metadata.json (re-serialised), so that
//!   mutations of model_info.json get past the size check to the structure checks;
//! * bit 1: create the other files metadata.json lists (plain relative paths only, sparse, at
//!   most 1 MiB each and 32 in all), so that the checks after "every file is present" run.
#![no_main]

use inferox::{Metadata, ModelInfo, Package};
use inferox_fuzz::{fresh, touch_error, write};
use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};

/// A path this harness may create inside the scratch package: plain names only.
fn plain(rel: &str) -> bool {
    !rel.is_empty()
        && rel.len() < 200
        && !rel.contains('\\')
        && !rel.contains('\0')
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && rel != "model_info.json"
        && rel != "metadata.json"
}

fn create_listed(dir: &Path, metadata: &serde_json::Value) {
    let Some(files) = metadata.get("files").and_then(|f| f.as_array()) else {
        return;
    };
    for file in files.iter().take(32) {
        let (Some(rel), Some(size)) = (
            file.get("path").and_then(|p| p.as_str()),
            file.get("size").and_then(|s| s.as_u64()),
        ) else {
            continue;
        };
        if !plain(rel) || size > 1 << 20 {
            continue;
        }
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            if std::fs::create_dir_all(parent).is_err() {
                continue;
            }
        }
        if let Ok(f) = std::fs::File::create(&path) {
            let _ = f.set_len(size);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (info_bytes, meta_bytes) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };

    // The manifests' types on their own.
    if let Ok(info) = serde_json::from_slice::<ModelInfo>(info_bytes) {
        let _ = serde_json::to_vec(&info);
        let _ = info.io.to_kserve();
    }
    let _ = serde_json::from_slice::<Metadata>(meta_bytes);

    let dir = fresh("manifest");
    let mut meta_bytes = meta_bytes.to_vec();
    if flags & 3 != 0 {
        if let Ok(mut meta) = serde_json::from_slice::<serde_json::Value>(&meta_bytes) {
            if flags & 1 != 0 {
                if let Some(files) = meta.get_mut("files").and_then(|f| f.as_array_mut()) {
                    for file in files {
                        if file.get("path").and_then(|p| p.as_str()) == Some("model_info.json") {
                            if let Some(obj) = file.as_object_mut() {
                                obj.insert("size".into(), info_bytes.len().into());
                            }
                        }
                    }
                }
                if let Ok(bytes) = serde_json::to_vec(&meta) {
                    meta_bytes = bytes;
                }
            }
            if flags & 2 != 0 {
                create_listed(dir, &meta);
            }
        }
    }
    write(dir, "model_info.json", info_bytes);
    write(dir, "metadata.json", &meta_bytes);

    match Package::open(dir) {
        Ok(package) => {
            // What `inspect` and `validate` compute from an opened package.
            let info = package.info();
            let meta = package.metadata();
            let _ = meta.total_size();
            let _ =
                serde_json::to_string(&serde_json::json!({"model_info": info, "metadata": meta}));
            let _ = info.io.to_kserve();
            let _ = info.io.dequantized();
            for spec in info.io.inputs.iter().chain(&info.io.outputs) {
                let _ = spec.shape_string();
                let _ = spec.tokenization();
            }
            for (_, backend) in &info.backends {
                let _ = backend.format.to_string();
            }
            for file in &meta.files {
                let _ = package.file(&file.path);
            }
            if let Err(e) = package.verify() {
                touch_error(&e);
            }
            if let Err(e) = inferox::preprocess::TextPreprocessor::from_package(&package, &info.io)
            {
                touch_error(&e);
            }
        }
        Err(e) => touch_error(&e),
    }
});
