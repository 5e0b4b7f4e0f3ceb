//! The two manifests of a package: `model_info.json` (what the model is and how to run it) and
//! `metadata.json` (where it came from and every file with its size and sha256).
//! `docs/package-format.md` describes them and `docs/schema/` holds their JSON Schemas.

use crate::schema::IoSchema;
use crate::tensor::DType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The package format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// File name of the model description.
pub const MODEL_INFO_FILE: &str = "model_info.json";
/// File name of the provenance and file list.
pub const METADATA_FILE: &str = "metadata.json";
/// File name of a package's chat template.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// Broad shape of an architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    EncoderOnly,
    DecoderOnly,
    EncoderDecoder,
    Vision,
    Recurrent,
    Multimodal,
    /// An exported computation graph (TensorFlow Lite) with no architecture of its own.
    Graph,
}

impl Family {
    /// Whether models of the family generate text token by token (and their packages carry
    /// generation settings): decoder-only and encoder–decoder models.
    pub fn generates_text(self) -> bool {
        matches!(self, Family::DecoderOnly | Family::EncoderDecoder)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Family::EncoderOnly => "encoder-only",
            Family::DecoderOnly => "decoder-only",
            Family::EncoderDecoder => "encoder-decoder",
            Family::Vision => "vision",
            Family::Recurrent => "recurrent",
            Family::Multimodal => "multimodal",
            Family::Graph => "graph",
        };
        f.write_str(s)
    }
}

/// How a backend's artifacts are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionFormat {
    /// HF config.json + safetensors weights (possibly sharded).
    Safetensors,
    /// A single GGUF file (weights, config and tokenizer in its metadata).
    Gguf,
    /// A TorchScript module.
    Torchscript,
    /// A TensorFlow Lite flatbuffer.
    Tflite,
}

impl fmt::Display for ExecutionFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ExecutionFormat::Safetensors => "safetensors",
            ExecutionFormat::Gguf => "gguf",
            ExecutionFormat::Torchscript => "torchscript",
            ExecutionFormat::Tflite => "tflite",
        };
        f.write_str(s)
    }
}

/// What an artifact file is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactRole {
    /// The architecture config (HF config.json).
    Config,
    /// A weights file (one shard of possibly several).
    Weights,
    /// The index of a sharded checkpoint (`model.safetensors.index.json`).
    WeightsIndex,
    /// A self-contained model file (GGUF, TorchScript, TFLite).
    Model,
}

/// One file a backend needs, relative to the package root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub path: String,
    pub role: ArtifactRole,
}

/// What one backend needs to run the package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendArtifacts {
    /// How the artifacts are stored.
    pub format: ExecutionFormat,
    /// The files, relative to the package root.
    pub artifacts: Vec<Artifact>,
    /// Element type the (unquantized) weights are stored in.
    pub dtype: DType,
    /// Quantization holding most of the weights (GGUF type name such as `Q4_K`), if quantized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    /// Schema input names in the order a positional artifact (TorchScript) takes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// Schema output names in the order a positional artifact returns them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
}

impl BackendArtifacts {
    /// Artifacts in `format` with no positional I/O order.
    pub fn new(format: ExecutionFormat, artifacts: Vec<Artifact>, dtype: DType) -> Self {
        BackendArtifacts {
            format,
            artifacts,
            dtype,
            quantization: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Paths of the artifacts with this role.
    pub fn paths(&self, role: ArtifactRole) -> impl Iterator<Item = &str> {
        self.artifacts
            .iter()
            .filter(move |a| a.role == role)
            .map(|a| a.path.as_str())
    }
}

/// Where the model came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Hugging Face repo id (`org/name`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_id: Option<String>,
    /// Revision (branch, tag or commit sha), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// How token embeddings are pooled into one sentence embedding (sentence-transformers' modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean of the real (unpadded) tokens.
    Mean,
    /// The first token.
    Cls,
    /// Element-wise maximum over the real tokens.
    Max,
    /// Sum of the real tokens divided by the square root of their count.
    MeanSqrtLen,
}

impl std::str::FromStr for Pooling {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "max" => Ok(Pooling::Max),
            "mean_sqrt_len" => Ok(Pooling::MeanSqrtLen),
            _ => Err(crate::Error::InvalidArgument(format!(
                "unknown pooling `{s}` (use mean, cls, max or mean_sqrt_len)"
            ))),
        }
    }
}

/// Sentence-embedding settings, from a sentence-transformers model's configs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentenceEmbedding {
    /// Pooling mode.
    pub pooling: Pooling,
    /// Whether embeddings are L2-normalised.
    pub normalize: bool,
    /// Longest token sequence the embedding model was trained on.
    pub max_seq_length: usize,
    /// Embedding size.
    pub dimension: usize,
    /// Output that holds the token embeddings to pool.
    pub token_embeddings: String,
}

/// Sampling defaults from `generation_config.json` (each unset when the file does not say).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub do_sample: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f64>,
}

impl GenerationDefaults {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == GenerationDefaults::default()
    }
}

/// Text-generation settings of a decoder package.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationInfo {
    /// Tokens that end a generation.
    #[serde(default)]
    pub eos_token_ids: Vec<u32>,
    /// Beginning-of-sequence token, when the model has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    /// Chat template (Jinja) file, relative to the package root, for chat models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
    /// Sampling defaults.
    #[serde(default, skip_serializing_if = "GenerationDefaults::is_empty")]
    pub defaults: GenerationDefaults,
}

/// `model_info.json`: what the model is, which backends can run it, and its I/O schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Package format version.
    pub format_version: u32,
    /// Hugging Face `model_type` (`bert`, `gpt2`, ...): the registry key.
    pub model_type: String,
    /// Hugging Face `architectures` from config.json (`BertModel`, ...).
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Broad family (absent only for a forced import of an unregistered model type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<Family>,
    /// Tasks the package serves (`feature-extraction`, `sentence-similarity`, ...).
    pub tasks: Vec<String>,
    /// Where the model came from.
    pub source: Source,
    /// Per backend: format, artifacts and dtype.
    pub backends: BTreeMap<String, BackendArtifacts>,
    /// Inputs and outputs.
    pub io: IoSchema,
    /// Number of parameters, counted from the weights.
    pub parameters: u64,
    /// Estimated memory to hold the weights at their stored dtype, in bytes.
    pub memory_estimate_bytes: u64,
    /// Class labels by id, from config.json's `id2label`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<u32, String>,
    /// Sentence-embedding settings, when the source is a sentence-transformers model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentence_embedding: Option<SentenceEmbedding>,
    /// Text-generation settings, for decoder models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationInfo>,
}

/// One file of the package with its size and sha256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the package root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256 of the contents.
    pub sha256: String,
}

/// What kind of source a package was made from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// A model directory on disk.
    #[default]
    Local,
    /// A snapshot in a Hugging Face cache.
    HfCache,
    /// Downloaded from a Hugging Face hub.
    Hub,
}

/// Where the package's files came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// Kind of source.
    pub kind: SourceKind,
    /// The directory or file imported, when local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Hugging Face repo id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_id: Option<String>,
    /// Revision asked for, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Commit sha the revision resolved to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// `metadata.json`: provenance and the list of every other file in the package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Package format version.
    pub format_version: u32,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// Version of inferox that wrote the package.
    pub inferox_version: String,
    /// Where the files came from.
    pub source: Provenance,
    /// Every file of the package except metadata.json itself.
    pub files: Vec<FileEntry>,
}

impl Metadata {
    /// The entry for `path`.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Total size of the listed files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}
