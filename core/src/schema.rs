//! The I/O schema: every input and output of a model with its dtype, its shape (fixed sizes or
//! named dynamic dimensions) and preprocessing hints. The manifest's schema is the source of truth
//! that inputs are validated against.

use crate::tensor::{DType, HostTensor, NamedTensors};
pub use crate::vision::ImagePreprocessing;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One dimension of a tensor shape: a fixed size, or a named dynamic dimension (`"batch"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(usize),
    Named(String),
}

impl Dim {
    /// A named dynamic dimension.
    pub fn named(name: &str) -> Dim {
        Dim::Named(name.to_string())
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Named(name) => f.write_str(name),
        }
    }
}

/// Limits of a named dynamic dimension.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicDim {
    /// Largest size the model accepts (for example the maximum sequence length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<usize>,
    /// What the dimension means.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// Which part of a tokenizer's encoding feeds an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenField {
    /// Token ids.
    Ids,
    /// 1 for real tokens, 0 for padding.
    AttentionMask,
    /// Segment (token type) ids.
    TypeIds,
}

/// Which side padding goes on when texts of different lengths are batched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaddingSide {
    #[default]
    Right,
    Left,
}

/// How text becomes this input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokenization {
    /// Tokenizer file, relative to the package root (`tokenizer.json`).
    pub tokenizer: String,
    /// Which part of the encoding this input takes.
    pub field: TokenField,
    /// Longest token sequence (special tokens included) the model takes; longer texts are
    /// truncated to it, or refused when truncation is off.
    pub max_length: usize,
    /// Padding side for batches.
    #[serde(default)]
    pub padding_side: PaddingSide,
    /// Padding token id, used when the tokenizer file defines no padding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_id: Option<u32>,
}

/// A hint on how raw data becomes this input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Preprocessing {
    /// Text through a `tokenizers` tokenizer.
    Tokenization(Tokenization),
    /// An image, decoded, resized, cropped, rescaled and normalised.
    Image(ImagePreprocessing),
}

/// Affine quantization of an integer tensor: `real = scale * (q - zero_point)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quantization {
    pub scale: f64,
    pub zero_point: i64,
}

impl Quantization {
    /// `x` quantized to the nearest step (ties away from zero, as TensorFlow Lite rounds),
    /// clamped to `lo..=hi`.
    pub fn quantize(&self, x: f32, lo: i64, hi: i64) -> i64 {
        let q = (f64::from(x) / self.scale).round() as i64 + self.zero_point;
        q.clamp(lo, hi)
    }

    /// The real value of `q`.
    pub fn dequantize(&self, q: i64) -> f32 {
        (q - self.zero_point) as f32 * self.scale as f32
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One input or output tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Name used at the boundary (`input_ids`, `last_hidden_state`, ...).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape: fixed sizes and named dynamic dimensions.
    pub shape: Vec<Dim>,
    /// Optional inputs may be left out; the description says what the model assumes then.
    #[serde(default, skip_serializing_if = "is_false")]
    pub optional: bool,
    /// What the tensor holds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// How raw data becomes this input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<Preprocessing>,
    /// Scale and zero point of a quantized integer tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
}

impl TensorSpec {
    /// A required tensor without preprocessing.
    pub fn new(name: &str, dtype: DType, shape: Vec<Dim>, description: &str) -> Self {
        TensorSpec {
            name: name.to_string(),
            dtype,
            shape,
            optional: false,
            description: description.to_string(),
            preprocessing: None,
            quantization: None,
        }
    }

    /// The shape for display: `[batch, sequence, 384]`.
    pub fn shape_string(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(Dim::to_string).collect();
        format!("[{}]", dims.join(", "))
    }

    /// The tokenization hint, if this input is made from text.
    pub fn tokenization(&self) -> Option<&Tokenization> {
        match &self.preprocessing {
            Some(Preprocessing::Tokenization(t)) => Some(t),
            _ => None,
        }
    }

    /// The image hint, if this input is made from images.
    pub fn image(&self) -> Option<&crate::vision::ImagePreprocessing> {
        match &self.preprocessing {
            Some(Preprocessing::Image(p)) => Some(p),
            _ => None,
        }
    }

    /// This spec as the boundary sees it with dequantization on: a quantized tensor is float32.
    pub fn dequantized(&self) -> TensorSpec {
        match self.quantization {
            Some(_) => TensorSpec {
                dtype: DType::Float32,
                ..self.clone()
            },
            None => self.clone(),
        }
    }

    /// This tensor in the KServe / Open Inference Protocol v2 form (`-1` for dynamic dims).
    pub fn to_kserve(&self) -> serde_json::Value {
        let shape: Vec<i64> = self
            .shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n as i64,
                Dim::Named(_) => -1,
            })
            .collect();
        serde_json::json!({"name": self.name, "datatype": self.dtype.kserve_name(), "shape": shape})
    }
}

/// The inputs and outputs of a model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IoSchema {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Limits of the named dynamic dimensions used in the shapes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dims: BTreeMap<String, DynamicDim>,
}

/// Which side of the model a tensor is on, for error messages.
#[derive(Clone, Copy)]
enum Side {
    Input,
    Output,
}

impl Side {
    fn error(self, name: &str, message: String) -> Error {
        match self {
            Side::Input => Error::Input {
                name: name.to_string(),
                message,
            },
            Side::Output => Error::Output {
                name: name.to_string(),
                message,
            },
        }
    }
}

impl IoSchema {
    /// Names of the inputs, in schema order.
    pub fn input_names(&self) -> Vec<&str> {
        self.inputs.iter().map(|t| t.name.as_str()).collect()
    }

    /// Names of the outputs, in schema order.
    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(|t| t.name.as_str()).collect()
    }

    /// The schema as the boundary sees it with dequantization on (see
    /// [`TensorSpec::dequantized`]).
    pub fn dequantized(&self) -> IoSchema {
        IoSchema {
            inputs: self.inputs.iter().map(TensorSpec::dequantized).collect(),
            outputs: self.outputs.iter().map(TensorSpec::dequantized).collect(),
            dims: self.dims.clone(),
        }
    }

    /// The input named `name`.
    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|s| s.name == name)
    }

    /// The output named `name`.
    pub fn output(&self, name: &str) -> Option<&TensorSpec> {
        self.outputs.iter().find(|s| s.name == name)
    }

    /// Checks inputs against the schema: unknown or missing names, dtypes, ranks, fixed sizes,
    /// consistent and bounded named dimensions. Returns the sizes bound to the named dimensions.
    pub fn check_inputs(&self, inputs: &NamedTensors) -> Result<BTreeMap<String, usize>> {
        for name in inputs.names() {
            if self.input(name).is_none() {
                let known: Vec<&str> = self.inputs.iter().map(|s| s.name.as_str()).collect();
                return Err(Side::Input.error(
                    name,
                    format!(
                        "not an input of this model (its inputs: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        let mut bound = BTreeMap::new();
        self.check(Side::Input, &self.inputs, inputs, &mut bound)?;
        Ok(bound)
    }

    /// Checks a model's outputs against the schema, with the dimensions bound by its inputs.
    pub fn check_outputs(
        &self,
        outputs: &NamedTensors,
        bound: &mut BTreeMap<String, usize>,
    ) -> Result<()> {
        self.check(Side::Output, &self.outputs, outputs, bound)
    }

    fn check(
        &self,
        side: Side,
        specs: &[TensorSpec],
        tensors: &NamedTensors,
        bound: &mut BTreeMap<String, usize>,
    ) -> Result<()> {
        let mut bound_by: BTreeMap<String, String> = BTreeMap::new();
        for spec in specs {
            let Some(tensor) = tensors.get(&spec.name) else {
                if spec.optional {
                    continue;
                }
                return Err(side.error(&spec.name, "missing (it is required)".to_string()));
            };
            self.check_one(side, spec, tensor, bound, &mut bound_by)?;
        }
        Ok(())
    }

    fn check_one(
        &self,
        side: Side,
        spec: &TensorSpec,
        tensor: &HostTensor,
        bound: &mut BTreeMap<String, usize>,
        bound_by: &mut BTreeMap<String, String>,
    ) -> Result<()> {
        let err = |message: String| side.error(&spec.name, message);
        if tensor.dtype() != spec.dtype {
            return Err(err(format!(
                "dtype is {}, expected {}",
                tensor.dtype(),
                spec.dtype
            )));
        }
        let shape = tensor.shape();
        if shape.len() != spec.shape.len() {
            return Err(err(format!(
                "shape {shape:?} has rank {}, expected rank {} {}",
                shape.len(),
                spec.shape.len(),
                spec.shape_string()
            )));
        }
        for (axis, (dim, &size)) in spec.shape.iter().zip(shape).enumerate() {
            match dim {
                Dim::Fixed(n) if *n != size => {
                    return Err(err(format!(
                        "dimension {axis} is {size}, expected {n} (shape {shape:?}, schema {})",
                        spec.shape_string()
                    )));
                }
                Dim::Fixed(_) => {}
                Dim::Named(name) => {
                    if size == 0 {
                        return Err(err(format!("dimension `{name}` (axis {axis}) is empty")));
                    }
                    if let Some(max) = self.dims.get(name).and_then(|d| d.max)
                        && size > max
                    {
                        return Err(err(format!(
                            "dimension `{name}` (axis {axis}) is {size}, more than the maximum of {max}"
                        )));
                    }
                    match bound.get(name) {
                        Some(&prev) if prev != size => {
                            let other = bound_by
                                .get(name)
                                .map(|o| format!("`{o}`"))
                                .unwrap_or_else(|| "the inputs".to_string());
                            return Err(err(format!(
                                "dimension `{name}` (axis {axis}) is {size}, but {prev} in {other}"
                            )));
                        }
                        Some(_) => {}
                        None => {
                            bound.insert(name.clone(), size);
                            bound_by.insert(name.clone(), spec.name.clone());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The schema in KServe / Open Inference Protocol v2 model-metadata form.
    pub fn to_kserve(&self) -> serde_json::Value {
        serde_json::json!({
            "inputs": self.inputs.iter().map(TensorSpec::to_kserve).collect::<Vec<_>>(),
            "outputs": self.outputs.iter().map(TensorSpec::to_kserve).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> IoSchema {
        let mut mask = TensorSpec::new(
            "attention_mask",
            DType::Int64,
            vec![Dim::named("batch"), Dim::named("sequence")],
            "",
        );
        mask.optional = true;
        IoSchema {
            inputs: vec![
                TensorSpec::new(
                    "input_ids",
                    DType::Int64,
                    vec![Dim::named("batch"), Dim::named("sequence")],
                    "",
                ),
                mask,
            ],
            outputs: vec![TensorSpec::new(
                "hidden",
                DType::Float32,
                vec![Dim::named("batch"), Dim::named("sequence"), Dim::Fixed(4)],
                "",
            )],
            dims: BTreeMap::from([(
                "sequence".to_string(),
                DynamicDim {
                    max: Some(8),
                    description: String::new(),
                },
            )]),
        }
    }

    fn ids(shape: Vec<usize>) -> HostTensor {
        let n = shape.iter().product();
        HostTensor::from_i64(shape, vec![1; n]).unwrap()
    }

    fn input_error(inputs: NamedTensors) -> String {
        match schema().check_inputs(&inputs).unwrap_err() {
            Error::Input { name, message } => format!("{name}: {message}"),
            other => panic!("not an input error: {other}"),
        }
    }

    #[test]
    fn accepts_valid_inputs_and_binds_dims() {
        let inputs: NamedTensors = [
            ("input_ids", ids(vec![2, 5])),
            ("attention_mask", ids(vec![2, 5])),
        ]
        .into_iter()
        .collect();
        let bound = schema().check_inputs(&inputs).unwrap();
        assert_eq!(bound["batch"], 2);
        assert_eq!(bound["sequence"], 5);
    }

    #[test]
    fn names_the_bad_input() {
        let e = input_error(NamedTensors::new());
        assert_eq!(e, "input_ids: missing (it is required)");
        let e = input_error([("nope", ids(vec![1, 1]))].into_iter().collect());
        assert!(e.starts_with("nope: not an input"), "{e}");
        let f = HostTensor::from_f32(vec![1, 2], vec![0.0; 2]).unwrap();
        let e = input_error([("input_ids", f)].into_iter().collect());
        assert_eq!(e, "input_ids: dtype is float32, expected int64");
        let e = input_error([("input_ids", ids(vec![2]))].into_iter().collect());
        assert!(
            e.contains("rank 1, expected rank 2 [batch, sequence]"),
            "{e}"
        );
        let e = input_error([("input_ids", ids(vec![1, 9]))].into_iter().collect());
        assert!(e.contains("is 9, more than the maximum of 8"), "{e}");
        let e = input_error([("input_ids", ids(vec![0, 3]))].into_iter().collect());
        assert!(e.contains("`batch` (axis 0) is empty"), "{e}");
        let e = input_error(
            [
                ("input_ids", ids(vec![2, 3])),
                ("attention_mask", ids(vec![2, 4])),
            ]
            .into_iter()
            .collect(),
        );
        assert_eq!(
            e,
            "attention_mask: dimension `sequence` (axis 1) is 4, but 3 in `input_ids`"
        );
    }

    #[test]
    fn outputs_are_checked_against_input_dims() {
        let s = schema();
        let mut bound = BTreeMap::from([("batch".to_string(), 2), ("sequence".to_string(), 3)]);
        let good = HostTensor::from_f32(vec![2, 3, 4], vec![0.0; 24]).unwrap();
        s.check_outputs(&[("hidden", good)].into_iter().collect(), &mut bound)
            .unwrap();
        let bad = HostTensor::from_f32(vec![2, 3, 5], vec![0.0; 30]).unwrap();
        let err = s
            .check_outputs(&[("hidden", bad)].into_iter().collect(), &mut bound)
            .unwrap_err();
        assert!(matches!(err, Error::Output { .. }), "{err}");
    }

    #[test]
    fn renders_to_kserve() {
        let k = schema().to_kserve();
        assert_eq!(
            k["outputs"][0],
            serde_json::json!({"name": "hidden", "datatype": "FP32", "shape": [-1, -1, 4]})
        );
        assert_eq!(k["inputs"][1]["datatype"], "INT64");
    }

    #[test]
    fn dims_serialize_as_numbers_or_names() {
        let json = serde_json::to_string(&vec![Dim::named("batch"), Dim::Fixed(384)]).unwrap();
        assert_eq!(json, r#"["batch",384]"#);
        let back: Vec<Dim> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![Dim::named("batch"), Dim::Fixed(384)]);
    }
}
