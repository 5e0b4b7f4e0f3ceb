//! Embeds the package named by `INFEROX_EMBED_PACKAGE` (a package directory made with
//! `inferox import`) into this program: the build script writes its bundle payload into
//! `OUT_DIR` and sets `cfg(embedded_package)`, and `main.rs` includes it with
//! `inferox::include_package!`. Without the variable the program is built to find a package
//! appended to its executable (`inferox bundle PKG --program THIS --output APP`).

use inferox_core::Package;
use inferox_core::package::bundle;
use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-env-changed=INFEROX_EMBED_PACKAGE");
    println!("cargo::rustc-check-cfg=cfg(embedded_package)");
    let Some(dir) = std::env::var_os("INFEROX_EMBED_PACKAGE") else {
        return;
    };
    let package = Package::open(&dir).unwrap_or_else(|e| {
        panic!(
            "INFEROX_EMBED_PACKAGE={}: {e}",
            PathBuf::from(&dir).display()
        )
    });
    println!("cargo::rerun-if-changed={}", package.root().display());
    for file in &package.metadata().files {
        println!(
            "cargo::rerun-if-changed={}",
            package.root().join(&file.path).display()
        );
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    bundle::write_payload_file(&package, &out.join("package.bin"), true)
        .unwrap_or_else(|e| panic!("embedding {}: {e}", package.root().display()));
    println!("cargo::rustc-cfg=embedded_package");
}
