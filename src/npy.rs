//! NumPy `.npy` files for raw tensor input and output (through the `npyz` crate).

use crate::tensor::{HostTensor, TensorData};
use crate::{Error, Result};
use npyz::{TypeChar, WriterBuilder};
use std::io::{BufReader, Write};
use std::path::Path;

fn npy_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Npy {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Where the data of a `.npy` file starts: after the magic, the version, the header length
/// and the header (format versions 1 to 3).
fn data_offset(prefix: &[u8]) -> Option<u64> {
    match prefix.get(6)? {
        1 => Some(10 + u16::from_le_bytes(prefix.get(8..10)?.try_into().ok()?) as u64),
        2 | 3 => Some(12 + u32::from_le_bytes(prefix.get(8..12)?.try_into().ok()?) as u64),
        _ => None,
    }
}

/// Largest header accepted: NumPy's own default limit (`max_header_size`).
const MAX_HEADER: u64 = 10_000;

/// Refuses headers that are not the plain `{'descr': '<f4', 'fortran_order': False, 'shape':
/// (2, 3), }` form before the parser sees them: too long, or nested (structured dtypes,
/// nested tuples), which sends npyz's grammar into exponential backtracking.
fn check_header(path: &Path, file: &mut std::fs::File, end: Option<u64>) -> Result<()> {
    let Some(end) = end else {
        return Ok(()); // not a supported preamble: npyz says what is wrong
    };
    if end > MAX_HEADER + 12 {
        return Err(npy_error(
            path,
            format!("the header is {end} bytes long; NumPy writes at most {MAX_HEADER}"),
        ));
    }
    let mut header = vec![0u8; end as usize];
    std::io::Read::read_exact(file, &mut header).map_err(|e| Error::io(path, e))?;
    std::io::Seek::rewind(file).map_err(|e| Error::io(path, e))?;
    let count = |c: u8| header.iter().filter(|&&b| b == c).count();
    if count(b'[') > 0 || count(b'{') != 1 || count(b'(') != 1 {
        return Err(npy_error(
            path,
            "the header is not a plain {'descr', 'fortran_order', 'shape'} dictionary \
             (structured dtypes are not supported)",
        ));
    }
    // The element count must fit in 64 bits (npyz multiplies the dimensions unchecked).
    let text = String::from_utf8_lossy(&header);
    if let Some(dims) = text
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
    {
        let parsed: Option<Vec<u64>> = dims
            .0
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            // Python 2's NumPy wrote longs as `3L`.
            .map(|d| d.trim_end_matches('L').parse::<u64>().ok())
            .collect();
        // NumPy writes plain integers; npyz reads more (signs, spaces) and then multiplies.
        let Some(parsed) = parsed else {
            return Err(npy_error(
                path,
                format!("the shape ({}) is not a tuple of integers", dims.0.trim()),
            ));
        };
        let overflows = parsed
            .iter()
            .try_fold(1u64, |acc, &n| acc.checked_mul(n))
            .is_none();
        if overflows {
            return Err(npy_error(
                path,
                format!("the shape ({}) has more than 2^64 elements", dims.0.trim()),
            ));
        }
    }
    Ok(())
}

/// Reads a C-ordered `.npy` file of a numeric dtype into a [`HostTensor`]. The data must be
/// exactly what the header's shape and dtype describe (no more, no less), checked before
/// anything is allocated.
pub fn read_npy(path: &Path) -> Result<HostTensor> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut prefix = [0u8; 12];
    let got = std::io::Read::read(&mut file, &mut prefix).map_err(|e| Error::io(path, e))?;
    std::io::Seek::rewind(&mut file).map_err(|e| Error::io(path, e))?;
    // The header is read into memory by its length prefix: check that against the file first.
    if let Some(offset) = data_offset(&prefix[..got])
        && offset > file_len
    {
        return Err(npy_error(
            path,
            format!("the header claims to end at byte {offset} but the file has {file_len}"),
        ));
    }
    check_header(path, &mut file, data_offset(&prefix[..got]))?;
    let npy = npyz::NpyFile::new(BufReader::new(file)).map_err(|e| npy_error(path, e))?;
    let element = match npy.dtype() {
        npyz::DType::Plain(t) => t.num_bytes().unwrap_or(0) as u64,
        _ => 0,
    };
    let expected = npy
        .shape()
        .iter()
        .try_fold(element, |acc, &d| acc.checked_mul(d));
    let found = data_offset(&prefix[..got]).and_then(|o| file_len.checked_sub(o));
    if element > 0 && expected != found {
        return Err(npy_error(
            path,
            format!(
                "the header describes {} bytes of data (shape {:?}) but the file holds {} (truncated, or extra bytes at the end)",
                expected.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string()),
                npy.shape(),
                found.unwrap_or(0)
            ),
        ));
    }
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
/// The file is written atomically: a failed write leaves nothing at `path`.
pub fn write_npy(path: &Path, tensor: &HostTensor) -> Result<()> {
    let shape: Vec<u64> = tensor.shape().iter().map(|&d| d as u64).collect();
    let mut out = Vec::new();
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
    crate::files::write_atomic(path, &out)
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

    /// A version-1 `.npy` preamble and `header`, padded as NumPy pads it (no data).
    fn npy_v1(header: &str) -> Vec<u8> {
        let mut header = header.to_string();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes
    }

    /// Regression: trailing bytes were accepted; a shape far beyond the file was allocated.
    #[test]
    fn data_must_match_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let t = HostTensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap();
        write_npy(&path, &t).unwrap();
        let good = std::fs::read(&path).unwrap();
        let mut longer = good.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        let err = read_npy(&path).unwrap_err().to_string();
        assert!(
            err.contains("describes 8 bytes") && err.contains("holds 9"),
            "{err}"
        );
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(read_npy(&path).is_err());
        // Found by fuzzing: a version-2 header length of 2^30 was allocated before any check.
        let mut long = good.clone();
        long[6] = 2;
        long[8..12].copy_from_slice(&(1u32 << 30).to_le_bytes());
        std::fs::write(&path, &long).unwrap();
        let err = read_npy(&path).unwrap_err().to_string();
        assert!(err.contains("header claims to end at byte"), "{err}");
        // Found by fuzzing: a shape whose element count overflows 64 bits.
        let overflow = npy_v1(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 2), }",
        );
        std::fs::write(&path, &overflow).unwrap();
        let err = read_npy(&path).unwrap_err().to_string();
        assert!(err.contains("more than 2^64 elements"), "{err}");
        // Found by fuzzing: nested brackets sent the header grammar into exponential
        // backtracking (minutes for 300 bytes).
        let nested = npy_v1(&format!("{{'descr': {}, }}", "[".repeat(300)));
        std::fs::write(&path, &nested).unwrap();
        let start = std::time::Instant::now();
        let err = read_npy(&path).unwrap_err().to_string();
        assert!(err.contains("not a plain"), "{err}");
        assert!(start.elapsed().as_secs() < 1);
        // The same header claiming 2^40 elements: refused before allocating.
        let mut huge =
            npy_v1("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }");
        huge.extend([0u8; 8]);
        std::fs::write(&path, &huge).unwrap();
        let err = read_npy(&path).unwrap_err().to_string();
        assert!(err.contains("describes 4398046511104 bytes"), "{err}");
    }

    #[test]
    fn garbage_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.npy");
        std::fs::write(&path, b"not numpy at all").unwrap();
        let err = read_npy(&path).unwrap_err();
        assert!(matches!(err, Error::Npy { .. }), "{err}");
        assert!(err.to_string().contains("bad.npy"));
        // Regression (fuzz/npy): dimensions whose product overflows a usize.
        let mut overflow = b"\x93NUMPY\x01\x00v\x00".to_vec();
        let header =
            "{'descr': '|i1', 'fortran_order': False, 'shape': (4294967296, 4294967296, 3), }";
        overflow.extend(format!("{header:<117}\n").bytes());
        std::fs::write(&path, &overflow).unwrap();
        assert!(read_npy(&path).is_err());
        std::fs::write(
            &path,
            include_bytes!("../fuzz/seeds/npy/overflowing-shape.npy"),
        )
        .unwrap();
        assert!(read_npy(&path).is_err());
    }
}
