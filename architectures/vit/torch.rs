//! ViT on libtorch, from the same config.json and safetensors files as the candle backend.
//! Ported from transformers' `modeling_vit.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/vit/modeling_vit.py>):
//! the patch embedding is the strided convolution, attention goes through
//! `scaled_dot_product_attention`, and position embeddings are resized with
//! `upsample_bicubic2d` as `interpolate_pos_encoding` does.

use super::{Layout, VitConfig};
use crate::common::torch::{PatchEmbeddings, PreNormLayer, pixel_tensor, too_small};
use crate::common::{Activation, read_checked_config};
use inferox_core::load::LoadRequest;
use inferox_core::manifest::ArtifactRole;
use inferox_core::model::Model;
use inferox_core::tensor::NamedTensors;
use inferox_torch::tch;
use inferox_torch::{LayerNorm, Linear, Result, Weights, set_threads, to_host};

/// A ViT encoder on libtorch with its optional pooler and classification head.
pub struct Vit {
    embeddings: PatchEmbeddings,
    layers: Vec<PreNormLayer>,
    norm: LayerNorm,
    pooler: Option<Linear>,
    classifier: Option<Linear>,
    activation: Activation,
    heads: i64,
    patch_size: i64,
    device: tch::Device,
}

// SAFETY: `tch::Tensor` is not `Sync` because some of its methods mutate (in-place ops,
// autograd). These weights are written once at load and then only read, by out-of-place ops
// under `no_grad`, which libtorch allows from several threads at once.
unsafe impl Sync for Vit {}

/// The registry's loader for the torch backend.
pub fn load(req: &LoadRequest<'_>) -> inferox_core::Result<Box<dyn Model>> {
    let (cfg, layout) = read_checked_config(req, VitConfig::checked)?;
    let device = inferox_torch::device(req.options.device)?;
    set_threads(req.options.threads);
    let weights = Weights::open(&req.artifacts(ArtifactRole::Weights)?, req.dtype(), device)?;
    Ok(Box::new(Vit::load(&weights, &cfg, &layout, device)?))
}

impl Vit {
    fn load(w: &Weights, cfg: &VitConfig, layout: &Layout, device: tch::Device) -> Result<Vit> {
        let p = &layout.prefix;
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = format!("{p}encoder.layer.{i}");
                PreNormLayer::load(w, &l, &super::LAYER, (h, cfg.intermediate_size), eps)
            })
            .collect::<Result<Vec<_>>>()?;
        let e = format!("{p}embeddings");
        let (c, ps) = (cfg.num_channels, cfg.patch_size);
        Ok(Vit {
            embeddings: PatchEmbeddings::new(
                w.get(
                    &format!("{e}.patch_embeddings.projection.weight"),
                    &[h, c, ps, ps],
                )?,
                Some(w.get(&format!("{e}.patch_embeddings.projection.bias"), &[h])?),
                &w.get(&format!("{e}.cls_token"), &[1, 1, h])?,
                &w.get(&format!("{e}.position_embeddings"), &[1, cfg.tokens(), h])?
                    .f_reshape([cfg.tokens() as i64, h as i64])?,
            )?,
            layers,
            norm: w.layer_norm(&format!("{p}layernorm"), h, eps)?,
            pooler: layout
                .pooler
                .then(|| {
                    w.linear(
                        &format!("{p}pooler.dense"),
                        h,
                        cfg.pooler_output_size.unwrap_or(h),
                    )
                })
                .transpose()?,
            classifier: layout
                .num_labels
                .map(|n| w.linear("classifier", h, n))
                .transpose()?,
            activation: cfg.hidden_act,
            heads: cfg.num_attention_heads as i64,
            patch_size: ps as i64,
            device,
        })
    }

    fn outputs(&self, inputs: &NamedTensors) -> Result<NamedTensors> {
        let _guard = tch::no_grad_guard();
        let pixels = pixel_tensor(inputs, self.embeddings.kind(), self.device)?;
        let Some(mut x) = self.embeddings.forward(&pixels)? else {
            return Err(too_small(&pixels.size(), self.patch_size).into());
        };
        for layer in &self.layers {
            x = layer.forward(&x, None, self.heads, self.activation)?;
        }
        let hidden = self.norm.forward(&x)?;
        let first = hidden.select(1, 0);
        let mut out = NamedTensors::new();
        out.insert("last_hidden_state", to_host(&hidden)?);
        if let Some(pooler) = &self.pooler {
            out.insert(
                "pooler_output",
                to_host(&pooler.forward(&first)?.f_tanh()?)?,
            );
        }
        if let Some(classifier) = &self.classifier {
            out.insert("logits", to_host(&classifier.forward(&first)?)?);
        }
        Ok(out)
    }
}

impl Model for Vit {
    fn forward(&self, inputs: &NamedTensors) -> inferox_core::Result<NamedTensors> {
        self.outputs(inputs).map_err(Into::into)
    }
}
