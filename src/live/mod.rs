//! Live devices: the room where NB-IoT trackers, meters and sensors become live points.
//!
//! Flow (DESIGN.md flow 3): a CoAP datagram ([`coap`]) or an HTTP batch (`api::live`) is
//! parsed ([`payload`]) and authenticated against the [`registry`], then handed to the
//! [`Hub`]'s committer thread, which applies a whole group of reports to the [`state`]
//! (device-time order, geofence events from [`fence`]), appends them to the write-ahead log
//! ([`wal`]), calls `fdatasync` once for the group, and only then acknowledges them and
//! publishes them to `/stream` subscribers and the live tile cache ([`tiles`]).
//!
//! Durability: an acknowledged report is in the fsynced log. On start the state is rebuilt
//! from the last snapshot (`STORE/live/snapshot.json`, written every few seconds) plus the log
//! after it. If an fsync fails the hub stops acknowledging (every later report is refused,
//! `/ready` fails) rather than acknowledge what may not be on disk.

pub mod coap;
pub mod fence;
pub mod fuzzing;
pub mod payload;
pub mod registry;
pub mod state;
pub mod tiles;
pub mod wal;

use crate::engine::TileBody;
use crate::tile::TileId;
use crate::tile::mercator::lonlat_to_grid;
use registry::{Registry, RegistryFile, same_hash};
use serde_json::json;
use state::{Change, DevState, LiveState, Snapshot};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use wal::{Record, ReportRec, Wal};

/// Events kept for `Last-Event-ID` resume.
const RECENT_EVENTS: usize = 20_000;
/// Broadcast buffer per stream client: a client this far behind is cut off.
pub const STREAM_BUFFER: usize = 4_096;
/// Records per group commit, at most.
const MAX_GROUP: usize = 65_536;
/// Live tiles cached, at most (then the cache starts over).
const MAX_CACHED_TILES: usize = 20_000;
/// Seconds between snapshots (when something changed).
const SNAPSHOT_EVERY: Duration = Duration::from_secs(10);

/// Settings of the live layer.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Store directory (the live data goes in `live/` inside it).
    pub store_dir: PathBuf,
    /// How long position history is kept, seconds.
    pub retention_s: u64,
    /// Tile buffer in tile units.
    pub buffer: u32,
    /// Submissions waiting for the committer, at most (beyond: 4.29 / 429).
    pub queue: usize,
    /// Log segment size, bytes (the unit retention deletes).
    pub segment_bytes: u64,
}

/// An event for `/stream`.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// Event id (the log sequence number).
    pub id: u64,
    /// Event type: `position`, `geofence`, `state`, `geofences`, `removed`.
    pub event: &'static str,
    /// Live layer, when the event is about a device.
    pub layer: Option<String>,
    /// Position, when it has one.
    pub pos: Option<[f64; 2]>,
    /// JSON data.
    pub data: String,
}

/// Why a submission was not acknowledged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full: try again shortly.
    #[error("overloaded: try again in a few seconds")]
    Overloaded,
    /// The log cannot be written: nothing is acknowledged until an operator fixes it.
    #[error("storage failure, reports are not being accepted: {0}")]
    Failed(String),
}

/// Called by the committer with the sequence numbers of a job's records once they are
/// durable (or why they are not).
pub type Reply = Box<dyn FnOnce(Result<Vec<u64>, SubmitError>) + Send>;

/// A group of records for the committer, with where to send the sequence numbers.
struct Job {
    items: Vec<Record>,
    reply: Option<Reply>,
}

/// Registry with a lookup from secret hash to device.
#[derive(Default)]
pub struct RegIndex {
    /// The registry.
    pub reg: Registry,
    by_hash: HashMap<String, String>,
    /// Live layer names, sorted (computed once per registry read: the tile path asks).
    layers: Vec<String>,
}

impl RegIndex {
    fn new(reg: Registry) -> RegIndex {
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
}

/// Who presented a credential.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// A device, by its own secret.
    Device(String),
    /// A gateway or platform, by an ingest key (any device).
    Ingest(String),
}

/// The cached tiles of one live layer, and the zooms they are at (a bit per zoom).
#[derive(Default)]
struct LayerTiles {
    tiles: HashMap<(TileId, bool), Arc<TileBody>>,
    zooms: u32,
}

/// Live tiles by layer: a hit and an invalidation look the layer up by `&str` and allocate
/// nothing (invalidation runs on the committer thread for every applied report).
#[derive(Default)]
struct LiveCache {
    layers: HashMap<String, LayerTiles>,
    /// Tiles cached in all layers.
    entries: usize,
    /// Bumped by every invalidation: a tile rendered before one is not cached after it.
    generation: u64,
}

/// Reports counted per second in a ring of [`RATE_SLOTS`] seconds, for a sliding one-minute
/// count (what a dashboard means by "reports per minute": the last 60 s, not the last
/// calendar minute, which reads 0 for the first minute after a quiet one).
struct Rate {
    /// (second, reports in it), indexed by second modulo the ring size.
    seconds: [(u64, u64); RATE_SLOTS],
}

const RATE_SLOTS: usize = 64;

impl Default for Rate {
    fn default() -> Self {
        Rate {
            seconds: [(0, 0); RATE_SLOTS],
        }
    }
}

impl Rate {
    fn add(&mut self, sec: u64, n: u64) {
        let slot = &mut self.seconds[sec as usize % RATE_SLOTS];
        if slot.0 != sec {
            *slot = (sec, 0);
        }
        slot.1 += n;
    }

    /// Reports in the 60 seconds up to and including `sec`.
    fn last_minute(&self, sec: u64) -> u64 {
        self.seconds
            .iter()
            .filter(|(s, _)| *s <= sec && sec - *s < 60)
            .map(|(_, n)| n)
            .sum()
    }
}

/// The live hub: registry, state, committer, stream and live tile cache.
pub struct Hub {
    cfg: LiveConfig,
    registry_file: RegistryFile,
    registry: RwLock<Arc<RegIndex>>,
    reg_stamp: Mutex<Option<SystemTime>>,
    state: RwLock<LiveState>,
    tx: SyncSender<Job>,
    failed: Mutex<Option<String>>,
    /// `failed.is_some()`, readable without the lock on every submission.
    failed_flag: AtomicBool,
    events: tokio::sync::broadcast::Sender<Arc<StreamEvent>>,
    recent: Mutex<VecDeque<Arc<StreamEvent>>>,
    cache: Mutex<LiveCache>,
    rate: Mutex<Rate>,
    snapshot_busy: AtomicBool,
    /// Sequence number covered by the last snapshot on disk.
    snapshot_seq: AtomicU64,
    /// `Removed` records the queue had no room for yet (sent again every second).
    removals: Mutex<Vec<Record>>,
}

/// Seconds since the epoch, now.
pub fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

/// A problem opening the live layer.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// File trouble.
    #[error("live layer: {0}")]
    Io(String),
    /// The registry cannot be read.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
}

fn live_dir(store_dir: &Path) -> PathBuf {
    store_dir.join("live")
}

impl Hub {
    /// Opens the live layer of a store: reads the registry, restores the snapshot, replays the
    /// log after it, and starts the committer thread.
    pub fn open(cfg: LiveConfig) -> Result<Arc<Hub>, LiveError> {
        let dir = live_dir(&cfg.store_dir);
        let wal_dir = dir.join("wal");
        std::fs::create_dir_all(&wal_dir)
            .map_err(|e| LiveError::Io(format!("{}: {e}", wal_dir.display())))?;
        let registry_file = RegistryFile::new(&cfg.store_dir);
        let reg = registry_file.load()?;
        let mut st = LiveState::default();
        let snap_path = dir.join("snapshot.json");
        if let Ok(bytes) = std::fs::read(&snap_path) {
            let snap: Snapshot = serde_json::from_slice(&bytes).map_err(|e| {
                LiveError::Io(format!(
                    "{}: unreadable snapshot ({e}); move it away to rebuild from the log",
                    snap_path.display()
                ))
            })?;
            st.restore(snap, &reg);
        }
        // Devices registered since the snapshot (or all, without one) start as `new`.
        st.sync_registry(&reg);
        // Replay the log after the snapshot.
        let segs = wal::segments(&wal_dir)
            .map_err(|e| LiveError::Io(format!("{}: {e}", wal_dir.display())))?;
        let mut last: Option<(PathBuf, u64)> = None;
        let mut max_seq = st.seq;
        for (i, (_, path)) in segs.iter().enumerate() {
            let next_first = segs.get(i + 1).map(|s| s.0);
            if next_first.is_some_and(|n| n <= st.seq + 1) {
                continue; // wholly covered by the snapshot
            }
            let mut changes = Vec::new();
            let snap_seq = st.seq;
            let valid = wal::read_segment(path, |seq, mut rec| {
                max_seq = max_seq.max(seq);
                if seq <= snap_seq {
                    return;
                }
                let mut derived = Vec::new();
                st.apply(seq, &mut rec, true, &mut || 0, &mut changes, &mut derived);
            })
            .map_err(|e| LiveError::Io(format!("{}: {e}", path.display())))?;
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            if valid < len && next_first.is_some() {
                return Err(LiveError::Io(format!(
                    "{}: damaged at byte {valid} of {len}, before the last segment; \
                     restore it from backup or move it away",
                    path.display()
                )));
            }
            last = Some((path.clone(), valid));
        }
        // A `Removed` record of a device registered again brought it back as `new`; one no
        // longer registered leaves now.
        st.sync_registry(&reg);
        let next_seq = max_seq + 1;
        let wal = Wal::open(&wal_dir, last, next_seq, cfg.segment_bytes)
            .map_err(|e| LiveError::Io(format!("{}: {e}", wal_dir.display())))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.queue.max(1));
        let (events, _) = tokio::sync::broadcast::channel(STREAM_BUFFER);
        let stamp = std::fs::metadata(registry_file.path())
            .and_then(|m| m.modified())
            .ok();
        let hub = Arc::new(Hub {
            cfg,
            registry_file,
            registry: RwLock::new(Arc::new(RegIndex::new(reg))),
            reg_stamp: Mutex::new(stamp),
            state: RwLock::new(st),
            tx,
            failed: Mutex::new(None),
            failed_flag: AtomicBool::new(false),
            events,
            recent: Mutex::new(VecDeque::new()),
            cache: Mutex::new(LiveCache::default()),
            rate: Mutex::new(Rate::default()),
            snapshot_busy: AtomicBool::new(false),
            snapshot_seq: AtomicU64::new(0),
            removals: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&hub);
        std::thread::Builder::new()
            .name("urbis-wal".into())
            .spawn(move || committer(weak, rx, wal, next_seq))
            .map_err(|e| LiveError::Io(format!("cannot start the log thread: {e}")))?;
        hub.write_snapshot();
        Ok(hub)
    }

    /// The settings.
    pub fn config(&self) -> &LiveConfig {
        &self.cfg
    }

    /// Re-reads the registry if its file changed; true if it did. A device that left it
    /// (removed, or removed and registered again with a new secret) is logged as
    /// [`Record::Removed`] and announced on the stream as `removed`.
    pub fn refresh_registry(&self) -> Result<bool, LiveError> {
        let stamp = std::fs::metadata(self.registry_file.path())
            .and_then(|m| m.modified())
            .ok();
        {
            let mut last = lock(&self.reg_stamp);
            if *last == stamp {
                return Ok(false);
            }
            *last = stamp;
        }
        let reg = self.registry_file.load()?;
        let old = self.registry();
        let left: Vec<&String> = old
            .reg
            .devices
            .iter()
            .filter(|(id, e)| {
                reg.devices
                    .get(*id)
                    .is_none_or(|n| !same_hash(&n.secret_sha256, &e.secret_sha256))
            })
            .map(|(id, _)| id)
            .collect();
        let now = now_s();
        let (touched, removed) = {
            let mut st = write_lock(&self.state);
            let removed: Vec<Record> = left
                .iter()
                .filter_map(|id| st.devices.get(id.as_str()))
                .map(|d| Record::Removed {
                    t: now,
                    device: d.id.clone(),
                    layer: d.layer.clone(),
                    pos: d.pos,
                })
                .collect();
            let touched = st.sync_registry(&reg);
            // Registered again: a new device under an old name starts afresh.
            for id in &left {
                st.reset_device(id);
            }
            (touched, removed)
        };
        // Tiles that showed a device where it no longer is: those that left (their removal
        // records carry layer and position) and those that changed layer.
        for (id, pos, layer) in touched {
            if let Some(p) = pos
                && !left.contains(&&id)
            {
                self.invalidate(&layer, p);
            }
        }
        for r in &removed {
            if let Record::Removed {
                layer,
                pos: Some(p),
                ..
            } = r
            {
                self.invalidate(layer, *p);
            }
        }
        *write_lock(&self.registry) = Arc::new(RegIndex::new(reg));
        if !removed.is_empty() {
            lock(&self.removals).extend(removed);
            self.send_removals();
        }
        Ok(true)
    }

    /// Logs the waiting `Removed` records; kept for the next second if the queue is full.
    fn send_removals(&self) {
        let mut waiting = lock(&self.removals);
        if waiting.is_empty() {
            return;
        }
        let items = std::mem::take(&mut *waiting);
        if let Err(SubmitError::Overloaded) = self.submit(items.clone()) {
            *waiting = items;
        }
    }

    /// The registry as last read.
    pub fn registry(&self) -> Arc<RegIndex> {
        Arc::clone(&read_lock(&self.registry))
    }

    /// Checks a secret (device secret or ingest key). For a device secret, `device` (if
    /// given) must be the device it belongs to.
    pub fn authenticate(&self, secret: &str, device: Option<&str>) -> Option<Principal> {
        let reg = self.registry();
        let hash = registry::hash_secret(secret);
        if secret.starts_with("ik_") {
            return reg
                .reg
                .ingest_keys
                .iter()
                .find(|(_, h)| same_hash(h, &hash))
                .map(|(name, _)| Principal::Ingest(name.clone()));
        }
        let id = reg.by_hash.get(&hash)?;
        if device.is_some_and(|d| d != id) {
            return None;
        }
        Some(Principal::Device(id.clone()))
    }

    /// The layer of a registered device.
    pub fn device_layer(&self, id: &str) -> Option<String> {
        self.registry().reg.devices.get(id).map(|e| e.layer.clone())
    }

    /// Checks a device's own secret: `Err(false)` for an unknown device, `Err(true)` for a
    /// wrong secret (one registry look-up, no allocation: the CoAP hot path).
    pub fn check_device(&self, id: &str, secret: &str) -> Result<(), bool> {
        let reg = read_lock(&self.registry);
        let e = reg.reg.devices.get(id).ok_or(false)?;
        if secret.is_empty() || !same_hash(&e.secret_sha256, &registry::hash_secret(secret)) {
            return Err(true);
        }
        Ok(())
    }

    /// True while reports are being acknowledged (no storage failure).
    pub fn is_ready(&self) -> Result<(), String> {
        match &*lock(&self.failed) {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    /// Hands records to the committer; the receiver gets their sequence numbers once they are
    /// durable. Never blocks: a full queue is [`SubmitError::Overloaded`].
    pub fn submit(
        &self,
        items: Vec<Record>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Vec<u64>, SubmitError>>, SubmitError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.submit_with(
            items,
            Box::new(move |r| {
                let _ = reply.send(r);
            }),
        )?;
        Ok(rx)
    }

    /// Like [`Hub::submit`], but the committer thread calls `reply` itself once the records
    /// are durable: for answers that need no async task (CoAP over a plain socket), which
    /// saves a task wake-up per group.
    pub fn submit_with(&self, items: Vec<Record>, reply: Reply) -> Result<(), SubmitError> {
        if self.failed_flag.load(Ordering::Acquire) {
            return Err(SubmitError::Failed(
                self.is_ready().err().unwrap_or_default(),
            ));
        }
        match self.tx.try_send(Job {
            items,
            reply: Some(reply),
        }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SubmitError::Overloaded),
            Err(TrySendError::Disconnected(_)) => {
                Err(SubmitError::Failed("the log thread has stopped".into()))
            }
        }
    }

    /// A report record for a device, received now.
    pub fn report_record(device: &str, r: payload::Report, recv_s: f64) -> Record {
        Record::Report(ReportRec {
            recv_ms: (recv_s * 1000.0) as i64,
            t: r.t,
            pos: r.position,
            late: false,
            device: device.to_string(),
            telemetry: r.telemetry,
        })
    }

    /// Subscribes to the stream; also returns the kept events after `last_id` (for resume)
    /// and whether events were missed (older than what is kept).
    pub fn subscribe(
        &self,
        last_id: Option<u64>,
    ) -> (
        tokio::sync::broadcast::Receiver<Arc<StreamEvent>>,
        Vec<Arc<StreamEvent>>,
        bool,
    ) {
        let recent = lock(&self.recent);
        let rx = self.events.subscribe();
        let Some(last) = last_id else {
            return (rx, Vec::new(), false);
        };
        let missed = match recent.front() {
            Some(e) => e.id > last + 1,
            None => last < read_lock(&self.state).seq,
        };
        let replay = recent.iter().filter(|e| e.id > last).cloned().collect();
        (rx, replay, missed)
    }

    /// Runs `f` on the state, read-only.
    pub fn with_state<T>(&self, f: impl FnOnce(&LiveState) -> T) -> T {
        f(&read_lock(&self.state))
    }

    /// Names of the live layers (every layer with a registered device).
    pub fn layer_names(&self) -> Vec<String> {
        self.registry().layers.clone()
    }

    /// True if `name` is a live layer (no allocation: asked on every tile request).
    pub fn is_live_layer(&self, name: &str) -> bool {
        read_lock(&self.registry)
            .layers
            .binary_search_by(|l| l.as_str().cmp(name))
            .is_ok()
    }

    /// Reports acknowledged in the last 60 seconds, and in all.
    pub fn report_rate(&self) -> (u64, u64) {
        let total = read_lock(&self.state).reports_total;
        (lock(&self.rate).last_minute(now_s() as u64), total)
    }

    fn count_reports(&self, n: u64) {
        lock(&self.rate).add(now_s() as u64, n);
    }

    /// A live tile (one layer), from the cache or rendered.
    pub fn tile(&self, layer: &str, tile: TileId, gzip: bool) -> Arc<TileBody> {
        let generation = {
            let c = lock(&self.cache);
            if let Some(b) = c.layers.get(layer).and_then(|l| l.tiles.get(&(tile, gzip))) {
                return Arc::clone(b);
            }
            c.generation
        };
        let encoded = {
            let st = read_lock(&self.state);
            tiles::render(&st, layer, tile, self.cfg.buffer)
        };
        let body = Arc::new(TileBody::new(
            encoded.bytes,
            gzip,
            encoded.features,
            encoded.dropped,
        ));
        let mut c = lock(&self.cache);
        if c.generation != generation {
            return body; // the state changed while rendering: serve, but do not keep
        }
        if c.entries >= MAX_CACHED_TILES {
            c.layers.clear();
            c.entries = 0;
        }
        let l = c.layers.entry(layer.to_string()).or_default();
        l.zooms |= 1 << tile.z.min(31);
        let added = l.tiles.insert((tile, gzip), Arc::clone(&body)).is_none();
        c.entries += usize::from(added);
        body
    }

    /// Drops the cached tiles of `layer` that show position `pos` (with the buffer), at every
    /// zoom that has cached tiles: only those tiles change when a device there does.
    fn invalidate(&self, layer: &str, pos: [f64; 2]) {
        let g = lonlat_to_grid(pos[0], pos[1]);
        let mut c = lock(&self.cache);
        c.generation += 1;
        let Some(l) = c.layers.get_mut(layer) else {
            return;
        };
        let mut removed = 0;
        for z in (0..32u8).filter(|z| l.zooms & (1 << z) != 0) {
            for t in tiles::tiles_showing(g, z, self.cfg.buffer) {
                for gz in [false, true] {
                    removed += usize::from(l.tiles.remove(&(t, gz)).is_some());
                }
            }
        }
        c.entries -= removed;
    }

    /// Writes the snapshot (temp file, fsync, rename).
    fn write_snapshot(&self) {
        let snap = read_lock(&self.state).snapshot();
        self.persist_snapshot(&snap);
    }

    /// Takes a snapshot and writes it on a thread of its own, so that the committer (and so
    /// every acknowledgement) does not wait for the serialisation and the two fsyncs; skipped
    /// while the previous one is still being written.
    fn write_snapshot_in_background(self: &Arc<Self>) {
        if self.snapshot_busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let snap = read_lock(&self.state).snapshot();
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("urbis-snapshot".into())
            .spawn(move || {
                me.persist_snapshot(&snap);
                me.snapshot_busy.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.snapshot_busy.store(false, Ordering::Release);
        }
    }

    fn persist_snapshot(&self, snap: &Snapshot) {
        let dir = live_dir(&self.cfg.store_dir);
        let tmp = dir.join("snapshot.json.tmp");
        let result = (|| -> std::io::Result<()> {
            let bytes = serde_json::to_vec(&snap)?;
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.join("snapshot.json"))?;
            std::fs::File::open(&dir)?.sync_all()?;
            self.snapshot_seq.fetch_max(snap.seq, Ordering::AcqRel);
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot write the live snapshot; the log still has everything");
        }
    }

    /// Deletes log segments older than the retention period that a snapshot covers.
    fn apply_retention(&self) {
        let wal_dir = live_dir(&self.cfg.store_dir).join("wal");
        let snap_seq = self.snapshot_seq.load(Ordering::Acquire);
        let Ok(segs) = wal::segments(&wal_dir) else {
            return;
        };
        let cutoff = SystemTime::now() - Duration::from_secs(self.cfg.retention_s);
        for w in segs.windows(2) {
            let (_, path) = &w[0];
            let next_first = w[1].0;
            let old = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m < cutoff);
            if old && next_first <= snap_seq + 1 {
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::warn!(error = %e, path = %path.display(), "cannot remove an expired log segment");
                } else {
                    tracing::info!(path = %path.display(), "removed an expired log segment");
                }
            }
        }
    }

    /// Position history of a device between device times `from` and `to` (seconds), oldest
    /// first, at most `limit` fixes; late reports are included and flagged. It starts after
    /// the device's last removal: a name registered again is a new device.
    pub fn track(&self, device: &str, from: f64, to: f64, limit: usize) -> Vec<ReportRec> {
        let wal_dir = live_dir(&self.cfg.store_dir).join("wal");
        let Ok(segs) = wal::segments(&wal_dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (_, path) in segs {
            // A segment last written before `from` (less the clock skew allowed) cannot hold a
            // fix at or after `from`.
            let skip = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
                .is_some_and(|m| m.as_secs_f64() + payload::MAX_CLOCK_AHEAD < from);
            if skip {
                continue;
            }
            let _ = wal::read_segment(&path, |_, rec| {
                if let Record::Removed { device: d, .. } = &rec
                    && d == device
                {
                    out.clear();
                } else if let Record::Report(r) = rec
                    && r.device == device
                    && r.pos.is_some()
                    && r.t >= from
                    && r.t <= to
                {
                    out.push(r);
                }
            });
        }
        out.sort_by(|a, b| a.t.total_cmp(&b.t));
        out.truncate(limit);
        out
    }

    /// Checks device states against the clock and logs the changes (called every second).
    pub fn tick_states(&self) {
        self.send_removals();
        let now = now_s();
        let changes: Vec<Record> = {
            let st = read_lock(&self.state);
            st.devices
                .values()
                .filter_map(|d| {
                    let seen = d.last_seen?;
                    let s = DevState::from_age(now - seen, d.interval_s);
                    (s != d.state).then(|| Record::State {
                        t: now,
                        state: s.code(),
                        device: d.id.clone(),
                    })
                })
                .collect()
        };
        if !changes.is_empty() {
            // A full queue just means the change is logged on a later tick.
            let _ = self.submit(changes);
        }
    }

    /// JSON of one device.
    pub fn device_json(d: &state::Device) -> serde_json::Value {
        json!({
            "id": d.id,
            "layer": d.layer,
            "kind": d.kind,
            "interval_s": d.interval_s,
            "state": d.state,
            "position": d.pos,
            "t": d.t,
            "last_seen": d.last_seen,
            "telemetry": d.telemetry,
            "reports": d.reports,
            "late_reports": d.late,
        })
    }

    /// Turns applied changes into stream events and tile invalidations.
    fn publish(&self, changes: Vec<Change>) {
        let mut out = Vec::with_capacity(changes.len());
        {
            let st = read_lock(&self.state);
            for c in changes {
                match c {
                    Change::Moved {
                        device,
                        from,
                        to,
                        t,
                        seq,
                    } => {
                        let Some(d) = st.devices.get(&device) else {
                            continue;
                        };
                        if let Some(f) = from {
                            self.invalidate(&d.layer, f);
                        }
                        // The new position's tiles change even if it did not move: the
                        // state and telemetry are drawn too.
                        if let Some(p) = to {
                            self.invalidate(&d.layer, p);
                        }
                        let mut data = Self::device_json(d);
                        data["position"] = json!(to);
                        data["t"] = json!(t);
                        out.push(StreamEvent {
                            id: seq,
                            event: "position",
                            layer: Some(d.layer.clone()),
                            pos: to,
                            data: data.to_string(),
                        });
                    }
                    Change::State { device, seq } => {
                        let Some(d) = st.devices.get(&device) else {
                            continue;
                        };
                        if let Some(p) = d.pos {
                            self.invalidate(&d.layer, p);
                        }
                        out.push(StreamEvent {
                            id: seq,
                            event: "state",
                            layer: Some(d.layer.clone()),
                            pos: d.pos,
                            data: json!({"id": d.id, "layer": d.layer, "state": d.state, "position": d.pos}).to_string(),
                        });
                    }
                    Change::Fence {
                        fence,
                        name,
                        kind,
                        device,
                        layer,
                        pos,
                        t,
                        seq,
                    } => out.push(StreamEvent {
                        id: seq,
                        event: "geofence",
                        layer: Some(layer.clone()),
                        pos: Some(pos),
                        data: json!({"fence": fence, "name": name, "kind": kind, "device": device, "layer": layer, "position": pos, "t": t}).to_string(),
                    }),
                    Change::Removed {
                        device,
                        layer,
                        pos,
                        seq,
                    } => {
                        // Its last device gone, the layer has left /catalog too: a client
                        // drops it rather than asking for its tiles.
                        let layer_gone = read_lock(&self.registry)
                            .layers
                            .binary_search(&layer)
                            .is_err();
                        out.push(StreamEvent {
                            id: seq,
                            event: "removed",
                            layer: Some(layer.clone()),
                            pos,
                            data: json!({"id": device, "layer": layer, "position": pos, "layer_gone": layer_gone})
                                .to_string(),
                        });
                    }
                    Change::Fences { seq } => out.push(StreamEvent {
                        id: seq,
                        event: "geofences",
                        layer: None,
                        pos: None,
                        data: json!({"fences": st.fence_set.fences().len()}).to_string(),
                    }),
                }
            }
        }
        let mut recent = lock(&self.recent);
        for e in out {
            let e = Arc::new(e);
            recent.push_back(Arc::clone(&e));
            if recent.len() > RECENT_EVENTS {
                recent.pop_front();
            }
            // No subscriber is not an error.
            let _ = self.events.send(e);
        }
    }

    /// Takes the hub out of service after a log failure.
    fn fail(&self, why: String) {
        tracing::error!(error = %why, "write-ahead log failure: no more reports are acknowledged");
        *lock(&self.failed) = Some(why);
        self.failed_flag.store(true, Ordering::Release);
    }
}

/// The committer: takes every waiting job, applies it, logs it with one fsync, then
/// acknowledges and publishes.
fn committer(hub: std::sync::Weak<Hub>, rx: Receiver<Job>, mut wal: Wal, mut next_seq: u64) {
    let mut last_snapshot = Instant::now();
    let mut last_retention: Option<Instant> = None;
    let mut dirty = false;
    let mut frames = Vec::new();
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(j) => Some(j),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let Some(hub) = hub.upgrade() else { break };
        if let Some(first) = first {
            let mut jobs = vec![first];
            let mut n = jobs[0].items.len();
            while n < MAX_GROUP {
                match rx.try_recv() {
                    Ok(j) => {
                        n += j.items.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            if let Err(why) = hub.is_ready() {
                for j in jobs {
                    if let Some(r) = j.reply {
                        r(Err(SubmitError::Failed(why.clone())));
                    }
                }
                continue;
            }
            frames.clear();
            let first_seq = next_seq;
            let counter = std::cell::Cell::new(next_seq);
            let mut changes = Vec::new();
            let mut seqs: Vec<Vec<u64>> = Vec::with_capacity(jobs.len());
            let mut reports = 0u64;
            {
                let mut st = write_lock(&hub.state);
                let mut derived = Vec::new();
                for job in &mut jobs {
                    let mut s = Vec::with_capacity(job.items.len());
                    for rec in &mut job.items {
                        let seq = counter.get();
                        counter.set(seq + 1);
                        if matches!(rec, Record::Report(_)) {
                            reports += 1;
                        }
                        derived.clear();
                        st.apply(
                            seq,
                            rec,
                            false,
                            &mut || {
                                let x = counter.get();
                                counter.set(x + 1);
                                x
                            },
                            &mut changes,
                            &mut derived,
                        );
                        rec.encode(seq, &mut frames);
                        for (ds, d) in &derived {
                            d.encode(*ds, &mut frames);
                        }
                        s.push(seq);
                    }
                    seqs.push(s);
                }
            }
            next_seq = counter.get();
            match wal.append_durable(&frames, first_seq) {
                Ok(()) => {
                    dirty = true;
                    hub.count_reports(reports);
                    hub.publish(changes);
                    for (j, s) in jobs.into_iter().zip(seqs) {
                        if let Some(r) = j.reply {
                            r(Ok(s));
                        }
                    }
                }
                Err(e) => {
                    let why = format!("cannot write the log: {e}");
                    hub.fail(why.clone());
                    for j in jobs {
                        if let Some(r) = j.reply {
                            r(Err(SubmitError::Failed(why.clone())));
                        }
                    }
                }
            }
        }
        if dirty && last_snapshot.elapsed() >= SNAPSHOT_EVERY {
            hub.write_snapshot_in_background();
            last_snapshot = Instant::now();
            dirty = false;
        }
        if last_retention.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            hub.apply_retention();
            last_retention = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rate;

    #[test]
    fn the_report_rate_is_a_sliding_minute() {
        let mut r = Rate::default();
        r.add(1000, 5);
        r.add(1000, 2);
        r.add(1030, 10);
        assert_eq!(r.last_minute(1030), 17);
        assert_eq!(r.last_minute(1059), 17);
        assert_eq!(r.last_minute(1060), 10, "second 1000 left the window");
        assert_eq!(r.last_minute(1089), 10);
        assert_eq!(r.last_minute(1090), 0);
        // A slot reused 64 s later starts from zero.
        r.add(1064, 1);
        assert_eq!(r.last_minute(1064), 11);
    }
}
