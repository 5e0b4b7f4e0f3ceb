//! NumPy `.npy` files for raw tensor input and output (through the `npyz` crate).

use crate::tensor::{HostTensor, TensorData};
use crate::{Error, Result};
use npyz::{TypeChar, WriterBuilder};
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

fn npy_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Npy {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Reads a C-ordered `.npy` file of a numeric dtype into a [`HostTensor`].
pub fn read_npy(path: &Path) -> Result<HostTensor> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let npy = npyz::NpyFile::new(BufReader::new(file)).map_err(|e| npy_error(path, e))?;
    if npy.order() != npyz::Order::C && npy.shape().len() > 1 {
        return Err(npy_error(
            path,
            "array is in Fortran order; save it with numpy.ascontiguousarray first",
        ));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let npyz::DType::Plain(type_str) = npy.dtype() else {
        return Err(npy_error(path, "structured arrays are not supported"));
    };
    let read_err = |e: std::io::Error| npy_error(path, format!("reading data: {e}"));
    let data = match (type_str.type_char(), type_str.size_field()) {
        (TypeChar::Float, 4) => TensorData::Float32(npy.into_vec().map_err(read_err)?),
        (TypeChar::Float, 8) => TensorData::Float64(npy.into_vec().map_err(read_err)?),
        (TypeChar::Float, 2) => TensorData::Float16(npy.into_vec().map_err(read_err)?),
        (TypeChar::Int, 8) => TensorData::Int64(npy.into_vec().map_err(read_err)?),
        (TypeChar::Int, 4) => TensorData::Int32(npy.into_vec().map_err(read_err)?),
        (TypeChar::Int, 1) => TensorData::Int8(npy.into_vec().map_err(read_err)?),
        (TypeChar::Uint, 1) => TensorData::Uint8(npy.into_vec().map_err(read_err)?),
        _ => {
            return Err(npy_error(
                path,
                format!(
                    "unsupported dtype `{type_str}` (supported: float16/32/64, int8/32/64, uint8)"
                ),
            ));
        }
    };
    HostTensor::new(shape, data).map_err(|e| npy_error(path, e))
}

/// Writes a tensor as a C-ordered `.npy` file (bfloat16 is widened to float32: NumPy has none).
pub fn write_npy(path: &Path, tensor: &HostTensor) -> Result<()> {
    let shape: Vec<u64> = tensor.shape().iter().map(|&d| d as u64).collect();
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut out = BufWriter::new(file);
    let io = |e: std::io::Error| Error::io(path, e);
    fn write_all<T: npyz::AutoSerialize + Copy, W: Write>(
        w: W,
        shape: &[u64],
        values: &[T],
    ) -> std::io::Result<()> {
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(shape)
            .writer(w)
            .begin_nd()?;
        writer.extend(values.iter().copied())?;
        writer.finish()
    }
    match tensor.data() {
        TensorData::Float32(v) => write_all(&mut out, &shape, v),
        TensorData::Float16(v) => write_all(&mut out, &shape, v),
        TensorData::BFloat16(v) => {
            let widened: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
            write_all(&mut out, &shape, &widened)
        }
        TensorData::Float64(v) => write_all(&mut out, &shape, v),
        TensorData::Int64(v) => write_all(&mut out, &shape, v),
        TensorData::Int32(v) => write_all(&mut out, &shape, v),
        TensorData::Int8(v) => write_all(&mut out, &shape, v),
        TensorData::Uint8(v) => write_all(&mut out, &shape, v),
    }
    .map_err(io)?;
    out.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let tensors = [
            HostTensor::from_f32(vec![2, 3], vec![1.5, -2.0, 0.0, 3.25, 4.0, 5.0]).unwrap(),
            HostTensor::from_i64(vec![3], vec![1, -2, 1 << 40]).unwrap(),
            HostTensor::new(vec![2], TensorData::Uint8(vec![0, 255])).unwrap(),
            HostTensor::new(vec![1, 1], TensorData::Float64(vec![0.125])).unwrap(),
        ];
        for (i, t) in tensors.iter().enumerate() {
            let path = dir.path().join(format!("{i}.npy"));
            write_npy(&path, t).unwrap();
            assert_eq!(&read_npy(&path).unwrap(), t);
        }
    }

    #[test]
    fn garbage_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.npy");
        std::fs::write(&path, b"not numpy at all").unwrap();
        let err = read_npy(&path).unwrap_err();
        assert!(matches!(err, Error::Npy { .. }), "{err}");
        assert!(err.to_string().contains("bad.npy"));
    }
}
