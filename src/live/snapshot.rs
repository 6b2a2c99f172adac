//! The live state's snapshot, `STORE/live/snapshot.json`, and log retention.
//!
//! A snapshot bounds recovery: on start the state is the snapshot plus the log after its
//! sequence number. The committer takes one every 10 s while reports arrive and writes it on a
//! thread of its own (temp file, fsync, rename, fsync of the directory), so no
//! acknowledgement waits for it; a failed write is logged and costs only a longer replay.
//!
//! ```text
//! snapshot.json (format version 1; a file without "format_version" is version 1)
//! {
//!   "format_version": 1,
//!   "seq": N,                       last log sequence number included
//!   "devices": [ { "id", "layer", "kind", "interval_s", "pos": [lon, lat] | null,
//!                  "t": device time | null, "last_seen": server time | null,
//!                  "telemetry": { NAME: number }, "reports", "late",
//!                  "state": "new"|"live"|"sleeping"|"overdue"|"lost" } ],   sorted by id
//!   "fences": [ { "id", "name", "layers": [..], "geometry": GeoJSON } ],    sorted by id
//!   "inside": [ [fence, device] ],  open geofence alarms
//!   "reports_total": N
//! }
//! ```
//! The registry is read before the snapshot: a device no longer registered is left out, and
//! layer, kind and interval come from the registry. A snapshot of a later version is refused
//! with a message naming it.
//!
//! Retention deletes whole log segments older than the retention period, and only those a
//! snapshot on disk covers, so recovery never needs a deleted segment.

use super::registry::RegIndex;
use super::state::{Device, LiveState};
use super::wal;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

fn format_v1() -> u32 {
    1
}

/// The snapshot file's content.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version ([`FORMAT_VERSION`]).
    #[serde(default = "format_v1")]
    pub format_version: u32,
    /// Last sequence number included.
    pub seq: u64,
    /// Devices.
    pub devices: Vec<Device>,
    /// Fences (their JSON).
    pub fences: Vec<serde_json::Value>,
    /// Open alarms.
    pub inside: Vec<(String, String)>,
    /// When each open alarm began (device time), in the order of `inside`.
    #[serde(default)]
    pub inside_since: Vec<f64>,
    /// Reports applied in all.
    pub reports_total: u64,
}

/// A snapshot as written: the state's devices borrowed, not copied.
#[derive(Serialize)]
pub struct SnapshotRef<'a> {
    /// Format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Last sequence number included.
    pub seq: u64,
    /// Devices, by id.
    pub devices: Vec<&'a Device>,
    /// Fences (their JSON).
    pub fences: Vec<serde_json::Value>,
    /// Open alarms.
    pub inside: Vec<&'a (String, String)>,
    /// When each open alarm began (device time), in the order of `inside`.
    pub inside_since: Vec<f64>,
    /// Reports applied in all.
    pub reports_total: u64,
}

/// Restores the snapshot at `path`, if there is one, into `state`.
pub fn restore(path: &Path, state: &mut LiveState, reg: &RegIndex) -> Result<(), String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let snap: Snapshot = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{}: unreadable snapshot ({e}); move it away to rebuild from the log",
            path.display()
        )
    })?;
    if snap.format_version > FORMAT_VERSION {
        return Err(format!(
            "{}: snapshot format version {} was written by a newer Urbis (this one reads {FORMAT_VERSION}); \
             move it away to rebuild from the log",
            path.display(),
            snap.format_version
        ));
    }
    state.restore(snap, reg);
    Ok(())
}

/// Writes `snap` as `DIR/snapshot.json`: temp file, fsync, rename, fsync of the directory.
pub fn persist(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join("snapshot.json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    std::io::Write::write_all(&mut f, bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join("snapshot.json"))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Deletes the log segments in `wal_dir` last written before `retention` ago whose records a
/// snapshot up to `snap_seq` covers.
pub fn expire_segments(wal_dir: &Path, retention: Duration, snap_seq: u64) {
    let Ok(segs) = wal::segments(wal_dir) else {
        return;
    };
    let cutoff = SystemTime::now() - retention;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_of_a_later_version_is_refused_and_one_without_a_version_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.json");
        let reg = RegIndex::default();
        std::fs::write(
            &path,
            r#"{"seq":7,"devices":[],"fences":[],"inside":[],"reports_total":3}"#,
        )
        .unwrap();
        let mut st = LiveState::default();
        restore(&path, &mut st, &reg).unwrap();
        assert_eq!((st.seq, st.reports_total), (7, 3));
        std::fs::write(
            &path,
            r#"{"format_version":2,"seq":7,"devices":[],"fences":[],"inside":[],"reports_total":3}"#,
        )
        .unwrap();
        let e = restore(&path, &mut LiveState::default(), &reg).unwrap_err();
        assert!(e.contains("format version 2") && e.contains("newer"), "{e}");
        // No snapshot at all is an empty start.
        std::fs::remove_file(&path).unwrap();
        restore(&path, &mut LiveState::default(), &reg).unwrap();
    }
}
