//! Recurrent networks as PyTorch defines them: `torch.nn.LSTM`, `torch.nn.GRU` and
//! `torch.nn.RNN`, multi-layer, bidirectional, with or without biases, and LSTMs with a
//! projection (`proj_size`). A package's config.json holds `model_type` (`lstm`, `gru` or
//! `rnn`) and the module's constructor arguments; its safetensors file holds the module's
//! `state_dict` under PyTorch's names (`weight_ih_l0`, `weight_hh_l0_reverse`, `weight_hr_l1`,
//! ...). docs/package-format.md shows the three lines of PyTorch that export one.
//!
//! Reference implementation: PyTorch's `torch/nn/modules/rnn.py` and the cell equations in its
//! documentation (<https://github.com/pytorch/pytorch/blob/main/torch/nn/modules/rnn.py>):
//! gate order i, f, g, o for the LSTM and r, z, n for the GRU, whose `b_hn` sits inside the
//! reset gate's product.

#[cfg(feature = "candle")]
mod candle;
#[cfg(feature = "torch")]
mod torch;

use crate::common::ConfigCheck;
use inferox_core::Family;
use inferox_core::registry::{Description, ImportSource, ModelType};
use inferox_core::schema::{Dim, DynamicDim, IoSchema, TensorSpec};
use inferox_core::tensor::DType;
use inferox_core::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Tasks the implementation can serve: features for every step of a sequence.
pub const TASKS: &[&str] = &["sequence-modeling"];
/// Where the port comes from.
pub const REFERENCE: &str = "https://github.com/pytorch/pytorch/blob/main/torch/nn/modules/rnn.py";
/// Largest layer count a config may declare.
pub const MAX_LAYERS: usize = 1024;
/// Largest `input_size`, `hidden_size` or `proj_size` a config may declare.
pub const MAX_SIZE: usize = 1 << 20;

/// The recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// `torch.nn.LSTM`: gates i, f, g, o.
    Lstm,
    /// `torch.nn.GRU`: gates r, z, n.
    Gru,
    /// `torch.nn.RNN` with `nonlinearity="tanh"`.
    RnnTanh,
    /// `torch.nn.RNN` with `nonlinearity="relu"`.
    RnnRelu,
}

impl Cell {
    /// Gate blocks in `weight_ih` / `weight_hh` (rows are `gates × hidden_size`).
    pub fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
            Cell::RnnTanh | Cell::RnnRelu => 1,
        }
    }
}

/// `torch.nn.RNN`'s `nonlinearity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nonlinearity {
    Tanh,
    Relu,
}

fn d_layers() -> usize {
    1
}
fn d_true() -> bool {
    true
}
fn d_nonlinearity() -> Nonlinearity {
    Nonlinearity::Tanh
}

/// config.json: `model_type` and the constructor arguments of `torch.nn.LSTM` / `GRU` / `RNN`,
/// with PyTorch's defaults. `dropout` is read and ignored (it only acts in training).
#[derive(Clone, Debug, Deserialize)]
pub struct RecurrentConfig {
    pub model_type: String,
    pub input_size: usize,
    pub hidden_size: usize,
    #[serde(default = "d_layers")]
    pub num_layers: usize,
    #[serde(default = "d_true")]
    pub bias: bool,
    #[serde(default)]
    pub batch_first: bool,
    #[serde(default)]
    pub bidirectional: bool,
    /// LSTM only: the size `h` is projected to (0: none).
    #[serde(default)]
    pub proj_size: usize,
    /// RNN only.
    #[serde(default = "d_nonlinearity")]
    pub nonlinearity: Nonlinearity,
    #[serde(default)]
    pub dropout: f64,
}

impl RecurrentConfig {
    /// The cell `model_type` and `nonlinearity` name.
    pub fn cell(&self) -> std::result::Result<Cell, String> {
        match (self.model_type.as_str(), self.nonlinearity) {
            ("lstm", _) => Ok(Cell::Lstm),
            ("gru", _) => Ok(Cell::Gru),
            ("rnn", Nonlinearity::Tanh) => Ok(Cell::RnnTanh),
            ("rnn", Nonlinearity::Relu) => Ok(Cell::RnnRelu),
            (other, _) => Err(format!(
                "model_type `{other}` is not a recurrent network (lstm, gru or rnn)"
            )),
        }
    }

    /// 2 for a bidirectional network, else 1.
    pub fn directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    /// The size of `h` (and of each direction's output): `proj_size` when set.
    pub fn output_size(&self) -> usize {
        if self.proj_size > 0 {
            self.proj_size
        } else {
            self.hidden_size
        }
    }

    /// The input size of layer `layer`.
    pub fn layer_input(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input_size
        } else {
            self.directions() * self.output_size()
        }
    }

    /// Checks what PyTorch's constructor checks, and the limits; the message names the field.
    pub fn check(&self) -> std::result::Result<Cell, String> {
        let cell = self.cell()?;
        for (field, value) in [
            ("input_size", self.input_size),
            ("hidden_size", self.hidden_size),
        ] {
            if value == 0 || value > MAX_SIZE {
                return Err(format!(
                    "field `{field}` is {value}; it must be between 1 and {MAX_SIZE}"
                ));
            }
        }
        if self.num_layers == 0 || self.num_layers > MAX_LAYERS {
            return Err(format!(
                "field `num_layers` is {}; it must be between 1 and {MAX_LAYERS}",
                self.num_layers
            ));
        }
        if self.proj_size > 0 {
            if cell != Cell::Lstm {
                return Err(format!(
                    "field `proj_size` is {}, but only an LSTM has a projection",
                    self.proj_size
                ));
            }
            if self.proj_size >= self.hidden_size {
                return Err(format!(
                    "field `proj_size` is {}; it must be smaller than hidden_size ({}), as \
                     torch.nn.LSTM requires",
                    self.proj_size, self.hidden_size
                ));
            }
        }
        Ok(cell)
    }

    /// Every tensor of the `state_dict` with its shape, layer by layer, forward direction
    /// before reverse, PyTorch's order within (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`,
    /// `weight_hr`).
    pub fn tensors(&self, cell: Cell) -> Vec<(String, Vec<usize>)> {
        let rows = cell.gates() * self.hidden_size;
        let mut out = Vec::new();
        for layer in 0..self.num_layers {
            for direction in 0..self.directions() {
                let name = |kind: &str| param(kind, layer, direction);
                out.push((name("weight_ih"), vec![rows, self.layer_input(layer)]));
                out.push((name("weight_hh"), vec![rows, self.output_size()]));
                if self.bias {
                    out.push((name("bias_ih"), vec![rows]));
                    out.push((name("bias_hh"), vec![rows]));
                }
                if self.proj_size > 0 {
                    out.push((name("weight_hr"), vec![self.proj_size, self.hidden_size]));
                }
            }
        }
        out
    }

    /// Checks the config and the checkpoint against each other: every tensor of the module
    /// with its shape, and nothing else.
    pub fn checked(&self, check: &ConfigCheck<'_>) -> Result<Cell> {
        let cell = self.check().map_err(|m| check.error(m))?;
        let want = self.tensors(cell);
        for (name, shape) in &want {
            let Some(info) = check.weights.tensors.get(name) else {
                return Err(Error::MissingTensor {
                    tensor: name.clone(),
                    files: check.weights.files.clone(),
                });
            };
            if &info.shape != shape {
                return Err(check.error(format!(
                    "tensor `{name}` has shape {:?}; input_size {}, hidden_size {}, \
                     proj_size {}, num_layers {} and bidirectional {} give {shape:?}",
                    info.shape,
                    self.input_size,
                    self.hidden_size,
                    self.proj_size,
                    self.num_layers,
                    self.bidirectional
                )));
            }
        }
        if let Some(extra) = check
            .weights
            .tensors
            .keys()
            .find(|n| !want.iter().any(|(w, _)| w == *n))
        {
            return Err(check.error(format!(
                "tensor `{extra}` is not part of this {} (num_layers {}, bidirectional {}, \
                 bias {}, proj_size {}): the config does not describe these weights",
                self.model_type, self.num_layers, self.bidirectional, self.bias, self.proj_size
            )));
        }
        Ok(cell)
    }
}

/// Input `name`'s shape and float32 values, if given; another dtype is an input error.
pub fn float_input<'a>(
    inputs: &'a inferox_core::tensor::NamedTensors,
    name: &str,
) -> Result<Option<(&'a [usize], &'a [f32])>> {
    let Some(t) = inputs.get(name) else {
        return Ok(None);
    };
    let values = t.as_f32().ok_or_else(|| Error::Input {
        name: name.into(),
        message: format!("dtype is {}, expected float32", t.dtype()),
    })?;
    Ok(Some((t.shape(), values)))
}

/// The error of a required input left out.
pub fn missing(name: &str) -> Error {
    Error::Input {
        name: name.into(),
        message: "missing (it is required)".into(),
    }
}

/// PyTorch's name of parameter `kind` of `layer` in `direction` (1: `_reverse`).
pub fn param(kind: &str, layer: usize, direction: usize) -> String {
    let suffix = if direction == 1 { "_reverse" } else { "" };
    format!("{kind}_l{layer}{suffix}")
}

/// The I/O schema: `input` and the optional initial states in, `output` and the final states
/// out, with PyTorch's shapes.
pub fn describe(src: &ImportSource<'_>) -> Result<Description> {
    let cfg: RecurrentConfig = src.parse_config()?;
    let cell = cfg.checked(&ConfigCheck {
        path: src.config_path,
        weights: src.weights,
    })?;
    let steps = |features: usize| {
        let mut shape = vec![Dim::named("sequence"), Dim::named("batch")];
        if cfg.batch_first {
            shape.swap(0, 1);
        }
        shape.push(Dim::Fixed(features));
        shape
    };
    let states = |size: usize| {
        vec![
            Dim::Fixed(cfg.num_layers * cfg.directions()),
            Dim::named("batch"),
            Dim::Fixed(size),
        ]
    };
    let layout = if cfg.batch_first {
        "[batch, sequence, features]"
    } else {
        "[sequence, batch, features]"
    };
    let mut inputs = vec![
        TensorSpec::new(
            "input",
            DType::Float32,
            steps(cfg.input_size),
            &format!("the input sequences, {layout}"),
        ),
        TensorSpec {
            optional: true,
            ..TensorSpec::new(
                "h0",
                DType::Float32,
                states(cfg.output_size()),
                "initial hidden state of every layer and direction (zeros when left out)",
            )
        },
    ];
    let mut outputs = vec![
        TensorSpec::new(
            "output",
            DType::Float32,
            steps(cfg.directions() * cfg.output_size()),
            "the last layer's hidden state at every step (both directions side by side)",
        ),
        TensorSpec::new(
            "h_n",
            DType::Float32,
            states(cfg.output_size()),
            "final hidden state of every layer and direction",
        ),
    ];
    if cell == Cell::Lstm {
        inputs.push(TensorSpec {
            optional: true,
            ..TensorSpec::new(
                "c0",
                DType::Float32,
                states(cfg.hidden_size),
                "initial cell state of every layer and direction (zeros when left out)",
            )
        });
        outputs.push(TensorSpec::new(
            "c_n",
            DType::Float32,
            states(cfg.hidden_size),
            "final cell state of every layer and direction",
        ));
    }
    let dim = |description: &str| DynamicDim {
        max: None,
        description: description.into(),
    };
    let dims = BTreeMap::from([
        ("batch".into(), dim("number of sequences")),
        ("sequence".into(), dim("number of steps")),
    ]);
    Ok(Description {
        io: IoSchema {
            inputs,
            outputs,
            dims,
        },
        tasks: TASKS.iter().map(|t| t.to_string()).collect(),
    })
}

inferox_core::register!(
    ModelType::new("lstm", Family::Recurrent, describe)
        .tasks(TASKS)
        .reference(REFERENCE),
    ModelType::new("gru", Family::Recurrent, describe)
        .tasks(TASKS)
        .reference(REFERENCE),
    ModelType::new("rnn", Family::Recurrent, describe)
        .tasks(TASKS)
        .reference(REFERENCE),
);

implementations! {
    candle: "lstm" [Safetensors], "gru" [Safetensors], "rnn" [Safetensors];
    torch: "lstm" [Safetensors], "gru" [Safetensors], "rnn" [Safetensors];
}
