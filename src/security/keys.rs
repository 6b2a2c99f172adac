//! API keys of people and programs (map clients, dashboards, scripts): `uk_` and 64 hex
//! digits (32 random bytes), shown once at creation and stored only as their SHA-256 in the
//! store's database (`api_keys`), with a role, an optional expiry and a revocation time.
//! A check is one hash and one map look-up: about a microsecond, where a password hash would
//! cost tens of milliseconds per tile.

use crate::store::db::{Db, DbError};
use rusqlite::{OptionalExtension, params};

/// The prefix of API keys (device secrets are `ds_`, ingest keys `ik_`).
pub const PREFIX: &str = "uk_";

/// A key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiKey {
    /// Its id, for listing and revoking (`key_` and 8 hex digits).
    pub id: String,
    /// What it is for.
    pub name: String,
    /// Its role.
    pub role: String,
    /// SHA-256 of the key, hex.
    #[serde(skip)]
    pub sha256: String,
    /// Created, seconds since 1970.
    pub created: u64,
    /// Not valid from this time on, if set.
    pub expires: Option<u64>,
    /// Revoked at this time, if it was.
    pub revoked: Option<u64>,
}

impl ApiKey {
    /// True if the key may be used at time `now`.
    pub fn valid_at(&self, now: u64) -> Result<(), &'static str> {
        if self.revoked.is_some() {
            return Err("revoked");
        }
        if self.expires.is_some_and(|e| now >= e) {
            return Err("expired");
        }
        Ok(())
    }
}

/// Seconds since 1970, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random_hex(bytes: usize) -> Result<String, std::io::Error> {
    let mut buf = vec![0u8; bytes];
    rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty())?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Parses a lifetime like `90d`, `12h`, `30m`, `45s` (up to 10 years).
pub fn parse_lifetime(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: give a number and a unit, like 90d"))?;
    let mult = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("{s:?}: unknown unit {other:?}; use s, m, h or d")),
    };
    let secs = n.saturating_mul(mult);
    if secs == 0 || secs > 3650 * 86_400 {
        return Err(format!("{s:?}: a lifetime is between 1s and 3650d"));
    }
    Ok(secs)
}

/// Creates a key for `role`; returns it as stored and the key itself (to show once).
pub fn create(
    db: &Db,
    role: &str,
    name: &str,
    lifetime_s: Option<u64>,
) -> Result<(ApiKey, String), DbError> {
    let io = |e: std::io::Error| DbError {
        path: "getrandom".into(),
        message: e.to_string(),
    };
    let secret = format!("{PREFIX}{}", random_hex(32).map_err(io)?);
    let created = now();
    let key = ApiKey {
        id: format!("key_{}", random_hex(4).map_err(io)?),
        name: name.to_string(),
        role: role.to_string(),
        sha256: crate::live::registry::hash_secret(&secret),
        created,
        expires: lifetime_s.map(|l| created + l),
        revoked: None,
    };
    db.conn()
        .execute(
            "INSERT INTO api_keys(id, name, role, sha256, created, expires) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                key.id,
                key.name,
                key.role,
                key.sha256,
                key.created as i64,
                key.expires.map(|e| e as i64)
            ],
        )
        .map_err(|e| db.error(e))?;
    Ok((key, secret))
}

/// Every key, oldest first.
pub fn list(db: &Db) -> Result<Vec<ApiKey>, DbError> {
    let mut st = db
        .conn()
        .prepare(
            "SELECT id, name, role, sha256, created, expires, revoked FROM api_keys ORDER BY created, id",
        )
        .map_err(|e| db.error(e))?;
    let rows = st
        .query_map([], |r| {
            Ok(ApiKey {
                id: r.get(0)?,
                name: r.get(1)?,
                role: r.get(2)?,
                sha256: r.get(3)?,
                created: r.get::<_, i64>(4)? as u64,
                expires: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                revoked: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
            })
        })
        .map_err(|e| db.error(e))?;
    rows.collect::<Result<_, _>>().map_err(|e| db.error(e))
}

/// Revokes key `id` (at once on running servers, within a second); returns it, or `None` if
/// there is no such key.
pub fn revoke(db: &Db, id: &str) -> Result<Option<ApiKey>, DbError> {
    let found: Option<String> = db
        .conn()
        .query_row("SELECT id FROM api_keys WHERE id = ?1", [id], |r| r.get(0))
        .optional()
        .map_err(|e| db.error(e))?;
    if found.is_none() {
        return Ok(None);
    }
    db.conn()
        .execute(
            "UPDATE api_keys SET revoked = coalesce(revoked, ?2) WHERE id = ?1",
            params![id, now() as i64],
        )
        .map_err(|e| db.error(e))?;
    Ok(list(db)?.into_iter().find(|k| k.id == id))
}
