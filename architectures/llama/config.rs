//! `config.json` of the Llama family (transformers' `LlamaConfig`, `MistralConfig`,
//! `Qwen2Config`, `Qwen3Config`, `Gemma2Config`, `Gemma3TextConfig`, `Phi3Config`), or the
//! same settings read from GGUF metadata.

use crate::common::{Activation, ConfigCheck};
use serde::Deserialize;

/// Which member of the family: they differ in biases, norms, fused projections and sliding
/// windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    /// Norms around attention and feed-forward, (1 + w) RMS norms, embeddings scaled by √d,
    /// soft-capped logits, alternating sliding-window and global layers.
    Gemma2,
    /// Gemma 2's layout with per-head q/k norms and a RoPE base of its own for local layers.
    Gemma3,
    /// Fused `qkv_proj` and `gate_up_proj`, partial rotary dimensions.
    Phi3,
}

impl Flavor {
    /// The flavor of a model type of the family.
    pub fn of(model_type: &str) -> Option<Flavor> {
        Some(match model_type {
            "llama" => Flavor::Llama,
            "mistral" => Flavor::Mistral,
            "qwen2" => Flavor::Qwen2,
            "qwen3" => Flavor::Qwen3,
            "gemma2" => Flavor::Gemma2,
            "gemma3" | "gemma3_text" => Flavor::Gemma3,
            "phi3" => Flavor::Phi3,
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
    /// Share of each head's dimensions that rotate (Phi-3 in transformers 5).
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
    /// LongRoPE (`longrope`, formerly `su`; Phi-3.5, Phi-4-mini): per-frequency divisors up
    /// to `original_max_position_embeddings` positions, and past them.
    #[serde(default)]
    pub short_factor: Option<Vec<f64>>,
    #[serde(default)]
    pub long_factor: Option<Vec<f64>>,
    /// LongRoPE's scale of cos and sin; derived from the context extension when absent.
    #[serde(default)]
    pub attention_factor: Option<f64>,
}

/// LongRoPE's second rotary table: the frequencies used once a sequence passes `original`
/// positions (transformers switches per forward pass, on its furthest position), and the
/// scale of cos and sin at every length.
#[derive(Clone, Debug, PartialEq)]
pub struct LongRope {
    pub original: usize,
    pub long_inv_freq: Vec<f32>,
    pub attention_factor: f64,
}

/// `rope_parameters` of transformers 5: one set, or one per layer type (Gemma 3).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RopeParameters {
    PerLayerType {
        full_attention: RopeScaling,
        #[serde(default)]
        sliding_attention: Option<RopeScaling>,
    },
    Single(RopeScaling),
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
    pub rope_parameters: Option<RopeParameters>,
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
    /// Gemma's name for `hidden_act`.
    #[serde(default)]
    pub hidden_activation: Option<Activation>,
    /// Gemma: queries are scaled by `query_pre_attn_scalar^-0.5` instead of `head_dim^-0.5`.
    #[serde(default)]
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma 2: attention scores become `c · tanh(s / c)`.
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    /// Gemma 2: logits become `c · tanh(l / c)`.
    #[serde(default)]
    pub final_logit_softcapping: Option<f64>,
    /// `sliding_attention` or `full_attention` per layer (Gemma).
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// Every n-th layer is global, the others slide (Gemma 3 before `layer_types`).
    #[serde(default)]
    pub sliding_window_pattern: Option<usize>,
    /// RoPE base of Gemma 3's sliding-window layers.
    #[serde(default)]
    pub rope_local_base_freq: Option<f64>,
    /// Share of each head's dimensions that rotate (Phi-3 / Phi-4-mini).
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
    /// Positions the model was pre-trained on, before LongRoPE extended them (Phi-3).
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

fn is_longrope(s: &RopeScaling) -> bool {
    s.rope_type == "longrope" || s.rope_type == "su"
}

/// `base[i] / factors[i]`; `name` is the config field the factors come from.
fn divide(base: &[f64], factors: Option<&[f64]>, name: &str) -> Result<Vec<f64>, String> {
    let factors = factors.ok_or_else(|| format!("LongRoPE needs rope_scaling.{name}"))?;
    if factors.len() != base.len() || factors.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
        return Err(format!(
            "rope_scaling.{name} must hold {} positive numbers (one per rotated pair), not {}",
            base.len(),
            factors.len()
        ));
    }
    Ok(base.iter().zip(factors).map(|(b, f)| b / f).collect())
}

/// Where a checkpoint's decoder weights are: `language_model.` in Gemma 3's multimodal
/// checkpoints (`Gemma3ForConditionalGeneration`, whose vision tower is not used), nothing
/// otherwise.
pub fn hf_prefix(weights: &inferox_core::weights::WeightIndex) -> &'static str {
    if weights
        .tensors
        .contains_key("language_model.model.embed_tokens.weight")
    {
        "language_model."
    } else {
        ""
    }
}

impl LlamaConfig {
    /// The config of a config.json: the text model's (`text_config`) for Gemma 3's multimodal
    /// `gemma3`, the whole file otherwise.
    pub fn from_hf_json(mut config: serde_json::Value) -> Result<LlamaConfig, String> {
        if config.get("model_type").and_then(|t| t.as_str()) == Some("gemma3") {
            let tie = config.get("tie_word_embeddings").cloned();
            let mut text = config
                .get_mut("text_config")
                .map(serde_json::Value::take)
                .filter(serde_json::Value::is_object)
                .ok_or("a `gemma3` config.json without a `text_config` object")?;
            text["model_type"] = "gemma3_text".into();
            if let Some(tie) = tie
                && text.get("tie_word_embeddings").is_none()
            {
                text["tie_word_embeddings"] = tie;
            }
            config = text;
        }
        serde_json::from_value(config).map_err(|e| e.to_string())
    }

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

    /// Whether this is a Gemma (2 or 3): (1 + w) norms, scaled embeddings, norms around
    /// attention and feed-forward.
    pub fn gemma(&self) -> bool {
        matches!(self.flavor(), Flavor::Gemma2 | Flavor::Gemma3)
    }

    /// The feed-forward activation.
    pub fn activation(&self) -> Activation {
        match self.hidden_activation {
            Some(a) => a,
            None if self.gemma() => Activation::GeluTanh,
            None => self.hidden_act,
        }
    }

    /// The factor queries are scaled by before attention.
    pub fn attention_scale(&self) -> f64 {
        1.0 / self
            .query_pre_attn_scalar
            .unwrap_or(self.head_size() as f64)
            .sqrt()
    }

    /// The sliding window of layer `i`, if it slides. Mistral and Qwen2 windows are not here:
    /// [`LlamaConfig::max_sequence`] stops at them.
    pub fn window(&self, i: usize) -> Option<usize> {
        let sliding = match self.flavor() {
            Flavor::Phi3 => true,
            Flavor::Gemma2 | Flavor::Gemma3 => match &self.layer_types {
                Some(types) => types.get(i).is_some_and(|t| t == "sliding_attention"),
                None => {
                    let default = if self.flavor() == Flavor::Gemma2 {
                        2
                    } else {
                        6
                    };
                    let n = self.sliding_window_pattern.unwrap_or(default);
                    n == 0 || i % n < n - 1
                }
            },
            _ => false,
        };
        self.sliding_window.filter(|_| sliding)
    }

    /// The rotary settings of global layers, and of sliding ones where they differ.
    fn rope(&self) -> (Option<&RopeScaling>, Option<&RopeScaling>) {
        match &self.rope_parameters {
            Some(RopeParameters::PerLayerType {
                full_attention,
                sliding_attention,
            }) => (Some(full_attention), sliding_attention.as_ref()),
            Some(RopeParameters::Single(s)) => (Some(s), None),
            None => (self.rope_scaling.as_ref(), None),
        }
    }

    /// How many dimensions of each head rotate.
    pub fn rotary_dims(&self) -> usize {
        let factor = self
            .partial_rotary_factor
            .or_else(|| self.rope().0.and_then(|s| s.partial_rotary_factor))
            .unwrap_or(1.0);
        (self.head_size() as f64 * factor) as usize
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

    /// Inverse frequencies of the rotary embedding of global layers (`local` false) or of
    /// sliding-window ones, with Llama 3 or linear scaling applied.
    pub fn inv_freq(&self, local: bool) -> Result<Vec<f32>, String> {
        let dim = self.rotary_dims();
        let (global, sliding) = self.rope();
        let (theta, scaling) = match (local, sliding) {
            (true, Some(s)) => (s.rope_theta.unwrap_or(10_000.0), Some(s)),
            (true, None) if self.flavor() == Flavor::Gemma3 => {
                (self.rope_local_base_freq.unwrap_or(10_000.0), None)
            }
            _ => (
                global.and_then(|s| s.rope_theta).unwrap_or(self.rope_theta),
                global,
            ),
        };
        let base: Vec<f64> = (0..dim / 2)
            .map(|i| 1.0 / theta.powf(2.0 * i as f64 / dim as f64))
            .collect();
        let scaled = match scaling {
            None => base,
            Some(s) if s.rope_type == "default" => base,
            Some(s) if s.rope_type == "linear" => base.iter().map(|f| f / s.factor).collect(),
            Some(s) if is_longrope(s) => divide(&base, s.short_factor.as_deref(), "short_factor")?,
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
                    "rope_scaling type `{}` is not supported (default, linear, llama3 and longrope are)",
                    s.rope_type
                ));
            }
        };
        Ok(scaled.into_iter().map(|f| f as f32).collect())
    }

    /// LongRoPE's long frequencies and scale, when the config asks for LongRoPE.
    pub fn longrope(&self) -> Result<Option<LongRope>, String> {
        let Some(s) = self.rope().0.filter(|s| is_longrope(s)) else {
            return Ok(None);
        };
        let original = s
            .original_max_position_embeddings
            .or(self.original_max_position_embeddings)
            .filter(|&o| o > 1)
            .ok_or("LongRoPE needs original_max_position_embeddings (more than 1)")?;
        let dim = self.rotary_dims();
        let theta = s.rope_theta.unwrap_or(self.rope_theta);
        let base: Vec<f64> = (0..dim / 2)
            .map(|i| 1.0 / theta.powf(2.0 * i as f64 / dim as f64))
            .collect();
        let long = divide(&base, s.long_factor.as_deref(), "long_factor")?;
        let long = long.into_iter().map(|f| f as f32).collect();
        // transformers: `factor` when given (1.0 is serde's default here, so it means "not
        // given"), else the extension of the context.
        let factor = if s.factor != 1.0 {
            s.factor
        } else {
            self.max_position_embeddings as f64 / original as f64
        };
        let attention_factor = s.attention_factor.unwrap_or(if factor <= 1.0 {
            1.0
        } else {
            (1.0 + factor.ln() / (original as f64).ln()).sqrt()
        });
        Ok(Some(LongRope {
            original,
            long_inv_freq: long,
            attention_factor,
        }))
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
        // Tensor names: GGUF's, or HF's under the checkpoint's prefix.
        let prefix = hf_prefix(check.weights);
        let hf = |n: &str| format!("{prefix}model.{n}");
        let (layers, q, k, gate, embed) = match gguf_arch {
            Some(_) => (
                "blk.".to_string(),
                "blk.0.attn_q.weight".to_string(),
                "blk.0.attn_k.weight".to_string(),
                "blk.0.ffn_gate.weight".to_string(),
                "token_embd.weight".to_string(),
            ),
            None => (
                hf("layers."),
                hf("layers.0.self_attn.q_proj.weight"),
                hf("layers.0.self_attn.k_proj.weight"),
                hf("layers.0.mlp.gate_proj.weight"),
                hf("embed_tokens.weight"),
            ),
        };
        check.layers(
            &field("num_hidden_layers", "block_count"),
            self.num_hidden_layers,
            &layers,
        )?;
        let hidden = field("hidden_size", "embedding_length");
        let h = (hidden.as_str(), Some(self.hidden_size));
        check.shape(&embed, &[("vocab_size", Some(self.vocab_size)), h])?;
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
            let ff = field("intermediate_size", "feed_forward_length");
            let qkv = match gguf_arch {
                Some(_) => "blk.0.attn_qkv.weight".to_string(),
                None => hf("layers.0.self_attn.qkv_proj.weight"),
            };
            if self.flavor() == Flavor::Phi3 && check.weights.tensors.contains_key(&qkv) {
                let rows = (self.kv_heads().checked_mul(2))
                    .and_then(|n| n.checked_add(self.num_attention_heads))
                    .and_then(|n| n.checked_mul(hd));
                check.shape(&qkv, &[(&format!("({qd} + 2 × {kd})"), rows), h])?;
            } else {
                check.shape(&q, &[(&qd, self.num_attention_heads.checked_mul(hd)), h])?;
                check.shape(&k, &[(&kd, self.kv_heads().checked_mul(hd)), h])?;
            }
            if self.flavor() == Flavor::Phi3 {
                let gate_up = match gguf_arch {
                    Some(_) => "blk.0.ffn_up.weight".to_string(),
                    None => hf("layers.0.mlp.gate_up_proj.weight"),
                };
                let rows = self.intermediate_size.checked_mul(2);
                check.shape(&gate_up, &[(&format!("2 × {ff}"), rows), h])?;
            } else {
                check.shape(&gate, &[(&ff, Some(self.intermediate_size)), h])?;
            }
        }
        if let Some(scalar) = self.query_pre_attn_scalar {
            check.positive("query_pre_attn_scalar", scalar)?;
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
        let (global, sliding) = self.rope();
        for scaling in [global, sliding].into_iter().flatten() {
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
        if !self.rotary_dims().is_multiple_of(2) || self.rotary_dims() > self.head_size() {
            return Err(format!(
                "{} rotary dimensions of head_dim {}: rotary embedding needs pairs within a head",
                self.rotary_dims(),
                self.head_size()
            ));
        }
        for cap in [self.attn_logit_softcapping, self.final_logit_softcapping]
            .into_iter()
            .flatten()
        {
            if !(cap.is_finite() && cap > 0.0) {
                return Err(format!("logit soft-capping {cap} must be positive"));
            }
        }
        if self.sliding_window == Some(0) {
            return Err("sliding_window 0: a layer would attend to nothing".into());
        }
        if let Some(types) = &self.layer_types
            && types.len() != self.num_hidden_layers
        {
            return Err(format!(
                "layer_types has {} entries for {} layers",
                types.len(),
                self.num_hidden_layers
            ));
        }
        self.inv_freq(false)?;
        self.longrope()?;
        self.inv_freq(true).map(|_| ())
    }

    /// The settings of a GGUF file whose `general.architecture` is `arch` (`llama`, `qwen2`,
    /// `qwen3`, `gemma2`, `gemma3`, `phi3`), from its metadata (as JSON) and vocabulary size.
    /// What llama.cpp hard-codes per architecture rather than storing (Gemma's sliding-window
    /// patterns and local RoPE base, the query scale of the 27B Gemmas) is filled in as
    /// llama.cpp does.
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
        let layers = int("block_count")?;
        let float = |k: &str| key(k).and_then(|v| v.as_f64());
        let flavor = Flavor::of(arch);
        let gemma = matches!(flavor, Some(Flavor::Gemma2 | Flavor::Gemma3));
        let head_size = head_dim.unwrap_or(hidden / heads.max(1));
        // llama.cpp: the 27B Gemmas (46 and 62 layers) scale queries by (hidden / heads)^-0.5.
        let query_pre_attn_scalar = match (flavor, layers) {
            (Some(Flavor::Gemma2), 46) | (Some(Flavor::Gemma3), 62) => {
                Some((hidden / heads.max(1)) as f64)
            }
            _ if gemma => Some(head_size as f64),
            _ => None,
        };
        let (layer_types, sliding_window_pattern) = match key("attention.sliding_window_pattern") {
            Some(serde_json::Value::Array(a)) => {
                let types = a.iter().map(|v| {
                    if v.as_bool() == Some(true) {
                        "sliding_attention".to_string()
                    } else {
                        "full_attention".to_string()
                    }
                });
                (Some(types.collect()), None)
            }
            Some(v) => (None, v.as_u64().map(|n| n as usize)),
            None => (None, None),
        };
        let sliding_window = key("attention.sliding_window")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .filter(|&w| w > 0)
            .or(if flavor == Some(Flavor::Gemma2) {
                Some(4096)
            } else {
                None
            });
        let rope_theta = float("rope.freq_base").unwrap_or(10_000.0);
        let rope_local_base_freq = match flavor {
            Some(Flavor::Gemma2) => Some(float("rope.freq_base_swa").unwrap_or(rope_theta)),
            Some(Flavor::Gemma3) => Some(float("rope.freq_base_swa").unwrap_or(10_000.0)),
            _ => None,
        };
        let partial_rotary_factor = key("rope.dimension_count")
            .and_then(|v| v.as_u64())
            .filter(|&d| d as usize != head_size && head_size > 0)
            .map(|d| d as f64 / head_size as f64);
        Ok(LlamaConfig {
            model_type: arch.to_string(),
            vocab_size,
            hidden_size: hidden,
            intermediate_size: int("feed_forward_length")?,
            num_hidden_layers: layers,
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
            rope_theta,
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
                    partial_rotary_factor: None,
                    short_factor: None,
                    long_factor: None,
                    attention_factor: None,
                }),
            },
            rope_parameters: None,
            tie_word_embeddings: false,
            attention_bias: false,
            mlp_bias: false,
            sliding_window: sliding_window.filter(|_| gemma || flavor == Some(Flavor::Phi3)),
            use_sliding_window: None,
            hidden_activation: gemma.then_some(Activation::GeluTanh),
            query_pre_attn_scalar,
            attn_logit_softcapping: float("attn_logit_softcapping").filter(|&c| c > 0.0),
            final_logit_softcapping: float("final_logit_softcapping").filter(|&c| c > 0.0),
            layer_types,
            sliding_window_pattern,
            rope_local_base_freq,
            partial_rotary_factor,
            original_max_position_embeddings: key("rope.scaling.original_context_length")
                .and_then(|v| v.as_u64())
                .map(|v| v as usize),
        })
    }
}
