//! Building blocks on candle that several encoders share (BERT, ViT, CLIP): dense layers with
//! pre-transposed weights, layer norms, and multi-head self-attention over a fused QKV
//! projection.

use inferox_candle::candle_core::{self as candle, Tensor};
use inferox_candle::candle_nn::{self, LayerNorm, VarBuilder};

/// A dense layer with its weight stored transposed (`[in, out]`, contiguous): the layout the
/// GEMM kernel reads without repacking, which halves the cost of small batches.
pub struct Dense {
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl Dense {
    /// From a `[out, in]` weight (PyTorch's `nn.Linear` layout) and an optional bias.
    pub fn new(weight: &Tensor, bias: Option<Tensor>) -> candle::Result<Dense> {
        Ok(Dense {
            weight_t: weight.t()?.contiguous()?,
            bias,
        })
    }

    /// `weight` and `bias` under `vb`.
    pub fn load(vb: VarBuilder, input: usize, output: usize) -> candle::Result<Dense> {
        let weight = vb.get((output, input), "weight")?;
        Dense::new(&weight, Some(vb.get(output, "bias")?))
    }

    /// `weight` alone under `vb` (a projection without bias).
    pub fn load_no_bias(vb: VarBuilder, input: usize, output: usize) -> candle::Result<Dense> {
        Dense::new(&vb.get((output, input), "weight")?, None)
    }

    /// `x` is `[tokens, in]`.
    pub fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        let y = x.matmul(&self.weight_t)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// A layer norm of `size` under `vb` (`weight`, `bias`).
pub fn layer_norm(vb: VarBuilder, size: usize, eps: f64) -> candle::Result<LayerNorm> {
    candle_nn::layer_norm(size, eps, vb)
}

/// The query, key and value projections under `vb` (`{q}.weight`, `{q}.bias`, ... for the
/// three names given) fused into one `[hidden, 3 × hidden]` layer.
pub fn fused_qkv(vb: &VarBuilder, names: [&str; 3], hidden: usize) -> candle::Result<Dense> {
    let mut weights = Vec::with_capacity(3);
    let mut biases = Vec::with_capacity(3);
    for name in names {
        weights.push(vb.pp(name).get((hidden, hidden), "weight")?);
        biases.push(vb.pp(name).get(hidden, "bias")?);
    }
    Dense::new(&Tensor::cat(&weights, 0)?, Some(Tensor::cat(&biases, 0)?))
}

/// Multi-head self-attention of `x` (`[batch × seq, hidden]`) through the fused `qkv`
/// projection, with an optional additive `bias` broadcast over `[batch, heads, seq, seq]`.
/// Returns the heads merged back, `[batch × seq, hidden]` (before the output projection).
pub fn self_attention(
    qkv: &Dense,
    x: &Tensor,
    bias: Option<&Tensor>,
    (batch, seq): (usize, usize),
    heads: usize,
) -> candle::Result<Tensor> {
    let hidden = x.dim(1)?;
    let hd = hidden / heads;
    let qkv = qkv
        .forward(x)?
        .reshape((batch, seq, 3, heads, hd))?
        .permute((2, 0, 3, 1, 4))?;
    let scale = 1.0 / (hd as f64).sqrt();
    let q = (qkv.get(0)? * scale)?.contiguous()?;
    let k = qkv.get(1)?.contiguous()?;
    let v = qkv.get(2)?.contiguous()?;
    let mut scores = q.matmul(&k.t()?)?;
    if let Some(bias) = bias {
        scores = scores.broadcast_add(bias)?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs
        .matmul(&v)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((batch * seq, hidden))
}
