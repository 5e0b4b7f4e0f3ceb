//! A GGUF file → `GgufHeader::read`, then everything `import` derives from the header: metadata
//! as JSON, weight index, main quantization, the tokenizer.json rebuilt from the metadata (and
//! loaded by `tokenizers`, as import checks it), and the Llama family's description.
#![no_main]

use inferox::architectures::llama;
use inferox::gguf::{GgufHeader, tokenizer::tokenizer_json};
use inferox::registry::ImportSource;
use inferox_fuzz::{fresh, touch_error, write};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = fresh("gguf");
    let path = write(dir, "model.gguf", data);
    let header = match GgufHeader::read(&path) {
        Ok(h) => h,
        Err(e) => return touch_error(&e),
    };
    let _ = header.architecture();
    let config = header.metadata_json();
    let weights = header.weight_index();
    let _ = (
        weights.parameter_count(),
        weights.parameter_bytes(),
        weights.float_dtype(),
    );
    let _ = header.main_quantization();
    match tokenizer_json(&header) {
        Ok(json) => {
            if let Ok(bytes) = serde_json::to_vec(&json) {
                if let Ok(tok) = tokenizers::Tokenizer::from_bytes(&bytes) {
                    if let Ok(enc) = tok.encode_fast("Hello, world! 123 héllo\n\tdone", true) {
                        let _ = tok.decode(enc.get_ids(), false);
                    }
                }
            }
        }
        Err(e) => touch_error(&e),
    }
    let src = ImportSource {
        config_path: &path,
        config: &config,
        weights: &weights,
        tokenizer: Some("tokenizer.json"),
        max_seq_length: None,
        artifact: None,
        preprocessor: None,
    };
    match llama::describe(&src) {
        Ok(d) => {
            let _ = serde_json::to_string(&d.io);
        }
        Err(e) => touch_error(&e),
    }
});
