//! The server's configuration: a TOML file, then `URBIS_*` environment variables, then
//! command-line flags, each overriding the one before; validated once at start.
//!
//! Every key of the file mirrors a flag of `urbis serve`:
//!
//! ```toml
//! store = "urbis-store"          # --store / URBIS_STORE
//! bind = "127.0.0.1:8080"        # --bind / URBIS_BIND
//! public_url = "https://tiles.example.city"   # --public-url / URBIS_PUBLIC_URL
//! cache_mb = 256                 # --cache-mb / URBIS_CACHE_MB (0 turns the cache off)
//! max_upload_mb = 1024           # --max-upload-mb: largest file POST /admin/layers takes
//! tile_budget_kb = 500           # --tile-budget-kb / URBIS_TILE_BUDGET_KB
//! buffer = 64                    # --buffer / URBIS_BUFFER (tile units of 4096)
//! max_age = 300                  # --max-age / URBIS_MAX_AGE (Cache-Control seconds)
//! demo = true                    # --no-demo / URBIS_NO_DEMO turns it off
//! coap_bind = "127.0.0.1:5683"   # --coap-bind / URBIS_COAP_BIND (0.0.0.0:5683 for devices)
//! retention_days = 90            # --retention-days / URBIS_RETENTION_DAYS (position history)
//! ingest_queue = 1024            # --ingest-queue / URBIS_INGEST_QUEUE (then 4.29 / 429)
//! wal_segment_mb = 64            # --wal-segment-mb / URBIS_WAL_SEGMENT_MB (history file size)
//! policy = "policy.toml"         # --policy / URBIS_POLICY (roles and layer rules; see `security::policy`)
//! rate_tiles = 500               # --rate-tiles: tile requests a second per key or address (burst 2x; 0 off)
//! rate_api = 50                  # --rate-api: device, geofence and audit requests a second
//! rate_ingest = 200              # --rate-ingest: POST /ingest a second per address
//! max_streams = 16               # --max-streams: open /stream connections per key or address
//! max_connections = 4096         # --max-connections: open HTTP connections at most (beyond: closed)
//! header_timeout_s = 10          # --header-timeout-s: a client must send its headers within this
//! tls_cert = "cert.pem"          # --tls-cert / URBIS_TLS_CERT: HTTPS (with tls_key), re-read on change
//! tls_key = "key.pem"            # --tls-key / URBIS_TLS_KEY
//! coaps_bind = "127.0.0.1:5684"  # --coaps-bind / URBIS_COAPS_BIND: CoAP over DTLS (PSK)
//! coap_dtls_only = false         # --coap-dtls-only: refuse plain CoAP reports (4.01)
//! metrics_bind = "127.0.0.1:9464" # --metrics-bind: /metrics without a key on its own listener
//! metrics = true                 # --no-metrics: count nothing (for measuring what metrics cost)
//! log_format = "text"            # --log-format / URBIS_LOG_FORMAT: text or json (a line an object)
//! slow_tile_ms = 500             # --slow-tile-ms: tiles slower than this are logged as warnings
//! alerts = "alerts.toml"         # --alerts / URBIS_ALERTS: alert rules (see `ops::alerts`)
//! fonts = "/srv/fonts"           # --fonts / URBIS_FONTS: label fonts (default: Debian's Noto and DejaVu)
//! cluster = "nats://10.0.0.1:4222,nats://10.0.0.2:4222"  # --cluster / URBIS_CLUSTER: cluster mode
//! cluster_name = "urbis"         # --cluster-name: prefix of the stream and buckets shared
//! cluster_replicas = 3           # --cluster-replicas: replicas of each (1 for one nats-server)
//! ```

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The CoAP address when none is configured.
pub const DEFAULT_COAP_BIND: &str = "127.0.0.1:5683";
/// The CoAP-over-DTLS address when none is configured.
pub const DEFAULT_COAPS_BIND: &str = "127.0.0.1:5684";

/// What the config file may hold; every key optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Store directory.
    pub store: Option<PathBuf>,
    /// Listen address.
    pub bind: Option<String>,
    /// Public base URL for TileJSON tile URLs.
    pub public_url: Option<String>,
    /// Tile cache size in MiB.
    pub cache_mb: Option<u64>,
    /// Largest admin upload, MiB.
    pub max_upload_mb: Option<u64>,
    /// Tile byte budget in KiB.
    pub tile_budget_kb: Option<u64>,
    /// Tile buffer in tile units.
    pub buffer: Option<u32>,
    /// Cache-Control max-age of tiles, seconds.
    pub max_age: Option<u32>,
    /// Import the embedded demo layers into an empty store.
    pub demo: Option<bool>,
    /// CoAP (UDP) listen address for device reports.
    pub coap_bind: Option<String>,
    /// Days of position history kept.
    pub retention_days: Option<u64>,
    /// Report groups waiting for the log, at most.
    pub ingest_queue: Option<usize>,
    /// Log segment size in MiB.
    pub wal_segment_mb: Option<u64>,
    /// Policy file (roles and layer rules).
    pub policy: Option<PathBuf>,
    /// Tile requests a second per caller.
    pub rate_tiles: Option<u32>,
    /// API requests a second per caller.
    pub rate_api: Option<u32>,
    /// Ingest requests a second per address.
    pub rate_ingest: Option<u32>,
    /// Open streams per caller.
    pub max_streams: Option<u32>,
    /// Seconds a client has to send its request headers.
    pub header_timeout_s: Option<u64>,
    /// Open HTTP connections at most.
    pub max_connections: Option<u32>,
    /// TLS certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// CoAP-over-DTLS listen address.
    pub coaps_bind: Option<String>,
    /// Refuse plain CoAP reports.
    pub coap_dtls_only: Option<bool>,
    /// A listener of its own for `/metrics`, served without a key.
    pub metrics_bind: Option<String>,
    /// Count requests, tiles and reports for `/metrics`.
    pub metrics: Option<bool>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// Tiles slower than this many milliseconds are logged.
    pub slow_tile_ms: Option<u64>,
    /// The alert rules file.
    pub alerts: Option<PathBuf>,
    /// A folder of label fonts.
    pub fonts: Option<PathBuf>,
    /// NATS URLs of a cluster (comma-separated): cluster mode.
    pub cluster: Option<String>,
    /// Name of the cluster's stream and buckets.
    pub cluster_name: Option<String>,
    /// Replicas of the cluster's stream and buckets.
    pub cluster_replicas: Option<usize>,
}

/// Settings given on the command line or in the environment (clap fills these): the same keys
/// as the file, each overriding it when set (`--no-demo` sets `demo = false`).
pub type Overrides = FileConfig;

/// The validated configuration of a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Store directory.
    pub store: PathBuf,
    /// Listen address.
    pub bind: SocketAddr,
    /// Public base URL (no trailing slash) for TileJSON, if set.
    pub public_url: Option<String>,
    /// Tile cache size in bytes.
    pub cache_bytes: u64,
    /// Largest file `POST /admin/layers/{name}` takes, bytes.
    pub max_upload_bytes: u64,
    /// Tile byte budget.
    pub tile_budget: usize,
    /// Tile buffer.
    pub buffer: u32,
    /// Cache-Control max-age for tiles.
    pub max_age: u32,
    /// Import the demo layers into an empty store.
    pub demo: bool,
    /// CoAP listen address.
    pub coap_bind: SocketAddr,
    /// Position history retention, seconds.
    pub retention_s: u64,
    /// Ingest queue length.
    pub ingest_queue: usize,
    /// Log segment size, MiB.
    pub wal_segment_mb: u64,
    /// Policy file, if any (else the built-in roles).
    pub policy: Option<PathBuf>,
    /// Rate limits.
    pub rates: crate::security::limits::Rates,
    /// Seconds a client has to send its request headers.
    pub header_timeout_s: u64,
    /// Open HTTP connections at most; a connection beyond is closed at once.
    pub max_connections: u32,
    /// TLS certificate chain (PEM), for HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM), for HTTPS.
    pub tls_key: Option<PathBuf>,
    /// CoAP-over-DTLS listen address.
    pub coaps_bind: SocketAddr,
    /// Refuse plain CoAP reports (devices report over DTLS only).
    pub coap_dtls_only: bool,
    /// A listener of its own for `/metrics` (no key asked there: bind it to loopback or a
    /// network only the scraper reaches).
    pub metrics_bind: Option<SocketAddr>,
    /// Count requests, tiles and reports for `/metrics` (default true).
    pub metrics: bool,
    /// Log JSON lines instead of text.
    pub log_json: bool,
    /// Tiles slower than this many milliseconds are logged as warnings.
    pub slow_tile_ms: u64,
    /// Alert rules, read and checked from `--alerts`.
    pub alerts: Option<crate::ops::alerts::Rules>,
    /// Folders of label fonts.
    pub fonts: Vec<PathBuf>,
    /// Cluster mode: where the NATS cluster is and what the shared stream and buckets are
    /// called (`None`: a single server).
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// A configuration problem, naming the setting and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting {key} = {value:?}: {why}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        why: String,
    },
}

/// `value` if it lies in `lo..=hi`, else the error naming `key` and the range.
fn in_range<T: PartialOrd + Copy + std::fmt::Display>(
    key: &'static str,
    value: T,
    lo: T,
    hi: T,
) -> Result<T, ConfigError> {
    if (lo..=hi).contains(&value) {
        return Ok(value);
    }
    Err(ConfigError::Invalid {
        key,
        value: value.to_string(),
        why: format!("must be between {lo} and {hi}"),
    })
}

impl Config {
    /// Merges file < environment < flags (clap has already merged the last two) and checks.
    pub fn load(file: Option<&Path>, o: Overrides) -> Result<Config, ConfigError> {
        let f: FileConfig = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string().trim().to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        let bind_text = o.bind.or(f.bind).unwrap_or_else(|| "127.0.0.1:8080".into());
        let bind: SocketAddr = bind_text.parse().map_err(|e| ConfigError::Invalid {
            key: "bind",
            value: bind_text.clone(),
            why: format!("{e}; give an address and port such as 127.0.0.1:8080 or 0.0.0.0:80"),
        })?;
        let public_url = o
            .public_url
            .or(f.public_url)
            .map(|u| u.trim_end_matches('/').to_string());
        if let Some(u) = &public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(ConfigError::Invalid {
                key: "public_url",
                value: u.clone(),
                why: "must start with http:// or https://".into(),
            });
        }
        let budget_kb = in_range(
            "tile_budget_kb",
            o.tile_budget_kb.or(f.tile_budget_kb).unwrap_or(500),
            16,
            16_384,
        )?;
        let buffer = o.buffer.or(f.buffer).unwrap_or(64);
        if buffer > 2048 {
            return Err(ConfigError::Invalid {
                key: "buffer",
                value: buffer.to_string(),
                why: "must be at most 2048 (half a tile)".into(),
            });
        }
        let coap_text = o
            .coap_bind
            .or(f.coap_bind)
            .unwrap_or_else(|| DEFAULT_COAP_BIND.into());
        let coap_bind: SocketAddr = coap_text.parse().map_err(|e| ConfigError::Invalid {
            key: "coap_bind",
            value: coap_text.clone(),
            why: format!("{e}; give an address and port such as 0.0.0.0:5683"),
        })?;
        let coaps_text = o
            .coaps_bind
            .or(f.coaps_bind)
            .unwrap_or_else(|| DEFAULT_COAPS_BIND.into());
        let coaps_bind: SocketAddr = coaps_text.parse().map_err(|e| ConfigError::Invalid {
            key: "coaps_bind",
            value: coaps_text.clone(),
            why: format!("{e}; give an address and port such as 0.0.0.0:5684"),
        })?;
        let retention_days = in_range(
            "retention_days",
            o.retention_days.or(f.retention_days).unwrap_or(90),
            1,
            3650,
        )?;
        let ingest_queue = in_range(
            "ingest_queue",
            o.ingest_queue.or(f.ingest_queue).unwrap_or(1024),
            1,
            1_000_000,
        )?;
        let wal_segment_mb = in_range(
            "wal_segment_mb",
            o.wal_segment_mb.or(f.wal_segment_mb).unwrap_or(64),
            1,
            4096,
        )?;
        let d = crate::security::limits::Rates::default();
        let rates = crate::security::limits::Rates {
            tiles: in_range(
                "rate_tiles",
                u64::from(o.rate_tiles.or(f.rate_tiles).unwrap_or(d.tiles)),
                0,
                1_000_000,
            )? as u32,
            api: in_range(
                "rate_api",
                u64::from(o.rate_api.or(f.rate_api).unwrap_or(d.api)),
                0,
                1_000_000,
            )? as u32,
            ingest: in_range(
                "rate_ingest",
                u64::from(o.rate_ingest.or(f.rate_ingest).unwrap_or(d.ingest)),
                0,
                1_000_000,
            )? as u32,
            streams: in_range(
                "max_streams",
                u64::from(o.max_streams.or(f.max_streams).unwrap_or(d.streams)),
                0,
                100_000,
            )? as u32,
        };
        let header_timeout_s = in_range(
            "header_timeout_s",
            o.header_timeout_s.or(f.header_timeout_s).unwrap_or(10),
            1,
            600,
        )?;
        let max_connections = in_range(
            "max_connections",
            u64::from(o.max_connections.or(f.max_connections).unwrap_or(4096)),
            1,
            1_000_000,
        )? as u32;
        let (tls_cert, tls_key) = (o.tls_cert.or(f.tls_cert), o.tls_key.or(f.tls_key));
        if tls_cert.is_some() != tls_key.is_some() {
            return Err(ConfigError::Invalid {
                key: if tls_cert.is_some() {
                    "tls_key"
                } else {
                    "tls_cert"
                },
                value: String::new(),
                why: "HTTPS needs both tls_cert and tls_key".into(),
            });
        }
        let metrics_bind = match o.metrics_bind.or(f.metrics_bind) {
            None => None,
            Some(v) => Some(v.parse::<SocketAddr>().map_err(|e| ConfigError::Invalid {
                key: "metrics_bind",
                value: v.clone(),
                why: format!("{e}: give an address and port, e.g. 127.0.0.1:9464"),
            })?),
        };
        let log_json = match o.log_format.or(f.log_format).as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "log_format",
                    value: other.to_string(),
                    why: "give text or json".into(),
                });
            }
        };
        let slow_tile_ms = in_range(
            "slow_tile_ms",
            o.slow_tile_ms.or(f.slow_tile_ms).unwrap_or(500),
            0,
            3_600_000,
        )?;
        let alerts = match o.alerts.or(f.alerts) {
            None => None,
            Some(path) => Some(crate::ops::alerts::Rules::load(&path).map_err(|why| {
                ConfigError::Invalid {
                    key: "alerts",
                    value: path.display().to_string(),
                    why,
                }
            })?),
        };
        let fonts = match o.fonts.or(f.fonts) {
            Some(dir) if !dir.is_dir() => {
                return Err(ConfigError::Invalid {
                    key: "fonts",
                    value: dir.display().to_string(),
                    why: "not a folder; give a folder of .ttf, .otf or .ttc fonts".into(),
                });
            }
            Some(dir) => vec![dir],
            None => crate::fonts::DEFAULT_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
        };
        let cluster = match o.cluster.or(f.cluster) {
            None => None,
            Some(urls) => {
                let urls: Vec<String> = urls
                    .split(',')
                    .map(|u| u.trim().to_string())
                    .filter(|u| !u.is_empty())
                    .collect();
                if let Some(bad) = urls.iter().find(|u| {
                    let rest = u.strip_prefix("nats://").unwrap_or(u);
                    !rest
                        .rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                }) {
                    return Err(ConfigError::Invalid {
                        key: "cluster",
                        value: bad.clone(),
                        why: "give NATS servers as nats://HOST:PORT, comma-separated".into(),
                    });
                }
                if urls.is_empty() {
                    return Err(ConfigError::Invalid {
                        key: "cluster",
                        value: String::new(),
                        why: "give at least one NATS server as nats://HOST:PORT".into(),
                    });
                }
                let name = o
                    .cluster_name
                    .or(f.cluster_name)
                    .unwrap_or_else(|| "urbis".into());
                if name.is_empty()
                    || name.len() > 32
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(ConfigError::Invalid {
                        key: "cluster_name",
                        value: name,
                        why: "use 1-32 of A-Z a-z 0-9 _ -".into(),
                    });
                }
                let replicas = o.cluster_replicas.or(f.cluster_replicas).unwrap_or(3);
                if !(1..=5).contains(&replicas) {
                    return Err(ConfigError::Invalid {
                        key: "cluster_replicas",
                        value: replicas.to_string(),
                        why: "JetStream keeps 1 to 5 replicas".into(),
                    });
                }
                Some(crate::cluster::ClusterConfig {
                    urls,
                    name,
                    replicas,
                })
            }
        };
        Ok(Config {
            cluster,
            fonts,
            alerts,
            log_json,
            slow_tile_ms,
            metrics: o.metrics.or(f.metrics).unwrap_or(true),
            metrics_bind,
            coaps_bind,
            coap_dtls_only: o.coap_dtls_only.or(f.coap_dtls_only).unwrap_or(false),
            tls_cert,
            tls_key,
            rates,
            header_timeout_s,
            max_connections,
            policy: o.policy.or(f.policy),
            wal_segment_mb,
            coap_bind,
            retention_s: retention_days * 86_400,
            ingest_queue,
            store: o
                .store
                .or(f.store)
                .unwrap_or_else(|| PathBuf::from("urbis-store")),
            bind,
            public_url,
            cache_bytes: o
                .cache_mb
                .or(f.cache_mb)
                .unwrap_or(256)
                .saturating_mul(1 << 20),
            max_upload_bytes: o
                .max_upload_mb
                .or(f.max_upload_mb)
                .unwrap_or(1024)
                .saturating_mul(1 << 20),
            tile_budget: (budget_kb * 1024) as usize,
            buffer,
            max_age: o.max_age.or(f.max_age).unwrap_or(300),
            demo: o.demo.or(f.demo).unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("urbis.toml");
        std::fs::write(&p, "bind = \"0.0.0.0:9000\"\ncache_mb = 10\nmax_age = 60\n").unwrap();
        let c = Config::load(
            Some(&p),
            Overrides {
                bind: Some("127.0.0.1:9001".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.bind.port(), 9001);
        assert_eq!(c.cache_bytes, 10 << 20);
        assert_eq!(c.max_age, 60);
        assert_eq!(c.tile_budget, 500 * 1024);
    }

    #[test]
    fn cluster_settings_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("urbis.toml");
        std::fs::write(
            &p,
            "cluster = \"nats://10.0.0.1:4222, nats://10.0.0.2:4222\"\ncluster_name = \"city-a\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&p), Overrides::default()).unwrap();
        let cc = c.cluster.unwrap();
        assert_eq!(cc.urls, ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]);
        assert_eq!((cc.name.as_str(), cc.replicas), ("city-a", 3));
        assert!(
            Config::load(None, Overrides::default())
                .unwrap()
                .cluster
                .is_none()
        );
        for (o, key) in [
            (
                Overrides {
                    cluster: Some("nats://10.0.0.1".into()),
                    ..Default::default()
                },
                "cluster",
            ),
            (
                Overrides {
                    cluster: Some("nats://h:4222".into()),
                    cluster_name: Some("a.b".into()),
                    ..Default::default()
                },
                "cluster_name",
            ),
            (
                Overrides {
                    cluster: Some("nats://h:4222".into()),
                    cluster_replicas: Some(7),
                    ..Default::default()
                },
                "cluster_replicas",
            ),
        ] {
            let e = Config::load(None, o).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("urbis.toml");
        std::fs::write(&p, "bnid = \"x\"\n").unwrap();
        let e = Config::load(Some(&p), Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bnid") && e.contains("line 1"), "{e}");
        let e = Config::load(
            None,
            Overrides {
                bind: Some("localhost".into()),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bind") && e.contains("127.0.0.1:8080"), "{e}");
    }
}
