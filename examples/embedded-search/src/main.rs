//! `embedded-search QUERY SENTENCE...`: which sentence is closest in meaning to the query,
//! answered by the sentence-embedding model this executable carries. It needs nothing but its
//! own file: no package directory, no environment, no shared library beyond the C runtime.
//!
//! The package is in the executable one of two ways (docs/deployment.md):
//! * compiled in: `INFEROX_EMBED_PACKAGE=minilm.pkg cargo build --release` (see build.rs);
//! * appended after the build, for packages too large to compile in: `cargo build --release`,
//!   then `inferox bundle minilm.pkg --program target/release/embedded-search --output search`.

use inferox::pipeline::cosine;
use inferox::prelude::*;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: embedded-search QUERY SENTENCE [SENTENCE ...]");
        return ExitCode::from(2);
    }
    match rank(&args[0], &args[1..]) {
        Ok(ranked) => {
            for (score, sentence) in ranked {
                println!("{score:.4}  {sentence}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The package this executable carries. It is read where it lies: nothing is extracted.
#[cfg(embedded_package)]
fn package() -> inferox::Result<Package> {
    let bytes: &'static [u8] = inferox::include_package!(concat!(env!("OUT_DIR"), "/package.bin"));
    Package::from_static(bytes)
}

/// The package appended to this executable.
#[cfg(not(embedded_package))]
fn package() -> inferox::Result<Package> {
    Package::open_embedded()?.ok_or_else(|| {
        inferox::Error::Unsupported(
            "this build carries no package: build it with INFEROX_EMBED_PACKAGE=PKG, or append \
             one with `inferox bundle PKG --program THIS_EXECUTABLE --output APP`"
                .into(),
        )
    })
}

/// The sentences with their cosine similarity to `query`, closest first.
fn rank<'a>(query: &str, sentences: &'a [String]) -> inferox::Result<Vec<(f32, &'a str)>> {
    let package = package()?;
    let model = package.load(&LoadOptions::default())?;
    let mut texts = vec![query];
    texts.extend(sentences.iter().map(String::as_str));
    let embeddings = model.embed(&texts)?;
    let mut ranked: Vec<(f32, &str)> = embeddings[1..]
        .iter()
        .zip(sentences)
        .map(|(e, s)| (cosine(&embeddings[0], e), s.as_str()))
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(ranked)
}
