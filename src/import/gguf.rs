//! GGUF files: the weights stay one file; the config, tokenizer and chat template come from
//! its metadata, and its `general.architecture` names the model type.

use super::source::file_provenance;
use super::{ImportOptions, SourceModel};
use crate::gguf::tokenizer::tokenizer_json;
use crate::gguf::{GgufHeader, GgufValue};
use crate::manifest::{
    ArtifactRole, CHAT_TEMPLATE_FILE, ExecutionFormat, GenerationDefaults, GenerationInfo,
};
use crate::registry;
use crate::{Error, Result};
use std::path::Path;

/// Reads the GGUF file at `path` (canonical).
pub(super) fn read(path: &Path, options: &ImportOptions) -> Result<SourceModel> {
    let header = GgufHeader::read(path)?;
    let architecture = header.architecture()?;
    let Some(entry) = registry::for_gguf_architecture(architecture) else {
        return Err(Error::Import {
            path: path.to_path_buf(),
            message: format!(
                "GGUF architecture `{architecture}` is not supported by this build (supported: {})",
                registry::gguf_architectures().join(", ")
            ),
        });
    };
    let tokenizer = serde_json::to_vec_pretty(&tokenizer_json(&header)?)
        .map_err(|e| Error::InvalidArgument(format!("tokenizer.json: {e}")))?;
    crate::preprocess::tokenizer_call(path, || tokenizers::Tokenizer::from_bytes(&tokenizer))
        .map_err(|e| Error::Tokenizer {
            path: path.to_path_buf(),
            message: format!("the tokenizer rebuilt from GGUF metadata does not load: {e}"),
        })?;
    let id = |key: &str| {
        header
            .get(key)
            .and_then(GgufValue::as_u64)
            .map(|v| v as u32)
    };
    let mut eos_token_ids: Vec<u32> =
        ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]
            .iter()
            .filter_map(|k| id(k))
            .collect();
    eos_token_ids.dedup();
    let template = header
        .get("tokenizer.chat_template")
        .and_then(GgufValue::as_str)
        .map(str::to_string);
    let generation = GenerationInfo {
        eos_token_ids,
        bos_token_id: id("tokenizer.ggml.bos_token_id"),
        chat_template: template.as_ref().map(|_| CHAT_TEMPLATE_FILE.to_string()),
        defaults: GenerationDefaults::default(),
    };
    let weights = header.weight_index();
    Ok(SourceModel {
        model_type: entry.model_type.to_string(),
        entry: Some(entry),
        format: ExecutionFormat::Gguf,
        config_path: path.to_path_buf(),
        config: header.metadata_json(),
        dtype: weights.float_dtype(),
        tokenizer: Some("tokenizer.json"),
        max_seq_length: None,
        graph: None,
        artifacts: vec![(
            path.to_path_buf(),
            "model.gguf".to_string(),
            ArtifactRole::Model,
        )],
        shared: Vec::new(),
        generated: vec![("tokenizer.json", tokenizer)],
        provenance: file_provenance(path, options),
        architectures: Vec::new(),
        labels: Default::default(),
        sentence: None,
        generation: Some((generation, template)),
        quantization: header.main_quantization().map(str::to_string),
        memory_estimate: None,
        weights,
    })
}
