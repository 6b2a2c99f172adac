//! The Prometheus metrics (`GET /metrics`, OpenMetrics text) through the `prometheus-client`
//! crate. Labels are bounded: route patterns (never raw paths), layer names, zoom bands,
//! status classes, protocols and outcomes; never a device id or a key.

use crate::engine::{Engine, TileObserver};
use crate::live::{Hub, LiveObserver};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// The media type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TileLabels {
    layer: String,
    zoom: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IngestLabels {
    protocol: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabels {
    layer: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LayerLabels {
    layer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

fn seconds() -> Histogram {
    // 0.1 ms to about 3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

fn tile_bytes() -> Histogram {
    // 64 B to 2 MB.
    Histogram::new(exponential_buckets(64.0, 2.0, 16))
}

/// A counter of a total kept elsewhere, brought up to that total at scrape time.
fn catch_up(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// Every metric of the server, and the registry that encodes them.
pub struct Metrics {
    enabled: bool,
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Family<HttpLabels, Histogram, fn() -> Histogram>,
    tile_seconds: Family<TileLabels, Histogram, fn() -> Histogram>,
    tile_bytes: Family<TileLabels, Histogram, fn() -> Histogram>,
    tile_dropped: Family<TileLabels, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_evictions: Counter,
    cache_bytes: Gauge,
    cache_entries: Gauge,
    ingest_payloads: Family<IngestLabels, Counter>,
    ingest_records: Family<ProtocolLabels, Counter>,
    log_sync_seconds: Histogram,
    stream_lag_seconds: Histogram,
    stream_clients: Gauge,
    cluster_lag: Gauge,
    devices: Family<DeviceLabels, Gauge>,
    fence_events: Family<KindLabels, Counter>,
    last_report: Family<LayerLabels, Gauge<f64, AtomicU64>>,
    alarms_open: Gauge,
    alarm_oldest: Gauge<f64, AtomicU64>,
    ready: Gauge,
    disk_free: Gauge<f64, AtomicU64>,
    imports: Family<OutcomeLabels, Counter>,
    process_cpu: Counter<f64, AtomicU64>,
    process_resident: Gauge,
    process_fds: Gauge,
    process_threads: Gauge,
    process_start: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `urbis_` prefix (process metrics under
    /// `process_`, as Prometheus's own exporters name them).
    pub fn new() -> Metrics {
        let mut root = Registry::default();
        let m = Metrics {
            enabled: true,
            registry: Registry::default(),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(seconds),
            tile_seconds: Family::new_with_constructor(seconds),
            tile_bytes: Family::new_with_constructor(tile_bytes),
            tile_dropped: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_evictions: Counter::default(),
            cache_bytes: Gauge::default(),
            cache_entries: Gauge::default(),
            ingest_payloads: Family::default(),
            ingest_records: Family::default(),
            log_sync_seconds: seconds(),
            stream_lag_seconds: seconds(),
            stream_clients: Gauge::default(),
            cluster_lag: Gauge::default(),
            devices: Family::default(),
            fence_events: Family::default(),
            last_report: Family::default(),
            alarms_open: Gauge::default(),
            alarm_oldest: Gauge::default(),
            ready: Gauge::default(),
            disk_free: Gauge::default(),
            imports: Family::default(),
            process_cpu: Counter::default(),
            process_resident: Gauge::default(),
            process_fds: Gauge::default(),
            process_threads: Gauge::default(),
            process_start: Gauge::default(),
        };
        {
            let r = root.sub_registry_with_prefix("urbis");
            r.register(
                "http_requests",
                "HTTP requests by method, route pattern and status class",
                m.http_requests.clone(),
            );
            r.register_with_unit(
                "http_request_duration",
                "Time to answer an HTTP request, by method, route pattern and status class",
                Unit::Seconds,
                m.http_seconds.clone(),
            );
            r.register_with_unit(
                "tile_generation_duration",
                "Time to make a layer's part of a tile (cache misses), by layer and zoom band",
                Unit::Seconds,
                m.tile_seconds.clone(),
            );
            r.register_with_unit(
                "tile_size",
                "Size of a layer's part of a tile as made, by layer and zoom band",
                Unit::Bytes,
                m.tile_bytes.clone(),
            );
            r.register(
                "tile_dropped_features",
                "Features the byte budget left out of tiles, by layer and zoom band",
                m.tile_dropped.clone(),
            );
            r.register(
                "tile_cache_hits",
                "Tile requests answered from the cache",
                m.cache_hits.clone(),
            );
            r.register(
                "tile_cache_misses",
                "Tile requests that had to make the tile",
                m.cache_misses.clone(),
            );
            r.register(
                "tile_cache_evictions",
                "Cached tiles evicted for room",
                m.cache_evictions.clone(),
            );
            r.register_with_unit(
                "tile_cache_size",
                "Bytes of tiles in the cache",
                Unit::Bytes,
                m.cache_bytes.clone(),
            );
            r.register(
                "tile_cache_entries",
                "Tiles in the cache",
                m.cache_entries.clone(),
            );
            r.register(
                "ingest_payloads",
                "Device payloads by protocol and outcome",
                m.ingest_payloads.clone(),
            );
            r.register(
                "ingest_records",
                "Device records stored (durable and acknowledged), by protocol",
                m.ingest_records.clone(),
            );
            r.register_with_unit(
                "log_sync_duration",
                "Time to write and fsync a group of records to the device log",
                Unit::Seconds,
                m.log_sync_seconds.clone(),
            );
            r.register_with_unit(
                "report_stream_lag",
                "Time from a report's arrival to its event on the stream (per group)",
                Unit::Seconds,
                m.stream_lag_seconds.clone(),
            );
            r.register(
                "stream_clients",
                "Clients connected to /stream",
                m.stream_clients.clone(),
            );
            r.register(
                "cluster_lag_messages",
                "Cluster mode: messages of the shared report stream not yet applied here (0 on a single server)",
                m.cluster_lag.clone(),
            );
            r.register(
                "devices",
                "Registered devices by live layer and state",
                m.devices.clone(),
            );
            r.register(
                "geofence_events",
                "Geofence events raised, by kind",
                m.fence_events.clone(),
            );
            r.register_with_unit(
                "live_last_report_timestamp",
                "When a device of the live layer last reported (server time), seconds since the Unix epoch",
                Unit::Seconds,
                m.last_report.clone(),
            );
            r.register(
                "geofence_alarms_open",
                "Geofence alarms open now (a device inside a fence)",
                m.alarms_open.clone(),
            );
            r.register_with_unit(
                "geofence_alarm_oldest_age",
                "How long the oldest open geofence alarm has been open (0 for none)",
                Unit::Seconds,
                m.alarm_oldest.clone(),
            );
            r.register(
                "ready",
                "1 when every /ready check passes, else 0",
                m.ready.clone(),
            );
            r.register(
                "store_disk_free_ratio",
                "Free space of the store's file system, as available to the server (0-1)",
                m.disk_free.clone(),
            );
            r.register(
                "imports",
                "Layer imports through the admin API, by outcome",
                m.imports.clone(),
            );
        }
        let p = root.sub_registry_with_prefix("process");
        p.register_with_unit(
            "cpu",
            "User and system CPU time spent",
            Unit::Seconds,
            m.process_cpu.clone(),
        );
        p.register_with_unit(
            "resident_memory",
            "Resident memory size",
            Unit::Bytes,
            m.process_resident.clone(),
        );
        p.register("open_fds", "Open file descriptors", m.process_fds.clone());
        p.register("threads", "Threads", m.process_threads.clone());
        p.register_with_unit(
            "start_time",
            "When the metrics began (the server's start), seconds since the Unix epoch",
            Unit::Seconds,
            m.process_start.clone(),
        );
        // It does not change: set once.
        m.process_start.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()) as i64,
        );
        Metrics {
            registry: root,
            ..m
        }
    }

    /// Metrics that count nothing (`--no-metrics`): the server installs no measuring layer
    /// and no observer, and `/metrics` shows zeros and the process figures.
    pub fn disabled() -> Metrics {
        Metrics {
            enabled: false,
            ..Metrics::new()
        }
    }

    /// False for [`Metrics::disabled`].
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Notes an HTTP request: its method, route pattern (`unmatched` for none), status and
    /// duration.
    pub fn http(&self, method: &str, route: &'static str, status: u16, seconds: f64) {
        let labels = HttpLabels {
            // Only the methods the API knows; anything else is one label value.
            method: match method {
                "GET" => "GET",
                "HEAD" => "HEAD",
                "POST" => "POST",
                "PUT" => "PUT",
                "DELETE" => "DELETE",
                "OPTIONS" => "OPTIONS",
                _ => "other",
            },
            route,
            status: match status {
                100..=199 => "1xx",
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            },
        };
        self.http_requests.get_or_create(&labels).inc();
        self.http_seconds.get_or_create(&labels).observe(seconds);
    }

    /// Notes a layer import through the admin API (`published`, `refused`, `failed`).
    pub fn import(&self, outcome: &'static str) {
        self.imports.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// The exposition: figures that are states are read now from `engine` and `hub`; `ready`
    /// is whether every readiness check passes.
    pub fn render(&self, engine: &Engine, hub: Option<&Hub>, ready: bool) -> String {
        self.ready.set(i64::from(ready));
        if let Some(free) = super::alerts::disk_free_percent(engine.store().dir()) {
            self.disk_free.set(free / 100.0);
        }
        let c = engine.cache_stats();
        self.cache_bytes.set(c.bytes as i64);
        self.cache_entries.set(c.entries as i64);
        catch_up(&self.cache_evictions, c.evictions);
        if let Some(hub) = hub {
            self.stream_clients.set(hub.stream_clients() as i64);
            self.cluster_lag
                .set(hub.shared_lag().unwrap_or(0).min(i64::MAX as u64) as i64);
            // Layers and states that have no device any more leave the exposition.
            let pulse = hub.pulse();
            self.devices.clear();
            for (layer, states) in &pulse.states {
                for (state, n) in states {
                    self.devices
                        .get_or_create(&DeviceLabels {
                            layer: layer.clone(),
                            state,
                        })
                        .set(*n as i64);
                }
            }
            self.last_report.clear();
            for (layer, t) in &pulse.last_report {
                self.last_report
                    .get_or_create(&LayerLabels {
                        layer: layer.clone(),
                    })
                    .set(*t);
            }
            let now = crate::live::now_s();
            self.alarms_open.set(pulse.alarms_since.len() as i64);
            self.alarm_oldest.set(
                pulse
                    .alarms_since
                    .iter()
                    .map(|t| (now - t).max(0.0))
                    .fold(0.0, f64::max),
            );
        }
        self.read_process();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Process figures from `/proc/self` (Linux); left as they were where it cannot be read.
    fn read_process(&self) {
        // Clock ticks are USER_HZ, 100 on every Linux (the kernel's ABI for /proc).
        const TICKS: f64 = 100.0;
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return;
        };
        // Fields after the command name, which is in parentheses and may hold spaces.
        let Some(rest) = stat.rsplit_once(')').map(|r| r.1) else {
            return;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Field n of proc(5) (from 1) is f[n - 3] here.
        let field = |n: usize| -> f64 { f.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
        let cpu = (field(14) + field(15)) / TICKS;
        let now = self.process_cpu.get();
        if cpu > now {
            self.process_cpu.inc_by(cpu - now);
        }
        self.process_threads.set(field(20) as i64);
        if let Ok(status) = std::fs::read_to_string("/proc/self/status")
            && let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        {
            self.process_resident.set(kb * 1024);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.process_fds.set(fds.count() as i64);
        }
    }
}

/// Zoom bands of the tile metrics: a bounded label for 23 zooms.
fn zoom_band(z: u8) -> &'static str {
    match z {
        0..=5 => "0-5",
        6..=9 => "6-9",
        10..=12 => "10-12",
        13..=14 => "13-14",
        _ => "15+",
    }
}

impl TileObserver for Metrics {
    fn tile_made(&self, layer: &str, z: u8, seconds: f64, bytes: usize, dropped: usize) {
        let labels = TileLabels {
            layer: layer.to_string(),
            zoom: zoom_band(z),
        };
        self.tile_seconds.get_or_create(&labels).observe(seconds);
        self.tile_bytes.get_or_create(&labels).observe(bytes as f64);
        if dropped > 0 {
            self.tile_dropped
                .get_or_create(&labels)
                .inc_by(dropped as u64);
        }
    }

    fn cache_lookup(&self, hit: bool) {
        if hit {
            self.cache_hits.inc();
        } else {
            self.cache_misses.inc();
        }
    }
}

impl LiveObserver for Metrics {
    fn ingest(&self, protocol: &'static str, outcome: &'static str, payloads: u64, records: u64) {
        self.ingest_payloads
            .get_or_create(&IngestLabels { protocol, outcome })
            .inc_by(payloads);
        if records > 0 {
            self.ingest_records
                .get_or_create(&ProtocolLabels { protocol })
                .inc_by(records);
        }
    }

    fn log_sync(&self, seconds: f64) {
        self.log_sync_seconds.observe(seconds);
    }

    fn stream_lag(&self, seconds: f64) {
        self.stream_lag_seconds.observe(seconds);
    }

    fn fence_event(&self, kind: &'static str) {
        self.fence_events.get_or_create(&KindLabels { kind }).inc();
    }
}
