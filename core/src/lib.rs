//! The core of inferox: what every other crate shares and nothing more.
//!
//! * host tensors and named I/O ([`tensor`]), the I/O schema ([`schema`]);
//! * the package format: the manifests ([`manifest`]), opening and verifying a package and
//!   writing one atomically ([`package`]), the weight formats it holds ([`weights`], [`gguf`]);
//! * the registry tables — model types, implementations ([`registry`]) and backends
//!   ([`backend`]) — and what a loader is given ([`load`]) and returns ([`model`]);
//! * the error type.
//!
//! It depends on no backend and no architecture: the compiler holds "the core names no model
//! type and no backend". The `inferox` crate is the facade users depend on.

mod error;
mod paths;

pub mod backend;
pub mod files;
pub mod gguf;
pub mod guard;
pub mod load;
pub mod manifest;
pub mod model;
pub mod package;
pub mod registry;
pub mod schema;
pub mod source;
pub mod tensor;
pub mod vision;
pub mod weights;

pub use error::{Error, Result};
pub use guard::panic_is_guarded;
pub use load::{Device, LoadOptions, LoadRequest};
pub use manifest::{ExecutionFormat, Family, Metadata, ModelInfo};
pub use model::Model;
pub use package::Package;
pub use tensor::{DType, HostTensor, NamedTensors, TensorData};

/// Re-exported for [`register!`].
#[doc(hidden)]
pub use inventory;
