//! The tflite backend: TensorFlow Lite through `tflitec`. A `.tflite` flatbuffer carries its own
//! graph, so this backend reads the I/O schema from the model's tensors at import (names from
//! the model's signature when it has one, dtypes, the fixed shapes it was exported with, and the
//! scale and zero point of quantized tensors) and runs any model through one interpreter.
//!
//! The TensorFlow Lite C library is linked at link time (DT_NEEDED, or statically); see
//! docs/backends.md for how the build finds it.

use inferox_core::load::LoadRequest;
use inferox_core::manifest::ArtifactRole;
use inferox_core::model::Model;
use inferox_core::schema::{Dim, Quantization, TensorSpec};
use inferox_core::source::{Bytes, FileRef};
use inferox_core::tensor::{DType, HostTensor, NamedTensors, TensorData};
use inferox_core::{Error, Result};
use std::path::{Path, PathBuf};
use tflitec::interpreter::{Interpreter, Options};
use tflitec::model::Model as TfModel;
use tflitec::tensor::DataType;

/// What the linked TensorFlow Lite C library reports, for `inferox doctor`.
pub fn runtime() -> String {
    format!("TensorFlow Lite {}", tflitec::tf_lite_version())
}

type Interp<'a> = Interpreter<'a>;

self_cell::self_cell!(
    /// A model and the bytes it reads (mapped from the package), kept together.
    struct Flatbuffer {
        owner: Bytes,
        #[covariant]
        dependent: TfModel,
    }
);

self_cell::self_cell!(
    /// A model and the interpreter that borrows it, kept together.
    struct Graph {
        owner: Flatbuffer,
        #[covariant]
        dependent: Interp,
    }
);

fn err(path: &Path, what: &str, e: tflitec::Error) -> Error {
    Error::Backend {
        backend: "tflite",
        message: format!("{}: {what}: {e}", path.display()),
    }
}

impl Graph {
    fn open(file: &FileRef, threads: Option<usize>) -> Result<Graph> {
        let path = file.path();
        let model =
            Flatbuffer::try_new(file.map()?, |bytes| TfModel::from_bytes(bytes)).map_err(|e| {
                Error::Weights {
                    path: path.to_path_buf(),
                    message: format!("not a TensorFlow Lite model ({e})"),
                }
            })?;
        let options = Options {
            thread_count: threads.map_or(-1, |n| n.max(1) as i32),
        };
        let graph = Graph::try_new(model, |m| {
            Interpreter::new(m.borrow_dependent(), Some(options))
        })
        .map_err(|e| err(path, "creating the interpreter", e))?;
        graph
            .borrow_dependent()
            .allocate_tensors()
            .map_err(|e| err(path, "allocating tensors", e))?;
        Ok(graph)
    }
}

/// One input or output of the graph: its schema name, the model's tensor, interpreter index,
/// element type and shape.
#[derive(Clone, Debug)]
struct Port {
    name: String,
    tensor: String,
    index: usize,
    dtype: DType,
    shape: Vec<usize>,
    quantization: Option<Quantization>,
}

fn dtype(t: DataType) -> Option<DType> {
    Some(match t {
        DataType::Float32 => DType::Float32,
        DataType::Float16 => DType::Float16,
        DataType::Float64 => DType::Float64,
        DataType::Int64 => DType::Int64,
        DataType::Int32 => DType::Int32,
        DataType::Int8 => DType::Int8,
        DataType::UInt8 => DType::Uint8,
        _ => return None,
    })
}

/// (tensor name, signature name) pairs.
type Names = Vec<(String, String)>;

/// Names from the model's signature (`serving_default` or the first one), keyed by the
/// underlying tensor name; the interpreter's own names are kept where there is none.
fn signature_names(interp: &Interpreter<'_>) -> (Names, Names) {
    let (mut inputs, mut outputs) = (Vec::new(), Vec::new());
    if interp.signature_count() == 0 {
        return (inputs, outputs);
    }
    let key = (0..interp.signature_count())
        .filter_map(|i| interp.get_signature_key(i).ok())
        .find(|k| *k == "serving_default")
        .or_else(|| interp.get_signature_key(0).ok())
        .map(str::to_string);
    let Some(runner) = key.and_then(|k| interp.get_signature_runner(&k).ok()) else {
        return (inputs, outputs);
    };
    for i in 0..runner.input_count() {
        let name = runner.get_input_name(i).to_string();
        if let Ok(t) = runner.get_input_tensor(&name) {
            inputs.push((t.name().to_string(), name));
        }
    }
    for i in 0..runner.output_count() {
        let name = runner.get_output_name(i).to_string();
        if let Ok(t) = runner.get_output_tensor(&name) {
            outputs.push((t.name().to_string(), name));
        }
    }
    (inputs, outputs)
}

/// The graph's tensor at `index` of its inputs (`input`) or outputs.
fn tensor<'i>(
    path: &Path,
    interp: &'i Interpreter<'_>,
    input: bool,
    index: usize,
) -> Result<tflitec::tensor::Tensor<'i>> {
    let (side, t) = if input {
        ("input", interp.input(index))
    } else {
        ("output", interp.output(index))
    };
    t.map_err(|e| err(path, &format!("reading {side} {index}"), e))
}

/// Reads the graph's inputs and outputs (the signature is looked up once for both).
fn ports(path: &Path, interp: &Interpreter<'_>) -> Result<(Vec<Port>, Vec<Port>)> {
    let (in_names, out_names) = signature_names(interp);
    let side = |input: bool, names: &Names, count: usize| -> Result<Vec<Port>> {
        (0..count)
            .map(|index| {
                let t = tensor(path, interp, input, index)?;
                let name = names
                    .iter()
                    .find(|(tensor, _)| tensor == t.name())
                    .map_or_else(|| t.name().to_string(), |(_, n)| n.clone());
                let dtype = dtype(t.data_type()).ok_or_else(|| {
                    Error::Unsupported(format!(
                        "{}: {} `{name}` has element type {:?}, which inferox does not exchange",
                        path.display(),
                        if input { "input" } else { "output" },
                        t.data_type()
                    ))
                })?;
                let quantization =
                    t.quantization_parameters()
                        .filter(|q| q.scale != 0.0)
                        .map(|q| Quantization {
                            scale: f64::from(q.scale),
                            zero_point: i64::from(q.zero_point),
                        });
                Ok(Port {
                    name,
                    tensor: t.name().to_string(),
                    index,
                    dtype,
                    shape: t.shape().dimensions().clone(),
                    quantization,
                })
            })
            .collect()
    };
    Ok((
        side(true, &in_names, interp.input_tensor_count())?,
        side(false, &out_names, interp.output_tensor_count())?,
    ))
}

/// The schema entry of a port.
fn spec(p: &Port, what: &str) -> TensorSpec {
    let description = match p.quantization {
        Some(q) => format!(
            "{what} `{}`, quantized (scale {}, zero point {})",
            p.tensor, q.scale, q.zero_point
        ),
        None => format!("{what} `{}`", p.tensor),
    };
    let shape = p.shape.iter().map(|&d| Dim::Fixed(d)).collect();
    TensorSpec {
        quantization: p.quantization,
        ..TensorSpec::new(&p.name, p.dtype, shape, &description)
    }
}

/// The tensors of a `.tflite` model as schema entries: inputs, then outputs.
pub fn describe(path: &Path) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>)> {
    let graph = Graph::open(&FileRef::file(path), Some(1))?;
    let (inputs, outputs) = ports(path, graph.borrow_dependent())?;
    Ok((
        inputs.iter().map(|p| spec(p, "model input")).collect(),
        outputs.iter().map(|p| spec(p, "model output")).collect(),
    ))
}

/// A TensorFlow Lite model ready to run.
///
/// A TensorFlow Lite interpreter holds its input and output buffers, so one call runs at a
/// time: calls from several threads on one model wait for each other (load the package once
/// per thread to run them side by side).
pub struct TfLite {
    graph: std::sync::Mutex<Graph>,
    path: PathBuf,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    dequantize: bool,
}

/// Loads the package's `.tflite` artifact.
pub fn load(req: &LoadRequest<'_>) -> Result<Box<dyn Model>> {
    if req.options.device != inferox_core::Device::Cpu {
        return Err(Error::Unsupported(format!(
            "the tflite backend runs on the CPU, not {}",
            req.options.device
        )));
    }
    let file = req.artifacts(ArtifactRole::Model)?.remove(0);
    let graph = Graph::open(&file, req.options.threads)?;
    let path = file.path().to_path_buf();
    let (inputs, outputs) = ports(&path, graph.borrow_dependent())?;
    Ok(Box::new(TfLite {
        graph: std::sync::Mutex::new(graph),
        path,
        inputs,
        outputs,
        dequantize: req.options.dequantize,
    }))
}

/// `values` quantized with `q` into the integer range of `T`.
fn quantize<T: TryFrom<i64>>(values: &[f32], q: Quantization, lo: i64, hi: i64) -> Vec<T> {
    values
        .iter()
        .map(|&x| {
            T::try_from(q.quantize(x, lo, hi))
                .ok()
                .expect("clamped to T's range")
        })
        .collect()
}

impl TfLite {
    fn set_input(&self, interp: &Interp<'_>, port: &Port, t: &HostTensor) -> Result<()> {
        let copy = |r: tflitec::Result<()>| {
            r.map_err(|e| Error::Input {
                name: port.name.clone(),
                message: format!("TensorFlow Lite refused the data: {e}"),
            })
        };
        match (t.data(), port.quantization) {
            (TensorData::Float32(v), Some(q)) if self.dequantize => match port.dtype {
                DType::Int8 => copy(interp.copy(&quantize::<i8>(v, q, -128, 127), port.index)),
                DType::Uint8 => copy(interp.copy(&quantize::<u8>(v, q, 0, 255), port.index)),
                other => Err(Error::Unsupported(format!(
                    "input `{}`: quantized {other} tensors are not converted",
                    port.name
                ))),
            },
            (TensorData::Float32(v), _) => copy(interp.copy(v, port.index)),
            (TensorData::Float16(v), _) => copy(interp.copy(v, port.index)),
            (TensorData::Float64(v), _) => copy(interp.copy(v, port.index)),
            (TensorData::Int64(v), _) => copy(interp.copy(v, port.index)),
            (TensorData::Int32(v), _) => copy(interp.copy(v, port.index)),
            (TensorData::Int8(v), _) => copy(interp.copy(v, port.index)),
            (TensorData::Uint8(v), _) => copy(interp.copy(v, port.index)),
            (TensorData::BFloat16(_), _) => Err(Error::Input {
                name: port.name.clone(),
                message: "bfloat16 is not a TensorFlow Lite input type".into(),
            }),
        }
    }

    fn get_output(&self, interp: &Interp<'_>, port: &Port) -> Result<HostTensor> {
        let t = tensor(&self.path, interp, false, port.index)?;
        let shape = t.shape().dimensions().clone();
        let dq = |q: Quantization, v: Vec<i64>| {
            TensorData::Float32(v.into_iter().map(|x| q.dequantize(x)).collect())
        };
        let data = match (port.dtype, port.quantization.filter(|_| self.dequantize)) {
            (DType::Int8, Some(q)) => dq(q, t.data::<i8>().iter().map(|&x| x.into()).collect()),
            (DType::Uint8, Some(q)) => dq(q, t.data::<u8>().iter().map(|&x| x.into()).collect()),
            (DType::Float32, _) => TensorData::Float32(t.data::<f32>().to_vec()),
            (DType::Float16, _) => TensorData::Float16(t.data::<half::f16>().to_vec()),
            (DType::Float64, _) => TensorData::Float64(t.data::<f64>().to_vec()),
            (DType::Int64, _) => TensorData::Int64(t.data::<i64>().to_vec()),
            (DType::Int32, _) => TensorData::Int32(t.data::<i32>().to_vec()),
            (DType::Int8, _) => TensorData::Int8(t.data::<i8>().to_vec()),
            (DType::Uint8, _) => TensorData::Uint8(t.data::<u8>().to_vec()),
            (DType::BFloat16, _) => unreachable!("not a TensorFlow Lite port type"),
        };
        HostTensor::new(shape, data)
    }
}

impl Model for TfLite {
    fn forward(&self, inputs: &NamedTensors) -> Result<NamedTensors> {
        // A call that panicked left nothing half-done that the next one reads: every input is
        // set again before each run.
        let graph = self.graph.lock().unwrap_or_else(|e| e.into_inner());
        let interp = graph.borrow_dependent();
        for port in &self.inputs {
            let t = inputs.get(&port.name).ok_or_else(|| Error::Input {
                name: port.name.clone(),
                message: "missing (every input of a TensorFlow Lite model is required)".into(),
            })?;
            self.set_input(interp, port, t)?;
        }
        interp
            .invoke()
            .map_err(|e| err(&self.path, "running the model", e))?;
        let mut out = NamedTensors::new();
        for port in &self.outputs {
            out.insert(port.name.clone(), self.get_output(interp, port)?);
        }
        Ok(out)
    }
}

/// The backend's name in packages and on the command line.
pub const NAME: &str = "tflite";

inferox_core::register!(inferox_core::backend::Backend {
    name: NAME,
    feature: "tflite",
    preference: 20,
    description: "TensorFlow Lite through tflitec; CPU",
    threads: inferox_core::backend::per_model_threads,
    runtime: Some(runtime),
});
