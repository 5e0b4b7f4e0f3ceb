//! Records the build's features, version and commit for `inferox doctor`, and gives the
//! binaries an rpath to libtorch / the TensorFlow Lite C library when those backends are built.

use std::process::Command;

fn main() {
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| {
            k.strip_prefix("CARGO_FEATURE_")
                .map(|f| f.to_lowercase().replace('_', "-"))
        })
        .collect();
    features.sort();
    println!("cargo:rustc-env=INFEROX_FEATURES={}", features.join(","));

    let git = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=INFEROX_GIT_COMMIT={git}");

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=INFEROX_RUSTC={version}");
    println!(
        "cargo:rustc-env=INFEROX_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    println!(
        "cargo:rustc-env=INFEROX_PROFILE={}",
        std::env::var("PROFILE").unwrap_or_default()
    );
    // The vendor libraries are linked at link time (DT_NEEDED, no dlopen). An rpath to where
    // they were found lets the binaries start without LD_LIBRARY_PATH.
    // (torch-sys is a dependency of this crate, with the `torch` feature, for this path only.)
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    if std::env::var_os("CARGO_FEATURE_TFLITE").is_some() {
        println!("cargo:rerun-if-env-changed=TFLITEC_PREBUILT_PATH");
        if let Some(dir) = std::env::var_os("TFLITEC_PREBUILT_PATH")
            .map(std::path::PathBuf::from)
            .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        {
            // A static build's libtensorflowlite_c.so is a linker script over the archives in
            // `a/` beside it; a shared one is found at run time through the rpath.
            let archives = dir.join("a");
            if archives.is_dir() {
                println!("cargo:rustc-link-search=native={}", archives.display());
            } else {
                println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
