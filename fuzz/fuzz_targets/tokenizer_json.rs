//! A package's tokenizer.json → `TextPreprocessor::from_schema` (as every command that takes
//! text loads it), then a short batch encoded and decoded. A malformed or inconsistent
//! tokenizer file must give an error, never a panic inside the tokenizer library.
#![no_main]

use inferox::preprocess::TextPreprocessor;
use inferox::schema::IoSchema;
use inferox_fuzz::{fresh, touch_error, write};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn schema() -> &'static IoSchema {
    static S: OnceLock<IoSchema> = OnceLock::new();
    S.get_or_init(|| {
        // SAFETY: set before any other thread of this process reads the environment.
        unsafe { std::env::set_var("TOKENIZERS_PARALLELISM", "false") };
        let hint = |field: &str| {
            serde_json::json!({"type": "tokenization", "tokenizer": "tokenizer.json",
                "field": field, "max_length": 16, "pad_id": 0})
        };
        let input = |name: &str, field: &str| {
            serde_json::json!({"name": name, "dtype": "int64", "shape": ["batch", "sequence"],
                "preprocessing": hint(field)})
        };
        serde_json::from_value(serde_json::json!({
            "inputs": [input("input_ids", "ids"), input("attention_mask", "attention_mask"),
                       input("token_type_ids", "type_ids")],
            "outputs": [],
        }))
        .expect("the harness's schema parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let io = schema();
    let dir = fresh("tokenizer_json");
    write(dir, "tokenizer.json", data);
    let mut pre = match TextPreprocessor::from_schema(dir, io) {
        Ok(p) => p,
        Err(e) => return touch_error(&e),
    };
    match pre.encode(&["Hello world!", "a"], true) {
        Ok(enc) => {
            if let Err(e) = io.check_inputs(&enc.inputs) {
                touch_error(&e);
            }
        }
        Err(e) => touch_error(&e),
    }
    match pre.encode_ids("héllo <s> [CLS] 123", false) {
        Ok(ids) => {
            if let Err(e) = pre.decode(&ids) {
                touch_error(&e);
            }
            let _ = pre.token_text(ids.first().copied().unwrap_or(0));
        }
        Err(e) => touch_error(&e),
    }
});
