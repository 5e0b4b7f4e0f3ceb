//! `config.json` of the BERT family, mirroring transformers' `BertConfig` / `RobertaConfig`
//! (defaults as there).

use crate::common::{Activation, ConfigCheck};
use serde::Deserialize;

/// Which member of the family: they differ in position ids and the classification head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// BERT: positions 0..n.
    Bert,
    /// RoBERTa and its relatives: positions count real tokens from `pad_token_id + 1`.
    Roberta,
}

impl Flavor {
    /// The flavor of a model type of the family.
    pub fn of(model_type: &str) -> Flavor {
        match model_type {
            "bert" => Flavor::Bert,
            _ => Flavor::Roberta,
        }
    }

    /// transformers' `base_model_prefix`: the weights of a model with a head live under it.
    pub fn base_prefix(self) -> &'static str {
        match self {
            Flavor::Bert => "bert",
            Flavor::Roberta => "roberta",
        }
    }
}

fn d_hidden() -> usize {
    768
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_intermediate() -> usize {
    3072
}
fn d_act() -> Activation {
    Activation::Gelu
}
fn d_positions() -> usize {
    512
}
fn d_type_vocab() -> usize {
    2
}
fn d_eps() -> f64 {
    1e-12
}
fn d_position_type() -> String {
    "absolute".into()
}

/// The fields of config.json this implementation uses.
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    pub model_type: String,
    pub vocab_size: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    #[serde(default = "d_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// Defaults to 0 for BERT and 1 for RoBERTa, as in transformers.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default = "d_position_type")]
    pub position_embedding_type: String,
    #[serde(default)]
    pub is_decoder: bool,
}

impl BertConfig {
    /// Reads and checks the package's config.json; errors name the file.
    #[cfg(any(feature = "candle", feature = "torch"))]
    pub fn load(req: &inferox_core::load::LoadRequest<'_>) -> inferox_core::Result<BertConfig> {
        let path = req
            .artifacts(inferox_core::manifest::ArtifactRole::Config)?
            .remove(0);
        let cfg: BertConfig = inferox_core::files::read_config(&path)?;
        let weights = inferox_core::weights::WeightIndex::read(
            &req.artifacts(inferox_core::manifest::ArtifactRole::Weights)?,
        )?;
        let check = ConfigCheck {
            path: path.path(),
            weights: &weights,
        };
        let prefix = super::Layout::detect(&cfg, |n| weights.contains(n), |_| None).prefix;
        cfg.check_weights(&check, &prefix)?;
        cfg.check().map_err(|message| check.error(message))?;
        Ok(cfg)
    }

    /// Checks the config's numbers against the checkpoint (the encoder under `prefix`) before
    /// anything is sized by them.
    pub fn check_weights(&self, check: &ConfigCheck<'_>, prefix: &str) -> inferox_core::Result<()> {
        let h = ("hidden_size", Some(self.hidden_size));
        let embeddings = |n: &str| format!("{prefix}embeddings.{n}.weight");
        check.shape(
            &embeddings("word_embeddings"),
            &[("vocab_size", Some(self.vocab_size)), h],
        )?;
        check.shape(
            &embeddings("position_embeddings"),
            &[
                (
                    "max_position_embeddings",
                    Some(self.max_position_embeddings),
                ),
                h,
            ],
        )?;
        check.shape(
            &embeddings("token_type_embeddings"),
            &[("type_vocab_size", Some(self.type_vocab_size)), h],
        )?;
        let layers = format!("{prefix}encoder.layer.");
        check.layers("num_hidden_layers", self.num_hidden_layers, &layers)?;
        if self.num_hidden_layers > 0 {
            check.shape(&format!("{layers}0.attention.self.query.weight"), &[h, h])?;
            check.shape(
                &format!("{layers}0.intermediate.dense.weight"),
                &[("intermediate_size", Some(self.intermediate_size)), h],
            )?;
        }
        check.positions("max_position_embeddings", self.max_position_embeddings)?;
        check.positive("layer_norm_eps", self.layer_norm_eps)
    }

    /// The family member.
    pub fn flavor(&self) -> Flavor {
        Flavor::of(&self.model_type)
    }

    /// The padding token id.
    pub fn pad_id(&self) -> u32 {
        self.pad_token_id.unwrap_or(match self.flavor() {
            Flavor::Bert => 0,
            Flavor::Roberta => 1,
        })
    }

    /// Longest token sequence the position table allows.
    pub fn max_sequence(&self) -> usize {
        match self.flavor() {
            Flavor::Bert => self.max_position_embeddings,
            Flavor::Roberta => self
                .max_position_embeddings
                .saturating_sub(self.pad_id() as usize + 1),
        }
    }

    /// Checks what this implementation supports; the message names the offending field.
    pub fn check(&self) -> Result<(), String> {
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                self.position_embedding_type
            ));
        }
        if self.is_decoder {
            return Err("is_decoder: BERT as a decoder is not supported".into());
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.max_sequence() == 0 {
            return Err("max_position_embeddings leaves no room for tokens".into());
        }
        Ok(())
    }
}
