//! Publishing is atomic: an import killed at any moment leaves the previous version serving
//! and no stray file, and imports of one layer running at once never corrupt it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use urbis::store::Store;

mod common;

#[test]
fn killed_import_leaves_the_previous_version_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    common::import_json(
        &common::data("tests/data/naturalearth/naturalearth_cities/naturalearth_cities.shp"),
        &store,
        &["--layer", "city"],
    );
    let before = common::snapshot(&store);
    let big = common::data("tests/data/montevideo/montevideo.geojson.gz");
    // Kill at fractions of how long a whole import takes on this machine (a fixed schedule
    // let fast runs finish before the late kills).
    let full = {
        let scratch = dir.path().join("scratch");
        let t = Instant::now();
        common::import_json(&big, &scratch, &["--layer", "city"]);
        t.elapsed()
    };
    let mut killed = 0;
    for fraction in [0.02, 0.1, 0.25, 0.45, 0.65, 0.85] {
        let delay_ms = ((full.as_secs_f64() * fraction * 1000.0) as u64).max(20);
        let mut child = Command::new(env!("CARGO_BIN_EXE_urbis"))
            .args([
                "import",
                big.to_str().unwrap(),
                "--store",
                store.to_str().unwrap(),
                "--layer",
                "city",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(delay_ms) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_some() {
            // Finished before the kill: it published v2. Put the store back and go on.
            Store::open(&store, false).unwrap().remove("city").unwrap();
            common::import_json(
                &common::data(
                    "tests/data/naturalearth/naturalearth_cities/naturalearth_cities.shp",
                ),
                &store,
                &["--layer", "city"],
            );
            continue;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        killed += 1;
        let after = common::snapshot(&store);
        let names = |s: &[(String, Vec<u8>)]| s.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&after),
            names(&before),
            "killed after {delay_ms} ms: files differ"
        );
        assert_eq!(
            after, before,
            "killed after {delay_ms} ms: the store changed"
        );
        let layer = Store::open(&store, false)
            .unwrap()
            .open_layer("city")
            .unwrap();
        assert_eq!(layer.feature_count(), 243);
    }
    assert!(
        killed >= 4,
        "only {killed} imports were killed mid-way; the input is too small to test this"
    );
}

#[test]
fn concurrent_imports_of_one_layer_publish_one_after_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let src = common::data("data/helsinki/helsinki.geojson");
    let run = |n: usize| {
        let children: Vec<_> = (0..n)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_urbis"))
                    .args([
                        "import",
                        src.to_str().unwrap(),
                        "--store",
                        store.to_str().unwrap(),
                        "--layer",
                        "hki",
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    run(2);
    let s = Store::open(&store, false).unwrap();
    let entry = s.catalog().unwrap().layers["hki"].clone();
    assert_eq!(
        entry.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(entry.current, 2);
    run(3);
    let entry = s.catalog().unwrap().layers["hki"].clone();
    assert_eq!(
        entry.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [3, 4, 5],
        "only the last three versions are kept"
    );
    for v in &entry.versions {
        let r = urbis::store::LayerReader::open(store.join(&v.file)).unwrap();
        assert_eq!(r.feature_count(), 13_698);
    }
    let files: Vec<String> = common::snapshot(&store)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        files,
        [
            "catalog.json",
            "hki.v3.urbis",
            "hki.v4.urbis",
            "hki.v5.urbis",
            "store.lock",
            "urbis.db"
        ]
    );
}

#[test]
fn layers_lists_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    common::import_json(
        &common::data("tests/data/naturalearth/naturalearth_cities/naturalearth_cities.shp"),
        &store,
        &["--layer", "cities"],
    );
    let out = common::urbis(&["layers", "--store", store.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "cities");
    assert_eq!(v[0]["features"], 243);
    assert_eq!(v[0]["quality"]["read"], 243);
    assert_eq!(v[0]["fields"]["name"][0], "String");
    let text = common::urbis(&["layers", "--store", store.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("cities") && text.contains("243") && text.contains("quality"),
        "{text}"
    );
    let rm = common::urbis(&["layers", "rm", "cities", "--store", store.to_str().unwrap()]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    let again = common::urbis(&["layers", "rm", "cities", "--store", store.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no layer named 'cities'"));
    let files: Vec<String> = common::snapshot(&store)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(files, ["catalog.json", "store.lock", "urbis.db"]);
}
