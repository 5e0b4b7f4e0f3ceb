//! Pulling models from a Hugging Face hub: resolve the revision to a commit, download only what
//! a package needs into the Hugging Face cache (so Python tools and inferox share it), verify
//! every file against the hub's sha256 (LFS) or git blob id, then build the package exactly as
//! [`import`](crate::import()) does. Checksums come from the API listing (`?blobs=true`) or,
//! from hubs and mirrors that list none, from the download's `X-Linked-Etag` / `ETag` headers
//! (as huggingface_hub reads them); a file with neither is not downloaded.
//!
//! Downloads go to `blobs/<etag>.incomplete` and are renamed when verified; a file lock keeps
//! two pulls from writing the same blob; an interrupted download resumes with an HTTP range
//! request. `HF_ENDPOINT`, `HF_TOKEN` (or the cache's token file), `HF_HOME` and
//! `HF_HUB_OFFLINE` are honoured. hf-hub provides the cache layout, repository naming and token
//! file; transfers use our own ureq agent because hf-hub's blocking downloader has no timeouts,
//! does not verify checksums, and appends to a partial file without checking that the server
//! honoured the range.

mod cache;
mod checksum;
mod client;
mod download;
mod http;
mod select;

use crate::Result;
use crate::import::{ImportEvent, ImportOptions, import};
use crate::manifest::{Provenance, SourceKind};
use crate::package::Package;
pub use crate::repo::{RepoSpec, check_repo_id, check_revision};
use cache::snapshot_source;
pub use client::Hub;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// How to pull.
#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    /// Hub URL (default: `HF_ENDPOINT`, else the public hub).
    pub endpoint: Option<String>,
    /// Access token (default: `HF_TOKEN`, else the cache's token file).
    pub token: Option<String>,
    /// Hugging Face cache directory, the one that holds `models--org--name` (default:
    /// `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: Option<PathBuf>,
    /// Use only the cache (also when `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// For repositories of GGUF files: pull the one whose name contains this (`Q4_K_M`).
    pub quantization: Option<String>,
    /// Idle timeout of a transfer (default 30 s).
    pub timeout: Option<Duration>,
    /// Replace an existing package at the destination.
    pub overwrite: bool,
}

/// Pulls `spec` and builds the package at `dest`. When `dest` already holds the package of the
/// same commit, nothing is downloaded or written and that package is returned.
pub fn pull(
    spec: &RepoSpec,
    dest: &Path,
    options: &PullOptions,
    progress: &mut dyn FnMut(ImportEvent<'_>),
) -> Result<Package> {
    // The fields are public: check them here too, before any URL or path is built from them.
    spec.check()?;
    let hub = Hub::new(options)?;
    let quantization = options.quantization.as_deref();
    let (commit, source) = if hub.offline {
        let commit = hub.cached_commit(spec)?;
        let snapshot = hub.repo_dir(spec).join("snapshots").join(&commit);
        (
            commit,
            snapshot_source(&snapshot, quantization, &spec.repo_id)?,
        )
    } else {
        let info = hub.info(spec)?;
        let commit = info.sha.clone();
        progress(ImportEvent::Resolved { commit: &commit });
        if let Ok(existing) = Package::open(dest)
            && existing.metadata().source.commit.as_deref() == Some(commit.as_str())
        {
            progress(ImportEvent::UpToDate);
            return Ok(existing);
        }
        let source = hub.download_all(spec, &info, quantization, progress)?;
        (commit, source)
    };
    let provenance = Provenance {
        kind: SourceKind::Hub,
        path: None,
        repo_id: Some(spec.repo_id.clone()),
        revision: Some(spec.revision.clone()),
        commit: Some(commit),
    };
    let import_options = ImportOptions {
        overwrite: options.overwrite,
        repo_id: Some(spec.repo_id.clone()),
        revision: Some(spec.revision.clone()),
        provenance: Some(provenance),
        ..Default::default()
    };
    import(&source, dest, &import_options, progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn pull_checks_a_hand_built_spec() {
        // A spec built by hand is checked by pull before anything else.
        let spec = RepoSpec {
            repo_id: "org/name".into(),
            revision: "../../x".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let options = PullOptions {
            endpoint: Some("http://127.0.0.1:9".into()),
            cache_dir: Some(dir.path().join("cache")),
            ..Default::default()
        };
        let err = pull(&spec, &dir.path().join("pkg"), &options, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
