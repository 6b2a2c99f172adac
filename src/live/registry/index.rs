//! The registry as a running server holds it: a dense table of devices by slot and small
//! indexes, changed in place by the rows a revision brings.

use super::*;
use std::collections::HashMap;
use std::sync::Arc;

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

    pub(super) fn insert(
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
    pub(super) fn reserve(&mut self, n: usize) {
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
