//! The Llama family on candle, from Hugging Face safetensors (dense, any float dtype) or GGUF
//! (quantized weights multiplied without dequantizing). Ported from transformers'
//! `modeling_llama.py` (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py>);
//! GGUF tensor names and the interleaved rotary layout of llama GGUFs follow llama.cpp.
//! Errors inside are the backend's ([`inferox_candle::Result`]); the registry loader and the
//! [`Decoder`] methods convert them once.

use super::{Flavor, LlamaConfig};
use crate::common::{Activation, ConfigCheck};
use candle::{DType, Device, Tensor};
use candle_nn::kv_cache::KvCache;
use inferox_candle::decoder::{
    Embedding, Linear, RmsNorm, Rotary, attention, causal_bias, last_positions,
};
use inferox_candle::gguf::GgufWeights;
use inferox_candle::{Result, Weights, candle_core as candle, candle_nn};
use inferox_core::Error;
use inferox_core::load::LoadRequest;
use inferox_core::manifest::{ArtifactRole, ExecutionFormat};
use inferox_core::model::{DecodeStep, Decoder, Model, decoder_forward};
use inferox_core::tensor::NamedTensors;

/// Where parameters come from: a tensor has a Hugging Face name and a GGUF name.
enum Params {
    Hf {
        weights: Weights,
        dtype: DType,
        device: Device,
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
            Params::Hf { weights, .. } => weights.contains(hf),
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
            } => {
                let vb = weights.var_builder(*dtype, device);
                self.hf(vb.get(shape, hf))
            }
            Params::Gguf(g) => g.tensor(gguf, shape),
        }
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

struct Layer {
    input_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    post_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
    cache: KvCache,
}

/// A Llama-family decoder with its KV cache.
pub struct Llama {
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: Rotary,
    activation: Activation,
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
            let cfg = LlamaConfig::from_gguf(&header.metadata_json(), &arch, vocab).map_err(
                |message| Error::Config {
                    path: path.clone(),
                    message,
                },
            )?;
            let check = ConfigCheck {
                path: &path,
                weights: &header.weight_index(),
            };
            cfg.check_weights(&check, Some(&arch))?;
            // llama.cpp stores Llama's q/k rows permuted for adjacent-pair rotation; Qwen's are not.
            (cfg, Params::Gguf(gguf), arch == "llama")
        }
        _ => {
            let cfg: LlamaConfig = req.config()?;
            let dtype = inferox_candle::dtype(req.dtype())?;
            let weights = Weights::open(&req.artifacts(ArtifactRole::Weights)?)?;
            let config_path = req.artifacts(ArtifactRole::Config)?.remove(0);
            let check = ConfigCheck {
                path: config_path.path(),
                weights: weights.index(),
            };
            cfg.check_weights(&check, None)?;
            (
                cfg,
                Params::Hf {
                    weights,
                    dtype,
                    device: device.clone(),
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

impl Llama {
    fn load(cfg: &LlamaConfig, p: &Params, interleaved: bool, device: Device) -> Result<Llama> {
        let (h, hd) = (cfg.hidden_size, cfg.head_size());
        let (heads, kv) = (cfg.num_attention_heads, cfg.kv_heads());
        let eps = cfg.rms_norm_eps;
        let dtype = match p {
            Params::Hf { dtype, .. } => *dtype,
            Params::Gguf(_) => DType::F32,
        };
        let norm = |hf: &str, gguf: &str, size: usize| -> Result<RmsNorm> {
            Ok(RmsNorm::new(p.tensor(hf, gguf, &[size])?, eps))
        };
        let cache_size = cfg.max_sequence().min(512);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let hf = |n: &str| format!("model.layers.{i}.{n}");
            let gg = |n: &str| format!("blk.{i}.{n}");
            let (q_norm, k_norm) = if cfg.flavor() == Flavor::Qwen3 {
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
            layers.push(Layer {
                input_norm: norm(&hf("input_layernorm.weight"), &gg("attn_norm.weight"), h)?,
                q: p.linear(&hf("self_attn.q_proj"), &gg("attn_q"), heads * hd, h, bias)?,
                k: p.linear(&hf("self_attn.k_proj"), &gg("attn_k"), kv * hd, h, bias)?,
                v: p.linear(&hf("self_attn.v_proj"), &gg("attn_v"), kv * hd, h, bias)?,
                o: p.linear(
                    &hf("self_attn.o_proj"),
                    &gg("attn_output"),
                    h,
                    heads * hd,
                    cfg.attention_bias,
                )?,
                q_norm,
                k_norm,
                post_norm: norm(
                    &hf("post_attention_layernorm.weight"),
                    &gg("ffn_norm.weight"),
                    h,
                )?,
                gate: p.linear(
                    &hf("mlp.gate_proj"),
                    &gg("ffn_gate"),
                    cfg.intermediate_size,
                    h,
                    false,
                )?,
                up: p.linear(
                    &hf("mlp.up_proj"),
                    &gg("ffn_up"),
                    cfg.intermediate_size,
                    h,
                    false,
                )?,
                down: p.linear(
                    &hf("mlp.down_proj"),
                    &gg("ffn_down"),
                    h,
                    cfg.intermediate_size,
                    false,
                )?,
                cache: KvCache::new(2, cache_size),
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
        let mut inv_freq = cfg.inv_freq().map_err(|message| Error::Config {
            path: Default::default(),
            message,
        })?;
        // Llama 3 GGUFs carry their frequency factors as a tensor.
        if let Params::Gguf(g) = p
            && g.has("rope_freqs.weight")
        {
            let factors: Vec<f32> = g.tensor("rope_freqs.weight", &[hd / 2])?.to_vec1()?;
            inv_freq.iter_mut().zip(factors).for_each(|(f, k)| *f /= k);
        }
        let positions = cfg.max_sequence();
        Ok(Llama {
            rotary: Rotary::new(&inv_freq, positions, interleaved, &device, dtype)?,
            norm: norm("model.norm.weight", "output_norm.weight", h)?,
            embed,
            layers,
            lm_head,
            activation: cfg.hidden_act,
            heads,
            kv_heads: kv,
            head_dim: hd,
            vocab,
            positions,
            dtype,
            device,
        })
    }

    /// The logits of one decoding step, flattened.
    fn run(&mut self, step: &DecodeStep<'_>) -> Result<Vec<f32>> {
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
        self.rotary.ensure(furthest + 1)?;
        let mut x = self.embed.forward(&tokens)?.to_device(&self.device)?;
        let bias = causal_bias(step.mask, b, s, &self.device, self.dtype)?;
        let hd = self.head_dim;
        let heads = |t: Tensor, n: usize| t.reshape((b, s, n, hd))?.transpose(1, 2);
        for layer in &mut self.layers {
            let h = layer.input_norm.forward(&x)?;
            let mut q = heads(layer.q.forward(&h)?, self.heads)?;
            let mut k = heads(layer.k.forward(&h)?, self.kv_heads)?;
            let v = heads(layer.v.forward(&h)?, self.kv_heads)?.contiguous()?;
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                q = qn.forward(&q.contiguous()?)?;
                k = kn.forward(&k.contiguous()?)?;
            }
            let q = self.rotary.apply(&q, &positions)?;
            let k = self.rotary.apply(&k, &positions)?;
            let (k, v) = layer.cache.append(&k, &v)?;
            let att = attention(&q, &k, &v, bias.as_ref(), 1.0 / (hd as f64).sqrt())?;
            x = (x + layer.o.forward(&att)?)?;
            let h = layer.post_norm.forward(&x)?;
            let ff = (self.activation.apply(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
            x = (x + layer.down.forward(&ff)?)?;
        }
        let x = self.norm.forward(&x)?;
        let x = if step.all_positions {
            x
        } else {
            last_positions(&x, b, s)?
        };
        Ok(self
            .lm_head
            .forward(&x)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?)
    }
}

impl Decoder for Llama {
    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_positions(&self) -> usize {
        self.positions
    }

    fn cached(&self) -> usize {
        self.layers.first().map_or(0, |l| l.cache.current_seq_len())
    }

    fn reset(&mut self) {
        for layer in &mut self.layers {
            layer.cache.reset();
        }
    }

    fn resizable(&self) -> bool {
        true
    }

    fn add_rows(&mut self, n: usize) -> inferox_core::Result<()> {
        for layer in &mut self.layers {
            inferox_candle::decoder::add_cache_rows(&mut layer.cache, n)
                .map_err(inferox_candle::Error::from)?;
        }
        Ok(())
    }

    fn retain_rows(&mut self, rows: &[usize], from: usize) -> inferox_core::Result<()> {
        for layer in &mut self.layers {
            inferox_candle::decoder::retain_cache_rows(&mut layer.cache, rows, from)
                .map_err(inferox_candle::Error::from)?;
        }
        Ok(())
    }

    fn step(&mut self, step: &DecodeStep<'_>) -> inferox_core::Result<Vec<f32>> {
        self.run(step).map_err(Into::into)
    }
}

impl Model for Llama {
    fn forward(&mut self, inputs: &NamedTensors) -> inferox_core::Result<NamedTensors> {
        decoder_forward(self, inputs)
    }

    fn decoder(&mut self) -> Option<&mut dyn Decoder> {
        Some(self)
    }
}
