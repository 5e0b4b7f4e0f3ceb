//! The compile-time architecture registry. Each architecture registers one [`Architecture`]
//! entry per (model_type, backend) with [`register_architecture!`](crate::register_architecture);
//! the `inventory` crate gathers them at program start. The loader dispatches through this table:
//! no `match model_type` in the core, no dlopen.

use crate::loader::LoadRequest;
use crate::manifest::{ExecutionFormat, Family};
use crate::model::Model;
use crate::schema::IoSchema;
use crate::weights::WeightIndex;
use crate::{Error, Result};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

/// What an architecture sees of a model being imported.
pub struct ImportSource<'a> {
    /// The source's config.json.
    pub config_path: &'a Path,
    /// Its parsed contents.
    pub config: &'a serde_json::Value,
    /// The tensors of its checkpoint.
    pub weights: &'a WeightIndex,
    /// Package-relative path of the tokenizer, when the source has one.
    pub tokenizer: Option<&'a str>,
    /// Maximum sequence length from sentence-transformers' configs, when present.
    pub max_seq_length: Option<usize>,
    /// The self-contained model file, for formats that carry their own graph (TFLite).
    pub artifact: Option<&'a Path>,
}

impl ImportSource<'_> {
    /// Parses config.json into an architecture's config type; errors name the file.
    pub fn parse_config<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.config.clone()).map_err(|e| Error::Config {
            path: self.config_path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// What an architecture derives from a model's config and weights at import.
#[derive(Clone, Debug)]
pub struct Description {
    /// The I/O schema of this particular model (heads present, sizes, limits).
    pub io: IoSchema,
    /// The tasks this particular model serves.
    pub tasks: Vec<String>,
}

/// Derives the I/O schema and tasks from the source model.
pub type DescribeFn = fn(&ImportSource<'_>) -> Result<Description>;
/// Builds a runnable model from a package.
pub type LoadFn = fn(&LoadRequest<'_>) -> Result<Box<dyn Model>>;

/// One registry entry: an architecture implemented on one backend.
#[derive(Debug)]
pub struct Architecture {
    /// Hugging Face `model_type` this entry serves.
    pub model_type: &'static str,
    /// Backend name (`candle`, `torch`, `tflite`).
    pub backend: &'static str,
    /// Broad family.
    pub family: Family,
    /// Tasks the implementation can serve.
    pub tasks: &'static [&'static str],
    /// The artifact formats the implementation reads.
    pub formats: &'static [ExecutionFormat],
    /// GGUF `general.architecture` names this entry serves (empty if it reads no GGUF).
    pub gguf_architectures: &'static [&'static str],
    /// Derives a package's I/O schema at import.
    pub describe: DescribeFn,
    /// Builds the model at load.
    pub load: LoadFn,
    /// Link to the reference implementation this one follows.
    pub reference: &'static str,
}

inventory::collect!(Architecture);

/// Registers one or more [`Architecture`] entries. Each argument must be a constant expression
/// (a struct literal or a `const fn` call). Usable from crates outside inferox.
///
/// ```
/// use inferox::registry::{Architecture, Description, ImportSource};
/// use inferox::{Family, ExecutionFormat, LoadRequest, Model, Result};
///
/// fn describe(_: &ImportSource<'_>) -> Result<Description> { unimplemented!() }
/// fn load(_: &LoadRequest<'_>) -> Result<Box<dyn Model>> { unimplemented!() }
///
/// inferox::register_architecture!(Architecture {
///     model_type: "doc-example",
///     backend: "candle",
///     family: Family::EncoderOnly,
///     tasks: &["feature-extraction"],
///     formats: &[ExecutionFormat::Safetensors],
///     gguf_architectures: &[],
///     describe,
///     load,
///     reference: "",
/// });
/// assert!(inferox::registry::find("doc-example", "candle").is_some());
/// ```
#[macro_export]
macro_rules! register_architecture {
    ($($entry:expr),+ $(,)?) => {
        $( $crate::inventory::submit! { $entry } )+
    };
}

fn sorted() -> &'static [&'static Architecture] {
    static ENTRIES: OnceLock<Vec<&'static Architecture>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        let mut v: Vec<&'static Architecture> = inventory::iter::<Architecture>().collect();
        v.sort_by_key(|a| (a.model_type, a.backend));
        v
    })
}

/// Every registered entry, sorted by (model_type, backend).
pub fn architectures() -> &'static [&'static Architecture] {
    sorted()
}

/// Fails if two entries share a (model_type, backend) key.
pub fn check() -> Result<()> {
    for pair in sorted().windows(2) {
        if (pair[0].model_type, pair[0].backend) == (pair[1].model_type, pair[1].backend) {
            return Err(Error::DuplicateRegistration {
                model_type: pair[0].model_type.to_string(),
                backend: pair[0].backend.to_string(),
            });
        }
    }
    Ok(())
}

/// The entry for (model_type, backend).
pub fn find(model_type: &str, backend: &str) -> Option<&'static Architecture> {
    sorted()
        .iter()
        .copied()
        .find(|a| a.model_type == model_type && a.backend == backend)
}

/// Every entry for `model_type`, in backend preference order.
pub fn for_model_type(model_type: &str) -> Vec<&'static Architecture> {
    let mut v: Vec<&'static Architecture> = sorted()
        .iter()
        .copied()
        .filter(|a| a.model_type == model_type)
        .collect();
    v.sort_by_key(|a| crate::backends::preference(a.backend));
    v
}

/// The entries that read GGUF files whose `general.architecture` is `name`, in backend
/// preference order.
pub fn for_gguf_architecture(name: &str) -> Vec<&'static Architecture> {
    let mut v: Vec<&'static Architecture> = sorted()
        .iter()
        .copied()
        .filter(|a| a.gguf_architectures.contains(&name))
        .collect();
    v.sort_by_key(|a| crate::backends::preference(a.backend));
    v
}

/// The GGUF architectures some entry serves.
pub fn gguf_architectures() -> Vec<String> {
    sorted()
        .iter()
        .flat_map(|a| a.gguf_architectures.iter().map(|s| s.to_string()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The registered model types.
pub fn model_types() -> Vec<String> {
    sorted()
        .iter()
        .map(|a| a.model_type.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}
