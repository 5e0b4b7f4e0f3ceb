//! The Llama family on candle, from Hugging Face safetensors (dense, any float dtype) or GGUF
//! (quantized weights multiplied without dequantizing). Ported from transformers'
//! `modeling_llama.py` (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py>);
//! GGUF tensor names and the interleaved rotary layout of llama GGUFs follow llama.cpp. Gemma 2
//! and 3 follow `modeling_gemma2.py` / `modeling_gemma3.py`, Phi-3 `modeling_phi3.py`, in the
//! same transformers folder.
//! Errors inside are the backend's ([`inferox_candle::Result`]); the registry loader and the
//! [`Decoder`] methods convert them once.

use super::{Flavor, LlamaConfig};
use crate::common::{Activation, ConfigCheck};
use candle::{DType, Device, Tensor};
use inferox_candle::decoder::{
    Embedding, LayerCaches, Linear, RmsNorm, Rotary, Scores, attention, causal_bias, last_positions,
};
use inferox_candle::gguf::GgufWeights;
use inferox_candle::{Result, Weights, candle_core as candle};
use inferox_core::Error;
use inferox_core::load::LoadRequest;
use inferox_core::manifest::{ArtifactRole, ExecutionFormat};
use inferox_core::model::{Cache, DecodeStep, Decoder, DecoderState, Model, decoder_forward};
use inferox_core::tensor::NamedTensors;

/// Where parameters come from: a tensor has a Hugging Face name and a GGUF name.
enum Params {
    Hf {
        weights: Weights,
        dtype: DType,
        device: Device,
        /// Put before every name ([`super::hf_prefix`]).
        prefix: &'static str,
    },
    Gguf(GgufWeights),
}

impl Params {
    /// A candle result of building from these parameters, with the most precise error known.
    fn hf<T>(&self, r: candle::Result<T>) -> Result<T> {
        match self {
            Params::Hf { weights, .. } => r.map_err(|e| weights.explain(e)),
            Params::Gguf(_) => Ok(r?),
        }
    }

    fn has(&self, hf: &str, gguf: &str) -> bool {
        match self {
            Params::Hf {
                weights, prefix, ..
            } => weights.contains(&format!("{prefix}{hf}")),
            Params::Gguf(g) => g.has(gguf),
        }
    }

    /// A dense tensor in the compute dtype.
    fn tensor(&self, hf: &str, gguf: &str, shape: &[usize]) -> Result<Tensor> {
        match self {
            Params::Hf {
                weights,
                dtype,
                device,
                prefix,
            } => {
                let vb = weights.var_builder(*dtype, device);
                self.hf(vb.get(shape, &format!("{prefix}{hf}")))
            }
            Params::Gguf(g) => g.tensor(gguf, shape),
        }
    }

    /// An RMS norm of `size`; `offset` is added to the stored scale (Gemma's `1 + w`, which
    /// GGUF files store already added).
    fn norm(&self, hf: &str, gguf: &str, size: usize, eps: f64, offset: f64) -> Result<RmsNorm> {
        let w = self.tensor(hf, gguf, &[size])?;
        let w = match self {
            Params::Hf { dtype, .. } if offset != 0.0 => {
                self.hf((w.to_dtype(DType::F32)? + offset)?.to_dtype(*dtype))?
            }
            _ => w,
        };
        Ok(RmsNorm::new(w, eps))
    }

    /// A linear layer `[out, in]` with an optional bias.
    fn linear(&self, hf: &str, gguf: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        let bias = if bias {
            Some(self.tensor(&format!("{hf}.bias"), &format!("{gguf}.bias"), &[out])?)
        } else {
            None
        };
        match self {
            Params::Hf { .. } => {
                let w = self.tensor(&format!("{hf}.weight"), "", &[out, inp])?;
                self.hf(Linear::dense(&w, bias))
            }
            Params::Gguf(g) => Linear::from_gguf(g, &format!("{gguf}.weight"), [out, inp], bias),
        }
    }
}

/// Projections whose outputs are used side by side: separate matrices, or one matrix whose
/// output rows are split (Phi-3's `qkv_proj` and `gate_up_proj`).
enum Projections {
    Separate(Vec<Linear>),
    Fused(Linear, Vec<usize>),
}

impl Projections {
    /// Separate matrices, fused into one where our quantized kernels allow it
    /// ([`Linear::fuse`]).
    fn new(parts: Vec<Linear>) -> Projections {
        match Linear::fuse(parts) {
            Ok((l, sizes)) => Projections::Fused(l, sizes),
            Err(parts) => Projections::Separate(parts),
        }
    }

    fn forward(&self, x: &Tensor) -> candle::Result<Vec<Tensor>> {
        match self {
            Projections::Separate(ls) => ls.iter().map(|l| l.forward(x)).collect(),
            Projections::Fused(l, sizes) => {
                let y = l.forward(x)?;
                let mut start = 0;
                sizes
                    .iter()
                    .map(|&n| {
                        start += n;
                        y.narrow(candle::D::Minus1, start - n, n)
                    })
                    .collect()
            }
        }
    }
}

struct Layer {
    input_norm: RmsNorm,
    /// q, k, v.
    qkv: Projections,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    /// Gemma's norm of the attention output, before the residual.
    attn_out_norm: Option<RmsNorm>,
    ffn_norm: RmsNorm,
    /// gate, up.
    gate_up: Projections,
    down: Linear,
    /// Gemma's norm of the feed-forward output, before the residual.
    ffn_out_norm: Option<RmsNorm>,
    /// Keys further back than this many cache positions are not attended to.
    window: Option<usize>,
    /// Which rotary table: 0 global, 1 local (sliding-window layers with a base of their own).
    rotary: usize,
}

/// The per-request state of a [`Llama`]: a KV cache per layer and, with LongRoPE, the tokens
/// and positions of the cache per row and whether it was computed with the long table.
/// transformers' Phi-3 recomputes the cache when a sequence first passes the original context,
/// so that every position is rotated the long way.
struct LlamaCache {
    layers: LayerCaches,
    history: Vec<(Vec<u32>, Vec<u32>)>,
    long: bool,
}

impl Cache for LlamaCache {
    fn cached(&self) -> usize {
        self.layers.cached()
    }
}

/// A Llama-family decoder; its KV caches are [`DecoderState`]s.
pub struct Llama {
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: Vec<Rotary>,
    /// LongRoPE: the table used once a sequence passes this many positions.
    long_rotary: Option<(usize, Rotary)>,
    /// Positions a new KV cache has room for before it grows.
    cache_size: usize,
    activation: Activation,
    embed_scale: Option<f64>,
    scores: Scores,
    final_softcap: Option<f64>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
    positions: usize,
    dtype: DType,
    device: Device,
}

/// The registry's loader for the candle backend.
pub fn load(req: &LoadRequest<'_>) -> inferox_core::Result<Box<dyn Model>> {
    let device = inferox_candle::device(req.options.device)?;
    let (cfg, params, interleaved) = match req.artifacts.format {
        ExecutionFormat::Gguf => {
            let file = req.artifacts(ArtifactRole::Model)?.remove(0);
            let path = file.path().to_path_buf();
            if req.dtype() != inferox_core::DType::Float32 {
                return Err(Error::InvalidArgument(
                    "GGUF packages compute in float32 (their weights keep their quantization)"
                        .into(),
                ));
            }
            let header = inferox_core::gguf::GgufHeader::read(&file)?;
            let arch = header.architecture()?.to_string();
            let gguf = GgufWeights::open(&file, &device)?;
            let vocab = gguf
                .shape("token_embd.weight")
                .and_then(|s| s.first().copied())
                .ok_or_else(|| Error::MissingTensor {
                    tensor: "token_embd.weight".into(),
                    files: vec![path.clone()],
                })?;
            let meta = header.metadata_json();
            let mut cfg =
                LlamaConfig::from_gguf(&meta, &arch, vocab).map_err(|message| Error::Config {
                    path: path.clone(),
                    message,
                })?;
            longrope_from_gguf(&mut cfg, &gguf, &meta, &arch)?;
            let check = ConfigCheck {
                path: &path,
                weights: &header.weight_index(),
            };
            cfg.check_weights(&check, Some(&arch))?;
            // llama.cpp stores Llama's q/k rows permuted for adjacent-pair rotation; Qwen's are not.
            (cfg, Params::Gguf(gguf), arch == "llama")
        }
        _ => {
            let config_path = req.artifacts(ArtifactRole::Config)?.remove(0);
            let cfg =
                LlamaConfig::from_hf_json(req.config()?).map_err(|message| Error::Config {
                    path: config_path.path().to_path_buf(),
                    message,
                })?;
            let dtype = inferox_candle::dtype(req.dtype())?;
            let weights = Weights::open(&req.artifacts(ArtifactRole::Weights)?)?;
            let check = ConfigCheck {
                path: config_path.path(),
                weights: weights.index(),
            };
            cfg.check_weights(&check, None)?;
            let prefix = super::hf_prefix(weights.index());
            (
                cfg,
                Params::Hf {
                    weights,
                    dtype,
                    device: device.clone(),
                    prefix,
                },
                false,
            )
        }
    };
    cfg.check().map_err(|message| Error::Config {
        path: req.package.root().to_path_buf(),
        message,
    })?;
    Ok(Box::new(Llama::load(&cfg, &params, interleaved, device)?))
}

/// LongRoPE in a GGUF (Phi-3.5, Phi-4-mini): the factors are tensors, the attention factor
/// metadata; they go into the config as config.json would have them.
fn longrope_from_gguf(
    cfg: &mut LlamaConfig,
    g: &GgufWeights,
    meta: &serde_json::Value,
    arch: &str,
) -> Result<()> {
    if !g.has("rope_factors_long.weight") {
        return Ok(());
    }
    let n = cfg.rotary_dims() / 2;
    let factors = |name: &str| -> Result<Vec<f64>> {
        let t: Vec<f32> = g.tensor(name, &[n])?.to_vec1()?;
        Ok(t.into_iter().map(f64::from).collect())
    };
    cfg.rope_scaling = Some(super::RopeScaling {
        rope_type: "longrope".into(),
        rope_theta: None,
        factor: 1.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: cfg.original_max_position_embeddings,
        partial_rotary_factor: None,
        short_factor: Some(factors("rope_factors_short.weight")?),
        long_factor: Some(factors("rope_factors_long.weight")?),
        attention_factor: meta
            .get(format!("{arch}.rope.scaling.attn_factor"))
            .and_then(|v| v.as_f64()),
    });
    Ok(())
}

impl Llama {
    fn load(cfg: &LlamaConfig, p: &Params, interleaved: bool, device: Device) -> Result<Llama> {
        let (h, hd) = (cfg.hidden_size, cfg.head_size());
        let (heads, kv) = (cfg.num_attention_heads, cfg.kv_heads());
        let eps = cfg.rms_norm_eps;
        let dtype = match p {
            Params::Hf { dtype, .. } => *dtype,
            Params::Gguf(_) => DType::F32,
        };
        // Gemma's RMS norms scale by (1 + w).
        let offset = if cfg.gemma() { 1.0 } else { 0.0 };
        let norm = |hf: &str, gguf: &str, size: usize| p.norm(hf, gguf, size, eps, offset);
        let ff = cfg.intermediate_size;
        let cache_size = cfg.max_sequence().min(inferox_candle::decoder::CACHE_CHUNK);
        let inv_freq = |local: bool| {
            cfg.inv_freq(local).map_err(|message| Error::Config {
                path: Default::default(),
                message,
            })
        };
        let local_rope = inv_freq(true)? != inv_freq(false)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let hf = |n: &str| format!("model.layers.{i}.{n}");
            let gg = |n: &str| format!("blk.{i}.{n}");
            let (q_norm, k_norm) = if matches!(cfg.flavor(), Flavor::Qwen3 | Flavor::Gemma3) {
                (
                    Some(norm(
                        &hf("self_attn.q_norm.weight"),
                        &gg("attn_q_norm.weight"),
                        hd,
                    )?),
                    Some(norm(
                        &hf("self_attn.k_norm.weight"),
                        &gg("attn_k_norm.weight"),
                        hd,
                    )?),
                )
            } else {
                (None, None)
            };
            let bias = cfg.qkv_bias();
            let phi3 = cfg.flavor() == Flavor::Phi3;
            let qkv = if phi3 && p.has(&hf("self_attn.qkv_proj.weight"), &gg("attn_qkv.weight")) {
                let sizes = vec![heads * hd, kv * hd, kv * hd];
                let rows = sizes.iter().sum();
                let l = p.linear(&hf("self_attn.qkv_proj"), &gg("attn_qkv"), rows, h, bias)?;
                Projections::Fused(l, sizes)
            } else {
                Projections::new(vec![
                    p.linear(&hf("self_attn.q_proj"), &gg("attn_q"), heads * hd, h, bias)?,
                    p.linear(&hf("self_attn.k_proj"), &gg("attn_k"), kv * hd, h, bias)?,
                    p.linear(&hf("self_attn.v_proj"), &gg("attn_v"), kv * hd, h, bias)?,
                ])
            };
            // Phi-3 fuses gate and up (GGUF: `ffn_up` holds both, gate first).
            let gate_up = if phi3 {
                let l = p.linear(&hf("mlp.gate_up_proj"), &gg("ffn_up"), 2 * ff, h, false)?;
                Projections::Fused(l, vec![ff, ff])
            } else {
                Projections::new(vec![
                    p.linear(&hf("mlp.gate_proj"), &gg("ffn_gate"), ff, h, false)?,
                    p.linear(&hf("mlp.up_proj"), &gg("ffn_up"), ff, h, false)?,
                ])
            };
            // Gemma: norms on both sides of attention and feed-forward; its
            // `post_attention_layernorm` is the attention output's, not the feed-forward input's.
            let (attn_out_norm, ffn_norm, ffn_out_norm) = if cfg.gemma() {
                (
                    Some(norm(
                        &hf("post_attention_layernorm.weight"),
                        &gg("post_attention_norm.weight"),
                        h,
                    )?),
                    norm(
                        &hf("pre_feedforward_layernorm.weight"),
                        &gg("ffn_norm.weight"),
                        h,
                    )?,
                    Some(norm(
                        &hf("post_feedforward_layernorm.weight"),
                        &gg("post_ffw_norm.weight"),
                        h,
                    )?),
                )
            } else {
                let ffn_norm = norm(
                    &hf("post_attention_layernorm.weight"),
                    &gg("ffn_norm.weight"),
                    h,
                )?;
                (None, ffn_norm, None)
            };
            let window = cfg.window(i);
            layers.push(Layer {
                input_norm: norm(&hf("input_layernorm.weight"), &gg("attn_norm.weight"), h)?,
                qkv,
                o: p.linear(
                    &hf("self_attn.o_proj"),
                    &gg("attn_output"),
                    h,
                    heads * hd,
                    cfg.attention_bias,
                )?,
                q_norm,
                k_norm,
                attn_out_norm,
                ffn_norm,
                gate_up,
                down: p.linear(&hf("mlp.down_proj"), &gg("ffn_down"), h, ff, false)?,
                ffn_out_norm,
                window,
                rotary: usize::from(local_rope && window.is_some()),
            });
        }
        let vocab = cfg.vocab_size;
        let (embed, lm_head) = match p {
            Params::Gguf(g) => {
                let embed = Embedding::from_gguf(g, "token_embd.weight", [vocab, h], dtype)?;
                // Tied: GGUF keeps the (quantized) token embedding as the output matrix.
                let head = if g.has("output.weight") && !cfg.tie_word_embeddings {
                    "output.weight"
                } else {
                    "token_embd.weight"
                };
                (embed, Linear::from_gguf(g, head, [vocab, h], None)?)
            }
            Params::Hf { .. } => {
                let embed = p.tensor("model.embed_tokens.weight", "", &[vocab, h])?;
                let head = if p.has("lm_head.weight", "") && !cfg.tie_word_embeddings {
                    p.linear("lm_head", "", vocab, h, false)?
                } else {
                    p.hf(Linear::dense(&embed, None))?
                };
                (Embedding::Dense(embed), head)
            }
        };
        let mut global = inv_freq(false)?;
        if let Params::Gguf(g) = p {
            // Llama 3 GGUFs carry their frequency factors as a tensor.
            if g.has("rope_freqs.weight") {
                let n = global.len();
                let factors: Vec<f32> = g.tensor("rope_freqs.weight", &[n])?.to_vec1()?;
                global.iter_mut().zip(factors).for_each(|(f, k)| *f /= k);
            }
        }
        let positions = cfg.max_sequence();
        let longrope = cfg.longrope().map_err(|message| Error::Config {
            path: Default::default(),
            message,
        })?;
        let scale = longrope.as_ref().map_or(1.0, |l| l.attention_factor as f32);
        let table = |f: &[f32]| -> Result<Rotary> {
            Ok(Rotary::new(f, positions, interleaved, &device, dtype)?.with_scale(scale)?)
        };
        let mut rotary = vec![table(&global)?];
        if local_rope {
            rotary.push(table(&inv_freq(true)?)?);
        }
        let long_rotary = match longrope {
            Some(l) => Some((l.original, table(&l.long_inv_freq)?)),
            None => None,
        };
        Ok(Llama {
            rotary,
            long_rotary,
            cache_size,
            norm: norm("model.norm.weight", "output_norm.weight", h)?,
            embed,
            layers,
            lm_head,
            activation: cfg.activation(),
            embed_scale: cfg.gemma().then(|| (h as f64).sqrt()),
            scores: Scores {
                scale: cfg.attention_scale(),
                softcap: cfg.attn_logit_softcapping,
            },
            final_softcap: cfg.final_logit_softcapping,
            heads,
            kv_heads: kv,
            head_dim: hd,
            vocab,
            positions,
            dtype,
            device,
        })
    }

    /// The logits of one decoding step, flattened; with LongRoPE, the cache is recomputed on
    /// the long table in the step that first passes the original context.
    fn run(&self, cache: &mut LlamaCache, step: &DecodeStep<'_>) -> Result<Vec<f32>> {
        let Some((original, _)) = &self.long_rotary else {
            return self.pass(cache, step);
        };
        let (b, s) = (step.batch, step.seq());
        if cache.history.len() != b {
            cache.history = vec![(Vec::new(), Vec::new()); b];
        }
        for (r, (tokens, positions)) in cache.history.iter_mut().enumerate() {
            tokens.extend_from_slice(&step.tokens[r * s..(r + 1) * s]);
            positions.extend_from_slice(&step.positions[r * s..(r + 1) * s]);
        }
        let furthest = step.positions.iter().copied().max().unwrap_or(0) as usize;
        let cached = cache.cached();
        if furthest < *original || cache.long || cached == 0 {
            cache.long |= furthest >= *original;
            return self.pass(cache, step);
        }
        // The whole history in one pass, then the logits the step asked for.
        cache.layers = self.empty_caches();
        let total = cached + s;
        let tokens: Vec<u32> = cache.history.iter().flat_map(|h| h.0.clone()).collect();
        let positions: Vec<u32> = cache.history.iter().flat_map(|h| h.1.clone()).collect();
        let logits = self.pass(
            cache,
            &DecodeStep {
                tokens: &tokens,
                batch: b,
                positions: &positions,
                mask: step.mask,
                all_positions: true,
            },
        )?;
        cache.long = true;
        let vocab = self.vocab;
        let keep = if step.all_positions { s } else { 1 };
        Ok(logits
            .chunks(total * vocab)
            .flat_map(|row| row[(total - keep) * vocab..].to_vec())
            .collect())
    }

    fn empty_caches(&self) -> LayerCaches {
        LayerCaches::new(self.layers.len(), self.cache_size)
    }

    /// One forward pass over the step's tokens, appending to the caches.
    fn pass(&self, cache: &mut LlamaCache, step: &DecodeStep<'_>) -> Result<Vec<f32>> {
        let (b, s) = (step.batch, step.seq());
        let tokens = Tensor::from_slice(step.tokens, b * s, &self.device)?;
        let positions = Tensor::from_slice(step.positions, b * s, &self.device)?;
        let furthest = step.positions.iter().copied().max().unwrap_or(0) as usize;
        if furthest >= self.positions {
            let message = format!(
                "position {furthest} is past the model's {} positions",
                self.positions
            );
            return Err(candle::Error::Msg(message).bt().into());
        }
        let long_table = self.long_rotary.as_ref().map(|l| &l.1);
        for rotary in self.rotary.iter().chain(long_table) {
            rotary.ensure(furthest + 1)?;
        }
        // LongRoPE, as transformers: the long table for every position of a pass that reaches
        // past the original context.
        let long = match &self.long_rotary {
            Some((original, table)) if furthest + 1 > *original => Some(table),
            _ => None,
        };
        let mut x = self.embed.forward(&tokens)?.to_device(&self.device)?;
        if let Some(scale) = self.embed_scale {
            x = (x * scale)?;
        }
        // One bias for global layers, one per window (built when first needed).
        let bias = causal_bias(step.mask, b, s, None, &self.device, self.dtype)?;
        let mut windowed: Vec<(usize, Option<Tensor>)> = Vec::new();
        let hd = self.head_dim;
        let heads = |t: &Tensor, n: usize| t.reshape((b, s, n, hd))?.transpose(1, 2);
        for (layer, kv) in self.layers.iter().zip(&mut cache.layers.0) {
            let h = layer.input_norm.forward(&x)?;
            let [q, k, v] = <[Tensor; 3]>::try_from(layer.qkv.forward(&h)?)
                .map_err(|_| candle::Error::Msg("q, k, v projections".into()))?;
            let (mut q, mut k) = (heads(&q, self.heads)?, heads(&k, self.kv_heads)?);
            let v = heads(&v, self.kv_heads)?.contiguous()?;
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                q = qn.forward(&q.contiguous()?)?;
                k = kn.forward(&k.contiguous()?)?;
            }
            let rotary = long.unwrap_or(&self.rotary[layer.rotary]);
            let q = rotary.apply(&q, &positions)?;
            let k = rotary.apply(&k, &positions)?;
            let (k, v) = kv.append(&k, &v)?;
            let bias = match layer.window {
                Some(w) if k.dim(2)? > w => {
                    if !windowed.iter().any(|(have, _)| *have == w) {
                        let t = causal_bias(step.mask, b, s, Some(w), &self.device, self.dtype)?;
                        windowed.push((w, t));
                    }
                    windowed
                        .iter()
                        .find(|(have, _)| *have == w)
                        .and_then(|(_, t)| t.as_ref())
                }
                _ => bias.as_ref(),
            };
            let att = attention(&q, &k, &v, bias, self.scores)?;
            let mut att = layer.o.forward(&att)?;
            if let Some(n) = &layer.attn_out_norm {
                att = n.forward(&att)?;
            }
            x = (x + att)?;
            let h = layer.ffn_norm.forward(&x)?;
            let [gate, up] = <[Tensor; 2]>::try_from(layer.gate_up.forward(&h)?)
                .map_err(|_| candle::Error::Msg("gate, up projections".into()))?;
            let hidden = match self.activation {
                Activation::Silu => inferox_candle::fused::silu_mul(&gate, &up)?,
                other => (other.apply(&gate)? * up)?,
            };
            let mut ff = layer.down.forward(&hidden)?;
            if let Some(n) = &layer.ffn_out_norm {
                ff = n.forward(&ff)?;
            }
            x = (x + ff)?;
        }
        let x = self.norm.forward(&x)?;
        let x = if step.all_positions {
            x
        } else {
            last_positions(&x, b, s)?
        };
        let mut logits = self.lm_head.forward(&x)?.to_dtype(DType::F32)?;
        if let Some(cap) = self.final_softcap {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        Ok(logits.flatten_all()?.to_vec1()?)
    }
}

impl Decoder for Llama {
    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_positions(&self) -> usize {
        self.positions
    }

    fn new_state(&self) -> DecoderState {
        self.new_state_with_room(self.cache_size)
    }

    fn new_state_with_room(&self, positions: usize) -> DecoderState {
        let cache = LlamaCache {
            layers: LayerCaches::new(self.layers.len(), positions.clamp(1, self.positions)),
            history: Vec::new(),
            long: false,
        };
        DecoderState::new(self, cache)
    }

    fn resizable(&self) -> bool {
        // Rows joining or leaving would have to join and leave the LongRoPE history too.
        self.long_rotary.is_none()
    }

    fn append_rows(
        &self,
        state: &mut DecoderState,
        mut rows: DecoderState,
    ) -> inferox_core::Result<()> {
        let more = std::mem::replace(
            &mut rows.cache_mut::<LlamaCache, _>(self)?.layers,
            LayerCaches(Vec::new()),
        );
        let cache = state.cache_mut::<LlamaCache, _>(self)?;
        cache.layers.append(more).map_err(Into::into)
    }

    fn retain_rows(
        &self,
        state: &mut DecoderState,
        rows: &[usize],
        from: usize,
    ) -> inferox_core::Result<()> {
        let cache = state.cache_mut::<LlamaCache, _>(self)?;
        cache.layers.retain_rows(rows, from).map_err(Into::into)
    }

    fn step(
        &self,
        state: &mut DecoderState,
        step: &DecodeStep<'_>,
    ) -> inferox_core::Result<Vec<f32>> {
        let cache = state.cache_mut::<LlamaCache, _>(self)?;
        self.run(cache, step).map_err(Into::into)
    }
}

impl Model for Llama {
    fn forward(&self, inputs: &NamedTensors) -> inferox_core::Result<NamedTensors> {
        decoder_forward(self, inputs)
    }

    fn decoder(&self) -> Option<&dyn Decoder> {
        Some(self)
    }
}
