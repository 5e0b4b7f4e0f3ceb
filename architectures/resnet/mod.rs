//! ResNet (He et al., 2015, <https://arxiv.org/abs/1512.03385>) in Hugging Face's layout: a
//! 7×7 stem with max pooling, stages of basic (two 3×3) or bottleneck (1×1, 3×3, 1×1) residual
//! layers with batch norm, global average pooling, and for `ResNetForImageClassification` a
//! linear classifier. Outputs `last_hidden_state` (the last feature map), `pooler_output`
//! (its spatial average, `[batch, channels, 1, 1]` as transformers gives it) and `logits`.
//!
//! Reference implementation: transformers' `modeling_resnet.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/resnet/modeling_resnet.py>).

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
pub const REFERENCE: &str = "https://github.com/huggingface/transformers/blob/main/src/transformers/models/resnet/modeling_resnet.py";
/// Batch norm's epsilon (`nn.BatchNorm2d`'s default, which transformers' ResNet keeps).
pub const BATCH_NORM_EPS: f64 = 1e-5;
/// Largest image side accepted.
pub const MAX_SIDE: usize = 8192;

fn d_channels() -> usize {
    3
}
fn d_embedding() -> usize {
    64
}
fn d_hidden_sizes() -> Vec<usize> {
    vec![256, 512, 1024, 2048]
}
fn d_depths() -> Vec<usize> {
    vec![3, 4, 6, 3]
}
fn d_layer_type() -> LayerType {
    LayerType::Bottleneck
}
fn d_act() -> Activation {
    Activation::Relu
}

/// Residual layer kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerType {
    /// Two 3×3 convolutions.
    Basic,
    /// 1×1 reduce, 3×3, 1×1 expand (reduction 4).
    Bottleneck,
}

/// The fields of config.json this implementation uses, mirroring transformers' `ResNetConfig`.
#[derive(Clone, Debug, Deserialize)]
pub struct ResNetConfig {
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    #[serde(default = "d_embedding")]
    pub embedding_size: usize,
    #[serde(default = "d_hidden_sizes")]
    pub hidden_sizes: Vec<usize>,
    #[serde(default = "d_depths")]
    pub depths: Vec<usize>,
    #[serde(default = "d_layer_type")]
    pub layer_type: LayerType,
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    #[serde(default)]
    pub downsample_in_first_stage: bool,
    #[serde(default)]
    pub downsample_in_bottleneck: bool,
}

/// One residual layer's shape: channels in and out, stride, and whether it projects the
/// shortcut (a 1×1 convolution with batch norm).
#[derive(Clone, Copy, Debug)]
pub struct LayerPlan {
    pub input: usize,
    pub output: usize,
    pub stride: usize,
    pub shortcut: bool,
}

impl ResNetConfig {
    /// Checks what this implementation supports; the message names the field.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.hidden_sizes.is_empty() || self.hidden_sizes.len() != self.depths.len() {
            return Err(format!(
                "hidden_sizes has {} entries and depths {}; they must match (and not be empty)",
                self.hidden_sizes.len(),
                self.depths.len()
            ));
        }
        if self.depths.contains(&0) || self.depths.iter().sum::<usize>() > 1000 {
            return Err(format!("depths {:?} are out of range", self.depths));
        }
        if self.layer_type == LayerType::Bottleneck && self.hidden_sizes.iter().any(|&h| h < 4) {
            return Err("hidden_sizes must be at least 4 for bottleneck layers".into());
        }
        Ok(())
    }

    /// Every stage's layers, in order (transformers' `ResNetEncoder` / `ResNetStage`).
    pub fn plan(&self) -> Vec<Vec<LayerPlan>> {
        let mut input = self.embedding_size;
        self.hidden_sizes
            .iter()
            .zip(&self.depths)
            .enumerate()
            .map(|(i, (&output, &depth))| {
                let stride = if i > 0 || self.downsample_in_first_stage {
                    2
                } else {
                    1
                };
                let stage = (0..depth)
                    .map(|j| {
                        let (inp, s) = if j == 0 { (input, stride) } else { (output, 1) };
                        LayerPlan {
                            input: inp,
                            output,
                            stride: s,
                            shortcut: inp != output || s != 1,
                        }
                    })
                    .collect();
                input = output;
                stage
            })
            .collect()
    }

    /// Checks the config against the checkpoint (the model under `prefix`).
    pub fn check_weights(&self, check: &ConfigCheck<'_>, prefix: &str) -> Result<()> {
        check.shape(
            &format!("{prefix}embedder.embedder.convolution.weight"),
            &[
                ("embedding_size", Some(self.embedding_size)),
                ("num_channels", Some(self.num_channels)),
                ("7", Some(7)),
                ("7", Some(7)),
            ],
        )?;
        for (i, stage) in self.plan().iter().enumerate() {
            check.layers(
                &format!("depths[{i}]"),
                stage.len(),
                &format!("{prefix}encoder.stages.{i}.layers."),
            )?;
            let last = stage.len() - 1;
            let conv = match self.layer_type {
                LayerType::Basic => 1,
                LayerType::Bottleneck => 2,
            };
            let tensor =
                format!("{prefix}encoder.stages.{i}.layers.{last}.layer.{conv}.convolution.weight");
            let out = ("hidden_sizes", Some(stage[last].output));
            let inner = match self.layer_type {
                LayerType::Basic => (("hidden_sizes", Some(stage[last].output)), 3),
                LayerType::Bottleneck => (("hidden_sizes / 4", Some(stage[last].output / 4)), 1),
            };
            let k = ("kernel", Some(inner.1));
            check.shape(&tensor, &[out, inner.0, k, k])?;
        }
        Ok(())
    }
}

/// Which parts a checkpoint has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `""` (ResNetModel) or `"resnet."` (ResNetForImageClassification).
    pub prefix: String,
    /// Number of labels, when the classifier is present.
    pub num_labels: Option<usize>,
}

impl Layout {
    /// Reads the layout from the tensor names and shapes of a checkpoint.
    pub fn detect(
        has: impl Fn(&str) -> bool,
        shape: impl Fn(&str) -> Option<Vec<usize>>,
    ) -> Layout {
        let prefix = match has("resnet.embedder.embedder.convolution.weight") {
            true => "resnet.",
            false => "",
        };
        Layout {
            prefix: prefix.into(),
            num_labels: shape("classifier.1.weight").and_then(|s| s.first().copied()),
        }
    }
}

impl ResNetConfig {
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

/// Derives the I/O schema of a ResNet checkpoint and its image processor.
pub fn describe(src: &ImportSource<'_>) -> Result<Description> {
    let cfg: ResNetConfig = src.parse_config()?;
    cfg.check().map_err(|message| Error::Config {
        path: src.config_path.to_path_buf(),
        message,
    })?;
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
    let channels = *cfg.hidden_sizes.last().expect("checked non-empty");
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
            "images, preprocessed as the image hint says (any size: the network is convolutional)",
        )
    }];
    let mut outputs = vec![
        TensorSpec::new(
            "last_hidden_state",
            DType::Float32,
            vec![
                Dim::named("batch"),
                Dim::Fixed(channels),
                Dim::named("feature_height"),
                Dim::named("feature_width"),
            ],
            "the last stage's feature map",
        ),
        TensorSpec::new(
            "pooler_output",
            DType::Float32,
            vec![
                Dim::named("batch"),
                Dim::Fixed(channels),
                Dim::Fixed(1),
                Dim::Fixed(1),
            ],
            "the feature map averaged over space",
        ),
    ];
    let mut tasks = vec!["image-feature-extraction".to_string()];
    if let Some(n) = layout.num_labels {
        outputs.push(TensorSpec::new(
            "logits",
            DType::Float32,
            vec![Dim::named("batch"), Dim::Fixed(n)],
            "image-classification scores, one per label",
        ));
        tasks.push("image-classification".to_string());
    }
    let dim = |max: Option<usize>, description: &str| DynamicDim {
        max,
        description: description.into(),
    };
    let dims = BTreeMap::from([
        ("batch".into(), dim(None, "number of images")),
        ("height".into(), dim(Some(MAX_SIDE), "image height")),
        ("width".into(), dim(Some(MAX_SIDE), "image width")),
        (
            "feature_height".into(),
            dim(None, "height / 32 (rounded up)"),
        ),
        ("feature_width".into(), dim(None, "width / 32 (rounded up)")),
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
    ModelType::new("resnet", Family::Vision, describe)
        .tasks(TASKS)
        .reference(REFERENCE),
);

implementations! {
    candle: "resnet" [Safetensors];
    torch: "resnet" [Safetensors];
}
