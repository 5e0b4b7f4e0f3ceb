//! A Hugging Face hub on 127.0.0.1 for tests: it serves the endpoints inferox uses
//! (`/api/models/{repo}/revision/{rev}` and `/{repo}/resolve/{rev}/{file}` with ranges) from
//! in-memory repositories, logs every request, and injects faults on demand. Only loopback is
//! ever contacted; every request loop is bounded.

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
            token: None,
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
}

struct Rule {
    path_contains: String,
    fault: Fault,
    times: usize,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Logged {
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
    name.ends_with(".safetensors") || name.ends_with(".gguf")
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
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
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
                let mut s = serde_json::json!({"rfilename": name, "size": data.len(), "blobId": git_blob_id(data)});
                if is_lfs(name) {
                    s["lfs"] = serde_json::json!({"sha256": format!("{:x}", sha2::Sha256::digest(data)), "size": data.len()});
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
    let mut body = data[range_start as usize..].to_vec();
    if let Some(Fault::Corrupt) = &fault {
        let mid = body.len() / 2;
        body[mid] ^= 0xff;
    }
    let etag = if is_lfs(&file) {
        format!("{:x}", sha2::Sha256::digest(data))
    } else {
        git_blob_id(data)
    };
    let status = if range_start > 0 { 206 } else { 200 };
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\nX-Repo-Commit: {}\r\nETag: \"{etag}\"\r\n",
        body.len(),
        repo.sha
    );
    if range_start > 0 {
        head.push_str(&format!(
            "Content-Range: bytes {range_start}-{}/{}\r\n",
            data.len() - 1,
            data.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let mut sent = 0;
    let result = (|| -> std::io::Result<()> {
        match &fault {
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
