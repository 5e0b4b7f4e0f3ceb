//! Backends: one folder each, compiled in by its cargo feature. This table lists every backend
//! inferox knows, in the order the loader prefers them when a package lists several and the
//! caller names none.

#[cfg(feature = "candle")]
pub mod candle;
#[cfg(feature = "tflite")]
pub mod tflite;
#[cfg(feature = "torch")]
pub mod torch;

/// A backend inferox knows of, compiled in or not.
#[derive(Clone, Copy, Debug)]
pub struct BackendInfo {
    /// Name used in packages and on the command line.
    pub name: &'static str,
    /// Cargo feature that compiles it in.
    pub feature: &'static str,
    /// Whether this binary has it.
    pub compiled: bool,
    /// What it runs on.
    pub description: &'static str,
    /// Applies [`LoadOptions::threads`](crate::LoadOptions::threads), or says why it cannot.
    pub threads: fn(usize) -> crate::Result<()>,
    /// What the linked runtime reports about itself (version, devices), when compiled in.
    pub runtime: Option<fn() -> String>,
}

#[cfg(feature = "torch")]
const TORCH_RUNTIME: Option<fn() -> String> = Some(torch::runtime);
#[cfg(not(feature = "torch"))]
const TORCH_RUNTIME: Option<fn() -> String> = None;
#[cfg(feature = "candle")]
const CANDLE_THREADS: fn(usize) -> crate::Result<()> = candle::threads;
#[cfg(not(feature = "candle"))]
const CANDLE_THREADS: fn(usize) -> crate::Result<()> = |_| Ok(());

/// For backends that take their thread count per model, at load.
fn per_model_threads(_: usize) -> crate::Result<()> {
    Ok(())
}

#[cfg(feature = "tflite")]
const TFLITE_RUNTIME: Option<fn() -> String> = Some(tflite::runtime);
#[cfg(not(feature = "tflite"))]
const TFLITE_RUNTIME: Option<fn() -> String> = None;

/// Every known backend, most preferred first.
pub const BACKENDS: &[BackendInfo] = &[
    BackendInfo {
        name: "candle",
        feature: "candle",
        compiled: cfg!(feature = "candle"),
        description: "pure-Rust tensors (candle); CPU, CUDA with `cuda`, Metal with `metal`",
        threads: CANDLE_THREADS,
        runtime: None,
    },
    BackendInfo {
        name: "torch",
        feature: "torch",
        compiled: cfg!(feature = "torch"),
        description: "libtorch through tch; CPU, CUDA when libtorch sees a GPU",
        threads: per_model_threads,
        runtime: TORCH_RUNTIME,
    },
    BackendInfo {
        name: "tflite",
        feature: "tflite",
        compiled: cfg!(feature = "tflite"),
        description: "TensorFlow Lite through tflitec; CPU",
        threads: per_model_threads,
        runtime: TFLITE_RUNTIME,
    },
];

/// The backend called `name`.
pub fn get(name: &str) -> Option<&'static BackendInfo> {
    BACKENDS.iter().find(|b| b.name == name)
}

/// Position of `name` in the preference order (unknown names last).
pub fn preference(name: &str) -> usize {
    BACKENDS
        .iter()
        .position(|b| b.name == name)
        .unwrap_or(BACKENDS.len())
}

/// Names of the backends compiled into this binary.
pub fn compiled() -> Vec<&'static str> {
    BACKENDS
        .iter()
        .filter(|b| b.compiled)
        .map(|b| b.name)
        .collect()
}
