//! `urbis simulate` against the demo server: its fleet appears on the big screen (Debian's
//! Chromium: the device count reaches the fleet's size and markers move), and every report it
//! saw acknowledged is counted in `/metrics`, exactly.

mod common;

use common::{Server, root};
use std::path::Path;
use std::process::{Command, Stdio};

#[test]
fn the_simulated_fleet_shows_on_the_big_screen_and_in_the_metrics() {
    let browser = root().join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").exists(),
        "playwright-core in tests/browser (`bash .ci/run` installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("urbis-store");
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
    ]);
    let server = Server::spawn(cmd);
    let key = server.key.clone().unwrap();
    let devices = 20;
    // The README's one extra command, pointed at this server: devices registered in its
    // store, driving along the demo's streets.
    let sim = Command::new(env!("CARGO_BIN_EXE_urbis"))
        .args([
            "simulate",
            "--server",
            &server.base,
            "--coap",
            &server.coap,
            "--store",
            store.to_str().unwrap(),
            "--devices",
            &devices.to_string(),
            "--interval",
            "1s",
            "--duration",
            "40s",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out_file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("simulate-big-screen.png");
    let page = Command::new("node")
        .arg(browser.join("simulate.mjs"))
        .args([&server.base, &key, "fleet", &devices.to_string()])
        .env("OUT_FILE", &out_file)
        .output()
        .unwrap();
    let sim = sim.wait_with_output().unwrap();
    assert!(
        sim.status.success(),
        "simulate: {}",
        String::from_utf8_lossy(&sim.stderr)
    );
    assert!(
        page.status.success(),
        "the big screen: {}{}",
        String::from_utf8_lossy(&page.stdout),
        String::from_utf8_lossy(&page.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(page.stdout.trim_ascii()).unwrap();
    assert_eq!(seen["shown"], devices);
    assert!(seen["moved"].as_u64().unwrap() >= 1, "{seen}");

    let summary: serde_json::Value = serde_json::from_slice(sim.stdout.trim_ascii()).unwrap();
    let acked = summary["acknowledged"].as_u64().unwrap();
    assert!(acked >= 200, "{summary}");
    assert_eq!(summary["refused"], 0, "{summary}");
    assert_eq!(summary["unanswered"], 0, "{summary}");
    assert_eq!(summary["sent"], acked);
    let metrics = String::from_utf8(server.get("/metrics", &[]).body).unwrap();
    let line =
        format!(r#"urbis_ingest_payloads_total{{protocol="coap",outcome="accepted"}} {acked}"#);
    assert!(
        metrics.lines().any(|l| l == line),
        "{line} not in the metrics: {}",
        metrics
            .lines()
            .filter(|l| l.contains("ingest"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The devices and their secrets stay for the next run.
    let csv = std::fs::read_to_string(dir.path().join("simulate-fleet.csv")).unwrap();
    assert_eq!(csv.lines().count(), devices);
    assert!(csv.starts_with("sim-00001,ds_"), "{csv}");
}
