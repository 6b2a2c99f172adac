//! Governance against the real server: rollback over HTTP and the CLI (the old version's
//! tiles come back, the newer version's cached tiles never do), the admin upload (a good
//! GeoPackage is published with its lineage; hostile and broken uploads are refused and leave
//! the store as it was), catalog metadata from the CLI, and the DCAT catalog read as JSON-LD by
//! rdflib.

mod common;

use common::live::{decode_tile, get_json};
use common::{Server, api_key, snapshot, urbis};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// A GeoJSON file with one square zone at `lon`, carrying `v`.
fn zones(dir: &Path, name: &str, lon: f64, v: u32) -> std::path::PathBuf {
    let p = dir.join(name);
    let (a, b) = (lon, lon + 20.0);
    std::fs::write(
        &p,
        format!(
            r#"{{"type":"FeatureCollection","features":[{{"type":"Feature","properties":{{"v":{v}}},
            "geometry":{{"type":"Polygon","coordinates":[[[{a},10],[{b},10],[{b},30],[{a},30],[{a},10]]]}}}}]}}"#
        ),
    )
    .unwrap();
    p
}

/// The `v` of every feature of layer zones in tile 0/0/0, as the server serves it now.
fn versions_served(server: &Server) -> Vec<i64> {
    let r = server.get("/tiles/zones/0/0/0.mvt", &[]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let mut v: Vec<i64> = decode_tile(&r.body, "zones")
        .iter()
        .map(|f| f["properties"]["v"].as_i64().unwrap())
        .collect();
    v.sort();
    v
}

fn wait_for(server: &Server, want: &[i64], within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if versions_served(server) == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "tiles did not show {want:?} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rollback_over_http_and_cli_brings_the_old_tiles_back_and_never_the_newer_cached_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let st = store.to_str().unwrap();
    let import = |file: &Path| {
        let out = urbis(&[
            "import",
            file.to_str().unwrap(),
            "--store",
            st,
            "--layer",
            "zones",
            "--classification",
            "public",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    import(&zones(dir.path(), "v1.geojson", -60.0, 1));
    let viewer = api_key(&store, "viewer");
    let server = Server::start(&store, &[]);
    let v1_tile = server.get("/tiles/zones/0/0/0.mvt", &[]).body;
    assert_eq!(versions_served(&server), [1]);
    import(&zones(dir.path(), "v2.geojson", 40.0, 2));
    wait_for(&server, &[2], Duration::from_secs(3));
    // Now v2's tile is cached. Roll back over HTTP: the answer comes once v1 is served.
    let r = server.request(
        "POST",
        "/admin/layers/zones/rollback",
        &[("Content-Type", "application/json")],
        br#"{"version":1}"#,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    for _ in 0..20 {
        assert_eq!(versions_served(&server), [1], "v2's cached tile came back");
    }
    assert_eq!(
        decode_tile(&server.get("/tiles/zones/0/0/0.mvt", &[]).body, "zones"),
        decode_tile(&v1_tile, "zones"),
        "the tile of v1 is the tile v1 served"
    );
    // A version that is not kept: 404 naming the field and the kept versions.
    let r = server.request(
        "POST",
        "/admin/layers/zones/rollback",
        &[],
        br#"{"version":9}"#,
    );
    assert_eq!(r.status, 404);
    let j = r.json();
    assert_eq!(j["field"], "version", "{j}");
    assert!(j["detail"].as_str().unwrap().contains('1'), "{j}");
    // Only administrators roll back.
    let r = common::http_request(
        &server.addr,
        "POST",
        "/admin/layers/zones/rollback",
        &[("Authorization", &format!("Bearer {viewer}"))],
        br#"{"version":2}"#,
    );
    assert_eq!(r.status, 403);
    // The CLI, with the server running: served within a second, in both directions.
    let out = urbis(&["layers", "rollback", "zones", "2", "--store", st]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = wait_for(&server, &[2], Duration::from_secs(1));
    eprintln!("CLI rollback to v2 served after {took:?}");
    let out = urbis(&["layers", "rollback", "zones", "1", "--store", st]);
    assert!(out.status.success());
    wait_for(&server, &[1], Duration::from_secs(1));
    for _ in 0..20 {
        assert_eq!(versions_served(&server), [1]);
    }
    // Each rollback is in the audit log.
    let audit = get_json(&server, "/admin/audit?limit=100");
    let n = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "layer.rollback")
        .count();
    assert!(n >= 3, "{audit}");
}

/// Sends a raw HTTP request whose body may be cut short; returns (status, body). Write errors
/// are ignored: a server may answer and close before reading a refused body.
fn raw_upload(addr: &str, path: &str, key: &str, declared: usize, body: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    if body.len() < declared {
        // The client gives up part-way: the connection closes under the upload.
        let _ = s.shutdown(std::net::Shutdown::Both);
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// A zip with one entry of `size` bytes of `byte` under `name`.
fn zip_with(name: &str, size: usize, byte: u8) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(size > (1 << 31));
    w.start_file(name, opts).unwrap();
    let chunk = vec![byte; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        w.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn admin_upload_publishes_with_lineage_and_refuses_hostile_or_broken_files_leaving_the_store_as_it_was()
 {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let st = store.to_str().unwrap();
    // A layer imported by the CLI with catalog metadata.
    let out = urbis(&[
        "import",
        zones(dir.path(), "zones.geojson", -60.0, 1)
            .to_str()
            .unwrap(),
        "--store",
        st,
        "--layer",
        "zones",
        "--title",
        "Planning zones",
        "--owner",
        "Urban planning",
        "--licence",
        "CC-BY-4.0",
        "--meta",
        "update_frequency=monthly",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Server::start(&store, &["--max-upload-mb", "8"]);
    let key = server.key.clone().unwrap();
    let before = snapshot(&store);
    let refused = |what: &str, status: u16, body: &str, needle: &str| {
        assert_eq!(status, 400.max(status), "{what}");
        assert!(
            body.contains(needle),
            "{what}: the message names the problem ({needle:?}): {body}"
        );
        assert_eq!(snapshot(&store), before, "{what} changed the store");
        let stray: Vec<_> = std::fs::read_dir(&store)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".upload"))
            .collect();
        assert!(stray.is_empty(), "{what} left {stray:?}");
    };
    let upload = |filename: &str, body: &[u8]| {
        raw_upload(
            &server.addr,
            &format!("/admin/layers/up?filename={filename}"),
            &key,
            body.len(),
            body,
        )
    };
    // A zip bomb: 100 MiB of zeros in a ~100 KiB archive.
    let bomb = zip_with("roads.shp", 100 << 20, 0);
    assert!(bomb.len() < 1 << 20);
    let (s, b) = upload("roads.zip", &bomb);
    assert_eq!(s, 422, "{b}");
    refused("a zip bomb", s, &b, "zip bomb");
    // An entry that climbs out of the archive.
    let (s, b) = upload("roads.zip", &zip_with("../../etc/roads.shp", 1000, b'x'));
    assert_eq!(s, 422, "{b}");
    refused("a ../ entry", s, &b, "outside the archive");
    // Over the limit (8 MiB here): refused from its Content-Length, before it is read.
    let big = vec![b' '; 9 << 20];
    let (s, b) = upload("big.geojson", &big);
    assert_eq!(s, 413, "{b}");
    refused("a body over the limit", s, &b, "--max-upload-mb");
    // Truncated: 1,000 bytes of the 100,000 announced, then the connection closes (nobody is
    // left to answer); the partial file is removed.
    raw_upload(
        &server.addr,
        "/admin/layers/up?filename=cut.geojson",
        &key,
        100_000,
        &vec![b' '; 1000],
    );
    std::thread::sleep(Duration::from_millis(300));
    refused("a truncated upload", 400, "", "");
    // Not a geo file.
    let (s, b) = upload("notes.txt", b"minutes of the meeting\n");
    assert_eq!(s, 422, "{b}");
    refused("a text file", s, &b, "GeoPackage");
    // Bad metadata names the field.
    let gpkg = std::fs::read(common::data("data/helsinki/helsinki_layers.gpkg")).unwrap();
    let (s, b) = raw_upload(
        &server.addr,
        "/admin/layers/up?filename=helsinki.gpkg&table=multipolygons&colour=red",
        &key,
        gpkg.len(),
        &gpkg,
    );
    assert_eq!(s, 400, "{b}");
    let j: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(j["field"], "colour", "{j}");
    refused("bad metadata", s, &b, "unknown key");

    // A good GeoPackage: published, with its lineage.
    let (s, b) = raw_upload(
        &server.addr,
        "/admin/layers/buildings?filename=helsinki.gpkg&table=multipolygons&title=Helsinki%20buildings&licence=ODbL-1.0&owner=City%20survey",
        &key,
        gpkg.len(),
        &gpkg,
    );
    assert_eq!(s, 201, "{b}");
    let j: serde_json::Value = serde_json::from_str(&b).unwrap();
    let sha: String = Sha256::digest(&gpkg)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let lineage = &j["published"][0]["lineage"];
    assert_eq!(lineage["sha256"], sha.as_str(), "{j}");
    assert_eq!(lineage["size"], gpkg.len() as u64);
    assert_eq!(lineage["source_file"], "helsinki.gpkg");
    assert!(j["published"][0]["quality"]["imported"].as_u64().unwrap() > 0);
    let cat = get_json(&server, "/catalog");
    let layer = cat["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "buildings")
        .expect("the uploaded layer is in the catalog");
    assert_eq!(layer["lineage"]["sha256"], sha.as_str());
    assert_eq!(layer["meta"]["title"], "Helsinki buildings");
    assert!(
        server.get("/tiles/buildings/14/9326/4742.mvt", &[]).status == 200,
        "the uploaded layer serves tiles"
    );
    assert!(!store.join("helsinki.gpkg").exists());
    // The paged /devices is not involved; a layer is removed over HTTP too.
    let r = server.request("DELETE", "/admin/layers/nothing_here", &[], b"");
    assert_eq!(r.status, 404);

    // Metadata over HTTP, checked key by key.
    let r = server.request(
        "PUT",
        "/admin/layers/zones/meta",
        &[("Content-Type", "application/json")],
        br#"{"description":"Zoning plan areas","keywords":["zoning","plan"],"temporal":"2024-01-01/2026-12-31"}"#,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = server.request(
        "PUT",
        "/admin/layers/zones/meta",
        &[],
        br#"{"update_frequency":"hourly"}"#,
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["field"], "update_frequency");

    // The DCAT catalog, read by rdflib as JSON-LD: every layer's title, licence and extent.
    let r = server.get("/catalog?f=dcat", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/ld+json"));
    let f = dir.path().join("catalog.jsonld");
    std::fs::write(&f, &r.body).unwrap();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            r#"
import sys, json, rdflib
from rdflib.namespace import DCAT, DCTERMS, RDF, RDFS
g = rdflib.Graph().parse(sys.argv[1], format="json-ld")
out = {}
for ds in g.subjects(RDF.type, DCAT.Dataset):
    lic = g.value(ds, DCTERMS.license)
    label = g.value(lic, RDFS.label) if lic is not None else None
    spatial = g.value(ds, DCTERMS.spatial)
    out[str(g.value(ds, DCTERMS.identifier))] = {
        "title": str(g.value(ds, DCTERMS.title)),
        "licence": str(label if label is not None else lic),
        "bbox": str(g.value(spatial, DCAT.bbox)) if spatial is not None else None,
        "keywords": sorted(str(k) for k in g.objects(ds, DCAT.keyword)),
    }
print(json.dumps(out))
"#,
            f.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(g["zones"]["title"], "Planning zones", "{g}");
    assert_eq!(g["zones"]["licence"], "CC-BY-4.0", "{g}");
    assert_eq!(
        g["zones"]["keywords"],
        serde_json::json!(["plan", "zoning"])
    );
    assert!(
        g["zones"]["bbox"]
            .as_str()
            .unwrap()
            .starts_with("POLYGON((-60.0000"),
        "{g}"
    );
    assert_eq!(g["buildings"]["title"], "Helsinki buildings", "{g}");
    assert_eq!(g["buildings"]["licence"], "ODbL-1.0", "{g}");
    assert!(
        g["buildings"]["bbox"].as_str().unwrap().contains("24."),
        "{g}"
    );

    // Removed over HTTP: gone from the catalog and its tiles.
    let r = server.request("DELETE", "/admin/layers/buildings", &[], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        server.get("/tiles/buildings/14/9326/4742.mvt", &[]).status,
        404
    );
    assert!(
        !get_json(&server, "/catalog")["layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "buildings")
    );
}
