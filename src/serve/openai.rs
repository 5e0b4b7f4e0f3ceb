//! OpenAI-compatible endpoints — `/v1/models`, `/v1/embeddings`, `/v1/completions`,
//! `/v1/chat/completions` (streamed as server-sent events with `stream: true`) — and the
//! text-embeddings-inference `/embed`.
//!
//! Sampling fields the client leaves out come from the package's generation_config.json, as in
//! `inferox generate`, so a request without `temperature` gets the same text as the CLI.
//! Reference: <https://platform.openai.com/docs/api-reference>.

use super::worker::{Embedded, Event, GenerateJob, Job, Prompt};
use super::{ApiError, AppState, Served, body, from_value, parse_json};
use crate::chat::ChatMessage;
use crate::generate::{FinishReason, GenerateOptions};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

type ApiResult<T> = std::result::Result<T, ApiError>;
type RawBody = std::result::Result<Bytes, axum::extract::rejection::BytesRejection>;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/embed", post(tei_embed))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn models(State(state): State<Arc<AppState>>) -> axum::Json<Value> {
    let data: Vec<Value> = state
        .order
        .iter()
        .map(|name| {
            let m = &state.models[name];
            json!({
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "inferox",
                "model_type": m.info.model_type,
                "tasks": m.info.tasks,
            })
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data}))
}

/// Texts from a string or a list of strings.
fn texts(value: &Value, field: &str) -> ApiResult<Vec<String>> {
    let bad = |m: &str| ApiError::bad(format!("`{field}`: {m}")).param(field);
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(bad(
                    "must be a string or a list of strings (token-id inputs are not supported)",
                )),
            })
            .collect(),
        Value::Array(_) => Err(bad("is empty")),
        _ => Err(bad("must be a string or a list of strings")),
    }
}

/// Embeds `texts` on `model`'s worker (batched with other requests), normalised as asked or as
/// the package says.
async fn embed(
    state: &AppState,
    model: &Served,
    texts: Vec<String>,
    normalize: Option<bool>,
) -> ApiResult<Embedded> {
    let Some(package_normalize) = model.embeds else {
        return Err(ApiError::bad(format!(
            "model `{}` makes no sentence embeddings (its package has no sentence-transformers settings)",
            model.name
        ))
        .param("model"));
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    state.submit(model, Job::Embed { texts, reply: tx })?;
    let mut embedded = rx.await.map_err(|_| stopped())??;
    if normalize.unwrap_or(package_normalize) {
        for v in &mut embedded.vectors {
            crate::pipeline::l2_normalize(v);
        }
    }
    Ok(embedded)
}

fn stopped() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the model's worker stopped",
    )
}

#[derive(Deserialize)]
struct EmbeddingsRequest {
    model: String,
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
}

async fn embeddings(State(state): State<Arc<AppState>>, raw: RawBody) -> ApiResult<Response> {
    let request: EmbeddingsRequest = parse_json(&body(raw)?)?;
    let model = state.model(&request.model)?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "`encoding_format` `{other}` is not one of float, base64"
            ))
            .param("encoding_format"));
        }
    };
    let texts = texts(&request.input, "input")?;
    let embedded = embed(&state, &model, texts, None).await?;
    let width = embedded.vectors.first().map_or(0, Vec::len);
    if let Some(d) = request.dimensions.filter(|&d| d != width) {
        return Err(ApiError::bad(format!(
            "`dimensions`: model `{}` makes {width}-dimensional embeddings and records no shorter ones it was trained for; {d} is not available",
            model.name
        ))
        .param("dimensions"));
    }
    let data: Vec<Value> = embedded
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(axum::Json(json!({
        "object": "list",
        "data": data,
        "model": model.name,
        "usage": {"prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens},
    }))
    .into_response())
}

#[derive(Deserialize)]
struct TeiRequest {
    inputs: Value,
    #[serde(default)]
    normalize: Option<bool>,
    /// Which model, where several embed (an inferox extension).
    #[serde(default)]
    model: Option<String>,
}

/// TEI's `/embed`: `{"inputs": "text" | ["text", ...], "normalize": true}` → `[[f32]]`.
async fn tei_embed(State(state): State<Arc<AppState>>, raw: RawBody) -> ApiResult<Response> {
    let request: TeiRequest = parse_json(&body(raw)?)?;
    let model = match &request.model {
        Some(name) => state.model(name)?,
        None => {
            let embedders: Vec<&Arc<Served>> = state
                .models
                .values()
                .filter(|m| m.embeds.is_some())
                .collect();
            match embedders.as_slice() {
                [one] => Arc::clone(one),
                [] => return Err(ApiError::bad("no served model makes sentence embeddings")),
                _ => {
                    return Err(ApiError::bad(
                        "several served models make embeddings: name one in `model`",
                    )
                    .param("model"));
                }
            }
        }
    };
    let texts = texts(&request.inputs, "inputs")?;
    // TEI normalises unless told not to.
    let embedded = embed(
        &state,
        &model,
        texts,
        Some(request.normalize.unwrap_or(true)),
    )
    .await?;
    Ok(axum::Json(embedded.vectors).into_response())
}

/// Sampling fields shared by completions and chat completions.
#[derive(Deserialize)]
struct Sampling {
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    max_completion_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    /// An extension (as in vLLM and llama.cpp's server).
    #[serde(default)]
    top_k: Option<usize>,
    /// An extension (as in vLLM and llama.cpp's server).
    #[serde(default)]
    repetition_penalty: Option<f64>,
    #[serde(default)]
    seed: Option<u64>,
    /// Generate past end-of-sequence tokens, to the token limit (an extension, as in vLLM; for
    /// benchmarks).
    #[serde(default)]
    ignore_eos: bool,
    #[serde(default)]
    stop: Option<Value>,
    #[serde(default)]
    n: Option<usize>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    logprobs: Option<Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

impl Sampling {
    fn options(&self) -> ApiResult<GenerateOptions> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad("`n`: only 1 choice per request is supported").param("n"));
        }
        for (field, value) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if value.is_some_and(|v| v != 0.0) {
                return Err(ApiError::bad(format!(
                    "`{field}` is not supported (use `repetition_penalty`)"
                ))
                .param(field));
            }
        }
        if self
            .logprobs
            .as_ref()
            .is_some_and(|v| !v.is_null() && *v != json!(false))
        {
            return Err(ApiError::bad("`logprobs` is not supported").param("logprobs"));
        }
        let stop = match &self.stop {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => texts(v, "stop")?,
        };
        Ok(GenerateOptions {
            max_new_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            stop,
            eos_token_ids: self.ignore_eos.then(Vec::new),
        })
    }
}

#[derive(Deserialize)]
struct CompletionRequest {
    model: String,
    prompt: Value,
}

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Message>,
}

/// A generation request: its own fields and the sampling fields, from one JSON object (read
/// twice rather than with `serde(flatten)`, which would lose the name of a mistyped field).
fn generation_request<T: serde::de::DeserializeOwned>(raw: &[u8]) -> ApiResult<(T, Sampling)> {
    let value: Value = parse_json(raw)?;
    Ok((from_value(&value)?, from_value(&value)?))
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Value,
}

/// A message's text: a string, or the text parts of a list of content parts.
fn message_text(index: usize, content: &Value) -> ApiResult<String> {
    let field = format!("messages[{index}].content");
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(ApiError::bad(format!(
                            "`{field}`: only text parts are supported"
                        ))
                        .param(&field));
                    }
                }
            }
            Ok(text)
        }
        _ => Err(
            ApiError::bad(format!("`{field}` must be a string or a list of parts")).param(&field),
        ),
    }
}

fn generator(model: &Served) -> ApiResult<()> {
    if model.generates {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "model `{}` does not generate text (it is a `{}` package)",
            model.name, model.info.model_type
        ))
        .param("model"))
    }
}

/// Which response shape a generation takes.
#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Completion,
}

impl Kind {
    fn object(self, chunk: bool) -> &'static str {
        match (self, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn id(self, request: &str) -> String {
        match self {
            Kind::Chat => format!("chatcmpl-{request}"),
            Kind::Completion => format!("cmpl-{request}"),
        }
    }
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Eos | FinishReason::Stop | FinishReason::Cancelled => "stop",
        FinishReason::Length | FinishReason::Context => "length",
    }
}

/// One generation's outcome.
struct Finished {
    text: String,
    finish: FinishReason,
    prompt_tokens: usize,
    completion_tokens: usize,
}

/// Queues a generation and returns its event stream.
fn start(
    state: &AppState,
    model: &Served,
    prompt: Prompt,
    options: GenerateOptions,
) -> ApiResult<mpsc::UnboundedReceiver<Event>> {
    let (events, rx) = mpsc::unbounded_channel();
    state.submit(
        model,
        Job::Generate(GenerateJob {
            prompt,
            options,
            events,
        }),
    )?;
    Ok(rx)
}

/// Collects a generation to its end.
async fn collect(mut rx: mpsc::UnboundedReceiver<Event>) -> ApiResult<Finished> {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Text(piece) => text.push_str(&piece),
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                return Ok(Finished {
                    text,
                    finish,
                    prompt_tokens,
                    completion_tokens,
                });
            }
            Event::Failed(e) => return Err(e.into()),
        }
    }
    Err(stopped())
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0")
        .to_string()
}

async fn completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: RawBody,
) -> ApiResult<Response> {
    let (request, sampling): (CompletionRequest, Sampling) = generation_request(&body(raw)?)?;
    let model = state.model(&request.model)?;
    generator(&model)?;
    let mut options = sampling.options()?;
    // OpenAI's default for completions.
    options.max_new_tokens.get_or_insert(16);
    let prompts = texts(&request.prompt, "prompt")?;
    let id = Kind::Completion.id(&request_id(&headers));
    if sampling.stream {
        if prompts.len() != 1 {
            return Err(ApiError::bad("`prompt`: streaming takes one prompt").param("prompt"));
        }
        let rx = start(&state, &model, Prompt::Text(prompts[0].clone()), options)?;
        let usage = sampling
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        return stream(rx, Kind::Completion, id, model.name.clone(), usage).await;
    }
    // Every prompt is its own job: the worker decodes them together.
    let receivers = prompts
        .into_iter()
        .map(|p| start(&state, &model, Prompt::Text(p), options.clone()))
        .collect::<ApiResult<Vec<_>>>()?;
    let mut choices = Vec::new();
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    for (index, rx) in receivers.into_iter().enumerate() {
        let done = collect(rx).await?;
        prompt_tokens += done.prompt_tokens;
        completion_tokens += done.completion_tokens;
        choices.push(json!({
            "index": index,
            "text": done.text,
            "logprobs": null,
            "finish_reason": finish_reason(done.finish),
        }));
    }
    Ok(axum::Json(json!({
        "id": id,
        "object": Kind::Completion.object(false),
        "created": now(),
        "model": model.name,
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
    }))
    .into_response())
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: RawBody,
) -> ApiResult<Response> {
    let (request, sampling): (ChatRequest, Sampling) = generation_request(&body(raw)?)?;
    let model = state.model(&request.model)?;
    generator(&model)?;
    if !model.chat {
        return Err(ApiError::bad(format!(
            "model `{}` has no chat template: use /v1/completions",
            model.name
        ))
        .param("model"));
    }
    if request.messages.is_empty() {
        return Err(ApiError::bad("`messages` is empty").param("messages"));
    }
    let messages = request
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| Ok(ChatMessage::new(&m.role, &message_text(i, &m.content)?)))
        .collect::<ApiResult<Vec<_>>>()?;
    let options = sampling.options()?;
    let id = Kind::Chat.id(&request_id(&headers));
    let rx = start(&state, &model, Prompt::Chat(messages), options)?;
    if sampling.stream {
        let usage = sampling
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        return stream(rx, Kind::Chat, id, model.name.clone(), usage).await;
    }
    let done = collect(rx).await?;
    Ok(axum::Json(json!({
        "id": id,
        "object": Kind::Chat.object(false),
        "created": now(),
        "model": model.name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": done.text},
            "logprobs": null,
            "finish_reason": finish_reason(done.finish),
        }],
        "usage": usage(done.prompt_tokens, done.completion_tokens),
    }))
    .into_response())
}

/// One streamed chunk: text, a finish reason, or (with neither) the usage.
fn chunk(
    kind: Kind,
    id: &str,
    model: &str,
    created: u64,
    text: Option<&str>,
    finish: Option<&str>,
) -> Value {
    let choice = match kind {
        Kind::Chat => {
            let delta = match text {
                Some(t) => json!({"content": t}),
                None => json!({}),
            };
            json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
        }
        Kind::Completion => {
            json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish})
        }
    };
    json!({
        "id": id,
        "object": kind.object(true),
        "created": created,
        "model": model,
        "choices": [choice],
    })
}

/// Streams a generation as server-sent events, ending with `data: [DONE]`. Waits for the first
/// event, so that a request the worker refuses is an HTTP error rather than an event. A client
/// that goes away drops the stream, which closes the worker's channel and cancels its row.
async fn stream(
    mut rx: mpsc::UnboundedReceiver<Event>,
    kind: Kind,
    id: String,
    model: String,
    include_usage: bool,
) -> ApiResult<Response> {
    let first = rx.recv().await.ok_or_else(stopped)?;
    if let Event::Failed(e) = first {
        return Err(e.into());
    }
    let (tx, out) = mpsc::channel::<std::result::Result<Sse, Infallible>>(16);
    tokio::spawn(async move {
        let created = now();
        let send = |v: Value| Sse::default().data(v.to_string());
        if let Kind::Chat = kind {
            let mut opening = chunk(kind, &id, &model, created, Some(""), None);
            opening["choices"][0]["delta"]["role"] = json!("assistant");
            if tx.send(Ok(send(opening))).await.is_err() {
                return;
            }
        }
        let mut next = Some(first);
        loop {
            let event = match next.take() {
                Some(e) => e,
                None => match rx.recv().await {
                    Some(e) => e,
                    None => break,
                },
            };
            let message = match event {
                Event::Text(piece) => chunk(kind, &id, &model, created, Some(&piece), None),
                Event::Done {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    let last = chunk(
                        kind,
                        &id,
                        &model,
                        created,
                        None,
                        Some(finish_reason(finish)),
                    );
                    if tx.send(Ok(send(last))).await.is_err() {
                        return;
                    }
                    if include_usage {
                        let mut tail = chunk(kind, &id, &model, created, None, None);
                        tail["choices"] = json!([]);
                        tail["usage"] = usage(prompt_tokens, completion_tokens);
                        if tx.send(Ok(send(tail))).await.is_err() {
                            return;
                        }
                    }
                    break;
                }
                Event::Failed(e) => {
                    json!({"error": {"message": e.to_string(), "type": "server_error"}})
                }
            };
            if tx.send(Ok(send(message))).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(Sse::default().data("[DONE]"))).await;
    });
    Ok(
        axum::response::Sse::new(tokio_stream::wrappers::ReceiverStream::new(out))
            .keep_alive(KeepAlive::default())
            .into_response(),
    )
}
