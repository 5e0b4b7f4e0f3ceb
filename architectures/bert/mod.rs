//! The BERT family: BERT (Devlin et al., 2018, <https://arxiv.org/abs/1810.04805>) and the model
//! types that share its weight layout — `roberta`, `xlm-roberta` and `camembert` (RoBERTa's
//! position ids and classification head). Base models give `last_hidden_state` and, when the
//! checkpoint has a pooler, `pooler_output`; `*ForSequenceClassification` checkpoints add
//! `logits`.
//!
//! Reference implementation: transformers' `modeling_bert.py` and `modeling_roberta.py`
//! (<https://github.com/huggingface/transformers/tree/main/src/transformers/models/bert>).

mod config;

#[cfg(feature = "candle")]
mod candle;
#[cfg(feature = "torch")]
mod torch;

#[cfg(any(feature = "candle", feature = "torch"))]
mod inputs;
#[cfg(any(feature = "candle", feature = "torch"))]
use inputs::Batch;

pub use config::{BertConfig, Flavor};

use crate::common::ConfigCheck;
use inferox_core::Family;
use inferox_core::registry::{Description, ImportSource, ModelType};
use inferox_core::schema::{
    Dim, DynamicDim, IoSchema, PaddingSide, Preprocessing, TensorSpec, TokenField, Tokenization,
};
use inferox_core::tensor::DType;
use inferox_core::{Error, Result};
use std::collections::BTreeMap;

/// Tasks the implementation can serve (a given package serves those its heads allow).
pub const TASKS: &[&str] = &[
    "feature-extraction",
    "sentence-similarity",
    "text-classification",
];
/// Where the port comes from.
pub const REFERENCE: &str = "https://github.com/huggingface/transformers/blob/main/src/transformers/models/bert/modeling_bert.py";

/// Which optional parts a checkpoint has, and under which prefix its encoder lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `""` or `"bert."` / `"roberta."`.
    pub prefix: String,
    /// Whether the pooler (dense + tanh on the first token) is present.
    pub pooler: bool,
    /// Number of labels, when a sequence-classification head is present.
    pub num_labels: Option<usize>,
}

impl Layout {
    /// Reads the layout from the tensor names and shapes of a checkpoint.
    pub fn detect(
        cfg: &BertConfig,
        has: impl Fn(&str) -> bool,
        shape: impl Fn(&str) -> Option<Vec<usize>>,
    ) -> Layout {
        let base = format!("{}.", cfg.flavor().base_prefix());
        let prefix = if has(&format!("{base}embeddings.word_embeddings.weight")) {
            base
        } else {
            String::new()
        };
        let pooler = has(&format!("{prefix}pooler.dense.weight"));
        let head = match cfg.flavor() {
            Flavor::Bert if pooler => "classifier.weight",
            Flavor::Bert => "",
            Flavor::Roberta => "classifier.out_proj.weight",
        };
        let num_labels = (!head.is_empty())
            .then(|| shape(head))
            .flatten()
            .and_then(|s| s.first().copied());
        Layout {
            prefix,
            pooler,
            num_labels,
        }
    }
}

fn config_error(src: &ImportSource<'_>, message: String) -> Error {
    Error::Config {
        path: src.config_path.to_path_buf(),
        message,
    }
}

/// Derives the I/O schema of a BERT-family checkpoint.
pub fn describe(src: &ImportSource<'_>) -> Result<Description> {
    let cfg: BertConfig = src.parse_config()?;
    cfg.check().map_err(|m| config_error(src, m))?;
    let layout = Layout::detect(
        &cfg,
        |n| src.weights.contains(n),
        |n| src.weights.tensors.get(n).map(|t| t.shape.clone()),
    );
    let check = ConfigCheck {
        path: src.config_path,
        weights: src.weights,
    };
    cfg.check_weights(&check, &layout.prefix)?;
    let max_length = src
        .max_seq_length
        .map_or(cfg.max_sequence(), |m| m.min(cfg.max_sequence()));
    let bs = || vec![Dim::named("batch"), Dim::named("sequence")];
    let hint = |field| {
        src.tokenizer.map(|t| {
            Preprocessing::Tokenization(Tokenization {
                tokenizer: t.to_string(),
                field,
                max_length,
                padding_side: PaddingSide::Right,
                pad_id: Some(cfg.pad_id()),
            })
        })
    };
    let mut inputs = vec![TensorSpec {
        preprocessing: hint(TokenField::Ids),
        ..TensorSpec::new("input_ids", DType::Int64, bs(), "token ids")
    }];
    inputs.push(TensorSpec {
        optional: true,
        preprocessing: hint(TokenField::AttentionMask),
        ..TensorSpec::new(
            "attention_mask",
            DType::Int64,
            bs(),
            "1 for real tokens, 0 for padding; all ones when left out",
        )
    });
    if cfg.type_vocab_size > 1 {
        inputs.push(TensorSpec {
            optional: true,
            preprocessing: hint(TokenField::TypeIds),
            ..TensorSpec::new(
                "token_type_ids",
                DType::Int64,
                bs(),
                "segment ids (0 for the first text, 1 for the second); zeros when left out",
            )
        });
    }
    let hidden = cfg.hidden_size;
    let mut outputs = vec![TensorSpec::new(
        "last_hidden_state",
        DType::Float32,
        vec![
            Dim::named("batch"),
            Dim::named("sequence"),
            Dim::Fixed(hidden),
        ],
        "hidden state of every token after the last layer",
    )];
    let mut tasks = vec!["feature-extraction".to_string()];
    if layout.pooler {
        outputs.push(TensorSpec::new(
            "pooler_output",
            DType::Float32,
            vec![Dim::named("batch"), Dim::Fixed(hidden)],
            "first token's hidden state through the pooler (dense + tanh)",
        ));
    }
    if let Some(n) = layout.num_labels {
        outputs.push(TensorSpec::new(
            "logits",
            DType::Float32,
            vec![Dim::named("batch"), Dim::Fixed(n)],
            "sequence-classification scores, one per label",
        ));
        tasks.push("text-classification".to_string());
    }
    let dims = BTreeMap::from([
        (
            "batch".to_string(),
            DynamicDim {
                max: None,
                description: "number of texts".into(),
            },
        ),
        (
            "sequence".to_string(),
            DynamicDim {
                max: Some(cfg.max_sequence()),
                description: "tokens per text, special tokens included".into(),
            },
        ),
    ]);
    Ok(Description {
        io: IoSchema {
            inputs,
            outputs,
            dims,
        },
        tasks,
    })
}

// Registration: the model types, then their implementations per backend.

const fn model_type(name: &'static str) -> ModelType {
    ModelType::new(name, Family::EncoderOnly, describe)
        .tasks(TASKS)
        .reference(REFERENCE)
}

inferox_core::register!(
    model_type("bert"),
    model_type("roberta"),
    model_type("xlm-roberta"),
    model_type("camembert"),
);

implementations! {
    candle: "bert" [Safetensors], "roberta" [Safetensors], "xlm-roberta" [Safetensors],
        "camembert" [Safetensors];
    torch: "bert" [Safetensors, Torchscript], "roberta" [Safetensors, Torchscript],
        "xlm-roberta" [Safetensors, Torchscript], "camembert" [Safetensors, Torchscript];
}
