//! The BERT family on candle. Ported from transformers' `modeling_bert.py` / `modeling_roberta.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/bert/modeling_bert.py>).
//! Query, key and value projections are fused into one matrix multiply; hidden states stay
//! `[tokens, hidden]` so every projection is a single GEMM. Errors inside are the backend's
//! ([`inferox_candle::Result`]); the registry loader and [`Model::forward`] convert them once.

use super::{Batch, BertConfig, Flavor, Layout};
use crate::common::Activation;
use crate::common::candle::{
    Dense, LayerNorm, float_device, fused_qkv, layer_norm, self_attention,
};
use candle::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use inferox_candle::{Result, Weights, candle_core as candle, candle_nn, to_host};
use inferox_core::load::LoadRequest;
use inferox_core::manifest::ArtifactRole;
use inferox_core::model::Model;
use inferox_core::tensor::NamedTensors;

fn linear(vb: VarBuilder, input: usize, output: usize) -> candle::Result<Dense> {
    Dense::load(vb, input, output)
}

struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
}

impl Embeddings {
    fn load(vb: VarBuilder, cfg: &BertConfig) -> candle::Result<Self> {
        let h = cfg.hidden_size;
        Ok(Embeddings {
            word: vb.get((cfg.vocab_size, h), "word_embeddings.weight")?,
            position: vb.get(
                (cfg.max_position_embeddings, h),
                "position_embeddings.weight",
            )?,
            token_type: vb.get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?,
            norm: layer_norm(vb.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
        })
    }
}

struct Layer {
    qkv: Dense,
    attention_out: Dense,
    attention_norm: LayerNorm,
    intermediate: Dense,
    output: Dense,
    output_norm: LayerNorm,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &BertConfig) -> candle::Result<Self> {
        let h = cfg.hidden_size;
        let attn = vb.pp("attention");
        Ok(Layer {
            qkv: fused_qkv(&attn.pp("self"), ["query", "key", "value"], h)?,
            attention_out: linear(attn.pp("output.dense"), h, h)?,
            attention_norm: layer_norm(attn.pp("output.LayerNorm"), h, cfg.layer_norm_eps)?,
            intermediate: linear(vb.pp("intermediate.dense"), h, cfg.intermediate_size)?,
            output: linear(vb.pp("output.dense"), cfg.intermediate_size, h)?,
            output_norm: layer_norm(vb.pp("output.LayerNorm"), h, cfg.layer_norm_eps)?,
        })
    }
}

enum Classifier {
    /// BERT: a linear layer on the pooler output.
    Bert(Dense),
    /// RoBERTa: dense + tanh + projection on the first token.
    Roberta { dense: Dense, out_proj: Dense },
}

/// A BERT-family encoder with its optional pooler and classification head.
pub struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: Option<Dense>,
    classifier: Option<Classifier>,
    activation: Activation,
    flavor: Flavor,
    heads: usize,
    hidden: usize,
    vocab_size: usize,
    type_vocab_size: usize,
    pad_id: i64,
    dtype: DType,
    device: Device,
}

/// The registry's loader for the candle backend.
pub fn load(req: &LoadRequest<'_>) -> inferox_core::Result<Box<dyn Model>> {
    let cfg = BertConfig::load(req)?;
    let weights = Weights::open(&req.artifacts(ArtifactRole::Weights)?)?;
    let (device, dtype, _packing) = float_device(req)?;
    let layout = Layout::detect(
        &cfg,
        |n| weights.contains(n),
        |n| weights.shape(n).map(<[usize]>::to_vec),
    );
    let vb = weights.var_builder(dtype, &device);
    let model = Bert::load(vb, &cfg, &layout, device).map_err(|e| weights.explain(e))?;
    Ok(Box::new(model))
}

impl Bert {
    fn load(
        vb: VarBuilder,
        cfg: &BertConfig,
        layout: &Layout,
        device: Device,
    ) -> candle::Result<Self> {
        let base = match layout.prefix.strip_suffix('.') {
            Some(prefix) => vb.pp(prefix),
            None => vb.clone(),
        };
        let h = cfg.hidden_size;
        let embeddings = Embeddings::load(base.pp("embeddings"), cfg)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(base.pp(format!("encoder.layer.{i}")), cfg))
            .collect::<candle::Result<Vec<_>>>()?;
        let pooler = if layout.pooler {
            Some(linear(base.pp("pooler.dense"), h, h)?)
        } else {
            None
        };
        let classifier = match (layout.num_labels, cfg.flavor()) {
            (Some(n), Flavor::Bert) => Some(Classifier::Bert(linear(vb.pp("classifier"), h, n)?)),
            (Some(n), Flavor::Roberta) => Some(Classifier::Roberta {
                dense: linear(vb.pp("classifier.dense"), h, h)?,
                out_proj: linear(vb.pp("classifier.out_proj"), h, n)?,
            }),
            (None, _) => None,
        };
        Ok(Bert {
            embeddings,
            layers,
            pooler,
            classifier,
            activation: cfg.hidden_act,
            flavor: cfg.flavor(),
            heads: cfg.num_attention_heads,
            hidden: h,
            vocab_size: cfg.vocab_size,
            type_vocab_size: cfg.type_vocab_size,
            pad_id: cfg.pad_id() as i64,
            dtype: vb.dtype(),
            device,
        })
    }

    /// Checked ids as a u32 tensor for `index_select`.
    fn indices(&self, ids: &[i64]) -> Result<Tensor> {
        let v: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        Ok(Tensor::from_vec(v, ids.len(), &self.device)?)
    }

    /// The additive attention mask `[batch, 1, 1, seq]`, or `None` when nothing is masked.
    fn attention_bias(&self, b: &Batch<'_>) -> Result<Option<Tensor>> {
        let compute = match self.dtype {
            DType::F16 => inferox_core::tensor::DType::Float16,
            DType::BF16 => inferox_core::tensor::DType::BFloat16,
            _ => inferox_core::tensor::DType::Float32,
        };
        let Some(bias) = b.additive_mask(compute) else {
            return Ok(None);
        };
        let bias = Tensor::from_vec(bias, (b.batch, 1, 1, b.seq), &self.device)?;
        Ok(Some(bias.to_dtype(self.dtype)?))
    }

    fn encode(&self, inputs: &NamedTensors) -> Result<(Tensor, usize, usize)> {
        let b = Batch::read(inputs, self.vocab_size, self.type_vocab_size)?;
        let (batch, seq) = (b.batch, b.seq);
        let emb = &self.embeddings;
        let n = batch * seq;
        let mut x = emb.word.index_select(&self.indices(b.ids)?, 0)?;
        x = match b.type_ids {
            Some(tt) => {
                let tt = self.indices(tt)?;
                (x + emb.token_type.index_select(&tt, 0)?)?
            }
            None => x.broadcast_add(&emb.token_type.get(0)?)?,
        };
        x = match self.flavor {
            Flavor::Bert => {
                let pos = emb.position.narrow(0, 0, seq)?;
                x.reshape((batch, seq, self.hidden))?
                    .broadcast_add(&pos)?
                    .reshape((n, self.hidden))?
            }
            Flavor::Roberta => {
                let pos = self.indices(&b.roberta_positions(self.pad_id))?;
                (x + emb.position.index_select(&pos, 0)?)?
            }
        };
        let mut x = emb.norm.forward(&x)?;
        let bias = self.attention_bias(&b)?;
        for layer in &self.layers {
            x = self.layer(layer, &x, bias.as_ref(), batch, seq)?;
        }
        Ok((x, batch, seq))
    }

    fn layer(
        &self,
        layer: &Layer,
        x: &Tensor,
        bias: Option<&Tensor>,
        batch: usize,
        seq: usize,
    ) -> candle::Result<Tensor> {
        let attn = self_attention(&layer.qkv, x, bias, (batch, seq), self.heads)?;
        let x = layer
            .attention_out
            .forward_residual_norm(&attn, x, &layer.attention_norm)?;
        let inter = layer.intermediate.forward_activated(&x, self.activation)?;
        layer
            .output
            .forward_residual_norm(&inter, &x, &layer.output_norm)
    }

    /// The model's outputs for `inputs`.
    fn outputs(&self, inputs: &NamedTensors) -> Result<NamedTensors> {
        let (x, batch, seq) = self.encode(inputs)?;
        let mut out = NamedTensors::new();
        let hidden = x.reshape((batch, seq, self.hidden))?;
        let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        out.insert("last_hidden_state", to_host(&hidden)?);
        let pooled = match &self.pooler {
            Some(p) => {
                let pooled = p.forward(&first)?.tanh()?;
                out.insert("pooler_output", to_host(&pooled)?);
                Some(pooled)
            }
            None => None,
        };
        let logits = match (&self.classifier, pooled) {
            (Some(Classifier::Bert(linear)), Some(pooled)) => Some(linear.forward(&pooled)),
            (Some(Classifier::Roberta { dense, out_proj }), _) => Some(
                dense
                    .forward(&first)
                    .and_then(|t| t.tanh())
                    .and_then(|t| out_proj.forward(&t)),
            ),
            _ => None,
        };
        if let Some(logits) = logits {
            out.insert("logits", to_host(&logits?)?);
        }
        Ok(out)
    }
}

impl Model for Bert {
    fn forward(&self, inputs: &NamedTensors) -> inferox_core::Result<NamedTensors> {
        self.outputs(inputs).map_err(Into::into)
    }
}
