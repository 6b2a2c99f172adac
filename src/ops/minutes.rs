//! Minute-level operation figures, kept in the store for the operation report and read by the
//! alert rules: requests and their latency, tiles made (the slowest and largest named), cache
//! hits, device reports by protocol and outcome, geofence events, devices by layer and state,
//! whether the server was up and ready, alerts fired.
//!
//! The running minute is counted in memory ([`Minutes`]); when it ends it becomes one row of
//! `ops_figures` in the store's database (resolution 60 s), merged with a row already there
//! (a restart within the minute). Rows are compacted as they age: minutes older than 7 days
//! into hours, hours older than 90 days into days, days older than [`KEEP_DAYS_S`] dropped, so
//! the table stays bounded (about 10,080 + 1,992 + 1,000 rows). Every figure merges by adding
//! (devices are device-minutes: divided by `samples` they are the average count), so a
//! compacted row says the same as the rows it replaced.

use crate::store::db::Db;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;

/// Latency buckets: bucket `i` holds durations up to `0.1 ms × 2^(i/3)` (the last, 5.2 s,
/// holds everything slower). A quantile read from them is at most 26 % above the true one.
pub const BUCKETS: usize = 48;
/// Minutes kept at full resolution.
pub const KEEP_MINUTES_S: i64 = 7 * 86_400;
/// Hours kept before they become days.
pub const KEEP_HOURS_S: i64 = 90 * 86_400;
/// Days kept at all (about three years).
pub const KEEP_DAYS_S: i64 = 1_100 * 86_400;
/// Closed minutes kept in memory for the alert rules' windows.
const RECENT: usize = 60;
/// Tiles named as slowest or largest per row.
const TOP: usize = 5;

/// The bucket of a duration in milliseconds.
pub fn bucket(ms: f64) -> usize {
    if ms <= 0.1 {
        return 0;
    }
    ((ms / 0.1).log2() * 3.0)
        .ceil()
        .clamp(0.0, (BUCKETS - 1) as f64) as usize
}

/// The upper bound of bucket `i`, in milliseconds.
pub fn bucket_ms(i: usize) -> f64 {
    0.1 * 2f64.powf(i as f64 / 3.0)
}

/// The `q` quantile (0..1) of a bucket histogram, as its bucket's upper bound; `None` when empty.
pub fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(bucket_ms(i));
        }
    }
    Some(bucket_ms(buckets.len() - 1))
}

/// A tile named in the report (slowest or largest made).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TileNote {
    /// The layers asked for (comma-separated, as in the URL).
    pub layers: String,
    /// Zoom.
    pub z: u8,
    /// Column.
    pub x: u32,
    /// Row.
    pub y: u32,
    /// Milliseconds to make it.
    pub ms: f64,
    /// Bytes sent.
    pub bytes: u64,
}

/// The figures of a span of time: one minute as counted, or many merged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Figures {
    /// Start of the span (seconds since 1970, a multiple of 60).
    pub start: i64,
    /// Minutes the server ran in it (one per minute row).
    pub up: u64,
    /// Of those, minutes at whose end `/ready` passed.
    pub ready: u64,
    /// HTTP requests answered.
    pub requests: u64,
    /// Of those, 4xx answers.
    pub client_errors: u64,
    /// Of those, 5xx answers.
    pub server_errors: u64,
    /// Request latency histogram ([`BUCKETS`]).
    pub latency: Vec<u64>,
    /// Tiles made (cache misses), whose time is in `tile_latency`.
    pub tiles_made: u64,
    /// Tile-making latency histogram ([`BUCKETS`]).
    pub tile_latency: Vec<u64>,
    /// The slowest tiles made.
    pub slowest: Vec<TileNote>,
    /// The largest tiles made.
    pub largest: Vec<TileNote>,
    /// Tile cache hits.
    pub cache_hits: u64,
    /// Tile cache misses.
    pub cache_misses: u64,
    /// Device payloads by `protocol outcome` (`coap accepted`, `http refused`, ...).
    pub ingest: BTreeMap<String, u64>,
    /// Device records stored.
    pub records: u64,
    /// Geofence events by kind.
    pub fence_events: BTreeMap<String, u64>,
    /// Device-minutes by layer and state (divide by `samples` for the average count).
    pub devices: BTreeMap<String, BTreeMap<String, u64>>,
    /// Device samples taken (one per minute).
    pub samples: u64,
    /// Alerts that fired.
    pub alerts_fired: u64,
}

fn add_hist(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

fn keep_top(list: &mut Vec<TileNote>, key: fn(&TileNote) -> f64) {
    list.sort_by(|a, b| key(b).total_cmp(&key(a)));
    list.truncate(TOP);
}

impl Figures {
    /// Empty figures starting at `start`.
    pub fn at(start: i64) -> Figures {
        Figures {
            start,
            latency: vec![0; BUCKETS],
            tile_latency: vec![0; BUCKETS],
            ..Figures::default()
        }
    }

    /// Adds `o` (a later or concurrent span) to these figures; `start` stays the earlier.
    pub fn merge(&mut self, o: &Figures) {
        self.start = self.start.min(o.start);
        self.up += o.up;
        self.ready += o.ready;
        self.requests += o.requests;
        self.client_errors += o.client_errors;
        self.server_errors += o.server_errors;
        add_hist(&mut self.latency, &o.latency);
        self.tiles_made += o.tiles_made;
        add_hist(&mut self.tile_latency, &o.tile_latency);
        self.slowest.extend(o.slowest.iter().cloned());
        keep_top(&mut self.slowest, |t| t.ms);
        self.largest.extend(o.largest.iter().cloned());
        keep_top(&mut self.largest, |t| t.bytes as f64);
        self.cache_hits += o.cache_hits;
        self.cache_misses += o.cache_misses;
        for (k, v) in &o.ingest {
            *self.ingest.entry(k.clone()).or_default() += v;
        }
        self.records += o.records;
        for (k, v) in &o.fence_events {
            *self.fence_events.entry(k.clone()).or_default() += v;
        }
        for (layer, states) in &o.devices {
            let into = self.devices.entry(layer.clone()).or_default();
            for (s, n) in states {
                *into.entry(s.clone()).or_default() += n;
            }
        }
        self.samples += o.samples;
        self.alerts_fired += o.alerts_fired;
    }

    /// Device payloads refused (every outcome but `accepted`).
    pub fn refused(&self) -> u64 {
        self.ingest
            .iter()
            .filter(|(k, _)| !k.ends_with(" accepted"))
            .map(|(_, v)| v)
            .sum()
    }
}

/// The running minute and the last hour, counted in memory; rows written to the store.
pub struct Minutes {
    current: Mutex<Figures>,
    recent: Mutex<VecDeque<Figures>>,
    db: Option<Mutex<Db>>,
}

fn minute_of(t: i64) -> i64 {
    t - t.rem_euclid(60)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Minutes {
    /// Counting from now, rows written to the store's database in `store_dir` (`None`: kept
    /// in memory only, as for tests and `--no-metrics`).
    pub fn open(store_dir: Option<&Path>) -> Result<Minutes, crate::store::db::DbError> {
        let db = store_dir.map(Db::open).transpose()?;
        Ok(Minutes {
            current: Mutex::new(Figures::at(minute_of(crate::security::keys::now() as i64))),
            recent: Mutex::new(VecDeque::new()),
            db: db.map(Mutex::new),
        })
    }

    /// Adds to the running minute.
    pub fn count(&self, f: impl FnOnce(&mut Figures)) {
        f(&mut lock(&self.current));
    }

    /// Notes an HTTP answer.
    pub fn request(&self, status: u16, seconds: f64) {
        self.count(|m| {
            m.requests += 1;
            match status {
                400..=499 => m.client_errors += 1,
                500.. => m.server_errors += 1,
                _ => {}
            }
            m.latency[bucket(seconds * 1000.0)] += 1;
        });
    }

    /// Notes a tile made (not a cache hit).
    pub fn tile_made(&self, note: TileNote) {
        self.count(|m| {
            m.tiles_made += 1;
            m.tile_latency[bucket(note.ms)] += 1;
            if m.slowest.len() < TOP || m.slowest.iter().any(|t| t.ms < note.ms) {
                m.slowest.push(note.clone());
                keep_top(&mut m.slowest, |t| t.ms);
            }
            if m.largest.len() < TOP || m.largest.iter().any(|t| t.bytes < note.bytes) {
                m.largest.push(note);
                keep_top(&mut m.largest, |t| t.bytes as f64);
            }
        });
    }

    /// Closes the running minute if `now` (seconds) is past it: the device counts and the
    /// readiness are sampled by `sample` (called only then), the minute is kept in memory and
    /// written to the store. Returns the closed minute.
    pub fn roll(
        &self,
        now: i64,
        sample: impl FnOnce() -> (BTreeMap<String, BTreeMap<String, u64>>, bool),
    ) -> Option<Figures> {
        let start = minute_of(now);
        let closed = {
            let mut cur = lock(&self.current);
            if cur.start >= start {
                return None;
            }
            std::mem::replace(&mut *cur, Figures::at(start))
        };
        Some(self.close(closed, sample))
    }

    /// Writes the running minute now (at shutdown), sampled by `sample`.
    pub fn flush(&self, sample: impl FnOnce() -> (BTreeMap<String, BTreeMap<String, u64>>, bool)) {
        let cur = std::mem::replace(&mut *lock(&self.current), Figures::at(0));
        let start = cur.start;
        self.close(cur, sample);
        lock(&self.current).start = start;
    }

    fn close(
        &self,
        mut m: Figures,
        sample: impl FnOnce() -> (BTreeMap<String, BTreeMap<String, u64>>, bool),
    ) -> Figures {
        let (devices, ready) = sample();
        m.devices = devices;
        m.samples = 1;
        m.up = 1;
        m.ready = u64::from(ready);
        {
            let mut recent = lock(&self.recent);
            recent.push_back(m.clone());
            while recent.len() > RECENT {
                recent.pop_front();
            }
        }
        if let Some(db) = &self.db {
            let db = lock(db);
            if let Err(e) = store_row(&db, 60, &m) {
                tracing::warn!(error = %e, "cannot keep the minute's operation figures");
            }
            if m.start.rem_euclid(3600) == 0
                && let Err(e) = compact(&db, m.start)
            {
                tracing::warn!(error = %e, "cannot compact the operation figures");
            }
        }
        m
    }

    /// The figures of the last `minutes` minutes, the running one included.
    pub fn window(&self, minutes: usize) -> Figures {
        let mut out = lock(&self.current).clone();
        let recent = lock(&self.recent);
        for m in recent.iter().rev().take(minutes.saturating_sub(1)) {
            out.merge(m);
        }
        out
    }

    /// The running minute's figures so far.
    pub fn current(&self) -> Figures {
        lock(&self.current).clone()
    }
}

/// The device counts by layer and state and whether `/ready` passes, now: what a minute
/// records at its end (and the report's running minute).
pub fn sample(
    engine: &crate::engine::Engine,
    hub: Option<&crate::live::Hub>,
    listeners: &super::ready::Listeners,
) -> (BTreeMap<String, BTreeMap<String, u64>>, bool) {
    let devices = hub.map_or_else(Default::default, |h| {
        h.pulse()
            .states
            .into_iter()
            .map(|(l, s)| (l, s.into_iter().map(|(k, n)| (k.to_string(), n)).collect()))
            .collect()
    });
    let ready = super::ready::checks(engine, hub, listeners)
        .iter()
        .all(|c| c.ok);
    (devices, ready)
}

/// Adds `m` to the row of resolution `res` seconds at `m.start` (creating it).
fn store_row(db: &Db, res: i64, m: &Figures) -> Result<(), crate::store::db::DbError> {
    let conn = db.conn();
    let err = db.error_fn();
    let old: Option<String> = conn
        .query_row(
            "SELECT data FROM ops_figures WHERE res = ?1 AND start = ?2",
            rusqlite::params![res, m.start],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
        .map_err(&err)?;
    let mut row = m.clone();
    if let Some(old) = old.and_then(|s| serde_json::from_str::<Figures>(&s).ok()) {
        row = old;
        row.merge(m);
    }
    let data = serde_json::to_string(&row).unwrap_or_default();
    conn.execute(
        "INSERT OR REPLACE INTO ops_figures(res, start, data) VALUES (?1, ?2, ?3)",
        rusqlite::params![res, row.start, data],
    )
    .map_err(err)?;
    Ok(())
}

/// Merges rows of resolution `from` older than `age` seconds before `now` into rows of
/// resolution `to`, in one transaction.
fn compact_level(
    db: &Db,
    now: i64,
    from: i64,
    to: i64,
    age: i64,
) -> Result<usize, crate::store::db::DbError> {
    let err = db.error_fn();
    let cut = now - age;
    let rows = read_rows(db, from, i64::MIN, cut)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut merged: BTreeMap<i64, Figures> = BTreeMap::new();
    for r in &rows {
        let at = r.start - r.start.rem_euclid(to);
        merged.entry(at).or_insert_with(|| Figures::at(at)).merge(r);
    }
    db.conn().execute_batch("BEGIN").map_err(&err)?;
    let result = (|| {
        for m in merged.values() {
            store_row(db, to, m)?;
        }
        db.conn()
            .execute(
                "DELETE FROM ops_figures WHERE res = ?1 AND start < ?2",
                rusqlite::params![from, cut],
            )
            .map_err(&err)?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            db.conn().execute_batch("COMMIT").map_err(&err)?;
            Ok(rows.len())
        }
        Err(e) => {
            let _ = db.conn().execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Compacts the figures as of `now`: minutes past 7 days into hours, hours past 90 days into
/// days, days past [`KEEP_DAYS_S`] deleted. Returns the rows compacted.
pub fn compact(db: &Db, now: i64) -> Result<usize, crate::store::db::DbError> {
    let mut n = compact_level(db, now, 60, 3600, KEEP_MINUTES_S)?;
    n += compact_level(db, now, 3600, 86_400, KEEP_HOURS_S)?;
    n += db
        .conn()
        .execute(
            "DELETE FROM ops_figures WHERE res = 86400 AND start < ?1",
            rusqlite::params![now - KEEP_DAYS_S],
        )
        .map_err(db.error_fn())?;
    Ok(n)
}

/// Rows of resolution `res` with `from <= start < to`, oldest first.
fn read_rows(
    db: &Db,
    res: i64,
    from: i64,
    to: i64,
) -> Result<Vec<Figures>, crate::store::db::DbError> {
    let err = db.error_fn();
    let mut stmt = db
        .conn()
        .prepare(
            "SELECT data FROM ops_figures WHERE res = ?1 AND start >= ?2 AND start < ?3 ORDER BY start",
        )
        .map_err(&err)?;
    let rows = stmt
        .query_map(rusqlite::params![res, from, to], |r| r.get::<_, String>(0))
        .map_err(&err)?;
    let mut out = Vec::new();
    for r in rows {
        if let Ok(f) = serde_json::from_str::<Figures>(&r.map_err(&err)?) {
            out.push(f);
        }
    }
    Ok(out)
}

/// Every row (any resolution) starting at or after `since`, oldest first, with its resolution
/// in seconds.
pub fn rows_since(db: &Db, since: i64) -> Result<Vec<(i64, Figures)>, crate::store::db::DbError> {
    let mut out = Vec::new();
    for res in [86_400, 3600, 60] {
        // A coarser row that began before `since` but reaches past it is counted whole.
        let from = since - since.rem_euclid(res);
        out.extend(
            read_rows(db, res, from, i64::MAX)?
                .into_iter()
                .map(|f| (res, f)),
        );
    }
    out.sort_by_key(|(_, f)| f.start);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        assert_eq!(bucket(0.05), 0);
        assert!(bucket_ms(bucket(3.0)) >= 3.0);
        assert!(bucket_ms(bucket(3.0)) < 3.0 * 1.26 + 1e-9);
        let mut h = vec![0; BUCKETS];
        for ms in 1..=100 {
            h[bucket(ms as f64)] += 1;
        }
        let p50 = quantile(&h, 0.5).unwrap();
        let p99 = quantile(&h, 0.99).unwrap();
        assert!((50.0..=63.0).contains(&p50), "{p50}");
        assert!((99.0..=125.0).contains(&p99), "{p99}");
        assert_eq!(quantile(&[0; BUCKETS], 0.5), None);
    }

    #[test]
    fn rows_merge_and_compact_without_changing_totals() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let now = 1_800_000_000i64 - 1_800_000_000i64.rem_euclid(86_400);
        let mut total = Figures::at(0);
        // Ten days of minutes, one every 17 minutes.
        let mut t = now - 10 * 86_400;
        while t < now {
            let mut m = Figures::at(t);
            m.up = 1;
            m.requests = 3;
            m.latency[5] = 3;
            m.devices
                .entry("trackers".into())
                .or_default()
                .insert("live".into(), 2);
            m.samples = 1;
            store_row(&db, 60, &m).unwrap();
            total.merge(&m);
            t += 17 * 60;
        }
        // A second write to the same minute adds to it.
        let mut again = Figures::at(now - 60);
        again.requests = 1;
        store_row(&db, 60, &again).unwrap();
        total.merge(&again);
        let before = rows_since(&db, 0).unwrap().len();
        compact(&db, now).unwrap();
        let rows = rows_since(&db, 0).unwrap();
        assert!(rows.len() < before, "{} rows, {before} before", rows.len());
        assert!(rows.iter().any(|(res, _)| *res == 3600));
        assert!(
            rows.iter()
                .filter(|(res, _)| *res == 60)
                .all(|(_, f)| f.start >= now - KEEP_MINUTES_S)
        );
        let mut sum = Figures::at(0);
        for (_, f) in &rows {
            sum.merge(f);
        }
        assert_eq!(sum.requests, total.requests);
        assert_eq!(sum.up, total.up);
        assert_eq!(sum.latency, total.latency);
        assert_eq!(sum.devices, total.devices);
        // Compacting again changes nothing.
        compact(&db, now).unwrap();
        assert_eq!(rows_since(&db, 0).unwrap().len(), rows.len());
    }

    #[test]
    fn the_window_covers_the_running_minute_and_the_last_closed_ones() {
        let m = Minutes::open(None).unwrap();
        let start = lock(&m.current).start;
        m.request(200, 0.001);
        m.roll(start + 60, || (BTreeMap::new(), true)).unwrap();
        m.request(500, 0.002);
        m.request(404, 0.002);
        let w = m.window(5);
        assert_eq!(w.requests, 3);
        assert_eq!(w.server_errors, 1);
        assert_eq!(w.client_errors, 1);
        assert_eq!(m.window(1).requests, 2);
        assert!(m.roll(start + 61, || unreachable!()).is_none());
    }
}
