//! The live room in cluster mode: the log every server shares.
//!
//! In cluster mode the acknowledgement of a report no longer rests on this machine's
//! `fdatasync` but on a replicated log (the cluster room's JetStream stream, behind the
//! [`SharedLog`] trait so that the live room knows nothing of NATS). A submission (reports
//! admitted here, geofence changes, device state changes, removals) is not given to the
//! committer: it is encoded as one message of WAL frames and appended to the shared log. Every
//! server, this one included, reads the shared log in order and hands each message to
//! [`Hub::apply_shared`], which gives it to the committer like a local submission: the
//! committer plans it against the state (late flags, geofence events), appends it to the
//! local log (a copy, not synced: the shared log is the durable one) and applies it. The
//! submitter is answered when its message has been applied here, so a device that is
//! acknowledged sees its report in `/devices` at once, as on one server.
//!
//! Same log, same order, same planning: every server derives the same records, the same
//! geofence events and the same stream. Record numbers are derived from the shared log's
//! sequence numbers, `stream_seq << 20 | k` (k from 1 within the message), so that the `id`
//! of a `/stream` event is the same on every server and a browser moved to another one
//! resumes with `Last-Event-ID`. Events are thus evaluated from the log, once per report
//! and server, and never written back: nothing can double them. Inputs that every server
//! produces on its own (a device becoming overdue, seen by every server's clock; a removal,
//! seen by every server's registry) carry a message id made of what they are, so the shared
//! log stores them once (JetStream's deduplication), and planning drops a state change that
//! no longer holds when it applies.

use super::committer::Reply;
use super::wal::Record;
use super::{Committed, Hub, LiveConfig, LiveError, lock};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Record numbers of shared-log message `s` are `s << SEQ_SHIFT | k`.
pub const SEQ_SHIFT: u32 = 20;
/// Records of one message, at most (a report raises at most one event per fence: far below
/// the 2^20 numbers of a message); a submission larger than this is split, and the cluster
/// puts parts together in one message up to this many records.
pub const MAX_MESSAGE_RECORDS: usize = 4096;
/// Bytes of one part, at most (below the cluster's message size, so that a part always fits).
pub const MAX_PART_BYTES: usize = 448 * 1024;
/// An acknowledged message not yet applied here is answered anyway after this long (it is
/// durable; the answer only waited to show it in this server's state).
const APPLY_WAIT: Duration = Duration::from_secs(5);
/// How long the applier waits for the registry row of a device whose report it applies and
/// that it does not know (the row travels through another channel of the cluster: a device
/// that reports the moment it is registered can be faster than it).
const REGISTRY_WAIT: Duration = Duration::from_secs(3);
/// Devices waited for in vain remembered, at most (their reports are not waited for again).
const GIVEN_UP: usize = 10_000;

/// Called once a message is stored by the shared log: its sequence number, or why not.
pub type Appended = Box<dyn FnOnce(Result<u64, String>) + Send>;

/// A replicated, ordered log that every server reads (the cluster room's JetStream stream).
pub trait SharedLog: Send + Sync {
    /// Appends one part; `done` is called once it is stored on a
    /// quorum of replicas, or when it cannot be. Parts may share a message with others
    /// (group commit over the network), except an `alone` part, which is a message of its
    /// own under `id` as its message id: a repeat of it within the log's deduplication window
    /// is stored once. Never blocks: a full queue is `Err` at once.
    fn append(&self, part: Part, done: Appended) -> Result<(), LiveError>;
    /// Whether the log is reachable and this server keeps up with it, else why not.
    fn ready(&self) -> Result<(), String>;
    /// Messages of the log not yet applied here.
    fn lag(&self) -> u64;
}

/// What a hub in cluster mode keeps of the shared log.
pub(super) struct Shared {
    pub(super) log: std::sync::Arc<dyn SharedLog>,
    /// This process's prefix of message ids.
    me: String,
    next_id: AtomicU64,
    /// Submissions appended, waiting to be applied here: message id → answer.
    pending: Mutex<HashMap<String, Pending>>,
    /// The last shared-log sequence number applied.
    pub(super) applied: AtomicU64,
    /// The last shared-log sequence number handed to the committer.
    queued: AtomicU64,
    /// Devices whose registry row never came while a report of theirs waited for it
    /// (removed ones): their reports are dropped without waiting again.
    given_up: Mutex<std::collections::HashSet<String>>,
}

struct Pending {
    reply: Option<Reply>,
    records: usize,
    /// Set once the shared log stored it: its sequence and when.
    stored: Option<(u64, Instant)>,
    /// An earlier part of the same batch could not be stored: why.
    failed: Option<String>,
}

impl Shared {
    pub(super) fn new(log: std::sync::Arc<dyn SharedLog>) -> Shared {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Shared {
            log,
            me: format!("{:x}-{:x}", std::process::id(), nanos),
            next_id: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
            applied: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            given_up: Mutex::new(std::collections::HashSet::new()),
        }
    }
}

/// One submission, ready for the shared log.
#[derive(Debug)]
pub struct Part {
    /// Its id (unique to this process, or made of what it is when `alone`).
    pub id: String,
    /// Its bytes (see [`part`]): messages are parts one after another.
    pub bytes: Vec<u8>,
    /// Records in it.
    pub records: usize,
    /// A message of its own, under `id` as its message id (deduplicated by the log).
    pub alone: bool,
}

/// One submission as a part of a shared-log message: `id_len u16 | id | frames_len u32 |
/// frames` (WAL frames numbered 0). A message is one or more parts, one after another.
pub fn part(id: &str, records: &[Record]) -> Vec<u8> {
    let mut frames = Vec::new();
    for r in records {
        r.encode(0, &mut frames);
    }
    part_of(id, &frames)
}

/// A part of already encoded frames.
fn part_of(id: &str, frames: &[u8]) -> Vec<u8> {
    let id = &id.as_bytes()[..id.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(6 + id.len() + frames.len());
    out.extend_from_slice(&(id.len() as u16).to_le_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    out.extend_from_slice(frames);
    out
}

/// Records encoded once, on their way to be a part.
#[derive(Default)]
struct Chunk {
    frames: Vec<u8>,
    records: usize,
}

/// The parts of a message: (id, records), or where it is damaged.
fn parts(body: &[u8]) -> Result<Vec<(String, Vec<Record>)>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
        let b = body
            .get(*at..*at + n)
            .ok_or_else(|| format!("cut short at byte {}", *at))?;
        *at += n;
        Ok(b)
    };
    while at < body.len() {
        let n = u16::from_le_bytes(take(&mut at, 2)?.try_into().unwrap_or([0; 2])) as usize;
        let id = String::from_utf8_lossy(take(&mut at, n)?).into_owned();
        let n = u32::from_le_bytes(take(&mut at, 4)?.try_into().unwrap_or([0; 4])) as usize;
        let start = at;
        let frames = take(&mut at, n)?;
        let mut records = Vec::new();
        let valid = super::wal::read_frames(frames, |_, r| records.push(r))
            .map_err(|e| format!("part {id:?}: {e}"))?;
        if valid as usize != frames.len() {
            return Err(format!(
                "part {id:?} is damaged at byte {}",
                start + valid as usize
            ));
        }
        out.push((id, records));
    }
    Ok(out)
}

/// A message id made of what a record is, for inputs every server produces on its own.
fn content_id(rec: &Record) -> Option<String> {
    match rec {
        Record::State { state, device, t } => {
            // The same change seen by two servers' clocks a moment apart: one id per device,
            // state and minute of the change.
            Some(format!("state.{device}.{state}.{}", (*t / 60.0) as u64))
        }
        Record::Removed { device, t, .. } => {
            Some(format!("removed.{device}.{}", (*t / 60.0) as u64))
        }
        _ => None,
    }
}

impl Hub {
    /// Opens the live layer of a server in cluster mode: its state is rebuilt from the shared
    /// log (the cluster room feeds it through [`Hub::apply_shared`], from the log's first
    /// message), in `STORE/live-cluster/`, a local copy emptied at each start; a store's own
    /// `STORE/live/` data (of a single server) is left as it is.
    pub fn open_shared(cfg: LiveConfig, log: Arc<dyn SharedLog>) -> Result<Arc<Hub>, LiveError> {
        Self::open_with(cfg, Some(log))
    }

    /// Cluster mode: appends records to the shared log instead of the committer's queue; the
    /// reply comes once they are applied here (see the module doc).
    pub(super) fn submit_shared(
        &self,
        sh: &Shared,
        records: Vec<Record>,
        reply: Option<Reply>,
    ) -> Result<(), LiveError> {
        // State changes and removals go one by one, each under the id of what it is.
        if reply.is_none() && records.iter().all(|r| content_id(r).is_some()) {
            for r in records {
                let id = content_id(&r).unwrap_or_default();
                let mut c = Chunk {
                    records: 1,
                    ..Chunk::default()
                };
                r.encode(0, &mut c.frames);
                self.append_shared(sh, id, c, true, None, None)?;
            }
            return Ok(());
        }
        let id = format!("{}-{}", sh.me, sh.next_id.fetch_add(1, Ordering::Relaxed));
        // A batch larger than a message allows (never one device's datagram: a gateway's
        // batch) goes in parts of at most MAX_MESSAGE_RECORDS records and MAX_PART_BYTES
        // bytes; the reply waits for the last, and fails if any part could not be stored.
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut cur = Chunk::default();
        for r in records {
            let at = cur.frames.len();
            r.encode(0, &mut cur.frames);
            if cur.records > 0
                && (cur.records >= MAX_MESSAGE_RECORDS || cur.frames.len() > MAX_PART_BYTES)
            {
                let frame = cur.frames.split_off(at);
                chunks.push(std::mem::replace(
                    &mut cur,
                    Chunk {
                        frames: frame,
                        records: 0,
                    },
                ));
            }
            cur.records += 1;
        }
        chunks.push(cur);
        let n = chunks.len();
        if n == 1 {
            let c = chunks.pop().unwrap_or_default();
            return self.append_shared(sh, id, c, false, reply, None);
        }
        let last = format!("{id}.{}", n - 1);
        let mut reply = reply;
        for (i, c) in chunks.into_iter().enumerate() {
            if i + 1 == n {
                self.append_shared(sh, last.clone(), c, false, reply.take(), None)?;
            } else {
                let r =
                    self.append_shared(sh, format!("{id}.{i}"), c, false, None, Some(last.clone()));
                if let Err(e) = r {
                    if let Some(reply) = reply.take() {
                        reply(Err(LiveError::Storage(e.to_string())));
                    }
                    return Ok(()); // answered
                }
            }
        }
        Ok(())
    }

    fn append_shared(
        &self,
        sh: &Shared,
        id: String,
        chunk: Chunk,
        alone: bool,
        reply: Option<Reply>,
        fails: Option<String>,
    ) -> Result<(), LiveError> {
        let body = part_of(&id, &chunk.frames);
        if reply.is_some() {
            lock(&sh.pending).insert(
                id.clone(),
                Pending {
                    reply,
                    records: chunk.records,
                    stored: None,
                    failed: None,
                },
            );
        }
        let me = self.me.clone();
        let key = id.clone();
        let done: Appended = Box::new(move |r| {
            let Some(hub) = me.upgrade() else { return };
            let Some(sh) = hub.shared.as_ref() else {
                return;
            };
            let mut pending = lock(&sh.pending);
            match r {
                Ok(seq) => {
                    if let Some(p) = pending.get_mut(&key) {
                        p.stored = Some((seq, Instant::now()));
                    }
                }
                Err(why) => {
                    // A part of a larger batch fails the batch's answer, which comes with its
                    // last part.
                    if let Some(p) = fails.as_ref().and_then(|l| pending.get_mut(l)) {
                        p.failed = Some(why);
                    } else if let Some(p) = pending.remove(&key)
                        && let Some(reply) = p.reply
                    {
                        reply(Err(LiveError::Storage(why)));
                    }
                }
            }
        });
        let part = Part {
            id: id.clone(),
            bytes: body,
            records: chunk.records,
            alone,
        };
        if let Err(e) = sh.log.append(part, done) {
            lock(&sh.pending).remove(&id);
            return Err(e);
        }
        Ok(())
    }

    /// Cluster mode: applies message `seq` of the shared log (its body as stored), in order,
    /// through the committer, part by part (each answering its submitter if it was made
    /// here); waits while the committer's queue is full. A message this server applied
    /// already (a consumer that started over) is skipped.
    pub fn apply_shared(&self, seq: u64, body: &[u8]) -> Result<(), String> {
        let Some(sh) = self.shared.as_ref() else {
            return Err("this hub is not in cluster mode".into());
        };
        if seq <= sh.queued.load(Ordering::Acquire) {
            return Ok(());
        }
        let parts = parts(body).map_err(|e| format!("message {seq} of the shared log: {e}"))?;
        self.await_registry(sh, &parts);
        sh.queued.store(seq, Ordering::Release);
        for (id, records) in parts {
            let mut reply = None;
            if let Some(p) = lock(&sh.pending).remove(&id) {
                match (p.failed, p.reply) {
                    (Some(why), Some(r)) => r(Err(LiveError::Storage(format!(
                        "part of the batch was not stored ({why}); send it again"
                    )))),
                    (None, r) => reply = r,
                    _ => {}
                }
            }
            self.tx
                .send(super::committer::Job {
                    records,
                    queued: Instant::now(),
                    reply,
                    retention: None,
                    stream_seq: Some(seq),
                })
                .map_err(|_| "the log thread has stopped".to_string())?;
        }
        Ok(())
    }

    /// Has the registry know every device that `parts` report for, waiting up to
    /// [`REGISTRY_WAIT`] for rows on their way. A device registered a moment ago on another
    /// server can report there before its row reaches this server's database (rows travel
    /// through the cluster's table bucket, reports through the stream): without the wait this
    /// server would drop a report the others apply, and its state would differ from theirs.
    /// A device removed from this server's registry is not waited for; one still unknown
    /// after the wait is remembered too, and its later reports are not waited for.
    fn await_registry(&self, sh: &Shared, parts: &[(String, Vec<Record>)]) {
        let missing = || -> Vec<String> {
            let reg = self.registry();
            let mut given_up = lock(&sh.given_up);
            let mut ids = Vec::new();
            for r in parts.iter().flat_map(|(_, records)| records.iter()) {
                let Record::Report(r) = r else { continue };
                if reg.has_device(&r.device) {
                    // Registered again since it was given up.
                    if !given_up.is_empty() {
                        given_up.remove(&r.device);
                    }
                } else if !given_up.contains(&r.device) {
                    ids.push(r.device.clone());
                }
            }
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let first = missing();
        if first.is_empty() {
            return;
        }
        // Removed here (this server's registry saw it go): nothing to wait for.
        let removed: Vec<String> = {
            let db = lock(&self.reg_db);
            first
                .into_iter()
                .filter(|id| db.was_removed(id).unwrap_or(false))
                .collect()
        };
        lock(&sh.given_up).extend(removed);
        let start = Instant::now();
        loop {
            if let Err(e) = self.refresh_registry() {
                tracing::warn!(error = %e, "cannot re-read the device registry");
            }
            let ids = missing();
            if ids.is_empty() {
                return;
            }
            if start.elapsed() >= REGISTRY_WAIT {
                tracing::warn!(
                    devices = ids.len(),
                    first = %ids[0],
                    "reports of devices this server's registry does not have (removed?); dropped here"
                );
                let mut given_up = lock(&sh.given_up);
                if given_up.len() + ids.len() > GIVEN_UP {
                    given_up.clear();
                }
                given_up.extend(ids);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Messages of the shared log not yet applied here (`None` when not in cluster mode).
    pub fn shared_lag(&self) -> Option<u64> {
        self.shared.as_ref().map(|sh| sh.log.lag())
    }

    /// The last shared-log sequence number applied here (0 when not in cluster mode).
    pub fn shared_applied(&self) -> u64 {
        self.shared
            .as_ref()
            .map_or(0, |sh| sh.applied.load(Ordering::Acquire))
    }

    /// Answers submissions that the shared log stored long ago but that this server has not
    /// applied yet (it lags): they are durable, which is what an acknowledgement says.
    pub(super) fn answer_stored(&self) {
        let Some(sh) = self.shared.as_ref() else {
            return;
        };
        let late: Vec<(u64, Pending)> = {
            let mut pending = lock(&sh.pending);
            let ids: Vec<String> = pending
                .iter()
                .filter(|(_, p)| p.stored.is_some_and(|(_, t)| t.elapsed() >= APPLY_WAIT))
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter()
                .filter_map(|id| pending.remove(id))
                .map(|p| (p.stored.map_or(0, |s| s.0), p))
                .collect()
        };
        for (seq, p) in late {
            if let Some(why) = p.failed {
                if let Some(reply) = p.reply {
                    reply(Err(LiveError::Storage(why)));
                }
                continue;
            }
            if let Some(reply) = p.reply {
                reply(Ok(Committed {
                    first_seq: (seq << SEQ_SHIFT) | 1,
                    last_seq: (seq << SEQ_SHIFT) | p.records as u64,
                    records: p.records,
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_its_parts_and_a_damaged_one_is_refused_naming_where() {
        let a = vec![Record::FenceDel("f1".into()), Record::FenceDel("f2".into())];
        let b = vec![Record::State {
            t: 5.0,
            state: 3,
            device: "d".into(),
        }];
        let mut body = part("p-1", &a);
        body.extend_from_slice(&part("p-2", &b));
        let got = parts(&body).unwrap();
        assert_eq!(got, vec![("p-1".to_string(), a), ("p-2".to_string(), b)]);
        let cut = parts(&body[..body.len() - 3]).unwrap_err();
        assert!(cut.contains("cut short at byte"), "{cut}");
        let mut bad = body.clone();
        let n = bad.len();
        bad[n - 2] ^= 0xff; // inside the last frame: its checksum fails
        let e = parts(&bad).unwrap_err();
        assert!(e.contains("p-2") && e.contains("damaged"), "{e}");
        assert!(parts(&[]).unwrap().is_empty());
    }
}
