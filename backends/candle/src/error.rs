//! The backend's error type: candle's errors and inferox's own side by side, so that `?` works
//! on both inside models built on candle, and one conversion into [`inferox_core::Error`] at the
//! boundary (a registry loader, a [`Model`](inferox_core::model::Model) or
//! [`Decoder`](inferox_core::model::Decoder) method) turns a candle error into
//! [`inferox_core::Error::Backend`] and hands inferox's errors through unchanged.

use candle_core as candle;

/// An error inside the candle backend or a model built on it.
#[derive(Debug)]
pub enum Error {
    /// candle failed.
    Candle(candle::Error),
    /// An inferox error (a missing tensor, a bad input, ...), kept as it is.
    Inferox(inferox_core::Error),
}

/// Result alias for the candle backend and the models built on it.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<candle::Error> for Error {
    fn from(e: candle::Error) -> Self {
        Error::Candle(e)
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
            Error::Candle(e) => inferox_core::Error::Backend {
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
            Error::Candle(e) => write!(f, "{} backend: {e}", crate::NAME),
            Error::Inferox(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // The candle error is already in the message (as it is in the converted error).
            Error::Candle(_) => None,
            Error::Inferox(e) => e.source(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_at_the_boundary() {
        let candle = Error::from(candle::Error::Msg("boom".into()));
        assert_eq!(candle.to_string(), "candle backend: boom");
        let core = inferox_core::Error::from(candle);
        assert!(
            matches!(&core, inferox_core::Error::Backend { backend: "candle", message } if message == "boom"),
            "{core:?}"
        );
        assert_eq!(core.to_string(), "candle backend: boom");

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
