//! The library's error type. Every variant names the file, field, tensor or input at fault, and
//! [`Error::hint`] says what the user can do about it, in the library's terms (functions and
//! option fields; the command line words its own hints in commands and flags).

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while importing, opening, loading or running a package.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on `path` failed. The OS error is part of the message (and so not
    /// also a `source()`, which would print it twice in an error chain).
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A JSON file could not be parsed or does not have the expected structure.
    #[error("{}: malformed JSON: {message}", path.display())]
    Json { path: PathBuf, message: String },
    /// A manifest field holds a value that is not allowed.
    #[error("{}: field `{field}`: {message}", path.display())]
    Manifest {
        path: PathBuf,
        field: String,
        message: String,
    },
    /// The package was written in a format version this build does not read.
    #[error("{}: package format version {found} is not supported (this build reads version {supported})", path.display())]
    FormatVersion {
        path: PathBuf,
        found: u64,
        supported: u32,
    },
    /// `path` is not a package directory.
    #[error("{}: not an inferox package ({missing} is missing)", path.display())]
    NotAPackage { path: PathBuf, missing: String },
    /// A file the manifest lists is not in the package.
    #[error("{}: `{file}` is listed in {listed_in} but missing", package.display())]
    MissingFile {
        package: PathBuf,
        file: String,
        listed_in: String,
    },
    /// A file's size differs from the one recorded in metadata.json.
    #[error("{}: size is {found} bytes, metadata.json records {expected}", path.display())]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    /// A file's sha256 differs from the one recorded in metadata.json.
    #[error("{}: sha256 is {found}, metadata.json records {expected}", path.display())]
    HashMismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },
    /// A path in a manifest is absolute, contains `..`, or resolves outside the package.
    #[error("{field}: path `{path}` escapes the package directory")]
    PathEscape { field: String, path: String },
    /// No architecture is registered for this model type.
    #[error(
        "model_type `{model_type}` has no registered architecture in this build (registered: {})",
        list(registered)
    )]
    UnknownModelType {
        model_type: String,
        registered: Vec<String>,
    },
    /// The backend name is not one inferox knows.
    #[error("unknown backend `{name}` (known: {})", list(known))]
    UnknownBackend { name: String, known: Vec<String> },
    /// The backend exists but this binary was built without it.
    #[error("backend `{backend}` is not compiled into this binary")]
    BackendNotCompiled { backend: String, feature: String },
    /// The package carries no artifacts for the requested backend.
    #[error(
        "the package has no artifacts for backend `{backend}` (it has: {})",
        list(available)
    )]
    BackendNotInPackage {
        backend: String,
        available: Vec<String>,
    },
    /// No backend is both listed in the package and compiled in with an implementation.
    #[error(
        "no backend in this binary can run this `{model_type}` package ({})",
        if reasons.is_empty() { "no backend is compiled in".to_string() } else { reasons.join("; ") }
    )]
    NoUsableBackend {
        model_type: String,
        /// One line per backend the package lists or the binary has: why it cannot.
        reasons: Vec<String>,
    },
    /// The model type is registered, but not for this backend.
    #[error(
        "model_type `{model_type}` has no `{backend}` implementation in this build (it has: {})",
        list(available)
    )]
    NoImplementation {
        model_type: String,
        backend: String,
        available: Vec<String>,
    },
    /// Two registrations share the same (model_type, backend) key.
    #[error("({model_type}, {backend}) is registered more than once")]
    DuplicateRegistration { model_type: String, backend: String },
    /// The registry tables disagree (a model type or backend registered twice, an
    /// implementation of a model type nobody describes).
    #[error("registry: {0}")]
    Registry(String),
    /// A model config (config.json and the like) could not be understood.
    #[error("{}: malformed config: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// A weights file is unreadable, truncated or corrupt.
    #[error("{}: {message}", path.display())]
    Weights { path: PathBuf, message: String },
    /// A tensor the architecture needs is not in the weights.
    #[error("tensor `{tensor}` is missing from {}", paths(files))]
    MissingTensor { tensor: String, files: Vec<PathBuf> },
    /// A weight tensor is stored with a dtype the architecture cannot use.
    #[error("{}: tensor `{tensor}` has dtype {found}, expected {expected}", path.display())]
    TensorDtype {
        tensor: String,
        path: PathBuf,
        expected: String,
        found: String,
    },
    /// A weight tensor has the wrong shape for the config.
    #[error("{}: tensor `{tensor}` has shape {found:?}, expected {expected:?}", path.display())]
    TensorShape {
        tensor: String,
        path: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// An input tensor does not match the package's I/O schema.
    #[error("input `{name}`: {message}")]
    Input { name: String, message: String },
    /// A model produced an output that does not match its schema (a bug in that architecture).
    #[error("output `{name}`: {message}")]
    Output { name: String, message: String },
    /// A model produced NaN or infinity: never handed out silently.
    #[error("output `{name}`: element {index} is {value}")]
    NonFinite {
        name: String,
        index: usize,
        value: String,
    },
    /// The tokenizer could not be loaded or failed on the input.
    #[error("{}: tokenizer: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },
    /// A text is longer than the model accepts and truncation is off.
    #[error("text {index} has {length} tokens, more than the maximum of {max}")]
    TextTooLong {
        index: usize,
        length: usize,
        max: usize,
    },
    /// A NumPy file could not be read or written.
    #[error("{}: {message}", path.display())]
    Npy { path: PathBuf, message: String },
    /// An import source cannot be turned into a package.
    #[error("{}: {message}", path.display())]
    Import { path: PathBuf, message: String },
    /// An image could not be decoded, or is too large to decode.
    #[error("{}: {message}", path.display())]
    Image { path: PathBuf, message: String },
    /// A package appended to an executable, or embedded in one, is damaged or cannot be used.
    #[error("{}: {message}", path.display())]
    Bundle { path: PathBuf, message: String },
    /// The destination of a write already exists.
    #[error("{}: already exists", path.display())]
    AlreadyExists { path: PathBuf },
    /// An overwrite was asked for, but the destination is not something inferox wrote.
    #[error("{}: refusing to replace: {reason}", path.display())]
    NotReplaceable { path: PathBuf, reason: String },
    /// The caller passed an argument that cannot be used.
    #[error("{0}")]
    InvalidArgument(String),
    /// The operation needs something the package does not describe.
    #[error("{0}")]
    Unsupported(String),
    /// The hub has no such repository (or it is private and no token was given).
    #[error("repository `{repo}` was not found on the hub")]
    RepoNotFound { repo: String },
    /// The repository has no such branch, tag or commit.
    #[error("repository `{repo}` has no revision `{revision}`")]
    RevisionNotFound { repo: String, revision: String },
    /// A file the package needs is not in the repository.
    #[error("repository `{repo}` has no file `{file}`")]
    RemoteFileNotFound { repo: String, file: String },
    /// The hub refused access (401/403).
    #[error("the hub refused access to `{repo}` (HTTP {status}{})", if *gated { ", gated repository" } else { "" })]
    Unauthorized {
        repo: String,
        status: u16,
        gated: bool,
    },
    /// A downloaded file does not match the checksum the hub announced; it was deleted.
    #[error("`{file}` of {repo}: {message}")]
    ChecksumMismatch {
        repo: String,
        file: String,
        message: String,
    },
    /// The hub or mirror does not answer as the Hugging Face hub does (no checksum, a commit
    /// that is not one): running again will not help.
    #[error("the hub at {endpoint} {message}")]
    NotAHub { endpoint: String, message: String },
    /// The hub kept failing (5xx) after retries.
    #[error("{url}: the server answered HTTP {status}")]
    ServerError { url: String, status: u16 },
    /// The server did not answer in time.
    #[error("{url}: timed out")]
    Timeout { url: String },
    /// The connection failed or broke.
    #[error("{url}: {message}")]
    Network { url: String, message: String },
    /// No space left while writing.
    #[error("{}: no space left on the device", path.display())]
    DiskFull { path: PathBuf },
    /// Offline, and the cache lacks what is needed.
    #[error("offline: {what} (repository `{repo}`)")]
    Offline { repo: String, what: String },
    /// Neither a package directory nor the id of a package in the store.
    #[error("no package `{name}`: not a directory, nor an id in the store at {}", store.display())]
    PackageNotFound { name: String, store: PathBuf },
    /// A backend library reported an error.
    #[error("{backend} backend: {message}")]
    Backend {
        backend: &'static str,
        message: String,
    },
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

fn paths(files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    list(&names)
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    /// Wraps an error from writing `path`: a full disk becomes [`Error::DiskFull`].
    pub fn write(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        if matches!(
            error.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        ) {
            return Error::DiskFull { path: path.into() };
        }
        Error::io(path, error)
    }

    /// What the user can do about this error, when there is something to say. It speaks of the
    /// library's functions and option fields (`ImportOptions::overwrite`, ...), not of a command
    /// line: an application words the hints for its own interface, as the `inferox` binary does.
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            Error::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound => {
                "check the path".to_string()
            }
            Error::Io { error, .. } if error.kind() == std::io::ErrorKind::PermissionDenied => {
                "check the file permissions".to_string()
            }
            Error::Json { .. } | Error::Manifest { .. } => {
                "the file is damaged or was edited by hand; re-create the package with `inferox::import`"
                    .to_string()
            }
            Error::FormatVersion { .. } => {
                "re-import the model with this version of inferox, or use the inferox that wrote it"
                    .to_string()
            }
            Error::NotAPackage { .. } => {
                "create a package with `inferox::import` (or `hub::pull` from the Hugging Face hub)"
                    .to_string()
            }
            Error::MissingFile { .. } | Error::SizeMismatch { .. } | Error::HashMismatch { .. } => {
                "the package is incomplete or was modified; re-create it with `inferox::import`"
                    .to_string()
            }
            Error::PathEscape { .. } => {
                "manifest paths must be relative and stay inside the package; do not trust this package"
                    .to_string()
            }
            Error::UnknownModelType { .. } => {
                "`registry::model_types()` lists the registered architectures; `ImportOptions::force` imports the files anyway"
                    .to_string()
            }
            Error::UnknownBackend { .. } => {
                "`backend::names()` lists the backends linked into this build".to_string()
            }
            Error::BackendNotCompiled { feature, .. } => {
                format!("enable inferox's cargo feature `{feature}` and rebuild (`--features {feature}`)")
            }
            Error::BackendNotInPackage { .. } | Error::NoUsableBackend { .. } => {
                "`Package::info().backends` lists the package's backends and `backend::names()` this build's; re-import with a build that has the backend"
                    .to_string()
            }
            Error::NoImplementation { .. } => {
                "`registry::implementations_of(model_type, None)` lists the backends that implement a model type"
                    .to_string()
            }
            Error::DuplicateRegistration { .. } | Error::Registry(_) => {
                "two crates register the same architecture; remove one registration".to_string()
            }
            Error::Config { .. } => {
                "the model's config (config.json or GGUF metadata) does not match its weights or model_type; compare it with the upstream model"
                    .to_string()
            }
            Error::Weights { .. } => {
                "the weights file is truncated or corrupt; download it again".to_string()
            }
            Error::MissingTensor { .. } | Error::TensorShape { .. } | Error::TensorDtype { .. } => {
                "the weights do not belong to this config (wrong checkpoint or damaged file)"
                    .to_string()
            }
            Error::Input { .. } => {
                "`Package::info().io` lists the inputs with their dtypes and shapes".to_string()
            }
            Error::Output { .. } => {
                "this is a bug in the architecture's implementation; please report it".to_string()
            }
            Error::NonFinite { .. } => {
                "the weights or the inputs are damaged or out of range (check the package with `Package::verify`); `LoadOptions::allow_non_finite` passes such outputs through"
                    .to_string()
            }
            Error::Tokenizer { .. } => {
                "the package's tokenizer.json is damaged; re-import the model".to_string()
            }
            Error::TextTooLong { .. } => {
                "shorten the text, or allow truncation (`EmbedOptions::truncate`, or the `truncate` argument of `TextPreprocessor::encode`)"
                    .to_string()
            }
            Error::Npy { .. } => {
                "write inputs with numpy.save (C order; float32, int64, ... as the schema says)"
                    .to_string()
            }
            Error::AlreadyExists { .. } => {
                "choose another destination, or set `ImportOptions::overwrite` (`PullOptions::overwrite` for a pull)"
                    .to_string()
            }
            Error::Image { .. } => {
                "give a JPEG, PNG, GIF, BMP, TIFF or WebP file; re-export a damaged image, and scale a very large one down first"
                    .to_string()
            }
            Error::Bundle { .. } => {
                "re-create the bundle from its package directory (`bundle::write_bundle`); a bundle is read-only once written"
                    .to_string()
            }
            Error::NotReplaceable { .. } => {
                "an overwrite only replaces an inferox package (model_info.json + metadata.json and the files it lists) or an empty directory; choose another destination or move those files away first"
                    .to_string()
            }
            Error::RepoNotFound { .. } => {
                "check the repo id (org/name); for a private repository set HF_TOKEN".to_string()
            }
            Error::RevisionNotFound { .. } => {
                "check the branch, tag or commit after @ (default: main)".to_string()
            }
            Error::RemoteFileNotFound { .. } => {
                "the repository is incomplete or not a Hugging Face model layout".to_string()
            }
            Error::Unauthorized { gated: true, .. } => {
                "accept the model's terms on the hub, then set HF_TOKEN to a token of that account"
                    .to_string()
            }
            Error::Unauthorized { .. } => {
                "set HF_TOKEN to a token with access to this repository".to_string()
            }
            Error::ServerError { .. } | Error::Network { .. } | Error::Timeout { .. } => {
                "try again later; a re-run resumes where this one stopped (HF_ENDPOINT picks another hub)"
                    .to_string()
            }
            Error::ChecksumMismatch { .. } => {
                "run the pull again to download the file afresh; if it fails the same way, the hub or mirror (HF_ENDPOINT) serves a file that does not match its checksum"
                    .to_string()
            }
            Error::NotAHub { .. } => {
                "use a hub or mirror that answers as huggingface.co does (unset HF_ENDPOINT for huggingface.co itself); running again will not help"
                    .to_string()
            }
            Error::DiskFull { .. } => {
                "free some space (or move the cache with HF_HOME) and run again; it resumes".to_string()
            }
            Error::PackageNotFound { .. } => {
                "`Store::list` lists the store; `hub::pull` adds to it".to_string()
            }
            Error::Offline { .. } => {
                "run once with network access (unset HF_HUB_OFFLINE), or import a local copy".to_string()
            }
            _ => return None,
        };
        Some(hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library is embedded by applications without a command line: its hints name
    /// functions and option fields, never an `inferox` command or flag (`--features` is cargo's).
    #[test]
    fn hints_speak_library_terms() {
        let path = PathBuf::from("p");
        let errors = [
            Error::Json {
                path: path.clone(),
                message: String::new(),
            },
            Error::NotAPackage {
                path: path.clone(),
                missing: String::new(),
            },
            Error::HashMismatch {
                path: path.clone(),
                expected: String::new(),
                found: String::new(),
            },
            Error::UnknownModelType {
                model_type: String::new(),
                registered: vec![],
            },
            Error::UnknownBackend {
                name: String::new(),
                known: vec![],
            },
            Error::BackendNotCompiled {
                backend: "torch".into(),
                feature: "torch".into(),
            },
            Error::NoUsableBackend {
                model_type: String::new(),
                reasons: vec![],
            },
            Error::NoImplementation {
                model_type: String::new(),
                backend: String::new(),
                available: vec![],
            },
            Error::Input {
                name: String::new(),
                message: String::new(),
            },
            Error::NonFinite {
                name: String::new(),
                index: 0,
                value: String::new(),
            },
            Error::TextTooLong {
                index: 0,
                length: 2,
                max: 1,
            },
            Error::AlreadyExists { path: path.clone() },
            Error::Bundle {
                path: path.clone(),
                message: String::new(),
            },
            Error::Image {
                path: path.clone(),
                message: String::new(),
            },
            Error::PackageNotFound {
                name: String::new(),
                store: path,
            },
        ];
        for e in errors {
            let hint = e.hint().unwrap();
            let flags = hint.replace("--features", "");
            assert!(
                !hint.contains("`inferox ") && !flags.contains("--"),
                "{e:?}: {hint}"
            );
        }
    }
}
