//! The Hugging Face cache layout (`models--org--name/{blobs,refs,snapshots}`): where a
//! repository lives, the commit and snapshot of a revision offline, refs written after a pull,
//! and blobs linked into snapshots.

use super::client::Hub;
use crate::package::check_relative;
use crate::repo::{RepoSpec, is_commit};
use crate::{Error, Result};
use hf_hub::{Repo, RepoType};
use std::path::{Path, PathBuf};

impl Hub {
    pub(super) fn repo_dir(&self, spec: &RepoSpec) -> PathBuf {
        self.cache
            .path()
            .join(Repo::new(spec.repo_id.clone(), RepoType::Model).folder_name())
    }

    /// The commit a revision points at, from the cache alone.
    pub(super) fn cached_commit(&self, spec: &RepoSpec) -> Result<String> {
        let dir = self.repo_dir(spec);
        let ref_path = dir
            .join("refs")
            .join(check_relative("revision", &spec.revision)?);
        let commit = match std::fs::read_to_string(&ref_path) {
            Ok(sha) => sha.trim().to_string(),
            Err(_)
                if is_commit(&spec.revision)
                    && dir.join("snapshots").join(&spec.revision).is_dir() =>
            {
                spec.revision.clone()
            }
            Err(_) => {
                return Err(Error::Offline {
                    repo: spec.repo_id.clone(),
                    what: format!(
                        "revision `{}` is not in the Hugging Face cache at {}",
                        spec.revision,
                        self.cache_dir().display()
                    ),
                });
            }
        };
        if !is_commit(&commit) {
            return Err(Error::Offline {
                repo: spec.repo_id.clone(),
                what: format!(
                    "{} holds {commit:?}, not a commit id (delete it and pull once online)",
                    ref_path.display()
                ),
            });
        }
        if !dir.join("snapshots").join(&commit).is_dir() {
            return Err(Error::Offline {
                repo: spec.repo_id.clone(),
                what: format!("snapshot {commit} is not in the Hugging Face cache"),
            });
        }
        Ok(commit)
    }

    /// `refs/<revision>` ← `commit`, written under a temporary name and renamed into place.
    pub(super) fn write_ref(&self, spec: &RepoSpec, commit: &str) -> Result<()> {
        let path = self
            .repo_dir(spec)
            .join("refs")
            .join(check_relative("revision", &spec.revision)?);
        let dir = path.parent().expect("a ref has a parent");
        std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
        let name = path
            .file_name()
            .expect("a ref has a name")
            .to_string_lossy();
        let tmp = temporary(dir, &name, "tmp");
        std::fs::write(&tmp, commit).map_err(|e| Error::write(&path, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::write(&path, e)
        })
    }
}

/// What to import from a cached snapshot: the directory, or its GGUF file.
pub(super) fn snapshot_source(
    dir: &Path,
    quantization: Option<&str>,
    repo: &str,
) -> Result<PathBuf> {
    let has_safetensors =
        dir.join("model.safetensors").exists() || dir.join("model.safetensors.index.json").exists();
    if has_safetensors && quantization.is_none() {
        return Ok(dir.to_path_buf());
    }
    let mut ggufs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("gguf"))
        })
        .filter(|p| {
            quantization.is_none_or(|q| {
                p.file_name().is_some_and(|n| {
                    n.to_string_lossy()
                        .to_lowercase()
                        .contains(&q.to_lowercase())
                })
            })
        })
        .collect();
    ggufs.sort();
    match ggufs.len() {
        1 => Ok(ggufs.remove(0)),
        0 => Err(Error::Offline {
            repo: repo.to_string(),
            what: format!(
                "the cached snapshot {} has no weights to import{}",
                dir.display(),
                quantization
                    .map(|q| format!(" matching `{q}`"))
                    .unwrap_or_default()
            ),
        }),
        _ => Err(Error::InvalidArgument(format!(
            "the cached snapshot of {repo} has several GGUF files; choose one with --quant"
        ))),
    }
}

/// A name in `dir` for a temporary beside `name`, unique to this process and call: two pulls,
/// in two processes or two threads of one, may write the same ref or snapshot link at once.
fn temporary(dir: &Path, name: &str, what: &str) -> PathBuf {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!(".{name}.{what}-{}-{call}", std::process::id()))
}

/// `snapshots/<commit>/<file>` → `../../blobs/<etag>`, as the Hugging Face cache lays it out;
/// made under a temporary name and renamed into place, so a reader never sees it half made.
pub(super) fn link(blob: &Path, snapshot: &Path) -> Result<()> {
    let dir = snapshot.parent().expect("snapshot files have a parent");
    std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
    let name = snapshot
        .file_name()
        .expect("snapshot files have a name")
        .to_string_lossy();
    let tmp = temporary(dir, &name, "link");
    #[cfg(unix)]
    {
        let depth = snapshot
            .strip_prefix(
                blob.parent()
                    .and_then(Path::parent)
                    .expect("blobs/ has a parent"),
            )
            .map(|p| p.components().count() - 1)
            .unwrap_or(2);
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(blob.file_name().expect("blob has a name"));
        std::os::unix::fs::symlink(&target, &tmp).map_err(|e| Error::write(snapshot, e))?;
    }
    #[cfg(not(unix))]
    std::fs::copy(blob, &tmp).map_err(|e| Error::write(snapshot, e))?;
    std::fs::rename(&tmp, snapshot).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::write(snapshot, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the link's temporary name was unique per process only, so two threads
    /// linking the same snapshot file removed or renamed each other's temporary (a pull failed
    /// now and then in tests/hub.rs `concurrent_pulls_do_not_corrupt_each_other`).
    #[test]
    fn threads_link_the_same_snapshot_file_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("models--o--n/blobs/abc");
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::fs::write(&blob, b"weights").unwrap();
        let snapshot = dir
            .path()
            .join("models--o--n/snapshots/0123/model.safetensors");
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..200 {
                        link(&blob, &snapshot).unwrap();
                    }
                });
            }
        });
        assert_eq!(std::fs::read(&snapshot).unwrap(), b"weights");
        let left: Vec<_> = std::fs::read_dir(snapshot.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["model.safetensors"], "no temporary is left behind");
    }
}
