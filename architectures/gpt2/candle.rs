//! GPT-2 on candle, ported from transformers' `modeling_gpt2.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt2/modeling_gpt2.py>).
//! Errors inside are the backend's ([`inferox_candle::Result`]); the registry loader and the
//! [`Decoder`] methods convert them once.

use super::Gpt2Config;
use crate::common::{Activation, ConfigCheck};
use candle::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};
use inferox_candle::decoder::{
    LayerCaches, Linear, Scores, attention, causal_bias, last_positions, output_logits,
};
use inferox_candle::{Result, Weights, candle_core as candle, candle_nn};
use inferox_core::load::LoadRequest;
use inferox_core::manifest::ArtifactRole;
use inferox_core::model::{DecodeStep, Decoder, DecoderState, Model, decoder_forward};
use inferox_core::tensor::NamedTensors;

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    c_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
}

/// Conv1D: weight `[in, out]` (already the layout the GEMM wants) and bias `[out]`.
fn conv1d(vb: VarBuilder, input: usize, output: usize) -> candle::Result<Linear> {
    Ok(Linear::dense_transposed(
        vb.get((input, output), "weight")?,
        Some(vb.get(output, "bias")?),
    ))
}

impl Block {
    fn load(vb: VarBuilder, cfg: &Gpt2Config) -> candle::Result<Block> {
        let e = cfg.n_embd;
        let eps = cfg.layer_norm_epsilon;
        Ok(Block {
            ln_1: candle_nn::layer_norm(e, eps, vb.pp("ln_1"))?,
            c_attn: conv1d(vb.pp("attn.c_attn"), e, 3 * e)?,
            c_proj: conv1d(vb.pp("attn.c_proj"), e, e)?,
            ln_2: candle_nn::layer_norm(e, eps, vb.pp("ln_2"))?,
            c_fc: conv1d(vb.pp("mlp.c_fc"), e, cfg.inner())?,
            mlp_proj: conv1d(vb.pp("mlp.c_proj"), cfg.inner(), e)?,
        })
    }
}

/// GPT-2; its KV caches are [`DecoderState`]s.
pub struct Gpt2 {
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Tensor,
    activation: Activation,
    heads: usize,
    head_dim: usize,
    scale_by_layer: bool,
    scale_weights: bool,
    vocab: usize,
    positions: usize,
    /// Positions a new KV cache has room for before it grows.
    cache_size: usize,
    dtype: DType,
    device: Device,
}

/// The registry's loader for the candle backend.
pub fn load(req: &LoadRequest<'_>) -> inferox_core::Result<Box<dyn Model>> {
    let cfg: Gpt2Config = req.config()?;
    let config_path = req.artifacts(ArtifactRole::Config)?.remove(0);
    let weights = Weights::open(&req.artifacts(ArtifactRole::Weights)?)?;
    let prefix = super::prefix(|n| weights.contains(n));
    let check = ConfigCheck {
        path: config_path.path(),
        weights: weights.index(),
    };
    cfg.check_weights(&check, prefix)?;
    cfg.check().map_err(|message| check.error(message))?;
    let device = inferox_candle::device(req.options.device)?;
    let dtype = inferox_candle::dtype(req.dtype())?;
    let vb = weights.var_builder(dtype, &device);
    let model = Gpt2::load(vb, &cfg, prefix, device).map_err(|e| weights.explain(e))?;
    Ok(Box::new(model))
}

impl Gpt2 {
    fn load(
        vb: VarBuilder,
        cfg: &Gpt2Config,
        prefix: &str,
        device: Device,
    ) -> candle::Result<Gpt2> {
        let t = match prefix.strip_suffix('.') {
            Some(p) => vb.pp(p),
            None => vb.clone(),
        };
        let e = cfg.n_embd;
        let wte = t.get((cfg.vocab_size, e), "wte.weight")?;
        let lm_head = if vb.contains_tensor("lm_head.weight") {
            vb.get((cfg.vocab_size, e), "lm_head.weight")?
        } else {
            wte.clone()
        };
        let cache_size = cfg.n_positions.min(inferox_candle::decoder::CACHE_CHUNK);
        Ok(Gpt2 {
            wpe: t.get((cfg.n_positions, e), "wpe.weight")?,
            blocks: (0..cfg.n_layer)
                .map(|i| Block::load(t.pp(format!("h.{i}")), cfg))
                .collect::<candle::Result<_>>()?,
            ln_f: candle_nn::layer_norm(e, cfg.layer_norm_epsilon, t.pp("ln_f"))?,
            wte,
            lm_head,
            activation: cfg.activation_function,
            heads: cfg.n_head,
            head_dim: e / cfg.n_head,
            scale_by_layer: cfg.scale_attn_by_inverse_layer_idx,
            scale_weights: cfg.scale_attn_weights,
            vocab: cfg.vocab_size,
            positions: cfg.n_positions,
            cache_size,
            dtype: vb.dtype(),
            device,
        })
    }

    /// The logits of one decoding step, flattened.
    fn run(&self, cache: &mut LayerCaches, step: &DecodeStep<'_>) -> Result<Vec<f32>> {
        let (b, s) = (step.batch, step.seq());
        let tokens = Tensor::from_slice(step.tokens, b * s, &self.device)?;
        let positions = Tensor::from_slice(step.positions, b * s, &self.device)?;
        let mut x = (self.wte.index_select(&tokens, 0)? + self.wpe.index_select(&positions, 0)?)?;
        let bias = causal_bias(step.mask, b, s, None, &self.device, self.dtype)?;
        let (heads, hd) = (self.heads, self.head_dim);
        for (i, (block, kv)) in self.blocks.iter().zip(&mut cache.0).enumerate() {
            let h = block.ln_1.forward(&x)?;
            let qkv = block
                .c_attn
                .forward(&h)?
                .reshape((b, s, 3, heads, hd))?
                .permute((2, 0, 3, 1, 4))?;
            let q = qkv.get(0)?.contiguous()?;
            let (k, v) = kv.append(&qkv.get(1)?.contiguous()?, &qkv.get(2)?.contiguous()?)?;
            let mut scale = if self.scale_weights {
                1.0 / (hd as f64).sqrt()
            } else {
                1.0
            };
            if self.scale_by_layer {
                scale /= (i + 1) as f64;
            }
            let att = attention(&q, &k, &v, bias.as_ref(), Scores::scaled(scale))?;
            x = (x + block.c_proj.forward(&att)?)?;
            let h = block.ln_2.forward(&x)?;
            let m = self.activation.apply(&block.c_fc.forward(&h)?)?;
            x = (x + block.mlp_proj.forward(&m)?)?;
        }
        let x = self.ln_f.forward(&x)?;
        let x = if step.all_positions {
            x
        } else {
            last_positions(&x, b, s)?
        };
        Ok(output_logits(&x, &self.lm_head)?)
    }
}

impl Decoder for Gpt2 {
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
        let room = positions.clamp(1, self.max_positions());
        DecoderState::new(self, LayerCaches::new(self.blocks.len(), room))
    }

    fn resizable(&self) -> bool {
        true
    }

    fn append_rows(
        &self,
        state: &mut DecoderState,
        mut rows: DecoderState,
    ) -> inferox_core::Result<()> {
        let more = std::mem::replace(
            rows.cache_mut::<LayerCaches, _>(self)?,
            LayerCaches(Vec::new()),
        );
        let cache = state.cache_mut::<LayerCaches, _>(self)?;
        cache.append(more).map_err(Into::into)
    }

    fn retain_rows(
        &self,
        state: &mut DecoderState,
        rows: &[usize],
        from: usize,
    ) -> inferox_core::Result<()> {
        let cache = state.cache_mut::<LayerCaches, _>(self)?;
        cache.retain_rows(rows, from).map_err(Into::into)
    }

    fn step(
        &self,
        state: &mut DecoderState,
        step: &DecodeStep<'_>,
    ) -> inferox_core::Result<Vec<f32>> {
        let cache = state.cache_mut::<LayerCaches, _>(self)?;
        self.run(cache, step).map_err(Into::into)
    }
}

impl Model for Gpt2 {
    fn forward(&self, inputs: &NamedTensors) -> inferox_core::Result<NamedTensors> {
        decoder_forward(self, inputs)
    }

    fn decoder(&self) -> Option<&dyn Decoder> {
        Some(self)
    }
}
