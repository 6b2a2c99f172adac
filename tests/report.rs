//! The operation report of a store on which the test made known traffic: tile requests (cache
//! misses and hits), unknown layers (404), device reports over HTTP and CoAP (one refused), a
//! geofence entered. `GET /admin/report` of the running server and `urbis report` after it
//! stopped both count exactly that; the HTML opens from disk in headless Chromium without a
//! request outside the file and without a console error; the PNG decodes at the size asked
//! and shows the device where it is.

mod common;

use common::live::{coap_client, now, post_json};
use common::{Server, root};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn stop(server: &mut Server) {
    // SIGTERM: the graceful shutdown that keeps the running minute and writes the snapshot.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "the server exited with {status}");
            return;
        }
        assert!(Instant::now() < end, "the server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn check_counts(r: &serde_json::Value, requests: u64, client_errors: u64) {
    assert_eq!(r["requests"]["total"], requests, "{r:#}");
    assert_eq!(r["requests"]["client_errors"], client_errors, "{r:#}");
    assert_eq!(r["requests"]["server_errors"], 0);
    assert_eq!(r["tiles"]["cache_misses"], 2, "{r:#}");
    assert_eq!(r["tiles"]["cache_hits"], 2);
    assert_eq!(r["tiles"]["made"], 2);
    assert_eq!(r["tiles"]["cache_hit_ratio"], 0.5);
    let slowest = r["tiles"]["slowest"].as_array().unwrap();
    assert_eq!(slowest.len(), 2, "{r:#}");
    assert!(slowest.iter().all(|t| t["layers"] == "montevideo"));
    assert!(r["tiles"]["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    let p = &r["ingest"]["payloads"];
    assert_eq!(p["http accepted"], 2, "{r:#}");
    assert_eq!(p["http refused"], 1);
    assert_eq!(p["coap accepted"], 1);
    assert_eq!(r["ingest"]["records"], 3);
    assert_eq!(r["ingest"]["refused"], 1);
    assert_eq!(r["geofence_events"]["enter"], 1, "{r:#}");
    assert!(r["geofence_events"].get("exit").is_none());
    assert_eq!(r["devices"]["last"]["fleet"]["live"], 1, "{r:#}");
    assert_eq!(r["devices"]["online_rate"]["fleet"], 1.0);
    let imports = r["imports"].as_array().unwrap();
    assert_eq!(imports.len(), 1, "{r:#}");
    assert_eq!(imports[0]["action"], "layer.import");
    assert!(
        imports[0]["target"]
            .as_str()
            .unwrap()
            .starts_with("montevideo v1")
    );
    assert!(
        r["admin_actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "geofence.put" && a["target"] == "plaza"),
        "{r:#}"
    );
    assert!(r["availability"]["up_minutes"].as_u64().unwrap() >= 1);
    assert!(!r["series"].as_array().unwrap().is_empty());
}

#[test]
fn the_report_counts_what_the_test_did_and_opens_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    common::import_json(
        &common::data("tests/data/montevideo/montevideo.geojson.gz"),
        &store,
        &["--layer", "montevideo"],
    );
    let secret = common::add_device(&store, "tracker-9", "fleet", "60s");
    let mut server = Server::start(&store, &[]);

    let fence = r#"{"type":"Feature","id":"plaza","properties":{"name":"Plaza","layers":["fleet"]},
        "geometry":{"type":"Polygon","coordinates":[[[-56.17,-34.91],[-56.15,-34.91],[-56.15,-34.89],[-56.17,-34.89],[-56.17,-34.91]]]}}"#;
    assert_eq!(
        server
            .request("POST", "/geofences", &[], fence.as_bytes())
            .status,
        201
    );
    for _ in 0..3 {
        assert_eq!(
            server.get("/tiles/montevideo/14/5634/9889.mvt", &[]).status,
            200
        );
    }
    let other = server.get("/tiles/montevideo/13/2817/4944.mvt", &[]).status;
    assert!(other == 200 || other == 204, "{other}");
    for _ in 0..2 {
        assert_eq!(server.get("/tiles/nosuch/1/0/0.mvt", &[]).status, 404);
    }
    let auth = format!("Bearer {secret}");
    let t0 = now() - 30.0;
    // Outside the fence, then inside (enter).
    for (i, lat) in [-34.95, -34.90].iter().enumerate() {
        let body = format!(
            r#"{{"lat":{lat},"lon":-56.16,"t":{}}}"#,
            t0 + i as f64 * 10.0
        );
        assert_eq!(post_json(&server.addr, &auth, &body).status, 200);
    }
    assert_eq!(
        post_json(&server.addr, "Bearer ds_wrong", r#"{"lat":1,"lon":2}"#).status,
        401
    );
    coap_client(
        &server.coap,
        "tracker-9",
        &secret,
        50,
        r#"{"lat":-34.901,"lon":-56.161}"#,
        true,
    );
    // The figures reach the committer's observer when the reports are stored: wait until the
    // device is seen live with the CoAP fix.
    let end = Instant::now() + Duration::from_secs(10);
    let mut polls = 0;
    loop {
        polls += 1;
        if server.get("/devices/tracker-9", &[]).json()["reports"] == 3 {
            break;
        }
        assert!(Instant::now() < end, "the reports were not applied");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Requests so far: the fence, 4 tiles, 2 unknown layers (404), 3 reports (one 401), and
    // the polls; the running minute is in the live report.
    let live = server.get("/admin/report?since=1h&format=json", &[]);
    assert_eq!(live.status, 200, "{}", String::from_utf8_lossy(&live.body));
    check_counts(&live.json(), 10 + polls, 3);
    let html = server.get("/admin/report?since=1h", &[]);
    assert_eq!(
        html.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let text = String::from_utf8_lossy(&html.body);
    assert!(text.contains("Operation report") && text.contains("data:image/png;base64,"));
    assert_eq!(
        server.get_anonymous("/admin/report").status,
        401,
        "the report is for administrators"
    );
    // Three report requests more (one a 401); then the server stops and keeps its running
    // minute.
    let total = 10 + polls + 3;
    stop(&mut server);

    let out = dir.path().join("out");
    let o = common::urbis(&[
        "report",
        "--store",
        store.to_str().unwrap(),
        "--since",
        "1h",
        "--out",
        out.to_str().unwrap(),
        "--map-size",
        "800x500",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    check_counts(&r, total, 4);

    // The map: the size asked, layers drawn, the live device drawn in its colour.
    let img = image::open(out.join("map.png")).unwrap().to_rgba8();
    assert_eq!(img.dimensions(), (800, 500));
    let live_px = img
        .pixels()
        .filter(|p| {
            p[0].abs_diff(0x1a) < 12 && p[1].abs_diff(0x98) < 12 && p[2].abs_diff(0x50) < 12
        })
        .count();
    assert!(live_px > 30, "{live_px} pixels of the live device's colour");
    // The device is in the middle of the view (the view fits the devices).
    let centre = img.get_pixel(400, 250);
    assert!(
        centre[1] > centre[0] + 60,
        "the map's centre, where the device is, is {centre:?}"
    );
    let background = img
        .pixels()
        .filter(|p| p.0 == [0xf4, 0xf1, 0xea, 255])
        .count();
    assert!(
        background < 800 * 500 * 95 / 100,
        "the layers are drawn under the device ({background} background pixels)"
    );

    // The HTML in headless Chromium: self-contained, no console error, the map decodes.
    chromium_check(&out.join("report.html"), 800, 500);
}

fn chromium_check(html: &Path, w: u32, h: u32) {
    let browser = root().join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").exists(),
        "playwright-core in tests/browser (`bash .ci/run` installs it)"
    );
    let out = Command::new("node")
        .arg(browser.join("report.mjs"))
        .arg(html)
        .arg(w.to_string())
        .arg(h.to_string())
        .output()
        .expect("node");
    assert!(
        out.status.success(),
        "report.html in Chromium: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("one JSON line");
    assert_eq!(seen["outside"], 0);
    assert_eq!(seen["errors"], 0);
    assert_eq!(seen["hasTitle"], true);
    assert!(
        seen["svgLines"].as_u64().unwrap() >= 1,
        "the devices chart: {seen}"
    );
}
