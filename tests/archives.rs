//! Tile archives as layers: `urbis import out.pmtiles|out.mbtiles` publishes the archive into
//! the store and the server serves its tiles as they are: byte for byte the tiles the server
//! that exported them serves, in the catalog and TileJSON with the archive's own vector
//! layers, as PNG too; a broken archive is refused with a clear error.

mod common;

use common::Server;

#[test]
fn an_exported_archive_imported_as_a_layer_serves_the_same_tiles() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    common::import_json(
        &common::data("tests/data/montevideo/montevideo.geojson.gz"),
        &a,
        &["--layer", "montevideo"],
    );
    for ext in ["pmtiles", "mbtiles"] {
        let to = dir.path().join(format!("mv.{ext}"));
        let o = common::urbis(&[
            "export",
            "montevideo",
            "--to",
            to.to_str().unwrap(),
            "--maxzoom",
            "14",
            "--store",
            a.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let imported = common::import_json(&to, &b, &["--layer", &format!("mv_{ext}")]);
        assert_eq!(imported[0]["layer"], format!("mv_{ext}"), "{imported}");
    }
    let o = common::urbis(&[
        "layers",
        "classify",
        "mv_pmtiles",
        "public",
        "--store",
        b.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let original = Server::start(&a, &[]);
    let served = Server::start(&b, &[]);

    // The fixed tiles of the tile bench (z10, z12, z14 over Montevideo), from both archives.
    let list = std::fs::read_to_string(common::data("benches/peers/montevideo_tiles.txt")).unwrap();
    let mut compared = 0;
    for t in list.lines().filter(|l| !l.is_empty()) {
        let want = original.get(&format!("/tiles/montevideo/{t}.mvt"), &[]);
        assert!(want.status == 200 || want.status == 204, "{t}");
        for layer in ["mv_pmtiles", "mv_mbtiles"] {
            let got = served.get(&format!("/tiles/{layer}/{t}.mvt"), &[]);
            // An empty tile is 204 from both (the archive leaves it out).
            assert_eq!(got.status, want.status, "{layer} {t}");
            assert_eq!(got.body, want.body, "{layer} {t}: the same bytes");
            compared += usize::from(want.status == 200);
        }
    }
    assert!(compared > 200, "{compared} non-empty tiles compared");
    // Gzip when asked, and 204 where the archive holds nothing.
    let gz = served.get(
        "/tiles/mv_pmtiles/14/5630/9886.mvt",
        &[("Accept-Encoding", "gzip")],
    );
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(served.get("/tiles/mv_pmtiles/14/0/0.mvt", &[]).status, 204);
    assert_eq!(served.get("/tiles/mv_mbtiles/14/0/0.mvt", &[]).status, 204);

    // Catalog and TileJSON describe them from their metadata.
    let catalog = served.get("/catalog", &[]).json();
    let pm = catalog["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "mv_pmtiles")
        .expect("in the catalog");
    assert_eq!(pm["archive"], "pmtiles");
    assert_eq!(pm["maxzoom"], 14);
    let tj = served.get("/tiles/mv_mbtiles.json", &[]).json();
    assert_eq!(tj["vector_layers"][0]["id"], "montevideo", "{tj}");
    assert_eq!(tj["maxzoom"], 14);
    assert!(tj["bounds"][0].as_f64().unwrap() < -56.0, "{tj}");
    // /health counts the layers anyone may see: the public archive, not the internal one.
    assert_eq!(served.get_anonymous("/health").json()["layers"], 1);
    assert_eq!(
        served
            .get_anonymous("/tiles/mv_mbtiles/14/5630/9886.mvt")
            .status,
        404
    );
    // Drawn as PNG like any layer.
    let png = served.get("/tiles/mv_pmtiles/14/5630/9886.png", &[]);
    assert_eq!(png.status, 200);
    assert_eq!(png.header("content-type"), Some("image/png"));

    // A truncated archive is refused, naming the file, and nothing is published.
    let broken = dir.path().join("broken.pmtiles");
    let bytes = std::fs::read(dir.path().join("mv.pmtiles")).unwrap();
    std::fs::write(&broken, &bytes[..100]).unwrap();
    let o = common::urbis(&[
        "import",
        broken.to_str().unwrap(),
        "--store",
        b.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("broken.pmtiles"), "{err}");
    assert!(
        !served
            .get("/catalog", &[])
            .json()
            .to_string()
            .contains("\"broken\"")
    );
}
