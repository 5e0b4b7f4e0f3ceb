//! Element-wise CPU kernels for the encoders (BERT, ViT, CLIP): one pass over the data where
//! candle would make several, in place on a tensor just computed (no allocation), split across
//! candle's worker pool, vectorised for AVX-512 or AVX2 (chosen at run time) with `exp` and
//! `erf` computed in vector registers instead of scalar `libm` calls. Other devices and dtypes
//! go through candle's own ops.
//!
//! The functions that take a tensor by value overwrite its storage: give them a tensor that
//! nothing else reads, such as the fresh output of a matmul.

use super::DisjointOut;
use super::candle_core::{
    self as candle, CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Tensor, utils::barrier_pool,
};
use super::dense::with_f32;

/// `eˣ` in f32: Cody–Waite reduction by ln 2 and a degree-7 Taylor polynomial on |r| ≤ ln 2 / 2
/// (relative error below 2 × 10⁻⁷), each multiply-add one FMA (Rust does not contract
/// `a * b + c`: separate, they took twice the instructions); 0 below -87 (where f32 leaves the
/// normal range), and inputs above 88 are clamped there.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n × LN2_HI is exact for |n| < 2⁸.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 × 2²³: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let below = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x.mul_add(LOG2E, ROUND);
    let n = t - ROUND;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let coefficients = [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ];
    let p = coefficients
        .iter()
        .fold(1.0 / 5040.0f32, |p, &c| p.mul_add(r, c));
    // 2ⁿ from the integer in `t`'s low mantissa bits (no float-to-int conversion, which does
    // not vectorise).
    let e = p * f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    // Masked scores (-∞ or -1e30) weigh exactly nothing.
    if below { 0.0 } else { e }
}

/// `erf(x)` in f32 as `x · P(x²) / Q(x²)` on |x| < 3.92 (beyond it erf is ±1 in f32): a
/// rational fit of degree 5 over 5 in x², made by `scripts/fit_erf.py` (largest error
/// 4.3 × 10⁻⁷ evaluated in f32). Ten FMAs and one division, where the erfc form it replaced
/// took nineteen operations, a division and an `exp`: GELU was 6% of an encoder's time.
#[inline(always)]
// The coefficients as the script prints them, rounded by the compiler.
#[allow(clippy::excessive_precision)]
fn erf(x: f32) -> f32 {
    const P: [f32; 6] = [
        1.128_379_161_116_340_7,
        0.188_709_643_161_936_7,
        0.052_530_226_802_881_476,
        0.003_695_041_332_336_687_3,
        0.000_283_679_847_240_349_2,
        2.067_788_516_936_364_6e-6,
    ];
    const Q: [f32; 6] = [
        1.0,
        0.500_572_571_855_307_3,
        0.113_413_241_597_670_06,
        0.014_826_843_245_580_14,
        0.001_146_184_023_454_452_5,
        3.821_305_734_437_461e-5,
    ];
    let u = x * x;
    let horner = |c: &[f32; 6]| c.iter().rev().fold(0.0f32, |acc, &k| acc.mul_add(u, k));
    let fit = x * horner(&P) / horner(&Q);
    // Exactly ±1 past the fit's range, so that GELU's negative tail is exactly 0 there.
    if x.abs() < 3.92 {
        fit
    } else {
        1f32.copysign(x)
    }
}

/// GELU with the exact (erf) form, as `nn.GELU()` computes it.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `y = gelu(y + bias)` row by row (`bias` is one row; empty for none).
#[inline(always)]
fn bias_gelu_rows(y: &mut [f32], bias: &[f32]) {
    if bias.is_empty() {
        for v in y.iter_mut() {
            *v = gelu(*v);
        }
        return;
    }
    for row in y.chunks_exact_mut(bias.len()) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v = gelu(*v + b);
        }
    }
}

crate::multiversion!(bias_gelu_simd(y: &mut [f32], bias: &[f32]) => bias_gelu_rows);

/// `y = gelu(y)` on each of `rows` (a block of a product, still in cache).
#[inline(always)]
fn gelu_each(rows: &mut [&mut [f32]]) {
    for row in rows.iter_mut() {
        for v in row.iter_mut() {
            *v = gelu(*v);
        }
    }
}

crate::multiversion!(pub(crate) gelu_rows(rows: &mut [&mut [f32]]) => gelu_each);

/// `y += bias + residual` row by row (`bias` is one row).
#[inline(always)]
fn bias_residual_rows(y: &mut [f32], bias: &[f32], residual: &[f32]) {
    for (row, r) in y
        .chunks_exact_mut(bias.len())
        .zip(residual.chunks_exact(bias.len()))
    {
        for ((v, &b), &x) in row.iter_mut().zip(bias).zip(r) {
            *v = *v + b + x;
        }
    }
}

crate::multiversion!(bias_residual_simd(y: &mut [f32], bias: &[f32], residual: &[f32]) => bias_residual_rows);

/// `out = silu(gate) · up`, the rows of `gate` and `up` (`n` values each) starting at
/// `gate_rows[r]` and `up_rows[r]` of their storages.
#[inline(always)]
fn silu_mul_rows(out: &mut [f32], gate: &[f32], up: &[f32], rows: &[(usize, usize)]) {
    let n = out.len() / rows.len().max(1);
    for (o, &(g, u)) in out.chunks_exact_mut(n).zip(rows) {
        for ((o, &g), &u) in o.iter_mut().zip(&gate[g..g + n]).zip(&up[u..u + n]) {
            *o = g / (1.0 + exp(-g)) * u;
        }
    }
}

crate::multiversion!(silu_mul_simd(out: &mut [f32], gate: &[f32], up: &[f32], rows: &[(usize, usize)]) => silu_mul_rows);

/// `silu(gate) · up` for `gate` and `up` of one shape `[rows, n]` (the SwiGLU feed-forward),
/// in one vectorised pass on the CPU for f32, reading them in place whatever their row
/// strides (the two halves of a fused gate/up product); candle's ops otherwise.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> candle::Result<Tensor> {
    let fallback = || gate.silu()? * up;
    let (&[rows, n], true) = (gate.dims(), gate.dims() == up.dims()) else {
        return fallback();
    };
    if !gate.device().is_cpu() || gate.dtype() != DType::F32 || up.dtype() != DType::F32 {
        return fallback();
    }
    let (gs, gl) = gate.storage_and_layout();
    let (us, ul) = up.storage_and_layout();
    let (candle::Storage::Cpu(CpuStorage::F32(g)), candle::Storage::Cpu(CpuStorage::F32(u))) =
        (&*gs, &*us)
    else {
        return fallback();
    };
    if n == 0 || gl.stride()[1] != 1 || ul.stride()[1] != 1 {
        return fallback();
    }
    let starts: Vec<(usize, usize)> = (0..rows)
        .map(|r| {
            (
                gl.start_offset() + r * gl.stride()[0],
                ul.start_offset() + r * ul.stride()[0],
            )
        })
        .collect();
    if starts
        .last()
        .is_some_and(|&(a, b)| a + n > g.len() || b + n > u.len())
    {
        return fallback();
    }
    let mut out = vec![0f32; rows * n];
    silu_mul_simd(&mut out, g, u, &starts);
    Tensor::from_vec(out, (rows, n), gate.device())
}

/// Values per task: enough work to pay for handing it out.
const TASK: usize = 1 << 14;

/// Whether `t` is a contiguous f32 tensor on the CPU.
fn cpu_f32_contiguous(t: &Tensor) -> bool {
    t.dtype() == DType::F32 && t.device().is_cpu() && t.is_contiguous()
}

/// Runs `f(rows, first_row)` over `[rows, n]` values in parallel, on disjoint row ranges.
fn par_rows(y: &mut [f32], n: usize, f: &(dyn Fn(&mut [f32], usize) + Sync)) {
    let rows = y.len() / n;
    let per_task = (TASK / n).max(1);
    let shared = DisjointOut::new(y);
    barrier_pool().execute_chunked(rows.div_ceil(per_task), |range| {
        let r = range.start * per_task..(range.end * per_task).min(rows);
        // SAFETY: the pool hands out disjoint row ranges; `y` outlives the call.
        f(unsafe { shared.slice(r.start * n..r.end * n) }, r.start);
    });
}

/// The values of a contiguous f32 storage, for the in-place ops.
fn values<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&mut v[start..end]),
        _ => candle::bail!("inferox fused op: expected a contiguous f32 tensor"),
    }
}

/// An in-place op on one tensor: `f` gets its values.
struct InPlace<'a>(&'a (dyn Fn(&mut [f32]) + Sync));

impl InplaceOp1 for InPlace<'_> {
    fn name(&self) -> &'static str {
        "inferox-fused"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle::Result<()> {
        (self.0)(values(s, l)?);
        Ok(())
    }
}

/// An in-place op reading a second tensor: `f` gets the values of both.
struct InPlaceWith<'a>(&'a (dyn Fn(&mut [f32], &[f32]) + Sync));

impl InplaceOp2 for InPlaceWith<'_> {
    fn name(&self) -> &'static str {
        "inferox-fused"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        src: &CpuStorage,
        src_l: &Layout,
    ) -> candle::Result<()> {
        let src = match (src, src_l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((start, end))) => &v[start..end],
            _ => candle::bail!("inferox fused op: expected a contiguous f32 tensor"),
        };
        (self.0)(values(dst, dst_l)?, src);
        Ok(())
    }
}

/// `gelu(x + bias)` (exact GELU) for `x` of shape `[..., n]` and an optional `bias` of `[n]`,
/// in place of `x` (see the module docs) on the CPU for f32; candle's ops otherwise.
pub fn bias_gelu(x: Tensor, bias: Option<&Tensor>) -> candle::Result<Tensor> {
    let n = x.dims().last().copied().unwrap_or(0);
    if n > 0 && cpu_f32_contiguous(&x) {
        let bias = match bias {
            Some(b) if b.dims() == [n] => with_f32(b, <[f32]>::to_vec),
            Some(_) => None,
            None => Some(Vec::new()),
        };
        if let Some(b) = bias {
            let f = |y: &mut [f32]| par_rows(y, n, &|rows, _| bias_gelu_simd(rows, &b));
            x.inplace_op1(&InPlace(&f))?;
            return Ok(x);
        }
    }
    match bias {
        Some(b) => x.broadcast_add(b)?.gelu_erf(),
        None => x.gelu_erf(),
    }
}

/// `x + bias + residual` for `x` and `residual` of one shape `[..., n]` and `bias` of `[n]`, in
/// place of `x` (see the module docs) on the CPU for f32; candle's ops otherwise.
pub fn bias_residual(
    x: Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
) -> candle::Result<Tensor> {
    let n = x.dims().last().copied().unwrap_or(0);
    let fast = n > 0
        && cpu_f32_contiguous(&x)
        && cpu_f32_contiguous(residual)
        && residual.dims() == x.dims();
    let bias_values = match bias {
        Some(b) if fast && b.dims() == [n] => with_f32(b, <[f32]>::to_vec),
        None if fast => Some(vec![0.0; n]),
        _ => None,
    };
    if let Some(b) = bias_values {
        let f = |y: &mut [f32], r: &[f32]| {
            par_rows(y, n, &|rows, r0| {
                let from = r0 * n;
                bias_residual_simd(rows, &b, &r[from..from + rows.len()])
            })
        };
        x.inplace_op2(residual, &InPlaceWith(&f))?;
        return Ok(x);
    }
    match bias {
        Some(b) => x.broadcast_add(b)? + residual,
        None => x + residual,
    }
}

/// Layer norm of each row of `x` into `y`: `(x - mean) / sqrt(var + eps) · gamma + beta`, the
/// mean and the (biased) variance in two passes over the row, as PyTorch computes them.
#[inline(always)]
fn layer_norm_rows(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = gamma.len();
    for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        let (mean, rstd) = mean_rstd(xr, eps);
        for (((o, &v), &g), &b) in yr.iter_mut().zip(xr).zip(gamma).zip(beta) {
            *o = (v - mean) * rstd * g + b;
        }
    }
}

/// [`layer_norm_rows`] in place: the same arithmetic, each row overwritten.
#[inline(always)]
fn layer_norm_rows_in_place(y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    for yr in y.chunks_exact_mut(gamma.len()) {
        let (mean, rstd) = mean_rstd(yr, eps);
        for ((o, &g), &b) in yr.iter_mut().zip(gamma).zip(beta) {
            *o = (*o - mean) * rstd * g + b;
        }
    }
}

/// A row's mean and `1 / sqrt(var + eps)`.
#[inline(always)]
fn mean_rstd(xr: &[f32], eps: f32) -> (f32, f32) {
    let n = xr.len();
    // Sixteen partial sums, so the reductions vectorise.
    let mut acc = [0f32; 16];
    let (body, tail) = xr.split_at(n - n % 16);
    for c in body.chunks_exact(16) {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let mean = (fold_lanes(acc, |a, b| a + b) + tail.iter().sum::<f32>()) / n as f32;
    let mut acc = [0f32; 16];
    for c in body.chunks_exact(16) {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += (v - mean) * (v - mean);
        }
    }
    let tail_sq: f32 = tail.iter().map(|&v| (v - mean) * (v - mean)).sum();
    let var = (fold_lanes(acc, |a, b| a + b) + tail_sq) / n as f32;
    (mean, 1.0 / (var + eps).sqrt())
}

crate::multiversion!(layer_norm_simd(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) => layer_norm_rows);
crate::multiversion!(pub(crate) layer_norm_in_place_simd(y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) => layer_norm_rows_in_place);

/// [`layer_norm`] of `x` in place of `x` (see the module docs: give it a tensor nothing else
/// reads, such as a residual sum just computed), without allocating an output.
pub fn layer_norm_owned(
    x: Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> candle::Result<Tensor> {
    let n = x.dims().last().copied().unwrap_or(0);
    let fast = n > 0 && gamma.dims() == [n] && beta.dims() == [n] && cpu_f32_contiguous(&x);
    let values = |t: &Tensor| with_f32(t, <[f32]>::to_vec).filter(|_| fast);
    let (Some(gamma_values), Some(beta_values)) = (values(gamma), values(beta)) else {
        return layer_norm(&x, gamma, Some(beta), eps);
    };
    let f = |y: &mut [f32]| {
        par_rows(y, n, &|rows, _| {
            layer_norm_in_place_simd(rows, &gamma_values, &beta_values, eps as f32)
        })
    };
    x.inplace_op1(&InPlace(&f))?;
    Ok(x)
}

/// Layer norm over the last dimension of `x` (`[..., n]`) with `gamma` and `beta` of `[n]`
/// (`beta` absent: zero), into a new tensor, split over candle's worker pool on the CPU for
/// f32 (candle_nn's runs on rayon's pool, a second set of threads that each call wakes);
/// candle_nn's op otherwise.
pub fn layer_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: Option<&Tensor>,
    eps: f64,
) -> candle::Result<Tensor> {
    let x = &x.contiguous()?;
    let n = x.dims().last().copied().unwrap_or(0);
    let fast = n > 0 && gamma.dims() == [n] && cpu_f32_contiguous(x) && cpu_f32_contiguous(gamma);
    let beta_values = match beta {
        Some(b) if fast && b.dims() == [n] => with_f32(b, <[f32]>::to_vec),
        None if fast => Some(vec![0.0; n]),
        _ => None,
    };
    let (Some(beta_values), Some(gamma_values)) = (beta_values, with_f32(gamma, <[f32]>::to_vec))
    else {
        let zeros;
        let beta = match beta {
            Some(b) => b,
            None => {
                zeros = gamma.zeros_like()?;
                &zeros
            }
        };
        return super::candle_nn::ops::layer_norm(x, gamma, beta, eps as f32);
    };
    let y = with_f32(x, |xs| {
        let mut y = vec![0f32; xs.len()];
        par_rows(&mut y, n, &|rows, r0| {
            let from = r0 * n;
            layer_norm_simd(
                &xs[from..from + rows.len()],
                rows,
                &gamma_values,
                &beta_values,
                eps as f32,
            )
        });
        y
    })
    .ok_or_else(|| candle::Error::Msg("layer norm: expected a contiguous f32 tensor".into()))?;
    Tensor::from_vec(y, x.dims(), x.device())
}

/// `softmax(x + bias)` over each row of `x`, in place: the bias added while the maximum is
/// taken, the sum while the exponentials are, each over sixteen lanes (so that the passes
/// vectorise) folded pairwise at the end (a chain of sixteen took as long as a row of 128).
#[inline(always)]
fn softmax_row(x: &mut [f32], bias: &[f32]) {
    let whole = x.len() - x.len() % 16;
    let mut m = [f32::NEG_INFINITY; 16];
    if bias.is_empty() {
        for c in x[..whole].chunks_exact(16) {
            for l in 0..16 {
                m[l] = m[l].max(c[l]);
            }
        }
    } else {
        for (c, b) in x[..whole].chunks_exact_mut(16).zip(bias.chunks_exact(16)) {
            for l in 0..16 {
                c[l] += b[l];
                m[l] = m[l].max(c[l]);
            }
        }
        for (v, b) in x[whole..].iter_mut().zip(&bias[whole..]) {
            *v += b;
        }
    }
    let max = x[whole..]
        .iter()
        .fold(fold_lanes(m, f32::max), |a, &b| a.max(b));
    if max == f32::NEG_INFINITY {
        // Every position masked out: candle (and PyTorch) give NaN; so do we.
        x.fill(f32::NAN);
        return;
    }
    let mut s = [0f32; 16];
    for c in x[..whole].chunks_exact_mut(16) {
        for l in 0..16 {
            c[l] = exp(c[l] - max);
            s[l] += c[l];
        }
    }
    let mut sum = fold_lanes(s, |a, b| a + b);
    for v in &mut x[whole..] {
        *v = exp(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Sixteen lanes folded by `f` in pairs (four steps, not a chain of fifteen).
#[inline(always)]
fn fold_lanes(mut v: [f32; 16], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut width = 8;
    while width > 0 {
        for l in 0..width {
            v[l] = f(v[l], v[l + width]);
        }
        width /= 2;
    }
    v[0]
}

/// Rows `r0..` of `[rows, n]` scores (in `x`), each with its bias row.
#[inline(always)]
fn softmax_rows(
    x: &mut [f32],
    n: usize,
    r0: usize,
    bias: &[f32],
    bias_row: &dyn Fn(usize) -> usize,
) {
    for (i, row) in x.chunks_exact_mut(n).enumerate() {
        let b = if bias.is_empty() {
            &[][..]
        } else {
            let at = bias_row(r0 + i) * n;
            &bias[at..at + n]
        };
        softmax_row(row, b);
    }
}

crate::multiversion!(softmax_rows_simd(x: &mut [f32], n: usize, r0: usize, bias: &[f32], bias_row: &dyn Fn(usize) -> usize) => softmax_rows);

/// `softmax(scores + bias)` over the last dimension of attention scores `[batch, heads, q, k]`,
/// with an optional additive `bias` of `[batch, 1, q or 1, k]` (a padding or causal mask), in
/// place of `scores` (see the module docs) on the CPU for f32; candle's ops otherwise.
pub fn masked_softmax(scores: Tensor, bias: Option<&Tensor>) -> candle::Result<Tensor> {
    let fallback = |scores: Tensor| match bias {
        Some(b) => candle_nn_softmax(&scores.broadcast_add(b)?),
        None => candle_nn_softmax(&scores),
    };
    let Ok((batch, heads, q, k)) = scores.dims4() else {
        return fallback(scores);
    };
    let bias_q = match bias.map(|b| (b.dtype(), b.dims())) {
        None => 0,
        Some((DType::F32, &[bb, 1, bq, bk])) if bb == batch && (bq == q || bq == 1) && bk == k => {
            bq
        }
        Some(_) => return fallback(scores),
    };
    if k == 0 || !cpu_f32_contiguous(&scores) {
        return fallback(scores);
    }
    let bias_values = match bias {
        Some(b) => with_f32(b, <[f32]>::to_vec),
        None => Some(Vec::new()),
    };
    let Some(bias) = bias_values else {
        return fallback(scores);
    };
    let bias_row = |r: usize| {
        let (bi, qi) = (r / (heads * q), r % q);
        bi * bias_q + if bias_q == q { qi } else { 0 }
    };
    let f = |y: &mut [f32]| {
        par_rows(y, k, &|rows, r0| {
            softmax_rows_simd(rows, k, r0, &bias, &bias_row)
        })
    };
    scores.inplace_op1(&InPlace(&f))?;
    Ok(scores)
}

/// Multi-head self-attention straight from a fused projection `qkv` (`[batch × seq, 3 ×
/// hidden]`: queries, keys, values, each `heads` heads of `hidden / heads`), with an optional
/// additive `bias` of `[batch, 1, seq or 1, seq]` (a padding or causal mask):
/// `softmax(q · kᵀ / √d + bias) · v` per head, the heads merged back into `[batch × seq,
/// hidden]`. On the CPU in f32 each (sequence, head) is one task on candle's pool that reads
/// its head in place (no split or merge copies), keeps its scores in cache and writes its
/// columns of the output; elsewhere candle's ops.
pub fn qkv_attention(
    qkv: &Tensor,
    (batch, seq): (usize, usize),
    heads: usize,
    bias: Option<&Tensor>,
) -> candle::Result<Tensor> {
    let hidden = qkv.dim(1)? / 3;
    let hd = hidden / heads.max(1);
    if heads == 0 || hd * heads != hidden || qkv.dims() != [batch * seq, 3 * hidden] {
        candle::bail!(
            "attention: qkv of shape {:?} does not hold {heads} heads for {batch} x {seq} tokens",
            qkv.dims()
        );
    }
    let scale = 1.0 / (hd as f64).sqrt();
    let bias_q = match bias.map(|b| (b.dtype(), b.dims())) {
        None => Some(0),
        Some((DType::F32, &[bb, 1, bq, bk]))
            if bb == batch && (bq == seq || bq == 1) && bk == seq =>
        {
            Some(bq)
        }
        Some(_) => None,
    };
    let bias_values = match bias {
        Some(b) => with_f32(b, <[f32]>::to_vec),
        None => Some(Vec::new()),
    };
    let fast = seq > 0 && cpu_f32_contiguous(qkv);
    let (Some(bias_q), Some(bias_values), true) = (bias_q, bias_values, fast) else {
        let qkv = qkv
            .reshape((batch, seq, 3, heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)? * scale)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let probs = masked_softmax(q.matmul(&k.t()?)?, bias)?;
        return probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch * seq, hidden));
    };
    let len = batch * seq * hidden;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    // The tasks write every element (each (sequence, head) its block; `gemm` with `read_dst`
    // false stores without reading), so the output is not zero-filled first.
    let shared = DisjointOut::spare(&mut out, len);
    let scale = scale as f32;
    with_f32(qkv, |qkv| {
        let scratch = || vec![0f32; seq * seq];
        crate::for_each_task(batch * heads, scratch, |scores, task| {
            let (b, h) = (task / heads, task % heads);
            let base = b * seq * 3 * hidden + h * hd;
            let row = 3 * hidden as isize;
            // SAFETY: every pointer and stride stays inside `qkv` (rows b·seq..(b+1)·seq,
            // the head's columns of q, k and v) or `scores`; no parallelism inside.
            unsafe {
                gemm::gemm(
                    seq,
                    seq,
                    hd,
                    scores.as_mut_ptr(),
                    1,
                    seq as isize,
                    false,
                    qkv.as_ptr().add(base),
                    1,
                    row,
                    qkv.as_ptr().add(base + hidden),
                    row,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            };
            let bias_row = |i: usize| b * bias_q + if bias_q == seq { i } else { 0 };
            softmax_rows_simd(scores, seq, 0, &bias_values, &bias_row);
            // SAFETY: this task alone writes rows b·seq..(b+1)·seq, columns of head h;
            // `out` outlives the pool call.
            let dst = unsafe { shared.ptr_mut(b * seq * hidden + h * hd) };
            // SAFETY: as above, for `v` and the output's head block.
            unsafe {
                gemm::gemm(
                    seq,
                    hd,
                    seq,
                    dst,
                    1,
                    hidden as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    seq as isize,
                    qkv.as_ptr().add(base + 2 * hidden),
                    1,
                    row,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            };
        })
    })
    .ok_or_else(|| candle::Error::Msg("attention: qkv is not a CPU f32 tensor".into()))?;
    // SAFETY: every element was written by the tasks above (`qkv` was CPU f32, checked).
    unsafe { out.set_len(len) };
    Tensor::from_vec(out, (batch * seq, hidden), qkv.device())
}

fn candle_nn_softmax(x: &Tensor) -> candle::Result<Tensor> {
    super::candle_nn::ops::softmax_last_dim(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No mask, a padding mask of `[batch, 1, 1, k]` (key `j` of sequence `b` masked with
    /// `pad` past `from + b`) and a causal mask of `[batch, 1, q, k]`.
    fn masks((batch, q, k): (usize, usize, usize), from: usize, pad: f32) -> [Option<Tensor>; 3] {
        let dev = candle::Device::Cpu;
        let padding: Vec<f32> = (0..batch * k)
            .map(|i| if i % k > from + i / k { pad } else { 0.0 })
            .collect();
        let causal: Vec<f32> = (0..batch * q * k)
            .map(|i| {
                if i % k > (i / k) % q {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        [
            None,
            Some(Tensor::from_vec(padding, (batch, 1, 1, k), &dev).unwrap()),
            Some(Tensor::from_vec(causal, (batch, 1, q, k), &dev).unwrap()),
        ]
    }

    /// The largest absolute difference between two tensors of one shape.
    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
        d.max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn silu_mul_reads_the_halves_of_a_fused_product() {
        let values: Vec<f32> = (0..5 * 12).map(|i| (i as f32 - 30.0) * 0.37).collect();
        let fused = Tensor::from_vec(values, (5, 12), &candle::Device::Cpu).unwrap();
        let (gate, up) = (
            fused.narrow(1, 0, 6).unwrap(),
            fused.narrow(1, 6, 6).unwrap(),
        );
        let got = silu_mul(&gate, &up).unwrap();
        let want = (gate.silu().unwrap() * &up).unwrap();
        let diff = crate::max_abs_diff(&got, &want);
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn exp_is_within_two_ulps_of_libm() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x), (x as f64).exp());
            let rel = ((got as f64 - want) / want).abs();
            assert!(rel < 2.5e-7, "exp({x}) = {got}, libm {want}: {rel:e}");
            x += 0.0137;
        }
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn gelu_matches_candles_exact_gelu() {
        let xs: Vec<f32> = (0..20_001)
            .map(|i| (i as f32 - 10_000.0) * 1.3e-3)
            .collect();
        let x = Tensor::from_vec(xs.clone(), (xs.len() / 3, 3), &candle::Device::Cpu).unwrap();
        let bias = Tensor::new(&[0.25f32, -1.5, 3.0], &candle::Device::Cpu).unwrap();
        for b in [None, Some(&bias)] {
            let got = bias_gelu(x.copy().unwrap(), b)
                .unwrap()
                .flatten_all()
                .unwrap();
            let want = match b {
                Some(b) => x.broadcast_add(b).unwrap().gelu_erf().unwrap(),
                None => x.gelu_erf().unwrap(),
            };
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let got = got.to_vec1::<f32>().unwrap();
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                .fold(0f32, f32::max);
            // erf's fit is within 4.3e-7 in f32; GELU multiplies that by x / 2.
            assert!(worst < 1.5e-6, "max error {worst:e}");
        }
        // Other dtypes go through candle.
        let h = x.to_dtype(DType::F64).unwrap();
        assert_eq!(bias_gelu(h, None).unwrap().dtype(), DType::F64);
        // The residual form.
        let r = x.affine(0.5, 1.0).unwrap();
        let got = bias_residual(x.copy().unwrap(), Some(&bias), &r).unwrap();
        let want = (x.broadcast_add(&bias).unwrap() + &r).unwrap();
        assert_eq!(max_diff(&got, &want), 0.0);
    }

    #[test]
    fn layer_norm_matches_candle_nn() {
        let dev = candle::Device::Cpu;
        // Rows longer and shorter than a vector, an offset mean, 1000 rows over several tasks.
        for n in [7usize, 384, 770] {
            let rows = 1000;
            let x: Vec<f32> = (0..rows * n)
                .map(|i| 3.0 + ((i * 7919) % 1013) as f32 / 97.0)
                .collect();
            let x = Tensor::from_vec(x, (rows, n), &dev).unwrap();
            let g = Tensor::from_vec((0..n).map(|i| 0.5 + i as f32 / n as f32).collect(), n, &dev)
                .unwrap();
            let b =
                Tensor::from_vec((0..n).map(|i| i as f32 * 0.01 - 1.0).collect(), n, &dev).unwrap();
            // PyTorch's two-pass statistics, in f64.
            let reference = |beta: bool, eps: f64| {
                let (xs, gs, bs) = (
                    x.to_vec2::<f32>().unwrap(),
                    g.to_vec1::<f32>().unwrap(),
                    b.to_vec1::<f32>().unwrap(),
                );
                let out: Vec<f32> = xs
                    .iter()
                    .flat_map(|r| {
                        let mean = r.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
                        let var =
                            r.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
                        let rstd = 1.0 / (var + eps).sqrt();
                        r.iter()
                            .zip(&gs)
                            .zip(&bs)
                            .map(move |((&v, &g), &b)| {
                                let b = if beta { b as f64 } else { 0.0 };
                                ((v as f64 - mean) * rstd * g as f64 + b) as f32
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
                Tensor::from_vec(out, (rows, n), &dev).unwrap()
            };
            let got = layer_norm(&x, &g, Some(&b), 1e-12).unwrap();
            let d = max_diff(&got, &reference(true, 1e-12));
            assert!(d < 2e-6, "n = {n}: {d}");
            // In place: the same arithmetic, so the same values.
            let owned = layer_norm_owned(x.copy().unwrap(), &g, &b, 1e-12).unwrap();
            assert_eq!(max_diff(&owned, &got), 0.0, "n = {n}, in place");
            let got = layer_norm(&x, &g, None, 1e-5).unwrap();
            let d = max_diff(&got, &reference(false, 1e-5));
            assert!(d < 2e-6, "n = {n}, no beta: {d}");
            // A transposed (non-contiguous) input is normalised as its contiguous copy.
            let t = x.t().unwrap();
            let got = layer_norm(
                &t,
                &Tensor::ones(rows, DType::F32, &dev).unwrap(),
                None,
                1e-5,
            );
            let want = layer_norm(
                &t.contiguous().unwrap(),
                &Tensor::ones(rows, DType::F32, &dev).unwrap(),
                None,
                1e-5,
            );
            assert_eq!(max_diff(&got.unwrap(), &want.unwrap()), 0.0);
        }
    }

    #[test]
    fn softmax_matches_candles_with_and_without_masks() {
        let dev = candle::Device::Cpu;
        let (b, h, q, k) = (2, 3, 5, 37);
        let xs: Vec<f32> = (0..b * h * q * k)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.02 - 10.0)
            .collect();
        let x = Tensor::from_vec(xs, (b, h, q, k), &dev).unwrap();
        let masks = masks((b, q, k), 30, -1e30);
        for mask in &masks {
            let got = masked_softmax(x.copy().unwrap(), mask.as_ref()).unwrap();
            let want = match mask {
                Some(m) => candle_nn_softmax(&x.broadcast_add(m).unwrap()).unwrap(),
                None => candle_nn_softmax(&x).unwrap(),
            };
            assert!(max_diff(&got, &want) < 1e-6);
        }
    }

    #[test]
    fn attention_from_a_fused_projection_matches_candles_ops() {
        let dev = candle::Device::Cpu;
        let (batch, seq, heads, hd) = (2, 19, 3, 8);
        let hidden = heads * hd;
        let values: Vec<f32> = (0..batch * seq * 3 * hidden)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.004 - 2.0)
            .collect();
        let qkv = Tensor::from_vec(values, (batch * seq, 3 * hidden), &dev).unwrap();
        let masks = masks((batch, seq, seq), 12, f32::MIN);
        for mask in &masks {
            let got = qkv_attention(&qkv, (batch, seq), heads, mask.as_ref()).unwrap();
            let split = qkv
                .reshape((batch, seq, 3, heads, hd))
                .unwrap()
                .permute((2, 0, 3, 1, 4))
                .unwrap();
            let part = |i| split.get(i).unwrap().contiguous().unwrap();
            let scores =
                (part(0).matmul(&part(1).t().unwrap()).unwrap() / (hd as f64).sqrt()).unwrap();
            let scores = match mask {
                Some(m) => scores.broadcast_add(m).unwrap(),
                None => scores,
            };
            let want = candle_nn_softmax(&scores)
                .unwrap()
                .matmul(&part(2))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .reshape((batch * seq, hidden))
                .unwrap();
            assert!(
                max_diff(&got, &want) < 1e-5,
                "mask {:?}",
                mask.as_ref().map(|m| m.dims().to_vec())
            );
        }
        let err = qkv_attention(&qkv, (batch, seq), 5, None).unwrap_err();
        assert!(err.to_string().contains("5 heads"), "{err}");
    }
}
