//! Subcommands of the `inferox` binary.

pub mod bench;
pub mod bundle;
pub mod generate;
pub mod hub;
pub mod import;
pub mod info;
pub mod run;
pub mod serve;

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::OnceLock;

static THREADS: OnceLock<Option<usize>> = OnceLock::new();

/// Records the global `--threads` (once, at start-up) for the commands that load models.
pub fn set_threads(threads: Option<usize>) {
    let _ = THREADS.set(threads);
}

/// The global `--threads`, if given.
pub fn threads() -> Option<usize> {
    THREADS.get().copied().flatten()
}

/// Where and how a command runs a package: `--backend`, `--device`, `--dtype`.
#[derive(clap::Args)]
pub struct Placement {
    /// Backend to run on (default: the first the package lists that this binary has).
    #[arg(long)]
    pub backend: Option<String>,
    /// Device: cpu, cuda, cuda:N, metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: f32, f16 or bf16 (outputs are always float32). On CPUs with AVX-512, bf16
    /// keeps the dense layers' weights in bf16 and computes in f32.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

impl Placement {
    /// Load options with these settings and the global `--threads`.
    pub fn options(&self) -> anyhow::Result<inferox::LoadOptions> {
        Ok(inferox::LoadOptions {
            backend: self.backend.clone(),
            dtype: Some(self.dtype.parse::<inferox::DType>()?),
            device: self.device.parse::<inferox::Device>()?,
            threads: threads(),
            ..Default::default()
        })
    }
}

/// The threads tensor work runs on, and where that count comes from.
pub fn threads_in_effect() -> (usize, &'static str) {
    for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
        if let Some(n) = std::env::var(var)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
        {
            return (n, var);
        }
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (n, "default; --threads N or RAYON_NUM_THREADS to change")
}

/// A byte progress bar on stderr, or a hidden one when stderr is not a terminal.
pub fn byte_bar(total: u64, message: String) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:32!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

/// Shows import and pull progress on stderr as a byte bar per file when stderr is a terminal
/// (and nothing otherwise, or with `--json`).
pub struct Progress {
    bar: Option<ProgressBar>,
    shown: bool,
}

impl Progress {
    /// A reporter; `shown` is false for `--json` output.
    pub fn new(shown: bool) -> Progress {
        Progress { bar: None, shown }
    }

    fn start(&mut self, size: u64, message: String, at: u64) {
        self.finish();
        if self.shown {
            let bar = byte_bar(size, message);
            bar.set_position(at);
            self.bar = Some(bar);
        }
    }

    /// Handles one event.
    pub fn event(&mut self, event: inferox::ImportEvent<'_>) {
        use inferox::ImportEvent as E;
        match event {
            E::File { path, size } => self.start(size, path.to_string(), 0),
            E::Download {
                path,
                size,
                resume_from,
            } => self.start(size, format!("↓ {path}"), resume_from),
            E::Bytes(n) => {
                if let Some(b) = &self.bar {
                    b.set_position(n);
                }
            }
            E::Warning(message) => eprintln!("warning: {message}"),
            _ => {}
        }
    }

    /// Clears the last bar.
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// What the user can do about `error`, in the command line's words: the library's hints
/// ([`inferox::Error::hint`]) name functions and option fields; where one names what a command or
/// flag does here, this says the command or flag.
pub fn hint(error: &inferox::Error) -> Option<String> {
    use inferox::Error as E;
    let hint = match error {
        E::Json { .. } | E::Manifest { .. } => {
            "the file is damaged or was edited by hand; re-create the package with `inferox import`"
                .to_string()
        }
        E::NotAPackage { .. } => "create a package with `inferox import SRC --output PKG`".to_string(),
        E::MissingFile { .. } | E::SizeMismatch { .. } | E::HashMismatch { .. } => {
            "the package is incomplete or was modified; re-create it with `inferox import`"
                .to_string()
        }
        E::UnknownModelType { .. } => {
            "`inferox list` shows the registered architectures; `inferox import --force` keeps the files anyway"
                .to_string()
        }
        E::UnknownBackend { .. } => "`inferox doctor` lists the backends".to_string(),
        E::BackendNotCompiled { feature, .. } => {
            format!("rebuild with `cargo build --release --features {feature}`")
        }
        E::BackendNotInPackage { .. } | E::NoUsableBackend { .. } => {
            "`inferox inspect PKG` shows the package's backends and `inferox doctor` this binary's; re-import with a binary that has the backend"
                .to_string()
        }
        E::NoImplementation { .. } => {
            "`inferox list` shows which backends implement each model type".to_string()
        }
        E::Input { .. } => {
            "`inferox inspect PKG` lists the inputs with their dtypes and shapes".to_string()
        }
        E::NonFinite { .. } => {
            "the weights or the inputs are damaged or out of range (check the package with `inferox validate`); LoadOptions::allow_non_finite passes such outputs through"
                .to_string()
        }
        E::TextTooLong { .. } => {
            "shorten the text, or allow truncation (drop --no-truncate)".to_string()
        }
        E::AlreadyExists { .. } => "choose another --output or pass --overwrite".to_string(),
        E::Bundle { .. } => {
            "bundle the package directory again with a plain inferox: `inferox bundle PKG --output APP`"
                .to_string()
        }
        E::PackageNotFound { .. } => {
            "`inferox packages` lists the store; `inferox pull ORG/NAME` adds to it".to_string()
        }
        _ => return error.hint(),
    };
    Some(hint)
}

/// Opens a package given by path, or by id from the store; without one, the package this
/// executable carries (a bundle).
pub fn open_package(name: Option<&str>) -> anyhow::Result<inferox::Package> {
    let Some(name) = name else {
        return match inferox::Package::open_embedded()? {
            Some(package) => Ok(package),
            None => anyhow::bail!(
                "no package given: name a package directory or a store id (`inferox packages` lists the store)"
            ),
        };
    };
    match inferox::store::Store::from_env() {
        Ok(store) => Ok(store.open(name)?),
        // Without a home for the store, only paths work.
        Err(_) => Ok(inferox::Package::open(name)?),
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Human-readable byte count.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
