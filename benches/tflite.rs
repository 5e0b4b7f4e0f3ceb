//! TensorFlow Lite fixtures (tests/fixtures/tflite) on the tflite backend: one `run` call per
//! iteration (input checked against the schema and copied in, invoke, output copied out), the
//! same call scripts/bench_tflite.py times on Python's `tf.lite.Interpreter`.
//!
//! Threads: INFEROX_BENCH_THREADS (default 1). scripts/bench_backends.sh runs both sides in one
//! sitting; docs/benchmarks.md has the results.

use criterion::Criterion;
use inferox::LoadPackage;
use inferox::{ImportOptions, LoadOptions, NamedTensors};
use std::path::Path;
use std::time::Duration;

/// The inferox binary's allocator and its settings, so the numbers are what its users see.
#[path = "../src/allocator.rs"]
mod allocator;

fn main() {
    allocator::keep_freed_memory();
    let threads: usize = std::env::var("INFEROX_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tflite");
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut group = c.benchmark_group(format!("tflite_t{threads}"));
    for name in ["float_cnn", "embedding_dense", "int8_cnn"] {
        let src = fixtures.join(name);
        let package = inferox::import(
            &src,
            &tmp.path().join(name),
            &ImportOptions::default(),
            &mut |_| {},
        )
        .unwrap();
        let model = package
            .load(&LoadOptions {
                threads: Some(threads),
                ..Default::default()
            })
            .unwrap();
        let mut inputs = NamedTensors::new();
        for entry in std::fs::read_dir(src.join("inputs")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            inputs.insert(name, inferox::npy::read_npy(&path).unwrap());
        }
        group.bench_function(name, |b| b.iter(|| model.run(&inputs).unwrap()));
    }
    group.finish();
    c.final_summary();
}
