//! Versions and rollback: `urbis layers versions` lists the kept versions, `urbis layers
//! rollback` serves an earlier one again on a running server within seconds, and the newer
//! version's cached tiles never come back.

mod common;

use common::{Server, import_json, urbis};
use std::time::{Duration, Instant};

/// Half of the Helsinki demo's features (every other one), as a new version's source.
fn half_of_helsinki(dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(common::data("data/helsinki/helsinki.geojson")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let features: Vec<serde_json::Value> = v["features"]
        .as_array()
        .unwrap()
        .iter()
        .step_by(2)
        .cloned()
        .collect();
    v["features"] = serde_json::Value::Array(features);
    let p = dir.join("helsinki.geojson");
    std::fs::write(&p, v.to_string()).unwrap();
    p
}

#[test]
fn rollback_serves_the_old_version_again_and_never_the_newer_cached_tiles() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s = store.to_str().unwrap();
    let full = common::data("data/helsinki/helsinki.geojson");
    import_json(
        &full,
        &store,
        &["--layer", "hki", "--classification", "public"],
    );
    let server = Server::start(&store, &[]);
    let path = "/tiles/hki/14/9326/4741.mvt";
    let v1 = server.get(path, &[]);
    assert_eq!(v1.status, 200);
    let v1_gz = server.get(path, &[("Accept-Encoding", "gzip")]);
    // Version 2: half the features; the running server serves it within seconds.
    import_json(
        &half_of_helsinki(dir.path()),
        &store,
        &["--layer", "hki", "--classification", "public"],
    );
    let t = Instant::now();
    let v2 = loop {
        let r = server.get(path, &[]);
        if r.body != v1.body {
            break r;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "v2 never served");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(v2.body.len() < v1.body.len());
    let list = urbis(&["layers", "versions", "hki", "--store", s]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("* v2") && text.contains("  v1"), "{text}");
    // Back to v1.
    let out = urbis(&["layers", "rollback", "hki", "1", "--store", s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = Instant::now();
    loop {
        let r = server.get(path, &[]);
        if r.body == v1.body {
            assert_eq!(r.header("etag"), v1.header("etag"));
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "v1 not served after the rollback"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("rollback served after {:?}", t.elapsed());
    // The cached v2 tile never returns, with or without gzip.
    for _ in 0..20 {
        assert_eq!(server.get(path, &[]).body, v1.body);
        let gz = server.get(path, &[("Accept-Encoding", "gzip")]);
        assert_eq!(gz.header("etag"), v1_gz.header("etag"));
    }
    let cat = server.get("/catalog", &[]).json();
    assert_eq!(cat["layers"][0]["version"], 1);
    // A version the store does not keep: refused, naming the kept ones.
    let out = urbis(&["layers", "rollback", "hki", "9", "--store", s]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no version 9") && err.contains("v1, v2"),
        "{err}"
    );
    // The next import is v3, and becomes current.
    import_json(
        &full,
        &store,
        &["--layer", "hki", "--classification", "public"],
    );
    let text = String::from_utf8_lossy(&urbis(&["layers", "versions", "hki", "--store", s]).stdout)
        .to_string();
    assert!(text.contains("* v3"), "{text}");
    // And both changes are in the audit log.
    let audit =
        String::from_utf8_lossy(&urbis(&["audit", "show", "--store", s]).stdout).to_string();
    assert!(
        audit.contains("layer.rollback") && audit.contains("hki v1"),
        "{audit}"
    );
}

#[test]
fn keep_versions_sets_how_many_versions_stay() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let small = common::data("tests/data/naturalearth/naturalearth_cities/naturalearth_cities.shp");
    for _ in 0..4 {
        import_json(
            &small,
            &store,
            &["--layer", "cities", "--keep-versions", "2"],
        );
    }
    let files: Vec<String> = common::snapshot(&store)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.ends_with(".urbis"))
        .collect();
    assert_eq!(files, ["cities.v3.urbis", "cities.v4.urbis"]);
    let out = urbis(&[
        "layers",
        "rollback",
        "cities",
        "2",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "v2 is gone");
}
