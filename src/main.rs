//! The `inferox` command line.

mod allocator;
mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Turn Hugging Face models into self-describing packages and run them on the backends compiled
/// into this binary.
#[derive(Parser)]
#[command(name = "inferox", version, about, after_help = EXAMPLES)]
struct Cli {
    /// Threads for tensor work, on every backend (default: one per physical core). Goes
    /// before or after the command: `inferox run PKG --threads 2 ...`.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a package from a Hugging Face model directory or cache entry.
    ///
    /// SRC is a directory with config.json and model.safetensors (or a sharded checkpoint), a
    /// snapshot inside a Hugging Face cache (~/.cache/huggingface/hub/models--org--name/snapshots/SHA),
    /// or the cache entry itself (models--org--name; --revision picks the ref, default main).
    /// The package is written atomically: an interrupted import leaves nothing at --output.
    Import(cli::import::Args),
    /// Show what a package holds: model, backends, inputs and outputs, files.
    Inspect(cli::info::InspectArgs),
    /// Check a package: structure, paths, every file's size and sha256.
    Validate(cli::info::ValidateArgs),
    /// List the architectures compiled into this binary (model_type × backend).
    List(cli::info::ListArgs),
    /// Show this build: version, features, backends, threads, CPU features.
    Doctor(cli::info::DoctorArgs),
    /// Run a package on text (--text) or raw tensors (--input NAME=FILE.npy).
    ///
    /// For a sentence-embedding package, --text gives one embedding per text (--similarity adds
    /// the cosine-similarity matrix); for other packages it gives the model's outputs by name.
    Run(cli::run::Args),
    /// Download a model from the Hugging Face hub and make a package of it.
    ///
    /// Only what the package needs is downloaded (config, safetensors weights or one GGUF file,
    /// tokenizer and generation files), into the Hugging Face cache, every file checked against
    /// the hub's sha256; an interrupted pull resumes. Honours HF_ENDPOINT, HF_TOKEN, HF_HOME and
    /// HF_HUB_OFFLINE. Without --output the package goes to the store (`inferox packages`).
    Pull(cli::hub::PullArgs),
    /// List the packages in the store (INFEROX_PACKAGES, default ~/.local/share/inferox/packages).
    Packages(cli::hub::PackagesArgs),
    /// Remove a package from the store.
    Rm(cli::hub::RmArgs),
    /// Generate text from a prompt, streaming it to standard output.
    ///
    /// A text-generation package (GPT-2, Llama, ...) continues the prompt; a
    /// text2text-generation package (T5) encodes it once and writes its output from the
    /// decoder's start token. Timings go to standard error. --temperature 0 is greedy; --seed
    /// makes sampling reproducible; --json prints one document with the text and the generated
    /// token ids.
    Generate(cli::generate::GenerateArgs),
    /// Chat with a package that has a chat template (from tokenizer_config.json or GGUF).
    ///
    /// With --prompt it answers that one message and exits; otherwise it reads one message per
    /// line from standard input and keeps the conversation.
    Chat(cli::generate::ChatArgs),
    /// Write one executable that carries a package: this program with the package appended.
    ///
    /// APP behaves as inferox with that package as the default: `APP --text "..."` runs it,
    /// `APP generate --prompt P`, `APP chat`, `APP inspect` and `APP validate` use it. The
    /// weights are memory-mapped from APP itself (no extraction, no second copy); a truncated or
    /// modified APP is an error when it starts. APP needs nothing else: no package directory,
    /// no environment, no shared library beyond what this program links.
    Bundle(cli::bundle::Args),
    /// Measure a package's speed, as llama-bench does for llama.cpp.
    ///
    /// Decoders: prompt processing (-p N tokens in one pass) and generation (-n N tokens one at
    /// a time), each from an empty cache, in tokens/s. Encoders: forward passes over --batch
    /// rows of --seq tokens (or images at the package's size), in items/s and ms per pass.
    /// Every figure is the mean ± standard deviation of --repetitions timed runs after
    /// --warmup untimed ones; the inputs are fixed, so runs are comparable. Use the global
    /// --threads to pin threads: `inferox bench PKG --threads 2 -p 128 -n 64`.
    Bench(cli::bench::Args),
    /// Serve packages over HTTP: KServe v2 and OpenAI-compatible endpoints.
    ///
    /// Each package gets a worker thread that owns the loaded model and a bounded queue (429 with
    /// Retry-After when full). Embedding requests arriving together run as one batch; concurrent
    /// generations decode together. Binds 127.0.0.1:8080 unless told otherwise; prints the
    /// address on standard output once listening.
    Serve(cli::serve::Args),
}

const EXAMPLES: &str = "Examples:
  inferox import ./all-MiniLM-L6-v2 --output minilm.pkg
  inferox inspect minilm.pkg
  inferox run minilm.pkg --text \"A man is eating food.\" --text \"A man eats bread.\" --similarity
  inferox run minilm.pkg --input input_ids=ids.npy --json
  inferox pull sentence-transformers/all-MiniLM-L6-v2
  inferox run sentence-transformers/all-MiniLM-L6-v2 --text \"Hello\"
  inferox import SmolLM2-135M-Instruct.Q4_1.gguf --output smollm2.pkg
  inferox chat smollm2.pkg --prompt \"What is the capital of France?\"
  inferox bundle minilm.pkg --output embed && ./embed --text \"Hello\"
  inferox bench minilm.pkg --batch 32 --seq 128 --threads 2
  inferox bench smollm2.pkg -p 128 -n 64 --json

`inferox COMMAND --help` explains each command.";

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        // A panic in third-party code that the library catches becomes an ordinary error.
        if inferox::panic_is_guarded() {
            return;
        }
        eprintln!("error: internal error: {info}");
        eprintln!("hint: this is a bug in inferox; please report it with the command you ran");
    }));
    let cli = match bundled() {
        Ok(true) => {
            use clap::{CommandFactory, FromArgMatches};
            let matches = Cli::command()
                .before_help(BUNDLE_NOTE)
                .get_matches_from(bundle_args(std::env::args_os().collect()));
            Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
        }
        Ok(false) => Cli::parse(),
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(hint) = cli::hint(&e) {
                eprintln!("hint: {hint}");
            }
            return ExitCode::FAILURE;
        }
    };
    if !matches!(cli.command, Command::Serve(_)) {
        // A command that runs a model and ends keeps freed memory for reuse; the server keeps
        // mimalloc's default, so that its RSS under hours of load follows what it uses
        // (tests/serve.rs checks that it levels off).
        allocator::keep_freed_memory();
        // Rust ignores SIGPIPE, so printing into a closed pipe (`inferox run ... | head`) was
        // a panic; a command-line tool should end quietly as others do. The server keeps
        // ignoring it: a closed log pipe must not kill it.
        #[cfg(unix)]
        // SAFETY: no other thread exists yet; setting a signal's disposition is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if let Some(n) = cli.threads {
        // SAFETY: no other thread exists yet; candle and rayon read these when they start.
        unsafe {
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        }
    }
    cli::set_threads(cli.threads.map(usize::from));
    let result = match cli.command {
        Command::Import(args) => cli::import::run(args),
        Command::Inspect(args) => cli::info::inspect(args),
        Command::Validate(args) => cli::info::validate(args),
        Command::List(args) => cli::info::list(args),
        Command::Doctor(args) => cli::info::doctor(args),
        Command::Run(args) => cli::run::run(args),
        Command::Generate(args) => cli::generate::generate(args),
        Command::Pull(args) => cli::hub::pull(args),
        Command::Packages(args) => cli::hub::packages(args),
        Command::Rm(args) => cli::hub::rm(args),
        Command::Chat(args) => cli::generate::chat(args),
        Command::Bundle(args) => cli::bundle::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Serve(args) => cli::serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = e.downcast_ref::<inferox::Error>().and_then(cli::hint) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

const BUNDLE_NOTE: &str = "This executable carries a package (written by `inferox bundle`): every \
command that takes PKG runs it when none is named, and options alone run it (`APP --text T` is \
`APP run --text T`). `APP inspect` shows it, `APP validate` checks every byte of it.";

/// Whether this executable carries a package (a bundle); a damaged bundle is an error.
fn bundled() -> inferox::Result<bool> {
    match std::env::current_exe() {
        Ok(exe) => inferox::package::bundle::carries_package(&exe),
        Err(_) => Ok(false),
    }
}

/// A bundle's command line: options without a command run the package (`APP --text T` is
/// `APP run --text T`).
fn bundle_args(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let own = ["-h", "--help", "-V", "--version"];
    if first.starts_with('-') && !own.contains(&first) {
        args.insert(1, "run".into());
    }
    args
}

#[cfg(test)]
mod tests {
    include!("../tests/common/expected_registry.rs");

    #[test]
    fn registrations_are_linked_into_the_binary() {
        inferox::registry::check().unwrap();
        let mut linked: Vec<(String, String)> = inferox::registry::implementations()
            .iter()
            .map(|a| (a.model_type.to_string(), a.backend.to_string()))
            .collect();
        linked.sort();
        assert_eq!(linked, expected_pairs());
        assert_eq!(
            inferox::registry::model_type_names(),
            expected_model_types()
        );
        assert_eq!(inferox::backend::names(), expected_backends());
    }

    #[test]
    fn a_bundle_runs_its_package_by_default() {
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert_eq!(
            super::bundle_args(args(&["app", "--text", "hi"])),
            args(&["app", "run", "--text", "hi"])
        );
        assert_eq!(
            super::bundle_args(args(&["app", "--threads", "1", "--text", "hi"])),
            args(&["app", "run", "--threads", "1", "--text", "hi"])
        );
        for kept in [&["app", "--help"][..], &["app", "inspect"], &["app"]] {
            assert_eq!(super::bundle_args(args(kept)), args(kept));
        }
    }
}
