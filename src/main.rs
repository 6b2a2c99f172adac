//! The `urbis` command line: import GIS files into a layer store and inspect it.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use urbis::import::{ImportObserver, ImportOptions, Progress};
use urbis::store::{LayerReader, Store};

mod cli;
use cli::audit::{AuditAction, audit, audit_cli};
use cli::devices::{DevicesAction, devices};
use cli::keys::{KeysAction, keys};
use urbis::store::db::{Classification, Db};

/// Urbis: a lightweight GIS engine and map tile server for smart-city operations.
#[derive(Parser)]
#[command(name = "urbis", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct StoreArg {
    /// The layer store directory (created on first import).
    #[arg(
        long,
        env = "URBIS_STORE",
        default_value = "urbis-store",
        global = true
    )]
    store: PathBuf,
}

// `serve` has many flags; the command is parsed once at start, so its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Import a GIS file as a layer (a new version if the layer exists).
    ///
    /// Reads GeoJSON (FeatureCollection, or newline-delimited), FlatGeobuf, GeoPackage (every
    /// feature table, or --table) and Shapefile (.shp with its .dbf/.prj sidecars, or a .zip);
    /// `.gz` files are read compressed. Coordinates must be EPSG:4326 or EPSG:3857.
    /// Features with NaN or out-of-range coordinates or unrepairable polygons are dropped and
    /// reported; invalid polygons are repaired. The new version is published atomically: a
    /// failed or interrupted import leaves the previous version serving.
    ///
    /// A tile archive of vector tiles (PMTiles v3 or MBTiles, e.g. from `urbis export`,
    /// tippecanoe or Planetiler) is copied into the store and served tile for tile as it is.
    ///
    /// Examples:
    ///   urbis import data/helsinki.geojson --store ./store
    ///   urbis import city.gpkg --table buildings --layer buildings --maxzoom 16
    ///   urbis import basemap.pmtiles --layer basemap
    Import {
        /// The file to import.
        file: PathBuf,
        #[command(flatten)]
        store: StoreArg,
        /// Layer name [default: the file name without extension; for a GeoPackage with
        /// several tables, NAME_TABLE per table].
        #[arg(long)]
        layer: Option<String>,
        /// Import only this GeoPackage table (or this Shapefile of a zip).
        #[arg(long)]
        table: Option<String>,
        /// Lowest zoom level with data.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=20))]
        minzoom: u8,
        /// Zoom of full resolution (0-20) [default: chosen from the data's density].
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=20))]
        maxzoom: Option<u8>,
        /// Attribution (licence notice) shown by map clients, e.g. "© OpenStreetMap contributors".
        #[arg(long)]
        attribution: Option<String>,
        /// Catalog title of the layer.
        #[arg(long)]
        title: Option<String>,
        /// Catalog description: what the layer holds.
        #[arg(long)]
        description: Option<String>,
        /// Catalog keywords, comma-separated.
        #[arg(long)]
        keywords: Option<String>,
        /// The department that owns the layer.
        #[arg(long)]
        owner: Option<String>,
        /// Who to ask about it (e-mail or name).
        #[arg(long)]
        contact: Option<String>,
        /// Its licence (SPDX id, name or URL), e.g. CC-BY-4.0.
        #[arg(long)]
        licence: Option<String>,
        /// More catalog metadata, KEY=VALUE (repeatable): update_frequency (daily, weekly,
        /// ...), retention (e.g. 365d), temporal (START/END, ISO 8601 dates), personal
        /// (true/false). `urbis layers meta NAME` shows and changes them later.
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
        /// A feature that takes longer than this to check and repair is dropped and named in
        /// the report instead of holding the import up (e.g. 60s, 500ms, 2m).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        feature_timeout: std::time::Duration,
        /// Megabytes of features held in memory while the layer is built. A larger input is
        /// sorted on disk in the store's staging area (unnamed files, gone when the import ends
        /// or is killed), so an import of any size fits this budget plus about 300 MB; the
        /// layer file is the same byte for byte whatever the budget.
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
        memory_mb: u64,
        /// Versions of the layer kept for rollback (this import's included); older ones are
        /// deleted.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=1000))]
        keep_versions: u16,
        /// Who may see the layer: public (anyone, without a key), internal, restricted or
        /// confidential (roles with that clearance or a rule for the layer).
        #[arg(long, value_enum, default_value = "internal")]
        classification: Classification,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve vector tiles, TileJSON and the catalog over HTTP.
    ///
    /// With no arguments, serves the store ./urbis-store on 127.0.0.1:8080, importing the
    /// embedded Helsinki demo layers into it first if it is empty. Every flag can also be set
    /// in a TOML file (--config; keys as the flags, with '_' for '-') and in URBIS_* variables;
    /// flags beat variables, variables beat the file. New layer versions published by
    /// `urbis import` are served within a second, without a restart.
    ///
    /// Endpoints: /tiles/LAYER/{z}/{x}/{y}.mvt (LAYER may be A,B for a composite tile),
    /// /tiles/LAYER.json (TileJSON 3.0.0), /catalog, /health, /ready; live devices:
    /// POST /ingest, /devices, /devices/ID, /devices/ID/track, /stream (Server-Sent
    /// Events), /geofences; and CoAP on UDP (--coap-bind): POST /r/ID?k=SECRET.
    Serve(ServeArgs),
    /// Register live devices (trackers, meters, sensors) and ingest keys; list or remove them.
    ///
    /// A device reports over CoAP to `coap://HOST:5683/r/ID?k=SECRET` or by HTTP to
    /// `POST /ingest` with its secret as `Authorization: Bearer SECRET`; gateways and carrier
    /// platforms (CTWing, OneNET, IoTDA) post batches for many devices with an ingest key.
    /// Secrets are printed once and stored only hashed. A running server picks up changes
    /// within a second.
    ///
    /// Examples:
    ///   urbis devices add bus-17 --layer vehicles --kind tracker --interval 30s
    ///   urbis devices add mh-0042 --layer manholes --kind sensor --interval 6h
    ///   urbis devices key carrier-ctwing
    ///   urbis devices list --json
    Devices {
        #[command(subcommand)]
        action: DevicesAction,
    },
    /// Create, list and revoke API keys of people and programs (map clients, dashboards).
    ///
    /// A key is printed once and stored only as its SHA-256 in the store's database. Send it
    /// as `Authorization: Bearer KEY` or `?key=KEY`. Its role (from the policy: anonymous,
    /// viewer, operator, analyst, admin, auditor, or one of a --policy file) decides what it
    /// may see and do. Revocation and expiry take effect within a second on running servers.
    ///
    /// Examples:
    ///   urbis keys create --role viewer --name ops-wall --expires 90d
    ///   urbis keys list --json
    ///   urbis keys revoke key_1a2b3c4d
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Check or show the audit log: key changes, classification and registry changes,
    /// geofence changes, denied requests, reads of restricted layers; hash-chained.
    ///
    /// `urbis audit verify` recomputes every hash and exits 1 naming the first entry that was
    /// changed, removed or reordered.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Apply retention now: delete device history older than each live layer's retention
    /// (`urbis layers meta LAYER --set retention=30d`; default --retention-days) and layer
    /// versions older than their layer's retention; every deletion is audited. `urbis serve`
    /// does this once a day; while a server runs, ask it instead: POST /admin/retention/run.
    Retention {
        #[command(subcommand)]
        action: RetentionAction,
    },
    /// Check alert rules files and export them as Prometheus alerting rules.
    ///
    /// Examples:
    ///   urbis alerts check examples/alerts.toml
    ///   urbis alerts export examples/alerts.toml > urbis-rules.yml
    Alerts {
        #[command(subcommand)]
        action: cli::ops::AlertsAction,
    },
    /// Write the operation report of a store: report.json, a self-contained report.html and
    /// map.png (devices by state over the layers). Availability, requests and latency, tiles
    /// (slowest, largest, cache), device reports, devices online by layer over time, geofence
    /// alarms, alerts, imports and administrative actions. A running server serves the same
    /// at GET /admin/report?since=7d.
    ///
    /// Examples:
    ///   urbis report --since 24h --out /tmp/ops-report
    ///   urbis report --store /srv/urbis --since 30d
    Report(cli::ops::ReportArgs),
    /// Check a running deployment as its acceptance (平台验收) asks: catalog, every layer's
    /// TileJSON, sample tiles at three zooms (decode, extent, byte budget), tile latency of a
    /// short burst against limits, /health, /ready, /metrics, the viewer's pages and assets,
    /// and, given a device's credentials, a report round trip over HTTP and CoAP. Prints a
    /// pass/fail table (or --json) and exits 1 naming the failed checks. Read-only without
    /// --device.
    ///
    /// Examples:
    ///   urbis acceptance http://127.0.0.1:8080 --key uk_...
    ///   urbis acceptance http://city-gis:8080 --key uk_... --device bus-17 --secret ds_... --json
    Acceptance(cli::ops::AcceptanceArgs),
    /// Simulate a fleet of NB-IoT trackers driving along the streets of a layer and
    /// reporting over CoAP, for demos, acceptance and load. Registers the devices (in the local
    /// store, or through the admin API with --key), keeps their secrets to run the same fleet
    /// again, and makes some go overdue and lost. Progress every 5 s; a summary at the end.
    ///
    /// Examples (beside the README's server):
    ///   urbis simulate                                  100 trackers in layer fleet
    ///   urbis simulate --devices 2000 --rate 500 --duration 10m
    ///   urbis simulate --server http://gis:8080 --coap gis:5683 --key uk_... --layer buses
    Simulate(cli::ops::SimulateArgs),
    /// Export every tile the server would serve for some layers into one archive, MBTiles
    /// (SQLite; GDAL, QGIS and most tile servers read it) or PMTiles (one file for CDNs and
    /// MapLibre): the server's own gzip bytes, made in parallel; empty tiles left out. Or a
    /// layer's features back out as FlatGeobuf or GeoJSON, at full resolution with every
    /// property.
    ///
    /// Examples:
    ///   urbis export roads --to roads.mbtiles
    ///   urbis export roads --to roads.pmtiles
    ///   urbis export roads --to roads.fgb
    ///   urbis export roads,buildings --to city.mbtiles --minzoom 10 --maxzoom 16 --bbox 24.9,60.1,25.0,60.2
    Export(cli::export::ExportArgs),
    /// List the layers of a store, or remove one (`urbis layers rm NAME`).
    Layers {
        #[command(subcommand)]
        action: Option<LayersAction>,
        #[command(flatten)]
        store: StoreArg,
        /// Print the list as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// The layer store directory [default: urbis-store].
    #[arg(long, env = "URBIS_STORE")]
    store: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]; port 0 picks a free port.
    #[arg(long, env = "URBIS_BIND")]
    bind: Option<String>,
    /// A TOML configuration file.
    #[arg(long, env = "URBIS_CONFIG")]
    config: Option<PathBuf>,
    /// Base URL clients reach the server at, for the tile URLs in TileJSON [default: the
    /// request's Host].
    #[arg(long, env = "URBIS_PUBLIC_URL")]
    public_url: Option<String>,
    /// Tile cache size in MiB; 0 turns the cache off [default: 256].
    #[arg(long, env = "URBIS_CACHE_MB")]
    cache_mb: Option<u64>,
    /// Largest file the admin upload (POST /admin/layers/NAME) takes, in MiB [default: 1024].
    #[arg(long, env = "URBIS_MAX_UPLOAD_MB")]
    max_upload_mb: Option<u64>,
    /// Byte budget per tile in KiB: the least important features are dropped beyond it
    /// [default: 500].
    #[arg(long, env = "URBIS_TILE_BUDGET_KB")]
    tile_budget_kb: Option<u64>,
    /// Tile buffer in tile units of 4096 [default: 64].
    #[arg(long, env = "URBIS_BUFFER")]
    buffer: Option<u32>,
    /// Cache-Control max-age of tiles in seconds [default: 300].
    #[arg(long, env = "URBIS_MAX_AGE")]
    max_age: Option<u32>,
    /// Do not import the demo layers into an empty store.
    #[arg(long, env = "URBIS_NO_DEMO")]
    no_demo: bool,
    /// UDP address for CoAP device reports [default: 127.0.0.1:5683]; 0.0.0.0:5683 to take
    /// reports from the network; port 0 picks a free port.
    #[arg(long, env = "URBIS_COAP_BIND")]
    coap_bind: Option<String>,
    /// Days of device position history kept [default: 90].
    #[arg(long, env = "URBIS_RETENTION_DAYS")]
    retention_days: Option<u64>,
    /// Report groups waiting to be logged before devices are told to retry (4.29 / 429)
    /// [default: 1024].
    #[arg(long, env = "URBIS_INGEST_QUEUE")]
    ingest_queue: Option<usize>,
    /// Size of a device log segment in MiB [default: 64]; history is kept and deleted in
    /// whole segments.
    #[arg(long, env = "URBIS_WAL_SEGMENT_MB")]
    wal_segment_mb: Option<u64>,
    /// Policy file (TOML): roles with their clearance, rights and per-layer rules, over the
    /// built-in roles (anonymous, viewer, operator, analyst, admin, auditor). Re-read when it
    /// changes.
    #[arg(long, env = "URBIS_POLICY")]
    policy: Option<PathBuf>,
    /// Tile, TileJSON and catalog requests a second per key (or address, without a key);
    /// bursts of twice that; beyond it 429 with Retry-After; 0 turns it off [default: 500].
    #[arg(long, env = "URBIS_RATE_TILES")]
    rate_tiles: Option<u32>,
    /// Device, track, geofence and audit requests a second per key or address [default: 50].
    #[arg(long, env = "URBIS_RATE_API")]
    rate_api: Option<u32>,
    /// POST /ingest requests a second per address [default: 200].
    #[arg(long, env = "URBIS_RATE_INGEST")]
    rate_ingest: Option<u32>,
    /// Open /stream connections per key or address [default: 16].
    #[arg(long, env = "URBIS_MAX_STREAMS")]
    max_streams: Option<u32>,
    /// Seconds a client has to send its request headers before it is cut off (against slow
    /// clients holding connections) [default: 10].
    #[arg(long, env = "URBIS_HEADER_TIMEOUT_S")]
    header_timeout_s: Option<u64>,
    /// Open HTTP connections at most; one beyond is closed at once (against a client opening
    /// connections until the server runs out of file descriptors) [default: 4096].
    #[arg(long, env = "URBIS_MAX_CONNECTIONS")]
    max_connections: Option<u32>,
    /// Also serve GET /metrics (Prometheus/OpenMetrics text) on this address, without a key:
    /// for a scraper on loopback or a private network, e.g. 127.0.0.1:9464. On the main
    /// listener /metrics needs an administrator's key.
    #[arg(long, env = "URBIS_METRICS_BIND")]
    metrics_bind: Option<String>,
    /// Log lines as `text` (for a person at a terminal) or `json` (one object a line, for a
    /// log collector); the level is set by URBIS_LOG (e.g. debug: a line per request) [default:
    /// text].
    #[arg(long, env = "URBIS_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// A tile that takes longer than this to make is logged as a warning naming its layer,
    /// z/x/y and milliseconds [default: 500].
    #[arg(long, env = "URBIS_SLOW_TILE_MS")]
    slow_tile_ms: Option<u64>,
    /// Count nothing: no Prometheus figures, no minute figures for the operation report and
    /// the alert rules (they see only that the server was up): for measuring what counting
    /// costs (benches/ops/metrics_cost.sh).
    #[arg(long)]
    no_metrics: bool,
    /// Alert rules (TOML): devices lost, layers silent, geofence alarms open too long, ingest
    /// refused, slow tiles, /ready failing, disk filling. Firing and resolved alerts go to
    /// /stream (`alert` events), GET /alerts, the log and an optional webhook. A commented
    /// example: examples/alerts.toml; `urbis alerts check FILE` checks one.
    #[arg(long, env = "URBIS_ALERTS")]
    alerts: Option<PathBuf>,
    /// A folder of TrueType/OpenType fonts (.ttf, .otf, .ttc) for map labels, served as
    /// MapLibre glyph ranges at /fonts/{fontstack}/{range}.pbf [default: Debian's font folders
    /// /usr/share/fonts/{truetype,opentype}/noto and truetype/dejavu]. Without any font the
    /// styles leave out their label layers (and the log says so).
    #[arg(long, env = "URBIS_FONTS")]
    fonts: Option<PathBuf>,
    /// Cluster mode: share layers and live devices with the other servers of a NATS
    /// JetStream cluster (comma-separated nats://HOST:PORT, any of its servers). Reports are
    /// acknowledged once the cluster stored them on a quorum; every server applies them in
    /// the same order; imports on any server are served by all. See examples/cluster/.
    #[arg(long, env = "URBIS_CLUSTER", value_name = "NATS_URLS")]
    cluster: Option<String>,
    /// Name of the shared stream and buckets: servers of the same name share one city
    /// [default: urbis].
    #[arg(long, env = "URBIS_CLUSTER_NAME")]
    cluster_name: Option<String>,
    /// Replicas JetStream keeps of the stream and buckets when this server creates them
    /// (3 for a three-node cluster, 1 for a single nats-server) [default: 3].
    #[arg(long, env = "URBIS_CLUSTER_REPLICAS")]
    cluster_replicas: Option<usize>,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) with this certificate chain (PEM; with --tls-key).
    /// Both files are read again when they change: renew them with any ACME client.
    #[arg(long, env = "URBIS_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "URBIS_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// UDP address for CoAP over DTLS (PSK: identity = device id, key = its secret)
    /// [default: 127.0.0.1:5684]; if that default is taken, DTLS is off with a message.
    #[arg(long, env = "URBIS_COAPS_BIND")]
    coaps_bind: Option<String>,
    /// Refuse plain CoAP reports (4.01): every device reports over DTLS.
    #[arg(long, env = "URBIS_COAP_DTLS_ONLY")]
    coap_dtls_only: bool,
}

#[derive(Subcommand)]
enum LayersAction {
    /// Remove a layer and all its versions.
    Rm {
        /// The layer to remove.
        name: String,
    },
    /// List the kept versions of a layer, the current one marked.
    Versions {
        /// The layer.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve an earlier (kept) version of a layer again, atomically; running servers switch
    /// within a second. The next import is numbered after the newest version.
    Rollback {
        /// The layer.
        name: String,
        /// The version to serve (see `urbis layers versions NAME`).
        #[arg(id = "to_version", value_name = "VERSION")]
        version: u64,
    },
    /// Show or change a layer's catalog metadata (title, owner, licence, ...), shown in
    /// /catalog and as DCAT at /catalog?f=dcat; with the current version's lineage.
    ///
    /// Examples:
    ///   urbis layers meta roads --set title="Road network" --set owner="Transport department"
    ///   urbis layers meta roads --set licence=CC-BY-4.0 --set update_frequency=monthly
    Meta {
        /// The layer (a layer file or a live layer).
        name: String,
        /// KEY=VALUE to set (repeatable; an empty VALUE clears the key). Keys: title,
        /// description, keywords (comma-separated), owner, contact, licence, attribution,
        /// update_frequency, retention (e.g. 365d), temporal (START/END), classification,
        /// personal.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set who may see a layer (a layer file or a live layer): public, internal,
    /// restricted or confidential. Running servers apply it within a second.
    Classify {
        /// The layer.
        name: String,
        /// Its classification.
        #[arg(value_enum)]
        classification: Classification,
        /// Positions of people or personal vehicles (live layers): roles without the
        /// exact_positions right see them snapped to a grid. Without it the flag is cleared.
        #[arg(long)]
        personal: bool,
    },
}

#[derive(Subcommand)]
enum RetentionAction {
    /// Delete what is older than the retention periods, now.
    Run {
        #[command(flatten)]
        store: StoreArg,
        /// Device history kept for live layers without a retention of their own, in days.
        #[arg(long, default_value_t = 90)]
        retention_days: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A duration like `60s`, `500ms`, `2m`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: give a number and a unit, like 60s or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        other => return Err(format!("{s:?}: unknown unit {other:?}; use ms, s or m")),
    };
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!("{s:?}: between 1ms and 24h"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Import {
            file,
            store,
            layer,
            table,
            minzoom,
            maxzoom,
            attribution,
            classification,
            keep_versions,
            json,
            title,
            description,
            keywords,
            owner,
            contact,
            licence,
            meta,
            feature_timeout,
            memory_mb,
        } => {
            let store =
                Store::open(&store.store, true)?.with_keep_versions(usize::from(keep_versions));
            let mut pairs = Vec::new();
            for (k, v) in [
                ("title", title),
                ("description", description),
                ("keywords", keywords),
                ("owner", owner),
                ("contact", contact),
                ("licence", licence),
            ] {
                pairs.extend(v.map(|v| (k.to_string(), v)));
            }
            for m in &meta {
                pairs.push(urbis::governance::meta::parse_pair(m)?);
            }
            let gov = urbis::governance::publish::Governance {
                classification: Some(classification),
                meta: pairs,
                principal: format!(
                    "cli:{}",
                    std::env::var("USER").unwrap_or_else(|_| "-".into())
                ),
            };
            let opts = ImportOptions {
                file,
                layer,
                table,
                minzoom,
                maxzoom,
                attribution,
                feature_timeout: Some(feature_timeout),
                memory_mb: Some(memory_mb as usize),
            };
            let started = Instant::now();
            let observer = BarObserver::default();
            let result = urbis::governance::publish::publish(&store, &opts, &gov, &observer);
            observer.finish();
            let outcomes = result?;
            for o in &outcomes {
                audit_cli(
                    store.dir(),
                    "layer.import",
                    &format!("{} v{} {classification}", o.layer, o.version.version),
                )?;
            }
            if json {
                let v: Vec<_> = outcomes
                    .iter()
                    .map(|o| {
                        serde_json::json!({
                            "layer": o.layer, "version": o.version, "quality": o.report,
                            "levels": o.summary.level_items,
                            "spilled": {"runs": o.summary.spilled.runs, "bytes": o.summary.spilled.bytes},
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            for o in &outcomes {
                println!(
                    "imported {} v{}: {} features, z{}-z{}, {} in {:.1} s",
                    o.layer,
                    o.version.version,
                    o.version.features,
                    o.version.minzoom,
                    o.version.maxzoom,
                    human_bytes(o.version.bytes),
                    started.elapsed().as_secs_f64()
                );
                let b = o.version.bounds;
                println!(
                    "  bounds {:.6},{:.6},{:.6},{:.6}; features per level z{}..: {:?}",
                    b[0], b[1], b[2], b[3], o.version.minzoom, o.summary.level_items
                );
                if o.summary.spilled.runs > 0 {
                    println!(
                        "  larger than --memory-mb {memory_mb}: sorted on disk in {} run(s) ({})",
                        o.summary.spilled.runs,
                        human_bytes(o.summary.spilled.bytes)
                    );
                }
                println!("  {}", o.report.summary().replace('\n', "\n  "));
            }
            Ok(())
        }
        Command::Layers {
            action: Some(LayersAction::Versions { name, json }),
            store,
            ..
        } => {
            let st = Store::open(&store.store, false)?;
            let cat = st.catalog()?;
            let layer = cat
                .layers
                .get(&name)
                .ok_or_else(|| anyhow::anyhow!("no layer named '{name}'; see `urbis layers`"))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "layer": name, "current": layer.current, "versions": layer.versions,
                    }))?
                );
                return Ok(());
            }
            for v in &layer.versions {
                println!(
                    "{} v{:<4} {} features  {}  published {} from {}",
                    if v.version == layer.current { "*" } else { " " },
                    v.version,
                    v.features,
                    human_bytes(v.bytes),
                    v.created,
                    v.source
                );
            }
            Ok(())
        }
        Command::Layers {
            action: Some(LayersAction::Rollback { name, version }),
            store,
            ..
        } => {
            let st = Store::open(&store.store, false)?;
            let v = st.rollback(&name, version)?;
            audit_cli(
                &store.store,
                "layer.rollback",
                &format!("{name} v{version}"),
            )?;
            println!("{name} now serves v{} ({} features)", v.version, v.features);
            Ok(())
        }
        Command::Layers {
            action: Some(LayersAction::Meta { name, set, json }),
            store,
            ..
        } => {
            use urbis::governance::meta;
            if !urbis::store::catalog::valid_layer_name(&name) {
                anyhow::bail!("{name:?} is not a layer name (1-64 of A-Z a-z 0-9 _ -)");
            }
            let db = Db::open(&store.store)?;
            let m = if set.is_empty() {
                meta::get(&db, &name)?
            } else {
                let pairs = set
                    .iter()
                    .map(|p| meta::parse_pair(p))
                    .collect::<Result<Vec<_>, _>>()?;
                let m = meta::set(&db, &name, &pairs)?;
                drop(db);
                let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
                audit_cli(
                    &store.store,
                    "layer.meta",
                    &format!("{name} {}", keys.join(",")),
                )?;
                m
            };
            let db = Db::open(&store.store)?;
            let policy = db.layer_meta(&name)?.unwrap_or_default();
            let current = Store::open(&store.store, false)
                .ok()
                .and_then(|st| st.catalog().ok())
                .and_then(|c| c.layers.get(&name).map(|e| e.current));
            let lineage = match current {
                Some(v) => meta::lineage(&db, &name, v)?,
                None => None,
            };
            let v = serde_json::json!({
                "name": name, "meta": m, "classification": policy.classification,
                "personal": policy.personal, "version": current, "lineage": lineage,
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{name}");
                for (k, val) in v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| *k != "name")
                {
                    match val {
                        serde_json::Value::Object(o) => {
                            for (k2, v2) in o {
                                println!("  {k}.{k2}: {v2}");
                            }
                        }
                        serde_json::Value::Null => {}
                        other => println!("  {k}: {other}"),
                    }
                }
            }
            Ok(())
        }
        Command::Layers {
            action: Some(LayersAction::Rm { name }),
            store,
            ..
        } => {
            let store = Store::open(&store.store, false)?;
            let entry = store.remove(&name)?;
            audit_cli(store.dir(), "layer.remove", &name)?;
            println!("removed {name} ({} version(s))", entry.versions.len());
            Ok(())
        }
        Command::Serve(a) => {
            let overrides = urbis::config::Overrides {
                store: a.store,
                bind: a.bind,
                public_url: a.public_url,
                cache_mb: a.cache_mb,
                max_upload_mb: a.max_upload_mb,
                tile_budget_kb: a.tile_budget_kb,
                buffer: a.buffer,
                max_age: a.max_age,
                demo: a.no_demo.then_some(false),
                coap_bind: a.coap_bind,
                retention_days: a.retention_days,
                ingest_queue: a.ingest_queue,
                wal_segment_mb: a.wal_segment_mb,
                policy: a.policy,
                rate_tiles: a.rate_tiles,
                rate_api: a.rate_api,
                rate_ingest: a.rate_ingest,
                max_streams: a.max_streams,
                header_timeout_s: a.header_timeout_s,
                max_connections: a.max_connections,
                tls_cert: a.tls_cert,
                tls_key: a.tls_key,
                coaps_bind: a.coaps_bind,
                coap_dtls_only: a.coap_dtls_only.then_some(true),
                metrics_bind: a.metrics_bind,
                metrics: a.no_metrics.then_some(false),
                log_format: a.log_format,
                slow_tile_ms: a.slow_tile_ms,
                alerts: a.alerts,
                fonts: a.fonts,
                cluster: a.cluster,
                cluster_name: a.cluster_name,
                cluster_replicas: a.cluster_replicas,
            };
            let config = urbis::config::Config::load(a.config.as_deref(), overrides)?;
            let filter = || {
                tracing_subscriber::EnvFilter::try_from_env("URBIS_LOG")
                    .unwrap_or_else(|_| "info".into())
            };
            if config.log_json {
                // One JSON object a line, with the request's span (its id) on each.
                tracing_subscriber::fmt()
                    .json()
                    .with_current_span(true)
                    .with_env_filter(filter())
                    .with_writer(std::io::stderr)
                    .init();
            } else {
                tracing_subscriber::fmt()
                    .with_env_filter(filter())
                    .with_writer(std::io::stderr)
                    .init();
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(urbis::server::run(config))
        }
        Command::Layers {
            action: None,
            store,
            json,
        } => list_layers(&store.store, json),
        Command::Devices { action } => devices(action),
        Command::Keys { action } => keys(action),
        Command::Alerts { action } => cli::ops::alerts(action),
        Command::Report(a) => cli::ops::report(a),
        Command::Simulate(a) => cli::ops::simulate(a),
        Command::Export(a) => cli::export::export(a),
        Command::Acceptance(a) => {
            if !cli::ops::acceptance(a)? {
                // The table named the failed checks.
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Audit { action } => audit(action),
        Command::Retention {
            action:
                RetentionAction::Run {
                    store,
                    retention_days,
                    json,
                },
        } => {
            let st = Store::open(&store.store, false)?;
            let hub = urbis::live::Hub::open(urbis::live::LiveConfig {
                store_dir: store.store.clone(),
                retention_s: retention_days.saturating_mul(86_400),
                keep_segments_s: u64::MAX,
                buffer: 64,
                queue: 16,
                segment_bytes: urbis::live::SEGMENT_BYTES,
                dtls_only: false,
            })?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let dir = store.store.clone();
            let audit = |action: &str, target: &str| {
                if let Err(e) = audit_cli(&dir, action, target) {
                    eprintln!("urbis: cannot audit {action} {target}: {e}");
                }
            };
            let now = urbis::security::keys::now();
            let summary = runtime.block_on(urbis::governance::retention::run(
                Some(&hub),
                &st,
                now,
                &audit,
            ))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else if summary.live.is_empty() && summary.versions.is_empty() {
                println!("retention: nothing older than the retention periods");
            } else {
                for (layer, d) in &summary.live {
                    println!(
                        "{layer}: deleted history before {}: {} fixes, {} geofence events, {} state changes",
                        d["before"].as_str().unwrap_or("?"),
                        d["fixes"],
                        d["events"],
                        d["states"]
                    );
                }
                for (layer, v) in &summary.versions {
                    println!("{layer}: deleted versions {v:?}");
                }
            }
            Ok(())
        }
        Command::Layers {
            action:
                Some(LayersAction::Classify {
                    name,
                    classification,
                    personal,
                }),
            store,
            ..
        } => {
            Store::open(&store.store, false)?;
            if !urbis::store::catalog::valid_layer_name(&name) {
                anyhow::bail!("{name:?} is not a layer name (1-64 of A-Z a-z 0-9 _ -)");
            }
            Db::open(&store.store)?.set_layer_meta(
                &name,
                urbis::store::db::LayerPolicyMeta {
                    classification,
                    personal,
                },
            )?;
            audit_cli(
                &store.store,
                "layer.classify",
                &format!(
                    "{name} {classification}{}",
                    if personal { " personal" } else { "" }
                ),
            )?;
            println!(
                "{name} is {classification}{}",
                if personal { ", personal" } else { "" }
            );
            Ok(())
        }
    }
}

fn list_layers(dir: &PathBuf, json: bool) -> anyhow::Result<()> {
    let store = Store::open(dir, false)?;
    let catalog = store.catalog()?;
    let mut rows = Vec::new();
    for (name, entry) in &catalog.layers {
        let Some(v) = entry.current_entry() else {
            continue;
        };
        let reader = LayerReader::open(store.dir().join(&v.file))
            .with_context(|| format!("layer {name}"))?;
        rows.push((name.clone(), v.clone(), reader.meta().clone()));
    }
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(name, v, meta)| {
                serde_json::json!({
                    "name": name, "version": v.version, "features": v.features, "bounds": v.bounds,
                    "minzoom": v.minzoom, "maxzoom": v.maxzoom, "bytes": v.bytes, "file": v.file,
                    "source": meta.source, "fields": meta.fields, "quality": meta.quality,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "no layers in {} (add one with `urbis import FILE --store {}`)",
            dir.display(),
            dir.display()
        );
        return Ok(());
    }
    println!(
        "{:<24} {:>4} {:>9} {:>7} {:>9}  {:<40}  source",
        "NAME", "VER", "FEATURES", "ZOOMS", "SIZE", "BOUNDS (W,S,E,N)"
    );
    for (name, v, meta) in &rows {
        let b = v.bounds;
        println!(
            "{:<24} {:>4} {:>9} {:>7} {:>9}  {:<40}  {} ({})",
            name,
            v.version,
            v.features,
            format!("{}-{}", v.minzoom, v.maxzoom),
            human_bytes(v.bytes),
            format!("{:.4},{:.4},{:.4},{:.4}", b[0], b[1], b[2], b[3]),
            meta.source.file,
            meta.source.format
        );
        let q = &meta.quality;
        println!(
            "{:<24} quality: read {}, imported {}, repaired {}, dropped {}",
            "",
            q.read,
            q.imported,
            q.repaired,
            q.dropped_total()
        );
    }
    Ok(())
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / f64::from(1u32 << 30)),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / f64::from(1u32 << 20)),
        b if b >= 1 << 10 => format!("{:.1} kB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// Draws a progress bar on a terminal (indicatif hides it when stderr is not one).
#[derive(Default)]
struct BarObserver {
    current: Mutex<Option<(ProgressBar, Arc<AtomicBool>)>>,
}

impl BarObserver {
    fn finish(&self) {
        if let Ok(mut cur) = self.current.lock()
            && let Some((bar, stop)) = cur.take()
        {
            stop.store(true, Ordering::Relaxed);
            bar.finish_and_clear();
        }
    }
}

impl ImportObserver for BarObserver {
    fn phase(&self, layer: &str, phase: &str, progress: Option<Arc<Progress>>) {
        self.finish();
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = match progress {
            Some(_) => "{prefix} {msg} [{bar:30}] {percent:>3}% {elapsed_precise} eta {eta}",
            None => "{prefix} {msg} {spinner} {elapsed_precise}",
        };
        bar.set_style(
            ProgressStyle::with_template(style)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(layer.to_string());
        bar.set_message(phase.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        if !bar.is_hidden() {
            let (b, s) = (bar.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    if let Some(p) = &progress {
                        b.set_length(p.total.load(Ordering::Relaxed).max(1));
                        b.set_position(p.done.load(Ordering::Relaxed));
                    } else {
                        b.tick();
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        if let Ok(mut cur) = self.current.lock() {
            *cur = Some((bar, stop));
        }
    }

    fn detail(&self, message: &str) {
        if let Ok(cur) = self.current.lock()
            && let Some((bar, _)) = cur.as_ref()
        {
            bar.set_message(format!("building {message}"));
        }
    }
}
