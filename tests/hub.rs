//! `pull` against a hub served on 127.0.0.1 by the test itself (tests/common/hub.rs): fixture
//! repositories (tiny BERT, a sharded checkpoint, GGUF quantizations, a gated repository) and
//! injected failures (404, 401/403, 500 then success, a connection dropped mid-file, a stalled
//! server, corrupted bytes, hostile file names). Every case checks the exact outcome and that no
//! partial file or package is left.

mod common;

use common::hub::{FakeHub, Fault, Repo};
use common::{copy_dir, fixtures};
use inferox::hub::{PullOptions, RepoSpec, pull};
use inferox::{Error, ImportEvent, LoadOptions, Package};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

struct Env {
    hub: FakeHub,
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let hub = FakeHub::start();
        hub.add(
            "inferox/tiny-bert",
            Repo::from_dir(&fixtures().join("bert/bert_gelu_pooler/model"), SHA),
        );
        Env {
            hub,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("hf-cache")
    }

    fn options(&self) -> PullOptions {
        PullOptions {
            endpoint: Some(self.hub.url.clone()),
            cache_dir: Some(self.cache()),
            timeout: Some(Duration::from_secs(2)),
            ..Default::default()
        }
    }

    fn dest(&self, name: &str) -> PathBuf {
        self.dir.path().join("store").join(name)
    }

    fn pull(&self, repo: &str, dest: &str, options: &PullOptions) -> Result<Package, Error> {
        pull(
            &repo.parse().unwrap(),
            &self.dest(dest),
            options,
            &mut |_| {},
        )
    }

    /// Nothing half-written: no package, no partial package directory, no `.incomplete` blob.
    fn assert_nothing_partial(&self, dest: &str, allow_incomplete: bool) {
        assert!(!self.dest(dest).exists(), "a package was left at {dest}");
        let store = self.dir.path().join("store");
        if store.exists() {
            for e in std::fs::read_dir(&store).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                assert!(!name.contains(".partial-"), "partial package {name} left");
            }
        }
        for file in walk(&self.cache()) {
            let name = file.to_string_lossy();
            if !allow_incomplete {
                assert!(
                    !name.ends_with(".incomplete"),
                    "partial download left: {name}"
                );
            }
            if name.ends_with(".lock") {
                assert!(
                    name.contains("/.locks/"),
                    "lock file outside .locks: {name}"
                );
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn downloads(hub: &FakeHub) -> Vec<String> {
    hub.log()
        .iter()
        .filter(|l| l.path.contains("/resolve/") && !l.path.ends_with("(progress)"))
        .map(|l| l.path.rsplit('/').next().unwrap().to_string())
        .collect()
}

#[test]
fn pulls_into_the_hf_cache_and_builds_the_package() {
    let env = Env::new();
    let mut events = Vec::new();
    let package = pull(
        &"inferox/tiny-bert".parse().unwrap(),
        &env.dest("tiny"),
        &env.options(),
        &mut |e| events.push(format!("{e:?}")),
    )
    .unwrap();
    common::assert_matches_json_schemas(package.root());
    package.verify().unwrap();
    let meta = package.metadata();
    assert_eq!(meta.source.kind, inferox::manifest::SourceKind::Hub);
    assert_eq!(meta.source.commit.as_deref(), Some(SHA));
    assert_eq!(meta.source.revision.as_deref(), Some("main"));
    assert_eq!(
        package.info().source.repo_id.as_deref(),
        Some("inferox/tiny-bert")
    );
    assert!(events.iter().any(|e| e.contains("Resolved")), "{events:?}");
    // The Hugging Face cache layout, so Python tools share the files.
    let repo = env.cache().join("models--inferox--tiny-bert");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        SHA
    );
    let weights = repo.join("snapshots").join(SHA).join("model.safetensors");
    assert!(weights.is_symlink() && weights.exists());
    let mut got = downloads(&env.hub);
    got.sort();
    assert_eq!(got, ["config.json", "model.safetensors", "tokenizer.json"]);
    // The same outputs as a local import of the same files.
    let (_d, local) = common::import(&fixtures().join("bert/bert_gelu_pooler/model"));
    assert_eq!(package.info().io, local.info().io);
    let mut model = package.load(&LoadOptions::default()).unwrap();
    let a = model.run_text(&["the man"], true).unwrap();
    let b = local
        .load(&LoadOptions::default())
        .unwrap()
        .run_text(&["the man"], true)
        .unwrap();
    assert_eq!(a, b);

    // Pulling again: the package is up to date and nothing is downloaded.
    env.hub.clear_log();
    let mut events = Vec::new();
    pull(
        &"inferox/tiny-bert".parse().unwrap(),
        &env.dest("tiny"),
        &env.options(),
        &mut |e| events.push(format!("{e:?}")),
    )
    .unwrap();
    assert!(downloads(&env.hub).is_empty());
    assert!(events.iter().any(|e| e == "UpToDate"), "{events:?}");
    // Into another destination: files come from the cache.
    let mut cached = 0;
    pull(
        &"inferox/tiny-bert".parse().unwrap(),
        &env.dest("again"),
        &env.options(),
        &mut |e| {
            if matches!(e, ImportEvent::Cached { .. }) {
                cached += 1;
            }
        },
    )
    .unwrap();
    assert!(downloads(&env.hub).is_empty());
    assert_eq!(cached, 3);

    // Offline: from the cache alone, even with the hub unreachable.
    let offline = PullOptions {
        offline: true,
        endpoint: Some("http://127.0.0.1:9".into()),
        ..env.options()
    };
    let p = env.pull("inferox/tiny-bert", "offline", &offline).unwrap();
    assert_eq!(p.metadata().source.commit.as_deref(), Some(SHA));
    match env.pull("inferox/other", "x", &offline) {
        Err(Error::Offline { repo, .. }) => assert_eq!(repo, "inferox/other"),
        other => panic!("expected Offline, got {other:?}"),
    }
}

#[test]
fn sharded_checkpoints_follow_the_index() {
    let env = Env::new();
    let src = env.dir.path().join("sharded");
    copy_dir(&fixtures().join("bert/bert_gelu_pooler/model"), &src);
    // Split the weights in two shards with an index, as transformers saves large models.
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let mut map = serde_json::Map::new();
    for (i, part) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        std::fs::write(
            src.join(&file),
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();
        for n in part {
            map.insert(n.clone(), file.clone().into());
        }
    }
    std::fs::remove_file(src.join("model.safetensors")).unwrap();
    std::fs::write(
        src.join("model.safetensors.index.json"),
        serde_json::json!({"weight_map": map}).to_string(),
    )
    .unwrap();
    env.hub.add("inferox/sharded", Repo::from_dir(&src, SHA));
    let package = env
        .pull("inferox/sharded", "sharded", &env.options())
        .unwrap();
    let mut got = downloads(&env.hub);
    got.sort();
    assert_eq!(
        got,
        [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json"
        ]
    );
    package.load(&LoadOptions::default()).unwrap();
}

#[test]
fn gguf_repositories_pick_one_quantization() {
    let env = Env::new();
    let dir = env.dir.path().join("ggufs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixtures().join("gguf/llama-mixed.gguf"),
        dir.join("tiny-Q4_0.gguf"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("gguf/llama-kquants.gguf"),
        dir.join("tiny-Q4_K_M.gguf"),
    )
    .unwrap();
    std::fs::write(dir.join("README.md"), "# tiny").unwrap();
    env.hub.add("inferox/tiny-gguf", Repo::from_dir(&dir, SHA));
    let err = env
        .pull("inferox/tiny-gguf", "g", &env.options())
        .unwrap_err();
    assert!(
        err.to_string().contains("several GGUF files")
            && err.to_string().contains("tiny-Q4_K_M.gguf"),
        "{err}"
    );
    let options = PullOptions {
        quantization: Some("q4_k_m".into()),
        ..env.options()
    };
    let package = env.pull("inferox/tiny-gguf", "g", &options).unwrap();
    assert_eq!(downloads(&env.hub), ["tiny-Q4_K_M.gguf"]);
    assert_eq!(
        package.info().backends["candle"].quantization.as_deref(),
        Some("Q4_K")
    );
    let options = PullOptions {
        quantization: Some("Q9".into()),
        ..env.options()
    };
    let err = env.pull("inferox/tiny-gguf", "h", &options).unwrap_err();
    assert!(
        err.to_string().contains("no GGUF file matching `Q9`"),
        "{err}"
    );
}

#[test]
fn errors_are_told_apart() {
    let env = Env::new();
    let mut gated = Repo::from_dir(&fixtures().join("bert/bert_gelu_pooler/model"), SHA);
    gated.token = Some("hf_secret".into());
    env.hub.add("inferox/gated", gated);

    match env.pull("inferox/nope", "a", &env.options()) {
        Err(e @ Error::RepoNotFound { .. }) => assert!(e.hint().unwrap().contains("HF_TOKEN")),
        other => panic!("expected RepoNotFound, got {other:?}"),
    }
    match env.pull("inferox/tiny-bert@v9", "a", &env.options()) {
        Err(Error::RevisionNotFound { revision, .. }) => assert_eq!(revision, "v9"),
        other => panic!("expected RevisionNotFound, got {other:?}"),
    }
    match env.pull("inferox/gated", "a", &env.options()) {
        Err(
            e @ Error::Unauthorized {
                gated: true,
                status: 403,
                ..
            },
        ) => {
            assert!(e.hint().unwrap().contains("HF_TOKEN"))
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    let with_token = PullOptions {
        token: Some("hf_secret".into()),
        ..env.options()
    };
    env.pull("inferox/gated", "a", &with_token).unwrap();
    // Connection refused.
    let nowhere = PullOptions {
        endpoint: Some("http://127.0.0.1:9".into()),
        ..env.options()
    };
    assert!(matches!(
        env.pull("inferox/tiny-bert", "b", &nowhere),
        Err(Error::Network { .. })
    ));
    for bad in ["../etc", "inferox/../../x", "a/b/c"] {
        assert!(bad.parse::<RepoSpec>().is_err(), "{bad}");
    }
    env.assert_nothing_partial("b", false);
}

#[test]
fn server_errors_are_retried() {
    let env = Env::new();
    env.hub
        .fault("model.safetensors", Fault::Status(500, ""), 2);
    env.pull("inferox/tiny-bert", "ok", &env.options()).unwrap();
    let attempts = downloads(&env.hub)
        .iter()
        .filter(|f| *f == "model.safetensors")
        .count();
    assert_eq!(attempts, 3, "two failures, then success");

    let env = Env::new();
    env.hub.fault("/api/models", Fault::Status(503, ""), 100);
    match env.pull("inferox/tiny-bert", "down", &env.options()) {
        Err(e @ Error::ServerError { status: 503, .. }) => {
            assert!(e.hint().unwrap().contains("resumes"))
        }
        other => panic!("expected ServerError, got {other:?}"),
    }
    env.assert_nothing_partial("down", false);
}

#[test]
fn a_dropped_connection_resumes_with_a_range() {
    let env = Env::new();
    env.hub
        .fault("model.safetensors", Fault::DropAfter(20_000), 1);
    env.pull("inferox/tiny-bert", "ok", &env.options())
        .unwrap()
        .verify()
        .unwrap();
    let log = env.hub.log();
    let weights: Vec<_> = log
        .iter()
        .filter(|l| l.path.ends_with("model.safetensors"))
        .collect();
    assert_eq!(weights.len(), 2);
    assert_eq!(
        weights[1].range_start, 20_000,
        "the second request resumes after what arrived"
    );
    env.assert_nothing_partial("none", false);
}

#[test]
fn a_stalled_server_times_out() {
    let env = Env::new();
    env.hub.fault(
        "model.safetensors",
        Fault::Stall(Duration::from_secs(5)),
        100,
    );
    let options = PullOptions {
        timeout: Some(Duration::from_millis(300)),
        ..env.options()
    };
    match env.pull("inferox/tiny-bert", "slow", &options) {
        Err(e @ Error::Timeout { .. }) => {
            assert!(e.to_string().contains("model.safetensors"), "{e}")
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    // An empty partial download may remain for resuming; no blob, no package.
    env.assert_nothing_partial("slow", true);
    let blobs = walk(&env.cache().join("models--inferox--tiny-bert/blobs"));
    assert!(
        blobs
            .iter()
            .all(|b| b.to_string_lossy().ends_with(".incomplete")
                || std::fs::metadata(b).unwrap().len() < 100_000)
    );
}

#[test]
fn corrupted_bytes_are_caught_and_deleted() {
    let env = Env::new();
    env.hub.fault("model.safetensors", Fault::Corrupt, 1);
    match env.pull("inferox/tiny-bert", "bad", &env.options()) {
        Err(Error::HashMismatch { path, .. }) => {
            assert!(path.to_string_lossy().contains("model.safetensors"))
        }
        other => panic!("expected HashMismatch, got {other:?}"),
    }
    env.assert_nothing_partial("bad", false);
    assert!(
        !env.cache()
            .join("models--inferox--tiny-bert/snapshots")
            .join(SHA)
            .join("model.safetensors")
            .exists()
    );
    // The next pull gets good bytes.
    env.pull("inferox/tiny-bert", "bad", &env.options())
        .unwrap()
        .verify()
        .unwrap();
}

#[test]
fn hostile_file_names_are_refused() {
    let env = Env::new();
    env.hub
        .fault("/api/models", Fault::ExtraSibling("../../escape.json"), 1);
    match env.pull("inferox/tiny-bert", "evil", &env.options()) {
        Err(Error::PathEscape { path, .. }) => assert_eq!(path, "../../escape.json"),
        other => panic!("expected PathEscape, got {other:?}"),
    }
    assert!(!env.dir.path().join("escape.json").exists());
    env.assert_nothing_partial("evil", false);
}

#[test]
fn concurrent_pulls_do_not_corrupt_each_other() {
    let env = Env::new();
    env.hub.fault(
        "model.safetensors",
        Fault::Throttle(Duration::from_millis(20)),
        2,
    );
    std::thread::scope(|s| {
        let a = s.spawn(|| env.pull("inferox/tiny-bert", "one", &env.options()));
        let b = s.spawn(|| env.pull("inferox/tiny-bert", "two", &env.options()));
        for (name, r) in [("one", a.join().unwrap()), ("two", b.join().unwrap())] {
            r.unwrap_or_else(|e| panic!("{name}: {e}"))
                .verify()
                .unwrap();
        }
    });
    let blob_files: Vec<_> = walk(&env.cache().join("models--inferox--tiny-bert/blobs"));
    assert_eq!(blob_files.len(), 3, "one blob per file: {blob_files:?}");
    env.assert_nothing_partial("none", false);
}

#[test]
fn a_killed_pull_leaves_no_package_and_resumes() {
    let env = Env::new();
    // A bigger checkpoint: the tiny BERT with a 1 MiB extra tensor, served slowly.
    let src = env.dir.path().join("big");
    copy_dir(&fixtures().join("bert/bert_gelu_pooler/model"), &src);
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let extra = vec![0u8; 1 << 20];
    let mut views: Vec<(String, safetensors::tensor::TensorView)> = st
        .names()
        .into_iter()
        .map(|n| (n.to_string(), st.tensor(n).unwrap()))
        .collect();
    views.push((
        "unused.padding".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![1 << 20], &extra)
            .unwrap(),
    ));
    std::fs::write(
        src.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    env.hub.add("inferox/big", Repo::from_dir(&src, SHA));
    env.hub.fault(
        "model.safetensors",
        Fault::Throttle(Duration::from_millis(100)),
        1,
    );

    let store = env.dir.path().join("store");
    let run = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_inferox"));
        cmd.args(["pull", "inferox/big", "--json"])
            .env("HF_ENDPOINT", &env.hub.url)
            .env("HF_HOME", env.dir.path().join("hf-home"))
            .env("INFEROX_PACKAGES", &store)
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("HF_TOKEN");
        cmd
    };
    let mut child = run()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it (SIGKILL) once part of the weights has arrived.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !env
        .hub
        .log()
        .iter()
        .any(|l| l.path.contains("(progress)") && l.bytes_sent >= 256 << 10)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the download never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let package_dir = store.join("inferox--big");
    assert!(!package_dir.exists(), "a killed pull left a package");
    let blobs = env
        .dir
        .path()
        .join("hf-home/hub/models--inferox--big/blobs");
    let partial: Vec<_> = walk(&blobs)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".incomplete"))
        .collect();
    assert_eq!(
        partial.len(),
        1,
        "the partial download is kept for resuming: {partial:?}"
    );
    let kept = std::fs::metadata(&partial[0]).unwrap().len();
    assert!(kept >= 128 << 10, "{kept} bytes kept");

    env.hub.clear_log();
    let out = run().output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["commit"], SHA);
    let resumed = env
        .hub
        .log()
        .into_iter()
        .find(|l| l.path.ends_with("model.safetensors"))
        .unwrap();
    assert!(
        resumed.range_start >= kept.min(1),
        "the re-run resumed at byte {}",
        resumed.range_start
    );
    Package::open(&package_dir).unwrap().verify().unwrap();
    assert!(
        walk(&blobs)
            .iter()
            .all(|p| !p.to_string_lossy().ends_with(".incomplete"))
    );
}

#[test]
fn the_store_lists_runs_and_removes_packages() {
    let env = Env::new();
    let store = env.dir.path().join("store");
    let inferox = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_inferox"))
            .args(args)
            .env("HF_ENDPOINT", &env.hub.url)
            .env("HF_HOME", env.dir.path().join("hf-home"))
            .env("INFEROX_PACKAGES", &store)
            .env_remove("HF_HUB_OFFLINE")
            .output()
            .unwrap()
    };
    let out = inferox(&["pull", "inferox/tiny-bert"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = inferox(&["pull", "inferox/tiny-bert"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("already up to date"));
    let out = inferox(&["packages", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["id"], "inferox/tiny-bert");
    assert_eq!(rows[0]["revision"], SHA);
    // A package id works wherever a path does.
    let out = inferox(&["run", "inferox/tiny-bert", "--text", "the man", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = inferox(&["inspect", "inferox/missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("inferox packages"));
    // Import from a Hugging Face cache lands in the store under its repo id.
    let snapshot = env
        .dir
        .path()
        .join("hf-home/hub/models--inferox--tiny-bert/snapshots")
        .join(SHA);
    let out = inferox(&["rm", "inferox/tiny-bert"]);
    assert!(out.status.success());
    let out = inferox(&["import", snapshot.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(store.join("inferox--tiny-bert").is_dir());
    // Offline pull from the cache.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_inferox"))
        .args(["pull", "inferox/tiny-bert", "--output"])
        .arg(env.dir.path().join("offline.pkg"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("HF_HOME", env.dir.path().join("hf-home"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = inferox(&["rm", "inferox/tiny-bert"]);
    assert!(out.status.success());
    let out = inferox(&["packages"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no packages"));
    // HF_TOKEN opens a gated repository.
    let mut gated = Repo::from_dir(&fixtures().join("bert/bert_gelu_pooler/model"), SHA);
    gated.token = Some("hf_cli_token".into());
    env.hub.add("inferox/gated", gated);
    let out = inferox(&["pull", "inferox/gated"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HF_TOKEN"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_inferox"))
        .args(["pull", "inferox/gated"])
        .env("HF_ENDPOINT", &env.hub.url)
        .env("HF_HOME", env.dir.path().join("hf-home"))
        .env("INFEROX_PACKAGES", &store)
        .env("HF_TOKEN", "hf_cli_token")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
