//! Hugging Face repository names: `org/name[@revision]` specs and the checks that keep a repo
//! id or revision from escaping a cache or store directory. Used by import, the store and the
//! hub client alike, so it needs no network.

use crate::{Error, Result};

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
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
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
    }
}
