//! The store database's shared tables across the cluster, row by row through the
//! `NAME_tables` bucket: API keys, layer classifications, catalog metadata, the device
//! registry, ingest keys and the layers that take DTLS only. What stays each server's own:
//! the audit log (each server's hash chain of what it did), lineage (per local version),
//! operation figures and alerts.
//!
//! A row is a key `table.hex(primary key)` whose value is the row as JSON (columns by name;
//! blobs as `{"hex": …}`; the registry's local revision column left out). Every 250 ms, when
//! SQLite's `data_version` says another connection wrote (the API, the CLI), the tables are
//! read and every row whose value differs from what the bucket was last seen to hold is put,
//! every row gone is deleted. Every server watches the bucket and writes what it holds into
//! its own database, one transaction per row, stamping registry rows with a new local
//! revision so that its registry index reads them (within a second, like a CLI change). At
//! start the bucket's history is read first: rows deleted in the cluster while this server
//! was away are deleted here, not published again.

use super::{Cluster, ClusterError};
use crate::store::db::Db;
use async_nats::jetstream::kv::{Operation, Store as Kv};
use rusqlite::types::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// The shared tables and their primary key column.
const TABLES: &[(&str, &str)] = &[
    ("api_keys", "id"),
    ("layer_meta", "name"),
    ("layer_catalog", "name"),
    ("devices", "id"),
    ("ingest_keys", "name"),
    ("dtls_layers", "name"),
];

/// Tables of the device registry: a change bumps `registry_rev`.
fn is_registry(table: &str) -> bool {
    matches!(table, "devices" | "ingest_keys" | "dtls_layers")
}

/// Starts replicating the shared tables of the store at `dir`.
pub async fn start(cluster: &Cluster, dir: PathBuf) -> Result<(), ClusterError> {
    let (mut follow, history) = super::Follow::open(cluster, "tables").await?;
    let d = dir.clone();
    let db = tokio::task::spawn_blocking(move || Db::open(&d))
        .await
        .map_err(|e| ClusterError::JetStream(e.to_string()))?
        .map_err(|e| ClusterError::JetStream(e.to_string()))?;
    let mut r = Rows {
        kv: follow.kv().clone(),
        db: Some(db),
        known: HashMap::new(),
        version: -1,
    };
    // All of it before anything is published: a row published from here before the bucket's
    // newer value of it was read would undo a change made elsewhere (a revoked key).
    for e in history {
        let value = matches!(e.operation, Operation::Put).then(|| e.value.to_vec());
        r.apply(&e.key, value).await;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                e = follow.next() => {
                    let value = matches!(e.operation, Operation::Put).then(|| e.value.to_vec());
                    r.apply(&e.key, value).await;
                }
                _ = tick.tick() => r.publish_local_changes().await,
            }
        }
    });
    Ok(())
}

struct Rows {
    kv: Kv,
    /// The database (taken while a blocking task uses it).
    db: Option<Db>,
    /// Value hash of each key as the bucket was last seen (or made) to hold it.
    known: HashMap<String, u64>,
    /// SQLite's `data_version` when the tables were last read.
    version: i64,
}

fn hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn key_of(table: &str, pk: &str) -> String {
    format!("{table}.{}", crate::live::registry::hex(pk.as_bytes()))
}

fn parse_key(key: &str) -> Option<(&'static str, &'static str, String)> {
    let (table, hex) = key.split_once('.')?;
    let (t, pk) = TABLES.iter().find(|(t, _)| *t == table)?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    Some((t, pk, String::from_utf8(bytes?).ok()?))
}

fn to_json(v: Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Integer(i) => i.into(),
        Value::Real(f) => f.into(),
        Value::Text(s) => s.into(),
        Value::Blob(b) => serde_json::json!({ "hex": crate::live::registry::hex(&b) }),
    }
}

fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Array(_) => {
            Value::Null
        }
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(Value::Integer)
            .unwrap_or_else(|| Value::Real(n.as_f64().unwrap_or(0.0))),
        serde_json::Value::String(s) => Value::Text(s.clone()),
        serde_json::Value::Object(o) => match o.get("hex").and_then(|h| h.as_str()) {
            Some(h) => Value::Blob(
                (0..h.len() / 2)
                    .filter_map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok())
                    .collect(),
            ),
            None => Value::Null,
        },
    }
}

/// The JSON value of one row (`None`: no such row).
fn read_row(db: &Db, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    let Some((table, pk, id)) = parse_key(key) else {
        return Ok(None);
    };
    let mut out = HashMap::new();
    read_table(db, table, pk, Some(&id), &mut out)?;
    Ok(out.remove(key))
}

/// Every shared row of the database: key → JSON value.
fn read_rows(db: &Db) -> rusqlite::Result<HashMap<String, Vec<u8>>> {
    let mut out = HashMap::new();
    for (table, pk) in TABLES {
        read_table(db, table, pk, None, &mut out)?;
    }
    Ok(out)
}

/// The rows of one table (or the one of primary key `id`) into `out`.
fn read_table(
    db: &Db,
    table: &str,
    pk: &str,
    id: Option<&str>,
    out: &mut HashMap<String, Vec<u8>>,
) -> rusqlite::Result<()> {
    {
        let sql = match id {
            Some(_) => format!("SELECT * FROM {table} WHERE {pk} = ?1"),
            None => format!("SELECT * FROM {table}"),
        };
        let mut stmt = db.conn().prepare(&sql)?;
        let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
        let mut rows = match id {
            Some(id) => stmt.query([id])?,
            None => stmt.query([])?,
        };
        while let Some(row) = rows.next()? {
            let mut obj = serde_json::Map::new();
            let mut key = None;
            for (i, n) in names.iter().enumerate() {
                if n == "rev" {
                    continue; // the local registry revision
                }
                let v: Value = row.get(i)?;
                if n == pk
                    && let Value::Text(s) = &v
                {
                    key = Some(key_of(table, s));
                }
                obj.insert(n.clone(), to_json(v));
            }
            if let Some(k) = key {
                out.insert(k, serde_json::to_vec(&obj).unwrap_or_default());
            }
        }
    }
    Ok(())
}

/// Writes one row (or its deletion) of the bucket into the database.
fn write_row(db: &mut Db, key: &str, value: Option<&[u8]>) -> Result<(), String> {
    let (table, pk, id) = parse_key(key).ok_or_else(|| format!("unknown key {key}"))?;
    let tx = db.conn_mut().transaction().map_err(|e| e.to_string())?;
    let rev: Option<i64> = if is_registry(table) {
        Some(
            tx.query_row(
                "UPDATE counters SET value = value + 1 WHERE name = 'registry_rev' RETURNING value",
                [],
                |r| r.get(0),
            )
            .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    match value {
        None => {
            let n = tx
                .execute(&format!("DELETE FROM {table} WHERE {pk} = ?1"), [&id])
                .map_err(|e| e.to_string())?;
            if table == "devices" && n > 0 {
                tx.execute(
                    "INSERT OR REPLACE INTO devices_gone(id, rev) VALUES (?1, ?2)",
                    rusqlite::params![id, rev],
                )
                .map_err(|e| e.to_string())?;
            }
        }
        Some(v) => {
            let obj: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(v).map_err(|e| format!("{key}: {e}"))?;
            let mut cols: Vec<String> = Vec::new();
            let mut vals: Vec<Value> = Vec::new();
            for (c, v) in &obj {
                if c == "rev" {
                    continue; // stamped here
                }
                if !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
                    return Err(format!("{key}: bad column {c:?}"));
                }
                cols.push(c.clone());
                vals.push(from_json(v));
            }
            if table == "devices" {
                cols.push("rev".into());
                vals.push(Value::Integer(rev.unwrap_or(0)));
            }
            let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
            tx.execute(
                &format!(
                    "INSERT OR REPLACE INTO {table}({}) VALUES ({})",
                    cols.join(", "),
                    marks.join(", ")
                ),
                rusqlite::params_from_iter(vals),
            )
            .map_err(|e| format!("{key}: {e}"))?;
        }
    }
    tx.commit().map_err(|e| e.to_string())
}

impl Rows {
    /// Runs `f` on the database on the blocking pool.
    async fn with_db<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Db) -> T + Send + 'static,
    ) -> Option<T> {
        let mut db = self.db.take()?;
        let (db, out) = tokio::task::spawn_blocking(move || {
            let out = f(&mut db);
            (db, out)
        })
        .await
        .ok()?;
        self.db = Some(db);
        Some(out)
    }

    /// A row of the bucket, written here unless this database holds it already.
    async fn apply(&mut self, key: &str, value: Option<Vec<u8>>) {
        let h = value.as_deref().map(hash);
        if h.is_some() && self.known.get(key).copied() == h {
            return;
        }
        let k = key.to_string();
        let done = self
            .with_db(move |db| {
                let here = read_row(db, &k).map_err(|e| e.to_string())?;
                if here.as_deref() == value.as_deref() {
                    return Ok(());
                }
                write_row(db, &k, value.as_deref())
            })
            .await;
        match done {
            // Known only once written: a row that could not be written is not taken for one
            // deleted here (which would delete it everywhere).
            Some(Ok(())) => {
                match h {
                    Some(h) => self.known.insert(key.to_string(), h),
                    None => self.known.remove(key),
                };
            }
            Some(Err(e)) => {
                tracing::warn!(key, error = %e, "cannot write a row of the cluster's tables")
            }
            None => {}
        }
    }

    /// Puts the rows changed here since the tables were last read; deletes the rows gone.
    async fn publish_local_changes(&mut self) {
        let version = self.version;
        let read = self
            .with_db(move |db| {
                let v = db.data_version().unwrap_or(-2);
                if v == version {
                    return (v, None);
                }
                (v, read_rows(db).ok())
            })
            .await;
        let Some((v, Some(rows))) = read else { return };
        let mut all_ok = true;
        for (key, value) in &rows {
            let h = hash(value);
            if self.known.get(key) == Some(&h) {
                continue;
            }
            match self.kv.put(key, value.clone().into()).await {
                Ok(_) => {
                    self.known.insert(key.clone(), h);
                }
                Err(e) => {
                    all_ok = false;
                    tracing::warn!(key, error = %e, "cannot publish a row to the cluster");
                }
            }
        }
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|k| !rows.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            match self.kv.delete(&key).await {
                Ok(()) => {
                    self.known.remove(&key);
                }
                Err(e) => {
                    all_ok = false;
                    tracing::warn!(key, error = %e, "cannot remove a row from the cluster");
                }
            }
        }
        if all_ok {
            self.version = v;
        }
    }
}
