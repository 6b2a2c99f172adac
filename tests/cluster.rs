//! Scale-out: three urbis servers in cluster mode on a three-node NATS JetStream cluster
//! (Debian's nats-server), HAProxy (Debian's haproxy) in front, all on loopback. Layers
//! imported through one server are served by all; devices reporting to any server are the
//! same on every one; `kill -9` of a server or of a NATS node loses no acknowledged report;
//! a server started later catches up; a device reporting the moment it is registered is
//! applied by every server; an alert over the shared state reaches the webhook once, not
//! once per server.

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
const CITIES: &str = "tests/data/naturalearth/naturalearth_cities/naturalearth_cities.shp";

/// The tests of this file one at a time: each runs three NATS nodes and three servers, and
/// two at once on a 2-core machine make the timing checks measure the machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

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
    let _one = one_at_a_time();
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

    // A classification made on A holds on C: anonymous callers may read the layer there.
    assert_eq!(
        c.get_anonymous(tiles[0]).status,
        404,
        "unclassified layers are internal"
    );
    let st = |s: &Path| s.to_str().unwrap().to_string();
    let out = common::urbis(&[
        "layers",
        "classify",
        "countries",
        "public",
        "--store",
        &st(&stores[0]),
    ]);
    assert!(out.status.success());
    wait_for(Duration::from_secs(5), || {
        c.get_anonymous(tiles[0]).status == 200
    })
    .expect("C applies a classification made on A");

    // A new version imported through B, a rollback made on C, a removal made on A: each
    // reaches every server.
    let v1 = tile(a, tiles[1]);
    import_json(Path::new(CITIES), &stores[1], &["--layer", "countries"]);
    wait_for(Duration::from_secs(2), || tile(b, tiles[1]) != v1).expect("B serves its import");
    let v2 = tile(b, tiles[1]);
    assert_eq!(v2.0, 200);
    wait_for(Duration::from_secs(5), || {
        servers.iter().all(|s| tile(s, tiles[1]) == v2)
    })
    .expect("every server serves the version imported through B");
    let out = common::urbis(&[
        "layers",
        "rollback",
        "countries",
        "1",
        "--store",
        &st(&stores[2]),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(Duration::from_secs(5), || {
        servers.iter().all(|s| tile(s, tiles[1]) == v1)
    })
    .expect("every server serves the version rolled back to on C");
    import_json(Path::new(COUNTRIES), &stores[0], &["--layer", "gone"]);
    wait_for(Duration::from_secs(5), || {
        servers
            .iter()
            .all(|s| tile(s, "/tiles/gone/0/0/0.mvt").0 == 200)
    })
    .expect("a second layer everywhere");
    let out = common::urbis(&["layers", "rm", "gone", "--store", &st(&stores[0])]);
    assert!(out.status.success());
    wait_for(Duration::from_secs(5), || {
        servers
            .iter()
            .all(|s| tile(s, "/tiles/gone/0/0/0.mvt").0 == 404)
    })
    .expect("a layer removed on A is removed everywhere");

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
    // A answers once it applied the fence; B and C apply it from the stream a moment later
    // (in stream order: before any report sent after it).
    for s in &servers {
        let seen = wait_for(Duration::from_secs(5), || {
            s.get("/geofences", &[])
                .json()
                .to_string()
                .contains("depot")
        });
        assert!(
            seen.is_some(),
            "{}: {}",
            s.base,
            s.get("/geofences", &[]).json()
        );
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
    wait_for(Duration::from_secs(5), || {
        devices_of(a).values().all(|d| d.contains(" 5 "))
    })
    .expect("A shows five reports of each device");
    let want = devices_of(a);
    assert_eq!(want.len(), 2);
    assert!(
        want["bus-1"].contains("24.91") && want["bus-1"].contains("60.115"),
        "{want:?}"
    );
    for s in &servers[1..] {
        // (an acknowledgement says the server that gave it applied the report; the others
        // follow within milliseconds)
        wait_for(Duration::from_secs(5), || devices_of(s) == want)
            .unwrap_or_else(|| panic!("{}: {:?} != {want:?}", s.base, devices_of(s)));
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
    // One field of the events of a kind and device, in stream order.
    let of = |event: &str, dev: &str, key: &str| -> Vec<serde_json::Value> {
        got_c
            .iter()
            .filter(|(e, _, d)| e == event && d.contains(dev))
            .map(|(_, _, d)| serde_json::from_str::<serde_json::Value>(d).unwrap()[key].clone())
            .collect()
    };
    for dev in ["bus-1", "bus-2"] {
        let ts: Vec<f64> = of("position", dev, "t")
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(ts.len(), 5, "{dev}: {ts:?}");
        assert!(
            ts.windows(2).all(|w| w[0] < w[1]),
            "{dev} out of order: {ts:?}"
        );
        let kinds: Vec<String> = of("geofence", dev, "kind")
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
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

/// `POST /ingest` that never panics: the status, or `None` when the connection failed (a
/// server killed under it).
fn try_post(addr: &str, auth: &str, body: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let req = format!(
        "POST /ingest HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The device times of a device's track on a server.
fn track_times(s: &Server, id: &str, from: f64) -> HashSet<u64> {
    let r = s.get(
        &format!("/devices/{id}/track?from={from}&limit=100000"),
        &[],
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    let fixes = j["track"]
        .as_array()
        .or_else(|| j["fixes"].as_array())
        .or_else(|| j.as_array())
        .unwrap_or_else(|| panic!("no track in {j}"))
        .clone();
    fixes
        .iter()
        .map(|f| (f["t"].as_f64().unwrap() * 1000.0).round() as u64)
        .collect()
}

/// A stream client through the load balancer that reconnects with `Last-Event-ID` when its
/// connection ends; collects `(id, device, t)` of position events.
struct Follower {
    stop: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<(u64, String, u64)>>>,
    reconnects: Arc<Mutex<u32>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    fn start(addr: &str, key: &str) -> Follower {
        let stop = Arc::new(AtomicBool::new(false));
        let got = Arc::new(Mutex::new(Vec::new()));
        let reconnects = Arc::new(Mutex::new(0));
        let (addr, auth) = (addr.to_string(), format!("Bearer {key}"));
        let (st, g, rc) = (Arc::clone(&stop), Arc::clone(&got), Arc::clone(&reconnects));
        let thread = std::thread::spawn(move || {
            let mut last: Option<String> = None;
            while !st.load(Ordering::Relaxed) {
                let mut headers = vec![("Authorization", auth.as_str())];
                if let Some(l) = &last {
                    headers.push(("Last-Event-ID", l.as_str()));
                }
                let sse = common::Sse::connect(&addr, "/stream", &headers);
                if sse.status != 200 {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                loop {
                    match sse.recv(Duration::from_millis(200)) {
                        Ok(e) => {
                            if let Some(id) = &e.id {
                                last = Some(id.clone());
                            }
                            if e.event == "position" {
                                let d = e.json();
                                g.lock().unwrap().push((
                                    e.id.as_deref().unwrap_or("0").parse().unwrap(),
                                    d["id"].as_str().unwrap().to_string(),
                                    (d["t"].as_f64().unwrap() * 1000.0).round() as u64,
                                ));
                            }
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            if st.load(Ordering::Relaxed) {
                                return;
                            }
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                            *rc.lock().unwrap() += 1;
                            break;
                        }
                    }
                }
            }
        });
        Follower {
            stop,
            got,
            reconnects,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (Vec<(u64, String, u64)>, u32) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let got = self.got.lock().unwrap().clone();
        let n = *self.reconnects.lock().unwrap();
        (got, n)
    }
}

#[test]
fn kill_9_of_a_server_or_a_nats_node_loses_no_acknowledged_report() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(dir.path());
    let stores: Vec<_> = ["a", "b", "c"].iter().map(|n| dir.path().join(n)).collect();
    let mut servers: Vec<Server> = stores.iter().map(|s| server(s, &nats, &[])).collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let lb = Haproxy::start(
        dir.path(),
        &addrs.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    );
    let devices: Vec<(String, String)> = (0..8)
        .map(|i| {
            let id = format!("t-{i}");
            let secret = add_device(&stores[0], &id, "fleet", "10s");
            (id, secret)
        })
        .collect();
    wait_for(Duration::from_secs(10), || {
        servers
            .iter()
            .all(|s| s.get("/devices/t-7", &[]).status == 200)
    })
    .expect("every server knows the devices");
    // An admin key of B's store (shared like every key) for the stream client.
    let key = servers[1].key.clone().unwrap();
    let follower = Follower::start(&lb.addr, &key);
    std::thread::sleep(Duration::from_millis(500));

    // Steady load through HAProxy: one report after another, round robin over the devices.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let refused = Arc::new(Mutex::new(0u32));
    let t0 = now() - 3600.0;
    let load = {
        let (stop, acked, refused) = (Arc::clone(&stop), Arc::clone(&acked), Arc::clone(&refused));
        let (lb, devices) = (lb.addr.clone(), devices.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (id, secret) = &devices[(n % devices.len() as u64) as usize];
                let t = t0 + n as f64 * 0.01;
                let body = format!(
                    r#"{{"lat":{},"lon":{},"t":{t}}}"#,
                    60.1 + (n % 100) as f64 * 0.001,
                    24.9 + (n % 97) as f64 * 0.001
                );
                match try_post(&lb, &format!("Bearer {secret}"), &body) {
                    Some(200) => acked
                        .lock()
                        .unwrap()
                        .push((id.clone(), (t * 1000.0).round() as u64)),
                    _ => *refused.lock().unwrap() += 1,
                }
                n += 1;
            }
        })
    };
    let count = || acked.lock().unwrap().len();
    std::thread::sleep(Duration::from_secs(3));
    let before_kill = count();
    assert!(
        before_kill > 50,
        "only {before_kill} reports acknowledged in 3 s"
    );

    // kill -9 of the urbis server the stream client is on.
    let on = servers
        .iter()
        .position(|s| {
            String::from_utf8_lossy(&s.get("/metrics", &[]).body).contains("urbis_stream_clients 1")
        })
        .expect("a server with the stream client");
    let mut a = servers.remove(on);
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let after_server_kill = count();
    assert!(
        after_server_kill > before_kill + 50,
        "the load did not go on through B and C: {before_kill} then {after_server_kill}"
    );

    // kill -9 of a NATS node: the report stream's leader, the worst case (its Raft group
    // elects another leader before anything is stored again).
    let leader = nats
        .stream_leader("urbis_reports")
        .expect("the report stream has a leader");
    let killed = Instant::now();
    nats.kill(leader);
    let resumed = wait_for(Duration::from_secs(30), || count() > after_server_kill + 20);
    eprintln!(
        "NATS node {leader} (the stream's leader) killed; the load went on after {:?}",
        killed.elapsed()
    );
    assert!(
        resumed.is_some(),
        "the load did not go on within 30 s after the stream's leader died: {after_server_kill} \
         then {}; NATS elections:\n{}",
        count(),
        nats.elections()
    );
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "acknowledged {} reports ({} refused or cut while a part was down)",
        acked.len(),
        refused.lock().unwrap()
    );

    // Zero acknowledged reports lost: every one is in every surviving server's tracks.
    for s in &servers {
        wait_ready(s, Duration::from_secs(30));
        for (id, _) in &devices {
            let want: HashSet<u64> = acked
                .iter()
                .filter(|(d, _)| d == id)
                .map(|(_, t)| *t)
                .collect();
            let ok = wait_for(Duration::from_secs(10), || {
                track_times(s, id, t0 - 1.0).is_superset(&want)
            });
            if ok.is_none() {
                let have = track_times(s, id, t0 - 1.0);
                let lost: Vec<&u64> = want.difference(&have).collect();
                panic!(
                    "{}: {} acknowledged reports of {id} lost: {lost:?}",
                    s.base,
                    lost.len()
                );
            }
        }
    }

    // The stream client of the dead server came back through HAProxy and resumed: every
    // report acknowledged after it connected, once, ids increasing.
    std::thread::sleep(Duration::from_secs(1));
    let (got, reconnects) = follower.finish();
    assert!(reconnects >= 1, "the stream client was never cut off");
    let ids: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "stream ids not increasing (a repeat or a step back)"
    );
    let seen: HashSet<(String, u64)> = got.iter().map(|(_, d, t)| (d.clone(), *t)).collect();
    let missing: Vec<&(String, u64)> = acked.iter().filter(|r| !seen.contains(*r)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged reports never reached the stream client (of {}; it reconnected {reconnects} times): {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );

    // /ready fails once the NATS cluster is gone.
    for i in 0..3 {
        nats.kill(i);
    }
    let b = &servers[0];
    wait_for(Duration::from_secs(15), || {
        http_get(&b.addr, "/ready", &[]).status == 503
    })
    .expect("/ready still 200 with every NATS node down");
}

#[test]
fn a_server_started_empty_catches_up_on_an_hour_of_traffic() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let store_a = dir.path().join("a");
    let a = server(&store_a, &nats, &[]);
    import_json(Path::new(COUNTRIES), &store_a, &["--layer", "countries"]);
    // An hour of traffic: 200 trackers reporting every 20 s (36,000 reports), in batches of
    // 900 through an ingest key, as a gateway would send them.
    for i in 0..200 {
        add_device(&store_a, &format!("v-{i:03}"), "vans", "20s");
    }
    let key = ingest_key(&store_a, "gateway");
    wait_for(Duration::from_secs(10), || {
        // (all refused, but not for the key)
        post_json(
            &a.addr,
            &format!("Bearer {key}"),
            r#"[{"device":"nobody","lat":60,"lon":25}]"#,
        )
        .status
            != 401
    })
    .expect("the ingest key works");
    let t0 = now() - 3600.0;
    let mut batch = Vec::new();
    let mut sent = 0;
    for step in 0..180 {
        for i in 0..200 {
            let t = t0 + step as f64 * 20.0 + i as f64 * 0.05;
            batch.push(format!(
                r#"{{"device":"v-{i:03}","lat":{},"lon":{},"t":{t},"battery":{}}}"#,
                60.15 + (step as f64) * 0.0004 + i as f64 * 0.0001,
                24.9 + (i as f64) * 0.0005,
                100 - step / 2
            ));
            if batch.len() == 900 {
                let r = post_json(
                    &a.addr,
                    &format!("Bearer {key}"),
                    &format!("[{}]", batch.join(",")),
                );
                assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                assert_eq!(r.json()["accepted"], 900);
                sent += 900;
                batch.clear();
            }
        }
    }
    assert_eq!(sent, 36_000);

    // D starts with an empty store, catches up from the stream and the buckets.
    let started = Instant::now();
    let d = server(&dir.path().join("d"), &nats, &[]);
    let caught_up = wait_for(Duration::from_secs(60), || devices_of(&d) == devices_of(&a))
        .expect("D never showed the same devices as A");
    eprintln!(
        "D ready and caught up on 36,000 reports {:?} after it started",
        started.elapsed().max(caught_up)
    );
    let want = devices_of(&a);
    assert_eq!(want.len(), 200);
    assert!(
        want.values().all(|v| v.contains(" 180 ")),
        "every van reported 180 times: {want:?}"
    );
    assert_eq!(
        track_times(&d, "v-042", t0 - 1.0),
        track_times(&a, "v-042", t0 - 1.0)
    );
    assert_eq!(track_times(&d, "v-042", t0 - 1.0).len(), 180);
    let (x, y, _, _) = tile_of(24.9 + 42.0 * 0.0005, 60.15 + 179.0 * 0.0004 + 0.0042, 15);
    for path in [
        format!("/tiles/vans/15/{x}/{y}.mvt"),
        "/tiles/vans/10/582/296.mvt".to_string(),
        "/tiles/countries/1/1/0.mvt".to_string(),
    ] {
        let (sa, ba) = tile(&a, &path);
        assert_eq!(sa, 200, "{path}");
        assert!(tile(&d, &path) == (sa, ba), "{path} differs on D");
    }
    wait_for(Duration::from_secs(5), || {
        String::from_utf8_lossy(&d.get("/metrics", &[]).body)
            .contains("urbis_cluster_lag_messages 0")
    })
    .expect("no zero lag in D's metrics");

    // A gateway's batch larger than one message (5,000 records, with telemetry) through D:
    // stored in parts, answered once, applied everywhere.
    let big: Vec<String> = (0..5000)
        .map(|k| {
            let i = k % 200;
            let t = t0 + 3600.0 + (k / 200) as f64 * 5.0 + i as f64 * 0.01;
            format!(
                r#"{{"device":"v-{i:03}","lat":60.2,"lon":{},"t":{t},"battery":50,"temp":{k},"rssi":-80}}"#,
                24.9 + i as f64 * 0.0005
            )
        })
        .collect();
    let r = post_json(
        &d.addr,
        &format!("Bearer {key}"),
        &format!("[{}]", big.join(",")),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["accepted"], 5000);
    wait_for(Duration::from_secs(10), || {
        devices_of(&a).values().all(|v| v.contains(" 205 "))
    })
    .expect("A applied the whole batch sent to D");
}

#[test]
fn an_alert_over_the_shared_state_is_posted_once_by_the_cluster() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let (url, hook) = common::webhook(0);
    let rules = dir.path().join("alerts.toml");
    std::fs::write(
        &rules,
        format!(
            r#"
            interval = "1s"
            [webhook]
            url = "{url}"
            [[rule]]
            name = "fleet silent"
            when = "no_reports"
            layer = "fleet"
            silent = "3s"
            "#
        ),
    )
    .unwrap();
    let stores: Vec<_> = ["a", "b", "c"].iter().map(|n| dir.path().join(n)).collect();
    let secret = add_device(&stores[0], "van-1", "fleet", "10s");
    let flag = ["--alerts", rules.to_str().unwrap()];
    let servers: Vec<Server> = stores.iter().map(|s| server(s, &nats, &flag)).collect();
    let state = |s: &Server| {
        let a = s.get("/alerts", &[]).json();
        a["rules"][0]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let posted = |state: &str| {
        // Long enough for every server's post to have arrived, had each posted.
        std::thread::sleep(Duration::from_secs(2));
        let got: Vec<serde_json::Value> = hook.try_iter().map(|(_, e)| e).collect();
        let n = got
            .iter()
            .filter(|e| e["rule"] == "fleet silent" && e["state"] == state)
            .count();
        (n, got)
    };

    // Nothing from the fleet since the servers started: the rule fires on all three, and the
    // webhook hears it once.
    wait_for(Duration::from_secs(30), || {
        servers.iter().all(|s| state(s) == "firing")
    })
    .expect("the rule fires on every server");
    let (firing, got) = posted("firing");
    assert_eq!(
        firing, 1,
        "the webhook heard the alert {firing} times: {got:?}"
    );
    assert_eq!(got.len(), 1, "{got:?}");

    // The van reports (to each server in turn, every 500 ms): the rule resolves on all three,
    // and the webhook hears that once.
    let stop = Arc::new(AtomicBool::new(false));
    let reporter = {
        let stop = Arc::clone(&stop);
        let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let body = format!(r#"{{"lat":60.17,"lon":24.94,"t":{}}}"#, now());
                let r = post_json(&addrs[i % 3], &format!("Bearer {secret}"), &body);
                assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                i += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    wait_for(Duration::from_secs(30), || {
        servers.iter().all(|s| state(s) == "inactive")
    })
    .expect("the rule resolves on every server");
    let (resolved, got) = posted("resolved");
    stop.store(true, Ordering::Relaxed);
    reporter.join().unwrap();
    assert_eq!(
        resolved, 1,
        "the webhook heard the resolution {resolved} times: {got:?}"
    );
    assert_eq!(got.len(), 1, "{got:?}");
}

#[test]
fn a_device_reporting_the_moment_it_is_registered_is_applied_by_every_server() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let stores: Vec<_> = ["a", "b", "c"].iter().map(|n| dir.path().join(n)).collect();
    let servers: Vec<Server> = stores.iter().map(|s| server(s, &nats, &[])).collect();
    // Registered through A's API (A has them before it answers), and each reports to A at
    // once: its registry row is still on its way to B and C through the tables bucket when
    // its report reaches them through the stream.
    let batch: Vec<String> = (0..40)
        .map(|i| format!(r#"{{"id":"new-{i}","layer":"fleet","interval":"10s"}}"#))
        .collect();
    let r = servers[0].request(
        "POST",
        "/admin/devices",
        &[],
        format!("[{}]", batch.join(",")).as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let secrets = r.json()["secrets"].as_array().unwrap().clone();
    let t = now();
    for (i, s) in secrets.iter().enumerate() {
        let body = format!(
            r#"{{"lat":{},"lon":24.94,"t":{t}}}"#,
            60.1 + i as f64 * 0.001
        );
        let auth = format!("Bearer {}", s["secret"].as_str().unwrap());
        let r = post_json(&servers[0].addr, &auth, &body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let reported = |s: &Server| {
        devices_of(s)
            .iter()
            .filter(|(id, d)| id.starts_with("new-") && d.contains(" 1 "))
            .count()
    };
    let same = wait_for(Duration::from_secs(10), || {
        servers.iter().all(|s| reported(s) == 40)
    });
    assert!(
        same.is_some(),
        "devices with their one report on A, B, C: {:?} (a report applied before its \
         device's row arrived was dropped)",
        servers.iter().map(reported).collect::<Vec<_>>()
    );
    let a = devices_of(&servers[0]);
    for s in &servers[1..] {
        assert_eq!(devices_of(s), a, "{} differs from A", s.base);
    }
}
