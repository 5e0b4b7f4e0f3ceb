//! A Hugging Face hub on 127.0.0.1 for tests: it serves the endpoints inferox uses
//! (`/api/models/{repo}/revision/{rev}` and `/{repo}/resolve/{rev}/{file}`, GET with ranges and
//! HEAD) from in-memory repositories, with the hub's headers (`X-Linked-Etag`/`X-Linked-Size`
//! for LFS files, `ETag` for git files), optionally without `?blobs=true` metadata or with LFS
//! files redirected to a CDN path; it logs every request and injects faults on demand. Only
//! loopback is ever contacted; every request loop is bounded.

use sha2::Digest;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A repository: one commit of files.
#[derive(Clone, Default)]
pub struct Repo {
    pub sha: String,
    pub files: BTreeMap<String, Vec<u8>>,
    /// Token a gated repository requires.
    pub token: Option<String>,
    /// List files by name only (no sizes, `blobId` or `lfs`), as hubs and mirrors that ignore
    /// `?blobs=true` do: checksums are then only in the download's headers.
    pub bare_listing: bool,
    /// Answer downloads of LFS files with a 302 to `/cdn/{repo}/{sha256}`, as the hub does; the
    /// CDN's ETag is no checksum of the file.
    pub redirect_lfs: bool,
}

impl Repo {
    /// A repository of the files of a directory (recursively).
    pub fn from_dir(dir: &std::path::Path, sha: &str) -> Repo {
        let mut files = BTreeMap::new();
        fn walk(
            root: &std::path::Path,
            dir: &std::path::Path,
            files: &mut BTreeMap<String, Vec<u8>>,
        ) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(root, &p, files);
                } else {
                    let rel = p
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/");
                    files.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
        walk(dir, dir, &mut files);
        Repo {
            sha: sha.into(),
            files,
            ..Default::default()
        }
    }
}

/// A fault to inject into matching requests.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status (and `X-Error-Code`).
    Status(u16, &'static str),
    /// Send this many body bytes, then drop the connection.
    DropAfter(usize),
    /// Wait this long before the body.
    Stall(Duration),
    /// Send the body in 64 KiB pieces with this pause between them.
    Throttle(Duration),
    /// Flip one byte of the body.
    Corrupt,
    /// List an extra sibling with this (hostile) name.
    ExtraSibling(&'static str),
    /// Announce this checksum in the download's headers (`X-Linked-Etag` of an LFS file, `ETag`
    /// of a git file) instead of the true one.
    AnnounceChecksum(&'static str),
    /// Send no `X-Linked-Etag` or `ETag` header.
    NoChecksumHeaders,
}

struct Rule {
    path_contains: String,
    fault: Fault,
    times: usize,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    /// `GET` or `HEAD`.
    pub method: String,
    pub path: String,
    pub range_start: u64,
    pub bytes_sent: usize,
}

#[derive(Default)]
struct State {
    repos: BTreeMap<String, Repo>,
    rules: Vec<Rule>,
    log: Vec<Logged>,
}

/// The server; it stops when dropped.
pub struct FakeHub {
    pub url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

/// sha1 of a git blob, the id the hub gives non-LFS files.
fn git_blob_id(data: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(data);
    format!("{:x}", h.finalize())
}

/// Files the hub would store with LFS.
fn is_lfs(name: &str) -> bool {
    [
        ".safetensors",
        ".gguf",
        ".bin",
        ".h5",
        ".onnx",
        ".ot",
        ".msgpack",
    ]
    .iter()
    .any(|x| name.ends_with(x))
}

fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(data))
}

/// The pointer git stores for an LFS file (the hub's ETag of an LFS file is its blob id).
fn lfs_pointer(data: &[u8]) -> Vec<u8> {
    format!(
        "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
        sha256_hex(data),
        data.len()
    )
    .into_bytes()
}

impl FakeHub {
    pub fn start() -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s2, stop2) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let s3 = s2.clone();
                        std::thread::spawn(move || {
                            let _ = serve(stream, &s3);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeHub { url, state, stop }
    }

    pub fn add(&self, id: &str, repo: Repo) {
        self.state.lock().unwrap().repos.insert(id.into(), repo);
    }

    /// Injects `fault` into the next `times` requests whose path contains `path_contains`.
    pub fn fault(&self, path_contains: &str, fault: Fault, times: usize) {
        self.state.lock().unwrap().rules.push(Rule {
            path_contains: path_contains.into(),
            fault,
            times,
        });
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)
}

fn serve(mut stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut words = request_line.split_whitespace();
    let method = words.next().unwrap_or("GET").to_string();
    let path = words.next().unwrap_or("/").to_string();
    let head_only = method == "HEAD";
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_lowercase(), v.trim().to_string());
        }
    }
    let range_start: u64 = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .unwrap_or(0);
    let (fault, repos) = {
        let mut st = state.lock().unwrap();
        let fault = st
            .rules
            .iter_mut()
            .find(|r| r.times > 0 && path.contains(&r.path_contains))
            .map(|r| {
                r.times -= 1;
                r.fault.clone()
            });
        (fault, st.repos.clone())
    };
    let log = |sent: usize| {
        state.lock().unwrap().log.push(Logged {
            method: method.clone(),
            path: path.clone(),
            range_start,
            bytes_sent: sent,
        })
    };
    if let Some(Fault::Status(code, error)) = &fault {
        log(0);
        return respond(
            &mut stream,
            *code,
            &[("X-Error-Code", error.to_string())],
            b"{}",
        );
    }
    let authorized = |repo: &Repo| match &repo.token {
        None => true,
        Some(t) => headers.get("authorization") == Some(&format!("Bearer {t}")),
    };
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let rest = rest.split('?').next().unwrap_or("");
        let Some((id, rev)) = rest.split_once("/revision/") else {
            log(0);
            return respond(&mut stream, 404, &[], b"");
        };
        let Some(repo) = repos.get(id) else {
            log(0);
            return respond(
                &mut stream,
                401,
                &[("X-Error-Code", "RepoNotFound".into())],
                b"{}",
            );
        };
        if !authorized(repo) {
            log(0);
            return respond(
                &mut stream,
                403,
                &[("X-Error-Code", "GatedRepo".into())],
                b"{}",
            );
        }
        if rev != "main" && rev != repo.sha {
            log(0);
            return respond(
                &mut stream,
                404,
                &[("X-Error-Code", "RevisionNotFound".into())],
                b"{}",
            );
        }
        let mut siblings: Vec<serde_json::Value> = repo
            .files
            .iter()
            .map(|(name, data)| {
                if repo.bare_listing {
                    return serde_json::json!({"rfilename": name});
                }
                let mut s = serde_json::json!({"rfilename": name, "size": data.len(), "blobId": git_blob_id(data)});
                if is_lfs(name) {
                    s["lfs"] = serde_json::json!({"sha256": sha256_hex(data), "size": data.len()});
                }
                s
            })
            .collect();
        if let Some(Fault::ExtraSibling(name)) = &fault {
            siblings.push(serde_json::json!({"rfilename": name, "size": 1, "blobId": "00"}));
        }
        let body = serde_json::json!({"id": id, "sha": repo.sha, "siblings": siblings}).to_string();
        log(0);
        return respond(
            &mut stream,
            200,
            &[("Content-Type", "application/json".into())],
            body.as_bytes(),
        );
    }
    // /cdn/{org}/{name}/{sha256}: where LFS downloads are redirected.
    if let Some(rest) = path.strip_prefix("/cdn/") {
        let found = rest.rsplit_once('/').and_then(|(id, sha)| {
            repos
                .get(id)?
                .files
                .values()
                .find(|d| sha256_hex(d) == sha)
                .cloned()
        });
        let Some(data) = found else {
            log(0);
            return respond(&mut stream, 404, &[], b"");
        };
        // A CDN's ETag: an md5-like tag, no checksum the hub announces.
        let headers = vec![("ETag", format!("\"{}\"", &sha256_hex(&data)[..32]))];
        return send_body(
            &mut stream,
            state,
            &path,
            &log,
            &fault,
            &data,
            range_start,
            headers,
            head_only,
        );
    }
    // /{org}/{name}/resolve/{rev}/{file}
    let Some((id, rest)) = path.trim_start_matches('/').split_once("/resolve/") else {
        log(0);
        return respond(&mut stream, 404, &[], b"");
    };
    let Some((_rev, file)) = rest.split_once('/') else {
        log(0);
        return respond(&mut stream, 404, &[], b"");
    };
    let file = file.replace("%20", " ");
    let Some(repo) = repos.get(id) else {
        log(0);
        return respond(
            &mut stream,
            404,
            &[("X-Error-Code", "RepoNotFound".into())],
            b"",
        );
    };
    if !authorized(repo) {
        log(0);
        return respond(
            &mut stream,
            403,
            &[("X-Error-Code", "GatedRepo".into())],
            b"",
        );
    }
    let Some(data) = repo.files.get(&file) else {
        log(0);
        return respond(
            &mut stream,
            404,
            &[("X-Error-Code", "EntryNotFound".into())],
            b"",
        );
    };
    // The hub's headers: an LFS file's sha256 in X-Linked-Etag (its ETag is the pointer's blob
    // id), a git file's blob id in a weak ETag.
    let lfs = is_lfs(&file);
    let mut announced = match &fault {
        Some(Fault::AnnounceChecksum(c)) => c.to_string(),
        _ if lfs => sha256_hex(data),
        _ => git_blob_id(data),
    };
    let mut out = vec![("X-Repo-Commit", repo.sha.clone())];
    if !matches!(fault, Some(Fault::NoChecksumHeaders)) {
        if lfs {
            out.push(("X-Linked-Etag", format!("\"{announced}\"")));
            out.push(("X-Linked-Size", data.len().to_string()));
            announced = git_blob_id(&lfs_pointer(data));
        }
        out.push(("ETag", format!("W/\"{announced}\"")));
    }
    if lfs && repo.redirect_lfs {
        let host = headers.get("host").cloned().unwrap_or_default();
        out.push((
            "Location",
            format!("http://{host}/cdn/{id}/{}", sha256_hex(data)),
        ));
        log(0);
        return respond(&mut stream, 302, &out, b"");
    }
    let data = data.clone();
    send_body(
        &mut stream,
        state,
        &path,
        &log,
        &fault,
        &data,
        range_start,
        out,
        head_only,
    )
}

/// Sends `data` from `range_start` (206 when > 0) with `headers`, applying body faults; only
/// the headers for HEAD.
#[allow(clippy::too_many_arguments)]
fn send_body(
    stream: &mut TcpStream,
    state: &Mutex<State>,
    path: &str,
    log: &dyn Fn(usize),
    fault: &Option<Fault>,
    data: &[u8],
    range_start: u64,
    headers: Vec<(&str, String)>,
    head_only: bool,
) -> std::io::Result<()> {
    let mut body = data[(range_start as usize).min(data.len())..].to_vec();
    if let Some(Fault::Corrupt) = fault
        && !body.is_empty()
    {
        let mid = body.len() / 2;
        body[mid] ^= 0xff;
    }
    let status = if range_start > 0 { 206 } else { 200 };
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len(),
    );
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if range_start > 0 {
        head.push_str(&format!(
            "Content-Range: bytes {range_start}-{}/{}\r\n",
            data.len() - 1,
            data.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if head_only {
        log(0);
        return Ok(());
    }
    let mut sent = 0;
    let result = (|| -> std::io::Result<()> {
        match fault {
            Some(Fault::Stall(d)) => {
                std::thread::sleep(*d);
                stream.write_all(&body)?;
                sent = body.len();
            }
            Some(Fault::DropAfter(n)) => {
                let n = (*n).min(body.len());
                stream.write_all(&body[..n])?;
                sent = n;
                stream.flush()?;
                stream.shutdown(std::net::Shutdown::Both)?;
            }
            Some(Fault::Throttle(pause)) => {
                for chunk in body.chunks(64 << 10) {
                    stream.write_all(chunk)?;
                    sent += chunk.len();
                    stream.flush()?;
                    state.lock().unwrap().log.push(Logged {
                        method: "GET".into(),
                        path: format!("{path} (progress)"),
                        range_start,
                        bytes_sent: sent,
                    });
                    std::thread::sleep(*pause);
                }
            }
            _ => {
                stream.write_all(&body)?;
                sent = body.len();
            }
        }
        Ok(())
    })();
    log(sent);
    result
}
