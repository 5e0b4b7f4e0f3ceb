//! Backends: one folder each, compiled in by its cargo feature. This table lists every backend
//! inferox knows, in the order the loader prefers them when a package lists several and the
//! caller names none.

#[cfg(feature = "candle")]
pub mod candle;

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
}

/// Every known backend, most preferred first.
pub const BACKENDS: &[BackendInfo] = &[
    BackendInfo {
        name: "candle",
        feature: "candle",
        compiled: cfg!(feature = "candle"),
        description: "pure-Rust tensors (candle); CPU, CUDA with `cuda`, Metal with `metal`",
    },
    BackendInfo {
        name: "torch",
        feature: "torch",
        compiled: cfg!(feature = "torch"),
        description: "libtorch through tch",
    },
    BackendInfo {
        name: "tflite",
        feature: "tflite",
        compiled: cfg!(feature = "tflite"),
        description: "TensorFlow Lite through tflitec",
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
