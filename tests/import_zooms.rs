//! The zoom range: chosen from the data's density when not given, as asked when given.

mod common;

fn maxzoom(out: &serde_json::Value) -> u64 {
    out[0]["version"]["maxzoom"].as_u64().unwrap()
}

#[test]
fn maxzoom_follows_the_density_of_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let city = maxzoom(&common::import_json(
        &common::data("data/helsinki/helsinki.geojson"),
        store,
        &[],
    ));
    let world = maxzoom(&common::import_json(
        &common::data("tests/data/naturalearth/naturalearth_lowres/naturalearth_lowres.shp"),
        store,
        &[],
    ));
    let places = maxzoom(&common::import_json(
        &common::data("tests/data/naturalearth/naturalearth_cities/naturalearth_cities.shp"),
        store,
        &[],
    ));
    // A city centre mapped to the metre needs street-level zooms; 1:110m countries do not.
    assert!((13..=16).contains(&city), "Helsinki got maxzoom {city}");
    assert!(world <= 4, "1:110m countries got maxzoom {world}");
    assert!(places < city, "world cities {places} vs city centre {city}");
}

#[test]
fn explicit_zooms_are_kept_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let src = common::data("tests/data/naturalearth/naturalearth_cities/naturalearth_cities.shp");
    let out = common::import_json(&src, dir.path(), &["--minzoom", "2", "--maxzoom", "9"]);
    assert_eq!(out[0]["version"]["minzoom"], 2);
    assert_eq!(out[0]["version"]["maxzoom"], 9);
    assert_eq!(
        out[0]["levels"].as_array().unwrap().len(),
        8,
        "one level per zoom 2..=9"
    );
    let bad = common::urbis(&[
        "import",
        src.to_str().unwrap(),
        "--store",
        dir.path().to_str().unwrap(),
        "--minzoom",
        "8",
        "--maxzoom",
        "3",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--maxzoom must not be below --minzoom"));
    let bad = common::urbis(&[
        "import",
        src.to_str().unwrap(),
        "--store",
        dir.path().to_str().unwrap(),
        "--maxzoom",
        "25",
    ]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "clap refuses out-of-range zooms"
    );
}
