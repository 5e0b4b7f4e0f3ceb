//! Import: a local Hugging Face model directory (or a snapshot in a Hugging Face cache) becomes a
//! package. The registered architecture for the config's `model_type` derives the I/O schema;
//! the core adds what is generic (parameters, labels, sentence-transformers settings) and writes
//! the package atomically.

use crate::files::read_json;
use crate::manifest::{
    Artifact, ArtifactRole, BackendArtifacts, CHAT_TEMPLATE_FILE, ExecutionFormat, FORMAT_VERSION,
    Family, GenerationDefaults, GenerationInfo, ModelInfo, Pooling, Provenance, SentenceEmbedding,
    Source, SourceKind,
};
use crate::package::{Package, PackageWriter};
use crate::registry::{self, ImportSource};
use crate::tensor::DType;
use crate::weights::{SAFETENSORS_INDEX_FILE, WeightIndex};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Options for [`import`].
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Import even when this build has no architecture for the model type (the package then
    /// lists no backend), or when sentence-transformers modules cannot be reproduced (the
    /// package then has no sentence-embedding settings).
    pub force: bool,
    /// Replace an existing package at the destination.
    pub overwrite: bool,
    /// Hugging Face repo id to record (taken from the cache layout when importing from one).
    pub repo_id: Option<String>,
    /// Revision to record, or, for a cache entry, the ref to resolve (default `main`).
    pub revision: Option<String>,
    /// Provenance to record instead of the one derived from the source path (a pull records
    /// the hub it came from).
    pub provenance: Option<Provenance>,
    /// A TorchScript export of the model to carry as the torch backend's artifact.
    pub torchscript: Option<TorchScriptExport>,
}

/// A TorchScript module (`torch.jit.trace` / `torch.jit.script` output) to put in a package as
/// `backends/torch/model.pt`. TorchScript has no input names, so the order is given here and
/// recorded in the manifest; every name must be in the model's I/O schema.
#[derive(Clone, Debug, Default)]
pub struct TorchScriptExport {
    /// The `.pt` file.
    pub path: PathBuf,
    /// Schema input names, in the order the module's `forward` takes them.
    pub inputs: Vec<String>,
    /// Schema output names, in the order the module returns them.
    pub outputs: Vec<String>,
}

/// Where a TorchScript artifact lives in a package.
pub const TORCHSCRIPT_FILE: &str = "backends/torch/model.pt";

/// Records `export` as the torch backend of `info` (replacing a safetensors entry).
fn add_torchscript(
    info: &mut ModelInfo,
    export: &TorchScriptExport,
    copies: &mut Vec<(PathBuf, String)>,
) -> Result<()> {
    if !export.path.is_file() {
        return Err(Error::Import {
            path: export.path.clone(),
            message: "TorchScript file not found".into(),
        });
    }
    for (what, names, known) in [
        ("input", &export.inputs, info.io.input_names()),
        ("output", &export.outputs, info.io.output_names()),
    ] {
        if names.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "TorchScript {what} order is empty; name the schema's {what}s ({}) in the order the module uses",
                known.join(", ")
            )));
        }
        if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
            return Err(Error::InvalidArgument(format!(
                "TorchScript {what} `{bad}` is not in the model's I/O schema ({})",
                known.join(", ")
            )));
        }
    }
    copies.push((export.path.clone(), TORCHSCRIPT_FILE.to_string()));
    info.backends.insert(
        "torch".to_string(),
        BackendArtifacts {
            inputs: export.inputs.clone(),
            outputs: export.outputs.clone(),
            ..BackendArtifacts::new(
                ExecutionFormat::Torchscript,
                vec![Artifact {
                    path: TORCHSCRIPT_FILE.to_string(),
                    role: ArtifactRole::Model,
                }],
                DType::Float32,
            )
        },
    );
    Ok(())
}

/// Progress of an import, for progress bars.
#[derive(Clone, Copy, Debug)]
pub enum ImportEvent<'a> {
    /// A file starts copying.
    File { path: &'a str, size: u64 },
    /// Bytes copied of the current file so far.
    Bytes(u64),
    /// Something the user should know (what `--force` let through).
    Warning(&'a str),
    /// A pull resolved its revision to this commit.
    Resolved { commit: &'a str },
    /// The destination already holds the package of that commit: nothing to do.
    UpToDate,
    /// A file was already in the Hugging Face cache.
    Cached { path: &'a str },
    /// A file starts downloading (from byte `resume_from` when resuming).
    Download {
        path: &'a str,
        size: u64,
        resume_from: u64,
    },
}

/// Files copied next to the manifests when the source has them.
const SHARED_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "generation_config.json",
];

/// A directory to import and where it came from.
struct SourceDir {
    dir: PathBuf,
    provenance: Provenance,
}

/// Most entries a source directory may hold (a model directory holds a few dozen).
const MAX_SOURCE_ENTRIES: usize = 100_000;

/// Checks that no symbolic link under `dir` leads outside `root` (the source directory, or
/// for a Hugging Face cache snapshot the cache entry whose blobs its links point at): import
/// reads and copies only files of the source, never what a link drags in from elsewhere.
fn check_links(dir: &Path, root: &Path) -> Result<()> {
    let mut stack = vec![(dir.to_path_buf(), 0)];
    let mut seen = 0usize;
    while let Some((folder, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&folder).map_err(|e| Error::io(&folder, e))? {
            let entry = entry.map_err(|e| Error::io(&folder, e))?;
            seen += 1;
            if seen > MAX_SOURCE_ENTRIES {
                return Err(Error::Import {
                    path: dir.to_path_buf(),
                    message: format!(
                        "holds more than {MAX_SOURCE_ENTRIES} entries; is this a model directory?"
                    ),
                });
            }
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
            if kind.is_symlink() {
                let target = path.canonicalize().ok();
                if !target.as_ref().is_some_and(|t| t.starts_with(root)) {
                    return Err(Error::Import {
                        path: path.clone(),
                        message: format!(
                            "is a symbolic link to {}, outside the source directory {}; import copies only the source's own files (copy the file in instead of linking it)",
                            target.map_or_else(
                                || "a missing file".to_string(),
                                |t| t.display().to_string()
                            ),
                            root.display()
                        ),
                    });
                }
            } else if kind.is_dir() && depth < 3 {
                stack.push((path, depth + 1));
            }
        }
    }
    Ok(())
}

/// The shared files (tokenizer, preprocessor and generation configs) the source has, as
/// (source, package path); each JSON file must parse.
fn shared_files(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for name in SHARED_FILES {
        let path = dir.join(name);
        if path.is_file() {
            read_json::<serde_json::Value>(&path)?;
            out.push((path, name.to_string()));
        }
    }
    Ok(out)
}

/// `models--org--name` → `org/name`.
fn repo_id_from_cache_dir(name: &str) -> Option<String> {
    let rest = name.strip_prefix("models--")?;
    Some(rest.replace("--", "/"))
}

/// The repo id of a path inside a Hugging Face cache (`.../models--org--name[/snapshots/SHA]`).
pub fn cache_repo_id(path: &Path) -> Option<String> {
    let abs = path.canonicalize().ok()?;
    abs.ancestors().take(3).find_map(|p| {
        p.file_name()
            .and_then(|n| repo_id_from_cache_dir(&n.to_string_lossy()))
    })
}

fn resolve_source(src: &Path, options: &ImportOptions) -> Result<SourceDir> {
    let meta = std::fs::metadata(src).map_err(|e| Error::io(src, e))?;
    if !meta.is_dir() {
        return Err(Error::Import {
            path: src.to_path_buf(),
            message: "not a directory (expected a Hugging Face model directory)".into(),
        });
    }
    let abs = src.canonicalize().map_err(|e| Error::io(src, e))?;
    // A cache entry `models--org--name`: resolve the ref to a snapshot.
    if let Some(repo_id) = abs
        .file_name()
        .and_then(|n| repo_id_from_cache_dir(&n.to_string_lossy()))
        && abs.join("snapshots").is_dir()
    {
        let reference = options.revision.as_deref().unwrap_or("main");
        let commit = match std::fs::read_to_string(abs.join("refs").join(reference)) {
            Ok(sha) => sha.trim().to_string(),
            Err(_) if abs.join("snapshots").join(reference).is_dir() => reference.to_string(),
            Err(_) => {
                return Err(Error::Import {
                    path: abs.clone(),
                    message: format!(
                        "cache entry has no ref `{reference}` (choose one with --revision, or import a directory under snapshots/)"
                    ),
                });
            }
        };
        crate::hub::check_repo_id(&repo_id)?;
        crate::package::check_relative("cache ref", &commit)?;
        let dir = abs.join("snapshots").join(&commit);
        check_links(&dir, &abs)?;
        return Ok(SourceDir {
            provenance: Provenance {
                kind: SourceKind::HfCache,
                path: Some(dir.display().to_string()),
                repo_id: Some(options.repo_id.clone().unwrap_or(repo_id)),
                revision: Some(reference.to_string()),
                commit: Some(commit),
            },
            dir,
        });
    }
    // A snapshot inside a cache: .../models--org--name/snapshots/<sha>.
    let parent = abs.parent();
    let in_cache = parent
        .filter(|p| p.file_name().is_some_and(|n| n == "snapshots"))
        .and_then(|p| p.parent())
        .and_then(|p| p.file_name())
        .and_then(|n| repo_id_from_cache_dir(&n.to_string_lossy()));
    // A snapshot's links point into its cache entry's blobs; elsewhere the directory itself
    // is the boundary.
    let root = match &in_cache {
        Some(_) => abs.ancestors().nth(2).unwrap_or(&abs).to_path_buf(),
        None => abs.clone(),
    };
    check_links(&abs, &root)?;
    if let Some(repo_id) = &in_cache {
        crate::hub::check_repo_id(repo_id)?;
    }
    let provenance = match in_cache {
        Some(repo_id) => Provenance {
            kind: SourceKind::HfCache,
            path: Some(abs.display().to_string()),
            repo_id: Some(options.repo_id.clone().unwrap_or(repo_id)),
            revision: options.revision.clone(),
            commit: abs.file_name().map(|n| n.to_string_lossy().into_owned()),
        },
        None => Provenance {
            kind: SourceKind::Local,
            path: Some(abs.display().to_string()),
            repo_id: options.repo_id.clone(),
            revision: options.revision.clone(),
            commit: None,
        },
    };
    Ok(SourceDir {
        dir: abs,
        provenance,
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
                    read_json(&dir.join(&module.path).join("config.json"))?;
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

fn labels(config: &serde_json::Value, config_path: &Path) -> Result<BTreeMap<u32, String>> {
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

/// Imports the model directory `src` as a package at `dest`.
pub fn import(
    src: &Path,
    dest: &Path,
    options: &ImportOptions,
    progress: &mut dyn FnMut(ImportEvent<'_>),
) -> Result<Package> {
    registry::check()?;
    // Recorded in the manifests and used to name store entries and cache refs: checked first.
    if let Some(revision) = &options.revision {
        crate::hub::check_revision(revision)?;
    }
    if let Some(repo_id) = &options.repo_id {
        crate::hub::check_repo_id(repo_id)?;
    }
    if std::fs::metadata(src).is_ok_and(|m| m.is_file()) {
        return import_gguf(src, dest, options, progress);
    }
    let source = resolve_source(src, options)?;
    if let Some(model) = tflite_file(&source.dir)? {
        return import_tflite(&source, &model, dest, options, progress);
    }
    let dir = &source.dir;
    let provenance = options
        .provenance
        .clone()
        .unwrap_or_else(|| source.provenance.clone());
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
    let mut sentence = match sentence_transformers(dir, hidden_size) {
        Ok(s) => s,
        Err(e) if options.force => {
            progress(ImportEvent::Warning(&e.to_string()));
            None
        }
        Err(e) => return Err(e),
    };

    let entries: Vec<_> = registry::for_model_type(&model_type)
        .into_iter()
        .filter(|e| e.formats.contains(&ExecutionFormat::Safetensors))
        .collect();
    if entries.is_empty() {
        let unknown = Error::UnknownModelType {
            model_type: model_type.clone(),
            registered: registry::model_types(),
        };
        if !options.force {
            return Err(unknown);
        }
        progress(ImportEvent::Warning(&format!(
            "{unknown}; the package lists no backend until it is re-imported by a build that has one"
        )));
    }

    // Artifacts live in the folder of the most preferred backend that reads them; every other
    // backend reading safetensors points at the same files (one copy of the weights).
    let home = entries.first().map_or("candle", |e| e.backend);
    let folder = format!("backends/{home}");
    let mut artifacts = vec![Artifact {
        path: format!("{folder}/config.json"),
        role: ArtifactRole::Config,
    }];
    let mut copies: Vec<(PathBuf, String)> = vec![(config_path.clone(), artifacts[0].path.clone())];
    if let Some(index) = &index_file {
        let rel = format!("{folder}/{SAFETENSORS_INDEX_FILE}");
        copies.push((index.clone(), rel.clone()));
        artifacts.push(Artifact {
            path: rel,
            role: ArtifactRole::WeightsIndex,
        });
    }
    for file in &weight_files {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let rel = format!("{folder}/{name}");
        copies.push((file.clone(), rel.clone()));
        artifacts.push(Artifact {
            path: rel,
            role: ArtifactRole::Weights,
        });
    }
    copies.extend(shared_files(dir)?);

    let max_seq_length = sentence
        .as_ref()
        .map(|s| s.max_seq_length)
        .filter(|&n| n > 0);
    let import_source = ImportSource {
        config_path: &config_path,
        config: &config,
        weights: &weights,
        tokenizer: tokenizer_rel,
        max_seq_length,
        artifact: None,
    };
    let mut info = new_info(&model_type, &provenance, &weights);
    info.architectures = architectures(&config);
    info.labels = labels(&config, &config_path)?;
    let mut chat_template = None;
    if let Some(first) = entries.first() {
        let description = (first.describe)(&import_source)?;
        info.family = Some(first.family);
        info.io = description.io;
        info.tasks = description.tasks;
        for entry in &entries {
            info.backends.insert(
                entry.backend.to_string(),
                BackendArtifacts::new(
                    ExecutionFormat::Safetensors,
                    artifacts.clone(),
                    weights.float_dtype(),
                ),
            );
        }
        if let Some(s) = &mut sentence {
            if info.io.output(&s.token_embeddings).is_none() {
                return Err(Error::Import {
                    path: dir.join("modules.json"),
                    message: format!(
                        "sentence-transformers model, but the {model_type} architecture has no `{}` output",
                        s.token_embeddings
                    ),
                });
            }
            // The effective maximum is the tokenizer hint's (model limit and ST setting).
            if let Some(max) = info
                .io
                .inputs
                .iter()
                .find_map(|i| i.tokenization())
                .map(|t| t.max_length)
            {
                s.max_seq_length = max;
            }
            info.tasks.push("sentence-similarity".into());
            info.sentence_embedding = sentence;
        }
        if first.family == Family::DecoderOnly {
            let (generation, template) = generation_info(dir, &config)?;
            info.generation = Some(generation);
            chat_template = template;
        }
    }

    if let Some(export) = &options.torchscript {
        add_torchscript(&mut info, export, &mut copies)?;
    }

    let extra: Vec<(&str, Vec<u8>)> = chat_template
        .map(|t| (CHAT_TEMPLATE_FILE, t.into_bytes()))
        .into_iter()
        .collect();
    write_package(dest, options, &copies, &extra, &info, provenance, progress)
}

/// Writes a package: copies `copies` (source, package path), writes `extra` files, then the
/// manifests, atomically.
fn write_package(
    dest: &Path,
    options: &ImportOptions,
    copies: &[(PathBuf, String)],
    extra: &[(&str, Vec<u8>)],
    info: &ModelInfo,
    provenance: Provenance,
    progress: &mut dyn FnMut(ImportEvent<'_>),
) -> Result<Package> {
    let mut writer = PackageWriter::create(dest, options.overwrite)?;
    for (from, rel) in copies {
        let size = std::fs::metadata(from)
            .map_err(|e| Error::io(from, e))?
            .len();
        progress(ImportEvent::File { path: rel, size });
        writer.copy_file(from, rel, &mut |n| progress(ImportEvent::Bytes(n)))?;
    }
    for (rel, bytes) in extra {
        writer.write_bytes(rel, bytes)?;
    }
    writer.finish(info, provenance)
}

/// Imports a GGUF file: the weights stay one file; config, tokenizer and chat template come
/// from its metadata.
fn import_gguf(
    src: &Path,
    dest: &Path,
    options: &ImportOptions,
    progress: &mut dyn FnMut(ImportEvent<'_>),
) -> Result<Package> {
    use crate::gguf::{GgufHeader, GgufValue, tokenizer::tokenizer_json};
    let path = src.canonicalize().map_err(|e| Error::io(src, e))?;
    let header = GgufHeader::read(&path)?;
    let architecture = header.architecture()?;
    let entries: Vec<_> = registry::for_gguf_architecture(architecture)
        .into_iter()
        .filter(|e| e.formats.contains(&ExecutionFormat::Gguf))
        .collect();
    let Some(first) = entries.first() else {
        return Err(Error::Import {
            path,
            message: format!(
                "GGUF architecture `{architecture}` is not supported by this build (supported: {})",
                registry::gguf_architectures().join(", ")
            ),
        });
    };
    let tokenizer = serde_json::to_vec_pretty(&tokenizer_json(&header)?)
        .map_err(|e| Error::InvalidArgument(format!("tokenizer.json: {e}")))?;
    crate::preprocess::tokenizer_call(&path, || tokenizers::Tokenizer::from_bytes(&tokenizer))
        .map_err(|e| Error::Tokenizer {
            path: path.clone(),
            message: format!("the tokenizer rebuilt from GGUF metadata does not load: {e}"),
        })?;
    let config = header.metadata_json();
    let weights = header.weight_index();
    let description = (first.describe)(&ImportSource {
        config_path: &path,
        config: &config,
        weights: &weights,
        tokenizer: Some("tokenizer.json"),
        max_seq_length: None,
        artifact: None,
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
    let model_rel = format!("backends/{}/model.gguf", first.backend);
    let provenance = options.provenance.clone().unwrap_or(Provenance {
        kind: SourceKind::Local,
        path: Some(path.display().to_string()),
        repo_id: options.repo_id.clone(),
        revision: options.revision.clone(),
        commit: None,
    });
    let mut info = new_info(first.model_type, &provenance, &weights);
    info.family = Some(first.family);
    info.tasks = description.tasks;
    info.io = description.io;
    info.generation = Some(GenerationInfo {
        eos_token_ids,
        bos_token_id: id("tokenizer.ggml.bos_token_id"),
        chat_template: template.as_ref().map(|_| CHAT_TEMPLATE_FILE.to_string()),
        defaults: GenerationDefaults::default(),
    });
    for entry in &entries {
        info.backends.insert(
            entry.backend.to_string(),
            BackendArtifacts {
                quantization: header.main_quantization().map(str::to_string),
                ..BackendArtifacts::new(
                    ExecutionFormat::Gguf,
                    vec![Artifact {
                        path: model_rel.clone(),
                        role: ArtifactRole::Model,
                    }],
                    weights.float_dtype(),
                )
            },
        );
    }
    let mut extra: Vec<(&str, Vec<u8>)> = vec![("tokenizer.json", tokenizer)];
    if let Some(t) = template {
        extra.push((CHAT_TEMPLATE_FILE, t.into_bytes()));
    }

    write_package(
        dest,
        options,
        &[(path.clone(), model_rel)],
        &extra,
        &info,
        provenance,
        progress,
    )
}

/// A model description with the fields every import fills the same way; the rest empty.
fn new_info(model_type: &str, provenance: &Provenance, weights: &WeightIndex) -> ModelInfo {
    ModelInfo {
        format_version: FORMAT_VERSION,
        model_type: model_type.to_string(),
        architectures: Vec::new(),
        family: None,
        tasks: Vec::new(),
        source: Source {
            repo_id: provenance.repo_id.clone(),
            revision: provenance
                .commit
                .clone()
                .or_else(|| provenance.revision.clone()),
        },
        backends: BTreeMap::new(),
        io: Default::default(),
        parameters: weights.parameter_count(),
        memory_estimate_bytes: weights.parameter_bytes(),
        labels: BTreeMap::new(),
        sentence_embedding: None,
        generation: None,
    }
}

/// HF `architectures` from a config.
fn architectures(config: &serde_json::Value) -> Vec<String> {
    config
        .get("architectures")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// The `.tflite` file of a directory, if it holds one (several are an error).
fn tflite_file(dir: &Path) -> Result<Option<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tflite") && p.is_file())
        .collect();
    found.sort();
    match found.len() {
        0 | 1 => Ok(found.pop()),
        _ => Err(Error::Import {
            path: dir.to_path_buf(),
            message: format!(
                "holds {} .tflite files ({}); import a directory with one model",
                found.len(),
                found
                    .iter()
                    .filter_map(|p| p.file_name())
                    .map(|n| n.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Imports a directory holding a TensorFlow Lite model (and optionally config.json,
/// tokenizer.json, preprocessor_config.json): the registered reader of the format derives the
/// schema from the model's tensors.
fn import_tflite(
    source: &SourceDir,
    model: &Path,
    dest: &Path,
    options: &ImportOptions,
    progress: &mut dyn FnMut(ImportEvent<'_>),
) -> Result<Package> {
    let dir = &source.dir;
    let provenance = options
        .provenance
        .clone()
        .unwrap_or_else(|| source.provenance.clone());
    let format = ExecutionFormat::Tflite;
    let entries: Vec<_> = registry::architectures()
        .iter()
        .copied()
        .filter(|e| e.formats.contains(&format))
        .collect();
    let Some(first) = entries.first() else {
        return Err(Error::BackendNotCompiled {
            backend: "tflite".into(),
            feature: "tflite".into(),
        });
    };
    let config_path = dir.join("config.json");
    let config: serde_json::Value = if config_path.is_file() {
        read_json(&config_path)?
    } else {
        serde_json::Value::Object(Default::default())
    };
    let weights = WeightIndex::default();
    let tokenizer = dir.join("tokenizer.json");
    let description = (first.describe)(&ImportSource {
        config_path: &config_path,
        config: &config,
        weights: &weights,
        tokenizer: tokenizer.is_file().then_some("tokenizer.json"),
        max_seq_length: None,
        artifact: Some(model),
    })?;
    let folder = format!("backends/{}", first.backend);
    let model_rel = format!("{folder}/model.tflite");
    let mut copies = vec![(model.to_path_buf(), model_rel.clone())];
    let mut artifacts = vec![Artifact {
        path: model_rel,
        role: ArtifactRole::Model,
    }];
    if config_path.is_file() {
        let rel = format!("{folder}/config.json");
        copies.push((config_path.clone(), rel.clone()));
        artifacts.push(Artifact {
            path: rel,
            role: ArtifactRole::Config,
        });
    }
    copies.extend(shared_files(dir)?);
    let quantized = description
        .io
        .inputs
        .iter()
        .chain(&description.io.outputs)
        .find(|t| t.quantization.is_some())
        .map(|t| t.dtype.to_string());
    let mut info = new_info(first.model_type, &provenance, &weights);
    info.architectures = architectures(&config);
    info.family = Some(first.family);
    info.io = description.io;
    info.tasks = description.tasks;
    info.labels = labels(&config, &config_path)?;
    info.memory_estimate_bytes = std::fs::metadata(model)
        .map_err(|e| Error::io(model, e))?
        .len();
    for entry in &entries {
        info.backends.insert(
            entry.backend.to_string(),
            BackendArtifacts {
                quantization: quantized.clone(),
                ..BackendArtifacts::new(format, artifacts.clone(), DType::Float32)
            },
        );
    }
    write_package(dest, options, &copies, &[], &info, provenance, progress)
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
