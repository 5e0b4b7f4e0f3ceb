//! examples/embedded-search, an app of its own that compiles all-MiniLM-L6-v2 into its executable
//! (`include_package!`), built and run the way it ships: the executable alone in an empty
//! directory, no environment, the package it was built from gone.

mod common;

use inferox::pipeline::cosine;
use inferox::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the example with `package` embedded and returns its executable.
fn build(package: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target");
    // With the facade's default features, as the tests build it: the build reuses their
    // dependencies instead of compiling a second set (the app itself asks for candle only).
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "embedded-search", "--features"])
        .arg("inferox/default")
        .arg("--target-dir")
        .arg(&target)
        .env("INFEROX_EMBED_PACKAGE", package)
        .current_dir(root)
        .status()
        .unwrap();
    assert!(status.success(), "building examples/embedded-search failed");
    target.join("debug/embedded-search")
}

#[test]
fn the_example_app_answers_with_nothing_but_its_executable() {
    let (src, package) = common::import(&common::minilm_dir());
    let exe = build(package.root());
    let query = "A man is eating pasta.";
    let sentences = [
        "A man is riding a horse.",
        "A man is eating food.",
        "The girl is carrying a baby.",
        "A woman is playing violin.",
    ];
    // What the library says through the package directory.
    let mut model = package.load(&LoadOptions::default()).unwrap();
    let mut texts = vec![query];
    texts.extend(sentences);
    let e = model.embed(&texts).unwrap();
    let mut expected: Vec<(f32, &str)> = sentences
        .iter()
        .enumerate()
        .map(|(i, s)| (cosine(&e[0], &e[i + 1]), *s))
        .collect();
    expected.sort_by(|a, b| b.0.total_cmp(&a.0));
    assert_eq!(expected[0].1, "A man is eating food.");
    let expected: String = expected
        .iter()
        .map(|(score, s)| format!("{score:.4}  {s}\n"))
        .collect();

    // Ship it: the executable alone, the package it was built from deleted.
    let shipped = tempfile::tempdir().unwrap();
    let app = shipped.path().join("embedded-search");
    std::fs::copy(&exe, &app).unwrap();
    drop(model);
    drop(package);
    drop(src);
    let out = Command::new(&app)
        .arg(query)
        .args(sentences)
        .current_dir(shipped.path())
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
}
