//! Pieces of Hugging Face configs that several architectures share.

use serde::Deserialize;

/// A feed-forward activation, by its Hugging Face name (`hidden_act`, `activation_function`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Activation {
    /// Exact GELU (erf).
    #[serde(rename = "gelu")]
    Gelu,
    /// GELU, tanh approximation.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    /// ReLU.
    #[serde(rename = "relu")]
    Relu,
    /// SiLU (swish).
    #[serde(rename = "silu", alias = "swish")]
    Silu,
}

#[cfg(feature = "candle")]
impl Activation {
    /// Applies the activation to a candle tensor.
    pub fn apply(
        self,
        x: &crate::backends::candle::candle_core::Tensor,
    ) -> crate::backends::candle::candle_core::Result<crate::backends::candle::candle_core::Tensor>
    {
        match self {
            Activation::Gelu => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }
}

use crate::registry::Description;
use crate::schema::{
    Dim, DynamicDim, IoSchema, PaddingSide, Preprocessing, TensorSpec, TokenField, Tokenization,
};
use crate::tensor::DType;
use std::collections::BTreeMap;

/// The I/O schema of a causal language model: token ids (left-padded when batched) and an
/// optional attention mask in, next-token logits for every position out.
pub fn causal_lm_description(
    vocab_size: usize,
    max_positions: usize,
    tokenizer: Option<&str>,
    pad_id: Option<u32>,
) -> Description {
    let bs = || vec![Dim::named("batch"), Dim::named("sequence")];
    let hint = |field| {
        tokenizer.map(|t| {
            Preprocessing::Tokenization(Tokenization {
                tokenizer: t.to_string(),
                field,
                max_length: max_positions,
                padding_side: PaddingSide::Left,
                pad_id,
            })
        })
    };
    let inputs = vec![
        TensorSpec {
            preprocessing: hint(TokenField::Ids),
            ..TensorSpec::new("input_ids", DType::Int64, bs(), "token ids")
        },
        TensorSpec {
            optional: true,
            preprocessing: hint(TokenField::AttentionMask),
            ..TensorSpec::new(
                "attention_mask",
                DType::Int64,
                bs(),
                "1 for real tokens, 0 for (left) padding; all ones when left out",
            )
        },
    ];
    let outputs = vec![TensorSpec::new(
        "logits",
        DType::Float32,
        vec![
            Dim::named("batch"),
            Dim::named("sequence"),
            Dim::Fixed(vocab_size),
        ],
        "next-token scores at every position (the KV cache stays internal; use generation)",
    )];
    let dims = BTreeMap::from([
        (
            "batch".to_string(),
            DynamicDim {
                max: None,
                description: "number of sequences".into(),
            },
        ),
        (
            "sequence".to_string(),
            DynamicDim {
                max: Some(max_positions),
                description: "tokens per sequence".into(),
            },
        ),
    ]);
    Description {
        io: IoSchema {
            inputs,
            outputs,
            dims,
        },
        tasks: vec!["text-generation".to_string()],
    }
}
