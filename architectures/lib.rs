//! Architectures: one folder per family, each owning its config, weight mapping, I/O-schema
//! derivation, per-backend models and registration. Nothing outside this folder names a model
//! type.

/// Registers an architecture's implementations for the backends this build links: per
/// backend, the model types it serves, each with the execution formats it loads. A backend's
/// loader is the `load` of the invoking module's submodule of that backend's name.
///
/// ```ignore
/// implementations! {
///     candle: "llama" [Safetensors, Gguf], "mistral" [Safetensors];
///     torch: "bert" [Safetensors, Torchscript];
/// }
/// ```
macro_rules! implementations {
    ($($backend:ident: $($name:literal [$($format:ident),+]),+;)+) => {
        $(implementations!(@on $backend $($name [$($format),+]),+);)+
    };
    (@on candle $($rest:tt)+) => {
        #[cfg(feature = "candle")]
        implementations!(@register inferox_candle, candle, $($rest)+);
    };
    (@on torch $($rest:tt)+) => {
        #[cfg(feature = "torch")]
        implementations!(@register inferox_torch, torch, $($rest)+);
    };
    (@register $crate_name:ident, $module:ident, $($name:literal [$($format:ident),+]),+) => {
        inferox_core::register!($(inferox_core::registry::Implementation::new(
            $name,
            $crate_name::NAME,
            &[$(inferox_core::ExecutionFormat::$format),+],
            self::$module::load,
        )),+);
    };
}

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
