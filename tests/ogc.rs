//! The OGC API against real clients: GDAL's OAPIF driver lists the collections with the
//! store's feature counts and reads a bbox of items; the conformance classes the server claims
//! are checked against the standards' requirements (links, numberMatched/numberReturned,
//! bbox filtering, paging, single features, the tile matrix set, tiles equal to /tiles/);
//! downloads open in GDAL; the security rules hold.

mod common;

use common::Server;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const COUNTRIES: &str = "tests/data/naturalearth/naturalearth_lowres/naturalearth_lowres.shp";
const CITIES: &str = "tests/data/naturalearth/naturalearth_cities/naturalearth_cities.shp";

/// A store with the countries (internal) and the cities (public).
fn store(dir: &Path) -> std::path::PathBuf {
    let store = dir.join("store");
    common::import_json(&common::data(COUNTRIES), &store, &["--layer", "countries"]);
    common::import_json(
        &common::data(CITIES),
        &store,
        &["--layer", "cities", "--classification", "public"],
    );
    store
}

fn get_json(s: &Server, path: &str) -> Value {
    let r = s.get(path, &[]);
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

fn catalog_counts(s: &Server) -> std::collections::BTreeMap<String, u64> {
    get_json(s, "/catalog")["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["features"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn gdal(cmd: &str, args: &[&str], key: &str) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .env("GDAL_HTTP_HEADERS", format!("Authorization: Bearer {key}"))
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn feature_count(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("Feature Count: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no feature count in {text}"))
}

#[test]
fn gdal_lists_our_collections_with_their_counts_and_reads_a_bbox_of_items() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let key = common::api_key(&store, "analyst");
    let s = Server::start(&store, &[]);
    let url = format!("OAPIF:{}/ogc", s.base);
    let counts = catalog_counts(&s);
    assert_eq!(counts.len(), 2, "{counts:?}");

    let (ok, text) = gdal("ogrinfo", &["-ro", "-so", &url], &key);
    assert!(ok, "{text}");
    for name in counts.keys() {
        assert!(
            text.contains(&format!(": {name} ")),
            "{name} not listed: {text}"
        );
    }
    for (name, n) in &counts {
        let (ok, text) = gdal("ogrinfo", &["-ro", "-so", "-al", &url, name], &key);
        assert!(ok, "{text}");
        assert_eq!(feature_count(&text), *n, "{name}: {text}");
    }

    // A bbox of items through ogr2ogr: the server's answer (GDAL sends bbox= and follows the
    // next links) against GDAL's own spatial filter over the whole layer downloaded as
    // FlatGeobuf (f=fgb), an independent count of the countries that meet the box.
    let bbox = ["-10", "35", "30", "60"];
    let via_api = dir.path().join("europe.gpkg");
    let mut args = vec!["-f", "GPKG", via_api.to_str().unwrap(), "-spat"];
    args.extend(bbox);
    args.extend([url.as_str(), "countries"]);
    let (ok, text) = gdal("ogr2ogr", &args, &key);
    assert!(ok, "{text}");
    let download = s.get("/ogc/collections/countries/items?f=fgb", &[]);
    assert_eq!(download.status, 200);
    assert_eq!(
        download.header("content-type"),
        Some("application/flatgeobuf")
    );
    let fgb = dir.path().join("countries.fgb");
    std::fs::write(&fgb, &download.body).unwrap();
    let (ok, whole) = gdal(
        "ogrinfo",
        &["-ro", "-so", "-al", fgb.to_str().unwrap()],
        &key,
    );
    assert!(ok, "{whole}");
    assert_eq!(feature_count(&whole), counts["countries"], "{whole}");
    let mut args = vec!["-ro", "-so", "-al", "-spat"];
    args.extend(bbox);
    args.push(fgb.to_str().unwrap());
    let (ok, reference) = gdal("ogrinfo", &args, &key);
    assert!(ok, "{reference}");
    let (ok, got) = gdal(
        "ogrinfo",
        &["-ro", "-so", "-al", via_api.to_str().unwrap()],
        &key,
    );
    assert!(ok, "{got}");
    let expected = feature_count(&reference);
    assert!(expected > 20, "{reference}");
    assert_eq!(feature_count(&got), expected, "{got}");
    // The server's own count for the box is the same.
    let page = get_json(
        &s,
        "/ogc/collections/countries/items?bbox=-10,35,30,60&limit=1",
    );
    assert_eq!(page["numberMatched"], expected);
    assert!(got.contains("name: String"), "{got}");

    // The GeoPackage download opens with every feature.
    let gpkg = s.get("/ogc/collections/countries/items?f=gpkg", &[]);
    assert_eq!(gpkg.status, 200);
    let path = dir.path().join("countries.gpkg");
    std::fs::write(&path, &gpkg.body).unwrap();
    let (ok, text) = gdal(
        "ogrinfo",
        &["-ro", "-so", "-al", path.to_str().unwrap()],
        &key,
    );
    assert!(ok, "{text}");
    assert_eq!(feature_count(&text), counts["countries"], "{text}");
    assert!(text.contains("Geometry: Multi Polygon"), "{text}");
    // Nothing of the downloads is left in the store directory.
    let left: Vec<String> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".download"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn link<'a>(doc: &'a Value, rel: &str) -> Option<&'a Value> {
    doc["links"]
        .as_array()?
        .iter()
        .find(|l| l["rel"].as_str() == Some(rel))
}

/// The path and query of an absolute link of this server.
fn local(s: &Server, href: &str) -> String {
    href.strip_prefix(&s.base)
        .unwrap_or_else(|| panic!("{href} is not on {}", s.base))
        .to_string()
}

#[test]
fn the_api_meets_the_requirements_of_the_conformance_classes_it_claims() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let s = Server::start(&store, &[]);
    let counts = catalog_counts(&s);

    // Landing page (/req/core/root-success): self, service-desc, conformance and data links.
    let landing = get_json(&s, "/ogc");
    for rel in ["self", "service-desc", "conformance", "data"] {
        assert!(link(&landing, rel).is_some(), "no {rel} link: {landing}");
    }
    let api = local(
        &s,
        link(&landing, "service-desc").unwrap()["href"]
            .as_str()
            .unwrap(),
    );
    let r = s.get(&api, &[]);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/vnd.oai.openapi+json")
    );
    let openapi = r.json();
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3.0"));
    for p in [
        "/collections/{collectionId}/items",
        "/collections/{collectionId}/items/{featureId}",
        "/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}",
    ] {
        assert!(
            openapi["paths"][p]["get"].is_object(),
            "{p} missing from the API"
        );
    }

    // Conformance (/req/core/conformance-success).
    let conf = get_json(
        &s,
        &local(
            &s,
            link(&landing, "conformance").unwrap()["href"]
                .as_str()
                .unwrap(),
        ),
    );
    let classes: BTreeSet<&str> = conf["conformsTo"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for c in [
        "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
        "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
        "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
        "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
        "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset",
        "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt",
    ] {
        assert!(classes.contains(c), "{c} not claimed");
    }

    // Collections (/req/core/fc-md-success, fc-md-links, fc-md-extent): every layer, each with
    // self and items links and a CRS84 extent of four numbers.
    let data = local(
        &s,
        link(&landing, "data").unwrap()["href"].as_str().unwrap(),
    );
    let collections = get_json(&s, &data);
    assert!(link(&collections, "self").is_some());
    let list = collections["collections"].as_array().unwrap();
    let ids: BTreeSet<&str> = list.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, counts.keys().map(String::as_str).collect());
    for c in list {
        assert!(link(c, "self").is_some(), "{c}");
        assert_eq!(link(c, "items").unwrap()["type"], "application/geo+json");
        let bbox = c["extent"]["spatial"]["bbox"][0].as_array().unwrap();
        assert_eq!(bbox.len(), 4, "{c}");
        assert!(bbox[0].as_f64().unwrap() < bbox[2].as_f64().unwrap());
        let one = get_json(
            &s,
            &local(&s, link(c, "self").unwrap()["href"].as_str().unwrap()),
        );
        assert_eq!(one["id"], c["id"]);
    }

    // Items (/req/core/fc-response, fc-links, fc-limit-response): pages of 50 followed through
    // their next links give every feature exactly once; numberMatched is the layer's count,
    // numberReturned the page's.
    let total = counts["countries"];
    let mut next = Some("/ogc/collections/countries/items?limit=50".to_string());
    let mut seen = BTreeSet::new();
    let mut pages = 0;
    while let Some(path) = next {
        let r = s.get(&path, &[]);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some("application/geo+json"));
        let page = r.json();
        assert_eq!(page["type"], "FeatureCollection");
        assert_eq!(page["numberMatched"], total);
        let features = page["features"].as_array().unwrap();
        assert_eq!(page["numberReturned"], features.len() as u64);
        assert!(features.len() <= 50);
        assert!(link(&page, "self").is_some());
        for f in features {
            assert_eq!(f["type"], "Feature");
            assert!(seen.insert(f["id"].as_u64().unwrap()), "{} twice", f["id"]);
        }
        next = link(&page, "next").map(|l| local(&s, l["href"].as_str().unwrap()));
        pages += 1;
    }
    assert_eq!(seen.len() as u64, total);
    assert_eq!(pages, total.div_ceil(50));
    // A limit above the maximum is served as the maximum; a bad one is refused.
    let big = get_json(&s, "/ogc/collections/countries/items?limit=100000");
    assert_eq!(big["numberReturned"], total);
    for bad in [
        "limit=0",
        "limit=ten",
        "offset=-1",
        "bbox=1,2,3",
        "bbox=0,60,10,50",
        "datetime=yesterday",
        "bbx=1,2,3,4",
        "bbox-crs=EPSG:3857",
    ] {
        let r = s.get(&format!("/ogc/collections/countries/items?{bad}"), &[]);
        assert_eq!(r.status, 400, "{bad}: {}", String::from_utf8_lossy(&r.body));
    }
    // datetime: the layer has no time, so a valid one filters nothing.
    let timed = get_json(
        &s,
        "/ogc/collections/countries/items?datetime=2026-01-01T00:00:00Z/..&limit=1",
    );
    assert_eq!(timed["numberMatched"], total);

    // bbox (/req/core/fc-bbox-response): every feature returned meets the box (its
    // coordinates' box intersects it), and fewer than all match.
    let boxed = get_json(
        &s,
        "/ogc/collections/countries/items?bbox=-10,35,30,60&limit=1000",
    );
    let matched = boxed["numberMatched"].as_u64().unwrap();
    assert!(matched > 20 && matched < total, "{matched}");
    for f in boxed["features"].as_array().unwrap() {
        let mut b = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
        fn walk(v: &Value, b: &mut [f64; 4]) {
            match v.as_array() {
                Some(a) if a.first().is_some_and(Value::is_number) => {
                    let (x, y) = (a[0].as_f64().unwrap(), a[1].as_f64().unwrap());
                    *b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
                }
                Some(a) => a.iter().for_each(|c| walk(c, b)),
                None => {}
            }
        }
        walk(&f["geometry"]["coordinates"], &mut b);
        assert!(
            b[0] <= 30.0 && b[2] >= -10.0 && b[1] <= 60.0 && b[3] >= 35.0,
            "{} is outside",
            f["properties"]["name"]
        );
    }
    // A box across the antimeridian finds Fiji's and Russia's parts on both sides.
    let across = get_json(
        &s,
        "/ogc/collections/countries/items?bbox=170,-30,-170,80&limit=1000",
    );
    let names: BTreeSet<&str> = across["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["properties"]["name"].as_str())
        .collect();
    assert!(
        names.contains("Fiji") && names.contains("Russia"),
        "{names:?}"
    );

    // A single feature (/req/core/f-success, f-links) and an unknown one.
    let first = &boxed["features"][0];
    let id = first["id"].as_u64().unwrap();
    let one = s.get(&format!("/ogc/collections/countries/items/{id}"), &[]);
    assert_eq!(one.status, 200);
    assert_eq!(one.header("content-type"), Some("application/geo+json"));
    let one = one.json();
    assert_eq!(one["id"], id);
    assert_eq!(one["properties"], first["properties"]);
    assert!(link(&one, "self").is_some() && link(&one, "collection").is_some());
    assert_eq!(
        s.get(
            &format!("/ogc/collections/countries/items/{}", total + 1),
            &[]
        )
        .status,
        404
    );
    assert_eq!(s.get("/ogc/collections/nowhere/items", &[]).status, 404);

    // Tiles: the tile matrix set, the tilesets list, the tileset with its template, and tiles
    // that are the /tiles/ bytes.
    let tms = get_json(&s, "/ogc/tileMatrixSets/WebMercatorQuad");
    let m = tms["tileMatrices"].as_array().unwrap();
    assert_eq!(m.len(), 25);
    assert_eq!(m[3]["matrixWidth"], 8);
    assert!((m[1]["scaleDenominator"].as_f64().unwrap() - 279_541_132.014_358).abs() < 1e-3);
    assert_eq!(tms["crs"], "http://www.opengis.net/def/crs/EPSG/0/3857");
    let sets = get_json(&s, "/ogc/collections/countries/tiles");
    let tileset_href = local(
        &s,
        link(&sets["tilesets"][0], "self").unwrap()["href"]
            .as_str()
            .unwrap(),
    );
    let tileset = get_json(&s, &tileset_href);
    assert_eq!(tileset["dataType"], "vector");
    assert!(
        link(
            &tileset,
            "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"
        )
        .is_some()
    );
    let template = link(&tileset, "item").unwrap()["href"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(template.contains("{tileMatrix}/{tileRow}/{tileCol}"));
    let ogc = s.get(
        &local(
            &s,
            &template
                .replace("{tileMatrix}", "2")
                .replace("{tileRow}", "1")
                .replace("{tileCol}", "2"),
        ),
        &[],
    );
    let xyz = s.get("/tiles/countries/2/2/1.mvt", &[]);
    assert_eq!(ogc.status, 200);
    assert_eq!(
        ogc.header("content-type"),
        Some("application/vnd.mapbox-vector-tile")
    );
    assert_eq!(ogc.body, xyz.body);
    assert_eq!(
        s.get(
            "/ogc/collections/countries/tiles/WebMercatorQuad/2/4/0",
            &[]
        )
        .status,
        404
    );
    assert_eq!(
        s.get(
            "/ogc/collections/countries/tiles/WebMercatorQuad/25/0/0",
            &[]
        )
        .status,
        404
    );
    assert_eq!(
        s.get("/ogc/collections/countries/tiles/WorldCRS84Quad/0/0/0", &[])
            .status,
        404
    );
}

#[test]
fn the_ogc_api_keeps_the_security_rules() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    // An auditor has no `features` right; a viewer sees internal layers, not restricted ones.
    let o = common::urbis(&[
        "layers",
        "classify",
        "countries",
        "restricted",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let viewer = common::api_key(&store, "viewer");
    let auditor = common::api_key(&store, "auditor");
    let s = Server::start(&store, &[]);

    // Anyone reads the service's description and the public collections, no items.
    assert_eq!(s.get_anonymous("/ogc").status, 200);
    assert_eq!(s.get_anonymous("/ogc/conformance").status, 200);
    let anon = s.get_anonymous("/ogc/collections").json();
    let ids: Vec<&str> = anon["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["cities"]);
    assert_eq!(s.get_anonymous("/ogc/collections/cities/items").status, 401);
    assert_eq!(s.get_anonymous("/ogc/collections/countries").status, 404);
    assert_eq!(
        s.get_anonymous("/ogc/collections/countries/tiles/WebMercatorQuad/0/0/0")
            .status,
        404
    );
    // The auditor's role lacks the right: 403.
    assert_eq!(
        s.get_with("/ogc/collections/cities/items", &auditor).status,
        403
    );
    // The viewer reads the cities, and the restricted countries do not exist for it.
    assert_eq!(
        s.get_with("/ogc/collections/cities/items?limit=1", &viewer)
            .status,
        200
    );
    assert_eq!(
        s.get_with("/ogc/collections/countries/items", &viewer)
            .status,
        404
    );
    assert_eq!(
        s.get_with("/ogc/collections/countries/items?f=fgb", &viewer)
            .status,
        404
    );
    assert_eq!(
        s.get_with("/ogc/collections/countries/items/1", &viewer)
            .status,
        404
    );
    let seen = s.get_with("/ogc/collections", &viewer).json();
    assert_eq!(seen["collections"].as_array().unwrap().len(), 1);
}
