//! What an import source is, and where it came from: a GGUF file, a directory holding a
//! TensorFlow Lite graph, or a Hugging Face model directory (possibly a cache snapshot or cache
//! entry, whose ref is resolved here). Symbolic links that leave the source are refused.

use super::ImportOptions;
use crate::files::read_json;
use crate::manifest::{Provenance, SourceKind};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The kinds of source, each read by its own module.
pub(super) enum Kind {
    /// A GGUF file (canonical path).
    Gguf(PathBuf),
    /// A directory holding one `.tflite` graph, and that file.
    Graph(SourceDir, PathBuf),
    /// A Hugging Face model directory.
    Directory(SourceDir),
}

/// Says what `src` is.
pub(super) fn open(src: &Path, options: &ImportOptions) -> Result<Kind> {
    if std::fs::metadata(src).is_ok_and(|m| m.is_file()) {
        return Ok(Kind::Gguf(
            src.canonicalize().map_err(|e| Error::io(src, e))?,
        ));
    }
    let dir = directory(src, options)?;
    Ok(match tflite_file(&dir.dir)? {
        Some(file) => Kind::Graph(dir, file),
        None => Kind::Directory(dir),
    })
}

/// The provenance of a single file given on the command line.
pub(super) fn file_provenance(path: &Path, options: &ImportOptions) -> Provenance {
    options.provenance.clone().unwrap_or(Provenance {
        kind: SourceKind::Local,
        path: Some(path.display().to_string()),
        repo_id: options.repo_id.clone(),
        revision: options.revision.clone(),
        commit: None,
    })
}

/// Files copied next to the manifests when the source has them.
const SHARED_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "generation_config.json",
];

/// A directory to import and where it came from.
pub(super) struct SourceDir {
    pub dir: PathBuf,
    provenance: Provenance,
}

impl SourceDir {
    /// What to record as the package's provenance: the caller's, else where the source is.
    pub fn provenance(&self, options: &ImportOptions) -> Provenance {
        options
            .provenance
            .clone()
            .unwrap_or_else(|| self.provenance.clone())
    }
}

/// Most entries a source directory may hold (a model directory holds a few dozen).
const MAX_SOURCE_ENTRIES: usize = 100_000;

/// Checks that no symbolic link under `dir` leads outside `root` (the source directory, or
/// for a Hugging Face cache snapshot the cache entry whose blobs its links point at): import
/// reads and copies only files of the source, never what a link drags in from elsewhere.
fn check_links(dir: &Path, root: &Path) -> Result<()> {
    let mut stack = vec![(dir.to_path_buf(), 0)];
    let mut seen = 0usize;
    while let Some((folder, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&folder).map_err(|e| Error::io(&folder, e))? {
            let entry = entry.map_err(|e| Error::io(&folder, e))?;
            seen += 1;
            if seen > MAX_SOURCE_ENTRIES {
                return Err(Error::Import {
                    path: dir.to_path_buf(),
                    message: format!(
                        "holds more than {MAX_SOURCE_ENTRIES} entries; is this a model directory?"
                    ),
                });
            }
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
            if kind.is_symlink() {
                let target = path.canonicalize().ok();
                if !target.as_ref().is_some_and(|t| t.starts_with(root)) {
                    return Err(Error::Import {
                        path: path.clone(),
                        message: format!(
                            "is a symbolic link to {}, outside the source directory {}; import copies only the source's own files (copy the file in instead of linking it)",
                            target.map_or_else(
                                || "a missing file".to_string(),
                                |t| t.display().to_string()
                            ),
                            root.display()
                        ),
                    });
                }
            } else if kind.is_dir() && depth < 3 {
                stack.push((path, depth + 1));
            }
        }
    }
    Ok(())
}

/// The shared files (tokenizer, preprocessor and generation configs) the source has, as
/// (source, package path); each JSON file must parse.
pub(super) fn shared_files(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for name in SHARED_FILES {
        let path = dir.join(name);
        if path.is_file() {
            read_json::<serde_json::Value>(&path)?;
            out.push((path, name.to_string()));
        }
    }
    Ok(out)
}

/// `models--org--name` → `org/name`.
fn repo_id_from_cache_dir(name: &str) -> Option<String> {
    let rest = name.strip_prefix("models--")?;
    Some(rest.replace("--", "/"))
}

/// The repo id of a path inside a Hugging Face cache (`.../models--org--name[/snapshots/SHA]`).
pub fn cache_repo_id(path: &Path) -> Option<String> {
    let abs = path.canonicalize().ok()?;
    abs.ancestors().take(3).find_map(|p| {
        p.file_name()
            .and_then(|n| repo_id_from_cache_dir(&n.to_string_lossy()))
    })
}

fn directory(src: &Path, options: &ImportOptions) -> Result<SourceDir> {
    let meta = std::fs::metadata(src).map_err(|e| Error::io(src, e))?;
    if !meta.is_dir() {
        return Err(Error::Import {
            path: src.to_path_buf(),
            message: "not a directory (expected a Hugging Face model directory)".into(),
        });
    }
    let abs = src.canonicalize().map_err(|e| Error::io(src, e))?;
    // A cache entry `models--org--name`: resolve the ref to a snapshot.
    if let Some(repo_id) = abs
        .file_name()
        .and_then(|n| repo_id_from_cache_dir(&n.to_string_lossy()))
        && abs.join("snapshots").is_dir()
    {
        let reference = options.revision.as_deref().unwrap_or("main");
        let commit = match std::fs::read_to_string(abs.join("refs").join(reference)) {
            Ok(sha) => sha.trim().to_string(),
            Err(_) if abs.join("snapshots").join(reference).is_dir() => reference.to_string(),
            Err(_) => {
                return Err(Error::Import {
                    path: abs.clone(),
                    message: format!(
                        "cache entry has no ref `{reference}` (choose one with --revision, or import a directory under snapshots/)"
                    ),
                });
            }
        };
        crate::repo::check_repo_id(&repo_id)?;
        crate::package::check_relative("cache ref", &commit)?;
        let dir = abs.join("snapshots").join(&commit);
        check_links(&dir, &abs)?;
        return Ok(SourceDir {
            provenance: Provenance {
                kind: SourceKind::HfCache,
                path: Some(dir.display().to_string()),
                repo_id: Some(options.repo_id.clone().unwrap_or(repo_id)),
                revision: Some(reference.to_string()),
                commit: Some(commit),
            },
            dir,
        });
    }
    // A snapshot inside a cache: .../models--org--name/snapshots/<sha>.
    let parent = abs.parent();
    let in_cache = parent
        .filter(|p| p.file_name().is_some_and(|n| n == "snapshots"))
        .and_then(|p| p.parent())
        .and_then(|p| p.file_name())
        .and_then(|n| repo_id_from_cache_dir(&n.to_string_lossy()));
    // A snapshot's links point into its cache entry's blobs; elsewhere the directory itself
    // is the boundary.
    let root = match &in_cache {
        Some(_) => abs.ancestors().nth(2).unwrap_or(&abs).to_path_buf(),
        None => abs.clone(),
    };
    check_links(&abs, &root)?;
    if let Some(repo_id) = &in_cache {
        crate::repo::check_repo_id(repo_id)?;
    }
    let provenance = match in_cache {
        Some(repo_id) => Provenance {
            kind: SourceKind::HfCache,
            path: Some(abs.display().to_string()),
            repo_id: Some(options.repo_id.clone().unwrap_or(repo_id)),
            revision: options.revision.clone(),
            commit: abs.file_name().map(|n| n.to_string_lossy().into_owned()),
        },
        None => Provenance {
            kind: SourceKind::Local,
            path: Some(abs.display().to_string()),
            repo_id: options.repo_id.clone(),
            revision: options.revision.clone(),
            commit: None,
        },
    };
    Ok(SourceDir {
        dir: abs,
        provenance,
    })
}

/// The `.tflite` file of a directory, if it holds one (several are an error).
fn tflite_file(dir: &Path) -> Result<Option<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tflite") && p.is_file())
        .collect();
    found.sort();
    match found.len() {
        0 | 1 => Ok(found.pop()),
        _ => Err(Error::Import {
            path: dir.to_path_buf(),
            message: format!(
                "holds {} .tflite files ({}); import a directory with one model",
                found.len(),
                found
                    .iter()
                    .filter_map(|p| p.file_name())
                    .map(|n| n.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}
