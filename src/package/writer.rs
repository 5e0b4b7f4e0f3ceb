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

impl PackageWriter {
    /// Starts a package that will live at `dest`. Fails if `dest` exists, unless `overwrite`.
    pub fn create(dest: &Path, overwrite: bool) -> Result<Self> {
        if dest.exists() && !overwrite {
            return Err(Error::AlreadyExists {
                path: dest.to_path_buf(),
            });
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
        let mut output = std::fs::File::create(&target).map_err(|e| Error::io(&target, e))?;
        let (size, sha256) = {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut output);
            let r = copy_hashed(input, Some(&mut w), progress);
            let r = r.and_then(|r| w.flush().map(|_| r));
            r.map_err(|e| Error::io(src, e))?
        };
        output.sync_all().map_err(|e| Error::io(&target, e))?;
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
        if self.dest.exists() {
            if !self.overwrite {
                return Err(Error::AlreadyExists {
                    path: self.dest.clone(),
                });
            }
            let name = self.dest.file_name().unwrap_or_default().to_string_lossy();
            let old = self
                .dest
                .with_file_name(format!(".{name}.old-{}", std::process::id()));
            rename(&self.dest, &old)?;
            if let Err(e) = rename(&self.tmp, &self.dest) {
                let _ = std::fs::rename(&old, &self.dest);
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
