//! `inferox serve`: model packages over HTTP, with no per-model code — the I/O schema, the
//! tokenizer and the tasks in the manifest say what each endpoint takes.
//!
//! * KServe / Open Inference Protocol v2 REST (`/v2/...`), with the binary tensor data
//!   extension;
//! * OpenAI-compatible `/v1/models`, `/v1/embeddings`, `/v1/completions` and
//!   `/v1/chat/completions` (with server-sent-event streaming), and TEI's `/embed`;
//! * `/metrics` (Prometheus) and `/health`.
//!
//! Each model is loaded once and shared by two worker threads, one for forward passes and
//! embeddings and one for generation, each behind a bounded queue (429 with `Retry-After` when
//! it is full); they batch embedding requests and decode concurrent generations together. docs/serving.md documents every endpoint.

mod kserve;
mod metrics;
mod openai;
mod worker;

pub use worker::Batching;

use crate::loader::LoadedModel;
use crate::{Error, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::Metrics;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use worker::{Job, Queue, Refused};

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// A key every route but the health checks requires (`Authorization: Bearer KEY` or
    /// `x-api-key: KEY`); `None` serves without one.
    pub api_key: Option<String>,
    /// Largest request body, in bytes (413 beyond it).
    pub max_body: usize,
    /// Longest a request may take to its response headers (408 beyond it). A streamed
    /// generation is bounded by its token limit instead, once its first event is sent.
    pub timeout: Duration,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub drain: Duration,
    /// How each model's worker queues and batches.
    pub batching: Batching,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            api_key: None,
            max_body: 32 << 20,
            timeout: Duration::from_secs(300),
            drain: Duration::from_secs(30),
            batching: Batching {
                queue: 64,
                max_batch_tokens: 16_384,
                max_wait: Duration::from_millis(5),
                max_streams: 16,
                continuous: true,
            },
        }
    }
}

/// A served model: its name in URLs and requests, and what the handlers need to know of it.
pub(crate) struct Served {
    pub name: String,
    pub info: crate::manifest::ModelInfo,
    pub io: crate::schema::IoSchema,
    pub backend: &'static str,
    pub queue: Queue,
    /// Takes text (it has a tokenizer and text inputs).
    pub text: bool,
    /// Takes images.
    pub image: bool,
    /// Generates text.
    pub generates: bool,
    /// Makes sentence embeddings, and whether it normalises them by default.
    pub embeds: Option<bool>,
    /// Its chat template, if any.
    pub chat: bool,
}

pub(crate) struct AppState {
    models: BTreeMap<String, Arc<Served>>,
    order: Vec<String>,
    metrics: Arc<Metrics>,
    key_digest: Option<[u8; 32]>,
    next_id: AtomicU64,
    timeout: Duration,
}

impl AppState {
    /// The model `name`, or 404 naming the ones served.
    pub(crate) fn model(&self, name: &str) -> std::result::Result<Arc<Served>, ApiError> {
        self.models.get(name).cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "model `{name}` is not served here (served: {})",
                    self.order.join(", ")
                ),
            )
            .param("model")
        })
    }

    /// Queues `job` on `model`'s worker.
    pub(crate) fn submit(&self, model: &Served, job: Job) -> std::result::Result<(), ApiError> {
        model.queue.submit(job).map_err(|why| match why {
            Refused::Full => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "model `{}` has a full queue; retry after a second",
                    model.name
                ),
            ),
            Refused::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("model `{}` is not running", model.name),
            ),
        })
    }

    fn request_id(&self) -> String {
        format!("req-{:08x}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }
}

/// A request's failure: its status and a message that names what to fix.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            param: None,
        }
    }

    pub fn bad(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn param(mut self, field: &str) -> ApiError {
        self.param = Some(field.to_string());
        self
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let status = match &e {
            Error::InvalidArgument(_)
            | Error::Input { .. }
            | Error::TextTooLong { .. }
            | Error::Image { .. }
            | Error::Unsupported(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let param = match &e {
            Error::Input { name, .. } => Some(name.clone()),
            _ => None,
        };
        ApiError {
            status,
            message: e.to_string(),
            param,
        }
    }
}

/// The OpenAI error body: `{"error": {"message", "type", "param", "code"}}`.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let body = serde_json::json!({"error": {
            "message": self.message,
            "type": kind,
            "param": self.param,
            "code": self.status.as_u16(),
        }});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Parses a JSON body: malformed JSON is 400, a missing or mistyped field 422 naming the field.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> std::result::Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("request body: malformed JSON: {e}")))?;
    from_value(&value)
}

/// Reads `T` from parsed JSON; a missing or mistyped field is 422 naming the field.
pub(crate) fn from_value<T: DeserializeOwned>(
    value: &serde_json::Value,
) -> std::result::Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        if path == "." {
            ApiError::new(status, format!("request body: {inner}"))
        } else {
            ApiError::new(status, format!("request body: field `{path}`: {inner}")).param(&path)
        }
    })
}

/// The body, or 413 as JSON when it is over the limit.
pub(crate) fn body(
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> std::result::Result<Bytes, ApiError> {
    body.map_err(|e| ApiError::new(e.status(), format!("request body: {}", e.body_text())))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// 413 for a body over `max` bytes, answered from its Content-Length before it is read (a
/// chunked body is cut at the limit as it is read).
fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body: length limit exceeded: the limit is {max} bytes (--max-body-mib)"),
    )
}

/// Loads nothing: `models` are loaded already. Serves them on `listener` until `shutdown`
/// completes, then stops accepting, lets in-flight requests finish within
/// [`ServeConfig::drain`], and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    models: Vec<(String, LoadedModel)>,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let mut served = BTreeMap::new();
    let mut order = Vec::new();
    let mut threads = Vec::new();
    for (name, model) in models {
        if served.contains_key(&name) {
            return Err(Error::InvalidArgument(format!(
                "two models are named `{name}`: give each its own --name"
            )));
        }
        let info = model.info().clone();
        let io = model.io().clone();
        let backend = model.backend();
        let text = info.io.inputs.iter().any(|s| s.tokenization().is_some());
        let image = info.io.inputs.iter().any(|s| s.image().is_some());
        let generates = info.generation.is_some();
        let chat = info
            .generation
            .as_ref()
            .is_some_and(|g| g.chat_template.is_some());
        let embeds = info.sentence_embedding.as_ref().map(|s| s.normalize);
        let (queue, workers) =
            worker::spawn(&name, model, config.batching.clone(), metrics.clone()).map_err(|e| {
                Error::Unsupported(format!("starting the workers of `{name}`: {e}"))
            })?;
        threads.extend(workers);
        order.push(name.clone());
        served.insert(
            name.clone(),
            Arc::new(Served {
                name,
                info,
                io,
                backend,
                queue,
                text,
                image,
                generates,
                embeds,
                chat,
            }),
        );
    }
    let state = Arc::new(AppState {
        models: served,
        order,
        metrics,
        key_digest: config.api_key.as_deref().map(digest),
        next_id: AtomicU64::new(1),
        timeout: config.timeout,
    });
    let app = router(state.clone(), &config);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        })
        .into_future();
    let mut server = tokio::spawn(server);
    tokio::select! {
        result = &mut server => {
            return finish(&state, threads, result);
        }
        () = shutdown => {}
    }
    tracing::info!(
        deadline_s = config.drain.as_secs_f64(),
        "shutting down: no new connections; finishing in-flight requests"
    );
    let _ = stop_tx.send(true);
    match tokio::time::timeout(config.drain, &mut server).await {
        Ok(result) => finish(&state, threads, result),
        Err(_) => {
            tracing::warn!("in-flight requests did not finish within the drain deadline");
            server.abort();
            for model in state.models.values() {
                model.queue.close();
            }
            Ok(())
        }
    }
}

fn finish(
    state: &AppState,
    threads: Vec<std::thread::JoinHandle<()>>,
    result: std::result::Result<std::io::Result<()>, tokio::task::JoinError>,
) -> Result<()> {
    for model in state.models.values() {
        model.queue.close();
    }
    for thread in threads {
        let _ = thread.join();
    }
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Unsupported(format!("server: {e}"))),
        Err(e) => Err(Error::Unsupported(format!("server task: {e}"))),
    }
}

fn router(state: Arc<AppState>, config: &ServeConfig) -> Router {
    let guarded = Router::new()
        .merge(kserve::routes())
        .merge(openai::routes())
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .merge(kserve::health_routes())
        .merge(guarded)
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such route (docs/serving.md lists them)",
            )
        })
        .layer(middleware::from_fn_with_state(
            config.max_body,
            |State(max): State<usize>, request: Request, next: Next| async move {
                match declared_length(request.headers()) {
                    Some(n) if n > max as u64 => too_large(max).into_response(),
                    _ => next.run(request).await,
                }
            },
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(config.max_body))
        // A bug that panics in a handler answers 500 instead of dropping the connection.
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .with_state(state)
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

fn digest(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

/// Checks the API key in constant time (digests of equal length compared with `subtle`).
async fn authorize(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.key_digest else {
        return next.run(request).await;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    let ok = given.is_some_and(|key| {
        use subtle::ConstantTimeEq;
        bool::from(digest(key.trim()).ct_eq(&expected))
    });
    if ok {
        next.run(request).await
    } else {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API key: send `Authorization: Bearer KEY`",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    }
}

/// Gives each request an id (the client's `x-request-id`, else a new one), logs it with its
/// route, status and time, counts it in the metrics, and returns the id in `x-request-id`.
async fn observe(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(|| state.request_id(), str::to_string);
    let method = request.method().clone();
    if let Ok(value) = HeaderValue::from_str(&id) {
        request.headers_mut().insert("x-request-id", value);
    }
    let mut response = match tokio::time::timeout(state.timeout, next.run(request)).await {
        Ok(response) => response,
        // Dropping the handler drops its channels: a queued or running generation is cancelled.
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request took longer than {} s (--timeout-s)",
                state.timeout.as_secs_f64()
            ),
        )
        .into_response(),
    };
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state.metrics.request(&route, status, elapsed);
    tracing::info!(
        request_id = %id,
        method = %method,
        route = %route,
        status,
        ms = elapsed.as_secs_f64() * 1e3,
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
