//! Building blocks on libtorch that several encoders share (BERT, ViT, CLIP): activations, a
//! fused QKV projection, multi-head self-attention through `scaled_dot_product_attention`, and
//! the pre-norm transformer layer.

use super::{Activation, LayerNames};
use inferox_torch::tch::{Kind, Tensor};
use inferox_torch::{Linear, Result, Weights};

/// Applies `activation` to `x`.
pub fn activate(activation: Activation, x: &Tensor) -> Result<Tensor> {
    Ok(match activation {
        Activation::Gelu => x.f_gelu("none"),
        Activation::GeluTanh => x.f_gelu("tanh"),
        Activation::Relu => x.f_relu(),
        Activation::Silu => x.f_silu(),
        Activation::QuickGelu => x.f_mul(&(x * 1.702).f_sigmoid()?),
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

/// `x + attn(norm1(x))`, then `x + fc2(act(fc1(norm2(x))))`.
pub struct PreNormLayer {
    norm1: inferox_torch::LayerNorm,
    qkv: Linear,
    out: Linear,
    norm2: inferox_torch::LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl PreNormLayer {
    /// The layer under `prefix` with `names`.
    pub fn load(
        w: &Weights,
        prefix: &str,
        names: &LayerNames,
        (hidden, intermediate): (usize, usize),
        eps: f64,
    ) -> Result<PreNormLayer> {
        let at = |n: &str| format!("{prefix}.{n}");
        Ok(PreNormLayer {
            norm1: w.layer_norm(&at(names.norm1), hidden, eps)?,
            qkv: fused_qkv(w, &at(names.attention), names.qkv, hidden)?,
            out: w.linear(&at(names.out), hidden, hidden)?,
            norm2: w.layer_norm(&at(names.norm2), hidden, eps)?,
            fc1: w.linear(&at(names.fc1), hidden, intermediate)?,
            fc2: w.linear(&at(names.fc2), intermediate, hidden)?,
        })
    }

    /// The layer on `x` (`[batch, seq, hidden]`) with an optional additive attention `mask`.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        heads: i64,
        activation: Activation,
    ) -> Result<Tensor> {
        let attn = self_attention(&self.qkv, &self.norm1.forward(x)?, mask, heads)?;
        let x = self.out.forward(&attn)? + x;
        let inner = activate(activation, &self.fc1.forward(&self.norm2.forward(&x)?)?)?;
        Ok(self.fc2.forward(&inner)? + x)
    }
}

/// A vision transformer's input on libtorch: the strided patch convolution, a class token in
/// front, and position embeddings added — resized with `upsample_bicubic2d` as transformers'
/// `interpolate_pos_encoding` does for another patch grid than the trained one (ViT, CLIP).
pub struct PatchEmbeddings {
    weight: Tensor,
    bias: Option<Tensor>,
    /// `[1, 1, hidden]`.
    cls: Tensor,
    /// `[1, 1 + side², hidden]`.
    position: Tensor,
    side: i64,
    patch_size: i64,
}

impl PatchEmbeddings {
    /// From the convolution's `weight` (`[hidden, channels, p, p]`) and optional `bias`, the
    /// class token (`hidden` values) and the position table (`[1 + side², hidden]`).
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        cls: &Tensor,
        position: &Tensor,
    ) -> Result<PatchEmbeddings> {
        let size = weight.size();
        let (hidden, patch_size) = (size[0], size[2]);
        let tokens = position.size()[0];
        Ok(PatchEmbeddings {
            weight,
            bias,
            cls: cls.f_reshape([1, 1, hidden])?,
            position: position.f_reshape([1, tokens, hidden])?,
            side: ((tokens - 1) as f64).sqrt() as i64,
            patch_size,
        })
    }

    /// The model's dtype.
    pub fn kind(&self) -> Kind {
        self.weight.kind()
    }

    /// `[batch, tokens, hidden]` for `pixels` (`[batch, channels, height, width]`); `None` when
    /// the image is smaller than one patch.
    pub fn forward(&self, pixels: &Tensor) -> Result<Option<Tensor>> {
        let (batch, _, height, width) = pixels.size4()?;
        let p = self.patch_size;
        let (nh, nw) = (height / p, width / p);
        if nh == 0 || nw == 0 {
            return Ok(None);
        }
        let patches = pixels
            .f_conv2d(&self.weight, self.bias.as_ref(), [p, p], [0, 0], [1, 1], 1)?
            .f_flatten(2, 3)?
            .f_transpose(1, 2)?;
        let position = if nh * nw == self.side * self.side && height == width {
            self.position.shallow_clone()
        } else {
            let hidden = self.position.size()[2];
            let grid = self
                .position
                .narrow(1, 1, self.side * self.side)
                .f_reshape([1, self.side, self.side, hidden])?
                .f_permute([0, 3, 1, 2])?
                .f_upsample_bicubic2d([nh, nw], false, None::<f64>, None::<f64>)?
                .f_permute([0, 2, 3, 1])?
                .f_reshape([1, nh * nw, hidden])?;
            Tensor::f_cat(&[self.position.narrow(1, 0, 1), grid], 1)?
        };
        let cls = self.cls.f_expand([batch, -1, -1], false)?;
        Ok(Some(Tensor::f_cat(&[cls, patches], 1)? + position))
    }
}

/// `pixel_values` as a libtorch tensor of `kind` on `device`.
pub fn pixel_tensor(
    inputs: &inferox_core::tensor::NamedTensors,
    kind: Kind,
    device: inferox_torch::tch::Device,
) -> Result<Tensor> {
    let pixels = inputs
        .get("pixel_values")
        .ok_or_else(|| inferox_core::Error::Input {
            name: "pixel_values".into(),
            message: "missing (it is required)".into(),
        })?;
    Ok(inferox_torch::to_tensor(pixels, device)?.f_to_kind(kind)?)
}

/// The input error of an image smaller than one patch.
pub fn too_small(shape: &[i64], patch: i64) -> inferox_core::Error {
    inferox_core::Error::Input {
        name: "pixel_values".into(),
        message: format!("shape {shape:?}: the image is smaller than one {patch}×{patch} patch"),
    }
}
