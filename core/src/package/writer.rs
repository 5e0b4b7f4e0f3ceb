//! Writing a package atomically: everything goes into a hidden sibling directory
//! (`.NAME.partial-PID`) that is renamed into place only when complete. An interrupted write leaves
//! no package behind; its leftovers are removed by the next write to the same destination.

use super::{Package, check_relative};
use crate::files::{copy_hashed, write_atomic};
use crate::manifest::{
    FORMAT_VERSION, FileEntry, METADATA_FILE, MODEL_INFO_FILE, Metadata, ModelInfo, Provenance,
};
use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Builds a package in a temporary directory and moves it into place on [`finish`].
///
/// [`finish`]: PackageWriter::finish
pub struct PackageWriter {
    dest: PathBuf,
    tmp: PathBuf,
    overwrite: bool,
    files: Vec<FileEntry>,
    finished: bool,
}

fn process_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true; // cannot tell: keep it
    }
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes `.NAME.partial-PID` / `.NAME.old-PID` directories of processes that no longer run.
fn remove_stale(parent: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let pid = [".partial-", ".old-"].iter().find_map(|tag| {
            file_name
                .strip_prefix(&format!(".{name}{tag}"))
                .and_then(|pid| pid.parse::<u32>().ok())
        });
        if let Some(pid) = pid
            && pid != std::process::id()
            && !process_alive(pid)
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Checks that `dest` may be replaced by a new package: it does not exist, or it is an empty
/// directory, or it is a package whose every file is listed in its metadata.json (so that an
/// overwrite only ever replaces what inferox wrote). Symlinks, regular files, other
/// directories and packages holding files of someone else's are refused with
/// [`Error::NotReplaceable`], which names the path and why.
pub fn check_replaceable(dest: &Path) -> Result<()> {
    let refuse = |reason: String| {
        Err(Error::NotReplaceable {
            path: dest.to_path_buf(),
            reason,
        })
    };
    let meta = match std::fs::symlink_metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dest, e)),
    };
    if meta.file_type().is_symlink() {
        return refuse("it is a symbolic link, not a package directory".into());
    }
    if !meta.is_dir() {
        return refuse("it is a file, not a package directory".into());
    }
    let mut entries = std::fs::read_dir(dest).map_err(|e| Error::io(dest, e))?;
    if entries.next().is_none() {
        return Ok(());
    }
    let metadata_path = dest.join(METADATA_FILE);
    for required in [MODEL_INFO_FILE, METADATA_FILE] {
        if !std::fs::symlink_metadata(dest.join(required)).is_ok_and(|m| m.is_file()) {
            return refuse(format!(
                "it is a non-empty directory without {required}, so not an inferox package"
            ));
        }
    }
    // Only the list of files is needed, so any format version of metadata.json will do.
    #[derive(serde::Deserialize)]
    struct Listed {
        path: String,
    }
    #[derive(serde::Deserialize)]
    struct Files {
        files: Vec<Listed>,
    }
    let listed: Files =
        crate::files::read_json(&metadata_path).map_err(|_| Error::NotReplaceable {
            path: dest.to_path_buf(),
            reason: format!("{} is not an inferox file list", metadata_path.display()),
        })?;
    let listed: std::collections::BTreeSet<String> =
        listed.files.into_iter().map(|f| f.path).collect();
    // Walk without following symlinks: every file must be one the package lists.
    let mut stack = vec![(dest.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = format!("{prefix}{name}");
            let kind = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
            if kind.is_dir() {
                stack.push((entry.path(), format!("{rel}/")));
            } else if !(kind.is_file() && (rel == METADATA_FILE || listed.contains(&rel))) {
                return refuse(format!(
                    "`{rel}` is not one of the package's files (metadata.json does not list it)"
                ));
            }
        }
    }
    Ok(())
}

/// A writer that remembers whether writing failed.
struct WriteSide {
    inner: std::fs::File,
    failed: bool,
}

impl Write for WriteSide {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        self.failed |= r.is_err();
        r
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.inner.flush();
        self.failed |= r.is_err();
        r
    }
}

impl PackageWriter {
    /// Starts a package that will live at `dest`. Fails if `dest` exists, unless `overwrite`
    /// and [`check_replaceable`] allows it; nothing is created when it fails.
    pub fn create(dest: &Path, overwrite: bool) -> Result<Self> {
        if std::fs::symlink_metadata(dest).is_ok() {
            if !overwrite {
                return Err(Error::AlreadyExists {
                    path: dest.to_path_buf(),
                });
            }
            check_replaceable(dest)?;
        }
        let name = dest
            .file_name()
            .ok_or_else(|| {
                Error::InvalidArgument(format!("{}: not a valid package path", dest.display()))
            })?
            .to_string_lossy()
            .into_owned();
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        remove_stale(&parent, &name);
        let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(PackageWriter {
            dest: dest.to_path_buf(),
            tmp,
            overwrite,
            files: Vec::new(),
            finished: false,
        })
    }

    fn target(&self, rel: &str) -> Result<PathBuf> {
        let path = self.tmp.join(check_relative("package file", rel)?);
        if self.files.iter().any(|f| f.path == rel) {
            return Err(Error::InvalidArgument(format!("{rel} is written twice")));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        Ok(path)
    }

    /// Copies `src` into the package as `rel`, hashing it on the way; `progress` gets the bytes
    /// copied so far. Symlinks (as in a Hugging Face cache snapshot) are followed.
    pub fn copy_file(
        &mut self,
        src: &Path,
        rel: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let target = self.target(rel)?;
        let input = std::fs::File::open(src).map_err(|e| Error::io(src, e))?;
        let output = std::fs::File::create(&target).map_err(|e| Error::write(&target, e))?;
        // Tell a failed read (the source's fault) from a failed write (the destination's: a
        // full disk, say).
        let mut output = WriteSide {
            inner: output,
            failed: false,
        };
        let (size, sha256) = {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut output);
            let r = copy_hashed(input, Some(&mut w), progress);
            r.and_then(|r| w.flush().map(|_| r))
        }
        .map_err(|e| {
            if output.failed {
                Error::write(&target, e)
            } else {
                Error::io(src, e)
            }
        })?;
        output
            .inner
            .sync_all()
            .map_err(|e| Error::write(&target, e))?;
        self.files.push(FileEntry {
            path: rel.to_string(),
            size,
            sha256,
        });
        Ok(())
    }

    /// Writes `bytes` into the package as `rel`.
    pub fn write_bytes(&mut self, rel: &str, bytes: &[u8]) -> Result<()> {
        let target = self.target(rel)?;
        write_atomic(&target, bytes)?;
        let (size, sha256) = copy_hashed(bytes, None, |_| {}).map_err(|e| Error::io(&target, e))?;
        self.files.push(FileEntry {
            path: rel.to_string(),
            size,
            sha256,
        });
        Ok(())
    }

    /// Writes `value` as pretty JSON into the package as `rel`.
    pub fn write_json<T: serde::Serialize>(&mut self, rel: &str, value: &T) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(value)
            .map_err(|e| Error::InvalidArgument(format!("{rel}: cannot serialise: {e}")))?;
        bytes.push(b'\n');
        self.write_bytes(rel, &bytes)
    }

    /// Writes model_info.json and metadata.json, then moves the package into place.
    pub fn finish(mut self, info: &ModelInfo, source: Provenance) -> Result<Package> {
        self.write_json(MODEL_INFO_FILE, info)?;
        let mut files = std::mem::take(&mut self.files);
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let metadata = Metadata {
            format_version: FORMAT_VERSION,
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            inferox_version: env!("CARGO_PKG_VERSION").to_string(),
            source,
            files,
        };
        let mut bytes = serde_json::to_vec_pretty(&metadata)
            .map_err(|e| Error::InvalidArgument(format!("metadata.json: {e}")))?;
        bytes.push(b'\n');
        write_atomic(&self.tmp.join(METADATA_FILE), &bytes)?;
        if let Ok(dir) = std::fs::File::open(&self.tmp) {
            let _ = dir.sync_all();
        }
        self.move_into_place()?;
        self.finished = true;
        Package::open(&self.dest)
    }

    fn move_into_place(&self) -> Result<()> {
        let rename =
            |from: &Path, to: &Path| std::fs::rename(from, to).map_err(|e| Error::io(to, e));
        if std::fs::symlink_metadata(&self.dest).is_ok() {
            if !self.overwrite {
                return Err(Error::AlreadyExists {
                    path: self.dest.clone(),
                });
            }
            // Again: something may have appeared there while the package was written.
            check_replaceable(&self.dest)?;
            let name = self.dest.file_name().unwrap_or_default().to_string_lossy();
            let old = self
                .dest
                .with_file_name(format!(".{name}.old-{}", std::process::id()));
            rename(&self.dest, &old)?;
            if let Err(e) = rename(&self.tmp, &self.dest) {
                // Put the old package back; if another writer put its complete package there
                // in the meantime, that one stays and ours (the old one) goes.
                if std::fs::rename(&old, &self.dest).is_err() {
                    let _ = std::fs::remove_dir_all(&old);
                }
                return Err(e);
            }
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        } else {
            rename(&self.tmp, &self.dest)?;
        }
        if let Some(parent) = self.dest.parent()
            && let Ok(dir) = std::fs::File::open(if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            })
        {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for PackageWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}
