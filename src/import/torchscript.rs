//! A TorchScript export carried beside a model's weights, as the artifact of the backend that
//! runs TorchScript.

use crate::manifest::{Artifact, ArtifactRole, BackendArtifacts, ExecutionFormat, ModelInfo};
use crate::registry;
use crate::tensor::DType;
use crate::{Error, Result};
use std::path::PathBuf;

/// A TorchScript module (`torch.jit.trace` / `torch.jit.script` output) to put in a package as
/// `backends/torch/model.pt`. TorchScript has no input names, so the order is given here and
/// recorded in the manifest; every name must be in the model's I/O schema.
#[derive(Clone, Debug, Default)]
pub struct TorchScriptExport {
    /// The `.pt` file.
    pub path: PathBuf,
    /// Schema input names, in the order the module's `forward` takes them.
    pub inputs: Vec<String>,
    /// Schema output names, in the order the module returns them.
    pub outputs: Vec<String>,
}

/// Where a TorchScript artifact lives in a package, below `backends/<backend>/`.
pub const TORCHSCRIPT_FILE: &str = "model.pt";

/// Records `export` as the artifact of the backend that runs TorchScript for the model type
/// (replacing that backend's safetensors entry).
pub(super) fn add(
    info: &mut ModelInfo,
    export: &TorchScriptExport,
    copies: &mut Vec<(PathBuf, String)>,
) -> Result<()> {
    if !export.path.is_file() {
        return Err(Error::Import {
            path: export.path.clone(),
            message: "TorchScript file not found".into(),
        });
    }
    for (what, names, known) in [
        ("input", &export.inputs, info.io.input_names()),
        ("output", &export.outputs, info.io.output_names()),
    ] {
        if names.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "TorchScript {what} order is empty; name the schema's {what}s ({}) in the order the module uses",
                known.join(", ")
            )));
        }
        if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
            return Err(Error::InvalidArgument(format!(
                "TorchScript {what} `{bad}` is not in the model's I/O schema ({})",
                known.join(", ")
            )));
        }
    }
    let Some(runner) =
        registry::implementations_of(&info.model_type, Some(ExecutionFormat::Torchscript))
            .first()
            .copied()
    else {
        return Err(Error::Unsupported(format!(
            "no backend linked into this build runs `{}` from TorchScript",
            info.model_type
        )));
    };
    let path = format!("backends/{}/{TORCHSCRIPT_FILE}", runner.backend);
    copies.push((export.path.clone(), path.clone()));
    info.backends.insert(
        runner.backend.to_string(),
        BackendArtifacts {
            inputs: export.inputs.clone(),
            outputs: export.outputs.clone(),
            ..BackendArtifacts::new(
                ExecutionFormat::Torchscript,
                vec![Artifact {
                    path,
                    role: ArtifactRole::Model,
                }],
                DType::Float32,
            )
        },
    );
    Ok(())
}
