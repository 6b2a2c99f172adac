//! Operations: what the operations team watches. Prometheus metrics of the HTTP API, the
//! tile engine and cache, device ingest, the log, the stream and the process
//! ([`metrics::Metrics`]), and the readiness checks behind `/ready` ([`ready`]).
//!
//! The other rooms do not know this one: the engine and the live room each declare a small
//! observer trait ([`crate::engine::TileObserver`], [`crate::live::LiveObserver`]) that
//! [`metrics::Metrics`] implements and the server wires in; figures that are states rather
//! than events (devices by state, cache bytes, stream clients) are read at scrape time.

pub mod metrics;
pub mod ready;
