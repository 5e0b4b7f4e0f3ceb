//! A package on disk: opening it checks the format version, the manifests, that every listed file
//! is present with its recorded size, and that no path leaves the package. [`Package::verify`]
//! also checks the sha256 of every file. A package can also live inside an executable or in
//! static memory ([`bundle`]).

pub mod bundle;
mod writer;

use crate::paths;
pub use crate::paths::check_relative;
pub use writer::{PackageWriter, check_replaceable};

use crate::files::{hash_file, read_json};
use crate::manifest::{FORMAT_VERSION, METADATA_FILE, MODEL_INFO_FILE, Metadata, ModelInfo};
use crate::source::FileRef;
use crate::{Error, Result};
use bundle::Embedded;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// An opened, structurally valid package.
#[derive(Clone, Debug)]
pub struct Package {
    root: PathBuf,
    info: ModelInfo,
    metadata: Metadata,
    /// The file table when the package is inside an executable or static memory.
    embedded: Option<Embedded>,
}

/// Reads a manifest, checking its format version before its structure so that a newer package
/// gets a version error rather than a parse error.
fn read_manifest<T: DeserializeOwned>(file: &FileRef) -> Result<T> {
    let path = file.path();
    let value: serde_json::Value = read_json(file)?;
    match value.get("format_version").and_then(|v| v.as_u64()) {
        Some(v) if v == FORMAT_VERSION as u64 => {}
        Some(found) => {
            return Err(Error::FormatVersion {
                path: path.to_path_buf(),
                found,
                supported: FORMAT_VERSION,
            });
        }
        None => {
            return Err(Error::Manifest {
                path: path.to_path_buf(),
                field: "format_version".into(),
                message: "missing or not a number".into(),
            });
        }
    }
    serde_json::from_value(value).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

impl Package {
    /// Opens the package at `path` and checks its structure (not the hashes: see [`verify`]).
    ///
    /// [`verify`]: Package::verify
    /// A file given as `path` is opened as a bundle (see [`Package::open_bundle`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Package> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if !meta.is_dir() {
            return match Embedded::open_file(path)? {
                Some(embedded) => Package::from_embedded(embedded),
                None => Err(Error::NotAPackage {
                    path: path.to_path_buf(),
                    missing: "the package directory (this is a file, and not an inferox bundle)"
                        .into(),
                }),
            };
        }
        let root = path.canonicalize().map_err(|e| Error::io(path, e))?;
        for required in [MODEL_INFO_FILE, METADATA_FILE] {
            match std::fs::symlink_metadata(root.join(required)) {
                Ok(m) if m.is_file() => {}
                // The manifests are trusted to describe the package: never read them through a
                // link that may lead anywhere.
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::PathEscape {
                        field: format!("{required} (a symbolic link)"),
                        path: required.into(),
                    });
                }
                _ => {
                    return Err(Error::NotAPackage {
                        path: path.to_path_buf(),
                        missing: required.into(),
                    });
                }
            }
        }
        let info: ModelInfo = read_manifest(&FileRef::file(root.join(MODEL_INFO_FILE)))?;
        let metadata: Metadata = read_manifest(&FileRef::file(root.join(METADATA_FILE)))?;
        let package = Package {
            root,
            info,
            metadata,
            embedded: None,
        };
        package.check_structure()?;
        Ok(package)
    }

    /// Opens the package appended to the executable at `path` by [`bundle::write_bundle`],
    /// checking its file table and the CRC-32 of every file.
    pub fn open_bundle(path: impl AsRef<Path>) -> Result<Package> {
        let path = path.as_ref();
        match Embedded::open_file(path)? {
            Some(embedded) => Package::from_embedded(embedded),
            None => Err(Error::Bundle {
                path: path.to_path_buf(),
                message: "carries no package (no bundle trailer at its end)".into(),
            }),
        }
    }

    /// The package appended to the running executable, if it carries one. An executable with
    /// bytes after its image but no valid bundle is an error (truncated or damaged).
    pub fn open_embedded() -> Result<Option<Package>> {
        let exe = std::env::current_exe().map_err(|e| Error::io("the running executable", e))?;
        bundle::embedded_in_executable(&exe)?
            .map(Package::from_embedded)
            .transpose()
    }

    /// Opens a package embedded at build time with
    /// [`include_package!`](crate::include_package); its weights are read in place.
    pub fn from_static(bytes: &'static [u8]) -> Result<Package> {
        Package::from_embedded(Embedded::from_static(bytes)?)
    }

    fn from_embedded(embedded: Embedded) -> Result<Package> {
        let manifest = |rel: &str| {
            embedded.file(rel).ok_or_else(|| Error::NotAPackage {
                path: embedded.name().to_path_buf(),
                missing: rel.into(),
            })
        };
        embedded.check_contents()?;
        let info: ModelInfo = read_manifest(&manifest(MODEL_INFO_FILE)?)?;
        let metadata: Metadata = read_manifest(&manifest(METADATA_FILE)?)?;
        let package = Package {
            root: embedded.name().to_path_buf(),
            info,
            metadata,
            embedded: Some(embedded),
        };
        package.check_structure()?;
        Ok(package)
    }

    /// Whether the package is inside an executable or static memory rather than a directory.
    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// The name errors give for `rel`.
    fn display(&self, rel: &str) -> PathBuf {
        match &self.embedded {
            Some(e) => e.display(rel),
            None => self.root.join(rel),
        }
    }

    /// The size of `rel`, when it is a regular file in the package.
    fn size_of(&self, rel: &str) -> Option<u64> {
        match &self.embedded {
            Some(e) => e.size(rel),
            None => match std::fs::metadata(self.root.join(rel)) {
                Ok(m) if m.is_file() => Some(m.len()),
                _ => None,
            },
        }
    }

    /// `rel`'s bytes (checked to stay inside the package; `field` names it in errors).
    fn locate(&self, field: &str, rel: &str) -> Result<FileRef> {
        match &self.embedded {
            Some(e) => {
                paths::check_relative(field, rel)?;
                e.file(rel).ok_or_else(|| Error::MissingFile {
                    package: self.root.clone(),
                    file: rel.to_string(),
                    listed_in: "the request but not in the bundle".into(),
                })
            }
            None => Ok(FileRef::file(self.resolve(field, rel)?)),
        }
    }

    fn check_structure(&self) -> Result<()> {
        // Paths first: nothing is read or stat'ed through a path that leaves the package.
        for (i, file) in self.metadata.files.iter().enumerate() {
            self.check_path(&format!("{METADATA_FILE}: files[{i}].path"), &file.path)?;
        }
        let referenced = self.referenced_paths();
        for (field, rel) in &referenced {
            self.check_path(field, rel)?;
        }
        let mut listed = BTreeSet::new();
        for file in &self.metadata.files {
            if file.path == METADATA_FILE {
                return Err(Error::Manifest {
                    path: self.display(METADATA_FILE),
                    field: "files".into(),
                    message: "metadata.json cannot list itself".into(),
                });
            }
            let path = self.display(&file.path);
            let found = match self.size_of(&file.path) {
                Some(size) => size,
                None => {
                    return Err(Error::MissingFile {
                        package: self.root.clone(),
                        file: file.path.clone(),
                        listed_in: METADATA_FILE.into(),
                    });
                }
            };
            if found != file.size {
                return Err(Error::SizeMismatch {
                    path,
                    expected: file.size,
                    found,
                });
            }
            listed.insert(file.path.as_str());
        }
        // Every file the model description points at must be covered by the file list (and so
        // by its hashes).
        for (field, rel) in referenced {
            if !listed.contains(rel) {
                return Err(Error::MissingFile {
                    package: self.root.clone(),
                    file: rel.to_string(),
                    listed_in: format!("{MODEL_INFO_FILE} ({field}) but not in {METADATA_FILE}"),
                });
            }
        }
        if !listed.contains(MODEL_INFO_FILE) {
            return Err(Error::Manifest {
                path: self.display(METADATA_FILE),
                field: "files".into(),
                message: format!("does not list {MODEL_INFO_FILE}"),
            });
        }
        Ok(())
    }

    /// Every path model_info.json refers to, with the field it is in.
    fn referenced_paths(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        for (name, backend) in &self.info.backends {
            for (i, artifact) in backend.artifacts.iter().enumerate() {
                out.push((
                    format!("{MODEL_INFO_FILE}: backends.{name}.artifacts[{i}].path"),
                    artifact.path.as_str(),
                ));
            }
        }
        if let Some(template) = self
            .info
            .generation
            .as_ref()
            .and_then(|g| g.chat_template.as_ref())
        {
            out.push((
                format!("{MODEL_INFO_FILE}: generation.chat_template"),
                template.as_str(),
            ));
        }
        for spec in &self.info.io.inputs {
            if let Some(tok) = spec.tokenization() {
                out.push((
                    format!(
                        "{MODEL_INFO_FILE}: io.inputs.{}.preprocessing.tokenizer",
                        spec.name
                    ),
                    tok.tokenizer.as_str(),
                ));
            }
        }
        out
    }

    fn resolve(&self, field: &str, rel: &str) -> Result<PathBuf> {
        paths::resolve_inside(&self.root, field, rel)
    }

    /// Checks that `rel` stays inside the package.
    fn check_path(&self, field: &str, rel: &str) -> Result<()> {
        match &self.embedded {
            Some(_) => paths::check_relative(field, rel).map(|_| ()),
            None => self.resolve(field, rel).map(|_| ()),
        }
    }

    /// Checks the sha256 of every listed file against metadata.json.
    pub fn verify(&self) -> Result<()> {
        self.verify_with(|_, _| {})
    }

    /// Like [`verify`](Package::verify), calling `progress(file, bytes)` before each file.
    /// After the hashes, the headers of the weight files are parsed and checked too
    /// ([`check_weights`](Package::check_weights)).
    /// For a bundle, the program in front of the package is checked against the sha256
    /// recorded when it was written.
    pub fn verify_with(&self, mut progress: impl FnMut(&str, u64)) -> Result<()> {
        self.verify_hashes(&mut progress)?;
        if let Some(embedded) = &self.embedded {
            embedded.verify_program(&mut progress)?;
        }
        self.check_weights()
    }

    /// Parses the header of every weight file the backends read (safetensors, GGUF) as
    /// strictly as loading does: offsets, sizes, dtypes, alignment.
    pub fn check_weights(&self) -> Result<()> {
        use crate::manifest::{ArtifactRole, ExecutionFormat};
        for backend in self.info.backends.values() {
            for artifact in &backend.artifacts {
                let path = self.file(&artifact.path)?;
                match (backend.format, artifact.role) {
                    (ExecutionFormat::Safetensors, ArtifactRole::Weights) => {
                        crate::weights::read_header(&path)?;
                    }
                    (ExecutionFormat::Gguf, ArtifactRole::Model) => {
                        crate::gguf::GgufHeader::read(&path)?;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn verify_hashes(&self, progress: &mut impl FnMut(&str, u64)) -> Result<()> {
        for file in &self.metadata.files {
            progress(&file.path, file.size);
            let source = self.locate(&file.path, &file.path)?;
            let path = source.path().to_path_buf();
            let (size, sha) = hash_file(source)?;
            if size != file.size {
                return Err(Error::SizeMismatch {
                    path,
                    expected: file.size,
                    found: size,
                });
            }
            if sha != file.sha256 {
                return Err(Error::HashMismatch {
                    path,
                    expected: file.sha256.clone(),
                    found: sha,
                });
            }
        }
        Ok(())
    }

    /// The package directory (canonical), or the executable that carries the package.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The model description.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Provenance and file list.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// A file listed in the package.
    pub fn file(&self, rel: &str) -> Result<FileRef> {
        let path = self.locate(rel, rel)?;
        if self.metadata.file(rel).is_none() {
            return Err(Error::MissingFile {
                package: self.root.clone(),
                file: rel.to_string(),
                listed_in: "the request but not in metadata.json".into(),
            });
        }
        Ok(path)
    }
}
