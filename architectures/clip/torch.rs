//! CLIP on libtorch, from the same config.json and safetensors files as the candle backend.
//! Ported from transformers' `modeling_clip.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/clip/modeling_clip.py>).

use super::{ClipConfig, LAYER, pooled_positions, text_attention_bias};
use crate::common::torch::{PatchEmbeddings, PreNormLayer, pixel_tensor, too_small};
use crate::common::{Activation, read_checked_config};
use inferox_core::Error;
use inferox_core::load::LoadRequest;
use inferox_core::manifest::ArtifactRole;
use inferox_core::model::Model;
use inferox_core::tensor::NamedTensors;
use inferox_torch::tch::{self, Kind, Tensor};
use inferox_torch::{LayerNorm, Result, Weights, set_threads, to_host};

/// One tower's encoder.
struct Encoder {
    layers: Vec<PreNormLayer>,
    activation: Activation,
    heads: i64,
}

impl Encoder {
    fn load(
        w: &Weights,
        prefix: &str,
        count: usize,
        sizes: (usize, usize),
        eps: f64,
        (activation, heads): (Activation, usize),
    ) -> Result<Encoder> {
        let layers = (0..count)
            .map(|i| PreNormLayer::load(w, &format!("{prefix}.layers.{i}"), &LAYER, sizes, eps))
            .collect::<Result<_>>()?;
        Ok(Encoder {
            layers,
            activation,
            heads: heads as i64,
        })
    }

    fn forward(&self, mut x: Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        for layer in &self.layers {
            x = layer.forward(&x, mask, self.heads, self.activation)?;
        }
        Ok(x)
    }
}

/// CLIPModel on libtorch.
pub struct Clip {
    token_embedding: Tensor,
    text_position: Tensor,
    text: Encoder,
    final_norm: LayerNorm,
    text_projection: Tensor,
    patches: PatchEmbeddings,
    pre_norm: LayerNorm,
    vision: Encoder,
    post_norm: LayerNorm,
    visual_projection: Tensor,
    logit_scale: f64,
    eos_token_id: u32,
    vocab_size: usize,
    patch_size: i64,
    kind: Kind,
    device: tch::Device,
}

// SAFETY: `tch::Tensor` is not `Sync` because some of its methods mutate (in-place ops,
// autograd). These weights are written once at load and then only read, by out-of-place ops
// under `no_grad`, which libtorch allows from several threads at once.
unsafe impl Sync for Clip {}

/// The registry's loader for the torch backend.
pub fn load(req: &LoadRequest<'_>) -> inferox_core::Result<Box<dyn Model>> {
    let (cfg, ()) = read_checked_config(req, ClipConfig::checked)?;
    let device = inferox_torch::device(req.options.device)?;
    set_threads(req.options.threads);
    let weights = Weights::open(&req.artifacts(ArtifactRole::Weights)?, req.dtype(), device)?;
    Ok(Box::new(Clip::load(&weights, &cfg, device)?))
}

/// `x` scaled to unit L2 norm along its last dimension.
fn normalize(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_div(
        &x.f_square()?
            .f_sum_dim_intlist(-1, true, None::<Kind>)?
            .f_sqrt()?,
    )?)
}

impl Clip {
    fn load(w: &Weights, cfg: &ClipConfig, device: tch::Device) -> Result<Clip> {
        let (t, v) = (&cfg.text_config, &cfg.vision_config);
        let (th, vh, p) = (t.hidden_size, v.hidden_size, v.patch_size);
        let tokens = v.side() * v.side() + 1;
        let e = "vision_model.embeddings";
        let token_embedding = w.get(
            "text_model.embeddings.token_embedding.weight",
            &[t.vocab_size, th],
        )?;
        Ok(Clip {
            kind: token_embedding.kind(),
            token_embedding,
            text_position: w.get(
                "text_model.embeddings.position_embedding.weight",
                &[t.max_position_embeddings, th],
            )?,
            text: Encoder::load(
                w,
                "text_model.encoder",
                t.num_hidden_layers,
                (th, t.intermediate_size),
                t.layer_norm_eps,
                (t.hidden_act, t.num_attention_heads),
            )?,
            final_norm: w.layer_norm("text_model.final_layer_norm", th, t.layer_norm_eps)?,
            text_projection: w.get("text_projection.weight", &[cfg.projection_dim, th])?,
            patches: PatchEmbeddings::new(
                w.get(
                    &format!("{e}.patch_embedding.weight"),
                    &[vh, v.num_channels, p, p],
                )?,
                None,
                &w.get(&format!("{e}.class_embedding"), &[vh])?,
                &w.get(&format!("{e}.position_embedding.weight"), &[tokens, vh])?,
            )?,
            pre_norm: w.layer_norm("vision_model.pre_layrnorm", vh, v.layer_norm_eps)?,
            vision: Encoder::load(
                w,
                "vision_model.encoder",
                v.num_hidden_layers,
                (vh, v.intermediate_size),
                v.layer_norm_eps,
                (v.hidden_act, v.num_attention_heads),
            )?,
            post_norm: w.layer_norm("vision_model.post_layernorm", vh, v.layer_norm_eps)?,
            visual_projection: w.get("visual_projection.weight", &[cfg.projection_dim, vh])?,
            logit_scale: w.get("logit_scale", &[])?.f_double_value(&[])?.exp(),
            eos_token_id: t.eos_token_id,
            vocab_size: t.vocab_size,
            patch_size: p as i64,
            device,
        })
    }

    fn text_embeds(&self, inputs: &NamedTensors) -> Result<Tensor> {
        let ids = inputs.get("input_ids").expect("checked by the caller");
        let values = ids.as_i64().ok_or_else(|| Error::Input {
            name: "input_ids".into(),
            message: format!("dtype is {}, expected int64", ids.dtype()),
        })?;
        let (texts, seq) = (ids.shape()[0], ids.shape()[1]);
        if let Some(&bad) = values
            .iter()
            .find(|&&i| i < 0 || i as usize >= self.vocab_size)
        {
            return Err(Error::Input {
                name: "input_ids".into(),
                message: format!("holds {bad}, outside 0..{}", self.vocab_size),
            }
            .into());
        }
        let mask = inputs.get("attention_mask").and_then(|m| m.as_i64());
        let index = Tensor::f_from_slice(values)?
            .f_reshape([texts as i64, seq as i64])?
            .f_to_device(self.device)?;
        let x = Tensor::f_embedding(&self.token_embedding, &index, -1, false, false)?
            + self.text_position.narrow(0, 0, seq as i64);
        let bias = Tensor::f_from_slice(&text_attention_bias(mask, texts, seq))?
            .f_reshape([texts as i64, 1, seq as i64, seq as i64])?
            .f_to_device(self.device)?
            .f_to_kind(self.kind)?;
        let x = self
            .final_norm
            .forward(&self.text.forward(x, Some(&bias))?)?;
        let rows: Vec<i64> = pooled_positions(values, seq, self.eos_token_id)
            .iter()
            .enumerate()
            .map(|(b, &p)| (b * seq + p) as i64)
            .collect();
        let rows = Tensor::f_from_slice(&rows)?.f_to_device(self.device)?;
        let pooled = x
            .f_reshape([(texts * seq) as i64, -1])?
            .f_index_select(0, &rows)?;
        normalize(&pooled.f_linear(&self.text_projection, None::<&Tensor>)?)
    }

    fn image_embeds(&self, inputs: &NamedTensors) -> Result<Tensor> {
        let pixels = pixel_tensor(inputs, self.kind, self.device)?;
        let Some(x) = self.patches.forward(&pixels)? else {
            return Err(too_small(&pixels.size(), self.patch_size).into());
        };
        let x = self.vision.forward(self.pre_norm.forward(&x)?, None)?;
        let pooled = self.post_norm.forward(&x.select(1, 0))?;
        normalize(&pooled.f_linear(&self.visual_projection, None::<&Tensor>)?)
    }

    fn outputs(&self, inputs: &NamedTensors) -> Result<NamedTensors> {
        let _guard = tch::no_grad_guard();
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
            let per_text = t.f_matmul(&i.f_transpose(0, 1)?)? * self.logit_scale;
            out.insert("logits_per_image", to_host(&per_text.f_transpose(0, 1)?)?);
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
