//! The report stream: the live room's [`SharedLog`] on JetStream. A publisher puts the
//! submissions of this server into messages of the stream `NAME_reports` (group commit over
//! the network, retried under the same message id); an applier reads the stream in order
//! from the first message this server has not applied and feeds every message to the hub,
//! reading from a new consumer as soon as the stream has a new leader.

use super::{Cluster, ClusterError, js_err};
use crate::live::{Appended, Hub, LiveError, Part, SharedLog};
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Submissions waiting to be published, at most (beyond: the device is told to retry).
const QUEUE: usize = 16_384;
/// How long a publish is retried (a NATS node lost: a new stream leader in ~5 s).
const PUBLISH_FOR: Duration = Duration::from_secs(20);
/// Messages published and not yet acknowledged, at most (more submissions wait and go in
/// the next, larger message).
const IN_FLIGHT: usize = 4;
/// Bytes of one message, at most (NATS takes 1 MiB by default).
const MAX_MESSAGE_BYTES: usize = 512 * 1024;

impl Cluster {
    /// The live room's shared log on this cluster's stream: starts the publisher.
    pub fn report_log(&self) -> Arc<ReportLog> {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let log = Arc::new(ReportLog {
            tx,
            cluster: self.clone(),
            applied: std::sync::OnceLock::new(),
        });
        tokio::spawn(publisher(self.clone(), rx));
        log
    }

    /// Reads the stream from its first message into `hub`, in order, for as long as the
    /// process runs (the consumer is made again from the last message applied after a
    /// failure); and asks the stream's length twice a second for the lag.
    ///
    /// When the NATS node that leads the stream dies, nothing can be read (nor stored) until
    /// the stream's Raft group has elected another leader: NATS 2.9 waits 4 to 9 s for that.
    /// The consumer is asked for again every 250 ms meanwhile (each ask waits up to 1 s), so
    /// reading resumes within moments of the election; the outage is
    /// logged once when it starts and once when it ends, with its length.
    pub fn start_applier(&self, hub: Arc<Hub>) {
        let me = self.clone();
        let h = Arc::clone(&hub);
        tokio::spawn(async move {
            let mut down: Option<(Instant, Instant)> = None;
            loop {
                let e = match me.open_reader(&h).await {
                    Ok(messages) => {
                        if let Some((since, _)) = down.take() {
                            tracing::info!(
                                after_ms = since.elapsed().as_millis() as u64,
                                "reading the cluster's report stream again"
                            );
                        }
                        me.read(&h, messages).await
                    }
                    Err(e) => e,
                };
                match &mut down {
                    None => {
                        tracing::warn!(error = %e, "cannot read the cluster's report stream; asking again");
                        let now = Instant::now();
                        down = Some((now, now));
                    }
                    Some((since, told)) if told.elapsed() >= Duration::from_secs(10) => {
                        tracing::warn!(
                            error = %e,
                            for_s = since.elapsed().as_secs(),
                            "still cannot read the cluster's report stream"
                        );
                        *told = Instant::now();
                    }
                    Some(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            // The NATS node that leads the stream, as last asked.
            let mut leader: Option<String> = None;
            loop {
                tick.tick().await;
                // Asked with a short timeout: while the stream elects a leader nobody answers,
                // and the new leader should be seen within a tick of its election.
                let asked = tokio::time::timeout(
                    Duration::from_secs(1),
                    me.js.get_stream(me.stream_name()),
                );
                if let Ok(Ok(s)) = asked.await {
                    let info = s.cached_info();
                    let last = info.state.last_sequence;
                    me.status.stream_last.store(last, Ordering::Release);
                    if hub.shared_applied() >= last {
                        me.status.caught_up.store(true, Ordering::Release);
                    }
                    let now = info.cluster.as_ref().and_then(|c| c.leader.clone());
                    if now.is_some() && leader != now {
                        if leader.is_some() {
                            me.status.leader_changes.fetch_add(1, Ordering::AcqRel);
                        }
                        leader = now;
                    }
                }
            }
        });
    }

    /// An ordered consumer of the stream from the message after the last one applied.
    async fn open_reader(&self, hub: &Arc<Hub>) -> Result<consumer::pull::Ordered, ClusterError> {
        let start = hub.shared_applied() + 1;
        let stream = self
            .js
            .get_stream(self.stream_name())
            .await
            .map_err(|e| js_err("stream", e))?;
        // Asked with a 1 s timeout (not the context's 2 s): right after the stream's leader
        // died, NATS answers only once its metadata group has a leader too, and the next ask
        // should follow that closely. (A consumer made after its ask timed out is never read
        // and NATS drops it after 30 s idle.)
        let asked = stream.create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        });
        let consumer = tokio::time::timeout(Duration::from_secs(1), asked)
            .await
            .map_err(|_| ClusterError::JetStream("consumer: timed out after 1 s".into()))?
            .map_err(|e| js_err("consumer", e))?;
        consumer.messages().await.map_err(|e| js_err("messages", e))
    }

    /// Applies what `messages` delivers until it fails or stalls; returns why it stopped.
    async fn read(&self, hub: &Arc<Hub>, mut messages: consumer::pull::Ordered) -> ClusterError {
        // The consumer lives on one NATS node (the stream leader's): if it dies, the client
        // notices only after missed heartbeats (tens of seconds). Made again instead as soon
        // as the stream has another leader, or when the stream has messages this server has
        // not seen for 2 s.
        let changes = self.status.leader_changes.load(Ordering::Acquire);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut progress = Instant::now();
        loop {
            let m = tokio::select! {
                m = messages.next() => m,
                _ = tick.tick() => {
                    if self.status.leader_changes.load(Ordering::Acquire) != changes {
                        return ClusterError::JetStream(
                            "the report stream has a new leader; reading from it".into(),
                        );
                    }
                    let behind = self.status.stream_last.load(Ordering::Acquire) > hub.shared_applied();
                    if behind && progress.elapsed() > Duration::from_secs(2) {
                        return ClusterError::JetStream(
                            "the report stream's consumer stalled (its NATS node may be gone)"
                                .into(),
                        );
                    }
                    if !behind {
                        progress = Instant::now();
                    }
                    continue;
                }
            };
            let Some(m) = m else {
                return ClusterError::JetStream("the report stream's consumer ended".into());
            };
            progress = Instant::now();
            let m = match m {
                Ok(m) => m,
                Err(e) => return js_err("message", e),
            };
            let seq = match m.info() {
                Ok(i) => i.stream_sequence,
                Err(e) => return js_err("message info", e),
            };
            let h = Arc::clone(hub);
            let payload = m.payload.clone();
            let applied = tokio::task::block_in_place(|| h.apply_shared(seq, &payload));
            if let Err(e) = applied {
                // A message this version cannot read: stop here rather than skip it (the
                // state would differ from the other servers'); /ready fails on the lag.
                tracing::error!(error = %e, "cannot apply the cluster's report stream");
                tokio::time::sleep(Duration::from_secs(5)).await;
                return ClusterError::JetStream(e);
            }
        }
    }
}

/// The live room's [`SharedLog`] on the cluster's report stream.
pub struct ReportLog {
    tx: tokio::sync::mpsc::Sender<(Part, Appended)>,
    cluster: Cluster,
    /// The hub it feeds, to measure the lag against.
    applied: std::sync::OnceLock<std::sync::Weak<Hub>>,
}

impl ReportLog {
    /// Names the hub this log feeds (for the lag in [`SharedLog::ready`]).
    pub fn feeds(&self, hub: &Arc<Hub>) {
        let _ = self.applied.set(Arc::downgrade(hub));
    }

    /// The last stream sequence the hub applied.
    fn applied(&self) -> u64 {
        self.applied
            .get()
            .and_then(|w| w.upgrade())
            .map_or(0, |h| h.shared_applied())
    }
}

impl SharedLog for ReportLog {
    fn append(&self, part: Part, done: Appended) -> Result<(), LiveError> {
        self.tx.try_send((part, done)).map_err(|e| match e {
            tokio::sync::mpsc::error::TrySendError::Full(_) => LiveError::Overloaded,
            tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                LiveError::Storage("the cluster publisher has stopped".into())
            }
        })
    }

    fn ready(&self) -> Result<(), String> {
        self.cluster.ready(self.applied())
    }

    fn lag(&self) -> u64 {
        self.cluster
            .status
            .stream_last
            .load(Ordering::Acquire)
            .saturating_sub(self.applied())
    }
}

/// Publishes submissions to the stream: the parts waiting are put together in one message
/// (up to [`crate::live::MAX_MESSAGE_RECORDS`] records or 512 KiB: a group commit over the
/// network, so that a busy server sends few large messages rather than one per datagram),
/// with at most [`IN_FLIGHT`] messages awaiting their acknowledgement; a part that must be
/// deduplicated goes alone under its own id. A publish that fails is tried again with the
/// same message id (the stream stores it once) for up to [`PUBLISH_FOR`].
async fn publisher(cluster: Cluster, mut rx: tokio::sync::mpsc::Receiver<(Part, Appended)>) {
    let subject = cluster.subject();
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut carry: Option<(Part, Appended)> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let alone = first.0.alone;
        let (mut records, mut bytes) = (first.0.records, first.0.bytes.len());
        let mut batch = vec![first];
        while !alone && records < crate::live::MAX_MESSAGE_RECORDS && bytes < MAX_MESSAGE_BYTES {
            match rx.try_recv() {
                Ok(p)
                    if p.0.alone
                        || records + p.0.records > crate::live::MAX_MESSAGE_RECORDS
                        || bytes + p.0.bytes.len() > MAX_MESSAGE_BYTES =>
                {
                    carry = Some(p);
                    break;
                }
                Ok(p) => {
                    records += p.0.records;
                    bytes += p.0.bytes.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let id = if alone || batch.len() == 1 {
            batch[0].0.id.clone()
        } else {
            format!("{}+{}", batch[0].0.id, batch.len())
        };
        let mut body = Vec::with_capacity(bytes);
        let mut dones = Vec::with_capacity(batch.len());
        for (p, done) in batch {
            body.extend_from_slice(&p.bytes);
            dones.push(done);
        }
        let body = bytes::Bytes::from(body);
        let js = cluster.js.clone();
        let subject = subject.clone();
        // Sent in order here; only the wait for the acknowledgement runs beside the next.
        let first = publish_once(&js, &subject, &id, body.clone()).await;
        tokio::spawn(async move {
            let _slot = slot;
            let start = Instant::now();
            let mut sent = first;
            let outcome = loop {
                let outcome = match sent {
                    Ok(ack) => ack.await.map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(ack) => break Ok(ack.sequence),
                    Err(e) if start.elapsed() >= PUBLISH_FOR => {
                        break Err(format!("the cluster did not store the report: {e}"));
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        sent = publish_once(&js, &subject, &id, body.clone()).await;
                    }
                }
            };
            for done in dones {
                done(outcome.clone());
            }
        });
    }
}

async fn publish_once(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    body: bytes::Bytes,
) -> Result<jetstream::context::PublishAckFuture, String> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
    js.publish_with_headers(subject.to_string(), headers, body)
        .await
        .map_err(|e| e.to_string())
}
