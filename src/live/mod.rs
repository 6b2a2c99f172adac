//! Live devices: the room where NB-IoT trackers, meters and sensors become live points.
//!
//! The [`Hub`] is the room's one front door (see `ARCHITECTURE.md`, flow 3). A transport
//! (CoAP in [`coap`], HTTP in `api::live`, later DTLS and MQTT) hands a payload and its
//! credential to [`Hub::admit`], which authenticates it against the [`registry`], decodes it
//! (SenML JSON/CBOR or compact JSON) and answers with the accepted records as a [`Batch`] and
//! the refused ones with why; [`Hub::commit`] gives the batch to the committer thread, which
//! plans the group (late flags, geofence events from [`fence`]), appends it to the write-ahead
//! log, calls `fdatasync` once for the group, and only then applies it to the live state,
//! acknowledges it and publishes it to `/stream` subscribers and the live tile cache. Reads go
//! through views that copy ([`Hub::devices`], [`Hub::device`], [`Hub::track`],
//! [`Hub::subscribe`], [`Hub::layer_info`], [`Hub::tile`]); the log format, the state and the
//! payload parsers are private to the room.
//!
//! In cluster mode ([`Hub::open_shared`]) the log that acknowledges is a replicated one that
//! every server reads in order ([`SharedLog`], implemented by the cluster room; see
//! `shared.rs`), and the local log is a copy rebuilt at each start.
//!
//! Invariants: an acknowledged report is in the fsynced log (in cluster mode: on a quorum of
//! the shared log's replicas); the live state changes only
//! after the log holds what changed it (if an append fails, nothing of its group is visible,
//! the hub stops acknowledging and `/ready` fails); recovery (the last snapshot,
//! `STORE/live/snapshot.json`, plus the log after it) applies records with the same function
//! the committer uses. Depends on `tile` (geometry and MVT encoding of live tiles) and on
//! `store` for the database the registry lives in: the engine draws live layers through the
//! hub, not the other way.

mod admit;
pub mod coap;
mod committer;
mod devices;
pub mod dtls;
pub mod fence;
pub mod fuzzing;
mod grid;
mod hub;
mod payload;
pub mod registry;
mod retention;
mod shared;
mod snapshot;
mod state;
mod stream;
mod tiles;
mod wal;

pub use admit::{Admission, AdmitError, Batch, Rejected};
pub use committer::{Committed, Reply};
pub use hub::{DeviceList, DeviceQuery, Fix, Hub, LiveLayerInfo, Pulse};
pub use payload::Format;
pub use registry::Principal;
pub use retention::{Deleted, RetentionPlan, RetentionReport};
pub use shared::{Appended, MAX_MESSAGE_RECORDS, Part, SEQ_SHIFT, SharedLog, part};
pub use state::{DevState, Device};
pub use stream::{STREAM_BUFFER, StreamEvent, Subscription};
pub use wal::SEGMENT_BYTES;

use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

/// Settings of the live layer.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Store directory (the live data goes in `live/` inside it).
    pub store_dir: PathBuf,
    /// How long position history is kept, seconds.
    pub retention_s: u64,
    /// Whole log segments last written longer ago than this are deleted by the hourly sweep:
    /// the longest retention of any live layer (at least `retention_s`; per-layer retention
    /// within it is the exact run of `Hub::run_retention`).
    pub keep_segments_s: u64,
    /// Tile buffer in tile units.
    pub buffer: u32,
    /// Submissions waiting for the committer, at most (beyond: 4.29 / 429).
    pub queue: usize,
    /// Log segment size, bytes (the unit retention deletes).
    pub segment_bytes: u64,
    /// Plain CoAP reports are refused: devices report over DTLS only.
    pub dtls_only: bool,
}

/// What can go wrong at the hub's door, other than admission ([`AdmitError`]).
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The committer's queue is full: try again shortly.
    #[error("overloaded: try again in a few seconds")]
    Overloaded,
    /// The log cannot be written: nothing is acknowledged until an operator fixes it.
    #[error("storage failure, reports are not being accepted: {0}")]
    Storage(String),
    /// No device of that id.
    #[error("no device {0}")]
    UnknownDevice(String),
    /// No geofence of that id.
    #[error("no geofence {0}")]
    UnknownFence(String),
    /// A geofence that cannot be stored, and why.
    #[error("geofence: {0}")]
    BadFence(String),
    /// File trouble opening the live data.
    #[error("live layer: {0}")]
    Io(String),
    /// The registry cannot be read.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
}

/// Seconds since the epoch, now.
pub fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

// Poisoned locks are taken anyway: every writer leaves the data consistent between
// statements, and a panicked request must not take the live room down with it.
fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the live room tells the operations room as it works (metrics); every method has a
/// default that does nothing. Set once with [`Hub::observe`]. Called on hot paths: quick,
/// never blocking.
pub trait LiveObserver: Send + Sync {
    /// `payloads` payloads over `protocol` (`coap`, `coaps`, `http`) ended as `outcome`
    /// (`accepted`, `partial`, `refused`, `malformed`, `overloaded`, `unavailable`), with
    /// `records` records stored between them.
    fn ingest(
        &self,
        _protocol: &'static str,
        _outcome: &'static str,
        _payloads: u64,
        _records: u64,
    ) {
    }
    /// A group of records was written and made durable in `seconds`.
    fn log_sync(&self, _seconds: f64) {}
    /// A report reached the stream `seconds` after the server took it.
    fn stream_lag(&self, _seconds: f64) {}
    /// A geofence event was raised (`enter`, `exit`, `cross`).
    fn fence_event(&self, _kind: &'static str) {}
}
