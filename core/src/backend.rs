//! The backend table. Each backend crate registers one [`Backend`] with
//! [`register!`](crate::register); the facade links the crates its cargo features name. The core
//! names no backend: everything it knows about one is in its entry.

use crate::Result;
use std::sync::OnceLock;

/// A backend linked into this binary.
#[derive(Debug)]
pub struct Backend {
    /// Name used in packages (`backends/<name>/`) and on the command line.
    pub name: &'static str,
    /// Cargo feature of the `inferox` crate that links it.
    pub feature: &'static str,
    /// Rank when a package lists several backends and the caller names none: lower first.
    pub preference: u32,
    /// What it runs on.
    pub description: &'static str,
    /// Applies the load options' thread count (`LoadOptions::threads`) before a load, or
    /// says why it cannot.
    pub threads: fn(usize) -> Result<()>,
    /// What the linked runtime reports about itself (version, devices), when it can say.
    pub runtime: Option<fn() -> String>,
}

inventory::collect!(Backend);

/// Every linked backend, most preferred first.
pub fn backends() -> &'static [&'static Backend] {
    static SORTED: OnceLock<Vec<&'static Backend>> = OnceLock::new();
    SORTED.get_or_init(|| {
        let mut v: Vec<&'static Backend> = inventory::iter::<Backend>().collect();
        v.sort_by_key(|b| (b.preference, b.name));
        v
    })
}

/// The linked backend called `name`.
pub fn get(name: &str) -> Option<&'static Backend> {
    backends().iter().copied().find(|b| b.name == name)
}

/// Position of `name` in the preference order (backends not linked come last).
pub fn preference(name: &str) -> usize {
    backends()
        .iter()
        .position(|b| b.name == name)
        .unwrap_or(usize::MAX)
}

/// Names of the linked backends, most preferred first.
pub fn names() -> Vec<&'static str> {
    backends().iter().map(|b| b.name).collect()
}

/// For backends that take their thread count per model, at load: nothing to do up front.
pub fn per_model_threads(_: usize) -> Result<()> {
    Ok(())
}

/// Defines a backend crate's `Error` and `Result`: the runtime's errors and inferox's own side
/// by side, so that `?` works on both inside models built on that runtime, and one conversion
/// into [`crate::Error`] at the boundary (a registry loader, a `Model` or `Decoder` method)
/// turns a runtime error into [`crate::Error::Backend`] and hands inferox's errors through
/// unchanged. (A crate may not implement `From<runtime error> for inferox_core::Error` itself:
/// both types are foreign to it.)
///
/// `backend_error!(Candle(candle_core::Error), crate::NAME);` in the backend crate's root
/// or an `error` module.
#[macro_export]
macro_rules! backend_error {
    ($variant:ident($runtime:ty), $name:expr) => {
        /// An error inside this backend or a model built on it.
        #[derive(Debug)]
        pub enum Error {
            /// The runtime failed.
            $variant($runtime),
            /// An inferox error (a missing tensor, a bad input, ...), kept as it is.
            Inferox($crate::Error),
        }

        /// Result alias for this backend and the models built on it.
        pub type Result<T, E = Error> = std::result::Result<T, E>;

        impl From<$runtime> for Error {
            fn from(e: $runtime) -> Self {
                Error::$variant(e)
            }
        }

        impl From<$crate::Error> for Error {
            fn from(e: $crate::Error) -> Self {
                Error::Inferox(e)
            }
        }

        impl From<Error> for $crate::Error {
            fn from(e: Error) -> Self {
                match e {
                    Error::$variant(e) => $crate::Error::Backend {
                        backend: $name,
                        message: e.to_string(),
                    },
                    Error::Inferox(e) => e,
                }
            }
        }

        impl std::fmt::Display for Error {
            /// As the inferox error it becomes.
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    Error::$variant(e) => write!(f, "{} backend: {e}", $name),
                    Error::Inferox(e) => e.fmt(f),
                }
            }
        }

        impl std::error::Error for Error {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    // The runtime's error is already in the message, as in the converted error.
                    Error::$variant(_) => None,
                    Error::Inferox(e) => e.source(),
                }
            }
        }
    };
}
