//! Live layers in tiles: a composite tile of a live layer and layer files gives every layer
//! the same share of the byte budget, as a composite of layer files does, so it never exceeds it.

mod common;

use common::live::*;
use common::{Server, import_json};
use sha2::{Digest, Sha256};

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Registers `n` trackers on live layer `layer` and an ingest key, by writing the registry
/// file in its documented format (version 1); returns the key.
fn register_fleet(store: &std::path::Path, layer: &str, n: usize) -> String {
    let key = "ik_composite_budget_test_key";
    let devices: serde_json::Map<String, serde_json::Value> = (0..n)
        .map(|i| {
            (
                format!("bus-{i}"),
                serde_json::json!({"layer": layer, "kind": "tracker", "interval_s": 60,
                    "secret_sha256": sha256_hex(&format!("ds_bus_{i}")), "created": 0}),
            )
        })
        .collect();
    let reg = serde_json::json!({"format_version": 1, "devices": devices,
        "ingest_keys": {"test": sha256_hex(key)}});
    std::fs::create_dir_all(store.join("live")).unwrap();
    std::fs::write(store.join("live/devices.json"), reg.to_string()).unwrap();
    key.to_string()
}

/// The layers of a raw tile, as (name, bytes of its layer message): a tile is a sequence of
/// length-delimited field-3 messages, and a layer's name is its field 1.
fn layer_sizes(tile: &[u8]) -> Vec<(String, usize)> {
    fn varint(b: &[u8], i: &mut usize) -> usize {
        let (mut v, mut shift) = (0usize, 0);
        loop {
            let byte = b[*i];
            *i += 1;
            v |= usize::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < tile.len() {
        assert_eq!(tile[i], 0x1a, "a tile holds only layers (field 3)");
        i += 1;
        let len = varint(tile, &mut i);
        let layer = &tile[i..i + len];
        assert_eq!(layer[0], 0x0a, "a layer starts with its name (field 1)");
        let mut j = 1;
        let n = varint(layer, &mut j);
        let name = String::from_utf8(layer[j..j + n].to_vec()).unwrap();
        out.push((name, len));
        i += len;
    }
    out
}

#[test]
fn a_composite_of_a_live_layer_and_layer_files_shares_the_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let montevideo = common::data("tests/data/montevideo/montevideo.geojson.gz");
    import_json(&montevideo, &store, &["--layer", "places"]);
    import_json(&montevideo, &store, &["--layer", "more_places"]);
    let devices = 400;
    let key = register_fleet(&store, "fleet", devices);
    let budget = 16 * 1024;
    let server = Server::start(&store, &["--tile-budget-kb", "16"]);
    // Every bus in one z15 tile of central Montevideo, each with 30 telemetry values: far
    // more than the budget in that tile alone.
    let (lon0, lat0) = (-56.1913, -34.9058);
    let t = now() - 60.0;
    let body: Vec<String> = (0..devices)
        .map(|i| {
            let telemetry: Vec<String> = (0..30)
                .map(|k| format!(r#""sensor_{k}":{}.5"#, i * 31 + k))
                .collect();
            format!(
                r#"{{"device":"bus-{i}","lat":{},"lon":{},"t":{t},{}}}"#,
                lat0 + (i % 20) as f64 * 0.0004,
                lon0 + (i / 20) as f64 * 0.0004,
                telemetry.join(",")
            )
        })
        .collect();
    let r = post_json(
        &server.addr,
        &format!("Bearer {key}"),
        &format!("[{}]", body.join(",")),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (x, y, _, _) = tile_of(lon0 + 0.004, lat0 + 0.004, 15);
    let get = |layers: &str| {
        let r = server.get(&format!("/tiles/{layers}/15/{x}/{y}.mvt"), &[]);
        assert_eq!(
            r.status,
            200,
            "{layers}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let dropped: usize = r
            .header("urbis-dropped-features")
            .map_or(0, |d| d.parse().unwrap());
        (r.body, dropped)
    };
    // Each alone is over the budget and drops features to fit it.
    let mut alone = 0;
    for layer in ["fleet", "places", "more_places"] {
        let (bytes, dropped) = get(layer);
        eprintln!("{layer} alone: {} bytes, {dropped} dropped", bytes.len());
        assert!(dropped > 0 && bytes.len() <= budget, "{layer}");
        alone += bytes.len();
    }
    // The three parts at a full budget each would not fit one budget together.
    assert!(
        alone > budget,
        "the test needs parts that overflow together: {alone}"
    );
    for layers in ["fleet,places,more_places", "places,fleet,more_places"] {
        let (tile, dropped) = get(layers);
        let sizes = layer_sizes(&tile);
        eprintln!(
            "{layers}: {} bytes, {dropped} dropped, {sizes:?}",
            tile.len()
        );
        assert!(
            tile.len() <= budget,
            "{layers}: {} bytes over {budget}",
            tile.len()
        );
        // Every layer, live or not, within the same share, in the order asked for.
        let names: Vec<&str> = sizes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, layers.split(',').collect::<Vec<_>>());
        for (name, size) in &sizes {
            assert!(
                *size <= budget / 3,
                "{layers}: {name} has {size} bytes of {}",
                budget / 3
            );
        }
        // An independent decoder reads the live part with some buses, not all.
        let buses = decode_tile(&tile, "fleet");
        assert!(
            !buses.is_empty() && buses.len() < devices,
            "{} buses",
            buses.len()
        );
        assert!(!decode_tile(&tile, "places").is_empty());
    }
}
