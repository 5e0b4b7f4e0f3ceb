//! GGUF files (llama.cpp's format): the header — metadata key/values and tensor infos — read
//! and checked against the file size, backend-agnostically. Backends load the tensor data
//! themselves. Format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>.

use crate::weights::{QUANTIZED_TYPES, TensorInfo, WeightIndex};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::path::PathBuf;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v as u64),
            GgufValue::U16(v) => Some(v as u64),
            GgufValue::U32(v) => Some(v as u64),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            GgufValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The value as a list.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            GgufValue::F32(v) => serde_json::json!(*v as f64),
            GgufValue::F64(v) => serde_json::json!(v),
            GgufValue::Bool(b) => J::Bool(*b),
            GgufValue::String(s) => J::String(s.clone()),
            GgufValue::Array(a) => J::Array(a.iter().map(GgufValue::to_json).collect()),
            GgufValue::I8(v) => serde_json::json!(v),
            GgufValue::I16(v) => serde_json::json!(v),
            GgufValue::I32(v) => serde_json::json!(v),
            GgufValue::I64(v) => serde_json::json!(v),
            other => serde_json::json!(other.as_u64()),
        }
    }
}

/// ggml tensor types: (name, elements per block, bytes per block), by type id.
fn ggml_type(id: u32) -> Option<(&'static str, u64, u64)> {
    Some(match id {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2_K", 256, 84),
        11 => ("Q3_K", 256, 110),
        12 => ("Q4_K", 256, 144),
        13 => ("Q5_K", 256, 176),
        14 => ("Q6_K", 256, 210),
        15 => ("Q8_K", 256, 292),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        30 => ("BF16", 1, 2),
        _ => return None,
    })
}

/// A tensor as the header describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensor {
    /// Tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Shape, outermost dimension first (ggml lists dimensions innermost first).
    pub shape: Vec<usize>,
    /// ggml type name (`Q4_1`, `F32`, ...).
    pub dtype: &'static str,
    /// Byte range of the data in the file.
    pub bytes: std::ops::Range<u64>,
}

/// The header of a GGUF file.
#[derive(Clone, Debug)]
pub struct GgufHeader {
    /// The file.
    pub path: PathBuf,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata key/values.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensor infos, in file order.
    pub tensors: Vec<GgufTensor>,
}

struct Reader<R> {
    inner: R,
    file_size: u64,
    path: PathBuf,
}

impl<R: Read + Seek> Reader<R> {
    fn err(&self, message: impl Into<String>) -> Error {
        Error::Weights {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.err("GGUF header ends early (truncated file)")
            } else {
                Error::io(&self.path, e)
            }
        })?;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    /// A length that must fit in what is left of the file (guards against absurd headers).
    fn length(&mut self, what: &str, unit: u64) -> Result<u64> {
        let n = self.u64()?;
        let pos = self
            .inner
            .stream_position()
            .map_err(|e| Error::io(&self.path, e))?;
        if n.saturating_mul(unit) > self.file_size.saturating_sub(pos) {
            return Err(self.err(format!(
                "{what} length {n} runs past the end of the file (truncated or corrupt)"
            )));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String> {
        let n = self.length("string", 1)? as usize;
        let mut buf = vec![0u8; n];
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| self.err("GGUF header ends early (truncated file)"))?;
        String::from_utf8(buf).map_err(|_| self.err("a string is not UTF-8"))
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.bytes::<1>()?[0]),
            1 => GgufValue::I8(self.bytes::<1>()?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.bytes()?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.bytes()?)),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(i32::from_le_bytes(self.bytes()?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.bytes()?)),
            7 => GgufValue::Bool(self.bytes::<1>()?[0] != 0),
            8 => GgufValue::String(self.string()?),
            9 if depth == 0 => {
                let item = self.u32()?;
                let n = self.length("array", 1)?;
                let mut items = Vec::with_capacity(n.min(1 << 20) as usize);
                for _ in 0..n {
                    items.push(self.value(item, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(i64::from_le_bytes(self.bytes()?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.bytes()?)),
            other => return Err(self.err(format!("unknown metadata value type {other}"))),
        })
    }
}

impl GgufHeader {
    /// Reads and checks the header: every tensor's data must lie inside the file.
    pub fn read(file: impl Into<crate::source::FileRef>) -> Result<GgufHeader> {
        let file = file.into();
        let path = file.path();
        let bytes = file.map()?;
        let file_size = bytes.len() as u64;
        let mut r = Reader {
            inner: std::io::Cursor::new(bytes),
            file_size,
            path: file.path().to_path_buf(),
        };
        if file_size < 24 || &r.bytes::<4>()? != b"GGUF" {
            return Err(r.err("not a GGUF file (no GGUF magic)"));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(r.err(format!(
                "GGUF version {version} is not supported (2 and 3 are)"
            )));
        }
        let tensor_count = r.length("tensor count", 24)?;
        let kv_count = r.length("metadata count", 12)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = r.string()?;
            let ty = r.u32()?;
            let value = r.value(ty, 0)?;
            metadata.insert(key, value);
        }
        let mut infos = Vec::with_capacity(tensor_count as usize);
        for _ in 0..tensor_count {
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims > 8 {
                return Err(r.err(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64()?);
            }
            let ty = r.u32()?;
            let offset = r.u64()?;
            infos.push((name, dims, ty, offset));
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 30 => a,
                _ => {
                    return Err(r.err(format!(
                        "general.alignment is {v:?}; it must be a power of two (llama.cpp writes 32)"
                    )));
                }
            },
        };
        let pos = r.inner.stream_position().map_err(|e| Error::io(path, e))?;
        let data_start = pos.div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(infos.len());
        for (name, dims, ty, offset) in infos {
            let (dtype, block, block_bytes) = ggml_type(ty).ok_or_else(|| {
                r.err(format!(
                    "tensor `{name}` has ggml type {ty}, which is not supported"
                ))
            })?;
            if dims.iter().any(|&d| d == 0 || usize::try_from(d).is_err()) {
                return Err(r.err(format!(
                    "tensor `{name}` has an empty or impossible dimension ({dims:?})"
                )));
            }
            let elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
            let elements =
                elements.ok_or_else(|| r.err(format!("tensor `{name}` is impossibly large")))?;
            // Blocks run along the innermost dimension, as in ggml.
            if dims.first().is_some_and(|d| d % block != 0) {
                return Err(r.err(format!(
                    "tensor `{name}` ({dtype}) has rows of {} elements, not a multiple of its block of {block}",
                    dims[0]
                )));
            }
            if offset % alignment != 0 {
                return Err(r.err(format!(
                    "tensor `{name}` starts at data offset {offset}, which is not a multiple of the alignment {alignment}"
                )));
            }
            let size = (elements / block).checked_mul(block_bytes);
            let range = data_start
                .checked_add(offset)
                .zip(size)
                .and_then(|(start, size)| Some(start..start.checked_add(size)?))
                .filter(|range| range.end <= file_size);
            let Some(range) = range else {
                return Err(r.err(format!(
                    "tensor `{name}` ({} bytes at data offset {offset}) runs past the end of the {file_size}-byte file (truncated file)",
                    size.map_or_else(|| "more than 2^64".to_string(), |s| s.to_string())
                )));
            };
            tensors.push(GgufTensor {
                name,
                shape: dims.iter().rev().map(|&d| d as usize).collect(),
                dtype,
                bytes: range,
            });
        }
        // No two tensors may share bytes (nor a name).
        let mut by_offset: Vec<&GgufTensor> = tensors.iter().collect();
        by_offset.sort_by_key(|t| (t.bytes.start, t.bytes.end));
        for pair in by_offset.windows(2) {
            if pair[1].bytes.start < pair[0].bytes.end {
                return Err(r.err(format!(
                    "tensors `{}` and `{}` overlap in the file (corrupt header)",
                    pair[0].name, pair[1].name
                )));
            }
        }
        let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|p| p[0] == p[1]) {
            return Err(r.err(format!("tensor `{}` appears twice in the header", pair[0])));
        }
        Ok(GgufHeader {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
        })
    }

    /// The metadata value for `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// A string metadata value, or an error naming the missing key.
    pub fn string(&self, key: &str) -> Result<&str> {
        self.get(key)
            .and_then(GgufValue::as_str)
            .ok_or_else(|| Error::Weights {
                path: self.path.clone(),
                message: format!("GGUF metadata has no string `{key}`"),
            })
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.string("general.architecture")
    }

    /// The metadata as a JSON object (lists longer than 1024 items, such as the vocabulary,
    /// are left out): what architectures derive their config from.
    pub fn metadata_json(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = self
            .metadata
            .iter()
            .filter(|(_, v)| v.as_array().is_none_or(|a| a.len() <= 1024))
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        serde_json::Value::Object(map)
    }

    /// The tensors as a weight index (for parameter counts and architecture checks).
    pub fn weight_index(&self) -> WeightIndex {
        WeightIndex {
            files: vec![self.path.clone()],
            tensors: self
                .tensors
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        TensorInfo {
                            dtype: t.dtype.to_string(),
                            shape: t.shape.clone(),
                            file: 0,
                            bytes: t.bytes.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// The quantized type holding most of the weights, if any is quantized.
    pub fn main_quantization(&self) -> Option<&'static str> {
        let mut bytes: BTreeMap<&'static str, u64> = BTreeMap::new();
        for t in &self.tensors {
            if QUANTIZED_TYPES.contains(&t.dtype) {
                *bytes.entry(t.dtype).or_default() += t.bytes.end - t.bytes.start;
            }
        }
        bytes.into_iter().max_by_key(|(_, b)| *b).map(|(t, _)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF v3 file with `general.architecture = llama` and F32 tensors (name, dims innermost
    /// first, data offset), then `data_len` bytes of data.
    fn gguf_with(tensors: &[(&str, [u64; 2], u64)], data_len: usize) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((tensors.len() as u64).to_le_bytes());
        b.extend(1u64.to_le_bytes()); // kv
        let key = b"general.architecture";
        b.extend((key.len() as u64).to_le_bytes());
        b.extend(key);
        b.extend(8u32.to_le_bytes());
        b.extend(5u64.to_le_bytes());
        b.extend(b"llama");
        for (name, dims, offset) in tensors {
            b.extend((name.len() as u64).to_le_bytes());
            b.extend(name.as_bytes());
            b.extend(2u32.to_le_bytes());
            b.extend(dims[0].to_le_bytes());
            b.extend(dims[1].to_le_bytes());
            b.extend(0u32.to_le_bytes()); // F32
            b.extend(offset.to_le_bytes());
        }
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend(std::iter::repeat_n(0u8, data_len));
        b
    }

    /// A minimal GGUF v3 file: one metadata string and one F32 tensor of 4 elements.
    pub fn tiny_gguf(data_len: usize) -> Vec<u8> {
        gguf_with(&[("w", [2, 2], 0)], data_len)
    }

    /// Offsets must be aligned, inside the file and not shared; sizes must not overflow.
    #[test]
    fn tensor_offsets_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        for (tensors, data, want) in [
            (
                vec![("a", [2, 2], 8)],
                64,
                "not a multiple of the alignment 32",
            ),
            (
                vec![("a", [8, 2], 0), ("b", [2, 2], 32)],
                96,
                "tensors `a` and `b` overlap",
            ),
            (
                vec![("a", [2, 2], 0), ("a", [2, 2], 32)],
                64,
                "appears twice",
            ),
            (vec![("a", [2, 2], u64::MAX - 31)], 64, "runs past the end"),
            (vec![("a", [1 << 62, 2], 0)], 64, "runs past the end"),
            (vec![("a", [u64::MAX, u64::MAX], 0)], 64, "impossibly large"),
            (vec![("a", [0, 2], 0)], 64, "empty or impossible dimension"),
        ] {
            std::fs::write(&p, gguf_with(&tensors, data)).unwrap();
            let err = GgufHeader::read(&p).unwrap_err().to_string();
            assert!(err.contains(want), "{tensors:?}: {err}");
        }
        std::fs::write(&p, gguf_with(&[("a", [8, 2], 0), ("b", [2, 2], 64)], 96)).unwrap();
        assert_eq!(GgufHeader::read(&p).unwrap().tensors.len(), 2);
    }

    #[test]
    fn reads_a_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, tiny_gguf(16)).unwrap();
        let h = GgufHeader::read(&p).unwrap();
        assert_eq!(h.architecture().unwrap(), "llama");
        assert_eq!(h.tensors[0].shape, [2, 2]);
        assert_eq!(h.weight_index().parameter_count(), 4);
        assert_eq!(h.metadata_json()["general.architecture"], "llama");
    }

    #[test]
    fn truncation_and_garbage_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, tiny_gguf(8)).unwrap();
        let err = GgufHeader::read(&p).unwrap_err().to_string();
        assert!(
            err.contains("tensor `w` (16 bytes at data offset 0) runs past the end")
                && err.contains("truncated"),
            "{err}"
        );
        let full = tiny_gguf(16);
        std::fs::write(&p, &full[..40]).unwrap();
        let err = GgufHeader::read(&p).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        std::fs::write(&p, b"not a gguf file at all, really").unwrap();
        let err = GgufHeader::read(&p).unwrap_err().to_string();
        assert!(err.contains("no GGUF magic"), "{err}");
    }
}
