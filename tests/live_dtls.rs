//! CoAP over DTLS 1.2 with pre-shared keys: Debian's libcoap client built with OpenSSL
//! (`coap-client-openssl`) reports with the device id as PSK identity and its secret as key;
//! a wrong key fails the handshake; a DTLS device's plain CoAP report is refused with 4.01.

mod common;

use coap_lite::{MessageClass, ResponseType};
use common::live::{ask, now, post};
use common::{Server, urbis};
use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

/// `coap-client-openssl` posting `payload` to `coaps://ADDR/r/ID` with PSK `id`/`key`.
fn coaps_post(addr: &str, id: &str, key: &str, payload: &str) -> String {
    let out = Command::new("coap-client-openssl")
        .args([
            "-m", "post", "-t", "50", "-B", "5", "-u", id, "-k", key, "-e", payload,
        ])
        .arg(format!("coaps://{addr}/r/{id}"))
        .output()
        .expect("coap-client-openssl (libcoap3-bin; .ci/run installs it)");
    // It exits 0 even when the handshake fails: the server's state is what tells.
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn coap_client_openssl_reports_over_dtls_psk_and_plain_coap_is_refused_for_dtls_devices() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = urbis(&[
        "devices",
        "add",
        "tr-9",
        "--layer",
        "vehicles",
        "--dtls",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let secret = text
        .split_whitespace()
        .find(|w| w.starts_with("ds_"))
        .expect("a secret")
        .to_string();
    assert!(text.contains("coaps://"), "{text}");
    let server = Server::start(&store, &[]);
    assert!(!server.coaps.is_empty(), "no coaps address");
    let position = |s: &Server| s.get("/devices/tr-9", &[]).json()["position"].clone();
    // The right key: accepted, durable, visible.
    let t = now() - 5.0;
    let said = coaps_post(
        &server.coaps,
        "tr-9",
        &secret,
        &format!(r#"{{"lat":60.17,"lon":24.94,"t":{t}}}"#),
    );
    let mut seen = serde_json::Value::Null;
    for _ in 0..50 {
        seen = position(&server);
        if !seen.is_null() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        seen,
        serde_json::json!([24.94, 60.17]),
        "client said: {said}"
    );
    // A wrong key: the handshake fails, nothing is stored.
    let said = coaps_post(
        &server.coaps,
        "tr-9",
        "ds_wrong",
        &format!(r#"{{"lat":61.0,"lon":25.0,"t":{}}}"#, t + 1.0),
    );
    assert!(said.contains("alert"), "the handshake must fail: {said}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        position(&server),
        serde_json::json!([24.94, 60.17]),
        "client said: {said}"
    );
    // An unknown identity: the same.
    let said = coaps_post(
        &server.coaps,
        "nobody",
        &secret,
        r#"{"lat":61.0,"lon":25.0}"#,
    );
    assert!(
        said.contains("alert"),
        "the handshake must be refused: {said}"
    );
    // Plain CoAP with the right secret in ?k=: 4.01, the diagnostic says where to go.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let a = ask(
        &sock,
        &server.coap,
        &post(7, "tr-9", &secret, Some(50), br#"{"lat":62.0,"lon":26.0}"#),
    );
    assert_eq!(
        a.header.code,
        MessageClass::Response(ResponseType::Unauthorized)
    );
    assert!(String::from_utf8_lossy(&a.payload).contains("DTLS"));
    assert_eq!(position(&server), serde_json::json!([24.94, 60.17]));
    // The right key again, a second session from a new port: accepted.
    coaps_post(
        &server.coaps,
        "tr-9",
        &secret,
        &format!(r#"{{"lat":60.18,"lon":24.95,"t":{}}}"#, t + 2.0),
    );
    for _ in 0..50 {
        if position(&server) == serde_json::json!([24.95, 60.18]) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "the second DTLS session's report never arrived: {}",
        position(&server)
    );
}

#[test]
fn a_dtls_only_layer_refuses_plain_coap_from_its_devices() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let secret = common::add_device(&store, "m-1", "meters", "1h");
    let server = Server::start(&store, &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let report = |mid: u16| {
        let body = br#"{"lat":60.2,"lon":24.9}"#;
        ask(
            &sock,
            &server.coap,
            &post(mid, "m-1", &secret, Some(50), body),
        )
    };
    assert_eq!(
        report(1).header.code,
        MessageClass::Response(ResponseType::Changed)
    );
    let out = urbis(&[
        "devices",
        "dtls-only",
        "meters",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The running server reads the registry within a second.
    let mut mid = 2;
    loop {
        let a = report(mid);
        if a.header.code == MessageClass::Response(ResponseType::Unauthorized) {
            assert!(String::from_utf8_lossy(&a.payload).contains("DTLS"));
            break;
        }
        assert!(mid < 40, "plain CoAP still accepted");
        mid += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
}
