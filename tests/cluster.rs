//! Scale-out: three urbis servers in cluster mode on a three-node NATS JetStream cluster
//! (Debian's nats-server), HAProxy (Debian's haproxy) in front, all on loopback. Layers
//! imported through one server are served by all; devices reporting to any server are the
//! same on every one; `kill -9` of a server or of a NATS node loses no acknowledged report;
//! a server started later catches up.

mod common;

use common::cluster::{Haproxy, Nats, server, wait_for, wait_ready};
use common::live::*;
use common::{Server, add_device, http_get, import_json};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const COUNTRIES: &str = "tests/data/naturalearth/naturalearth_lowres/naturalearth_lowres.shp";

/// What must be the same of a device on every server.
fn devices_of(s: &Server) -> BTreeMap<String, String> {
    let list = s.get("/devices?limit=10000", &[]).json();
    list["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no devices list: {list}"))
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                format!(
                    "{} {} {} {}",
                    d["position"], d["t"], d["reports"], d["layer"]
                ),
            )
        })
        .collect()
}

fn tile(s: &Server, path: &str) -> (u16, Vec<u8>) {
    let r = s.get(path, &[]);
    (r.status, r.body)
}

#[test]
fn layers_devices_and_events_are_the_same_through_every_server() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let stores: Vec<_> = ["a", "b", "c"].iter().map(|n| dir.path().join(n)).collect();
    let servers: Vec<Server> = stores.iter().map(|s| server(s, &nats, &[])).collect();
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);

    // A layer imported through A's store is served by B and C within 2 s, byte for byte.
    import_json(Path::new(COUNTRIES), &stores[0], &["--layer", "countries"]);
    let imported = Instant::now();
    let tiles = [
        "/tiles/countries/0/0/0.mvt",
        "/tiles/countries/2/1/1.mvt",
        "/tiles/countries/3/4/2.mvt",
    ];
    let took = wait_for(Duration::from_secs(10), || {
        servers[1..].iter().all(|s| tile(s, tiles[0]).0 == 200)
    })
    .expect("B and C serve the layer imported through A");
    assert!(
        took < Duration::from_secs(2),
        "B and C served the new layer after {took:?} (more than 2 s)"
    );
    for t in tiles {
        let want = tile(a, t);
        assert_eq!(want.0, 200, "{t}");
        assert!(want.1.len() > 100, "{t}");
        for s in &servers[1..] {
            assert!(tile(s, t) == want, "{t} differs on {}", s.base);
        }
    }
    eprintln!(
        "layer served by B and C {:?} after the import ended",
        imported.elapsed().min(took)
    );

    // Devices registered on A's store are known to B and C (the registry is shared).
    let s1 = add_device(&stores[0], "bus-1", "vehicles", "30s");
    let s2 = add_device(&stores[0], "bus-2", "vehicles", "30s");
    wait_for(Duration::from_secs(10), || {
        servers
            .iter()
            .all(|s| s.get("/devices/bus-2", &[]).status == 200)
    })
    .expect("every server knows the devices registered on A");

    // A geofence made through A is on every server before a report is evaluated against it.
    let fence = r#"{"type":"Feature","id":"depot","properties":{"name":"Depot","layers":["vehicles"]},
        "geometry":{"type":"Polygon","coordinates":[[[24.90,60.10],[24.92,60.10],[24.92,60.12],[24.90,60.12],[24.90,60.10]]]}}"#;
    let r = a.request("POST", "/geofences", &[], fence.as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    for s in &servers {
        let g = s.get("/geofences", &[]).json();
        assert!(g.to_string().contains("depot"), "{}: {g}", s.base);
    }
    let on_c = c.stream("/stream", &[]);
    let on_a = a.stream("/stream", &[]);

    // bus-1 over CoAP to A, bus-2 over HTTP to B: into the depot, out, through it, in again.
    let t0 = now() - 300.0;
    let path = [
        (60.09, 24.91),
        (60.11, 24.91),
        (60.11, 24.95),
        (60.11, 24.85),
        (60.115, 24.91),
    ];
    for (i, (lat, lon)) in path.iter().enumerate() {
        let t = t0 + 10.0 * i as f64;
        let body = format!(r#"{{"lat":{lat},"lon":{lon},"t":{t}}}"#);
        coap_client(&a.coap, "bus-1", &s1, 50, &body, true);
        let r = post_json(&b.addr, &format!("Bearer {s2}"), &body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }

    // Every server shows the same devices, and the same live tile.
    let want = devices_of(a);
    assert_eq!(want.len(), 2);
    assert!(
        want["bus-1"].contains("24.91") && want["bus-1"].contains("60.115"),
        "{want:?}"
    );
    for s in &servers[1..] {
        assert_eq!(devices_of(s), want, "{}", s.base);
    }
    let (x, y, _, _) = tile_of(24.91, 60.115, 15);
    let live = format!("/tiles/vehicles/15/{x}/{y}.mvt");
    let want_tile = tile(a, &live);
    assert_eq!(want_tile.0, 200);
    assert_eq!(decode_tile(&want_tile.1, "vehicles").len(), 2);
    for s in &servers[1..] {
        assert!(tile(s, &live) == want_tile, "{live} differs on {}", s.base);
    }

    // C's stream: every report once, in order, the geofence events once; the same ids as A's.
    let collect = |sse: &common::Sse| {
        let mut got = Vec::new();
        while got
            .iter()
            .filter(|(e, _, _): &&(String, String, String)| e == "position")
            .count()
            < 10
            || got.iter().filter(|(e, _, _)| e == "geofence").count() < 8
        {
            let Some(e) = sse.next(Duration::from_secs(10)) else {
                panic!("stream ended early; got {got:#?}");
            };
            if e.event == "position" || e.event == "geofence" {
                got.push((
                    e.event.clone(),
                    e.id.clone().unwrap_or_default(),
                    e.data.clone(),
                ));
            }
        }
        // Nothing more comes (no event twice).
        while let Some(e) = sse.next(Duration::from_millis(500)) {
            if e.event == "position" || e.event == "geofence" {
                got.push((
                    e.event.clone(),
                    e.id.clone().unwrap_or_default(),
                    e.data.clone(),
                ));
            }
        }
        got
    };
    let got_c = collect(&on_c);
    let got_a = collect(&on_a);
    assert_eq!(got_c.len(), 18, "{got_c:#?}");
    let ids: Vec<u64> = got_c.iter().map(|(_, id, _)| id.parse().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing: {ids:?}"
    );
    for dev in ["bus-1", "bus-2"] {
        let ts: Vec<f64> = got_c
            .iter()
            .filter(|(e, _, d)| e == "position" && d.contains(dev))
            .map(|(_, _, d)| {
                serde_json::from_str::<serde_json::Value>(d).unwrap()["t"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        assert_eq!(ts.len(), 5, "{dev}: {ts:?}");
        assert!(
            ts.windows(2).all(|w| w[0] < w[1]),
            "{dev} out of order: {ts:?}"
        );
        let kinds: Vec<String> = got_c
            .iter()
            .filter(|(e, _, d)| e == "geofence" && d.contains(dev))
            .map(|(_, _, d)| {
                serde_json::from_str::<serde_json::Value>(d).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(kinds, ["enter", "exit", "cross", "enter"], "{dev}");
    }
    assert_eq!(got_a, got_c, "A's stream and C's differ");

    // A browser moved from A to C resumes with Last-Event-ID: the events after it, once.
    let resume_at = &got_a[7].1;
    let resumed = c.stream("/stream", &[("Last-Event-ID", resume_at)]);
    let mut after = Vec::new();
    while let Some(e) = resumed.next(Duration::from_millis(1500)) {
        if e.event == "position" || e.event == "geofence" {
            after.push((
                e.event.clone(),
                e.id.clone().unwrap_or_default(),
                e.data.clone(),
            ));
        }
    }
    assert_eq!(after, got_a[8..].to_vec());
}
