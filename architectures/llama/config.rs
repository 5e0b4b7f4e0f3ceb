//! `config.json` of the Llama family (transformers' `LlamaConfig`, `MistralConfig`,
//! `Qwen2Config`, `Qwen3Config`), or the same settings read from GGUF metadata.

use crate::common::{Activation, ConfigCheck};
use serde::Deserialize;

/// Which member of the family: they differ in biases, per-head norms and sliding windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

impl Flavor {
    /// The flavor of a model type of the family.
    pub fn of(model_type: &str) -> Option<Flavor> {
        Some(match model_type {
            "llama" => Flavor::Llama,
            "mistral" => Flavor::Mistral,
            "qwen2" => Flavor::Qwen2,
            "qwen3" => Flavor::Qwen3,
            _ => return None,
        })
    }
}

/// `rope_scaling` (transformers 4) or `rope_parameters` (transformers 5) of config.json.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RopeScaling {
    #[serde(alias = "type", default = "default_rope")]
    pub rope_type: String,
    /// The rotary base, in transformers 5's `rope_parameters`.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default = "one")]
    pub factor: f64,
    #[serde(default = "one")]
    pub low_freq_factor: f64,
    #[serde(default = "four")]
    pub high_freq_factor: f64,
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

fn default_rope() -> String {
    "default".into()
}
fn one() -> f64 {
    1.0
}
fn four() -> f64 {
    4.0
}
fn d_act() -> Activation {
    Activation::Silu
}
fn d_positions() -> usize {
    2048
}
fn d_eps() -> f64 {
    1e-6
}
fn d_theta() -> f64 {
    10_000.0
}

/// The fields of config.json this implementation uses.
#[derive(Clone, Debug, Deserialize)]
pub struct LlamaConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    #[serde(default = "d_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "d_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default)]
    pub rope_parameters: Option<RopeScaling>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
}

impl LlamaConfig {
    /// The family member.
    pub fn flavor(&self) -> Flavor {
        Flavor::of(&self.model_type).unwrap_or(Flavor::Llama)
    }

    /// Key/value heads (grouped-query attention).
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Size of one attention head.
    pub fn head_size(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Whether q, k and v projections have biases (Qwen2 always has them).
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias || self.flavor() == Flavor::Qwen2
    }

    /// Longest sequence this implementation attends over: the position table, or the sliding
    /// window when one is in force (attention beyond it is not implemented).
    pub fn max_sequence(&self) -> usize {
        let window = match self.flavor() {
            Flavor::Mistral => self.sliding_window,
            Flavor::Qwen2 | Flavor::Qwen3 if self.use_sliding_window == Some(true) => {
                self.sliding_window
            }
            _ => None,
        };
        window.map_or(self.max_position_embeddings, |w| {
            w.min(self.max_position_embeddings)
        })
    }

    /// Inverse frequencies of the rotary embedding, with Llama 3 or linear scaling applied.
    pub fn inv_freq(&self) -> Result<Vec<f32>, String> {
        let dim = self.head_size();
        let scaling = self.rope_parameters.as_ref().or(self.rope_scaling.as_ref());
        let theta = scaling
            .and_then(|s| s.rope_theta)
            .unwrap_or(self.rope_theta);
        let base: Vec<f64> = (0..dim / 2)
            .map(|i| 1.0 / theta.powf(2.0 * i as f64 / dim as f64))
            .collect();
        let scaled = match scaling {
            None => base,
            Some(s) if s.rope_type == "default" => base,
            Some(s) if s.rope_type == "linear" => base.iter().map(|f| f / s.factor).collect(),
            Some(s) if s.rope_type == "llama3" => {
                if s.high_freq_factor <= s.low_freq_factor {
                    return Err(format!(
                        "rope_scaling: high_freq_factor {} must be larger than low_freq_factor {}",
                        s.high_freq_factor, s.low_freq_factor
                    ));
                }
                let original = s.original_max_position_embeddings.unwrap_or(8192) as f64;
                let low_wavelen = original / s.low_freq_factor;
                let high_wavelen = original / s.high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / s.factor
                        } else {
                            let smooth = (original / wavelen - s.low_freq_factor)
                                / (s.high_freq_factor - s.low_freq_factor);
                            (1.0 - smooth) * f / s.factor + smooth * f
                        }
                    })
                    .collect()
            }
            Some(s) => {
                return Err(format!(
                    "rope_scaling type `{}` is not supported (default, linear and llama3 are)",
                    s.rope_type
                ));
            }
        };
        Ok(scaled.into_iter().map(|f| f as f32).collect())
    }

    /// Checks the config's numbers against the checkpoint (HF names, or GGUF names when
    /// `gguf_arch` is the file's `general.architecture`) before anything is sized by them.
    pub fn check_weights(
        &self,
        check: &ConfigCheck<'_>,
        gguf_arch: Option<&str>,
    ) -> inferox_core::Result<()> {
        // Field and tensor names as the source spells them.
        let field = |hf: &'static str, gguf: &str| match gguf_arch {
            Some(arch) => format!("{arch}.{gguf}"),
            None => hf.to_string(),
        };
        let (layers, q, k, gate) = match gguf_arch {
            Some(_) => (
                "blk.",
                "blk.0.attn_q.weight",
                "blk.0.attn_k.weight",
                "blk.0.ffn_gate.weight",
            ),
            None => (
                "model.layers.",
                "model.layers.0.self_attn.q_proj.weight",
                "model.layers.0.self_attn.k_proj.weight",
                "model.layers.0.mlp.gate_proj.weight",
            ),
        };
        let embed = if gguf_arch.is_some() {
            "token_embd.weight"
        } else {
            "model.embed_tokens.weight"
        };
        check.layers(
            &field("num_hidden_layers", "block_count"),
            self.num_hidden_layers,
            layers,
        )?;
        let hidden = field("hidden_size", "embedding_length");
        let h = (hidden.as_str(), Some(self.hidden_size));
        check.shape(embed, &[("vocab_size", Some(self.vocab_size)), h])?;
        if self.num_attention_heads == 0 || self.kv_heads() == 0 {
            return Err(check.error(format!(
                "field `{}` and `{}` must be positive",
                field("num_attention_heads", "attention.head_count"),
                field("num_key_value_heads", "attention.head_count_kv")
            )));
        }
        if self.num_hidden_layers > 0 {
            let head_dim = field("head_dim", "attention.key_length");
            let qd = format!(
                "{} × {head_dim}",
                field("num_attention_heads", "attention.head_count")
            );
            let kd = format!(
                "{} × {head_dim}",
                field("num_key_value_heads", "attention.head_count_kv")
            );
            let hd = self.head_size();
            check.shape(q, &[(&qd, self.num_attention_heads.checked_mul(hd)), h])?;
            check.shape(k, &[(&kd, self.kv_heads().checked_mul(hd)), h])?;
            let ff = field("intermediate_size", "feed_forward_length");
            check.shape(gate, &[(&ff, Some(self.intermediate_size)), h])?;
        }
        check.positions(
            &field("max_position_embeddings", "context_length"),
            self.max_position_embeddings,
        )?;
        check.positive(
            &field("rms_norm_eps", "attention.layer_norm_rms_epsilon"),
            self.rms_norm_eps,
        )?;
        check.positive(&field("rope_theta", "rope.freq_base"), self.rope_theta)?;
        for scaling in [&self.rope_scaling, &self.rope_parameters]
            .into_iter()
            .flatten()
        {
            check.positive("rope_scaling.factor", scaling.factor)?;
            if let Some(theta) = scaling.rope_theta {
                check.positive("rope_parameters.rope_theta", theta)?;
            }
        }
        Ok(())
    }

    /// Checks what this implementation supports; the message names the offending field.
    pub fn check(&self) -> Result<(), String> {
        if self.num_attention_heads == 0
            || !self
                .num_attention_heads
                .is_multiple_of(self.kv_heads().max(1))
        {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if self.mlp_bias {
            return Err("mlp_bias: feed-forward biases are not supported".into());
        }
        if !self.head_size().is_multiple_of(2) {
            return Err(format!(
                "head_dim {} is odd; rotary embedding needs pairs",
                self.head_size()
            ));
        }
        self.inv_freq().map(|_| ())
    }

    /// The settings of a GGUF file whose `general.architecture` is `arch` (`llama`, `qwen2`,
    /// `qwen3`), from its metadata (as JSON) and vocabulary size.
    pub fn from_gguf(
        meta: &serde_json::Value,
        arch: &str,
        vocab_size: usize,
    ) -> Result<LlamaConfig, String> {
        let key = |k: &str| meta.get(format!("{arch}.{k}"));
        let int = |k: &str| -> Result<usize, String> {
            key(k)
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .ok_or_else(|| format!("GGUF metadata has no integer `{arch}.{k}`"))
        };
        let heads = int("attention.head_count")?;
        let hidden = int("embedding_length")?;
        let head_dim = key("attention.key_length")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .filter(|&d| d != hidden / heads.max(1));
        Ok(LlamaConfig {
            model_type: arch.to_string(),
            vocab_size,
            hidden_size: hidden,
            intermediate_size: int("feed_forward_length")?,
            num_hidden_layers: int("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: key("attention.head_count_kv")
                .and_then(|v| v.as_u64())
                .map(|v| v as usize),
            head_dim,
            hidden_act: Activation::Silu,
            max_position_embeddings: int("context_length")?,
            rms_norm_eps: key("attention.layer_norm_rms_epsilon")
                .and_then(|v| v.as_f64())
                .unwrap_or(1e-5),
            rope_theta: key("rope.freq_base")
                .and_then(|v| v.as_f64())
                .unwrap_or(10_000.0),
            rope_scaling: match key("rope.scaling.type").and_then(|v| v.as_str()) {
                None | Some("none") => None,
                Some(t) => Some(RopeScaling {
                    rope_type: t.to_string(),
                    rope_theta: None,
                    factor: key("rope.scaling.factor")
                        .and_then(|v| v.as_f64())
                        .unwrap_or(1.0),
                    low_freq_factor: 1.0,
                    high_freq_factor: 4.0,
                    original_max_position_embeddings: key("rope.scaling.original_context_length")
                        .and_then(|v| v.as_u64())
                        .map(|v| v as usize),
                }),
            },
            rope_parameters: None,
            tie_word_embeddings: false,
            attention_bias: false,
            mlp_bias: false,
            sliding_window: None,
            use_sliding_window: None,
        })
    }
}
