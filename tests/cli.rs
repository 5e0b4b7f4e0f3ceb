//! The `inferox` binary end to end: import → inspect → validate → run, the registry it was
//! linked with, and how it reports errors.

mod common;

use common::{fixtures, read_npy_dir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn inferox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_inferox"))
        .args(args)
        .output()
        .expect("the inferox binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = inferox(args);
    assert!(
        out.status.success(),
        "inferox {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = inferox(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "inferox {args:?} should fail with exit code 1"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        !stderr.contains("panicked") && !stderr.contains("internal error"),
        "{stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

include!("common/expected_registry.rs");

#[test]
fn list_shows_every_registration_linked_into_the_binary() {
    let rows = json(&ok(&["list", "--json"]));
    let mut pairs: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["backend"].is_null())
        .map(|r| {
            (
                r["model_type"].as_str().unwrap().into(),
                r["backend"].as_str().unwrap().into(),
            )
        })
        .collect();
    pairs.sort();
    assert_eq!(pairs, expected_pairs());
    let mut model_types: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["model_type"].as_str().unwrap().to_string())
        .collect();
    model_types.dedup();
    assert_eq!(model_types, expected_model_types());
    let table = ok(&["list"]);
    assert!(
        table.contains("bert") && table.contains("feature-extraction"),
        "{table}"
    );
    // The README's table, as this build's registry has it.
    let markdown = ok(&["list", "--markdown"]);
    assert!(
        markdown.starts_with("| model_type | family | tasks | GGUF | candle | torch | tflite |")
            && markdown.contains(
                "| `llama` | decoder-only | text-generation | llama | safetensors, gguf |"
            ),
        "{markdown}"
    );
}

#[test]
fn doctor_reports_the_build() {
    let report = json(&ok(&["doctor", "--json"]));
    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(report["registry_ok"], true);
    let features: Vec<&str> = report["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(features.contains(&"candle"), cfg!(feature = "candle"));
    let torch = report["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "torch")
        .unwrap();
    assert_eq!(torch["compiled"], cfg!(feature = "torch"));
    // libjpeg-turbo's own answer, from the library this test links too.
    assert_eq!(report["jpeg_simd"], inferox::image::jpeg_simd());
    let threads = json(&ok(&["--threads", "1", "doctor", "--json"]))["threads"].clone();
    assert_eq!(threads, 1);
    let text = ok(&["doctor"]);
    assert!(
        text.contains("backends") && text.contains("cpu features") && text.contains("jpeg"),
        "{text}"
    );
}

#[test]
fn import_inspect_validate_run() {
    let case = fixtures().join("bert/bert_gelu_pooler");
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("tiny.pkg");
    let out = ok(&[
        "import",
        s(&case.join("model")),
        "--output",
        s(&pkg),
        "--repo-id",
        "inferox/tiny-bert",
    ]);
    assert!(out.contains("imported bert"), "{out}");

    let inspected = json(&ok(&["inspect", s(&pkg), "--json"]));
    assert_eq!(inspected["model_info"]["model_type"], "bert");
    assert_eq!(
        inspected["model_info"]["source"]["repo_id"],
        "inferox/tiny-bert"
    );
    assert_eq!(inspected["metadata"]["source"]["kind"], "local");
    let human = ok(&["inspect", s(&pkg)]);
    assert!(
        human.contains("runs here on candle") && human.contains("input_ids"),
        "{human}"
    );

    let valid = json(&ok(&["validate", s(&pkg), "--json"]));
    assert_eq!(valid["valid"], true);
    assert_eq!(valid["runs_on"], "candle");

    // Raw tensors in, every output as JSON and as .npy files.
    let inputs: Vec<String> = ["input_ids", "attention_mask", "token_type_ids"]
        .iter()
        .map(|n| {
            format!(
                "{n}={}",
                case.join("inputs").join(format!("{n}.npy")).display()
            )
        })
        .collect();
    let saved = dir.path().join("outputs");
    let mut args = vec!["run", s(&pkg), "--json", "--save-outputs", s(&saved)];
    for i in &inputs {
        args.extend(["--input", i.as_str()]);
    }
    let doc = json(&ok(&args));
    let hidden = &doc["outputs"]["last_hidden_state"];
    assert_eq!(hidden["dtype"], "float32");
    assert_eq!(hidden["shape"], serde_json::json!([3, 12, 32]));
    assert_eq!(hidden["data"].as_array().unwrap().len(), 3 * 12 * 32);
    let expected: inferox::NamedTensors =
        read_npy_dir(&case.join("expected")).into_iter().collect();
    for (name, tensor) in read_npy_dir(&saved) {
        let err = common::max_abs_diff(&tensor, expected.get(&name).unwrap());
        assert!(err < 1e-4, "{name}: {err}");
        let json_data: Vec<f32> = doc["outputs"][&name]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(
            json_data,
            tensor.as_f32().unwrap(),
            "{name}: JSON and .npy agree"
        );
    }

    // Text in: a plain BERT package gives its outputs by name.
    let text = ok(&[
        "run",
        s(&pkg),
        "--text",
        "the man is eating",
        "--text",
        "a dog",
    ]);
    assert!(
        text.contains("last_hidden_state: float32 [2, 6, 32]"),
        "{text}"
    );
    // --save-inputs writes what tokenization made: transformers' own encoding of the texts.
    let texts: Vec<String> =
        serde_json::from_slice(&std::fs::read(case.join("texts.json")).unwrap()).unwrap();
    let saved_inputs = dir.path().join("inputs");
    let mut args = vec!["run", s(&pkg), "--save-inputs", s(&saved_inputs), "--json"];
    for t in &texts {
        args.extend(["--text", t.as_str()]);
    }
    ok(&args);
    let want: inferox::NamedTensors = read_npy_dir(&case.join("text_inputs"))
        .into_iter()
        .collect();
    let got = read_npy_dir(&saved_inputs);
    assert_eq!(got.len(), 3, "input_ids, attention_mask, token_type_ids");
    for (name, tensor) in got {
        let expected = want.get(&name).unwrap();
        assert_eq!(tensor.shape(), expected.shape(), "{name}");
        assert_eq!(tensor.as_i64(), expected.as_i64(), "{name}");
    }
    // With an explicit pooling it gives embeddings.
    let emb = json(&ok(&[
        "run",
        s(&pkg),
        "--text",
        "a dog",
        "--pooling",
        "mean",
        "--json",
    ]));
    assert_eq!(
        emb["embeddings"].as_array().unwrap()[0]
            .as_array()
            .unwrap()
            .len(),
        32
    );
}

#[test]
fn embeddings_of_the_real_model() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("minilm.pkg");
    ok(&["import", s(&common::minilm_dir()), "--output", s(&pkg)]);
    let doc = json(&ok(&[
        "run",
        s(&pkg),
        "--text",
        "A man is eating food.",
        "--text",
        "A man is eating a piece of bread.",
        "--text",
        "The girl is carrying a baby.",
        "--json",
        "--similarity",
    ]));
    let embeddings = doc["embeddings"].as_array().unwrap();
    assert_eq!(embeddings.len(), 3);
    assert!(
        embeddings
            .iter()
            .all(|e| e.as_array().unwrap().len() == 384)
    );
    let sim = doc["similarity"][0][1].as_f64().unwrap();
    assert!((sim - 0.7553).abs() < 5e-5, "{sim}");
    let table = ok(&[
        "run",
        s(&pkg),
        "--text",
        "A man is eating food.",
        "--text",
        "A man is eating a piece of bread.",
        "--similarity",
    ]);
    assert!(table.contains("0.7553"), "{table}");
}

#[test]
fn errors_are_one_line_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = fails(&["inspect", s(&missing)]);
    assert!(
        err.contains("nope") && err.contains("hint: check the path"),
        "{err}"
    );

    let case = fixtures().join("bert/bert_gelu_pooler");
    let pkg = dir.path().join("p");
    ok(&["import", s(&case.join("model")), "--output", s(&pkg)]);
    let err = fails(&["import", s(&case.join("model")), "--output", s(&pkg)]);
    assert!(
        err.contains("already exists") && err.contains("--overwrite"),
        "{err}"
    );

    let err = fails(&["run", s(&pkg), "--text", "x", "--backend", "tflite"]);
    if !cfg!(feature = "tflite") {
        assert!(err.contains("--features tflite"), "{err}");
    }
    let err = fails(&["run", s(&pkg)]);
    assert!(err.contains("--text"), "{err}");
    let bad = dir.path().join("bad.npy");
    std::fs::write(&bad, b"garbage").unwrap();
    let err = fails(&[
        "run",
        s(&pkg),
        "--input",
        &format!("input_ids={}", bad.display()),
    ]);
    assert!(
        err.contains("bad.npy") && err.contains("hint: write inputs with numpy.save"),
        "{err}"
    );
    let ids = case.join("inputs/input_ids.npy");
    let err = fails(&[
        "run",
        s(&pkg),
        "--input",
        &format!("not_an_input={}", ids.display()),
    ]);
    assert!(
        err.contains("input `not_an_input`: not an input of this model"),
        "{err}"
    );
    let weights = pkg.join("backends/candle/model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    let err = fails(&["run", s(&pkg), "--verify", "--text", "x"]);
    assert!(err.contains("model.safetensors: sha256 is"), "{err}");
    let err = fails(&["validate", s(&pkg)]);
    assert!(
        err.contains("sha256") && err.contains("re-create it"),
        "{err}"
    );
    let lines = err.lines().count();
    assert_eq!(lines, 2, "one line of cause, one of hint:\n{err}");
}

#[test]
fn generate_and_chat() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("llama.pkg");
    ok(&[
        "import",
        s(&fixtures().join("decoders/llama/model")),
        "--output",
        s(&pkg),
    ]);
    // Streaming text on stdout, timings on stderr.
    let out = inferox(&[
        "generate",
        s(&pkg),
        "--prompt",
        "Once upon a",
        "--max-tokens",
        "12",
        "--temperature",
        "0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let streamed = String::from_utf8(out.stdout).unwrap();
    let stats = String::from_utf8(out.stderr).unwrap();
    assert!(
        stats.contains("prompt tokens") && stats.contains("tok/s"),
        "{stats}"
    );
    let doc = json(&ok(&[
        "generate",
        s(&pkg),
        "--prompt",
        "Once upon a",
        "--max-tokens",
        "12",
        "--temperature",
        "0",
        "--json",
    ]));
    let ids = doc["token_ids"].as_array().unwrap();
    assert!(!ids.is_empty() && ids.len() <= 12, "{doc}");
    assert_eq!(
        streamed.trim_end_matches('\n'),
        doc["text"].as_str().unwrap()
    );
    let seeded = |seed: &str| {
        json(&ok(&[
            "generate",
            s(&pkg),
            "--prompt",
            "Once upon a",
            "--max-tokens",
            "12",
            "--temperature",
            "1",
            "--seed",
            seed,
            "--json",
        ]))["token_ids"]
            .clone()
    };
    assert_eq!(seeded("5"), seeded("5"));
    // A package without a chat template says so.
    let err = fails(&["chat", s(&pkg), "--prompt", "hi"]);
    assert!(err.contains("no chat template"), "{err}");
    // A text model cannot generate.
    let bert = dir.path().join("bert.pkg");
    ok(&[
        "import",
        s(&fixtures().join("bert/bert_gelu_pooler/model")),
        "--output",
        s(&bert),
    ]);
    let err = fails(&["generate", s(&bert), "--prompt", "hi"]);
    assert!(err.contains("not a text-generation model"), "{err}");
    let err = fails(&["generate", s(&pkg), "--prompt", "hi", "--temperature=-1"]);
    assert!(err.contains("temperature"), "{err}");
    // Regressions: --max-tokens 0 generated one token; --top-p 2 and NaN were accepted.
    let doc = json(&ok(&[
        "generate",
        s(&pkg),
        "--prompt",
        "Once upon a",
        "--max-tokens",
        "0",
        "--json",
    ]));
    assert_eq!(doc["token_ids"], serde_json::json!([]), "{doc}");
    assert_eq!(doc["text"], "", "{doc}");
    for bad in ["2", "NaN", "0", "-0.5"] {
        let flag = format!("--top-p={bad}");
        let err = fails(&["generate", s(&pkg), "--prompt", "hi", &flag]);
        assert!(err.contains("top-p must be in (0, 1]"), "{bad}: {err}");
    }
    // --threads works for candle, before or after the command.
    ok(&[
        "generate",
        s(&pkg),
        "--prompt",
        "hi",
        "--max-tokens",
        "2",
        "--threads",
        "1",
    ]);
    ok(&[
        "--threads",
        "2",
        "generate",
        s(&pkg),
        "--prompt",
        "hi",
        "--max-tokens",
        "2",
    ]);
    let out = inferox(&["--threads", "0", "doctor"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads"));
}

/// Regression: OS errors were printed twice ("... (os error 2): ... (os error 2)").
#[test]
fn generate_and_run_an_encoder_decoder() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("t5.pkg");
    let src = fixtures().join("t5/t5-v1_1");
    ok(&["import", s(&src.join("model")), "--output", s(&pkg)]);
    let reference: Value =
        serde_json::from_slice(&std::fs::read(src.join("reference/greedy.json")).unwrap()).unwrap();
    // `--json` token ids are the generated tokens: transformers' greedy row without its start
    // token, as tests/golden/generate_t5.py stored it.
    let doc = json(&ok(&[
        "generate",
        s(&pkg),
        "--prompt",
        reference["prompts"][0].as_str().unwrap(),
        "--max-tokens",
        "20",
        "--temperature",
        "0",
        "--json",
    ]));
    assert_eq!(doc["token_ids"], reference["greedy"][0], "{doc}");
    assert_eq!(doc["text"], reference["text"][0], "{doc}");
    // `run --input` on the teacher-forced schema, like any package.
    let out = dir.path().join("out");
    let mut args = vec!["run".to_string(), s(&pkg).to_string()];
    for name in [
        "input_ids",
        "attention_mask",
        "decoder_input_ids",
        "decoder_attention_mask",
    ] {
        args.push("--input".into());
        args.push(format!(
            "{name}={}",
            s(&src.join(format!("reference/{name}.npy")))
        ));
    }
    args.extend(["--save-outputs".to_string(), s(&out).to_string()]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let logits = inferox::npy::read_npy(&out.join("logits.npy")).unwrap();
    let want = inferox::npy::read_npy(&src.join("reference/logits.npy")).unwrap();
    assert_eq!(logits.shape(), want.shape());
    // Leaving out the target is an error naming it.
    let err = fails(&[
        "run",
        s(&pkg),
        "--input",
        &format!("input_ids={}", s(&src.join("reference/input_ids.npy"))),
    ]);
    assert!(err.contains("decoder_input_ids"), "{err}");
    // `bench` encodes a source for every run.
    let doc = json(&ok(&[
        "bench",
        s(&pkg),
        "-p",
        "8",
        "-n",
        "4",
        "-r",
        "1",
        "--json",
    ]));
    assert!(
        doc["decode_tokens_per_s"]["mean"].as_f64().unwrap() > 0.0,
        "{doc}"
    );
    let err = fails(&["bench", s(&pkg), "-p", "0", "-n", "4"]);
    assert!(err.contains("--prompt-tokens"), "{err}");
}

#[test]
fn os_errors_are_printed_once() {
    let err = fails(&["inspect", "/nonexistent/inferox-package"]);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
}

#[test]
fn chat_with_a_gguf_template() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("tiny.pkg");
    ok(&[
        "import",
        s(&fixtures().join("gguf/llama-mixed.gguf")),
        "--output",
        s(&pkg),
    ]);
    let doc = json(&ok(&[
        "chat",
        s(&pkg),
        "--prompt",
        "Hello",
        "--max-tokens",
        "8",
        "--temperature",
        "0",
        "--json",
    ]));
    assert!(doc["token_ids"].as_array().unwrap().len() <= 8, "{doc}");
    // Regression: inspect showed `gguf (float32)` and hid the quantization.
    let human = ok(&["inspect", s(&pkg)]);
    let line = human.lines().find(|l| l.contains(" gguf ")).unwrap();
    assert!(
        line.contains("quantized") && !line.contains("float32"),
        "{line}"
    );
    // Interactive mode reads one message per line from standard input.
    let mut child = Command::new(env!("CARGO_BIN_EXE_inferox"))
        .args(["chat", s(&pkg), "--max-tokens", "4", "--temperature", "0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello\n/reset\nAgain\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.matches("prompt tokens").count(),
        2,
        "two replies:\n{stderr}"
    );
    assert!(stderr.contains("conversation cleared"), "{stderr}");
}

/// `kill -9` at any moment of an import leaves either no package or a complete one (never a
/// half one), and the next import cleans up what the killed one left.
#[test]
fn a_killed_import_leaves_no_half_package() {
    let src = common::minilm_dir();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("minilm.pkg");
    let mut mid_write = 0;
    for delay_ms in [5, 30, 60, 100, 150, 250, 400] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_inferox"))
            .args(["import", s(&src), "--output", s(&dest), "--overwrite"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let partial = std::fs::read_dir(dir.path()).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".partial-")
        });
        mid_write += usize::from(partial);
        if dest.exists() {
            let package = inferox::Package::open(&dest)
                .unwrap_or_else(|e| panic!("killed after {delay_ms} ms: a broken package: {e}"));
            package
                .verify()
                .unwrap_or_else(|e| panic!("killed after {delay_ms} ms: {e}"));
        }
    }
    assert!(
        mid_write > 0,
        "no kill landed while the package was being written"
    );
    // The next import completes and removes every leftover of the killed ones.
    ok(&["import", s(&src), "--output", s(&dest), "--overwrite"]);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["minilm.pkg"], "leftovers of killed imports");
}

/// Imports racing for one destination: each ends with success or a clean error, and what is
/// left is one complete package.
#[test]
fn concurrent_imports_to_one_destination() {
    let src = fixtures().join("bert/bert_gelu_pooler/model");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("pkg");
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_inferox"))
                .args(["import", s(&src), "--output", s(&dest), "--overwrite"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(0 | 1)) && !stderr.contains("internal error"),
            "{stderr}"
        );
    }
    let package = inferox::Package::open(&dest).unwrap();
    package.verify().unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["pkg"], "leftovers of concurrent imports");
}

#[test]
fn run_images_through_a_classifier() {
    let case = fixtures().join("vision/vit_classifier");
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("vit.pkg");
    ok(&["import", s(&case.join("model")), "--output", s(&pkg)]);
    let photos: Vec<String> =
        serde_json::from_slice(&std::fs::read(case.join("photos.json")).unwrap()).unwrap();
    let images: Vec<PathBuf> = photos
        .iter()
        .map(|p| common::images_dir().join(p))
        .collect();
    let saved = dir.path().join("inputs");
    let mut args = vec![
        "run",
        s(&pkg),
        "--json",
        "--top-k",
        "3",
        "--save-inputs",
        s(&saved),
    ];
    for i in &images {
        args.extend(["--image", s(i)]);
    }
    let doc = json(&ok(&args));
    // The pixels preprocessing made are transformers' and the logits PyTorch's.
    let pixels = inferox::npy::read_npy(&saved.join("pixel_values.npy")).unwrap();
    let want = inferox::npy::read_npy(&case.join("inputs/pixel_values.npy")).unwrap();
    assert_eq!(common::max_abs_diff(&pixels, &want), 0.0);
    let logits = &doc["outputs"]["logits"];
    assert_eq!(logits["shape"], serde_json::json!([3, 5]));
    let want = inferox::npy::read_npy(&case.join("expected/logits.npy")).unwrap();
    let got: Vec<f32> = logits["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let err = got
        .iter()
        .zip(want.as_f32().unwrap())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(err < 1e-4, "{err}");
    let predictions = doc["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 3, "one list per image");
    for (row, preds) in got.chunks(5).zip(predictions) {
        let preds = preds.as_array().unwrap();
        assert_eq!(preds.len(), 3, "--top-k 3");
        let best = (0..5).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        assert_eq!(
            preds[0]["label"],
            format!("label {}", (b'a' + best as u8) as char)
        );
        let scores: Vec<f64> = preds.iter().map(|p| p["score"].as_f64().unwrap()).collect();
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]),
            "best first: {scores:?}"
        );
        let z: f32 = row.iter().map(|v| (v - row[best]).exp()).sum();
        assert!((scores[0] - 1.0 / z as f64).abs() < 1e-5, "softmax");
    }
    // Plain output: each image, then its labels with scores.
    let plain = ok(&["run", s(&pkg), "--image", s(&images[0]), "--top-k", "2"]);
    let lines: Vec<&str> = plain.lines().collect();
    assert_eq!(lines.len(), 3, "{plain}");
    assert!(
        lines[0].ends_with(&photos[0]) && lines[1].contains("label "),
        "{plain}"
    );

    // Bad images and misuse are one-line errors naming the file.
    let text = dir.path().join("notes.png");
    std::fs::write(&text, "not a picture").unwrap();
    let err = fails(&["run", s(&pkg), "--image", s(&text)]);
    assert!(err.contains("notes.png: not an image"), "{err}");
    let minilm = fixtures().join("bert/bert_gelu_pooler/model");
    let bert = dir.path().join("bert.pkg");
    ok(&["import", s(&minilm), "--output", s(&bert)]);
    let err = fails(&["run", s(&bert), "--image", s(&images[0])]);
    assert!(err.contains("takes no images"), "{err}");
}

fn json_matrix(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter())
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_diff(a: &[f32], b: &inferox::HostTensor) -> f32 {
    let b = b.as_f32().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn clip_zero_shot_and_embeddings() {
    let case = fixtures().join("vision/clip");
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("clip.pkg");
    ok(&["import", s(&case.join("model")), "--output", s(&pkg)]);
    let read = |f: &str| -> Vec<String> {
        serde_json::from_slice(&std::fs::read(case.join(f)).unwrap()).unwrap()
    };
    let (photos, labels) = (read("photos.json"), read("labels.json"));
    let images: Vec<PathBuf> = photos
        .iter()
        .map(|p| common::images_dir().join(p))
        .collect();
    let expected: inferox::NamedTensors =
        read_npy_dir(&case.join("expected")).into_iter().collect();

    // Zero-shot: every image against the labels, as transformers scores them.
    let mut args = vec!["run", s(&pkg), "--json", "--top-k", "5"];
    for i in &images {
        args.extend(["--image", s(i)]);
    }
    let mut zero_shot = args.clone();
    for l in &labels {
        zero_shot.extend(["--label", l.as_str()]);
    }
    let doc = json(&ok(&zero_shot));
    let logits = &doc["outputs"]["logits_per_image"];
    assert_eq!(logits["shape"], serde_json::json!([3, 5]));
    let got: Vec<f32> = logits["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert!(max_diff(&got, expected.get("logits_per_image").unwrap()) < 1e-4);
    for (row, preds) in got.chunks(5).zip(doc["predictions"].as_array().unwrap()) {
        let best = (0..5).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        assert_eq!(preds[0]["label"], labels[best].as_str());
        let total: f64 = preds
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["score"].as_f64().unwrap())
            .sum();
        assert!(
            (total - 1.0).abs() < 1e-5,
            "all five labels: the softmax sums to 1"
        );
    }
    // Images alone: their embeddings; texts alone: theirs.
    let doc = json(&ok(&args));
    let got = json_matrix(&doc["embeddings"]);
    assert!(max_diff(&got, expected.get("image_embeds").unwrap()) < 1e-4);
    let mut text_args = vec!["run", s(&pkg), "--json"];
    for l in &labels {
        text_args.extend(["--text", l.as_str()]);
    }
    let doc = json(&ok(&text_args));
    assert_eq!(doc["dimension"], 20);
    let got = json_matrix(&doc["embeddings"]);
    assert!(max_diff(&got, expected.get("text_embeds").unwrap()) < 1e-4);
    // --label needs a model that scores images against texts.
    let vit = dir.path().join("vit.pkg");
    let vit_model = fixtures().join("vision/vit_classifier/model");
    ok(&["import", s(&vit_model), "--output", s(&vit)]);
    let err = fails(&["run", s(&vit), "--image", s(&images[0]), "--label", "a cat"]);
    assert!(err.contains("does not score images against texts"), "{err}");
}

/// `inferox bench --json`'s figure `key`: a mean and stddev over `runs` positive samples.
fn bench_stat(doc: &Value, key: &str, runs: usize) -> f64 {
    let stat = &doc[key];
    let samples = stat["samples"].as_array().unwrap();
    assert_eq!(samples.len(), runs, "{doc}");
    assert!(samples.iter().all(|x| x.as_f64().unwrap() > 0.0), "{doc}");
    let mean = stat["mean"].as_f64().unwrap();
    let want = samples.iter().map(|x| x.as_f64().unwrap()).sum::<f64>() / runs as f64;
    assert!((mean - want).abs() <= 1e-9 * want, "{doc}");
    assert!(stat["stddev"].as_f64().unwrap() >= 0.0, "{doc}");
    mean
}

#[test]
fn bench_encoders_decoders_and_images() {
    let dir = tempfile::tempdir().unwrap();
    // An encoder: items/s and latency, consistent with each other.
    let minilm = dir.path().join("minilm.pkg");
    ok(&["import", s(&common::minilm_dir()), "--output", s(&minilm)]);
    let doc = json(&ok(&[
        "bench",
        s(&minilm),
        "--batch",
        "4",
        "--seq",
        "16",
        "-r",
        "3",
        "--json",
        "--threads",
        "1",
    ]));
    assert_eq!(
        (doc["batch"].as_u64(), doc["seq"].as_u64()),
        (Some(4), Some(16))
    );
    assert_eq!(doc["threads"].as_u64(), Some(1));
    let items = bench_stat(&doc, "items_per_s", 3);
    let latency = bench_stat(&doc, "latency_ms", 3);
    // Both are means over the same runs: items/s is about batch / latency.
    let implied = 4.0 / (latency / 1e3);
    assert!((items / implied - 1.0).abs() < 0.5, "{doc}");
    let table = ok(&["bench", s(&minilm), "--batch", "2", "--seq", "8", "-r", "2"]);
    assert!(
        table.contains("| b2 s8 |") && table.contains(" ± "),
        "{table}"
    );
    let err = fails(&["bench", s(&minilm), "--seq", "300"]);
    assert!(err.contains("--seq 300") && err.contains("256"), "{err}");

    // A decoder: prompt processing and generation from an empty cache, as llama-bench.
    let llama = dir.path().join("llama.pkg");
    ok(&[
        "import",
        s(&fixtures().join("decoders/llama/model")),
        "--output",
        s(&llama),
    ]);
    let doc = json(&ok(&[
        "bench",
        s(&llama),
        "-p",
        "16",
        "-n",
        "8",
        "-r",
        "2",
        "--json",
    ]));
    bench_stat(&doc, "prompt_tokens_per_s", 2);
    bench_stat(&doc, "decode_tokens_per_s", 2);
    assert_eq!(
        (doc["prompt_tokens"].as_u64(), doc["gen_tokens"].as_u64()),
        (Some(16), Some(8))
    );
    let table = ok(&["bench", s(&llama), "-p", "8", "-n", "0", "-r", "1"]);
    assert!(
        table.contains("| pp8 |") && !table.contains("tg"),
        "{table}"
    );
    let err = fails(&["bench", s(&llama), "-p", "100000"]);
    assert!(
        err.contains("--prompt-tokens 100000") && err.contains("context"),
        "{err}"
    );

    // An image model: images at the package's size.
    let vit = dir.path().join("vit.pkg");
    ok(&[
        "import",
        s(&fixtures().join("vision/vit_classifier/model")),
        "--output",
        s(&vit),
    ]);
    let doc = json(&ok(&[
        "bench",
        s(&vit),
        "--batch",
        "2",
        "-r",
        "2",
        "--json",
    ]));
    bench_stat(&doc, "items_per_s", 2);
    assert!(doc["seq"].is_null(), "{doc}");
}
