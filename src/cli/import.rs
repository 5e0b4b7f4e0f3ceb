//! `inferox import`.

use super::{byte_bar, human_bytes, print_json};
use inferox::{ImportEvent, ImportOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model directory, cache snapshot or cache entry (models--org--name).
    src: PathBuf,
    /// Where to write the package (a new directory).
    #[arg(long, short)]
    output: PathBuf,
    /// Replace an existing package at --output.
    #[arg(long)]
    overwrite: bool,
    /// Import even if this build has no architecture for the model type, or cannot reproduce its
    /// sentence-transformers modules (the package records what it can run, nothing more).
    #[arg(long)]
    force: bool,
    /// Hugging Face repo id to record as the source (taken from the cache path when there is one).
    #[arg(long, value_name = "ORG/NAME")]
    repo_id: Option<String>,
    /// Revision to record; for a cache entry, the ref to import (default main).
    #[arg(long)]
    revision: Option<String>,
    /// Print the new package's model_info.json instead of a summary.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let options = ImportOptions {
        force: args.force,
        overwrite: args.overwrite,
        repo_id: args.repo_id,
        revision: args.revision,
    };
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut progress = |event: ImportEvent<'_>| match event {
        ImportEvent::File { path, size } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            bar = Some(byte_bar(size, path.to_string()));
        }
        ImportEvent::Bytes(n) => {
            if let Some(b) = &bar {
                b.set_position(n);
            }
        }
        ImportEvent::Warning(message) => eprintln!("warning: {message}"),
    };
    let package = inferox::import(&args.src, &args.output, &options, &mut progress)?;
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    let info = package.info();
    if args.json {
        return print_json(info);
    }
    let backends: Vec<&str> = info.backends.keys().map(String::as_str).collect();
    println!(
        "imported {} ({}, {} parameters) into {}",
        info.model_type,
        info.architectures
            .first()
            .map_or("no architectures listed", String::as_str),
        info.parameters,
        package.root().display()
    );
    println!(
        "backends: {}; files: {}, {}",
        if backends.is_empty() {
            "none".to_string()
        } else {
            backends.join(", ")
        },
        package.metadata().files.len(),
        human_bytes(package.metadata().total_size())
    );
    println!("next: inferox inspect {}", args.output.display());
    Ok(())
}
