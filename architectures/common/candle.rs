//! Building blocks on candle that several encoders share (BERT, ViT, CLIP): dense layers with
//! pre-transposed weights, layer norms, multi-head self-attention over a fused QKV projection,
//! and the pre-norm transformer layer.

use super::{Activation, LayerNames};
use inferox_candle::candle_core::{self as candle, Module, Tensor};
use inferox_candle::candle_nn::VarBuilder;
use inferox_candle::packed::{self, Bf16Scope, PackedWeight, Then};

/// A dense layer with its weight stored transposed (`[in, out]`, contiguous): the layout the
/// GEMM kernel reads without repacking, which halves the cost of small batches.
pub struct Dense {
    weight: DenseWeight,
    bias: Option<Tensor>,
}

/// How a dense layer holds its weight.
enum DenseWeight {
    /// `[in, out]`, contiguous, for candle's matmul.
    Transposed(Tensor),
    /// Packed into panels for the backend's AVX-512 kernel, in f32 or rounded to bf16.
    Packed(PackedWeight),
}

impl Dense {
    /// From a `[out, in]` weight (PyTorch's `nn.Linear` layout) and an optional bias. On a
    /// CPU with AVX-512 an f32 weight is packed for the backend's kernel, and inside a load
    /// that asks for bf16 ([`float_device`]) it is rounded to bf16 as it is packed.
    pub fn new(weight: &Tensor, bias: Option<Tensor>) -> candle::Result<Dense> {
        let packable =
            weight.device().is_cpu() && weight.dtype() == candle::DType::F32 && packed::supported();
        let weight = if packable {
            DenseWeight::Packed(PackedWeight::from_linear(weight, packed::bf16_requested())?)
        } else {
            DenseWeight::Transposed(weight.t()?.contiguous()?)
        };
        Ok(Dense { weight, bias })
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
        match (&self.weight, &self.bias) {
            (DenseWeight::Packed(p), bias) => p.matmul(x, bias.as_ref()),
            (DenseWeight::Transposed(w), Some(b)) => x.matmul(w)?.broadcast_add(b),
            (DenseWeight::Transposed(w), None) => x.matmul(w),
        }
    }

    /// `activation(forward(x))`, with the bias add and GELU in one pass where they fuse.
    pub fn forward_activated(&self, x: &Tensor, activation: Activation) -> candle::Result<Tensor> {
        match activation {
            Activation::Gelu => match &self.weight {
                DenseWeight::Packed(p) => p.matmul_then(x, self.bias.as_ref(), Then::Gelu),
                DenseWeight::Transposed(w) => {
                    inferox_candle::fused::bias_gelu(x.matmul(w)?, self.bias.as_ref())
                }
            },
            _ => activation.apply(&self.forward(x)?),
        }
    }

    /// `forward(x) + residual`, with the bias and the residual added in one pass.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> candle::Result<Tensor> {
        match &self.weight {
            DenseWeight::Packed(p) => p.matmul_then(x, self.bias.as_ref(), Then::Add(residual)),
            DenseWeight::Transposed(w) => {
                inferox_candle::fused::bias_residual(x.matmul(w)?, self.bias.as_ref(), residual)
            }
        }
    }

    /// `norm(forward(x) + residual)`, a post-norm block's end: with packed weights the rows
    /// are normalised as the product finishes them, while they are in cache.
    pub fn forward_residual_norm(
        &self,
        x: &Tensor,
        residual: &Tensor,
        norm: &LayerNorm,
    ) -> candle::Result<Tensor> {
        match &self.weight {
            DenseWeight::Packed(p) => p.matmul_then(
                x,
                self.bias.as_ref(),
                Then::AddNorm {
                    residual,
                    weight: &norm.weight,
                    bias: &norm.bias,
                    eps: norm.eps,
                },
            ),
            DenseWeight::Transposed(_) => norm.forward_owned(self.forward_residual(x, residual)?),
        }
    }
}

/// The device and the floating-point compute dtype a candle loader runs with, and the scope
/// of the load (hold it until the model is built). bf16 on a CPU with AVX-512 computes in f32
/// with the dense layers' weights rounded to bf16 (`inferox_candle::packed`: the weights take
/// half the memory, the products are bf16 weight × f32 activation summed in f32); elsewhere
/// the dtype is candle's for every tensor.
pub fn float_device(
    req: &inferox_core::load::LoadRequest<'_>,
) -> inferox_core::Result<(candle::Device, candle::DType, Bf16Scope)> {
    let device = inferox_candle::device(req.options.device)?;
    let dtype = inferox_candle::dtype(req.dtype())?;
    if !dtype.is_float() {
        return Err(inferox_core::Error::InvalidArgument(format!(
            "compute dtype must be floating point, not {}",
            req.dtype()
        )));
    }
    let bf16 = dtype == candle::DType::BF16 && device.is_cpu() && packed::supported();
    let dtype = if bf16 { candle::DType::F32 } else { dtype };
    Ok((device, dtype, Bf16Scope::begin(bf16)))
}

/// A layer norm (`nn.LayerNorm`) run by the backend's fused kernel.
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        inferox_candle::fused::layer_norm(x, &self.weight, Some(&self.bias), self.eps)
    }
}

impl LayerNorm {
    /// [`forward`](Module::forward) in place of `x`, for a tensor nothing else reads (a
    /// residual sum just computed): no output to allocate.
    pub fn forward_owned(&self, x: Tensor) -> candle::Result<Tensor> {
        inferox_candle::fused::layer_norm_owned(x, &self.weight, &self.bias, self.eps)
    }
}

/// A layer norm of `size` under `vb` (`weight`, `bias`).
pub fn layer_norm(vb: VarBuilder, size: usize, eps: f64) -> candle::Result<LayerNorm> {
    Ok(LayerNorm {
        weight: vb.get(size, "weight")?,
        bias: vb.get(size, "bias")?,
        eps,
    })
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
    inferox_candle::fused::qkv_attention(&qkv.forward(x)?, (batch, seq), heads, bias)
}

/// `x + attn(norm1(x))`, then `x + fc2(act(fc1(norm2(x))))`.
pub struct PreNormLayer {
    norm1: LayerNorm,
    qkv: Dense,
    out: Dense,
    norm2: LayerNorm,
    fc1: Dense,
    fc2: Dense,
}

impl PreNormLayer {
    /// The layer under `vb` with `names`.
    pub fn load(
        vb: VarBuilder,
        names: &LayerNames,
        (hidden, intermediate): (usize, usize),
        eps: f64,
    ) -> candle::Result<PreNormLayer> {
        Ok(PreNormLayer {
            norm1: layer_norm(vb.pp(names.norm1), hidden, eps)?,
            qkv: fused_qkv(&vb.pp(names.attention), names.qkv, hidden)?,
            out: Dense::load(vb.pp(names.out), hidden, hidden)?,
            norm2: layer_norm(vb.pp(names.norm2), hidden, eps)?,
            fc1: Dense::load(vb.pp(names.fc1), hidden, intermediate)?,
            fc2: Dense::load(vb.pp(names.fc2), intermediate, hidden)?,
        })
    }

    /// The layer on `x` (`[batch × seq, hidden]`) with an optional additive attention `bias`.
    pub fn forward(
        &self,
        x: &Tensor,
        bias: Option<&Tensor>,
        shape: (usize, usize),
        heads: usize,
        activation: Activation,
    ) -> candle::Result<Tensor> {
        let attn = self_attention(&self.qkv, &self.norm1.forward(x)?, bias, shape, heads)?;
        let x = self.out.forward_residual(&attn, x)?;
        let inner = self
            .fc1
            .forward_activated(&self.norm2.forward(&x)?, activation)?;
        self.fc2.forward_residual(&inner, &x)
    }
}

/// A vision transformer's input: the image cut into patches, each projected to a token (the
/// strided convolution as one GEMM over the unfolded patches), a class token in front, and
/// position embeddings added — interpolated as transformers' `interpolate_pos_encoding` does
/// for another patch grid than the trained one (ViT, CLIP).
pub struct PatchEmbeddings {
    /// The projection as `[channels × patch × patch, hidden]`.
    patch: Dense,
    cls: Tensor,
    cls_position: Tensor,
    position: Tensor,
    position_host: Vec<f32>,
    side: usize,
    patch_size: usize,
    hidden: usize,
}

impl PatchEmbeddings {
    /// From the convolution's `weight` (`[hidden, channels, p, p]`) and optional `bias`, the
    /// class token (`hidden` values) and the position table (`[1 + side², hidden]`).
    pub fn new(
        weight: &Tensor,
        bias: Option<Tensor>,
        cls: &Tensor,
        position: &Tensor,
    ) -> candle::Result<PatchEmbeddings> {
        let (hidden, c, p, _) = weight.dims4()?;
        let tokens = position.dim(0)?;
        let side = ((tokens - 1) as f64).sqrt() as usize;
        let patches = tokens - 1;
        Ok(PatchEmbeddings {
            patch: Dense::new(&weight.reshape((hidden, c * p * p))?, bias)?,
            cls: cls.reshape((1, 1, hidden))?,
            cls_position: position.narrow(0, 0, 1)?,
            position: position.narrow(0, 1, patches)?,
            position_host: position
                .narrow(0, 1, patches)?
                .to_dtype(candle::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
            side,
            patch_size: p,
            hidden,
        })
    }

    /// `[batch × tokens, hidden]` for `pixels` (`[batch, channels, height, width]`), and the
    /// token count. `None` when the image is smaller than one patch.
    pub fn forward(&self, pixels: &Tensor) -> candle::Result<Option<(Tensor, usize)>> {
        let (batch, c, height, width) = pixels.dims4()?;
        let p = self.patch_size;
        let (nh, nw) = (height / p, width / p);
        if nh == 0 || nw == 0 {
            return Ok(None);
        }
        // The convolution's window (c, p, p) for each patch, rows in raster order; pixels
        // beyond the last whole patch are dropped, as the strided convolution drops them.
        let patches = pixels
            .narrow(2, 0, nh * p)?
            .narrow(3, 0, nw * p)?
            .reshape((batch, c, nh, p, nw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((batch * nh * nw, c * p * p))?;
        let tokens = self
            .patch
            .forward(&patches)?
            .reshape((batch, nh * nw, self.hidden))?;
        let position = if nh * nw == self.side * self.side && height == width {
            self.position.clone()
        } else {
            let table =
                super::interpolate_positions(&self.position_host, self.side, self.hidden, nh, nw);
            Tensor::from_vec(table, (nh * nw, self.hidden), self.position.device())?
                .to_dtype(self.position.dtype())?
        };
        let position = Tensor::cat(&[&self.cls_position, &position], 0)?;
        let cls = self.cls.repeat((batch, 1, 1))?;
        let seq = nh * nw + 1;
        let x = Tensor::cat(&[cls, tokens], 1)?
            .broadcast_add(&position)?
            .reshape((batch * seq, self.hidden))?;
        Ok(Some((x, seq)))
    }
}

/// `pixel_values` as a candle tensor of `dtype`, and the batch size.
pub fn pixel_tensor(
    inputs: &inferox_core::tensor::NamedTensors,
    dtype: candle::DType,
    device: &candle::Device,
) -> inferox_candle::Result<(Tensor, usize)> {
    let pixels = inputs
        .get("pixel_values")
        .ok_or_else(|| inferox_core::Error::Input {
            name: "pixel_values".into(),
            message: "missing (it is required)".into(),
        })?;
    let values = pixels.as_f32().ok_or_else(|| inferox_core::Error::Input {
        name: "pixel_values".into(),
        message: format!("dtype is {}, expected float32", pixels.dtype()),
    })?;
    let x = Tensor::from_slice(values, pixels.shape(), device)?.to_dtype(dtype)?;
    Ok((x, pixels.shape()[0]))
}

/// The input error of an image smaller than one patch.
pub fn too_small(shape: &[usize], patch: usize) -> inferox_core::Error {
    inferox_core::Error::Input {
        name: "pixel_values".into(),
        message: format!("shape {shape:?}: the image is smaller than one {patch}×{patch} patch"),
    }
}
