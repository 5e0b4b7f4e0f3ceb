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

use crate::import::{ImportEvent, ImportOptions, import};
use crate::manifest::{Provenance, SourceKind};
use crate::package::{Package, check_relative};
use crate::{Error, Result};
use hf_hub::{Cache, Repo, RepoType};
use sha2::Digest;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A repository and revision, as written on the command line: `org/name[@revision]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoSpec {
    /// `org/name`.
    pub repo_id: String,
    /// Branch, tag or commit (default `main`).
    pub revision: String,
}

impl std::str::FromStr for RepoSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<RepoSpec> {
        let (repo_id, revision) = match s.split_once('@') {
            Some((r, rev)) => (r, rev),
            None => (s, "main"),
        };
        let spec = RepoSpec {
            repo_id: repo_id.to_string(),
            revision: revision.to_string(),
        };
        spec.check()?;
        Ok(spec)
    }
}

impl RepoSpec {
    /// Checks the repo id and the revision (see [`check_repo_id`], [`check_revision`]).
    pub fn check(&self) -> Result<()> {
        check_repo_id(&self.repo_id)?;
        check_revision(&self.revision)
    }
}

/// Checks `org/name` (or `name`): letters, digits, `-`, `_`, `.`, at most 96 of them per part,
/// none starting with `.` (so no `..`), no `--`: nothing that could leave a directory, or name
/// two repositories alike in the cache's `models--org--name`.
pub fn check_repo_id(id: &str) -> Result<()> {
    let bad = |why: &str| {
        Error::InvalidArgument(format!(
            "{id:?} is not a Hugging Face repo id (expected org/name): {why}"
        ))
    };
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() > 2 {
        return Err(bad("more than one `/`"));
    }
    for part in parts {
        if part.is_empty() {
            return Err(bad("empty name"));
        }
        if part.len() > 96 {
            return Err(bad("a name is longer than 96 characters"));
        }
        if !part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(bad("only letters, digits, `-`, `_` and `.` are allowed"));
        }
        if part.starts_with('.') {
            return Err(bad("a name cannot start with `.`"));
        }
        if part.contains("--") {
            return Err(bad("`--` is not allowed (the cache writes `/` so)"));
        }
    }
    Ok(())
}

/// Checks a branch, tag or commit as git checks ref names (`git check-ref-format`): no `..`,
/// `//` or `@{`, no control characters, spaces or any of `~^:?*[\`, not starting with `/` or
/// `-`, no part starting with `.` or ending with `.lock`, not ending with `/` or `.`. Revisions
/// become URL and cache path components, so this runs before either is built.
pub fn check_revision(revision: &str) -> Result<()> {
    let why = if revision.is_empty() {
        Some("it is empty")
    } else if revision.len() > 255 {
        Some("it is longer than 255 characters")
    } else if revision
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        Some("control characters, spaces and `~^:?*[\\` are not allowed")
    } else if revision.contains("..") || revision.contains("//") || revision.contains("@{") {
        Some("`..`, `//` and `@{` are not allowed")
    } else if revision == "@" || revision.starts_with(['/', '-']) {
        Some("it cannot be `@` or start with `/` or `-`")
    } else if revision.ends_with(['/', '.']) {
        Some("it cannot end with `/` or `.`")
    } else if revision
        .split('/')
        .any(|part| part.starts_with('.') || part.ends_with(".lock"))
    {
        Some("no part of it can start with `.` or end with `.lock`")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::InvalidArgument(format!(
            "revision {revision:?} is not a branch, tag or commit: {why}"
        ))),
        None => Ok(()),
    }
}

/// A full commit id: 40 hex digits.
fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

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

/// What the hub says of a revision.
#[derive(Debug, serde::Deserialize)]
struct RepoInfo {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Clone, Debug, serde::Deserialize)]
struct Sibling {
    rfilename: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, rename = "blobId")]
    blob_id: Option<String>,
    #[serde(default)]
    lfs: Option<Lfs>,
}

#[derive(Clone, Debug, serde::Deserialize)]
struct Lfs {
    sha256: String,
    size: u64,
}

/// Files copied into a package when the repository has them.
const SUPPORT_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "generation_config.json",
    "chat_template.jinja",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
];

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A connection to a hub, with its cache.
pub struct Hub {
    endpoint: String,
    token: Option<String>,
    cache: Cache,
    agent: ureq::Agent,
    /// For HEAD requests: follows no redirect, so the hub's own headers (`X-Linked-Etag`) are
    /// seen rather than those of the CDN it redirects to.
    head_agent: ureq::Agent,
    offline: bool,
}

/// Result of one HTTP exchange, errors told apart.
fn classify(repo: &str, url: &str, err: ureq::Error, file: Option<&str>, revision: &str) -> Error {
    match err {
        ureq::Error::Status(status, response) => {
            let code = response.header("x-error-code").unwrap_or("").to_string();
            match (status, code.as_str()) {
                (_, "RepoNotFound") => Error::RepoNotFound {
                    repo: repo.to_string(),
                },
                (_, "RevisionNotFound") => Error::RevisionNotFound {
                    repo: repo.to_string(),
                    revision: revision.to_string(),
                },
                (_, "EntryNotFound") | (404, _) if file.is_some() => Error::RemoteFileNotFound {
                    repo: repo.to_string(),
                    file: file.unwrap_or_default().to_string(),
                },
                (404, _) => Error::RepoNotFound {
                    repo: repo.to_string(),
                },
                (401 | 403, _) => Error::Unauthorized {
                    repo: repo.to_string(),
                    status,
                    gated: code == "GatedRepo",
                },
                _ => Error::ServerError {
                    url: url.to_string(),
                    status,
                },
            }
        }
        ureq::Error::Transport(t) => transport(url, &t.to_string(), false),
    }
}

fn transport(url: &str, message: &str, timed_out: bool) -> Error {
    if timed_out || message.contains("timed out") || message.contains("Timeout") {
        Error::Timeout {
            url: url.to_string(),
        }
    } else {
        Error::Network {
            url: url.to_string(),
            message: message.to_string(),
        }
    }
}

/// Attempts of a request that fails with a server error or a dropped connection.
const ATTEMPTS: u32 = 4;

fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(250 << attempt.min(4)));
}

impl Hub {
    /// A hub client from the options and the environment.
    pub fn new(options: &PullOptions) -> Result<Hub> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let cache = match &options.cache_dir {
            Some(dir) => Cache::new(dir.clone()),
            None if env("HF_HOME").is_some() => Cache::from_env(),
            None => {
                let home = env("HOME").ok_or_else(|| {
                    Error::InvalidArgument(
                        "no HOME or HF_HOME to place the Hugging Face cache in".into(),
                    )
                })?;
                Cache::new(PathBuf::from(home).join(".cache/huggingface/hub"))
            }
        };
        let offline = options.offline
            || env("HF_HUB_OFFLINE").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        let endpoint = options
            .endpoint
            .clone()
            .or_else(|| env("HF_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        let token = options
            .token
            .clone()
            .or_else(|| env("HF_TOKEN"))
            .or_else(|| cache.token());
        let timeout = options.timeout.unwrap_or(Duration::from_secs(30));
        let builder = || {
            ureq::AgentBuilder::new()
                .timeout_connect(timeout.min(Duration::from_secs(10)))
                .timeout_read(timeout)
                .timeout_write(timeout)
                .user_agent(concat!("inferox/", env!("CARGO_PKG_VERSION")))
        };
        Ok(Hub {
            endpoint,
            token,
            cache,
            agent: builder().build(),
            head_agent: builder().redirects(0).build(),
            offline,
        })
    }

    /// The Hugging Face cache directory in use.
    pub fn cache_dir(&self) -> &Path {
        self.cache.path()
    }

    fn request(&self, method: Method, url: &str) -> ureq::Request {
        let r = match method {
            Method::Get => self.agent.get(url),
            Method::Head => self.head_agent.head(url),
        };
        match &self.token {
            Some(t) => r.set("Authorization", &format!("Bearer {t}")),
            None => r,
        }
    }

    /// GET with retries on server errors and dropped connections.
    fn get(
        &self,
        url: &str,
        range_from: u64,
        spec: &RepoSpec,
        file: Option<&str>,
    ) -> Result<ureq::Response> {
        self.call(Method::Get, url, range_from, spec, file)
    }

    /// A request with retries on server errors and dropped connections.
    fn call(
        &self,
        method: Method,
        url: &str,
        range_from: u64,
        spec: &RepoSpec,
        file: Option<&str>,
    ) -> Result<ureq::Response> {
        let mut attempt = 0;
        loop {
            let mut req = self.request(method, url);
            if range_from > 0 {
                req = req.set("Range", &format!("bytes={range_from}-"));
            }
            let err = match req.call() {
                Ok(resp) => return Ok(resp),
                Err(e) => classify(&spec.repo_id, url, e, file, &spec.revision),
            };
            attempt += 1;
            let retry = matches!(err, Error::ServerError { status, .. } if status >= 500)
                || matches!(err, Error::Network { .. });
            if !retry || attempt >= ATTEMPTS {
                return Err(err);
            }
            backoff(attempt);
        }
    }

    fn repo_dir(&self, spec: &RepoSpec) -> PathBuf {
        self.cache
            .path()
            .join(Repo::new(spec.repo_id.clone(), RepoType::Model).folder_name())
    }

    /// The commit and files of a revision, from the hub.
    fn info(&self, spec: &RepoSpec) -> Result<RepoInfo> {
        let url = format!(
            "{}/api/models/{}/revision/{}?blobs=true",
            self.endpoint,
            spec.repo_id,
            percent_encode(&spec.revision).replace('/', "%2F")
        );
        let resp = self.get(&url, 0, spec, None)?;
        let info: RepoInfo = resp.into_json().map_err(|e| Error::Network {
            url: url.clone(),
            message: format!("unreadable answer: {e}"),
        })?;
        if !is_commit(&info.sha) {
            return Err(self.not_a_hub(&format!(
                "it answered {url} with {:?} as the commit of `{}`",
                info.sha, spec.revision
            )));
        }
        for s in &info.siblings {
            check_relative("file name from the hub", &s.rfilename)?;
        }
        Ok(info)
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

    /// The checksum the API listing gives `sibling` (with `?blobs=true`): the LFS sha256, else
    /// the git blob id; `None` when it gives neither, as some hubs and mirrors do.
    fn listed_checksum(&self, spec: &RepoSpec, sibling: &Sibling) -> Result<Option<Checksum>> {
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
    fn announced_checksum(&self, spec: &RepoSpec, url: &str, file: &str) -> Result<Checksum> {
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

    /// A permanent error: the hub at `self.endpoint` does not answer as the Hugging Face hub
    /// does, so running again will not help.
    fn not_a_hub(&self, what: &str) -> Error {
        let advice = if self.endpoint == DEFAULT_ENDPOINT {
            format!("{DEFAULT_ENDPOINT} normally does: check for a proxy that rewrites its answers")
        } else {
            format!(
                "use a hub or mirror that does (HF_ENDPOINT is {}; unset it to pull from {DEFAULT_ENDPOINT})",
                self.endpoint
            )
        };
        Error::NotAHub {
            endpoint: self.endpoint.clone(),
            message: format!("does not answer as the Hugging Face hub does: {what}; {advice}"),
        }
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

/// How the hub identifies a file's content.
#[derive(Clone, Copy, Debug)]
enum Digestion {
    /// LFS files: sha256 of the content.
    Sha256,
    /// Git-stored files: sha1 of `blob <len>\0` followed by the content.
    GitBlob,
}

impl Digestion {
    fn name(self) -> &'static str {
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
struct Checksum {
    /// Lowercase hex digest; also the blob's name in the cache.
    value: String,
    kind: Digestion,
    /// Size in bytes, when announced.
    size: Option<u64>,
    /// Where: the API listing or a header of the download.
    announced_in: &'static str,
}

#[derive(Clone, Copy, Debug)]
enum Method {
    Get,
    Head,
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].find('/') {
        Some(i) => &url[..start + i],
        None => url,
    }
}

fn digest_file(path: &Path, kind: Digestion) -> Result<(u64, String)> {
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

/// `snapshots/<commit>/<file>` → `../../blobs/<etag>`, as the Hugging Face cache lays it out;
/// made under a temporary name and renamed into place, so a reader never sees it half made.
fn link(blob: &Path, snapshot: &Path) -> Result<()> {
    let dir = snapshot.parent().expect("snapshot files have a parent");
    std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
    let name = snapshot
        .file_name()
        .expect("snapshot files have a name")
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.link-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
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
    std::fs::rename(&tmp, snapshot).map_err(|e| Error::write(snapshot, e))
}

/// Picks the files a package needs from a repository listing.
fn select(info: &RepoInfo, quantization: Option<&str>, repo: &str) -> Result<Vec<Sibling>> {
    let has = |name: &str| info.siblings.iter().find(|s| s.rfilename == name).cloned();
    let mut chosen: Vec<Sibling> = Vec::new();
    let ggufs: Vec<&Sibling> = info
        .siblings
        .iter()
        .filter(|s| s.rfilename.to_lowercase().ends_with(".gguf"))
        .collect();
    let safetensors = has("model.safetensors").or_else(|| has("model.safetensors.index.json"));
    match (quantization, safetensors) {
        (None, Some(weights)) => chosen.push(weights),
        (q, _) if !ggufs.is_empty() => {
            let matching: Vec<&&Sibling> = match q {
                Some(q) => ggufs
                    .iter()
                    .filter(|s| s.rfilename.to_lowercase().contains(&q.to_lowercase()))
                    .collect(),
                None => ggufs.iter().collect(),
            };
            let names = || {
                ggufs
                    .iter()
                    .map(|s| s.rfilename.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            match matching.as_slice() {
                [one] => chosen.push((**one).clone()),
                [] => {
                    return Err(Error::InvalidArgument(format!(
                        "{repo} has no GGUF file matching `{}` (it has: {})",
                        q.unwrap_or_default(),
                        names()
                    )));
                }
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "{repo} has several GGUF files; choose one with --quant (it has: {})",
                        names()
                    )));
                }
            }
            return Ok(chosen);
        }
        (Some(q), Some(_)) => {
            return Err(Error::InvalidArgument(format!(
                "{repo} has no GGUF files, so --quant {q} does not apply"
            )));
        }
        (_, None) => {
            return Err(Error::InvalidArgument(format!(
                "{repo} has neither model.safetensors nor GGUF files (pytorch_model.bin is not read: pickle can run code)"
            )));
        }
    }
    for name in SUPPORT_FILES {
        if let Some(s) = has(name) {
            chosen.push(s);
        }
    }
    Ok(chosen)
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

/// What to import from a cached snapshot: the directory, or its GGUF file.
fn snapshot_source(dir: &Path, quantization: Option<&str>, repo: &str) -> Result<PathBuf> {
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

impl Hub {
    /// The commit a revision points at, from the cache alone.
    fn cached_commit(&self, spec: &RepoSpec) -> Result<String> {
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

    /// Downloads what the package needs and is not cached yet, records the ref; returns the path
    /// to import (the snapshot directory, or the GGUF file in it).
    fn download_all(
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

    /// `refs/<revision>` ← `commit`, written under a temporary name and renamed into place.
    fn write_ref(&self, spec: &RepoSpec, commit: &str) -> Result<()> {
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
        // Unique to this process and call: two pulls (or threads) may write the same ref.
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp-{}-{call}", std::process::id()));
        std::fs::write(&tmp, commit).map_err(|e| Error::write(&path, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::write(&path, e)
        })
    }
}

/// `<folder>/config.json` of every module that modules.json names with a folder; nothing when
/// it does not parse (import then says what is wrong with it).
fn module_configs(modules_json: &Path) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Module {
        #[serde(default)]
        path: String,
    }
    let modules: Vec<Module> = crate::files::read_json(modules_json).unwrap_or_default();
    modules
        .into_iter()
        .map(|m| m.path.trim_end_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .map(|p| format!("{p}/config.json"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_specs() {
        let s: RepoSpec = "org/name@v1.0".parse().unwrap();
        assert_eq!(
            (s.repo_id.as_str(), s.revision.as_str()),
            ("org/name", "v1.0")
        );
        assert_eq!("gpt2".parse::<RepoSpec>().unwrap().revision, "main");
        assert_eq!(
            "org/name@refs/pr/1".parse::<RepoSpec>().unwrap().revision,
            "refs/pr/1"
        );
        for bad in [
            "../x",
            "..",
            "org/..",
            "org/../x",
            "a/b/c",
            "org/.hidden",
            "org--x/name",
            "",
            "/",
            "org/",
            "org//name",
            "org/name@",
            "org/na me",
            "org\\name",
            "..\\..\\x",
            "C:/x",
            "/abs",
            "/abs/x",
            "org/na\0me",
        ] {
            let err = bad.parse::<RepoSpec>().unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn revisions_are_git_ref_names() {
        for good in [
            "main",
            "v1.0",
            "refs/pr/12",
            "release/2024-01",
            "0123456789abcdef0123456789abcdef01234567",
            "a@b",
        ] {
            check_revision(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
        for bad in [
            "", "../../x", "a/../b", "a..b", "/abs", "-rf", "a//b", "a/", "a.", "a.lock",
            "a.lock/b", ".hidden", "a/.b", "@", "a@{1}", "a b", "a\tb", "a\nb", "a\u{7f}", "a~1",
            "a^", "a:b", "a?", "a*", "a[b", "a\\b",
        ] {
            let err = check_revision(bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidArgument(m) if m.contains(&format!("{bad:?}"))),
                "{bad:?}: {err}"
            );
        }
        assert!(check_revision(&"a".repeat(256)).is_err());
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

    #[test]
    fn origins() {
        assert_eq!(origin("https://hf.co/a/b"), "https://hf.co");
        assert_eq!(origin("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(
            origin("https://mirror.example/hf"),
            "https://mirror.example"
        );
    }

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
