//! The BERT family on libtorch, from the same config.json and safetensors files as the candle
//! backend. Ported from transformers' `modeling_bert.py` / `modeling_roberta.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/bert/modeling_bert.py>);
//! attention goes through `scaled_dot_product_attention`, as transformers' `sdpa` path does.
//! A package whose torch artifact is TorchScript runs through [`inferox_torch::script`].
//! Errors inside are the backend's ([`inferox_torch::Result`]); the registry loader and
//! [`Model::forward`] convert them once.

use super::{Batch, BertConfig, Flavor, Layout};
use crate::common::Activation;
use crate::common::torch::{activate, fused_qkv, self_attention};
use inferox_core::load::LoadRequest;
use inferox_core::manifest::{ArtifactRole, ExecutionFormat};
use inferox_core::model::Model;
use inferox_core::tensor::NamedTensors;
use inferox_torch::tch::{self, Kind, Tensor};
use inferox_torch::{LayerNorm, Linear, Result, Weights, set_threads, to_host};

struct Layer {
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

enum Classifier {
    Bert(Linear),
    Roberta { dense: Linear, out_proj: Linear },
}

/// A BERT-family encoder on libtorch.
pub struct Bert {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    pooler: Option<Linear>,
    classifier: Option<Classifier>,
    activation: Activation,
    flavor: Flavor,
    heads: i64,
    vocab_size: usize,
    type_vocab_size: usize,
    pad_id: i64,
    compute: inferox_core::tensor::DType,
    kind: Kind,
    device: tch::Device,
}

// SAFETY: `tch::Tensor` is not `Sync` because some of its methods mutate (in-place ops,
// autograd). These weights are written once at load and then only read, by out-of-place ops
// under `no_grad`, which libtorch allows from several threads at once.
unsafe impl Sync for Bert {}

/// The registry's loader for the torch backend: safetensors weights, or a TorchScript module.
pub fn load(req: &LoadRequest<'_>) -> inferox_core::Result<Box<dyn Model>> {
    if req.artifacts.format == ExecutionFormat::Torchscript {
        return inferox_torch::script::load(req);
    }
    let cfg = BertConfig::load(req)?;
    let device = inferox_torch::device(req.options.device)?;
    set_threads(req.options.threads);
    let weights = Weights::open(&req.artifacts(ArtifactRole::Weights)?, req.dtype(), device)?;
    let layout = Layout::detect(
        &cfg,
        |n| weights.contains(n),
        |n| weights.shape(n).map(<[usize]>::to_vec),
    );
    Ok(Box::new(Bert::load(
        &weights,
        &cfg,
        &layout,
        device,
        req.dtype(),
    )?))
}

impl Bert {
    fn load(
        w: &Weights,
        cfg: &BertConfig,
        layout: &Layout,
        device: tch::Device,
        compute: inferox_core::tensor::DType,
    ) -> Result<Bert> {
        let p = &layout.prefix;
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = format!("{p}encoder.layer.{i}");
                Ok(Layer {
                    qkv: fused_qkv(
                        w,
                        &format!("{l}.attention.self"),
                        ["query", "key", "value"],
                        h,
                    )?,
                    attention_out: w.linear(&format!("{l}.attention.output.dense"), h, h)?,
                    attention_norm: w.layer_norm(
                        &format!("{l}.attention.output.LayerNorm"),
                        h,
                        eps,
                    )?,
                    intermediate: w.linear(
                        &format!("{l}.intermediate.dense"),
                        h,
                        cfg.intermediate_size,
                    )?,
                    output: w.linear(&format!("{l}.output.dense"), cfg.intermediate_size, h)?,
                    output_norm: w.layer_norm(&format!("{l}.output.LayerNorm"), h, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let pooler = layout
            .pooler
            .then(|| w.linear(&format!("{p}pooler.dense"), h, h))
            .transpose()?;
        let classifier = match (layout.num_labels, cfg.flavor()) {
            (Some(n), Flavor::Bert) => Some(Classifier::Bert(w.linear("classifier", h, n)?)),
            (Some(n), Flavor::Roberta) => Some(Classifier::Roberta {
                dense: w.linear("classifier.dense", h, h)?,
                out_proj: w.linear("classifier.out_proj", h, n)?,
            }),
            (None, _) => None,
        };
        let e = format!("{p}embeddings");
        let word = w.get(&format!("{e}.word_embeddings.weight"), &[cfg.vocab_size, h])?;
        Ok(Bert {
            kind: word.kind(),
            word,
            position: w.get(
                &format!("{e}.position_embeddings.weight"),
                &[cfg.max_position_embeddings, h],
            )?,
            token_type: w.get(
                &format!("{e}.token_type_embeddings.weight"),
                &[cfg.type_vocab_size, h],
            )?,
            embedding_norm: w.layer_norm(&format!("{e}.LayerNorm"), h, eps)?,
            layers,
            pooler,
            classifier,
            activation: cfg.hidden_act,
            flavor: cfg.flavor(),
            heads: cfg.num_attention_heads as i64,
            vocab_size: cfg.vocab_size,
            type_vocab_size: cfg.type_vocab_size,
            pad_id: cfg.pad_id() as i64,
            compute,
            device,
        })
    }

    fn ids(&self, values: &[i64], b: &Batch<'_>) -> Result<Tensor> {
        Ok(Tensor::f_from_slice(values)?
            .f_reshape([b.batch as i64, b.seq as i64])?
            .f_to_device(self.device)?)
    }

    /// The additive mask as `[batch, 1, 1, seq]`, or `None` when nothing is masked.
    fn attention_mask(&self, b: &Batch<'_>) -> Result<Option<Tensor>> {
        let Some(bias) = b.additive_mask(self.compute) else {
            return Ok(None);
        };
        let mask = Tensor::f_from_slice(&bias)?
            .f_reshape([b.batch as i64, 1, 1, b.seq as i64])?
            .f_to_device(self.device)?
            .f_to_kind(self.kind)?;
        Ok(Some(mask))
    }

    fn layer(&self, layer: &Layer, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let attn = self_attention(&layer.qkv, x, mask, self.heads)?;
        let attn = layer.attention_out.forward(&attn)?;
        let x = layer.attention_norm.forward(&(attn + x))?;
        let inter = activate(self.activation, &layer.intermediate.forward(&x)?)?;
        let out = layer.output.forward(&inter)?;
        layer.output_norm.forward(&(out + x))
    }

    /// The model's outputs for `inputs`.
    fn outputs(&self, inputs: &NamedTensors) -> Result<NamedTensors> {
        let _guard = tch::no_grad_guard();
        let b = Batch::read(inputs, self.vocab_size, self.type_vocab_size)?;
        let ids = self.ids(b.ids, &b)?;
        let mut x = Tensor::f_embedding(&self.word, &ids, -1, false, false)?;
        x = match b.type_ids {
            Some(tt) => {
                let tt = self.ids(tt, &b)?;
                x + Tensor::f_embedding(&self.token_type, &tt, -1, false, false)?
            }
            None => x + self.token_type.get(0),
        };
        x = match self.flavor {
            Flavor::Bert => x + self.position.narrow(0, 0, b.seq as i64),
            Flavor::Roberta => {
                let pos = self.ids(&b.roberta_positions(self.pad_id), &b)?;
                x + Tensor::f_embedding(&self.position, &pos, -1, false, false)?
            }
        };
        let mut x = self.embedding_norm.forward(&x)?;
        let mask = self.attention_mask(&b)?;
        for layer in &self.layers {
            x = self.layer(layer, &x, mask.as_ref())?;
        }
        let mut out = NamedTensors::new();
        let first = x.select(1, 0);
        out.insert("last_hidden_state", to_host(&x)?);
        let pooled = match &self.pooler {
            Some(p) => {
                let pooled = p.forward(&first)?.f_tanh()?;
                out.insert("pooler_output", to_host(&pooled)?);
                Some(pooled)
            }
            None => None,
        };
        let logits = match (&self.classifier, pooled) {
            (Some(Classifier::Bert(linear)), Some(pooled)) => Some(linear.forward(&pooled)?),
            (Some(Classifier::Roberta { dense, out_proj }), _) => {
                Some(out_proj.forward(&dense.forward(&first)?.f_tanh()?)?)
            }
            _ => None,
        };
        if let Some(logits) = logits {
            out.insert("logits", to_host(&logits)?);
        }
        Ok(out)
    }
}

impl Model for Bert {
    fn forward(&self, inputs: &NamedTensors) -> inferox_core::Result<NamedTensors> {
        self.outputs(inputs).map_err(Into::into)
    }
}
