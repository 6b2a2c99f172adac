//! Live devices over CoAP: libcoap's real client reporting to the real server (state, live
//! tiles decoded by Python's mapbox-vector-tile, the stream), raw datagrams for malformed
//! input and every error code, and a full queue answering 4.29.

mod common;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use common::live::*;
use common::{Server, add_device};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

#[test]
fn coap_client_reports_show_up_in_devices_tiles_and_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s1 = add_device(&store, "tr-1", "vehicles", "30s");
    let s2 = add_device(&store, "tr-2", "vehicles", "30s");
    let s3 = add_device(&store, "mh-3", "vehicles", "6h");
    let server = Server::start(&store, &[]);
    let stream = server.stream("/stream?layers=vehicles", &[]);
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
