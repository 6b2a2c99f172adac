//! Entry points for the cargo-fuzz targets of the live layer's parsers (`fuzz/`) and the
//! regression tests that replay what they found: CoAP datagram handling, SenML JSON, SenML
//! CBOR and compact JSON. None may panic, whatever the bytes.

use super::coap::{Action, Listener};
use super::registry::{DeviceKind, NewDevice, RegistryDb, hash_bytes};
use super::{Hub, LiveConfig, payload};
use std::sync::{Arc, OnceLock};

/// The secret of the fuzzing hub's one device, `d`.
pub const SECRET: &str = "ds_fuzz";
const NOW: f64 = 1_790_000_000.0;

fn listener() -> &'static Arc<Listener> {
    static L: OnceLock<Arc<Listener>> = OnceLock::new();
    L.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("urbis-fuzz-hub-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        RegistryDb::open(&dir)
            .and_then(|mut r| {
                r.import(&[NewDevice {
                    line: 1,
                    id: "d".into(),
                    layer: "l".into(),
                    kind: DeviceKind::Tracker,
                    interval_s: 60,
                    secret_sha256: Some(hash_bytes(SECRET)),
                    dtls: false,
                }])
            })
            .expect("fuzz registry");
        let hub = Hub::open(LiveConfig {
            store_dir: dir,
            retention_s: 86_400,
            keep_segments_s: 86_400,
            buffer: 64,
            queue: 16,
            segment_bytes: super::SEGMENT_BYTES,
            dtls_only: false,
        })
        .expect("fuzz hub");
        Listener::new(hub)
    })
}

/// One datagram through the CoAP handling (parse, route, authenticate, decode the payload);
/// returns the number of reports it would store.
pub fn coap(data: &[u8]) -> usize {
    // A new peer each call, so duplicate detection does not hide inputs from each other.
    static PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    let port = PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    match listener().datagram(peer, data, NOW) {
        Action::Store { batch, .. } => batch.len(),
        _ => 0,
    }
}

/// SenML JSON; returns reports decoded.
pub fn senml_json(data: &[u8]) -> usize {
    payload::parse_senml_json(data, NOW).map_or(0, |r| r.len())
}

/// SenML CBOR; returns reports decoded.
pub fn senml_cbor(data: &[u8]) -> usize {
    payload::parse_senml_cbor(data, NOW).map_or(0, |r| r.len())
}

/// Compact JSON; returns reports decoded.
pub fn compact(data: &[u8]) -> usize {
    payload::parse_compact(data, NOW).map_or(0, |r| r.len())
}
