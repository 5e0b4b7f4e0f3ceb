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
    /// A quantized `[out, in]` weight of a type our own CPU kernels multiply.
    Packed {
        weight: Packed,
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
        use candle::quantized::GgmlDType;
        if let (true, [rows, cols]) = (q.device().is_cpu(), q.shape().dims())
            && let Some(weight) = Packed::repack(q.dtype(), [*rows, *cols], &q.data()?, |_| {})
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

    /// From a GGUF tensor as stored: repacked straight from the mapping where one of our
    /// kernels takes its type (on the CPU), through candle's reader otherwise.
    pub fn from_gguf(
        g: &super::gguf::GgufWeights,
        name: &str,
        shape: [usize; 2],
        bias: Option<Tensor>,
    ) -> crate::Result<Linear> {
        let raw = g.raw(name, &shape)?;
        // Each part's mapped pages go as soon as it is repacked. A page across two parts is
        // kept by both (only whole pages are dropped): each part starts a little early, by
        // the largest page size, so that the next one takes it.
        let release = |part: std::ops::Range<usize>| {
            raw.release(part.start.saturating_sub(64 << 10)..part.end)
        };
        if g.device().is_cpu()
            && let Some(weight) = Packed::repack(raw.dtype, shape, raw.bytes(), release)
        {
            return Ok(Linear::Packed { weight, bias });
        }
        Ok(Linear::from_qtensor(g.qtensor(name, &shape)?, bias)?)
    }

    /// One layer computing `parts` (which take the same input) side by side, their outputs
    /// concatenated, and the output size of each: when they are all weights of one of our
    /// quantized kernels, of one type and width, with biases all or none. The input is then
    /// quantized once and the worker pool runs once, instead of once per part (q, k and v;
    /// gate and up). Otherwise the parts come back unchanged.
    pub fn fuse(parts: Vec<Linear>) -> Result<(Linear, Vec<usize>), Vec<Linear>> {
        let same = |a: &Packed, b: &Packed| match (a, b) {
            (Packed::Blocks(a), Packed::Blocks(b)) => a.kind() == b.kind() && a.cols() == b.cols(),
            (Packed::Super(a), Packed::Super(b)) => a.kind() == b.kind() && a.cols() == b.cols(),
            _ => false,
        };
        let fusable = match parts.first() {
            Some(Linear::Packed {
                weight: first,
                bias,
            }) => parts.iter().all(|p| match p {
                Linear::Packed { weight, bias: b } => {
                    same(first, weight) && b.is_some() == bias.is_some()
                }
                _ => false,
            }),
            _ => false,
        };
        if !fusable || parts.len() < 2 {
            return Err(parts);
        }
        let biases: Vec<&Tensor> = parts
            .iter()
            .filter_map(|p| match p {
                Linear::Packed { bias, .. } => bias.as_ref(),
                _ => None,
            })
            .collect();
        let bias = if biases.is_empty() {
            None
        } else {
            match Tensor::cat(&biases, 0) {
                Ok(b) => Some(b),
                Err(_) => return Err(parts),
            }
        };
        let mut sizes = Vec::with_capacity(parts.len());
        let mut fused: Option<Packed> = None;
        for part in parts {
            let Linear::Packed { weight, .. } = part else {
                unreachable!("checked above")
            };
            sizes.push(weight.rows());
            fused = Some(match (fused, weight) {
                (None, w) => w,
                (Some(Packed::Blocks(mut a)), Packed::Blocks(b)) => {
                    a.append(b)
                        .unwrap_or_else(|_| unreachable!("checked above"));
                    Packed::Blocks(a)
                }
                (Some(Packed::Super(mut a)), Packed::Super(b)) => {
                    a.append(b)
                        .unwrap_or_else(|_| unreachable!("checked above"));
                    Packed::Super(a)
                }
                _ => unreachable!("checked above"),
            });
        }
        let weight = fused.unwrap_or_else(|| unreachable!("two parts at least"));
        Ok((Linear::Packed { weight, bias }, sizes))
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

/// A quantized weight in the layout of one of our CPU kernels.
pub enum Packed {
    /// Blocks of 32 (Q4_0, Q4_1, Q8_0).
    Blocks(super::quant::QMatrix),
    /// Super-blocks of 256 (the k-quants).
    Super(super::kquant::KMatrix),
}

impl Packed {
    /// Repacks the GGUF blocks `data` of a `[rows, cols]` matrix when its type has a kernel of
    /// ours (`None` otherwise, or when the sizes disagree), telling `consumed` of each part of
    /// `data` once it has been read.
    fn repack(
        dtype: candle::quantized::GgmlDType,
        [rows, cols]: [usize; 2],
        data: &[u8],
        consumed: impl FnMut(std::ops::Range<usize>),
    ) -> Option<Packed> {
        use super::kquant::{KKind, KMatrix};
        use super::quant::{Kind, QMatrix};
        use candle::quantized::GgmlDType as G;
        let block = match dtype {
            G::Q4_0 => Some(Kind::Q4_0),
            G::Q4_1 => Some(Kind::Q4_1),
            G::Q5_0 => Some(Kind::Q5_0),
            G::Q5_1 => Some(Kind::Q5_1),
            G::Q8_0 => Some(Kind::Q8_0),
            _ => None,
        };
        let sup = match dtype {
            G::Q2K => Some(KKind::Q2K),
            G::Q3K => Some(KKind::Q3K),
            G::Q4K => Some(KKind::Q4K),
            G::Q5K => Some(KKind::Q5K),
            G::Q6K => Some(KKind::Q6K),
            _ => None,
        };
        match (block, sup) {
            (Some(kind), _) => {
                QMatrix::repack(kind, rows, cols, data, consumed).map(Packed::Blocks)
            }
            (_, Some(kind)) => KMatrix::repack(kind, rows, cols, data, consumed).map(Packed::Super),
            _ => None,
        }
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        match self {
            Packed::Blocks(m) => m.rows(),
            Packed::Super(m) => m.rows(),
        }
    }

    /// `x · selfᵀ` for `x` of `n` rows of the input size.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        match self {
            Packed::Blocks(m) => m.matmul(x),
            Packed::Super(m) => m.matmul(x),
        }
    }
}

/// A token embedding table: dense, or quantized as a GGUF stores it — read in place from the
/// mapping, one row per token (a 150k-token vocabulary in f32 would be several times the size
/// of the whole file).
pub enum Embedding {
    /// `[vocab, hidden]`.
    Dense(Tensor),
    /// The stored rows, with the dtype the model computes in.
    Quantized(super::gguf::RawTensor, DType),
}

impl Embedding {
    /// Token embedding `name` (`[vocab, hidden]`) of a GGUF: used in place on the CPU,
    /// dequantized on other devices.
    pub fn from_gguf(
        g: &super::gguf::GgufWeights,
        name: &str,
        shape: [usize; 2],
        dtype: DType,
    ) -> crate::Result<Embedding> {
        if g.device().is_cpu() {
            return Ok(Embedding::Quantized(g.raw(name, &shape)?, dtype));
        }
        Ok(Embedding::Dense(g.tensor(name, &shape)?.to_dtype(dtype)?))
    }

    /// The rows of `ids` (u32, any shape flattened): `[ids, hidden]`.
    pub fn forward(&self, ids: &Tensor) -> candle::Result<Tensor> {
        let (raw, dtype) = match self {
            Embedding::Dense(t) => return t.index_select(ids, 0),
            Embedding::Quantized(raw, dtype) => (raw, *dtype),
        };
        let (rows, cols) = (raw.shape[0], raw.shape[1]);
        let ids = ids.flatten_all()?.to_vec1::<u32>()?;
        let row_bytes = cols / raw.dtype.block_size() * raw.dtype.type_size();
        // Rows are read from the file, not touched through the mapping: a fault there maps
        // whole large folios, and the table would creep into resident memory a few megabytes
        // at a time. The buffer is u64s so that every block type is aligned in it.
        let mut words = vec![0u64; row_bytes.div_ceil(8)];
        // SAFETY: the bytes of initialised u64s, within the vector, borrowed while it lives.
        let row =
            unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), row_bytes) };
        let mut out = vec![0f32; ids.len() * cols];
        for (&id, y) in ids.iter().zip(out.chunks_exact_mut(cols)) {
            let id = id as usize;
            if id >= rows {
                candle::bail!("token id {id} is outside the embedding table's {rows} rows");
            }
            raw.copy_range(id * row_bytes, row)
                .map_err(|e| candle::Error::Msg(format!("reading embedding row {id}: {e}")))?;
            dequantize_row(raw.dtype, row, y)?;
        }
        Tensor::from_vec(out, (ids.len(), cols), &Device::Cpu)?.to_dtype(dtype)
    }
}

/// Dequantizes one row of GGUF blocks of `dtype` into `y` with candle's block types.
fn dequantize_row(
    dtype: candle::quantized::GgmlDType,
    bytes: &[u8],
    y: &mut [f32],
) -> candle::Result<()> {
    use candle::quantized::GgmlDType as G;
    use candle::quantized::k_quants::*;
    fn blocks<T: GgmlType>(bytes: &[u8], y: &mut [f32]) -> candle::Result<()> {
        let n = y.len() / T::BLCK_SIZE;
        if bytes.len() != n * std::mem::size_of::<T>()
            || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
        {
            candle::bail!("misaligned or misshapen {:?} row", T::DTYPE);
        }
        // SAFETY: the length and alignment were checked; the block types are plain data
        // (`repr(C)` integers and halves) for which every bit pattern is a value.
        let xs = unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, n) };
        T::to_float(xs, y);
        Ok(())
    }
    match dtype {
        G::F32 => blocks::<f32>(bytes, y),
        G::F16 => blocks::<half::f16>(bytes, y),
        G::BF16 => blocks::<half::bf16>(bytes, y),
        G::Q4_0 => blocks::<BlockQ4_0>(bytes, y),
        G::Q4_1 => blocks::<BlockQ4_1>(bytes, y),
        G::Q5_0 => blocks::<BlockQ5_0>(bytes, y),
        G::Q5_1 => blocks::<BlockQ5_1>(bytes, y),
        G::Q8_0 => blocks::<BlockQ8_0>(bytes, y),
        G::Q8_1 => blocks::<BlockQ8_1>(bytes, y),
        G::Q2K => blocks::<BlockQ2K>(bytes, y),
        G::Q3K => blocks::<BlockQ3K>(bytes, y),
        G::Q4K => blocks::<BlockQ4K>(bytes, y),
        G::Q5K => blocks::<BlockQ5K>(bytes, y),
        G::Q6K => blocks::<BlockQ6K>(bytes, y),
        G::Q8K => blocks::<BlockQ8K>(bytes, y),
    }
}

/// Rotary position embedding tables, grown on demand up to the model's maximum (shared by
/// every thread that runs the model; growing takes a write lock, once per doubling).
pub struct Rotary {
    inv_freq: Vec<f32>,
    limit: usize,
    /// cos and sin, `[positions, inv_freq.len()]`.
    tables: std::sync::RwLock<(Tensor, Tensor)>,
    dtype: DType,
    device: Device,
    /// Pairs adjacent dimensions (GGUF llama layout) instead of the two halves (HF layout).
    interleaved: bool,
    /// Factor on cos and sin (LongRoPE's attention factor; 1 otherwise).
    scale: f32,
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
        let empty = Tensor::zeros((0, inv_freq.len()), dtype, device)?;
        let r = Rotary {
            inv_freq: inv_freq.to_vec(),
            limit,
            tables: std::sync::RwLock::new((empty.clone(), empty)),
            dtype,
            device: device.clone(),
            interleaved,
            scale: 1.0,
        };
        r.ensure(limit.min(1024))?;
        Ok(r)
    }

    /// The same tables with cos and sin multiplied by `scale`.
    pub fn with_scale(mut self, scale: f32) -> candle::Result<Rotary> {
        let have = self.positions();
        self.scale = scale;
        let empty = Tensor::zeros((0, self.inv_freq.len()), self.dtype, &self.device)?;
        self.tables = std::sync::RwLock::new((empty.clone(), empty));
        self.ensure(have)?;
        Ok(self)
    }

    /// Positions the tables cover now.
    fn positions(&self) -> usize {
        self.read().0.dims().first().copied().unwrap_or(0)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, (Tensor, Tensor)> {
        // The tables are replaced whole, so a panic elsewhere cannot leave them half-written.
        self.tables.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the tables cover positions below `n` (at most the limit).
    pub fn ensure(&self, n: usize) -> candle::Result<()> {
        let have = self.positions();
        if n <= have {
            return Ok(());
        }
        let len = n.max(2 * have).min(self.limit);
        let half = self.inv_freq.len();
        let mut angles = Vec::with_capacity(len * half);
        for p in 0..len {
            angles.extend(self.inv_freq.iter().map(|f| p as f32 * f));
        }
        let angles = Tensor::from_vec(angles, (len, half), &self.device)?;
        let scale = f64::from(self.scale);
        let cos = (angles.cos()? * scale)?.to_dtype(self.dtype)?;
        let sin = (angles.sin()? * scale)?.to_dtype(self.dtype)?;
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        // Another thread may have grown them further meanwhile.
        if tables.0.dim(0)? < len {
            *tables = (cos, sin);
        }
        Ok(())
    }

    /// Rotates `x` (`[batch, heads, seq, dim]`) at `positions` (u32, `[batch * seq]`); with
    /// fewer frequencies than `dim / 2`, only the first dimensions rotate (partial rotary).
    pub fn apply(&self, x: &Tensor, positions: &Tensor) -> candle::Result<Tensor> {
        let (b, _, s, dim) = x.dims4()?;
        let (cos, sin) = self.read().clone();
        let cos = cos.index_select(positions, 0)?.reshape((b, s, ()))?;
        let sin = sin.index_select(positions, 0)?.reshape((b, s, ()))?;
        let rot = 2 * self.inv_freq.len();
        let rotate = |x: &Tensor| {
            let x = x.contiguous()?;
            if self.interleaved {
                candle_nn::rotary_emb::rope_i(&x, &cos, &sin)
            } else {
                candle_nn::rotary_emb::rope(&x, &cos, &sin)
            }
        };
        if rot >= dim {
            return rotate(x);
        }
        let rotated = rotate(&x.narrow(3, 0, rot)?)?;
        Tensor::cat(&[&rotated, &x.narrow(3, rot, dim - rot)?.contiguous()?], 3)?.contiguous()
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
/// earlier new tokens that are not padding, and with a `window` only the last `window` of
/// them (sliding-window attention). `None` when that is everything (a single unpadded step
/// within the window).
pub fn causal_bias(
    mask: &[u8],
    batch: usize,
    seq: usize,
    window: Option<usize>,
    device: &Device,
    dtype: DType,
) -> candle::Result<Option<Tensor>> {
    let total = mask.len() / batch.max(1);
    let window = window.unwrap_or(usize::MAX);
    if seq == 1 && total <= window && mask.iter().all(|&m| m != 0) {
        return Ok(None);
    }
    let bias =
        inferox_core::model::window_bias(mask, batch, seq, Some(window), masked_score(dtype));
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

/// How attention makes a score of a query-key product: `scale · q·k`, soft-capped to
/// `c · tanh(s / c)` when `softcap` is `c` (Gemma 2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    /// The product's factor (usually `1 / √head_dim`).
    pub scale: f64,
    /// The soft cap `c`, if the model has one.
    pub softcap: Option<f64>,
}

impl Scores {
    /// Scores scaled by `scale`, not capped.
    pub fn scaled(scale: f64) -> Scores {
        Scores {
            scale,
            softcap: None,
        }
    }
}

/// Scaled dot-product attention of `q` (`[batch, heads, seq, dim]`) over `k`, `v`
/// (`[batch, kv_heads, total, dim]`) with an additive `bias` (`[batch, 1, seq, total]`), the
/// grouped-query heads sharing a KV head without copying it. Returns `[batch * seq, heads *
/// dim]`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scores: Scores,
) -> candle::Result<Tensor> {
    if let Some(out) = decode_attention(q, k, v, bias, scores)? {
        return Ok(out);
    }
    if let Some(bias) = bias
        && let Some(pads) = left_padding(bias, q.dim(2)?)?
    {
        return padded_attention([q, k, v], bias, scores, &pads);
    }
    batched_attention(q, k, v, bias, scores)
}

/// Each sequence's padding in front of a batch in `bias` (`[batch, 1, seq, total]`): its
/// padding queries (the leading new positions that see no key, not even their own) and the
/// leading keys that none of its queries sees. `None` for one sequence or when nothing is
/// padded.
fn left_padding(bias: &Tensor, seq: usize) -> candle::Result<Option<Vec<(usize, usize)>>> {
    let (batch, heads, queries, total) = bias.dims4()?;
    if batch < 2 || seq == 0 || (heads, queries) != (1, seq) || total < seq {
        return Ok(None);
    }
    let masked = |x: f32| x < masked_score(bias.dtype()) / 2.0;
    let cached = total - seq;
    let pads = |values: &[f32]| -> Vec<(usize, usize)> {
        values
            .chunks_exact(seq * total)
            .map(|rows| {
                let queries = (0..seq)
                    .take_while(|&i| masked(rows[i * total + cached + i]))
                    .count();
                // The fewest leading keys a query does not see (a sliding window hides more from
                // the later ones).
                let keys = rows
                    .chunks_exact(total)
                    .skip(queries)
                    .map(|row| row.iter().take_while(|&&x| masked(x)).count())
                    .min()
                    .unwrap_or(0);
                (queries, keys)
            })
            .collect()
    };
    // Read in place where the bias is CPU f32 (it is, for every decoder here): a copy would
    // be made on every layer.
    let pads = match crate::dense::with_f32(bias, pads) {
        Some(pads) => pads,
        None => pads(&bias.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
    };
    Ok(pads.iter().any(|&p| p != (0, 0)).then_some(pads))
}

/// [`attention`] of a left-padded batch, one sequence at a time over its own queries and keys:
/// each computes, bit for bit, what it computes alone (a product's blocking and a softmax's
/// lanes would otherwise depend on the padding in front). Padding queries get zeros.
fn padded_attention(
    [q, k, v]: [&Tensor; 3],
    bias: &Tensor,
    scores: Scores,
    pads: &[(usize, usize)],
) -> candle::Result<Tensor> {
    let (_, heads, seq, dim) = q.dims4()?;
    let total = k.dim(2)?;
    let mut rows = Vec::with_capacity(2 * pads.len());
    for (b, &(queries, keys)) in pads.iter().enumerate() {
        let (n, m) = (seq - queries, total - keys);
        if queries > 0 {
            rows.push(Tensor::zeros(
                (queries, heads * dim),
                q.dtype(),
                q.device(),
            )?);
        }
        if n == 0 {
            continue;
        }
        let one = |t: &Tensor, from: usize, len: usize| t.narrow(0, b, 1)?.narrow(2, from, len);
        let bias = one(bias, queries, n)?.narrow(3, keys, m)?;
        let (q, k, v) = (one(q, queries, n)?, one(k, keys, m)?, one(v, keys, m)?);
        rows.push(attention(&q, &k, &v, Some(&bias), scores)?);
    }
    Tensor::cat(&rows, 0)
}

/// Query positions per block of [`batched_attention`]: the score matrix and its softmax are
/// made a block at a time. In one piece, a 4096-token prompt's is 9 heads x 4096 x 4096 f32
/// per layer for SmolLM2 (604 MB, three such intermediates alive at once); in blocks of 256,
/// 38 MB.
const QUERY_BLOCK: usize = 256;

/// [`attention`] as batched GEMMs, for any dtype and device, [`QUERY_BLOCK`] queries at a
/// time.
fn batched_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scores: Scores,
) -> candle::Result<Tensor> {
    let (b, heads, seq, dim) = q.dims4()?;
    let per_query = bias.map(|t| t.dim(2)).transpose()? == Some(seq);
    if seq <= QUERY_BLOCK || (bias.is_some() && !per_query) {
        return attention_block(q, k, v, bias, scores);
    }
    let v = v.contiguous()?;
    let mut blocks = Vec::with_capacity(seq.div_ceil(QUERY_BLOCK));
    for start in (0..seq).step_by(QUERY_BLOCK) {
        let n = QUERY_BLOCK.min(seq - start);
        let bias = bias.map(|t| t.narrow(2, start, n)).transpose()?;
        let out = attention_block(&q.narrow(2, start, n)?, k, &v, bias.as_ref(), scores)?;
        blocks.push(out.reshape((b, n, heads * dim))?);
    }
    Tensor::cat(&blocks, 1)?.reshape((b * seq, heads * dim))
}

/// [`batched_attention`] of all of `q`'s positions at once.
fn attention_block(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    Scores { scale, softcap }: Scores,
) -> candle::Result<Tensor> {
    let (b, heads, seq, dim) = q.dims4()?;
    let (_, kv_heads, total, _) = k.dims4()?;
    let group = heads / kv_heads;
    // [b, kv, group * seq, dim]: the query heads of a group are adjacent.
    let q = (q * scale)?.reshape((b, kv_heads, group * seq, dim))?;
    let mut scores = q.matmul(&k.t()?)?;
    if let Some(cap) = softcap {
        scores = ((scores / cap)?.tanh()? * cap)?;
    }
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

/// New positions per sequence up to which [`decode_attention`] serves.
const DECODE_QUERIES: usize = 4;

/// [`attention`] for a few new positions over an f32 KV cache on the CPU (decoding): read in
/// place from the cache's storage, whatever its strides, one task per sequence and key head on
/// candle's worker pool. Batched GEMMs spend more on packing and dispatch than on these
/// products, single-threaded, and copy the values to make them contiguous. `None` where it
/// does not apply (other dtypes or devices, longer queries, no AVX-512 here).
fn decode_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    Scores { scale, softcap }: Scores,
) -> candle::Result<Option<Tensor>> {
    use candle::{CpuStorage, Storage};
    let (b, heads, seq, dim) = q.dims4()?;
    let (_, kv_heads, total, _) = k.dims4()?;
    #[cfg(target_arch = "x86_64")]
    let fast = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let fast = false;
    if !fast
        || seq > DECODE_QUERIES
        || !q.device().is_cpu()
        || [q.dtype(), k.dtype(), v.dtype()] != [DType::F32; 3]
        || bias.is_some_and(|t| t.dtype() != DType::F32)
        || kv_heads == 0
        || heads % kv_heads != 0
    {
        return Ok(None);
    }
    let q = q.contiguous()?;
    let bias = bias.map(Tensor::contiguous).transpose()?;
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let bs = bias.as_ref().map(|t| t.storage_and_layout());
    fn f32s(s: &Storage) -> Option<&[f32]> {
        match s {
            Storage::Cpu(CpuStorage::F32(data)) => Some(data.as_slice()),
            _ => None,
        }
    }
    let (Some(qd), Some(kd), Some(vd)) = (f32s(&qs), f32s(&ks), f32s(&vs)) else {
        return Ok(None);
    };
    let bd = match &bs {
        Some((s, l)) => match f32s(s) {
            Some(d) => Some(&d[l.start_offset()..]),
            None => return Ok(None),
        },
        None => None,
    };
    let (kst, vst) = (kl.stride(), vl.stride());
    if kst[3] != 1 || vst[3] != 1 {
        return Ok(None);
    }
    let qd = &qd[ql.start_offset()..];
    let keys = Strided {
        data: kd,
        offset: kl.start_offset(),
        stride: [kst[0], kst[1], kst[2]],
    };
    let values = Strided {
        data: vd,
        offset: vl.start_offset(),
        stride: [vst[0], vst[1], vst[2]],
    };
    let group = heads / kv_heads;
    // `[b, seq, heads, dim]`: already the `[b * seq, heads * dim]` the output projection takes.
    let mut out = vec![0f32; b * seq * heads * dim];
    let dst = crate::DisjointOut::new(&mut out);
    let (scale, softcap) = (scale as f32, softcap.map(|c| c as f32));
    candle::utils::barrier_pool().execute_chunked(b * kv_heads, |range| {
        let mut scores = vec![0f32; total];
        for task in range {
            let (bi, g) = (task / kv_heads, task % kv_heads);
            for h in g * group..(g + 1) * group {
                for s in 0..seq {
                    let at = ((bi * heads + h) * seq + s) * dim;
                    let bias_row = bd.map(|d| &d[(bi * seq + s) * total..][..total]);
                    let at_out = ((bi * seq + s) * heads + h) * dim;
                    // SAFETY: each (sequence, head, position) row of `out` belongs to one task
                    // (tasks are disjoint (sequence, key head) pairs); `out` outlives the call.
                    let row = unsafe { dst.slice(at_out..at_out + dim) };
                    // SAFETY: AVX-512F and FMA were detected above.
                    unsafe {
                        attend_row(
                            &qd[at..at + dim],
                            (&keys, &values, bi, g, total),
                            bias_row,
                            (scale, softcap),
                            &mut scores,
                            row,
                        )
                    };
                }
            }
        }
    });
    drop((qs, ks, vs, bs));
    Tensor::from_vec(out, (b * seq, heads * dim), q.device()).map(Some)
}

/// A `[batch, heads, positions, dim]` f32 tensor read in place: the start and the strides of
/// its first three dimensions (the last is contiguous).
struct Strided<'a> {
    data: &'a [f32],
    offset: usize,
    stride: [usize; 3],
}

impl Strided<'_> {
    fn row(&self, b: usize, h: usize, j: usize, dim: usize) -> &[f32] {
        let at = self.offset + b * self.stride[0] + h * self.stride[1] + j * self.stride[2];
        &self.data[at..at + dim]
    }
}

/// One query row against `total` keys and values of sequence `b`, key head `g`: scaled
/// (soft-capped) scores plus the bias row, softmax, and the weighted sum of the values into
/// `out`.
///
/// # Safety
/// AVX-512F and FMA are available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn attend_row(
    q: &[f32],
    (keys, values, b, g, total): (&Strided<'_>, &Strided<'_>, usize, usize, usize),
    bias: Option<&[f32]>,
    (scale, softcap): (f32, Option<f32>),
    scores: &mut [f32],
    out: &mut [f32],
) {
    let dim = q.len();
    let mut max = f32::NEG_INFINITY;
    for (j, score) in scores.iter_mut().enumerate().take(total) {
        let k = keys.row(b, g, j, dim);
        let whole = dim / 16 * 16;
        let tail: f32 = q[whole..].iter().zip(&k[whole..]).map(|(x, y)| x * y).sum();
        // SAFETY: every load reads 16 floats inside `q` or `k` (below `whole`); AVX-512F is
        // enabled on this function.
        let dot = unsafe {
            use std::arch::x86_64::*;
            let mut acc = _mm512_setzero_ps();
            for c in (0..whole).step_by(16) {
                let x = _mm512_loadu_ps(q.as_ptr().add(c));
                let y = _mm512_loadu_ps(k.as_ptr().add(c));
                acc = _mm512_fmadd_ps(x, y, acc);
            }
            _mm512_reduce_add_ps(acc)
        };
        let mut x = (dot + tail) * scale;
        if let Some(cap) = softcap {
            x = (x / cap).tanh() * cap;
        }
        if let Some(bias) = bias {
            x += bias[j];
        }
        *score = x;
        max = max.max(x);
    }
    let mut sum = 0f32;
    for x in scores.iter_mut().take(total) {
        *x = super::fused::exp(*x - max);
        sum += *x;
    }
    let inv = 1.0 / sum;
    out.fill(0.0);
    for (j, &p) in scores.iter().enumerate().take(total) {
        // A masked key's weight is exactly 0: it adds nothing.
        if p == 0.0 {
            continue;
        }
        let p = p * inv;
        for (o, &x) in out.iter_mut().zip(values.row(b, g, j, dim)) {
            *o = p.mul_add(x, *o);
        }
    }
}

/// Never called: [`decode_attention`] applies only where AVX-512 was detected.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn attend_row(
    _: &[f32],
    _: (&Strided<'_>, &Strided<'_>, usize, usize, usize),
    _: Option<&[f32]>,
    _: (f32, Option<f32>),
    _: &mut [f32],
    _: &mut [f32],
) {
    unreachable!("decode_attention checks for AVX-512")
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

/// Positions a new KV cache has room for, and grows by: a short chat holds a fraction of a
/// model's context, and every row of a batch pays for the room (zeroed) whether it is used
/// or not.
pub const CACHE_CHUNK: usize = 128;

/// A decoder's KV cache, one per layer: the per-request state of a decoder-only model.
pub struct LayerCaches(pub Vec<candle_nn::kv_cache::KvCache>);

impl LayerCaches {
    /// Empty caches for `layers` layers, with room for `size` positions before they grow.
    pub fn new(layers: usize, size: usize) -> LayerCaches {
        LayerCaches(
            (0..layers)
                .map(|_| candle_nn::kv_cache::KvCache::new(2, size))
                .collect(),
        )
    }

    /// Appends the rows of `other` after these, the caches aligned at their last position:
    /// the shorter side is padded with zeros at the start (the steps that follow mask them).
    pub fn append(&mut self, other: LayerCaches) -> crate::Result<()> {
        if self.0.len() != other.0.len() {
            return Err(candle::Error::Msg(format!(
                "appending the caches of {} layers to {}",
                other.0.len(),
                self.0.len()
            ))
            .into());
        }
        for (cache, more) in self.0.iter_mut().zip(other.0) {
            append_cache_rows(cache, &more)?;
        }
        Ok(())
    }

    /// Keeps the cached rows `rows` (ascending), from sequence position `from` on.
    pub fn retain_rows(&mut self, rows: &[usize], from: usize) -> crate::Result<()> {
        for cache in &mut self.0 {
            retain_cache_rows(cache, rows, from)?;
        }
        Ok(())
    }
}

impl inferox_core::model::Cache for LayerCaches {
    fn cached(&self) -> usize {
        self.0
            .first()
            .map_or(0, candle_nn::kv_cache::KvCache::current_seq_len)
    }
}

/// Appends the rows of `more` after those of `cache`, aligned at the last position.
fn append_cache_rows(
    cache: &mut candle_nn::kv_cache::KvCache,
    more: &candle_nn::kv_cache::KvCache,
) -> candle::Result<()> {
    let (Some(k2), Some(v2)) = (more.k()?, more.v()?) else {
        return Ok(());
    };
    // The room the rows that join asked for, if more than this cache has.
    let room = more.k_cache().max_seq_len();
    let (Some(k1), Some(v1)) = (cache.k()?, cache.v()?) else {
        return refill(cache, &k2, &v2, room);
    };
    let len = k1.dim(2)?.max(k2.dim(2)?);
    // `[batch, heads, seq, head_dim]` with `len - seq` zero positions in front.
    let pad = |t: &Tensor| -> candle::Result<Tensor> {
        let have = t.dim(2)?;
        if have == len {
            return Ok(t.clone());
        }
        let mut shape = t.dims().to_vec();
        shape[2] = len - have;
        Tensor::cat(&[&Tensor::zeros(shape, t.dtype(), t.device())?, t], 2)
    };
    let join = |a: &Tensor, b: &Tensor| Tensor::cat(&[&pad(a)?, &pad(b)?], 0);
    refill(cache, &join(&k1, &k2)?, &join(&v1, &v2)?, room)
}

/// Keeps the cached rows `rows` (ascending) from sequence position `from` on.
fn retain_cache_rows(
    cache: &mut candle_nn::kv_cache::KvCache,
    rows: &[usize],
    from: usize,
) -> candle::Result<()> {
    let (Some(k), Some(v)) = (cache.k()?, cache.v()?) else {
        return Ok(());
    };
    let index: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    let index = Tensor::from_vec(index, rows.len(), k.device())?;
    let keep = |t: &Tensor| {
        let len = t.dim(2)?;
        t.contiguous()?
            .index_select(&index, 0)?
            .narrow(2, from.min(len), len - from.min(len))
    };
    refill(cache, &keep(&k)?, &keep(&v)?, 0)
}

/// Replaces a cache's contents with `k`, `v` (`[batch, heads, seq, head_dim]`), with room for
/// as many positions as it had, or `room` if more.
fn refill(
    cache: &mut candle_nn::kv_cache::KvCache,
    k: &Tensor,
    v: &Tensor,
    room: usize,
) -> candle::Result<()> {
    let room = cache
        .k_cache()
        .max_seq_len()
        .max(room)
        .max(k.dim(2)?)
        .max(1);
    *cache = candle_nn::kv_cache::KvCache::new(2, room);
    if k.dim(2)? > 0 && k.dim(0)? > 0 {
        cache.append(&k.contiguous()?, &v.contiguous()?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    /// Rows that join keep the room their cache was made with: a batch whose cache is smaller
    /// takes the larger room, so that the joiner's generation does not grow it.
    #[test]
    fn appended_rows_keep_the_larger_room() {
        let mut batch = LayerCaches::new(1, 16);
        batch.0[0]
            .append(&random(&[1, 2, 4, 8], 1), &random(&[1, 2, 4, 8], 2))
            .unwrap();
        let mut joiner = LayerCaches::new(1, 64);
        joiner.0[0]
            .append(&random(&[1, 2, 2, 8], 3), &random(&[1, 2, 2, 8], 4))
            .unwrap();
        batch.append(joiner).unwrap();
        let cache = &batch.0[0];
        assert_eq!(cache.k().unwrap().unwrap().dims(), &[2, 2, 4, 8]);
        assert_eq!(cache.k_cache().max_seq_len(), 64);
    }

    /// The in-place decoding kernel gives what the batched GEMMs give: grouped heads, keys and
    /// values read from a KV cache (strided views), padding masked, soft-capping, one to four
    /// new positions.
    #[test]
    fn decode_attention_matches_the_batched_path() {
        let (b, heads, kv, dim) = (3, 6, 2, 64);
        for (seq, cached, softcap) in [(1, 37, None), (2, 20, Some(30.0)), (4, 0, None)] {
            let mut cache = candle_nn::kv_cache::KvCache::new(2, 64);
            if cached > 0 {
                let k = random(&[b, kv, cached, dim], 1);
                let v = random(&[b, kv, cached, dim], 2);
                cache.append(&k, &v).unwrap();
            }
            let (k, v) = cache
                .append(
                    &random(&[b, kv, seq, dim], 3),
                    &random(&[b, kv, seq, dim], 4),
                )
                .unwrap();
            let q = random(&[b, heads, seq, dim], 5);
            let total = cached + seq;
            // Row 1 left-padded by 5 positions, row 2 by one.
            let mut mask = vec![1u8; b * total];
            mask[total..total + 5].fill(0);
            mask[2 * total] = 0;
            let bias = causal_bias(&mask, b, seq, None, &Device::Cpu, DType::F32).unwrap();
            let scores = Scores {
                scale: 0.125,
                softcap,
            };
            let fast = decode_attention(&q, &k, &v, bias.as_ref(), scores).unwrap();
            let Some(fast) = fast else {
                eprintln!("no AVX-512 here: the kernel is not used");
                return;
            };
            let want = batched_attention(&q, &k, &v, bias.as_ref(), scores).unwrap();
            assert_eq!(fast.dims(), want.dims());
            let diff = crate::max_abs_diff(&fast, &want);
            assert!(diff < 1e-5, "seq {seq}, cached {cached}: {diff}");
        }
    }

    /// A long prompt's attention, made a block of queries at a time, is the attention of all
    /// of them at once: padding, a sliding window, soft-capping, grouped heads; the last block
    /// a short one.
    #[test]
    fn blocks_of_queries_give_the_whole_attention() {
        let (b, heads, kv, dim, seq) = (2, 4, 2, 16, 2 * QUERY_BLOCK + 37);
        let (q, k, v) = (
            random(&[b, heads, seq, dim], 6),
            random(&[b, kv, seq, dim], 7),
            random(&[b, kv, seq, dim], 8),
        );
        let mut mask = vec![1u8; b * seq];
        mask[seq..seq + 40].fill(0);
        for (window, softcap) in [(None, None), (Some(100), Some(20.0))] {
            let bias = causal_bias(&mask, b, seq, window, &Device::Cpu, DType::F32).unwrap();
            let scores = Scores {
                scale: 0.25,
                softcap,
            };
            let got = batched_attention(&q, &k, &v, bias.as_ref(), scores).unwrap();
            let want = attention_block(&q, &k, &v, bias.as_ref(), scores).unwrap();
            assert_eq!(got.dims(), &[b * seq, heads * dim]);
            let diff = crate::max_abs_diff(&got, &want);
            assert!(diff < 1e-6, "window {window:?}: {diff}");
        }
    }
}
