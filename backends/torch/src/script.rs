//! TorchScript artifacts (`backends/torch/model.pt`). TorchScript modules take positional inputs
//! and return a tensor, a tuple/list of tensors or a dict, so the package's manifest records the
//! order (`backends.torch.inputs` / `.outputs`); the loader's schema checks still apply by name.

use super::{to_host, to_tensor};
use inferox_core::load::LoadRequest;
use inferox_core::manifest::{ArtifactRole, MODEL_INFO_FILE};
use inferox_core::model::Model;
use inferox_core::tensor::NamedTensors;
use inferox_core::{Error, Result};
use tch::{CModule, IValue};

/// A loaded TorchScript module with the manifest's input and output order.
pub struct Script {
    module: CModule,
    inputs: Vec<String>,
    outputs: Vec<String>,
    device: tch::Device,
}

fn manifest_error(req: &LoadRequest<'_>, field: &str, message: String) -> Error {
    Error::Manifest {
        path: req.package.root().join(MODEL_INFO_FILE),
        field: format!("backends.{}.{field}", req.backend),
        message,
    }
}

/// Loads the package's TorchScript module; every name in the recorded order must be in the
/// schema.
pub fn load(req: &LoadRequest<'_>) -> Result<Box<dyn Model>> {
    let io = &req.info().io;
    let (inputs, outputs) = (&req.artifacts.inputs, &req.artifacts.outputs);
    if inputs.is_empty() || outputs.is_empty() {
        return Err(manifest_error(
            req,
            "inputs",
            "a TorchScript artifact needs its input and output order recorded (`inputs`, `outputs`)"
                .into(),
        ));
    }
    for (field, names, known) in [
        ("inputs", inputs, io.input_names()),
        ("outputs", outputs, io.output_names()),
    ] {
        if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
            return Err(manifest_error(
                req,
                field,
                format!(
                    "names `{bad}`, which is not in the I/O schema ({})",
                    known.join(", ")
                ),
            ));
        }
    }
    let file = req.artifacts(ArtifactRole::Model)?.remove(0);
    let device = super::device(req.options.device)?;
    super::set_threads(req.options.threads);
    // libtorch copies the module into its own memory; it reads it from the mapped bytes.
    let mut bytes = std::io::Cursor::new(file.map()?);
    let mut module =
        CModule::load_data_on_device(&mut bytes, device).map_err(|e| Error::Weights {
            path: file.path().to_path_buf(),
            message: format!("not a loadable TorchScript module: {e}"),
        })?;
    module.set_eval();
    Ok(Box::new(Script {
        module,
        inputs: inputs.clone(),
        outputs: outputs.clone(),
        device,
    }))
}

impl Script {
    /// The module's result as tensors in the recorded output order.
    fn outputs(&self, value: IValue) -> Result<Vec<tch::Tensor>> {
        let values = match value {
            IValue::Tensor(t) => vec![IValue::Tensor(t)],
            IValue::Tuple(v) | IValue::GenericList(v) => v,
            IValue::TensorList(v) => v.into_iter().map(IValue::Tensor).collect(),
            IValue::GenericDict(entries) => {
                let mut by_name: Vec<(String, IValue)> = entries
                    .into_iter()
                    .filter_map(|(k, v)| match k {
                        IValue::String(k) => Some((k, v)),
                        _ => None,
                    })
                    .collect();
                self.outputs
                    .iter()
                    .map(|name| {
                        let at = by_name.iter().position(|(k, _)| k == name).ok_or_else(|| {
                            Error::Backend {
                                backend: "torch",
                                message: format!("the module's output dict has no `{name}`"),
                            }
                        })?;
                        Ok(by_name.swap_remove(at).1)
                    })
                    .collect::<Result<_>>()?
            }
            other => {
                return Err(Error::Backend {
                    backend: "torch",
                    message: format!("the module returned {other:?}, not tensors"),
                });
            }
        };
        if values.len() < self.outputs.len() {
            return Err(Error::Backend {
                backend: "torch",
                message: format!(
                    "the module returned {} value(s); the manifest names {} outputs",
                    values.len(),
                    self.outputs.len()
                ),
            });
        }
        values
            .into_iter()
            .take(self.outputs.len())
            .zip(&self.outputs)
            .map(|(v, name)| match v {
                IValue::Tensor(t) => Ok(t),
                other => Err(Error::Backend {
                    backend: "torch",
                    message: format!("output `{name}` is {other:?}, not a tensor"),
                }),
            })
            .collect()
    }

    /// Runs the module: errors are the backend's, converted once by [`Model::forward`].
    fn run(&self, inputs: &NamedTensors) -> crate::Result<NamedTensors> {
        let _guard = tch::no_grad_guard();
        let args = self
            .inputs
            .iter()
            .map(|name| {
                let t = inputs.get(name).ok_or_else(|| Error::Input {
                    name: name.clone(),
                    message: "missing: this TorchScript module takes every input positionally"
                        .into(),
                })?;
                Ok(IValue::Tensor(to_tensor(t, self.device)?))
            })
            .collect::<crate::Result<Vec<_>>>()?;
        let value = self.module.forward_is(&args)?;
        let mut out = NamedTensors::new();
        for (name, t) in self.outputs.iter().zip(self.outputs(value)?) {
            out.insert(name.clone(), to_host(&t)?);
        }
        Ok(out)
    }
}

impl Model for Script {
    fn forward(&self, inputs: &NamedTensors) -> Result<NamedTensors> {
        self.run(inputs).map_err(Into::into)
    }
}
