//! File helpers shared by the package reader and writer: JSON with located errors, hashing,
//! atomic writes.

use crate::source::FileRef;
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;

/// Reads and parses a JSON file; parse errors name the file, line and column.
pub fn read_json<T: DeserializeOwned>(file: impl Into<FileRef>) -> Result<T> {
    let file = file.into();
    serde_json::from_slice(&file.read()?).map_err(|e| Error::Json {
        path: file.path().to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads a model config file; errors are reported as [`Error::Config`].
pub fn read_config<T: DeserializeOwned>(file: impl Into<FileRef>) -> Result<T> {
    let file = file.into();
    serde_json::from_slice(&file.read()?).map_err(|e| Error::Config {
        path: file.path().to_path_buf(),
        message: e.to_string(),
    })
}

/// Lower-case hex encoding.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams `reader` into `writer` (when given), returning the byte count and sha256.
/// `progress` is called with the bytes done so far.
pub fn copy_hashed(
    reader: impl Read,
    writer: Option<&mut dyn Write>,
    progress: impl FnMut(u64),
) -> std::io::Result<(u64, String)> {
    copy_digest(Sha256::new(), reader, writer, progress)
}

/// [`copy_hashed`] with any digest, fed from its current state (so a caller can hash a
/// header first, as git's blob ids do).
pub fn copy_digest<D: Digest>(
    mut hasher: D,
    mut reader: impl Read,
    mut writer: Option<&mut dyn Write>,
    mut progress: impl FnMut(u64),
) -> std::io::Result<(u64, String)> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        if let Some(w) = writer.as_mut() {
            w.write_all(&buf[..n])?;
        }
        total += n as u64;
        progress(total);
    }
    Ok((total, hex(&hasher.finalize())))
}

/// Size and sha256 of a file.
pub fn hash_file(file: impl Into<FileRef>) -> Result<(u64, String)> {
    let file = file.into();
    let bytes = file.map()?;
    // Hash in slices, dropping each from memory once hashed: a large file hashed before it is
    // loaded must not stay resident twice.
    const CHUNK: usize = 16 << 20;
    let mut hasher = Sha256::new();
    for start in (0..bytes.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(bytes.len());
        hasher.update(&bytes[start..end]);
        bytes.release(start..end);
    }
    Ok((bytes.len() as u64, hex(&hasher.finalize())))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, None, |file| {
        file.write_all(bytes).map_err(|e| Error::write(path, e))
    })
}

/// Writes `path` atomically, its contents written by `fill`: a temporary file beside it
/// (removed on failure), fsync, `mode` as its Unix permissions when given, then rename.
pub fn write_atomic_with(
    path: &Path,
    mode: Option<u32>,
    fill: impl FnOnce(&mut std::fs::File) -> Result<()>,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp).map_err(|e| Error::write(path, e))?;
        fill(&mut file)?;
        file.sync_all().map_err(|e| Error::write(path, e))?;
        #[cfg(unix)]
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::write(path, e))?;
        }
        #[cfg(not(unix))]
        let _ = mode;
        std::fs::rename(&tmp, path).map_err(|e| Error::write(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_like_sha256sum() {
        let (n, h) = copy_hashed(&b"abc"[..], None, |_| {}).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// Regression (`run --save-outputs`): a failed write left a 0-byte file behind.
    #[test]
    fn failed_atomic_writes_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.npy");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"x").unwrap();
        let err = write_atomic(&target, b"data").unwrap_err();
        assert!(err.to_string().contains("out.npy"), "{err}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "a temporary file was left behind");
        assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"x");
    }

    #[test]
    fn json_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        std::fs::write(&p, b"{\"a\": ").unwrap();
        let err = read_json::<serde_json::Value>(&p).unwrap_err();
        assert!(matches!(err, Error::Json { .. }));
        assert!(err.to_string().contains("x.json: malformed JSON"), "{err}");
    }
}
