//! The hub: the live room's front door. It opens the live data of a store (registry,
//! snapshot, log replay) and starts the committer; everything else reaches devices through
//! it: [`Hub::admit`] and [`Hub::commit`] for reports, [`Hub::put_fence`] and
//! [`Hub::delete_fence`] for geofences, and read views ([`Hub::device`], [`Hub::devices`],
//! [`Hub::track`], [`Hub::subscribe`], [`Hub::layer_info`], [`Hub::tile`]) that hand out
//! copies, never the state itself.

use super::committer::{self, Job};
use super::fence::Fence;
use super::registry::{Digest16, RegIndex, RegistryDb, digest16, parse_hash};
use super::shared::{Shared, SharedLog};
use super::snapshot;
use super::state::{Change, DevState, Device, LiveState};
use super::stream::{self, Rate, Stream, StreamEvent, Subscription};
use super::tiles::{self, TileCache};
use super::wal::{self, Record, Wal};
use super::{LiveConfig, LiveError, lock, now_s, payload, read_lock, write_lock};
use crate::tile::{LayerView, TileBody, TileId};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// Where a server in cluster mode keeps its copy of the shared log, under the store.
const CLUSTER_DIR: &str = "live-cluster";

/// The live hub: registry, state, committer, stream and live tile cache.
pub struct Hub {
    pub(super) cfg: LiveConfig,
    /// `STORE/live/hub.lock`, locked while this hub is open: one process writes the log.
    _lock: std::fs::File,
    /// The registry's database connection; held while reading changes.
    pub(super) reg_db: Mutex<RegistryDb>,
    /// The registry as last read; changed in place by [`Hub::refresh_registry`].
    registry: RwLock<RegIndex>,
    pub(super) state: RwLock<LiveState>,
    /// Held by the committer from planning a group to applying it, and by a registry
    /// refresh while it changes the state: the two never interleave.
    pub(super) commit_lock: Mutex<()>,
    pub(super) tx: SyncSender<Job>,
    pub(super) failed: Mutex<Option<String>>,
    /// `failed.is_some()`, readable without the lock on every submission.
    pub(super) failed_flag: AtomicBool,
    stream: Stream,
    tiles: Mutex<TileCache>,
    rate: Mutex<Rate>,
    pub(super) snapshot_busy: AtomicBool,
    /// Whole segments older than this many seconds are swept (see `LiveConfig`).
    pub(super) keep_segments_s: AtomicU64,
    /// Sequence number covered by the last snapshot on disk.
    pub(super) snapshot_seq: AtomicU64,
    /// The operations room's ears, once set.
    observer: std::sync::OnceLock<std::sync::Arc<dyn super::LiveObserver>>,
    /// Cluster mode: the shared log and what this hub keeps of it.
    pub(super) shared: Option<Shared>,
    /// This hub, for callbacks that outlive a call.
    pub(super) me: std::sync::Weak<Hub>,
}

/// One fix of a device's history.
#[derive(Debug, Clone, PartialEq)]
pub struct Fix {
    /// Device time, seconds since the epoch.
    pub t: f64,
    /// `[lon, lat]`.
    pub pos: Option<[f64; 2]>,
    /// Older than the device's last fix when it arrived: history only.
    pub late: bool,
    /// Telemetry sent with it.
    pub telemetry: Vec<(String, f64)>,
}

/// Which devices [`Hub::devices`] lists.
pub struct DeviceQuery<'a> {
    /// Only this live layer.
    pub layer: Option<&'a str>,
    /// Only devices in this state (`live`, `lost`, ...).
    pub state: Option<&'a str>,
    /// Only devices it keeps (what the caller may see).
    pub visible: &'a mut dyn FnMut(&Device) -> bool,
    /// Skip this many (sorted by id).
    pub offset: usize,
    /// At most this many.
    pub limit: usize,
}

/// Devices and counts, as `/devices` shows them.
#[derive(Debug, Clone)]
pub struct DeviceList {
    /// The page of devices that passed the filter, by id.
    pub devices: Vec<Device>,
    /// How many passed the filter in all.
    pub total: usize,
    /// How many of all that passed are in each state.
    pub states: BTreeMap<&'static str, u64>,
    /// Open geofence alarms (a device inside a fence), all layers.
    pub open_alarms: usize,
    /// Reports acknowledged in the last 60 seconds.
    pub reports_last_minute: u64,
    /// Reports applied in all.
    pub reports_total: u64,
}

/// Live figures at one moment ([`Hub::pulse`]).
#[derive(Debug, Clone, Default)]
pub struct Pulse {
    /// Devices by layer and state.
    pub states: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// The latest server time a device of each layer reported (layers whose devices never
    /// reported are absent).
    pub last_report: BTreeMap<String, f64>,
    /// When each open geofence alarm began (device time).
    pub alarms_since: Vec<f64>,
}

/// What a catalog or TileJSON says of a live layer.
#[derive(Debug, Clone)]
pub struct LiveLayerInfo {
    /// Name.
    pub name: String,
    /// Registered devices on it.
    pub devices: usize,
    /// The extent `[w, s, e, n]` of its devices' positions, if any has one.
    pub bounds: Option<[f64; 4]>,
    /// Properties of its features, with TileJSON types.
    pub fields: &'static [(&'static str, &'static str)],
    /// Lowest zoom served.
    pub minzoom: u8,
    /// Highest zoom advertised.
    pub maxzoom: u8,
    /// Zooms below this are clustered.
    pub clustered_below: u8,
}

impl Hub {
    /// Opens the live layer of a store: reads the registry, restores the snapshot, replays the
    /// log after it, and starts the committer thread.
    pub fn open(cfg: LiveConfig) -> Result<Arc<Hub>, LiveError> {
        Self::open_with(cfg, None)
    }

    /// Opens the live data of a store, or (with `log`) the local copy of a cluster's shared
    /// log, which is emptied first (see [`Hub::open_shared`]).
    pub(super) fn open_with(
        cfg: LiveConfig,
        log: Option<Arc<dyn SharedLog>>,
    ) -> Result<Arc<Hub>, LiveError> {
        let dir = cfg
            .store_dir
            .join(if log.is_some() { CLUSTER_DIR } else { "live" });
        let wal_dir = dir.join("wal");
        std::fs::create_dir_all(&wal_dir)
            .map_err(|e| LiveError::Io(format!("{}: {e}", wal_dir.display())))?;
        let lock_path = dir.join("hub.lock");
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| LiveError::Io(format!("{}: {e}", lock_path.display())))?;
        if lock_file.try_lock().is_err() {
            return Err(LiveError::Io(format!(
                "{}: another urbis process (a running server?) has this store's live data open; \
                 stop it first, or ask the server (POST /admin/retention/run)",
                lock_path.display()
            )));
        }
        if log.is_some() {
            // Cluster mode: the local copy of the shared log is rebuilt from it, emptied here
            // (under the lock: never from under another process).
            for p in [wal_dir.clone(), dir.join("snapshot.json")] {
                let gone = if p.is_dir() {
                    std::fs::remove_dir_all(&p).and_then(|()| std::fs::create_dir_all(&p))
                } else {
                    std::fs::remove_file(&p)
                };
                if let Err(e) = gone
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(LiveError::Io(format!("{}: {e}", p.display())));
                }
            }
        }
        let reg_db = RegistryDb::open(&cfg.store_dir)?;
        let keep_segments_s = cfg.keep_segments_s.max(cfg.retention_s);
        let reg = reg_db.load()?;
        let mut st = LiveState::default();
        snapshot::restore(&dir.join("snapshot.json"), &mut st, &reg).map_err(LiveError::Io)?;
        let snap_seq_at_open = st.seq;
        // Devices registered since the snapshot (or all, without one) start as `new`.
        st.sync_registry(&reg, None);
        // Replay the log after the snapshot, through the committer's own `apply`.
        let segs = wal::segments(&wal_dir)
            .map_err(|e| LiveError::Io(format!("{}: {e}", wal_dir.display())))?;
        let mut last: Option<(PathBuf, u64)> = None;
        let mut max_seq = st.seq;
        let mut changes: Vec<Change> = Vec::new();
        for (i, (_, path)) in segs.iter().enumerate() {
            let next_first = segs.get(i + 1).map(|s| s.0);
            if next_first.is_some_and(|n| n <= st.seq + 1) {
                continue; // wholly covered by the snapshot
            }
            let snap_seq = st.seq;
            let valid = wal::read_segment(path, |seq, rec| {
                max_seq = max_seq.max(seq);
                if seq > snap_seq {
                    st.apply(seq, &rec, &mut changes);
                    changes.clear();
                }
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
        st.sync_registry(&reg, None);
        let next_seq = max_seq + 1;
        let wal = Wal::open(&wal_dir, last, next_seq, cfg.segment_bytes)
            .map_err(|e| LiveError::Io(format!("{}: {e}", wal_dir.display())))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.queue.max(1));
        let hub = Arc::new_cyclic(|me| Hub {
            shared: log.map(Shared::new),
            me: me.clone(),
            cfg,
            _lock: lock_file,
            reg_db: Mutex::new(reg_db),
            registry: RwLock::new(reg),
            state: RwLock::new(st),
            commit_lock: Mutex::new(()),
            tx,
            failed: Mutex::new(None),
            failed_flag: AtomicBool::new(false),
            stream: Stream::new(max_seq),
            tiles: Mutex::new(TileCache::default()),
            rate: Mutex::new(Rate::default()),
            snapshot_busy: AtomicBool::new(false),
            keep_segments_s: AtomicU64::new(keep_segments_s),
            // The snapshot on disk covers what it was read with.
            snapshot_seq: AtomicU64::new(snap_seq_at_open),
            observer: std::sync::OnceLock::new(),
        });
        let weak = Arc::downgrade(&hub);
        std::thread::Builder::new()
            .name("urbis-wal".into())
            .spawn(move || committer::run(weak, rx, wal, next_seq))
            .map_err(|e| LiveError::Io(format!("cannot start the log thread: {e}")))?;
        // The replayed log folded into a snapshot, so the next start replays less (nothing to
        // write when the log added nothing to the snapshot read).
        if max_seq > snap_seq_at_open {
            hub.write_snapshot();
        }
        Ok(hub)
    }

    /// Keeps whole log segments for at least `secs` (the longest retention of a live layer,
    /// when it changes).
    pub fn keep_segments_for(&self, secs: u64) {
        self.keep_segments_s
            .store(secs.max(self.cfg.retention_s), Ordering::Release);
    }

    /// The settings.
    pub fn config(&self) -> &LiveConfig {
        &self.cfg
    }

    /// The directory of the device log and snapshots (`STORE/live`).
    pub fn live_dir(&self) -> PathBuf {
        self.cfg.store_dir.join(if self.shared.is_some() {
            CLUSTER_DIR
        } else {
            "live"
        })
    }

    /// Reads the registry changes made since the revision held (by the CLI, the admin API or
    /// another process): only the rows changed, never the whole registry; true if there were
    /// any. Devices that left it (removed, or removed and registered again with a new secret)
    /// are logged as removed and announced on the stream as `removed`; a name registered
    /// again starts afresh. If the queue has no room for the removals, nothing changes and the
    /// next call tries again.
    pub fn refresh_registry(&self) -> Result<bool, LiveError> {
        let db = lock(&self.reg_db);
        let have = read_lock(&self.registry).rev();
        if db.rev()? == have {
            return Ok(false);
        }
        let ch = db.changes_since(have)?;
        let ids: Vec<String> = ch
            .upserts
            .iter()
            .map(|(id, _)| id.clone())
            .chain(ch.gone.iter().cloned())
            .collect();
        let old = read_lock(&self.registry).secrets_of(&ids);
        let new: std::collections::HashMap<&str, Digest16> = ch
            .upserts
            .iter()
            .map(|(id, e)| {
                (
                    id.as_str(),
                    digest16(&parse_hash(&e.secret_sha256).unwrap_or([0; 32])),
                )
            })
            .collect();
        let left: Vec<String> = old
            .iter()
            .filter(|(id, s)| new.get(id.as_str()) != Some(*s))
            .map(|(id, _)| id.clone())
            .collect();
        drop(new);
        // The committer waits: what it plans against is what it applies to.
        let _commit = lock(&self.commit_lock);
        let now = now_s();
        let removed: Vec<Record> = {
            let st = read_lock(&self.state);
            left.iter()
                .filter_map(|id| st.devices.get(id.as_str()))
                .map(|d| Record::Removed {
                    t: now,
                    device: d.id.to_string(),
                    layer: d.layer.to_string(),
                    pos: d.pos,
                })
                .collect()
        };
        // Queued before the new registry admits anything: a name registered again starts
        // afresh (when this record applies) before its first new report.
        if !removed.is_empty() {
            match self.submit(removed, None) {
                Ok(()) | Err(LiveError::Storage(_)) => {}
                Err(_) => return Ok(false),
            }
        }
        let changed = write_lock(&self.registry).apply(ch);
        let touched = {
            // State before registry, as the committer's publishing takes them.
            let mut st = write_lock(&self.state);
            st.sync_registry(&read_lock(&self.registry), Some(&changed))
        };
        // Tiles that showed a device where it no longer is because it changed layer (those
        // that left are redrawn when their removal applies).
        {
            let mut cache = lock(&self.tiles);
            for (id, pos, layer) in touched {
                if let Some(p) = pos
                    && !left.contains(&id)
                {
                    cache.invalidate(&layer, p, self.cfg.buffer);
                }
            }
        }
        Ok(true)
    }

    /// The registry as last read.
    pub(super) fn registry(&self) -> std::sync::RwLockReadGuard<'_, RegIndex> {
        read_lock(&self.registry)
    }

    /// True while reports are being acknowledged (no storage failure; in cluster mode, the
    /// shared log reachable and this server keeping up with it); else why not.
    pub fn is_ready(&self) -> Result<(), String> {
        self.log_ok()?;
        match &self.shared {
            Some(sh) => sh.log.ready(),
            None => Ok(()),
        }
    }

    /// True unless the local log failed.
    pub(super) fn log_ok(&self) -> Result<(), String> {
        if !self.failed_flag.load(Ordering::Acquire) {
            return Ok(());
        }
        match &*lock(&self.failed) {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    /// Sets who is told of ingest outcomes, log syncs, stream lag and geofence events (once;
    /// later calls are ignored).
    pub fn observe(&self, observer: std::sync::Arc<dyn super::LiveObserver>) {
        let _ = self.observer.set(observer);
    }

    /// The observer, if one is set.
    pub fn observer(&self) -> Option<&dyn super::LiveObserver> {
        self.observer.get().map(|o| o.as_ref())
    }

    /// Notes the outcome of payloads over `protocol` (see [`super::LiveObserver::ingest`]).
    pub fn note_ingest(
        &self,
        protocol: &'static str,
        outcome: &'static str,
        payloads: u64,
        records: u64,
    ) {
        if let Some(o) = self.observer() {
            o.ingest(protocol, outcome, payloads, records);
        }
    }

    /// Clients of the stream now.
    pub fn stream_clients(&self) -> usize {
        self.stream.clients()
    }

    /// The figures the alert rules and the operation report watch, in one pass under the
    /// state's read lock.
    pub fn pulse(&self) -> Pulse {
        let st = read_lock(&self.state);
        // Counted under borrowed layer names (no allocation per device: a million devices
        // are counted in milliseconds), owned once per layer at the end.
        let mut states: std::collections::HashMap<&str, BTreeMap<&'static str, u64>> =
            std::collections::HashMap::new();
        let mut last: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
        for d in st.devices.values() {
            *states
                .entry(&d.layer)
                .or_default()
                .entry(d.state.as_str())
                .or_default() += 1;
            if let Some(t) = d.last_seen {
                let l = last.entry(&d.layer).or_insert(t);
                *l = l.max(t);
            }
        }
        Pulse {
            states: states
                .into_iter()
                .map(|(l, s)| (l.to_string(), s))
                .collect(),
            last_report: last.into_iter().map(|(l, t)| (l.to_string(), t)).collect(),
            alarms_since: st.inside.values().copied().collect(),
        }
    }

    /// Every device with a position: where it is and its state (for the report's map).
    pub fn positions(&self) -> Vec<([f64; 2], String)> {
        let st = read_lock(&self.state);
        st.devices
            .values()
            .filter_map(|d| Some((d.pos?, d.state.as_str().to_string())))
            .collect()
    }

    /// Writes a snapshot now, on this thread (at shutdown: the next start replays nothing,
    /// and `urbis report` maps the last positions).
    pub fn snapshot_now(&self) {
        // Not while the committer's own snapshot is being written (it is as recent).
        if self.snapshot_busy.swap(true, Ordering::AcqRel) {
            return;
        }
        self.write_snapshot();
        self.snapshot_busy.store(false, Ordering::Release);
    }

    /// Sends an `alert` event to the stream's subscribers (of `layer`'s events when given, to
    /// every subscriber otherwise). It is not in the device log: its id is the last applied
    /// sequence number, which the stream does not send for it (ids stay unique).
    pub fn publish_alert(&self, layer: Option<String>, data: String) {
        let id = read_lock(&self.state).seq;
        self.stream.send(vec![StreamEvent {
            id,
            event: "alert",
            layer,
            pos: None,
            data,
        }]);
    }

    /// Subscribes to the stream; `last_id` is the last event the client has (for resume).
    pub fn subscribe(&self, last_id: Option<u64>) -> Subscription {
        self.stream.subscribe(last_id)
    }

    /// One device, as it is now (the registry is re-read first if it changed).
    pub fn device(&self, id: &str) -> Option<Device> {
        let _ = self.refresh_registry();
        read_lock(&self.state).devices.get(id).cloned()
    }

    /// The devices of `q.layer` (all, without) in `q.state` (any, without) that `q.visible`
    /// keeps, sorted by id, a page of them (`q.offset`, `q.limit`) copied, with the number
    /// and the counts by state of all of them, open alarms and report rates. Only the page is
    /// copied: a million devices are counted, not cloned.
    pub fn devices(&self, q: DeviceQuery<'_>) -> DeviceList {
        let _ = self.refresh_registry();
        let st = read_lock(&self.state);
        let mut matching: Vec<&Device> = st
            .devices
            .values()
            .filter(|d| q.layer.is_none_or(|l| l == &*d.layer))
            .filter(|d| q.state.is_none_or(|x| x == d.state.as_str()))
            .filter(|d| (q.visible)(d))
            .collect();
        let mut states = BTreeMap::new();
        for d in &matching {
            *states.entry(d.state.as_str()).or_default() += 1;
        }
        let total = matching.len();
        let page_end = q.offset.saturating_add(q.limit).min(total);
        let devices = if q.offset < total {
            if page_end < total {
                matching.select_nth_unstable_by(page_end, |a, b| a.id.cmp(&b.id));
                matching.truncate(page_end);
            }
            matching.sort_unstable_by(|a, b| a.id.cmp(&b.id));
            matching[q.offset..].iter().map(|d| (*d).clone()).collect()
        } else {
            Vec::new()
        };
        DeviceList {
            devices,
            total,
            states,
            open_alarms: st.inside.len(),
            reports_last_minute: lock(&self.rate).last_minute(now_s() as u64),
            reports_total: st.reports_total,
        }
    }

    /// Calls `f` with each device of live layer `layer`, under the state's read lock (keep it
    /// short), without copying them.
    pub fn for_each_device(&self, layer: &str, mut f: impl FnMut(&Device)) {
        let st = read_lock(&self.state);
        for d in st.devices.values().filter(|d| &*d.layer == layer) {
            f(d);
        }
    }

    /// Position history of a device between device times `from` and `to` (seconds), oldest
    /// first, at most `limit` fixes; late reports are included and flagged. It starts after
    /// the device's last removal: a name registered again is a new device. Reads the log
    /// files: call it off the async threads.
    pub fn track(
        &self,
        device: &str,
        from: f64,
        to: f64,
        limit: usize,
    ) -> Result<Vec<Fix>, LiveError> {
        if !self.registry().has_device(device) {
            return Err(LiveError::UnknownDevice(device.to_string()));
        }
        let segs = wal::segments(&self.live_dir().join("wal"))
            .map_err(|e| LiveError::Io(e.to_string()))?;
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
            let _ = wal::read_segment(&path, |_, rec| match rec {
                Record::Removed { device: d, .. } if d == device => out.clear(),
                Record::Report(r)
                    if r.device == device && r.pos.is_some() && r.t >= from && r.t <= to =>
                {
                    out.push(Fix {
                        t: r.t,
                        pos: r.pos,
                        late: r.late,
                        telemetry: r.telemetry,
                    })
                }
                _ => {}
            });
        }
        out.sort_by(|a, b| a.t.total_cmp(&b.t));
        out.truncate(limit);
        Ok(out)
    }

    /// The geofences, sorted by id.
    pub fn fences(&self) -> Vec<Fence> {
        read_lock(&self.state).fence_set.fences().to_vec()
    }

    /// One geofence.
    pub fn fence(&self, id: &str) -> Option<Fence> {
        read_lock(&self.state).fence_set.get(id).cloned()
    }

    /// Creates or replaces a geofence from GeoJSON (see [`Fence::from_geojson`]); returns it
    /// once durable.
    pub async fn put_fence(&self, geojson: &serde_json::Value) -> Result<Fence, LiveError> {
        let fence = Fence::from_geojson(geojson, now_s()).map_err(LiveError::BadFence)?;
        let text = serde_json::to_string(&fence).map_err(|e| LiveError::BadFence(e.to_string()))?;
        self.commit(super::Batch {
            records: vec![Record::FencePut(text)],
        })
        .await?;
        Ok(fence)
    }

    /// Deletes a geofence, once durable.
    pub async fn delete_fence(&self, id: &str) -> Result<(), LiveError> {
        if self.fence(id).is_none() {
            return Err(LiveError::UnknownFence(id.to_string()));
        }
        self.commit(super::Batch {
            records: vec![Record::FenceDel(id.to_string())],
        })
        .await
        .map(|_| ())
    }

    /// Names of the live layers (every layer with a registered device).
    pub fn layer_names(&self) -> Vec<String> {
        self.registry().layers().to_vec()
    }

    /// True if `name` is a live layer (no allocation: asked on every tile request).
    pub fn is_live_layer(&self, name: &str) -> bool {
        read_lock(&self.registry).is_layer(name)
    }

    /// What a catalog says of live layer `name`, if it is one.
    pub fn layer_info(&self, name: &str) -> Option<LiveLayerInfo> {
        if !self.is_live_layer(name) {
            return None;
        }
        let st = read_lock(&self.state);
        let mut devices = 0;
        let mut bounds: Option<[f64; 4]> = None;
        for d in st.devices.values().filter(|d| &*d.layer == name) {
            devices += 1;
            if let Some(p) = d.pos {
                let b = bounds.get_or_insert([p[0], p[1], p[0], p[1]]);
                *b = [
                    b[0].min(p[0]),
                    b[1].min(p[1]),
                    b[2].max(p[0]),
                    b[3].max(p[1]),
                ];
            }
        }
        Some(LiveLayerInfo {
            name: name.to_string(),
            devices,
            bounds,
            fields: &tiles::FIELDS,
            minzoom: 0,
            maxzoom: tiles::LIVE_MAXZOOM,
            clustered_below: tiles::CLUSTER_BELOW,
        })
    }

    /// A live layer's tile within `budget` raw bytes with the properties `view` keeps, from
    /// the cache or rendered (with the buffer the hub was opened with).
    pub fn tile(
        &self,
        layer: &str,
        tile: TileId,
        budget: usize,
        gzip: bool,
        view: &LayerView,
    ) -> Arc<TileBody> {
        let key = (tile, gzip, budget, view.clone());
        let generation = match lock(&self.tiles).get(layer, &key) {
            Ok(hit) => return hit,
            Err(generation) => generation,
        };
        let encoded = {
            let st = read_lock(&self.state);
            tiles::render(&st, layer, tile, self.cfg.buffer, budget, view)
        };
        let body = Arc::new(TileBody::new(
            encoded.bytes,
            gzip,
            encoded.features,
            encoded.dropped,
        ));
        lock(&self.tiles).insert(layer, key, generation, &body);
        body
    }

    /// A cached live tile, if there is one (cheap: no rendering).
    pub fn cached_tile(
        &self,
        layer: &str,
        tile: TileId,
        budget: usize,
        gzip: bool,
        view: &LayerView,
    ) -> Option<Arc<TileBody>> {
        lock(&self.tiles)
            .get(layer, &(tile, gzip, budget, view.clone()))
            .ok()
    }

    /// Checks device states against the clock and logs the changes (called every second).
    pub fn tick_states(&self) {
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
                        device: d.id.to_string(),
                    })
                })
                .collect()
        };
        if !changes.is_empty() {
            // A full queue just means the change is logged on a later tick.
            let _ = self.submit(changes, None);
        }
    }

    pub(super) fn count_reports(&self, n: u64) {
        lock(&self.rate).add(now_s() as u64, n);
    }

    /// Turns applied changes into stream events and drops the live tiles they changed.
    pub(super) fn publish(&self, changes: Vec<Change>) {
        let events = {
            let st = read_lock(&self.state);
            let mut cache = lock(&self.tiles);
            let b = self.cfg.buffer;
            for c in &changes {
                match c {
                    Change::Moved {
                        device, from, to, ..
                    } => {
                        let Some(d) = st.devices.get(device) else {
                            continue;
                        };
                        // The new position's tiles change even if it did not move: the state
                        // and telemetry are drawn too.
                        for p in from.iter().chain(to.iter()) {
                            cache.invalidate(&d.layer, *p, b);
                        }
                    }
                    Change::State { device, .. } => {
                        if let Some(d) = st.devices.get(device)
                            && let Some(p) = d.pos
                        {
                            cache.invalidate(&d.layer, p, b);
                        }
                    }
                    Change::Removed {
                        layer,
                        pos: Some(p),
                        ..
                    } => cache.invalidate(layer, *p, b),
                    _ => {}
                }
            }
            drop(cache);
            stream::events(&st, &self.registry(), changes)
        };
        self.stream.send(events);
    }

    /// Serialises the state as a snapshot (under its read lock: no copy of the devices) and
    /// writes it.
    pub(super) fn write_snapshot(&self) {
        let (seq, bytes) = {
            let st = read_lock(&self.state);
            (st.seq, st.snapshot_json())
        };
        self.persist_snapshot(seq, bytes);
    }

    /// Writes snapshot `bytes`, of the state at log sequence `seq`.
    pub(super) fn persist_snapshot(&self, seq: u64, bytes: Result<Vec<u8>, String>) {
        match bytes.and_then(|b| snapshot::persist(&self.live_dir(), &b).map_err(|e| e.to_string()))
        {
            Ok(()) => {
                self.snapshot_seq.fetch_max(seq, Ordering::AcqRel);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the live snapshot; the log still has everything")
            }
        }
    }
}
