//! Durability of live reports: every acknowledged report survives `kill -9`; a log write
//! failure stops acknowledging, fails `/ready` and leaves nothing of the refused batch
//! visible; log segments roll, recover and expire with retention.

mod common;

use coap_lite::{MessageClass, ResponseType};
use common::live::*;
use common::{Server, add_device};
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn acknowledged_reports_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let devices: Vec<(String, String)> = (0..8)
        .map(|i| {
            let id = format!("dev-{i}");
            let s = add_device(&store, &id, "fleet", "1m");
            (id, s)
        })
        .collect();
    let seed = (now() * 1000.0) as u64;
    eprintln!("kill -9 schedule seed {seed}");
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut sent = 0u64;
    let mut mid: u16 = 1;
    let t0 = now() - 3000.0;
    for round in 0..6 {
        let server = std::sync::Arc::new(std::sync::Mutex::new(Server::start(&store, &[])));
        let coap = server.lock().unwrap().coap.clone();
        // Kill (SIGKILL) at a random moment while the client is sending.
        let kill_after = Duration::from_millis(150 + next() % 600);
        let start = Instant::now();
        let target = std::sync::Arc::clone(&server);
        let killer = std::thread::spawn(move || {
            std::thread::sleep(kill_after);
            let _ = target.lock().unwrap().child.kill();
        });
        while start.elapsed() < kill_after + Duration::from_millis(300) {
            let (id, secret) = &devices[(sent % devices.len() as u64) as usize];
            let t = t0 + sent as f64 * 0.01;
            let body = format!(
                r#"{{"lat":{},"lon":{},"t":{t},"seq":{sent}}}"#,
                60.0 + (sent % 100) as f64 * 0.001,
                24.9
            );
            mid = mid.wrapping_add(1);
            let pkt = post(mid, id, secret, Some(50), body.as_bytes());
            if send_acked(&sock, &coap, &pkt) {
                acked.push((id.clone(), sent));
            }
            sent += 1;
        }
        killer.join().unwrap();
        let _ = server.lock().unwrap().child.wait();
        eprintln!(
            "round {round}: killed after {kill_after:?}; {} acknowledged so far of {sent}",
            acked.len()
        );
    }
    assert!(
        acked.len() > 50,
        "too few acknowledged reports to mean anything: {}",
        acked.len()
    );
    // Restart and check every acknowledged report is there.
    let server = Server::start(&store, &[]);
    for (id, _) in &devices {
        let mine: Vec<u64> = acked.iter().filter(|(d, _)| d == id).map(|x| x.1).collect();
        let lost = lost_after_restart(&server, id, t0 - 1.0, "seq", mine.iter().copied());
        assert!(
            lost.is_empty(),
            "{id}: {} acknowledged reports lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        let d = server.get(&format!("/devices/{id}"), &[]).json();
        assert!(
            d["reports"].as_u64().unwrap() >= mine.len() as u64,
            "{id}: {d}"
        );
    }
}

/// Where batch `b` of the log failure test puts its device: a different z16 tile for each
/// batch (0.05° of latitude apart, about 5.5 km).
fn batch_position(b: u64) -> (f64, f64) {
    (24.9, 60.0 + b as f64 * 0.05)
}

#[test]
fn a_log_write_failure_stops_acknowledging_fails_ready_and_shows_nothing_it_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let secret = add_device(&store, "t-1", "fleet", "1m");
    // The server may write files of at most 128 KiB (ulimit -f, 512-byte blocks), with
    // SIGXFSZ ignored: the log's write fails with EFBIG once it reaches that size.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "trap '' XFSZ; ulimit -f 256; exec \"$0\" \"$@\"",
        env!("CARGO_BIN_EXE_urbis"),
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--coap-bind",
        "127.0.0.1:0",
        "--no-demo",
        "--store",
        store.to_str().unwrap(),
    ]);
    let server = Server::spawn(cmd);
    let auth = format!("Bearer {secret}");
    let t0 = now() - 10_000.0;
    let mut acked = 0u64;
    let mut refused = None;
    for batch in 0..200u64 {
        let (lon, lat) = batch_position(batch);
        let body: Vec<String> = (0..100)
            .map(|i| {
                let n = batch * 100 + i;
                format!(
                    r#"{{"lat":{lat},"lon":{lon},"t":{},"n":{n}}}"#,
                    t0 + n as f64
                )
            })
            .collect();
        let r = post_json(&server.addr, &auth, &format!("[{}]", body.join(",")));
        match r.status {
            200 => acked = (batch + 1) * 100,
            503 => {
                refused = Some(batch);
                break;
            }
            s => panic!(
                "unexpected status {s}: {}",
                String::from_utf8_lossy(&r.body)
            ),
        }
    }
    let refused = refused.expect("the log never hit the file size limit");
    eprintln!("{acked} reports acknowledged, then batch {refused} refused");
    assert!(acked > 0, "some batches must have been acknowledged first");
    // Nothing of the refused batch is visible: the device is where the last acknowledged
    // batch left it, with its count and telemetry, ...
    let d = server.get("/devices/t-1", &[]).json();
    let (last_lon, last_lat) = batch_position(refused - 1);
    assert_eq!(d["reports"].as_u64(), Some(acked), "{d}");
    assert_eq!(
        d["telemetry"]["n"].as_f64(),
        Some((acked - 1) as f64),
        "{d}"
    );
    assert_eq!(
        d["position"],
        serde_json::json!([last_lon, last_lat]),
        "the device shows a position of the refused batch: {d}"
    );
    let list = server.get("/devices", &[]).json();
    assert_eq!(list["reports_total"].as_u64(), Some(acked), "{list}");
    // ... and the live tiles show it at that position and not at the refused one.
    let live_tile = |(lon, lat): (f64, f64)| {
        let (x, y, _, _) = tile_of(lon, lat, 16);
        server.get(&format!("/tiles/fleet/16/{x}/{y}.mvt"), &[])
    };
    let at_refused = live_tile(batch_position(refused));
    assert_eq!(
        at_refused.status, 204,
        "the live tile at the refused batch's position has a device"
    );
    let at_last = live_tile((last_lon, last_lat));
    assert_eq!(at_last.status, 200);
    let features = decode_tile(&at_last.body, "fleet");
    assert_eq!(features.len(), 1, "{features:?}");
    assert_eq!(features[0]["properties"]["id"], "t-1");
    // Out of service: /ready fails, and nothing more is acknowledged, over HTTP or CoAP.
    let ready = server.get("/ready", &[]);
    assert_eq!(
        ready.status,
        503,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    let r = post_json(&server.addr, &auth, r#"{"lat":60.2,"lon":24.8}"#);
    assert_eq!(r.status, 503);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let a = ask(
        &sock,
        &server.coap,
        &post(1, "t-1", &secret, Some(50), b"{\"lat\":60.2,\"lon\":24.8}"),
    );
    assert_eq!(
        a.header.code,
        MessageClass::Response(ResponseType::ServiceUnavailable)
    );
    drop(server);
    // Restarted without the limit: every acknowledged report is there, and the state is the
    // one the failed server showed.
    let server = Server::start(&store, &[]);
    let lost = lost_after_restart(&server, "t-1", t0 - 1.0, "n", 0..acked);
    assert!(
        lost.is_empty(),
        "{} of {acked} acknowledged reports lost (refused at batch {refused})",
        lost.len()
    );
    let after = server.get("/devices/t-1", &[]).json();
    assert_eq!(after["reports"].as_u64(), Some(acked), "{after}");
    assert_eq!(after["position"], d["position"], "{after}");
    assert_eq!(server.get("/ready", &[]).status, 200);
}

#[test]
fn log_segments_roll_recover_and_expire_with_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let secret = add_device(&store, "t-1", "fleet", "1m");
    let wal = store.join("live/wal");
    let segments = || {
        let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(&wal)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        v.sort();
        v
    };
    let count = |server: &Server| {
        server.get("/devices/t-1", &[]).json()["reports"]
            .as_u64()
            .unwrap()
    };
    let track_len = |server: &Server, from: f64| {
        server
            .get(&format!("/devices/t-1/track?from={from}&limit=100000"), &[])
            .json()["fixes"]
            .as_array()
            .unwrap()
            .len()
    };
    let t0 = now() - 100_000.0;
    {
        let server = Server::start(&store, &["--wal-segment-mb", "1"]);
        for batch in 0..4u64 {
            let body: Vec<String> = (0..10_000)
                .map(|i| {
                    let n = batch * 10_000 + i;
                    format!(
                        r#"{{"lat":60.1,"lon":24.9,"t":{},"n":{n},"battery":87.5,"temperature":21.25,"signal":-97}}"#,
                        t0 + n as f64
                    )
                })
                .collect();
            let r = post_json(
                &server.addr,
                &format!("Bearer {secret}"),
                &format!("[{}]", body.join(",")),
            );
            assert_eq!(r.status, 200);
        }
        assert_eq!(count(&server), 40_000);
    } // killed (SIGKILL)
    let segs = segments();
    assert!(
        segs.len() >= 3,
        "1 MiB segments should have rolled: {segs:?}"
    );
    // Recovery reads across every segment.
    {
        let server = Server::start(&store, &["--wal-segment-mb", "1"]);
        assert_eq!(count(&server), 40_000);
        assert_eq!(track_len(&server, t0 - 1.0), 40_000);
    }
    // Age every segment but the newest past the retention period.
    let old = std::time::SystemTime::now() - Duration::from_secs(100 * 86_400);
    for p in &segs[..segs.len() - 1] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    {
        let server = Server::start(&store, &["--wal-segment-mb", "1", "--retention-days", "90"]);
        let aged = &segs[..segs.len() - 1];
        let deadline = Instant::now() + Duration::from_secs(10);
        while aged.iter().any(|p| p.exists()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            aged.iter().all(|p| !p.exists()),
            "expired segments were not removed: {:?}",
            segments()
        );
        assert!(
            segments().contains(&segs[segs.len() - 1]),
            "the newest segment stays"
        );
        // History older than the retention is gone; the current state is not.
        assert!(track_len(&server, t0 - 1.0) < 40_000);
        assert_eq!(count(&server), 40_000);
    }
    // And a restart after the deletion (kill -9 again) still has the state.
    let server = Server::start(&store, &["--wal-segment-mb", "1"]);
    assert_eq!(count(&server), 40_000);
    let d = server.get("/devices/t-1", &[]).json();
    assert_eq!(d["telemetry"]["n"], 39_999.0);
}
