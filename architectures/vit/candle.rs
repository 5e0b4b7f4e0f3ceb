//! ViT on candle. Ported from transformers' `modeling_vit.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/vit/modeling_vit.py>).
//! The patch embedding and the pre-norm layers are the shared ones of `common::candle`; hidden
//! states stay `[tokens, hidden]` so every projection is one GEMM.

use super::{Layout, VitConfig};
use crate::common::candle::{
    Dense, LayerNorm, PatchEmbeddings, PreNormLayer, float_device, layer_norm, pixel_tensor,
    too_small,
};
use crate::common::{Activation, read_checked_config};
use candle::{Device, Module};
use candle_nn::VarBuilder;
use inferox_candle::{Result, Weights, candle_core as candle, candle_nn, to_host};
use inferox_core::load::LoadRequest;
use inferox_core::manifest::ArtifactRole;
use inferox_core::model::Model;
use inferox_core::tensor::NamedTensors;

/// A ViT encoder with its optional pooler and classification head.
pub struct Vit {
    embeddings: PatchEmbeddings,
    layers: Vec<PreNormLayer>,
    norm: LayerNorm,
    pooler: Option<Dense>,
    classifier: Option<Dense>,
    activation: Activation,
    heads: usize,
    hidden: usize,
    patch_size: usize,
    dtype: candle::DType,
    device: Device,
}

/// The registry's loader for the candle backend.
pub fn load(req: &LoadRequest<'_>) -> inferox_core::Result<Box<dyn Model>> {
    let (cfg, layout) = read_checked_config(req, VitConfig::checked)?;
    let weights = Weights::open(&req.artifacts(ArtifactRole::Weights)?)?;
    let (device, dtype, _packing) = float_device(req)?;
    let vb = weights.var_builder(dtype, &device);
    let model = Vit::load(vb, &cfg, &layout, device).map_err(|e| weights.explain(e))?;
    Ok(Box::new(model))
}

impl Vit {
    fn load(
        vb: VarBuilder,
        cfg: &VitConfig,
        layout: &Layout,
        device: Device,
    ) -> candle::Result<Self> {
        let base = match layout.prefix.strip_suffix('.') {
            Some(prefix) => vb.pp(prefix),
            None => vb.clone(),
        };
        let (h, p, c) = (cfg.hidden_size, cfg.patch_size, cfg.num_channels);
        let emb = base.pp("embeddings");
        let projection = emb.pp("patch_embeddings.projection");
        let embeddings = PatchEmbeddings::new(
            &projection.get((h, c, p, p), "weight")?,
            Some(projection.get(h, "bias")?),
            &emb.get((1, 1, h), "cls_token")?,
            &emb.get((1, cfg.tokens(), h), "position_embeddings")?
                .reshape((cfg.tokens(), h))?,
        )?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let vb = base.pp(format!("encoder.layer.{i}"));
                let sizes = (h, cfg.intermediate_size);
                PreNormLayer::load(vb, &super::LAYER, sizes, cfg.layer_norm_eps)
            })
            .collect::<candle::Result<Vec<_>>>()?;
        let pooler = match layout.pooler {
            true => Some(Dense::load(
                base.pp("pooler.dense"),
                h,
                cfg.pooler_output_size.unwrap_or(h),
            )?),
            false => None,
        };
        let classifier = match layout.num_labels {
            Some(n) => Some(Dense::load(vb.pp("classifier"), h, n)?),
            None => None,
        };
        Ok(Vit {
            embeddings,
            layers,
            norm: layer_norm(base.pp("layernorm"), h, cfg.layer_norm_eps)?,
            pooler,
            classifier,
            activation: cfg.hidden_act,
            heads: cfg.num_attention_heads,
            hidden: h,
            patch_size: p,
            dtype: vb.dtype(),
            device,
        })
    }

    fn outputs(&self, inputs: &NamedTensors) -> Result<NamedTensors> {
        let (x, batch) = pixel_tensor(inputs, self.dtype, &self.device)?;
        let Some((mut x, seq)) = self.embeddings.forward(&x)? else {
            return Err(too_small(x.dims(), self.patch_size).into());
        };
        for layer in &self.layers {
            x = layer.forward(&x, None, (batch, seq), self.heads, self.activation)?;
        }
        let hidden = self.norm.forward(&x)?.reshape((batch, seq, self.hidden))?;
        let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        let mut out = NamedTensors::new();
        out.insert("last_hidden_state", to_host(&hidden)?);
        if let Some(pooler) = &self.pooler {
            out.insert("pooler_output", to_host(&pooler.forward(&first)?.tanh()?)?);
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
