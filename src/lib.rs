//! Inferox turns Hugging Face models into self-describing *packages* and runs them on whichever
//! backend the binary was built with.
//!
//! * A package is one directory: `model_info.json` (model type, family, tasks, per-backend
//!   artifacts, the full I/O schema with preprocessing hints), `metadata.json` (provenance and
//!   every file with size and sha256), `backends/<backend>/...` and shared tokenizer files.
//! * Architectures register themselves at compile time under (model_type, backend) with
//!   [`register_architecture!`]; cargo features decide which backends are linked. There is no
//!   dlopen and no plugin library.
//! * The manifest is the source of truth for I/O: text becomes every input the schema lists, and
//!   every call is checked against the schema.
//!
//! ```no_run
//! # fn main() -> inferox::Result<()> {
//! use inferox::{ImportOptions, LoadOptions, import, pipeline::cosine};
//!
//! let src = std::path::Path::new("all-MiniLM-L6-v2"); // a Hugging Face model directory
//! let package = import(src, "minilm.pkg".as_ref(), &ImportOptions::default(), &mut |_| {})?;
//! let mut model = package.load(&LoadOptions::default())?;
//! let e = model.embed(&["A man is eating food.", "A man is eating a piece of bread."])?;
//! println!("cosine similarity: {:.4}", cosine(&e[0], &e[1]));
//! # Ok(())
//! # }
//! ```

mod error;
mod files;
mod guard;

pub mod chat;
pub mod generate;
pub mod gguf;
pub mod hub;
pub mod import;
pub mod loader;
pub mod manifest;
pub mod model;
pub mod npy;
pub mod package;
pub mod pipeline;
pub mod preprocess;
pub mod registry;
pub mod schema;
pub mod store;
pub mod tensor;
pub mod weights;

#[path = "../backends/mod.rs"]
pub mod backends;

#[path = "../architectures/mod.rs"]
pub mod architectures;

pub use error::{Error, Result};
pub use guard::panic_is_guarded;
pub use import::{ImportEvent, ImportOptions, import};
pub use loader::{Device, LoadOptions, LoadRequest, LoadedModel};
pub use manifest::{ExecutionFormat, Family, Metadata, ModelInfo};
pub use model::Model;
pub use package::Package;
pub use pipeline::EmbedOptions;
pub use tensor::{DType, HostTensor, NamedTensors, TensorData};

/// Re-exported for [`register_architecture!`].
#[doc(hidden)]
pub use inventory;

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
