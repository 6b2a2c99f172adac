//! HTTPS: curl (Debian's, with OpenSSL and nghttp2) fetches tiles over HTTP/2 from a server
//! with a certificate made at test time by the openssl command; a replaced certificate is
//! served without a restart.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A self-signed certificate for 127.0.0.1 with common name `cn`, by the openssl command.
fn make_cert(dir: &Path, cn: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", &format!("/CN={cn}")])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command (.ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// `curl` over HTTPS trusting `ca`: (HTTP version, status, response headers).
fn curl(url: &str, ca: &Path) -> Option<(String, String, String)> {
    let out = Command::new("curl")
        .args(["-sS", "-m", "10", "--http2", "-D", "-", "-o", "/dev/null"])
        .args(["-w", "%{http_version} %{http_code}"])
        .arg("--cacert")
        .arg(ca)
        .arg(url)
        .output()
        .expect("curl");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (headers, last) = text.rsplit_once("\r\n\r\n").unwrap_or(("", &text));
    let mut it = last.split_whitespace();
    Some((
        it.next()?.to_string(),
        it.next()?.to_string(),
        headers.to_lowercase(),
    ))
}

#[test]
fn curl_gets_tiles_over_https_and_http2_and_a_replaced_certificate_is_served_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    common::import_json(
        &common::data("data/helsinki/helsinki.geojson"),
        &store,
        &["--layer", "helsinki", "--classification", "public"],
    );
    let (cert1, key1) = make_cert(dir.path(), "urbis-one");
    let (cert, key) = (dir.path().join("live.crt"), dir.path().join("live.key"));
    std::fs::copy(&cert1, &cert).unwrap();
    std::fs::copy(&key1, &key).unwrap();
    /// Kills the server however the test ends (a panic included).
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_urbis"))
        .args([
            "serve",
            "--no-demo",
            "--bind",
            "127.0.0.1:0",
            "--coap-bind",
            "127.0.0.1:0",
        ])
        .arg("--store")
        .arg(&store)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _server = Killed(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("no https address in {line:?}"))
        .to_string();
    let tile = format!("{base}/tiles/helsinki/14/9326/4741.mvt");
    let (version, status, headers) = curl(&tile, &cert1).expect("curl over HTTPS");
    assert_eq!(
        (version.as_str(), status.as_str()),
        ("2", "200"),
        "{headers}"
    );
    assert!(
        headers.contains("strict-transport-security: max-age="),
        "{headers}"
    );
    // Plain HTTP to the HTTPS port gets no answer (a TLS alert, not HTTP).
    let plain = Command::new("curl")
        .args(["-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!(
            "http://{}/health",
            base.trim_start_matches("https://")
        ))
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stdout)
    );
    // A renewed certificate, written over the files the server was given.
    let (cert2, key2) = make_cert(dir.path(), "urbis-two");
    std::fs::copy(&key2, dir.path().join("tmp.key")).unwrap();
    std::fs::copy(&cert2, dir.path().join("tmp.crt")).unwrap();
    std::fs::rename(dir.path().join("tmp.key"), &key).unwrap();
    std::fs::rename(dir.path().join("tmp.crt"), &cert).unwrap();
    let replaced = Instant::now();
    loop {
        if let Some((v, s, _)) = curl(&tile, &cert2) {
            assert_eq!((v.as_str(), s.as_str()), ("2", "200"));
            break;
        }
        assert!(
            replaced.elapsed() < Duration::from_secs(5),
            "the new certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "new certificate served {:?} after the files changed",
        replaced.elapsed()
    );
    // And the old one is no longer trusted for this server.
    assert!(curl(&tile, &cert1).is_none());
}
