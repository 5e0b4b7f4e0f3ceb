//! T5's config.json (`T5Config` / `MT5Config` in transformers), with its defaults, and the
//! checks that it describes the checkpoint before anything is sized by it.

use crate::common::{Activation, ConfigCheck, Size};
use serde::Deserialize;

/// Largest `d_model`, `d_kv`, `d_ff`, head or vocabulary size a config may declare.
pub const MAX_SIZE: usize = 1 << 24;
/// Largest layer count a config may declare.
pub const MAX_LAYERS: usize = 1024;

/// The fields of a T5 config.json that change the computation.
#[derive(Clone, Debug, Deserialize)]
pub struct T5Config {
    #[serde(default = "defaults::vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "defaults::d_model")]
    pub d_model: usize,
    #[serde(default = "defaults::d_kv")]
    pub d_kv: usize,
    #[serde(default = "defaults::d_ff")]
    pub d_ff: usize,
    #[serde(default = "defaults::num_layers")]
    pub num_layers: usize,
    /// Decoder layers; `num_layers` when absent.
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    #[serde(default = "defaults::num_heads")]
    pub num_heads: usize,
    #[serde(default = "defaults::num_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "defaults::max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "defaults::eps")]
    pub layer_norm_epsilon: f64,
    /// `relu` (T5 v1.0), `gated-gelu` (v1.1, Flan, mT5), `gated-<act>` or `<act>`.
    #[serde(default = "defaults::feed_forward_proj")]
    pub feed_forward_proj: String,
    /// `t5` or `mt5`.
    #[serde(default)]
    pub model_type: String,
    /// Original T5 ties the output layer to the embeddings and scales the decoder's output by
    /// `d_model^-0.5`; v1.1 says `false` and does neither. Absent means tied for `t5` and
    /// not for `mt5` (whose configs default to false).
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// The first decoder token; the padding token (0) when absent, as transformers does.
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
    /// Length the model was trained on: the tokenizer's truncation length. Relative position
    /// buckets set no hard limit.
    #[serde(default = "defaults::n_positions")]
    pub n_positions: usize,
}

mod defaults {
    pub fn vocab_size() -> usize {
        32128
    }
    pub fn d_model() -> usize {
        512
    }
    pub fn d_kv() -> usize {
        64
    }
    pub fn d_ff() -> usize {
        2048
    }
    pub fn num_layers() -> usize {
        6
    }
    pub fn num_heads() -> usize {
        8
    }
    pub fn num_buckets() -> usize {
        32
    }
    pub fn max_distance() -> usize {
        128
    }
    pub fn eps() -> f64 {
        1e-6
    }
    pub fn feed_forward_proj() -> String {
        "relu".into()
    }
    pub fn n_positions() -> usize {
        512
    }
}

/// The feed-forward block: `wo(act(wi(x)))`, or gated `wo(act(wi_0(x)) · wi_1(x))`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedForward {
    pub activation: Activation,
    pub gated: bool,
}

impl T5Config {
    /// Decoder layers.
    pub fn decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    /// `num_heads × d_kv`: the width of the attention projections.
    pub fn inner(&self) -> usize {
        self.num_heads * self.d_kv
    }

    /// Whether the decoder's output is scaled by `d_model^-0.5` before the output layer
    /// (transformers' `scale_decoder_outputs`).
    pub fn scales_output(&self) -> bool {
        self.tie_word_embeddings.unwrap_or(self.model_type != "mt5")
    }

    /// The first decoder token.
    pub fn start_token(&self) -> u32 {
        self.decoder_start_token_id
            .or(self.pad_token_id)
            .unwrap_or(0)
    }

    /// `feed_forward_proj` read as transformers reads it.
    pub fn feed_forward(&self) -> Result<FeedForward, String> {
        let proj = self.feed_forward_proj.as_str();
        let (gated, act) = match proj.split_once('-') {
            Some(("gated", act)) => (true, act),
            None => (false, proj),
            Some(_) => {
                return Err(format!(
                    "field `feed_forward_proj` is {proj:?}; expected `<act>` or `gated-<act>`"
                ));
            }
        };
        // transformers maps "gated-gelu" to the tanh approximation for backward compatibility.
        let act = if proj == "gated-gelu" {
            "gelu_new"
        } else {
            act
        };
        let activation =
            serde_json::from_value(serde_json::Value::String(act.into())).map_err(|_| {
                format!(
                    "field `feed_forward_proj` is {proj:?}: activation {act:?} is not supported"
                )
            })?;
        Ok(FeedForward { activation, gated })
    }

    /// The config's own limits.
    pub fn check(&self) -> Result<(), String> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_heads", self.num_heads),
        ];
        for (field, value) in sizes {
            if value == 0 || value > MAX_SIZE {
                return Err(format!(
                    "field `{field}` is {value}; it must be between 1 and {MAX_SIZE}"
                ));
            }
        }
        for (field, value) in [
            ("num_layers", self.num_layers),
            ("num_decoder_layers", self.decoder_layers()),
        ] {
            if value == 0 || value > MAX_LAYERS {
                return Err(format!(
                    "field `{field}` is {value}; it must be between 1 and {MAX_LAYERS}"
                ));
            }
        }
        let buckets = self.relative_attention_num_buckets;
        if !(4..=MAX_SIZE).contains(&buckets) {
            return Err(format!(
                "field `relative_attention_num_buckets` is {buckets}; it must be between 4 and {MAX_SIZE}"
            ));
        }
        let distance = self.relative_attention_max_distance;
        if distance <= buckets / 2 || distance > crate::common::MAX_POSITIONS {
            return Err(format!(
                "field `relative_attention_max_distance` is {distance}; it must be more than half \
                 of `relative_attention_num_buckets` ({buckets}) and at most {}",
                crate::common::MAX_POSITIONS
            ));
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon > 0.0) {
            return Err(format!(
                "field `layer_norm_epsilon` is {}; it must be a positive number",
                self.layer_norm_epsilon
            ));
        }
        if let Some(start) = self.decoder_start_token_id
            && start as usize >= self.vocab_size
        {
            return Err(format!(
                "field `decoder_start_token_id` is {start}, outside the vocabulary of {}",
                self.vocab_size
            ));
        }
        self.feed_forward()?;
        Ok(())
    }

    /// The embedding matrix's name: `shared.weight`, or the encoder's copy in checkpoints that
    /// only kept that one.
    pub fn embedding_name(has: impl Fn(&str) -> bool) -> &'static str {
        if !has("shared.weight") && has("encoder.embed_tokens.weight") {
            "encoder.embed_tokens.weight"
        } else {
            "shared.weight"
        }
    }

    /// Checks the config against the checkpoint: the layers present and every tensor's shape.
    pub fn check_weights(&self, check: &ConfigCheck<'_>) -> inferox_core::Result<()> {
        self.check().map_err(|m| check.error(m))?;
        let has = |n: &str| check.weights.contains(n);
        let d = ("d_model", Some(self.d_model));
        let inner = ("num_heads × d_kv", self.num_heads.checked_mul(self.d_kv));
        let ff = ("d_ff", Some(self.d_ff));
        let vocab = ("vocab_size", Some(self.vocab_size));
        let heads = ("num_heads", Some(self.num_heads));
        let buckets = (
            "relative_attention_num_buckets",
            Some(self.relative_attention_num_buckets),
        );
        check.shape(Self::embedding_name(has), &[vocab, d])?;
        if has("lm_head.weight") {
            check.shape("lm_head.weight", &[vocab, d])?;
        } else if self.tie_word_embeddings == Some(false) {
            return Err(check.error(
                "field `tie_word_embeddings` is false, but the weights hold no `lm_head.weight`"
                    .into(),
            ));
        }
        let gated = self.feed_forward().map_err(|m| check.error(m))?.gated;
        let attention = |p: &str| -> inferox_core::Result<()> {
            for n in ["q", "k", "v"] {
                check.shape(&format!("{p}.{n}.weight"), &[inner, d])?;
            }
            check.shape(&format!("{p}.o.weight"), &[d, inner])
        };
        let feed_forward = |p: &str| -> inferox_core::Result<()> {
            let p = format!("{p}.DenseReluDense");
            let wi: &[&str] = if gated { &["wi_0", "wi_1"] } else { &["wi"] };
            for n in wi {
                check.shape(&format!("{p}.{n}.weight"), &[ff, d])?;
            }
            check.shape(&format!("{p}.wo.weight"), &[d, ff])
        };
        let norm = |p: &str| check.shape(&format!("{p}.layer_norm.weight"), &[d]);
        for (stack, field, layers) in [
            ("encoder", "num_layers", self.num_layers),
            ("decoder", "num_decoder_layers", self.decoder_layers()),
        ] {
            check.layers(field, layers, &format!("{stack}.block."))?;
            let bias: [Size<'_>; 2] = [buckets, heads];
            check.shape(
                &format!("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
                &bias,
            )?;
            check.shape(&format!("{stack}.final_layer_norm.weight"), &[d])?;
            for i in 0..layers {
                let b = format!("{stack}.block.{i}.layer");
                attention(&format!("{b}.0.SelfAttention"))?;
                norm(&format!("{b}.0"))?;
                let ff_at = if stack == "decoder" {
                    attention(&format!("{b}.1.EncDecAttention"))?;
                    norm(&format!("{b}.1"))?;
                    2
                } else {
                    1
                };
                feed_forward(&format!("{b}.{ff_at}"))?;
                norm(&format!("{b}.{ff_at}"))?;
            }
        }
        Ok(())
    }
}

/// The relative-position bucket of `relative` (key position − query position), as transformers'
/// `T5Attention._relative_position_bucket` computes it, f32 logarithm included: the encoder's
/// buckets are `bidirectional`, the decoder's look back only.
pub fn relative_bucket(
    relative: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> u32 {
    let mut buckets = num_buckets as i64;
    let mut bucket = 0i64;
    let distance = if bidirectional {
        buckets /= 2;
        if relative > 0 {
            bucket += buckets;
        }
        relative.abs()
    } else {
        -relative.min(0)
    };
    let max_exact = buckets / 2;
    bucket += if distance < max_exact {
        distance
    } else {
        let ratio = (distance as f32 / max_exact as f32).ln()
            / ((max_distance as f64 / max_exact as f64).ln() as f32)
            * (buckets - max_exact) as f32;
        (max_exact + ratio as i64).min(buckets - 1)
    };
    bucket as u32
}

/// Buckets of the `queries × keys` block whose first query is at position `offset`,
/// row-major.
pub fn bucket_table(
    queries: usize,
    keys: usize,
    offset: usize,
    bidirectional: bool,
    cfg: &T5Config,
) -> Vec<u32> {
    let mut out = Vec::with_capacity(queries * keys);
    for i in 0..queries {
        let q = (offset + i) as i64;
        out.extend((0..keys).map(|j| {
            relative_bucket(
                j as i64 - q,
                bidirectional,
                cfg.relative_attention_num_buckets,
                cfg.relative_attention_max_distance,
            )
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_transformers() {
        // `T5Attention._relative_position_bucket` (transformers 5.23) with 32 buckets and max distance 128, for
        // relative positions -200, -100, -20, -8, -7, -1, 0, 1, 7, 8, 20, 100, 200.
        let rel = [-200i64, -100, -20, -8, -7, -1, 0, 1, 7, 8, 20, 100, 200];
        let bi: Vec<u32> = rel
            .iter()
            .map(|&r| relative_bucket(r, true, 32, 128))
            .collect();
        let uni: Vec<u32> = rel
            .iter()
            .map(|&r| relative_bucket(r, false, 32, 128))
            .collect();
        assert_eq!(bi, [15, 15, 10, 8, 7, 1, 0, 17, 23, 24, 26, 31, 31]);
        assert_eq!(uni, [31, 30, 17, 8, 7, 1, 0, 0, 0, 0, 0, 0, 0]);
    }
}
