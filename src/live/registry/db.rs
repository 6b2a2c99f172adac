//! The registry's tables in the store's database: registration in one transaction, the
//! migration of `devices.json`, and reading what changed since a revision.

use super::*;
use crate::store::db::Db;
use rusqlite::{OptionalExtension, params};
use std::path::Path;

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

    /// Whether `id` was removed from the registry (and is not registered again).
    pub fn was_removed(&self, id: &str) -> Result<bool, RegistryError> {
        Ok(self
            .db
            .conn()
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM devices_gone g WHERE g.id = ?1
                 AND NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = g.id))",
                [id],
                |r| r.get(0),
            )
            .map_err(|e| self.db.error(e))?)
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
