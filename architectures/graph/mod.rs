//! Exported graphs: models whose artifact carries its own computation graph (a TensorFlow Lite
//! flatbuffer), so there is no architecture to port. The I/O schema is read from the artifact's
//! tensors at import; a `preprocessor_config.json` beside it adds the image-normalisation hint
//! to four-dimensional float inputs.
//!
//! Reference: the TensorFlow Lite schema and C API,
//! <https://github.com/tensorflow/tensorflow/blob/master/tensorflow/lite/core/c/c_api.h>.

use inferox_core::registry::{Description, ImportSource, ModelType};
use inferox_core::schema::{Dim, ImagePreprocessing, IoSchema, Preprocessing, TensorSpec};
use inferox_core::{Error, Result};
use inferox_core::{ExecutionFormat, Family};

/// The format and API the schema is read from.
pub const REFERENCE: &str =
    "https://github.com/tensorflow/tensorflow/blob/master/tensorflow/lite/core/c/c_api.h";

/// The model type of exported-graph packages.
pub const MODEL_TYPE: &str = "graph";
/// The image-processor config a graph's directory may hold.
pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

/// The image-normalisation hint from a Hugging Face image-processor config, for `spec`.
fn image_hint(config: &serde_json::Value, spec: &TensorSpec) -> Option<Preprocessing> {
    let Dim::Fixed(last) = spec.shape.last()? else {
        return None;
    };
    if spec.shape.len() != 4 || !spec.dtype.is_float() {
        return None;
    }
    let floats = |key: &str| -> Option<Vec<f64>> {
        match config.get(key)? {
            serde_json::Value::Array(v) => v.iter().map(|x| x.as_f64()).collect(),
            v => v.as_f64().map(|x| vec![x]),
        }
    };
    let normalize = config
        .get("do_normalize")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let rescale = config
        .get("do_rescale")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let channels = if *last <= 4 { *last } else { 0 };
    let (mean, std) = if normalize {
        (floats("image_mean")?, floats("image_std")?)
    } else {
        (vec![0.0], vec![1.0])
    };
    Some(Preprocessing::Image(ImagePreprocessing {
        config: PREPROCESSOR_FILE.to_string(),
        processor: String::new(),
        resize: None,
        center_crop: None,
        rescale_factor: if rescale {
            config
                .get("rescale_factor")
                .and_then(|v| v.as_f64())
                .unwrap_or(1.0 / 255.0)
        } else {
            1.0
        },
        mean,
        std,
        layout: if channels > 0 { "nhwc" } else { "nchw" }.to_string(),
    }))
}

/// Reads the schema of an exported graph from its artifact.
pub fn describe(src: &ImportSource<'_>) -> Result<Description> {
    let artifact = src.artifact.ok_or_else(|| Error::Import {
        path: src.config_path.to_path_buf(),
        message: "an exported graph needs its model file".into(),
    })?;
    let (mut inputs, outputs) = read_tensors(artifact)?;
    let preprocessor = artifact
        .parent()
        .map(|d| d.join(PREPROCESSOR_FILE))
        .filter(|p| p.is_file());
    if let Some(path) = preprocessor {
        let config: serde_json::Value = inferox_core::files::read_json(&path)?;
        for spec in &mut inputs {
            spec.preprocessing = image_hint(&config, spec);
        }
    }
    Ok(Description {
        io: IoSchema {
            inputs,
            outputs,
            dims: Default::default(),
        },
        tasks: Vec::new(),
    })
}

#[cfg(feature = "tflite")]
fn read_tensors(path: &std::path::Path) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>)> {
    inferox_tflite::describe(path)
}

#[cfg(not(feature = "tflite"))]
fn read_tensors(_: &std::path::Path) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>)> {
    Err(Error::BackendNotCompiled {
        backend: "tflite".into(),
        feature: "tflite".into(),
    })
}

// Registration: the model type (describing needs the backend that reads the format; without
// it, import says which feature to build with), then the implementation.

inferox_core::register!(
    ModelType::new(MODEL_TYPE, Family::Graph, describe)
        .graph(ExecutionFormat::Tflite)
        .reference(REFERENCE)
);

#[cfg(feature = "tflite")]
inferox_core::register!(inferox_core::registry::Implementation::new(
    MODEL_TYPE,
    inferox_tflite::NAME,
    &[ExecutionFormat::Tflite],
    inferox_tflite::load
),);
