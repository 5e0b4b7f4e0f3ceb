//! LSTM, GRU and RNN on libtorch: the same ATen operators `torch.nn.LSTM` / `GRU` / `RNN` call
//! (`torch/nn/modules/rnn.py`, <https://github.com/pytorch/pytorch/blob/main/torch/nn/modules/rnn.py>),
//! given the `state_dict`'s tensors in the module's flat-weights order.

use super::{Cell, RecurrentConfig, missing};
use crate::common::read_checked_config;
use inferox_core::load::LoadRequest;
use inferox_core::manifest::ArtifactRole;
use inferox_core::model::Model;
use inferox_core::tensor::NamedTensors;
use inferox_torch::tch::{self, Kind, Tensor};
use inferox_torch::{Result, Weights, set_threads, to_host, to_tensor};

/// A recurrent network on libtorch.
pub struct Recurrent {
    cell: Cell,
    cfg: RecurrentConfig,
    /// `weight_ih`, `weight_hh`, (`bias_ih`, `bias_hh`,) (`weight_hr`) of every layer and
    /// direction: `torch.nn.RNNBase._flat_weights`.
    params: Vec<Tensor>,
    kind: Kind,
    device: tch::Device,
}

// SAFETY: `tch::Tensor` is not `Sync` because some of its methods mutate (in-place ops,
// autograd). These weights are written once at load and then only read, by out-of-place ops
// under `no_grad`, which libtorch allows from several threads at once.
unsafe impl Sync for Recurrent {}

/// The registry's loader for the torch backend.
pub fn load(req: &LoadRequest<'_>) -> inferox_core::Result<Box<dyn Model>> {
    let (cfg, cell) = read_checked_config(req, RecurrentConfig::checked)?;
    let device = inferox_torch::device(req.options.device)?;
    set_threads(req.options.threads);
    let weights = Weights::open(&req.artifacts(ArtifactRole::Weights)?, req.dtype(), device)?;
    let params = cfg
        .tensors(cell)
        .iter()
        .map(|(name, shape)| weights.get(name, shape))
        .collect::<Result<Vec<_>>>()?;
    let kind = params[0].kind();
    Ok(Box::new(Recurrent {
        cell,
        cfg,
        params,
        kind,
        device,
    }))
}

impl Recurrent {
    /// Input `name` on the model's device and kind, if given.
    fn input(&self, inputs: &NamedTensors, name: &str) -> Result<Option<Tensor>> {
        inputs
            .get(name)
            .map(|t| Ok(to_tensor(t, self.device)?.f_to_kind(self.kind)?))
            .transpose()
    }

    /// An initial state `[layers × directions, batch, size]`: the input, or zeros.
    fn state(&self, given: Option<Tensor>, batch: i64, size: usize) -> Result<Tensor> {
        match given {
            Some(s) => Ok(s),
            None => {
                let states = (self.cfg.num_layers * self.cfg.directions()) as i64;
                Ok(Tensor::f_zeros(
                    [states, batch, size as i64],
                    (self.kind, self.device),
                )?)
            }
        }
    }

    fn outputs(&self, inputs: &NamedTensors) -> Result<NamedTensors> {
        let _guard = tch::no_grad_guard();
        let x = self
            .input(inputs, "input")?
            .ok_or_else(|| missing("input"))?;
        let dims = x.size();
        if dims.len() != 3 {
            return Err(inferox_core::Error::Input {
                name: "input".into(),
                message: format!("shape {dims:?} has rank {}, expected 3", dims.len()),
            }
            .into());
        }
        let batch = dims[if self.cfg.batch_first { 0 } else { 1 }];
        let h0 = self.state(self.input(inputs, "h0")?, batch, self.cfg.output_size())?;
        let cfg = &self.cfg;
        // Dropout 0 and inference mode, as `module.eval()` runs them.
        let (b, l, p, train, bi, first) = (
            cfg.bias,
            cfg.num_layers as i64,
            0.0,
            false,
            cfg.bidirectional,
            cfg.batch_first,
        );
        let mut out = NamedTensors::new();
        let (output, h_n) = match self.cell {
            Cell::Lstm => {
                let c0 = self.state(self.input(inputs, "c0")?, batch, cfg.hidden_size)?;
                let (o, h, c) = x.f_lstm(&[h0, c0], &self.params, b, l, p, train, bi, first)?;
                out.insert("c_n", to_host(&c)?);
                (o, h)
            }
            Cell::Gru => x.f_gru(&h0, &self.params, b, l, p, train, bi, first)?,
            Cell::RnnTanh => x.f_rnn_tanh(&h0, &self.params, b, l, p, train, bi, first)?,
            Cell::RnnRelu => x.f_rnn_relu(&h0, &self.params, b, l, p, train, bi, first)?,
        };
        out.insert("output", to_host(&output)?);
        out.insert("h_n", to_host(&h_n)?);
        Ok(out)
    }
}

impl Model for Recurrent {
    fn forward(&self, inputs: &NamedTensors) -> inferox_core::Result<NamedTensors> {
        self.outputs(inputs).map_err(Into::into)
    }
}
