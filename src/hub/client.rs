//! The hub client: endpoint, token, cache and HTTP agents from the options and the environment;
//! requests with retries, and the listing of a revision.

use super::http::{ATTEMPTS, Method, backoff, classify, percent_encode};
use super::select::RepoInfo;
use super::{DEFAULT_ENDPOINT, PullOptions};
use crate::package::check_relative;
use crate::repo::{RepoSpec, is_commit};
use crate::{Error, Result};
use hf_hub::Cache;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A connection to a hub, with its cache.
pub struct Hub {
    pub(super) endpoint: String,
    token: Option<String>,
    pub(super) cache: Cache,
    agent: ureq::Agent,
    /// For HEAD requests: follows no redirect, so the hub's own headers (`X-Linked-Etag`) are
    /// seen rather than those of the CDN it redirects to.
    head_agent: ureq::Agent,
    pub(super) offline: bool,
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
    pub(super) fn get(
        &self,
        url: &str,
        range_from: u64,
        spec: &RepoSpec,
        file: Option<&str>,
    ) -> Result<ureq::Response> {
        self.call(Method::Get, url, range_from, spec, file)
    }

    /// A request with retries on server errors and dropped connections.
    pub(super) fn call(
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

    /// The commit and files of a revision, from the hub.
    pub(super) fn info(&self, spec: &RepoSpec) -> Result<RepoInfo> {
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

    /// A permanent error: the hub at `self.endpoint` does not answer as the Hugging Face hub
    /// does, so running again will not help.
    pub(super) fn not_a_hub(&self, what: &str) -> Error {
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
}
