//! Retention deletes exactly the device history older than each live layer's period, and
//! nothing newer: checked through `/devices/{id}/track`, the run's own account, the audit log
//! and a restart.

mod common;

use common::live::*;
use common::{Server, add_device, urbis};

const DAY: f64 = 86_400.0;

fn track_times(server: &Server, id: &str) -> Vec<i64> {
    let j = get_json(server, &format!("/devices/{id}/track?from=0&limit=1000"));
    j["fixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["t"].as_f64().unwrap() as i64)
        .collect()
}

#[test]
fn retention_deletes_exactly_the_history_older_than_each_layers_period() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let st = store.to_str().unwrap();
    add_device(&store, "bus-1", "buses", "1h");
    add_device(&store, "meter-1", "meters", "1h");
    let key = ingest_key(&store, "gw");
    let out = urbis(&[
        "layers",
        "meta",
        "buses",
        "--set",
        "retention=3d",
        "--store",
        st,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // meters has no retention of its own: the server's --retention-days (7) applies.
    let server = Server::start(&store, &["--retention-days", "7"]);
    let now = now().floor();
    // A fence around lon 25: the bus goes in and out, raising an event at each crossing.
    let r = server.request(
        "POST",
        "/geofences",
        &[("Content-Type", "application/json")],
        br#"{"type":"Feature","id":"depot","properties":{"name":"Depot","layers":["buses"]},
            "geometry":{"type":"Polygon","coordinates":[[[24.99,60.1],[25.01,60.1],[25.01,60.2],[24.99,60.2],[24.99,60.1]]]}}"#,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let bus = [
        (now - 10.0 * DAY, 24.90),
        (now - 5.0 * DAY, 25.00),          // enter
        (now - 3.0 * DAY - 3600.0, 24.90), // exit
        (now - 3.0 * DAY + 3600.0, 25.00), // enter
        (now - DAY, 24.90),                // exit
        (now - 10.0, 25.00),               // enter
    ];
    let meter = [now - 10.0 * DAY, now - 6.0 * DAY, now - 5.0 * DAY];
    let mut recs: Vec<String> = bus
        .iter()
        .map(|(t, lon)| format!(r#"{{"device":"bus-1","t":{t},"lon":{lon},"lat":60.15}}"#))
        .collect();
    recs.extend(
        meter
            .iter()
            .map(|t| format!(r#"{{"device":"meter-1","t":{t},"lon":24.5,"lat":60.2}}"#)),
    );
    for r in &recs {
        let resp = post_json(&server.addr, &format!("Bearer {key}"), &format!("[{r}]"));
        assert_eq!(resp.json()["accepted"], 1, "{r}");
    }
    assert_eq!(track_times(&server, "bus-1").len(), 6);

    let r = server.request("POST", "/admin/retention/run", &[], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let s = r.json();
    assert_eq!(s["live"]["buses"]["fixes"], 3, "{s}");
    assert_eq!(
        s["live"]["buses"]["events"], 2,
        "enter at -5d, exit at -3d-1h: {s}"
    );
    assert_eq!(s["live"]["meters"]["fixes"], 1, "{s}");
    let kept: Vec<i64> = bus[3..].iter().map(|(t, _)| *t as i64).collect();
    assert_eq!(
        track_times(&server, "bus-1"),
        kept,
        "exactly the fixes within 3 days"
    );
    assert_eq!(
        track_times(&server, "meter-1"),
        vec![meter[1] as i64, meter[2] as i64],
        "exactly the fixes within 7 days"
    );
    // The current state is untouched.
    assert_eq!(get_json(&server, "/devices/bus-1")["reports"], 6);
    // Each deletion is in the audit log, naming the layer and the cutoff.
    let audit = get_json(&server, "/admin/audit?limit=100");
    let targets: Vec<String> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "retention.delete")
        .map(|e| e["target"].as_str().unwrap().to_string())
        .collect();
    assert!(
        targets
            .iter()
            .any(|t| t.starts_with("buses history before") && t.contains("3 fixes")),
        "{targets:?}"
    );
    // While the server runs, the CLI refuses (one writer of the log) and says what to do.
    let out = urbis(&["retention", "run", "--store", st]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/admin/retention/run"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server); // kill -9

    // After a crash the deletion holds and the state is whole.
    let server = Server::start(&store, &["--retention-days", "7"]);
    assert_eq!(track_times(&server, "bus-1"), kept);
    assert_eq!(get_json(&server, "/devices/bus-1")["reports"], 6);
    drop(server);

    // The CLI, server stopped: meters now keep 4 days, so both remaining fixes go.
    let out = urbis(&[
        "layers",
        "meta",
        "meters",
        "--set",
        "retention=4d",
        "--store",
        st,
    ]);
    assert!(out.status.success());
    let out = urbis(&["retention", "run", "--store", st, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["live"]["meters"]["fixes"], 2, "{s}");
    assert!(
        s["live"].get("buses").is_none(),
        "nothing more of buses: {s}"
    );
    let server = Server::start(&store, &["--retention-days", "7"]);
    assert!(track_times(&server, "meter-1").is_empty());
    assert_eq!(track_times(&server, "bus-1"), kept);
}
