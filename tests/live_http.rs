//! Live devices over HTTP: ingest batches with per-record errors, geofence events, `/stream`
//! read as Server-Sent Events with `Last-Event-ID` resume, and a slow stream client cut off
//! while ingest goes on.

mod common;

use common::live::*;
use common::{Server, add_device, http_request};
use std::time::{Duration, Instant};

#[test]
fn http_batches_geofence_events_and_stream_resume() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s1 = add_device(&store, "bus-1", "vehicles", "30s");
    add_device(&store, "bus-2", "vehicles", "30s");
    let key = ingest_key(&store, "gw");
    let server = Server::start(&store, &[]);
    let auth = format!("Bearer {key}");
    let ingest = |body: &str, auth: &str| post_json(&server.addr, auth, body);

    // A fence around a square in Helsinki, for the vehicles layer.
    let fence = r#"{"type":"Feature","id":"depot","properties":{"name":"Depot","layers":["vehicles"]},
        "geometry":{"type":"Polygon","coordinates":[[[24.90,60.10],[24.92,60.10],[24.92,60.12],[24.90,60.12],[24.90,60.10]]]}}"#;
    let r = server.request("POST", "/geofences", &[], fence.as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let stream = server.stream("/stream", &[]);

    let t0 = now() - 100.0;
    // outside -> inside (enter) -> outside (exit) -> through (cross), plus bad records.
    let batch = format!(
        r#"[{{"device":"bus-1","lat":60.09,"lon":24.91,"t":{a}}},
            {{"device":"bus-1","lat":60.11,"lon":24.91,"t":{b}}},
            {{"device":"nobody","lat":60.11,"lon":24.91}},
            {{"device":"bus-1","lat":60.11,"lon":24.95,"t":{c}}},
            {{"device":"bus-2","lat":91,"lon":24.91}},
            {{"device":"bus-1","lat":60.11,"lon":24.85,"t":{d}}}]"#,
        a = t0,
        b = t0 + 10.0,
        c = t0 + 20.0,
        d = t0 + 30.0
    );
    let r = ingest(&batch, &auth);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["accepted"], 4);
    assert_eq!(j["rejected"], 2);
    let errs: Vec<u64> = j["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["record"].as_u64().unwrap())
        .collect();
    assert_eq!(errs, vec![2, 4]);

    let mut kinds = Vec::new();
    let mut ids = Vec::new();
    while kinds.len() < 3 {
        let e = stream
            .until(Duration::from_secs(5), |e| e.event == "geofence")
            .unwrap_or_else(|| panic!("missing geofence events; got {kinds:?}"));
        let d = e.json();
        assert_eq!(d["fence"], "depot");
        assert_eq!(d["device"], "bus-1");
        kinds.push(d["kind"].as_str().unwrap().to_string());
        ids.push(e.id.clone().unwrap());
    }
    assert_eq!(kinds, ["enter", "exit", "cross"]);

    // Resume after the first geofence event: the later ones are replayed.
    let resumed = server.stream("/stream", &[("Last-Event-ID", &ids[0])]);
    let mut again = Vec::new();
    while again.len() < 2 {
        let e = resumed
            .until(Duration::from_secs(5), |e| e.event == "geofence")
            .expect("replayed events");
        again.push(e.json()["kind"].as_str().unwrap().to_string());
    }
    assert_eq!(again, ["exit", "cross"]);

    // A late fix goes to history, flagged, and does not move the device.
    let r = ingest(
        &format!(
            r#"{{"device":"bus-1","lat":60.5,"lon":25.0,"t":{}}}"#,
            t0 + 5.0
        ),
        &auth,
    );
    assert_eq!(r.status, 200);
    let d = server.get("/devices/bus-1", &[]).json();
    assert_eq!(d["position"], serde_json::json!([24.85, 60.11]));
    assert_eq!(d["late_reports"], 1);
    let tr = server
        .get(&format!("/devices/bus-1/track?from={}", t0 - 1.0), &[])
        .json();
    let fixes = tr["fixes"].as_array().unwrap();
    assert_eq!(fixes.len(), 5);
    assert_eq!(fixes.iter().filter(|f| f["late"] == true).count(), 1);

    // Credentials: none, unknown, and a device secret used for another device.
    assert_eq!(ingest("[]", "Bearer ik_nope").status, 401);
    let r = http_request(&server.addr, "POST", "/ingest", &[], b"{}");
    assert_eq!(r.status, 401);
    let r = ingest(
        r#"[{"device":"bus-2","lat":60.1,"lon":24.9}]"#,
        &format!("Bearer {s1}"),
    );
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("belongs to bus-1"));
    // A device posting its own SenML with its secret.
    let r = http_request(
        &server.addr,
        "POST",
        "/ingest",
        &[
            ("Authorization", &format!("Bearer {s1}")),
            ("Content-Type", "application/senml+json"),
        ],
        br#"[{"n":"lat","v":60.2},{"n":"lon","v":24.8}]"#,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Garbage bodies are 400 with a reason, never a crash.
    let r = ingest("[{\"device\":", &auth);
    assert_eq!(r.status, 400);
    assert_eq!(server.get("/ready", &[]).status, 200);

    // Geofences list and delete.
    let fc = server.get("/geofences", &[]).json();
    assert_eq!(fc["features"][0]["id"], "depot");
    assert_eq!(
        server
            .request("DELETE", "/geofences/depot", &[], b"")
            .status,
        204
    );
    assert_eq!(
        server
            .request("DELETE", "/geofences/depot", &[], b"")
            .status,
        404
    );
}

#[test]
fn a_stream_client_that_stops_reading_is_cut_off_and_ingest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let secret = add_device(&store, "t-1", "fleet", "1m");
    let server = Server::start(&store, &[]);
    // A subscriber that reads nothing for a while.
    let mut slow = std::net::TcpStream::connect(&server.addr).unwrap();
    std::io::Write::write_all(
        &mut slow,
        format!(
            "GET /stream HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            server.addr,
            server.key.as_deref().unwrap()
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t0 = now() - 5000.0;
    let started = Instant::now();
    for batch in 0..4 {
        let body: Vec<String> = (0..10_000)
            .map(|i| {
                let n = batch * 10_000 + i;
                format!(
                    r#"{{"lat":60.1,"lon":24.9,"t":{},"pad":{n}}}"#,
                    t0 + n as f64 * 0.01
                )
            })
            .collect();
        let r = post_json(
            &server.addr,
            &format!("Bearer {secret}"),
            &format!("[{}]", body.join(",")),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "ingest was held up by a stalled subscriber"
    );
    let d = server.get("/devices/t-1", &[]).json();
    assert_eq!(d["reports"], 40_000);
    // Now read: the backlog ends with a cutoff event, and the server closes the stream.
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut all = Vec::new();
    let _ = std::io::Read::read_to_end(&mut slow, &mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.contains("event: cutoff"),
        "a stalled client must get a final cutoff event ({} bytes read)",
        all.len()
    );
    assert!(
        text.matches("event: position").count() < 40_000,
        "the stalled client was not cut off"
    );
}
