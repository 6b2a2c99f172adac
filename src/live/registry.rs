//! The device registry: which devices may report, to which live layer they belong, what kind
//! they are, how often they are expected to report, and the SHA-256 of their secrets; plus the
//! ingest API keys of gateways and carrier platforms.
//!
//! Kept as `STORE/live/devices.json`, rewritten whole (temp file, fsync, rename) under
//! `STORE/live/registry.lock`; a running server re-reads it when it changes. Secrets are 32
//! random bytes shown once and stored only as their SHA-256: a check costs about a microsecond,
//! where a password hash (argon2) would cost 75 ms per report.
//!
//! ```text
//! devices.json (format version 1; a file without "format_version" is version 1)
//! {
//!   "format_version": 1,
//!   "devices": { ID: { "layer": NAME, "kind": "tracker"|"meter"|"sensor"|"asset",
//!                      "interval_s": SECONDS, "secret_sha256": HEX64, "created": UNIX_S,
//!                      "dtls_psk": SECRET } },          dtls_psk only for DTLS devices
//!   "ingest_keys": { NAME: HEX64 },                   SHA-256 of each key, hex
//!   "dtls_layers": [ NAME ]                           layers taking DTLS only (optional)
//! }
//! ```
//! A file of a later version is refused with a message naming it, never misread.
//!
//! [`RegIndex`] is the registry as the server holds it, with the look-ups of the one
//! admission path: who a credential is ([`RegIndex::authenticate`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

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
}

/// One registered device.
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
    /// plain CoAP). The registry file is written readable by its owner only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtls_psk: Option<String>,
}

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

fn format_v1() -> u32 {
    1
}

/// The registry file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registry {
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
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub dtls_layers: std::collections::BTreeSet<String>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            format_version: FORMAT_VERSION,
            devices: BTreeMap::new(),
            ingest_keys: BTreeMap::new(),
            dtls_layers: Default::default(),
        }
    }
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

/// The registry as a running server holds it, with the look-ups of admission.
#[derive(Default)]
pub struct RegIndex {
    /// The registry.
    pub reg: Registry,
    by_hash: std::collections::HashMap<String, String>,
    /// Live layer names, sorted (computed once per registry read: the tile path asks).
    layers: Vec<String>,
}

impl RegIndex {
    /// Indexes a registry.
    pub fn new(reg: Registry) -> RegIndex {
        let by_hash = reg
            .devices
            .iter()
            .map(|(id, e)| (e.secret_sha256.clone(), id.clone()))
            .collect();
        let mut layers: Vec<String> = reg.devices.values().map(|e| e.layer.clone()).collect();
        layers.sort();
        layers.dedup();
        RegIndex {
            reg,
            by_hash,
            layers,
        }
    }

    /// The live layers (every layer with a registered device), sorted.
    pub fn layers(&self) -> &[String] {
        &self.layers
    }

    /// True if `name` is a live layer.
    pub fn is_layer(&self, name: &str) -> bool {
        self.layers
            .binary_search_by(|l| l.as_str().cmp(name))
            .is_ok()
    }

    /// True if device `id` is registered.
    pub fn has_device(&self, id: &str) -> bool {
        self.reg.devices.contains_key(id)
    }

    /// The DTLS pre-shared key of device `id`, if it reports over DTLS.
    pub fn dtls_psk(&self, id: &str) -> Option<&str> {
        self.reg.devices.get(id)?.dtls_psk.as_deref()
    }

    /// True if device `id` must report over DTLS: it has a DTLS key, or its layer takes DTLS
    /// only.
    pub fn dtls_required(&self, id: &str) -> bool {
        self.reg
            .devices
            .get(id)
            .is_some_and(|e| e.dtls_psk.is_some() || self.reg.dtls_layers.contains(&e.layer))
    }

    /// Who `secret` is: an ingest key (`ik_…`, may report for any device) or a device's own
    /// secret. With `device` (the device a request is addressed to, as CoAP's `/r/{id}`), that
    /// device must be registered and a device secret must be its own. One registry look-up
    /// and one SHA-256 for a device secret: the CoAP hot path.
    pub fn authenticate(&self, secret: &str, device: Option<&str>) -> Result<Principal, AuthError> {
        let entry = match device {
            Some(d) => Some(
                self.reg
                    .devices
                    .get(d)
                    .ok_or_else(|| AuthError::UnknownDevice(d.to_string()))?,
            ),
            None => None,
        };
        if secret.is_empty() {
            return Err(AuthError::Missing);
        }
        let hash = hash_secret(secret);
        if secret.starts_with("ik_") {
            return self
                .reg
                .ingest_keys
                .iter()
                .find(|(_, h)| same_hash(h, &hash))
                .map(|(name, _)| Principal::Ingest(name.clone()))
                .ok_or(AuthError::Unknown);
        }
        match (device, entry) {
            (Some(d), Some(e)) if same_hash(&e.secret_sha256, &hash) => {
                Ok(Principal::Device(d.to_string()))
            }
            (Some(_), _) => Err(AuthError::Unknown),
            (None, _) => self
                .by_hash
                .get(&hash)
                .map(|id| Principal::Device(id.clone()))
                .ok_or(AuthError::Unknown),
        }
    }
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
    /// A request that cannot be done, with the reason.
    #[error("{0}")]
    Refused(String),
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
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for b in d.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// Compares without an early exit on the first differing byte.
pub fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn random_secret(prefix: &str) -> Result<String, RegistryError> {
    random_secret_of(prefix, 32)
}

/// A secret of `bytes` random bytes, hex, after `prefix`.
fn random_secret_of(prefix: &str, bytes: usize) -> Result<String, RegistryError> {
    let mut buf = vec![0u8; bytes];
    rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty()).map_err(|e| {
        RegistryError::Io {
            path: PathBuf::from("getrandom"),
            source: e.into(),
        }
    })?;
    Ok(format!(
        "{prefix}{}",
        buf.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The registry's place in a store.
#[derive(Debug, Clone)]
pub struct RegistryFile {
    dir: PathBuf,
}

impl RegistryFile {
    /// The registry of the store at `store_dir`.
    pub fn new(store_dir: &Path) -> RegistryFile {
        RegistryFile {
            dir: store_dir.join("live"),
        }
    }

    /// `STORE/live/devices.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join("devices.json")
    }

    /// Reads the registry (empty if there is none yet).
    pub fn load(&self) -> Result<Registry, RegistryError> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(b) => {
                let reg: Registry =
                    serde_json::from_slice(&b).map_err(|e| RegistryError::Parse {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                if reg.format_version > FORMAT_VERSION {
                    return Err(RegistryError::Parse {
                        path,
                        message: format!(
                            "format version {} was written by a newer Urbis; this one reads version {FORMAT_VERSION}",
                            reg.format_version
                        ),
                    });
                }
                Ok(reg)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry::default()),
            Err(source) => Err(RegistryError::Io { path, source }),
        }
    }

    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> RegistryError {
        let path = path.to_path_buf();
        move |source| RegistryError::Io {
            path: path.clone(),
            source,
        }
    }

    /// Changes the registry under its lock and writes it back atomically.
    pub fn update<T>(
        &self,
        f: impl FnOnce(&mut Registry) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        std::fs::create_dir_all(&self.dir).map_err(self.io(&self.dir))?;
        let lock_path = self.dir.join("registry.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(self.io(&lock_path))?;
        lock.lock().map_err(self.io(&lock_path))?;
        let mut reg = self.load()?;
        let out = f(&mut reg)?;
        reg.format_version = FORMAT_VERSION;
        let tmp = self.dir.join("devices.json.tmp");
        // Owner-only: DTLS devices' keys are in it.
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(self.io(&tmp))?
        };
        let text =
            serde_json::to_vec_pretty(&reg).map_err(|e| RegistryError::Refused(e.to_string()))?;
        file.write_all(&text).map_err(self.io(&tmp))?;
        file.sync_all().map_err(self.io(&tmp))?;
        std::fs::rename(&tmp, self.path()).map_err(self.io(&tmp))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(self.io(&self.dir))?;
        Ok(out)
    }

    /// Registers a device; returns its secret (shown once, stored hashed).
    pub fn add_device(
        &self,
        id: &str,
        layer: &str,
        kind: DeviceKind,
        interval_s: u64,
    ) -> Result<String, RegistryError> {
        self.add(id, layer, kind, interval_s, false)
    }

    /// Registers a device that reports over CoAP with DTLS, its secret as the pre-shared key
    /// (kept in the registry: the handshake needs it) and its id as the PSK identity; it is
    /// refused over plain CoAP. Returns the secret.
    pub fn add_dtls_device(
        &self,
        id: &str,
        layer: &str,
        kind: DeviceKind,
        interval_s: u64,
    ) -> Result<String, RegistryError> {
        self.add(id, layer, kind, interval_s, true)
    }

    fn add(
        &self,
        id: &str,
        layer: &str,
        kind: DeviceKind,
        interval_s: u64,
        dtls: bool,
    ) -> Result<String, RegistryError> {
        if !valid_device_id(id) {
            return Err(RegistryError::Refused(format!(
                "device id {id:?}: use 1-64 of A-Z a-z 0-9 . _ : -"
            )));
        }
        if !crate::store::catalog::valid_layer_name(layer) {
            return Err(RegistryError::Refused(format!(
                "layer name {layer:?}: use 1-64 of A-Z a-z 0-9 _ -"
            )));
        }
        // A DTLS device's secret is its pre-shared key: 16 random bytes (128 bits, RFC 7925's
        // floor) keep it within libcoap's 64-byte PSK limit (a longer key is cut there and
        // the handshake fails).
        let secret = if dtls {
            random_secret_of("ds_", 16)?
        } else {
            random_secret("ds_")?
        };
        let hash = hash_secret(&secret);
        self.update(|reg| {
            if reg.devices.contains_key(id) {
                return Err(RegistryError::Refused(format!(
                    "device {id} is already registered; `urbis devices rm {id}` first to give it a new secret"
                )));
            }
            reg.devices.insert(
                id.to_string(),
                DeviceEntry {
                    layer: layer.to_string(),
                    kind,
                    interval_s,
                    secret_sha256: hash,
                    created: now(),
                    dtls_psk: dtls.then(|| secret.clone()),
                },
            );
            Ok(())
        })?;
        Ok(secret)
    }

    /// Removes a device.
    pub fn remove_device(&self, id: &str) -> Result<DeviceEntry, RegistryError> {
        self.update(|reg| {
            reg.devices
                .remove(id)
                .ok_or_else(|| RegistryError::Refused(format!("no device {id}")))
        })
    }

    /// Makes live layer `layer` take reports over DTLS only (or, with `on` false, plain CoAP
    /// too).
    pub fn set_dtls_only(&self, layer: &str, on: bool) -> Result<(), RegistryError> {
        if !crate::store::catalog::valid_layer_name(layer) {
            return Err(RegistryError::Refused(format!(
                "layer name {layer:?}: use 1-64 of A-Z a-z 0-9 _ -"
            )));
        }
        self.update(|reg| {
            if on {
                reg.dtls_layers.insert(layer.to_string());
            } else {
                reg.dtls_layers.remove(layer);
            }
            Ok(())
        })
    }

    /// Creates an ingest API key; returns it (shown once, stored hashed).
    pub fn add_ingest_key(&self, name: &str) -> Result<String, RegistryError> {
        if !valid_device_id(name) {
            return Err(RegistryError::Refused(format!(
                "key name {name:?}: use 1-64 of A-Z a-z 0-9 . _ : -"
            )));
        }
        let key = random_secret("ik_")?;
        let hash = hash_secret(&key);
        self.update(|reg| {
            reg.ingest_keys.insert(name.to_string(), hash);
            Ok(())
        })?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_remove_and_secrets_are_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let r = RegistryFile::new(dir.path());
        let s = r
            .add_device("tr-1", "vehicles", DeviceKind::Tracker, 900)
            .unwrap();
        assert!(s.starts_with("ds_") && s.len() == 67);
        let text = std::fs::read_to_string(r.path()).unwrap();
        assert!(!text.contains(&s), "the secret itself is never stored");
        let reg = r.load().unwrap();
        assert!(same_hash(
            &reg.devices["tr-1"].secret_sha256,
            &hash_secret(&s)
        ));
        assert!(
            r.add_device("tr-1", "vehicles", DeviceKind::Tracker, 900)
                .is_err()
        );
        assert!(
            r.add_device("bad id", "vehicles", DeviceKind::Tracker, 900)
                .is_err()
        );
        r.remove_device("tr-1").unwrap();
        assert!(r.load().unwrap().devices.is_empty());
    }

    #[test]
    fn a_registry_without_a_version_is_version_1_and_a_later_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let r = RegistryFile::new(dir.path());
        std::fs::create_dir_all(dir.path().join("live")).unwrap();
        std::fs::write(
            r.path(),
            r#"{"devices":{"a":{"layer":"l","kind":"meter","interval_s":60,"secret_sha256":"00","created":0}}}"#,
        )
        .unwrap();
        let reg = r.load().unwrap();
        assert_eq!((reg.format_version, reg.devices.len()), (1, 1));
        // Written back, the file says its version.
        r.add_ingest_key("gw").unwrap();
        let text = std::fs::read_to_string(r.path()).unwrap();
        assert!(text.contains("\"format_version\": 1"), "{text}");
        std::fs::write(r.path(), r#"{"format_version":2,"devices":{}}"#).unwrap();
        let e = r.load().unwrap_err().to_string();
        assert!(e.contains("format version 2") && e.contains("newer"), "{e}");
    }

    #[test]
    fn authentication_names_who_reports() {
        let dir = tempfile::tempdir().unwrap();
        let r = RegistryFile::new(dir.path());
        let s1 = r.add_device("d1", "l", DeviceKind::Tracker, 60).unwrap();
        let s2 = r.add_device("d2", "l", DeviceKind::Tracker, 60).unwrap();
        let key = r.add_ingest_key("gw").unwrap();
        let idx = RegIndex::new(r.load().unwrap());
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
        assert_eq!(idx.authenticate("", Some("d1")), Err(AuthError::Missing));
        assert_eq!(
            idx.authenticate(&s1, Some("d9")),
            Err(AuthError::UnknownDevice("d9".into()))
        );
        assert!(idx.is_layer("l") && !idx.is_layer("m"));
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
