//! `/metrics` is read by a real Prometheus parser (Python `prometheus_client`'s OpenMetrics
//! parser), and its counters move by exactly what the test did: tile requests (misses and
//! cache hits), catalog reads, device reports over HTTP and CoAP (stored and refused); no
//! label value is a raw path, a device id or a key.

mod common;

use common::Server;
use common::live::{coap_client, now, post_json};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Parses an exposition with `prometheus_client.openmetrics.parser`.
fn parse(text: &str) -> Samples {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, json\n\
             from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
             out = []\n\
             for fam in text_string_to_metric_families(sys.stdin.read()):\n\
             \x20   for s in fam.samples:\n\
             \x20       out.append([s.name, s.labels, s.value])\n\
             print(json.dumps(out))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    rows.into_iter().map(|(n, l, v)| ((n, l), v)).collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get(s: &Samples, name: &str, pairs: &[(&str, &str)]) -> f64 {
    s.get(&(name.to_string(), labels(pairs)))
        .copied()
        .unwrap_or(0.0)
}

fn scrape(server: &Server) -> (String, Samples) {
    let r = server.get("/metrics", &[]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        r.header("content-type")
    );
    let text = String::from_utf8(r.body).unwrap();
    let s = parse(&text);
    (text, s)
}

#[test]
fn metrics_count_exactly_what_happened_with_bounded_labels() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    common::import_json(
        &common::data("tests/data/montevideo/montevideo.geojson.gz"),
        &store,
        &["--layer", "montevideo"],
    );
    let secret = common::add_device(&store, "tracker-77", "fleet", "60s");
    // A free port for the scrape listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let scrape_addr = format!("127.0.0.1:{port}");
    let server = Server::start(&store, &["--metrics-bind", &scrape_addr]);

    let (_, before) = scrape(&server);
    let tile = "/tiles/montevideo/14/5634/9889.mvt";
    for _ in 0..3 {
        assert_eq!(server.get(tile, &[]).status, 200);
    }
    assert_eq!(server.get("/catalog", &[]).status, 200);
    let auth = format!("Bearer {secret}");
    for i in 0..2 {
        let body = format!(
            r#"{{"lat":-34.9,"lon":-56.16,"t":{}}}"#,
            now() - 10.0 + f64::from(i)
        );
        assert_eq!(post_json(&server.addr, &auth, &body).status, 200);
    }
    assert_eq!(
        post_json(&server.addr, "Bearer ds_wrong", r#"{"lat":1,"lon":2}"#).status,
        401
    );
    coap_client(
        &server.coap,
        "tracker-77",
        &secret,
        50,
        r#"{"lat":-34.91,"lon":-56.17}"#,
        true,
    );

    let (text, after) = scrape(&server);
    let delta =
        |name: &str, pairs: &[(&str, &str)]| get(&after, name, pairs) - get(&before, name, pairs);
    let tiles = [
        ("method", "GET"),
        ("route", "/tiles/{layers}/{z}/{x}/{y}"),
        ("status", "2xx"),
    ];
    assert_eq!(delta("urbis_http_requests_total", &tiles), 3.0, "{text}");
    assert_eq!(
        delta("urbis_http_request_duration_seconds_count", &tiles),
        3.0
    );
    assert_eq!(
        delta(
            "urbis_http_requests_total",
            &[("method", "GET"), ("route", "/catalog"), ("status", "2xx")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "urbis_http_requests_total",
            &[("method", "POST"), ("route", "/ingest"), ("status", "2xx")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "urbis_http_requests_total",
            &[("method", "POST"), ("route", "/ingest"), ("status", "4xx")]
        ),
        1.0
    );
    // The first request made the tile, the two others came from the cache.
    assert_eq!(delta("urbis_tile_cache_misses_total", &[]), 1.0);
    assert_eq!(delta("urbis_tile_cache_hits_total", &[]), 2.0);
    let made = [("layer", "montevideo"), ("zoom", "13-14")];
    assert_eq!(
        delta("urbis_tile_generation_duration_seconds_count", &made),
        1.0
    );
    assert_eq!(delta("urbis_tile_size_bytes_count", &made), 1.0);
    assert!(get(&after, "urbis_tile_size_bytes_sum", &made) > 1000.0);
    assert!(get(&after, "urbis_tile_cache_size_bytes", &[]) > 1000.0);
    // Reports: two over HTTP and one over CoAP stored, one refused.
    let payloads = |p: &str, o: &str| {
        delta(
            "urbis_ingest_payloads_total",
            &[("protocol", p), ("outcome", o)],
        )
    };
    assert_eq!(payloads("http", "accepted"), 2.0, "{text}");
    assert_eq!(payloads("http", "refused"), 1.0);
    assert_eq!(payloads("coap", "accepted"), 1.0, "{text}");
    assert_eq!(
        delta("urbis_ingest_records_total", &[("protocol", "http")]),
        2.0
    );
    assert_eq!(
        delta("urbis_ingest_records_total", &[("protocol", "coap")]),
        1.0
    );
    assert!(delta("urbis_log_sync_duration_seconds_count", &[]) >= 2.0);
    assert!(delta("urbis_report_stream_lag_seconds_count", &[]) >= 2.0);
    assert_eq!(
        get(
            &after,
            "urbis_devices",
            &[("layer", "fleet"), ("state", "live")]
        ),
        1.0,
        "{text}"
    );
    assert!(get(&after, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(get(&after, "process_open_fds", &[]) > 3.0);
    // Bounded labels only: no raw path, device id or key anywhere in the exposition.
    for needle in ["5634/9889", "tracker-77", &secret, "ds_wrong"] {
        assert!(!text.contains(needle), "{needle} in the exposition");
    }
    for (_, l) in after.keys() {
        if let Some(route) = l.get("route") {
            assert!(
                route == "unmatched"
                    || route.starts_with('/') && !route.chars().any(|c| c.is_ascii_digit()),
                "route label {route}"
            );
        }
    }

    // Anonymous callers get no metrics on the main listener; the scrape listener needs no key.
    assert_eq!(server.get_anonymous("/metrics").status, 401);
    let r = common::http_get(&scrape_addr, "/metrics", &[]);
    assert_eq!(r.status, 200);
    let s = parse(&String::from_utf8(r.body).unwrap());
    assert!(get(&s, "urbis_tile_cache_hits_total", &[]) >= 2.0);
}

/// `/ready` names the log check when the log's directory cannot be written, and recovers.
/// Permissions do not bind root: run as root (as CI does), the test starts the server as
/// `nobody` with util-linux's `setpriv`, on a store that user owns.
#[test]
fn ready_names_the_log_check_when_its_directory_is_unwritable_and_recovers() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    common::add_device(&store, "meter-1", "meters", "1h");
    let root = unsafe { libc::geteuid() } == 0;
    let exe = env!("CARGO_BIN_EXE_urbis");
    let mut cmd = if root {
        // nobody must reach the store through the temporary directory's parents.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let st = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&store)
            .status()
            .unwrap();
        assert!(st.success());
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            exe,
        ]);
        c
    } else {
        Command::new(exe)
    };
    cmd.args([
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--coap-bind",
        "127.0.0.1:0",
        "--coaps-bind",
        "127.0.0.1:0",
        "--no-demo",
        "--store",
    ])
    .arg(&store);
    let server = Server::spawn(cmd);
    let ready = common::http_get(&server.addr, "/ready", &[]);
    assert_eq!(
        ready.status,
        200,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    let names: Vec<String> = ready.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["store", "layers", "log", "listeners", "catalog_refresh"]
    );

    let live = store.join("live");
    std::fs::set_permissions(&live, std::fs::Permissions::from_mode(0o555)).unwrap();
    let ready = common::http_get(&server.addr, "/ready", &[]);
    let body = ready.json();
    assert_eq!(ready.status, 503, "{body}");
    assert_eq!(body["failed"], serde_json::json!(["log"]), "{body}");
    assert!(
        body["checks"][2]["detail"]
            .as_str()
            .unwrap()
            .contains("cannot create a file in"),
        "{body}"
    );
    std::fs::set_permissions(&live, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ready = common::http_get(&server.addr, "/ready", &[]);
    assert_eq!(
        ready.status,
        200,
        "recovers: {}",
        String::from_utf8_lossy(&ready.body)
    );
}

/// `--log-format json`: every line is a JSON object; a request's lines carry its id (the
/// client's `x-request-id`, echoed, or a new one); a slow tile is a warning naming its layer,
/// z/x/y and milliseconds; a key sent in the query string appears in no line.
#[test]
fn json_logs_carry_the_request_id_name_slow_tiles_and_never_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    common::import_json(
        &common::data("tests/data/montevideo/montevideo.geojson.gz"),
        &store,
        &["--layer", "montevideo"],
    );
    let key = common::api_key(&store, "admin");
    let log = dir.path().join("serve.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_urbis"));
    cmd.args([
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--coap-bind",
        "127.0.0.1:0",
        "--coaps-bind",
        "127.0.0.1:0",
        "--no-demo",
        "--log-format",
        "json",
        "--slow-tile-ms",
        "0",
        "--store",
    ])
    .arg(&store)
    .env("URBIS_LOG", "debug");
    let server = Server::spawn_to(cmd, std::fs::File::create(&log).unwrap().into());
    let auth = format!("Bearer {key}");
    let r = common::http_get(
        &server.addr,
        "/tiles/montevideo/14/5634/9889.mvt",
        &[("x-request-id", "test-req-42"), ("Authorization", &auth)],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("test-req-42"));
    let r = common::http_get(&server.addr, &format!("/catalog?key={key}"), &[]);
    assert_eq!(r.status, 200);
    let generated = r.header("x-request-id").unwrap().to_string();
    assert_eq!(generated.len(), 16, "{generated}");
    assert!(generated.bytes().all(|c| c.is_ascii_hexdigit()));
    // A request id that is not a short token is replaced.
    let r = common::http_get(&server.addr, "/health", &[("x-request-id", "a b\"c")]);
    assert_ne!(r.header("x-request-id"), Some("a b\"c"));

    std::thread::sleep(std::time::Duration::from_millis(300));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of = |id: &str| -> Vec<&serde_json::Value> {
        lines.iter().filter(|l| l["span"]["id"] == id).collect()
    };
    let slow: Vec<_> = of("test-req-42")
        .into_iter()
        .filter(|l| l["fields"]["message"] == "slow tile")
        .collect();
    assert_eq!(slow.len(), 1, "{text}");
    let f = &slow[0]["fields"];
    assert_eq!(slow[0]["level"], "WARN");
    assert_eq!(f["layer"], "montevideo");
    assert_eq!(
        (f["z"].as_u64(), f["x"].as_u64(), f["y"].as_u64()),
        (Some(14), Some(5634), Some(9889))
    );
    assert!(f["ms"].as_u64().is_some(), "{f}");
    let answered: Vec<_> = of(&generated)
        .into_iter()
        .filter(|l| l["fields"]["message"] == "answered")
        .collect();
    assert_eq!(answered.len(), 1, "{text}");
    assert_eq!(answered[0]["fields"]["path"], "/catalog");
    assert_eq!(answered[0]["fields"]["status"], 200);
    assert!(!text.contains(&key), "the key is in the log");
}
