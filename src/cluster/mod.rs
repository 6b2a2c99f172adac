//! Cluster mode: several servers behind a load balancer share layers and live devices through
//! a NATS JetStream cluster (`urbis serve --cluster nats://…`). This room is the only one that
//! speaks NATS; the others see a [`SharedLog`] (the live room) or files and database rows.
//!
//! ```text
//! stream  NAME_reports   subject NAME.reports, replicas R, file storage, 2 min dedup window:
//!                        the live room's shared log; one message = one submission as WAL
//!                        frames (see live::shared), header Nats-Msg-Id
//! KV      NAME_layers    key = layer name, value = JSON {sha256, bytes, entry}: the version
//!                        every server serves; deleted when the layer is removed (layers.rs)
//! objects NAME_files     key = the layer file's SHA-256 (hex): the immutable layer files
//! KV      NAME_tables    key = table.hex(primary key), value = JSON row: API keys, layer
//!                        classifications and catalog metadata, the device registry, ingest
//!                        keys (tables.rs)
//! KV      NAME_alerts    key = rule.hex(rule name), value = JSON {state, since, at}: the last
//!                        change of each rule over the shared state, announced once (alerts.rs)
//! ```
//!
//! A report is acknowledged once the stream has stored it on a quorum of its replicas, and
//! once this server has applied it; every server reads the stream in order from its first
//! message and applies it to its own live state, so all serve the same devices, tiles and
//! stream (see `live::shared` for why events are derived, not shared). Layer files and rows
//! are replicated by watching: a change made on one server's store (an import, a rollback, a
//! key created) is published, and every server applies what the buckets hold.

pub mod alerts;
pub mod layers;
pub mod tables;

use crate::live::{Appended, Hub, LiveError, Part, SharedLog};
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Messages of the stream not yet applied here beyond which `/ready` fails.
pub const LAG_BOUND: u64 = 1000;
/// Submissions waiting to be published, at most (beyond: the device is told to retry).
const QUEUE: usize = 16_384;
/// How long a publish is retried (a NATS node lost: a new stream leader in ~5 s).
const PUBLISH_FOR: Duration = Duration::from_secs(20);
/// Messages published and not yet acknowledged, at most (more submissions wait and go in
/// the next, larger message).
const IN_FLIGHT: usize = 4;
/// Bytes of one message, at most (NATS takes 1 MiB by default).
const MAX_MESSAGE_BYTES: usize = 512 * 1024;

/// Where the cluster is and what its parts are called.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:port`), any of the cluster's.
    pub urls: Vec<String>,
    /// Prefix of the stream and buckets: servers with the same name share them.
    pub name: String,
    /// Replicas of the stream and buckets (3 for a three-node cluster; 1 for one nats-server).
    pub replicas: usize,
}

/// NATS URLs for logs and messages: without a `user:password@` part.
pub fn display_urls(urls: &[String]) -> String {
    urls.iter()
        .map(|u| match u.rsplit_once('@') {
            Some((head, host)) => {
                let scheme = head.split_once("://").map_or("", |(s, _)| s);
                if scheme.is_empty() {
                    format!("***@{host}")
                } else {
                    format!("{scheme}://***@{host}")
                }
            }
            None => u.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Cluster errors, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No NATS server answered.
    #[error("cannot reach NATS at {urls}: {why} (is nats-server running, with JetStream on?)")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// The client's error.
        why: String,
    },
    /// JetStream refused or did not answer.
    #[error("JetStream: {0}")]
    JetStream(String),
}

fn js_err(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::JetStream(format!("{what}: {e}"))
}

/// A connection to the cluster and its stream and buckets.
#[derive(Clone)]
pub struct Cluster {
    cfg: ClusterConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    status: Arc<Status>,
}

/// What `/ready` and the metrics read of the cluster.
#[derive(Debug, Default)]
pub struct Status {
    /// The stream's last sequence number, as last asked.
    pub stream_last: AtomicU64,
    /// Whether the applier has reached the stream's end once since start (until then the
    /// server is not ready: it would serve an old state).
    pub caught_up: AtomicBool,
    /// The NATS node that leads the stream, as last asked.
    leader: std::sync::Mutex<Option<String>>,
    /// How many times the stream's leader changed: the reader's consumer lives on the leader's
    /// node, so a change (that node died, or handed over) means reading from a new one.
    leader_changes: AtomicU64,
}

impl Cluster {
    /// Connects to NATS (for up to 30 s: the cluster may be starting too) and makes sure the
    /// stream and buckets exist (with `replicas` replicas).
    pub async fn connect(cfg: ClusterConfig) -> Result<Cluster, ClusterError> {
        let urls = display_urls(&cfg.urls);
        let start = Instant::now();
        let client = loop {
            let opts = async_nats::ConnectOptions::new()
                .name(format!("urbis {}", env!("CARGO_PKG_VERSION")))
                .connection_timeout(Duration::from_secs(3))
                .max_reconnects(None);
            match opts.connect(cfg.urls.clone()).await {
                Ok(c) => break c,
                Err(e) if start.elapsed() > Duration::from_secs(30) => {
                    return Err(ClusterError::Connect {
                        urls,
                        why: e.to_string(),
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach NATS yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        // Requests (a publish's acknowledgement among them) time out after 2 s instead of 5:
        // a publish lost with a NATS node is sent again sooner (under the same message id).
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(2))
            .build(client.clone());
        // The JetStream API is silent while the cluster elects its meta leader (after a
        // restart, up to ~15 s): ask until it answers, found or not. (Not `query_account`:
        // async-nats 0.51 cannot read nats-server 2.9's answer to it.)
        let probe = format!("{}_reports", cfg.name);
        loop {
            use jetstream::context::GetStreamErrorKind;
            match js.get_stream(&probe).await {
                Ok(_) => break,
                Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(_)) => break,
                Err(e) if start.elapsed() > Duration::from_secs(45) => {
                    return Err(js_err(
                        "no answer (is JetStream enabled on the servers?)",
                        e,
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        let c = Cluster {
            cfg,
            client,
            js,
            status: Arc::new(Status::default()),
        };
        c.setup().await?;
        Ok(c)
    }

    async fn setup(&self) -> Result<(), ClusterError> {
        let name = self.stream_name();
        if self.js.get_stream(&name).await.is_err() {
            self.js
                .create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![self.subject()],
                    num_replicas: self.cfg.replicas,
                    storage: stream::StorageType::File,
                    duplicate_window: Duration::from_secs(120),
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    js_err(
                        &format!(
                            "cannot create stream {name} with {} replicas (a single nats-server \
                             needs --cluster-replicas 1)",
                            self.cfg.replicas
                        ),
                        e,
                    )
                })?;
        }
        for bucket in [
            self.bucket("layers"),
            self.bucket("tables"),
            self.bucket("alerts"),
        ] {
            if self.js.get_key_value(&bucket).await.is_err() {
                // The bucket's stream made as the KV convention has it (what
                // `create_key_value` would make): async-nats 0.51 first asks for the account's
                // limits, whose answer from nats-server 2.9 it cannot read.
                self.js
                    .create_stream(stream::Config {
                        name: format!("KV_{bucket}"),
                        subjects: vec![format!("$KV.{bucket}.>")],
                        max_messages_per_subject: 5,
                        num_replicas: self.cfg.replicas,
                        storage: stream::StorageType::File,
                        allow_rollup: true,
                        deny_delete: true,
                        allow_direct: true,
                        discard: stream::DiscardPolicy::New,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| js_err(&format!("cannot create bucket {bucket}"), e))?;
            }
        }
        let files = self.bucket("files");
        if self.js.get_object_store(&files).await.is_err() {
            self.js
                .create_object_store(jetstream::object_store::Config {
                    bucket: files.clone(),
                    num_replicas: self.cfg.replicas,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| js_err(&format!("cannot create object store {files}"), e))?;
        }
        Ok(())
    }

    /// What the readiness check and the metrics read.
    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// Whether the client is connected to a NATS server now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn stream_name(&self) -> String {
        format!("{}_reports", self.cfg.name)
    }

    fn subject(&self) -> String {
        format!("{}.reports", self.cfg.name)
    }

    pub(crate) fn bucket(&self, what: &str) -> String {
        format!("{}_{what}", self.cfg.name)
    }

    pub(crate) fn js(&self) -> &jetstream::Context {
        &self.js
    }

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
    /// The consumer is asked for again every 250 ms meanwhile (each ask waits up to the
    /// context's 2 s), so reading resumes within moments of the election; the outage is
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
                    let mut leader = me.status.leader.lock().unwrap_or_else(|p| p.into_inner());
                    if now.is_some() && *leader != now {
                        if leader.is_some() {
                            me.status.leader_changes.fetch_add(1, Ordering::AcqRel);
                        }
                        *leader = now;
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

    /// Why this server should not take traffic now, if it should not: the NATS connection is
    /// lost, or it lags the report stream by more than [`LAG_BOUND`] messages.
    pub fn ready(&self, applied: u64) -> Result<(), String> {
        if !self.connected() {
            return Err("the NATS connection is lost".into());
        }
        let last = self.status.stream_last.load(Ordering::Acquire);
        let lag = last.saturating_sub(applied);
        if !self.status.caught_up.load(Ordering::Acquire) {
            return Err(format!(
                "catching up with the cluster's report stream ({lag} messages to apply)"
            ));
        }
        if lag > LAG_BOUND {
            return Err(format!(
                "{lag} messages behind the cluster's report stream (more than {LAG_BOUND})"
            ));
        }
        Ok(())
    }
}

/// A key-value bucket followed from its history on (the layers and rows replicators).
pub(crate) struct Follow {
    kv: jetstream::kv::Store,
    watch: jetstream::kv::Watch,
    revision: u64,
}

impl Follow {
    /// Opens a watch on bucket `what` and reads the last entry of every key in it, puts and
    /// deletions, before anything is done with them (a server starting later catches up, and
    /// deletions made while it was away are not undone); the watch goes on after them.
    pub(crate) async fn open(
        cluster: &Cluster,
        what: &str,
    ) -> Result<(Follow, Vec<jetstream::kv::Entry>), ClusterError> {
        let name = cluster.bucket(what);
        let kv = cluster
            .js
            .get_key_value(&name)
            .await
            .map_err(|e| js_err(&format!("bucket {name}"), e))?;
        let status = kv
            .status()
            .await
            .map_err(|e| js_err(&format!("bucket {name}"), e))?;
        let mut watch = kv
            .watch_with_history(">")
            .await
            .map_err(|e| js_err(&format!("bucket {name}"), e))?;
        let mut history = Vec::new();
        let mut revision = 0;
        if status.values() > 0 {
            loop {
                let e = match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
                    Ok(Some(Ok(e))) => e,
                    Ok(Some(Err(e))) => return Err(js_err(&format!("bucket {name}"), e)),
                    _ => {
                        return Err(ClusterError::JetStream(format!(
                            "the history of bucket {name} did not arrive within 10 s"
                        )));
                    }
                };
                revision = e.revision;
                let last = e.delta == 0;
                history.push(e);
                if last {
                    break;
                }
            }
        }
        Ok((
            Follow {
                kv,
                watch,
                revision,
            },
            history,
        ))
    }

    /// The bucket.
    pub(crate) fn kv(&self) -> &jetstream::kv::Store {
        &self.kv
    }

    /// The next change. The watch recovers by itself from a lost heartbeat; if it ends, it is
    /// made again after the last revision seen (a watch made anew would start at "new" and
    /// lose what changed in between). Cancel-safe: a change is taken only when returned.
    pub(crate) async fn next(&mut self) -> jetstream::kv::Entry {
        loop {
            match self.watch.next().await {
                Some(Ok(e)) => {
                    self.revision = e.revision;
                    return e;
                }
                Some(Err(_)) => {}
                None => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match self.kv.watch_all_from_revision(self.revision + 1).await {
                        Ok(w) => self.watch = w,
                        Err(e) => {
                            tracing::warn!(bucket = %self.kv.name, error = %e, "cannot watch the bucket; again in 1 s")
                        }
                    }
                }
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
