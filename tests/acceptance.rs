//! `urbis acceptance` against real servers: it passes against the demo server (the README's
//! run command's data, with a device round trip over HTTP and CoAP), and fails naming the
//! check against a server whose layer file the test corrupted (`ready`, naming the layer) and
//! against one whose tiles are slowed by a proxy the test runs in front of it (`latency`).

mod common;

use common::Server;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs `urbis acceptance ARGS --json`; the exit code and the outcomes by check.
fn acceptance(args: &[&str]) -> (i32, Vec<serde_json::Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_urbis"))
        .arg("acceptance")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

fn failed(v: &[serde_json::Value]) -> Vec<String> {
    v.iter()
        .filter(|o| o["ok"] == false)
        .map(|o| o["check"].as_str().unwrap().to_string())
        .collect()
}

fn demo_server(dir: &Path) -> Server {
    Server::spawn(common::demo_command(dir, &[]))
}

/// A proxy to `upstream` that holds every `/tiles/` request for `delay` first; one request per
/// connection (it asks the server to close after answering).
fn slow_proxy(upstream: String, delay: Duration) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for client in l.incoming().flatten() {
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let mut client = client;
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut b).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let mut lines: Vec<&str> = text
                    .split("\r\n")
                    .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("connection:"))
                    .collect();
                let len: usize = lines
                    .iter()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                let mut body = vec![0; len];
                client.read_exact(&mut body).unwrap();
                if lines[0].contains(" /tiles/") {
                    std::thread::sleep(delay);
                }
                lines.push("Connection: close");
                let mut up = TcpStream::connect(&upstream).unwrap();
                up.write_all(format!("{}\r\n\r\n", lines.join("\r\n")).as_bytes())
                    .unwrap();
                up.write_all(&body).unwrap();
                let _ = std::io::copy(&mut up, &mut client);
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn acceptance_passes_against_the_demo_server_and_names_what_fails() {
    let dir = tempfile::tempdir().unwrap();
    let server = demo_server(dir.path());
    let store = dir.path().join("urbis-store");
    let secret = common::add_device(&store, "acc-1", "vehicles", "30s");
    let key = server.key.clone().unwrap();
    // The registry is re-read within a second.
    std::thread::sleep(Duration::from_millis(1500));
    let (code, out) = acceptance(&[
        &server.base,
        "--key",
        &key,
        "--device",
        "acc-1",
        "--secret",
        &secret,
        "--coap",
        &server.coap,
    ]);
    assert_eq!(failed(&out), Vec::<String>::new(), "{out:#?}");
    assert_eq!(code, 0);
    let names: Vec<&str> = out.iter().map(|o| o["check"].as_str().unwrap()).collect();
    for want in [
        "catalog",
        "tilejson:helsinki_lines",
        "tiles:helsinki_lines",
        "tiles:helsinki_points",
        "latency",
        "health",
        "ready",
        "metrics",
        "device:http",
        "device:coap",
        "viewer",
    ] {
        assert!(names.contains(&want), "{want} not checked: {names:?}");
    }
    // The device's reports arrived: two more than before.
    let d = server.get("/devices/acc-1", &[]).json();
    assert_eq!(d["reports"], 2, "{d}");

    // Without a key: the catalog shows the public layers, /metrics needs an administrator.
    let (code, out) = acceptance(&[&server.base]);
    assert_eq!(code, 1);
    assert_eq!(failed(&out), vec!["metrics"], "{out:#?}");
    let m = out.iter().find(|o| o["check"] == "metrics").unwrap();
    assert!(m["detail"].as_str().unwrap().contains("--key"), "{m}");

    // Tiles slowed by 300 ms (a proxy in front): the latency check fails, naming its figures.
    let slow = slow_proxy(server.addr.clone(), Duration::from_millis(300));
    let (code, out) = acceptance(&[&slow, "--key", &key, "--burst", "12"]);
    assert_eq!(code, 1);
    assert_eq!(failed(&out), vec!["latency"], "{out:#?}");
    let l = out.iter().find(|o| o["check"] == "latency").unwrap();
    assert!(
        l["detail"]
            .as_str()
            .unwrap()
            .contains("limits 50/200/500 ms"),
        "{l}"
    );
}

#[test]
fn acceptance_fails_naming_ready_when_a_layer_file_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    common::import_json(
        &common::data("tests/data/montevideo/montevideo.geojson.gz"),
        &store,
        &["--layer", "montevideo", "--classification", "public"],
    );
    common::import_json(
        &common::data("tests/data/naturalearth/naturalearth_lowres/naturalearth_lowres.shp"),
        &store,
        &["--layer", "countries", "--classification", "public"],
    );
    // Flip bytes in the middle of the Montevideo layer file (a disk error, a bad copy).
    let catalog: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("catalog.json")).unwrap()).unwrap();
    let file = catalog["layers"]["montevideo"]["versions"][0]["file"]
        .as_str()
        .unwrap()
        .to_string();
    let path = store.join(&file);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    let server = Server::start(&store, &[]);
    let key = server.key.clone().unwrap();
    let (code, out) = acceptance(&[&server.base, "--key", &key]);
    assert_eq!(code, 1);
    assert!(failed(&out).contains(&"ready".to_string()), "{out:#?}");
    let ready = out.iter().find(|o| o["check"] == "ready").unwrap();
    let detail = ready["detail"].as_str().unwrap();
    assert!(
        detail.contains("layers") && detail.contains("montevideo") && detail.contains("checksum"),
        "{detail}"
    );
    // The layer that is intact passes its own checks.
    assert!(
        out.iter()
            .any(|o| o["check"] == "tiles:countries" && o["ok"] == true),
        "{out:#?}"
    );
}
