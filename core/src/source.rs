//! Where a package file's bytes live: a file of its own (a package directory), a byte range of a
//! larger file (a package appended to an executable: the `package::bundle` module), or
//! memory that is part of the program (a package embedded at build time).
//!
//! Readers take a [`FileRef`] rather than a path, so that the weights of a bundled package are
//! memory-mapped in place from the executable, with no extraction and no second copy.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// A package file: its name for messages and where its bytes are.
#[derive(Clone, Debug)]
pub struct FileRef {
    name: PathBuf,
    source: Source,
}

#[derive(Clone, Debug)]
enum Source {
    /// The whole of a file.
    File(PathBuf),
    /// `len` bytes at `offset` in a file.
    Range {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    /// Bytes that are part of the program.
    Static(&'static [u8]),
}

impl FileRef {
    /// The whole of the file at `path`.
    pub fn file(path: impl Into<PathBuf>) -> FileRef {
        let path = path.into();
        FileRef {
            name: path.clone(),
            source: Source::File(path),
        }
    }

    /// `len` bytes at `offset` in the file at `path`, called `name` in messages.
    pub fn range(name: PathBuf, path: PathBuf, offset: u64, len: u64) -> FileRef {
        FileRef {
            name,
            source: Source::Range { path, offset, len },
        }
    }

    /// Static bytes, called `name` in messages.
    pub fn from_static(name: PathBuf, bytes: &'static [u8]) -> FileRef {
        FileRef {
            name,
            source: Source::Static(bytes),
        }
    }

    /// The name errors give for this file: its path, or for an embedded file
    /// `CONTAINER#path/in/package`.
    pub fn path(&self) -> &Path {
        &self.name
    }

    /// Its length in bytes.
    pub fn len(&self) -> Result<u64> {
        match &self.source {
            Source::File(path) => Ok(std::fs::metadata(path)
                .map_err(|e| Error::io(path, e))?
                .len()),
            Source::Range { len, .. } => Ok(*len),
            Source::Static(bytes) => Ok(bytes.len() as u64),
        }
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Its bytes, memory-mapped where they are on disk.
    pub fn map(&self) -> Result<Bytes> {
        let (path, offset, len) = match &self.source {
            Source::Static(bytes) => return Ok(Bytes(Inner::Static(bytes))),
            Source::File(path) => (path, 0, None),
            Source::Range { path, offset, len } => (path, *offset, Some(*len)),
        };
        let file = std::fs::File::open(path).map_err(|e| Error::io(&self.name, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(&self.name, e))?.len();
        let len = len.unwrap_or(file_len);
        if offset.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(Error::Weights {
                path: self.name.clone(),
                message: format!(
                    "bytes {offset}..{} lie past the end of {} ({file_len} bytes): the file is truncated",
                    offset.saturating_add(len),
                    path.display()
                ),
            });
        }
        if len == 0 {
            return Ok(Bytes(Inner::Static(&[])));
        }
        let len = usize::try_from(len).map_err(|_| Error::Weights {
            path: self.name.clone(),
            message: format!("{len} bytes do not fit in this machine's address space"),
        })?;
        // SAFETY: package files are not modified while they are read (the same contract as
        // every memory-mapped model format); the mapping is only ever read.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(len)
                .map(&file)
        }
        .map_err(|e| Error::io(&self.name, e))?;
        Ok(Bytes(Inner::Map { map, file, offset }))
    }

    /// Its bytes, read into memory (for small files: manifests, configs, tokenizers).
    pub fn read(&self) -> Result<Vec<u8>> {
        match &self.source {
            Source::File(path) => std::fs::read(path).map_err(|e| Error::io(path, e)),
            _ => Ok(self.map()?.to_vec()),
        }
    }

    /// Its bytes as UTF-8 text.
    pub fn read_to_string(&self) -> Result<String> {
        String::from_utf8(self.read()?).map_err(|_| Error::Weights {
            path: self.name.clone(),
            message: "not UTF-8 text".into(),
        })
    }
}

impl From<&Path> for FileRef {
    fn from(path: &Path) -> FileRef {
        FileRef::file(path)
    }
}

impl From<&PathBuf> for FileRef {
    fn from(path: &PathBuf) -> FileRef {
        FileRef::file(path)
    }
}

impl From<PathBuf> for FileRef {
    fn from(path: PathBuf) -> FileRef {
        FileRef::file(path)
    }
}

impl From<&FileRef> for FileRef {
    fn from(file: &FileRef) -> FileRef {
        file.clone()
    }
}

/// The bytes of a [`FileRef`]: a read-only memory map, or static memory.
pub struct Bytes(Inner);

enum Inner {
    /// The mapping of `file` from byte `offset` on.
    Map {
        map: memmap2::Mmap,
        file: std::fs::File,
        offset: u64,
    },
    Static(&'static [u8]),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Inner::Map { map, .. } => map,
            Inner::Static(bytes) => bytes,
        }
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Bytes {
    /// Drops the mapped pages of `range` (whole pages only) from this process, once their
    /// contents have been copied: they would otherwise count twice towards resident memory.
    /// They are read again from the file if touched later. Does nothing for static bytes.
    pub fn release(&self, range: std::ops::Range<usize>) {
        #[cfg(unix)]
        if let Inner::Map { map, .. } = &self.0 {
            // The mapping's start is page-aligned only when its offset in the file is; round
            // inwards from the real addresses so that no byte outside `range` is dropped.
            const PAGE: usize = 4096;
            let base = map.as_ptr() as usize;
            let first = (base + range.start).div_ceil(PAGE) * PAGE - base;
            let last = ((base + range.end.min(map.len())) / PAGE * PAGE).saturating_sub(base);
            if last > first {
                // SAFETY: the mapping is read-only and file-backed; MADV_DONTNEED only drops
                // the pages, which are read again from the file if touched later.
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        first,
                        last - first,
                    )
                };
            }
        }
        #[cfg(not(unix))]
        let _ = range;
    }

    /// Copies the bytes at `start..start + buf.len()` into `buf`, for scattered small reads
    /// (a token embedding's rows): read from the file rather than through the mapping, so that
    /// the pages stay in the page cache and out of this process's resident memory, where a
    /// fault would map whole large folios (megabytes) for one row.
    pub fn copy_range(&self, start: usize, buf: &mut [u8]) -> std::io::Result<()> {
        let end = start
            .checked_add(buf.len())
            .filter(|&end| end <= self.len());
        let Some(end) = end else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "bytes {start}..+{} lie past the end ({} bytes)",
                    buf.len(),
                    self.len()
                ),
            ));
        };
        match &self.0 {
            #[cfg(unix)]
            Inner::Map { file, offset, .. } => {
                use std::os::unix::fs::FileExt;
                file.read_exact_at(buf, offset + start as u64)
            }
            _ => {
                buf.copy_from_slice(&self[start..end]);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_their_bytes_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..20000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let r = FileRef::range("f#x".into(), p.clone(), 5000, 9000);
        let bytes = r.map().unwrap();
        assert_eq!(&bytes[..], &data[5000..14000]);
        bytes.release(0..9000);
        assert_eq!(&bytes[..], &data[5000..14000], "released pages read back");
        let mut row = [0u8; 700];
        bytes.copy_range(8000, &mut row).unwrap();
        assert_eq!(&row[..], &data[13000..13700], "read through the file");
        assert!(
            bytes.copy_range(8500, &mut row).is_err(),
            "past the end of the range"
        );
        assert_eq!(FileRef::file(&p).map().unwrap().len(), 20000);
        let empty = FileRef::range("f#e".into(), p.clone(), 20000, 0);
        assert!(empty.map().unwrap().is_empty());
        let past = FileRef::range("f#y".into(), p, 15000, 9000);
        let err = past.map().err().unwrap().to_string();
        assert!(err.contains("f#y") && err.contains("truncated"), "{err}");
    }
}
