//! The torch backend: libtorch through `tch`. Device and dtype mapping, conversion between host
//! tensors and torch tensors, safetensors weights read from the package (the same files the
//! candle backend reads), and TorchScript modules run against the package's I/O schema.
//!
//! libtorch is linked at link time (DT_NEEDED); `scripts/install-libtorch.sh` fetches it and
//! build.rs gives the binaries an rpath to it (see docs/backends.md).

mod error;
pub mod script;

pub use error::{Error, Result};
pub use tch;

use inferox_core::load::Device;
use inferox_core::source::{Bytes, FileRef};
use inferox_core::tensor::{DType, HostTensor, TensorData};
use inferox_core::weights::WeightIndex;
use tch::{Kind, Tensor};

/// What the linked libtorch reports, for `inferox doctor`.
pub fn runtime() -> String {
    format!(
        "libtorch {} ({}), {} intra-op threads, {} CUDA device(s)",
        env!("INFEROX_LIBTORCH_VERSION"),
        env!("INFEROX_LIBTORCH_LIB"),
        tch::get_num_threads(),
        tch::Cuda::device_count()
    )
}

/// The libtorch device for `device`; CUDA must be visible to libtorch.
pub fn device(device: Device) -> Result<tch::Device> {
    match device {
        Device::Cpu => Ok(tch::Device::Cpu),
        Device::Cuda(i) => {
            let count = tch::Cuda::device_count();
            if (i as i64) < count {
                Ok(tch::Device::Cuda(i))
            } else {
                Err(inferox_core::Error::InvalidArgument(format!(
                    "device cuda:{i}: libtorch sees {count} CUDA device(s) \
                     (is the NVIDIA driver installed and the GPU visible?)"
                ))
                .into())
            }
        }
        Device::Metal(_) => Err(inferox_core::Error::Unsupported(
            "the torch backend runs on cpu or cuda; for Apple GPUs use the candle backend built \
             with `--features metal`"
                .into(),
        )
        .into()),
    }
}

/// The libtorch element kind of a dtype.
pub fn kind(dtype: DType) -> Kind {
    match dtype {
        DType::Float32 => Kind::Float,
        DType::Float16 => Kind::Half,
        DType::BFloat16 => Kind::BFloat16,
        DType::Float64 => Kind::Double,
        DType::Int64 => Kind::Int64,
        DType::Int32 => Kind::Int,
        DType::Int8 => Kind::Int8,
        DType::Uint8 => Kind::Uint8,
    }
}

/// Sets libtorch's intra-op thread count (process-wide), when the caller chose one.
pub fn set_threads(threads: Option<usize>) {
    if let Some(n) = threads {
        tch::set_num_threads(n.max(1) as i32);
    }
}

/// Copies a host tensor onto `device`.
pub fn to_tensor(t: &HostTensor, device: tch::Device) -> Result<Tensor> {
    let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
    let flat = match t.data() {
        TensorData::Float32(v) => Tensor::f_from_slice(v),
        TensorData::Float64(v) => Tensor::f_from_slice(v),
        TensorData::Int64(v) => Tensor::f_from_slice(v),
        TensorData::Int32(v) => Tensor::f_from_slice(v),
        TensorData::Int8(v) => Tensor::f_from_slice(v),
        TensorData::Uint8(v) => Tensor::f_from_slice(v),
        other => {
            return Err(inferox_core::Error::Unsupported(format!(
                "{} host tensors are not passed to the torch backend",
                other.dtype()
            ))
            .into());
        }
    }?;
    Ok(flat.f_reshape(&shape)?.f_to_device(device)?)
}

/// Copies a torch tensor to the host. Floating-point outputs are widened to float32, the dtype
/// the schemas promise whatever the compute dtype.
pub fn to_host(t: &Tensor) -> Result<HostTensor> {
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let t = t.f_to_device(tch::Device::Cpu)?.f_contiguous()?;
    let n = t.numel();
    fn copy<T: tch::kind::Element + Default + Clone>(t: &Tensor, n: usize) -> Result<Vec<T>> {
        let mut v = vec![T::default(); n];
        t.f_copy_data(&mut v, n)?;
        Ok(v)
    }
    let data = match t.kind() {
        Kind::Int64 => TensorData::Int64(copy(&t, n)?),
        Kind::Int => TensorData::Int32(copy(&t, n)?),
        Kind::Int8 => TensorData::Int8(copy(&t, n)?),
        Kind::Uint8 => TensorData::Uint8(copy(&t, n)?),
        Kind::Bool => TensorData::Uint8(copy(&t.f_to_kind(Kind::Uint8)?, n)?),
        Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double => {
            TensorData::Float32(copy(&t.f_to_kind(Kind::Float)?, n)?)
        }
        other => {
            return Err(inferox_core::Error::Backend {
                backend: NAME,
                message: format!("the model returned a {other:?} tensor, which has no host dtype"),
            }
            .into());
        }
    };
    Ok(HostTensor::new(shape, data)?)
}

/// Safetensors weights, memory-mapped and copied tensor by tensor into libtorch.
pub struct Weights {
    index: WeightIndex,
    maps: Vec<Bytes>,
    kind: Kind,
    device: tch::Device,
}

impl Weights {
    /// Maps and indexes the weight files; floating-point tensors load as `dtype` on `device`.
    pub fn open(files: &[FileRef], dtype: DType, device: tch::Device) -> Result<Weights> {
        if !dtype.is_float() {
            return Err(inferox_core::Error::InvalidArgument(format!(
                "compute dtype must be floating point, not {dtype}"
            ))
            .into());
        }
        let index = WeightIndex::read(files)?;
        let maps = inferox_core::weights::map_files(files)?;
        Ok(Weights {
            index,
            maps,
            kind: kind(dtype),
            device,
        })
    }

    /// Whether tensor `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains(name)
    }

    /// The shape of tensor `name`, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.index.tensors.get(name).map(|t| t.shape.as_slice())
    }

    /// Floating-point tensor `name`, checked to have `shape`, in the compute dtype.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let info = self.index.checked(name, Some(shape), true)?;
        let stored = match DType::from_safetensors(&info.dtype) {
            Some(d) => kind(d),
            None => {
                return Err(inferox_core::Error::TensorDtype {
                    tensor: name.to_string(),
                    path: self.index.files[info.file].clone(),
                    expected: "F32, F16, BF16 or F64".into(),
                    found: info.dtype.clone(),
                }
                .into());
            }
        };
        let bytes = &self.maps[info.file][info.bytes.start as usize..info.bytes.end as usize];
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        // `from_data_size` copies; the copy then moves to the compute dtype and device.
        Ok(Tensor::f_from_data_size(bytes, &dims, stored)?
            .f_to_device(self.device)?
            .f_to_kind(self.kind)?)
    }

    /// `[out, in]` weight and `[out]` bias of a linear layer under `prefix`.
    pub fn linear(&self, prefix: &str, input: usize, output: usize) -> Result<Linear> {
        Ok(Linear {
            weight: self.get(&format!("{prefix}.weight"), &[output, input])?,
            bias: self.get(&format!("{prefix}.bias"), &[output])?,
        })
    }

    /// Weight and bias of a layer norm under `prefix`.
    pub fn layer_norm(&self, prefix: &str, size: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.get(&format!("{prefix}.weight"), &[size])?,
            bias: self.get(&format!("{prefix}.bias"), &[size])?,
            size: size as i64,
            eps,
        })
    }
}

/// A linear layer (`x @ weightᵀ + bias`).
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Tensor,
}

impl Linear {
    /// Applies the layer to the last dimension of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_linear(&self.weight, Some(&self.bias))?)
    }
}

/// Layer normalisation over the last dimension.
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    size: i64,
    eps: f64,
}

impl LayerNorm {
    /// Normalises the last dimension of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_layer_norm(
            [self.size],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            false,
        )?)
    }
}

/// The backend's name in packages and on the command line.
pub const NAME: &str = "torch";

inferox_core::register!(inferox_core::backend::Backend {
    name: NAME,
    feature: "torch",
    preference: 10,
    description: "libtorch through tch; CPU, CUDA when libtorch sees a GPU",
    threads: inferox_core::backend::per_model_threads,
    runtime: Some(runtime),
});
