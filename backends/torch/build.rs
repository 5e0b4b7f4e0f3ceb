//! Records the libtorch that torch-sys linked (its version and directory), for the runtime report.
//! The binaries' rpath to it is set by the `inferox` crate's build script, which links them.

fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        let version = std::path::Path::new(&dir)
            .parent()
            .and_then(|root| std::fs::read_to_string(root.join("build-version")).ok())
            .map_or_else(|| "(version unknown)".to_string(), |v| v.trim().to_string());
        println!("cargo:rustc-env=INFEROX_LIBTORCH_VERSION={version}");
        println!("cargo:rustc-env=INFEROX_LIBTORCH_LIB={dir}");
    } else {
        println!("cargo:rustc-env=INFEROX_LIBTORCH_VERSION=(version unknown)");
        println!("cargo:rustc-env=INFEROX_LIBTORCH_LIB=(unknown)");
    }
}
