//! Records the libtorch that torch-sys linked (its version and directory), for the runtime
//! report, and gives this crate's test binary an rpath to it (the `inferox` crate's build script
//! does the same for the binaries users run).

fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        let version = std::path::Path::new(&dir)
            .parent()
            .and_then(|root| std::fs::read_to_string(root.join("build-version")).ok())
            .map_or_else(|| "(version unknown)".to_string(), |v| v.trim().to_string());
        println!("cargo:rustc-env=INFEROX_LIBTORCH_VERSION={version}");
        println!("cargo:rustc-env=INFEROX_LIBTORCH_LIB={dir}");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    } else {
        println!("cargo:rustc-env=INFEROX_LIBTORCH_VERSION=(version unknown)");
        println!("cargo:rustc-env=INFEROX_LIBTORCH_LIB=(unknown)");
    }
}
