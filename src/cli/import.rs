//! `inferox import`.

use super::{Progress, human_bytes, print_json};
use inferox::ImportOptions;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model directory, cache snapshot or cache entry (models--org--name).
    src: PathBuf,
    /// Where to write the package (a new directory; default: the store, under the repo id or
    /// `local/NAME`).
    #[arg(long, short)]
    output: Option<PathBuf>,
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
    /// Also carry this TorchScript export (torch.jit.trace/script output) as the torch
    /// backend's artifact, backends/torch/model.pt. Needs --torchscript-inputs and -outputs.
    #[arg(long, value_name = "FILE.pt", requires_all = ["torchscript_inputs", "torchscript_outputs"])]
    torchscript: Option<PathBuf>,
    /// The schema inputs in the order the TorchScript module's forward takes them
    /// (comma-separated, e.g. input_ids,attention_mask,token_type_ids).
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        requires = "torchscript"
    )]
    torchscript_inputs: Vec<String>,
    /// The schema outputs in the order the module returns them (comma-separated).
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        requires = "torchscript"
    )]
    torchscript_outputs: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let options = ImportOptions {
        force: args.force,
        overwrite: args.overwrite,
        repo_id: args.repo_id,
        revision: args.revision,
        provenance: None,
        torchscript: args
            .torchscript
            .map(|path| inferox::import::TorchScriptExport {
                path,
                inputs: args.torchscript_inputs,
                outputs: args.torchscript_outputs,
            }),
    };
    let output = match &args.output {
        Some(o) => o.clone(),
        None => {
            let id = default_id(&args.src, options.repo_id.as_deref());
            inferox::store::Store::from_env()?.path_for(&id)?
        }
    };
    let mut progress = Progress::new(!args.json);
    let package = inferox::import(&args.src, &output, &options, &mut |e| progress.event(e))?;
    progress.finish();
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
    println!("next: inferox inspect {}", output.display());
    Ok(())
}

/// The store id of an import without --output: the repo id given or found in a Hugging Face
/// cache path, else `local/` and the source's name.
fn default_id(src: &std::path::Path, repo_id: Option<&str>) -> String {
    if let Some(id) = repo_id
        .map(str::to_string)
        .or_else(|| inferox::import::cache_repo_id(src))
    {
        return id;
    }
    let name = src
        .canonicalize()
        .ok()
        .and_then(|p| p.file_stem().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into());
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("local/{}", name.replace("--", "-").trim_start_matches('.'))
}
