//! ResNet on candle. Ported from transformers' `modeling_resnet.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/resnet/modeling_resnet.py>).
//! Batch norm is folded into the convolution before it at load (inference statistics are
//! fixed), so each conv layer is one convolution with a bias.

use super::{BATCH_NORM_EPS, LayerType, Layout, ResNetConfig};
use crate::common::candle::{Dense, float_device, pixel_tensor};
use crate::common::{Activation, read_checked_config};
use candle::{Device, Tensor};
use candle_nn::VarBuilder;
use inferox_candle::{Result, Weights, candle_core as candle, candle_nn, to_host};
use inferox_core::load::LoadRequest;
use inferox_core::manifest::ArtifactRole;
use inferox_core::model::Model;
use inferox_core::tensor::NamedTensors;

/// A convolution with its batch norm folded in, and an optional activation after
/// (transformers' `ResNetConvLayer` / `ResNetShortCut`).
struct ConvBn {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
    activation: Option<Activation>,
}

impl ConvBn {
    fn load(
        vb: VarBuilder,
        (input, output, kernel): (usize, usize, usize),
        stride: usize,
        activation: Option<Activation>,
    ) -> candle::Result<ConvBn> {
        let weight = vb.get((output, input, kernel, kernel), "convolution.weight")?;
        let bn = vb.pp("normalization");
        let gamma = bn.get(output, "weight")?;
        let beta = bn.get(output, "bias")?;
        let mean = bn.get(output, "running_mean")?;
        let var = bn.get(output, "running_var")?;
        let scale = (gamma / (var + BATCH_NORM_EPS)?.sqrt()?)?;
        Ok(ConvBn {
            weight: weight.broadcast_mul(&scale.reshape((output, 1, 1, 1))?)?,
            bias: (beta - (mean * &scale)?)?.reshape((1, output, 1, 1))?,
            stride,
            padding: kernel / 2,
            activation,
        })
    }

    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        let y = x
            .conv2d(&self.weight, self.padding, self.stride, 1, 1)?
            .broadcast_add(&self.bias)?;
        match self.activation {
            Some(a) => a.apply(&y),
            None => Ok(y),
        }
    }
}

/// A basic or bottleneck residual layer.
struct Residual {
    convs: Vec<ConvBn>,
    shortcut: Option<ConvBn>,
    activation: Activation,
}

impl Residual {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        let mut h = x.clone();
        for conv in &self.convs {
            h = conv.forward(&h)?;
        }
        let residual = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        self.activation.apply(&(h + residual)?)
    }
}

/// A ResNet with its optional classifier.
pub struct ResNet {
    stem: ConvBn,
    layers: Vec<Residual>,
    classifier: Option<Dense>,
    channels: usize,
    device: Device,
}

/// The registry's loader for the candle backend.
pub fn load(req: &LoadRequest<'_>) -> inferox_core::Result<Box<dyn Model>> {
    let (cfg, layout) = read_checked_config(req, ResNetConfig::checked)?;
    let weights = Weights::open(&req.artifacts(ArtifactRole::Weights)?)?;
    let (device, dtype, _packing) = float_device(req)?;
    let vb = weights.var_builder(dtype, &device);
    let model = ResNet::load(vb, &cfg, &layout, device).map_err(|e| weights.explain(e))?;
    Ok(Box::new(model))
}

impl ResNet {
    fn load(
        vb: VarBuilder,
        cfg: &ResNetConfig,
        layout: &Layout,
        device: Device,
    ) -> candle::Result<Self> {
        let base = match layout.prefix.strip_suffix('.') {
            Some(prefix) => vb.pp(prefix),
            None => vb.clone(),
        };
        let act = cfg.hidden_act;
        let stem = ConvBn::load(
            base.pp("embedder.embedder"),
            (cfg.num_channels, cfg.embedding_size, 7),
            2,
            Some(act),
        )?;
        let mut layers = Vec::new();
        for (i, stage) in cfg.plan().iter().enumerate() {
            for (j, plan) in stage.iter().enumerate() {
                let vb = base.pp(format!("encoder.stages.{i}.layers.{j}"));
                let (inp, out, s) = (plan.input, plan.output, plan.stride);
                // The inner convolutions use ReLU whatever hidden_act says, as transformers'
                // ResNetConvLayer defaults; hidden_act applies after the residual sum.
                let relu = Some(Activation::Relu);
                let l = vb.pp("layer");
                let convs = match cfg.layer_type {
                    LayerType::Basic => vec![
                        ConvBn::load(l.pp("0"), (inp, out, 3), s, relu)?,
                        ConvBn::load(l.pp("1"), (out, out, 3), 1, None)?,
                    ],
                    LayerType::Bottleneck => {
                        let r = out / 4;
                        let (s1, s2) = match cfg.downsample_in_bottleneck {
                            true => (s, 1),
                            false => (1, s),
                        };
                        vec![
                            ConvBn::load(l.pp("0"), (inp, r, 1), s1, relu)?,
                            ConvBn::load(l.pp("1"), (r, r, 3), s2, relu)?,
                            ConvBn::load(l.pp("2"), (r, out, 1), 1, None)?,
                        ]
                    }
                };
                let shortcut = match plan.shortcut {
                    true => Some(ConvBn::load(vb.pp("shortcut"), (inp, out, 1), s, None)?),
                    false => None,
                };
                layers.push(Residual {
                    convs,
                    shortcut,
                    activation: act,
                });
            }
        }
        let channels = *cfg.hidden_sizes.last().expect("checked non-empty");
        let classifier = match layout.num_labels {
            Some(n) => Some(Dense::load(vb.pp("classifier.1"), channels, n)?),
            None => None,
        };
        Ok(ResNet {
            stem,
            layers,
            classifier,
            channels,
            device,
        })
    }

    fn outputs(&self, inputs: &NamedTensors) -> Result<NamedTensors> {
        let (x, _) = pixel_tensor(inputs, self.stem.weight.dtype(), &self.device)?;
        let x = self.stem.forward(&x)?;
        // Max pooling 3×3, stride 2, padding 1: padding with copies of the edge gives the
        // same maxima as padding with -inf, since each padded window holds the edge pixel.
        let mut x = x
            .pad_with_same(2, 1, 1)?
            .pad_with_same(3, 1, 1)?
            .max_pool2d_with_stride((3, 3), (2, 2))?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        let batch = x.dim(0)?;
        let pooled = x.mean_keepdim(3)?.mean_keepdim(2)?;
        let mut out = NamedTensors::new();
        out.insert("last_hidden_state", to_host(&x)?);
        if let Some(classifier) = &self.classifier {
            let flat = pooled.reshape((batch, self.channels))?;
            out.insert("logits", to_host(&classifier.forward(&flat)?)?);
        }
        out.insert("pooler_output", to_host(&pooled)?);
        Ok(out)
    }
}

impl Model for ResNet {
    fn forward(&self, inputs: &NamedTensors) -> inferox_core::Result<NamedTensors> {
        self.outputs(inputs).map_err(Into::into)
    }
}
