//! ViT on libtorch, from the same config.json and safetensors files as the candle backend.
//! Ported from transformers' `modeling_vit.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/vit/modeling_vit.py>):
//! the patch embedding is the strided convolution, attention goes through
//! `scaled_dot_product_attention`, and position embeddings are resized with
//! `upsample_bicubic2d` as `interpolate_pos_encoding` does.

use super::{Layout, VitConfig};
use crate::common::Activation;
use crate::common::torch::{activate, fused_qkv, self_attention};
use inferox_core::Error;
use inferox_core::load::LoadRequest;
use inferox_core::manifest::ArtifactRole;
use inferox_core::model::Model;
use inferox_core::tensor::NamedTensors;
use inferox_torch::tch::{self, Kind, Tensor};
use inferox_torch::{LayerNorm, Linear, Result, Weights, set_threads, to_host, to_tensor};

struct Layer {
    norm_before: LayerNorm,
    qkv: Linear,
    attention_out: Linear,
    norm_after: LayerNorm,
    intermediate: Linear,
    output: Linear,
}

/// A ViT encoder on libtorch with its optional pooler and classification head.
pub struct Vit {
    patch_weight: Tensor,
    patch_bias: Tensor,
    cls: Tensor,
    position: Tensor,
    layers: Vec<Layer>,
    norm: LayerNorm,
    pooler: Option<Linear>,
    classifier: Option<Linear>,
    activation: Activation,
    heads: i64,
    patch_size: i64,
    side: i64,
    kind: Kind,
    device: tch::Device,
}

/// The registry's loader for the torch backend.
pub fn load(req: &LoadRequest<'_>) -> inferox_core::Result<Box<dyn Model>> {
    let config = req.artifacts(ArtifactRole::Config)?.remove(0);
    let cfg: VitConfig = inferox_core::files::read_config(&config)?;
    let index = inferox_core::weights::WeightIndex::read(&req.artifacts(ArtifactRole::Weights)?)?;
    let check = crate::common::ConfigCheck {
        path: config.path(),
        weights: &index,
    };
    cfg.check().map_err(|m| check.error(m))?;
    let layout = Layout::detect(
        |n| index.contains(n),
        |n| index.tensors.get(n).map(|t| t.shape.clone()),
    );
    cfg.check_weights(&check, &layout.prefix)?;
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
                Ok(Layer {
                    norm_before: w.layer_norm(&format!("{l}.layernorm_before"), h, eps)?,
                    qkv: fused_qkv(
                        w,
                        &format!("{l}.attention.attention"),
                        ["query", "key", "value"],
                        h,
                    )?,
                    attention_out: w.linear(&format!("{l}.attention.output.dense"), h, h)?,
                    norm_after: w.layer_norm(&format!("{l}.layernorm_after"), h, eps)?,
                    intermediate: w.linear(
                        &format!("{l}.intermediate.dense"),
                        h,
                        cfg.intermediate_size,
                    )?,
                    output: w.linear(&format!("{l}.output.dense"), cfg.intermediate_size, h)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let e = format!("{p}embeddings");
        let (c, ps) = (cfg.num_channels, cfg.patch_size);
        let cls = w.get(&format!("{e}.cls_token"), &[1, 1, h])?;
        Ok(Vit {
            patch_weight: w.get(
                &format!("{e}.patch_embeddings.projection.weight"),
                &[h, c, ps, ps],
            )?,
            patch_bias: w.get(&format!("{e}.patch_embeddings.projection.bias"), &[h])?,
            position: w.get(&format!("{e}.position_embeddings"), &[1, cfg.tokens(), h])?,
            kind: cls.kind(),
            cls,
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
            side: cfg.patches_per_side() as i64,
            device,
        })
    }

    /// Position embeddings for a grid of `nh × nw` patches (`[1, 1 + nh·nw, hidden]`).
    fn positions(&self, nh: i64, nw: i64, square: bool) -> Result<Tensor> {
        if nh * nw == self.side * self.side && square {
            return Ok(self.position.shallow_clone());
        }
        let hidden = self.position.size()[2];
        let cls = self.position.narrow(1, 0, 1);
        let grid = self
            .position
            .narrow(1, 1, self.side * self.side)
            .f_reshape([1, self.side, self.side, hidden])?
            .f_permute([0, 3, 1, 2])?
            .f_upsample_bicubic2d([nh, nw], false, None::<f64>, None::<f64>)?
            .f_permute([0, 2, 3, 1])?
            .f_reshape([1, nh * nw, hidden])?;
        Ok(Tensor::f_cat(&[cls, grid], 1)?)
    }

    fn outputs(&self, inputs: &NamedTensors) -> Result<NamedTensors> {
        let _guard = tch::no_grad_guard();
        let pixels = inputs.get("pixel_values").ok_or_else(|| Error::Input {
            name: "pixel_values".into(),
            message: "missing (it is required)".into(),
        })?;
        let x = to_tensor(pixels, self.device)?.f_to_kind(self.kind)?;
        let (batch, _, height, width) = x.size4()?;
        let (nh, nw) = (height / self.patch_size, width / self.patch_size);
        if nh == 0 || nw == 0 {
            let p = self.patch_size;
            return Err(Error::Input {
                name: "pixel_values".into(),
                message: format!("{height}×{width} is smaller than one {p}×{p} patch"),
            }
            .into());
        }
        let patches = x
            .f_conv2d(
                &self.patch_weight,
                Some(&self.patch_bias),
                [self.patch_size, self.patch_size],
                [0, 0],
                [1, 1],
                1,
            )?
            .f_flatten(2, 3)?
            .f_transpose(1, 2)?;
        let cls = self.cls.f_expand([batch, -1, -1], false)?;
        let mut x = Tensor::f_cat(&[cls, patches], 1)? + self.positions(nh, nw, height == width)?;
        for layer in &self.layers {
            let attn = self_attention(
                &layer.qkv,
                &layer.norm_before.forward(&x)?,
                None,
                self.heads,
            )?;
            x = layer.attention_out.forward(&attn)? + x;
            let inter = activate(
                self.activation,
                &layer.intermediate.forward(&layer.norm_after.forward(&x)?)?,
            )?;
            x = layer.output.forward(&inter)? + x;
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
    fn forward(&mut self, inputs: &NamedTensors) -> inferox_core::Result<NamedTensors> {
        self.outputs(inputs).map_err(Into::into)
    }
}
