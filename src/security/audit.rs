//! The audit log: an append-only, hash-chained record of what changed and who tried what
//! they may not, in the store's database (`audit` table).
//!
//! Each entry holds its time, who (the key's id and role, never the key; `-` for anonymous or
//! the command line's operator), the client address (`cli` for the command line), the
//! action, its target, the outcome, the previous entry's hash and its own:
//!
//! ```text
//! hash = hex(SHA-256(prev "\n" seq "\n" t "\n" key_id "\n" role "\n" client "\n"
//!                    action "\n" target "\n" outcome))        prev of the first = 64 zeros
//! ```
//! so changing, removing or reordering any entry breaks every hash after it, which
//! [`verify`] (`urbis audit verify`) finds and names. Appends from the server and from the
//! command line serialise on one SQLite write transaction. Entries are never deleted by
//! Urbis (the 180 days that network logs must be kept are a floor, not a limit).
//!
//! Logged: key changes, classification and device registry changes (command line), geofence
//! changes, requests refused for want of a key or a right, and reads of restricted or
//! confidential layers (once per key, layer and minute, so the log stays small).

use crate::store::db::{Db, DbError};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use sha2::{Digest, Sha256};

/// One entry, as appended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// Sequence number (from 1).
    pub seq: i64,
    /// Seconds since 1970.
    pub t: i64,
    /// The key's id, or `-`.
    pub key_id: String,
    /// The role, or `cli`.
    pub role: String,
    /// Client address, or `cli`.
    pub client: String,
    /// What was done, e.g. `keys.create`, `geofence.put`, `denied`, `layer.read`.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// How it ended, e.g. `ok`, `401`, `403`.
    pub outcome: String,
    /// The previous entry's hash.
    pub prev: String,
    /// This entry's hash.
    pub hash: String,
}

/// What an event to log says; the log adds the time, sequence number and hashes.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// The key's id, or `-`.
    pub key_id: &'a str,
    /// The role.
    pub role: &'a str,
    /// Client address.
    pub client: &'a str,
    /// Action.
    pub action: &'a str,
    /// Target.
    pub target: &'a str,
    /// Outcome.
    pub outcome: &'a str,
}

/// The hash of an entry (see the module doc).
fn entry_hash(prev: &str, seq: i64, t: i64, e: &Event<'_>) -> String {
    let mut h = Sha256::new();
    for part in [
        prev,
        &seq.to_string(),
        &t.to_string(),
        e.key_id,
        e.role,
        e.client,
        e.action,
        e.target,
        e.outcome,
    ] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Appends an event; returns its entry.
pub fn append(db: &mut Db, e: &Event<'_>) -> Result<Entry, DbError> {
    let t = super::keys::now() as i64;
    let path = db.path().to_path_buf();
    let err = |e: rusqlite::Error| DbError {
        path: path.clone(),
        message: e.to_string(),
    };
    let tx = db
        .conn_mut()
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let last: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(err)?;
    let (seq, prev) = last.map_or((1, GENESIS.to_string()), |(s, h)| (s + 1, h));
    let hash = entry_hash(&prev, seq, t, e);
    tx.execute(
        "INSERT INTO audit(seq, t, key_id, role, client, action, target, outcome, prev, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            seq, t, e.key_id, e.role, e.client, e.action, e.target, e.outcome, prev, hash
        ],
    )
    .map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(Entry {
        seq,
        t,
        key_id: e.key_id.into(),
        role: e.role.into(),
        client: e.client.into(),
        action: e.action.into(),
        target: e.target.into(),
        outcome: e.outcome.into(),
        prev,
        hash,
    })
}

/// The entries from time `since` on (seconds since 1970), oldest first, at most `limit`.
pub fn entries(db: &Db, since: i64, limit: usize) -> Result<Vec<Entry>, DbError> {
    let mut st = db
        .conn()
        .prepare(
            "SELECT seq, t, key_id, role, client, action, target, outcome, prev, hash
             FROM audit WHERE t >= ?1 ORDER BY seq LIMIT ?2",
        )
        .map_err(|e| db.error(e))?;
    let rows = st
        .query_map(params![since, limit as i64], |r| {
            Ok(Entry {
                seq: r.get(0)?,
                t: r.get(1)?,
                key_id: r.get(2)?,
                role: r.get(3)?,
                client: r.get(4)?,
                action: r.get(5)?,
                target: r.get(6)?,
                outcome: r.get(7)?,
                prev: r.get(8)?,
                hash: r.get(9)?,
            })
        })
        .map_err(|e| db.error(e))?;
    rows.collect::<Result<_, _>>().map_err(|e| db.error(e))
}

/// Checks the whole chain: `Ok(entries)` when every entry follows the one before and its
/// hash is its own; else the first broken entry's sequence number and what is wrong.
pub fn verify(db: &Db) -> Result<Result<usize, (i64, String)>, DbError> {
    let all = entries(db, i64::MIN, usize::MAX >> 1)?;
    let mut prev = GENESIS.to_string();
    for (i, e) in all.iter().enumerate() {
        let want_seq = i as i64 + 1;
        if e.seq != want_seq {
            return Ok(Err((
                e.seq,
                format!("expected entry {want_seq} here: entries are missing"),
            )));
        }
        if e.prev != prev {
            return Ok(Err((
                e.seq,
                "its previous hash is not the hash of the entry before it".into(),
            )));
        }
        let ev = Event {
            key_id: &e.key_id,
            role: &e.role,
            client: &e.client,
            action: &e.action,
            target: &e.target,
            outcome: &e.outcome,
        };
        if entry_hash(&e.prev, e.seq, e.t, &ev) != e.hash {
            return Ok(Err((
                e.seq,
                "its content does not match its hash: it was changed".into(),
            )));
        }
        prev = e.hash.clone();
    }
    Ok(Ok(all.len()))
}
