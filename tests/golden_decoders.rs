//! Golden tests of the decoders against transformers (tests/golden/generate_decoders.py): logits
//! of a left-padded batch, greedy continuations equal to `model.generate`, and the KV cache
//! giving the same logits as a full recompute.

mod common;

use common::{assert_matches_json_schemas, fixtures, import, unpadded};
use inferox::LoadPackage;
use inferox::generate::{FinishReason, GenerateOptions};
use inferox::model::DecodeStep;
use inferox::{HostTensor, LoadOptions, NamedTensors};

const CASES: &[&str] = &[
    "gpt2",
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma2",
    "gemma3",
    "phi3",
    "phi3_longrope",
    "gemma3_mm",
];

struct Reference {
    ids: HostTensor,
    mask: HostTensor,
    logits: HostTensor,
    greedy: Vec<Vec<u32>>,
    /// Each prompt continued alone, where that differs from the batch (LongRoPE picks its
    /// table by a pass's furthest position); empty otherwise.
    alone: Vec<Vec<u32>>,
}

fn reference(case: &str) -> Reference {
    let dir = fixtures().join("decoders").join(case).join("reference");
    let read = |n: &str| inferox::npy::read_npy(&dir.join(n)).unwrap();
    let greedy: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("greedy.json")).unwrap()).unwrap();
    Reference {
        ids: read("input_ids.npy"),
        mask: read("attention_mask.npy"),
        logits: read("logits.npy"),
        greedy: serde_json::from_value(greedy["greedy"].clone()).unwrap(),
        alone: serde_json::from_value(greedy["greedy_alone"].clone()).unwrap_or_default(),
    }
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: Some(n),
        temperature: Some(0.0),
        ..Default::default()
    }
}

#[test]
fn logits_of_a_padded_batch_match_transformers() {
    for case in CASES {
        let (_d, package) = import(&fixtures().join("decoders").join(case).join("model"));
        assert_matches_json_schemas(package.root());
        assert_eq!(package.info().tasks, ["text-generation"]);
        let model = package.load(&LoadOptions::default()).unwrap();
        let r = reference(case);
        let inputs: NamedTensors = [
            ("input_ids", r.ids.clone()),
            ("attention_mask", r.mask.clone()),
        ]
        .into_iter()
        .collect();
        let out = model.run(&inputs).unwrap();
        let logits = out.get("logits").unwrap();
        assert_eq!(logits.shape(), r.logits.shape());
        let vocab = logits.shape()[2];
        let mut worst = 0f32;
        // Padding positions are not compared: their logits mean nothing.
        for (pos, &m) in r.mask.as_i64().unwrap().iter().enumerate() {
            if m == 1 {
                let got = &logits.as_f32().unwrap()[pos * vocab..(pos + 1) * vocab];
                let want = &r.logits.as_f32().unwrap()[pos * vocab..(pos + 1) * vocab];
                for (a, b) in got.iter().zip(want) {
                    worst = worst.max((a - b).abs());
                }
            }
        }
        assert!(worst <= 1e-4, "{case}: max abs logit error {worst}");
        // Each prompt alone gives, bit for bit, the logits it gave in the padded batch (but
        // where LongRoPE's table, chosen by a pass's furthest position, differs alone).
        let seq = r.ids.shape()[1];
        let prompts = unpadded(&r.ids, &r.mask);
        for (row, prompt) in prompts.iter().enumerate().filter(|_| r.alone.is_empty()) {
            let n = prompt.len();
            let ids = prompt.iter().map(|&t| i64::from(t)).collect();
            let inputs: NamedTensors = [
                ("input_ids", HostTensor::from_i64(vec![1, n], ids).unwrap()),
                (
                    "attention_mask",
                    HostTensor::from_i64(vec![1, n], vec![1; n]).unwrap(),
                ),
            ]
            .into_iter()
            .collect();
            let alone = model.run(&inputs).unwrap();
            let alone = alone.get("logits").unwrap().as_f32().unwrap();
            let batched = &logits.as_f32().unwrap()[((row + 1) * seq - n) * vocab..][..n * vocab];
            assert!(
                alone == batched,
                "{case}: prompt {row} alone differs from the padded batch by up to {}",
                alone
                    .iter()
                    .zip(batched)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max)
            );
        }
    }
}

#[test]
fn greedy_continuations_match_generate() {
    for case in CASES {
        let (_d, package) = import(&fixtures().join("decoders").join(case).join("model"));
        let model = package.load(&LoadOptions::default()).unwrap();
        let r = reference(case);
        let prompts = unpadded(&r.ids, &r.mask);
        // Batched, left-padded, as transformers ran it.
        let batch = model.generate_ids(&prompts, &greedy(20)).unwrap();
        for (i, (got, want)) in batch.iter().zip(&r.greedy).enumerate() {
            assert_eq!(&got.token_ids, want, "{case}: prompt {i} (batched)");
            let reason = if want.last() == Some(&0) {
                FinishReason::Eos
            } else {
                FinishReason::Length
            };
            assert_eq!(got.finish_reason, reason, "{case}: prompt {i}");
        }
        // One at a time.
        for (i, (prompt, want)) in prompts.iter().zip(&r.greedy).enumerate() {
            let got = model
                .generate_ids(std::slice::from_ref(prompt), &greedy(20))
                .unwrap();
            let want = r.alone.get(i).unwrap_or(want);
            assert_eq!(&got[0].token_ids, want, "{case}: prompt {i} (alone)");
        }
    }
}

#[test]
fn kv_cache_matches_a_full_recompute() {
    for case in CASES {
        let (_d, package) = import(&fixtures().join("decoders").join(case).join("model"));
        let model = package.load(&LoadOptions::default()).unwrap();
        let tokens: Vec<u32> = (1..30).map(|i| (i * 37 % 300) as u32 + 1).collect();
        let n = tokens.len();
        let positions: Vec<u32> = (0..n as u32).collect();
        let decoder = model.decoder().unwrap();
        let vocab = decoder.vocab_size();
        let mut state = decoder.new_state();
        let full = decoder
            .step(
                &mut state,
                &DecodeStep {
                    tokens: &tokens,
                    batch: 1,
                    positions: &positions,
                    mask: &vec![1; n],
                    all_positions: true,
                },
            )
            .unwrap();
        let mut state = decoder.new_state();
        // Prefill 10 tokens, then 10 more in one step, then one token at a time.
        let mut incremental = decoder
            .step(
                &mut state,
                &DecodeStep {
                    tokens: &tokens[..10],
                    batch: 1,
                    positions: &positions[..10],
                    mask: &[1; 10],
                    all_positions: true,
                },
            )
            .unwrap();
        // A chunk of 10 after the cache (what a prompt joining a running batch is).
        incremental.extend(
            decoder
                .step(
                    &mut state,
                    &DecodeStep {
                        tokens: &tokens[10..20],
                        batch: 1,
                        positions: &positions[10..20],
                        mask: &[1; 20],
                        all_positions: true,
                    },
                )
                .unwrap(),
        );
        for t in 20..n {
            incremental.extend(
                decoder
                    .step(
                        &mut state,
                        &DecodeStep {
                            tokens: &tokens[t..t + 1],
                            batch: 1,
                            positions: &positions[t..t + 1],
                            mask: &vec![1; t + 1],
                            all_positions: false,
                        },
                    )
                    .unwrap(),
            );
        }
        assert_eq!(state.cached(), n);
        assert_eq!(incremental.len(), n * vocab);
        let worst = full
            .iter()
            .zip(&incremental)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-4,
            "{case}: cached and full logits differ by {worst}"
        );
    }
}

#[test]
fn streaming_sampling_and_stops() {
    let (_d, package) = import(&fixtures().join("decoders/llama/model"));
    let model = package.load(&LoadOptions::default()).unwrap();
    let prompt = "Once upon a";
    let sampled = |model: &inferox::LoadedModel, seed| {
        let options = GenerateOptions {
            max_new_tokens: Some(24),
            temperature: Some(1.0),
            top_k: Some(40),
            top_p: Some(0.95),
            seed: Some(seed),
            eos_token_ids: Some(vec![]),
            ..Default::default()
        };
        model.generate(prompt, &options).unwrap()
    };
    let a = sampled(&model, 1);
    assert_eq!(
        a.token_ids,
        sampled(&model, 1).token_ids,
        "same seed, same sample"
    );
    assert_ne!(
        a.token_ids,
        sampled(&model, 2).token_ids,
        "another seed, another sample"
    );
    assert_eq!(a.token_ids.len(), 24);
    assert_eq!(a.finish_reason, FinishReason::Length);

    // Streaming gives the same text as the whole generation.
    let options = GenerateOptions {
        eos_token_ids: Some(vec![]),
        ..greedy(30)
    };
    let whole = model.generate(prompt, &options).unwrap();
    let mut stream = model.stream(prompt, &options).unwrap();
    let pieces: Vec<String> = stream.by_ref().map(|p| p.unwrap()).collect();
    let streamed = stream.into_generation();
    assert!(pieces.len() > 1);
    assert_eq!(pieces.concat(), whole.text);
    assert_eq!(streamed.token_ids, whole.token_ids);
    assert!(streamed.stats.time_to_first_token > 0.0 && streamed.stats.prompt_tokens > 0);

    // A stop string ends the text before it.
    let stop: String = whole.text.chars().skip(5).take(3).collect();
    let cut = whole.text.find(&stop).unwrap();
    let options = GenerateOptions {
        stop: vec![stop],
        ..options
    };
    let stopped = model.generate(prompt, &options).unwrap();
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert_eq!(stopped.text, whole.text[..cut]);

    // Cancelling from the handle ends the stream.
    let mut stream = model.stream(prompt, &greedy(30)).unwrap();
    let cancel = stream.cancel_handle();
    stream.next().unwrap().unwrap();
    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(stream.next().is_none());
    assert_eq!(
        stream.into_generation().finish_reason,
        FinishReason::Cancelled
    );
}
