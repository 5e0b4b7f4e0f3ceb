//! T5 (Raffel et al., 2020, <https://arxiv.org/abs/1910.10683>): an encoder–decoder
//! transformer with RMS layer norms, no attention scaling and relative position buckets —
//! bidirectional in the encoder, looking back only in the decoder — whose bias table lives in
//! each stack's first layer and serves every layer. Model types `t5` (v1.0: ReLU, output tied to
//! the embeddings and scaled by `d_model^-0.5`; v1.1 and Flan-T5: gated GELU, own `lm_head`)
//! and `mt5` (mT5 has v1.1's layout and config fields). UMT5, whose every layer has its own
//! bias table, is another layout and is not registered.
//!
//! Reference implementation: transformers' `modeling_t5.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/t5/modeling_t5.py>).

mod config;

#[cfg(feature = "candle")]
mod candle;
#[cfg(feature = "torch")]
mod torch;

pub use config::{FeedForward, T5Config, bucket_table, relative_bucket};

use crate::common::ConfigCheck;
use inferox_core::Family;
use inferox_core::Result;
use inferox_core::registry::{Description, ImportSource, ModelType};
use inferox_core::schema::{
    Dim, DynamicDim, IoSchema, PaddingSide, Preprocessing, TensorSpec, TokenField, Tokenization,
};
use inferox_core::tensor::DType;
use std::collections::BTreeMap;

/// Where the port comes from.
pub const REFERENCE: &str = "https://github.com/huggingface/transformers/blob/main/src/transformers/models/t5/modeling_t5.py";
/// What the packages serve.
pub const TASKS: &[&str] = &["text2text-generation"];

/// Derives the I/O schema of a T5 checkpoint: the source's token ids and mask, the target's
/// token ids (teacher forcing) and mask, and the decoder's logits.
pub fn describe(src: &ImportSource<'_>) -> Result<Description> {
    let cfg: T5Config = src.parse_config()?;
    cfg.check_weights(&ConfigCheck {
        path: src.config_path,
        weights: src.weights,
    })?;
    let hint = |field| {
        src.tokenizer.map(|t| {
            Preprocessing::Tokenization(Tokenization {
                tokenizer: t.to_string(),
                field,
                max_length: cfg.n_positions,
                padding_side: PaddingSide::Right,
                pad_id: cfg.pad_token_id,
            })
        })
    };
    let dims = |second: &str| vec![Dim::named("batch"), Dim::named(second)];
    let inputs = vec![
        TensorSpec {
            preprocessing: hint(TokenField::Ids),
            ..TensorSpec::new(
                "input_ids",
                DType::Int64,
                dims("sequence"),
                "source token ids",
            )
        },
        TensorSpec {
            optional: true,
            preprocessing: hint(TokenField::AttentionMask),
            ..TensorSpec::new(
                "attention_mask",
                DType::Int64,
                dims("sequence"),
                "1 for real source tokens, 0 for padding; all ones when left out",
            )
        },
        TensorSpec::new(
            "decoder_input_ids",
            DType::Int64,
            dims("target"),
            "target token ids, starting with decoder_start_token_id (teacher forcing)",
        ),
        TensorSpec {
            optional: true,
            ..TensorSpec::new(
                "decoder_attention_mask",
                DType::Int64,
                dims("target"),
                "1 for real target tokens, 0 for (right) padding; all ones when left out",
            )
        },
    ];
    let outputs = vec![TensorSpec::new(
        "logits",
        DType::Float32,
        vec![
            Dim::named("batch"),
            Dim::named("target"),
            Dim::Fixed(cfg.vocab_size),
        ],
        "next-token scores at every target position (generation keeps its caches internal)",
    )];
    let dim = |description: &str| DynamicDim {
        max: None,
        description: description.into(),
    };
    let dims = BTreeMap::from([
        ("batch".to_string(), dim("number of sequences")),
        ("sequence".to_string(), dim("source tokens per sequence")),
        ("target".to_string(), dim("target tokens per sequence")),
    ]);
    Ok(Description {
        io: IoSchema {
            inputs,
            outputs,
            dims,
        },
        tasks: TASKS.iter().map(|t| t.to_string()).collect(),
    })
}

/// The config of a package's model, checked against its weights.
#[cfg(any(feature = "candle", feature = "torch"))]
pub(crate) fn checked(cfg: &T5Config, check: &ConfigCheck<'_>) -> Result<()> {
    cfg.check_weights(check)
}

/// Position limit reported to the generation engine: relative buckets set none, so this only
/// bounds the sizes a request may ask for.
pub const MAX_TOKENS: usize = crate::common::MAX_POSITIONS;

// Registration: the model types, then their implementations per backend.

const fn model_type(name: &'static str) -> ModelType {
    ModelType::new(name, Family::EncoderDecoder, describe)
        .tasks(TASKS)
        .reference(REFERENCE)
}

inferox_core::register!(model_type("t5"), model_type("mt5"));

implementations! {
    candle: "t5" [Safetensors], "mt5" [Safetensors];
    torch: "t5" [Safetensors], "mt5" [Safetensors];
}
