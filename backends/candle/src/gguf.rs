//! GGUF weights for candle models: quantized tensors read with candle's GGUF reader, with
//! errors that name the missing or misshapen tensor and the file.

use super::{Result, candle_core as candle};
use candle::quantized::{QTensor, gguf_file};
use inferox_core::Error;
use inferox_core::source::{Bytes, FileRef};
use std::cell::RefCell;
use std::path::PathBuf;

/// An open GGUF file.
pub struct GgufWeights {
    path: PathBuf,
    content: gguf_file::Content,
    file: RefCell<std::io::Cursor<Bytes>>,
    device: candle::Device,
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
        Ok(GgufWeights {
            path: path.to_path_buf(),
            content,
            file: RefCell::new(reader),
            device: device.clone(),
        })
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

    /// Tensor `name`, quantized as stored, checked against `shape`.
    pub fn qtensor(&self, name: &str, shape: &[usize]) -> Result<QTensor> {
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
        let mut reader = self.file.borrow_mut();
        let tensor = info
            .read(&mut *reader, self.content.tensor_data_offset, &self.device)
            .map_err(|e| Error::Weights {
                path: self.path.clone(),
                message: format!("tensor `{name}`: {e}"),
            })?;
        Ok(tensor)
    }

    /// Tensor `name` dequantized to float32.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<candle::Tensor> {
        Ok(self.qtensor(name, shape)?.dequantize(&self.device)?)
    }
}
