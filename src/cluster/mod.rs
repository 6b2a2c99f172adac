//! Cluster mode: several servers behind a load balancer share layers and live devices through
//! a NATS JetStream cluster (`urbis serve --cluster nats://…`). This room is the only one that
//! speaks NATS; the others see a [`crate::live::SharedLog`] (the live room) or files and database rows.
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
pub mod reports;
pub mod tables;

pub use reports::ReportLog;

use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Messages of the stream not yet applied here beyond which `/ready` fails.
pub const LAG_BOUND: u64 = 1000;
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
