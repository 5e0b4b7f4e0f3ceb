//! The Llama family: Llama (Touvron et al., 2023, <https://arxiv.org/abs/2302.13971>) and the
//! model types that share its layout — `mistral`, `qwen2` (q/k/v biases), `qwen3` (per-head q/k
//! norms), `gemma2` and `gemma3_text` (Gemma Team, 2024/2025: norms around attention and
//! feed-forward, GELU-tanh, soft-capping, interleaved sliding-window layers) and `phi3` (fused
//! projections, partial rotary) — from Hugging Face safetensors or GGUF files
//! (`general.architecture` `llama`, `qwen2`, `qwen3`, `gemma2`, `gemma3`, `phi3`; Mistral GGUFs
//! say `llama`). RMSNorm, rotary positions, grouped-query attention, gated feed-forward.
//!
//! Reference implementations: transformers' `modeling_llama.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py>),
//! `modeling_gemma2.py`, `modeling_gemma3.py`, `modeling_phi3.py` beside it, and, for the GGUF
//! layout, llama.cpp (<https://github.com/ggml-org/llama.cpp>, `src/models/`).

mod config;

#[cfg(feature = "candle")]
mod candle;

pub use config::{Flavor, LlamaConfig, LongRope, RopeParameters, RopeScaling, hf_prefix};

use crate::common::{ConfigCheck, causal_lm_description};
use inferox_core::Family;
use inferox_core::registry::{Description, ImportSource, ModelType};
use inferox_core::{Error, Result};

/// Where the port comes from.
pub const REFERENCE: &str = "https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py";

/// The config of a source: config.json, or GGUF metadata when the source is a GGUF file.
pub fn source_config(src: &ImportSource<'_>) -> Result<LlamaConfig> {
    let config_error = |message: String| Error::Config {
        path: src.config_path.to_path_buf(),
        message,
    };
    let cfg = match src
        .config
        .get("general.architecture")
        .and_then(|v| v.as_str())
    {
        Some(arch) => {
            let vocab = src
                .weights
                .tensors
                .get("token_embd.weight")
                .and_then(|t| t.shape.first().copied())
                .ok_or_else(|| Error::MissingTensor {
                    tensor: "token_embd.weight".into(),
                    files: src.weights.files.clone(),
                })?;
            LlamaConfig::from_gguf(src.config, arch, vocab).map_err(config_error)?
        }
        None => LlamaConfig::from_hf_json(src.config.clone()).map_err(config_error)?,
    };
    let gguf_arch = src
        .config
        .get("general.architecture")
        .and_then(|v| v.as_str());
    let check = ConfigCheck {
        path: src.config_path,
        weights: src.weights,
    };
    cfg.check_weights(&check, gguf_arch)?;
    cfg.check().map_err(config_error)?;
    Ok(cfg)
}

/// Derives the I/O schema of a Llama-family checkpoint.
pub fn describe(src: &ImportSource<'_>) -> Result<Description> {
    let cfg = source_config(src)?;
    // Padding is masked out; transformers pads decoders with the end-of-sequence token.
    let pad = [
        "pad_token_id",
        "tokenizer.ggml.padding_token_id",
        "eos_token_id",
        "tokenizer.ggml.eos_token_id",
    ]
    .iter()
    // Gemma 3's multimodal config keeps them in its text model's.
    .filter_map(|k| {
        src.config
            .get(*k)
            .or_else(|| src.config.get("text_config")?.get(*k))
    })
    .find_map(|v| v.as_u64().or_else(|| v.get(0).and_then(|f| f.as_u64())))
    .map(|v| v as u32)
    .filter(|&v| (v as usize) < cfg.vocab_size);
    Ok(causal_lm_description(
        cfg.vocab_size,
        cfg.max_sequence(),
        src.tokenizer,
        pad,
    ))
}

// Registration: the model types, then their implementations per backend.

const fn model_type(name: &'static str) -> ModelType {
    ModelType::new(name, Family::DecoderOnly, describe)
        .tasks(&["text-generation"])
        .reference(REFERENCE)
}

inferox_core::register!(
    model_type("llama").gguf(&["llama"]),
    model_type("mistral"),
    model_type("qwen2").gguf(&["qwen2"]),
    model_type("qwen3").gguf(&["qwen3"]),
    model_type("gemma2").gguf(&["gemma2"]),
    model_type("gemma3_text").gguf(&["gemma3"]),
    // The multimodal checkpoints (4B and up): their text model, the vision tower left unused.
    model_type("gemma3"),
    model_type("phi3").gguf(&["phi3"]),
);

implementations! {
    candle: "llama" [Safetensors, Gguf], "mistral" [Safetensors], "qwen2" [Safetensors, Gguf],
        "qwen3" [Safetensors, Gguf], "gemma2" [Safetensors, Gguf],
        "gemma3_text" [Safetensors, Gguf], "gemma3" [Safetensors], "phi3" [Safetensors, Gguf];
}
