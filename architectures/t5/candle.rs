//! T5 on candle, ported from transformers' `modeling_t5.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/t5/modeling_t5.py>).
//! The encoder runs once per source; the request's state keeps each decoder layer's
//! self-attention KV cache and the cross-attention keys and values of the encoded source. Unlike candle-transformers'
//! `t5.rs`, the decoder's position buckets look back only, as transformers' do.

use super::{FeedForward, T5Config, bucket_table};
use crate::common::candle::{Dense, float_device};
use crate::common::read_checked_config;
use candle::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use inferox_candle::decoder::{
    LayerCaches, RmsNorm, causal_bias, key_bias, last_positions, output_logits,
};
use inferox_candle::{Result, Weights, candle_core as candle, candle_nn, packed};
use inferox_core::load::LoadRequest;
use inferox_core::manifest::ArtifactRole;
use inferox_core::model::{Cache, DecodeStep, Decoder, DecoderState, Model, decoder_forward};
use inferox_core::tensor::NamedTensors;

/// The feed-forward block (`DenseReluDense` / `DenseGatedActDense`).
struct Ff {
    norm: RmsNorm,
    /// `wi`, or `wi_0` and `wi_1` stacked (`[2 × d_ff, d_model]`).
    wi: Dense,
    wo: Dense,
    kind: FeedForward,
    d_ff: usize,
}

impl Ff {
    fn load(vb: VarBuilder, cfg: &T5Config, kind: FeedForward) -> candle::Result<Ff> {
        let (d, ff) = (cfg.d_model, cfg.d_ff);
        let dense = vb.pp("DenseReluDense");
        let wi = if kind.gated {
            Tensor::cat(
                &[
                    dense.get((ff, d), "wi_0.weight")?,
                    dense.get((ff, d), "wi_1.weight")?,
                ],
                0,
            )?
        } else {
            dense.get((ff, d), "wi.weight")?
        };
        Ok(Ff {
            norm: RmsNorm::new(vb.get(d, "layer_norm.weight")?, cfg.layer_norm_epsilon),
            wi: Dense::new(&wi, None)?,
            wo: Dense::new(&dense.get((d, ff), "wo.weight")?, None)?,
            kind,
            d_ff: ff,
        })
    }

    /// `x + wo(act(wi(norm(x))))`, gated or not; `x` is `[tokens, d_model]`.
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        let h = self.wi.forward(&self.norm.forward(x)?)?;
        let h = if self.kind.gated {
            let act = self.kind.activation.apply(&h.narrow(1, 0, self.d_ff)?)?;
            (act * h.narrow(1, self.d_ff, self.d_ff)?)?
        } else {
            self.kind.activation.apply(&h)?
        };
        self.wo.forward_residual(&h, x)
    }
}

/// Splits `[batch × seq, parts × heads × d_kv]` into `parts` tensors `[batch, heads, seq, d_kv]`.
fn split_heads(
    x: &Tensor,
    batch: usize,
    parts: usize,
    heads: usize,
) -> candle::Result<Vec<Tensor>> {
    let x = x
        .reshape((batch, (), parts, heads, x.dim(1)? / (parts * heads)))?
        .permute((2, 0, 3, 1, 4))?;
    (0..parts).map(|i| x.get(i)?.contiguous()).collect()
}

/// T5 attention: `softmax(q kᵀ + bias) v` with no scaling, the softmax in f32; `bias`
/// broadcasts to `[batch, heads, queries, keys]`. Returns `[batch × queries, heads × d_kv]`.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> candle::Result<Tensor> {
    let (b, heads, s, dk) = q.dims4()?;
    let mut scores = q.matmul(&k.t()?)?;
    if let Some(bias) = bias {
        scores = scores.broadcast_add(bias)?;
    }
    let dtype = scores.dtype();
    let probs = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)?;
    probs
        .matmul(v)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b * s, heads * dk))
}

/// Self-attention's projections: q, k and v stacked, and o.
struct SelfAttention {
    norm: RmsNorm,
    qkv: Dense,
    o: Dense,
}

impl SelfAttention {
    fn load(vb: VarBuilder, cfg: &T5Config, name: &str) -> candle::Result<SelfAttention> {
        let (d, inner) = (cfg.d_model, cfg.inner());
        let a = vb.pp(name);
        let qkv = Tensor::cat(
            &[
                a.get((inner, d), "q.weight")?,
                a.get((inner, d), "k.weight")?,
                a.get((inner, d), "v.weight")?,
            ],
            0,
        )?;
        Ok(SelfAttention {
            norm: RmsNorm::new(vb.get(d, "layer_norm.weight")?, cfg.layer_norm_epsilon),
            qkv: Dense::new(&qkv, None)?,
            o: Dense::new(&a.get((d, inner), "o.weight")?, None)?,
        })
    }

    /// Queries, keys and values of `norm(x)`, each `[batch, heads, seq, d_kv]`.
    fn project(&self, x: &Tensor, batch: usize, heads: usize) -> candle::Result<Vec<Tensor>> {
        split_heads(&self.qkv.forward(&self.norm.forward(x)?)?, batch, 3, heads)
    }
}

/// An encoder layer.
struct EncoderLayer {
    attention: SelfAttention,
    ff: Ff,
}

/// A decoder layer.
struct DecoderLayer {
    attention: SelfAttention,
    cross_norm: RmsNorm,
    cross_q: Dense,
    /// k and v stacked.
    cross_kv: Dense,
    cross_o: Dense,
    ff: Ff,
}

impl DecoderLayer {
    fn load(vb: VarBuilder, cfg: &T5Config, ff: FeedForward) -> candle::Result<DecoderLayer> {
        let (d, inner) = (cfg.d_model, cfg.inner());
        let cross = vb.pp("layer.1");
        let a = cross.pp("EncDecAttention");
        let kv = Tensor::cat(
            &[
                a.get((inner, d), "k.weight")?,
                a.get((inner, d), "v.weight")?,
            ],
            0,
        )?;
        Ok(DecoderLayer {
            attention: SelfAttention::load(vb.pp("layer.0"), cfg, "SelfAttention")?,
            cross_norm: RmsNorm::new(cross.get(d, "layer_norm.weight")?, cfg.layer_norm_epsilon),
            cross_q: Dense::new(&a.get((inner, d), "q.weight")?, None)?,
            cross_kv: Dense::new(&kv, None)?,
            cross_o: Dense::new(&a.get((d, inner), "o.weight")?, None)?,
            ff: Ff::load(vb.pp("layer.2"), cfg, ff)?,
        })
    }
}

/// The per-request state of a [`T5`]: the encoded source and the decoder's caches.
struct T5Cache {
    /// Self-attention keys and values, per decoder layer.
    layers: LayerCaches,
    /// The encoded source's keys and values per decoder layer, `[batch, heads, source, d_kv]`.
    cross: Vec<(Tensor, Tensor)>,
    /// The source mask's additive bias, `[batch, 1, 1, source]`, when it masks anything.
    source_bias: Option<Tensor>,
    /// Sequences of the encoded source.
    batch: usize,
}

impl Cache for T5Cache {
    fn cached(&self) -> usize {
        self.layers.cached()
    }
}

/// A T5 (or mT5) encoder–decoder; the encoded source and the caches are [`DecoderState`]s.
pub struct T5 {
    embed: Tensor,
    encoder: Vec<EncoderLayer>,
    /// `[num_buckets, heads]` of the encoder's first layer.
    encoder_buckets: Tensor,
    encoder_norm: RmsNorm,
    decoder: Vec<DecoderLayer>,
    decoder_buckets: Tensor,
    decoder_norm: RmsNorm,
    lm_head: Head,
    cfg: T5Config,
    dtype: DType,
    device: Device,
}

/// The output layer, `[vocab, d_model]`.
enum Head {
    /// In f32, read by the matrix-vector kernel when one position is decoded.
    Matrix(Tensor),
    /// In a bf16 load, a dense layer with bf16 weights: decoding one token streams the whole
    /// matrix (66 MB in f32 at t5-small's size, three quarters of what the decoder's layers
    /// stream), so half the bytes is close to half the time of this layer.
    Packed(Dense),
}

/// The registry's loader for the candle backend.
pub fn load(req: &LoadRequest<'_>) -> inferox_core::Result<Box<dyn Model>> {
    let (cfg, ()) = read_checked_config(req, super::checked)?;
    let weights = Weights::open(&req.artifacts(ArtifactRole::Weights)?)?;
    let (device, dtype, _packing) = float_device(req)?;
    let vb = weights.var_builder(dtype, &device);
    let model = T5::load(vb, cfg, dtype, device).map_err(|e| weights.explain(e))?;
    Ok(Box::new(model))
}

impl T5 {
    fn load(vb: VarBuilder, cfg: T5Config, dtype: DType, device: Device) -> candle::Result<T5> {
        let (d, heads) = (cfg.d_model, cfg.num_heads);
        let ff = cfg.feed_forward().map_err(candle::Error::msg)?;
        let eps = cfg.layer_norm_epsilon;
        let embed_name = T5Config::embedding_name(|n| vb.contains_tensor(n));
        let embed = vb.get((cfg.vocab_size, d), embed_name)?;
        let lm_head = if vb.contains_tensor("lm_head.weight") {
            vb.get((cfg.vocab_size, d), "lm_head.weight")?
        } else {
            embed.clone()
        };
        let lm_head = match packed::bf16_requested() {
            true => Head::Packed(Dense::new(&lm_head, None)?),
            false => Head::Matrix(lm_head),
        };
        let buckets = |stack: &str| {
            vb.get(
                (cfg.relative_attention_num_buckets, heads),
                &format!("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
            )
        };
        let encoder = (0..cfg.num_layers)
            .map(|i| {
                let b = vb.pp(format!("encoder.block.{i}.layer"));
                Ok(EncoderLayer {
                    attention: SelfAttention::load(b.pp("0"), &cfg, "SelfAttention")?,
                    ff: Ff::load(b.pp("1"), &cfg, ff)?,
                })
            })
            .collect::<candle::Result<_>>()?;
        let decoder = (0..cfg.decoder_layers())
            .map(|i| DecoderLayer::load(vb.pp(format!("decoder.block.{i}")), &cfg, ff))
            .collect::<candle::Result<_>>()?;
        Ok(T5 {
            encoder_buckets: buckets("encoder")?,
            encoder_norm: RmsNorm::new(vb.get(d, "encoder.final_layer_norm.weight")?, eps),
            decoder_buckets: buckets("decoder")?,
            decoder_norm: RmsNorm::new(vb.get(d, "decoder.final_layer_norm.weight")?, eps),
            embed,
            encoder,
            decoder,
            lm_head,
            cfg,
            dtype,
            device,
        })
    }

    /// The position bias `[1, heads, queries, keys]` from `table`, queries starting at `offset`.
    fn position_bias(
        &self,
        table: &Tensor,
        (queries, keys, offset): (usize, usize, usize),
        bidirectional: bool,
    ) -> candle::Result<Tensor> {
        let buckets = bucket_table(queries, keys, offset, bidirectional, &self.cfg);
        let buckets = Tensor::from_vec(buckets, queries * keys, &self.device)?;
        table
            .index_select(&buckets, 0)?
            .reshape((queries, keys, ()))?
            .permute((2, 0, 1))?
            .unsqueeze(0)
    }

    fn embed(&self, tokens: &[u32]) -> candle::Result<Tensor> {
        let ids = Tensor::from_slice(tokens, tokens.len(), &self.device)?;
        self.embed.index_select(&ids, 0)
    }

    /// Encodes the source and computes every decoder layer's cross-attention keys and values.
    fn run_encoder(
        &self,
        cache: &mut T5Cache,
        tokens: &[u32],
        batch: usize,
        mask: &[u8],
    ) -> Result<()> {
        let seq = tokens.len() / batch.max(1);
        let heads = self.cfg.num_heads;
        let source_bias = key_bias(mask, batch, &self.device, self.dtype)?;
        let position = self.position_bias(&self.encoder_buckets, (seq, seq, 0), true)?;
        let bias = match &source_bias {
            Some(m) => position.broadcast_add(m)?,
            None => position,
        };
        let mut x = self.embed(tokens)?;
        for layer in &self.encoder {
            let [q, k, v]: [Tensor; 3] = layer
                .attention
                .project(&x, batch, heads)?
                .try_into()
                .expect("three parts");
            let att = attend(&q, &k, &v, Some(&bias))?;
            x = layer.attention.o.forward_residual(&att, &x)?;
            x = layer.ff.forward(&x)?;
        }
        let encoded = self.encoder_norm.forward(&x)?;
        cache.cross.clear();
        for layer in &self.decoder {
            let [k, v]: [Tensor; 2] =
                split_heads(&layer.cross_kv.forward(&encoded)?, batch, 2, heads)?
                    .try_into()
                    .expect("two parts");
            cache.cross.push((k, v));
        }
        cache.layers = LayerCaches::new(self.decoder.len(), 64);
        cache.source_bias = source_bias;
        cache.batch = batch;
        Ok(())
    }

    /// The logits of one decoding step, flattened.
    fn run_decoder(&self, cache: &mut T5Cache, step: &DecodeStep<'_>) -> Result<Vec<f32>> {
        let (b, s) = (step.batch, step.seq());
        if b != cache.batch || cache.cross.len() != self.decoder.len() {
            return Err(inferox_core::Error::InvalidArgument(format!(
                "a decoding step of {b} sequences needs an encoded source of {b} \
                 (encode the source first; {} encoded)",
                cache.batch
            ))
            .into());
        }
        let heads = self.cfg.num_heads;
        let cached = cache.cached();
        let position = self.position_bias(&self.decoder_buckets, (s, cached + s, cached), false)?;
        let bias = match causal_bias(step.mask, b, s, None, &self.device, self.dtype)? {
            Some(m) => position.broadcast_add(&m)?,
            None => position,
        };
        let mut x = self.embed(step.tokens)?;
        let layers = self
            .decoder
            .iter()
            .zip(&mut cache.layers.0)
            .zip(&cache.cross);
        for ((layer, kv), (ck, cv)) in layers {
            let [q, k, v]: [Tensor; 3] = layer
                .attention
                .project(&x, b, heads)?
                .try_into()
                .expect("three parts");
            let (k, v) = kv.append(&k, &v)?;
            let att = attend(&q, &k, &v, Some(&bias))?;
            x = layer.attention.o.forward_residual(&att, &x)?;
            let q = split_heads(
                &layer.cross_q.forward(&layer.cross_norm.forward(&x)?)?,
                b,
                1,
                heads,
            )?
            .remove(0);
            let att = attend(&q, ck, cv, cache.source_bias.as_ref())?;
            x = layer.cross_o.forward_residual(&att, &x)?;
            x = layer.ff.forward(&x)?;
        }
        let mut x = self.decoder_norm.forward(&x)?;
        if self.cfg.scales_output() {
            x = (x * (self.cfg.d_model as f64).powf(-0.5))?;
        }
        let x = if step.all_positions {
            x
        } else {
            last_positions(&x, b, s)?
        };
        Ok(match &self.lm_head {
            Head::Matrix(w) => output_logits(&x, w)?,
            Head::Packed(p) => p.forward(&x)?.flatten_all()?.to_vec1()?,
        })
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
        self.new_state_with_room(64)
    }

    fn new_state_with_room(&self, positions: usize) -> DecoderState {
        let cache = T5Cache {
            layers: LayerCaches::new(self.decoder.len(), positions.clamp(1, super::MAX_TOKENS)),
            cross: Vec::new(),
            source_bias: None,
            batch: 0,
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
