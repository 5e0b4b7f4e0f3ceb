//! safetensors headers: which tensors a checkpoint holds, their dtypes and shapes, checked
//! against the file sizes so that a truncated or corrupt file is caught before anything runs.

use crate::files::read_json;
use crate::tensor::DType;
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

/// File name of a single-file checkpoint.
pub const SAFETENSORS_FILE: &str = "model.safetensors";
/// File name of the index of a sharded checkpoint.
pub const SAFETENSORS_INDEX_FILE: &str = "model.safetensors.index.json";

/// Largest header we accept (the format's own reference implementation uses the same bound).
const MAX_HEADER: u64 = 100_000_000;

/// One tensor of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// safetensors dtype name (`F32`, `BF16`, `I64`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Index into [`WeightIndex::files`].
    pub file: usize,
    /// Byte range of the data within its file.
    pub bytes: std::ops::Range<u64>,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// Our dtype, if it is one we represent.
    pub fn dtype(&self) -> Option<DType> {
        DType::from_safetensors(&self.dtype)
    }

    /// Whether the tensor holds parameters: floating-point or quantized (GGUF) data.
    pub fn is_parameter(&self) -> bool {
        self.dtype().is_some_and(DType::is_float)
            || crate::gguf::QUANTIZED_TYPES.contains(&self.dtype.as_str())
    }
}

/// Every tensor of a (possibly sharded) safetensors checkpoint.
#[derive(Clone, Debug, Default)]
pub struct WeightIndex {
    /// The weight files, in the order given.
    pub files: Vec<PathBuf>,
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
}

fn element_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

#[derive(serde::Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// A tensor as a safetensors header describes it: dtype name, shape, byte range in the file.
pub type HeaderEntryInfo = (String, Vec<usize>, std::ops::Range<u64>);

/// Reads and checks the header of one safetensors file.
pub fn read_header(path: &Path) -> Result<BTreeMap<String, HeaderEntryInfo>> {
    let weights_err = |message: String| Error::Weights {
        path: path.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut len_bytes = [0u8; 8];
    if file_len < 8 {
        return Err(weights_err(format!(
            "only {file_len} bytes: too short to be a safetensors file"
        )));
    }
    file.read_exact(&mut len_bytes)
        .map_err(|e| Error::io(path, e))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER || 8 + header_len > file_len {
        return Err(weights_err(format!(
            "safetensors header claims {header_len} bytes but the file has {file_len} (truncated or not safetensors)"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| Error::io(path, e))?;
    let entries: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| weights_err(format!("safetensors header is not valid JSON: {e}")))?;
    let data_len = file_len - 8 - header_len;
    let mut out = BTreeMap::new();
    for (name, value) in entries {
        if name == "__metadata__" {
            continue;
        }
        let entry: HeaderEntry = serde_json::from_value(value)
            .map_err(|e| weights_err(format!("tensor `{name}`: malformed header entry: {e}")))?;
        let size = element_size(&entry.dtype).ok_or_else(|| {
            weights_err(format!("tensor `{name}`: unknown dtype `{}`", entry.dtype))
        })?;
        let numel: u64 = entry.shape.iter().map(|&d| d as u64).product();
        let (begin, end) = entry.data_offsets;
        if end < begin || end - begin != numel * size {
            return Err(weights_err(format!(
                "tensor `{name}`: offsets {begin}..{end} do not fit shape {:?} of {}",
                entry.shape, entry.dtype
            )));
        }
        if end > data_len {
            return Err(weights_err(format!(
                "tensor `{name}` ends at byte {end} of the data but the file holds {data_len} bytes of data (truncated file)"
            )));
        }
        let base = 8 + header_len;
        out.insert(name, (entry.dtype, entry.shape, base + begin..base + end));
    }
    Ok(out)
}

/// Memory-maps `files` for reading tensors out of them.
pub fn map_files(files: &[PathBuf]) -> Result<Vec<memmap2::Mmap>> {
    files
        .iter()
        .map(|path| {
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            // SAFETY: a package's files are not modified while it is loaded; the mapping is
            // only read, and tensors are copied out of it.
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))
        })
        .collect()
}

impl WeightIndex {
    /// Reads the headers of `files`. A tensor present in two files is an error.
    pub fn read(files: &[PathBuf]) -> Result<WeightIndex> {
        let mut index = WeightIndex {
            files: files.to_vec(),
            tensors: BTreeMap::new(),
        };
        for (i, path) in files.iter().enumerate() {
            for (name, (dtype, shape, bytes)) in read_header(path)? {
                if let Some(prev) = index.tensors.get(&name) {
                    return Err(Error::Weights {
                        path: path.clone(),
                        message: format!(
                            "tensor `{name}` is also in {}",
                            files[prev.file].display()
                        ),
                    });
                }
                index.tensors.insert(
                    name,
                    TensorInfo {
                        dtype,
                        shape,
                        file: i,
                        bytes,
                    },
                );
            }
        }
        Ok(index)
    }

    /// Finds the checkpoint in a Hugging Face model directory: `model.safetensors`, or the shards
    /// named by `model.safetensors.index.json`. Returns the index file too when sharded.
    pub fn locate(dir: &Path) -> Result<(Vec<PathBuf>, Option<PathBuf>)> {
        let index_path = dir.join(SAFETENSORS_INDEX_FILE);
        if index_path.is_file() {
            #[derive(serde::Deserialize)]
            struct ShardIndex {
                weight_map: BTreeMap<String, String>,
            }
            let index: ShardIndex = read_json(&index_path)?;
            let mut shards: Vec<String> = index.weight_map.values().cloned().collect();
            shards.sort();
            shards.dedup();
            let mut files = Vec::new();
            for shard in shards {
                crate::package::check_relative("weight_map", &shard)?;
                let path = dir.join(&shard);
                if !path.is_file() {
                    return Err(Error::Import {
                        path: index_path.clone(),
                        message: format!("names shard `{shard}`, which is missing"),
                    });
                }
                files.push(path);
            }
            if files.is_empty() {
                return Err(Error::Import {
                    path: index_path,
                    message: "weight_map is empty".into(),
                });
            }
            return Ok((files, Some(index_path)));
        }
        let single = dir.join(SAFETENSORS_FILE);
        if single.is_file() {
            return Ok((vec![single], None));
        }
        let hint = if dir.join("pytorch_model.bin").is_file() {
            " (pytorch_model.bin is not read: pickle files can run code; convert with `safetensors`' convert script or `model.save_pretrained(..., safe_serialization=True)`)"
        } else {
            ""
        };
        Err(Error::Import {
            path: dir.to_path_buf(),
            message: format!("no {SAFETENSORS_FILE} or {SAFETENSORS_INDEX_FILE} found{hint}"),
        })
    }

    /// Tensor `name`, checked: present, of shape `want` when given, and floating-point or not as
    /// `float` says. Errors name the tensor and its file.
    pub fn checked(&self, name: &str, want: Option<&[usize]>, float: bool) -> Result<&TensorInfo> {
        let Some(info) = self.tensors.get(name) else {
            return Err(Error::MissingTensor {
                tensor: name.to_string(),
                files: self.files.clone(),
            });
        };
        let path = &self.files[info.file];
        if let Some(want) = want
            && want != info.shape.as_slice()
        {
            return Err(Error::TensorShape {
                tensor: name.to_string(),
                path: path.clone(),
                expected: want.to_vec(),
                found: info.shape.clone(),
            });
        }
        let stored_float = info.dtype.starts_with('F') || info.dtype == "BF16";
        if stored_float != float {
            return Err(Error::TensorDtype {
                tensor: name.to_string(),
                path: path.clone(),
                expected: if float {
                    "a floating-point dtype"
                } else {
                    "an integer dtype"
                }
                .into(),
                found: info.dtype.clone(),
            });
        }
        Ok(info)
    }

    /// Whether the checkpoint has tensor `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Number of parameters: elements of floating-point and quantized tensors (integer buffers
    /// such as `position_ids` are not parameters).
    pub fn parameter_count(&self) -> u64 {
        self.tensors
            .values()
            .filter(|t| t.is_parameter())
            .map(TensorInfo::numel)
            .sum()
    }

    /// The floating-point dtype holding most parameters (the checkpoint's storage dtype).
    pub fn float_dtype(&self) -> DType {
        let mut by_dtype: BTreeMap<&str, u64> = BTreeMap::new();
        for t in self.tensors.values() {
            if t.dtype().is_some_and(DType::is_float) {
                *by_dtype.entry(t.dtype.as_str()).or_default() += t.numel();
            }
        }
        by_dtype
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .and_then(|(d, _)| DType::from_safetensors(d))
            .unwrap_or(DType::Float32)
    }

    /// Bytes taken by the parameters as stored.
    pub fn parameter_bytes(&self) -> u64 {
        self.tensors
            .values()
            .filter(|t| t.is_parameter())
            .map(|t| t.bytes.end - t.bytes.start)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_safetensors(path: &Path, header: &str, data_len: usize) {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(std::iter::repeat_n(0u8, data_len));
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn reads_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.safetensors");
        write_safetensors(
            &p,
            r#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"ids":{"dtype":"I64","shape":[2],"data_offsets":[24,40]}}"#,
            40,
        );
        let idx = WeightIndex::read(&[p]).unwrap();
        assert_eq!(idx.parameter_count(), 6);
        assert_eq!(idx.parameter_bytes(), 24);
        assert_eq!(idx.float_dtype(), DType::Float32);
        assert!(idx.contains("ids"));
    }

    #[test]
    fn catches_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.safetensors");
        write_safetensors(
            &p,
            r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}"#,
            10,
        );
        let err = read_header(&p).unwrap_err().to_string();
        assert!(
            err.contains("tensor `w` ends at byte 24") && err.contains("truncated"),
            "{err}"
        );
        std::fs::write(&p, [1u8, 2, 3]).unwrap();
        let err = read_header(&p).unwrap_err().to_string();
        assert!(err.contains("too short"), "{err}");
    }
}
