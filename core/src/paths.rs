//! Paths named by manifests and indexes must stay inside their root: no absolute paths, no `..`,
//! no symbolic link that leads out.

use crate::{Error, Result};
use std::path::{Component, Path, PathBuf};

/// Checks that `rel` is a plain relative path (`a/b.json`) and returns it as a `Path`.
pub fn check_relative<'a>(field: &str, rel: &'a str) -> Result<&'a Path> {
    let escape = || Error::PathEscape {
        field: field.to_string(),
        path: rel.to_string(),
    };
    if rel.contains('\\') || rel.contains('\0') {
        return Err(escape());
    }
    // `/`-separated plain names only: no empty, `.` or `..` segment (so no leading `/` either).
    if rel
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(escape());
    }
    let path = Path::new(rel);
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(escape());
    }
    Ok(path)
}

/// Joins `rel` onto `root` and makes sure that, symlinks followed, it is still inside `root`.
/// `root` must already be canonical. A path that does not exist is returned unresolved.
pub fn resolve_inside(root: &Path, field: &str, rel: &str) -> Result<PathBuf> {
    let joined = root.join(check_relative(field, rel)?);
    match joined.canonicalize() {
        Ok(real) if real.starts_with(root) => Ok(joined),
        Ok(_) => Err(Error::PathEscape {
            field: field.to_string(),
            path: rel.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A dangling symlink is refused rather than followed later.
            if joined.symlink_metadata().is_ok() {
                return Err(Error::PathEscape {
                    field: field.to_string(),
                    path: rel.to_string(),
                });
            }
            Ok(joined)
        }
        Err(e) => Err(Error::io(joined, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_escapes() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "./a",
            "a\\b",
            "a/./b",
        ] {
            assert!(check_relative("f", bad).is_err(), "{bad:?} accepted");
        }
        for good in ["model_info.json", "backends/candle/model.safetensors"] {
            assert!(check_relative("f", good).is_ok(), "{good:?} refused");
        }
    }

    #[cfg(unix)]
    #[test]
    fn refuses_symlinks_that_leave() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        let pkg = tempfile::tempdir().unwrap();
        let root = pkg.path().canonicalize().unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("link")).unwrap();
        std::fs::write(root.join("inside"), b"y").unwrap();
        std::os::unix::fs::symlink(root.join("inside"), root.join("ok")).unwrap();
        assert!(matches!(
            resolve_inside(&root, "files", "link"),
            Err(Error::PathEscape { .. })
        ));
        assert_eq!(
            resolve_inside(&root, "files", "ok").unwrap(),
            root.join("ok")
        );
    }
}
