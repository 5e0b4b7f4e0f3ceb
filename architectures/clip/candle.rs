//! CLIP on candle. Ported from transformers' `modeling_clip.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/clip/modeling_clip.py>).
//! Both towers are the shared pre-norm layers of `common::candle`; the vision tower's input is
//! the shared patch embedding (ViT's, without a bias).

use super::{ClipConfig, LAYER, pooled_positions, text_attention_bias};
use crate::common::candle::{
    Dense, LayerNorm, PatchEmbeddings, PreNormLayer, float_device, layer_norm, pixel_tensor,
    too_small,
};
use crate::common::{Activation, read_checked_config};
use candle::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use inferox_candle::{Result, Weights, candle_core as candle, candle_nn, to_host};
use inferox_core::Error;
use inferox_core::load::LoadRequest;
use inferox_core::manifest::ArtifactRole;
use inferox_core::model::Model;
use inferox_core::tensor::NamedTensors;

/// One tower's encoder: its layers, activation and head count.
struct Encoder {
    layers: Vec<PreNormLayer>,
    activation: Activation,
    heads: usize,
}

impl Encoder {
    fn load(
        vb: VarBuilder,
        count: usize,
        sizes: (usize, usize),
        eps: f64,
        (activation, heads): (Activation, usize),
    ) -> candle::Result<Encoder> {
        let layers = (0..count)
            .map(|i| PreNormLayer::load(vb.pp(format!("layers.{i}")), &LAYER, sizes, eps))
            .collect::<candle::Result<_>>()?;
        Ok(Encoder {
            layers,
            activation,
            heads,
        })
    }

    fn forward(
        &self,
        mut x: Tensor,
        bias: Option<&Tensor>,
        shape: (usize, usize),
    ) -> candle::Result<Tensor> {
        for layer in &self.layers {
            x = layer.forward(&x, bias, shape, self.heads, self.activation)?;
        }
        Ok(x)
    }
}

/// CLIPModel: text and vision towers with their projections.
pub struct Clip {
    token_embedding: Tensor,
    text_position: Tensor,
    text: Encoder,
    final_norm: LayerNorm,
    text_projection: Dense,
    patches: PatchEmbeddings,
    pre_norm: LayerNorm,
    vision: Encoder,
    post_norm: LayerNorm,
    visual_projection: Dense,
    logit_scale: f64,
    eos_token_id: u32,
    vocab_size: usize,
    text_hidden: usize,
    vision_hidden: usize,
    patch_size: usize,
    dtype: DType,
    device: Device,
}

/// The registry's loader for the candle backend.
pub fn load(req: &LoadRequest<'_>) -> inferox_core::Result<Box<dyn Model>> {
    let (cfg, ()) = read_checked_config(req, ClipConfig::checked)?;
    let weights = Weights::open(&req.artifacts(ArtifactRole::Weights)?)?;
    let (device, dtype, _packing) = float_device(req)?;
    let vb = weights.var_builder(dtype, &device);
    let model = Clip::load(vb, &cfg, device).map_err(|e| weights.explain(e))?;
    Ok(Box::new(model))
}

/// `x` scaled to unit L2 norm along its last dimension.
fn normalize(x: &Tensor) -> candle::Result<Tensor> {
    x.broadcast_div(&x.sqr()?.sum_keepdim(1)?.sqrt()?)
}

impl Clip {
    fn load(vb: VarBuilder, cfg: &ClipConfig, device: Device) -> candle::Result<Self> {
        let (t, v) = (&cfg.text_config, &cfg.vision_config);
        let (th, vh, p) = (t.hidden_size, v.hidden_size, v.patch_size);
        let text = vb.pp("text_model");
        let vision = vb.pp("vision_model");
        let emb = vision.pp("embeddings");
        let tokens = v.side() * v.side() + 1;
        let scale = vb
            .get((), "logit_scale")?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        Ok(Clip {
            token_embedding: text.get((t.vocab_size, th), "embeddings.token_embedding.weight")?,
            text_position: text.get(
                (t.max_position_embeddings, th),
                "embeddings.position_embedding.weight",
            )?,
            text: Encoder::load(
                text.pp("encoder"),
                t.num_hidden_layers,
                (th, t.intermediate_size),
                t.layer_norm_eps,
                (t.hidden_act, t.num_attention_heads),
            )?,
            final_norm: layer_norm(text.pp("final_layer_norm"), th, t.layer_norm_eps)?,
            text_projection: Dense::load_no_bias(vb.pp("text_projection"), th, cfg.projection_dim)?,
            patches: PatchEmbeddings::new(
                &emb.get((vh, v.num_channels, p, p), "patch_embedding.weight")?,
                None,
                &emb.get(vh, "class_embedding")?,
                &emb.get((tokens, vh), "position_embedding.weight")?,
            )?,
            pre_norm: layer_norm(vision.pp("pre_layrnorm"), vh, v.layer_norm_eps)?,
            vision: Encoder::load(
                vision.pp("encoder"),
                v.num_hidden_layers,
                (vh, v.intermediate_size),
                v.layer_norm_eps,
                (v.hidden_act, v.num_attention_heads),
            )?,
            post_norm: layer_norm(vision.pp("post_layernorm"), vh, v.layer_norm_eps)?,
            visual_projection: Dense::load_no_bias(
                vb.pp("visual_projection"),
                vh,
                cfg.projection_dim,
            )?,
            logit_scale: scale.exp(),
            eos_token_id: t.eos_token_id,
            vocab_size: t.vocab_size,
            text_hidden: th,
            vision_hidden: vh,
            patch_size: p,
            dtype: vb.dtype(),
            device,
        })
    }

    /// Normalised text embeddings, `[texts, projection]`.
    fn text_embeds(&self, inputs: &NamedTensors) -> Result<Tensor> {
        let input = |name: &str| -> Result<Option<(&[i64], &[usize])>> {
            let Some(t) = inputs.get(name) else {
                return Ok(None);
            };
            let values = t.as_i64().ok_or_else(|| Error::Input {
                name: name.into(),
                message: format!("dtype is {}, expected int64", t.dtype()),
            })?;
            Ok(Some((values, t.shape())))
        };
        let (ids, shape) = input("input_ids")?.expect("checked by the caller");
        let (texts, seq) = (shape[0], shape[1]);
        if let Some(&bad) = ids
            .iter()
            .find(|&&i| i < 0 || i as usize >= self.vocab_size)
        {
            return Err(Error::Input {
                name: "input_ids".into(),
                message: format!("holds {bad}, outside 0..{}", self.vocab_size),
            }
            .into());
        }
        let mask = input("attention_mask")?.map(|(m, _)| m);
        let index: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        let index = Tensor::from_vec(index, texts * seq, &self.device)?;
        let x = self
            .token_embedding
            .index_select(&index, 0)?
            .reshape((texts, seq, self.text_hidden))?
            .broadcast_add(&self.text_position.narrow(0, 0, seq)?)?
            .reshape((texts * seq, self.text_hidden))?;
        let bias = Tensor::from_vec(
            text_attention_bias(mask, texts, seq),
            (texts, 1, seq, seq),
            &self.device,
        )?
        .to_dtype(self.dtype)?;
        let x = self.text.forward(x, Some(&bias), (texts, seq))?;
        let x = self.final_norm.forward(&x)?;
        let rows: Vec<u32> = pooled_positions(ids, seq, self.eos_token_id)
            .iter()
            .enumerate()
            .map(|(b, &p)| (b * seq + p) as u32)
            .collect();
        let pooled = x.index_select(&Tensor::from_vec(rows, texts, &self.device)?, 0)?;
        Ok(normalize(&self.text_projection.forward(&pooled)?)?)
    }

    /// Normalised image embeddings, `[images, projection]`.
    fn image_embeds(&self, inputs: &NamedTensors) -> Result<Tensor> {
        let (pixels, images) = pixel_tensor(inputs, self.dtype, &self.device)?;
        let Some((x, seq)) = self.patches.forward(&pixels)? else {
            return Err(too_small(pixels.dims(), self.patch_size).into());
        };
        let x = self.pre_norm.forward(&x)?;
        let x = self.vision.forward(x, None, (images, seq))?;
        let first = x
            .reshape((images, seq, self.vision_hidden))?
            .narrow(1, 0, 1)?
            .squeeze(1)?;
        let pooled = self.post_norm.forward(&first)?;
        Ok(normalize(&self.visual_projection.forward(&pooled)?)?)
    }

    fn outputs(&self, inputs: &NamedTensors) -> Result<NamedTensors> {
        let text = match inputs.get("input_ids") {
            Some(_) => Some(self.text_embeds(inputs)?),
            None => None,
        };
        let image = match inputs.get("pixel_values") {
            Some(_) => Some(self.image_embeds(inputs)?),
            None => None,
        };
        if text.is_none() && image.is_none() {
            return Err(Error::Input {
                name: "input_ids".into(),
                message: "give input_ids (texts), pixel_values (images), or both".into(),
            }
            .into());
        }
        let mut out = NamedTensors::new();
        if let (Some(t), Some(i)) = (&text, &image) {
            let per_text = (t.matmul(&i.t()?)? * self.logit_scale)?;
            out.insert("logits_per_image", to_host(&per_text.t()?.contiguous()?)?);
            out.insert("logits_per_text", to_host(&per_text)?);
        }
        if let Some(t) = text {
            out.insert("text_embeds", to_host(&t)?);
        }
        if let Some(i) = image {
            out.insert("image_embeds", to_host(&i)?);
        }
        Ok(out)
    }
}

impl Model for Clip {
    fn forward(&self, inputs: &NamedTensors) -> inferox_core::Result<NamedTensors> {
        self.outputs(inputs).map_err(Into::into)
    }
}
