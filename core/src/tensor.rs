//! Backend-agnostic tensors on the host: what goes into a model and comes out of it.

use crate::{Error, Result};
use half::{bf16, f16};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Element type of a tensor, as written in the manifest (`"float32"`, `"int64"`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Float32,
    Float16,
    BFloat16,
    Float64,
    Int64,
    Int32,
    Int8,
    Uint8,
}

impl DType {
    /// All dtypes, in manifest order.
    pub const ALL: [DType; 8] = [
        DType::Float32,
        DType::Float16,
        DType::BFloat16,
        DType::Float64,
        DType::Int64,
        DType::Int32,
        DType::Int8,
        DType::Uint8,
    ];

    /// The manifest name (`float32`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DType::Float32 => "float32",
            DType::Float16 => "float16",
            DType::BFloat16 => "bfloat16",
            DType::Float64 => "float64",
            DType::Int64 => "int64",
            DType::Int32 => "int32",
            DType::Int8 => "int8",
            DType::Uint8 => "uint8",
        }
    }

    /// The KServe / Open Inference Protocol v2 datatype name (`FP32`, `INT64`, ...).
    pub fn kserve_name(self) -> &'static str {
        match self {
            DType::Float32 => "FP32",
            DType::Float16 => "FP16",
            DType::BFloat16 => "BF16",
            DType::Float64 => "FP64",
            DType::Int64 => "INT64",
            DType::Int32 => "INT32",
            DType::Int8 => "INT8",
            DType::Uint8 => "UINT8",
        }
    }

    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::Float64 | DType::Int64 => 8,
            DType::Float32 | DType::Int32 => 4,
            DType::Float16 | DType::BFloat16 => 2,
            DType::Int8 | DType::Uint8 => 1,
        }
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::Float32 | DType::Float16 | DType::BFloat16 | DType::Float64
        )
    }

    /// Maps a safetensors dtype name (`F32`, `BF16`, `I64`, ...) to ours.
    pub fn from_safetensors(name: &str) -> Option<DType> {
        Some(match name {
            "F32" => DType::Float32,
            "F16" => DType::Float16,
            "BF16" => DType::BFloat16,
            "F64" => DType::Float64,
            "I64" => DType::Int64,
            "I32" => DType::Int32,
            "I8" => DType::Int8,
            "U8" => DType::Uint8,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let alias = match s {
            "f32" => Some(DType::Float32),
            "f16" => Some(DType::Float16),
            "bf16" => Some(DType::BFloat16),
            "f64" => Some(DType::Float64),
            "i64" => Some(DType::Int64),
            "i32" => Some(DType::Int32),
            "i8" => Some(DType::Int8),
            "u8" => Some(DType::Uint8),
            _ => None,
        };
        alias
            .or_else(|| DType::ALL.into_iter().find(|d| d.as_str() == s))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown dtype `{s}` (use one of: f32, f16, bf16, f64, i64, i32, i8, u8)"
                ))
            })
    }
}

/// The elements of a [`HostTensor`], row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    Float32(Vec<f32>),
    Float16(Vec<f16>),
    BFloat16(Vec<bf16>),
    Float64(Vec<f64>),
    Int64(Vec<i64>),
    Int32(Vec<i32>),
    Int8(Vec<i8>),
    Uint8(Vec<u8>),
}

macro_rules! each_variant {
    ($value:expr, $v:ident => $body:expr) => {
        match $value {
            TensorData::Float32($v) => $body,
            TensorData::Float16($v) => $body,
            TensorData::BFloat16($v) => $body,
            TensorData::Float64($v) => $body,
            TensorData::Int64($v) => $body,
            TensorData::Int32($v) => $body,
            TensorData::Int8($v) => $body,
            TensorData::Uint8($v) => $body,
        }
    };
}

impl TensorData {
    /// The first element that is NaN or infinite, with its index (floating-point data only).
    pub fn first_non_finite(&self) -> Option<(usize, f64)> {
        // Blocks checked without a branch per element, so that the check vectorises (an
        // element-wise search was 2% of an LSTM's run); the block that fails is then searched.
        const BLOCK: usize = 1024;
        fn find<T: Copy + Into<f64>>(v: &[T]) -> Option<(usize, f64)> {
            v.chunks(BLOCK).enumerate().find_map(|(b, c)| {
                if c.iter().fold(true, |ok, &x| ok & x.into().is_finite()) {
                    return None;
                }
                let i = c.iter().position(|&x| !x.into().is_finite())?;
                Some((b * BLOCK + i, c[i].into()))
            })
        }
        match self {
            TensorData::Float32(v) => find(v),
            TensorData::Float16(v) => find(v),
            TensorData::BFloat16(v) => find(v),
            TensorData::Float64(v) => find(v),
            _ => None,
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::Float32(_) => DType::Float32,
            TensorData::Float16(_) => DType::Float16,
            TensorData::BFloat16(_) => DType::BFloat16,
            TensorData::Float64(_) => DType::Float64,
            TensorData::Int64(_) => DType::Int64,
            TensorData::Int32(_) => DType::Int32,
            TensorData::Int8(_) => DType::Int8,
            TensorData::Uint8(_) => DType::Uint8,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each_variant!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every element converted to f64 (for display and JSON output).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            TensorData::Float32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Float16(v) => v.iter().map(|x| x.to_f64()).collect(),
            TensorData::BFloat16(v) => v.iter().map(|x| x.to_f64()).collect(),
            TensorData::Float64(v) => v.clone(),
            TensorData::Int64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Int32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Int8(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Uint8(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
}

/// A dense tensor in host memory: a shape and row-major data.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl HostTensor {
    /// Builds a tensor, checking that the data has as many elements as the shape.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Self> {
        // Checked: a shape read from a file can name more elements than a usize counts.
        let expected = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if expected != Some(data.len()) {
            let needs = expected.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string());
            return Err(Error::InvalidArgument(format!(
                "tensor of shape {shape:?} needs {needs} elements, got {}",
                data.len()
            )));
        }
        Ok(HostTensor { shape, data })
    }

    /// A float32 tensor.
    pub fn from_f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        Self::new(shape, TensorData::Float32(data))
    }

    /// An int64 tensor.
    pub fn from_i64(shape: Vec<usize>, data: Vec<i64>) -> Result<Self> {
        Self::new(shape, TensorData::Int64(data))
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The elements.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// Takes the elements out.
    pub fn into_data(self) -> TensorData {
        self.data
    }

    /// The elements as `f32`, if that is the dtype.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::Float32(v) => Some(v),
            _ => None,
        }
    }

    /// The elements as `i64`, if that is the dtype.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::Int64(v) => Some(v),
            _ => None,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Tensors by name, in insertion order (the schema's order for model outputs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamedTensors(Vec<(String, HostTensor)>);

impl NamedTensors {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the tensor `name`.
    pub fn insert(&mut self, name: impl Into<String>, tensor: HostTensor) {
        let name = name.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = tensor,
            None => self.0.push((name, tensor)),
        }
    }

    /// The tensor `name`, if present.
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Removes and returns the tensor `name`.
    pub fn remove(&mut self, name: &str) -> Option<HostTensor> {
        let index = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.remove(index).1)
    }

    /// The names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }

    /// (name, tensor) pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &HostTensor)> {
        self.0.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl IntoIterator for NamedTensors {
    type Item = (String, HostTensor);
    type IntoIter = std::vec::IntoIter<(String, HostTensor)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<S: Into<String>> FromIterator<(S, HostTensor)> for NamedTensors {
    fn from_iter<I: IntoIterator<Item = (S, HostTensor)>>(iter: I) -> Self {
        let mut out = NamedTensors::new();
        for (name, tensor) in iter {
            out.insert(name, tensor);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_non_finite_value_is_found_in_any_block() {
        let n = 3000;
        assert_eq!(TensorData::Float32(vec![1.0; n]).first_non_finite(), None);
        for (at, bad) in [
            (0, f32::NAN),
            (1023, f32::INFINITY),
            (1024, f32::NEG_INFINITY),
            (2999, f32::NAN),
        ] {
            let mut v = vec![1.0f32; n];
            v[at] = bad;
            // A later one does not hide it.
            if at < n - 1 {
                v[n - 1] = f32::INFINITY;
            }
            let (i, value) = TensorData::Float32(v.clone()).first_non_finite().unwrap();
            assert_eq!(i, at);
            assert_eq!(value.is_nan(), bad.is_nan());
            let halves = v.iter().map(|&x| f16::from_f32(x)).collect();
            assert_eq!(
                TensorData::Float16(halves).first_non_finite().unwrap().0,
                at
            );
            let brains = v.iter().map(|&x| bf16::from_f32(x)).collect();
            assert_eq!(
                TensorData::BFloat16(brains).first_non_finite().unwrap().0,
                at
            );
        }
    }

    #[test]
    fn shape_must_match_data() {
        assert!(HostTensor::from_f32(vec![2, 3], vec![0.0; 6]).is_ok());
        let err = HostTensor::from_f32(vec![2, 3], vec![0.0; 5]).unwrap_err();
        assert!(err.to_string().contains("needs 6 elements, got 5"), "{err}");
        // Regression (fuzz/npy): a shape whose product overflows is an error, not a panic.
        let err = HostTensor::from_f32(vec![usize::MAX, 3], vec![0.0; 3]).unwrap_err();
        assert!(err.to_string().contains("more than 2^64"), "{err}");
    }

    #[test]
    fn dtype_names_round_trip() {
        for d in DType::ALL {
            assert_eq!(d.as_str().parse::<DType>().unwrap(), d);
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(json, format!("\"{}\"", d.as_str()));
        }
        assert_eq!("bf16".parse::<DType>().unwrap(), DType::BFloat16);
        assert!("float8".parse::<DType>().is_err());
    }

    #[test]
    fn named_tensors_keep_order_and_replace() {
        let t = |v: f32| HostTensor::from_f32(vec![1], vec![v]).unwrap();
        let mut m = NamedTensors::new();
        m.insert("b", t(1.0));
        m.insert("a", t(2.0));
        m.insert("b", t(3.0));
        assert_eq!(m.names().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(m.get("b").unwrap().as_f32().unwrap(), [3.0]);
    }
}
