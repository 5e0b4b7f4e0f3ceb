//! From a package to a running model: choose the backend, find the registry entry, build the
//! model, and wrap it so that every call is checked against the package's I/O schema.

use crate::backends;
use crate::chat::{self, ChatMessage};
use crate::files::read_config;
use crate::generate::{GenerateOptions, Generation, Generator, Sampling, TextStream};
use crate::manifest::{ArtifactRole, BackendArtifacts, ModelInfo};
use crate::model::Model;
use crate::package::Package;
use crate::pipeline::{self, EmbedOptions, Embeddings};
use crate::preprocess::{Encoded, TextPreprocessor};
use crate::registry;
use crate::tensor::{DType, NamedTensors};
use crate::{Error, Result};
use std::fmt;
use std::path::PathBuf;

/// Where a model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// The CPU.
    #[default]
    Cpu,
    /// An NVIDIA GPU (candle built with `cuda`).
    Cuda(usize),
    /// An Apple GPU (candle built with `metal`).
    Metal(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
            Device::Metal(i) => write!(f, "metal:{i}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (kind, index) = match s.split_once(':') {
            Some((k, i)) => (
                k,
                i.parse::<usize>().map_err(|_| {
                    Error::InvalidArgument(format!("device `{s}`: `{i}` is not a device index"))
                })?,
            ),
            None => (s, 0),
        };
        match kind {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(index)),
            "metal" => Ok(Device::Metal(index)),
            _ => Err(Error::InvalidArgument(format!(
                "unknown device `{s}` (use cpu, cuda, cuda:N, metal or metal:N)"
            ))),
        }
    }
}

/// How to load a package.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Backend to use; `None` picks the first in preference order that the package lists and
    /// this binary has (see [`backends::BACKENDS`]).
    pub backend: Option<String>,
    /// Compute dtype for floating-point weights; `None` means float32.
    pub dtype: Option<DType>,
    /// Device to run on.
    pub device: Device,
    /// Threads for the backend's kernels: libtorch's intra-op threads (process-wide) on torch,
    /// the interpreter's threads on tflite. `None` keeps the backend's default. candle sizes its
    /// worker pools once per process, from `CANDLE_NUM_THREADS` / `RAYON_NUM_THREADS` (the CLI's
    /// `--threads` sets both at start-up): there a count that differs from the pool's is an
    /// error that says so.
    pub threads: Option<usize>,
    /// Quantized inputs and outputs (int8/uint8 tensors with a scale and zero point in the
    /// schema) are float32 at the boundary: inputs are quantized, outputs dequantized.
    pub dequantize: bool,
    /// Hand out outputs holding NaN or infinity instead of failing with
    /// [`Error::NonFinite`].
    pub allow_non_finite: bool,
}

/// What a registry entry's loader gets: the package, the chosen backend's artifacts, and the
/// options.
pub struct LoadRequest<'a> {
    /// The package.
    pub package: &'a Package,
    /// The chosen backend.
    pub backend: &'a str,
    /// That backend's artifacts in the package.
    pub artifacts: &'a BackendArtifacts,
    /// The caller's options.
    pub options: &'a LoadOptions,
}

impl LoadRequest<'_> {
    /// The model description.
    pub fn info(&self) -> &ModelInfo {
        self.package.info()
    }

    /// Absolute paths of the artifacts with `role`; at least one must exist.
    pub fn artifacts(&self, role: ArtifactRole) -> Result<Vec<PathBuf>> {
        let paths: Vec<PathBuf> = self
            .artifacts
            .paths(role)
            .map(|p| self.package.file(p))
            .collect::<Result<_>>()?;
        if paths.is_empty() {
            return Err(Error::Manifest {
                path: self.package.root().join(crate::manifest::MODEL_INFO_FILE),
                field: format!("backends.{}.artifacts", self.backend),
                message: format!("no artifact with role {role:?}"),
            });
        }
        Ok(paths)
    }

    /// Reads the backend's config artifact (HF config.json) into `T`.
    pub fn config<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let path = self.artifacts(ArtifactRole::Config)?.remove(0);
        read_config(&path)
    }

    /// The compute dtype (float32 unless the caller chose another).
    pub fn dtype(&self) -> DType {
        self.options.dtype.unwrap_or(DType::Float32)
    }
}

/// Picks the backend for `package` (see [`LoadOptions::backend`]).
pub fn choose_backend(package: &Package, requested: Option<&str>) -> Result<&'static str> {
    let info = package.info();
    let listed: Vec<String> = info.backends.keys().cloned().collect();
    if let Some(name) = requested {
        let backend = backends::get(name).ok_or_else(|| Error::UnknownBackend {
            name: name.to_string(),
            known: backends::BACKENDS
                .iter()
                .map(|b| b.name.to_string())
                .collect(),
        })?;
        if !backend.compiled {
            return Err(Error::BackendNotCompiled {
                backend: backend.name.to_string(),
                feature: backend.feature.to_string(),
            });
        }
        if registry::find(&info.model_type, backend.name).is_none() {
            return Err(no_implementation(&info.model_type, backend.name));
        }
        if artifacts_for(info, backend.name).is_none() {
            return Err(Error::BackendNotInPackage {
                backend: backend.name.to_string(),
                available: listed,
            });
        }
        return Ok(backend.name);
    }
    backends::BACKENDS
        .iter()
        .filter(|b| b.compiled && registry::find(&info.model_type, b.name).is_some())
        .find(|b| artifacts_for(info, b.name).is_some())
        .map(|b| b.name)
        .ok_or_else(|| {
            if registry::for_model_type(&info.model_type).is_empty()
                && !backends::compiled().is_empty()
            {
                return Error::UnknownModelType {
                    model_type: info.model_type.clone(),
                    registered: registry::model_types(),
                };
            }
            // Why each backend the package lists or the binary has cannot run it.
            let candidates: Vec<_> = backends::BACKENDS
                .iter()
                .filter(|b| b.compiled || info.backends.contains_key(b.name))
                .collect();
            if let [only] = candidates.as_slice()
                && !only.compiled
            {
                return Error::BackendNotCompiled {
                    backend: only.name.to_string(),
                    feature: only.feature.to_string(),
                };
            }
            let reasons = candidates
                .iter()
                .map(|b| {
                    let why = if !b.compiled {
                        format!("not compiled in (cargo feature `{}`)", b.feature)
                    } else if registry::find(&info.model_type, b.name).is_none() {
                        format!("has no `{}` implementation", info.model_type)
                    } else {
                        format!(
                            "the package has no artifacts it reads (package lists: {})",
                            listed.join(", ")
                        )
                    };
                    format!("{}: {why}", b.name)
                })
                .collect();
            Error::NoUsableBackend {
                model_type: info.model_type.clone(),
                reasons,
            }
        })
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
    let available: Vec<String> = registry::for_model_type(model_type)
        .iter()
        .map(|a| a.backend.to_string())
        .collect();
    if available.is_empty() {
        return Error::UnknownModelType {
            model_type: model_type.to_string(),
            registered: registry::model_types(),
        };
    }
    Error::NoImplementation {
        model_type: model_type.to_string(),
        backend: backend.to_string(),
        available,
    }
}

impl Package {
    /// Loads the package on the chosen backend.
    pub fn load(&self, options: &LoadOptions) -> Result<LoadedModel> {
        registry::check()?;
        let backend = choose_backend(self, options.backend.as_deref())?;
        let entry = registry::find(&self.info().model_type, backend)
            .ok_or_else(|| no_implementation(&self.info().model_type, backend))?;
        if let (Some(n), Some(info)) = (options.threads, backends::get(backend)) {
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
            text: None,
            allow_non_finite: options.allow_non_finite,
        })
    }
}

/// Fails with [`Error::NonFinite`] when `data` holds NaN or infinity.
pub fn check_finite(name: &str, data: &crate::tensor::TensorData) -> Result<()> {
    match data.first_non_finite() {
        None => Ok(()),
        Some((index, value)) => Err(Error::NonFinite {
            name: name.to_string(),
            index,
            value: value.to_string(),
        }),
    }
}

/// A model ready to run, with its package's schema and text preprocessing.
pub struct LoadedModel {
    package: Package,
    io: crate::schema::IoSchema,
    backend: &'static str,
    device: Device,
    model: Box<dyn Model>,
    text: Option<TextPreprocessor>,
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
    pub fn run(&mut self, inputs: &NamedTensors) -> Result<NamedTensors> {
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

    fn preprocessor(&mut self) -> Result<&mut TextPreprocessor> {
        if self.text.is_none() {
            let pre = TextPreprocessor::from_schema(self.package.root(), &self.package.info().io)?;
            self.text = Some(pre);
        }
        Ok(self.text.as_mut().expect("set above"))
    }

    /// Tokenizes `texts` into every input the schema makes from text. With `truncate`, texts
    /// longer than the model's maximum are cut to it; without, they are an error.
    pub fn encode(&mut self, texts: &[&str], truncate: bool) -> Result<Encoded> {
        self.preprocessor()?.encode(texts, truncate)
    }

    /// Tokenizes `texts` and runs the model on them.
    pub fn run_text(&mut self, texts: &[&str], truncate: bool) -> Result<NamedTensors> {
        let encoded = self.encode(texts, truncate)?;
        self.run(&encoded.inputs)
    }

    /// Sentence embeddings with the package's pooling settings, one per text, in order.
    pub fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(self.embed_with(texts, &EmbedOptions::default())?.vectors)
    }

    /// Sentence embeddings with explicit options, and which texts were truncated.
    pub fn embed_with(&mut self, texts: &[&str], options: &EmbedOptions) -> Result<Embeddings> {
        pipeline::embed(self, texts, options)
    }
}

impl LoadedModel {
    /// The decoder and the tokenizer, for generation.
    fn generation_parts(
        &mut self,
    ) -> Result<(&mut dyn crate::model::Decoder, &mut TextPreprocessor)> {
        if self.text.is_none() {
            self.preprocessor()?;
        }
        let decoder = self.model.decoder().ok_or_else(|| {
            Error::Unsupported(format!(
                "this `{}` package is not a text-generation model",
                self.package.info().model_type
            ))
        })?;
        Ok((decoder, self.text.as_mut().expect("set above")))
    }

    fn sampling(&self, options: &GenerateOptions) -> Result<Sampling> {
        Sampling::resolve(options, self.package.info().generation.as_ref())
    }

    /// The incremental-decoding interface, for text-generation packages.
    pub fn decoder(&mut self) -> Option<&mut dyn crate::model::Decoder> {
        self.model.decoder()
    }

    /// Token ids of `text` (with the tokenizer's special tokens when `add_special_tokens`).
    pub fn tokenize(&mut self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.preprocessor()?.encode_ids(text, add_special_tokens)
    }

    /// Generates from token-id prompts, left-padded into one batch.
    pub fn generate_ids(
        &mut self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Vec<Generation>> {
        let sampling = self.sampling(options)?;
        let (decoder, tokenizer) = self.generation_parts()?;
        Generator::new(decoder, tokenizer, prompts, sampling)?.run()
    }

    /// Completes each prompt (encoded with the tokenizer's special tokens), batched.
    pub fn generate_batch(
        &mut self,
        prompts: &[&str],
        options: &GenerateOptions,
    ) -> Result<Vec<Generation>> {
        let ids = prompts
            .iter()
            .map(|p| self.tokenize(p, true))
            .collect::<Result<Vec<_>>>()?;
        self.generate_ids(&ids, options)
    }

    /// Completes `prompt`.
    pub fn generate(&mut self, prompt: &str, options: &GenerateOptions) -> Result<Generation> {
        let mut stream = self.stream(prompt, options)?;
        for piece in stream.by_ref() {
            piece?;
        }
        Ok(stream.into_generation())
    }

    /// Completes `prompt`, streaming the text piece by piece.
    pub fn stream(&mut self, prompt: &str, options: &GenerateOptions) -> Result<TextStream<'_>> {
        let ids = self.tokenize(prompt, true)?;
        self.stream_ids(ids, options)
    }

    /// Streams a completion of token ids.
    pub fn stream_ids(
        &mut self,
        prompt: Vec<u32>,
        options: &GenerateOptions,
    ) -> Result<TextStream<'_>> {
        let sampling = self.sampling(options)?;
        let (decoder, tokenizer) = self.generation_parts()?;
        Ok(TextStream::new(Generator::new(
            decoder,
            tokenizer,
            &[prompt],
            sampling,
        )?))
    }

    /// The prompt the package's chat template makes of `messages`, ready for the assistant's
    /// turn.
    pub fn chat_prompt(&mut self, messages: &[ChatMessage]) -> Result<String> {
        let info = self.package.info();
        let template_path = info
            .generation
            .as_ref()
            .and_then(|g| g.chat_template.clone())
            .ok_or_else(|| {
                Error::Unsupported(
                    "this package has no chat template (use `inferox generate` for plain completion)"
                        .into(),
                )
            })?;
        let path = self.package.file(&template_path)?;
        let template = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let generation = info.generation.clone().unwrap_or_default();
        let pre = self.preprocessor()?;
        let token = |id: Option<u32>| id.and_then(|i| pre.token_text(i)).unwrap_or_default();
        let bos = token(generation.bos_token_id);
        let eos = token(generation.eos_token_ids.first().copied());
        chat::render(&template, messages, true, &bos, &eos)
    }

    /// Streams the assistant's reply to `messages`.
    pub fn stream_chat(
        &mut self,
        messages: &[ChatMessage],
        options: &GenerateOptions,
    ) -> Result<TextStream<'_>> {
        let prompt = self.chat_prompt(messages)?;
        // The template already holds the special tokens.
        let ids = self.tokenize(&prompt, false)?;
        self.stream_ids(ids, options)
    }

    /// The assistant's reply to `messages`.
    pub fn chat(
        &mut self,
        messages: &[ChatMessage],
        options: &GenerateOptions,
    ) -> Result<Generation> {
        let mut stream = self.stream_chat(messages, options)?;
        for piece in stream.by_ref() {
            piece?;
        }
        Ok(stream.into_generation())
    }
}
