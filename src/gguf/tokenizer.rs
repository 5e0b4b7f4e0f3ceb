//! A Hugging Face `tokenizer.json` rebuilt from a GGUF file's tokenizer metadata, so that GGUF
//! packages tokenize through the same `tokenizers` pipeline as every other package.
//!
//! * `gpt2` (byte-level BPE with merges): the pre-tokenizer follows `tokenizer.ggml.pre` as
//!   llama.cpp maps it (`smollm`, `llama3`, `qwen2`, ...).
//! * `llama` (SentencePiece BPE with scores): merges are derived from the scores the way
//!   transformers converts SentencePiece models, with byte fallback.

use crate::{Error, Result};
use inferox_core::gguf::{GgufHeader, GgufValue};
use serde_json::{Value, json};
use std::collections::HashMap;

const REGEX_LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const REGEX_QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.ggml.pre` values this builder knows.
pub const PRE_TOKENIZERS: &[&str] = &[
    "default",
    "gpt2",
    "smollm",
    "llama3",
    "llama-bpe",
    "smaug-bpe",
    "qwen2",
];

fn err(header: &GgufHeader, message: String) -> Error {
    Error::Weights {
        path: header.path.clone(),
        message,
    }
}

fn strings(header: &GgufHeader, key: &str) -> Result<Vec<String>> {
    let values = header
        .get(key)
        .and_then(GgufValue::as_array)
        .ok_or_else(|| {
            err(
                header,
                format!("GGUF tokenizer metadata has no `{key}` (the file carries no tokenizer)"),
            )
        })?;
    values
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| err(header, format!("`{key}` is not a list of strings")))
}

fn id(header: &GgufHeader, key: &str) -> Option<u32> {
    header
        .get(key)
        .and_then(GgufValue::as_u64)
        .map(|v| v as u32)
}

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

fn split(regex: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false})
}

/// (normalizer, pre-tokenizer) for a byte-level BPE vocabulary.
fn gpt2_pipeline(header: &GgufHeader, pre: &str) -> Result<(Value, Value)> {
    Ok(match pre {
        "default" | "gpt2" => (Value::Null, byte_level(true)),
        "smollm" => (
            Value::Null,
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        ),
        "llama3" | "llama-bpe" | "smaug-bpe" => (
            Value::Null,
            json!({"type": "Sequence", "pretokenizers": [split(REGEX_LLAMA3), byte_level(false)]}),
        ),
        "qwen2" => (
            json!({"type": "NFC"}),
            json!({"type": "Sequence", "pretokenizers": [split(REGEX_QWEN2), byte_level(false)]}),
        ),
        other => {
            return Err(err(
                header,
                format!(
                    "tokenizer.ggml.pre `{other}` is not supported (supported: {})",
                    PRE_TOKENIZERS.join(", ")
                ),
            ));
        }
    })
}

/// BPE merges of a SentencePiece vocabulary, ordered by the score of the merged piece (the
/// order transformers' converter gives them).
fn merges_from_scores(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    let ids: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut merges: Vec<(usize, usize, f32)> = Vec::new();
    for (merged, &score) in tokens.iter().zip(scores) {
        let mut local: Vec<(usize, usize, f32)> = merged
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (l, r) = merged.split_at(at);
                Some((*ids.get(l)?, *ids.get(r)?, score))
            })
            .collect();
        local.sort_by_key(|&(l, r, _)| (l, r));
        merges.extend(local);
    }
    merges.sort_by(|a, b| b.2.total_cmp(&a.2));
    merges
        .into_iter()
        .map(|(l, r, _)| (tokens[l].clone(), tokens[r].clone()))
        .collect()
}

/// The `tokenizer.json` document for the GGUF file's tokenizer.
pub fn tokenizer_json(header: &GgufHeader) -> Result<Value> {
    let kind = header.string("tokenizer.ggml.model").map_err(|_| {
        err(
            header,
            "GGUF metadata has no tokenizer (tokenizer.ggml.model is missing)".into(),
        )
    })?;
    let tokens = strings(header, "tokenizer.ggml.tokens")?;
    let types: Vec<u64> = header
        .get("tokenizer.ggml.token_type")
        .and_then(GgufValue::as_array)
        .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
        .unwrap_or_else(|| vec![1; tokens.len()]);
    if types.len() != tokens.len() {
        return Err(err(
            header,
            "tokenizer.ggml.token_type and tokenizer.ggml.tokens differ in length".into(),
        ));
    }
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let bos = id(header, "tokenizer.ggml.bos_token_id");
    let unk = id(header, "tokenizer.ggml.unknown_token_id");
    let token = |i: Option<u32>| i.and_then(|i| tokens.get(i as usize)).cloned();

    // Control (3) and user-defined (4) tokens are matched before the model runs.
    let added: Vec<Value> = types
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == 3 || **t == 4)
        .map(|(i, &t)| {
            json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": t == 4, "special": t == 3})
        })
        .collect();

    let (normalizer, pre_tokenizer, model, decoder, add_bos_default) = match kind {
        "gpt2" => {
            let merges = strings(header, "tokenizer.ggml.merges")?;
            let pre = header
                .get("tokenizer.ggml.pre")
                .and_then(GgufValue::as_str)
                .unwrap_or("default");
            let (normalizer, pre_tokenizer) = gpt2_pipeline(header, pre)?;
            let model = json!({"type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
                "byte_fallback": false, "ignore_merges": pre.starts_with("llama") || pre == "smaug-bpe",
                "vocab": vocab, "merges": merges});
            let decoder = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true});
            (normalizer, pre_tokenizer, model, decoder, false)
        }
        "llama" => {
            let scores: Vec<f32> = header
                .get("tokenizer.ggml.scores")
                .and_then(GgufValue::as_array)
                .ok_or_else(|| {
                    err(
                        header,
                        "GGUF tokenizer metadata has no `tokenizer.ggml.scores`".into(),
                    )
                })?
                .iter()
                .map(|v| v.as_f64().unwrap_or(0.0) as f32)
                .collect();
            if scores.len() != tokens.len() {
                return Err(err(
                    header,
                    "tokenizer.ggml.scores and tokenizer.ggml.tokens differ in length".into(),
                ));
            }
            let merges: Vec<Value> = merges_from_scores(&tokens, &scores)
                .into_iter()
                .map(|(l, r)| json!([l, r]))
                .collect();
            let space_prefix = header
                .get("tokenizer.ggml.add_space_prefix")
                .and_then(GgufValue::as_bool)
                .unwrap_or(true);
            let mut normalizers = Vec::new();
            if space_prefix {
                normalizers.push(json!({"type": "Prepend", "prepend": "▁"}));
            }
            normalizers
                .push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
            let model = json!({"type": "BPE", "dropout": null, "unk_token": token(unk),
                "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": true,
                "byte_fallback": true, "ignore_merges": false, "vocab": vocab, "merges": merges});
            let mut decoders = vec![
                json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            if space_prefix {
                decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            (
                json!({"type": "Sequence", "normalizers": normalizers}),
                Value::Null,
                model,
                json!({"type": "Sequence", "decoders": decoders}),
                true,
            )
        }
        other => {
            return Err(err(
                header,
                format!("tokenizer.ggml.model `{other}` is not supported (gpt2 and llama are)"),
            ));
        }
    };
    let add_bos = header
        .get("tokenizer.ggml.add_bos_token")
        .and_then(GgufValue::as_bool)
        .unwrap_or(add_bos_default);
    let post_processor = match (add_bos, token(bos)) {
        (true, Some(b)) => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": b, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {b.clone(): {"id": b, "ids": [bos], "tokens": [b]}}
        }),
        _ => Value::Null,
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": decoder,
        "model": model,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_follow_scores() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let scores = [0.0, 0.0, 0.0, -1.0, -0.5, -2.0];
        let merges = merges_from_scores(&tokens, &scores);
        let pairs: Vec<String> = merges.iter().map(|(l, r)| format!("{l} {r}")).collect();
        assert_eq!(pairs, ["b c", "a b", "a bc", "ab c"]);
    }
}
