//! Architectures: one folder per family, each owning its config, weight mapping, I/O-schema
//! derivation, per-backend models and registration. Nothing outside this folder names a model
//! type.

pub mod bert;
pub mod clip;
pub mod common;
pub mod gpt2;
pub mod graph;
pub mod llama;
pub mod recurrent;
pub mod resnet;
pub mod t5;
pub mod vit;
