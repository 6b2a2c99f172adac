//! Helpers shared by the integration tests: the real `urbis` binary, the committed data.
#![allow(dead_code)]

pub mod cluster;
pub mod live;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A committed data file, by path relative to the repository root.
pub fn data(rel: &str) -> PathBuf {
    let p = root().join(rel);
    assert!(p.exists(), "missing test data {}", p.display());
    p
}

/// `urbis serve` on loopback (HTTP, CoAP and CoAPS on free ports) with the store
/// `DIR/urbis-store`, which it fills with the demo layers, and `extra` arguments.
pub fn demo_command(dir: &Path, extra: &[&str]) -> Command {
    let store = dir.join("urbis-store");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_urbis"));
    cmd.args([
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--coap-bind",
        "127.0.0.1:0",
        "--coaps-bind",
        "127.0.0.1:0",
        "--store",
        store.to_str().unwrap(),
    ])
    .args(extra);
    cmd
}

/// Runs `urbis ARGS` and returns its output.
pub fn urbis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_urbis"))
        .args(args)
        .output()
        .expect("run urbis")
}

/// Runs `urbis import FILE --store STORE EXTRA... --json` and returns the parsed JSON.
pub fn import_json(file: &Path, store: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "import",
        file.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = urbis(&args);
    assert!(
        out.status.success(),
        "import of {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("import --json prints JSON")
}

/// Every file name in a directory, sorted, with its bytes; SQLite's journal files of the
/// store's database (`urbis.db-wal`, `urbis.db-shm`), which come and go with its
/// connections, left out.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    !["-wal", "-shm", "-journal"]
                        .iter()
                        .any(|x| n.to_string_lossy().ends_with(x))
                })
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A running `urbis serve` on 127.0.0.1:0, killed when dropped.
pub struct Server {
    /// The child process.
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The CoAP (UDP) address, `127.0.0.1:PORT`.
    pub coap: String,
    /// The CoAP-over-DTLS (UDP) address, when it listens.
    pub coaps: String,
    /// An API key that `get`, `request` and `stream` send (an admin key of the store for
    /// servers started with `--store`; none, anonymous, otherwise until a test sets one).
    pub key: Option<String>,
}

/// Creates an API key of `role` in the store with `urbis keys create`; returns the key.
pub fn api_key(store: &Path, role: &str) -> String {
    let out = urbis(&[
        "keys",
        "create",
        "--role",
        role,
        "--name",
        "tests",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "keys create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(key.starts_with("uk_"), "{key}");
    key
}

impl Server {
    /// Starts `urbis serve --bind 127.0.0.1:0 --no-demo --store STORE EXTRA...` and waits for
    /// its "listening" line.
    pub fn start(store: &Path, extra: &[&str]) -> Server {
        let mut coap: Vec<&str> = Vec::new();
        if !extra.contains(&"--coap-bind") {
            coap.extend(["--coap-bind", "127.0.0.1:0"]);
        }
        if !extra.contains(&"--coaps-bind") {
            coap.extend(["--coaps-bind", "127.0.0.1:0"]);
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_urbis"));
        cmd.args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--no-demo",
            "--store",
            store.to_str().unwrap(),
        ])
        .args(&coap)
        .args(extra);
        Server::spawn(cmd)
    }

    /// Starts a prepared `urbis serve` command (it must print the "listening" line) and waits
    /// for that line.
    pub fn spawn(cmd: Command) -> Server {
        Self::spawn_to(cmd, std::process::Stdio::inherit())
    }

    /// Like [`Server::spawn`], with the server's log (stderr) going to `stderr`; a
    /// `URBIS_LOG` set on the command is kept, else the test's own (`URBIS_LOG=info cargo
    /// test …` to see the servers' info lines), else warnings only.
    pub fn spawn_to(mut cmd: Command, stderr: std::process::Stdio) -> Server {
        use std::io::{BufRead, BufReader};
        // The tests read what an administrator may: an admin key of the store, when the
        // command names it.
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let key = args
            .iter()
            .position(|a| a == "--store")
            .and_then(|i| args.get(i + 1))
            .map(|store| api_key(Path::new(store), "admin"));
        if !cmd.get_envs().any(|(k, _)| k == "URBIS_LOG") {
            cmd.env(
                "URBIS_LOG",
                std::env::var("URBIS_LOG").unwrap_or_else(|_| "warn".into()),
            );
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start urbis serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no listening line from urbis serve: {line:?}"))
            .to_string();
        let coap = line
            .split("udp://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("")
            .to_string();
        let coaps = line
            .split("coaps on udp://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("")
            .to_string();
        Server {
            coaps,
            child,
            base: format!("http://{addr}"),
            addr,
            coap,
            key,
        }
    }

    /// `headers` with the server's key as `Authorization: Bearer`, unless they carry one.
    fn with_key<'a>(
        &'a self,
        headers: &[(&'a str, &'a str)],
        bearer: &'a str,
    ) -> Vec<(&'a str, &'a str)> {
        let mut h = headers.to_vec();
        if self.key.is_some()
            && !h
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            h.push(("Authorization", bearer));
        }
        h
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.key.as_deref().unwrap_or(""))
    }

    /// GET `path` with extra request headers (and the server's key).
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        let b = self.bearer();
        http_get(&self.addr, path, &self.with_key(headers, &b))
    }

    /// GET `path` with no key at all: what anyone may see.
    pub fn get_anonymous(&self, path: &str) -> HttpResponse {
        http_get(&self.addr, path, &[])
    }

    /// GET `path` with API key `key`.
    pub fn get_with(&self, path: &str, key: &str) -> HttpResponse {
        http_get(
            &self.addr,
            path,
            &[("Authorization", &format!("Bearer {key}"))],
        )
    }

    /// A request with a body (and the server's key).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        let b = self.bearer();
        http_request(&self.addr, method, path, &self.with_key(headers, &b), body)
    }

    /// `/stream` (or another event stream) with the server's key.
    pub fn stream(&self, path: &str, headers: &[(&str, &str)]) -> Sse {
        let b = self.bearer();
        Sse::connect(&self.addr, path, &self.with_key(headers, &b))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes (de-chunked, not decompressed).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A minimal HTTP/1.1 GET over a real socket (`Connection: close`), so tests need no client
/// library.
pub fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request(addr, "GET", path, headers, b"")
}

/// A minimal HTTP/1.1 request with a body over a real socket (`Connection: close`).
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    if method != "GET" {
        req += &format!("Content-Length: {}\r\n", body.len());
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + size]);
            rest = &rest[nl + 4 + size..];
        }
        body = out;
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    /// `id:`.
    pub id: Option<String>,
    /// `event:`.
    pub event: String,
    /// `data:` (lines joined).
    pub data: String,
}

impl SseEvent {
    /// The data as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null)
    }
}

/// A Server-Sent Events subscription over a real socket, read by a background thread.
pub struct Sse {
    rx: std::sync::mpsc::Receiver<SseEvent>,
    /// The response status.
    pub status: u16,
    _stream: std::net::TcpStream,
}

impl Sse {
    /// `GET path` with `Accept: text/event-stream` and extra headers.
    pub fn connect(addr: &str, path: &str, headers: &[(&str, &str)]) -> Sse {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            req += &format!("{k}: {v}\r\n");
        }
        req += "\r\n";
        s.write_all(req.as_bytes()).unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut chunked = false;
        loop {
            let mut l = String::new();
            if reader.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                break;
            }
            if l.to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked")
            {
                chunked = true;
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut ev = SseEvent::default();
            loop {
                let mut l = String::new();
                match reader.read_line(&mut l) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let l = l.trim_end_matches(['\r', '\n']);
                // Chunk-size lines of chunked encoding are hex numbers alone on a line.
                if chunked && !l.is_empty() && l.chars().all(|c| c.is_ascii_hexdigit()) {
                    continue;
                }
                if l.is_empty() {
                    if (!ev.event.is_empty() || !ev.data.is_empty())
                        && tx.send(std::mem::take(&mut ev)).is_err()
                    {
                        return;
                    }
                    continue;
                }
                if let Some(v) = l.strip_prefix("id:") {
                    ev.id = Some(v.trim().to_string());
                } else if let Some(v) = l.strip_prefix("event:") {
                    ev.event = v.trim().to_string();
                } else if let Some(v) = l.strip_prefix("data:") {
                    if !ev.data.is_empty() {
                        ev.data.push('\n');
                    }
                    ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
        });
        Sse {
            rx,
            status,
            _stream: s,
        }
    }

    /// The next event, waiting at most `timeout`.
    pub fn next(&self, timeout: std::time::Duration) -> Option<SseEvent> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next event, or whether the wait timed out or the connection ended.
    pub fn recv(
        &self,
        timeout: std::time::Duration,
    ) -> Result<SseEvent, std::sync::mpsc::RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// Events until one satisfies `f` (returned) or `timeout` passes (None).
    pub fn until(
        &self,
        timeout: std::time::Duration,
        mut f: impl FnMut(&SseEvent) -> bool,
    ) -> Option<SseEvent> {
        let end = std::time::Instant::now() + timeout;
        loop {
            let left = end.checked_duration_since(std::time::Instant::now())?;
            let e = self.next(left)?;
            if f(&e) {
                return Some(e);
            }
        }
    }
}

/// Registers a device with `urbis devices add` and returns its secret.
pub fn add_device(store: &Path, id: &str, layer: &str, interval: &str) -> String {
    let out = urbis(&[
        "devices",
        "add",
        id,
        "--store",
        store.to_str().unwrap(),
        "--layer",
        layer,
        "--interval",
        interval,
    ]);
    assert!(
        out.status.success(),
        "devices add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .find(|w| w.starts_with("ds_"))
        .expect("a secret in the output")
        .to_string()
}

/// A webhook receiver: each POST's JSON body goes to the channel; the first `fail_first`
/// requests are answered 503, the others 200.
pub fn webhook(fail_first: usize) -> (String, std::sync::mpsc::Receiver<(u16, serde_json::Value)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut n = 0;
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_err() {
                continue;
            }
            let status = if n < fail_first { 503 } else { 200 };
            n += 1;
            let mut w = conn;
            let _ = write!(
                w,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = tx.send((status, serde_json::from_slice(&body).unwrap_or_default()));
        }
    });
    (url, rx)
}
