//! safetensors headers: which tensors a checkpoint holds, their dtypes and shapes, checked
//! against the file sizes so that a truncated or corrupt file is caught before anything runs.

use crate::files::read_json;
use crate::source::{Bytes, FileRef};
use crate::tensor::DType;
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// File name of a single-file checkpoint.
pub const SAFETENSORS_FILE: &str = "model.safetensors";
/// File name of the index of a sharded checkpoint.
pub const SAFETENSORS_INDEX_FILE: &str = "model.safetensors.index.json";

/// Storage types of block-quantized tensors (ggml's names, as GGUF files record them): the
/// weight types that are not plain numbers.
pub const QUANTIZED_TYPES: &[&str] = &[
    "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K",
];

/// One tensor of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Storage type name: safetensors' (`F32`, `BF16`, `I64`, ...) or, for GGUF, ggml's
    /// (`F32`, `Q4_K`, ... — see [`QUANTIZED_TYPES`]).
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
        self.dtype().is_some_and(DType::is_float) || QUANTIZED_TYPES.contains(&self.dtype.as_str())
    }
}

/// Every tensor of a (possibly sharded) safetensors checkpoint.
#[derive(Clone, Debug, Default)]
pub struct WeightIndex {
    /// The weight files (their names in messages), in the order given.
    pub files: Vec<PathBuf>,
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
}

/// A tensor as a safetensors header describes it: dtype name, shape, byte range in the file.
pub type HeaderEntryInfo = (String, Vec<usize>, std::ops::Range<u64>);

/// Reads and checks the header of one safetensors file, as strictly as the `safetensors` crate
/// does (it does the checking): a header length inside the file, valid UTF-8 JSON, known
/// dtypes, shape × dtype size = byte length, offsets sorted and tiling the data region exactly
/// to the end of the file (no gap, no overlap, no trailing bytes).
pub fn read_header(file: impl Into<FileRef>) -> Result<BTreeMap<String, HeaderEntryInfo>> {
    let file = file.into();
    let path = file.path();
    let map = file.map()?;
    if map.len() < 8 {
        return Err(Error::Weights {
            path: path.to_path_buf(),
            message: format!(
                "only {} bytes: too short to be a safetensors file",
                map.len()
            ),
        });
    }
    let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&map)
        .map_err(|e| safetensors_error(path, &map, e))?;
    let base = 8 + header_len as u64;
    Ok(metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let (begin, end) = info.data_offsets;
            let entry = (
                info.dtype.to_string(),
                info.shape.clone(),
                base + begin as u64..base + end as u64,
            );
            (name, entry)
        })
        .collect())
}

/// Turns the `safetensors` crate's verdict into an error that says what is wrong with the file.
fn safetensors_error(path: &Path, bytes: &[u8], e: safetensors::SafeTensorError) -> Error {
    use safetensors::SafeTensorError as E;
    let file_len = bytes.len() as u64;
    let claimed = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
    let message = match e {
        E::HeaderTooLarge | E::InvalidHeaderLength | E::HeaderTooSmall => format!(
            "safetensors header claims {claimed} bytes but the file has {file_len} (truncated or not safetensors)"
        ),
        E::InvalidHeader(_) => {
            "safetensors header is not UTF-8 JSON (corrupt, or not a safetensors file)".to_string()
        }
        E::InvalidHeaderDeserialization(e) => {
            format!("safetensors header is not a valid tensor table: {e}")
        }
        E::InvalidOffset(name) => format!(
            "tensor `{name}`: its data offsets overlap another tensor's, leave a gap, or run backwards (the data must be tiled exactly)"
        ),
        E::TensorInvalidInfo | E::MisalignedSlice | E::ValidationOverflow => {
            "a tensor's byte length does not match its shape and dtype".to_string()
        }
        E::MetadataIncompleteBuffer => {
            let data_len = file_len.saturating_sub(8).saturating_sub(claimed);
            format!(
                "the header describes {} bytes of tensor data but the file holds {data_len} after the {claimed}-byte header (truncated file, or a header length that is off)",
                described_data_len(bytes, claimed)
                    .map_or_else(|| "a different number of".into(), |n| n.to_string())
            )
        }
        other => format!("not a valid safetensors file: {other}"),
    };
    Error::Weights {
        path: path.to_path_buf(),
        message,
    }
}

/// The end of the last tensor a header describes, for error messages.
fn described_data_len(bytes: &[u8], header_len: u64) -> Option<u64> {
    let header = bytes.get(8..usize::try_from(header_len).ok()?.checked_add(8)?)?;
    let table: HashMap<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    table
        .values()
        .filter_map(|v| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
}

/// Memory-maps `files` for reading tensors out of them.
pub fn map_files<F>(files: &[F]) -> Result<Vec<Bytes>>
where
    for<'a> &'a F: Into<FileRef>,
{
    files.iter().map(|f| f.into().map()).collect()
}

impl WeightIndex {
    /// Reads the headers of `files`. A tensor present in two files is an error.
    pub fn read<F>(files: &[F]) -> Result<WeightIndex>
    where
        for<'a> &'a F: Into<FileRef>,
    {
        let files: Vec<FileRef> = files.iter().map(Into::into).collect();
        let mut index = WeightIndex {
            files: files.iter().map(|f| f.path().to_path_buf()).collect(),
            tensors: BTreeMap::new(),
        };
        for (i, file) in files.iter().enumerate() {
            let path = file.path();
            for (name, (dtype, shape, bytes)) in read_header(file)? {
                if let Some(prev) = index.tensors.get(&name) {
                    return Err(Error::Weights {
                        path: path.to_path_buf(),
                        message: format!(
                            "tensor `{name}` is also in {}",
                            files[prev.file].path().display()
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
                crate::paths::check_relative("weight_map", &shard)?;
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
            err.contains("describes 24 bytes of tensor data but the file holds 10")
                && err.contains("truncated"),
            "{err}"
        );
        std::fs::write(&p, [1u8, 2, 3]).unwrap();
        let err = read_header(&p).unwrap_err().to_string();
        assert!(err.contains("too short"), "{err}");
    }

    /// Regression: a length prefix one byte short (the header padded with spaces, as writers
    /// do) parsed, shifted every tensor by a byte and gave NaN embeddings.
    #[test]
    fn header_length_must_be_exact() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.safetensors");
        let header = r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}   "#;
        let mut bytes = ((header.len() - 1) as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend([0u8; 8]);
        std::fs::write(&p, &bytes).unwrap();
        let err = read_header(&p).unwrap_err().to_string();
        assert!(err.contains("header length that is off"), "{err}");
        bytes[..8].copy_from_slice(&(header.len() as u64).to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(
            read_header(&p).unwrap()["w"].2,
            8 + header.len() as u64..16 + header.len() as u64
        );
    }

    /// Overlaps, gaps, trailing bytes, bad sizes and unknown dtypes are refused.
    #[test]
    fn offsets_must_tile_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.safetensors");
        for (header, data, want) in [
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                12,
                "tensor `b`: its data offsets overlap",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}"#,
                20,
                "tensor `b`",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                9,
                "holds 9",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                8,
                "does not match its shape and dtype",
            ),
            (
                r#"{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#,
                8,
                "not a valid tensor table",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
                8,
                "does not match its shape and dtype",
            ),
        ] {
            write_safetensors(&p, header, data);
            let err = read_header(&p).unwrap_err().to_string();
            assert!(err.contains(want), "{header}: {err}");
        }
    }
}
