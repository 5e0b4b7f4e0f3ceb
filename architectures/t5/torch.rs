//! T5 on libtorch, ported from transformers' `modeling_t5.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/t5/modeling_t5.py>),
//! with the same per-request state as the candle model: the decoder's self-attention keys and
//! values per layer, and the cross-attention keys and values of the encoded source.

use super::{FeedForward, T5Config, bucket_table};
use crate::common::read_checked_config;
use crate::common::torch::activate;
use inferox_core::load::LoadRequest;
use inferox_core::manifest::ArtifactRole;
use inferox_core::model::{
    Cache, DecodeStep, Decoder, DecoderState, Model, decoder_forward, mask_bias,
};
use inferox_core::tensor::NamedTensors;
use inferox_torch::tch::{self, Kind, Tensor};
use inferox_torch::{Result, Weights, set_threads};

/// `x · wᵀ` (T5's projections have no bias).
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.f_linear::<&Tensor>(w, None)?)
}

/// T5's layer norm: RMS over the last dimension computed in f32, then scaled.
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn load(w: &Weights, name: &str, cfg: &T5Config) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: w.get(name, &[cfg.d_model])?,
            eps: cfg.layer_norm_epsilon,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x32 = x.f_to_kind(Kind::Float)?;
        let variance = x32.f_square()?.f_mean_dim(-1, true, Kind::Float)?;
        let normed = x32.f_mul(&(variance + self.eps).f_rsqrt()?)?;
        Ok(normed.f_to_kind(self.weight.kind())?.f_mul(&self.weight)?)
    }
}

/// The feed-forward block.
struct Ff {
    norm: RmsNorm,
    /// `wi`, or `wi_0` and `wi_1` stacked.
    wi: Tensor,
    wo: Tensor,
    kind: FeedForward,
    d_ff: i64,
}

impl Ff {
    fn load(w: &Weights, prefix: &str, cfg: &T5Config, kind: FeedForward) -> Result<Ff> {
        let (d, ff) = (cfg.d_model, cfg.d_ff);
        let dense =
            |n: &str, shape: &[usize]| w.get(&format!("{prefix}.DenseReluDense.{n}"), shape);
        let wi = if kind.gated {
            Tensor::f_cat(
                &[
                    dense("wi_0.weight", &[ff, d])?,
                    dense("wi_1.weight", &[ff, d])?,
                ],
                0,
            )?
        } else {
            dense("wi.weight", &[ff, d])?
        };
        Ok(Ff {
            norm: RmsNorm::load(w, &format!("{prefix}.layer_norm.weight"), cfg)?,
            wi,
            wo: dense("wo.weight", &[d, ff])?,
            kind,
            d_ff: ff as i64,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = linear(&self.norm.forward(x)?, &self.wi)?;
        let h = if self.kind.gated {
            activate(self.kind.activation, &h.f_narrow(-1, 0, self.d_ff)?)?
                .f_mul(&h.f_narrow(-1, self.d_ff, self.d_ff)?)?
        } else {
            activate(self.kind.activation, &h)?
        };
        Ok(x.f_add(&linear(&h, &self.wo)?)?)
    }
}

/// An attention block: its norm, projections (`q`, `k`, `v` stacked) and output.
struct Attention {
    norm: RmsNorm,
    qkv: Tensor,
    o: Tensor,
}

impl Attention {
    fn load(w: &Weights, prefix: &str, name: &str, cfg: &T5Config) -> Result<Attention> {
        let (d, inner) = (cfg.d_model, cfg.inner());
        let get = |n: &str, shape: &[usize]| w.get(&format!("{prefix}.{name}.{n}.weight"), shape);
        Ok(Attention {
            norm: RmsNorm::load(w, &format!("{prefix}.layer_norm.weight"), cfg)?,
            qkv: Tensor::f_cat(
                &[
                    get("q", &[inner, d])?,
                    get("k", &[inner, d])?,
                    get("v", &[inner, d])?,
                ],
                0,
            )?,
            o: get("o", &[d, inner])?,
        })
    }
}

/// `[batch, seq, parts × heads × d_kv]` split into `parts` tensors `[batch, heads, seq, d_kv]`.
fn split_heads(x: &Tensor, parts: i64, heads: i64) -> Result<Vec<Tensor>> {
    let (b, s, width) = x.size3()?;
    let x = x
        .f_reshape([b, s, parts, heads, width / (parts * heads)])?
        .f_permute([2, 0, 3, 1, 4])?;
    Ok((0..parts).map(|i| x.get(i)).collect())
}

/// `softmax(q kᵀ + bias) v` without scaling; returns `[batch, seq, heads × d_kv]`.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, h, s, dk) = q.size4()?;
    let out = Tensor::f_scaled_dot_product_attention(q, k, v, bias, 0.0, false, Some(1.0), false)?;
    Ok(out.f_transpose(1, 2)?.f_reshape([b, s, h * dk])?)
}

/// A decoder layer.
struct DecoderLayer {
    attention: Attention,
    cross: Attention,
    ff: Ff,
}

/// The per-request state of a [`T5`]: the encoded source and the decoder's caches.
struct T5Cache {
    /// Self-attention keys and values per decoder layer, once a step has run.
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// The encoded source's keys and values per decoder layer.
    source: Vec<(Tensor, Tensor)>,
    source_bias: Option<Tensor>,
    /// Sequences of the encoded source.
    batch: usize,
    cached: usize,
}

impl Cache for T5Cache {
    fn cached(&self) -> usize {
        self.cached
    }
}

/// T5 (or mT5) on libtorch.
pub struct T5 {
    embed: Tensor,
    encoder: Vec<(Attention, Ff)>,
    encoder_buckets: Tensor,
    encoder_norm: RmsNorm,
    decoder: Vec<DecoderLayer>,
    decoder_buckets: Tensor,
    decoder_norm: RmsNorm,
    lm_head: Tensor,
    cfg: T5Config,
    kind: Kind,
    device: tch::Device,
}

// SAFETY: `tch::Tensor` is not `Sync` because some of its methods mutate (in-place ops,
// autograd). The weights here are written once at load and then only read, by out-of-place
// ops under `no_grad`, which libtorch allows from several threads at once; what a request
// changes is in its `T5Cache`.
unsafe impl Sync for T5 {}

/// The registry's loader for the torch backend.
pub fn load(req: &LoadRequest<'_>) -> inferox_core::Result<Box<dyn Model>> {
    let (cfg, ()) = read_checked_config(req, super::checked)?;
    let device = inferox_torch::device(req.options.device)?;
    set_threads(req.options.threads);
    let w = Weights::open(&req.artifacts(ArtifactRole::Weights)?, req.dtype(), device)?;
    Ok(Box::new(T5::load(&w, cfg, device)?))
}

impl T5 {
    fn load(w: &Weights, cfg: T5Config, device: tch::Device) -> Result<T5> {
        let ff = cfg
            .feed_forward()
            .map_err(inferox_core::Error::InvalidArgument)?;
        let d = cfg.d_model;
        let embed = w.get(
            T5Config::embedding_name(|n| w.contains(n)),
            &[cfg.vocab_size, d],
        )?;
        let lm_head = if w.contains("lm_head.weight") {
            w.get("lm_head.weight", &[cfg.vocab_size, d])?
        } else {
            embed.shallow_clone()
        };
        let buckets = |stack: &str| {
            w.get(
                &format!("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
                &[cfg.relative_attention_num_buckets, cfg.num_heads],
            )
        };
        let encoder = (0..cfg.num_layers)
            .map(|i| {
                let b = format!("encoder.block.{i}.layer");
                Ok((
                    Attention::load(w, &format!("{b}.0"), "SelfAttention", &cfg)?,
                    Ff::load(w, &format!("{b}.1"), &cfg, ff)?,
                ))
            })
            .collect::<Result<_>>()?;
        let decoder = (0..cfg.decoder_layers())
            .map(|i| {
                let b = format!("decoder.block.{i}.layer");
                Ok(DecoderLayer {
                    attention: Attention::load(w, &format!("{b}.0"), "SelfAttention", &cfg)?,
                    cross: Attention::load(w, &format!("{b}.1"), "EncDecAttention", &cfg)?,
                    ff: Ff::load(w, &format!("{b}.2"), &cfg, ff)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(T5 {
            encoder_buckets: buckets("encoder")?,
            encoder_norm: RmsNorm::load(w, "encoder.final_layer_norm.weight", &cfg)?,
            decoder_buckets: buckets("decoder")?,
            decoder_norm: RmsNorm::load(w, "decoder.final_layer_norm.weight", &cfg)?,
            kind: embed.kind(),
            embed,
            encoder,
            decoder,
            lm_head,
            cfg,
            device,
        })
    }

    /// `[1, heads, queries, keys]` position bias from `table`, queries starting at `offset`.
    fn position_bias(
        &self,
        table: &Tensor,
        (queries, keys, offset): (usize, usize, usize),
        bidirectional: bool,
    ) -> Result<Tensor> {
        let buckets: Vec<i64> = bucket_table(queries, keys, offset, bidirectional, &self.cfg)
            .into_iter()
            .map(i64::from)
            .collect();
        let buckets = Tensor::from_slice(&buckets).f_to_device(self.device)?;
        Ok(table
            .f_index_select(0, &buckets)?
            .f_reshape([queries as i64, keys as i64, -1])?
            .f_permute([2, 0, 1])?
            .f_unsqueeze(0)?)
    }

    /// A host bias `[batch, queries, keys]` as `[batch, 1, queries, keys]` in the model's kind.
    fn bias_tensor(&self, bias: Vec<f32>, batch: usize, queries: usize) -> Result<Tensor> {
        let keys = bias.len() / (batch * queries).max(1);
        Ok(Tensor::from_slice(&bias)
            .f_reshape([batch as i64, 1, queries as i64, keys as i64])?
            .f_to_device(self.device)?
            .f_to_kind(self.kind)?)
    }

    /// The most negative finite value of the compute kind.
    fn masked_score(&self) -> f32 {
        match self.kind {
            Kind::Half => -65504.0,
            Kind::BFloat16 => -3.38e38,
            _ => f32::MIN,
        }
    }

    fn embed(&self, tokens: &[u32], batch: usize) -> Result<Tensor> {
        let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        let ids = Tensor::from_slice(&ids)
            .f_reshape([batch as i64, -1])?
            .f_to_device(self.device)?;
        Ok(Tensor::f_embedding(&self.embed, &ids, -1, false, false)?)
    }

    fn run_encoder(
        &self,
        cache: &mut T5Cache,
        tokens: &[u32],
        batch: usize,
        mask: &[u8],
    ) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let seq = tokens.len() / batch.max(1);
        let heads = self.cfg.num_heads as i64;
        let source_bias = if mask.iter().all(|&m| m != 0) {
            None
        } else {
            let bias = mask_bias(mask, batch, 1, false, self.masked_score());
            Some(self.bias_tensor(bias, batch, 1)?)
        };
        let position = self.position_bias(&self.encoder_buckets, (seq, seq, 0), true)?;
        let bias = match &source_bias {
            Some(m) => position.f_add(m)?,
            None => position,
        };
        let mut x = self.embed(tokens, batch)?;
        for (attention, ff) in &self.encoder {
            let qkv = split_heads(
                &linear(&attention.norm.forward(&x)?, &attention.qkv)?,
                3,
                heads,
            )?;
            let att = attend(&qkv[0], &qkv[1], &qkv[2], Some(&bias))?;
            x = x.f_add(&linear(&att, &attention.o)?)?;
            x = ff.forward(&x)?;
        }
        let encoded = self.encoder_norm.forward(&x)?;
        let inner = self.cfg.inner() as i64;
        cache.source.clear();
        for layer in &self.decoder {
            let kv_weight = layer.cross.qkv.f_narrow(0, inner, 2 * inner)?;
            let kv = split_heads(&linear(&encoded, &kv_weight)?, 2, heads)?;
            cache
                .source
                .push((kv[0].shallow_clone(), kv[1].shallow_clone()));
        }
        cache.layers = (0..self.decoder.len()).map(|_| None).collect();
        cache.source_bias = source_bias;
        cache.batch = batch;
        cache.cached = 0;
        Ok(())
    }

    fn run_decoder(&self, cache: &mut T5Cache, step: &DecodeStep<'_>) -> Result<Vec<f32>> {
        let _guard = tch::no_grad_guard();
        let (b, s) = (step.batch, step.seq());
        if b != cache.batch || cache.source.len() != self.decoder.len() {
            return Err(inferox_core::Error::InvalidArgument(format!(
                "a decoding step of {b} sequences needs an encoded source of {b} \
                 (encode the source first; {} encoded)",
                cache.batch
            ))
            .into());
        }
        let heads = self.cfg.num_heads as i64;
        let inner = self.cfg.inner() as i64;
        let cached = cache.cached;
        let position = self.position_bias(&self.decoder_buckets, (s, cached + s, cached), false)?;
        // A single unpadded step sees every cached token: the position bias is all there is.
        let bias = if s == 1 && step.mask.iter().all(|&m| m != 0) {
            position
        } else {
            let causal = mask_bias(step.mask, b, s, true, self.masked_score());
            position.f_add(&self.bias_tensor(causal, b, s)?)?
        };
        let mut x = self.embed(step.tokens, b)?;
        let layers = self
            .decoder
            .iter()
            .zip(&mut cache.layers)
            .zip(&cache.source);
        for ((layer, kv), (sk, sv)) in layers {
            let a = &layer.attention;
            let qkv = split_heads(&linear(&a.norm.forward(&x)?, &a.qkv)?, 3, heads)?;
            let (k, v) = match kv.take() {
                Some((k0, v0)) => (
                    Tensor::f_cat(&[&k0, &qkv[1]], 2)?,
                    Tensor::f_cat(&[&v0, &qkv[2]], 2)?,
                ),
                None => (qkv[1].shallow_clone(), qkv[2].shallow_clone()),
            };
            let att = attend(&qkv[0], &k, &v, Some(&bias))?;
            *kv = Some((k, v));
            x = x.f_add(&linear(&att, &a.o)?)?;
            let c = &layer.cross;
            let q_weight = c.qkv.f_narrow(0, 0, inner)?;
            let q = split_heads(&linear(&c.norm.forward(&x)?, &q_weight)?, 1, heads)?;
            let att = attend(&q[0], sk, sv, cache.source_bias.as_ref())?;
            x = x.f_add(&linear(&att, &c.o)?)?;
            x = layer.ff.forward(&x)?;
        }
        cache.cached += s;
        let mut x = self.decoder_norm.forward(&x)?;
        if self.cfg.scales_output() {
            x = x.f_mul_scalar((self.cfg.d_model as f64).powf(-0.5))?;
        }
        if !step.all_positions {
            x = x.f_narrow(1, s as i64 - 1, 1)?;
        }
        let logits = linear(&x, &self.lm_head)?
            .f_to_kind(Kind::Float)?
            .f_contiguous()?
            .f_view([-1])?;
        Vec::<f32>::try_from(&logits).map_err(inferox_torch::Error::from)
    }
}

impl Decoder for T5 {
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn max_positions(&self) -> usize {
        super::MAX_TOKENS
    }

    fn new_state(&self) -> DecoderState {
        let cache = T5Cache {
            layers: Vec::new(),
            source: Vec::new(),
            source_bias: None,
            batch: 0,
            cached: 0,
        };
        DecoderState::new(self, cache)
    }

    fn step(
        &self,
        state: &mut DecoderState,
        step: &DecodeStep<'_>,
    ) -> inferox_core::Result<Vec<f32>> {
        let cache = state.cache_mut::<T5Cache, _>(self)?;
        self.run_decoder(cache, step).map_err(Into::into)
    }

    fn decoder_start(&self) -> Option<u32> {
        Some(self.cfg.start_token())
    }

    fn encode(
        &self,
        state: &mut DecoderState,
        tokens: &[u32],
        batch: usize,
        mask: &[u8],
    ) -> inferox_core::Result<()> {
        let cache = state.cache_mut::<T5Cache, _>(self)?;
        self.run_encoder(cache, tokens, batch, mask)
            .map_err(Into::into)
    }
}

impl Model for T5 {
    fn forward(&self, inputs: &NamedTensors) -> inferox_core::Result<NamedTensors> {
        decoder_forward(self, inputs)
    }

    fn decoder(&self) -> Option<&dyn Decoder> {
        Some(self)
    }
}
