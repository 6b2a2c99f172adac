//! The device registry: which devices may report, to which live layer they belong, what kind
//! they are, how often they are expected to report, and the SHA-256 of their secrets; plus the
//! ingest API keys of gateways and carrier platforms.
//!
//! Kept in the store's database (`STORE/urbis.db`, tables `devices`, `devices_gone`,
//! `ingest_keys`, `dtls_layers`; see `store::db`), one transaction per change, so adding a
//! device to a registry of a million costs one indexed insert, not a rewrite. Every change
//! stamps the rows it touches with a new revision (`counters.registry_rev`); a running server
//! holds the revision it has read and, once a second, reads only the rows stamped later
//! ([`RegistryDb::changes_since`]). A store that still has the registry file of earlier
//! versions (`STORE/live/devices.json`, format version 1) is migrated on first open, in one
//! transaction, and the file renamed to `devices.json.migrated`: a crash during the migration
//! leaves the old registry, a crash after it the new one, never a mix.
//!
//! Secrets are 32 random bytes shown once and stored only as their SHA-256: a check costs
//! about a microsecond, where a password hash (argon2) would cost 75 ms per report.
//!
//! [`RegIndex`] is the registry as the server holds it, compact (about 150 bytes a device at a
//! million, measured by `benches/scale/registry.sh`),
//! with the look-ups of the one admission path: who a credential is
//! ([`RegIndex::authenticate`]).

mod batch;
mod db;
mod index;

pub use batch::{Issued, NewDevice, parse_batch, refuse_static_layers};
pub use db::RegistryDb;
pub use index::{Changes, DeviceInfo, Digest16, RegIndex, digest16};

use crate::store::db::DbError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Kinds of devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// A moving tracker (vehicle, bike, person).
    Tracker,
    /// A meter (water, heat, electricity).
    Meter,
    /// A fixed sensor (manhole cover, streetlight, air quality).
    Sensor,
    /// A tracked asset.
    Asset,
}

impl DeviceKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Tracker => "tracker",
            DeviceKind::Meter => "meter",
            DeviceKind::Sensor => "sensor",
            DeviceKind::Asset => "asset",
        }
    }

    /// From its name.
    pub fn parse(s: &str) -> Option<DeviceKind> {
        [
            DeviceKind::Tracker,
            DeviceKind::Meter,
            DeviceKind::Sensor,
            DeviceKind::Asset,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One registered device, as the database keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// Live layer it belongs to.
    pub layer: String,
    /// Kind.
    pub kind: DeviceKind,
    /// Expected seconds between reports.
    pub interval_s: u64,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// Registration time, seconds since the epoch.
    pub created: u64,
    /// The secret itself, for devices that report over DTLS with it as their pre-shared key
    /// (the server must hold the key to run the handshake; such a device is refused over
    /// plain CoAP). The database file is readable by its owner only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtls_psk: Option<String>,
}

/// The format version of the registry file of earlier versions, which is migrated.
pub const FORMAT_VERSION: u32 = 1;

fn format_v1() -> u32 {
    1
}

/// The registry file of earlier versions (`STORE/live/devices.json`), read once to migrate it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LegacyRegistry {
    /// Format version of the file ([`FORMAT_VERSION`]).
    #[serde(default = "format_v1")]
    pub format_version: u32,
    /// Devices by id.
    #[serde(default)]
    pub devices: BTreeMap<String, DeviceEntry>,
    /// Ingest API keys: name -> SHA-256 hex.
    #[serde(default)]
    pub ingest_keys: BTreeMap<String, String>,
    /// Live layers whose devices report over DTLS only (plain CoAP refused).
    #[serde(default)]
    pub dtls_layers: BTreeSet<String>,
}

/// Who presented a credential.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// A device, by its own secret.
    Device(String),
    /// A gateway or platform, by an ingest key (any device).
    Ingest(String),
}

/// Why a credential was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    /// The device named by the request is not registered.
    #[error("unknown device {0}")]
    UnknownDevice(String),
    /// No credential at all.
    #[error("no credential")]
    Missing,
    /// A credential that is not a registered ingest key or device secret, or the secret of
    /// another device than the one named.
    #[error("the ingest key or device secret is not registered (for this device)")]
    Unknown,
}
/// A registry problem.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// File trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a registry.
    #[error("{path}: not a device registry: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// serde's message.
        message: String,
    },
    /// The database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A request that cannot be done, with the reason.
    #[error("{0}")]
    Refused(String),
    /// Rows of a batch that cannot be registered: nothing of the batch was.
    #[error("{}", rows_message(.0))]
    Rows(Vec<RowError>),
}

/// A bad row of a batch of devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// Its line in the file (CSV), or its 1-based position in the list (JSON).
    pub line: usize,
    /// The field at fault, if one is.
    pub field: Option<&'static str>,
    /// What is wrong.
    pub message: String,
}

fn rows_message(rows: &[RowError]) -> String {
    let mut s = format!(
        "{} bad row{}, nothing was registered:",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    );
    for r in rows.iter().take(50) {
        s.push_str(&format!("\n  line {}: {}", r.line, r.message));
    }
    if rows.len() > 50 {
        s.push_str(&format!("\n  … and {} more", rows.len() - 50));
    }
    s
}
/// True for usable device ids: 1–64 of `A-Z a-z 0-9 . _ : -`.
pub fn valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

/// Parses an interval like `30s`, `15m`, `6h`, `1d` (a bare number is seconds).
pub fn parse_interval(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("interval {s:?}: expected a number and a unit, like 15m"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "interval {s:?}: unknown unit {other:?}; use s, m, h or d"
            ));
        }
    };
    let secs = n.saturating_mul(mult);
    if secs == 0 || secs > 30 * 86_400 {
        return Err(format!("interval {s:?}: must be between 1s and 30d"));
    }
    Ok(secs)
}

/// SHA-256 of a secret, hex.
pub fn hash_secret(secret: &str) -> String {
    hex(&hash_bytes(secret))
}

/// SHA-256 of a secret.
pub fn hash_bytes(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares without an early exit on the first differing byte.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// A SHA-256 from 64 hex digits.
pub fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let d = |c: u8| (c as char).to_digit(16);
        *o = (d(b[2 * i])? * 16 + d(b[2 * i + 1])?) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_remove_and_secrets_are_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = RegistryDb::open(dir.path()).unwrap();
        let rev0 = r.rev().unwrap();
        let s = r
            .add_device("tr-1", "vehicles", DeviceKind::Tracker, 900)
            .unwrap();
        assert!(s.starts_with("ds_") && s.len() == 67);
        let e = r.device("tr-1").unwrap().unwrap();
        assert_eq!(e.secret_sha256, hash_secret(&s));
        assert!(
            r.add_device("tr-1", "vehicles", DeviceKind::Tracker, 900)
                .unwrap_err()
                .to_string()
                .contains("already registered")
        );
        assert!(
            r.add_device("bad id", "vehicles", DeviceKind::Tracker, 900)
                .is_err()
        );
        assert_eq!(r.rev().unwrap(), rev0 + 1, "a refused add changes nothing");
        let idx = r.load().unwrap();
        r.remove_device("tr-1").unwrap();
        assert_eq!(r.count().unwrap(), 0);
        let ch = r.changes_since(idx.rev()).unwrap();
        assert_eq!(
            (ch.upserts.len(), ch.gone.clone()),
            (0, vec!["tr-1".to_string()])
        );
        assert!(r.was_removed("tr-1").unwrap());
        assert!(!r.was_removed("never-here").unwrap());
        r.add_device("tr-1", "vehicles", DeviceKind::Tracker, 900)
            .unwrap();
        assert!(!r.was_removed("tr-1").unwrap(), "registered again");
    }

    #[test]
    fn a_legacy_registry_file_is_migrated_once_and_a_later_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("live")).unwrap();
        let json = dir.path().join("live/devices.json");
        std::fs::write(
            &json,
            format!(
                r#"{{"devices":{{"a":{{"layer":"l","kind":"meter","interval_s":60,"secret_sha256":"{}","created":0}}}},"ingest_keys":{{"gw":"{}"}},"dtls_layers":["l"]}}"#,
                hash_secret("ds_a"),
                hash_secret("ik_gw")
            ),
        )
        .unwrap();
        let r = RegistryDb::open(dir.path()).unwrap();
        assert!(!json.exists() && json.with_extension("json.migrated").exists());
        let idx = r.load().unwrap();
        assert_eq!(
            idx.authenticate("ds_a", Some("a")),
            Ok(Principal::Device("a".into()))
        );
        assert_eq!(
            idx.authenticate("ik_gw", Some("a")),
            Ok(Principal::Ingest("gw".into()))
        );
        assert!(idx.dtls_required("a"));
        drop(r);
        // A file put back is not migrated a second time over newer records.
        std::fs::write(&json, r#"{"format_version":1,"devices":{}}"#).unwrap();
        let r = RegistryDb::open(dir.path()).unwrap();
        assert_eq!(r.count().unwrap(), 1);
        drop(r);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("live")).unwrap();
        std::fs::write(
            dir.path().join("live/devices.json"),
            r#"{"format_version":2,"devices":{}}"#,
        )
        .unwrap();
        let e = RegistryDb::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("format version 2") && e.contains("newer"), "{e}");
    }

    #[test]
    fn authentication_names_who_reports() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = RegistryDb::open(dir.path()).unwrap();
        let s1 = r.add_device("d1", "l", DeviceKind::Tracker, 60).unwrap();
        let s2 = r.add_device("d2", "l", DeviceKind::Tracker, 60).unwrap();
        let key = r.add_ingest_key("gw").unwrap();
        let idx = r.load().unwrap();
        assert_eq!(
            idx.authenticate(&s1, None),
            Ok(Principal::Device("d1".into()))
        );
        assert_eq!(
            idx.authenticate(&s1, Some("d1")),
            Ok(Principal::Device("d1".into()))
        );
        assert_eq!(idx.authenticate(&s2, Some("d1")), Err(AuthError::Unknown));
        assert_eq!(
            idx.authenticate(&key, Some("d2")),
            Ok(Principal::Ingest("gw".into()))
        );
        assert_eq!(idx.authenticate("ik_nope", None), Err(AuthError::Unknown));
        assert_eq!(idx.authenticate("ds_nope", None), Err(AuthError::Unknown));
        assert_eq!(idx.authenticate("", Some("d1")), Err(AuthError::Missing));
        assert_eq!(
            idx.authenticate(&s1, Some("d9")),
            Err(AuthError::UnknownDevice("d9".into()))
        );
        assert!(idx.is_layer("l") && !idx.is_layer("m"));
    }

    #[test]
    fn an_index_follows_changes_without_a_full_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = RegistryDb::open(dir.path()).unwrap();
        r.add_device("a", "l1", DeviceKind::Tracker, 60).unwrap();
        r.add_device("b", "l2", DeviceKind::Tracker, 60).unwrap();
        let mut idx = r.load().unwrap();
        assert_eq!(idx.layers(), ["l1", "l2"]);
        r.remove_device("b").unwrap();
        let s = r.add_device("c", "l1", DeviceKind::Meter, 60).unwrap();
        // Removed and registered again: a change, with a new secret.
        r.remove_device("a").unwrap();
        let sa = r.add_device("a", "l1", DeviceKind::Tracker, 60).unwrap();
        let ch = r.changes_since(idx.rev()).unwrap();
        assert_eq!(ch.upserts.len(), 2, "only what changed is read: {ch:?}");
        let mut changed = idx.apply(ch);
        changed.sort();
        assert_eq!(changed, ["a", "b", "c"]);
        assert_eq!(idx.layers(), ["l1"], "l2 lost its last device");
        assert_eq!(idx.len(), 2);
        assert_eq!(
            idx.authenticate(&s, None),
            Ok(Principal::Device("c".into()))
        );
        assert_eq!(
            idx.authenticate(&sa, Some("a")),
            Ok(Principal::Device("a".into()))
        );
        assert_eq!(idx.rev(), r.rev().unwrap());
        assert!(r.changes_since(idx.rev()).unwrap().upserts.is_empty());
    }

    #[test]
    fn a_batch_with_bad_rows_registers_nothing_and_names_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = RegistryDb::open(dir.path()).unwrap();
        r.add_device("old", "l", DeviceKind::Tracker, 60).unwrap();
        let csv = format!(
            "id,layer,kind,interval,secret_sha256\n\
             m-1,meters,meter,1h,\n\
             m 2,meters,meter,1h,\n\
             m-3,meters,toaster,1h,\n\
             m-4,meters,meter,1h,{}\n\
             m-5,meters,meter,1h,abc\n\
             m-1,meters,meter,1h,\n",
            hash_secret("ds_x")
        );
        let e = parse_batch(csv.as_bytes(), false).unwrap_err();
        let RegistryError::Rows(rows) = &e else {
            panic!("{e}")
        };
        let lines: Vec<usize> = rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, [3, 4, 6, 7], "{e}");
        assert!(
            e.to_string().contains("line 4: m-3: kind \"toaster\""),
            "{e}"
        );
        // Rows the file cannot tell are bad (already registered) are found in the database.
        let good = "id,layer\nn-1,meters\nold,meters\nn-2,meters\n";
        let batch = parse_batch(good.as_bytes(), false).unwrap();
        let e = r.import(&batch).unwrap_err().to_string();
        assert!(
            e.contains("line 3: device old is already registered"),
            "{e}"
        );
        assert_eq!(r.count().unwrap(), 1, "nothing of the batch");
        let json = br#"[{"id":"j-1","layer":"meters","kind":"meter","interval":"1h"},{"id":"j-2","layer":"meters","dtls":true}]"#;
        let issued = r.import(&parse_batch(json, true).unwrap()).unwrap();
        assert_eq!(issued.len(), 2);
        let idx = r.load().unwrap();
        assert_eq!(idx.dtls_psk("j-2"), Some(issued[1].secret.as_str()));
        assert_eq!(idx.device("j-1").unwrap().interval_s, 3600);
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("15m"), Ok(900));
        assert_eq!(parse_interval("90"), Ok(90));
        assert_eq!(parse_interval("1d"), Ok(86_400));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("5y").unwrap_err().contains("unknown unit"));
    }
}
