//! Helpers of the live device tests: clocks, libcoap's client, raw CoAP datagrams, HTTP
//! ingest, tiles decoded by Python's mapbox-vector-tile, and the restart-and-count check of
//! durability.

use super::{Server, http_request, urbis};
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

/// libcoap's client without DTLS (Debian's libcoap3-bin).
pub const COAP_CLIENT: &str = "coap-client-notls";

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Runs libcoap's client: POST `payload` (or the file `@path`) with content-format `cf`.
pub fn coap_client(
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

pub fn get_json(s: &Server, path: &str) -> serde_json::Value {
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
pub fn decode_tile(bytes: &[u8], layer: &str) -> Vec<serde_json::Value> {
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
pub fn tile_of(lon: f64, lat: f64, z: u32) -> (u32, u32, f64, f64) {
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
pub fn ingest_key(store: &std::path::Path, name: &str) -> String {
    let out = urbis(&["devices", "key", name, "--store", store.to_str().unwrap()]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("ik_"))
        .expect("a key in the output")
        .to_string()
}

/// `POST /ingest` of a JSON body with `Authorization: AUTH` (e.g. `Bearer ik_…`).
pub fn post_json(addr: &str, auth: &str, body: &str) -> super::HttpResponse {
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

pub fn post(mid: u16, device: &str, secret: &str, cf: Option<u16>, payload: &[u8]) -> Packet {
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

pub fn exchange(sock: &UdpSocket, addr: &str, bytes: &[u8]) -> Option<Packet> {
    sock.send_to(bytes, addr).unwrap();
    let mut buf = [0u8; 2048];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(Packet::from_bytes(&buf[..n]).expect("a valid CoAP answer")),
        Err(_) => None,
    }
}

/// Sends `p` and returns the answer (panics if none comes).
pub fn ask(sock: &UdpSocket, addr: &str, p: &Packet) -> Packet {
    exchange(sock, addr, &p.to_bytes().unwrap()).expect("an answer")
}

pub fn code(p: &Packet) -> MessageClass {
    p.header.code
}

/// A confirmable report client over a real UDP socket: sends, retransmits on timeout, and
/// returns true only when a 2.04 acknowledgement came back.
pub fn send_acked(sock: &UdpSocket, addr: &str, pkt: &Packet) -> bool {
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

/// The acknowledged report numbers of `device` (telemetry `key`, given with each report)
/// that are missing from its track since `from` on a server started again after a crash:
/// what durability promises is that this is empty.
pub fn lost_after_restart(
    server: &Server,
    device: &str,
    from: f64,
    key: &str,
    acked: impl IntoIterator<Item = u64>,
) -> Vec<u64> {
    let tr = server
        .get(
            &format!("/devices/{device}/track?from={from}&limit=100000"),
            &[],
        )
        .json();
    let have: std::collections::HashSet<u64> = tr["fixes"]
        .as_array()
        .expect("fixes")
        .iter()
        .filter_map(|f| f["telemetry"][key].as_f64())
        .map(|n| n as u64)
        .collect();
    acked.into_iter().filter(|n| !have.contains(n)).collect()
}
