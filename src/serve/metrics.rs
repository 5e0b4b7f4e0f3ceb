//! Prometheus metrics of the server (`GET /metrics`, text exposition format).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Model {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Batch {
    model: String,
    kind: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The server's counters, gauges and histograms.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<Request, Counter>,
    latency: Histograms<Route>,
    queue: Family<Model, Gauge>,
    batches: Histograms<Batch>,
    tokens: Family<Model, Counter>,
    first_token: Histograms<Model>,
    tokens_per_second: Histograms<Model>,
}

fn seconds() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 9))
}

fn rates() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("inferox");
        let requests = Family::<Request, Counter>::default();
        let latency = Histograms::<Route>::new_with_constructor(seconds);
        let queue = Family::<Model, Gauge>::default();
        let batches = Histograms::<Batch>::new_with_constructor(sizes);
        let tokens = Family::<Model, Counter>::default();
        let first_token = Histograms::<Model>::new_with_constructor(seconds);
        let tokens_per_second = Histograms::<Model>::new_with_constructor(rates);
        registry.register(
            "requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers, by route",
            latency.clone(),
        );
        registry.register(
            "queue_depth",
            "Jobs waiting for a model's worker",
            queue.clone(),
        );
        registry.register(
            "batch_size",
            "Requests run together in one batch, by model and kind",
            batches.clone(),
        );
        registry.register(
            "generated_tokens",
            "Tokens generated, by model",
            tokens.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Time from the start of a generation batch to its first token",
            first_token.clone(),
        );
        registry.register(
            "generation_tokens_per_second",
            "Aggregate tokens per second of each generation batch",
            tokens_per_second.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            queue,
            batches,
            tokens,
            first_token,
            tokens_per_second,
        }
    }

    /// Counts a finished request.
    pub fn request(&self, route: &str, status: u16, elapsed: Duration) {
        let route = route.to_string();
        self.requests
            .get_or_create(&Request {
                route: route.clone(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&Route { route })
            .observe(elapsed.as_secs_f64());
    }

    /// The queue-depth gauge of `model` (it shares its value with every copy).
    pub fn queue_depth(&self, model: &str) -> Gauge {
        self.queue.get_or_create_owned(&Model {
            model: model.into(),
        })
    }

    pub fn batch(&self, model: &str, kind: &str, size: usize) {
        self.batches
            .get_or_create(&Batch {
                model: model.into(),
                kind: kind.into(),
            })
            .observe(size as f64);
    }

    pub fn generated(&self, model: &str, tokens: usize) {
        self.tokens
            .get_or_create(&Model {
                model: model.into(),
            })
            .inc_by(tokens as u64);
    }

    pub fn time_to_first_token(&self, model: &str, elapsed: Duration) {
        self.first_token
            .get_or_create(&Model {
                model: model.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn tokens_per_second(&self, model: &str, rate: f64) {
        self.tokens_per_second
            .get_or_create(&Model {
                model: model.into(),
            })
            .observe(rate);
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
