//! The package store: one directory of packages, each addressed by an id — the Hugging Face repo
//! id (`org/name`), with `@revision` when it is not `main`, or `local/NAME` for imports without
//! one. Commands take an id wherever they take a package path.

use crate::package::Package;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// A directory of packages.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// One package of the store.
#[derive(Debug)]
pub struct StoreEntry {
    /// Its id.
    pub id: String,
    /// Its directory.
    pub path: PathBuf,
    /// The package, or why it does not open.
    pub package: Result<Package>,
}

/// The id of a package pulled from `repo_id` at `revision`.
pub fn package_id(repo_id: &str, revision: &str) -> String {
    if revision == "main" {
        repo_id.to_string()
    } else {
        format!("{repo_id}@{revision}")
    }
}

/// Checks an id: `name` or `org/name`, optionally `@revision`, in plain characters (no `--`,
/// which stands for `/` in directory names).
fn check_id(id: &str) -> Result<()> {
    let bad =
        || Error::InvalidArgument(format!("`{id}` is not a package id (org/name[@revision])"));
    let (repo, revision) = match id.split_once('@') {
        Some((repo, rev)) => (repo, Some(rev)),
        None => (id, None),
    };
    crate::repo::check_repo_id(repo).map_err(|_| bad())?;
    if repo.contains("--") {
        return Err(bad());
    }
    if let Some(rev) = revision {
        // What pull refuses never names a package; and in a directory name only plain
        // characters, without `--` (it stands for `/`).
        let ok = crate::repo::check_revision(rev).is_ok()
            && rev
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains("--"))
            && rev
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

impl Store {
    /// The store at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    /// The default store: `INFEROX_PACKAGES`, else `$XDG_DATA_HOME/inferox/packages`, else
    /// `~/.local/share/inferox/packages`.
    pub fn from_env() -> Result<Store> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(dir) = env("INFEROX_PACKAGES") {
            return Ok(Store::at(dir));
        }
        let data = env("XDG_DATA_HOME")
            .or_else(|| env("HOME").map(|h| h.join(".local/share")))
            .ok_or_else(|| {
                Error::InvalidArgument(
                    "no INFEROX_PACKAGES, XDG_DATA_HOME or HOME to place the package store in"
                        .into(),
                )
            })?;
        Ok(Store::at(data.join("inferox/packages")))
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the package `id` lives (whether or not it exists).
    pub fn path_for(&self, id: &str) -> Result<PathBuf> {
        check_id(id)?;
        Ok(self.root.join(id.replace('/', "--")))
    }

    /// Every package in the store, sorted by id.
    pub fn list(&self) -> Result<Vec<StoreEntry>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.root, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Hidden entries are writes in progress or leftovers of interrupted ones.
            if name.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            out.push(StoreEntry {
                id: name.replace("--", "/"),
                package: Package::open(entry.path()),
                path: entry.path(),
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Opens `name_or_path`: a package directory, or the id of a package in the store.
    pub fn open(&self, name_or_path: &str) -> Result<Package> {
        let path = Path::new(name_or_path);
        if path.exists() {
            return Package::open(path);
        }
        match self.path_for(name_or_path) {
            Ok(p) if p.is_dir() => Package::open(p),
            Ok(_) => Err(Error::PackageNotFound {
                name: name_or_path.to_string(),
                store: self.root.clone(),
            }),
            // Not an id: report it as the missing path it is.
            Err(_) => Package::open(path),
        }
    }

    /// Removes the package `id`; returns the directory it was in.
    pub fn remove(&self, id: &str) -> Result<PathBuf> {
        let path = self.path_for(id)?;
        if !path.is_dir() {
            return Err(Error::PackageNotFound {
                name: id.to_string(),
                store: self.root.clone(),
            });
        }
        // Only what inferox wrote is deleted: a package holding files of the user's stays.
        crate::package::check_replaceable(&path)?;
        // Out of sight first, so that an interrupted removal leaves no half package under the id.
        let doomed = self.root.join(format!(
            ".{}.removing-{}",
            id.replace('/', "--"),
            std::process::id()
        ));
        std::fs::rename(&path, &doomed).map_err(|e| Error::io(&path, e))?;
        std::fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_to_directories() {
        let s = Store::at("/store");
        assert_eq!(
            s.path_for("org/name").unwrap(),
            Path::new("/store/org--name")
        );
        assert_eq!(
            s.path_for("org/name@v1").unwrap(),
            Path::new("/store/org--name@v1")
        );
        assert_eq!(
            s.path_for("local/minilm").unwrap(),
            Path::new("/store/local--minilm")
        );
        for bad in [
            "../x",
            "org/../x",
            "org/name@../x",
            "a--b/c",
            "org/name@",
            "/abs",
            "org/name@a b",
            "org/name@../../x",
            "org/name@a/../b",
            "org/name@/abs",
            "org/name@-x",
            "org/name@a.lock",
            "org/name@a//b",
            "org\\name",
            "org/name@a\\b",
        ] {
            assert!(s.path_for(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(package_id("org/name", "main"), "org/name");
        assert_eq!(package_id("org/name", "v2"), "org/name@v2");
        assert_eq!(
            s.path_for("org/name@refs/pr/1").unwrap(),
            Path::new("/store/org--name@refs--pr--1")
        );
    }

    #[test]
    fn unknown_names_say_where_they_looked() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::at(dir.path());
        let err = s.open("org/missing").unwrap_err();
        assert!(matches!(err, Error::PackageNotFound { .. }), "{err}");
        assert!(s.list().unwrap().is_empty());
    }
}
