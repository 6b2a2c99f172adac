//! Replays every input kept under `fuzz/regressions/TARGET/` (crashes the fuzzers found, and
//! seeds) through the same entry points the fuzz targets use: none may panic.

use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8]) -> usize) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap();
        let result = std::panic::catch_unwind(|| run(&bytes));
        assert!(result.is_ok(), "{} panics", entry.path().display());
        n += 1;
    }
    n
}

#[test]
fn geojson_regressions_do_not_panic() {
    replay("geojson", urbis::import::fuzzing::geojson);
}

#[test]
fn flatgeobuf_regressions_do_not_panic() {
    replay("flatgeobuf", urbis::import::fuzzing::flatgeobuf);
}

#[test]
fn geopackage_regressions_do_not_panic() {
    replay("geopackage", urbis::import::fuzzing::geopackage);
}

#[test]
fn shapefile_regressions_do_not_panic() {
    replay("shapefile", urbis::import::fuzzing::shapefile);
}

#[test]
fn coap_regressions_do_not_panic() {
    replay("coap", urbis::live::fuzzing::coap);
}

#[test]
fn senml_json_regressions_do_not_panic() {
    replay("senml_json", |d| {
        urbis::live::fuzzing::senml_json(d) + urbis::live::fuzzing::compact(d)
    });
}

#[test]
fn senml_cbor_regressions_do_not_panic() {
    replay("senml_cbor", urbis::live::fuzzing::senml_cbor);
}

#[test]
fn live_fuzz_entry_points_accept_real_reports() {
    use urbis::live::fuzzing as f;
    assert_eq!(
        f::senml_json(br#"[{"bn":"d/","n":"lat","v":1},{"n":"lon","v":2}]"#),
        1
    );
    assert_eq!(f::compact(br#"{"lat":1,"lon":2}"#), 1);
    // A CON POST /r/d?k=ds_fuzz with content-format 50.
    let mut m = vec![
        0x40, 0x02, 0x00, 0x01, 0xB1, b'r', 0x01, b'd', 0x11, 50, 0x39,
    ];
    m.extend_from_slice(b"k=ds_fuzz");
    m.push(0xFF);
    m.extend_from_slice(br#"{"lat":1,"lon":2}"#);
    assert_eq!(f::coap(&m), 1);
}

#[test]
fn fuzz_entry_points_read_real_files() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read(root.join(p)).unwrap();
    // The fuzz sink stops an input after 10,000 features.
    assert!(urbis::import::fuzzing::flatgeobuf(&read("data/helsinki/helsinki.fgb")) > 10_000);
    assert!(
        urbis::import::fuzzing::geopackage(&read("data/helsinki/helsinki_layers.gpkg")) > 10_000
    );
    let shp = urbis::import::fuzzing::pack_shapefile(
        &read("tests/data/naturalearth/naturalearth_cities/naturalearth_cities.shp"),
        &read("tests/data/naturalearth/naturalearth_cities/naturalearth_cities.dbf"),
    );
    assert_eq!(urbis::import::fuzzing::shapefile(&shp), 243);
    let gj = br#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},"geometry":{"type":"Point","coordinates":[1,2]}}]}"#;
    assert_eq!(urbis::import::fuzzing::geojson(gj), 1);
}

#[test]
fn security_parser_regressions_do_not_panic() {
    use urbis::api::fuzzing as f;
    use urbis::security::fuzzing::policy;
    assert!(replay("policy", policy) >= 3);
    assert!(replay("api_key", f::api_key) >= 3);
    assert!(replay("tile_path", f::tile_path) >= 4);
    // The seeds say what they are: a valid policy, key and path pass; the others do not.
    assert!(policy(b"[roles.x]\nclearance = \"public\"\n") > 6);
    assert_eq!(policy(b"[roles.x]\nclearance = 3\n"), 0);
    assert_eq!(f::api_key(&[b"uk_".as_slice(), &[b'a'; 64]].concat()), 1);
    assert_eq!(f::api_key(b"uk_zz"), 0);
    assert_eq!(f::tile_path(b"parks/14/9325/4742.mvt"), 1);
    assert_eq!(f::tile_path(b"../x/0/0/0.mvt"), 0);
}
