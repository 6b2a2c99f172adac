//! `urbis export --to out.mbtiles|out.pmtiles`: the archive's tiles are byte for byte what
//! the running server sends (gzip), every non-empty tile of the zooms is there and no empty
//! one, the metadata is MBTiles 1.3's, GDAL's MBTiles driver reads the layer back with its
//! fields and exactly the features an independent decoder finds; the PMTiles archive, read by
//! Python's `pmtiles` (PyPI) and by the JavaScript `pmtiles` (npm), is clustered and holds the
//! same tiles.

mod common;

use common::Server;
use std::process::Command;

/// Rows of a SQLite query on the archive, through Python's sqlite3 (an independent reader).
fn sqlite(file: &std::path::Path, query: &str) -> Vec<Vec<serde_json::Value>> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys, json, base64\n\
             rows = sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchall()\n\
             print(json.dumps([[base64.b64encode(v).decode() if isinstance(v, bytes) else v for v in r] for r in rows]))",
        ])
        .arg(file)
        .arg(query)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn b64(s: &str) -> Vec<u8> {
    // The few tiles compared are decoded with Python too, to stay independent of our code.
    use std::io::Write;
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import base64, sys; sys.stdout.buffer.write(base64.b64decode(sys.stdin.read()))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    child.wait_with_output().unwrap().stdout
}

#[test]
fn an_mbtiles_export_holds_the_servers_tiles_and_gdal_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let imported = common::import_json(
        &common::data("tests/data/montevideo/montevideo.geojson.gz"),
        &store,
        &["--layer", "montevideo", "--classification", "public"],
    );
    // The full-resolution level holds every feature.
    let features = imported[0]["levels"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("feature count in {imported}"));
    let out = dir.path().join("mv.mbtiles");
    let o = common::urbis(&[
        "export",
        "montevideo",
        "--to",
        out.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!dir.path().join("mv.mbtiles.partial").exists());

    // Metadata (MBTiles 1.3).
    let meta: std::collections::BTreeMap<String, String> =
        sqlite(&out, "SELECT name, value FROM metadata")
            .into_iter()
            .map(|r| {
                (
                    r[0].as_str().unwrap().to_string(),
                    r[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
    assert_eq!(meta["format"], "pbf");
    assert_eq!(meta["name"], "montevideo");
    assert_eq!(meta["minzoom"], summary["minzoom"].to_string());
    assert_eq!(meta["maxzoom"], summary["maxzoom"].to_string());
    let json: serde_json::Value = serde_json::from_str(&meta["json"]).unwrap();
    assert_eq!(json["vector_layers"][0]["id"], "montevideo");
    assert!(
        json["vector_layers"][0]["fields"]
            .as_object()
            .unwrap()
            .len()
            > 3
    );
    let count = sqlite(&out, "SELECT count(*), sum(length(tile_data)) FROM tiles");
    assert_eq!(count[0][0], summary["tiles"], "{summary}");
    assert_eq!(count[0][1], summary["bytes"]);

    // The same tiles from the server, with gzip: byte for byte; an empty one is absent.
    let server = Server::start(&store, &[]);
    let rows = sqlite(
        &out,
        "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles ORDER BY random() LIMIT 25",
    );
    for r in &rows {
        let (z, x, tms) = (
            r[0].as_u64().unwrap(),
            r[1].as_u64().unwrap(),
            r[2].as_u64().unwrap(),
        );
        let y = (1u64 << z) - 1 - tms;
        let got = server.get(
            &format!("/tiles/montevideo/{z}/{x}/{y}.mvt"),
            &[("Accept-Encoding", "gzip")],
        );
        assert_eq!(got.status, 200, "{z}/{x}/{y}");
        assert_eq!(got.header("content-encoding"), Some("gzip"));
        assert!(
            got.body == b64(r[3].as_str().unwrap()),
            "tile {z}/{x}/{y} differs from the server's"
        );
    }
    // Every tile of z12 the server has is in the archive, and none it answers 204.
    let z12 = sqlite(
        &out,
        "SELECT tile_column, tile_row FROM tiles WHERE zoom_level = 12",
    );
    let have: std::collections::BTreeSet<(u64, u64)> = z12
        .iter()
        .map(|r| {
            (
                r[0].as_u64().unwrap(),
                (1 << 12) - 1 - r[1].as_u64().unwrap(),
            )
        })
        .collect();
    let (xs, ys) = (
        have.iter().map(|t| t.0).min().unwrap()..=have.iter().map(|t| t.0).max().unwrap(),
        have.iter().map(|t| t.1).min().unwrap()..=have.iter().map(|t| t.1).max().unwrap(),
    );
    for x in xs.start() - 1..=xs.end() + 1 {
        for y in ys.start() - 1..=ys.end() + 1 {
            let s = server
                .get(&format!("/tiles/montevideo/12/{x}/{y}.mvt"), &[])
                .status;
            assert_eq!(s == 200, have.contains(&(x, y)), "12/{x}/{y}: {s}");
        }
    }

    // GDAL reads it back: the layer, its fields, and at the top zoom exactly the features
    // Python's mapbox-vector-tile decodes from the same tiles (GDAL counts a feature once per
    // tile it is in).
    let info = Command::new("ogrinfo")
        .args(["-ro", "-so", "-al"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    assert!(text.contains("using driver `MBTiles'"), "{text}");
    assert!(text.contains("Layer name: montevideo"), "{text}");
    let n: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Feature Count: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    let decoded = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, gzip, sys, mapbox_vector_tile as m\n\
             c = sqlite3.connect(sys.argv[1])\n\
             z = c.execute('SELECT max(zoom_level) FROM tiles').fetchone()[0]\n\
             print(sum(len(l['features']) for (d,) in c.execute('SELECT tile_data FROM tiles WHERE zoom_level = ?', (z,)) for l in m.decode(gzip.decompress(d)).values()))",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        decoded.status.success(),
        "{}",
        String::from_utf8_lossy(&decoded.stderr)
    );
    let want: u64 = String::from_utf8_lossy(&decoded.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        n, want,
        "GDAL and mapbox-vector-tile disagree on the top zoom's features"
    );
    assert!(
        n * 2 > features,
        "{n} of {features} features at the top zoom"
    );
    assert!(text.contains("amenity: String"), "{text}");

    // The same layer as PMTiles: Python's `pmtiles` reader (PyPI) finds a clustered, gzip,
    // MVT archive with the same zooms, every tile of the MBTiles archive byte for byte and no
    // other.
    let pm = dir.path().join("mv.pmtiles");
    let o = common::urbis(&[
        "export",
        "montevideo",
        "--to",
        pm.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pm_summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(pm_summary["tiles"], summary["tiles"]);
    let check = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys, json\n\
             from pmtiles.reader import Reader, MmapSource, all_tiles\n\
             r = Reader(MmapSource(open(sys.argv[1], 'rb')))\n\
             h = r.header()\n\
             c = sqlite3.connect(sys.argv[2])\n\
             same = sum(1 for (z, x, t, d) in c.execute('SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles') if r.get(z, x, (1 << z) - 1 - t) == d)\n\
             n = sum(1 for _ in all_tiles(r.get_bytes))\n\
             print(json.dumps({'clustered': h['clustered'], 'gzip': h['tile_compression'].name, 'type': h['tile_type'].name, 'min': h['min_zoom'], 'max': h['max_zoom'], 'same': same, 'tiles': n, 'layer': r.metadata()['vector_layers'][0]['id']}))",
        ])
        .arg(&pm)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(check.stdout.trim_ascii()).unwrap();
    assert_eq!(seen["clustered"], true, "{seen}");
    assert_eq!(seen["gzip"], "GZIP");
    assert_eq!(seen["type"], "MVT");
    assert_eq!(seen["min"], summary["minzoom"]);
    assert_eq!(seen["max"], summary["maxzoom"]);
    assert_eq!(seen["layer"], "montevideo");
    assert_eq!(
        seen["same"], summary["tiles"],
        "every MBTiles tile, byte for byte: {seen}"
    );
    assert_eq!(seen["tiles"], summary["tiles"], "and no other: {seen}");

    // And the JavaScript reader MapLibre uses (npm `pmtiles`, installed by .ci/run) finds every
    // MBTiles tile in it with the same bytes (GDAL 3.6 of Debian 12 has no PMTiles driver).
    let list = dir.path().join("tiles.txt");
    {
        use sha2::Digest;
        let db = rusqlite::Connection::open(&out).unwrap();
        let mut q = db
            .prepare("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")
            .unwrap();
        let rows: Vec<String> = q
            .query_map([], |r| {
                let (z, x, row, data): (u32, i64, i64, Vec<u8>) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                let y = (1i64 << z) - 1 - row;
                // The JavaScript reader hands tiles decompressed.
                let mut raw = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&data[..]), &mut raw)
                    .unwrap();
                let hex: String = sha2::Sha256::digest(&raw)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                Ok(format!("{z} {x} {y} {hex}"))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        std::fs::write(&list, rows.join("\n")).unwrap();
    }
    let node = Command::new("node")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/pmtiles.mjs"))
        .arg(&pm)
        .arg(&list)
        .output()
        .expect("run node");
    assert!(
        node.status.success(),
        "{}",
        String::from_utf8_lossy(&node.stderr)
    );
    let js: serde_json::Value = serde_json::from_slice(node.stdout.trim_ascii()).unwrap();
    assert_eq!(js["type"], 1, "MVT: {js}");
    assert_eq!(js["compression"], 2, "gzip: {js}");
    assert_eq!(js["clustered"], true);
    assert_eq!(js["layer"], "montevideo");
    assert_eq!(js["listed"], summary["tiles"]);
    assert_eq!(
        js["same"], summary["tiles"],
        "every tile byte for byte: {js}"
    );

    // Options checked with clear errors.
    let bad = common::urbis(&[
        "export",
        "montevideo",
        "--to",
        dir.path().join("x.zip").to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains(".mbtiles"));
    let bad = common::urbis(&[
        "export",
        "nosuch",
        "--to",
        dir.path().join("x.mbtiles").to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no layer \"nosuch\""));
    assert!(!dir.path().join("x.mbtiles").exists());
}

#[test]
fn a_layer_exported_as_flatgeobuf_geopackage_and_geojson_has_every_feature_and_property() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let source = common::data("tests/data/montevideo/montevideo.geojson.gz");
    let imported = common::import_json(&source, &store, &["--layer", "montevideo"]);
    // The import removed degenerate parts of two features (its report says so): their first
    // coordinate may differ from the source's.
    let repaired = imported[0]["quality"]["repaired"].as_u64().unwrap();
    assert_eq!(repaired, 2, "{imported}");
    for ext in ["fgb", "geojson", "gpkg"] {
        let to = dir.path().join(format!("mv.{ext}"));
        let o = common::urbis(&[
            "export",
            "montevideo",
            "--to",
            to.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(s["features"], 239_486, "{s}");
        // GDAL reads it: every feature, the fields with their types, WGS 84.
        let info = Command::new("ogrinfo")
            .args(["-ro", "-so", "-al"])
            .arg(&to)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&info.stdout);
        assert!(
            info.status.success(),
            "{}",
            String::from_utf8_lossy(&info.stderr)
        );
        assert!(text.contains("Feature Count: 239486"), "{ext}: {text}");
        assert!(text.contains("amenity: String"), "{ext}: {text}");
        assert!(
            text.contains("osm_id: Real") || text.contains("osm_id: Integer64"),
            "{ext}: {text}"
        );
        assert!(
            text.contains("4326") || text.contains("WGS 84"),
            "{ext}: {text}"
        );
    }
    // GDAL converts the FlatGeobuf and the GeoPackage to GeoJSON; Python compares each and our
    // GeoJSON with the source, feature by feature: the same properties (nulls, which the store
    // does not keep, left out), the same geometry types (the GeoPackage's column is of the
    // layer's multi type when it holds one kind), coordinates within the store's 1 cm grid.
    for ext in ["fgb", "gpkg"] {
        let via_gdal = dir.path().join(format!("via-gdal-{ext}.geojson"));
        let st = Command::new("ogr2ogr")
            .args(["-f", "GeoJSON"])
            .arg(&via_gdal)
            .arg(dir.path().join(format!("mv.{ext}")))
            .status()
            .unwrap();
        assert!(st.success());
        let check = Command::new("python3")
            .args([
                "-c",
                "import gzip, json, sys\n\
                 src = json.load(gzip.open(sys.argv[1]))['features']\n\
                 ours = json.load(open(sys.argv[2]))['features']\n\
                 theirs = {f['properties']['osm_id']: f for f in json.load(open(sys.argv[3]))['features']}\n\
                 def first(g):\n\
                 \x20   c = g['coordinates']\n\
                 \x20   while isinstance(c[0], list): c = c[0]\n\
                 \x20   return c\n\
                 def kind(t): return t.replace('Multi', '')\n\
                 bad = 0\n\
                 for a, b in zip(src, ours):\n\
                 \x20   p = {k: v for k, v in a['properties'].items() if v is not None}\n\
                 \x20   f = theirs.get(p.get('osm_id'))\n\
                 \x20   ok = p == b['properties'] and a['geometry']['type'] == b['geometry']['type']\n\
                 \x20   ok = ok and all(abs(u - v) < 2e-7 for u, v in zip(first(a['geometry']), first(b['geometry'])))\n\
                 \x20   ok = ok and f is not None and kind(f['geometry']['type']) == kind(b['geometry']['type'])\n\
                 \x20   ok = ok and f is not None and all(abs(u - v) < 1e-9 for u, v in zip(first(f['geometry']), first(b['geometry'])))\n\
                 \x20   ok = ok and f is not None and {k: v for k, v in f['properties'].items() if v is not None} == p\n\
                 \x20   bad += not ok\n\
                 print(json.dumps({'source': len(src), 'ours': len(ours), 'theirs': len(theirs), 'bad': bad}))",
            ])
            .arg(&source)
            .arg(dir.path().join("mv.geojson"))
            .arg(&via_gdal)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        let seen: serde_json::Value = serde_json::from_slice(check.stdout.trim_ascii()).unwrap();
        assert_eq!(seen["source"], seen["ours"], "{ext}: {seen}");
        assert!(seen["bad"].as_u64().unwrap() <= repaired, "{ext}: {seen}");
    }

    // A file holds one layer, whole.
    let bad = common::urbis(&[
        "export",
        "montevideo",
        "--to",
        dir.path().join("x.fgb").to_str().unwrap(),
        "--maxzoom",
        "3",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("whole layer at full resolution"));
}
