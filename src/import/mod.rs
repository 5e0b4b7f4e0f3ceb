//! Import: a model becomes a package, through one pipeline whatever the source.
//!
//! 1. `source` says what `src` is — a Hugging Face model directory, a snapshot or entry in a
//!    Hugging Face cache, a GGUF file, a directory holding a TensorFlow Lite graph — and where it
//!    came from.
//! 2. The reader of that kind (`hf`, `gguf`, `graph`) turns it into a `SourceModel`:
//!    the model type, its config and weights, the files that become artifacts and shared files,
//!    and what only that format knows (sentence-transformers modules, GGUF metadata, ...).
//! 3. `plan` is the same for every source: the registry's model type derives the I/O schema,
//!    every linked implementation that reads the format gets the artifacts, and the manifest is
//!    filled in. A TorchScript export (`torchscript`) can be added as another backend.
//! 4. The package is written atomically ([`PackageWriter`]).

mod gguf;
mod graph;
mod hf;
mod source;
mod torchscript;

pub use source::cache_repo_id;
pub use torchscript::{TORCHSCRIPT_FILE, TorchScriptExport};

use crate::manifest::{
    Artifact, ArtifactRole, BackendArtifacts, CHAT_TEMPLATE_FILE, ExecutionFormat, FORMAT_VERSION,
    GenerationInfo, ModelInfo, Provenance, SentenceEmbedding, Source,
};
use crate::package::{Package, PackageWriter};
use crate::registry::{self, ImportSource, ModelType};
use crate::tensor::DType;
use crate::weights::WeightIndex;
use crate::{Error, Result};
use inferox_core::backend;
use source::Kind;
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

/// A model as a source presents it, before the registry has described it: what every reader
/// produces and [`plan`] consumes.
struct SourceModel {
    /// The model type's name, and its registry entry when this build has one.
    model_type: String,
    entry: Option<&'static ModelType>,
    /// The format of the artifacts.
    format: ExecutionFormat,
    /// Where the config came from (config.json, or the GGUF file for its metadata).
    config_path: PathBuf,
    config: serde_json::Value,
    weights: WeightIndex,
    /// Float dtype of the weights, as the manifest records it.
    dtype: DType,
    /// Package path of the tokenizer, when there is one.
    tokenizer: Option<&'static str>,
    /// sentence-transformers' maximum sequence length, when set.
    max_seq_length: Option<usize>,
    /// The self-contained graph file, for graph formats.
    graph: Option<PathBuf>,
    /// Files that become the backend's artifacts: source, file name, role.
    artifacts: Vec<(PathBuf, String, ArtifactRole)>,
    /// Files copied to the package root: source, package path.
    shared: Vec<(PathBuf, String)>,
    /// Files written from memory: package path, contents.
    generated: Vec<(&'static str, Vec<u8>)>,
    provenance: Provenance,
    architectures: Vec<String>,
    labels: BTreeMap<u32, String>,
    sentence: Option<SentenceEmbedding>,
    /// Generation settings and the chat template's text, for decoders.
    generation: Option<(GenerationInfo, Option<String>)>,
    /// The quantization of the artifacts (GGUF's main type, a quantized graph's dtype).
    quantization: Option<String>,
    /// Overrides the weights' byte count as the memory estimate (graphs: the file size).
    memory_estimate: Option<u64>,
}

/// Imports the model at `src` (see the [module docs](self) for the kinds of source) as a
/// package at `dest`.
pub fn import(
    src: &Path,
    dest: &Path,
    options: &ImportOptions,
    progress: &mut dyn FnMut(ImportEvent<'_>),
) -> Result<Package> {
    registry::check()?;
    // Recorded in the manifests and used to name store entries and cache refs: checked first.
    if let Some(revision) = &options.revision {
        crate::repo::check_revision(revision)?;
    }
    if let Some(repo_id) = &options.repo_id {
        crate::repo::check_repo_id(repo_id)?;
    }
    let model = match source::open(src, options)? {
        Kind::Gguf(path) => gguf::read(&path, options)?,
        Kind::Graph(dir, file) => graph::read(&dir, &file, options)?,
        Kind::Directory(dir) => hf::read(&dir, options, progress)?,
    };
    let plan = plan(model, options, progress)?;
    write_package(dest, options, plan, progress)
}

/// What a package will hold.
struct Plan {
    info: ModelInfo,
    provenance: Provenance,
    /// Files to copy: source, package path.
    copies: Vec<(PathBuf, String)>,
    /// Files to write: package path, contents.
    generated: Vec<(&'static str, Vec<u8>)>,
}

/// The registry's part, the same for every source: describe the model, give the artifacts to
/// every linked implementation that reads them, fill in the manifest.
fn plan(
    model: SourceModel,
    options: &ImportOptions,
    progress: &mut dyn FnMut(ImportEvent<'_>),
) -> Result<Plan> {
    let implementations = model
        .entry
        .map(|e| registry::implementations_of(e.model_type, Some(model.format)))
        .unwrap_or_default();
    if implementations.is_empty() {
        let missing = match model.entry {
            None => Error::UnknownModelType {
                model_type: model.model_type.clone(),
                registered: registry::model_type_names(),
            },
            Some(entry) => match crate::backends::for_format(model.format) {
                // The backend that reads the format is not linked: say what to build with.
                Some((name, feature)) if backend::get(name).is_none() => {
                    Error::BackendNotCompiled {
                        backend: name.to_string(),
                        feature: feature.to_string(),
                    }
                }
                _ => Error::NoUsableBackend {
                    model_type: entry.model_type.to_string(),
                    reasons: vec![format!(
                        "no backend linked into this build reads it from {} (linked: {})",
                        model.format,
                        backend::names().join(", ")
                    )],
                },
            },
        };
        if !options.force {
            return Err(missing);
        }
        progress(ImportEvent::Warning(&format!(
            "{missing}; the package lists no backend until it is re-imported by a build that has one"
        )));
    }

    // Artifacts live in the folder of the most preferred backend that reads them; every other
    // backend reading the format points at the same files (one copy of the weights).
    let home = implementations
        .first()
        .map(|i| i.backend)
        .or_else(|| backend::names().first().copied())
        .ok_or_else(|| {
            Error::Unsupported("this build links no backend, so it cannot import models".into())
        })?;
    let folder = format!("backends/{home}");
    let mut copies = Vec::new();
    let mut artifacts = Vec::new();
    for (from, name, role) in &model.artifacts {
        let path = format!("{folder}/{name}");
        copies.push((from.clone(), path.clone()));
        artifacts.push(Artifact { path, role: *role });
    }
    copies.extend(model.shared.iter().cloned());

    let mut info = ModelInfo {
        format_version: FORMAT_VERSION,
        model_type: model.model_type.clone(),
        architectures: model.architectures.clone(),
        family: None,
        tasks: Vec::new(),
        source: Source {
            repo_id: model.provenance.repo_id.clone(),
            revision: model
                .provenance
                .commit
                .clone()
                .or_else(|| model.provenance.revision.clone()),
        },
        backends: BTreeMap::new(),
        io: Default::default(),
        parameters: model.weights.parameter_count(),
        memory_estimate_bytes: model
            .memory_estimate
            .unwrap_or_else(|| model.weights.parameter_bytes()),
        labels: model.labels.clone(),
        sentence_embedding: None,
        generation: None,
    };
    let mut generated = model.generated;
    if let Some(entry) = model.entry {
        let description = (entry.describe)(&ImportSource {
            config_path: &model.config_path,
            config: &model.config,
            weights: &model.weights,
            tokenizer: model.tokenizer,
            max_seq_length: model.max_seq_length,
            artifact: model.graph.as_deref(),
            preprocessor: model
                .shared
                .iter()
                .find(|(_, name)| name == registry::PREPROCESSOR_CONFIG)
                .map(|(path, _)| path.as_path()),
        })?;
        info.family = Some(entry.family);
        info.io = description.io;
        info.tasks = description.tasks;
        if let Some(mut s) = model.sentence {
            if info.io.output(&s.token_embeddings).is_none() {
                return Err(Error::Import {
                    path: model.config_path.with_file_name("modules.json"),
                    message: format!(
                        "sentence-transformers model, but the {} architecture has no `{}` output",
                        entry.model_type, s.token_embeddings
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
            info.sentence_embedding = Some(s);
        }
        if entry.family.generates_text()
            && let Some((generation, template)) = model.generation
        {
            info.generation = Some(generation);
            if let Some(t) = template {
                generated.push((CHAT_TEMPLATE_FILE, t.into_bytes()));
            }
        }
    }
    // A quantized graph says so in its schema (int8 tensors with a scale and zero point).
    let quantization = model.quantization.clone().or_else(|| {
        info.io
            .inputs
            .iter()
            .chain(&info.io.outputs)
            .find(|t| t.quantization.is_some())
            .map(|t| t.dtype.to_string())
    });
    for implementation in &implementations {
        info.backends.insert(
            implementation.backend.to_string(),
            BackendArtifacts {
                quantization: quantization.clone(),
                ..BackendArtifacts::new(model.format, artifacts.clone(), model.dtype)
            },
        );
    }
    if let Some(export) = &options.torchscript {
        torchscript::add(&mut info, export, &mut copies)?;
    }
    Ok(Plan {
        info,
        provenance: model.provenance,
        copies,
        generated,
    })
}

/// Writes the planned package: the copies, the generated files, then the manifests, atomically.
fn write_package(
    dest: &Path,
    options: &ImportOptions,
    plan: Plan,
    progress: &mut dyn FnMut(ImportEvent<'_>),
) -> Result<Package> {
    let mut writer = PackageWriter::create(dest, options.overwrite)?;
    for (from, rel) in &plan.copies {
        let size = std::fs::metadata(from)
            .map_err(|e| Error::io(from, e))?
            .len();
        progress(ImportEvent::File { path: rel, size });
        writer.copy_file(from, rel, &mut |n| progress(ImportEvent::Bytes(n)))?;
    }
    for (rel, bytes) in &plan.generated {
        writer.write_bytes(rel, bytes)?;
    }
    writer.finish(&plan.info, plan.provenance)
}
