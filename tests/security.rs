//! Security over the real server: default deny on every route, layer classification, roles and
//! rights, attribute rules applied inside tiles (and never leaking through the cache), key
//! expiry and revocation on a running server, and hostile input.

mod common;

use common::live::decode_tile;
use common::{Server, api_key, import_json, urbis};
use std::time::{Duration, Instant};
use urbis::api::access::{Need, routes};

/// A small layer of parcels with a public and a private attribute, in Helsinki.
fn parcels(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("parcels.geojson");
    let features: Vec<String> = (0..20)
        .map(|i| {
            let (x, y) = (24.90 + f64::from(i) * 0.002, 60.17);
            format!(
                r#"{{"type":"Feature","properties":{{"parcel":"p{i}","landuse":"housing","owner":"Person {i}"}},
                   "geometry":{{"type":"Polygon","coordinates":[[[{x},{y}],[{},{y}],[{},{}],[{x},{}],[{x},{y}]]]}}}}"#,
                x + 0.001,
                x + 0.001,
                y + 0.001,
                y + 0.001
            )
        })
        .collect();
    std::fs::write(
        &p,
        format!(
            r#"{{"type":"FeatureCollection","features":[{}]}}"#,
            features.join(",")
        ),
    )
    .unwrap();
    p
}

/// A store with `parcels` (restricted) and `parks` (public), and a policy that lets analysts
/// see parcels without their owners.
fn setup(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let store = dir.join("store");
    let file = parcels(dir);
    import_json(
        &file,
        &store,
        &["--layer", "parcels", "--classification", "restricted"],
    );
    import_json(
        &file,
        &store,
        &["--layer", "parks", "--classification", "public"],
    );
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        r#"
[roles.analyst]
clearance = "restricted"
rights = ["tiles", "devices", "tracks", "stream"]
[[roles.analyst.layers]]
layer = "parcels"
attributes = ["parcel", "landuse"]
"#,
    )
    .unwrap();
    (store, policy)
}

const TILE: &str = "14/9325/4742"; // holds the first parcels

#[test]
fn anonymous_callers_see_public_layers_only_and_roles_get_their_rights() {
    let dir = tempfile::tempdir().unwrap();
    let (store, policy) = setup(dir.path());
    let viewer = api_key(&store, "viewer");
    let operator = api_key(&store, "operator");
    let server = Server::start(&store, &["--policy", policy.to_str().unwrap()]);
    let anon = |p: &str| server.get_anonymous(p).status;
    // Public tiles and TileJSON: 200; restricted: 404, as if they did not exist.
    assert_eq!(anon(&format!("/tiles/parks/{TILE}.mvt")), 200);
    assert_eq!(anon("/tiles/parks.json"), 200);
    assert_eq!(anon(&format!("/tiles/parcels/{TILE}.mvt")), 404);
    assert_eq!(anon("/tiles/parcels.json"), 404);
    assert_eq!(
        anon(&format!("/tiles/parks,parcels/{TILE}.mvt")),
        404,
        "a composite with a hidden layer is refused whole"
    );
    let names = |r: common::HttpResponse| -> Vec<String> {
        r.json()["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(server.get_anonymous("/catalog")), ["parks"]);
    // /health counts what anyone may see: the restricted parcels are not even counted.
    assert_eq!(server.get_anonymous("/health").json()["layers"], 1);
    // Device data and writes: 401 without a key.
    assert_eq!(anon("/devices"), 401);
    assert_eq!(anon("/stream"), 401);
    let fence =
        br#"{"type":"Polygon","coordinates":[[[24.9,60.1],[25,60.1],[25,60.2],[24.9,60.1]]]}"#;
    assert_eq!(
        common::http_request(&server.addr, "POST", "/geofences", &[], fence).status,
        401
    );
    // A viewer may read devices but not write geofences (403); an operator may.
    let post = |key: &str| {
        common::http_request(
            &server.addr,
            "POST",
            "/geofences",
            &[("Authorization", &format!("Bearer {key}"))],
            fence,
        )
    };
    assert_eq!(server.get_with("/devices", &viewer).status, 200);
    let r = post(&viewer);
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("geofences:write"));
    assert_eq!(post(&operator).status, 201);
    // A viewer (internal clearance) does not see the restricted parcels either.
    assert_eq!(names(server.get_with("/catalog", &viewer)), ["parks"]);
    assert_eq!(
        server
            .get_with(&format!("/tiles/parcels/{TILE}.mvt"), &viewer)
            .status,
        404
    );
}

#[test]
fn attribute_rules_strip_tiles_tilejson_and_catalog_and_never_leak_through_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (store, policy) = setup(dir.path());
    let analyst = api_key(&store, "analyst");
    let server = Server::start(&store, &["--policy", policy.to_str().unwrap()]);
    let path = format!("/tiles/parcels/{TILE}.mvt");
    // The admin first: the full tile goes into the cache.
    let full = server.get(&path, &[]);
    assert_eq!(full.status, 200);
    let f = decode_tile(&full.body, "parcels");
    assert!(
        !f.is_empty() && f[0]["properties"]["owner"].is_string(),
        "{f:?}"
    );
    // Then the analyst, same z/x/y: the owners are not in its tile (independent decoder).
    let r = server.get_with(&path, &analyst);
    assert_eq!(r.status, 200);
    let a = decode_tile(&r.body, "parcels");
    assert_eq!(a.len(), f.len(), "the same features");
    for feature in &a {
        let props = feature["properties"].as_object().unwrap();
        assert!(!props.contains_key("owner"), "{feature}");
        assert!(
            props.contains_key("parcel") && props.contains_key("landuse"),
            "{feature}"
        );
    }
    assert_ne!(
        r.header("etag"),
        full.header("etag"),
        "another tile, another ETag"
    );
    assert_eq!(r.header("cache-control").unwrap(), "private, max-age=300");
    // And the admin again: still the full tile.
    let again = decode_tile(&server.get(&path, &[]).body, "parcels");
    assert!(again[0]["properties"]["owner"].is_string());
    // TileJSON and the catalog name only the kept fields.
    let tj = server.get_with("/tiles/parcels.json", &analyst).json();
    let fields = tj["vector_layers"][0]["fields"].as_object().unwrap();
    assert!(
        fields.contains_key("parcel") && !fields.contains_key("owner"),
        "{tj}"
    );
    let cat = server.get_with("/catalog", &analyst).json();
    let parcels = cat["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "parcels")
        .expect("the analyst sees parcels");
    assert!(parcels["fields"].get("owner").is_none(), "{parcels}");
    assert_eq!(parcels["classification"], "restricted");
}

#[test]
fn every_route_but_the_public_ones_refuses_an_anonymous_caller() {
    let dir = tempfile::tempdir().unwrap();
    let (store, policy) = setup(dir.path());
    let _ = urbis(&[
        "devices",
        "add",
        "bus-1",
        "--layer",
        "buses",
        "--store",
        store.to_str().unwrap(),
    ]);
    let server = Server::start(&store, &["--policy", policy.to_str().unwrap()]);
    let table = routes();
    assert!(table.len() >= 20, "{} routes", table.len());
    let mut public = Vec::new();
    for r in &table {
        // Every parameter filled with something that exists but is not public.
        let path = r
            .path
            .replace("{layers}", "parcels")
            .replace("{tilejson}", "parcels.json")
            .replace("{z}/{x}/{y}", TILE)
            .replace("/ogc/collections/{id}", "/ogc/collections/parcels")
            .replace("{id}", "bus-1")
            .replace("{fid}", "1")
            .replace("{tms}", "WebMercatorQuad")
            .replace("{z}/{row}", "0/{row}")
            .replace("{row}", "0")
            .replace("{col}", "0")
            .replace("{file}", "city.json")
            .replace("{style}", "city")
            .replace("{at}", "0,0,2")
            .replace("{size}", "100x100.png");
        let path = if r.path.contains("{y}") {
            format!("{path}.mvt")
        } else {
            path
        };
        let resp = common::http_request(&server.addr, r.method, &path, &[], b"{}");
        let status = resp.status;
        match r.need {
            Need::Public => public.push(r.path),
            // Layers: what is not public does not exist for an anonymous caller.
            Need::Layers if r.path == "/catalog" => {
                assert_eq!(status, 200);
                let layers = resp.json()["layers"].as_array().unwrap().len();
                assert_eq!(layers, 1, "only the public layer");
            }
            Need::Layers if r.path == "/ogc/collections" => {
                assert_eq!(status, 200);
                let c = resp.json()["collections"].as_array().unwrap().len();
                assert_eq!(c, 1, "only the public layer");
            }
            Need::Layers if r.path.starts_with("/styles/") => {
                let style = String::from_utf8_lossy(&resp.body).to_string();
                assert!(
                    !style.contains("parcels") && !style.contains("buses"),
                    "{style}"
                );
            }
            Need::Layers => assert_eq!(status, 404, "{} {path}", r.method),
            Need::Right(_) | Need::Device => {
                assert_eq!(
                    status, 401,
                    "{} {path}: anonymous must be refused",
                    r.method
                )
            }
        }
    }
    // The public list is explicit and short: health, readiness, the viewer's files, the
    // list of styles, the OGC API's description of itself (no layer in it).
    public.sort();
    assert_eq!(
        public,
        [
            "/",
            "/favicon.ico",
            "/fonts",
            "/fonts/{fontstack}/{range}",
            "/health",
            "/ogc",
            "/ogc/api",
            "/ogc/conformance",
            "/ogc/tileMatrixSets",
            "/ogc/tileMatrixSets/{tms}",
            "/ops",
            "/ready",
            "/styles",
            "/viewer/{file}"
        ]
    );
}

#[test]
fn an_expired_or_revoked_key_is_refused_within_a_second_on_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let (store, policy) = setup(dir.path());
    let server = Server::start(&store, &["--policy", policy.to_str().unwrap()]);
    let s = store.to_str().unwrap();
    // Expiry: a key of two seconds.
    let out = urbis(&[
        "keys",
        "create",
        "--role",
        "viewer",
        "--expires",
        "2s",
        "--store",
        s,
    ]);
    let short = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let created = Instant::now();
    // A new key works within a second too.
    while server.get_with("/devices", &short).status != 200 {
        assert!(
            created.elapsed() < Duration::from_secs(1),
            "the new key never worked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    while server.get_with("/devices", &short).status == 200 {
        assert!(created.elapsed() < Duration::from_secs(4), "never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = server.get_with("/devices", &short);
    assert_eq!(r.status, 401);
    assert!(String::from_utf8_lossy(&r.body).contains("expired"));
    // Revocation, by another process.
    let key = api_key(&store, "viewer");
    let made = Instant::now();
    while server.get_with("/devices", &key).status != 200 {
        assert!(
            made.elapsed() < Duration::from_secs(1),
            "the new key never worked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let list = urbis(&["keys", "list", "--json", "--store", s]);
    let keys: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&key),
        "list never shows keys"
    );
    let id = keys.as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = urbis(&["keys", "revoke", &id, "--store", s]);
    assert!(out.status.success());
    let revoked = Instant::now();
    while server.get_with("/devices", &key).status == 200 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = revoked.elapsed();
    eprintln!("revocation took effect after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let r = server.get_with("/devices", &key);
    assert!(String::from_utf8_lossy(&r.body).contains("revoked"));
}

#[test]
fn hostile_keys_paths_and_policies_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (store, policy) = setup(dir.path());
    let server = Server::start(&store, &["--policy", policy.to_str().unwrap()]);
    for bad in [
        "uk_",
        "uk_zz",
        "nonsense",
        &format!("uk_{}", "0".repeat(64)),
        "ik_abc",
    ] {
        let r = server.get_with("/catalog", bad);
        assert_eq!(r.status, 401, "{bad}");
        let body = String::from_utf8_lossy(&r.body);
        assert!(body.contains("key"), "{bad}: {body}");
    }
    // Layer names that try to climb out of the store, or inject headers: 404 or 400, and the
    // server goes on.
    for path in [
        "/tiles/..%2F..%2Fetc%2Fpasswd/0/0/0.mvt",
        "/tiles/../catalog.json",
        "/tiles/parks%0d%0aX-Injected:%201/0/0/0.mvt",
        "/tiles/parks.json%00",
    ] {
        let r = server.get(path, &[]);
        assert!(matches!(r.status, 400 | 404), "{path}: {}", r.status);
        assert!(r.header("x-injected").is_none());
    }
    assert_eq!(server.get("/health", &[]).status, 200);
    // Bad policy files stop the server at start with the place of the problem.
    for (text, want) in [
        (
            "[roles.x]\nclearance = \"internal\"\nrigths = []\n",
            "unknown field `rigths`",
        ),
        ("[roles.x]\nclearance = 2\n", "line 2, column 13"),
        (
            "[roles.x]\nclearance = \"public\"\n[[roles.x.layers]]\nlayer = \"a\"\n[[roles.x.layers]]\nlayer = \"a\"\n",
            "a second rule",
        ),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let out = urbis(&[
            "serve",
            "--store",
            store.to_str().unwrap(),
            "--no-demo",
            "--bind",
            "127.0.0.1:0",
            "--coap-bind",
            "127.0.0.1:0",
            "--policy",
            bad.to_str().unwrap(),
        ]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("bad.toml") && err.contains(want),
            "{text:?}: {err}"
        );
    }
}

/// True if `[lon, lat]` lies on the `m`-metre grid of `snap_lonlat`, within `tol` metres.
fn on_grid(p: [f64; 2], m: f64, tol: f64) -> bool {
    let dlat = m / 111_320.0;
    let k = (p[1] / dlat).round();
    let lat = k * dlat;
    let dlon = m / (111_320.0 * lat.to_radians().cos());
    let off_lat = (p[1] - lat).abs() * 111_320.0;
    let off_lon = (p[0] / dlon - (p[0] / dlon).round()).abs() * m;
    off_lat <= tol && off_lon <= tol
}

/// Tile coordinates (extent 4096) of tile z/x/y to lon/lat.
fn tile_lonlat(z: u32, x: u32, y: u32, at: &serde_json::Value) -> [f64; 2] {
    let n = f64::from(1u32 << z);
    let fx = (f64::from(x) + at[0].as_f64().unwrap() / 4096.0) / n;
    let fy = (f64::from(y) + at[1].as_f64().unwrap() / 4096.0) / n;
    let lat = (std::f64::consts::PI * (1.0 - 2.0 * fy))
        .sinh()
        .atan()
        .to_degrees();
    [fx * 360.0 - 180.0, lat]
}

#[test]
fn personal_positions_are_snapped_to_100_m_for_roles_without_exact_positions() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s = store.to_str().unwrap();
    for i in 0..12 {
        let out = urbis(&[
            "devices",
            "add",
            &format!("nurse-{i}"),
            "--layer",
            "staff",
            "--personal",
            "--interval",
            "1m",
            "--store",
            s,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ingest = common::live::ingest_key(&store, "gw");
    let viewer = api_key(&store, "viewer");
    let server = Server::start(&store, &[]);
    let stream = common::Sse::connect(
        &server.addr,
        "/stream?layers=staff",
        &[("Authorization", &format!("Bearer {viewer}"))],
    );
    // Twelve nurses around one z16 tile of central Helsinki, at precise positions.
    let t = common::live::now() - 30.0;
    let fixes: Vec<[f64; 2]> = (0..12)
        .map(|i| {
            let f = f64::from(i);
            [
                24.93011 + f * 0.000731,
                60.16823 + (f * 0.37).sin() * 0.0009,
            ]
        })
        .collect();
    let body: Vec<String> = fixes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                r#"{{"device":"nurse-{i}","lon":{},"lat":{},"t":{t}}}"#,
                p[0], p[1]
            )
        })
        .collect();
    let r = common::live::post_json(
        &server.addr,
        &format!("Bearer {ingest}"),
        &format!("[{}]", body.join(",")),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (z, x, y) = {
        let (x, y, _, _) = common::live::tile_of(fixes[6][0], fixes[6][1], 16);
        (16, x, y)
    };
    let path = format!("/tiles/staff/{z}/{x}/{y}.mvt");
    // The admin first (exact positions, cached), then the viewer: another tile.
    let exact = decode_tile(&server.get(&path, &[]).body, "staff");
    assert!(!exact.is_empty());
    let off_grid = exact
        .iter()
        .filter(|f| {
            !on_grid(
                tile_lonlat(z, x, y, &f["geometry"]["coordinates"]),
                100.0,
                1.0,
            )
        })
        .count();
    assert!(off_grid > 0, "the admin sees exact positions");
    let r = server.get_with(&path, &viewer);
    assert_eq!(r.status, 200);
    let coarse = decode_tile(&r.body, "staff");
    assert!(!coarse.is_empty());
    for f in &coarse {
        let p = tile_lonlat(z, x, y, &f["geometry"]["coordinates"]);
        // Within the tile's own quantization (under 0.3 m at z16).
        assert!(
            on_grid(p, 100.0, 0.5),
            "{p:?} is not on the 100 m grid: {f}"
        );
    }
    // /devices and /devices/{id}: on the grid; the admin's: exact.
    let list = server.get_with("/devices", &viewer).json();
    let devices = list["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 12);
    for d in devices {
        let p = [
            d["position"][0].as_f64().unwrap(),
            d["position"][1].as_f64().unwrap(),
        ];
        assert!(on_grid(p, 100.0, 1e-6), "{d}");
    }
    // The catalog's extent of the layer is made of the snapped positions /devices shows.
    let cat = server.get_with("/catalog", &viewer).json();
    let staff = cat["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "staff")
        .unwrap();
    let b: Vec<f64> = staff["bounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let lons: Vec<f64> = devices
        .iter()
        .map(|d| d["position"][0].as_f64().unwrap())
        .collect();
    let lats: Vec<f64> = devices
        .iter()
        .map(|d| d["position"][1].as_f64().unwrap())
        .collect();
    let (min, max) = (
        |v: &[f64]| v.iter().cloned().fold(f64::MAX, f64::min),
        |v: &[f64]| v.iter().cloned().fold(f64::MIN, f64::max),
    );
    assert_eq!(
        b,
        [min(&lons), min(&lats), max(&lons), max(&lats)],
        "{staff}"
    );
    let one = server.get_with("/devices/nurse-3", &viewer).json();
    assert!(on_grid(
        [
            one["position"][0].as_f64().unwrap(),
            one["position"][1].as_f64().unwrap()
        ],
        100.0,
        1e-6
    ));
    let admin = server.get("/devices/nurse-3", &[]).json();
    assert_eq!(admin["position"][0].as_f64().unwrap(), fixes[3][0]);
    // No history for a viewer (no tracks right).
    assert_eq!(
        server.get_with("/devices/nurse-3/track", &viewer).status,
        403
    );
    // The stream: every position event on the grid.
    let mut seen = 0;
    while let Some(e) = stream.next(Duration::from_secs(3)) {
        if e.event == "position" {
            let d = e.json();
            let p = [
                d["position"][0].as_f64().unwrap(),
                d["position"][1].as_f64().unwrap(),
            ];
            assert!(on_grid(p, 100.0, 1e-6), "stream: {d}");
            seen += 1;
            if seen == 12 {
                break;
            }
        }
    }
    assert_eq!(seen, 12, "every report on the stream");
}

#[test]
fn the_audit_log_records_changes_denials_and_sensitive_reads_and_verify_finds_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (store, policy) = setup(dir.path());
    let s = store.to_str().unwrap();
    let viewer = api_key(&store, "viewer");
    let operator = api_key(&store, "operator");
    let analyst = api_key(&store, "analyst");
    let auditor = api_key(&store, "auditor");
    let server = Server::start(&store, &["--policy", policy.to_str().unwrap()]);
    let fence = br#"{"type":"Feature","id":"depot","geometry":{"type":"Polygon","coordinates":[[[24.9,60.1],[25,60.1],[25,60.2],[24.9,60.1]]]}}"#;
    let post = |key: &str| {
        common::http_request(
            &server.addr,
            "POST",
            "/geofences",
            &[("Authorization", &format!("Bearer {key}"))],
            fence,
        )
        .status
    };
    assert_eq!(server.get_anonymous("/devices").status, 401);
    assert_eq!(post(&viewer), 403);
    assert_eq!(post(&operator), 201);
    assert_eq!(
        server
            .get_with(&format!("/tiles/parcels/{TILE}.mvt"), &analyst)
            .status,
        200
    );
    assert_eq!(
        server
            .get_with(&format!("/tiles/parcels/{TILE}.mvt"), &analyst)
            .status,
        200
    );
    // The auditor reads the log over HTTP; a viewer may not.
    assert_eq!(server.get_with("/admin/audit", &viewer).status, 403);
    let started = Instant::now();
    let entries = loop {
        let r = server.get_with("/admin/audit?limit=1000", &auditor);
        assert_eq!(r.status, 200);
        let e = r.json()["entries"].as_array().unwrap().clone();
        let actions: Vec<&str> = e.iter().map(|x| x["action"].as_str().unwrap()).collect();
        if ["geofence.put", "layer.read", "denied"]
            .iter()
            .all(|a| actions.contains(a))
        {
            break e;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{actions:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let of = |action: &str| -> Vec<&serde_json::Value> {
        entries.iter().filter(|e| e["action"] == action).collect()
    };
    assert_eq!(
        of("keys.create").len(),
        5,
        "the four keys of this test and the harness's"
    );
    let imports: Vec<&str> = of("layer.import")
        .iter()
        .map(|e| e["target"].as_str().unwrap())
        .collect();
    assert_eq!(imports, ["parcels v1 restricted", "parks v1 public"]);
    let put = of("geofence.put")[0];
    assert_eq!(put["target"], "depot");
    assert_eq!(put["role"], "operator");
    assert_eq!(put["client"], "127.0.0.1");
    let reads = of("layer.read");
    assert_eq!(reads.len(), 1, "two reads in one minute make one entry");
    assert_eq!(reads[0]["target"], "parcels");
    let denied: Vec<String> = of("denied")
        .iter()
        .map(|e| {
            let f = |k: &str| e[k].as_str().unwrap().to_string();
            format!("{} {} {}", f("role"), f("target"), f("outcome"))
        })
        .collect();
    assert!(
        denied.contains(&"anonymous /devices 401".to_string()),
        "{denied:?}"
    );
    assert!(
        denied.contains(&"viewer /geofences 403".to_string()),
        "{denied:?}"
    );
    let text = serde_json::to_string(&entries).unwrap();
    assert!(!text.contains("uk_"), "no key in the audit log");
    drop(server);
    // The chain holds...
    let out = urbis(&["audit", "verify", "--store", s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact"));
    // ... until one byte of one entry changes: verify names that entry.
    let seq = reads[0]["seq"].as_i64().unwrap();
    let db = rusqlite::Connection::open(store.join("urbis.db")).unwrap();
    db.execute("UPDATE audit SET target = 'parcelz' WHERE seq = ?1", [seq])
        .unwrap();
    drop(db);
    let out = urbis(&["audit", "verify", "--store", s]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("entry {seq}:")), "{err}");
}

#[test]
fn limits_refuse_bursts_big_bodies_long_requests_extra_streams_and_slow_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (store, policy) = setup(dir.path());
    let viewer = api_key(&store, "viewer");
    let server = Server::start(
        &store,
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--rate-api",
            "5",
            "--max-streams",
            "2",
            "--header-timeout-s",
            "1",
        ],
    );
    // A burst past 5 a second (burst 10): 429 with Retry-After, then it recovers.
    let statuses: Vec<(u16, Option<String>)> = (0..30)
        .map(|_| {
            let r = server.get_with("/devices", &viewer);
            (r.status, r.header("retry-after").map(str::to_string))
        })
        .collect();
    let refused: Vec<&(u16, Option<String>)> = statuses.iter().filter(|s| s.0 == 429).collect();
    assert!(refused.len() >= 15, "{statuses:?}");
    assert!(
        statuses[..10].iter().all(|s| s.0 == 200),
        "the burst passes: {statuses:?}"
    );
    let wait: u64 = refused[0]
        .1
        .as_deref()
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    std::thread::sleep(Duration::from_secs(wait));
    assert_eq!(
        server.get_with("/devices", &viewer).status,
        200,
        "recovered"
    );
    // Another caller is not held up by this one; tiles have their own budget.
    assert_eq!(
        server.get(&format!("/tiles/parks/{TILE}.mvt"), &[]).status,
        200
    );
    // An oversized body: 413. A long request target: 414. Huge headers: 431.
    let big = vec![b' '; 17 << 20];
    let r = common::http_request(
        &server.addr,
        "POST",
        "/ingest",
        &[("Content-Type", "application/json")],
        &big,
    );
    assert_eq!(r.status, 413);
    let long = format!("/tiles/parks.json?x={}", "a".repeat(10_000));
    assert_eq!(server.get_anonymous(&long).status, 414);
    let huge = "b".repeat(40_000);
    assert_eq!(server.get("/health", &[("X-Pad", &huge)]).status, 431);
    // At most two open streams per key.
    let auth = format!("Bearer {viewer}");
    let open = |path: &str| {
        let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
        std::io::Write::write_all(
            &mut s,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n").as_bytes(),
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut head = [0u8; 12];
        std::io::Read::read_exact(&mut s, &mut head).unwrap();
        (s, String::from_utf8_lossy(&head).to_string())
    };
    std::thread::sleep(Duration::from_secs(2)); // the API budget refills
    let (_a, ha) = open("/stream");
    let (_b, hb) = open("/stream");
    let (_c, hc) = open("/stream");
    assert!(ha.ends_with("200") && hb.ends_with("200"), "{ha} {hb}");
    assert!(hc.ends_with("429"), "a third stream: {hc}");
    // A client that starts a request and stalls is cut off after the header timeout.
    let mut slow = std::net::TcpStream::connect(&server.addr).unwrap();
    std::io::Write::write_all(&mut slow, b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut slow, &mut rest);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the slow client was held {took:?}"
    );
    assert!(
        !String::from_utf8_lossy(&rest).contains("200 OK"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(server.get("/health", &[]).status, 200, "the server goes on");
}

#[test]
fn a_changed_policy_file_applies_within_seconds_and_a_bad_edit_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, policy) = setup(dir.path());
    let analyst = api_key(&store, "analyst");
    let server = Server::start(&store, &["--policy", policy.to_str().unwrap()]);
    let fields = |key: &str| -> Vec<String> {
        let tj = server.get_with("/tiles/parcels.json", key).json();
        let mut f: Vec<String> = tj["vector_layers"][0]["fields"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        f.sort();
        f
    };
    assert_eq!(fields(&analyst), ["landuse", "parcel"]);
    // The rule changes: the analyst now also sees owners...
    std::fs::write(
        &policy,
        "[roles.analyst]\nclearance = \"restricted\"\nrights = [\"tiles\"]\n",
    )
    .unwrap();
    let t = Instant::now();
    while fields(&analyst).len() != 3 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{:?}",
            fields(&analyst)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // ... and a broken edit changes nothing (the last good policy stays).
    std::fs::write(&policy, "[roles.analyst]\nclearance = \"top-secret\"\n").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(fields(&analyst).len(), 3);
    assert_eq!(server.get("/health", &[]).status, 200);
}

#[test]
fn an_allowed_area_limits_features_tiles_and_devices() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = setup(dir.path());
    let s = store.to_str().unwrap();
    for id in ["bus-in", "bus-out"] {
        let out = urbis(&["devices", "add", id, "--layer", "buses", "--store", s]);
        assert!(out.status.success());
    }
    let ingest = common::live::ingest_key(&store, "gw");
    let policy = dir.path().join("district.toml");
    let area = r#"{ type = "Polygon", coordinates = [[[24.899, 60.16], [24.9095, 60.16], [24.9095, 60.18], [24.899, 60.18], [24.899, 60.16]]] }"#;
    std::fs::write(
        &policy,
        format!(
            "[roles.district]\nclearance = \"restricted\"\nrights = [\"tiles\", \"devices\", \"stream\"]\n\
             [[roles.district.layers]]\nlayer = \"parcels\"\narea = {area}\n\
             [[roles.district.layers]]\nlayer = \"buses\"\narea = {area}\n"
        ),
    )
    .unwrap();
    let district = api_key(&store, "district");
    let server = Server::start(&store, &["--policy", policy.to_str().unwrap()]);
    // Parcels p0..p4 lie in the area, p5.. east of it; the tile holds p0..p10.
    let names = |body: &[u8]| -> Vec<String> {
        let mut v: Vec<String> = decode_tile(body, "parcels")
            .iter()
            .map(|f| f["properties"]["parcel"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let path = format!("/tiles/parcels/{TILE}.mvt");
    let all = names(&server.get(&path, &[]).body);
    assert!(all.len() > 8, "{all:?}");
    let r = server.get_with(&path, &district);
    assert_eq!(r.status, 200);
    assert_eq!(names(&r.body), ["p0", "p1", "p2", "p3", "p4"]);
    // A tile wholly outside the area: 404 (the admin gets it).
    assert_eq!(
        server
            .get_with("/tiles/parcels/14/9326/4742.mvt", &district)
            .status,
        404
    );
    assert_eq!(
        server.get("/tiles/parcels/14/9326/4742.mvt", &[]).status,
        200
    );
    // Devices outside the area are invisible.
    let t = common::live::now() - 10.0;
    let body = format!(
        r#"[{{"device":"bus-in","lon":24.905,"lat":60.17,"t":{t}}},{{"device":"bus-out","lon":24.95,"lat":60.17,"t":{t}}}]"#
    );
    let r = common::live::post_json(&server.addr, &format!("Bearer {ingest}"), &body);
    assert_eq!(r.status, 200);
    let ids: Vec<String> = server.get_with("/devices", &district).json()["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["bus-in"]);
    assert_eq!(server.get_with("/devices/bus-out", &district).status, 404);
    assert_eq!(server.get_with("/devices/bus-in", &district).status, 200);
    // A bad area in a policy is refused with its place.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[roles.x]\nclearance = \"public\"\n[[roles.x.layers]]\nlayer = \"a\"\narea = { type = \"Point\", coordinates = [1, 2] }\n",
    )
    .unwrap();
    let out = urbis(&[
        "serve",
        "--store",
        s,
        "--no-demo",
        "--bind",
        "127.0.0.1:0",
        "--coap-bind",
        "127.0.0.1:0",
        "--policy",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("roles.x.layers[0].area") && err.contains("Polygon"),
        "{err}"
    );
}

#[test]
fn an_open_stream_ends_when_its_key_is_revoked_and_viewers_get_no_replayed_history() {
    let dir = tempfile::tempdir().unwrap();
    let (store, policy) = setup(dir.path());
    let s = store.to_str().unwrap();
    let viewer = api_key(&store, "viewer");
    let server = Server::start(&store, &["--policy", policy.to_str().unwrap()]);
    let auth = format!("Bearer {viewer}");
    // Resuming with Last-Event-ID: a viewer (no tracks right) gets `reset`, not history.
    let resumed = common::Sse::connect(
        &server.addr,
        "/stream",
        &[("Authorization", &auth), ("Last-Event-ID", "0")],
    );
    let first = resumed.next(Duration::from_secs(3)).expect("an event");
    assert_eq!(first.event, "reset");
    drop(resumed);
    // An open stream, then the key is revoked from another process: the stream ends.
    let stream = common::Sse::connect(&server.addr, "/stream", &[("Authorization", &auth)]);
    let list: serde_json::Value =
        serde_json::from_slice(&urbis(&["keys", "list", "--json", "--store", s]).stdout).unwrap();
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "viewer")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        urbis(&["keys", "revoke", &id, "--store", s])
            .status
            .success()
    );
    let revoked = Instant::now();
    let e = stream
        .until(Duration::from_secs(5), |e| e.event == "cutoff")
        .expect("a cutoff event");
    assert!(e.data.contains("revoked"), "{}", e.data);
    assert!(
        revoked.elapsed() < Duration::from_secs(3),
        "{:?}",
        revoked.elapsed()
    );
    // Composite tiles name a few distinct layers.
    let many = ["parks"; 9].join(",");
    assert_eq!(
        server.get(&format!("/tiles/{many}/{TILE}.mvt"), &[]).status,
        400
    );
    assert_eq!(
        server
            .get(&format!("/tiles/parks,parks/{TILE}.mvt"), &[])
            .status,
        400
    );
}

#[test]
fn geofences_of_hidden_layers_are_hidden_and_placing_one_needs_exact_positions() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = setup(dir.path());
    let policy = dir.path().join("planner.toml");
    std::fs::write(
        &policy,
        "[roles.planner]\nclearance = \"internal\"\nrights = [\"tiles\", \"devices\", \"geofences:write\"]\n",
    )
    .unwrap();
    let operator = api_key(&store, "operator");
    let viewer = api_key(&store, "viewer");
    let planner = api_key(&store, "planner");
    let server = Server::start(&store, &["--policy", policy.to_str().unwrap()]);
    let fence = br#"{"type":"Feature","id":"secret-zone","properties":{"layers":["parcels"]},"geometry":{"type":"Polygon","coordinates":[[[24.9,60.1],[25,60.1],[25,60.2],[24.9,60.1]]]}}"#;
    let post = |key: &str| {
        common::http_request(
            &server.addr,
            "POST",
            "/geofences",
            &[("Authorization", &format!("Bearer {key}"))],
            fence,
        )
    };
    let r = post(&planner);
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("exact_positions"));
    assert_eq!(post(&operator).status, 201);
    // The fence names the restricted parcels: an internal viewer does not see it.
    let ids = |key: &str| -> Vec<String> {
        server.get_with("/geofences", key).json()["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(ids(&viewer).is_empty());
    assert_eq!(
        server.get_with("/geofences/secret-zone", &viewer).status,
        404
    );
    assert_eq!(
        server.get("/geofences", &[]).json()["features"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn points_of_a_personal_layer_file_are_snapped_for_roles_without_exact_positions() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s = store.to_str().unwrap();
    // Twelve home addresses around one z16 tile of central Helsinki.
    let pts: Vec<[f64; 2]> = (0..12)
        .map(|i| {
            let f = f64::from(i);
            [
                24.93011 + f * 0.000731,
                60.16823 + (f * 0.37).sin() * 0.0009,
            ]
        })
        .collect();
    let features: Vec<String> = pts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                r#"{{"type":"Feature","properties":{{"n":{i}}},"geometry":{{"type":"Point","coordinates":[{},{}]}}}}"#,
                p[0], p[1]
            )
        })
        .collect();
    let file = dir.path().join("homes.geojson");
    std::fs::write(
        &file,
        format!(
            r#"{{"type":"FeatureCollection","features":[{}]}}"#,
            features.join(",")
        ),
    )
    .unwrap();
    common::import_json(&file, &store, &["--layer", "homes", "--maxzoom", "16"]);
    let out = urbis(&[
        "layers",
        "classify",
        "homes",
        "internal",
        "--personal",
        "--store",
        s,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let viewer = api_key(&store, "viewer");
    let server = Server::start(&store, &[]);
    let (x, y, _, _) = common::live::tile_of(pts[6][0], pts[6][1], 16);
    let path = format!("/tiles/homes/16/{x}/{y}.mvt");
    let exact = decode_tile(&server.get(&path, &[]).body, "homes");
    assert!(!exact.is_empty());
    assert!(
        exact.iter().any(|f| !on_grid(
            tile_lonlat(16, x, y, &f["geometry"]["coordinates"]),
            100.0,
            1.0
        )),
        "the admin sees exact positions"
    );
    let r = server.get_with(&path, &viewer);
    assert_eq!(r.status, 200);
    let coarse = decode_tile(&r.body, "homes");
    assert!(!coarse.is_empty());
    for f in &coarse {
        let p = tile_lonlat(16, x, y, &f["geometry"]["coordinates"]);
        assert!(
            on_grid(p, 100.0, 0.5),
            "{p:?} is not on the 100 m grid: {f}"
        );
    }
}

#[test]
fn connections_beyond_the_cap_are_closed_and_the_open_ones_go_on() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let server = Server::start(&store, &["--max-connections", "3"]);
    // Three connections held open (each half-way through its headers).
    let mut held: Vec<std::net::TcpStream> = (0..3)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    // A fourth is closed at once, without an answer.
    let mut extra = std::net::TcpStream::connect(&server.addr).unwrap();
    extra
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let _ = extra.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = Vec::new();
    let n = extra.read_to_end(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf));
    // The held ones finish their requests.
    let s = &mut held[0];
    s.write_all(b"Host: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Closed connections free their places.
    assert_eq!(server.get("/health", &[]).status, 200);
}
