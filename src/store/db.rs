//! The store's embedded database, `STORE/urbis.db`: the mutable records beside the immutable
//! layer files. SQLite (the bundled rusqlite the GeoPackage reader already uses) in WAL mode,
//! so readers never wait for a writer and every change is one transaction.
//!
//! ```text
//! schema version 5 (PRAGMA user_version)
//! api_keys(id TEXT PRIMARY KEY, name TEXT, role TEXT, sha256 TEXT UNIQUE,
//!          created INTEGER, expires INTEGER NULL, revoked INTEGER NULL)   seconds since 1970
//! layer_meta(name TEXT PRIMARY KEY, classification TEXT, personal INTEGER)
//! audit(seq INTEGER PRIMARY KEY, t INTEGER, key_id TEXT, role TEXT, client TEXT,
//!       action TEXT, target TEXT, outcome TEXT, prev TEXT, hash TEXT)     version 2; see
//!                                                                          security::audit
//! devices(id TEXT PRIMARY KEY, layer TEXT, kind TEXT, interval_s INTEGER,
//!         secret_sha256 BLOB, created INTEGER, dtls_psk TEXT NULL, rev INTEGER)  version 3
//! devices_gone(id TEXT PRIMARY KEY, rev INTEGER)        the last removal of each id
//! ingest_keys(name TEXT PRIMARY KEY, sha256 BLOB, created INTEGER)
//! dtls_layers(name TEXT PRIMARY KEY)                    live layers taking DTLS only
//! counters(name TEXT PRIMARY KEY, value INTEGER)        registry_rev: bumped by every
//!                                                       registry change; devices_json: 1 once
//!                                                       STORE/live/devices.json is migrated
//! layer_catalog(name TEXT PRIMARY KEY, meta TEXT)       version 4: catalog metadata (JSON;
//!                                                       see governance::meta)
//! layer_lineage(name TEXT, version INTEGER, meta TEXT)  where each version came from (JSON)
//! ops_figures(res INTEGER, start INTEGER, data TEXT)    version 5: operation figures per
//!                                                       minute, hour or day (JSON; see
//!                                                       ops::minutes)
//! ops_alerts(seq INTEGER PRIMARY KEY, t INTEGER, rule TEXT, state TEXT, data TEXT)
//!                                                       alerts fired and resolved (ops::alerts)
//! ```
//! Every registry change stamps the rows it touches with the new `registry_rev`, so a running
//! server reads only the rows changed since the revision it holds (see `live::registry`).
//! A database of a later schema version is refused with a message naming it. A running
//! server learns of changes made by other processes (the CLI) from SQLite's `data_version`,
//! which changes whenever another connection commits: one cheap pragma a second, and a
//! re-read only then.

use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = 5;

/// Sensitivity of a layer, lowest first: a principal sees a layer when its clearance is at
/// least the layer's classification (and no rule denies it).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Classification {
    /// Anyone may see it, without a key.
    Public,
    /// Staff of the city.
    Internal,
    /// Named roles only.
    Restricted,
    /// The most sensitive data.
    Confidential,
}

impl Classification {
    /// All, lowest first.
    pub const ALL: [Classification; 4] = [
        Classification::Public,
        Classification::Internal,
        Classification::Restricted,
        Classification::Confidential,
    ];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Public => "public",
            Classification::Internal => "internal",
            Classification::Restricted => "restricted",
            Classification::Confidential => "confidential",
        }
    }

    /// From its name; `None` for anything else.
    pub fn parse(s: &str) -> Option<Classification> {
        Classification::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for Classification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl clap::ValueEnum for Classification {
    fn value_variants<'a>() -> &'a [Self] {
        &Classification::ALL
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

/// What governance says of a layer (static or live).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerPolicyMeta {
    /// Its classification.
    pub classification: Classification,
    /// Positions of people or personal vehicles: served at reduced precision to roles
    /// without exact-position rights.
    pub personal: bool,
}

impl Default for LayerPolicyMeta {
    /// A layer nobody classified is internal: never public by accident.
    fn default() -> Self {
        LayerPolicyMeta {
            classification: Classification::Internal,
            personal: false,
        }
    }
}

/// A database problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DbError {
    /// The database file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// The store's database.
pub struct Db {
    conn: Connection,
    path: PathBuf,
}

impl Db {
    /// Opens (creating if needed) `STORE/urbis.db` and brings its schema up to date.
    pub fn open(store_dir: &Path) -> Result<Db, DbError> {
        let path = store_dir.join("urbis.db");
        let err = |e: rusqlite::Error| DbError {
            path: path.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(store_dir).map_err(|e| DbError {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        // Turning a new database to WAL takes an exclusive lock and SQLite does not call the
        // busy handler for it: two processes creating a store at once (two imports) saw
        // "database is locked" at once. Retried here for up to the busy timeout.
        let started = std::time::Instant::now();
        loop {
            match conn.pragma_update(None, "journal_mode", "wal") {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && started.elapsed() < std::time::Duration::from_secs(5) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(err(e)),
            }
        }
        conn.pragma_update(None, "synchronous", "full")
            .map_err(err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(DbError {
                path,
                message: format!(
                    "schema version {version} was written by a newer Urbis; this one reads version {SCHEMA_VERSION}"
                ),
            });
        }
        // Each step takes the write lock at BEGIN (IMMEDIATE), so a second process opening a
        // new store at the same moment waits for it under the busy timeout instead of failing
        // with "database is locked" when its read would turn into a write; every step is
        // idempotent (IF NOT EXISTS), so the one that waited repeats it harmlessly.
        if version < 1 {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS api_keys(
                     id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,
                     sha256 TEXT NOT NULL UNIQUE, created INTEGER NOT NULL,
                     expires INTEGER, revoked INTEGER);
                 CREATE TABLE IF NOT EXISTS layer_meta(
                     name TEXT PRIMARY KEY, classification TEXT NOT NULL,
                     personal INTEGER NOT NULL DEFAULT 0);
                 PRAGMA user_version = 1;
                 COMMIT;",
            )
            .map_err(err)?;
        }
        if version < 2 {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS audit(
                     seq INTEGER PRIMARY KEY, t INTEGER NOT NULL, key_id TEXT NOT NULL,
                     role TEXT NOT NULL, client TEXT NOT NULL, action TEXT NOT NULL,
                     target TEXT NOT NULL, outcome TEXT NOT NULL, prev TEXT NOT NULL,
                     hash TEXT NOT NULL);
                 PRAGMA user_version = 2;
                 COMMIT;",
            )
            .map_err(err)?;
        }
        if version < 3 {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS devices(
                     id TEXT PRIMARY KEY, layer TEXT NOT NULL, kind TEXT NOT NULL,
                     interval_s INTEGER NOT NULL, secret_sha256 BLOB NOT NULL,
                     created INTEGER NOT NULL, dtls_psk TEXT, rev INTEGER NOT NULL)
                     WITHOUT ROWID;
                 CREATE INDEX IF NOT EXISTS devices_by_rev ON devices(rev);
                 CREATE TABLE IF NOT EXISTS devices_gone(
                     id TEXT PRIMARY KEY, rev INTEGER NOT NULL) WITHOUT ROWID;
                 CREATE INDEX IF NOT EXISTS devices_gone_by_rev ON devices_gone(rev);
                 CREATE TABLE IF NOT EXISTS ingest_keys(
                     name TEXT PRIMARY KEY, sha256 BLOB NOT NULL, created INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS dtls_layers(name TEXT PRIMARY KEY);
                 CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 INSERT OR IGNORE INTO counters VALUES ('registry_rev', 0);
                 PRAGMA user_version = 3;
                 COMMIT;",
            )
            .map_err(err)?;
        }
        if version < 4 {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS layer_catalog(name TEXT PRIMARY KEY, meta TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS layer_lineage(
                     name TEXT NOT NULL, version INTEGER NOT NULL, meta TEXT NOT NULL,
                     PRIMARY KEY(name, version));
                 PRAGMA user_version = 4;
                 COMMIT;",
            )
            .map_err(err)?;
        }
        if version < 5 {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS ops_figures(
                     res INTEGER NOT NULL, start INTEGER NOT NULL, data TEXT NOT NULL,
                     PRIMARY KEY(res, start)) WITHOUT ROWID;
                 CREATE TABLE IF NOT EXISTS ops_alerts(
                     seq INTEGER PRIMARY KEY, t INTEGER NOT NULL, rule TEXT NOT NULL,
                     state TEXT NOT NULL, data TEXT NOT NULL);
                 CREATE INDEX IF NOT EXISTS ops_alerts_by_t ON ops_alerts(t);
                 PRAGMA user_version = 5;
                 COMMIT;",
            )
            .map_err(err)?;
        }
        Ok(Db { conn, path })
    }

    /// The connection.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for transactions.
    pub fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The error of a failed statement, naming the file.
    pub fn error(&self, e: rusqlite::Error) -> DbError {
        DbError {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// [`Db::error`] as a function that does not borrow the database, for the statements of
    /// a transaction (which holds it mutably).
    pub fn error_fn(&self) -> impl Fn(rusqlite::Error) -> DbError + 'static {
        let path = self.path.clone();
        move |e| DbError {
            path: path.clone(),
            message: e.to_string(),
        }
    }

    /// SQLite's `data_version`: changes when another connection commits.
    pub fn data_version(&self) -> Result<i64, DbError> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.error(e))
    }

    /// Sets a layer's classification and personal flag.
    pub fn set_layer_meta(&self, name: &str, meta: LayerPolicyMeta) -> Result<(), DbError> {
        self.conn
            .execute(
                "INSERT INTO layer_meta(name, classification, personal) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET classification = ?2, personal = ?3",
                params![name, meta.classification.as_str(), meta.personal],
            )
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    /// A layer's classification, if one was set.
    pub fn layer_meta(&self, name: &str) -> Result<Option<LayerPolicyMeta>, DbError> {
        self.conn
            .query_row(
                "SELECT classification, personal FROM layer_meta WHERE name = ?1",
                [name],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)),
            )
            .optional()
            .map_err(|e| self.error(e))
            .map(|o| {
                o.map(|(c, personal)| LayerPolicyMeta {
                    classification: Classification::parse(&c)
                        .unwrap_or(Classification::Confidential),
                    personal,
                })
            })
    }

    /// Every classified layer.
    pub fn all_layer_meta(&self) -> Result<Vec<(String, LayerPolicyMeta)>, DbError> {
        let mut st = self
            .conn
            .prepare("SELECT name, classification, personal FROM layer_meta ORDER BY name")
            .map_err(|e| self.error(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            })
            .map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, c, personal) = row.map_err(|e| self.error(e))?;
            out.push((
                name,
                LayerPolicyMeta {
                    // An unreadable value is treated as the most sensitive, never as public.
                    classification: Classification::parse(&c)
                        .unwrap_or(Classification::Confidential),
                    personal,
                },
            ));
        }
        Ok(out)
    }
}
