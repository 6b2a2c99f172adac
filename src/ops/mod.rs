//! Operations: what the operations team watches and is told. Prometheus metrics of the HTTP
//! API, the tile engine and cache, device ingest, the log, the stream and the process
//! ([`metrics::Metrics`]); the readiness checks behind `/ready` ([`ready`]); minute figures
//! kept in the store ([`minutes`]) for the operation report ([`report`]) and the alert rules
//! ([`alerts`]); the platform acceptance checks ([`acceptance`]) and the fleet simulator
//! ([`simulate`]), both clients of a running server over [`http`].
//!
//! The other rooms do not know this one: the engine and the live room each declare a small
//! observer trait ([`crate::engine::TileObserver`], [`crate::live::LiveObserver`]) that
//! [`Observer`] implements and the server wires in; figures that are states rather than
//! events (devices by state, cache bytes, stream clients) are read when asked for.

pub mod acceptance;
pub mod alerts;
pub mod http;
pub mod metrics;
pub mod minutes;
pub mod ready;
pub mod report;
pub mod simulate;

use std::sync::Arc;

/// The observer the server wires into the engine and the hub (unless `--no-metrics`): events
/// go to the Prometheus metrics and to the minute figures (the operation report and the alert
/// rules read them).
pub struct Observer {
    /// The Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The minute figures.
    pub minutes: Arc<minutes::Minutes>,
}

impl crate::engine::TileObserver for Observer {
    fn tile_made(&self, layer: &str, z: u8, seconds: f64, bytes: usize, dropped: usize) {
        self.metrics.tile_made(layer, z, seconds, bytes, dropped);
    }

    fn cache_lookup(&self, hit: bool) {
        self.metrics.cache_lookup(hit);
        self.minutes.count(|f| {
            if hit {
                f.cache_hits += 1;
            } else {
                f.cache_misses += 1;
            }
        });
    }
}

impl crate::live::LiveObserver for Observer {
    fn ingest(&self, protocol: &'static str, outcome: &'static str, payloads: u64, records: u64) {
        self.metrics.ingest(protocol, outcome, payloads, records);
        self.minutes.count(|f| {
            *f.ingest.entry(format!("{protocol} {outcome}")).or_default() += payloads;
            f.records += records;
        });
    }

    fn log_sync(&self, seconds: f64) {
        self.metrics.log_sync(seconds);
    }

    fn stream_lag(&self, seconds: f64) {
        self.metrics.stream_lag(seconds);
    }

    fn fence_event(&self, kind: &'static str) {
        self.metrics.fence_event(kind);
        self.minutes
            .count(|f| *f.fence_events.entry(kind.to_string()).or_default() += 1);
    }
}
