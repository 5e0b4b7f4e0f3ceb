//! Inferox turns Hugging Face models into self-describing *packages* and runs them on whichever
//! backend the binary was built with.
//!
//! * A package is one directory: `model_info.json` (model type, family, tasks, per-backend
//!   artifacts, the full I/O schema with preprocessing hints), `metadata.json` (provenance and
//!   every file with size and sha256), `backends/<backend>/...` and shared tokenizer files.
//! * Architectures register themselves at compile time — a model type, then one implementation
//!   per backend — with [`register!`]; cargo features decide which backends are linked. There is
//!   no dlopen and no plugin library.
//! * The manifest is the source of truth for I/O: text becomes every input the schema lists, and
//!   every call is checked against the schema.
//!
//! This crate is the facade over the workspace (docs/architecture.md has the map): the core
//! ([`inferox_core`], re-exported here), one crate per backend ([`backends`]), the architectures
//! ([`architectures`]), and here loading, import, preprocessing, the task pipelines, generation,
//! chat, the hub (feature `hub`) and the command line (feature `cli`).
//!
//! ```no_run
//! # fn main() -> inferox::Result<()> {
//! use inferox::{pipeline::cosine, prelude::*};
//!
//! let src = std::path::Path::new("all-MiniLM-L6-v2"); // a Hugging Face model directory
//! let package = import(src, "minilm.pkg".as_ref(), &ImportOptions::default(), &mut |_| {})?;
//! let model = package.load(&LoadOptions::default())?;
//! let e = model.embed(&["A man is eating food.", "A man is eating a piece of bread."])?;
//! println!("cosine similarity: {:.4}", cosine(&e[0], &e[1]));
//! # Ok(())
//! # }
//! ```

pub mod chat;
pub mod generate;
pub mod gguf;
#[cfg(feature = "hub")]
pub mod hub;
#[cfg(feature = "image")]
pub mod image;
pub mod import;
pub mod loader;
pub mod npy;
pub mod pipeline;
pub mod preprocess;
pub mod repo;
#[cfg(feature = "server")]
pub mod serve;
pub mod store;
pub mod supported;

pub use inferox_core::{
    Error, Result, backend, include_package, load, manifest, model, package, panic_is_guarded,
    register, registry, schema, source, tensor, vision, weights,
};
use inferox_core::{files, guard};

/// The architectures linked into this build (one folder per family).
pub use inferox_architectures as architectures;

/// The backend crates this build links, one per cargo feature.
pub mod backends {
    #[cfg(feature = "candle")]
    pub use inferox_candle as candle;
    #[cfg(feature = "tflite")]
    pub use inferox_tflite as tflite;
    #[cfg(feature = "torch")]
    pub use inferox_torch as torch;

    /// The backends this crate can be built with, as (backend name, cargo feature): what an
    /// error says to rebuild with when a package needs one this build lacks.
    pub const FEATURES: &[(&str, &str)] = &[
        ("candle", "candle"),
        ("torch", "torch"),
        ("tflite", "tflite"),
    ];

    /// For each artifact format, the backend to build with to run it, as (format, backend).
    pub const FOR_FORMAT: &[(crate::ExecutionFormat, &str)] = &[
        (crate::ExecutionFormat::Safetensors, "candle"),
        (crate::ExecutionFormat::Gguf, "candle"),
        (crate::ExecutionFormat::Torchscript, "torch"),
        (crate::ExecutionFormat::Tflite, "tflite"),
    ];

    /// The cargo feature that links the backend `name`, if this crate has one.
    pub fn feature(name: &str) -> Option<&'static str> {
        FEATURES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// The backend to build with to run `format`, and its cargo feature.
    pub fn for_format(format: crate::ExecutionFormat) -> Option<(&'static str, &'static str)> {
        let (_, name) = FOR_FORMAT.iter().find(|(f, _)| *f == format)?;
        Some((name, feature(name)?))
    }
}

pub use import::{ImportEvent, ImportOptions, import};
pub use inferox_core::{
    DType, Device, ExecutionFormat, Family, HostTensor, LoadOptions, LoadRequest, Metadata, Model,
    ModelInfo, NamedTensors, Package, TensorData,
};
pub use loader::{LoadPackage, LoadedModel};

/// What most programs need, in one `use inferox::prelude::*;`.
pub mod prelude {
    pub use crate::{
        DType, Device, EmbedOptions, Error, HostTensor, ImportOptions, LoadOptions, LoadPackage,
        LoadedModel, NamedTensors, Package, Result, import,
    };
}
pub use pipeline::EmbedOptions;

/// Re-exported for [`register!`].
#[doc(hidden)]
pub use inferox_core::inventory;

/// Facts about this build, recorded by build.rs.
pub mod build_info {
    /// Crate version.
    pub const VERSION: &str = env!("CARGO_PKG_VERSION");
    /// Cargo features the library was compiled with, comma-separated.
    pub const FEATURES: &str = env!("INFEROX_FEATURES");
    /// Git commit of the source, or `unknown`.
    pub const GIT_COMMIT: &str = env!("INFEROX_GIT_COMMIT");
    /// `rustc --version` of the compiler.
    pub const RUSTC: &str = env!("INFEROX_RUSTC");
    /// Target triple.
    pub const TARGET: &str = env!("INFEROX_TARGET");
    /// Cargo profile (`release`, `debug`).
    pub const PROFILE: &str = env!("INFEROX_PROFILE");
}
