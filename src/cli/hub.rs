//! `inferox pull`, `inferox packages`, `inferox rm`.

use super::{Progress, human_bytes, print_json};
use inferox::hub::{PullOptions, RepoSpec};
use inferox::store::{Store, package_id};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct PullArgs {
    /// Repository on the hub, optionally with a branch, tag or commit: ORG/NAME[@REVISION].
    repo: String,
    /// Where to write the package (default: the store, under the repo id).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// For a repository of GGUF files: the one whose name contains this (Q4_K_M, Q8_0, ...).
    #[arg(long, value_name = "PATTERN")]
    quant: Option<String>,
    /// Use only the Hugging Face cache (as HF_HUB_OFFLINE=1 does).
    #[arg(long)]
    offline: bool,
    /// Replace a package already at --output (a pull into the store replaces an older commit).
    #[arg(long)]
    overwrite: bool,
    /// Seconds a transfer may stall before it is retried (default 30).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Print the result as JSON (no progress bars).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct PackagesArgs {
    /// Print the list as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RmArgs {
    /// Id of the package to remove (as `inferox packages` shows it).
    id: String,
}

pub fn pull(args: PullArgs) -> anyhow::Result<()> {
    let spec: RepoSpec = args.repo.parse()?;
    let into_store = args.output.is_none();
    let dest = match &args.output {
        Some(o) => o.clone(),
        None => {
            let id = package_id(&spec.repo_id, &spec.revision);
            Store::from_env()?.path_for(&id).map_err(|_| {
                inferox::Error::InvalidArgument(format!(
                    "`{id}` cannot name a package in the store (a revision there has only \
                     letters, digits, `-`, `_`, `.` and `/`, and no `--`); choose a directory \
                     with --output"
                ))
            })?
        }
    };
    let options = PullOptions {
        offline: args.offline,
        quantization: args.quant.clone(),
        timeout: args.timeout.map(Duration::from_secs),
        overwrite: args.overwrite || into_store,
        ..Default::default()
    };
    let mut progress = Progress::new(!args.json);
    let mut up_to_date = false;
    let package = inferox::hub::pull(&spec, &dest, &options, &mut |e| {
        if matches!(e, inferox::ImportEvent::UpToDate) {
            up_to_date = true;
        }
        progress.event(e)
    })?;
    progress.finish();
    let meta = package.metadata();
    let commit = meta.source.commit.clone().unwrap_or_default();
    if args.json {
        return print_json(&json!({
            "package": package.root(),
            "repo_id": spec.repo_id,
            "revision": spec.revision,
            "commit": commit,
            "up_to_date": up_to_date,
            "model_type": package.info().model_type,
            "backends": package.info().backends.keys().collect::<Vec<_>>(),
            "bytes": meta.total_size(),
        }));
    }
    let state = if up_to_date {
        "already up to date"
    } else {
        "pulled"
    };
    println!(
        "{} {}@{} ({}) {state}: {} package, {} at {}",
        package.info().model_type,
        spec.repo_id,
        spec.revision,
        &commit[..commit.len().min(12)],
        package
            .info()
            .backends
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        human_bytes(meta.total_size()),
        package.root().display()
    );
    Ok(())
}

pub fn packages(args: PackagesArgs) -> anyhow::Result<()> {
    let store = Store::from_env()?;
    let entries = store.list()?;
    if args.json {
        let rows: Vec<_> = entries
            .iter()
            .map(|e| match &e.package {
                Ok(p) => json!({
                    "id": e.id,
                    "path": e.path,
                    "model_type": p.info().model_type,
                    "revision": p.metadata().source.commit.clone().or(p.metadata().source.revision.clone()),
                    "bytes": p.metadata().total_size(),
                    "backends": p.info().backends.keys().collect::<Vec<_>>(),
                }),
                Err(err) => json!({"id": e.id, "path": e.path, "error": err.to_string()}),
            })
            .collect();
        return print_json(&rows);
    }
    if entries.is_empty() {
        println!(
            "no packages in {} (inferox pull ORG/NAME adds one)",
            store.root().display()
        );
        return Ok(());
    }
    println!(
        "{:<40} {:<12} {:<10} {:>10}  BACKENDS",
        "ID", "REVISION", "TYPE", "SIZE"
    );
    for e in &entries {
        match &e.package {
            Ok(p) => {
                let source = &p.metadata().source;
                let rev = source
                    .commit
                    .clone()
                    .or(source.revision.clone())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<40} {:<12} {:<10} {:>10}  {}",
                    e.id,
                    &rev[..rev.len().min(12)],
                    p.info().model_type,
                    human_bytes(p.metadata().total_size()),
                    p.info()
                        .backends
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Err(err) => println!("{:<40} damaged: {err}", e.id),
        }
    }
    println!("store: {}", store.root().display());
    Ok(())
}

pub fn rm(args: RmArgs) -> anyhow::Result<()> {
    let path = Store::from_env()?.remove(&args.id)?;
    println!("removed {} ({})", args.id, path.display());
    Ok(())
}
