//! Downloads into the cache: each file the package needs, verified, written once under a lock,
//! resumed with a range request when interrupted.

use super::cache::link;
use super::checksum::{Checksum, digest_file};
use super::client::Hub;
use super::http::{ATTEMPTS, backoff, percent_encode, transport};
use super::select::{RepoInfo, Sibling, module_configs, select};
use crate::import::ImportEvent;
use crate::package::check_relative;
use crate::repo::RepoSpec;
use crate::{Error, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

impl Hub {
    /// Downloads what the package needs and is not cached yet, records the ref; returns the path
    /// to import (the snapshot directory, or the GGUF file in it).
    pub(super) fn download_all(
        &self,
        spec: &RepoSpec,
        info: &RepoInfo,
        quantization: Option<&str>,
        progress: &mut dyn FnMut(ImportEvent<'_>),
    ) -> Result<PathBuf> {
        let commit = &info.sha;
        let files = select(info, quantization, &spec.repo_id)?;
        let mut gguf = None;
        for sibling in &files {
            let path = self.fetch(spec, commit, sibling, progress)?;
            if sibling.rfilename.ends_with("model.safetensors.index.json") {
                // Follow the shard index.
                #[derive(serde::Deserialize)]
                struct Index {
                    weight_map: std::collections::BTreeMap<String, String>,
                }
                let index: Index = crate::files::read_json(&path)?;
                let mut shards: Vec<&String> = index.weight_map.values().collect();
                shards.sort();
                shards.dedup();
                for shard in shards {
                    let sib = info
                        .siblings
                        .iter()
                        .find(|s| &s.rfilename == shard)
                        .ok_or_else(|| Error::RemoteFileNotFound {
                            repo: spec.repo_id.clone(),
                            file: shard.clone(),
                        })?;
                    self.fetch(spec, commit, sib, progress)?;
                }
            }
            if sibling.rfilename == "modules.json" {
                // sentence-transformers modules: each folder's config.json (import reads the
                // Pooling module's). Only files the listing has are looked up, so a hostile
                // path in modules.json names nothing to download.
                for config in module_configs(&path) {
                    if let Some(sib) = info.siblings.iter().find(|s| s.rfilename == config) {
                        self.fetch(spec, commit, sib, progress)?;
                    }
                }
            }
            if sibling.rfilename.to_lowercase().ends_with(".gguf") {
                gguf = Some(path);
            }
        }
        if &spec.revision != commit {
            self.write_ref(spec, commit)?;
        }
        Ok(gguf.unwrap_or_else(|| self.repo_dir(spec).join("snapshots").join(commit)))
    }

    /// Downloads `sibling` of `commit` into the cache (unless there already), verified; returns
    /// its snapshot path.
    fn fetch(
        &self,
        spec: &RepoSpec,
        commit: &str,
        sibling: &Sibling,
        progress: &mut dyn FnMut(ImportEvent<'_>),
    ) -> Result<PathBuf> {
        let repo_dir = self.repo_dir(spec);
        let file = sibling.rfilename.as_str();
        let snapshot = repo_dir
            .join("snapshots")
            .join(commit)
            .join(check_relative("file", file)?);
        let url = format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            spec.repo_id,
            commit,
            percent_encode(file)
        );
        let checksum = match self.listed_checksum(spec, sibling)? {
            Some(c) => c,
            // A commit's files never change: what its snapshot holds is the file.
            None if snapshot.exists() => {
                progress(ImportEvent::Cached { path: file });
                return Ok(snapshot);
            }
            None => self.announced_checksum(spec, &url, file)?,
        };
        let checksum = Checksum {
            size: checksum.size.or(sibling.size),
            ..checksum
        };
        let blob = repo_dir.join("blobs").join(&checksum.value);
        if snapshot.exists() && blob.exists() {
            progress(ImportEvent::Cached { path: file });
            return Ok(snapshot);
        }
        std::fs::create_dir_all(repo_dir.join("blobs"))
            .map_err(|e| Error::write(repo_dir.join("blobs"), e))?;
        // One writer per blob: a second pull of the same file waits here, then finds it done.
        // Locks live where huggingface_hub keeps them (`.locks/models--org--name/`), and stay:
        // deleting a lock file that another process waits on would let a third one in.
        let locks = self
            .cache
            .path()
            .join(".locks")
            .join(repo_dir.file_name().expect("repo dir has a name"));
        std::fs::create_dir_all(&locks).map_err(|e| Error::write(&locks, e))?;
        let lock_path = locks.join(format!("{}.lock", checksum.value));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::write(&lock_path, e))?;
        lock.lock().map_err(|e| Error::io(&lock_path, e))?;
        if blob.exists() {
            progress(ImportEvent::Cached { path: file });
        } else {
            self.download(spec, &url, file, &blob, &checksum, progress)?;
        }
        link(&blob, &snapshot)?;
        drop(lock);
        Ok(snapshot)
    }

    /// Downloads into `blob`, resuming a previous `.incomplete`, verifying the digest; on a
    /// mismatch the partial download is deleted.
    fn download(
        &self,
        spec: &RepoSpec,
        url: &str,
        file: &str,
        blob: &Path,
        checksum: &Checksum,
        progress: &mut dyn FnMut(ImportEvent<'_>),
    ) -> Result<()> {
        let size = checksum.size;
        let partial = blob.with_extension("incomplete");
        let mut attempt = 0;
        loop {
            let have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
            let have = if size.is_some_and(|s| have > s) {
                0
            } else {
                have
            };
            progress(ImportEvent::Download {
                path: file,
                size: size.unwrap_or(0),
                resume_from: have,
            });
            let result = self.transfer(spec, url, file, &partial, have, progress);
            match result {
                Ok(()) => break,
                // A dropped or stalled transfer resumes from what arrived.
                Err(Error::Network { .. } | Error::Timeout { .. }) if attempt + 1 < ATTEMPTS => {
                    attempt += 1;
                    backoff(attempt);
                }
                Err(e) => return Err(e),
            }
        }
        let (len, found) = digest_file(&partial, checksum.kind)?;
        let wrong_size = size.filter(|&s| s != len);
        if found != checksum.value || wrong_size.is_some() {
            let deleted = match std::fs::remove_file(&partial) {
                Ok(()) => "the partial download was deleted".to_string(),
                Err(e) => format!(
                    "the partial download could not be deleted ({e}): delete {}",
                    partial.display()
                ),
            };
            let differs = match wrong_size {
                Some(s) if found == checksum.value => {
                    format!("it is {len} bytes, but the hub announced {s} bytes")
                }
                _ => format!(
                    "its {} is {found}, but the hub announced {} (in {})",
                    checksum.kind.name(),
                    checksum.value,
                    checksum.announced_in
                ),
            };
            return Err(Error::ChecksumMismatch {
                repo: format!("{}@{}", spec.repo_id, spec.revision),
                file: file.to_string(),
                message: format!("downloaded from {}, {differs}; {deleted}", self.endpoint),
            });
        }
        std::fs::rename(&partial, blob).map_err(|e| Error::write(blob, e))
    }

    /// One HTTP transfer appended to `partial` from byte `have` (or from the start when the
    /// server ignores the range).
    fn transfer(
        &self,
        spec: &RepoSpec,
        url: &str,
        file: &str,
        partial: &Path,
        have: u64,
        progress: &mut dyn FnMut(ImportEvent<'_>),
    ) -> Result<()> {
        let resp = self.get(url, have, spec, Some(file))?;
        let resumed = have > 0 && resp.status() == 206;
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(resumed)
            .write(true)
            .truncate(!resumed)
            .open(partial)
            .map_err(|e| Error::write(partial, e))?;
        let mut done = if resumed { have } else { 0 };
        let mut reader = resp.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = out.sync_all();
                    let timed_out = matches!(
                        e.kind(),
                        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                    );
                    return Err(transport(
                        url,
                        &format!("connection lost after {done} bytes: {e}"),
                        timed_out,
                    ));
                }
            };
            out.write_all(&buf[..n])
                .map_err(|e| Error::write(partial, e))?;
            done += n as u64;
            progress(ImportEvent::Bytes(done));
        }
        out.sync_all().map_err(|e| Error::write(partial, e))
    }
}

#[cfg(test)]
mod tests {
    use crate::Error;
    use std::io::Write;
    use std::path::Path;

    #[test]
    fn disk_full_is_its_own_error() {
        let e = Error::write(
            Path::new("/x"),
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        assert!(matches!(e, Error::DiskFull { .. }), "{e}");
        if Path::new("/dev/full").exists() {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap();
            let e = f
                .write_all(&[0u8; 4096])
                .and_then(|_| f.sync_all())
                .unwrap_err();
            assert!(matches!(
                Error::write(Path::new("/dev/full"), e),
                Error::DiskFull { .. }
            ));
        }
    }
}
