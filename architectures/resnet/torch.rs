//! ResNet on libtorch, from the same config.json and safetensors files as the candle backend.
//! Ported from transformers' `modeling_resnet.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/resnet/modeling_resnet.py>):
//! convolutions, inference batch norm, max and average pooling are libtorch's own.

use super::{BATCH_NORM_EPS, LayerType, Layout, ResNetConfig};
use crate::common::torch::{activate, pixel_tensor};
use crate::common::{Activation, read_checked_config};
use inferox_core::load::LoadRequest;
use inferox_core::manifest::ArtifactRole;
use inferox_core::model::Model;
use inferox_core::tensor::NamedTensors;
use inferox_torch::tch::{self, Kind, Tensor};
use inferox_torch::{Linear, Result, Weights, set_threads, to_host};

/// `ResNetConvLayer` / `ResNetShortCut`: convolution, batch norm, optional activation.
struct ConvBn {
    weight: Tensor,
    norm: [Tensor; 4],
    stride: i64,
    padding: i64,
    activation: Option<Activation>,
}

impl ConvBn {
    fn load(
        w: &Weights,
        prefix: &str,
        (input, output, kernel): (usize, usize, usize),
        stride: usize,
        activation: Option<Activation>,
    ) -> Result<ConvBn> {
        let bn = |n: &str| w.get(&format!("{prefix}.normalization.{n}"), &[output]);
        Ok(ConvBn {
            weight: w.get(
                &format!("{prefix}.convolution.weight"),
                &[output, input, kernel, kernel],
            )?,
            norm: [
                bn("weight")?,
                bn("bias")?,
                bn("running_mean")?,
                bn("running_var")?,
            ],
            stride: stride as i64,
            padding: (kernel / 2) as i64,
            activation,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [gamma, beta, mean, var] = &self.norm;
        let y = x
            .f_conv2d(
                &self.weight,
                None::<&Tensor>,
                [self.stride, self.stride],
                [self.padding, self.padding],
                [1, 1],
                1,
            )?
            .f_batch_norm(
                Some(gamma),
                Some(beta),
                Some(mean),
                Some(var),
                false,
                0.1,
                BATCH_NORM_EPS,
                false,
            )?;
        match self.activation {
            Some(a) => activate(a, &y),
            None => Ok(y),
        }
    }
}

struct Residual {
    convs: Vec<ConvBn>,
    shortcut: Option<ConvBn>,
}

/// A ResNet on libtorch with its optional classifier.
pub struct ResNet {
    stem: ConvBn,
    layers: Vec<Residual>,
    classifier: Option<Linear>,
    activation: Activation,
    kind: Kind,
    device: tch::Device,
}

// SAFETY: `tch::Tensor` is not `Sync` because some of its methods mutate (in-place ops,
// autograd). These weights are written once at load and then only read, by out-of-place ops
// under `no_grad`, which libtorch allows from several threads at once.
unsafe impl Sync for ResNet {}

/// The registry's loader for the torch backend.
pub fn load(req: &LoadRequest<'_>) -> inferox_core::Result<Box<dyn Model>> {
    let (cfg, layout) = read_checked_config(req, ResNetConfig::checked)?;
    let device = inferox_torch::device(req.options.device)?;
    set_threads(req.options.threads);
    let weights = Weights::open(&req.artifacts(ArtifactRole::Weights)?, req.dtype(), device)?;
    Ok(Box::new(ResNet::load(&weights, &cfg, &layout, device)?))
}

impl ResNet {
    fn load(w: &Weights, cfg: &ResNetConfig, layout: &Layout, device: tch::Device) -> Result<Self> {
        let p = &layout.prefix;
        let stem = ConvBn::load(
            w,
            &format!("{p}embedder.embedder"),
            (cfg.num_channels, cfg.embedding_size, 7),
            2,
            Some(cfg.hidden_act),
        )?;
        let relu = Some(Activation::Relu);
        let mut layers = Vec::new();
        for (i, stage) in cfg.plan().iter().enumerate() {
            for (j, plan) in stage.iter().enumerate() {
                let l = format!("{p}encoder.stages.{i}.layers.{j}");
                let (inp, out, s) = (plan.input, plan.output, plan.stride);
                let conv = |k: usize, shape, stride, act| {
                    ConvBn::load(w, &format!("{l}.layer.{k}"), shape, stride, act)
                };
                let convs = match cfg.layer_type {
                    LayerType::Basic => vec![
                        conv(0, (inp, out, 3), s, relu)?,
                        conv(1, (out, out, 3), 1, None)?,
                    ],
                    LayerType::Bottleneck => {
                        let r = out / 4;
                        let (s1, s2) = match cfg.downsample_in_bottleneck {
                            true => (s, 1),
                            false => (1, s),
                        };
                        vec![
                            conv(0, (inp, r, 1), s1, relu)?,
                            conv(1, (r, r, 3), s2, relu)?,
                            conv(2, (r, out, 1), 1, None)?,
                        ]
                    }
                };
                let shortcut = plan
                    .shortcut
                    .then(|| ConvBn::load(w, &format!("{l}.shortcut"), (inp, out, 1), s, None))
                    .transpose()?;
                layers.push(Residual { convs, shortcut });
            }
        }
        let channels = *cfg.hidden_sizes.last().expect("checked non-empty");
        Ok(ResNet {
            kind: stem.weight.kind(),
            stem,
            layers,
            classifier: layout
                .num_labels
                .map(|n| w.linear("classifier.1", channels, n))
                .transpose()?,
            activation: cfg.hidden_act,
            device,
        })
    }

    fn outputs(&self, inputs: &NamedTensors) -> Result<NamedTensors> {
        let _guard = tch::no_grad_guard();
        let x = pixel_tensor(inputs, self.kind, self.device)?;
        let mut x = self
            .stem
            .forward(&x)?
            .f_max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)?;
        for layer in &self.layers {
            let mut h = x.shallow_clone();
            for conv in &layer.convs {
                h = conv.forward(&h)?;
            }
            let residual = match &layer.shortcut {
                Some(s) => s.forward(&x)?,
                None => x.shallow_clone(),
            };
            x = activate(self.activation, &(h + residual))?;
        }
        let pooled = x.f_adaptive_avg_pool2d([1, 1])?;
        let mut out = NamedTensors::new();
        if let Some(classifier) = &self.classifier {
            out.insert(
                "logits",
                to_host(&classifier.forward(&pooled.f_flatten(1, -1)?)?)?,
            );
        }
        out.insert("last_hidden_state", to_host(&x)?);
        out.insert("pooler_output", to_host(&pooled)?);
        Ok(out)
    }
}

impl Model for ResNet {
    fn forward(&self, inputs: &NamedTensors) -> inferox_core::Result<NamedTensors> {
        self.outputs(inputs).map_err(Into::into)
    }
}
