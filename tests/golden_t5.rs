//! Golden tests of T5 and mT5 against transformers (tests/golden/generate_t5.py): teacher-forced
//! logits of a padded batch, greedy generations equal to `model.generate`, the decoder's KV
//! cache against a full recompute, the generation options through the encoder–decoder path, and
//! configs that do not describe their weights.

mod common;

use common::{assert_matches_json_schemas, fixtures, import, unpadded};
use inferox::generate::{FinishReason, GenerateOptions};
use inferox::model::DecodeStep;
use inferox::{HostTensor, LoadOptions, LoadPackage, NamedTensors};

/// v1.0 (ReLU, tied and scaled output), v1.1 (gated GELU, own `lm_head`, more decoder than
/// encoder layers), mT5, and a v1.0 checkpoint that also stores the tied copies.
const CASES: &[&str] = &["t5", "t5-v1_1", "mt5", "t5-legacy"];

struct Reference {
    inputs: NamedTensors,
    logits: HostTensor,
    prompts: Vec<String>,
    greedy: Vec<Vec<u32>>,
    text: Vec<String>,
}

fn model_dir(case: &str) -> std::path::PathBuf {
    fixtures().join("t5").join(case).join("model")
}

fn reference(case: &str) -> Reference {
    let dir = fixtures().join("t5").join(case).join("reference");
    let read = |n: &str| inferox::npy::read_npy(&dir.join(format!("{n}.npy"))).unwrap();
    let greedy: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("greedy.json")).unwrap()).unwrap();
    let names = [
        "input_ids",
        "attention_mask",
        "decoder_input_ids",
        "decoder_attention_mask",
    ];
    Reference {
        inputs: names.iter().map(|&n| (n, read(n))).collect(),
        logits: read("logits"),
        prompts: serde_json::from_value(greedy["prompts"].clone()).unwrap(),
        greedy: serde_json::from_value(greedy["greedy"].clone()).unwrap(),
        text: serde_json::from_value(greedy["text"].clone()).unwrap(),
    }
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: Some(n),
        temperature: Some(0.0),
        ..Default::default()
    }
}

/// Largest difference over the target positions the decoder mask keeps.
fn worst_logit_error(got: &HostTensor, want: &HostTensor, mask: &HostTensor) -> f32 {
    assert_eq!(got.shape(), want.shape());
    let vocab = got.shape()[2];
    let (got, want) = (got.as_f32().unwrap(), want.as_f32().unwrap());
    let mut worst = 0f32;
    for (pos, &m) in mask.as_i64().unwrap().iter().enumerate() {
        if m == 1 {
            let rows = pos * vocab..(pos + 1) * vocab;
            for (a, b) in got[rows.clone()].iter().zip(&want[rows]) {
                worst = worst.max((a - b).abs());
            }
        }
    }
    worst
}

#[test]
fn teacher_forced_logits_of_a_padded_batch_match_transformers() {
    for case in CASES {
        let (_d, package) = import(&model_dir(case));
        assert_matches_json_schemas(package.root());
        let info = package.info();
        assert_eq!(info.tasks, ["text2text-generation"], "{case}");
        assert_eq!(info.family, Some(inferox::Family::EncoderDecoder), "{case}");
        let names: Vec<&str> = info.io.inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "input_ids",
                "attention_mask",
                "decoder_input_ids",
                "decoder_attention_mask"
            ]
        );
        assert_eq!(
            info.generation.as_ref().unwrap().eos_token_ids,
            [1],
            "{case}"
        );
        let model = package.load(&LoadOptions::default()).unwrap();
        let r = reference(case);
        let out = model.run(&r.inputs).unwrap();
        let worst = worst_logit_error(
            out.get("logits").unwrap(),
            &r.logits,
            r.inputs.get("decoder_attention_mask").unwrap(),
        );
        eprintln!("{case}: max abs logit error {worst:.1e}");
        assert!(worst <= 1e-4, "{case}: max abs logit error {worst}");
    }
}

#[test]
fn greedy_generations_match_generate() {
    for case in CASES {
        let (_d, package) = import(&model_dir(case));
        let model = package.load(&LoadOptions::default()).unwrap();
        let r = reference(case);
        let prompts = unpadded(
            r.inputs.get("input_ids").unwrap(),
            r.inputs.get("attention_mask").unwrap(),
        );
        let batch = model.generate_ids(&prompts, &greedy(20)).unwrap();
        for (i, (got, want)) in batch.iter().zip(&r.greedy).enumerate() {
            assert_eq!(&got.token_ids, want, "{case}: prompt {i} (batched)");
            let reason = if want.last() == Some(&1) {
                FinishReason::Eos
            } else {
                FinishReason::Length
            };
            assert_eq!(got.finish_reason, reason, "{case}: prompt {i}");
        }
        // One at a time, from the text: the tokenizer appends `</s>` as T5's does.
        for (i, prompt) in r.prompts.iter().enumerate() {
            let got = model.generate(prompt, &greedy(20)).unwrap();
            assert_eq!(got.token_ids, r.greedy[i], "{case}: prompt {i} (alone)");
            assert_eq!(got.text, r.text[i], "{case}: prompt {i} text");
            assert_eq!(got.stats.prompt_tokens, prompts[i].len());
        }
    }
}

#[test]
fn kv_cache_matches_a_full_recompute() {
    let dtypes = [inferox::DType::Float32, inferox::DType::BFloat16];
    for (case, dtype) in CASES.iter().flat_map(|c| dtypes.map(|d| (c, d))) {
        let (_d, package) = import(&model_dir(case));
        let options = LoadOptions {
            dtype: Some(dtype),
            ..Default::default()
        };
        let model = package.load(&options).unwrap();
        let decoder = model.decoder().unwrap();
        let vocab = decoder.vocab_size();
        // Two sources, the second padded; 24 target tokens, past the buckets' max distance.
        let source: Vec<u32> = (0..30).map(|i| (i * 13 % 150) as u32 + 3).collect();
        let mut mask = vec![1u8; 30];
        mask[15 + 10..].fill(0);
        let target: Vec<u32> = (0..48).map(|i| (i * 29 % 150) as u32 + 3).collect();
        let n = 24;
        let mut state = decoder.new_state();
        decoder.encode(&mut state, &source, 2, &mask).unwrap();
        let full = decoder
            .step(
                &mut state,
                &DecodeStep {
                    tokens: &target,
                    batch: 2,
                    positions: &[],
                    mask: &vec![1; 2 * n],
                    all_positions: true,
                },
            )
            .unwrap();
        // A second state, on the same source: one model serves both.
        let mut state = decoder.new_state();
        assert_eq!(state.cached(), 0);
        decoder.encode(&mut state, &source, 2, &mask).unwrap();
        assert_eq!(state.cached(), 0);
        let mut incremental = vec![Vec::new(); 2];
        for t in 0..n {
            let tokens = [target[t], target[n + t]];
            let logits = decoder
                .step(
                    &mut state,
                    &DecodeStep {
                        tokens: &tokens,
                        batch: 2,
                        positions: &[],
                        mask: &vec![1; 2 * (t + 1)],
                        all_positions: false,
                    },
                )
                .unwrap();
            for (row, l) in incremental.iter_mut().zip(logits.chunks(vocab)) {
                row.extend_from_slice(l);
            }
        }
        assert_eq!(state.cached(), n);
        let incremental = incremental.concat();
        let worst = full
            .iter()
            .zip(&incremental)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-4,
            "{case} ({dtype}): cached and full logits differ by {worst}"
        );
    }
}

#[test]
fn streaming_sampling_and_stops() {
    let (_d, package) = import(&model_dir("t5-v1_1"));
    let model = package.load(&LoadOptions::default()).unwrap();
    let prompt = reference("t5-v1_1").prompts[0].clone();
    let sampled = |model: &inferox::LoadedModel, seed| {
        let options = GenerateOptions {
            max_new_tokens: Some(16),
            temperature: Some(1.0),
            top_k: Some(40),
            top_p: Some(0.95),
            repetition_penalty: Some(1.3),
            seed: Some(seed),
            eos_token_ids: Some(vec![]),
            ..Default::default()
        };
        model.generate(&prompt, &options).unwrap()
    };
    let a = sampled(&model, 1);
    assert_eq!(a.token_ids, sampled(&model, 1).token_ids, "same seed");
    assert_ne!(a.token_ids, sampled(&model, 2).token_ids, "another seed");
    assert_eq!(a.token_ids.len(), 16);
    assert_eq!(a.finish_reason, FinishReason::Length);

    let options = GenerateOptions {
        eos_token_ids: Some(vec![]),
        ..greedy(20)
    };
    let whole = model.generate(&prompt, &options).unwrap();
    let mut stream = model.stream(&prompt, &options).unwrap();
    let pieces: Vec<String> = stream.by_ref().map(|p| p.unwrap()).collect();
    let streamed = stream.into_generation();
    assert!(pieces.len() > 1);
    assert_eq!(pieces.concat(), whole.text);
    assert_eq!(streamed.token_ids, whole.token_ids);

    let stop: String = whole.text.chars().skip(4).take(3).collect();
    let cut = whole.text.find(&stop).unwrap();
    let stopped = model
        .generate(
            &prompt,
            &GenerateOptions {
                stop: vec![stop],
                ..options
            },
        )
        .unwrap();
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert_eq!(stopped.text, whole.text[..cut]);
}

#[test]
fn bad_inputs_and_configs_are_named_errors() {
    let (_d, package) = import(&model_dir("t5"));
    let model = package.load(&LoadOptions::default()).unwrap();
    let r = reference("t5");
    // A target batch that does not match the source batch.
    let mut inputs = r.inputs.clone();
    let ids = inputs.get("decoder_input_ids").unwrap().clone();
    let one_row = HostTensor::from_i64(
        vec![1, ids.shape()[1]],
        ids.as_i64().unwrap()[..ids.shape()[1]].to_vec(),
    )
    .unwrap();
    inputs.insert("decoder_input_ids", one_row);
    inputs.remove("decoder_attention_mask");
    let err = model.run(&inputs).unwrap_err().to_string();
    assert!(err.contains("decoder_input_ids"), "{err}");
    // A decoding step before any source was encoded.
    let decoder = model.decoder().unwrap();
    let mut state = decoder.new_state();
    let err = decoder
        .step(
            &mut state,
            &DecodeStep {
                tokens: &[0, 0, 0],
                batch: 3,
                positions: &[],
                mask: &[1, 1, 1],
                all_positions: false,
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("encode"), "{err}");

    // Configs that do not describe the weights fail the import, naming the field.
    let bad = |edit: &dyn Fn(&mut serde_json::Value), field: &str| {
        let src = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(model_dir("t5")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), src.path().join(entry.file_name())).unwrap();
        }
        let path = src.path().join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut config);
        std::fs::write(&path, config.to_string()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let err = inferox::import(
            src.path(),
            &out.path().join("pkg"),
            &Default::default(),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(field), "{field}: {err}");
    };
    bad(
        &|c| c["tie_word_embeddings"] = false.into(),
        "tie_word_embeddings",
    );
    bad(&|c| c["feed_forward_proj"] = "gated-gelu".into(), "wi_0");
    bad(
        &|c| c["feed_forward_proj"] = "fancy-gelu".into(),
        "feed_forward_proj",
    );
    bad(&|c| c["num_heads"] = 8.into(), "num_heads");
    bad(
        &|c| c["num_decoder_layers"] = 7.into(),
        "num_decoder_layers",
    );
    bad(
        &|c| c["relative_attention_num_buckets"] = 2.into(),
        "relative_attention_num_buckets",
    );
    bad(&|c| c["d_model"] = 0.into(), "d_model");
}

/// `--dtype bf16` rounds every dense weight (the output layer's too) to bf16 and keeps
/// activations and sums in f32: the logits are transformers' with its `nn.Linear` weights
/// rounded the same way, to f32 rounding. (`kv_cache_matches_a_full_recompute` runs the
/// decoding steps in bf16 too.)
#[test]
fn bf16_weights_match_transformers_with_the_same_rounding() {
    for case in CASES {
        let (_d, package) = import(&model_dir(case));
        let options = LoadOptions {
            dtype: Some(inferox::DType::BFloat16),
            ..Default::default()
        };
        let model = package.load(&options).unwrap();
        let r = reference(case);
        let dir = fixtures().join("t5").join(case).join("reference");
        let want = inferox::npy::read_npy(&dir.join("logits_bf16_weights.npy")).unwrap();
        let out = model.run(&r.inputs).unwrap();
        let logits = out.get("logits").unwrap();
        assert_eq!(logits.dtype(), inferox::DType::Float32);
        let mask = r.inputs.get("decoder_attention_mask").unwrap();
        let worst = worst_logit_error(logits, &want, mask);
        eprintln!("{case}: bf16 weights, max abs logit error {worst:.1e}");
        assert!(worst <= 1e-4, "{case}: bf16 max abs logit error {worst}");
        // Rounding the weights moves the logits far more than the tolerance: the check above
        // could not pass on f32 weights.
        assert!(worst_logit_error(logits, &r.logits, mask) > 1e-2, "{case}");
    }
}
