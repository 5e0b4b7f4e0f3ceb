//! examples/embedded-search, an app of its own that carries all-MiniLM-L6-v2 in its executable,
//! compiled in (`include_package!`) or appended after the build (`inferox bundle --program`),
//! run the way it ships: the executable alone in an empty directory, no environment, the package
//! it was made from gone.

mod common;

use inferox::pipeline::cosine;
use inferox::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the example, with `package` compiled in if given, and returns its executable.
fn build(package: Option<&Path>) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target");
    // With the facade's default features, as the tests build it: the build reuses their
    // dependencies instead of compiling a second set (the app itself asks for candle only).
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--quiet", "-p", "embedded-search", "--features"])
        .arg("inferox/default")
        .arg("--target-dir")
        .arg(&target)
        .current_dir(root);
    match package {
        Some(p) => cargo.env("INFEROX_EMBED_PACKAGE", p),
        None => cargo.env_remove("INFEROX_EMBED_PACKAGE"),
    };
    let status = cargo.status().unwrap();
    assert!(status.success(), "building examples/embedded-search failed");
    target.join("debug/embedded-search")
}

#[test]
fn the_example_app_answers_with_nothing_but_its_executable() {
    let (src, package) = common::import(&common::minilm_dir());
    let query = "A man is eating pasta.";
    let sentences = [
        "A man is riding a horse.",
        "A man is eating food.",
        "The girl is carrying a baby.",
        "A woman is playing violin.",
    ];
    // What the library says through the package directory.
    let model = package.load(&LoadOptions::default()).unwrap();
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

    drop(model);

    // Appended after the build; a build without a package says what to do.
    let shipped = tempfile::tempdir().unwrap();
    let app = shipped.path().join("search-appended");
    let plain = build(None);
    let out = run(&plain, shipped.path(), query, &sentences);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("carries no package"),
        "{err}"
    );
    let bundled = Command::new(env!("CARGO_BIN_EXE_inferox"))
        .args(["bundle", package.root().to_str().unwrap(), "--program"])
        .arg(&plain)
        .arg("--output")
        .arg(&app)
        .output()
        .unwrap();
    assert!(
        bundled.status.success(),
        "{}",
        String::from_utf8_lossy(&bundled.stderr)
    );

    // Compiled in.
    let exe = build(Some(package.root()));
    std::fs::copy(&exe, shipped.path().join("search-compiled")).unwrap();

    // Ship them: the package they were made from deleted, each run alone.
    drop(package);
    drop(src);
    for name in ["search-appended", "search-compiled"] {
        let alone = tempfile::tempdir().unwrap();
        let app = alone.path().join(name);
        std::fs::rename(shipped.path().join(name), &app).unwrap();
        let out = run(&app, alone.path(), query, &sentences);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected, "{name}");
    }
}

/// Runs `app QUERY SENTENCE...` in `dir` with an empty environment.
fn run(app: &Path, dir: &Path, query: &str, sentences: &[&str]) -> std::process::Output {
    Command::new(app)
        .arg(query)
        .args(sentences)
        .current_dir(dir)
        .env_clear()
        .output()
        .unwrap()
}
