//! Live devices end to end: the real server, a real CoAP client (libcoap's `coap-client`),
//! raw CoAP datagrams for malformed input, HTTP batches, the live tile decoded by Python's
//! `mapbox-vector-tile`, and `/stream` read as Server-Sent Events.

mod common;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use common::{Server, Sse, add_device, http_request, urbis};
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

const COAP_CLIENT: &str = "coap-client-notls";

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Runs libcoap's client: POST `payload` (or the file `@path`) with content-format `cf`.
fn coap_client(
    coap: &str,
    device: &str,
    secret: &str,
    cf: u16,
    payload: &str,
    con: bool,
) -> String {
    let uri = format!("coap://{coap}/r/{device}?k={secret}");
    let mut cmd = Command::new(COAP_CLIENT);
    cmd.args(["-m", "post", "-t", &cf.to_string(), "-B", "5"]);
    if !con {
        cmd.arg("-N");
    }
    match payload.strip_prefix('@') {
        Some(file) => cmd.args(["-f", file]),
        None => cmd.args(["-e", payload]),
    };
    let out = cmd.arg(&uri).output().unwrap_or_else(|e| {
        panic!("{COAP_CLIENT} not found ({e}): install libcoap3-bin (.ci/run does)")
    });
    assert!(
        out.status.success(),
        "{COAP_CLIENT} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn get_json(s: &Server, path: &str) -> serde_json::Value {
    let r = s.get(path, &[]);
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// Decodes a tile with Python's mapbox-vector-tile; returns the layer's features as JSON.
fn decode_tile(bytes: &[u8], layer: &str) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.mvt");
    std::fs::write(&f, bytes).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, json, mapbox_vector_tile as m\n\
             t = m.decode(open(sys.argv[1], 'rb').read(), default_options={'y_coord_down': True})\n\
             print(json.dumps(t.get(sys.argv[2], {}).get('features', [])))",
            f.to_str().unwrap(),
            layer,
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The tile at zoom `z` containing lon/lat, and the position in tile units.
fn tile_of(lon: f64, lat: f64, z: u32) -> (u32, u32, f64, f64) {
    let n = f64::from(1u32 << z);
    let x = (lon + 180.0) / 360.0 * n;
    let s = lat.to_radians().sin();
    let y = (0.5 - ((1.0 + s) / (1.0 - s)).ln() / (4.0 * std::f64::consts::PI)) * n;
    (
        x as u32,
        y as u32,
        (x - x.floor()) * 4096.0,
        (y - y.floor()) * 4096.0,
    )
}

/// A new ingest API key, from `urbis devices key NAME`.
fn ingest_key(store: &std::path::Path, name: &str) -> String {
    let out = urbis(&["devices", "key", name, "--store", store.to_str().unwrap()]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("ik_"))
        .expect("a key in the output")
        .to_string()
}

/// `POST /ingest` of a JSON body with `Authorization: AUTH` (e.g. `Bearer ik_…`).
fn post_json(addr: &str, auth: &str, body: &str) -> common::HttpResponse {
    http_request(
        addr,
        "POST",
        "/ingest",
        &[
            ("Authorization", auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
}

#[test]
fn coap_client_reports_show_up_in_devices_tiles_and_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s1 = add_device(&store, "tr-1", "vehicles", "30s");
    let s2 = add_device(&store, "tr-2", "vehicles", "30s");
    let s3 = add_device(&store, "mh-3", "vehicles", "6h");
    let server = Server::start(&store, &[]);
    let stream = Sse::connect(&server.addr, "/stream?layers=vehicles", &[]);
    assert_eq!(stream.status, 200);

    // CON, SenML JSON with a base name and telemetry.
    coap_client(
        &server.coap,
        "tr-1",
        &s1,
        110,
        r#"[{"bn":"tr-1/","n":"lat","v":60.1699},{"n":"lon","v":24.9384},{"n":"speed","u":"km/h","v":31}]"#,
        true,
    );
    // NON, SenML CBOR with LwM2M location names.
    let cbor = {
        use ciborium::Value as V;
        let rec = |pairs: Vec<(i64, V)>| {
            V::Map(
                pairs
                    .into_iter()
                    .map(|(k, v)| (V::Integer(k.into()), v))
                    .collect(),
            )
        };
        let pack = V::Array(vec![
            rec(vec![
                (-2, V::Text("/6/0/".into())),
                (0, V::Text("0".into())),
                (2, V::Float(60.1702)),
            ]),
            rec(vec![(0, V::Text("1".into())), (2, V::Float(24.9391))]),
        ]);
        let mut b = Vec::new();
        ciborium::ser::into_writer(&pack, &mut b).unwrap();
        b
    };
    let cbor_file = dir.path().join("pack.cbor");
    std::fs::write(&cbor_file, &cbor).unwrap();
    coap_client(
        &server.coap,
        "tr-2",
        &s2,
        112,
        &format!("@{}", cbor_file.display()),
        false,
    );
    // CON, compact JSON with extra telemetry.
    coap_client(
        &server.coap,
        "mh-3",
        &s3,
        50,
        r#"{"lat":60.1695,"lon":24.9400,"level_cm":42.5}"#,
        true,
    );

    // The devices API.
    let expect = [
        ("tr-1", [24.9384, 60.1699]),
        ("tr-2", [24.9391, 60.1702]),
        ("mh-3", [24.9400, 60.1695]),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    for (id, pos) in expect {
        loop {
            let d = get_json(&server, &format!("/devices/{id}"));
            if d["position"] == serde_json::json!(pos) {
                assert_eq!(d["state"], "live");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never showed its report: {d}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let d1 = get_json(&server, "/devices/tr-1");
    assert_eq!(d1["telemetry"]["speed"], 31.0);
    let d3 = get_json(&server, "/devices/mh-3");
    assert_eq!(d3["telemetry"]["level_cm"], 42.5);

    // The stream saw all three.
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 3 {
        let e = stream
            .until(Duration::from_secs(5), |e| e.event == "position")
            .unwrap_or_else(|| panic!("stream missed reports; saw {seen:?}"));
        assert!(e.id.is_some(), "events carry ids");
        seen.insert(e.json()["id"].as_str().unwrap().to_string());
    }

    // A live tile at z16 shows each device within one tile unit; at z10 they cluster.
    for (id, pos) in expect {
        let (x, y, px, py) = tile_of(pos[0], pos[1], 16);
        let r = server.get(&format!("/tiles/vehicles/16/{x}/{y}.mvt"), &[]);
        assert_eq!(r.status, 200);
        let feats = decode_tile(&r.body, "vehicles");
        let f = feats
            .iter()
            .find(|f| f["properties"]["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in its z16 tile: {feats:?}"));
        let c = &f["geometry"]["coordinates"];
        let (fx, fy) = (c[0].as_f64().unwrap(), c[1].as_f64().unwrap());
        assert!(
            (fx - px).abs() <= 1.0 && (fy - py).abs() <= 1.0,
            "{id}: {fx},{fy} vs {px},{py}"
        );
        assert_eq!(f["properties"]["state"], "live");
    }
    // At the highest zoom where all three share a cluster cell (256 units), one cluster.
    let z = (2..=14)
        .rev()
        .find(|z| {
            let cells: std::collections::BTreeSet<(u32, u32, u32, u32)> = expect
                .iter()
                .map(|(_, p)| {
                    let (x, y, px, py) = tile_of(p[0], p[1], *z);
                    (x, y, px as u32 / 256, py as u32 / 256)
                })
                .collect();
            cells.len() == 1
        })
        .unwrap();
    let (x, y, _, _) = tile_of(expect[0].1[0], expect[0].1[1], z);
    let feats = decode_tile(
        &server
            .get(&format!("/tiles/vehicles/{z}/{x}/{y}.mvt"), &[])
            .body,
        "vehicles",
    );
    assert_eq!(feats.len(), 1, "one cluster at z{z}: {feats:?}");
    assert_eq!(feats[0]["properties"]["point_count"], 3);
    assert_eq!(feats[0]["properties"]["live"], 3);
    assert_eq!(feats[0]["properties"]["cluster"], true);
    // The live layer is in the catalog and has TileJSON.
    let cat = get_json(&server, "/catalog");
    let live = cat["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "vehicles")
        .unwrap();
    assert_eq!(live["live"], true);
    assert_eq!(live["features"], 3);
    let tj = get_json(&server, "/tiles/vehicles.json");
    assert_eq!(tj["vector_layers"][0]["id"], "vehicles");

    // A moved device invalidates its cached tile: the new position is served.
    coap_client(
        &server.coap,
        "tr-1",
        &s1,
        50,
        r#"{"lat":60.1710,"lon":24.9450}"#,
        true,
    );
    let (x, y, px, _) = tile_of(24.9450, 60.1710, 16);
    let feats = decode_tile(
        &server
            .get(&format!("/tiles/vehicles/16/{x}/{y}.mvt"), &[])
            .body,
        "vehicles",
    );
    let f = feats
        .iter()
        .find(|f| f["properties"]["id"] == "tr-1")
        .expect("moved tr-1 in its new tile");
    assert!((f["geometry"]["coordinates"][0].as_f64().unwrap() - px).abs() <= 1.0);
}

/// Builds a CoAP POST to `/r/{device}?k={secret}`.
fn post(mid: u16, device: &str, secret: &str, cf: Option<u16>, payload: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = mid;
    p.set_token(vec![0xA1, (mid & 0xff) as u8]);
    p.add_option(CoapOption::UriPath, b"r".to_vec());
    p.add_option(CoapOption::UriPath, device.as_bytes().to_vec());
    p.add_option(CoapOption::UriQuery, format!("k={secret}").into_bytes());
    if let Some(cf) = cf {
        p.add_option(CoapOption::ContentFormat, cf.to_be_bytes().to_vec());
    }
    p.payload = payload.to_vec();
    p
}

fn exchange(sock: &UdpSocket, addr: &str, bytes: &[u8]) -> Option<Packet> {
    sock.send_to(bytes, addr).unwrap();
    let mut buf = [0u8; 2048];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(Packet::from_bytes(&buf[..n]).expect("a valid CoAP answer")),
        Err(_) => None,
    }
}

/// Sends `p` and returns the answer (panics if none comes).
fn ask(sock: &UdpSocket, addr: &str, p: &Packet) -> Packet {
    exchange(sock, addr, &p.to_bytes().unwrap()).expect("an answer")
}

fn code(p: &Packet) -> MessageClass {
    p.header.code
}

#[test]
fn malformed_coap_and_bad_reports_get_the_right_code_and_never_crash() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let secret = add_device(&store, "tr-1", "vehicles", "15m");
    let server = Server::start(&store, &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let c = &server.coap;
    let resp = |r: ResponseType| MessageClass::Response(r);

    // Truncated options: option length 10 but the datagram ends. A Reset with the same id.
    let a = exchange(&sock, c, &[0x40, 0x02, 0x12, 0x34, 0xBA, b'r']).expect("an answer");
    assert_eq!(a.header.get_type(), MessageType::Reset);
    assert_eq!(a.header.message_id, 0x1234);
    // Token length 9 (reserved).
    let a = exchange(
        &sock,
        c,
        &[0x49, 0x02, 0x12, 0x35, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    )
    .unwrap();
    assert_eq!(a.header.get_type(), MessageType::Reset);
    assert_eq!(a.header.message_id, 0x1235);
    // Oversized payload: 4.13 with Size1.
    // (coap-lite refuses to encode over 1280 bytes, so the payload is appended by hand.)
    let mut big = post(1, "tr-1", &secret, Some(50), b"").to_bytes().unwrap();
    big.push(0xFF);
    big.extend(std::iter::repeat_n(b' ', 1500));
    let a = exchange(&sock, c, &big).unwrap();
    assert_eq!(code(&a), resp(ResponseType::RequestEntityTooLarge));
    assert!(a.get_first_option(CoapOption::Size1).is_some());
    // Bad SenML: 4.00 with a diagnostic naming the problem.
    let a = ask(
        &sock,
        c,
        &post(
            2,
            "tr-1",
            &secret,
            Some(110),
            b"[{\"n\":\"lat\",\"v\":\"north\"}]",
        ),
    );
    assert_eq!(code(&a), resp(ResponseType::BadRequest));
    assert!(
        String::from_utf8_lossy(&a.payload).contains("'v' must be a number"),
        "{:?}",
        String::from_utf8_lossy(&a.payload)
    );
    let a = ask(&sock, c, &post(3, "tr-1", &secret, Some(112), b"\xa1\x00"));
    assert_eq!(code(&a), resp(ResponseType::BadRequest));
    // Out-of-range coordinates.
    let a = ask(
        &sock,
        c,
        &post(4, "tr-1", &secret, Some(50), b"{\"lat\":95,\"lon\":10}"),
    );
    assert_eq!(code(&a), resp(ResponseType::BadRequest));
    assert!(String::from_utf8_lossy(&a.payload).contains("out of range"));
    // Unknown device; wrong secret; no secret.
    let a = ask(
        &sock,
        c,
        &post(5, "nobody", &secret, Some(50), b"{\"lat\":1,\"lon\":1}"),
    );
    assert_eq!(code(&a), resp(ResponseType::NotFound));
    let a = ask(
        &sock,
        c,
        &post(6, "tr-1", "ds_wrong", Some(50), b"{\"lat\":1,\"lon\":1}"),
    );
    assert_eq!(code(&a), resp(ResponseType::Unauthorized));
    // Unsupported content-format.
    let a = ask(&sock, c, &post(7, "tr-1", &secret, Some(0), b"lat=1"));
    assert_eq!(code(&a), resp(ResponseType::UnsupportedContentFormat));
    // GET is not allowed.
    let mut g = post(8, "tr-1", &secret, None, b"");
    g.header.code = MessageClass::Request(RequestType::Get);
    let a = exchange(&sock, c, &g.to_bytes().unwrap()).unwrap();
    assert_eq!(code(&a), resp(ResponseType::MethodNotAllowed));
    // Garbage of every short length is survived.
    for n in 0..40u8 {
        let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
        sock.send_to(&junk, c).unwrap();
    }

    // A good report, then its retransmission: the same answer, one write.
    let good = post(9, "tr-1", &secret, Some(50), b"{\"lat\":60.2,\"lon\":24.9}")
        .to_bytes()
        .unwrap();
    let a = exchange(&sock, c, &good).unwrap();
    assert_eq!(code(&a), resp(ResponseType::Changed));
    assert_eq!(a.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(a.get_token(), &[0xA1, 9]);
    let b = exchange(&sock, c, &good).unwrap();
    assert_eq!(a, b, "the stored response is replayed");
    let d = server.get("/devices/tr-1", &[]).json();
    assert_eq!(
        d["reports"], 1,
        "a retransmission is not a second report: {d}"
    );
    assert_eq!(server.get("/health", &[]).status, 200);
}

#[test]
fn http_batches_geofence_events_and_stream_resume() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s1 = add_device(&store, "bus-1", "vehicles", "30s");
    add_device(&store, "bus-2", "vehicles", "30s");
    let key = ingest_key(&store, "gw");
    let server = Server::start(&store, &[]);
    let auth = format!("Bearer {key}");
    let ingest = |body: &str, auth: &str| post_json(&server.addr, auth, body);

    // A fence around a square in Helsinki, for the vehicles layer.
    let fence = r#"{"type":"Feature","id":"depot","properties":{"name":"Depot","layers":["vehicles"]},
        "geometry":{"type":"Polygon","coordinates":[[[24.90,60.10],[24.92,60.10],[24.92,60.12],[24.90,60.12],[24.90,60.10]]]}}"#;
    let r = http_request(&server.addr, "POST", "/geofences", &[], fence.as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let stream = Sse::connect(&server.addr, "/stream", &[]);

    let t0 = now() - 100.0;
    // outside -> inside (enter) -> outside (exit) -> through (cross), plus bad records.
    let batch = format!(
        r#"[{{"device":"bus-1","lat":60.09,"lon":24.91,"t":{a}}},
            {{"device":"bus-1","lat":60.11,"lon":24.91,"t":{b}}},
            {{"device":"nobody","lat":60.11,"lon":24.91}},
            {{"device":"bus-1","lat":60.11,"lon":24.95,"t":{c}}},
            {{"device":"bus-2","lat":91,"lon":24.91}},
            {{"device":"bus-1","lat":60.11,"lon":24.85,"t":{d}}}]"#,
        a = t0,
        b = t0 + 10.0,
        c = t0 + 20.0,
        d = t0 + 30.0
    );
    let r = ingest(&batch, &auth);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["accepted"], 4);
    assert_eq!(j["rejected"], 2);
    let errs: Vec<u64> = j["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["record"].as_u64().unwrap())
        .collect();
    assert_eq!(errs, vec![2, 4]);

    let mut kinds = Vec::new();
    let mut ids = Vec::new();
    while kinds.len() < 3 {
        let e = stream
            .until(Duration::from_secs(5), |e| e.event == "geofence")
            .unwrap_or_else(|| panic!("missing geofence events; got {kinds:?}"));
        let d = e.json();
        assert_eq!(d["fence"], "depot");
        assert_eq!(d["device"], "bus-1");
        kinds.push(d["kind"].as_str().unwrap().to_string());
        ids.push(e.id.clone().unwrap());
    }
    assert_eq!(kinds, ["enter", "exit", "cross"]);

    // Resume after the first geofence event: the later ones are replayed.
    let resumed = Sse::connect(&server.addr, "/stream", &[("Last-Event-ID", &ids[0])]);
    let mut again = Vec::new();
    while again.len() < 2 {
        let e = resumed
            .until(Duration::from_secs(5), |e| e.event == "geofence")
            .expect("replayed events");
        again.push(e.json()["kind"].as_str().unwrap().to_string());
    }
    assert_eq!(again, ["exit", "cross"]);

    // A late fix goes to history, flagged, and does not move the device.
    let r = ingest(
        &format!(
            r#"{{"device":"bus-1","lat":60.5,"lon":25.0,"t":{}}}"#,
            t0 + 5.0
        ),
        &auth,
    );
    assert_eq!(r.status, 200);
    let d = server.get("/devices/bus-1", &[]).json();
    assert_eq!(d["position"], serde_json::json!([24.85, 60.11]));
    assert_eq!(d["late_reports"], 1);
    let tr = server
        .get(&format!("/devices/bus-1/track?from={}", t0 - 1.0), &[])
        .json();
    let fixes = tr["fixes"].as_array().unwrap();
    assert_eq!(fixes.len(), 5);
    assert_eq!(fixes.iter().filter(|f| f["late"] == true).count(), 1);

    // Credentials: none, unknown, and a device secret used for another device.
    assert_eq!(ingest("[]", "Bearer ik_nope").status, 401);
    let r = http_request(&server.addr, "POST", "/ingest", &[], b"{}");
    assert_eq!(r.status, 401);
    let r = ingest(
        r#"[{"device":"bus-2","lat":60.1,"lon":24.9}]"#,
        &format!("Bearer {s1}"),
    );
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("belongs to bus-1"));
    // A device posting its own SenML with its secret.
    let r = http_request(
        &server.addr,
        "POST",
        "/ingest",
        &[
            ("Authorization", &format!("Bearer {s1}")),
            ("Content-Type", "application/senml+json"),
        ],
        br#"[{"n":"lat","v":60.2},{"n":"lon","v":24.8}]"#,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Garbage bodies are 400 with a reason, never a crash.
    let r = ingest("[{\"device\":", &auth);
    assert_eq!(r.status, 400);
    assert_eq!(server.get("/ready", &[]).status, 200);

    // Geofences list and delete.
    let fc = server.get("/geofences", &[]).json();
    assert_eq!(fc["features"][0]["id"], "depot");
    assert_eq!(
        http_request(&server.addr, "DELETE", "/geofences/depot", &[], b"").status,
        204
    );
    assert_eq!(
        http_request(&server.addr, "DELETE", "/geofences/depot", &[], b"").status,
        404
    );
}

#[test]
fn a_removed_device_leaves_state_tiles_and_stream_and_its_name_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let st = store.to_str().unwrap();
    add_device(&store, "bus-1", "vehicles", "30s");
    add_device(&store, "bus-2", "vehicles", "30s");
    // Keeps the vehicles layer registered when the other two have left it.
    add_device(&store, "bus-3", "vehicles", "30s");
    let key = ingest_key(&store, "gw");
    let auth = format!("Bearer {key}");
    let mut server = Server::start(&store, &[]);
    let ingest = |server: &Server, body: &str| {
        let r = post_json(&server.addr, &auth, body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    };
    let stream = Sse::connect(&server.addr, "/stream", &[]);
    let (p1, p2) = ([24.9401, 60.1702], [24.9444, 60.1688]);
    let j = ingest(
        &server,
        &format!(
            r#"[{{"device":"bus-1","lon":{},"lat":{}}},{{"device":"bus-2","lon":{},"lat":{}}}]"#,
            p1[0], p1[1], p2[0], p2[1]
        ),
    );
    assert_eq!(j["accepted"], 2);
    let in_tile = |server: &Server, id: &str, p: [f64; 2]| {
        let (x, y, _, _) = tile_of(p[0], p[1], 16);
        let r = server.get(&format!("/tiles/vehicles/16/{x}/{y}.mvt"), &[]);
        if r.status == 204 {
            return false; // an empty tile
        }
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        decode_tile(&r.body, "vehicles")
            .iter()
            .any(|f| f["properties"]["id"] == id)
    };
    assert!(in_tile(&server, "bus-1", p1), "bus-1 drawn before removal");

    // Removed: announced on the stream, gone from /devices and from the (cached) tile.
    let rm = urbis(&["devices", "rm", "bus-1", "--store", st]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    let e = stream
        .until(Duration::from_secs(5), |e| e.event == "removed")
        .expect("a removed event within 5 s of `devices rm`");
    let d = e.json();
    assert_eq!(
        (&d["id"], &d["layer"], &d["position"]),
        (
            &serde_json::json!("bus-1"),
            &serde_json::json!("vehicles"),
            &serde_json::json!(p1)
        ),
        "{d}"
    );
    assert_eq!(
        d["layer_gone"], false,
        "bus-2 and bus-3 are still on vehicles: {d}"
    );
    let removed_id: u64 = e.id.as_deref().unwrap().parse().unwrap();
    assert_eq!(server.get("/devices/bus-1", &[]).status, 404);
    assert!(!in_tile(&server, "bus-1", p1), "bus-1 still in its tile");
    assert!(in_tile(&server, "bus-2", p2), "bus-2 stays");
    // A client resuming from before the removal hears of it.
    let resumed = Sse::connect(
        &server.addr,
        "/stream",
        &[("Last-Event-ID", &(removed_id - 1).to_string())],
    );
    let again = resumed
        .until(Duration::from_secs(5), |e| e.event == "removed")
        .expect("the removal replayed");
    assert_eq!(again.id, e.id);

    // bus-2 removed and registered again on another layer (a new device under an old name):
    // it starts afresh there and its old fix leaves the vehicles layer.
    assert!(
        urbis(&["devices", "rm", "bus-2", "--store", st])
            .status
            .success()
    );
    let new_secret = add_device(&store, "bus-2", "trucks", "30s");
    let e = stream
        .until(Duration::from_secs(5), |e| e.event == "removed")
        .expect("bus-2's removal on the stream");
    assert_eq!(e.json()["id"], "bus-2");
    assert_eq!(e.json()["layer"], "vehicles");
    let deadline = Instant::now() + Duration::from_secs(5);
    let fresh = loop {
        let r = server.get("/devices/bus-2", &[]);
        if r.status == 200 && r.json()["layer"] == "trucks" {
            break r.json();
        }
        assert!(Instant::now() < deadline, "bus-2 never moved to trucks");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(fresh["state"], "new", "{fresh}");
    assert_eq!(fresh["position"], serde_json::Value::Null, "{fresh}");
    assert_eq!(fresh["reports"], 0, "{fresh}");
    assert!(
        !in_tile(&server, "bus-2", p2),
        "bus-2's old fix left vehicles"
    );
    let p3 = [24.9502, 60.1671];
    let r = post_json(
        &server.addr,
        &format!("Bearer {new_secret}"),
        &format!(r#"{{"lon":{},"lat":{}}}"#, p3[0], p3[1]),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Its history starts at the new registration.
    let tr = server.get("/devices/bus-2/track?from=0", &[]).json();
    let fixes: Vec<&serde_json::Value> = tr["fixes"].as_array().unwrap().iter().collect();
    assert_eq!(fixes.len(), 1, "{tr}");
    assert_eq!(fixes[0]["position"], serde_json::json!(p3), "{tr}");

    // The same after a crash: replaying the log (removals included) rebuilds this state.
    let _ = server.child.kill();
    let _ = server.child.wait();
    server = Server::start(&store, &[]);
    assert_eq!(server.get("/devices/bus-1", &[]).status, 404);
    let d = server.get("/devices/bus-2", &[]).json();
    assert_eq!(
        (&d["layer"], &d["position"], &d["reports"]),
        (
            &serde_json::json!("trucks"),
            &serde_json::json!(p3),
            &serde_json::json!(1)
        ),
        "{d}"
    );

    // The last device of a layer removed: the event says the layer is gone, and so it is.
    let stream = Sse::connect(&server.addr, "/stream", &[]);
    assert!(
        urbis(&["devices", "rm", "bus-2", "--store", st])
            .status
            .success()
    );
    let e = stream
        .until(Duration::from_secs(5), |e| e.event == "removed")
        .expect("bus-2's removal after the restart");
    let d = e.json();
    assert_eq!(
        (&d["layer"], &d["layer_gone"]),
        (&serde_json::json!("trucks"), &serde_json::json!(true)),
        "{d}"
    );
    let catalog = server.get("/catalog", &[]).json();
    let names: Vec<&str> = catalog["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert!(
        names.contains(&"vehicles") && !names.contains(&"trucks"),
        "{names:?}"
    );
}

/// A confirmable report client over a real UDP socket: sends, retransmits on timeout, and
/// returns true only when a 2.04 acknowledgement came back.
fn send_acked(sock: &UdpSocket, addr: &str, pkt: &Packet) -> bool {
    let bytes = pkt.to_bytes().unwrap();
    let mut buf = [0u8; 2048];
    for _ in 0..3 {
        if sock.send_to(&bytes, addr).is_err() {
            return false;
        }
        let end = Instant::now() + Duration::from_millis(400);
        while Instant::now() < end {
            if let Ok((n, _)) = sock.recv_from(&mut buf)
                && let Ok(a) = Packet::from_bytes(&buf[..n])
                && a.header.message_id == pkt.header.message_id
            {
                return a.header.code == MessageClass::Response(ResponseType::Changed);
            }
        }
    }
    false
}

#[test]
fn acknowledged_reports_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let devices: Vec<(String, String)> = (0..8)
        .map(|i| {
            let id = format!("dev-{i}");
            let s = add_device(&store, &id, "fleet", "1m");
            (id, s)
        })
        .collect();
    let seed = (now() * 1000.0) as u64;
    eprintln!("kill -9 schedule seed {seed}");
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut sent = 0u64;
    let mut mid: u16 = 1;
    let t0 = now() - 3000.0;
    for round in 0..6 {
        let server = std::sync::Arc::new(std::sync::Mutex::new(Server::start(&store, &[])));
        let coap = server.lock().unwrap().coap.clone();
        // Kill (SIGKILL) at a random moment while the client is sending.
        let kill_after = Duration::from_millis(150 + next() % 600);
        let start = Instant::now();
        let target = std::sync::Arc::clone(&server);
        let killer = std::thread::spawn(move || {
            std::thread::sleep(kill_after);
            let _ = target.lock().unwrap().child.kill();
        });
        while start.elapsed() < kill_after + Duration::from_millis(300) {
            let (id, secret) = &devices[(sent % devices.len() as u64) as usize];
            let t = t0 + sent as f64 * 0.01;
            let body = format!(
                r#"{{"lat":{},"lon":{},"t":{t},"seq":{sent}}}"#,
                60.0 + (sent % 100) as f64 * 0.001,
                24.9
            );
            mid = mid.wrapping_add(1);
            let pkt = post(mid, id, secret, Some(50), body.as_bytes());
            if send_acked(&sock, &coap, &pkt) {
                acked.push((id.clone(), sent));
            }
            sent += 1;
        }
        killer.join().unwrap();
        let _ = server.lock().unwrap().child.wait();
        eprintln!(
            "round {round}: killed after {kill_after:?}; {} acknowledged so far of {sent}",
            acked.len()
        );
    }
    assert!(
        acked.len() > 50,
        "too few acknowledged reports to mean anything: {}",
        acked.len()
    );
    // Restart and check every acknowledged report is there.
    let server = Server::start(&store, &[]);
    for (id, _) in &devices {
        let tr = server
            .get(
                &format!("/devices/{id}/track?from={}&limit=100000", t0 - 1.0),
                &[],
            )
            .json();
        let have: std::collections::HashSet<u64> = tr["fixes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["telemetry"]["seq"].as_f64().unwrap() as u64)
            .collect();
        let mine: Vec<&(String, u64)> = acked.iter().filter(|(d, _)| d == id).collect();
        let lost: Vec<u64> = mine
            .iter()
            .filter(|(_, n)| !have.contains(n))
            .map(|x| x.1)
            .collect();
        assert!(
            lost.is_empty(),
            "{id}: {} acknowledged reports lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        let d = server.get(&format!("/devices/{id}"), &[]).json();
        assert!(
            d["reports"].as_u64().unwrap() >= mine.len() as u64,
            "{id}: {d}"
        );
    }
}

#[test]
fn a_stream_client_that_stops_reading_is_cut_off_and_ingest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let secret = add_device(&store, "t-1", "fleet", "1m");
    let server = Server::start(&store, &[]);
    // A subscriber that reads nothing for a while.
    let mut slow = std::net::TcpStream::connect(&server.addr).unwrap();
    std::io::Write::write_all(
        &mut slow,
        format!(
            "GET /stream HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t0 = now() - 5000.0;
    let started = Instant::now();
    for batch in 0..4 {
        let body: Vec<String> = (0..10_000)
            .map(|i| {
                let n = batch * 10_000 + i;
                format!(
                    r#"{{"lat":60.1,"lon":24.9,"t":{},"pad":{n}}}"#,
                    t0 + n as f64 * 0.01
                )
            })
            .collect();
        let r = post_json(
            &server.addr,
            &format!("Bearer {secret}"),
            &format!("[{}]", body.join(",")),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "ingest was held up by a stalled subscriber"
    );
    let d = server.get("/devices/t-1", &[]).json();
    assert_eq!(d["reports"], 40_000);
    // Now read: the backlog ends with a cutoff event, and the server closes the stream.
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut all = Vec::new();
    let _ = std::io::Read::read_to_end(&mut slow, &mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.contains("event: cutoff"),
        "a stalled client must get a final cutoff event ({} bytes read)",
        all.len()
    );
    assert!(
        text.matches("event: position").count() < 40_000,
        "the stalled client was not cut off"
    );
}

#[test]
fn a_full_queue_answers_4_29_with_max_age_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let secret = add_device(&store, "t-1", "fleet", "1m");
    // A queue of one group: a burst from many endpoints overflows it.
    let server = Server::start(&store, &["--ingest-queue", "1"]);
    let socks: Vec<UdpSocket> = (0..64)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            s
        })
        .collect();
    let mut too_many = 0;
    let mut changed = 0;
    let mut max_age_ok = true;
    for round in 0..10u16 {
        for (i, s) in socks.iter().enumerate() {
            for j in 0..20u16 {
                let mid = round * 2000 + i as u16 * 20 + j;
                let body = format!(r#"{{"lat":60.1,"lon":24.9,"n":{mid}}}"#);
                s.send_to(
                    &post(mid, "t-1", &secret, Some(50), body.as_bytes())
                        .to_bytes()
                        .unwrap(),
                    &server.coap,
                )
                .unwrap();
            }
        }
        let mut buf = [0u8; 1500];
        for s in &socks {
            while let Ok((n, _)) = s.recv_from(&mut buf) {
                let a = Packet::from_bytes(&buf[..n]).unwrap();
                match a.header.code {
                    MessageClass::Response(ResponseType::TooManyRequests) => {
                        too_many += 1;
                        max_age_ok &= a.get_first_option(CoapOption::MaxAge).is_some();
                    }
                    MessageClass::Response(ResponseType::Changed) => changed += 1,
                    other => panic!("unexpected answer {other:?}"),
                }
            }
        }
        if too_many > 0 {
            break;
        }
    }
    assert!(
        too_many > 0,
        "1,280 reports a round into a queue of one never overflowed"
    );
    assert!(max_age_ok, "every 4.29 carries Max-Age");
    assert!(changed > 0);
    // Once the burst is over, reports are accepted again.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let a = ask(
        &sock,
        &server.coap,
        &post(
            60_000,
            "t-1",
            &secret,
            Some(50),
            b"{\"lat\":60.2,\"lon\":24.8}",
        ),
    );
    assert_eq!(a.header.code, MessageClass::Response(ResponseType::Changed));
    let d = server.get("/devices/t-1", &[]).json();
    assert_eq!(d["position"], serde_json::json!([24.8, 60.2]));
    assert_eq!(server.get("/ready", &[]).status, 200);
}

#[test]
fn a_log_write_failure_stops_acknowledging_and_fails_ready() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let secret = add_device(&store, "t-1", "fleet", "1m");
    // The server may write files of at most 128 KiB (ulimit -f, 512-byte blocks), with
    // SIGXFSZ ignored: the log's write fails with EFBIG once it reaches that size.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "trap '' XFSZ; ulimit -f 256; exec \"$0\" \"$@\"",
        env!("CARGO_BIN_EXE_urbis"),
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--coap-bind",
        "127.0.0.1:0",
        "--no-demo",
        "--store",
        store.to_str().unwrap(),
    ]);
    let server = Server::spawn(cmd);
    let auth = format!("Bearer {secret}");
    let t0 = now() - 10_000.0;
    let mut acked = 0u64;
    let mut refused = None;
    for batch in 0..200u64 {
        let body: Vec<String> = (0..100)
            .map(|i| {
                let n = batch * 100 + i;
                format!(r#"{{"lat":60.1,"lon":24.9,"t":{},"n":{n}}}"#, t0 + n as f64)
            })
            .collect();
        let r = post_json(&server.addr, &auth, &format!("[{}]", body.join(",")));
        match r.status {
            200 => acked = (batch + 1) * 100,
            503 => {
                refused = Some(batch);
                break;
            }
            s => panic!(
                "unexpected status {s}: {}",
                String::from_utf8_lossy(&r.body)
            ),
        }
    }
    let refused = refused.expect("the log never hit the file size limit");
    eprintln!("{acked} reports acknowledged, then batch {refused} refused");
    assert!(acked > 0, "some batches must have been acknowledged first");
    // Out of service: /ready fails, and nothing more is acknowledged, over HTTP or CoAP.
    let ready = server.get("/ready", &[]);
    assert_eq!(
        ready.status,
        503,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    let r = post_json(&server.addr, &auth, r#"{"lat":60.2,"lon":24.8}"#);
    assert_eq!(r.status, 503);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let a = ask(
        &sock,
        &server.coap,
        &post(1, "t-1", &secret, Some(50), b"{\"lat\":60.2,\"lon\":24.8}"),
    );
    assert_eq!(
        a.header.code,
        MessageClass::Response(ResponseType::ServiceUnavailable)
    );
    drop(server);
    // Restarted without the limit: every acknowledged report is there.
    let server = Server::start(&store, &[]);
    let tr = server
        .get(
            &format!("/devices/t-1/track?from={}&limit=100000", t0 - 1.0),
            &[],
        )
        .json();
    let have: std::collections::HashSet<u64> = tr["fixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["telemetry"]["n"].as_f64().unwrap() as u64)
        .collect();
    let lost = (0..acked).filter(|n| !have.contains(n)).count();
    assert_eq!(
        lost, 0,
        "{lost} of {acked} acknowledged reports lost (refused at batch {refused})"
    );
    assert_eq!(server.get("/ready", &[]).status, 200);
}

#[test]
fn log_segments_roll_recover_and_expire_with_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let secret = add_device(&store, "t-1", "fleet", "1m");
    let wal = store.join("live/wal");
    let segments = || {
        let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(&wal)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        v.sort();
        v
    };
    let count = |server: &Server| {
        server.get("/devices/t-1", &[]).json()["reports"]
            .as_u64()
            .unwrap()
    };
    let track_len = |server: &Server, from: f64| {
        server
            .get(&format!("/devices/t-1/track?from={from}&limit=100000"), &[])
            .json()["fixes"]
            .as_array()
            .unwrap()
            .len()
    };
    let t0 = now() - 100_000.0;
    {
        let server = Server::start(&store, &["--wal-segment-mb", "1"]);
        for batch in 0..4u64 {
            let body: Vec<String> = (0..10_000)
                .map(|i| {
                    let n = batch * 10_000 + i;
                    format!(
                        r#"{{"lat":60.1,"lon":24.9,"t":{},"n":{n},"battery":87.5,"temperature":21.25,"signal":-97}}"#,
                        t0 + n as f64
                    )
                })
                .collect();
            let r = post_json(
                &server.addr,
                &format!("Bearer {secret}"),
                &format!("[{}]", body.join(",")),
            );
            assert_eq!(r.status, 200);
        }
        assert_eq!(count(&server), 40_000);
    } // killed (SIGKILL)
    let segs = segments();
    assert!(
        segs.len() >= 3,
        "1 MiB segments should have rolled: {segs:?}"
    );
    // Recovery reads across every segment.
    {
        let server = Server::start(&store, &["--wal-segment-mb", "1"]);
        assert_eq!(count(&server), 40_000);
        assert_eq!(track_len(&server, t0 - 1.0), 40_000);
    }
    // Age every segment but the newest past the retention period.
    let old = std::time::SystemTime::now() - Duration::from_secs(100 * 86_400);
    for p in &segs[..segs.len() - 1] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    {
        let server = Server::start(&store, &["--wal-segment-mb", "1", "--retention-days", "90"]);
        let aged = &segs[..segs.len() - 1];
        let deadline = Instant::now() + Duration::from_secs(10);
        while aged.iter().any(|p| p.exists()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            aged.iter().all(|p| !p.exists()),
            "expired segments were not removed: {:?}",
            segments()
        );
        assert!(
            segments().contains(&segs[segs.len() - 1]),
            "the newest segment stays"
        );
        // History older than the retention is gone; the current state is not.
        assert!(track_len(&server, t0 - 1.0) < 40_000);
        assert_eq!(count(&server), 40_000);
    }
    // And a restart after the deletion (kill -9 again) still has the state.
    let server = Server::start(&store, &["--wal-segment-mb", "1"]);
    assert_eq!(count(&server), 40_000);
    let d = server.get("/devices/t-1", &[]).json();
    assert_eq!(d["telemetry"]["n"], 39_999.0);
}
