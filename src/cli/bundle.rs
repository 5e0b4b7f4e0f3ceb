//! `inferox bundle`: one executable that carries a package.

use super::{Progress, human_bytes, print_json};
use inferox::package::bundle;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Package directory, or the id of a package in the store (`inferox packages`).
    package: String,
    /// The executable to write.
    #[arg(long, short, value_name = "APP")]
    output: PathBuf,
    /// Append the package to this executable instead of to inferox itself: an app of your own
    /// that finds it with `Package::open_embedded()`.
    #[arg(long, value_name = "EXE")]
    program: Option<PathBuf>,
    /// Replace APP if it is a bundle written earlier (nothing else is ever replaced).
    #[arg(long)]
    overwrite: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let package = super::open_package(Some(&args.package))?;
    let program = match &args.program {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let mut progress = Progress::new(!args.json);
    let size = bundle::write_bundle(
        &package,
        &program,
        &args.output,
        args.overwrite,
        |file, size| {
            progress.event(inferox::ImportEvent::File { path: file, size });
        },
    );
    progress.finish();
    let size = size?;
    let package_size = package.metadata().total_size();
    if args.json {
        return print_json(&json!({
            "output": args.output,
            "size": size,
            "package": package.root(),
            "package_size": package_size,
        }));
    }
    let app = args.output.display();
    println!(
        "wrote {app} ({}: this program and the {} package {}, {})",
        human_bytes(size),
        package.info().model_type,
        package.root().display(),
        human_bytes(package_size)
    );
    if args.program.is_none() {
        println!("run it like inferox, without naming the package:");
        println!("  {app} --help        {app} inspect        {app} validate");
    }
    Ok(())
}
