//! GGUF weights for candle models: quantized tensors read with candle's GGUF reader, with
//! errors that name the missing or misshapen tensor and the file.

use super::{Result, candle_core as candle};
use candle::quantized::{GgmlDType, QTensor, gguf_file};
use inferox_core::Error;
use inferox_core::source::{Bytes, FileRef};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// An open GGUF file.
pub struct GgufWeights {
    path: PathBuf,
    content: gguf_file::Content,
    map: Arc<Bytes>,
    device: candle::Device,
}

/// A tensor's bytes as the file stores them, in the shared mapping.
#[derive(Clone)]
pub struct RawTensor {
    /// The block type.
    pub dtype: GgmlDType,
    /// Its shape, outermost dimension first.
    pub shape: Vec<usize>,
    map: Arc<Bytes>,
    range: Range<usize>,
}

impl RawTensor {
    /// The stored bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }

    /// Copies `buf.len()` bytes from byte `start` of the tensor into `buf`, read from the file
    /// rather than through the mapping (see [`Bytes::copy_range`]).
    pub fn copy_range(&self, start: usize, buf: &mut [u8]) -> std::io::Result<()> {
        if start.saturating_add(buf.len()) > self.range.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("bytes past the tensor's {}", self.range.len()),
            ));
        }
        self.map.copy_range(self.range.start + start, buf)
    }

    /// Drops the mapped pages of bytes `part` of the tensor from this process once they have
    /// been copied (they are read again from the file if touched later).
    pub fn release(&self, part: Range<usize>) {
        let end = part.end.min(self.range.len());
        let start = part.start.min(end);
        self.map
            .release(self.range.start + start..self.range.start + end);
    }
}

impl GgufWeights {
    /// Maps `file` and reads its header.
    pub fn open(file: &FileRef, device: &candle::Device) -> Result<GgufWeights> {
        let path = file.path();
        let mut reader = std::io::Cursor::new(file.map()?);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| Error::Weights {
            path: path.to_path_buf(),
            message: format!("unreadable GGUF: {e}"),
        })?;
        let map = reader.into_inner();
        // The header (the vocabulary, megabytes of it) is parsed: its pages are not needed.
        map.release(0..usize::try_from(content.tensor_data_offset).unwrap_or(usize::MAX));
        Ok(GgufWeights {
            path: path.to_path_buf(),
            content,
            map: Arc::new(map),
            device: device.clone(),
        })
    }

    /// The device tensors are read onto.
    pub fn device(&self) -> &candle::Device {
        &self.device
    }

    /// Whether tensor `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// The shape of tensor `name` (outermost dimension first).
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.content
            .tensor_infos
            .get(name)
            .map(|t| t.shape.dims().to_vec())
    }

    /// The info of tensor `name`, checked against `shape`.
    fn info(&self, name: &str, shape: &[usize]) -> Result<&gguf_file::TensorInfo> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| Error::MissingTensor {
                tensor: name.to_string(),
                files: vec![self.path.clone()],
            })?;
        if info.shape.dims() != shape {
            return Err(Error::TensorShape {
                tensor: name.to_string(),
                path: self.path.clone(),
                expected: shape.to_vec(),
                found: info.shape.dims().to_vec(),
            }
            .into());
        }
        Ok(info)
    }

    /// Tensor `name`'s bytes as stored, checked against `shape` and the file's length.
    pub fn raw(&self, name: &str, shape: &[usize]) -> Result<RawTensor> {
        let info = self.info(name, shape)?;
        let dtype = info.ggml_dtype;
        let elems = info.shape.elem_count();
        let bad = |message: String| Error::Weights {
            path: self.path.clone(),
            message: format!("tensor `{name}`: {message}"),
        };
        if !elems.is_multiple_of(dtype.block_size()) {
            return Err(bad(format!(
                "{elems} values are not whole blocks of {} ({dtype:?})",
                dtype.block_size()
            ))
            .into());
        }
        let len = elems / dtype.block_size() * dtype.type_size();
        let start = (self.content.tensor_data_offset as usize).checked_add(info.offset as usize);
        let range = match start.and_then(|s| Some(s..s.checked_add(len)?)) {
            Some(r) if r.end <= self.map.len() => r,
            _ => {
                return Err(bad(format!(
                    "its {len} bytes at offset {} lie past the end of the file ({} bytes): the \
                     file is truncated",
                    info.offset,
                    self.map.len()
                ))
                .into());
            }
        };
        Ok(RawTensor {
            dtype,
            shape: shape.to_vec(),
            map: self.map.clone(),
            range,
        })
    }

    /// Tensor `name`, quantized as stored, checked against `shape`.
    pub fn qtensor(&self, name: &str, shape: &[usize]) -> Result<QTensor> {
        let info = self.info(name, shape)?;
        let raw = self.raw(name, shape)?;
        let mut reader = std::io::Cursor::new(&self.map[..]);
        let tensor = info
            .read(&mut reader, self.content.tensor_data_offset, &self.device)
            .map_err(|e| Error::Weights {
                path: self.path.clone(),
                message: format!("tensor `{name}`: {e}"),
            })?;
        // The bytes are copied now: drop their mapped pages so that they do not count twice.
        raw.release(0..usize::MAX);
        Ok(tensor)
    }

    /// Tensor `name` dequantized to float32.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<candle::Tensor> {
        Ok(self.qtensor(name, shape)?.dequantize(&self.device)?)
    }
}
