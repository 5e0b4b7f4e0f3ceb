//! GPT-2 (Radford et al., 2019, "Language Models are Unsupervised Multitask Learners"): learned
//! positions, pre-norm blocks, Conv1D weights (`[in, out]`), LM head tied to the token
//! embeddings. candle has no GPT-2; this one is written for inferox, with a KV cache and
//! left-padded batches.
//!
//! Reference implementation: transformers' `modeling_gpt2.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt2/modeling_gpt2.py>).

mod config;

#[cfg(feature = "candle")]
mod candle;

pub use config::Gpt2Config;

use crate::common::{ConfigCheck, causal_lm_description};
use inferox_core::Family;
use inferox_core::registry::{Description, ImportSource, ModelType};
use inferox_core::{Error, Result};

/// Where the port comes from.
pub const REFERENCE: &str = "https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt2/modeling_gpt2.py";

/// `transformer.` when the checkpoint is a `GPT2LMHeadModel`, empty for a bare `GPT2Model`.
pub fn prefix(has: impl Fn(&str) -> bool) -> &'static str {
    if has("transformer.wte.weight") {
        "transformer."
    } else {
        ""
    }
}

/// Derives the I/O schema of a GPT-2 checkpoint.
pub fn describe(src: &ImportSource<'_>) -> Result<Description> {
    let cfg: Gpt2Config = src.parse_config()?;
    cfg.check().map_err(|message| Error::Config {
        path: src.config_path.to_path_buf(),
        message,
    })?;
    let p = prefix(|n| src.weights.contains(n));
    let check = ConfigCheck {
        path: src.config_path,
        weights: src.weights,
    };
    cfg.check_weights(&check, p)?;
    // GPT-2 has no padding token; transformers pads with the end-of-text token.
    let pad = ["pad_token_id", "eos_token_id"]
        .iter()
        .find_map(|k| src.config.get(*k).and_then(|v| v.as_u64()))
        .map(|v| v as u32)
        .filter(|&v| (v as usize) < cfg.vocab_size);
    Ok(causal_lm_description(
        cfg.vocab_size,
        cfg.n_positions,
        src.tokenizer,
        pad,
    ))
}

// Registration: the model type, then its implementations per backend.

inferox_core::register!(
    ModelType::new("gpt2", Family::DecoderOnly, describe)
        .tasks(&["text-generation"])
        .reference(REFERENCE)
);

implementations! {
    candle: "gpt2" [Safetensors];
}
