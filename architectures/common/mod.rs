//! Pieces of Hugging Face configs that several architectures share.

use serde::Deserialize;

#[cfg(feature = "candle")]
pub mod candle;
#[cfg(feature = "torch")]
pub mod torch;

/// Where a pre-norm transformer layer's parts live under the layer's prefix: ViT's and CLIP's
/// layers are the same computation under different names.
#[derive(Clone, Copy, Debug)]
pub struct LayerNames {
    pub norm1: &'static str,
    /// Prefix of the three projections, and their names.
    pub attention: &'static str,
    pub qkv: [&'static str; 3],
    pub out: &'static str,
    pub norm2: &'static str,
    pub fc1: &'static str,
    pub fc2: &'static str,
}

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
    /// `x · sigmoid(1.702 x)` (CLIP).
    #[serde(rename = "quick_gelu")]
    QuickGelu,
}

#[cfg(feature = "candle")]
impl Activation {
    /// Applies the activation to a candle tensor.
    pub fn apply(
        self,
        x: &inferox_candle::candle_core::Tensor,
    ) -> inferox_candle::candle_core::Result<inferox_candle::candle_core::Tensor> {
        match self {
            Activation::Gelu => inferox_candle::fused::bias_gelu(x.copy()?, None),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
            Activation::QuickGelu => x * inferox_candle::candle_nn::ops::sigmoid(&(x * 1.702)?)?,
        }
    }
}

use inferox_core::registry::Description;
use inferox_core::schema::{
    Dim, DynamicDim, IoSchema, PaddingSide, Preprocessing, TensorSpec, TokenField, Tokenization,
};
use inferox_core::tensor::DType;
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

/// What every loader does first: the package's config.json parsed as `C`, then `check` on it
/// against the checkpoint's tensor index (the config's own limits, the layout, the shapes),
/// before anything is sized by it. Returns the config and what `check` derived (a layout).
#[cfg(any(feature = "candle", feature = "torch"))]
pub fn read_checked_config<C: serde::de::DeserializeOwned, L>(
    req: &inferox_core::load::LoadRequest<'_>,
    check: impl FnOnce(&C, &ConfigCheck<'_>) -> inferox_core::Result<L>,
) -> inferox_core::Result<(C, L)> {
    use inferox_core::manifest::ArtifactRole;
    let config = req.artifacts(ArtifactRole::Config)?.remove(0);
    let cfg: C = inferox_core::files::read_config(&config)?;
    let index = inferox_core::weights::WeightIndex::read(&req.artifacts(ArtifactRole::Weights)?)?;
    let checked = check(
        &cfg,
        &ConfigCheck {
            path: config.path(),
            weights: &index,
        },
    )?;
    Ok((cfg, checked))
}

/// Largest sequence length a config may declare: positions are `u32`, and no model attends
/// over more than this (Llama 4 declares 10M). Anything larger is a corrupt config.
pub const MAX_POSITIONS: usize = 1 << 28;

/// Checks the numbers of a config against the checkpoint they describe, before anything is
/// sized by them: layer counts against the layers present, sizes against tensor shapes.
/// Errors are [`Error::Config`](inferox_core::Error::Config) naming the config file and the
/// field (or [`Error::MissingTensor`](inferox_core::Error::MissingTensor) when the tensor that
/// would tell is absent).
pub struct ConfigCheck<'a> {
    /// The file the config came from (config.json, or the GGUF file).
    pub path: &'a std::path::Path,
    /// The checkpoint's tensors.
    pub weights: &'a inferox_core::weights::WeightIndex,
}

/// A size from config fields: its description (`num_attention_heads × head_dim`) and value,
/// `None` when the product overflowed.
pub type Size<'a> = (&'a str, Option<usize>);

impl ConfigCheck<'_> {
    /// An [`Error::Config`](inferox_core::Error::Config) about this config.
    pub fn error(&self, message: String) -> inferox_core::Error {
        inferox_core::Error::Config {
            path: self.path.to_path_buf(),
            message,
        }
    }

    /// The layers present under `prefix` (`model.layers.` holds `model.layers.N.*`) must be
    /// exactly `0..value`, `value` being the config's `field`.
    pub fn layers(&self, field: &str, value: usize, prefix: &str) -> inferox_core::Result<()> {
        let mut present = std::collections::BTreeSet::new();
        for name in self.weights.tensors.keys() {
            if let Some((index, _)) = name.strip_prefix(prefix).and_then(|r| r.split_once('.'))
                && let Ok(index) = index.parse::<usize>()
            {
                present.insert(index);
            }
        }
        let contiguous = present.last().is_none_or(|&last| last + 1 == present.len());
        if present.len() != value || !contiguous {
            let held = match (present.first(), present.last()) {
                (Some(first), Some(last)) => format!(
                    "{} layers ({prefix}{first} to {prefix}{last})",
                    present.len()
                ),
                _ => format!("no {prefix}N layers"),
            };
            return Err(self.error(format!(
                "field `{field}` is {value}, but the weights hold {held}"
            )));
        }
        Ok(())
    }

    /// Tensor `tensor` must have the shape the config's sizes give.
    pub fn shape(&self, tensor: &str, want: &[Size<'_>]) -> inferox_core::Result<()> {
        let Some(info) = self.weights.tensors.get(tensor) else {
            return Err(inferox_core::Error::MissingTensor {
                tensor: tensor.to_string(),
                files: self.weights.files.clone(),
            });
        };
        let matches = info.shape.len() == want.len()
            && want
                .iter()
                .zip(&info.shape)
                .all(|((_, w), s)| *w == Some(*s));
        if !matches {
            let fields: Vec<String> = want
                .iter()
                .map(|(field, value)| match value {
                    Some(v) => format!("{field} = {v}"),
                    None => format!("{field} overflows"),
                })
                .collect();
            return Err(self.error(format!(
                "{} do not match tensor `{tensor}` of shape {:?}",
                fields.join(", "),
                info.shape
            )));
        }
        Ok(())
    }

    /// A sequence length field must be positive and at most [`MAX_POSITIONS`].
    pub fn positions(&self, field: &str, value: usize) -> inferox_core::Result<()> {
        if value == 0 || value > MAX_POSITIONS {
            return Err(self.error(format!(
                "field `{field}` is {value}; it must be between 1 and {MAX_POSITIONS}"
            )));
        }
        Ok(())
    }

    /// A float field (an epsilon, a rotary base, a scaling factor) must be finite and positive.
    pub fn positive(&self, field: &str, value: f64) -> inferox_core::Result<()> {
        if !(value.is_finite() && value > 0.0) {
            return Err(self.error(format!(
                "field `{field}` is {value}; it must be a positive number"
            )));
        }
        Ok(())
    }
}

/// The patch position embeddings (`side × side` rows of `dim`, row-major over the grid)
/// resized to `height × width` patches as `torch.nn.functional.interpolate(mode="bicubic",
/// align_corners=False)` resizes them in transformers' `interpolate_pos_encoding`: cubic
/// convolution with a = -0.75, source coordinates `(i + 0.5) · scale - 0.5`, borders clamped.
pub fn interpolate_positions(
    table: &[f32],
    side: usize,
    dim: usize,
    height: usize,
    width: usize,
) -> Vec<f32> {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    // For each output index: the four source indices (clamped) and their weights.
    let taps = |out: usize| -> Vec<([usize; 4], [f32; 4])> {
        let scale = side as f32 / out as f32;
        (0..out)
            .map(|i| {
                let real = scale * (i as f32 + 0.5) - 0.5;
                let base = real.floor();
                let t = real - base;
                let at = |k: i64| (base as i64 + k).clamp(0, side as i64 - 1) as usize;
                (
                    [at(-1), at(0), at(1), at(2)],
                    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)],
                )
            })
            .collect()
    };
    let (rows, cols) = (taps(height), taps(width));
    let mut out = vec![0f32; height * width * dim];
    for (y, (ys, wy)) in rows.iter().enumerate() {
        for (x, (xs, wx)) in cols.iter().enumerate() {
            let o = &mut out[(y * width + x) * dim..(y * width + x + 1) * dim];
            for (c, v) in o.iter_mut().enumerate() {
                let mut acc = 0f32;
                for (&sy, &ky) in ys.iter().zip(wy) {
                    let mut row = 0f32;
                    for (&sx, &kx) in xs.iter().zip(wx) {
                        row += table[(sy * side + sx) * dim + c] * kx;
                    }
                    acc += row * ky;
                }
                *v = acc;
            }
        }
    }
    out
}
