//! Which files of a repository a package needs: the hub's listing of a revision, and the
//! choice of weights and support files from it.

use crate::{Error, Result};
use std::path::Path;

/// What the hub says of a revision.
#[derive(Debug, serde::Deserialize)]
pub(super) struct RepoInfo {
    pub(super) sha: String,
    #[serde(default)]
    pub(super) siblings: Vec<Sibling>,
}

#[derive(Clone, Debug, serde::Deserialize)]
pub(super) struct Sibling {
    pub(super) rfilename: String,
    #[serde(default)]
    pub(super) size: Option<u64>,
    #[serde(default, rename = "blobId")]
    pub(super) blob_id: Option<String>,
    #[serde(default)]
    pub(super) lfs: Option<Lfs>,
}

#[derive(Clone, Debug, serde::Deserialize)]
pub(super) struct Lfs {
    pub(super) sha256: String,
    pub(super) size: u64,
}

/// Files copied into a package when the repository has them.
const SUPPORT_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "generation_config.json",
    "chat_template.jinja",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
];

/// Picks the files a package needs from a repository listing.
pub(super) fn select(
    info: &RepoInfo,
    quantization: Option<&str>,
    repo: &str,
) -> Result<Vec<Sibling>> {
    let has = |name: &str| info.siblings.iter().find(|s| s.rfilename == name).cloned();
    let mut chosen: Vec<Sibling> = Vec::new();
    let ggufs: Vec<&Sibling> = info
        .siblings
        .iter()
        .filter(|s| s.rfilename.to_lowercase().ends_with(".gguf"))
        .collect();
    let safetensors = has("model.safetensors").or_else(|| has("model.safetensors.index.json"));
    match (quantization, safetensors) {
        (None, Some(weights)) => chosen.push(weights),
        (q, _) if !ggufs.is_empty() => {
            let matching: Vec<&&Sibling> = match q {
                Some(q) => ggufs
                    .iter()
                    .filter(|s| s.rfilename.to_lowercase().contains(&q.to_lowercase()))
                    .collect(),
                None => ggufs.iter().collect(),
            };
            let names = || {
                ggufs
                    .iter()
                    .map(|s| s.rfilename.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            match matching.as_slice() {
                [one] => chosen.push((**one).clone()),
                [] => {
                    return Err(Error::InvalidArgument(format!(
                        "{repo} has no GGUF file matching `{}` (it has: {})",
                        q.unwrap_or_default(),
                        names()
                    )));
                }
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "{repo} has several GGUF files; choose one with --quant (it has: {})",
                        names()
                    )));
                }
            }
            return Ok(chosen);
        }
        (Some(q), Some(_)) => {
            return Err(Error::InvalidArgument(format!(
                "{repo} has no GGUF files, so --quant {q} does not apply"
            )));
        }
        (_, None) => {
            return Err(Error::InvalidArgument(format!(
                "{repo} has neither model.safetensors nor GGUF files (pytorch_model.bin is not read: pickle can run code)"
            )));
        }
    }
    for name in SUPPORT_FILES {
        if let Some(s) = has(name) {
            chosen.push(s);
        }
    }
    Ok(chosen)
}

/// `<folder>/config.json` of every module that modules.json names with a folder; nothing when
/// it does not parse (import then says what is wrong with it).
pub(super) fn module_configs(modules_json: &Path) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Module {
        #[serde(default)]
        path: String,
    }
    let modules: Vec<Module> = crate::files::read_json(modules_json).unwrap_or_default();
    modules
        .into_iter()
        .map(|m| m.path.trim_end_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .map(|p| format!("{p}/config.json"))
        .collect()
}
