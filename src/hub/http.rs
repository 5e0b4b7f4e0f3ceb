//! HTTP plumbing: telling a failed exchange's errors apart, retrying with backoff, and the URL
//! pieces the client builds requests from.

use crate::Error;
use std::time::Duration;

/// Result of one HTTP exchange, errors told apart.
pub(super) fn classify(
    repo: &str,
    url: &str,
    err: ureq::Error,
    file: Option<&str>,
    revision: &str,
) -> Error {
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

pub(super) fn transport(url: &str, message: &str, timed_out: bool) -> Error {
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
pub(super) const ATTEMPTS: u32 = 4;

pub(super) fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(250 << attempt.min(4)));
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Method {
    Get,
    Head,
}

/// `scheme://host[:port]` of a URL.
pub(super) fn origin(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].find('/') {
        Some(i) => &url[..start + i],
        None => url,
    }
}

pub(super) fn percent_encode(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(origin("https://hf.co/a/b"), "https://hf.co");
        assert_eq!(origin("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(
            origin("https://mirror.example/hf"),
            "https://mirror.example"
        );
    }
}
