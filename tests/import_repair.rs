//! Invalid polygons are repaired into valid ones covering what GEOS's `make_valid` covers:
//! every country of Natural Earth's 10 m layer, made invalid by the test four ways (see
//! `tests/repair_check.py`), is valid after import (shapely says so) and has the area of
//! shapely's `make_valid` within 0.1 %.

mod common;

use std::process::Command;
use urbis::store::Store;

fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(common::root().join("tests/repair_check.py"))
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "repair_check.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Every stored feature of `layer` as `{"index": its property i, "parts": [[ring of [x, y]]]}`,
/// rings closed, in grid units.
fn dump(store: &std::path::Path, layer: &str) -> serde_json::Value {
    let s = Store::open(store, false).unwrap();
    let reader = s.open_layer(layer).unwrap();
    let full = reader.level(reader.maxzoom()).unwrap();
    let mut out = Vec::new();
    for i in 0..full.len() {
        let item = full.item(i);
        let g = item.decode().unwrap();
        // The test numbered the features of its file ("i").
        let index = reader
            .named_properties(item.feature)
            .into_iter()
            .find_map(|(k, v)| match (k, v) {
                ("i", urbis::store::props::PropRef::Int(i)) => Some(i),
                _ => None,
            })
            .expect("property i");
        let parts: Vec<Vec<Vec<[f64; 2]>>> = g
            .parts
            .iter()
            .map(|rings| {
                rings
                    .iter()
                    .map(|r| {
                        let mut r: Vec<[f64; 2]> = r
                            .iter()
                            .map(|p| [f64::from(p[0]), f64::from(p[1])])
                            .collect();
                        if r.first() != r.last() {
                            r.push(r[0]);
                        }
                        r
                    })
                    .collect()
            })
            .collect();
        out.push(serde_json::json!({"index": index, "parts": parts}));
    }
    serde_json::Value::Array(out)
}

#[test]
fn natural_earth_countries_made_invalid_are_valid_after_import_with_geos_areas() {
    let dir = tempfile::tempdir().unwrap();
    let src = common::data("tests/data/naturalearth/ne-countries-10m.geojson.gz");
    let invalid = dir.path().join("invalid.geojson");
    let expected = dir.path().join("expected.json");
    python(&[
        "make",
        src.to_str().unwrap(),
        invalid.to_str().unwrap(),
        expected.to_str().unwrap(),
    ]);
    let store = dir.path().join("store");
    let report = common::import_json(&invalid, &store, &["--layer", "countries"]);
    let q = &report[0]["quality"];
    let rebuilt = q["repairs"]["invalid polygon rebuilt (sweep line)"]
        .as_u64()
        .unwrap_or(0);
    assert!(rebuilt >= 150, "{q}");
    let imported = dir.path().join("imported.json");
    std::fs::write(&imported, dump(&store, "countries").to_string()).unwrap();
    let r: serde_json::Value = serde_json::from_str(&python(&[
        "check",
        expected.to_str().unwrap(),
        imported.to_str().unwrap(),
    ]))
    .unwrap();
    eprintln!("{r}");
    assert_eq!(
        r["features"], 254,
        "every feature but Vatican's empty one: {r}"
    );
    assert!(r["made_invalid"].as_u64().unwrap() >= 150, "{r}");
    assert_eq!(
        r["invalid"],
        serde_json::json!([]),
        "invalid after import: {r}"
    );
    // Every area within 0.1 % of GEOS's but Russia's (feature 48), whose parts overlap each
    // other: even-odd cuts every overlap, GEOS's linework keeps some (see
    // `src/import/makevalid.rs`); it stays within 1 %.
    let off: Vec<&serde_json::Value> = r["area"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| !(a[0] == 48 && a[4].as_f64().unwrap() < 0.01))
        .collect();
    assert!(off.is_empty(), "areas off GEOS's by more than 0.1 %: {r}");
}

/// The bench's hard case at a third of its size (`repair_check.py dense`: the countries
/// densified to about 2.7 M vertices, a crossing every 2,000 vertices of every ring): a dozen
/// invalid features of over 50,000 vertices, each repaired on its own thread, their clusters
/// of parts in parallel, while the importer's workers wait for them. All are repaired well
/// within the timeout (work handed to the importer's own busy pool would have waited for
/// the workers that wait for it, until the timeout dropped the features), and valid.
#[test]
fn many_large_invalid_features_at_once_are_repaired_in_parallel_well_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let src = common::data("tests/data/naturalearth/ne-countries-10m.geojson.gz");
    let dense = dir.path().join("dense.geojson");
    python(&[
        "dense",
        src.to_str().unwrap(),
        dense.to_str().unwrap(),
        "2500000",
    ]);
    let store = dir.path().join("store");
    let started = std::time::Instant::now();
    let report = common::import_json(
        &dense,
        &store,
        &["--layer", "dense", "--feature-timeout", "30s"],
    );
    eprintln!("imported in {:.1} s", started.elapsed().as_secs_f64());
    let q = &report[0]["quality"];
    assert_eq!(q["dropped"], serde_json::json!({}), "{q}");
    assert_eq!(q["imported"], 254, "{q}");
    assert!(
        q["repairs"]["invalid polygon rebuilt (sweep line)"]
            .as_u64()
            .unwrap_or(0)
            >= 150,
        "{q}"
    );
    assert!(
        q["slowest"][0]["ms"].as_f64().unwrap() < 15_000.0,
        "no feature near the timeout: {q}"
    );
    let imported = dir.path().join("imported.json");
    std::fs::write(&imported, dump(&store, "dense").to_string()).unwrap();
    assert_eq!(
        python(&["valid", imported.to_str().unwrap()]).trim(),
        "[]",
        "GEOS finds no invalid polygon"
    );
}

/// A ring of about 1,000,000 vertices (a circle on the grid) with 1,000 petals, each a loop
/// that crosses itself once: the ring goes out to `q1`, across to `q2` and back to the next
/// circle vertex, crossing its own outgoing edge near the circle. Returns the ring and the
/// area that ring encloses once repaired: the circle's, plus each petal's triangle beyond
/// the crossing and the sliver between the crossing and the circle's edge.
pub fn petal_ring() -> (Vec<geo::Coord>, f64) {
    let (n, petals) = (998_000usize, 1_000usize);
    let (cx, cy, r) = (2_147_483_648.0f64, 2_147_483_648.0f64, 100_000_000.0f64);
    let base: Vec<[f64; 2]> = (0..n)
        .map(|i| {
            let a = i as f64 / n as f64 * std::f64::consts::TAU;
            [(cx + r * a.cos()).round(), (cy + r * a.sin()).round()]
        })
        .collect();
    let shoelace = |r: &[[f64; 2]]| -> f64 {
        (0..r.len())
            .map(|i| {
                let (a, b) = (r[i], r[(i + 1) % r.len()]);
                a[0] * b[1] - b[0] * a[1]
            })
            .sum::<f64>()
            / 2.0
    };
    let tri = |a: [f64; 2], b: [f64; 2], c: [f64; 2]| shoelace(&[a, b, c]).abs();
    let mut expected = shoelace(&base);
    let (d, h) = (r / 400.0, r / 20.0);
    let mut ring = Vec::with_capacity(n + 2 * petals);
    for i in 0..n {
        let p = base[i];
        ring.push(geo::Coord { x: p[0], y: p[1] });
        if i % (n / petals) == 0 {
            let q = base[(i + 1) % n];
            let len = ((q[0] - p[0]).powi(2) + (q[1] - p[1]).powi(2)).sqrt();
            let t = [(q[0] - p[0]) / len, (q[1] - p[1]) / len];
            // Outward: right of the direction of travel on a counter-clockwise ring.
            let o = [t[1], -t[0]];
            let q1 = [
                (p[0] + d * t[0] + h * o[0]).round(),
                (p[1] + d * t[1] + h * o[1]).round(),
            ];
            let q2 = [
                (p[0] - d * t[0] + h * o[0]).round(),
                (p[1] - d * t[1] + h * o[1]).round(),
            ];
            // Where p->q1 crosses q2->q.
            let (e1, e2) = ([q1[0] - p[0], q1[1] - p[1]], [q[0] - q2[0], q[1] - q2[1]]);
            let den = e1[0] * e2[1] - e1[1] * e2[0];
            let s = ((q2[0] - p[0]) * e2[1] - (q2[1] - p[1]) * e2[0]) / den;
            let x = [p[0] + s * e1[0], p[1] + s * e1[1]];
            expected += tri(x, q1, q2) + tri(p, x, q);
            ring.push(geo::Coord { x: q1[0], y: q1[1] });
            ring.push(geo::Coord { x: q2[0], y: q2[1] });
        }
    }
    (ring, expected)
}

#[test]
fn a_million_vertex_ring_with_a_thousand_self_crossings_is_repaired_fast_and_right() {
    let (ring, expected) = petal_ring();
    assert_eq!(ring.len(), 1_000_000);
    let t0 = std::time::Instant::now();
    let out = urbis::import::makevalid::repair(&[vec![ring]]);
    let took = t0.elapsed();
    eprintln!("1,000,000 vertices, 1,000 crossings repaired in {took:?} (debug build)");
    // The release bench (`cargo bench --bench import -- repair`) holds the 5 s target; a
    // debug build is slower, but never minutes as a triangulation was.
    assert!(took < std::time::Duration::from_secs(60), "{took:?}");
    assert_eq!(
        out.len(),
        1 + 1_000,
        "the circle and each petal's far triangle"
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("petals.json");
    let parts: Vec<Vec<Vec<[f64; 2]>>> = out
        .iter()
        .map(|p| {
            p.iter()
                .map(|r| {
                    let mut r: Vec<[f64; 2]> = r.iter().map(|c| [c.x, c.y]).collect();
                    r.push(r[0]);
                    r
                })
                .collect()
        })
        .collect();
    std::fs::write(&f, serde_json::to_string(&parts).unwrap()).unwrap();
    let py = Command::new("python3")
        .args([
            "-c",
            "import sys, json, shapely\n\
             from shapely.geometry import MultiPolygon, Polygon\n\
             g = MultiPolygon([Polygon(p[0], p[1:]) for p in json.load(open(sys.argv[1]))])\n\
             print(json.dumps({'valid': bool(g.is_valid), 'why': shapely.is_valid_reason(g), 'area': g.area}))",
            f.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(r["valid"], true, "{r}");
    let area = r["area"].as_f64().unwrap();
    let rel = (area - expected).abs() / expected;
    eprintln!("area {area} expected {expected}: {rel:e} off");
    assert!(rel < 0.001, "area {area}, expected {expected} ({rel} off)");
}

#[test]
fn a_feature_over_the_timeout_is_dropped_by_name_and_the_import_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // A 300,000-vertex circle named "Big island" beside two small squares.
    let n = 300_000;
    let circle: Vec<String> = (0..=n)
        .map(|i| {
            let a = (i % n) as f64 / n as f64 * std::f64::consts::TAU;
            format!("[{:.7},{:.7}]", 10.0 * a.cos(), 10.0 * a.sin())
        })
        .collect();
    let square = |x: f64| {
        format!(
            "[[{x},30],[{},30],[{},31],[{x},31],[{x},30]]",
            x + 1.0,
            x + 1.0
        )
    };
    let text = format!(
        r#"{{"type":"FeatureCollection","features":[
        {{"type":"Feature","properties":{{"name":"Small one"}},"geometry":{{"type":"Polygon","coordinates":[{}]}}}},
        {{"type":"Feature","properties":{{"name":"Big island"}},"geometry":{{"type":"Polygon","coordinates":[[{}]]}}}},
        {{"type":"Feature","properties":{{"name":"Small two"}},"geometry":{{"type":"Polygon","coordinates":[{}]}}}}]}}"#,
        square(40.0),
        circle.join(","),
        square(50.0)
    );
    let file = dir.path().join("islands.geojson");
    std::fs::write(&file, text).unwrap();
    let r = common::import_json(
        &file,
        &dir.path().join("a"),
        &["--layer", "islands", "--feature-timeout", "1ms"],
    );
    let q = &r[0]["quality"];
    assert_eq!(q["imported"], 2, "{q}");
    assert_eq!(
        q["dropped"]["took longer than --feature-timeout to repair"], 1,
        "{q}"
    );
    let ex = &q["examples"][0];
    assert_eq!(ex["feature"], 1);
    assert!(
        ex["detail"]
            .as_str()
            .unwrap()
            .starts_with("Big island: more than"),
        "{q}"
    );
    // With the default timeout it is imported, and the report names it as the slowest.
    let r = common::import_json(&file, &dir.path().join("b"), &["--layer", "islands"]);
    let q = &r[0]["quality"];
    assert_eq!(q["imported"], 3, "{q}");
    assert_eq!(q["slowest"][0]["name"], "Big island", "{q}");
    assert_eq!(q["slowest"][0]["feature"], 1, "{q}");
    // A bad timeout is refused with the flag's rules.
    let out = common::urbis(&[
        "import",
        file.to_str().unwrap(),
        "--store",
        dir.path().join("c").to_str().unwrap(),
        "--feature-timeout",
        "5y",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown unit"));
}
