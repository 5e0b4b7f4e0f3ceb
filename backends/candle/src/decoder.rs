//! Building blocks that decoder architectures share on candle: linear layers over dense or
//! quantized weights, rotary position tables gathered per token, the causal + padding attention
//! bias, and grouped-query attention over a KV cache.

use super::candle_core as candle;
use candle::quantized::{QMatMul, QTensor};
use candle::{DType, Device, Module, Tensor};

/// A linear layer whose weight is dense or quantized (GGUF).
pub enum Linear {
    /// Weight stored transposed (`[in, out]`, contiguous), as the GEMM kernel reads it.
    Dense {
        weight_t: Tensor,
        bias: Option<Tensor>,
    },
    /// A quantized `[out, in]` weight (candle multiplies it without dequantizing).
    Quantized {
        weight: QMatMul,
        bias: Option<Tensor>,
    },
    /// A Q4_0, Q4_1 or Q8_0 `[out, in]` weight multiplied by our own CPU kernels.
    Packed {
        weight: super::quant::QMatrix,
        bias: Option<Tensor>,
    },
}

impl Linear {
    /// From a dense `[out, in]` weight (the PyTorch layout).
    pub fn dense(weight: &Tensor, bias: Option<Tensor>) -> candle::Result<Linear> {
        Ok(Linear::Dense {
            weight_t: weight.t()?.contiguous()?,
            bias,
        })
    }

    /// From a dense weight already stored `[in, out]` (GPT-2's Conv1D).
    pub fn dense_transposed(weight_t: Tensor, bias: Option<Tensor>) -> Linear {
        Linear::Dense { weight_t, bias }
    }

    /// From a GGUF tensor: quantized types stay quantized, float types become dense.
    pub fn from_qtensor(q: QTensor, bias: Option<Tensor>) -> candle::Result<Linear> {
        use super::quant::{Kind, QMatrix};
        use candle::quantized::GgmlDType;
        let kind = match q.dtype() {
            GgmlDType::Q4_0 => Some(Kind::Q4_0),
            GgmlDType::Q4_1 => Some(Kind::Q4_1),
            GgmlDType::Q8_0 => Some(Kind::Q8_0),
            _ => None,
        };
        if let (Some(kind), true, [rows, cols]) = (kind, q.device().is_cpu(), q.shape().dims())
            && let Some(weight) = QMatrix::new(kind, *rows, *cols, &q.data()?)
        {
            return Ok(Linear::Packed { weight, bias });
        }
        if !matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) {
            Ok(Linear::Quantized {
                weight: QMatMul::from_qtensor(q)?,
                bias,
            })
        } else {
            let weight = q.dequantize(&q.device())?.to_dtype(DType::F32)?;
            Linear::dense(&weight, bias)
        }
    }

    /// `x` is `[tokens, in]`; the result is `[tokens, out]`.
    pub fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        let (y, bias) = match self {
            Linear::Dense { weight_t, bias } => match super::dense::try_vec_mat(x, weight_t)? {
                Some(y) => (y, bias),
                None => (x.matmul(weight_t)?, bias),
            },
            Linear::Quantized { weight, bias } => (weight.forward(x)?, bias),
            Linear::Packed { weight, bias } => {
                let rows = x.dim(0)?;
                let input = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                let y = Tensor::from_vec(weight.matmul(&input), (rows, weight.rows()), x.device())?;
                (y.to_dtype(x.dtype())?, bias)
            }
        };
        match bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Rotary position embedding tables, grown on demand up to the model's maximum.
pub struct Rotary {
    inv_freq: Vec<f32>,
    limit: usize,
    cos: Tensor,
    sin: Tensor,
    /// Pairs adjacent dimensions (GGUF llama layout) instead of the two halves (HF layout).
    interleaved: bool,
}

impl Rotary {
    /// Tables for rotating `2 * inv_freq.len()` dimensions at positions below `limit`.
    pub fn new(
        inv_freq: &[f32],
        limit: usize,
        interleaved: bool,
        device: &Device,
        dtype: DType,
    ) -> candle::Result<Rotary> {
        let mut r = Rotary {
            inv_freq: inv_freq.to_vec(),
            limit,
            cos: Tensor::zeros((0, inv_freq.len()), dtype, device)?,
            sin: Tensor::zeros((0, inv_freq.len()), dtype, device)?,
            interleaved,
        };
        r.ensure(limit.min(1024))?;
        Ok(r)
    }

    /// Makes the tables cover positions below `n` (at most the limit).
    pub fn ensure(&mut self, n: usize) -> candle::Result<()> {
        let have = self.cos.dim(0)?;
        if n <= have {
            return Ok(());
        }
        let len = n.max(2 * have).min(self.limit);
        let half = self.inv_freq.len();
        let mut angles = Vec::with_capacity(len * half);
        for p in 0..len {
            angles.extend(self.inv_freq.iter().map(|f| p as f32 * f));
        }
        let angles = Tensor::from_vec(angles, (len, half), self.cos.device())?;
        self.cos = angles.cos()?.to_dtype(self.cos.dtype())?;
        self.sin = angles.sin()?.to_dtype(self.sin.dtype())?;
        Ok(())
    }

    /// Rotates `x` (`[batch, heads, seq, dim]`) at `positions` (u32, `[batch * seq]`).
    pub fn apply(&self, x: &Tensor, positions: &Tensor) -> candle::Result<Tensor> {
        let (b, _, s, _) = x.dims4()?;
        let cos = self.cos.index_select(positions, 0)?.reshape((b, s, ()))?;
        let sin = self.sin.index_select(positions, 0)?.reshape((b, s, ()))?;
        let x = x.contiguous()?;
        if self.interleaved {
            candle_nn::rotary_emb::rope_i(&x, &cos, &sin)
        } else {
            candle_nn::rotary_emb::rope(&x, &cos, &sin)
        }
    }
}

/// The most negative finite value of `dtype`, the score of a masked position: finite, so a
/// fully masked row (a padding query) stays finite.
pub fn masked_score(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => -65504.0,
        DType::BF16 => -3.38e38,
        _ => f32::MIN,
    }
}

/// The additive attention bias `[batch, 1, seq, cached + seq]`: a new token sees the cached and
/// earlier new tokens that are not padding. `None` when that is everything (a single
/// unpadded step).
pub fn causal_bias(
    mask: &[u8],
    batch: usize,
    seq: usize,
    device: &Device,
    dtype: DType,
) -> candle::Result<Option<Tensor>> {
    if seq == 1 && mask.iter().all(|&m| m != 0) {
        return Ok(None);
    }
    let total = mask.len() / batch.max(1);
    let bias = inferox_core::model::mask_bias(mask, batch, seq, true, masked_score(dtype));
    Tensor::from_vec(bias, (batch, 1, seq, total), device)?
        .to_dtype(dtype)
        .map(Some)
}

/// The additive bias of a key mask (`[batch, keys]`, 1 = attend) for bidirectional attention:
/// `[batch, 1, 1, keys]`; `None` when nothing is masked.
pub fn key_bias(
    mask: &[u8],
    batch: usize,
    device: &Device,
    dtype: DType,
) -> candle::Result<Option<Tensor>> {
    if mask.iter().all(|&m| m != 0) {
        return Ok(None);
    }
    let keys = mask.len() / batch.max(1);
    let bias = inferox_core::model::mask_bias(mask, batch, 1, false, masked_score(dtype));
    Tensor::from_vec(bias, (batch, 1, 1, keys), device)?
        .to_dtype(dtype)
        .map(Some)
}

/// Scaled dot-product attention of `q` (`[batch, heads, seq, dim]`) over `k`, `v`
/// (`[batch, kv_heads, total, dim]`), with grouped-query heads sharing a KV head without copying
/// it. Returns `[batch * seq, heads * dim]`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
) -> candle::Result<Tensor> {
    let (b, heads, seq, dim) = q.dims4()?;
    let (_, kv_heads, total, _) = k.dims4()?;
    let group = heads / kv_heads;
    // [b, kv, group * seq, dim]: the query heads of a group are adjacent.
    let q = (q * scale)?.reshape((b, kv_heads, group * seq, dim))?;
    let mut scores = q.matmul(&k.t()?)?;
    if let Some(bias) = bias {
        scores = scores
            .reshape((b, kv_heads, group, seq, total))?
            .broadcast_add(&bias.unsqueeze(1)?)?
            .reshape((b, kv_heads, group * seq, total))?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs
        .matmul(&v.contiguous()?)?
        .reshape((b, heads, seq, dim))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b * seq, heads * dim))
}

/// Rows of `x` (`[batch * seq, hidden]`) at the last position of every sequence: `[batch, hidden]`.
pub fn last_positions(x: &Tensor, batch: usize, seq: usize) -> candle::Result<Tensor> {
    x.reshape((batch, seq, ()))?
        .narrow(1, seq - 1, 1)?
        .squeeze(1)
}

/// Float32 logits of `x` (`[rows, hidden]`) against an output matrix `w` (`[vocab, hidden]`),
/// flattened. One row (decoding) is a matrix-vector product that streams `w` once.
pub fn output_logits(x: &Tensor, w: &Tensor) -> candle::Result<Vec<f32>> {
    let logits = match super::dense::try_mat_vec(x, w)? {
        Some(logits) => logits,
        None => x.matmul(&w.t()?)?,
    };
    logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
}

/// Root-mean-square layer norm (Llama).
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    /// A norm with this scale vector.
    pub fn new(weight: Tensor, eps: f64) -> RmsNorm {
        RmsNorm {
            weight,
            eps: eps as f32,
        }
    }

    /// Normalises the last dimension.
    pub fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.weight, self.eps)
    }
}
