//! Retention of device history: the reports, geofence events and state changes in the log
//! whose device time is older than the cutoff of their device's live layer are deleted, and
//! nothing newer. Run by the committer thread (the log's only writer) between groups: it
//! writes a snapshot first (so recovery never needs what is deleted), starts a new segment
//! (so every older one is closed), then rewrites each closed segment without the expired
//! records (temp file, fsync, rename) or deletes it when nothing is left. Records the state
//! needs to make sense of the rest (removals, geofence definitions) stay.

use super::wal::{self, Record, Wal};
use super::{Hub, LiveError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// What a retention run keeps: history with a device time at or after the cutoff of its
/// device's live layer (seconds since 1970).
#[derive(Debug, Clone, Default)]
pub struct RetentionPlan {
    /// Cutoff per live layer.
    pub cutoffs: BTreeMap<String, f64>,
    /// Cutoff of the other layers and of devices no longer registered.
    pub default_cutoff: f64,
}

/// What was deleted of one layer.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Deleted {
    /// Position reports.
    pub fixes: u64,
    /// Geofence events.
    pub events: u64,
    /// State changes.
    pub states: u64,
}

/// What a retention run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionReport {
    /// Deleted records by live layer (`-` for devices no longer registered).
    pub layers: BTreeMap<String, Deleted>,
    /// Segments deleted whole.
    pub segments_deleted: u64,
    /// Segments rewritten without their expired records.
    pub segments_rewritten: u64,
    /// Log bytes before and after.
    pub bytes_before: u64,
    /// Log bytes after.
    pub bytes_after: u64,
}

impl Hub {
    /// Deletes the device history `plan` says is expired; answers once it is done and durable.
    pub async fn run_retention(&self, plan: RetentionPlan) -> Result<RetentionReport, LiveError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit_control(
            plan,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        rx.await
            .unwrap_or_else(|_| Err(LiveError::Storage("the log thread has stopped".into())))
    }

    /// The retention run itself, on the committer thread.
    pub(super) fn retention_now(
        &self,
        plan: &RetentionPlan,
        wal: &mut Wal,
        next_seq: u64,
    ) -> Result<RetentionReport, LiveError> {
        let io = |e: std::io::Error| LiveError::Io(format!("retention: {e}"));
        // Everything logged so far is applied (this thread applies right after appending):
        // a snapshot now covers it, and recovery never reads what is deleted below.
        self.write_snapshot();
        wal.roll(next_seq).map_err(io)?;
        let dir = self.live_dir().join("wal");
        let segs = wal::segments(&dir).map_err(io)?;
        let reg = self.registry();
        let cutoff = |device: &str| -> (String, f64) {
            match reg.device(device) {
                Some(d) => (
                    d.layer.to_string(),
                    plan.cutoffs
                        .get(d.layer)
                        .copied()
                        .unwrap_or(plan.default_cutoff),
                ),
                None => ("-".to_string(), plan.default_cutoff),
            }
        };
        let mut report = RetentionReport::default();
        let current = segs.last().map(|(_, p)| p.clone());
        for (_, path) in &segs {
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            report.bytes_before += len;
            if Some(path) == current.as_ref() {
                report.bytes_after += len;
                continue;
            }
            let mut kept = Vec::new();
            let mut dropped = 0u64;
            wal::read_segment(path, |seq, rec| {
                let expired = match &rec {
                    Record::Report(r) => {
                        let (layer, c) = cutoff(&r.device);
                        (r.t < c).then(|| report.layers.entry(layer).or_default().fixes += 1)
                    }
                    Record::FenceEvent { t, device, .. } => {
                        let (layer, c) = cutoff(device);
                        (*t < c).then(|| report.layers.entry(layer).or_default().events += 1)
                    }
                    Record::State { t, device, .. } => {
                        let (layer, c) = cutoff(device);
                        (*t < c).then(|| report.layers.entry(layer).or_default().states += 1)
                    }
                    _ => None,
                };
                if expired.is_some() {
                    dropped += 1;
                } else {
                    rec.encode(seq, &mut kept);
                }
            })
            .map_err(io)?;
            if dropped == 0 {
                report.bytes_after += len;
            } else if kept.is_empty() {
                std::fs::remove_file(path).map_err(io)?;
                report.segments_deleted += 1;
            } else {
                rewrite(path, &kept).map_err(io)?;
                report.segments_rewritten += 1;
                report.bytes_after += kept.len() as u64;
            }
        }
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(report)
    }
}

/// Replaces a segment by `frames`: temp file, fsync, rename.
fn rewrite(path: &Path, frames: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("log.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(frames)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
