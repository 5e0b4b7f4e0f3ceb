//! What a registry entry's loader is given: the device, the caller's options, and the
//! package with the chosen backend's artifacts.

use crate::files::read_config;
use crate::manifest::{ArtifactRole, BackendArtifacts, ModelInfo};
use crate::package::Package;
use crate::source::FileRef;
use crate::tensor::DType;
use crate::{Error, Result};
use std::fmt;

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
    /// this binary has (see [`backends`](crate::backend::backends)).
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

    /// The artifacts with `role`; at least one must exist.
    pub fn artifacts(&self, role: ArtifactRole) -> Result<Vec<FileRef>> {
        let paths: Vec<FileRef> = self
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
        let file = self.artifacts(ArtifactRole::Config)?.remove(0);
        read_config(file)
    }

    /// The compute dtype (float32 unless the caller chose another).
    pub fn dtype(&self) -> DType {
        self.options.dtype.unwrap_or(DType::Float32)
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
