//! Building blocks on libtorch that several encoders share (BERT, ViT): activations, a fused
//! QKV projection, and multi-head self-attention through `scaled_dot_product_attention`.

use super::Activation;
use inferox_torch::tch::Tensor;
use inferox_torch::{Linear, Result, Weights};

/// Applies `activation` to `x`.
pub fn activate(activation: Activation, x: &Tensor) -> Result<Tensor> {
    Ok(match activation {
        Activation::Gelu => x.f_gelu("none"),
        Activation::GeluTanh => x.f_gelu("tanh"),
        Activation::Relu => x.f_relu(),
        Activation::Silu => x.f_silu(),
    }?)
}

/// The projections `{prefix}.{name}` for the three names given (query, key, value) fused into
/// one `[3 × hidden, hidden]` layer.
pub fn fused_qkv(w: &Weights, prefix: &str, names: [&str; 3], hidden: usize) -> Result<Linear> {
    let parts = names
        .iter()
        .map(|n| w.linear(&format!("{prefix}.{n}"), hidden, hidden))
        .collect::<Result<Vec<_>>>()?;
    let cat =
        |f: fn(&Linear) -> &Tensor| Tensor::f_cat(&parts.iter().map(f).collect::<Vec<_>>(), 0);
    Ok(Linear {
        weight: cat(|l| &l.weight)?,
        bias: cat(|l| &l.bias)?,
    })
}

/// Multi-head self-attention of `x` (`[batch, seq, hidden]`) through the fused `qkv`
/// projection with an optional additive `mask`; returns the heads merged, `[batch, seq,
/// hidden]` (before the output projection).
pub fn self_attention(
    qkv: &Linear,
    x: &Tensor,
    mask: Option<&Tensor>,
    heads: i64,
) -> Result<Tensor> {
    let (batch, seq, hidden) = x.size3()?;
    let qkv = qkv
        .forward(x)?
        .f_reshape([batch, seq, 3, heads, hidden / heads])?
        .f_permute([2, 0, 3, 1, 4])?;
    let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
    Ok(
        Tensor::f_scaled_dot_product_attention(&q, &k, &v, mask, 0.0, false, None::<f64>, false)?
            .f_transpose(1, 2)?
            .f_reshape([batch, seq, hidden])?,
    )
}
