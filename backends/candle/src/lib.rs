//! The candle backend: device and dtype mapping, host-tensor conversion, and safetensors weights
//! that are memory-mapped, checked tensor by tensor with precise errors, and released from the
//! page tables as soon as each tensor is copied (peak memory stays near one copy of the weights).

/// `fn $name(args)` running `$body(args)` compiled for AVX-512, for AVX2 + FMA, or for the
/// baseline, whichever the CPU has (checked at run time); `$body` is `#[inline(always)]`.
macro_rules! multiversion {
    ($vis:vis $name:ident($($arg:ident: $ty:ty),*) => $body:ident) => {
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn v4($($arg: $ty),*) { $body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn v3($($arg: $ty),*) { $body($($arg),*) }
                if is_x86_feature_detected!("avx512f") {
                    // SAFETY: the features were detected.
                    return unsafe { v4($($arg),*) };
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the features were detected.
                    return unsafe { v3($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

pub mod decoder;
pub mod dense;
mod error;
pub mod fused;
pub mod gguf;
pub mod kquant;
pub mod packed;
pub mod quant;
pub mod recurrent;

pub use error::{Error, Result};

pub use candle_core;
pub use candle_nn;

/// The largest absolute difference between two f32 tensors of one shape (for the tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("two f32 tensors of one shape")
}

use candle_core as candle;
use inferox_core::load::Device;
use inferox_core::source::{Bytes, FileRef};
use inferox_core::tensor::{DType, HostTensor, TensorData};
use inferox_core::weights::WeightIndex;
use std::sync::{Arc, Mutex};

/// An output buffer that the threads of candle's worker pool fill at disjoint offsets.
pub(crate) struct DisjointOut<T = f32>(*mut T);

// SAFETY: the buffer is only written through `slice` and `write`, whose callers promise disjoint
// ranges while the owning allocation lives.
unsafe impl<T: Send> Sync for DisjointOut<T> {}

impl<T> DisjointOut<T> {
    /// Wraps `buffer` for one parallel call.
    pub(crate) fn new(buffer: &mut [T]) -> DisjointOut<T> {
        DisjointOut(buffer.as_mut_ptr())
    }

    /// Wraps the spare capacity of `buffer`, at least `len` elements, for one parallel call
    /// that writes all of them (the caller then sets the length).
    pub(crate) fn spare(buffer: &mut Vec<T>, len: usize) -> DisjointOut<T> {
        assert!(
            buffer.capacity() - buffer.len() >= len,
            "room for {len} elements"
        );
        DisjointOut(buffer.spare_capacity_mut().as_mut_ptr().cast())
    }

    /// A raw pointer to element `index`, for a writer that takes pointers (a GEMM).
    ///
    /// # Safety
    /// As for [`slice`](Self::slice): what is written through it lies inside the buffer and
    /// belongs to the caller alone while the buffer lives.
    pub(crate) unsafe fn ptr_mut(&self, index: usize) -> *mut T {
        // SAFETY: in bounds, as the caller promises.
        unsafe { self.0.add(index) }
    }

    /// Writes `v` at `index`.
    ///
    /// # Safety
    /// `index` lies inside the buffer, no other thread reads or writes it during the call, and
    /// the buffer outlives it.
    pub(crate) unsafe fn write(&self, index: usize, v: T) {
        // SAFETY: as the caller promises; `write` neither reads nor drops what was there, which
        // may be uninitialised.
        unsafe { self.0.add(index).write(v) }
    }

    /// The part `range` of the buffer.
    ///
    /// # Safety
    /// `range` lies inside the buffer, no other live slice overlaps it, and the buffer outlives
    /// the returned slice.
    // The exclusive borrow comes from the caller's promise, not from `&self`: that is the point.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, range: std::ops::Range<usize>) -> &mut [T] {
        // SAFETY: as the caller promises.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(range.start), range.len()) }
    }
}

/// Runs `task(state, i)` for every `i < n` on candle's worker pool, each thread taking the next
/// task when it finishes one, with a `state` of its own made by `init` when it takes its first
/// (a scratch buffer). For coarse tasks (a GEMM's block of rows and panels, a head's
/// attention): the pool's own `execute_chunked` hands out about eight chunks per thread, so up
/// to a chunk of tasks (3 of the 43 of a 4096-row product) can be left to one thread at the end
/// while the others wait. Nested in a pool task it runs every task on the calling thread.
pub(crate) fn for_each_task<S>(
    n: usize,
    init: impl Fn() -> S + Sync,
    task: impl Fn(&mut S, usize) + Sync,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pool = candle::utils::barrier_pool();
    let next = AtomicUsize::new(0);
    // One item per thread (the pool gives one at a time when there are this few); each takes
    // tasks from the shared counter until none are left.
    pool.execute_chunked((pool.n_workers() + 1).min(n), |_| {
        let mut state = None;
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            task(state.get_or_insert_with(&init), i);
        }
    });
}

/// Checks a thread count against candle's worker pools, which are sized once per process
/// from `CANDLE_NUM_THREADS` (or `RAYON_NUM_THREADS`) when first used.
pub fn threads(n: usize) -> inferox_core::Result<()> {
    let pool = candle::utils::barrier_pool().n_workers() + 1;
    if n != pool {
        return Err(inferox_core::Error::InvalidArgument(format!(
            "candle's worker pool runs {pool} threads in this process, not {n}: it is sized once, \
             from CANDLE_NUM_THREADS or RAYON_NUM_THREADS, before the first model runs (the \
             inferox command line's --threads sets both)"
        )));
    }
    Ok(())
}

/// The candle device for `device`, with a clear error when its feature is not compiled in.
pub fn device(device: Device) -> Result<candle::Device> {
    match device {
        Device::Cpu => Ok(candle::Device::Cpu),
        Device::Cuda(i) if cfg!(feature = "cuda") => Ok(candle::Device::new_cuda(i)?),
        Device::Metal(i) if cfg!(feature = "metal") => Ok(candle::Device::new_metal(i)?),
        Device::Cuda(_) => Err(inferox_core::Error::BackendNotCompiled {
            backend: "candle with CUDA".into(),
            feature: "cuda".into(),
        }
        .into()),
        Device::Metal(_) => Err(inferox_core::Error::BackendNotCompiled {
            backend: "candle with Metal".into(),
            feature: "metal".into(),
        }
        .into()),
    }
}

/// The candle dtype for a compute dtype.
pub fn dtype(dtype: DType) -> Result<candle::DType> {
    Ok(match dtype {
        DType::Float32 => candle::DType::F32,
        DType::Float16 => candle::DType::F16,
        DType::BFloat16 => candle::DType::BF16,
        DType::Float64 => candle::DType::F64,
        DType::Int64 => candle::DType::I64,
        DType::Int32 => candle::DType::I32,
        DType::Uint8 => candle::DType::U8,
        DType::Int8 => {
            return Err(
                inferox_core::Error::Unsupported("candle has no int8 tensors".into()).into(),
            );
        }
    })
}

/// Copies a candle tensor to the host. Floating-point outputs are widened to float32, the dtype
/// the schemas promise whatever the compute dtype.
pub fn to_host(t: &candle::Tensor) -> Result<HostTensor> {
    let shape = t.dims().to_vec();
    let flat = t.flatten_all()?;
    let data = match t.dtype() {
        candle::DType::I64 => TensorData::Int64(flat.to_vec1()?),
        candle::DType::I32 => TensorData::Int32(flat.to_vec1()?),
        candle::DType::U8 => TensorData::Uint8(flat.to_vec1()?),
        candle::DType::U32 => {
            let v: Vec<u32> = flat.to_vec1()?;
            TensorData::Int64(v.into_iter().map(i64::from).collect())
        }
        _ => TensorData::Float32(flat.to_dtype(candle::DType::F32)?.to_vec1()?),
    };
    Ok(HostTensor::new(shape, data)?)
}

/// Safetensors weights for a candle `VarBuilder`.
#[derive(Clone)]
pub struct Weights(Arc<Inner>);

struct Inner {
    index: WeightIndex,
    maps: Vec<Bytes>,
    /// The first structured failure seen while the model was being built.
    failure: Mutex<Option<inferox_core::Error>>,
}

impl Weights {
    /// Maps and indexes the weight files (headers are checked against file sizes).
    pub fn open(files: &[FileRef]) -> Result<Weights> {
        let index = WeightIndex::read(files)?;
        let maps = inferox_core::weights::map_files(files)?;
        Ok(Weights(Arc::new(Inner {
            index,
            maps,
            failure: Mutex::new(None),
        })))
    }

    /// Whether tensor `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.0.index.contains(name)
    }

    /// The headers of the weight files.
    pub fn index(&self) -> &WeightIndex {
        &self.0.index
    }

    /// The shape of tensor `name`, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.0.index.tensors.get(name).map(|t| t.shape.as_slice())
    }

    /// A `VarBuilder` over these weights that loads tensors as `dtype` onto `device`.
    pub fn var_builder(
        &self,
        dtype: candle::DType,
        device: &candle::Device,
    ) -> candle_nn::VarBuilder<'static> {
        candle_nn::VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// Turns an error from building a model into the most precise error known: a recorded
    /// missing tensor, dtype or shape mismatch, or the candle error itself.
    pub fn explain(&self, e: candle::Error) -> Error {
        match self.0.failure.lock().ok().and_then(|mut f| f.take()) {
            Some(recorded) => Error::Inferox(recorded),
            None => Error::Candle(e),
        }
    }

    fn fail<T>(&self, error: inferox_core::Error) -> candle::Result<T> {
        let message = error.to_string();
        if let Ok(mut slot) = self.0.failure.lock()
            && slot.is_none()
        {
            *slot = Some(error);
        }
        Err(candle::Error::Msg(message))
    }

    fn load(
        &self,
        name: &str,
        want: Option<&[usize]>,
        dtype: candle::DType,
        dev: &candle::Device,
    ) -> candle::Result<candle::Tensor> {
        let inner = &self.0;
        let info = match inner.index.checked(name, want, dtype.is_float()) {
            Ok(info) => info,
            Err(e) => return self.fail(e),
        };
        let stored = match info.dtype.as_str() {
            "F32" => candle::DType::F32,
            "F16" => candle::DType::F16,
            "BF16" => candle::DType::BF16,
            "F64" => candle::DType::F64,
            "I64" => candle::DType::I64,
            "I32" => candle::DType::I32,
            "U32" => candle::DType::U32,
            "U8" => candle::DType::U8,
            other => {
                return self.fail(inferox_core::Error::TensorDtype {
                    tensor: name.to_string(),
                    path: inner.index.files[info.file].clone(),
                    expected: format!("{dtype:?}"),
                    found: other.to_string(),
                });
            }
        };
        let map = &inner.maps[info.file];
        let (start, end) = (info.bytes.start as usize, info.bytes.end as usize);
        let tensor = candle::Tensor::from_raw_buffer(&map[start..end], stored, &info.shape, dev)?
            .to_dtype(dtype)?;
        map.release(start..end);
        Ok(tensor)
    }
}

impl candle_nn::var_builder::SimpleBackend for Weights {
    fn get(
        &self,
        s: candle::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: candle::DType,
        dev: &candle::Device,
    ) -> candle::Result<candle::Tensor> {
        self.load(name, Some(s.dims()), dtype, dev)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: candle::DType,
        dev: &candle::Device,
    ) -> candle::Result<candle::Tensor> {
        self.load(name, None, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.contains(name)
    }
}

/// The backend's name in packages and on the command line.
pub const NAME: &str = "candle";

inferox_core::register!(inferox_core::backend::Backend {
    name: NAME,
    feature: "candle",
    preference: 0,
    description: "pure-Rust tensors (candle); CPU, CUDA with `cuda`, Metal with `metal`",
    threads,
    runtime: None,
});
