//! The tile API end to end: the real server on 127.0.0.1:0, real HTTP, tiles decoded by an
//! independent decoder (Python's `mapbox-vector-tile`, installed by `.ci/run`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::Server;

/// The Helsinki demo with each feature's index as its GeoJSON id, so decoded tile features
/// can be matched to their source.
fn numbered_helsinki(dir: &Path) -> PathBuf {
    let mut v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::data("data/helsinki/helsinki.geojson")).unwrap(),
    )
    .unwrap();
    for (i, f) in v["features"].as_array_mut().unwrap().iter_mut().enumerate() {
        f["id"] = serde_json::json!(i);
    }
    let p = dir.join("hki.geojson");
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    p
}

fn setup() -> (tempfile::TempDir, PathBuf, Server) {
    let dir = tempfile::tempdir().unwrap();
    let src = numbered_helsinki(dir.path());
    let store = dir.path().join("store");
    common::import_json(
        &src,
        &store,
        // Public: these tests are about tile serving itself, as anyone (and a CDN) sees it.
        &[
            "--attribution",
            "© OpenStreetMap contributors",
            "--classification",
            "public",
        ],
    );
    let mut server = Server::start(&store, &[]);
    // As a map client (and a CDN) sees the public layer: no key.
    server.key = None;
    (dir, src, server)
}

#[test]
fn tiles_decode_with_an_independent_decoder_and_match_the_source() {
    let (_dir, src, server) = setup();
    let out = Command::new("python3")
        .arg(common::root().join("tests/mvt_check.py"))
        .args([
            server.base.as_str(),
            "hki",
            src.to_str().unwrap(),
            "9,12,14,15,17",
        ])
        .output()
        .expect("python3 with mapbox-vector-tile (run .ci/run)");
    assert!(
        out.status.success(),
        "mvt_check failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["polygons", "lines", "points", "props_checked"] {
        assert!(
            summary[key].as_u64().unwrap() > 100,
            "too few {key} checked: {summary}"
        );
    }
}

#[test]
fn bad_tile_addresses_get_problem_details() {
    let (_dir, _src, server) = setup();
    for (path, status, needle) in [
        ("/tiles/hki/99/0/0.mvt", 400, "zoom 99"),
        ("/tiles/hki/3/8/0.mvt", 400, "does not exist at zoom 3"),
        ("/tiles/hki/a/0/0.mvt", 400, "z must be a whole number"),
        ("/tiles/hki/1/0/0.gif", 400, "unknown tile format .gif"),
        ("/tiles/hki/1/0/0", 400, "no extension"),
        ("/tiles/nosuch/1/0/0.mvt", 404, "no layer named 'nosuch'"),
        ("/tiles/nosuch.json", 404, "no layer named 'nosuch'"),
        ("/nowhere", 404, "/catalog"),
    ] {
        let r = server.get(path, &[]);
        assert_eq!(r.status, status, "{path}");
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{path}"
        );
        let p = r.json();
        assert_eq!(p["status"], status);
        assert!(
            p["detail"].as_str().unwrap().contains(needle),
            "{path}: {p}"
        );
    }
}

#[test]
fn tiles_have_caching_headers_gzip_and_204_when_empty() {
    let (_dir, _src, server) = setup();
    let path = "/tiles/hki/14/9326/4741.mvt";
    let plain = server.get(path, &[]);
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    let gz = server.get(path, &[("Accept-Encoding", "gzip, deflate")]);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert!(gz.body.len() < plain.body.len());
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&gz.body[..]),
        &mut unzipped,
    )
    .unwrap();
    assert_eq!(unzipped, plain.body, "gzip holds the same tile");
    assert_ne!(
        plain.header("etag"),
        gz.header("etag"),
        "each encoding has its own ETag"
    );
    assert_eq!(plain.header("cache-control"), Some("public, max-age=300"));
    assert_eq!(plain.header("access-control-allow-origin"), Some("*"));
    let etag = plain.header("etag").unwrap().to_string();
    assert_eq!(server.get(path, &[("If-None-Match", &etag)]).status, 304);
    // The Atlantic off Africa has no Helsinki.
    let empty = server.get("/tiles/hki/5/15/15.mvt", &[]);
    assert_eq!(empty.status, 204);
    assert!(empty.body.is_empty());
}

#[test]
fn tilejson_catalog_and_health_describe_the_layers() {
    let (_dir, _src, server) = setup();
    let tj = server.get("/tiles/hki.json", &[]).json();
    assert_eq!(tj["tilejson"], "3.0.0");
    assert_eq!(
        tj["tiles"][0],
        format!("{}/tiles/hki/{{z}}/{{x}}/{{y}}.mvt", server.base)
    );
    assert_eq!(tj["vector_layers"][0]["id"], "hki");
    assert_eq!(tj["vector_layers"][0]["fields"]["highway"], "String");
    assert_eq!(tj["attribution"], "© OpenStreetMap contributors");
    let b = tj["bounds"].as_array().unwrap();
    assert!(
        (b[0].as_f64().unwrap() - 24.935).abs() < 0.01
            && (b[3].as_f64().unwrap() - 60.179).abs() < 0.01,
        "{b:?}"
    );
    assert!(tj["minzoom"].as_u64().unwrap() <= tj["maxzoom"].as_u64().unwrap());
    assert_eq!(tj["center"].as_array().unwrap().len(), 3);
    let cat = server.get("/catalog", &[]).json();
    assert_eq!(cat["layers"][0]["name"], "hki");
    assert_eq!(cat["layers"][0]["features"], 13_698);
    assert_eq!(
        cat["layers"][0]["tilejson"],
        format!("{}/tiles/hki.json", server.base)
    );
    let h = server.get("/health", &[]).json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["layers"], 1);
}

#[test]
fn a_configured_public_url_and_config_file_are_used() {
    let (dir, _src, server) = setup();
    // One server per store: its live log has one writer (STORE/live/hub.lock).
    drop(server);
    let cfg = dir.path().join("urbis.toml");
    std::fs::write(
        &cfg,
        "public_url = \"https://tiles.example.city/\"\nmax_age = 60\n",
    )
    .unwrap();
    let mut server = Server::start(
        &dir.path().join("store"),
        &["--config", cfg.to_str().unwrap()],
    );
    server.key = None;
    let tj = server.get("/tiles/hki.json", &[]).json();
    assert_eq!(
        tj["tiles"][0],
        "https://tiles.example.city/tiles/hki/{z}/{x}/{y}.mvt"
    );
    assert_eq!(
        server
            .get("/tiles/hki/14/9326/4741.mvt", &[])
            .header("cache-control"),
        Some("public, max-age=60")
    );
    // A bad config file stops the server at start with the key's name.
    std::fs::write(&cfg, "max_agee = 60\n").unwrap();
    let out = common::urbis(&[
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--store",
        dir.path().join("store").to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("max_agee"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn composite_tiles_and_new_versions_are_served_without_restart() {
    let (dir, _src, server) = setup();
    let store = dir.path().join("store");
    // A second layer appears while the server runs.
    common::import_json(
        &common::data("tests/data/naturalearth/naturalearth_cities/naturalearth_cities.shp"),
        &store,
        &["--layer", "cities", "--classification", "public"],
    );
    // Served (and classified public for anonymous callers) within a second or two.
    let started = Instant::now();
    let r = loop {
        let r = server.get("/tiles/hki,cities/0/0/0.mvt", &[]);
        if r.status == 200 || started.elapsed() > Duration::from_secs(5) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let tile = <geozero::mvt::Tile as geozero::mvt::Message>::decode(&r.body[..]).unwrap();
    let names: Vec<&str> = tile.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["hki", "cities"]);
    // A new version of hki replaces the old one within a couple of seconds.
    common::import_json(
        &common::data("tests/data/naturalearth/naturalearth_lowres/naturalearth_lowres.shp"),
        &store,
        &["--layer", "hki", "--classification", "public"],
    );
    let started = Instant::now();
    loop {
        let cat = server.get("/catalog", &[]).json();
        let hki = cat["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "hki")
            .unwrap()
            .clone();
        if hki["version"] == 2 {
            assert_eq!(hki["features"], 177);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "new version not picked up: {hki}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let tile = server.get("/tiles/hki/0/0/0.mvt", &[]);
    let t = <geozero::mvt::Tile as geozero::mvt::Message>::decode(&tile.body[..]).unwrap();
    assert_eq!(
        t.layers[0].features.len(),
        177,
        "the new version's countries, not the cached old tile"
    );
}

#[test]
fn sigterm_shuts_the_server_down_gracefully() {
    let (_dir, _src, mut server) = setup();
    assert_eq!(server.get("/health", &[]).status, 200);
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "exit status after SIGTERM: {status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
