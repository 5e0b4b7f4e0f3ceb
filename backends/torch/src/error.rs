//! The backend's error type: libtorch's errors (through tch) and inferox's own side by side, so
//! that `?` works on both inside models built on libtorch, and one conversion into
//! [`inferox_core::Error`] at the boundary (a registry loader, a
//! [`Model`](inferox_core::model::Model) method) turns a libtorch error into
//! [`inferox_core::Error::Backend`] and hands inferox's errors through unchanged.

/// An error inside the torch backend or a model built on it.
#[derive(Debug)]
pub enum Error {
    /// libtorch (through tch) failed.
    Torch(tch::TchError),
    /// An inferox error (a missing tensor, a bad input, ...), kept as it is.
    Inferox(inferox_core::Error),
}

/// Result alias for the torch backend and the models built on it.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Torch(e)
    }
}

impl From<inferox_core::Error> for Error {
    fn from(e: inferox_core::Error) -> Self {
        Error::Inferox(e)
    }
}

impl From<Error> for inferox_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Torch(e) => inferox_core::Error::Backend {
                backend: crate::NAME,
                message: e.to_string(),
            },
            Error::Inferox(e) => e,
        }
    }
}

impl std::fmt::Display for Error {
    /// As the [`inferox_core::Error`] it becomes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Torch(e) => write!(f, "{} backend: {e}", crate::NAME),
            Error::Inferox(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // The libtorch error is already in the message (as it is in the converted error).
            Error::Torch(_) => None,
            Error::Inferox(e) => e.source(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_at_the_boundary() {
        let tch = tch::TchError::Torch("boom".into());
        let text = tch.to_string();
        let torch = Error::from(tch);
        assert_eq!(torch.to_string(), format!("torch backend: {text}"));
        let core = inferox_core::Error::from(torch);
        assert!(
            matches!(&core, inferox_core::Error::Backend { backend: "torch", message } if *message == text),
            "{core:?}"
        );
        assert_eq!(core.to_string(), format!("torch backend: {text}"));

        let missing = inferox_core::Error::MissingTensor {
            tensor: "w".into(),
            files: vec![],
        };
        let text = missing.to_string();
        let passed = inferox_core::Error::from(Error::from(missing));
        assert!(matches!(passed, inferox_core::Error::MissingTensor { .. }));
        assert_eq!(passed.to_string(), text);
    }
}
