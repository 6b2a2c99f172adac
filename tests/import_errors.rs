//! Bad input gets a clear message naming the problem, a non-zero exit when nothing was
//! importable, and leaves the store exactly as it was.

use std::path::Path;

mod common;

/// A store that already serves one layer, so "unchanged" means something.
fn seeded_store(dir: &Path) -> std::path::PathBuf {
    let store = dir.join("store");
    common::import_json(
        &common::data("tests/data/naturalearth/naturalearth_cities/naturalearth_cities.shp"),
        &store,
        &["--layer", "cities"],
    );
    store
}

/// Imports `file` and expects failure with every one of `needles` in the message.
fn expect_refused(file: &Path, store: &Path, needles: &[&str]) {
    let before = common::snapshot(store);
    let out = common::urbis(&[
        "import",
        file.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--layer",
        "cities",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "import of {} should fail; stdout: {}",
        file.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    for n in needles {
        assert!(
            stderr.contains(n),
            "message for {} lacks {n:?}: {stderr}",
            file.display()
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        common::snapshot(store),
        before,
        "the store changed after a refused import of {}",
        file.display()
    );
    // The previous version still opens.
    let s = urbis::store::Store::open(store, false).unwrap();
    assert_eq!(s.open_layer("cities").unwrap().feature_count(), 243);
}

#[test]
fn truncated_flatgeobuf_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded_store(dir.path());
    let bytes = std::fs::read(common::data("data/helsinki/helsinki.fgb")).unwrap();
    for (i, cut) in [bytes.len() * 6 / 10, 600, 12].into_iter().enumerate() {
        let f = dir.path().join(format!("cut{i}.fgb"));
        std::fs::write(&f, &bytes[..cut]).unwrap();
        expect_refused(&f, &store, &[f.to_str().unwrap()]);
    }
    let f = dir.path().join("cut0.fgb");
    let out = common::urbis(&[
        "import",
        f.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("truncated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn geojson_with_only_a_nan_coordinate_has_nothing_importable() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded_store(dir.path());
    let f = dir.path().join("nan.geojson");
    std::fs::write(&f, r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"a":1},"geometry":{"type":"Point","coordinates":[NaN,60.1]}}]}"#).unwrap();
    expect_refused(
        &f,
        &store,
        &["nothing importable", "non-finite coordinate", "feature #0"],
    );
}

#[test]
fn geojson_nan_feature_is_dropped_and_the_rest_imported() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let f = dir.path().join("mixed.geojson");
    std::fs::write(
        &f,
        r#"{"type":"FeatureCollection","features":[
{"type":"Feature","properties":{"n":0},"geometry":{"type":"Point","coordinates":[24.9,60.1]}},
{"type":"Feature","properties":{"n":1},"geometry":{"type":"LineString","coordinates":[[24.9,60.1],[Infinity,60.2]]}},
{"type":"Feature","properties":{"n":2},"geometry":{"type":"Point","coordinates":[24.95,60.17]}}]}"#,
    )
    .unwrap();
    let out = common::import_json(&f, &store, &[]);
    let q = &out[0]["quality"];
    assert_eq!(q["read"], 3);
    assert_eq!(q["imported"], 2);
    assert_eq!(q["dropped"]["non-finite coordinate (NaN or infinity)"], 1);
    assert_eq!(q["examples"][0]["feature"], 1);
}

#[test]
fn two_point_ring_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded_store(dir.path());
    let f = dir.path().join("ring.geojson");
    std::fs::write(&f, r#"{"type":"Feature","properties":{},"geometry":{"type":"Polygon","coordinates":[[[24.9,60.1],[24.95,60.15],[24.9,60.1]]]}}"#).unwrap();
    expect_refused(
        &f,
        &store,
        &[
            "nothing importable",
            "ring with fewer than 3 distinct points",
        ],
    );
}

#[test]
fn shapefile_without_its_dbf_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded_store(dir.path());
    for ext in ["shp", "shx", "prj"] {
        std::fs::copy(
            common::data(&format!(
                "tests/data/naturalearth/naturalearth_lowres/naturalearth_lowres.{ext}"
            )),
            dir.path().join(format!("lowres.{ext}")),
        )
        .unwrap();
    }
    expect_refused(&dir.path().join("lowres.shp"), &store, &[".dbf", "missing"]);
}

#[test]
fn empty_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded_store(dir.path());
    for name in ["empty.geojson", "empty.fgb", "empty.gpkg", "empty.shp"] {
        let f = dir.path().join(name);
        std::fs::write(&f, b"").unwrap();
        expect_refused(&f, &store, &["empty"]);
    }
    // Whitespace only, or an empty collection: nothing to import either.
    let f = dir.path().join("blank.geojson");
    std::fs::write(&f, b"{\"type\":\"FeatureCollection\",\"features\":[]}").unwrap();
    expect_refused(&f, &store, &["no features"]);
}

#[test]
fn non_geo_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded_store(dir.path());
    let text = dir.path().join("notes.geojson");
    std::fs::write(&text, "These are meeting notes, not a map.\n").unwrap();
    expect_refused(&text, &store, &["not GeoJSON", "urbis imports"]);
    let json = dir.path().join("config.json");
    std::fs::write(&json, r#"{"server": {"port": 8080}}"#).unwrap();
    expect_refused(&json, &store, &["not GeoJSON", "no \"type\""]);
    let binary = dir.path().join("photo.fgb");
    std::fs::write(
        &binary,
        [
            0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0xff, 0xfe,
        ],
    )
    .unwrap();
    expect_refused(&binary, &store, &["not a format urbis imports"]);
    let broken = dir.path().join("broken.geojson");
    std::fs::write(&broken, r#"{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"Point","coordinates":[1,2]},"properties":{}}"#).unwrap();
    expect_refused(&broken, &store, &["truncated", "line 1"]);
}

#[test]
fn a_foreign_crs_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded_store(dir.path());
    let f = dir.path().join("kkj.geojson");
    std::fs::write(
        &f,
        r#"{"type":"FeatureCollection","crs":{"type":"name","properties":{"name":"urn:ogc:def:crs:EPSG::2393"}},"features":[{"type":"Feature","properties":{},"geometry":{"type":"Point","coordinates":[3385000,6672000]}}]}"#,
    )
    .unwrap();
    expect_refused(&f, &store, &["EPSG:2393", "EPSG:4326", "ogr2ogr"]);
}

#[test]
fn web_mercator_input_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("merc.geojson");
    // Helsinki railway station in EPSG:3857.
    std::fs::write(
        &f,
        r#"{"type":"FeatureCollection","crs":{"type":"name","properties":{"name":"urn:ogc:def:crs:EPSG::3857"}},"features":[{"type":"Feature","properties":{},"geometry":{"type":"Point","coordinates":[2776315.0,8438977.0]}}]}"#,
    )
    .unwrap();
    let out = common::import_json(&f, &dir.path().join("s"), &[]);
    let b = out[0]["version"]["bounds"].as_array().unwrap();
    let r = 6_378_137.0f64;
    let (lon, lat) = (
        (2776315.0 / r).to_degrees(),
        (8438977.0f64 / r).sinh().atan().to_degrees(),
    );
    assert!(
        (b[0].as_f64().unwrap() - lon).abs() < 1e-6 && (b[1].as_f64().unwrap() - lat).abs() < 1e-6,
        "{b:?} vs {lon} {lat}"
    );
}

#[test]
fn newline_delimited_geojson_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("stops.geojsonl");
    std::fs::write(
        &f,
        "{\"type\":\"Feature\",\"id\":7,\"properties\":{\"name\":\"A\"},\"geometry\":{\"type\":\"Point\",\"coordinates\":[24.94,60.17]}}\n\
         {\"type\":\"Feature\",\"id\":\"x-9\",\"properties\":{\"name\":\"B\"},\"geometry\":{\"type\":\"Point\",\"coordinates\":[24.95,60.16]}}\n",
    )
    .unwrap();
    let store = dir.path().join("s");
    common::import_json(&f, &store, &[]);
    let r = urbis::store::Store::open(&store, false)
        .unwrap()
        .open_layer("stops")
        .unwrap();
    assert_eq!(r.feature_count(), 2);
    assert_eq!(r.meta().source.format, "geojsonseq");
    // Feature numbers follow the Hilbert curve; SOURCE_INDEX says which line each came from.
    let line = |i: u32| (0..2).find(|&f| r.source_index(f) == Some(i)).unwrap();
    assert_eq!(
        r.properties(line(0)).unwrap().id,
        Some(7),
        "integer ids become feature ids"
    );
    let p1 = r.named_properties(line(1));
    assert!(
        p1.iter()
            .any(|(k, v)| *k == "id" && *v == urbis::store::PropRef::String("x-9")),
        "string ids are kept as a property: {p1:?}"
    );
}
