//! KServe / Open Inference Protocol v2 REST, with the binary tensor data extension: health,
//! server and model metadata (from the package's I/O schema: named dims become -1), and infer.
//!
//! Infer takes the schema's tensors, or one `BYTES` input named `text` (strings, for packages
//! with a tokenizer) or `image` (encoded image files, for vision packages), which the package's
//! preprocessing turns into the model's tensors.
//! Spec: <https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md>

use super::worker::{InferInput, Job};
use super::{ApiError, AppState, body, parse_json};
use crate::tensor::{DType, HostTensor, NamedTensors, TensorData};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use half::{bf16, f16};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// The header that gives the length of the JSON part of a binary-extension body.
const HEADER_LENGTH: &str = "inference-header-content-length";

/// An error in the protocol's form: `{"error": "..."}`.
struct KsError(ApiError);

impl From<ApiError> for KsError {
    fn from(e: ApiError) -> KsError {
        KsError(e)
    }
}

impl From<crate::Error> for KsError {
    fn from(e: crate::Error) -> KsError {
        KsError(e.into())
    }
}

impl IntoResponse for KsError {
    fn into_response(self) -> Response {
        let mut response =
            (self.0.status, axum::Json(json!({"error": self.0.message}))).into_response();
        if self.0.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

type KsResult<T> = std::result::Result<T, KsError>;

/// Liveness and readiness, open without an API key.
pub(super) fn health_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(ready))
}

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
}

async fn ready(State(state): State<Arc<AppState>>) -> StatusCode {
    if state.models.values().all(|m| m.queue.alive()) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn server_metadata() -> axum::Json<Value> {
    axum::Json(json!({
        "name": "inferox",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> KsResult<axum::Json<Value>> {
    let model = state.model(&name)?;
    let schema = model.io.to_kserve();
    let mut inputs = schema["inputs"].as_array().cloned().unwrap_or_default();
    if model.text {
        inputs.push(json!({"name": "text", "datatype": "BYTES", "shape": [-1]}));
    }
    if model.image {
        inputs.push(json!({"name": "image", "datatype": "BYTES", "shape": [-1]}));
    }
    Ok(axum::Json(json!({
        "name": model.name,
        "versions": ["1"],
        "platform": format!("inferox_{}", model.backend),
        "inputs": inputs,
        "outputs": schema["outputs"],
    })))
}

async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> KsResult<StatusCode> {
    let model = state.model(&name)?;
    Ok(if model.queue.alive() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    })
}

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// A decoded input: a tensor, or the elements of a `BYTES` tensor.
enum Decoded {
    Tensor(HostTensor),
    Bytes(Vec<Vec<u8>>),
}

async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    raw: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> KsResult<Response> {
    let model = state.model(&name)?;
    let raw = body(raw)?;
    let json_len = match headers.get(HEADER_LENGTH) {
        None => raw.len(),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n <= raw.len())
            .ok_or_else(|| {
                ApiError::bad(format!(
                    "header Inference-Header-Content-Length: must be a byte count of at most the body's {}",
                    raw.len()
                ))
            })?,
    };
    let request: InferRequest = parse_json(&raw[..json_len])?;
    let mut binary = &raw[json_len..];
    let mut decoded = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        decoded.push((input.name.clone(), decode_input(input, &mut binary)?));
    }
    if !binary.is_empty() {
        return Err(ApiError::bad(format!(
            "{} bytes of binary data follow the inputs that no input's `binary_data_size` accounts for",
            binary.len()
        ))
        .into());
    }
    let input = to_model_input(&model, decoded)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    state.submit(&model, Job::Infer { input, reply: tx })?;
    let outputs = rx.await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the model's worker stopped",
        )
    })??;
    respond(&model.name, request, outputs)
}

/// Whole request inputs to what the worker runs: tensors, or the one `text` / `image` input.
fn to_model_input(
    model: &super::Served,
    decoded: Vec<(String, Decoded)>,
) -> std::result::Result<InferInput, ApiError> {
    let has_bytes = decoded.iter().any(|(_, d)| matches!(d, Decoded::Bytes(_)));
    if !has_bytes {
        let mut tensors = NamedTensors::new();
        for (name, d) in decoded {
            if let Decoded::Tensor(t) = d {
                tensors.insert(name, t);
            }
        }
        return Ok(InferInput::Tensors(tensors));
    }
    let [(name, Decoded::Bytes(items))] = <[_; 1]>::try_from(decoded).map_err(|_| {
        ApiError::bad("a BYTES input (`text` or `image`) must be the request's only input")
            .param("inputs")
    })?
    else {
        unreachable!("a BYTES input is present")
    };
    if items.is_empty() {
        return Err(ApiError::bad(format!("input `{name}`: no elements")).param(&name));
    }
    match name.as_str() {
        "text" if model.text => {
            let texts = items
                .into_iter()
                .enumerate()
                .map(|(i, b)| {
                    String::from_utf8(b).map_err(|_| {
                        ApiError::bad(format!("input `text`: element {i} is not UTF-8"))
                            .param("text")
                    })
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(InferInput::Texts(texts))
        }
        #[cfg(feature = "image")]
        "image" if model.image => Ok(InferInput::Images(items)),
        _ => {
            let takes = match (model.text, model.image) {
                (true, _) => "a BYTES input named `text`",
                (_, true) => "a BYTES input named `image`",
                _ => "no BYTES input (it has no text or image preprocessing)",
            };
            Err(ApiError::bad(format!(
                "input `{name}`: BYTES input this model does not take; model `{}` takes {takes}, or its tensors",
                model.name
            ))
            .param(&name))
        }
    }
}

fn dtype(datatype: &str) -> Option<DType> {
    DType::ALL.into_iter().find(|d| d.kserve_name() == datatype)
}

/// One input from its JSON `data` or from the binary part (`parameters.binary_data_size`).
fn decode_input(input: &InputTensor, binary: &mut &[u8]) -> std::result::Result<Decoded, ApiError> {
    let name = &input.name;
    let err = |m: String| ApiError::bad(format!("input `{name}`: {m}")).param(name);
    let mut shape = Vec::with_capacity(input.shape.len());
    let mut elements: usize = 1;
    for &d in &input.shape {
        let d = usize::try_from(d)
            .map_err(|_| err(format!("shape {:?} has a negative dim", input.shape)))?;
        elements = elements
            .checked_mul(d)
            .ok_or_else(|| err(format!("shape {:?} overflows", input.shape)))?;
        shape.push(d);
    }
    let bytes_type = input.datatype == "BYTES";
    let dt = if bytes_type {
        None
    } else {
        Some(dtype(&input.datatype).ok_or_else(|| {
            err(format!(
                "datatype `{}` is not supported (FP32, FP16, BF16, FP64, INT64, INT32, INT8, UINT8, BYTES)",
                input.datatype
            ))
        })?)
    };
    if let Some(size) = input.parameters.get("binary_data_size") {
        let size = size
            .as_u64()
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| err("parameters.binary_data_size must be a byte count".into()))?;
        if size > binary.len() {
            return Err(err(format!(
                "binary_data_size is {size} bytes but only {} follow",
                binary.len()
            )));
        }
        let (chunk, rest) = binary.split_at(size);
        *binary = rest;
        return match dt {
            None => Ok(Decoded::Bytes(split_bytes(chunk, elements).map_err(err)?)),
            Some(dt) => {
                let expected = elements
                    .checked_mul(dt.size_in_bytes())
                    .ok_or_else(|| err("shape overflows".into()))?;
                if expected != size {
                    return Err(err(format!(
                        "shape {:?} of {} needs {expected} bytes, binary_data_size is {size}",
                        input.shape, input.datatype
                    )));
                }
                let data = from_le_bytes(dt, chunk);
                Ok(Decoded::Tensor(
                    HostTensor::new(shape, data).map_err(|e| err(e.to_string()))?,
                ))
            }
        };
    }
    let data = input
        .data
        .as_ref()
        .ok_or_else(|| err("has neither `data` nor parameters.binary_data_size".into()))?;
    let mut flat = Vec::new();
    flatten(data, &mut flat, elements).map_err(err)?;
    if flat.len() != elements {
        return Err(err(format!(
            "shape {:?} needs {elements} elements, `data` has {}",
            input.shape,
            flat.len()
        )));
    }
    match dt {
        None => Ok(Decoded::Bytes(
            flat.iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.as_bytes().to_vec()),
                    other => Err(err(format!("BYTES data holds {other}, not a string"))),
                })
                .collect::<std::result::Result<_, _>>()?,
        )),
        Some(dt) => {
            let data = from_json(dt, &flat).map_err(err)?;
            Ok(Decoded::Tensor(
                HostTensor::new(shape, data).map_err(|e| err(e.to_string()))?,
            ))
        }
    }
}

/// Flattens nested JSON arrays (row-major), refusing more than `limit` elements.
fn flatten<'v>(
    value: &'v Value,
    out: &mut Vec<&'v Value>,
    limit: usize,
) -> std::result::Result<(), String> {
    match value {
        Value::Array(items) => {
            for item in items {
                flatten(item, out, limit)?;
            }
            Ok(())
        }
        other => {
            if out.len() >= limit {
                return Err(format!("`data` has more than the shape's {limit} elements"));
            }
            out.push(other);
            Ok(())
        }
    }
}

/// The elements of a BYTES tensor in the binary form: each a 4-byte little-endian length and
/// the bytes.
fn split_bytes(mut chunk: &[u8], elements: usize) -> std::result::Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::with_capacity(elements.min(chunk.len() / 4));
    while !chunk.is_empty() {
        if chunk.len() < 4 {
            return Err("BYTES binary data ends inside an element's length".into());
        }
        let len = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as usize;
        let rest = &chunk[4..];
        if len > rest.len() {
            return Err(format!(
                "BYTES element {} claims {len} bytes, {} are left",
                out.len(),
                rest.len()
            ));
        }
        out.push(rest[..len].to_vec());
        chunk = &rest[len..];
    }
    if out.len() != elements {
        return Err(format!(
            "the shape needs {elements} BYTES elements, the binary data holds {}",
            out.len()
        ));
    }
    Ok(out)
}

fn from_le_bytes(dt: DType, b: &[u8]) -> TensorData {
    fn each<const N: usize, T>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        b.chunks_exact(N)
            .map(|c| f(c.try_into().expect("exact chunk")))
            .collect()
    }
    match dt {
        DType::Float32 => TensorData::Float32(each(b, f32::from_le_bytes)),
        DType::Float16 => TensorData::Float16(each(b, f16::from_le_bytes)),
        DType::BFloat16 => TensorData::BFloat16(each(b, bf16::from_le_bytes)),
        DType::Float64 => TensorData::Float64(each(b, f64::from_le_bytes)),
        DType::Int64 => TensorData::Int64(each(b, i64::from_le_bytes)),
        DType::Int32 => TensorData::Int32(each(b, i32::from_le_bytes)),
        DType::Int8 => TensorData::Int8(each(b, i8::from_le_bytes)),
        DType::Uint8 => TensorData::Uint8(b.to_vec()),
    }
}

fn from_json(dt: DType, values: &[&Value]) -> std::result::Result<TensorData, String> {
    let float = |v: &Value| {
        v.as_f64()
            .ok_or_else(|| format!("{} data holds {v}, not a number", dt.kserve_name()))
    };
    fn int<T: TryFrom<i64>>(v: &Value, dt: DType) -> std::result::Result<T, String> {
        v.as_i64().and_then(|i| T::try_from(i).ok()).ok_or_else(|| {
            format!(
                "{} data holds {v}, not an integer in range",
                dt.kserve_name()
            )
        })
    }
    let floats = || {
        values
            .iter()
            .map(|v| float(v))
            .collect::<std::result::Result<Vec<f64>, _>>()
    };
    Ok(match dt {
        DType::Float32 => TensorData::Float32(floats()?.into_iter().map(|x| x as f32).collect()),
        DType::Float16 => TensorData::Float16(floats()?.into_iter().map(f16::from_f64).collect()),
        DType::BFloat16 => {
            TensorData::BFloat16(floats()?.into_iter().map(bf16::from_f64).collect())
        }
        DType::Float64 => TensorData::Float64(floats()?),
        DType::Int64 => TensorData::Int64(
            values
                .iter()
                .map(|v| int(v, dt))
                .collect::<Result<_, _>>()?,
        ),
        DType::Int32 => TensorData::Int32(
            values
                .iter()
                .map(|v| int(v, dt))
                .collect::<Result<_, _>>()?,
        ),
        DType::Int8 => TensorData::Int8(
            values
                .iter()
                .map(|v| int(v, dt))
                .collect::<Result<_, _>>()?,
        ),
        DType::Uint8 => TensorData::Uint8(
            values
                .iter()
                .map(|v| int(v, dt))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn to_le_bytes(data: &TensorData, out: &mut Vec<u8>) {
    match data {
        TensorData::Float32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        TensorData::Float16(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        TensorData::BFloat16(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        TensorData::Float64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        TensorData::Int64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        TensorData::Int32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        TensorData::Int8(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        TensorData::Uint8(v) => out.extend_from_slice(v),
    }
}

fn to_json(data: &TensorData) -> Value {
    match data {
        TensorData::Float32(v) => json!(v),
        TensorData::Float64(v) => json!(v),
        TensorData::Int64(v) => json!(v),
        TensorData::Int32(v) => json!(v),
        TensorData::Int8(v) => json!(v),
        TensorData::Uint8(v) => json!(v),
        other => json!(other.to_f64_vec()),
    }
}

/// The response: the requested outputs (all, in schema order, when none are named), each as JSON
/// `data` or, where asked, binary after the JSON header.
fn respond(model: &str, request: InferRequest, outputs: NamedTensors) -> KsResult<Response> {
    let binary_default = request
        .parameters
        .get("binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let wanted: Vec<(String, bool)> = match &request.outputs {
        Some(list) => {
            let mut wanted = Vec::with_capacity(list.len());
            for o in list {
                if outputs.get(&o.name).is_none() {
                    let names: Vec<&str> = outputs.names().collect();
                    return Err(ApiError::bad(format!(
                        "requested output `{}` does not exist (outputs: {})",
                        o.name,
                        names.join(", ")
                    ))
                    .param("outputs")
                    .into());
                }
                let binary = o
                    .parameters
                    .get("binary_data")
                    .and_then(Value::as_bool)
                    .unwrap_or(binary_default);
                wanted.push((o.name.clone(), binary));
            }
            wanted
        }
        None => outputs
            .names()
            .map(|n| (n.to_string(), binary_default))
            .collect(),
    };
    let mut binary = Vec::new();
    let mut list = Vec::with_capacity(wanted.len());
    for (name, as_binary) in wanted {
        let tensor = outputs.get(&name).expect("checked above");
        let mut entry = json!({
            "name": name,
            "datatype": tensor.dtype().kserve_name(),
            "shape": tensor.shape(),
        });
        if as_binary {
            let start = binary.len();
            to_le_bytes(tensor.data(), &mut binary);
            entry["parameters"] = json!({"binary_data_size": binary.len() - start});
        } else {
            entry["data"] = to_json(tensor.data());
        }
        list.push(entry);
    }
    let mut head = json!({"model_name": model, "model_version": "1", "outputs": list});
    if let Some(id) = request.id {
        head["id"] = json!(id);
    }
    let head = serde_json::to_vec(&head)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if binary.is_empty() {
        return Ok(([(header::CONTENT_TYPE, "application/json")], head).into_response());
    }
    let length = head.len();
    let mut body = head;
    body.extend_from_slice(&binary);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static(HEADER_LENGTH),
                length.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}
