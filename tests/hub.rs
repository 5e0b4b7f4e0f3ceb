//! `pull` against a hub served on 127.0.0.1 by the test itself (tests/common/hub.rs): fixture
//! repositories (tiny BERT, a sentence-transformers layout like all-MiniLM-L6-v2's, a sharded
//! checkpoint, GGUF quantizations, a gated repository, a mirror without `?blobs=true` metadata)
//! and injected failures (404, 401/403, 500 then success, a connection dropped mid-file, a
//! stalled server, corrupted bytes, wrong or missing checksum headers, hostile file names,
//! revisions and commits, a full disk). Every case checks the exact outcome and that no partial
//! file or package is left.

mod common;

use common::hub::{FakeHub, Fault, Repo};
use common::{copy_dir, fixtures};
use inferox::LoadPackage;
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

/// The files downloaded (GET of `/resolve/{rev}/{file}`), as repository paths, in order.
fn downloads(hub: &FakeHub) -> Vec<String> {
    hub.log()
        .iter()
        .filter(|l| l.method == "GET" && !l.path.ends_with("(progress)"))
        .filter_map(|l| l.path.split_once("/resolve/"))
        .map(|(_, rest)| rest.split_once('/').unwrap().1.to_string())
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
    let model = package.load(&LoadOptions::default()).unwrap();
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
        Err(e @ Error::ChecksumMismatch { .. }) => {
            let m = e.to_string();
            assert!(
                m.starts_with("`model.safetensors` of ")
                    && m.contains("inferox/tiny-bert")
                    && m.contains("its sha256 is ")
                    && m.contains("the hub announced")
                    && m.contains("partial download was deleted")
                    && !m.contains("metadata.json"),
                "{m}"
            );
        }
        other => panic!("expected a checksum error, got {other:?}"),
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
    // `rm` deletes only what inferox wrote: a user's file inside the package keeps it.
    let mine = store.join("inferox--tiny-bert/notes.txt");
    std::fs::write(&mine, b"mine").unwrap();
    let out = inferox(&["rm", "inferox/tiny-bert"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`notes.txt` is not one of the package's files"),
        "{err}"
    );
    assert_eq!(std::fs::read(&mine).unwrap(), b"mine");
    std::fs::remove_file(&mine).unwrap();
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

/// A repository laid out as sentence-transformers/all-MiniLM-L6-v2 is (with the tiny BERT's
/// weights): what pull needs, and the files it must leave on the hub.
fn sentence_transformers_repo(dir: &Path) -> PathBuf {
    let src = dir.join("all-MiniLM-L6-v2");
    copy_dir(&fixtures().join("bert/bert_gelu_pooler/model"), &src);
    let tokenizer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("tokenizer.json")).unwrap()).unwrap();
    let mut vocab: Vec<(&String, u64)> = tokenizer["model"]["vocab"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(t, id)| (t, id.as_u64().unwrap()))
        .collect();
    vocab.sort_by_key(|(_, id)| *id);
    let vocab: String = vocab.iter().map(|(t, _)| format!("{t}\n")).collect();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("vocab.txt", vocab.into_bytes()),
        (
            "tokenizer_config.json",
            serde_json::json!({"clean_up_tokenization_spaces": true, "cls_token": "[CLS]",
                "do_basic_tokenize": true, "do_lower_case": true, "mask_token": "[MASK]",
                "model_max_length": 512, "never_split": null, "pad_token": "[PAD]",
                "sep_token": "[SEP]", "strip_accents": null, "tokenize_chinese_chars": true,
                "tokenizer_class": "BertTokenizer", "unk_token": "[UNK]"})
            .to_string()
            .into_bytes(),
        ),
        (
            "special_tokens_map.json",
            serde_json::json!({"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]",
                "sep_token": "[SEP]", "unk_token": "[UNK]"})
            .to_string()
            .into_bytes(),
        ),
        (
            "modules.json",
            serde_json::json!([
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
            ])
            .to_string()
            .into_bytes(),
        ),
        (
            "1_Pooling/config.json",
            serde_json::json!({"word_embedding_dimension": 32, "pooling_mode_cls_token": false,
                "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false,
                "pooling_mode_mean_sqrt_len_tokens": false})
            .to_string()
            .into_bytes(),
        ),
        (
            "sentence_bert_config.json",
            br#"{"max_seq_length": 256, "do_lower_case": false}"#.to_vec(),
        ),
        (
            "config_sentence_transformers.json",
            br#"{"__version__": {"sentence_transformers": "2.0.0", "transformers": "4.6.1", "pytorch": "1.8.1"}}"#.to_vec(),
        ),
        ("README.md", b"---\nlicense: apache-2.0\n---\n# all-MiniLM-L6-v2\n".to_vec()),
        (".gitattributes", b"*.bin filter=lfs diff=lfs merge=lfs -text\n".to_vec()),
        ("data_config.json", b"[]".to_vec()),
        ("train_script.py", b"print('train')\n".to_vec()),
        // Weights in other formats: never fetched (pickle can run code; the rest is unused).
        ("pytorch_model.bin", vec![0x80; 4096]),
        ("tf_model.h5", vec![0x89; 4096]),
        ("rust_model.ot", vec![1; 4096]),
        ("onnx/model.onnx", vec![8; 4096]),
        ("onnx/model_qint8_avx512.onnx", vec![8; 2048]),
        ("openvino/openvino_model.xml", b"<net/>".to_vec()),
        ("openvino/openvino_model.bin", vec![0; 2048]),
    ];
    for (name, bytes) in files {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    // No files: git keeps no empty folder, so the hub lists nothing under it.
    std::fs::create_dir_all(src.join("2_Normalize")).unwrap();
    src
}

/// What pull of a sentence-transformers repository must download, and nothing else.
const SENTENCE_TRANSFORMERS_FILES: [&str; 9] = [
    "1_Pooling/config.json",
    "config.json",
    "config_sentence_transformers.json",
    "model.safetensors",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
];

/// The package's files with their sha256, model_info.json (which records the source) aside.
fn package_files(package: &Package) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = package
        .metadata()
        .files
        .iter()
        .filter(|f| f.path != "model_info.json")
        .map(|f| (f.path.clone(), f.sha256.clone()))
        .collect();
    files.sort();
    files
}

/// The pulled package is the package `import` makes of the same files.
fn assert_same_as_import(pulled: &Package, src: &Path) {
    let (_d, local) = common::import(src);
    let st = pulled.info().sentence_embedding.clone();
    assert!(st.is_some(), "no sentence_embedding in the pulled package");
    assert_eq!(st, local.info().sentence_embedding);
    assert_eq!(pulled.info().io, local.info().io);
    assert_eq!(pulled.info().tasks, local.info().tasks);
    assert_eq!(package_files(pulled), package_files(&local));
    let texts = ["A man is eating food.", "A man is riding a horse."];
    let a = pulled
        .load(&LoadOptions::default())
        .unwrap()
        .embed(&texts)
        .unwrap();
    let b = local
        .load(&LoadOptions::default())
        .unwrap()
        .embed(&texts)
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn sentence_transformers_repositories_pull_like_import() {
    let env = Env::new();
    let src = sentence_transformers_repo(env.dir.path());
    env.hub.add(
        "sentence-transformers/all-MiniLM-L6-v2",
        Repo::from_dir(&src, SHA),
    );
    let package = env
        .pull(
            "sentence-transformers/all-MiniLM-L6-v2",
            "st",
            &env.options(),
        )
        .unwrap();
    package.verify().unwrap();
    let mut got = downloads(&env.hub);
    got.sort();
    assert_eq!(got, SENTENCE_TRANSFORMERS_FILES);
    let st = package.info().sentence_embedding.clone().unwrap();
    assert_eq!(st.pooling, inferox::manifest::Pooling::Mean);
    assert!(st.normalize);
    assert_same_as_import(&package, &src);
    // Offline, from the cache alone: the same package again.
    let offline = PullOptions {
        offline: true,
        endpoint: Some("http://127.0.0.1:9".into()),
        ..env.options()
    };
    let again = env
        .pull(
            "sentence-transformers/all-MiniLM-L6-v2",
            "st-offline",
            &offline,
        )
        .unwrap();
    assert_eq!(
        again.info().sentence_embedding,
        package.info().sentence_embedding
    );
}

/// A mirror that ignores `?blobs=true`: checksums come from the download's headers.
fn bare_env(src: &Path) -> Env {
    let env = Env::new();
    let mut repo = Repo::from_dir(src, SHA);
    repo.bare_listing = true;
    repo.redirect_lfs = true;
    env.hub.add("mirror/minilm", repo);
    env
}

#[test]
fn checksums_come_from_the_headers_when_the_api_lists_none() {
    let dir = tempfile::tempdir().unwrap();
    let src = sentence_transformers_repo(dir.path());
    let env = bare_env(&src);
    let package = env.pull("mirror/minilm", "m", &env.options()).unwrap();
    package.verify().unwrap();
    let mut got = downloads(&env.hub);
    got.sort();
    assert_eq!(got, SENTENCE_TRANSFORMERS_FILES);
    // One HEAD per file for its checksum; the weights came from the CDN after the redirect.
    let log = env.hub.log();
    let heads = log.iter().filter(|l| l.method == "HEAD").count();
    assert_eq!(heads, SENTENCE_TRANSFORMERS_FILES.len(), "{log:?}");
    assert!(log.iter().any(|l| l.path.starts_with("/cdn/")), "{log:?}");
    // Blobs are named by the checksum the headers gave: sha256 for LFS, blob id for git files.
    let blobs = env.cache().join("models--mirror--minilm/blobs");
    let weights = std::fs::read(src.join("model.safetensors")).unwrap();
    let sha256 = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&weights));
    assert!(blobs.join(&sha256).is_file());
    assert_eq!(walk(&blobs).len(), SENTENCE_TRANSFORMERS_FILES.len());
    assert_same_as_import(&package, &src);
    env.assert_nothing_partial("none", false);

    // Into another destination: everything is in the snapshot, nothing is asked of the hub
    // but the revision.
    env.hub.clear_log();
    env.pull("mirror/minilm", "m2", &env.options()).unwrap();
    let log = env.hub.log();
    assert!(log.iter().all(|l| l.path.starts_with("/api/")), "{log:?}");
}

#[test]
fn a_wrong_announced_checksum_is_refused_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let src = sentence_transformers_repo(dir.path());
    let wrong_sha256 = "ab".repeat(32);
    let env = bare_env(&src);
    env.hub.fault(
        "resolve/0123456789abcdef0123456789abcdef01234567/model.safetensors",
        Fault::AnnounceChecksum(Box::leak(wrong_sha256.clone().into_boxed_str())),
        1,
    );
    match env.pull("mirror/minilm", "bad", &env.options()) {
        Err(e @ Error::ChecksumMismatch { .. }) => {
            let m = e.to_string();
            assert!(
                m.starts_with("`model.safetensors` of ")
                    && m.contains("mirror/minilm")
                    && m.contains("its sha256 is ")
                    && m.contains(&format!(
                        "the hub announced {wrong_sha256} (in X-Linked-Etag)"
                    ))
                    && m.contains("partial download was deleted")
                    && !m.contains("metadata.json")
                    && !m.contains("try again later"),
                "{m}"
            );
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    env.assert_nothing_partial("bad", false);
    let repo = env.cache().join("models--mirror--minilm");
    assert!(!repo.join("blobs").join(&wrong_sha256).exists());
    assert!(
        !repo
            .join("snapshots")
            .join(SHA)
            .join("model.safetensors")
            .exists()
    );

    // A git file whose ETag is not its blob id.
    let wrong_blob = "cd".repeat(20);
    env.hub.fault(
        "/config.json",
        Fault::AnnounceChecksum(Box::leak(wrong_blob.clone().into_boxed_str())),
        1,
    );
    match env.pull("mirror/minilm", "bad", &env.options()) {
        Err(e @ Error::ChecksumMismatch { .. }) => {
            let m = e.to_string();
            assert!(
                m.starts_with("`config.json` of ")
                    && m.contains("its git blob id is ")
                    && m.contains(&format!("the hub announced {wrong_blob} (in ETag)")),
                "{m}"
            );
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    env.assert_nothing_partial("bad", false);

    // With honest headers the next pull succeeds.
    env.pull("mirror/minilm", "bad", &env.options())
        .unwrap()
        .verify()
        .unwrap();
}

#[test]
fn no_checksum_anywhere_is_a_permanent_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = sentence_transformers_repo(dir.path());
    for (fault, says) in [
        (Fault::NoChecksumHeaders, "no X-Linked-Etag or ETag header"),
        // An md5-like tag is no checksum the hub gives.
        (
            Fault::AnnounceChecksum("d41d8cd98f00b204e9800998ecf8427e"),
            "neither a sha256",
        ),
    ] {
        let env = bare_env(&src);
        env.hub.fault("model.safetensors", fault, 100);
        match env.pull("mirror/minilm", "x", &env.options()) {
            Err(e @ Error::NotAHub { .. }) => {
                let m = e.to_string();
                assert!(
                    m.contains("`model.safetensors` of mirror/minilm")
                        && m.contains(says)
                        && m.contains("cannot be verified")
                        && m.contains(&format!("HF_ENDPOINT is {}", env.hub.url)),
                    "{m}"
                );
                let all = format!("{m} {}", e.hint().unwrap_or_default());
                assert!(!all.contains("try again"), "{all}");
            }
            other => panic!("expected a permanent error, got {other:?}"),
        }
        assert!(
            downloads(&env.hub).is_empty(),
            "nothing unverifiable is fetched"
        );
        env.assert_nothing_partial("x", false);
    }
}

#[test]
fn revisions_and_repo_ids_cannot_escape_the_cache() {
    let env = Env::new();
    for bad in [
        "inferox/tiny-bert@../../x",
        "inferox/tiny-bert@a/../../x",
        "inferox/tiny-bert@/etc/passwd",
        "inferox/tiny-bert@-x",
        "inferox/tiny-bert@a b",
        "inferox/tiny-bert@x.lock",
        "inferox/tiny-bert@a//b",
        "inferox/tiny-bert@a\\b",
        "inferox/tiny-bert@a:b",
        "../../x",
        "/etc/x",
        "inferox/..",
        "..\\..\\x",
        "inferox\\tiny-bert",
        "inferox--x/tiny-bert",
    ] {
        match bad.parse::<RepoSpec>() {
            Err(Error::InvalidArgument(m)) => assert!(m.contains('"'), "{bad}: {m}"),
            other => panic!("{bad}: expected InvalidArgument, got {other:?}"),
        }
    }
    // A spec built field by field is checked by pull before any request or path.
    let spec = RepoSpec {
        repo_id: "inferox/tiny-bert".into(),
        revision: "../../x".into(),
    };
    match pull(&spec, &env.dest("esc"), &env.options(), &mut |_| {}) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("\"../../x\""), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let spec = RepoSpec {
        repo_id: "../../x".into(),
        revision: "main".into(),
    };
    assert!(matches!(
        pull(&spec, &env.dest("esc"), &env.options(), &mut |_| {}),
        Err(Error::InvalidArgument(_))
    ));
    assert!(env.hub.log().is_empty(), "{:?}", env.hub.log());
    assert!(!env.cache().exists());

    // The command line refuses it too, with the revision named, and writes nothing.
    let store = env.dir.path().join("store");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_inferox"))
        .args(["pull", "inferox/tiny-bert@../../x"])
        .env("HF_ENDPOINT", &env.hub.url)
        .env("HF_HOME", env.dir.path().join("hf-home"))
        .env("INFEROX_PACKAGES", &store)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("revision \"../../x\""), "{stderr}");
    assert!(!store.exists() && !env.dir.path().join("hf-home").exists());
    assert!(env.hub.log().is_empty());

    // A hub that answers with a commit that is no commit id is refused before it names a path.
    let mut evil = Repo::from_dir(&fixtures().join("bert/bert_gelu_pooler/model"), SHA);
    evil.sha = "../../../escaped".into();
    env.hub.add("inferox/evil", evil);
    match env.pull("inferox/evil", "evil", &env.options()) {
        Err(e @ Error::NotAHub { .. }) => {
            assert!(e.to_string().contains("../../../escaped"), "{e}")
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert!(!env.dir.path().join("escaped").exists());
    assert!(downloads(&env.hub).is_empty());
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_names_the_cache_file_being_written() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let env = Env::new();
    // The weights' partial download is /dev/full, where every write fails with ENOSPC.
    let weights =
        std::fs::read(fixtures().join("bert/bert_gelu_pooler/model/model.safetensors")).unwrap();
    let sha256 = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&weights));
    let blobs = env.cache().join("models--inferox--tiny-bert/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let partial = blobs.join(format!("{sha256}.incomplete"));
    std::os::unix::fs::symlink("/dev/full", &partial).unwrap();
    match env.pull("inferox/tiny-bert", "full", &env.options()) {
        Err(e @ Error::DiskFull { .. }) => {
            let Error::DiskFull { path } = &e else {
                unreachable!()
            };
            assert_eq!(path, &partial);
            let m = e.to_string();
            assert!(
                m.contains(&partial.display().to_string()) && !m.contains("http"),
                "{m}"
            );
            assert!(e.hint().unwrap().contains("HF_HOME"));
        }
        other => panic!("expected DiskFull, got {other:?}"),
    }
    assert!(!env.dest("full").exists());
}
