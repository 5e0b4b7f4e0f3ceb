//! ViT, the Vision Transformer (Dosovitskiy et al., 2020, <https://arxiv.org/abs/2010.11929>):
//! an image cut into patches, each projected to a token, a class token in front, position
//! embeddings added, then a pre-norm transformer encoder. `ViTModel` checkpoints give
//! `last_hidden_state` (and `pooler_output` with their pooler); `ViTForImageClassification`
//! adds `logits` from the class token.
//!
//! Reference implementation: transformers' `modeling_vit.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/vit/modeling_vit.py>).

#[cfg(feature = "candle")]
mod candle;
#[cfg(feature = "torch")]
mod torch;

use crate::common::{Activation, ConfigCheck};
use inferox_core::Family;
use inferox_core::registry::{Description, ImportSource, ModelType};
use inferox_core::schema::{Dim, DynamicDim, IoSchema, Preprocessing, TensorSpec};
use inferox_core::tensor::DType;
use inferox_core::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Tasks the implementation can serve.
pub const TASKS: &[&str] = &["image-feature-extraction", "image-classification"];
/// Where the port comes from.
pub const REFERENCE: &str = "https://github.com/huggingface/transformers/blob/main/src/transformers/models/vit/modeling_vit.py";

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
fn d_eps() -> f64 {
    1e-12
}
fn d_image() -> usize {
    224
}
fn d_patch() -> usize {
    16
}
fn d_channels() -> usize {
    3
}
fn d_true() -> bool {
    true
}
fn d_pooler_act() -> String {
    "tanh".into()
}

/// The fields of config.json this implementation uses, mirroring transformers' `ViTConfig`
/// (defaults as there).
#[derive(Clone, Debug, Deserialize)]
pub struct VitConfig {
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
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d_image")]
    pub image_size: usize,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    #[serde(default = "d_true")]
    pub qkv_bias: bool,
    /// Output size of the pooler (hidden_size when absent).
    #[serde(default)]
    pub pooler_output_size: Option<usize>,
    #[serde(default = "d_pooler_act")]
    pub pooler_act: String,
}

impl VitConfig {
    /// Patches along each side of the image.
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens per image: the patches and the class token.
    pub fn tokens(&self) -> usize {
        self.patches_per_side() * self.patches_per_side() + 1
    }

    /// Checks what this implementation supports; the message names the field.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.patch_size == 0 || self.image_size < self.patch_size || self.image_size > 1 << 14 {
            return Err(format!(
                "image_size {} and patch_size {} leave no patches (or too many)",
                self.image_size, self.patch_size
            ));
        }
        if !self.qkv_bias {
            return Err("qkv_bias false is not supported".into());
        }
        if self.pooler_act != "tanh" {
            return Err(format!(
                "pooler_act `{}` is not supported (only tanh)",
                self.pooler_act
            ));
        }
        Ok(())
    }

    /// Checks the config's numbers against the checkpoint (the model under `prefix`).
    pub fn check_weights(&self, check: &ConfigCheck<'_>, prefix: &str) -> Result<()> {
        let h = ("hidden_size", Some(self.hidden_size));
        let p = ("patch_size", Some(self.patch_size));
        check.shape(
            &format!("{prefix}embeddings.patch_embeddings.projection.weight"),
            &[h, ("num_channels", Some(self.num_channels)), p, p],
        )?;
        check.shape(
            &format!("{prefix}embeddings.position_embeddings"),
            &[
                ("1", Some(1)),
                ("(image_size / patch_size)² + 1", Some(self.tokens())),
                h,
            ],
        )?;
        let layers = format!("{prefix}encoder.layer.");
        check.layers("num_hidden_layers", self.num_hidden_layers, &layers)?;
        if self.num_hidden_layers > 0 {
            check.shape(
                &format!("{layers}0.intermediate.dense.weight"),
                &[("intermediate_size", Some(self.intermediate_size)), h],
            )?;
        }
        check.positive("layer_norm_eps", self.layer_norm_eps)
    }
}

/// Where ViT's encoder layers keep their parts (transformers' `ViTLayer`).
#[cfg(any(feature = "candle", feature = "torch"))]
const LAYER: crate::common::LayerNames = crate::common::LayerNames {
    norm1: "layernorm_before",
    attention: "attention.attention",
    qkv: ["query", "key", "value"],
    out: "attention.output.dense",
    norm2: "layernorm_after",
    fc1: "intermediate.dense",
    fc2: "output.dense",
};

/// Largest image side accepted (position embeddings are interpolated up to it).
pub const MAX_SIDE: usize = 4096;

/// Which parts a checkpoint has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `""` (ViTModel) or `"vit."` (ViTForImageClassification).
    pub prefix: String,
    /// Whether the pooler (dense + tanh on the class token) is present.
    pub pooler: bool,
    /// Number of labels, when the classification head is present.
    pub num_labels: Option<usize>,
}

impl Layout {
    /// Reads the layout from the tensor names and shapes of a checkpoint.
    pub fn detect(
        has: impl Fn(&str) -> bool,
        shape: impl Fn(&str) -> Option<Vec<usize>>,
    ) -> Layout {
        let prefix = if has("vit.embeddings.cls_token") {
            "vit."
        } else {
            ""
        };
        Layout {
            prefix: prefix.to_string(),
            pooler: has(&format!("{prefix}pooler.dense.weight")),
            num_labels: shape("classifier.weight").and_then(|s| s.first().copied()),
        }
    }
}

impl VitConfig {
    /// Checks the config and the checkpoint against each other, and finds its layout.
    pub fn checked(&self, check: &ConfigCheck<'_>) -> Result<Layout> {
        self.check().map_err(|m| check.error(m))?;
        let layout = Layout::detect(
            |n| check.weights.contains(n),
            |n| check.weights.tensors.get(n).map(|t| t.shape.clone()),
        );
        self.check_weights(check, &layout.prefix)?;
        Ok(layout)
    }
}

/// Derives the I/O schema of a ViT checkpoint and its image processor.
pub fn describe(src: &ImportSource<'_>) -> Result<Description> {
    let cfg: VitConfig = src.parse_config()?;
    let config_error = |message: String| Error::Config {
        path: src.config_path.to_path_buf(),
        message,
    };
    cfg.check().map_err(config_error)?;
    let layout = Layout::detect(
        |n| src.weights.contains(n),
        |n| src.weights.tensors.get(n).map(|t| t.shape.clone()),
    );
    let check = ConfigCheck {
        path: src.config_path,
        weights: src.weights,
    };
    cfg.check_weights(&check, &layout.prefix)?;
    let image = src.image_preprocessing()?;
    let size = cfg.image_size;
    if image.fixed_size().map(|s| (s.height, s.width)) != Some((size, size)) {
        return Err(Error::Import {
            path: src.config_path.with_file_name(&image.config),
            message: format!(
                "the image processor makes {} images, but the model takes {size}×{size}",
                image
                    .fixed_size()
                    .map_or("variable-size".to_string(), |s| format!(
                        "{}×{}",
                        s.height, s.width
                    ))
            ),
        });
    }
    let inputs = vec![TensorSpec {
        preprocessing: Some(Preprocessing::Image(image)),
        ..TensorSpec::new(
            "pixel_values",
            DType::Float32,
            vec![
                Dim::named("batch"),
                Dim::Fixed(cfg.num_channels),
                Dim::named("height"),
                Dim::named("width"),
            ],
            "images, preprocessed as the image hint says; other sizes than the model's get \
             their position embeddings interpolated (transformers' interpolate_pos_encoding)",
        )
    }];
    let h = cfg.hidden_size;
    let mut outputs = vec![TensorSpec::new(
        "last_hidden_state",
        DType::Float32,
        vec![Dim::named("batch"), Dim::named("tokens"), Dim::Fixed(h)],
        "hidden state of the class token and every patch after the final layer norm",
    )];
    let mut tasks = vec!["image-feature-extraction".to_string()];
    if layout.pooler {
        outputs.push(TensorSpec::new(
            "pooler_output",
            DType::Float32,
            vec![
                Dim::named("batch"),
                Dim::Fixed(cfg.pooler_output_size.unwrap_or(h)),
            ],
            "class token through the pooler (dense + tanh)",
        ));
    }
    if let Some(n) = layout.num_labels {
        outputs.push(TensorSpec::new(
            "logits",
            DType::Float32,
            vec![Dim::named("batch"), Dim::Fixed(n)],
            "image-classification scores, one per label",
        ));
        tasks.push("image-classification".to_string());
    }
    let dim = |max: Option<usize>, description: String| DynamicDim { max, description };
    let dims = BTreeMap::from([
        ("batch".into(), dim(None, "number of images".into())),
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
        (
            "tokens".into(),
            dim(
                None,
                format!(
                    "class token + one per {0}×{0} patch ({1} at {size}×{size})",
                    cfg.patch_size,
                    cfg.tokens()
                ),
            ),
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

inferox_core::register!(
    ModelType::new("vit", Family::Vision, describe)
        .tasks(TASKS)
        .reference(REFERENCE),
);

implementations! {
    candle: "vit" [Safetensors];
    torch: "vit" [Safetensors];
}
