//! Checksums: the sha256 or git blob id the hub announces for a file (in its API listing or
//! the download's headers), and the digest of a downloaded file to compare with it.

use super::client::Hub;
use super::http::{Method, origin};
use super::select::Sibling;
use crate::repo::RepoSpec;
use crate::{Error, Result};
use sha2::Digest;
use std::path::Path;

/// How the hub identifies a file's content.
#[derive(Clone, Copy, Debug)]
pub(super) enum Digestion {
    /// LFS files: sha256 of the content.
    Sha256,
    /// Git-stored files: sha1 of `blob <len>\0` followed by the content.
    GitBlob,
}

impl Digestion {
    pub(super) fn name(self) -> &'static str {
        match self {
            Digestion::Sha256 => "sha256",
            Digestion::GitBlob => "git blob id",
        }
    }

    /// Lowercase hex of the digest's length (so also a safe file name).
    fn is_well_formed(self, value: &str) -> bool {
        let len = match self {
            Digestion::Sha256 => 64,
            Digestion::GitBlob => 40,
        };
        value.len() == len && value.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
    }
}

/// What the hub announced of a file's content.
#[derive(Clone, Debug)]
pub(super) struct Checksum {
    /// Lowercase hex digest; also the blob's name in the cache.
    pub(super) value: String,
    pub(super) kind: Digestion,
    /// Size in bytes, when announced.
    pub(super) size: Option<u64>,
    /// Where: the API listing or a header of the download.
    pub(super) announced_in: &'static str,
}

pub(super) fn digest_file(path: &Path, kind: Digestion) -> Result<(u64, String)> {
    match kind {
        Digestion::Sha256 => crate::files::hash_file(path),
        Digestion::GitBlob => {
            let len = std::fs::metadata(path)
                .map_err(|e| Error::io(path, e))?
                .len();
            let mut h = sha1::Sha1::new();
            h.update(format!("blob {len}\0").as_bytes());
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            crate::files::copy_digest(h, file, None, |_| {}).map_err(|e| Error::io(path, e))
        }
    }
}

impl Hub {
    /// The checksum the API listing gives `sibling` (with `?blobs=true`): the LFS sha256, else
    /// the git blob id; `None` when it gives neither, as some hubs and mirrors do.
    pub(super) fn listed_checksum(
        &self,
        spec: &RepoSpec,
        sibling: &Sibling,
    ) -> Result<Option<Checksum>> {
        let (value, kind, size) = match (&sibling.lfs, &sibling.blob_id) {
            (Some(lfs), _) => (&lfs.sha256, Digestion::Sha256, Some(lfs.size)),
            (None, Some(blob)) => (blob, Digestion::GitBlob, sibling.size),
            (None, None) => return Ok(None),
        };
        let value = value.trim().to_ascii_lowercase();
        if !kind.is_well_formed(&value) {
            return Err(self.not_a_hub(&format!(
                "its API lists {value:?} as the {} of `{}` in {}",
                kind.name(),
                sibling.rfilename,
                spec.repo_id
            )));
        }
        Ok(Some(Checksum {
            value,
            kind,
            size,
            announced_in: "the API listing",
        }))
    }

    /// The checksum a download's headers announce, read as huggingface_hub reads it when the API
    /// gives none: `X-Linked-Etag` (LFS files: the sha256), else `ETag` (git files: the blob id;
    /// `W/` and quotes dropped), from a HEAD request that follows the hub's own relative
    /// redirects (a renamed repository) but not the one to a CDN, whose ETag is no checksum.
    pub(super) fn announced_checksum(
        &self,
        spec: &RepoSpec,
        url: &str,
        file: &str,
    ) -> Result<Checksum> {
        let mut url = url.to_string();
        for _ in 0..5 {
            let resp = self.call(Method::Head, &url, 0, spec, Some(file))?;
            let header = |name: &str| resp.header(name).map(str::trim).filter(|v| !v.is_empty());
            let relative =
                header("location").filter(|l| l.starts_with('/') && !l.starts_with("//"));
            let redirect = (300..400).contains(&resp.status());
            let (raw, announced_in, size) = match (header("x-linked-etag"), header("etag")) {
                (Some(linked), _) => (
                    linked,
                    "X-Linked-Etag",
                    header("x-linked-size").and_then(|s| s.parse().ok()),
                ),
                (None, _) if redirect && relative.is_some() => {
                    url = format!("{}{}", origin(&self.endpoint), relative.unwrap_or_default());
                    continue;
                }
                (None, Some(etag)) => (
                    etag,
                    "ETag",
                    header("content-length")
                        .filter(|_| !redirect)
                        .and_then(|s| s.parse().ok()),
                ),
                (None, None) => return Err(self.no_checksum(spec, file, None)),
            };
            let value = raw
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_ascii_lowercase();
            let kind = [Digestion::Sha256, Digestion::GitBlob]
                .into_iter()
                .find(|k| k.is_well_formed(&value))
                .ok_or_else(|| self.no_checksum(spec, file, Some((announced_in, raw))))?;
            return Ok(Checksum {
                value,
                kind,
                size,
                announced_in,
            });
        }
        Err(self.no_checksum(spec, file, None))
    }

    /// No checksum in the API listing nor in the download's headers (or one that is neither a
    /// sha256 nor a git blob id): the file cannot be verified, so it is not downloaded.
    fn no_checksum(&self, spec: &RepoSpec, file: &str, unusable: Option<(&str, &str)>) -> Error {
        let headers = match unusable {
            Some((header, value)) => format!(
                "its {header} header, `{value}`, is neither a sha256 (64 hex digits) nor a git blob id (40)"
            ),
            None => "its download has no X-Linked-Etag or ETag header".to_string(),
        };
        self.not_a_hub(&format!(
            "it gives no checksum for `{file}` of {} (no sha256 or blob id in its API listing, and {headers}), so the file cannot be verified and was not downloaded",
            spec.repo_id
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_ids() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello\n").unwrap();
        // `git hash-object` of "hello\n".
        assert_eq!(
            digest_file(&p, Digestion::GitBlob).unwrap().1,
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }
}
