//! Helpers of the scale-out tests: a three-node NATS JetStream cluster on loopback (Debian's
//! `nats-server`), urbis servers in cluster mode, and HAProxy (Debian's `haproxy`) in front.

use super::Server;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One nats-server of the cluster.
pub struct NatsNode {
    conf: PathBuf,
    /// Client port.
    pub port: u16,
    /// Monitoring port.
    pub http: u16,
    child: Option<Child>,
}

/// Three nats-server processes clustered by routes on loopback, JetStream on.
pub struct Nats {
    /// Its nodes.
    pub nodes: Vec<NatsNode>,
}

impl Nats {
    /// Writes the configuration of three nodes under `dir` and starts them; returns once
    /// each answers its health check with JetStream.
    pub fn start(dir: &Path) -> Nats {
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, _, c)| format!("nats-route://127.0.0.1:{c}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, (port, http, cluster)) in ports.iter().enumerate() {
            let store = dir.join(format!("nats{i}"));
            std::fs::create_dir_all(&store).unwrap();
            let conf = dir.join(format!("nats{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http}\nlog_file: \"{}.log\"\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{ name: urbis, listen: 127.0.0.1:{cluster}, routes: [{}] }}\n",
                    store.display(),
                    store.display(),
                    routes.join(", ")
                ),
            )
            .unwrap();
            nodes.push(NatsNode {
                conf,
                port: *port,
                http: *http,
                child: None,
            });
        }
        let mut n = Nats { nodes };
        for i in 0..3 {
            n.start_node(i);
        }
        for i in 0..3 {
            n.wait_healthy(i);
        }
        n
    }

    /// Starts node `i` (again).
    pub fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&node.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("nats-server not found ({e}): install Debian's nats-server (.ci/run does)")
            });
        node.child = Some(child);
    }

    /// Waits until node `i` says it is healthy with JetStream (up to 30 s).
    pub fn wait_healthy(&self, i: usize) {
        let start = Instant::now();
        let addr = format!("127.0.0.1:{}", self.nodes[i].http);
        loop {
            let ok = std::net::TcpStream::connect(&addr).is_ok()
                && super::http_get(&addr, "/healthz?js-enabled-only=true", &[]).status == 200;
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "nats node {i} not healthy in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -9` of node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The node that leads stream `stream` (its Raft group's leader), as the monitoring
    /// endpoint of a live node says; `None` while it has no leader.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let addr = format!("127.0.0.1:{}", node.http);
            let r = super::http_get(&addr, "/jsz?streams=true", &[]);
            if r.status != 200 {
                continue;
            }
            let j: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            let leader = j["account_details"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
                .find(|d| d["name"] == stream)
                .and_then(|d| d["cluster"]["leader"].as_str().map(str::to_string));
            return leader.and_then(|l| l.strip_prefix('n')?.parse().ok());
        }
        None
    }

    /// The leader elections of every node's log, in time order (for a failing test's
    /// message: when the cluster took how long to recover).
    pub fn elections(&self) -> String {
        let mut lines: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| std::fs::read_to_string(n.conf.with_extension("log")).ok())
            .flat_map(|log| {
                log.lines()
                    .filter(|l| l.contains("leader") && !l.contains("consumer leader"))
                    .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        lines.sort();
        lines.join("\n")
    }

    /// The client URLs, comma-separated (for `--cluster`).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// `urbis serve` in cluster mode on store `store`, with extra flags.
pub fn server(store: &Path, nats: &Nats, extra: &[&str]) -> Server {
    let mut args = vec!["--cluster", "", "--rate-ingest", "0", "--rate-api", "0"];
    let urls = nats.urls();
    args[1] = &urls;
    args.extend_from_slice(extra);
    let s = Server::start(store, &args);
    wait_ready(&s, Duration::from_secs(60));
    s
}

/// Waits until `/ready` answers 200.
pub fn wait_ready(s: &Server, within: Duration) {
    let start = Instant::now();
    loop {
        if super::http_get(&s.addr, "/ready", &[]).status == 200 {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{} not ready: {}",
            s.base,
            String::from_utf8_lossy(&super::http_get(&s.addr, "/ready", &[]).body)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// HAProxy in front of urbis servers: `/stream` on a backend of its own with a long server
/// timeout (Server-Sent Events), everything else balanced round robin; servers checked with
/// `GET /ready`, their sessions cut when they fail it.
pub struct Haproxy {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Haproxy {
    /// Writes `dir/haproxy.cfg` for `backends` (`host:port`) and starts HAProxy.
    pub fn start(dir: &Path, backends: &[&str]) -> Haproxy {
        let port = free_port();
        let servers = |prefix: &str| {
            backends
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    format!(
                        "  server {prefix}{i} {b} check inter 500ms fall 2 rise 2 on-marked-down shutdown-sessions\n"
                    )
                })
                .collect::<String>()
        };
        let cfg = format!(
            "global\n  maxconn 4096\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 1h\n  timeout server 30s\n  \
             option redispatch\n  retries 3\n\
             frontend urbis\n  bind 127.0.0.1:{port}\n  \
             use_backend stream if {{ path_beg /stream }}\n  default_backend api\n\
             backend api\n  balance roundrobin\n  option httpchk\n  http-check send meth GET uri /ready\n{}\
             backend stream\n  balance leastconn\n  timeout server 1h\n  option httpchk\n  http-check send meth GET uri /ready\n{}",
            servers("a"),
            servers("s")
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("haproxy not found ({e}): install Debian's haproxy (.ci/run does)")
            });
        let addr = format!("127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "haproxy did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Haproxy { child, addr }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `f` holds (checked every 50 ms) or `within` passes; returns how long it took.
pub fn wait_for(within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
