//! ViT on candle. Ported from transformers' `modeling_vit.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/vit/modeling_vit.py>).
//! The patch embedding (a convolution whose stride is its kernel) is one matrix multiply over
//! the unfolded patches; hidden states stay `[tokens, hidden]` so every projection is one GEMM.

use super::{Layout, VitConfig};
use crate::common::Activation;
use crate::common::candle::{Dense, fused_qkv, layer_norm, self_attention};
use candle::{Device, Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};
use inferox_candle::{Result, Weights, candle_core as candle, candle_nn, to_host};
use inferox_core::Error;
use inferox_core::load::LoadRequest;
use inferox_core::manifest::ArtifactRole;
use inferox_core::model::Model;
use inferox_core::tensor::NamedTensors;

struct Layer {
    norm_before: LayerNorm,
    qkv: Dense,
    attention_out: Dense,
    norm_after: LayerNorm,
    intermediate: Dense,
    output: Dense,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &VitConfig) -> candle::Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let attn = vb.pp("attention");
        Ok(Layer {
            norm_before: layer_norm(vb.pp("layernorm_before"), h, eps)?,
            qkv: fused_qkv(&attn.pp("attention"), ["query", "key", "value"], h)?,
            attention_out: Dense::load(attn.pp("output.dense"), h, h)?,
            norm_after: layer_norm(vb.pp("layernorm_after"), h, eps)?,
            intermediate: Dense::load(vb.pp("intermediate.dense"), h, cfg.intermediate_size)?,
            output: Dense::load(vb.pp("output.dense"), cfg.intermediate_size, h)?,
        })
    }
}

/// A ViT encoder with its optional pooler and classification head.
pub struct Vit {
    /// The patch projection as `[channels × patch × patch, hidden]`.
    patch: Dense,
    cls: Tensor,
    /// Class-token position embedding, `[1, hidden]`.
    cls_position: Tensor,
    /// Patch position embeddings, `[side², hidden]`, and on the host for interpolation.
    position: Tensor,
    position_host: Vec<f32>,
    layers: Vec<Layer>,
    norm: LayerNorm,
    pooler: Option<Dense>,
    classifier: Option<Dense>,
    activation: Activation,
    heads: usize,
    hidden: usize,
    patch_size: usize,
    /// Patches along a side of the image the position table was trained for.
    side: usize,
    device: Device,
}

/// The registry's loader for the candle backend.
pub fn load(req: &LoadRequest<'_>) -> inferox_core::Result<Box<dyn Model>> {
    let config = req.artifacts(ArtifactRole::Config)?.remove(0);
    let cfg: VitConfig = inferox_core::files::read_config(&config)?;
    let weights = Weights::open(&req.artifacts(ArtifactRole::Weights)?)?;
    let check = crate::common::ConfigCheck {
        path: config.path(),
        weights: weights.index(),
    };
    cfg.check().map_err(|m| check.error(m))?;
    let layout = Layout::detect(
        |n| weights.contains(n),
        |n| weights.shape(n).map(<[usize]>::to_vec),
    );
    cfg.check_weights(&check, &layout.prefix)?;
    let device = inferox_candle::device(req.options.device)?;
    let dtype = inferox_candle::dtype(req.dtype())?;
    if !dtype.is_float() {
        return Err(Error::InvalidArgument(format!(
            "compute dtype must be floating point, not {}",
            req.dtype()
        )));
    }
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
        let weight = projection
            .get((h, c, p, p), "weight")?
            .reshape((h, c * p * p))?;
        let patch = Dense::new(&weight, Some(projection.get(h, "bias")?))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(base.pp(format!("encoder.layer.{i}")), cfg))
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
        let position = emb
            .get((1, cfg.tokens(), h), "position_embeddings")?
            .reshape((cfg.tokens(), h))?;
        let patches = cfg.tokens() - 1;
        let position_host = position
            .narrow(0, 1, patches)?
            .to_dtype(candle::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Vit {
            patch,
            cls: emb.get((1, 1, h), "cls_token")?.reshape((1, h))?,
            cls_position: position.narrow(0, 0, 1)?,
            position: position.narrow(0, 1, patches)?,
            position_host,
            side: cfg.patches_per_side(),
            layers,
            norm: layer_norm(base.pp("layernorm"), h, cfg.layer_norm_eps)?,
            pooler,
            classifier,
            activation: cfg.hidden_act,
            heads: cfg.num_attention_heads,
            hidden: h,
            patch_size: p,
            device,
        })
    }

    /// Patch tokens with the class token in front and positions added:
    /// `[batch × tokens, hidden]`, and the token count. Images of another size than the
    /// model's get position embeddings interpolated as transformers' `interpolate_pos_encoding`
    /// does.
    fn embed(&self, pixels: &Tensor) -> Result<(Tensor, usize)> {
        let (batch, c, height, width) = pixels.dims4()?;
        let p = self.patch_size;
        let (nh, nw) = (height / p, width / p);
        if nh == 0 || nw == 0 {
            return Err(Error::Input {
                name: "pixel_values".into(),
                message: format!("{height}×{width} is smaller than one {p}×{p} patch"),
            }
            .into());
        }
        // The convolution's window (c, p, p) for each patch, rows in raster order; pixels
        // beyond the last whole patch are dropped, as the strided convolution drops them.
        let patches = pixels
            .narrow(2, 0, nh * p)?
            .narrow(3, 0, nw * p)?
            .reshape((batch, c, nh, p, nw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((batch * nh * nw, c * p * p))?;
        let tokens = self
            .patch
            .forward(&patches)?
            .reshape((batch, nh * nw, self.hidden))?;
        let position = if nh * nw == self.side * self.side && height == width {
            self.position.clone()
        } else {
            let table =
                super::interpolate_positions(&self.position_host, self.side, self.hidden, nh, nw);
            Tensor::from_vec(table, (nh * nw, self.hidden), &self.device)?
                .to_dtype(self.position.dtype())?
        };
        let position = Tensor::cat(&[&self.cls_position, &position], 0)?;
        let cls = self.cls.unsqueeze(0)?.repeat((batch, 1, 1))?;
        let seq = nh * nw + 1;
        let x = Tensor::cat(&[cls, tokens], 1)?
            .broadcast_add(&position)?
            .reshape((batch * seq, self.hidden))?;
        Ok((x, seq))
    }

    fn layer(&self, layer: &Layer, x: &Tensor, batch: usize, seq: usize) -> candle::Result<Tensor> {
        let normed = layer.norm_before.forward(x)?;
        let attn = self_attention(&layer.qkv, &normed, None, (batch, seq), self.heads)?;
        let x = (layer.attention_out.forward(&attn)? + x)?;
        let normed = layer.norm_after.forward(&x)?;
        let inter = self
            .activation
            .apply(&layer.intermediate.forward(&normed)?)?;
        layer.output.forward(&inter)? + x
    }

    fn outputs(&self, inputs: &NamedTensors) -> Result<NamedTensors> {
        let pixels = inputs.get("pixel_values").ok_or_else(|| Error::Input {
            name: "pixel_values".into(),
            message: "missing (it is required)".into(),
        })?;
        let shape = pixels.shape().to_vec();
        let values = pixels.as_f32().ok_or_else(|| Error::Input {
            name: "pixel_values".into(),
            message: format!("dtype is {}, expected float32", pixels.dtype()),
        })?;
        let batch = shape[0];
        let dtype = self.cls.dtype();
        let x = Tensor::from_slice(values, shape.as_slice(), &self.device)?.to_dtype(dtype)?;
        let (mut x, seq) = self.embed(&x)?;
        for layer in &self.layers {
            x = self.layer(layer, &x, batch, seq)?;
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
    fn forward(&mut self, inputs: &NamedTensors) -> inferox_core::Result<NamedTensors> {
        self.outputs(inputs).map_err(Into::into)
    }
}
