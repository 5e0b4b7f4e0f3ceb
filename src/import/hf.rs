//! Hugging Face model directories: config.json, safetensors weights (one file or shards with
//! their index), the shared tokenizer and configs, sentence-transformers modules, labels, and a
//! decoder's generation settings and chat template.

use super::source::{SourceDir, shared_files};
use super::{ImportEvent, ImportOptions, SourceModel};
use crate::files::read_json;
use crate::manifest::{
    ArtifactRole, CHAT_TEMPLATE_FILE, ExecutionFormat, GenerationDefaults, GenerationInfo, Pooling,
    SentenceEmbedding,
};
use crate::registry;
use crate::weights::{SAFETENSORS_INDEX_FILE, WeightIndex};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Reads the model directory of `source`.
pub(super) fn read(
    source: &SourceDir,
    options: &ImportOptions,
    progress: &mut dyn FnMut(ImportEvent<'_>),
) -> Result<SourceModel> {
    let dir = &source.dir;
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(Error::Import {
            path: dir.clone(),
            message: "no config.json (expected a Hugging Face model directory or cache entry)"
                .into(),
        });
    }
    let config: serde_json::Value = read_json(&config_path)?;
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::Config {
            path: config_path.clone(),
            message: "no `model_type` field".into(),
        })?
        .to_string();
    let (weight_files, index_file) = WeightIndex::locate(dir)?;
    let weights = WeightIndex::read(&weight_files)?;

    let tokenizer = dir.join("tokenizer.json");
    let tokenizer_rel = tokenizer.is_file().then_some("tokenizer.json");
    if tokenizer_rel.is_some() {
        crate::preprocess::load_tokenizer(&tokenizer)?;
    }
    let hidden_size = config
        .get("hidden_size")
        .and_then(|v| v.as_u64())
        .map(|v| v as usize);
    let sentence = match sentence_transformers(dir, hidden_size) {
        Ok(s) => s,
        Err(e) if options.force => {
            progress(ImportEvent::Warning(&e.to_string()));
            None
        }
        Err(e) => return Err(e),
    };

    let mut artifacts = vec![(
        config_path.clone(),
        "config.json".to_string(),
        ArtifactRole::Config,
    )];
    if let Some(index) = &index_file {
        artifacts.push((
            index.clone(),
            SAFETENSORS_INDEX_FILE.to_string(),
            ArtifactRole::WeightsIndex,
        ));
    }
    for file in &weight_files {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        artifacts.push((file.clone(), name.into_owned(), ArtifactRole::Weights));
    }
    let entry = registry::model_type(&model_type);
    let generation = match entry {
        Some(e) if e.family.generates_text() => Some(generation_info(dir, &config)?),
        _ => None,
    };
    Ok(SourceModel {
        entry,
        format: ExecutionFormat::Safetensors,
        dtype: weights.float_dtype(),
        tokenizer: tokenizer_rel,
        max_seq_length: sentence
            .as_ref()
            .map(|s| s.max_seq_length)
            .filter(|&n| n > 0),
        graph: None,
        artifacts,
        shared: shared_files(dir)?,
        generated: Vec::new(),
        provenance: source.provenance(options),
        architectures: architectures(&config),
        labels: labels(&config, &config_path)?,
        sentence,
        generation,
        quantization: None,
        memory_estimate: None,
        model_type,
        config_path,
        config,
        weights,
    })
}

/// sentence-transformers settings read from modules.json and the module configs.
fn sentence_transformers(
    dir: &Path,
    hidden_size: Option<usize>,
) -> Result<Option<SentenceEmbedding>> {
    let modules_path = dir.join("modules.json");
    if !modules_path.is_file() {
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    struct Module {
        #[serde(default)]
        path: String,
        #[serde(rename = "type")]
        kind: String,
    }
    let modules: Vec<Module> = read_json(&modules_path)?;
    let unsupported = |what: String| Error::Import {
        path: modules_path.clone(),
        message: format!(
            "{what}: embeddings would differ from sentence-transformers' \
             (--force imports the transformer alone, without sentence-embedding settings)"
        ),
    };
    let mut pooling = None;
    let mut normalize = false;
    let mut dimension = hidden_size;
    for module in &modules {
        let kind = module.kind.rsplit('.').next().unwrap_or(&module.kind);
        match kind {
            "Transformer" => {}
            "Normalize" => normalize = true,
            "Pooling" => {
                crate::package::check_relative("modules.json path", &module.path)?;
                let cfg: BTreeMap<String, serde_json::Value> =
                    read_json(dir.join(&module.path).join("config.json"))?;
                let on = |k: &str| cfg.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
                let modes: Vec<Pooling> = [
                    ("pooling_mode_mean_tokens", Pooling::Mean),
                    ("pooling_mode_cls_token", Pooling::Cls),
                    ("pooling_mode_max_tokens", Pooling::Max),
                    ("pooling_mode_mean_sqrt_len_tokens", Pooling::MeanSqrtLen),
                ]
                .into_iter()
                .filter(|(k, _)| on(k))
                .map(|(_, m)| m)
                .collect();
                for other in ["pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"] {
                    if on(other) {
                        return Err(unsupported(format!(
                            "pooling mode `{other}` is not supported"
                        )));
                    }
                }
                match modes.as_slice() {
                    [mode] => pooling = Some(*mode),
                    [] => return Err(unsupported("the Pooling module enables no mode".into())),
                    _ => {
                        return Err(unsupported(
                            "the Pooling module concatenates several modes, which is not supported"
                                .into(),
                        ));
                    }
                }
                if let Some(d) = cfg.get("word_embedding_dimension").and_then(|v| v.as_u64()) {
                    dimension = Some(d as usize);
                }
            }
            other => {
                return Err(unsupported(format!(
                    "module `{}` of type {other} is not supported",
                    module.path
                )));
            }
        }
    }
    let Some(pooling) = pooling else {
        return Err(unsupported("modules.json has no Pooling module".into()));
    };
    let mut max_seq_length = None;
    let st_config = dir.join("sentence_bert_config.json");
    if st_config.is_file() {
        let cfg: BTreeMap<String, serde_json::Value> = read_json(&st_config)?;
        if cfg.get("do_lower_case").and_then(|v| v.as_bool()) == Some(true) {
            return Err(unsupported(
                "sentence_bert_config.json sets do_lower_case".into(),
            ));
        }
        max_seq_length = cfg
            .get("max_seq_length")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize);
    }
    Ok(Some(SentenceEmbedding {
        pooling,
        normalize,
        max_seq_length: max_seq_length.unwrap_or(0),
        dimension: dimension.unwrap_or(0),
        token_embeddings: "last_hidden_state".into(),
    }))
}

pub(super) fn labels(
    config: &serde_json::Value,
    config_path: &Path,
) -> Result<BTreeMap<u32, String>> {
    let Some(map) = config.get("id2label").and_then(|v| v.as_object()) else {
        return Ok(BTreeMap::new());
    };
    map.iter()
        .map(|(k, v)| {
            let id = k.parse::<u32>().ok();
            let label = v.as_str().map(str::to_string);
            id.zip(label).ok_or_else(|| Error::Config {
                path: config_path.to_path_buf(),
                message: format!("id2label entry {k:?}: {v} is not an id and a label"),
            })
        })
        .collect()
}

/// HF `architectures` from a config.
pub(super) fn architectures(config: &serde_json::Value) -> Vec<String> {
    config
        .get("architectures")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// Token ids from a config value that may be one id or a list.
fn token_ids(value: Option<&serde_json::Value>) -> Vec<u32> {
    match value {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|v| vec![v as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// Generation settings from config.json, generation_config.json and the tokenizer config's chat
/// template. Returns the settings and the template text to store.
fn generation_info(
    dir: &Path,
    config: &serde_json::Value,
) -> Result<(GenerationInfo, Option<String>)> {
    let gen_path = dir.join("generation_config.json");
    let gen_config: serde_json::Value = if gen_path.is_file() {
        read_json(&gen_path)?
    } else {
        serde_json::Value::Null
    };
    let pick = |key: &str| {
        gen_config
            .get(key)
            .filter(|v| !v.is_null())
            .or_else(|| config.get(key))
    };
    let mut eos_token_ids = token_ids(pick("eos_token_id"));
    eos_token_ids.dedup();
    let defaults = if gen_config.is_object() {
        serde_json::from_value(gen_config.clone()).map_err(|e| Error::Config {
            path: gen_path.clone(),
            message: e.to_string(),
        })?
    } else {
        GenerationDefaults::default()
    };
    let template_file = dir.join(CHAT_TEMPLATE_FILE);
    let tokenizer_config = dir.join("tokenizer_config.json");
    let template = if template_file.is_file() {
        Some(std::fs::read_to_string(&template_file).map_err(|e| Error::io(&template_file, e))?)
    } else if tokenizer_config.is_file() {
        let tc: serde_json::Value = read_json(&tokenizer_config)?;
        match tc.get("chat_template") {
            Some(serde_json::Value::String(t)) => Some(t.clone()),
            // A list of named templates: the one named "default", else the first.
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string),
            _ => None,
        }
    } else {
        None
    };
    let info = GenerationInfo {
        eos_token_ids,
        bos_token_id: token_ids(pick("bos_token_id")).first().copied(),
        chat_template: template.as_ref().map(|_| CHAT_TEMPLATE_FILE.to_string()),
        defaults,
    };
    Ok((info, template))
}
