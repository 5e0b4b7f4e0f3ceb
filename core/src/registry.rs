//! The compile-time registry, in two tables split by when they are used:
//!
//! * [`ModelType`]: what a Hugging Face `model_type` is — family, tasks, how its I/O schema is
//!   derived from a config and weights, which GGUF architectures it reads. Used at import; it
//!   needs no backend.
//! * [`Implementation`]: a model type on one backend — the formats it reads and how it loads.
//!   Used at load, keyed by (model_type, backend).
//!
//! The third table, of backends, is [`crate::backend`]. Entries register with
//! [`register!`](crate::register); the `inventory` crate gathers them at program start. Nothing
//! here matches on a model type or a backend name: no dlopen, no `match model_type`.

use crate::backend;
use crate::load::LoadRequest;
use crate::manifest::{ExecutionFormat, Family};
use crate::model::Model;
use crate::schema::IoSchema;
use crate::weights::WeightIndex;
use crate::{Error, Result};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

/// The image-processor config's name, in a source and in a package.
pub const PREPROCESSOR_CONFIG: &str = "preprocessor_config.json";

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
    /// The source's image-processor config (`preprocessor_config.json`), when it has one.
    pub preprocessor: Option<&'a Path>,
}

impl ImportSource<'_> {
    /// The image-preprocessing steps of the source's `preprocessor_config.json`; an error
    /// naming the file when it is absent (an image model needs it) or not understood.
    pub fn image_preprocessing(&self) -> Result<crate::vision::ImagePreprocessing> {
        let path = self.preprocessor.ok_or_else(|| Error::Import {
            path: self.config_path.with_file_name(PREPROCESSOR_CONFIG),
            message: "an image model needs the image-processor config beside its config.json \
                      (transformers' save_pretrained of the image processor writes it)"
                .into(),
        })?;
        let config: serde_json::Value = crate::files::read_json(path)?;
        crate::vision::ImagePreprocessing::from_processor_config(&config, path, PREPROCESSOR_CONFIG)
    }

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

/// A Hugging Face `model_type` and what import needs to know of it.
#[derive(Debug)]
pub struct ModelType {
    /// Hugging Face `model_type` (config.json), or a name of our own for exported graphs.
    pub model_type: &'static str,
    /// Broad family.
    pub family: Family,
    /// Tasks the architecture can serve (a particular model's are in its [`Description`]).
    pub tasks: &'static [&'static str],
    /// GGUF `general.architecture` names imported as this model type (empty if none).
    pub gguf_architectures: &'static [&'static str],
    /// The self-contained graph format (TFLite) imported as this model type, if any.
    pub graph_format: Option<ExecutionFormat>,
    /// Derives a package's I/O schema and tasks at import.
    pub describe: DescribeFn,
    /// Link to the reference implementation the architecture follows.
    pub reference: &'static str,
}

/// A model type implemented on one backend.
#[derive(Debug)]
pub struct Implementation {
    /// The [`ModelType::model_type`] it implements.
    pub model_type: &'static str,
    /// The backend it runs on ([`Backend::name`](crate::backend::Backend::name)).
    pub backend: &'static str,
    /// The artifact formats it reads.
    pub formats: &'static [ExecutionFormat],
    /// Builds the model at load.
    pub load: LoadFn,
}

impl ModelType {
    /// A model type of `family` whose schema `describe` derives; no tasks, GGUF names, graph
    /// format or reference until the builder methods add them.
    pub const fn new(model_type: &'static str, family: Family, describe: DescribeFn) -> Self {
        ModelType {
            model_type,
            family,
            tasks: &[],
            gguf_architectures: &[],
            graph_format: None,
            describe,
            reference: "",
        }
    }

    /// With the tasks the architecture can serve.
    pub const fn tasks(self, tasks: &'static [&'static str]) -> Self {
        ModelType { tasks, ..self }
    }

    /// Also imported from GGUF files of these `general.architecture` names.
    pub const fn gguf(self, gguf_architectures: &'static [&'static str]) -> Self {
        ModelType {
            gguf_architectures,
            ..self
        }
    }

    /// Imported from self-contained graphs in `format`.
    pub const fn graph(self, format: ExecutionFormat) -> Self {
        ModelType {
            graph_format: Some(format),
            ..self
        }
    }

    /// With the link to the reference implementation.
    pub const fn reference(self, reference: &'static str) -> Self {
        ModelType { reference, ..self }
    }
}

impl Implementation {
    /// `model_type` on `backend`, reading `formats`, built by `load`.
    pub const fn new(
        model_type: &'static str,
        backend: &'static str,
        formats: &'static [ExecutionFormat],
        load: LoadFn,
    ) -> Self {
        Implementation {
            model_type,
            backend,
            formats,
            load,
        }
    }
}

inventory::collect!(ModelType);
inventory::collect!(Implementation);

/// Registers entries of the registry tables: [`ModelType`], [`Implementation`] and
/// [`Backend`](crate::backend::Backend) values, in any mix. Each argument must be a constant expression (a struct literal
/// or a `const fn` call). Usable from crates outside inferox.
///
/// ```
/// use inferox_core::registry::{Description, ImportSource, Implementation, ModelType};
/// use inferox_core::{Family, ExecutionFormat, LoadRequest, Model, Result};
///
/// fn describe(_: &ImportSource<'_>) -> Result<Description> { unimplemented!() }
/// fn load(_: &LoadRequest<'_>) -> Result<Box<dyn Model>> { unimplemented!() }
///
/// inferox_core::register!(
///     ModelType {
///         model_type: "doc-example",
///         family: Family::EncoderOnly,
///         tasks: &["feature-extraction"],
///         gguf_architectures: &[],
///         graph_format: None,
///         describe,
///         reference: "",
///     },
///     Implementation {
///         model_type: "doc-example",
///         backend: "candle",
///         formats: &[ExecutionFormat::Safetensors],
///         load,
///     },
/// );
/// assert!(inferox_core::registry::model_type("doc-example").is_some());
/// assert!(inferox_core::registry::find("doc-example", "candle").is_some());
/// ```
#[macro_export]
macro_rules! register {
    ($($entry:expr),+ $(,)?) => {
        $( $crate::inventory::submit! { $entry } )+
    };
}

fn sorted<T: inventory::Collect, K: Ord>(
    cell: &'static OnceLock<Vec<&'static T>>,
    key: fn(&T) -> K,
) -> &'static [&'static T] {
    cell.get_or_init(|| {
        let mut v: Vec<&'static T> = inventory::iter::<T>().collect();
        v.sort_by_key(|t| key(t));
        v
    })
}

/// Every registered model type, sorted by name.
pub fn model_types() -> &'static [&'static ModelType] {
    static CELL: OnceLock<Vec<&'static ModelType>> = OnceLock::new();
    sorted(&CELL, |m| m.model_type)
}

/// Every registered implementation, sorted by (model_type, backend).
pub fn implementations() -> &'static [&'static Implementation] {
    static CELL: OnceLock<Vec<&'static Implementation>> = OnceLock::new();
    sorted(&CELL, |i| (i.model_type, i.backend))
}

/// Fails if a key is registered twice, or an implementation's model type or backend is not
/// registered.
pub fn check() -> Result<()> {
    for pair in implementations().windows(2) {
        if (pair[0].model_type, pair[0].backend) == (pair[1].model_type, pair[1].backend) {
            return Err(Error::DuplicateRegistration {
                model_type: pair[0].model_type.to_string(),
                backend: pair[0].backend.to_string(),
            });
        }
    }
    if let Some(pair) = model_types()
        .windows(2)
        .find(|p| p[0].model_type == p[1].model_type)
    {
        return Err(Error::Registry(format!(
            "model type `{}` is registered more than once",
            pair[0].model_type
        )));
    }
    let backends = backend::backends();
    if let Some(pair) = backends.windows(2).find(|p| p[0].name == p[1].name) {
        return Err(Error::Registry(format!(
            "backend `{}` is registered more than once",
            pair[0].name
        )));
    }
    for i in implementations() {
        if model_type(i.model_type).is_none() {
            return Err(Error::Registry(format!(
                "the `{}` implementation of `{}` has no model-type entry (register a `ModelType` for it)",
                i.backend, i.model_type
            )));
        }
        if backend::get(i.backend).is_none() {
            return Err(Error::Registry(format!(
                "the `{}` implementation of `{}` names a backend that is not linked",
                i.backend, i.model_type
            )));
        }
    }
    Ok(())
}

/// The model type called `name`.
pub fn model_type(name: &str) -> Option<&'static ModelType> {
    model_types().iter().copied().find(|m| m.model_type == name)
}

/// The model type that GGUF files of `general.architecture` = `name` are imported as.
pub fn for_gguf_architecture(name: &str) -> Option<&'static ModelType> {
    model_types()
        .iter()
        .copied()
        .find(|m| m.gguf_architectures.contains(&name))
}

/// The model type that self-contained graphs in `format` are imported as.
pub fn for_graph_format(format: ExecutionFormat) -> Option<&'static ModelType> {
    model_types()
        .iter()
        .copied()
        .find(|m| m.graph_format == Some(format))
}

/// The implementation of `model_type` on `backend`.
pub fn find(model_type: &str, backend: &str) -> Option<&'static Implementation> {
    implementations()
        .iter()
        .copied()
        .find(|i| i.model_type == model_type && i.backend == backend)
}

/// The implementations of `model_type` that read `format` (any format when `None`), in backend
/// preference order.
pub fn implementations_of(
    model_type: &str,
    format: Option<ExecutionFormat>,
) -> Vec<&'static Implementation> {
    let mut v: Vec<&'static Implementation> = implementations()
        .iter()
        .copied()
        .filter(|i| i.model_type == model_type)
        .filter(|i| format.is_none_or(|f| i.formats.contains(&f)))
        .collect();
    v.sort_by_key(|i| backend::preference(i.backend));
    v
}

/// The GGUF architectures some model type reads.
pub fn gguf_architectures() -> Vec<String> {
    model_types()
        .iter()
        .flat_map(|m| m.gguf_architectures.iter().map(|s| s.to_string()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The names of the registered model types.
pub fn model_type_names() -> Vec<String> {
    model_types()
        .iter()
        .map(|m| m.model_type.to_string())
        .collect()
}
