//! GGUF files: the header reader of the core, and the tokenizer that import rebuilds from a
//! file's metadata.

pub use inferox_core::gguf::*;

pub mod tokenizer;
