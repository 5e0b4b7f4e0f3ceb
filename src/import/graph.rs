//! Directories holding a self-contained graph (a TensorFlow Lite model), optionally with
//! config.json, tokenizer.json and preprocessor_config.json: the registered reader of the format
//! derives the schema from the graph's tensors.

use super::hf::{architectures, labels};
use super::source::{SourceDir, shared_files};
use super::{ImportOptions, SourceModel};
use crate::files::read_json;
use crate::manifest::{ArtifactRole, ExecutionFormat};
use crate::registry;
use crate::tensor::DType;
use crate::weights::WeightIndex;
use crate::{Error, Result};
use std::path::Path;

/// Reads the directory of `source`, whose graph is `model`.
pub(super) fn read(
    source: &SourceDir,
    model: &Path,
    options: &ImportOptions,
) -> Result<SourceModel> {
    let dir = &source.dir;
    let format = ExecutionFormat::Tflite;
    let Some(entry) = registry::for_graph_format(format) else {
        let feature = crate::backends::feature("tflite").unwrap_or("tflite");
        return Err(Error::Import {
            path: model.to_path_buf(),
            message: format!(
                "this build reads no {format} graphs (build inferox with the `{feature}` feature)"
            ),
        });
    };
    let config_path = dir.join("config.json");
    let config: serde_json::Value = if config_path.is_file() {
        read_json(&config_path)?
    } else {
        serde_json::Value::Object(Default::default())
    };
    let mut artifacts = vec![(
        model.to_path_buf(),
        "model.tflite".to_string(),
        ArtifactRole::Model,
    )];
    if config_path.is_file() {
        artifacts.push((
            config_path.clone(),
            "config.json".to_string(),
            ArtifactRole::Config,
        ));
    }
    let tokenizer = dir.join("tokenizer.json");
    Ok(SourceModel {
        model_type: entry.model_type.to_string(),
        entry: Some(entry),
        format,
        dtype: DType::Float32,
        weights: WeightIndex::default(),
        tokenizer: tokenizer.is_file().then_some("tokenizer.json"),
        max_seq_length: None,
        graph: Some(model.to_path_buf()),
        artifacts,
        shared: shared_files(dir)?,
        generated: Vec::new(),
        provenance: source.provenance(options),
        architectures: architectures(&config),
        labels: labels(&config, &config_path)?,
        sentence: None,
        generation: None,
        // Set from the schema by `plan` (a quantized graph's tensors say so).
        quantization: None,
        memory_estimate: Some(
            std::fs::metadata(model)
                .map_err(|e| Error::io(model, e))?
                .len(),
        ),
        config_path,
        config,
    })
}
