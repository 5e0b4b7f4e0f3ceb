//! CLIP (Radford et al., 2021, <https://arxiv.org/abs/2103.00020>): a text transformer and a
//! vision transformer whose pooled outputs are projected into one space, where a scaled cosine
//! similarity scores every image against every text. Gives `text_embeds` for texts,
//! `image_embeds` for images (both L2-normalised, as `CLIPModel` returns them), and with both
//! `logits_per_image` / `logits_per_text`: zero-shot classification.
//!
//! Reference implementation: transformers' `modeling_clip.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/clip/modeling_clip.py>).

#[cfg(feature = "candle")]
mod candle;
#[cfg(feature = "torch")]
mod torch;

use crate::common::{Activation, ConfigCheck};
use inferox_core::Family;
use inferox_core::registry::{Description, ImportSource, ModelType};
use inferox_core::schema::{
    Dim, DynamicDim, IoSchema, PaddingSide, Preprocessing, TensorSpec, TokenField, Tokenization,
};
use inferox_core::tensor::DType;
use inferox_core::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Tasks the implementation can serve.
pub const TASKS: &[&str] = &[
    "zero-shot-image-classification",
    "image-feature-extraction",
    "feature-extraction",
];
/// Where the port comes from.
pub const REFERENCE: &str = "https://github.com/huggingface/transformers/blob/main/src/transformers/models/clip/modeling_clip.py";
/// Largest image side accepted (position embeddings are interpolated up to it).
pub const MAX_SIDE: usize = 4096;

fn d_act() -> Activation {
    Activation::QuickGelu
}
fn d_eps() -> f64 {
    1e-5
}
fn d_text_vocab() -> usize {
    49408
}
fn d_512() -> usize {
    512
}
fn d_2048() -> usize {
    2048
}
fn d_12() -> usize {
    12
}
fn d_8() -> usize {
    8
}
fn d_77() -> usize {
    77
}
fn d_pad() -> u32 {
    1
}
fn d_eos() -> u32 {
    49407
}
fn d_768() -> usize {
    768
}
fn d_3072() -> usize {
    3072
}
fn d_3() -> usize {
    3
}
fn d_224() -> usize {
    224
}
fn d_32() -> usize {
    32
}
fn d_scale() -> f64 {
    2.6592
}

/// transformers' `CLIPTextConfig`.
#[derive(Clone, Debug, Deserialize)]
pub struct TextConfig {
    #[serde(default = "d_text_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_512")]
    pub hidden_size: usize,
    #[serde(default = "d_2048")]
    pub intermediate_size: usize,
    #[serde(default = "d_12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_8")]
    pub num_attention_heads: usize,
    #[serde(default = "d_77")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d_pad")]
    pub pad_token_id: u32,
    #[serde(default = "d_eos")]
    pub eos_token_id: u32,
}

/// transformers' `CLIPVisionConfig`.
#[derive(Clone, Debug, Deserialize)]
pub struct VisionConfig {
    #[serde(default = "d_768")]
    pub hidden_size: usize,
    #[serde(default = "d_3072")]
    pub intermediate_size: usize,
    #[serde(default = "d_12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_12")]
    pub num_attention_heads: usize,
    #[serde(default = "d_3")]
    pub num_channels: usize,
    #[serde(default = "d_224")]
    pub image_size: usize,
    #[serde(default = "d_32")]
    pub patch_size: usize,
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

impl VisionConfig {
    /// Patches along a side of the image the position table was trained for.
    pub fn side(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }
}

/// transformers' `CLIPConfig`.
#[derive(Clone, Debug, Deserialize)]
pub struct ClipConfig {
    pub text_config: TextConfig,
    pub vision_config: VisionConfig,
    #[serde(default = "d_512")]
    pub projection_dim: usize,
    #[serde(default = "d_scale")]
    pub logit_scale_init_value: f64,
}

/// Where CLIP's encoder layers keep their parts (transformers' `CLIPEncoderLayer`).
#[cfg(any(feature = "candle", feature = "torch"))]
const LAYER: crate::common::LayerNames = crate::common::LayerNames {
    norm1: "layer_norm1",
    attention: "self_attn",
    qkv: ["q_proj", "k_proj", "v_proj"],
    out: "self_attn.out_proj",
    norm2: "layer_norm2",
    fc1: "mlp.fc1",
    fc2: "mlp.fc2",
};

impl ClipConfig {
    /// Checks what this implementation supports; the message names the field.
    pub fn check(&self) -> std::result::Result<(), String> {
        let (t, v) = (&self.text_config, &self.vision_config);
        for (name, hidden, heads) in [
            ("text_config", t.hidden_size, t.num_attention_heads),
            ("vision_config", v.hidden_size, v.num_attention_heads),
        ] {
            if heads == 0 || !hidden.is_multiple_of(heads) {
                return Err(format!(
                    "{name}.hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
                ));
            }
        }
        if v.patch_size == 0 || v.image_size < v.patch_size || v.image_size > MAX_SIDE {
            return Err(format!(
                "vision_config.image_size {} and patch_size {} leave no patches (or too many)",
                v.image_size, v.patch_size
            ));
        }
        if t.max_position_embeddings == 0 || t.max_position_embeddings > 1 << 16 {
            return Err(format!(
                "text_config.max_position_embeddings {} is out of range",
                t.max_position_embeddings
            ));
        }
        Ok(())
    }

    /// Checks the config and the checkpoint against each other.
    pub fn checked(&self, check: &ConfigCheck<'_>) -> Result<()> {
        self.check().map_err(|m| check.error(m))?;
        self.check_weights(check)
    }

    /// Checks the config against the checkpoint.
    pub fn check_weights(&self, check: &ConfigCheck<'_>) -> Result<()> {
        let (t, v) = (&self.text_config, &self.vision_config);
        let th = ("text_config.hidden_size", Some(t.hidden_size));
        let vh = ("vision_config.hidden_size", Some(v.hidden_size));
        let p = ("projection_dim", Some(self.projection_dim));
        check.shape(
            "text_model.embeddings.token_embedding.weight",
            &[("text_config.vocab_size", Some(t.vocab_size)), th],
        )?;
        check.shape(
            "text_model.embeddings.position_embedding.weight",
            &[
                (
                    "text_config.max_position_embeddings",
                    Some(t.max_position_embeddings),
                ),
                th,
            ],
        )?;
        check.shape(
            "vision_model.embeddings.patch_embedding.weight",
            &[
                vh,
                ("vision_config.num_channels", Some(v.num_channels)),
                ("vision_config.patch_size", Some(v.patch_size)),
                ("vision_config.patch_size", Some(v.patch_size)),
            ],
        )?;
        check.shape(
            "vision_model.embeddings.position_embedding.weight",
            &[
                (
                    "(image_size / patch_size)² + 1",
                    Some(v.side() * v.side() + 1),
                ),
                vh,
            ],
        )?;
        check.shape("text_projection.weight", &[p, th])?;
        check.shape("visual_projection.weight", &[p, vh])?;
        check.layers(
            "text_config.num_hidden_layers",
            t.num_hidden_layers,
            "text_model.encoder.layers.",
        )?;
        check.layers(
            "vision_config.num_hidden_layers",
            v.num_hidden_layers,
            "vision_model.encoder.layers.",
        )?;
        check.positive("text_config.layer_norm_eps", t.layer_norm_eps)?;
        check.positive("vision_config.layer_norm_eps", v.layer_norm_eps)
    }
}

/// Derives the I/O schema of a CLIP checkpoint with its tokenizer and image processor.
pub fn describe(src: &ImportSource<'_>) -> Result<Description> {
    let cfg: ClipConfig = src.parse_config()?;
    cfg.check().map_err(|message| Error::Config {
        path: src.config_path.to_path_buf(),
        message,
    })?;
    cfg.check_weights(&ConfigCheck {
        path: src.config_path,
        weights: src.weights,
    })?;
    let tokenizer = src.tokenizer.ok_or_else(|| Error::Import {
        path: src.config_path.with_file_name("tokenizer.json"),
        message: "a CLIP model needs its tokenizer.json beside config.json".into(),
    })?;
    let image = src.image_preprocessing()?;
    let (t, v) = (&cfg.text_config, &cfg.vision_config);
    let text = |field| {
        Some(Preprocessing::Tokenization(Tokenization {
            tokenizer: tokenizer.to_string(),
            field,
            max_length: t.max_position_embeddings,
            padding_side: PaddingSide::Right,
            pad_id: Some(t.pad_token_id),
        }))
    };
    let ts = || vec![Dim::named("texts"), Dim::named("sequence")];
    let optional = |spec: TensorSpec| TensorSpec {
        optional: true,
        ..spec
    };
    let inputs = vec![
        optional(TensorSpec {
            preprocessing: text(TokenField::Ids),
            ..TensorSpec::new("input_ids", DType::Int64, ts(), "token ids of the texts")
        }),
        optional(TensorSpec {
            preprocessing: text(TokenField::AttentionMask),
            ..TensorSpec::new(
                "attention_mask",
                DType::Int64,
                ts(),
                "1 for real tokens, 0 for padding; all ones when left out",
            )
        }),
        optional(TensorSpec {
            preprocessing: Some(Preprocessing::Image(image)),
            ..TensorSpec::new(
                "pixel_values",
                DType::Float32,
                vec![
                    Dim::named("images"),
                    Dim::Fixed(v.num_channels),
                    Dim::named("height"),
                    Dim::named("width"),
                ],
                "images, preprocessed as the image hint says; other sizes than the model's get \
                 their position embeddings interpolated (transformers' interpolate_pos_encoding)",
            )
        }),
    ];
    let p = cfg.projection_dim;
    let outputs = vec![
        optional(TensorSpec::new(
            "text_embeds",
            DType::Float32,
            vec![Dim::named("texts"), Dim::Fixed(p)],
            "L2-normalised projected text embeddings (with input_ids)",
        )),
        optional(TensorSpec::new(
            "image_embeds",
            DType::Float32,
            vec![Dim::named("images"), Dim::Fixed(p)],
            "L2-normalised projected image embeddings (with pixel_values)",
        )),
        optional(TensorSpec::new(
            "logits_per_image",
            DType::Float32,
            vec![Dim::named("images"), Dim::named("texts")],
            "scaled cosine similarity of every image to every text (with both inputs)",
        )),
        optional(TensorSpec::new(
            "logits_per_text",
            DType::Float32,
            vec![Dim::named("texts"), Dim::named("images")],
            "logits_per_image transposed",
        )),
    ];
    let dim = |max: Option<usize>, description: String| DynamicDim { max, description };
    let size = v.image_size;
    let dims = BTreeMap::from([
        ("texts".into(), dim(None, "number of texts".into())),
        ("images".into(), dim(None, "number of images".into())),
        (
            "sequence".into(),
            dim(
                Some(t.max_position_embeddings),
                "tokens per text, special tokens included".into(),
            ),
        ),
        (
            "height".into(),
            dim(
                Some(MAX_SIDE),
                format!("image height (the model's: {size})"),
            ),
        ),
        (
            "width".into(),
            dim(Some(MAX_SIDE), format!("image width (the model's: {size})")),
        ),
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

/// The token each text is pooled at (transformers' `CLIPTextTransformer`): with the legacy
/// `eos_token_id` 2, the highest id of the row; otherwise the first `eos_token_id` (0 if none).
pub fn pooled_positions(ids: &[i64], seq: usize, eos_token_id: u32) -> Vec<usize> {
    ids.chunks(seq.max(1))
        .map(|row| {
            if eos_token_id == 2 {
                // argmax: the first of the maxima.
                let max = row.iter().copied().max().unwrap_or(0);
                row.iter().position(|&id| id == max).unwrap_or(0)
            } else {
                row.iter()
                    .position(|&id| id == i64::from(eos_token_id))
                    .unwrap_or(0)
            }
        })
        .collect()
}

/// The text attention's additive bias, `[texts, seq, seq]` row-major: causal, and padding
/// (mask 0) masked out, with transformers' most negative float.
pub fn text_attention_bias(mask: Option<&[i64]>, texts: usize, seq: usize) -> Vec<f32> {
    let mut bias = vec![0f32; texts * seq * seq];
    for b in 0..texts {
        for i in 0..seq {
            for j in 0..seq {
                let padded = mask.is_some_and(|m| m[b * seq + j] == 0);
                if j > i || padded {
                    bias[(b * seq + i) * seq + j] = f32::MIN;
                }
            }
        }
    }
    bias
}

inferox_core::register!(
    ModelType::new("clip", Family::Multimodal, describe)
        .tasks(TASKS)
        .reference(REFERENCE),
);

implementations! {
    candle: "clip" [Safetensors];
    torch: "clip" [Safetensors];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_positions_follow_transformers() {
        let ids = [5, 9, 7, 0, 5, 7, 7, 7];
        assert_eq!(pooled_positions(&ids, 4, 7), [2, 1]);
        assert_eq!(pooled_positions(&ids, 4, 2), [1, 1]);
        assert_eq!(pooled_positions(&[1, 1], 2, 9), [0]);
    }

    #[test]
    fn bias_is_causal_and_masks_padding() {
        let b = text_attention_bias(Some(&[1, 1, 0]), 1, 3);
        assert_eq!(b[0..3], [0.0, f32::MIN, f32::MIN]);
        assert_eq!(b[3..6], [0.0, 0.0, f32::MIN]);
        assert_eq!(b[6..9], [0.0, 0.0, f32::MIN]);
    }
}
