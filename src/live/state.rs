//! The live state: every device's last fix, state and telemetry, a grid index of current
//! positions per live layer, the geofences and who is inside them. Read by the hub's views and the tile
//! renderer; changed only through [`LiveState::apply`], by the committer once a group is in the
//! log, and by recovery replaying the log: one function for both, so the state after a restart
//! is the state before it. [`LiveState::plan`] decides, without changing anything, what a group
//! will log (late flags, the geofence events its reports raise) before it is written.

use super::devices::{Devices, Telemetry};
use super::fence::{Fence, FenceEventKind, FenceSet};
use super::grid::PointGrid;
use super::registry::{DeviceKind, RegIndex};
use super::snapshot::Snapshot;
use super::wal::{Record, ReportRec};
use crate::tile::mercator::lonlat_to_grid;
use rstar::primitives::GeomWithData;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A device state, from the time since its last report and its expected interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DevState {
    /// Registered, never reported.
    New,
    /// Reported within the last two minutes (or one interval, if shorter): awake.
    Live,
    /// Quiet, but within its interval plus grace: asleep as NB-IoT devices are (PSM).
    Sleeping,
    /// Has missed a report (up to three intervals).
    Overdue,
    /// Silent for more than three intervals.
    Lost,
}

impl DevState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DevState::New => "new",
            DevState::Live => "live",
            DevState::Sleeping => "sleeping",
            DevState::Overdue => "overdue",
            DevState::Lost => "lost",
        }
    }

    /// The code logged in the WAL.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// From a WAL code.
    pub fn from_code(c: u8) -> DevState {
        match c {
            1 => DevState::Live,
            2 => DevState::Sleeping,
            3 => DevState::Overdue,
            4 => DevState::Lost,
            _ => DevState::New,
        }
    }

    /// The state of a device silent for `age` seconds that should report every `interval`.
    ///
    /// Grace is a quarter interval, at least a minute: NB-IoT devices wake on their own
    /// schedule and networks delay uplinks.
    pub fn from_age(age: f64, interval: u64) -> DevState {
        let interval = interval.max(1) as f64;
        let grace = (interval / 4.0).max(60.0);
        if age <= interval.min(120.0) + 30.0 {
            DevState::Live
        } else if age <= interval + grace {
            DevState::Sleeping
        } else if age <= 3.0 * interval + grace {
            DevState::Overdue
        } else {
            DevState::Lost
        }
    }
}

/// One device as the live layer knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Device {
    /// Id (shared with the state's index).
    pub id: Arc<str>,
    /// Live layer (shared between the layer's devices).
    pub layer: Arc<str>,
    /// Kind.
    pub kind: DeviceKind,
    /// Expected seconds between reports.
    pub interval_s: u64,
    /// Last position `[lon, lat]`.
    pub pos: Option<[f64; 2]>,
    /// Device time of the last applied report (seconds since the epoch).
    pub t: Option<f64>,
    /// Server time of the last report, late ones included.
    pub last_seen: Option<f64>,
    /// Last value of each telemetry name.
    pub telemetry: Telemetry,
    /// Reports applied.
    pub reports: u64,
    /// Late reports (older than the last fix; kept in history only).
    pub late: u64,
    /// State.
    pub state: DevState,
}

impl Device {
    /// The device as the API shows it (`/devices`, the stream's `position` events).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "layer": self.layer,
            "kind": self.kind,
            "interval_s": self.interval_s,
            "state": self.state,
            "position": self.pos,
            "t": self.t,
            "last_seen": self.last_seen,
            "telemetry": self.telemetry,
            "reports": self.reports,
            "late_reports": self.late,
        })
    }
}

/// A point of a live layer's index (`grid::PointGrid`): grid position and the device's slot (see
/// [`Devices::at`]); a number, not the id, so that moving a point allocates nothing and
/// compares 4 bytes.
pub type LivePoint = GeomWithData<[i64; 2], u32>;

/// What a change did, for the stream and the tile cache.
#[derive(Debug, Clone)]
pub enum Change {
    /// A device's report was applied (its position may have moved from `from`).
    Moved {
        /// Device.
        device: String,
        /// Previous position.
        from: Option<[f64; 2]>,
        /// The report's position (a batch may move one device several times).
        to: Option<[f64; 2]>,
        /// The report's device time.
        t: f64,
        /// Log sequence number.
        seq: u64,
    },
    /// A geofence event.
    Fence {
        /// Fence id.
        fence: String,
        /// Fence name.
        name: String,
        /// What happened.
        kind: FenceEventKind,
        /// Device.
        device: String,
        /// Its layer.
        layer: String,
        /// Where.
        pos: [f64; 2],
        /// Device time.
        t: f64,
        /// Sequence number.
        seq: u64,
    },
    /// A device's state changed.
    State {
        /// Device.
        device: String,
        /// Sequence number.
        seq: u64,
    },
    /// Geofences changed.
    Fences {
        /// Sequence number.
        seq: u64,
    },
    /// A device left the registry.
    Removed {
        /// Device.
        device: String,
        /// The layer it was on.
        layer: String,
        /// Its last position.
        pos: Option<[f64; 2]>,
        /// Sequence number.
        seq: u64,
    },
}

/// The live state.
#[derive(Default)]
pub struct LiveState {
    /// Devices by id.
    pub devices: Devices,
    /// Current positions per live layer.
    pub trees: BTreeMap<String, PointGrid>,
    /// Layer and telemetry names, shared by the devices that use them.
    names: std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>,
    /// The geofences (sorted by id), indexed.
    pub fence_set: FenceSet,
    /// (fence, device) pairs with the device inside, open alarms, with the device time of the
    /// report that entered.
    pub inside: BTreeMap<(String, String), f64>,
    /// Last sequence number applied.
    pub seq: u64,
    /// Report counts, for rates.
    pub reports_total: u64,
}

fn grid(pos: [f64; 2]) -> [i64; 2] {
    let g = lonlat_to_grid(pos[0], pos[1]);
    [i64::from(g[0]), i64::from(g[1])]
}

/// The fences of `set` with the one of id `id` replaced by `fence` (or removed), sorted by id.
fn with_fence(set: &FenceSet, id: &str, fence: Option<Fence>) -> FenceSet {
    let mut all: Vec<Fence> = set
        .fences()
        .iter()
        .filter(|f| f.id != id)
        .cloned()
        .collect();
    all.extend(fence);
    all.sort_by(|a, b| a.id.cmp(&b.id));
    FenceSet::new(all)
}

/// Parses a stored fence JSON (as logged by `FencePut`).
pub fn fence_from_json(v: &serde_json::Value) -> Option<Fence> {
    let mut f: Fence = serde_json::from_value(v.clone()).ok()?;
    let (_, area) = Fence::parse_geometry(&f.geometry).ok()?;
    f.area = area;
    Some(f)
}

impl LiveState {
    /// The shared copy of a layer or telemetry name.
    fn name(&mut self, n: &str) -> Arc<str> {
        match self.names.get(n) {
            Some(a) => Arc::clone(a),
            None => {
                let a: Arc<str> = Arc::from(n);
                self.names.insert(Arc::clone(&a));
                a
            }
        }
    }

    /// Brings the device list in line with the registry: new devices appear as `new`,
    /// removed ones leave the layer, changed layer/kind/interval are taken over. With `only`,
    /// just those ids are looked at (the registry changes a running server reads); without,
    /// every device. Returns the devices that left or moved layer (their tiles need
    /// refreshing).
    pub fn sync_registry(
        &mut self,
        reg: &RegIndex,
        only: Option<&[String]>,
    ) -> Vec<(String, Option<[f64; 2]>, String)> {
        let mut touched = Vec::new();
        let gone: Vec<String> = match only {
            Some(ids) => ids
                .iter()
                .filter(|id| !reg.has_device(id) && self.devices.contains_key(id))
                .cloned()
                .collect(),
            None => self
                .devices
                .keys()
                .filter(|id| !reg.has_device(id))
                .map(|id| id.to_string())
                .collect(),
        };
        for id in gone {
            if let Some(d) = self.devices.get(&id).cloned() {
                self.remove_point(&d);
                self.devices.remove(&id);
                self.inside.retain(|(_, dev), _| dev != &id);
                touched.push((id, d.pos, d.layer.to_string()));
            }
        }
        if only.is_none() {
            self.devices
                .reserve(reg.len().saturating_sub(self.devices.len()));
        }
        let mut sync = |st: &mut LiveState, id: &str, e: super::registry::DeviceInfo<'_>| {
            let layer = st.name(e.layer);
            match st.devices.get_mut(id) {
                Some(d) => {
                    d.kind = e.kind;
                    d.interval_s = e.interval_s;
                    if d.layer != layer {
                        let old = d.clone();
                        st.remove_point(&old);
                        let d = st.devices.get_mut(id).expect("present");
                        d.layer = layer;
                        let d = d.clone();
                        st.insert_point(&d);
                        touched.push((id.to_string(), old.pos, old.layer.to_string()));
                    }
                }
                None => {
                    st.devices.insert(Device {
                        // The registry's copy: one allocation per id for both.
                        id: Arc::clone(e.id),
                        layer,
                        kind: e.kind,
                        interval_s: e.interval_s,
                        pos: None,
                        t: None,
                        last_seen: None,
                        telemetry: Telemetry::default(),
                        reports: 0,
                        late: 0,
                        state: DevState::New,
                    });
                    if !st.trees.contains_key(e.layer) {
                        st.trees.insert(e.layer.to_string(), Default::default());
                    }
                }
            }
        };
        match only {
            Some(ids) => {
                for id in ids {
                    if let Some(e) = reg.device(id) {
                        sync(self, id, e);
                    }
                }
            }
            None => {
                for (id, e) in reg.iter() {
                    sync(self, id, e);
                }
            }
        }
        touched
    }

    /// Forgets what a device reported (position, telemetry, counts, open alarms): it is `new`
    /// again, on the same layer. No-op for an unknown id.
    pub fn reset_device(&mut self, id: &str) {
        let Some(d) = self.devices.get(id).cloned() else {
            return;
        };
        self.remove_point(&d);
        self.inside.retain(|(_, dev), _| dev != id);
        if let Some(d) = self.devices.get_mut(id) {
            d.pos = None;
            d.t = None;
            d.last_seen = None;
            d.telemetry.clear();
            d.reports = 0;
            d.late = 0;
            d.state = DevState::New;
        }
    }

    fn remove_point(&mut self, d: &Device) {
        let Some(slot) = self.devices.slot(&d.id) else {
            return;
        };
        if let (Some(p), Some(tree)) = (d.pos, self.trees.get_mut(&*d.layer)) {
            tree.remove(&LivePoint::new(grid(p), slot));
        }
    }

    fn insert_point(&mut self, d: &Device) {
        let Some(slot) = self.devices.slot(&d.id) else {
            return;
        };
        if let Some(p) = d.pos {
            if !self.trees.contains_key(&*d.layer) {
                self.trees.insert(d.layer.to_string(), PointGrid::default());
            }
            if let Some(tree) = self.trees.get_mut(&*d.layer) {
                tree.insert(LivePoint::new(grid(p), slot));
            }
        }
    }

    /// Plans a group of records against this state without changing it: numbers them from
    /// `*next_seq` in order, flags late reports (older than the device's last fix, counting
    /// the group's earlier reports) and, after each report that moves a device, adds the
    /// geofence events it raises, numbered right after it. The result, in log order, is what
    /// the log will hold, and applying it with [`LiveState::apply`] gives the same outcome
    /// as applying the records one by one would.
    pub fn plan(&self, records: Vec<Record>, next_seq: &mut u64, out: &mut Vec<(u64, Record)>) {
        // The group's own effect on what planning reads: each touched device's last fix time
        // and position, and the fences once a record of the group changes them.
        let mut fixes: HashMap<&str, (Option<f64>, Option<[f64; 2]>)> = HashMap::new();
        let mut fences: Option<FenceSet> = None;
        // The group's effect on each touched device's state and last report (server time).
        let mut states: HashMap<&str, (DevState, Option<f64>)> = HashMap::new();
        for mut rec in records {
            let seq = *next_seq;
            *next_seq += 1;
            let mut raised = Vec::new();
            match &mut rec {
                Record::Report(r) => {
                    if let Some(d) = self.devices.get(r.device.as_str()) {
                        let recv = r.recv_ms as f64 / 1000.0;
                        let st = states.entry(&*d.id).or_insert((d.state, d.last_seen));
                        st.1 = Some(st.1.map_or(recv, |l| l.max(recv)));
                        let fix = fixes.entry(&*d.id).or_insert((d.t, d.pos));
                        r.late = fix.0.is_some_and(|t| r.t < t);
                        if !r.late {
                            st.0 = DevState::Live;
                            fix.0 = Some(r.t);
                            if let Some(p) = r.pos {
                                let from = fix.1.replace(p);
                                let set = fences.as_ref().unwrap_or(&self.fence_set);
                                for (i, kind) in set.events(&d.layer, from, p) {
                                    raised.push(Record::FenceEvent {
                                        t: r.t,
                                        kind: kind as u8,
                                        fence: set.fences()[i].id.clone(),
                                        device: r.device.clone(),
                                        pos: p,
                                    });
                                }
                            }
                        }
                    }
                }
                Record::FencePut(json) => {
                    if let Some(f) = serde_json::from_str(json)
                        .ok()
                        .and_then(|v| fence_from_json(&v))
                    {
                        let set = fences.as_ref().unwrap_or(&self.fence_set);
                        fences = Some(with_fence(set, &f.id.clone(), Some(f)));
                    }
                }
                Record::FenceDel(id) => {
                    let set = fences.as_ref().unwrap_or(&self.fence_set);
                    fences = Some(with_fence(set, id, None));
                }
                Record::Removed { device, .. } => {
                    if let Some(d) = self.devices.get(device.as_str()) {
                        fixes.insert(&*d.id, (None, None));
                    }
                }
                Record::State { t, state, device } => {
                    // A change that no longer holds when it applies is dropped: the device
                    // reported since, or the change is made already (in cluster mode every
                    // server's clock sees it and submits it).
                    if let Some(d) = self.devices.get(device.as_str()) {
                        let st = states.entry(&*d.id).or_insert((d.state, d.last_seen));
                        let to = DevState::from_code(*state);
                        let holds = st
                            .1
                            .is_some_and(|seen| DevState::from_age(*t - seen, d.interval_s) == to);
                        if st.0 == to || !holds {
                            *next_seq -= 1;
                            continue;
                        }
                        st.0 = to;
                    }
                }
                Record::FenceEvent { .. } => {}
            }
            out.push((seq, rec));
            for r in raised {
                out.push((*next_seq, r));
                *next_seq += 1;
            }
        }
    }

    /// Applies one logged record with sequence number `seq` and says what changed (for the
    /// stream and the tile cache). Geofence events are not derived here: they are records of
    /// their own, planned before the log was written ([`LiveState::plan`]).
    pub fn apply(&mut self, seq: u64, rec: &Record, changes: &mut Vec<Change>) {
        self.seq = self.seq.max(seq);
        match rec {
            Record::Report(r) => self.apply_report(seq, r, changes),
            Record::FenceEvent {
                t,
                kind,
                fence,
                device,
                pos,
            } => {
                let key = (fence.clone(), device.clone());
                let kind = match kind {
                    0 => {
                        self.inside.insert(key, *t);
                        FenceEventKind::Enter
                    }
                    1 => {
                        self.inside.remove(&key);
                        FenceEventKind::Exit
                    }
                    _ => FenceEventKind::Cross,
                };
                let Some(d) = self.devices.get(device.as_str()) else {
                    return;
                };
                changes.push(Change::Fence {
                    fence: fence.clone(),
                    name: self
                        .fence_set
                        .get(fence)
                        .map_or_else(|| fence.clone(), |f| f.name.clone()),
                    kind,
                    device: device.clone(),
                    layer: d.layer.to_string(),
                    pos: *pos,
                    t: *t,
                    seq,
                });
            }
            Record::FencePut(json) => {
                if let Some(f) = serde_json::from_str(json)
                    .ok()
                    .and_then(|v| fence_from_json(&v))
                {
                    self.fence_set = with_fence(&self.fence_set, &f.id.clone(), Some(f));
                    changes.push(Change::Fences { seq });
                }
            }
            Record::FenceDel(id) => {
                self.fence_set = with_fence(&self.fence_set, id, None);
                self.inside.retain(|(f, _), _| f != id);
                changes.push(Change::Fences { seq });
            }
            Record::Removed {
                device, layer, pos, ..
            } => {
                // Registered again since (the registry is read first): it starts afresh here,
                // as it did when this was logged.
                self.reset_device(device);
                changes.push(Change::Removed {
                    device: device.clone(),
                    layer: layer.clone(),
                    pos: *pos,
                    seq,
                });
            }
            Record::State { state, device, .. } => {
                if let Some(d) = self.devices.get_mut(device.as_str()) {
                    d.state = DevState::from_code(*state);
                    changes.push(Change::State {
                        device: device.clone(),
                        seq,
                    });
                }
            }
        }
    }

    fn apply_report(&mut self, seq: u64, r: &ReportRec, changes: &mut Vec<Change>) {
        let Some(d) = self.devices.get_mut(r.device.as_str()) else {
            return; // removed from the registry since
        };
        self.reports_total += 1;
        let recv = r.recv_ms as f64 / 1000.0;
        d.last_seen = Some(d.last_seen.map_or(recv, |l| l.max(recv)));
        // Device-time order: a fix older than the last one is history only.
        if d.t.is_some_and(|t| r.t < t) {
            d.late += 1;
            return;
        }
        d.reports += 1;
        d.t = Some(r.t);
        let from = d.pos;
        d.state = DevState::Live;
        let moved = r.pos.filter(|p| from != Some(*p));
        if let Some(p) = moved {
            d.pos = Some(p);
        }
        let layer = Arc::clone(&d.layer);
        for (k, v) in &r.telemetry {
            let k = self.name(k);
            if let Some(d) = self.devices.get_mut(r.device.as_str()) {
                d.telemetry.insert(k, *v);
            }
        }
        if let Some(p) = moved
            && let Some(slot) = self.devices.slot(&r.device)
        {
            if !self.trees.contains_key(&*layer) {
                self.trees.insert(layer.to_string(), PointGrid::default());
            }
            if let Some(tree) = self.trees.get_mut(&*layer) {
                if let Some(old) = from {
                    tree.remove(&LivePoint::new(grid(old), slot));
                }
                tree.insert(LivePoint::new(grid(p), slot));
            }
        }
        changes.push(Change::Moved {
            device: r.device.clone(),
            from,
            to: r.pos.or(from),
            t: r.t,
            seq,
        });
    }

    /// The snapshot of this state.
    pub fn snapshot_json(&self) -> Result<Vec<u8>, String> {
        let mut devices: Vec<&Device> = self.devices.values().collect();
        devices.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let snap = super::snapshot::SnapshotRef {
            format_version: super::snapshot::FORMAT_VERSION,
            seq: self.seq,
            devices,
            fences: self
                .fence_set
                .fences()
                .iter()
                .filter_map(|f| serde_json::to_value(f).ok())
                .collect(),
            inside: self.inside.keys().collect(),
            inside_since: self.inside.values().copied().collect(),
            reports_total: self.reports_total,
        };
        serde_json::to_vec(&snap).map_err(|e| format!("cannot serialise the snapshot: {e}"))
    }

    /// Restores a snapshot (devices not in `reg` are left out).
    pub fn restore(&mut self, snap: Snapshot, reg: &RegIndex) {
        self.seq = snap.seq;
        self.reports_total = snap.reports_total;
        for mut d in snap.devices {
            let Some(e) = reg.device(&d.id) else {
                continue;
            };
            d.layer = self.name(e.layer);
            d.kind = e.kind;
            d.interval_s = e.interval_s;
            d.telemetry = Telemetry(
                d.telemetry
                    .0
                    .iter()
                    .map(|(k, v)| (self.name(k), *v))
                    .collect(),
            );
            self.devices.insert(d.clone());
            self.insert_point(&d);
        }
        let mut fences: Vec<Fence> = snap.fences.iter().filter_map(fence_from_json).collect();
        fences.sort_by(|a, b| a.id.cmp(&b.id));
        self.fence_set = FenceSet::new(fences);
        // Snapshots before `inside_since` have no times: the restore's time stands in.
        let now = super::now_s();
        self.inside = snap
            .inside
            .into_iter()
            .enumerate()
            .map(|(i, k)| (k, snap.inside_since.get(i).copied().unwrap_or(now)))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(t: f64, lon: f64) -> Record {
        Record::Report(ReportRec {
            recv_ms: 0,
            t,
            pos: Some([lon, 0.5]),
            late: false,
            device: "d".into(),
            telemetry: vec![("n".into(), t)],
        })
    }

    /// A state with one tracker `d` on layer `l`, reporting every minute.
    fn with_tracker() -> LiveState {
        let dir = tempfile::tempdir().unwrap();
        let mut db = crate::live::registry::RegistryDb::open(dir.path()).unwrap();
        db.add_device("d", "l", DeviceKind::Tracker, 60).unwrap();
        let reg = db.load().unwrap();
        let mut st = LiveState::default();
        st.sync_registry(&reg, None);
        st
    }

    #[test]
    fn a_planned_group_sees_its_own_earlier_records_and_applies_as_planned() {
        let mut st = with_tracker();
        let fence = r#"{"id":"f","name":"F","layers":[],"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1],[0,0]]]}}"#;
        let group = vec![
            Record::FencePut(fence.into()),
            report(10.0, -0.5), // outside
            report(20.0, 0.5),  // inside: enter, against the fence put in this group
            report(15.0, 0.7),  // older than the last fix of this group: late
            Record::FenceDel("f".into()),
            report(30.0, -0.5), // leaves, but the fence is gone: no event
        ];
        let mut next = 100;
        let mut planned = Vec::new();
        st.plan(group, &mut next, &mut planned);
        assert_eq!(st.seq, 0, "planning changes nothing");
        assert!(st.devices.get("d").unwrap().pos.is_none() && st.fence_set.fences().is_empty());
        let seqs: Vec<u64> = planned.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (100..107).collect::<Vec<_>>());
        assert_eq!(next, 107);
        assert!(matches!(&planned[3].1, Record::FenceEvent { kind: 0, fence, .. } if fence == "f"));
        assert!(matches!(&planned[4].1, Record::Report(r) if r.late && r.t == 15.0));
        let lates = planned
            .iter()
            .filter(|(_, r)| matches!(r, Record::Report(r) if r.late))
            .count();
        assert_eq!(lates, 1);
        let mut changes = Vec::new();
        for (seq, rec) in &planned {
            st.apply(*seq, rec, &mut changes);
        }
        let d = st.devices.get("d").unwrap();
        assert_eq!(
            (d.t, d.pos, d.reports, d.late),
            (Some(30.0), Some([-0.5, 0.5]), 3, 1)
        );
        assert_eq!(st.seq, 106);
        assert!(st.inside.is_empty(), "the deleted fence closed its alarm");
        let fence_events = changes
            .iter()
            .filter(|c| matches!(c, Change::Fence { name, .. } if name == "F"))
            .count();
        assert_eq!(fence_events, 1);
    }

    #[test]
    fn a_state_change_that_no_longer_holds_is_dropped_when_planned() {
        // In cluster mode every server's clock sees a device fall silent and submits the
        // change: the first applies, the repeats and the stale ones are dropped.
        let mut st = with_tracker();
        let mut r = report(1000.0, 0.5);
        if let Record::Report(r) = &mut r {
            r.recv_ms = 1_000_000;
        }
        let mut next = 1;
        let mut planned = Vec::new();
        st.plan(vec![r], &mut next, &mut planned);
        let mut changes = Vec::new();
        for (seq, rec) in &planned {
            st.apply(*seq, rec, &mut changes);
        }
        let overdue = |t: f64| Record::State {
            t,
            state: DevState::Overdue.code(),
            device: "d".into(),
        };
        // Two servers' ticks a second apart, and one from a server whose clock says the
        // device is not overdue yet.
        let group = vec![overdue(1200.0), overdue(1201.0), overdue(1010.0)];
        let mut planned = Vec::new();
        st.plan(group, &mut next, &mut planned);
        assert_eq!(planned.len(), 1, "{planned:?}");
        assert!(matches!(&planned[0].1, Record::State { t, .. } if *t == 1200.0));
        assert_eq!(planned[0].0, 2, "numbered without gaps");
        assert_eq!(next, 3);
        for (seq, rec) in &planned {
            st.apply(*seq, rec, &mut changes);
        }
        // Applied: a later repeat is dropped too; a report after it makes `live` hold again.
        let mut planned = Vec::new();
        st.plan(vec![overdue(1300.0)], &mut next, &mut planned);
        assert!(planned.is_empty());
        let mut again = report(1400.0, 0.6);
        if let Record::Report(r) = &mut again {
            r.recv_ms = 1_400_000;
        }
        let live = Record::State {
            t: 1401.0,
            state: DevState::Live.code(),
            device: "d".into(),
        };
        st.plan(vec![again, live, overdue(1402.0)], &mut next, &mut planned);
        assert_eq!(
            planned.len(),
            1,
            "the report makes the device live; nothing else holds"
        );
    }

    #[test]
    fn states_follow_the_interval() {
        let i = 900; // 15 min
        assert_eq!(DevState::from_age(10.0, i), DevState::Live);
        assert_eq!(DevState::from_age(600.0, i), DevState::Sleeping);
        assert_eq!(DevState::from_age(1100.0, i), DevState::Sleeping);
        assert_eq!(DevState::from_age(2000.0, i), DevState::Overdue);
        assert_eq!(DevState::from_age(4000.0, i), DevState::Lost);
        // A chatty tracker (10 s) is live while it reports, overdue soon after.
        assert_eq!(DevState::from_age(35.0, 10), DevState::Live);
        assert_eq!(DevState::from_age(75.0, 10), DevState::Overdue);
    }
}
