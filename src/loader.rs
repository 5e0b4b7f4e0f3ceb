//! From a package to a running model: choose the backend, find the registry entry, build the
//! model, and wrap it so that every call is checked against the package's I/O schema.

use crate::backends;
use crate::preprocess::{Encoded, TextPreprocessor};
use inferox_core::backend;
use inferox_core::load::check_finite;
use inferox_core::manifest::{BackendArtifacts, ModelInfo};
use inferox_core::model::Model;
use inferox_core::package::Package;
use inferox_core::registry;
use inferox_core::tensor::NamedTensors;
use inferox_core::{Device, Error, LoadOptions, LoadRequest, Result};

/// Picks the backend for `package` (see [`LoadOptions::backend`]).
pub fn choose_backend(package: &Package, requested: Option<&str>) -> Result<&'static str> {
    let info = package.info();
    let model_type = &info.model_type;
    let listed: Vec<String> = info.backends.keys().cloned().collect();
    if let Some(name) = requested {
        let Some(linked) = backend::get(name) else {
            return Err(not_linked(name));
        };
        if registry::find(model_type, linked.name).is_none() {
            return Err(no_implementation(model_type, linked.name));
        }
        if artifacts_for(info, linked.name).is_none() {
            return Err(Error::BackendNotInPackage {
                backend: linked.name.to_string(),
                available: listed,
            });
        }
        return Ok(linked.name);
    }
    let linked = backend::backends();
    linked
        .iter()
        .filter(|b| registry::find(model_type, b.name).is_some())
        .find(|b| artifacts_for(info, b.name).is_some())
        .map(|b| b.name)
        .ok_or_else(|| {
            if registry::model_type(model_type).is_none() && !linked.is_empty() {
                return Error::UnknownModelType {
                    model_type: model_type.clone(),
                    registered: registry::model_type_names(),
                };
            }
            // Why each backend the binary links or the package lists cannot run it.
            let mut candidates: Vec<(&str, bool)> = linked.iter().map(|b| (b.name, true)).collect();
            candidates.extend(
                listed
                    .iter()
                    .filter(|n| backend::get(n).is_none())
                    .map(|n| (n.as_str(), false)),
            );
            if let [(only, false)] = candidates.as_slice() {
                return not_linked(only);
            }
            let reasons = candidates
                .iter()
                .map(|&(name, is_linked)| {
                    let why = if !is_linked {
                        match backends::feature(name) {
                            Some(feature) => format!("not compiled in (cargo feature `{feature}`)"),
                            None => "not a backend this inferox knows".to_string(),
                        }
                    } else if registry::find(model_type, name).is_none() {
                        format!("has no `{model_type}` implementation")
                    } else {
                        format!(
                            "the package has no artifacts it reads (package lists: {})",
                            listed.join(", ")
                        )
                    };
                    format!("{name}: {why}")
                })
                .collect();
            Error::NoUsableBackend {
                model_type: model_type.clone(),
                reasons,
            }
        })
}

/// The error for a backend this binary does not link: one to rebuild with, or an unknown name.
fn not_linked(name: &str) -> Error {
    match backends::feature(name) {
        Some(feature) => Error::BackendNotCompiled {
            backend: name.to_string(),
            feature: feature.to_string(),
        },
        None => Error::UnknownBackend {
            name: name.to_string(),
            known: backends::FEATURES
                .iter()
                .map(|(n, _)| n.to_string())
                .collect(),
        },
    }
}

/// The artifacts `backend` runs: its own entry in the package, or else another backend's in a
/// format this build's implementation reads (config.json + safetensors and GGUF files are not
/// tied to one backend, so a package imported by a candle-only build runs on torch too).
pub fn artifacts_for<'p>(info: &'p ModelInfo, backend: &str) -> Option<&'p BackendArtifacts> {
    if let Some(own) = info.backends.get(backend) {
        return Some(own);
    }
    let entry = registry::find(&info.model_type, backend)?;
    info.backends
        .values()
        .find(|a| entry.formats.contains(&a.format))
}

fn no_implementation(model_type: &str, backend: &str) -> Error {
    let available: Vec<String> = registry::implementations_of(model_type, None)
        .iter()
        .map(|a| a.backend.to_string())
        .collect();
    if registry::model_type(model_type).is_none() {
        return Error::UnknownModelType {
            model_type: model_type.to_string(),
            registered: registry::model_type_names(),
        };
    }
    Error::NoImplementation {
        model_type: model_type.to_string(),
        backend: backend.to_string(),
        available,
    }
}

/// Loading a [`Package`]: `package.load(&options)` with this trait in scope (it is in
/// [`inferox::prelude`](crate::prelude)).
pub trait LoadPackage {
    /// Loads the package on the chosen backend (see [`LoadOptions`]).
    fn load(&self, options: &LoadOptions) -> Result<LoadedModel>;
}

impl LoadPackage for Package {
    fn load(&self, options: &LoadOptions) -> Result<LoadedModel> {
        registry::check()?;
        let backend = choose_backend(self, options.backend.as_deref())?;
        let entry = registry::find(&self.info().model_type, backend)
            .ok_or_else(|| no_implementation(&self.info().model_type, backend))?;
        if let (Some(n), Some(info)) = (options.threads, backend::get(backend)) {
            if n == 0 {
                return Err(Error::InvalidArgument("threads must be at least 1".into()));
            }
            (info.threads)(n)?;
        }
        let artifacts = artifacts_for(self.info(), backend)
            .ok_or_else(|| no_implementation(&self.info().model_type, backend))?;
        if !entry.formats.contains(&artifacts.format) {
            let reads: Vec<String> = entry.formats.iter().map(|f| f.to_string()).collect();
            return Err(Error::Manifest {
                path: self.root().join(crate::manifest::MODEL_INFO_FILE),
                field: format!("backends.{backend}.format"),
                message: format!(
                    "is {}, but this build's {} `{}` implementation reads {}",
                    artifacts.format,
                    backend,
                    entry.model_type,
                    reads.join(", ")
                ),
            });
        }
        let request = LoadRequest {
            package: self,
            backend,
            artifacts,
            options,
        };
        // The tokenizer is read before the weights: parsing a large one passes through twice
        // the memory it keeps (Qwen2.5's 151,936-token BPE: about 70 MiB at its peak), and
        // that is then free for the weights rather than on top of them (peak RSS of a Qwen2.5
        // chat 530 -> 508 MiB). A package without one, or with one that does not load, is left
        // to the first call that needs text, which reports the error.
        let text = std::sync::OnceLock::new();
        if let Ok(pre) = TextPreprocessor::from_package(self, &self.info().io) {
            let _ = text.set(pre);
        }
        let model = (entry.load)(&request)?;
        let io = &self.info().io;
        let quantized = io
            .inputs
            .iter()
            .chain(&io.outputs)
            .any(|t| t.quantization.is_some());
        if options.dequantize && !quantized {
            return Err(Error::InvalidArgument(
                "dequantize: this model has no quantized inputs or outputs".into(),
            ));
        }
        Ok(LoadedModel {
            io: if options.dequantize {
                io.dequantized()
            } else {
                io.clone()
            },
            package: self.clone(),
            backend,
            device: options.device,
            model,
            text,
            allow_non_finite: options.allow_non_finite,
        })
    }
}

/// A model ready to run, with its package's schema and text preprocessing.
///
/// It is `Send + Sync` and every method takes `&self`: share one (in an `Arc`) between threads
/// and they run at once on the same weights; each generation keeps its KV cache to itself.
///
/// Its core is here; the task methods live with their tasks: embeddings in the `pipeline`
/// module, generation in `generate`, chat in `chat`.
pub struct LoadedModel {
    pub(crate) package: Package,
    io: crate::schema::IoSchema,
    backend: &'static str,
    device: Device,
    pub(crate) model: Box<dyn Model>,
    /// The tokenizer, made on first use by [`LoadedModel::preprocessor`].
    pub(crate) text: std::sync::OnceLock<TextPreprocessor>,
    allow_non_finite: bool,
}

impl LoadedModel {
    /// The model description.
    pub fn info(&self) -> &ModelInfo {
        self.package.info()
    }

    /// The package it was loaded from.
    pub fn package(&self) -> &Package {
        &self.package
    }

    /// The backend it runs on.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The device it runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Runs the model on named tensors, checking inputs and outputs against the schema.
    /// With [`LoadOptions::dequantize`], quantized tensors are float32 here.
    pub fn run(&self, inputs: &NamedTensors) -> Result<NamedTensors> {
        let io = &self.io;
        let mut bound = io.check_inputs(inputs)?;
        let outputs = self.model.forward(inputs)?;
        io.check_outputs(&outputs, &mut bound)?;
        if !self.allow_non_finite {
            for (name, tensor) in outputs.iter() {
                check_finite(name, tensor.data())?;
            }
        }
        Ok(outputs)
    }

    /// The I/O schema calls are checked against: the package's, with quantized tensors as
    /// float32 when the model was loaded with [`LoadOptions::dequantize`].
    pub fn io(&self) -> &crate::schema::IoSchema {
        &self.io
    }

    /// The text preprocessor (tokenizer), made from the schema on first use.
    pub(crate) fn preprocessor(&self) -> Result<&TextPreprocessor> {
        if let Some(pre) = self.text.get() {
            return Ok(pre);
        }
        let pre = TextPreprocessor::from_package(&self.package, &self.package.info().io)?;
        Ok(self.text.get_or_init(|| pre))
    }

    /// Tokenizes `texts` into every input the schema makes from text. With `truncate`, texts
    /// longer than the model's maximum are cut to it; without, they are an error.
    pub fn encode(&self, texts: &[&str], truncate: bool) -> Result<Encoded> {
        self.preprocessor()?.encode(texts, truncate)
    }

    /// Tokenizes `texts` and runs the model on them.
    pub fn run_text(&self, texts: &[&str], truncate: bool) -> Result<NamedTensors> {
        let encoded = self.encode(texts, truncate)?;
        self.run(&encoded.inputs)
    }

    /// Token ids of `text` (with the tokenizer's special tokens when `add_special_tokens`).
    pub fn tokenize(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.preprocessor()?.encode_ids(text, add_special_tokens)
    }
}
