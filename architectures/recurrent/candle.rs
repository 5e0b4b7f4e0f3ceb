//! LSTM, GRU and RNN on candle, from the module's `state_dict`. Ported from the equations of
//! PyTorch's `torch/nn/modules/rnn.py` (<https://github.com/pytorch/pytorch/blob/main/torch/nn/modules/rnn.py>).
//! candle-nn's LSTM and GRU are single-layer and unidirectional; this runs every layer and
//! direction, with the projection of `proj_size`. Each direction projects its whole input
//! sequence in one GEMM (`weight_ih`), then steps through time with the recurrent product
//! (`weight_hh`) and the cell. In f32 on a CPU with AVX-512 that is the backend's packed
//! recurrent kernel (`inferox_candle::recurrent`) on host buffers; on other CPUs, devices and
//! dtypes, candle's tensor ops.

use super::{Cell, RecurrentConfig, float_input, missing, param};
use crate::common::candle::{Dense, float_device};
use crate::common::read_checked_config;
use candle::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use inferox_candle::packed;
use inferox_candle::recurrent::{CellMath, DirectionWeights, PackedDirection};
use inferox_candle::{Result, Weights, candle_core as candle, candle_nn, to_host};
use inferox_core::load::LoadRequest;
use inferox_core::manifest::ArtifactRole;
use inferox_core::model::Model;
use inferox_core::tensor::{HostTensor, NamedTensors};

/// One direction of one layer.
struct Direction {
    /// `weight_ih` with `bias_ih`.
    input: Dense,
    /// `weight_hh` with `bias_hh`.
    hidden: Dense,
    /// `weight_hr` (LSTM with `proj_size`).
    projection: Option<Dense>,
}

/// How the layers are held: `[layer][direction]`.
enum Layers {
    /// Packed for the backend's CPU kernel (f32 on the CPU).
    Packed(Vec<Vec<PackedDirection>>),
    /// As candle tensors, for candle's ops.
    Tensors(Vec<Vec<Direction>>),
}

/// A recurrent network on candle.
pub struct Recurrent {
    cell: Cell,
    cfg: RecurrentConfig,
    layers: Layers,
    dtype: DType,
    device: Device,
}

/// The backend kernel's cell.
fn math(cell: Cell) -> CellMath {
    match cell {
        Cell::Lstm => CellMath::Lstm,
        Cell::Gru => CellMath::Gru,
        Cell::RnnTanh => CellMath::Tanh,
        Cell::RnnRelu => CellMath::Relu,
    }
}

/// The registry's loader for the candle backend.
pub fn load(req: &LoadRequest<'_>) -> inferox_core::Result<Box<dyn Model>> {
    let (cfg, cell) = read_checked_config(req, RecurrentConfig::checked)?;
    let weights = Weights::open(&req.artifacts(ArtifactRole::Weights)?)?;
    let (device, dtype, _packing) = float_device(req)?;
    let vb = weights.var_builder(dtype, &device);
    let model = Recurrent::load(vb, cfg, cell, dtype, device).map_err(|e| weights.explain(e))?;
    Ok(Box::new(model))
}

impl Recurrent {
    fn load(
        vb: VarBuilder,
        cfg: RecurrentConfig,
        cell: Cell,
        dtype: DType,
        device: Device,
    ) -> candle::Result<Self> {
        let rows = cell.gates() * cfg.hidden_size;
        // The packed kernel only where it is fast (AVX-512); its portable fallback is scalar.
        let packed = device.is_cpu() && dtype == DType::F32 && packed::supported();
        let mut tensors = Vec::with_capacity(cfg.num_layers);
        let mut packs = Vec::with_capacity(cfg.num_layers);
        for layer in 0..cfg.num_layers {
            let mut directions = Vec::with_capacity(cfg.directions());
            let mut packed_directions = Vec::with_capacity(cfg.directions());
            for direction in 0..cfg.directions() {
                let name = |kind: &str| param(kind, layer, direction);
                let bias = |kind: &str| match cfg.bias {
                    true => vb.get(rows, &name(kind)).map(Some),
                    false => Ok(None),
                };
                let input = vb.get((rows, cfg.layer_input(layer)), &name("weight_ih"))?;
                let hidden = vb.get((rows, cfg.output_size()), &name("weight_hh"))?;
                let weight_hr = match cfg.proj_size {
                    0 => None,
                    p => Some(vb.get((p, cfg.hidden_size), &name("weight_hr"))?),
                };
                let (bias_ih, bias_hh) = (bias("bias_ih")?, bias("bias_hh")?);
                if packed {
                    let host = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
                    let host_opt = |t: &Option<Tensor>| t.as_ref().map(host).transpose();
                    let (w_ih, w_hh) = (host(&input)?, host(&hidden)?);
                    let (b_ih, b_hh, w_hr) = (
                        host_opt(&bias_ih)?,
                        host_opt(&bias_hh)?,
                        host_opt(&weight_hr)?,
                    );
                    packed_directions.push(PackedDirection::new(
                        math(cell),
                        (cfg.layer_input(layer), cfg.hidden_size, cfg.output_size()),
                        &DirectionWeights {
                            weight_ih: &w_ih,
                            weight_hh: &w_hh,
                            bias_ih: b_ih.as_deref(),
                            bias_hh: b_hh.as_deref(),
                            weight_hr: w_hr.as_deref(),
                        },
                        packed::bf16_requested(),
                    ));
                    continue;
                }
                directions.push(Direction {
                    input: Dense::new(&input, bias_ih)?,
                    hidden: Dense::new(&hidden, bias_hh)?,
                    projection: weight_hr.map(|w| Dense::new(&w, None)).transpose()?,
                });
            }
            tensors.push(directions);
            packs.push(packed_directions);
        }
        let layers = match packed {
            true => Layers::Packed(packs),
            false => Layers::Tensors(tensors),
        };
        Ok(Recurrent {
            cell,
            cfg,
            layers,
            dtype,
            device,
        })
    }

    /// Input `name` as a candle tensor, if given.
    fn input(&self, inputs: &NamedTensors, name: &str) -> Result<Option<Tensor>> {
        let Some((shape, values)) = float_input(inputs, name)? else {
            return Ok(None);
        };
        let x = Tensor::from_slice(values, shape, &self.device)?.to_dtype(self.dtype)?;
        Ok(Some(x))
    }

    /// An initial state `[layers × directions, batch, size]`: the input, or zeros.
    fn state(&self, given: Option<Tensor>, batch: usize, size: usize) -> candle::Result<Tensor> {
        match given {
            Some(s) => Ok(s),
            None => Tensor::zeros(
                (self.cfg.num_layers * self.cfg.directions(), batch, size),
                self.dtype,
                &self.device,
            ),
        }
    }

    fn outputs(&self, inputs: &NamedTensors) -> Result<NamedTensors> {
        match &self.layers {
            Layers::Packed(layers) => self.outputs_packed(layers, inputs),
            Layers::Tensors(layers) => self.outputs_tensors(layers, inputs),
        }
    }

    /// Through the backend's CPU kernel, on host buffers.
    fn outputs_packed(
        &self,
        layers: &[Vec<PackedDirection>],
        inputs: &NamedTensors,
    ) -> Result<NamedTensors> {
        let cfg = &self.cfg;
        let host = |name: &str| float_input(inputs, name);
        let (shape, x) = host("input")?.ok_or_else(|| missing("input"))?;
        let &[a, b, features] = shape else {
            return Err(input_error(
                "input",
                format!("shape {shape:?} is not of rank 3"),
            ));
        };
        if features != cfg.input_size || a == 0 || b == 0 {
            return Err(input_error(
                "input",
                format!(
                    "shape {shape:?}: expected {} features and no empty axis",
                    cfg.input_size
                ),
            ));
        }
        // Time first inside: a step is a contiguous block of rows.
        let (steps, batch) = if cfg.batch_first { (b, a) } else { (a, b) };
        let mut sequence = match cfg.batch_first {
            true => swap_leading(x, (batch, steps, features)),
            false => x.to_vec(),
        };
        let states = cfg.num_layers * cfg.directions();
        let (os, hs) = (cfg.output_size(), cfg.hidden_size);
        let initial = |name: &str, size: usize| -> Result<Vec<f32>> {
            match host(name)? {
                Some((s, v)) if s == [states, batch, size] => Ok(v.to_vec()),
                Some((s, _)) => Err(input_error(
                    name,
                    format!("shape {s:?}, expected {:?}", [states, batch, size]),
                )),
                None => Ok(vec![0.0; states * batch * size]),
            }
        };
        let mut h_n = initial("h0", os)?;
        let mut c_n = match self.cell {
            Cell::Lstm => Some(initial("c0", hs)?),
            _ => None,
        };
        let width = cfg.directions() * os;
        for (l, directions) in layers.iter().enumerate() {
            let mut out = vec![0f32; steps * batch * width];
            for (d, direction) in directions.iter().enumerate() {
                let index = l * directions.len() + d;
                let h = &mut h_n[index * batch * os..(index + 1) * batch * os];
                let c = c_n
                    .as_mut()
                    .map(|c| &mut c[index * batch * hs..(index + 1) * batch * hs]);
                direction.run(
                    &sequence,
                    (steps, batch),
                    d == 1,
                    h,
                    c,
                    &mut out,
                    (width, d * os),
                );
            }
            sequence = out;
        }
        let output = match cfg.batch_first {
            true => HostTensor::from_f32(
                vec![batch, steps, width],
                swap_leading(&sequence, (steps, batch, width)),
            )?,
            false => HostTensor::from_f32(vec![steps, batch, width], sequence)?,
        };
        let mut out = NamedTensors::new();
        out.insert("output", output);
        out.insert("h_n", HostTensor::from_f32(vec![states, batch, os], h_n)?);
        if let Some(c) = c_n {
            out.insert("c_n", HostTensor::from_f32(vec![states, batch, hs], c)?);
        }
        Ok(out)
    }

    /// Through candle's tensor ops.
    fn outputs_tensors(
        &self,
        layers: &[Vec<Direction>],
        inputs: &NamedTensors,
    ) -> Result<NamedTensors> {
        let x = self
            .input(inputs, "input")?
            .ok_or_else(|| missing("input"))?;
        // Time first inside: a step is a contiguous block of rows.
        let x = match self.cfg.batch_first {
            true => x.transpose(0, 1)?.contiguous()?,
            false => x,
        };
        let (steps, batch, _) = x.dims3()?;
        let h0 = self.state(self.input(inputs, "h0")?, batch, self.cfg.output_size())?;
        let c0 = match self.cell {
            Cell::Lstm => {
                Some(self.state(self.input(inputs, "c0")?, batch, self.cfg.hidden_size)?)
            }
            _ => None,
        };
        let mut h_n = Vec::new();
        let mut c_n = Vec::new();
        let mut sequence = x;
        for (l, directions) in layers.iter().enumerate() {
            let features = sequence.dim(2)?;
            let flat = sequence.reshape((steps * batch, features))?;
            let mut outputs = Vec::with_capacity(directions.len());
            for (d, direction) in directions.iter().enumerate() {
                let index = l * directions.len() + d;
                let c = c0.as_ref().map(|c| c.get(index)).transpose()?;
                let (out, h, c) = self.run(direction, &flat, d == 1, h0.get(index)?, c, batch)?;
                outputs.push(out);
                h_n.push(h);
                c_n.extend(c);
            }
            sequence = Tensor::cat(&outputs, 2)?;
        }
        let output = match self.cfg.batch_first {
            true => sequence.transpose(0, 1)?,
            false => sequence,
        };
        let mut out = NamedTensors::new();
        out.insert("output", to_host(&output)?);
        out.insert("h_n", to_host(&Tensor::stack(&h_n, 0)?)?);
        if !c_n.is_empty() {
            out.insert("c_n", to_host(&Tensor::stack(&c_n, 0)?)?);
        }
        Ok(out)
    }

    /// One direction over the sequence (`flat`: `[steps × batch, features]`, step-major), from
    /// `h` and (LSTM) `c`; backwards in time when `reverse`. Returns the hidden state of every
    /// step (`[steps, batch, size]`, in time order) and the final states.
    fn run(
        &self,
        direction: &Direction,
        flat: &Tensor,
        reverse: bool,
        mut h: Tensor,
        mut c: Option<Tensor>,
        batch: usize,
    ) -> candle::Result<(Tensor, Tensor, Option<Tensor>)> {
        let steps = flat.dim(0)? / batch;
        let projected = direction.input.forward(flat)?;
        let hs = self.cfg.hidden_size;
        let mut states = vec![None; steps];
        for s in 0..steps {
            let t = if reverse { steps - 1 - s } else { s };
            let gx = projected.narrow(0, t * batch, batch)?;
            let gh = direction.hidden.forward(&h)?;
            let gate = |g: &Tensor, i: usize| g.narrow(1, i * hs, hs);
            h = match self.cell {
                Cell::Lstm => {
                    let g = (gx + gh)?;
                    let sig = candle_nn::ops::sigmoid(&g)?;
                    let cell = c.as_ref().expect("an LSTM carries a cell state");
                    let next =
                        ((gate(&sig, 1)? * cell)? + (gate(&sig, 0)? * gate(&g, 2)?.tanh()?)?)?;
                    let h = (gate(&sig, 3)? * next.tanh()?)?;
                    c = Some(next);
                    match &direction.projection {
                        Some(p) => p.forward(&h)?,
                        None => h,
                    }
                }
                Cell::Gru => {
                    // r and z from both products; n = tanh(x_n + r ⊙ (W_hn h + b_hn)).
                    let rz = candle_nn::ops::sigmoid(
                        &(gx.narrow(1, 0, 2 * hs)? + gh.narrow(1, 0, 2 * hs)?)?,
                    )?;
                    let n = (gate(&gx, 2)? + (gate(&rz, 0)? * gate(&gh, 2)?)?)?.tanh()?;
                    // (1 − z) ⊙ n + z ⊙ h = n + z ⊙ (h − n)
                    (&n + (gate(&rz, 1)? * (&h - &n)?)?)?
                }
                Cell::RnnTanh => (gx + gh)?.tanh()?,
                Cell::RnnRelu => (gx + gh)?.relu()?,
            };
            states[t] = Some(h.clone());
        }
        let states: Vec<Tensor> = states
            .into_iter()
            .map(|s| s.expect("every step ran"))
            .collect();
        Ok((Tensor::stack(&states, 0)?, h, c))
    }
}

/// An input error about `name`.
fn input_error(name: &str, message: String) -> inferox_candle::Error {
    inferox_core::Error::Input {
        name: name.into(),
        message,
    }
    .into()
}

/// `[a, b, n]` row-major to `[b, a, n]`.
fn swap_leading(x: &[f32], (a, b, n): (usize, usize, usize)) -> Vec<f32> {
    let mut y = Vec::with_capacity(x.len());
    for j in 0..b {
        for i in 0..a {
            y.extend_from_slice(&x[(i * b + j) * n..(i * b + j + 1) * n]);
        }
    }
    y
}

impl Model for Recurrent {
    fn forward(&self, inputs: &NamedTensors) -> inferox_core::Result<NamedTensors> {
        self.outputs(inputs).map_err(Into::into)
    }
}
