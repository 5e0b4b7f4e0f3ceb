//! Mutation loop: small real packages built with the CLI from the fixtures, damaged one file at a
//! time (byte flips, truncations, insertions, extreme numbers in the JSON files, the safetensors
//! header and the GGUF header), then run through `inferox validate`, `inspect` and `run` (or
//! `generate`). Whatever the damage, every command must end by itself with exit code 0 or 1 and
//! an error message, never a panic, a signal or a hang, and a successful `run --json` must print
//! only finite numbers.
//!
//! Deterministic: iteration `i` of a package draws from a ChaCha RNG seeded with (seed, i).
//! `INFEROX_MUTATION_SEED` changes the seed, `INFEROX_MUTATION_ITERS` the number of iterations per
//! package, `INFEROX_MUTATION_SECONDS` the time budget per package (no new iteration starts after
//! it), and `INFEROX_MUTATION_ONLY=PACKAGE:I` reruns one iteration (the failure report prints it).
//! Every failure is collected and reported together, grouped by class.

mod common;

use common::{copy_dir, fixtures};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const DEFAULT_SEED: u64 = 0x1f_e7_0c_5e;
const DEFAULT_ITERS: u64 = 1000;
const DEFAULT_SECONDS: u64 = 45;
/// A command that runs longer than this hangs (the packages are tiny: a healthy run takes well
/// under a second even in a debug build).
const HANG: Duration = Duration::from_secs(20);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How a package is exercised after each mutation.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Encoder,
    Decoder,
}

struct Original {
    name: &'static str,
    kind: Kind,
    dir: PathBuf,
}

/// Imports the packages once (per test binary) with the CLI.
fn originals() -> &'static (tempfile::TempDir, Vec<Original>) {
    static O: OnceLock<(tempfile::TempDir, Vec<Original>)> = OnceLock::new();
    O.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let f = fixtures();
        let sources = [
            ("bert", Kind::Encoder, f.join("bert/bert_gelu_pooler/model")),
            ("gguf", Kind::Decoder, f.join("gguf/qwen2-q8_0.gguf")),
            ("llama", Kind::Decoder, f.join("decoders/llama/model")),
        ];
        let mut out = Vec::new();
        for (name, kind, src) in sources {
            let dir = tmp.path().join(format!("{name}.pkg"));
            let o = Command::new(env!("CARGO_BIN_EXE_inferox"))
                .arg("import")
                .arg(&src)
                .arg("--output")
                .arg(&dir)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "import of {} failed:\n{}",
                src.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            out.push(Original { name, kind, dir });
        }
        (tmp, out)
    })
}

fn original(name: &str) -> &'static Original {
    originals().1.iter().find(|o| o.name == name).unwrap()
}

/// Package-relative paths of every file, sorted.
fn files(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Mutations

/// Values that break code assuming small, positive, finite numbers.
const EXTREME_JSON: &[&str] = &[
    "0",
    "-1",
    "1",
    "4294967296",
    "4294967295",
    "2147483648",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "1e308",
    "-1e308",
    "1e-320",
    "0.5",
    "\"NaN\"",
    "\"Infinity\"",
    "null",
    "[]",
    "{}",
    "true",
];

const EXTREME_STRINGS: &[&str] = &[
    "\"\"",
    "\"../../../../etc/passwd\"",
    "\"/etc/passwd\"",
    "\"a/../../b\"",
    "\"\\u0000\"",
    "\"F64\"",
    "\"Q4_K\"",
    "\"int8\"",
    "\"llama\"",
    "\"gpt2\"",
    "\"bert\"",
    "\"left\"",
    "0",
];

/// Byte ranges of the JSON numbers (or strings) outside/inside strings of `text`.
fn json_tokens(text: &[u8], strings: bool) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        if c == b'"' {
            let start = i;
            i += 1;
            while i < text.len() && text[i] != b'"' {
                if text[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            // A string followed by ':' is a key, not a value.
            let mut j = i;
            while j < text.len() && text[j].is_ascii_whitespace() {
                j += 1;
            }
            if strings && j < text.len() && text[j] != b':' {
                out.push(start..i.min(text.len()));
            }
            continue;
        }
        if !strings && (c == b'-' || c.is_ascii_digit()) {
            let start = i;
            while i < text.len()
                && matches!(text[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            {
                i += 1;
            }
            out.push(start..i);
            continue;
        }
        i += 1;
    }
    out
}

/// Where a file's structured header ends (mutations of weights stay in the header: damaging
/// tensor data is caught only by `validate`'s hashes, and is not what this loop looks for).
fn header_end(rel: &str, bytes: &[u8]) -> usize {
    if rel.ends_with(".safetensors") && bytes.len() >= 8 {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        return usize::try_from(n)
            .unwrap_or(usize::MAX)
            .saturating_add(8)
            .min(bytes.len());
    }
    if rel.ends_with(".gguf") {
        return gguf_slots(bytes).1.min(bytes.len());
    }
    bytes.len()
}

/// A scalar field of a GGUF header: offset, width in bytes, and whether it is a float.
#[derive(Clone, Copy, Debug)]
struct Slot {
    offset: usize,
    width: usize,
    float: bool,
    what: &'static str,
}

/// The numeric fields of a GGUF header (counts, lengths, metadata scalars, tensor dims, types
/// and offsets) and where the header ends.
fn gguf_slots(b: &[u8]) -> (Vec<Slot>, usize) {
    let mut slots = Vec::new();
    let mut p = 4usize;
    let rd = |p: usize, n: usize| -> Option<u64> {
        let s = b.get(p..p.checked_add(n)?)?;
        let mut a = [0u8; 8];
        a[..n].copy_from_slice(s);
        Some(u64::from_le_bytes(a))
    };
    let mut slot = |offset, width, float, what| {
        slots.push(Slot {
            offset,
            width,
            float,
            what,
        })
    };
    slot(p, 4, false, "version");
    p += 4;
    let Some(nt) = rd(p, 8) else {
        return (slots, b.len());
    };
    slot(p, 8, false, "tensor count");
    p += 8;
    let Some(nkv) = rd(p, 8) else {
        return (slots, b.len());
    };
    slot(p, 8, false, "metadata count");
    p += 8;
    fn skip_value(
        b: &[u8],
        p: &mut usize,
        ty: u64,
        depth: usize,
        slot: &mut dyn FnMut(usize, usize, bool, &'static str),
    ) -> Option<()> {
        let rd = |p: usize, n: usize| -> Option<u64> {
            let s = b.get(p..p.checked_add(n)?)?;
            let mut a = [0u8; 8];
            a[..n].copy_from_slice(s);
            Some(u64::from_le_bytes(a))
        };
        let scalar = |ty| match ty {
            0 | 1 | 7 => Some((1, false)),
            2 | 3 => Some((2, false)),
            4 | 5 => Some((4, false)),
            6 => Some((4, true)),
            10 | 11 => Some((8, false)),
            12 => Some((8, true)),
            _ => None,
        };
        if let Some((w, float)) = scalar(ty) {
            if depth == 0 {
                slot(*p, w, float, "metadata value");
            }
            *p += w;
            return Some(());
        }
        match ty {
            8 => {
                let n = rd(*p, 8)?;
                if depth == 0 {
                    slot(*p, 8, false, "string length");
                }
                *p = p.checked_add(8)?.checked_add(usize::try_from(n).ok()?)?;
            }
            9 => {
                let item = rd(*p, 4)?;
                slot(*p, 4, false, "array item type");
                let n = rd(*p + 4, 8)?;
                slot(*p + 4, 8, false, "array length");
                *p += 12;
                for _ in 0..n {
                    skip_value(b, p, item, depth + 1, slot)?;
                    if *p > b.len() {
                        return None;
                    }
                }
            }
            _ => return None,
        }
        Some(())
    }
    for _ in 0..nkv {
        let Some(klen) = rd(p, 8) else {
            return (slots, b.len());
        };
        p = p
            .saturating_add(8)
            .saturating_add(usize::try_from(klen).unwrap_or(usize::MAX));
        let Some(ty) = rd(p, 4) else {
            return (slots, b.len());
        };
        slot(p, 4, false, "metadata type");
        p += 4;
        if skip_value(b, &mut p, ty, 0, &mut slot).is_none() {
            return (slots, b.len());
        }
    }
    for _ in 0..nt {
        let Some(nlen) = rd(p, 8) else {
            return (slots, b.len());
        };
        slot(p, 8, false, "tensor name length");
        p = p
            .saturating_add(8)
            .saturating_add(usize::try_from(nlen).unwrap_or(usize::MAX));
        let Some(nd) = rd(p, 4) else {
            return (slots, b.len());
        };
        slot(p, 4, false, "tensor n_dims");
        p += 4;
        for _ in 0..nd.min(8) {
            slot(p, 8, false, "tensor dim");
            p += 8;
        }
        slot(p, 4, false, "tensor type");
        p += 4;
        slot(p, 8, false, "tensor offset");
        p += 8;
    }
    slots.retain(|s| s.offset.saturating_add(s.width) <= b.len());
    (slots, p.min(b.len()))
}

fn extreme_scalar(rng: &mut ChaCha8Rng, slot: Slot, old: u64) -> (u64, String) {
    if slot.float {
        let v: f64 = *[
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -1.0,
            1e38,
            1e-45,
            1e308,
        ]
        .choose(rng)
        .unwrap();
        return if slot.width == 4 {
            ((v as f32).to_bits() as u64, format!("{v} (f32)"))
        } else {
            (v.to_bits(), format!("{v} (f64)"))
        };
    }
    let max = if slot.width == 8 {
        u64::MAX
    } else {
        (1u64 << (slot.width * 8)) - 1
    };
    let v = *[
        0,
        1,
        max,
        max / 2 + 1,
        1 << 31,
        1 << 32,
        old.wrapping_add(1) & max,
        old.wrapping_sub(1) & max,
        old.wrapping_mul(2) & max,
        old.wrapping_mul(1000) & max,
    ]
    .choose(rng)
    .unwrap()
        & max;
    (v, format!("{v}"))
}

/// Applies one random mutation to a file of `pkg`; returns what it did.
fn mutate(rng: &mut ChaCha8Rng, pkg: &Path) -> (String, String) {
    let all = files(pkg);
    let rel = all.choose(rng).unwrap().clone();
    let path = pkg.join(&rel);
    let mut bytes = std::fs::read(&path).unwrap();
    let end = header_end(&rel, &bytes).max(1);
    let is_json = rel.ends_with(".json");
    let choice = rng.random_range(0..10);
    let what = match choice {
        // Structure-aware mutations: the interesting ones, so they come most often.
        0..=3 if is_json => {
            let strings = choice == 3;
            let tokens = json_tokens(&bytes, strings);
            match tokens.choose(rng) {
                Some(r) => {
                    let new = if strings {
                        EXTREME_STRINGS.choose(rng).unwrap()
                    } else {
                        EXTREME_JSON.choose(rng).unwrap()
                    };
                    let old = String::from_utf8_lossy(&bytes[r.clone()]).into_owned();
                    bytes.splice(r.clone(), new.bytes());
                    format!("JSON value at byte {}: {old} -> {new}", r.start)
                }
                None => {
                    let len = bytes.len();
                    flip(rng, &mut bytes, len)
                }
            }
        }
        0..=4 if rel.ends_with(".safetensors") && end > 8 => {
            // A number of the header's JSON, with the length prefix kept right.
            let header = bytes[8..end].to_vec();
            let tokens = json_tokens(&header, false);
            let Some(r) = tokens.choose(rng).cloned() else {
                let what = flip(rng, &mut bytes, end);
                return finish(&path, &rel, &bytes, what);
            };
            let old_text = String::from_utf8_lossy(&header[r.clone()]).into_owned();
            let old: u64 = old_text.parse().unwrap_or(1);
            let new = [
                "0".to_string(),
                "-1".to_string(),
                (old + 1).to_string(),
                old.saturating_sub(1).to_string(),
                (old * 2).to_string(),
                "4294967296".to_string(),
                "9223372036854775808".to_string(),
                "18446744073709551615".to_string(),
                "18446744073709551616".to_string(),
                "1e308".to_string(),
                "1.5".to_string(),
            ]
            .choose(rng)
            .unwrap()
            .clone();
            let mut new_header = header.clone();
            new_header.splice(r.clone(), new.bytes());
            let mut out = (new_header.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(&new_header);
            out.extend_from_slice(&bytes[end..]);
            bytes = out;
            format!(
                "safetensors header number at byte {}: {old_text} -> {new}",
                8 + r.start
            )
        }
        0..=4 if rel.ends_with(".gguf") => {
            let (slots, _) = gguf_slots(&bytes);
            let Some(&slot) = slots.choose(rng) else {
                let what = flip(rng, &mut bytes, end);
                return finish(&path, &rel, &bytes, what);
            };
            let mut a = [0u8; 8];
            a[..slot.width].copy_from_slice(&bytes[slot.offset..slot.offset + slot.width]);
            let old = u64::from_le_bytes(a);
            let (new, shown) = extreme_scalar(rng, slot, old);
            bytes[slot.offset..slot.offset + slot.width]
                .copy_from_slice(&new.to_le_bytes()[..slot.width]);
            format!(
                "GGUF {} at byte {} ({} bytes): {old} -> {shown}",
                slot.what, slot.offset, slot.width
            )
        }
        0..=6 => flip(rng, &mut bytes, end),
        7 => {
            let at = rng.random_range(0..end.min(bytes.len()).max(1));
            bytes.truncate(at);
            format!("truncated to {at} bytes")
        }
        8 => {
            let at = rng.random_range(0..=end.min(bytes.len()));
            let n = rng.random_range(1..=16);
            let ins: Vec<u8> = if is_json && rng.random_bool(0.5) {
                [",", "{", "}", "[", "]", "\"", ":", "null", "0", "-", "\\u"]
                    .choose(rng)
                    .unwrap()
                    .bytes()
                    .collect()
            } else {
                (0..n).map(|_| rng.random()).collect()
            };
            bytes.splice(at..at, ins.iter().copied());
            format!("inserted {:?} at byte {at}", String::from_utf8_lossy(&ins))
        }
        _ => {
            // Delete a span.
            let at = rng.random_range(0..end.min(bytes.len()).max(1));
            let n = rng.random_range(1..=32).min(bytes.len() - at);
            bytes.drain(at..at + n);
            format!("deleted {n} bytes at {at}")
        }
    };
    finish(&path, &rel, &bytes, what)
}

fn finish(path: &Path, rel: &str, bytes: &[u8], what: String) -> (String, String) {
    std::fs::write(path, bytes).unwrap();
    (rel.to_string(), what)
}

fn flip(rng: &mut ChaCha8Rng, bytes: &mut [u8], end: usize) -> String {
    if bytes.is_empty() {
        return "flip in an empty file (no-op)".into();
    }
    let n = rng.random_range(1..=4);
    let mut at = Vec::new();
    for _ in 0..n {
        let i = rng.random_range(0..end.min(bytes.len()).max(1));
        let bit = 1u8 << rng.random_range(0..8);
        bytes[i] ^= bit;
        at.push(format!("{i}^{bit:#04x}"));
    }
    format!("flipped bits at {}", at.join(", "))
}

/// Records the mutated file's new size and sha256 in metadata.json, so that the damage gets
/// past the size and hash checks to the parsers behind them.
fn resign(pkg: &Path, rel: &str) -> bool {
    if rel == "metadata.json" {
        return false;
    }
    let meta_path = pkg.join("metadata.json");
    let Ok(mut meta) = serde_json::from_slice::<Value>(&std::fs::read(&meta_path).unwrap()) else {
        return false;
    };
    let bytes = std::fs::read(pkg.join(rel)).unwrap();
    let sha = format!("{:x}", Sha256::digest(&bytes));
    let mut found = false;
    if let Some(files) = meta.get_mut("files").and_then(Value::as_array_mut) {
        for f in files {
            if f.get("path").and_then(Value::as_str) == Some(rel) {
                f["size"] = bytes.len().into();
                f["sha256"] = sha.clone().into();
                found = true;
            }
        }
    }
    if found {
        std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Running the CLI

struct Outcome {
    code: Option<i32>,
    signal: Option<i32>,
    hung: bool,
    stdout: String,
    stderr: String,
}

fn run_cli(args: &[&str], scratch: &Path) -> Outcome {
    let out_path = scratch.join("stdout");
    let err_path = scratch.join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_inferox"))
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut hung = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > HANG {
            hung = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    #[cfg(unix)]
    let signal = {
        use std::os::unix::process::ExitStatusExt;
        status.signal()
    };
    #[cfg(not(unix))]
    let signal = None;
    Outcome {
        code: status.code(),
        signal: if hung { None } else { signal },
        hung,
        stdout: String::from_utf8_lossy(&std::fs::read(&out_path).unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&std::fs::read(&err_path).unwrap()).into_owned(),
    }
}

/// Where a JSON document holds a number that is not finite (serde_json writes NaN and infinity
/// as `null`; some writers spell them out as strings).
fn non_finite(v: &Value, path: &mut Vec<String>, found: &mut Vec<String>) {
    match v {
        Value::Null => found.push(format!("null at {}", path.join("."))),
        Value::Number(n) => {
            if n.as_f64().is_some_and(|f| !f.is_finite()) {
                found.push(format!("{n} at {}", path.join(".")));
            }
        }
        Value::String(s) => {
            let l = s.to_ascii_lowercase();
            if matches!(
                l.as_str(),
                "nan" | "inf" | "-inf" | "infinity" | "-infinity"
            ) {
                found.push(format!("{s:?} at {}", path.join(".")));
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                path.push(i.to_string());
                non_finite(x, path, found);
                path.pop();
                if found.len() > 3 {
                    return;
                }
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                path.push(k.clone());
                non_finite(x, path, found);
                path.pop();
            }
        }
        Value::Bool(_) => {}
    }
}

/// The first line that says what went wrong, for grouping failures.
fn gist(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.contains("panicked") || l.contains("internal error"))
        .or_else(|| stderr.lines().find(|l| l.starts_with("error")))
        .unwrap_or("");
    // Drop numbers and paths so that one bug is one class.
    let mut out = String::new();
    let mut last_digit = false;
    for c in line.chars().take(160) {
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('N');
            }
            last_digit = true;
        } else {
            last_digit = false;
            out.push(c);
        }
    }
    out
}

struct Failure {
    class: String,
    report: String,
}

/// Checks one command's outcome; returns the failure class, if any.
fn judge(command: &str, json_out: bool, o: &Outcome) -> Option<String> {
    if o.hung {
        return Some(format!(
            "{command}: hang (killed after {}s)",
            HANG.as_secs()
        ));
    }
    if let Some(sig) = o.signal {
        return Some(format!(
            "{command}: killed by signal {sig} | {}",
            gist(&o.stderr)
        ));
    }
    if o.stderr.contains("panicked") || o.stderr.contains("internal error") {
        return Some(format!("{command}: panic | {}", gist(&o.stderr)));
    }
    match o.code {
        Some(0) => {}
        Some(1) => {
            if !o.stderr.contains("error") {
                return Some(format!("{command}: exit 1 without an error message"));
            }
            return None;
        }
        Some(c) => return Some(format!("{command}: exit code {c} | {}", gist(&o.stderr))),
        None => return Some(format!("{command}: no exit code")),
    }
    if json_out {
        match serde_json::from_str::<Value>(&o.stdout) {
            Err(e) => return Some(format!("{command}: --json output is not JSON ({e})")),
            Ok(v) => {
                let mut found = Vec::new();
                non_finite(&v, &mut Vec::new(), &mut found);
                if let Some(first) = found.first() {
                    let field = first
                        .split(" at ")
                        .nth(1)
                        .unwrap_or("")
                        .split('.')
                        .filter(|s| s.parse::<usize>().is_err())
                        .collect::<Vec<_>>()
                        .join(".");
                    return Some(format!(
                        "{command}: non-finite number in --json output ({field})"
                    ));
                }
            }
        }
    }
    None
}

/// How many runs of each command succeeded and failed cleanly (shows how deep mutations get).
type Tally = BTreeMap<&'static str, (u32, u32)>;

fn iteration(
    name: &str,
    kind: Kind,
    seed: u64,
    i: u64,
    work: &Path,
    tally: &mut Tally,
) -> Vec<Failure> {
    let orig = original(name);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let pkg = work.join(format!("{name}-{i}.pkg"));
    copy_dir(&orig.dir, &pkg);
    let mut mutations = Vec::new();
    let count = if rng.random_bool(0.8) { 1 } else { 2 };
    for _ in 0..count {
        let (rel, what) = mutate(&mut rng, &pkg);
        let resigned = rng.random_bool(0.75) && resign(&pkg, &rel);
        mutations.push(format!(
            "{rel}: {what}{}",
            if resigned {
                " (size and sha256 re-recorded in metadata.json)"
            } else {
                ""
            }
        ));
    }
    let p = pkg.to_str().unwrap();
    let runs: Vec<(&str, Vec<&str>, bool)> = match kind {
        Kind::Encoder => vec![
            ("validate", vec!["validate", p], false),
            ("inspect", vec!["inspect", p, "--json"], false),
            (
                "run",
                vec!["--threads", "1", "run", p, "--text", "hello", "--json"],
                true,
            ),
            (
                "run (batch)",
                vec![
                    "--threads",
                    "1",
                    "run",
                    p,
                    "--text",
                    "hello world",
                    "--text",
                    "a",
                    "--json",
                ],
                true,
            ),
        ],
        Kind::Decoder => vec![
            ("validate", vec!["validate", p], false),
            ("inspect", vec!["inspect", p], false),
            (
                "generate",
                vec![
                    "--threads",
                    "1",
                    "generate",
                    p,
                    "--prompt",
                    "hello",
                    "--max-tokens",
                    "2",
                    "--temperature",
                    "0",
                    "--json",
                ],
                true,
            ),
        ],
    };
    let mut failures = Vec::new();
    for (command, args, json_out) in runs {
        let o = run_cli(&args, work);
        let t = tally.entry(command).or_default();
        match o.code {
            Some(0) => t.0 += 1,
            _ => t.1 += 1,
        }
        if let Some(class) = judge(command, json_out, &o) {
            let stderr: String = o.stderr.chars().take(3000).collect();
            let stdout: String = o.stdout.chars().take(600).collect();
            failures.push(Failure {
                class: format!("[{name}] {class}"),
                report: format!(
                    "package {name}, seed {seed:#x}, iteration {i} \
                     (rerun: INFEROX_MUTATION_SEED={seed} INFEROX_MUTATION_ONLY={name}:{i} \
                     cargo test --test mutation)\n  mutations: {}\n  command: inferox {}\n  \
                     exit: {:?}, signal: {:?}, hung: {}\n  stderr:\n{stderr}\n  stdout:\n{stdout}",
                    mutations.join("; "),
                    args.join(" "),
                    o.code,
                    o.signal,
                    o.hung,
                ),
            });
        }
    }
    if !failures.is_empty()
        && let Some(keep) = std::env::var_os("INFEROX_MUTATION_KEEP")
    {
        let dest = Path::new(&keep).join(format!("{name}-{seed}-{i}.pkg"));
        let _ = std::fs::remove_dir_all(&dest);
        copy_dir(&pkg, &dest);
        eprintln!("kept the failing package as {}", dest.display());
    }
    let _ = std::fs::remove_dir_all(&pkg);
    failures
}

fn mutation_loop(name: &str) {
    let orig = original(name);
    let seed = env_u64("INFEROX_MUTATION_SEED", DEFAULT_SEED);
    let iters = env_u64("INFEROX_MUTATION_ITERS", DEFAULT_ITERS);
    let budget = Duration::from_secs(env_u64("INFEROX_MUTATION_SECONDS", DEFAULT_SECONDS));
    let only: Option<(String, u64)> = std::env::var("INFEROX_MUTATION_ONLY").ok().and_then(|v| {
        let (n, i) = v.split_once(':')?;
        Some((n.to_string(), i.parse().ok()?))
    });
    let work = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let mut failures = Vec::new();
    let mut done = 0;
    let mut tally = Tally::new();
    let range: Vec<u64> = match &only {
        Some((n, i)) if n == name => vec![*i],
        Some(_) => vec![],
        None => (0..iters).collect(),
    };
    for i in range {
        if start.elapsed() > budget {
            break;
        }
        failures.extend(iteration(name, orig.kind, seed, i, work.path(), &mut tally));
        done += 1;
    }
    let tally: Vec<String> = tally
        .iter()
        .map(|(c, (ok, err))| format!("{c} {ok} ok / {err} refused"))
        .collect();
    eprintln!(
        "mutation loop `{name}`: {done} iterations in {:.1}s, {} failures; {}",
        start.elapsed().as_secs_f64(),
        failures.len(),
        tally.join(", ")
    );
    if failures.is_empty() {
        return;
    }
    let mut classes: BTreeMap<&str, Vec<&Failure>> = BTreeMap::new();
    for f in &failures {
        classes.entry(&f.class).or_default().push(f);
    }
    let mut msg = format!(
        "{} failures in {} classes over {done} mutated `{name}` packages:\n",
        failures.len(),
        classes.len()
    );
    for (class, fs) in &classes {
        msg += &format!("  {:>3} × {class}\n", fs.len());
    }
    msg += "\nOne example of each class:\n";
    for (class, fs) in &classes {
        msg += &format!("\n=== {class}\n{}\n", fs[0].report);
    }
    panic!("{msg}");
}

#[test]
fn mutated_bert_packages_fail_cleanly() {
    mutation_loop("bert");
}

#[test]
fn mutated_gguf_packages_fail_cleanly() {
    mutation_loop("gguf");
}

#[test]
fn mutated_llama_packages_fail_cleanly() {
    mutation_loop("llama");
}

#[test]
fn unmutated_packages_pass_every_check() {
    // The loop's oracle on the originals: a clean run, finite JSON.
    let work = tempfile::tempdir().unwrap();
    for orig in &originals().1 {
        let p = orig.dir.to_str().unwrap();
        let runs: Vec<(&str, Vec<&str>, bool)> = match orig.kind {
            Kind::Encoder => vec![
                ("validate", vec!["validate", p], false),
                ("run", vec!["run", p, "--text", "hello", "--json"], true),
            ],
            Kind::Decoder => vec![
                ("validate", vec!["validate", p], false),
                (
                    "generate",
                    vec![
                        "generate",
                        p,
                        "--prompt",
                        "hello",
                        "--max-tokens",
                        "2",
                        "--json",
                    ],
                    true,
                ),
            ],
        };
        for (command, args, json_out) in runs {
            let o = run_cli(&args, work.path());
            assert_eq!(
                judge(command, json_out, &o),
                None,
                "{}: {}",
                orig.name,
                o.stderr
            );
            assert_eq!(o.code, Some(0), "{} {command}: {}", orig.name, o.stderr);
        }
    }
}
