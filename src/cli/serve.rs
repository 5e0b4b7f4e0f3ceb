//! `inferox serve`: packages over HTTP (KServe v2 and OpenAI-compatible endpoints).

use inferox::LoadPackage;
use inferox::serve::{Batching, ServeConfig};
use std::time::Duration;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  inferox serve minilm.pkg smollm2.pkg
  inferox serve smollm2.pkg --name smollm2 --port 9000 --api-key secret
  curl -s localhost:8080/v1/embeddings -H 'content-type: application/json' \\
       -d '{\"model\": \"minilm\", \"input\": \"Hello\"}'

Endpoints (docs/serving.md has a curl line for each):
  GET  /health, /v2/health/live, /v2/health/ready     (no API key)
  GET  /v2, /v2/models/NAME, /v2/models/NAME/ready   KServe v2 metadata
  POST /v2/models/NAME/infer                         KServe v2 infer (JSON or binary tensors)
  GET  /v1/models                                    OpenAI model list
  POST /v1/embeddings, /embed                        sentence embeddings (OpenAI, TEI)
  POST /v1/completions, /v1/chat/completions         generation (stream: true for SSE)
  GET  /metrics                                      Prometheus

Logs go to standard error (RUST_LOG=debug for more, --log-format json for JSON lines).
SIGTERM or Ctrl-C stops accepting connections and lets in-flight requests finish.")]
pub struct Args {
    /// Packages to serve: directories or store ids (at least one).
    #[arg(required = true, value_name = "PKG")]
    packages: Vec<String>,
    /// The name clients use for each package, in order (default: the last part of its store id
    /// or directory, without `.pkg`).
    #[arg(long = "name", value_name = "NAME")]
    names: Vec<String>,
    /// Address to listen on. The default accepts local connections only; 0.0.0.0 exposes the
    /// server to the network (set --api-key then).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one; the address is printed on standard output).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// A key every route but health requires (`Authorization: Bearer KEY`).
    #[arg(long, env = "INFEROX_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Requests waiting per model; beyond it the server answers 429 with Retry-After.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    queue_size: u32,
    /// Most tokens in one embedding batch.
    #[arg(long, default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(1..))]
    max_batch_tokens: u32,
    /// How long the first request of a batch waits for others, in milliseconds.
    #[arg(long, default_value_t = 5)]
    max_wait_ms: u64,
    /// Most generations decoded together.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    max_streams: u32,
    /// Decode each generation batch to its end before starting the next: requests that arrive
    /// meanwhile wait. By default they join the running batch at its next step (continuous
    /// batching: Llama-family and GPT-2 models on candle; other models always wait), their
    /// prompts run on their own, and finished rows leave it.
    #[arg(long)]
    static_batching: bool,
    /// Largest request body in MiB (413 beyond it).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    max_body_mib: u32,
    /// Longest a request may run to its response, in seconds (408 beyond it).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_s: u64,
    /// How long in-flight requests may take to finish after SIGTERM or Ctrl-C, in seconds.
    #[arg(long, default_value_t = 30)]
    drain_s: u64,
    /// Log format on standard error.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    placement: super::Placement,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    if args.names.len() > args.packages.len() {
        anyhow::bail!(
            "{} --name values for {} packages: give at most one name per package",
            args.names.len(),
            args.packages.len()
        );
    }
    let options = args.placement.options()?;
    let mut models = Vec::new();
    for (i, spec) in args.packages.iter().enumerate() {
        let package = super::open_package(Some(spec))?;
        let name = match args.names.get(i) {
            Some(n) => n.clone(),
            None => default_name(spec),
        };
        let started = std::time::Instant::now();
        let model = package.load(&options)?;
        tracing::info!(
            model = %name,
            model_type = %model.info().model_type,
            backend = model.backend(),
            load_ms = started.elapsed().as_secs_f64() * 1e3,
            "loaded"
        );
        models.push((name, model));
    }
    let config = ServeConfig {
        api_key: args.api_key.filter(|k| !k.is_empty()),
        max_body: args.max_body_mib as usize * (1 << 20),
        timeout: Duration::from_secs(args.timeout_s),
        drain: Duration::from_secs(args.drain_s),
        batching: Batching {
            queue: args.queue_size as usize,
            max_batch_tokens: args.max_batch_tokens as usize,
            max_wait: Duration::from_millis(args.max_wait_ms),
            max_streams: args.max_streams as usize,
            continuous: !args.static_batching,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", args.host, args.port))?;
        let address = listener.local_addr()?;
        if !address.ip().is_loopback() && config.api_key.is_none() {
            tracing::warn!(%address, "listening beyond this machine without an API key");
        }
        let names: Vec<&str> = models.iter().map(|(n, _)| n.as_str()).collect();
        println!(
            "inferox serve: listening on http://{address} ({})",
            names.join(", ")
        );
        inferox::serve::serve(listener, models, config, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// The package's name: the last part of its store id or directory, without `.pkg` (a URL path
/// segment, so `org/name` ids serve as `name`).
fn default_name(spec: &str) -> String {
    let stem = std::path::Path::new(spec.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| spec.to_string());
    stem.strip_suffix(".pkg").unwrap_or(&stem).to_string()
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
