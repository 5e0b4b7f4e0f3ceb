//! `inferox inspect`, `validate`, `list` and `doctor`.

use super::{byte_bar, human_bytes, print_json};
use inferox::registry::{Implementation, ModelType};
use inferox::schema::{Preprocessing, TensorSpec};
use inferox::{Package, backend, backends, build_info, registry};
use serde_json::json;

#[derive(clap::Args)]
pub struct InspectArgs {
    /// Package directory, or the id of a package in the store (`inferox packages`). A bundle
    /// (`inferox bundle`) runs the package it carries when none is given.
    package: Option<String>,
    /// Also check every file's sha256 against metadata.json.
    #[arg(long)]
    verify: bool,
    /// Print model_info.json and metadata.json as one JSON document.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// Package directory, or the id of a package in the store (`inferox packages`). A bundle
    /// (`inferox bundle`) runs the package it carries when none is given.
    package: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// Print the registry as JSON.
    #[arg(long)]
    json: bool,
    /// Print the README's supported-model table, as this build's registry has it (columns of
    /// backends this build does not link say so).
    #[arg(long, conflicts_with = "json")]
    markdown: bool,
}

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Which backend would load the package here, or why none.
fn loadable(package: &Package) -> Result<&'static str, inferox::Error> {
    inferox::loader::choose_backend(package, None)
}

/// The manifest spelling of an enum value (`attention_mask`, `mean`, ...).
fn serde_name(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

fn spec_line(spec: &TensorSpec) -> String {
    let mut line = format!(
        "  {:<18} {:<8} {:<28}",
        spec.name,
        spec.dtype.as_str(),
        spec.shape_string()
    );
    if spec.optional {
        line.push_str(" optional");
    }
    match &spec.preprocessing {
        Some(Preprocessing::Tokenization(t)) => line.push_str(&format!(
            " <- {} ({}, max {})",
            t.tokenizer,
            serde_name(&t.field),
            t.max_length
        )),
        Some(Preprocessing::Image(i)) => {
            line.push_str(&format!(" <- images ({}: {})", i.config, i.summary()))
        }
        None => {}
    }
    line
}

pub fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let package = super::open_package(args.package.as_deref())?;
    if args.verify {
        package.verify()?;
    }
    let info = package.info();
    let meta = package.metadata();
    if args.json {
        return print_json(&json!({"model_info": info, "metadata": meta}));
    }
    println!("package   {}", package.root().display());
    // config.json's `architectures` (transformers' class names), when the source had them.
    let classes = match info.architectures.is_empty() {
        true => String::new(),
        false => format!(" ({})", info.architectures.join(", ")),
    };
    println!(
        "model     {}{classes}, family {}",
        info.model_type,
        info.family.map_or("unknown".to_string(), |f| f.to_string())
    );
    println!("tasks     {}", info.tasks.join(", "));
    if let Some(repo) = &info.source.repo_id {
        println!(
            "source    {repo}{}",
            info.source
                .revision
                .as_ref()
                .map(|r| format!("@{r}"))
                .unwrap_or_default()
        );
    }
    println!(
        "size      {} parameters, ~{} of weights, {} files ({})",
        info.parameters,
        human_bytes(info.memory_estimate_bytes),
        meta.files.len(),
        human_bytes(meta.total_size())
    );
    println!(
        "created   {} by inferox {}",
        meta.created_at, meta.inferox_version
    );
    println!("backends");
    for (name, b) in &info.backends {
        let compiled = backend::get(name).is_some();
        // A quantized checkpoint is described by its quantization, not its float dtype.
        let storage = match &b.quantization {
            Some(q) => format!("{q} quantized"),
            None => b.dtype.to_string(),
        };
        println!(
            "  {:<8} {} ({storage}), {} artifacts{}",
            name,
            b.format,
            b.artifacts.len(),
            if compiled {
                ""
            } else {
                "  [not compiled into this binary]"
            }
        );
    }
    match loadable(&package) {
        Ok(b) => println!("runs here on {b}"),
        Err(e) => println!("cannot run here: {e}"),
    }
    println!("inputs");
    for spec in &info.io.inputs {
        println!("{}", spec_line(spec));
    }
    println!("outputs");
    for spec in &info.io.outputs {
        println!("{}", spec_line(spec));
    }
    for (name, dim) in &info.io.dims {
        if let Some(max) = dim.max {
            println!("dim       {name} <= {max}");
        }
    }
    if let Some(s) = &info.sentence_embedding {
        println!(
            "embedding {} pooling of {}, {} dims, normalize {}, max {} tokens",
            serde_name(&s.pooling),
            s.token_embeddings,
            s.dimension,
            s.normalize,
            s.max_seq_length
        );
    }
    if !info.labels.is_empty() {
        let labels: Vec<String> = info
            .labels
            .iter()
            .map(|(i, l)| format!("{i}={l}"))
            .collect();
        println!("labels    {}", labels.join(", "));
    }
    Ok(())
}

pub fn validate(args: ValidateArgs) -> anyhow::Result<()> {
    let package = super::open_package(args.package.as_deref())?;
    let total = package.metadata().total_size();
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        byte_bar(total, "verifying".into())
    };
    let mut done = 0u64;
    package.verify_with(|file, size| {
        bar.set_message(file.to_string());
        bar.set_position(done);
        done += size;
    })?;
    bar.finish_and_clear();
    let runs_on = loadable(&package);
    if args.json {
        return print_json(&json!({
            "valid": true,
            "embedded": package.is_embedded(),
            "files": package.metadata().files.len(),
            "bytes": total,
            "runs_on": runs_on.as_ref().ok(),
        }));
    }
    println!(
        "ok: {} files, {} verified (structure, paths, sizes, sha256, weight headers{})",
        package.metadata().files.len(),
        human_bytes(total),
        if package.is_embedded() {
            "; the bundle's file table and the program's sha256"
        } else {
            ""
        }
    );
    match runs_on {
        Ok(b) => println!("runs here on {b}"),
        Err(e) => println!("note: cannot run here: {e}"),
    }
    Ok(())
}

pub fn list(args: ListArgs) -> anyhow::Result<()> {
    registry::check()?;
    if args.markdown {
        print!(
            "{}",
            inferox::supported::markdown_table(&inferox::supported::rows())
        );
        return Ok(());
    }
    // One row per implementation; a model type no linked backend implements gets one row too.
    let rows: Vec<(&ModelType, Option<&Implementation>)> = registry::model_types()
        .iter()
        .flat_map(|m| {
            let implementations = registry::implementations_of(m.model_type, None);
            if implementations.is_empty() {
                vec![(*m, None)]
            } else {
                implementations.into_iter().map(|i| (*m, Some(i))).collect()
            }
        })
        .collect();
    if args.json {
        let rows: Vec<_> = rows
            .iter()
            .map(|(m, i)| {
                json!({
                    "model_type": m.model_type,
                    "backend": i.map(|i| i.backend),
                    "family": m.family,
                    "formats": i.map_or(&[][..], |i| i.formats),
                    "gguf_architectures": m.gguf_architectures,
                    "tasks": m.tasks,
                    "reference": m.reference,
                })
            })
            .collect();
        return print_json(&rows);
    }
    if backend::backends().is_empty() {
        println!(
            "this binary links no backend (rebuild with --features candle): it can import but not run"
        );
    }
    println!(
        "{:<14} {:<8} {:<14} {:<24} TASKS",
        "MODEL_TYPE", "BACKEND", "FAMILY", "FORMATS"
    );
    for (m, i) in rows {
        let formats: Vec<String> = i
            .map_or(&[][..], |i| i.formats)
            .iter()
            .map(|f| f.to_string())
            .collect();
        println!(
            "{:<14} {:<8} {:<14} {:<24} {}",
            m.model_type,
            i.map_or("-", |i| i.backend),
            m.family.to_string(),
            if formats.is_empty() {
                "-".to_string()
            } else {
                formats.join(", ")
            },
            m.tasks.join(", ")
        );
    }
    Ok(())
}

fn cpu_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => {
                $( if std::arch::is_x86_feature_detected!($f) { found.push($f); } )*
            };
        }
        detect!(
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512vnni",
            "avx512bf16"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => {
                $( if std::arch::is_aarch64_feature_detected!($f) { found.push($f); } )*
            };
        }
        detect!("neon", "fp16", "dotprod", "i8mm", "bf16");
    }
    found
}

/// The linked backends, most preferred first, then those this crate could be built with:
/// (name, cargo feature, the linked entry).
fn known_backends() -> Vec<(
    &'static str,
    &'static str,
    Option<&'static backend::Backend>,
)> {
    let mut known: Vec<_> = backend::backends()
        .iter()
        .map(|b| (b.name, b.feature, Some(*b)))
        .collect();
    for (name, feature) in backends::FEATURES {
        if backend::get(name).is_none() {
            known.push((name, feature, None));
        }
    }
    known
}

pub fn doctor(args: DoctorArgs) -> anyhow::Result<()> {
    let registry_ok = registry::check();
    let (threads, threads_from) = super::threads_in_effect();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let features = cpu_features();
    if args.json {
        return print_json(&json!({
            "version": build_info::VERSION,
            "git_commit": build_info::GIT_COMMIT,
            "rustc": build_info::RUSTC,
            "target": build_info::TARGET,
            "profile": build_info::PROFILE,
            "features": build_info::FEATURES.split(',').filter(|f| !f.is_empty()).collect::<Vec<_>>(),
            "backends": known_backends().iter().map(|(name, feature, linked)| json!({
                "name": name, "feature": feature, "compiled": linked.is_some(),
                "description": linked.map(|b| b.description),
                "runtime": linked.and_then(|b| b.runtime).map(|f| f()),
            })).collect::<Vec<_>>(),
            "architectures": registry::implementations().len(),
            "model_types": registry::model_types().len(),
            "registry_ok": registry_ok.is_ok(),
            "threads": threads,
            "threads_from": threads_from,
            "cpus": cpus,
            "cpu_features": features,
            "jpeg_simd": inferox::image::jpeg_simd(),
        }));
    }
    println!(
        "inferox {} ({}), {} {} build, {}",
        build_info::VERSION,
        build_info::GIT_COMMIT,
        build_info::TARGET,
        build_info::PROFILE,
        build_info::RUSTC
    );
    println!("features      {}", build_info::FEATURES);
    println!("backends");
    for (name, feature, linked) in known_backends() {
        match linked {
            Some(b) => {
                println!("  {:<8} {:<40} {}", name, "compiled in", b.description);
                if let Some(runtime) = b.runtime {
                    println!("  {:<8} {:<40} {}", "", "", runtime());
                }
            }
            None => println!("  {name:<8} not compiled (enable feature `{feature}`)"),
        }
    }
    match &registry_ok {
        Ok(()) => println!(
            "registry      {} implementations of {} model types, no duplicates",
            registry::implementations().len(),
            registry::model_types().len()
        ),
        Err(e) => println!("registry      PROBLEM: {e}"),
    }
    println!("threads       {threads} ({threads_from}); {cpus} CPUs available");
    println!("cpu features  {}", features.join(" "));
    if inferox::image::jpeg_simd() {
        println!("jpeg          libjpeg-turbo with its SIMD");
    } else {
        println!(
            "jpeg          libjpeg-turbo without its SIMD (built without nasm): install nasm, run \
             `cargo clean -p mozjpeg-sys --release` and rebuild for faster JPEG decoding"
        );
    }
    registry_ok?;
    Ok(())
}
