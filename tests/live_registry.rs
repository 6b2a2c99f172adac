//! The device registry seen by a running server: a removed device leaves the state, the
//! live tiles and the stream, and a name registered again starts afresh.

mod common;

use common::live::*;
use common::{Server, add_device, urbis};
use std::time::{Duration, Instant};

#[test]
fn a_removed_device_leaves_state_tiles_and_stream_and_its_name_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let st = store.to_str().unwrap();
    add_device(&store, "bus-1", "vehicles", "30s");
    add_device(&store, "bus-2", "vehicles", "30s");
    // Keeps the vehicles layer registered when the other two have left it.
    add_device(&store, "bus-3", "vehicles", "30s");
    let key = ingest_key(&store, "gw");
    let auth = format!("Bearer {key}");
    let mut server = Server::start(&store, &[]);
    let ingest = |server: &Server, body: &str| {
        let r = post_json(&server.addr, &auth, body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    };
    let stream = server.stream("/stream", &[]);
    let (p1, p2) = ([24.9401, 60.1702], [24.9444, 60.1688]);
    let j = ingest(
        &server,
        &format!(
            r#"[{{"device":"bus-1","lon":{},"lat":{}}},{{"device":"bus-2","lon":{},"lat":{}}}]"#,
            p1[0], p1[1], p2[0], p2[1]
        ),
    );
    assert_eq!(j["accepted"], 2);
    let in_tile = |server: &Server, id: &str, p: [f64; 2]| {
        let (x, y, _, _) = tile_of(p[0], p[1], 16);
        let r = server.get(&format!("/tiles/vehicles/16/{x}/{y}.mvt"), &[]);
        if r.status == 204 {
            return false; // an empty tile
        }
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        decode_tile(&r.body, "vehicles")
            .iter()
            .any(|f| f["properties"]["id"] == id)
    };
    assert!(in_tile(&server, "bus-1", p1), "bus-1 drawn before removal");

    // Removed: announced on the stream, gone from /devices and from the (cached) tile.
    let rm = urbis(&["devices", "rm", "bus-1", "--store", st]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    let e = stream
        .until(Duration::from_secs(5), |e| e.event == "removed")
        .expect("a removed event within 5 s of `devices rm`");
    let d = e.json();
    assert_eq!(
        (&d["id"], &d["layer"], &d["position"]),
        (
            &serde_json::json!("bus-1"),
            &serde_json::json!("vehicles"),
            &serde_json::json!(p1)
        ),
        "{d}"
    );
    assert_eq!(
        d["layer_gone"], false,
        "bus-2 and bus-3 are still on vehicles: {d}"
    );
    let removed_id: u64 = e.id.as_deref().unwrap().parse().unwrap();
    assert_eq!(server.get("/devices/bus-1", &[]).status, 404);
    assert!(!in_tile(&server, "bus-1", p1), "bus-1 still in its tile");
    assert!(in_tile(&server, "bus-2", p2), "bus-2 stays");
    // A client resuming from before the removal hears of it.
    let resumed = server.stream(
        "/stream",
        &[("Last-Event-ID", &(removed_id - 1).to_string())],
    );
    let again = resumed
        .until(Duration::from_secs(5), |e| e.event == "removed")
        .expect("the removal replayed");
    assert_eq!(again.id, e.id);

    // bus-2 removed and registered again on another layer (a new device under an old name):
    // it starts afresh there and its old fix leaves the vehicles layer.
    assert!(
        urbis(&["devices", "rm", "bus-2", "--store", st])
            .status
            .success()
    );
    let new_secret = add_device(&store, "bus-2", "trucks", "30s");
    let e = stream
        .until(Duration::from_secs(5), |e| e.event == "removed")
        .expect("bus-2's removal on the stream");
    assert_eq!(e.json()["id"], "bus-2");
    assert_eq!(e.json()["layer"], "vehicles");
    let deadline = Instant::now() + Duration::from_secs(5);
    let fresh = loop {
        let r = server.get("/devices/bus-2", &[]);
        if r.status == 200 && r.json()["layer"] == "trucks" {
            break r.json();
        }
        assert!(Instant::now() < deadline, "bus-2 never moved to trucks");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(fresh["state"], "new", "{fresh}");
    assert_eq!(fresh["position"], serde_json::Value::Null, "{fresh}");
    assert_eq!(fresh["reports"], 0, "{fresh}");
    assert!(
        !in_tile(&server, "bus-2", p2),
        "bus-2's old fix left vehicles"
    );
    let p3 = [24.9502, 60.1671];
    let r = post_json(
        &server.addr,
        &format!("Bearer {new_secret}"),
        &format!(r#"{{"lon":{},"lat":{}}}"#, p3[0], p3[1]),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Its history starts at the new registration.
    let tr = server.get("/devices/bus-2/track?from=0", &[]).json();
    let fixes: Vec<&serde_json::Value> = tr["fixes"].as_array().unwrap().iter().collect();
    assert_eq!(fixes.len(), 1, "{tr}");
    assert_eq!(fixes[0]["position"], serde_json::json!(p3), "{tr}");

    // The same after a crash: replaying the log (removals included) rebuilds this state.
    let _ = server.child.kill();
    let _ = server.child.wait();
    server = Server::start(&store, &[]);
    assert_eq!(server.get("/devices/bus-1", &[]).status, 404);
    let d = server.get("/devices/bus-2", &[]).json();
    assert_eq!(
        (&d["layer"], &d["position"], &d["reports"]),
        (
            &serde_json::json!("trucks"),
            &serde_json::json!(p3),
            &serde_json::json!(1)
        ),
        "{d}"
    );

    // The last device of a layer removed: the event says the layer is gone, and so it is.
    let stream = server.stream("/stream", &[]);
    assert!(
        urbis(&["devices", "rm", "bus-2", "--store", st])
            .status
            .success()
    );
    let e = stream
        .until(Duration::from_secs(5), |e| e.event == "removed")
        .expect("bus-2's removal after the restart");
    let d = e.json();
    assert_eq!(
        (&d["layer"], &d["layer_gone"]),
        (&serde_json::json!("trucks"), &serde_json::json!(true)),
        "{d}"
    );
    let catalog = server.get("/catalog", &[]).json();
    let names: Vec<&str> = catalog["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert!(
        names.contains(&"vehicles") && !names.contains(&"trucks"),
        "{names:?}"
    );
}
