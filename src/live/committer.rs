//! The committer: the one thread that writes the log and changes the live state, in that
//! order. It takes every waiting job as one group, plans it against the state without
//! changing it ([`LiveState::plan`](super::state::LiveState::plan): late flags, geofence
//! events), appends the planned records to the log and calls `fdatasync` once for the group;
//! only then does it apply them to the state, acknowledge every job of the group, publish the
//! events and drop the live tiles they changed. If the append fails, nothing of the group is
//! visible anywhere (not in `/devices`, not in a live tile, not on the stream), every job
//! of it is refused, and the hub stops acknowledging (`/ready` fails) rather than acknowledge
//! what may not be on disk.

use super::admit::Batch;
use super::retention::{RetentionPlan, RetentionReport};
use super::wal::{Record, Wal};
use super::{Hub, LiveError, lock, read_lock, snapshot, write_lock};
use std::sync::mpsc::{Receiver, TrySendError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Records per group commit, at most.
const MAX_GROUP: usize = 65_536;
/// Seconds between snapshots (when something changed).
const SNAPSHOT_EVERY: Duration = Duration::from_secs(10);

/// What a commit made durable: the log sequence numbers of the batch's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Sequence number of the first record (0 for an empty batch).
    pub first_seq: u64,
    /// Sequence number of the last record (0 for an empty batch).
    pub last_seq: u64,
    /// Records committed.
    pub records: usize,
}

/// Called on the committer thread once a batch is durable (or why it is not).
pub type Reply = Box<dyn FnOnce(Result<Committed, LiveError>) + Send>;

/// Called on the committer thread once a retention run is done.
pub type RetentionReply = Box<dyn FnOnce(Result<RetentionReport, LiveError>) + Send>;

/// A group of records for the committer, with where to send the outcome; or a retention run.
pub(super) struct Job {
    pub(super) records: Vec<Record>,
    /// When the job was handed over (for the report-to-stream lag).
    pub(super) queued: std::time::Instant,
    pub(super) reply: Option<Reply>,
    pub(super) retention: Option<(RetentionPlan, RetentionReply)>,
    /// Cluster mode: the shared log's sequence number of the message these records are.
    pub(super) stream_seq: Option<u64>,
}

impl Hub {
    /// Commits a batch: logged and synced to disk, then applied, published and acknowledged.
    /// Never waits for room in the queue: a full queue is [`LiveError::Overloaded`].
    pub async fn commit(&self, batch: Batch) -> Result<Committed, LiveError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commit_with(
            batch,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        rx.await
            .unwrap_or_else(|_| Err(LiveError::Storage("the log thread has stopped".into())))
    }

    /// Like [`Hub::commit`], but the committer thread calls `reply` itself once the batch is
    /// durable: for answers that need no async task (CoAP over a plain socket), which saves a
    /// task wake-up per group. On `Err` here, `reply` is not called.
    pub fn commit_with(&self, batch: Batch, reply: Reply) -> Result<(), LiveError> {
        self.submit(batch.records, Some(reply))
    }

    /// Hands records to the committer.
    pub(super) fn submit(
        &self,
        records: Vec<Record>,
        reply: Option<Reply>,
    ) -> Result<(), LiveError> {
        self.is_ready().map_err(LiveError::Storage)?;
        if let Some(sh) = self.shared.as_ref() {
            return self.submit_shared(sh, records, reply);
        }
        match self.tx.try_send(Job {
            records,
            queued: std::time::Instant::now(),
            reply,
            retention: None,
            stream_seq: None,
        }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(LiveError::Overloaded),
            Err(TrySendError::Disconnected(_)) => {
                Err(LiveError::Storage("the log thread has stopped".into()))
            }
        }
    }

    /// Hands a retention run to the committer.
    pub(super) fn submit_control(
        &self,
        plan: RetentionPlan,
        reply: RetentionReply,
    ) -> Result<(), LiveError> {
        self.is_ready().map_err(LiveError::Storage)?;
        match self.tx.try_send(Job {
            records: Vec::new(),
            queued: std::time::Instant::now(),
            reply: None,
            retention: Some((plan, reply)),
            stream_seq: None,
        }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(LiveError::Overloaded),
            Err(TrySendError::Disconnected(_)) => {
                Err(LiveError::Storage("the log thread has stopped".into()))
            }
        }
    }

    /// Takes the hub out of service after a log failure.
    fn fail(&self, why: String) {
        tracing::error!(error = %why, "write-ahead log failure: no more reports are acknowledged");
        *lock(&self.failed) = Some(why);
        self.failed_flag
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// One group: plan, log, then apply, publish and acknowledge.
    fn commit_group(
        &self,
        jobs: Vec<Job>,
        wal: &mut Wal,
        next_seq: &mut u64,
        frames: &mut Vec<u8>,
    ) {
        if let Err(why) = self.log_ok() {
            for j in jobs {
                if let Some(r) = j.reply {
                    r(Err(LiveError::Storage(why.clone())));
                }
            }
            return;
        }
        // Registry changes wait for the group (see `refresh_registry`): the state planned
        // against is the state applied to.
        let _commit = lock(&self.commit_lock);
        let mut replies = Vec::with_capacity(jobs.len());
        let mut planned = Vec::new();
        let mut reports = 0u64;
        let oldest = jobs.iter().map(|j| j.queued).min();
        let applied = jobs.iter().filter_map(|j| j.stream_seq).max();
        {
            let st = read_lock(&self.state);
            for job in jobs {
                let n = job.records.len();
                reports += job
                    .records
                    .iter()
                    .filter(|r| matches!(r, Record::Report(_)))
                    .count() as u64;
                let start = planned.len();
                if let Some(s) = job.stream_seq {
                    // Cluster mode: numbered from the shared log's sequence, the same on
                    // every server (see `shared`).
                    *next_seq = (*next_seq).max((s << super::shared::SEQ_SHIFT) | 1);
                }
                let first = *next_seq;
                st.plan(job.records, next_seq, &mut planned);
                // Jobs never hold geofence events: those in the run are the ones raised.
                let last = planned[start..]
                    .iter()
                    .rev()
                    .find(|(_, r)| !matches!(r, Record::FenceEvent { .. }))
                    .map_or(0, |(s, _)| *s);
                let committed = Committed {
                    first_seq: if n > 0 { first } else { 0 },
                    last_seq: last,
                    records: n,
                };
                replies.push((job.reply, committed));
            }
        }
        frames.clear();
        for (seq, rec) in &planned {
            rec.encode(*seq, frames);
        }
        let first_seq = planned.first().map_or(*next_seq, |p| p.0);
        let synced = std::time::Instant::now();
        let logged = wal.append(frames, first_seq, self.shared.is_none());
        if let Some(o) = self.observer() {
            o.log_sync(synced.elapsed().as_secs_f64());
        }
        if let Err(e) = logged {
            let why = format!("cannot write the log: {e}");
            self.fail(why.clone());
            for (reply, _) in replies {
                if let Some(r) = reply {
                    r(Err(LiveError::Storage(why.clone())));
                }
            }
            return;
        }
        let mut changes = Vec::new();
        {
            let mut st = write_lock(&self.state);
            for (seq, rec) in &planned {
                st.apply(*seq, rec, &mut changes);
            }
        }
        drop(_commit);
        if let (Some(sh), Some(s)) = (self.shared.as_ref(), applied) {
            sh.applied.store(s, std::sync::atomic::Ordering::Release);
        }
        self.count_reports(reports);
        self.publish(changes);
        if let Some(o) = self.observer() {
            // The group's reports are on the stream: the oldest waited longest.
            if reports > 0
                && let Some(t) = oldest
            {
                o.stream_lag(t.elapsed().as_secs_f64());
            }
            for (_, r) in &planned {
                if let Record::FenceEvent { kind, .. } = r {
                    o.fence_event(match kind {
                        0 => "enter",
                        1 => "exit",
                        _ => "cross",
                    });
                }
            }
        }
        for (reply, committed) in replies {
            if let Some(r) = reply {
                r(Ok(committed));
            }
        }
    }
}

/// The committer thread: takes every waiting job, commits them as one group, and takes
/// snapshots and applies retention on the side.
pub(super) fn run(hub: Weak<Hub>, rx: Receiver<Job>, mut wal: Wal, mut next_seq: u64) {
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
        hub.answer_stored();
        if let Some(first) = first {
            let mut n = first.records.len();
            let mut jobs = vec![first];
            while n < MAX_GROUP {
                match rx.try_recv() {
                    Ok(j) => {
                        n += j.records.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            let (runs, jobs): (Vec<Job>, Vec<Job>) =
                jobs.into_iter().partition(|j| j.retention.is_some());
            if !jobs.is_empty() {
                hub.commit_group(jobs, &mut wal, &mut next_seq, &mut frames);
                dirty = true;
            }
            for run in runs {
                if let Some((plan, reply)) = run.retention {
                    let r = hub.retention_now(&plan, &mut wal, next_seq);
                    if r.is_ok() {
                        last_snapshot = Instant::now();
                        dirty = false;
                    }
                    reply(r);
                }
            }
        }
        if dirty && last_snapshot.elapsed() >= SNAPSHOT_EVERY {
            write_snapshot_in_background(&hub);
            last_snapshot = Instant::now();
            dirty = false;
        }
        if last_retention.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            let wal_dir = hub.live_dir().join("wal");
            let snap_seq = hub.snapshot_seq.load(std::sync::atomic::Ordering::Acquire);
            let keep = hub
                .keep_segments_s
                .load(std::sync::atomic::Ordering::Acquire);
            snapshot::expire_segments(&wal_dir, Duration::from_secs(keep), snap_seq);
            last_retention = Some(Instant::now());
        }
    }
}

/// Takes a snapshot and writes it on a thread of its own, so that the committer (and so
/// every acknowledgement) does not wait for the serialisation and the two fsyncs; skipped
/// while the previous one is still being written.
fn write_snapshot_in_background(hub: &Arc<Hub>) {
    use std::sync::atomic::Ordering;
    if hub.snapshot_busy.swap(true, Ordering::AcqRel) {
        return;
    }
    // Serialised under the read lock (a copy of a million devices would cost more memory
    // than the bytes), written and synced off it.
    let (seq, bytes) = {
        let st = read_lock(&hub.state);
        (st.seq, st.snapshot_json())
    };
    let me = Arc::clone(hub);
    let spawned = std::thread::Builder::new()
        .name("urbis-snapshot".into())
        .spawn(move || {
            me.persist_snapshot(seq, bytes);
            me.snapshot_busy.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        hub.snapshot_busy.store(false, Ordering::Release);
    }
}
