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

use crate::store::db::{Db, DbError};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// The first 16 bytes of a secret's SHA-256: what a running server compares (128 bits, the
/// strength of the secrets themselves for DTLS devices; the database keeps all 32).
pub type Digest16 = [u8; 16];

/// The first 16 bytes of a SHA-256.
pub fn digest16(h: &[u8; 32]) -> Digest16 {
    h[..16].try_into().expect("16 bytes")
}

/// One device as the server holds it: id and layer shared, the secret's hash as bytes.
#[derive(Debug, Clone)]
struct Dev {
    id: Arc<str>,
    layer: Arc<str>,
    secret: Digest16,
    interval_s: u32,
    kind: DeviceKind,
}

/// What the server knows of one registered device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo<'a> {
    /// Id (the registry's shared copy).
    pub id: &'a Arc<str>,
    /// Live layer.
    pub layer: &'a str,
    /// Kind.
    pub kind: DeviceKind,
    /// Expected seconds between reports.
    pub interval_s: u64,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The registry as a running server holds it, with the look-ups of admission: a dense table
/// of devices by slot and two small indexes (id, and the first 8 bytes of the secret's hash)
/// to slots, about 190 bytes a device at a million (a map of entries would take 300).
#[derive(Default)]
pub struct RegIndex {
    index: FastMap<Arc<str>, u32>,
    table: Vec<Option<Dev>>,
    free: Vec<u32>,
    /// First 8 bytes of each device secret's SHA-256 -> slot: who a bare device secret is
    /// (HTTP ingest names no device). The full hash is compared after the look-up.
    by_hash: FastMap<u64, u32>,
    /// DTLS pre-shared keys, by slot (few devices have one).
    psk: FastMap<u32, Box<str>>,
    ingest_keys: Vec<(String, [u8; 32])>,
    dtls_layers: BTreeSet<String>,
    /// Devices per live layer.
    layer_counts: BTreeMap<Arc<str>, usize>,
    /// The names of `layer_counts`, sorted (the tile path asks on every request).
    layers: Vec<String>,
    /// The registry revision this index reflects.
    rev: i64,
}

/// The registry changes since a revision, as [`RegistryDb::changes_since`] reads them.
#[derive(Debug, Default)]
pub struct Changes {
    /// The revision they bring the reader to.
    pub rev: i64,
    /// Devices added or changed since.
    pub upserts: Vec<(String, DeviceEntry)>,
    /// Devices removed since (and not registered again).
    pub gone: Vec<String>,
    /// All ingest keys (name, SHA-256), re-read whole: there are few.
    pub ingest_keys: Vec<(String, [u8; 32])>,
    /// All DTLS-only layers.
    pub dtls_layers: BTreeSet<String>,
}

fn hash_prefix(h: &[u8]) -> u64 {
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes"))
}

impl RegIndex {
    /// The revision this index reflects.
    pub fn rev(&self) -> i64 {
        self.rev
    }

    /// Number of registered devices.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True with no devices.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
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

    fn dev(&self, id: &str) -> Option<(u32, &Dev)> {
        let s = *self.index.get(id)?;
        Some((s, self.table.get(s as usize)?.as_ref()?))
    }

    /// True if device `id` is registered.
    pub fn has_device(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    fn info(d: &Dev) -> DeviceInfo<'_> {
        DeviceInfo {
            id: &d.id,
            layer: &d.layer,
            kind: d.kind,
            interval_s: u64::from(d.interval_s),
        }
    }

    /// Layer, kind and interval of device `id`.
    pub fn device(&self, id: &str) -> Option<DeviceInfo<'_>> {
        self.dev(id).map(|(_, d)| Self::info(d))
    }

    /// Every device with what the server knows of it, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, DeviceInfo<'_>)> {
        self.table.iter().flatten().map(|d| (&*d.id, Self::info(d)))
    }

    /// The DTLS pre-shared key of device `id`, if it reports over DTLS.
    pub fn dtls_psk(&self, id: &str) -> Option<&str> {
        self.psk.get(&self.dev(id)?.0).map(|k| &**k)
    }

    /// True if device `id` must report over DTLS: it has a DTLS key, or its layer takes DTLS
    /// only.
    pub fn dtls_required(&self, id: &str) -> bool {
        self.dev(id)
            .is_some_and(|(s, d)| self.psk.contains_key(&s) || self.dtls_layers.contains(&*d.layer))
    }

    /// Who `secret` is: an ingest key (`ik_…`, may report for any device) or a device's own
    /// secret. With `device` (the device a request is addressed to, as CoAP's `/r/{id}`), that
    /// device must be registered and a device secret must be its own. One registry look-up
    /// and one SHA-256 for a device secret: the CoAP hot path.
    pub fn authenticate(&self, secret: &str, device: Option<&str>) -> Result<Principal, AuthError> {
        let entry = match device {
            Some(d) => Some(
                self.dev(d)
                    .ok_or_else(|| AuthError::UnknownDevice(d.to_string()))?
                    .1,
            ),
            None => None,
        };
        if secret.is_empty() {
            return Err(AuthError::Missing);
        }
        let hash = hash_bytes(secret);
        if secret.starts_with("ik_") {
            return self
                .ingest_keys
                .iter()
                .find(|(_, h)| same_bytes(h, &hash))
                .map(|(name, _)| Principal::Ingest(name.clone()))
                .ok_or(AuthError::Unknown);
        }
        match (device, entry) {
            (Some(d), Some(e)) if same_bytes(&e.secret, &digest16(&hash)) => {
                Ok(Principal::Device(d.to_string()))
            }
            (Some(_), _) => Err(AuthError::Unknown),
            (None, _) => self
                .by_hash
                .get(&hash_prefix(&hash))
                .and_then(|s| self.table.get(*s as usize)?.as_ref())
                .filter(|e| same_bytes(&e.secret, &digest16(&hash)))
                .map(|e| Principal::Device(e.id.to_string()))
                .ok_or(AuthError::Unknown),
        }
    }

    fn intern(&mut self, layer: &str) -> Arc<str> {
        match self.layer_counts.get_key_value(layer) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(layer),
        }
    }

    fn count_layer(&mut self, layer: &Arc<str>, add: bool) {
        let n = self.layer_counts.entry(Arc::clone(layer)).or_default();
        if add {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.layer_counts.remove(layer);
            }
        }
    }

    fn remove(&mut self, id: &str) -> Option<Dev> {
        let s = self.index.remove(id)?;
        let d = self.table.get_mut(s as usize)?.take()?;
        self.free.push(s);
        self.psk.remove(&s);
        let p = hash_prefix(&d.secret);
        if self.by_hash.get(&p) == Some(&s) {
            self.by_hash.remove(&p);
        }
        self.count_layer(&d.layer, false);
        Some(d)
    }

    fn upsert(&mut self, id: &str, e: &DeviceEntry) {
        let secret = parse_hash(&e.secret_sha256).unwrap_or([0; 32]);
        self.insert(
            id,
            &e.layer,
            e.kind,
            e.interval_s,
            secret,
            e.dtls_psk.as_deref(),
        );
    }

    fn insert(
        &mut self,
        id: &str,
        layer: &str,
        kind: DeviceKind,
        interval_s: u64,
        secret: [u8; 32],
        dtls_psk: Option<&str>,
    ) {
        let secret = digest16(&secret);
        self.remove(id);
        let layer = self.intern(layer);
        self.count_layer(&layer, true);
        let id: Arc<str> = Arc::from(id);
        let s = match self.free.pop() {
            Some(s) => s,
            None => {
                self.table.push(None);
                (self.table.len() - 1) as u32
            }
        };
        self.index.insert(Arc::clone(&id), s);
        self.by_hash.insert(hash_prefix(&secret), s);
        if let Some(k) = dtls_psk {
            self.psk.insert(s, Box::from(k));
        }
        self.table[s as usize] = Some(Dev {
            id,
            layer,
            secret,
            interval_s: u32::try_from(interval_s).unwrap_or(u32::MAX),
            kind,
        });
    }

    /// Room for `n` more devices.
    fn reserve(&mut self, n: usize) {
        self.index.reserve(n);
        self.by_hash.reserve(n);
        self.table.reserve_exact(n);
    }

    /// Applies changes read from the database; returns the ids that changed (added, removed
    /// or changed).
    pub fn apply(&mut self, ch: Changes) -> Vec<String> {
        let mut ids = Vec::with_capacity(ch.upserts.len() + ch.gone.len());
        for id in ch.gone {
            self.remove(&id);
            ids.push(id);
        }
        for (id, e) in &ch.upserts {
            self.upsert(id, e);
        }
        ids.extend(ch.upserts.into_iter().map(|(id, _)| id));
        self.ingest_keys = ch.ingest_keys;
        self.dtls_layers = ch.dtls_layers;
        self.rev = ch.rev;
        self.layers = self.layer_counts.keys().map(|l| l.to_string()).collect();
        ids
    }

    /// The secret hashes of `ids` as the index holds them, to compare with after
    /// [`RegIndex::apply`].
    pub fn secrets_of(&self, ids: &[String]) -> FastMap<String, Digest16> {
        ids.iter()
            .filter_map(|id| Some((id.clone(), self.dev(id)?.1.secret)))
            .collect()
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

/// A device to register, as a batch (file or admin API) gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDevice {
    /// Its line in the file, or position in the list: named in errors.
    pub line: usize,
    /// Id.
    pub id: String,
    /// Live layer.
    pub layer: String,
    /// Kind.
    pub kind: DeviceKind,
    /// Expected seconds between reports.
    pub interval_s: u64,
    /// SHA-256 of a secret the device already has; without it one is generated.
    pub secret_sha256: Option<[u8; 32]>,
    /// Reports over DTLS (its secret is generated and kept as its pre-shared key).
    pub dtls: bool,
}

/// One device's generated secret, as a batch registration returns it (shown once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issued {
    /// Device id.
    pub id: String,
    /// Its secret.
    pub secret: String,
}

/// Raw fields of a batch row, before checking.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    id: Option<serde_json::Value>,
    layer: Option<serde_json::Value>,
    kind: Option<serde_json::Value>,
    interval: Option<serde_json::Value>,
    secret_sha256: Option<serde_json::Value>,
    dtls: Option<serde_json::Value>,
}

fn text(v: &Option<serde_json::Value>) -> Option<String> {
    match v {
        Some(serde_json::Value::String(s)) => Some(s.trim().to_string()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    }
}

/// Checks one row; errors name the field.
fn check_row(line: usize, raw: &RawRow, errors: &mut Vec<RowError>) -> Option<NewDevice> {
    let mut bad = |field: &'static str, message: String| {
        errors.push(RowError {
            line,
            field: Some(field),
            message,
        });
    };
    let id = text(&raw.id).unwrap_or_default();
    if !valid_device_id(&id) {
        bad("id", format!("id {id:?}: give 1-64 of A-Z a-z 0-9 . _ : -"));
        return None;
    }
    let layer = text(&raw.layer).unwrap_or_default();
    if !crate::store::catalog::valid_layer_name(&layer) {
        bad(
            "layer",
            format!("{id}: layer {layer:?}: give 1-64 of A-Z a-z 0-9 _ -"),
        );
        return None;
    }
    let kind_s = text(&raw.kind).unwrap_or_else(|| "tracker".into());
    let Some(kind) = DeviceKind::parse(&kind_s) else {
        bad(
            "kind",
            format!("{id}: kind {kind_s:?}: use tracker, meter, sensor or asset"),
        );
        return None;
    };
    let interval_s = match text(&raw.interval) {
        None => 900,
        Some(s) => match parse_interval(&s) {
            Ok(v) => v,
            Err(e) => {
                bad("interval", format!("{id}: {e}"));
                return None;
            }
        },
    };
    let dtls = match text(&raw.dtls).as_deref() {
        None | Some("") | Some("false") | Some("0") | Some("no") => false,
        Some("true") | Some("1") | Some("yes") => true,
        Some(other) => {
            bad("dtls", format!("{id}: dtls {other:?}: use true or false"));
            return None;
        }
    };
    let secret_sha256 = match text(&raw.secret_sha256).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match parse_hash(&s.to_ascii_lowercase()) {
            Some(h) if !dtls => Some(h),
            Some(_) => {
                bad(
                    "secret_sha256",
                    format!(
                        "{id}: a DTLS device's key is generated (the server must hold it); leave secret_sha256 empty"
                    ),
                );
                return None;
            }
            None => {
                bad(
                    "secret_sha256",
                    format!(
                        "{id}: secret_sha256 must be 64 hex digits (the SHA-256 of the device's secret)"
                    ),
                );
                return None;
            }
        },
    };
    Some(NewDevice {
        line,
        id,
        layer,
        kind,
        interval_s,
        secret_sha256,
        dtls,
    })
}

/// Parses a batch of devices: CSV with a header line naming the columns `id`, `layer`,
/// `kind`, `interval`, `secret_sha256`, `dtls` (`id` and `layer` required; `kind` defaults to
/// tracker, `interval` to 15m), or a JSON array of objects with the same keys. Every bad row
/// is reported by its line (CSV) or position (JSON), with the field at fault; ids given twice
/// are bad rows too.
pub fn parse_batch(bytes: &[u8], json: bool) -> Result<Vec<NewDevice>, RegistryError> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    if json {
        let rows: Vec<serde_json::Value> = serde_json::from_slice(bytes).map_err(|e| {
            RegistryError::Refused(format!(
                "not a JSON array of devices: {e} (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        for (i, v) in rows.into_iter().enumerate() {
            match serde_json::from_value::<RawRow>(v) {
                Ok(raw) => out.extend(check_row(i + 1, &raw, &mut errors)),
                Err(e) => errors.push(RowError {
                    line: i + 1,
                    field: None,
                    message: format!("device {}: {e}", i + 1),
                }),
            }
        }
    } else {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| RegistryError::Refused(format!("not UTF-8 text: {e}")))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Err(RegistryError::Refused(
                "empty file: the first line names the columns, e.g. id,layer,kind,interval".into(),
            ));
        };
        let cols: Vec<String> = split_csv(header)
            .iter()
            .map(|c| c.to_ascii_lowercase())
            .collect();
        const KNOWN: [&str; 6] = ["id", "layer", "kind", "interval", "secret_sha256", "dtls"];
        if let Some(c) = cols.iter().find(|c| !KNOWN.contains(&c.as_str())) {
            return Err(RegistryError::Refused(format!(
                "line 1: unknown column {c:?}; the columns are {}",
                KNOWN.join(", ")
            )));
        }
        for need in ["id", "layer"] {
            if !cols.iter().any(|c| c == need) {
                return Err(RegistryError::Refused(format!(
                    "line 1: no {need:?} column; the header names the columns, e.g. id,layer,kind,interval"
                )));
            }
        }
        for (i, line) in lines {
            let fields = split_csv(line);
            if fields.len() != cols.len() {
                errors.push(RowError {
                    line: i + 1,
                    field: None,
                    message: format!(
                        "{} fields where the header has {}",
                        fields.len(),
                        cols.len()
                    ),
                });
                continue;
            }
            let mut raw = RawRow::default();
            for (c, f) in cols.iter().zip(fields) {
                let v = Some(serde_json::Value::String(f));
                match c.as_str() {
                    "id" => raw.id = v,
                    "layer" => raw.layer = v,
                    "kind" => raw.kind = v,
                    "interval" => raw.interval = v,
                    "secret_sha256" => raw.secret_sha256 = v,
                    _ => raw.dtls = v,
                }
            }
            out.extend(check_row(i + 1, &raw, &mut errors));
        }
    }
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(out.len());
    for d in &out {
        if let Some(first) = seen.insert(&d.id, d.line) {
            errors.push(RowError {
                line: d.line,
                field: Some("id"),
                message: format!("{}: given twice (first on line {first})", d.id),
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(RegistryError::Rows(errors))
    }
}

/// Refuses the rows of a batch whose layer is an imported (static) layer: live devices need
/// a layer of their own.
pub fn refuse_static_layers(
    batch: &[NewDevice],
    is_static: impl Fn(&str) -> bool,
) -> Result<(), RegistryError> {
    let rows: Vec<RowError> = batch
        .iter()
        .filter(|d| is_static(&d.layer))
        .map(|d| RowError {
            line: d.line,
            field: Some("layer"),
            message: format!(
                "{}: {} is an imported (static) layer; give live devices a layer of their own",
                d.id, d.layer
            ),
        })
        .collect();
    if rows.is_empty() {
        Ok(())
    } else {
        Err(RegistryError::Rows(rows))
    }
}

/// Splits a CSV line: commas, fields optionally in double quotes (`""` inside is a quote).
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            c => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random_bytes(n: usize) -> Result<Vec<u8>, RegistryError> {
    let mut buf = vec![0u8; n];
    rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty()).map_err(|e| {
        RegistryError::Io {
            path: PathBuf::from("getrandom"),
            source: e.into(),
        }
    })?;
    Ok(buf)
}

/// A new device secret: `ds_` and 32 random bytes in hex; for a DTLS device 16 bytes (128
/// bits, RFC 7925's floor), which keeps it within libcoap's 64-byte PSK limit (a longer key
/// is cut there and the handshake fails).
fn new_secret(dtls: bool) -> Result<String, RegistryError> {
    Ok(format!(
        "ds_{}",
        hex(&random_bytes(if dtls { 16 } else { 32 })?)
    ))
}

/// The registry in the store's database.
pub struct RegistryDb {
    db: Db,
}

const DEVICE_COLUMNS: &str = "id, layer, kind, interval_s, secret_sha256, created, dtls_psk";

fn entry_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, DeviceEntry)> {
    let kind: String = r.get(2)?;
    let secret: Vec<u8> = r.get(4)?;
    Ok((
        r.get(0)?,
        DeviceEntry {
            layer: r.get(1)?,
            kind: DeviceKind::parse(&kind).unwrap_or(DeviceKind::Tracker),
            interval_s: r.get::<_, i64>(3)?.max(1) as u64,
            secret_sha256: hex(&secret),
            created: r.get::<_, i64>(5)?.max(0) as u64,
            dtls_psk: r.get(6)?,
        },
    ))
}

fn bump(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<i64> {
    tx.query_row(
        "UPDATE counters SET value = value + 1 WHERE name = 'registry_rev' RETURNING value",
        [],
        |r| r.get(0),
    )
}

impl RegistryDb {
    /// Opens the registry of the store at `store_dir`, migrating `STORE/live/devices.json`
    /// of earlier versions into the database first if it is there (once: the file is renamed
    /// `devices.json.migrated` after the transaction that copied it commits).
    pub fn open(store_dir: &Path) -> Result<RegistryDb, RegistryError> {
        let mut reg = RegistryDb {
            db: Db::open(store_dir)?,
        };
        let json = store_dir.join("live").join("devices.json");
        if json.exists() {
            reg.migrate(&json)?;
        }
        Ok(reg)
    }

    fn migrate(&mut self, json: &Path) -> Result<(), RegistryError> {
        let done = self
            .db
            .conn()
            .query_row(
                "SELECT value FROM counters WHERE name = 'devices_json'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(|e| self.db.error(e))?
            .is_some();
        if !done {
            let bytes = std::fs::read(json).map_err(|source| RegistryError::Io {
                path: json.to_path_buf(),
                source,
            })?;
            let legacy: LegacyRegistry =
                serde_json::from_slice(&bytes).map_err(|e| RegistryError::Parse {
                    path: json.to_path_buf(),
                    message: e.to_string(),
                })?;
            if legacy.format_version > FORMAT_VERSION {
                return Err(RegistryError::Parse {
                    path: json.to_path_buf(),
                    message: format!(
                        "format version {} was written by a newer Urbis; this one reads version {FORMAT_VERSION}",
                        legacy.format_version
                    ),
                });
            }
            let n = legacy.devices.len();
            let db_err = |e| DbError {
                path: json.to_path_buf(),
                message: format!("migrating into the database: {e}"),
            };
            let tx = self.db.conn_mut().transaction().map_err(db_err)?;
            let rev = bump(&tx).map_err(db_err)?;
            {
                let mut ins = tx
                    .prepare(
                        "INSERT OR REPLACE INTO devices(id, layer, kind, interval_s, secret_sha256, created, dtls_psk, rev)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )
                    .map_err(db_err)?;
                for (id, e) in &legacy.devices {
                    let secret = parse_hash(&e.secret_sha256).unwrap_or([0; 32]);
                    ins.execute(params![
                        id,
                        e.layer,
                        e.kind.as_str(),
                        e.interval_s as i64,
                        &secret[..],
                        e.created as i64,
                        e.dtls_psk,
                        rev
                    ])
                    .map_err(db_err)?;
                }
                for (name, h) in &legacy.ingest_keys {
                    let h = parse_hash(h).unwrap_or([0; 32]);
                    tx.execute(
                        "INSERT OR REPLACE INTO ingest_keys(name, sha256, created) VALUES (?1, ?2, ?3)",
                        params![name, &h[..], now() as i64],
                    )
                    .map_err(db_err)?;
                }
                for l in &legacy.dtls_layers {
                    tx.execute("INSERT OR IGNORE INTO dtls_layers(name) VALUES (?1)", [l])
                        .map_err(db_err)?;
                }
                tx.execute(
                    "INSERT INTO counters(name, value) VALUES ('devices_json', 1)",
                    [],
                )
                .map_err(db_err)?;
            }
            tx.commit().map_err(db_err)?;
            tracing::info!(
                devices = n,
                file = %json.display(),
                "migrated the device registry into the store's database"
            );
            eprintln!(
                "urbis: migrated the device registry {} ({n} devices, {} ingest keys) into {}; the file is kept as devices.json.migrated",
                json.display(),
                legacy.ingest_keys.len(),
                self.db.path().display()
            );
        }
        let to = json.with_extension("json.migrated");
        std::fs::rename(json, &to).map_err(|source| RegistryError::Io {
            path: json.to_path_buf(),
            source,
        })?;
        Ok(())
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The registry revision now.
    pub fn rev(&self) -> Result<i64, RegistryError> {
        Ok(self
            .db
            .conn()
            .query_row(
                "SELECT value FROM counters WHERE name = 'registry_rev'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.db.error(e))?)
    }

    /// The whole registry, as a server holds it.
    pub fn load(&self) -> Result<RegIndex, RegistryError> {
        let mut idx = RegIndex::default();
        // Row by row into the index: no intermediate list (at a million devices that would
        // be 300 MB the allocator keeps).
        let mut ch = self.changes_since(i64::MAX)?;
        let c = self.db.conn();
        let e = |e| self.db.error(e);
        let n: i64 = c
            .query_row("SELECT count(*) FROM devices", [], |r| r.get(0))
            .map_err(e)?;
        idx.reserve(n.max(0) as usize);
        let mut st = c
            .prepare(&format!(
                "SELECT {DEVICE_COLUMNS}, rev FROM devices WHERE rev <= ?1"
            ))
            .map_err(e)?;
        let mut rows = st.query([ch.rev]).map_err(e)?;
        while let Some(r) = rows.next().map_err(e)? {
            let id: &str = r.get_ref(0).and_then(|v| Ok(v.as_str()?)).map_err(e)?;
            let layer: &str = r.get_ref(1).and_then(|v| Ok(v.as_str()?)).map_err(e)?;
            let kind = DeviceKind::parse(r.get_ref(2).and_then(|v| Ok(v.as_str()?)).map_err(e)?)
                .unwrap_or(DeviceKind::Tracker);
            let interval = r.get::<_, i64>(3).map_err(e)?.max(1) as u64;
            let blob = r.get_ref(4).and_then(|v| Ok(v.as_blob()?)).map_err(e)?;
            let mut secret = [0u8; 32];
            if blob.len() == 32 {
                secret.copy_from_slice(blob);
            }
            let psk: Option<String> = r.get(6).map_err(e)?;
            let (id, layer) = (id.to_string(), layer.to_string());
            idx.insert(&id, &layer, kind, interval, secret, psk.as_deref());
        }
        // Rows written while this read ran (stamped later) come with the next refresh.
        ch.gone.clear();
        idx.apply(ch);
        Ok(idx)
    }

    /// What changed after revision `rev` (everything for a negative `rev`), in one read
    /// transaction: rows stamped later, and the ingest keys and DTLS layers whole.
    pub fn changes_since(&self, rev: i64) -> Result<Changes, RegistryError> {
        let c = self.db.conn();
        let e = |e| self.db.error(e);
        c.execute_batch("BEGIN").map_err(e)?;
        let out = (|| -> rusqlite::Result<Changes> {
            let now_rev: i64 = c.query_row(
                "SELECT value FROM counters WHERE name = 'registry_rev'",
                [],
                |r| r.get(0),
            )?;
            let mut ch = Changes {
                rev: now_rev,
                ..Changes::default()
            };
            let mut st = c.prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE rev > ?1"
            ))?;
            for row in st.query_map([rev], entry_of)? {
                ch.upserts.push(row?);
            }
            if rev >= 0 {
                let mut st = c.prepare_cached(
                    "SELECT g.id FROM devices_gone g WHERE g.rev > ?1
                     AND NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = g.id)",
                )?;
                for row in st.query_map([rev], |r| r.get(0))? {
                    ch.gone.push(row?);
                }
            }
            let mut st = c.prepare_cached("SELECT name, sha256 FROM ingest_keys ORDER BY name")?;
            for row in st.query_map([], |r| {
                let h: Vec<u8> = r.get(1)?;
                let mut a = [0u8; 32];
                if h.len() == 32 {
                    a.copy_from_slice(&h);
                }
                Ok((r.get::<_, String>(0)?, a))
            })? {
                ch.ingest_keys.push(row?);
            }
            let mut st = c.prepare_cached("SELECT name FROM dtls_layers")?;
            for row in st.query_map([], |r| r.get(0))? {
                ch.dtls_layers.insert(row?);
            }
            Ok(ch)
        })();
        let _ = c.execute_batch("COMMIT");
        Ok(out.map_err(e)?)
    }

    /// One device.
    pub fn device(&self, id: &str) -> Result<Option<DeviceEntry>, RegistryError> {
        Ok(self
            .db
            .conn()
            .query_row(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"),
                [id],
                entry_of,
            )
            .optional()
            .map_err(|e| self.db.error(e))?
            .map(|(_, e)| e))
    }

    /// Every device, by id, to `f`.
    pub fn for_each(&self, mut f: impl FnMut(&str, &DeviceEntry)) -> Result<(), RegistryError> {
        let c = self.db.conn();
        let mut st = c
            .prepare(&format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY id"))
            .map_err(|e| self.db.error(e))?;
        let rows = st.query_map([], entry_of).map_err(|e| self.db.error(e))?;
        for row in rows {
            let (id, e) = row.map_err(|e| self.db.error(e))?;
            f(&id, &e);
        }
        Ok(())
    }

    /// Names of the ingest keys.
    pub fn ingest_key_names(&self) -> Result<Vec<String>, RegistryError> {
        let c = self.db.conn();
        let mut st = c
            .prepare("SELECT name FROM ingest_keys ORDER BY name")
            .map_err(|e| self.db.error(e))?;
        let out = st
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(|e| self.db.error(e))?;
        Ok(out)
    }

    /// Number of registered devices.
    pub fn count(&self) -> Result<u64, RegistryError> {
        Ok(self
            .db
            .conn()
            .query_row("SELECT count(*) FROM devices", [], |r| r.get::<_, i64>(0))
            .map_err(|e| self.db.error(e))? as u64)
    }

    /// Registers a device; returns its secret (shown once, stored hashed).
    pub fn add_device(
        &mut self,
        id: &str,
        layer: &str,
        kind: DeviceKind,
        interval_s: u64,
    ) -> Result<String, RegistryError> {
        self.add(id, layer, kind, interval_s, false)
    }

    /// Registers a device that reports over CoAP with DTLS, its secret as the pre-shared key
    /// (kept in the database: the handshake needs it) and its id as the PSK identity; it is
    /// refused over plain CoAP. Returns the secret.
    pub fn add_dtls_device(
        &mut self,
        id: &str,
        layer: &str,
        kind: DeviceKind,
        interval_s: u64,
    ) -> Result<String, RegistryError> {
        self.add(id, layer, kind, interval_s, true)
    }

    fn add(
        &mut self,
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
        let issued = self.import(&[NewDevice {
            line: 1,
            id: id.to_string(),
            layer: layer.to_string(),
            kind,
            interval_s,
            secret_sha256: None,
            dtls,
        }]);
        match issued {
            Ok(mut v) => Ok(v.pop().map(|i| i.secret).unwrap_or_default()),
            Err(RegistryError::Rows(rows)) => Err(RegistryError::Refused(
                rows.into_iter()
                    .map(|r| r.message)
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
            Err(e) => Err(e),
        }
    }

    /// Registers a batch of devices in one transaction: all or nothing. An id already
    /// registered is a bad row (remove it first to give it a new secret). Returns the secrets
    /// generated for the devices that gave no `secret_sha256`, in the batch's order.
    pub fn import(&mut self, batch: &[NewDevice]) -> Result<Vec<Issued>, RegistryError> {
        // Secrets first, outside the transaction: getrandom and SHA-256 for a million
        // devices take a second, and the write lock is held only for the inserts.
        let mut issued = Vec::new();
        let mut rows: Vec<([u8; 32], Option<String>)> = Vec::with_capacity(batch.len());
        for d in batch {
            match d.secret_sha256 {
                Some(h) => rows.push((h, None)),
                None => {
                    let s = new_secret(d.dtls)?;
                    rows.push((hash_bytes(&s), d.dtls.then(|| s.clone())));
                    issued.push(Issued {
                        id: d.id.clone(),
                        secret: s,
                    });
                }
            }
        }
        let created = now() as i64;
        let db_err = self.db.error_fn();
        let tx = self.db.conn_mut().transaction().map_err(&db_err)?;
        let rev = bump(&tx).map_err(&db_err)?;
        let mut errors = Vec::new();
        {
            let mut ins = tx
                .prepare(
                    "INSERT OR IGNORE INTO devices(id, layer, kind, interval_s, secret_sha256, created, dtls_psk, rev)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(&db_err)?;
            for (d, (hash, psk)) in batch.iter().zip(&rows) {
                let n = ins
                    .execute(params![
                        d.id,
                        d.layer,
                        d.kind.as_str(),
                        d.interval_s as i64,
                        &hash[..],
                        created,
                        psk,
                        rev
                    ])
                    .map_err(&db_err)?;
                if n == 0 {
                    errors.push(RowError {
                        line: d.line,
                        field: Some("id"),
                        message: format!(
                            "device {} is already registered; remove it first to give it a new secret",
                            d.id
                        ),
                    });
                }
            }
        }
        if !errors.is_empty() {
            // Dropping the transaction rolls it back: nothing of the batch is registered.
            return Err(RegistryError::Rows(errors));
        }
        tx.commit().map_err(&db_err)?;
        Ok(issued)
    }

    /// Removes a device.
    pub fn remove_device(&mut self, id: &str) -> Result<DeviceEntry, RegistryError> {
        let Some(e) = self.device(id)? else {
            return Err(RegistryError::Refused(format!("no device {id}")));
        };
        let db_err = self.db.error_fn();
        let tx = self.db.conn_mut().transaction().map_err(&db_err)?;
        let rev = bump(&tx).map_err(&db_err)?;
        let n = tx
            .execute("DELETE FROM devices WHERE id = ?1", [id])
            .map_err(&db_err)?;
        if n == 0 {
            return Err(RegistryError::Refused(format!("no device {id}")));
        }
        tx.execute(
            "INSERT OR REPLACE INTO devices_gone(id, rev) VALUES (?1, ?2)",
            params![id, rev],
        )
        .map_err(&db_err)?;
        tx.commit().map_err(&db_err)?;
        Ok(e)
    }

    /// Makes live layer `layer` take reports over DTLS only (or, with `on` false, plain CoAP
    /// too).
    pub fn set_dtls_only(&mut self, layer: &str, on: bool) -> Result<(), RegistryError> {
        if !crate::store::catalog::valid_layer_name(layer) {
            return Err(RegistryError::Refused(format!(
                "layer name {layer:?}: use 1-64 of A-Z a-z 0-9 _ -"
            )));
        }
        self.small_change(|tx| {
            if on {
                tx.execute(
                    "INSERT OR IGNORE INTO dtls_layers(name) VALUES (?1)",
                    [layer],
                )
            } else {
                tx.execute("DELETE FROM dtls_layers WHERE name = ?1", [layer])
            }
            .map(|_| ())
        })
    }

    /// Creates an ingest API key; returns it (shown once, stored hashed).
    pub fn add_ingest_key(&mut self, name: &str) -> Result<String, RegistryError> {
        if !valid_device_id(name) {
            return Err(RegistryError::Refused(format!(
                "key name {name:?}: use 1-64 of A-Z a-z 0-9 . _ : -"
            )));
        }
        let key = format!("ik_{}", hex(&random_bytes(32)?));
        let hash = hash_bytes(&key);
        self.small_change(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO ingest_keys(name, sha256, created) VALUES (?1, ?2, ?3)",
                params![name, &hash[..], now() as i64],
            )
            .map(|_| ())
        })?;
        Ok(key)
    }

    /// Adds an ingest key by its hash (for tests and migrations).
    pub fn add_ingest_key_hash(&mut self, name: &str, hash: [u8; 32]) -> Result<(), RegistryError> {
        self.small_change(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO ingest_keys(name, sha256, created) VALUES (?1, ?2, ?3)",
                params![name, &hash[..], now() as i64],
            )
            .map(|_| ())
        })
    }

    fn small_change(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<(), RegistryError> {
        let db_err = self.db.error_fn();
        let tx = self.db.conn_mut().transaction().map_err(&db_err)?;
        bump(&tx).map_err(&db_err)?;
        f(&tx).map_err(&db_err)?;
        Ok(tx.commit().map_err(&db_err)?)
    }
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
