//! Alert rules: the emergency-response half of operations. A rules file (`--alerts FILE`,
//! TOML) states conditions over the figures the server already keeps; the server evaluates
//! them every `interval` and sends each change of state (`firing`, `resolved`) to `/stream`
//! as an `alert` event (the big screen's feed), to `GET /alerts`, to the store (the operation
//! report lists them) and to an optional webhook (POST JSON, retried with backoff from a
//! queue of its own: a slow or dead webhook never holds up the server). The same rules can be
//! exported as Prometheus alerting rules for teams that run Alertmanager.
//!
//! In cluster mode every server evaluates its own rules; a change of a rule that reads only
//! the shared live state (`devices_lost`, `no_reports`, `geofence_open`) happens on every
//! server that has the rule, and goes to the webhook once: the server an [`AlertGate`] names
//! first posts it. The other rules read a server's own figures and each server posts its own.
//!
//! ```toml
//! interval = "15s"                 # how often the rules are evaluated (1s..1h)
//!
//! [webhook]
//! url = "http://ops.example:9000/urbis"   # http:// only; POST of each alert event as JSON
//! timeout = "5s"                   # per attempt
//! retries = 5                      # attempts after the first, backing off 1 s, 2 s, 4 s ...
//!
//! [[rule]]
//! name = "trackers lost"           # unique; names the alert everywhere
//! when = "devices_lost"            # devices of `layer` (every live layer without) in state
//! layer = "trackers"               #   lost, more than `above` (default 0)
//! above = 3
//! for = "5m"                       # the condition holds this long before it fires (default 0)
//! severity = "critical"            # or "warning" (default)
//!
//! [[rule]]
//! name = "meters silent"
//! when = "no_reports"              # no report from any device of `layer` for `silent`
//! layer = "meters"
//! silent = "30m"
//!
//! [[rule]]
//! name = "alarm open"
//! when = "geofence_open"           # more than `above` (default 0) geofence alarms open
//! longer_than = "10m"              #   (a device inside a fence) longer than this
//!
//! [[rule]]
//! when = "ingest_refused"          # device payloads refused (any outcome but accepted) in
//! name = "refusals"                #   the last `window` (default 5m) more than `above` (0)
//!
//! [[rule]]
//! when = "tile_p99"                # 99th percentile of tile making time over the last
//! name = "slow tiles"              #   `window` (default 5m) above `above` milliseconds
//! above = 500
//!
//! [[rule]]
//! when = "not_ready"               # /ready failing (the event names the failed checks)
//! name = "not ready"
//! for = "1m"
//!
//! [[rule]]
//! when = "disk_free"               # free space of the store's file system under `below` %
//! name = "disk"
//! below = 10
//! ```

use super::minutes::{Figures, Minutes, quantile};
use crate::live::{Hub, Pulse};
use crate::security::keys::parse_lifetime;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Transitions kept for `GET /alerts`.
const HISTORY: usize = 200;
/// Webhook deliveries waiting at most; past it the oldest are dropped (and logged).
const WEBHOOK_QUEUE: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    interval: Option<String>,
    webhook: Option<WebhookFile>,
    #[serde(default)]
    rule: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookFile {
    url: String,
    timeout: Option<String>,
    retries: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: String,
    when: String,
    layer: Option<String>,
    above: Option<f64>,
    below: Option<f64>,
    #[serde(rename = "for")]
    hold: Option<String>,
    silent: Option<String>,
    longer_than: Option<String>,
    window: Option<String>,
    severity: Option<String>,
}

/// What a rule watches.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Devices of a layer (any without) lost, more than `above`.
    DevicesLost {
        /// Live layer.
        layer: Option<String>,
        /// Threshold.
        above: f64,
    },
    /// No report from the layer's devices for `silent_s`.
    NoReports {
        /// Live layer.
        layer: String,
        /// Seconds.
        silent_s: u64,
    },
    /// More than `above` geofence alarms open longer than `longer_than_s`.
    GeofenceOpen {
        /// Seconds.
        longer_than_s: u64,
        /// Threshold.
        above: f64,
    },
    /// Device payloads refused in the last `window_min` minutes, more than `above`.
    IngestRefused {
        /// Minutes.
        window_min: u64,
        /// Threshold.
        above: f64,
    },
    /// Tile-making p99 over `window_min` minutes above `above_ms`.
    TileP99 {
        /// Minutes.
        window_min: u64,
        /// Milliseconds.
        above_ms: f64,
    },
    /// `/ready` fails.
    NotReady,
    /// Free space of the store's file system under `below` percent.
    DiskFree {
        /// Percent.
        below: f64,
    },
}

impl Condition {
    /// Whether it reads only the live state (lost devices, silent layers, open geofence
    /// alarms), which every server of a cluster holds alike: such a rule changes state on
    /// every server at about the same time, and the cluster announces it once. The others
    /// read a server's own figures (its refusals, tile times, readiness, disk).
    pub fn on_shared_state(&self) -> bool {
        matches!(
            self,
            Condition::DevicesLost { .. }
                | Condition::NoReports { .. }
                | Condition::GeofenceOpen { .. }
        )
    }
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its unique name.
    pub name: String,
    /// What it watches.
    pub condition: Condition,
    /// Seconds the condition must hold before it fires.
    pub hold_s: u64,
    /// `warning` or `critical`.
    pub severity: &'static str,
}

/// Where alert events are posted.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// `http://` URL.
    pub url: String,
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
}

/// A rules file, checked.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Seconds between evaluations.
    pub interval_s: u64,
    /// The webhook, if any.
    pub webhook: Option<Webhook>,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
}

fn seconds(field: &str, v: &str, rule: &str) -> Result<u64, String> {
    parse_lifetime(v).map_err(|e| format!("rule {rule:?}: {field}: {e}"))
}

fn minutes(field: &str, v: Option<&str>, rule: &str) -> Result<u64, String> {
    let s = seconds(field, v.unwrap_or("5m"), rule)?;
    if !(60..=3600).contains(&s) || s % 60 != 0 {
        return Err(format!(
            "rule {rule:?}: {field} = {:?}: whole minutes from 1m to 60m",
            v.unwrap_or("5m")
        ));
    }
    Ok(s / 60)
}

impl Rules {
    /// Reads and checks a rules file; the error names the file, and the rule and field.
    pub fn load(path: &Path) -> Result<Rules, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the alert rules {}: {e}", path.display()))?;
        Rules::parse(&text).map_err(|e| format!("alert rules {}: {e}", path.display()))
    }

    /// Parses and checks the TOML of a rules file.
    pub fn parse(text: &str) -> Result<Rules, String> {
        let f: RulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let interval_s = match &f.interval {
            None => 15,
            Some(v) => {
                let s = parse_lifetime(v).map_err(|e| format!("interval: {e}"))?;
                if s > 3600 {
                    return Err(format!("interval = {v:?}: at most 1h"));
                }
                s
            }
        };
        let webhook = match f.webhook {
            None => None,
            Some(w) => {
                if !w.url.starts_with("http://") {
                    return Err(format!(
                        "webhook url {:?}: give an http:// URL (for HTTPS, a relay on the same host)",
                        w.url
                    ));
                }
                let timeout = match &w.timeout {
                    None => 5,
                    Some(t) => parse_lifetime(t).map_err(|e| format!("webhook timeout: {e}"))?,
                };
                Some(Webhook {
                    url: w.url,
                    timeout: Duration::from_secs(timeout.min(300)),
                    retries: w.retries.unwrap_or(5).min(20),
                })
            }
        };
        let mut rules: Vec<Rule> = Vec::new();
        for (i, r) in f.rule.into_iter().enumerate() {
            let name = r.name.trim().to_string();
            if name.is_empty() || name.len() > 100 {
                return Err(format!(
                    "rule {}: give it a name of 1-100 characters",
                    i + 1
                ));
            }
            if rules.iter().any(|o| o.name == name) {
                return Err(format!("rule {name:?}: two rules have this name"));
            }
            let n = &name;
            let used = |field: &str, set: bool, kinds: &str| -> Result<(), String> {
                if set {
                    Err(format!(
                        "rule {n:?}: {field} is for `when = {kinds}`, not {:?}",
                        r.when
                    ))
                } else {
                    Ok(())
                }
            };
            let above = r.above.unwrap_or(0.0);
            if !above.is_finite() || above < 0.0 {
                return Err(format!("rule {n:?}: above must be a number ≥ 0"));
            }
            let condition = match r.when.as_str() {
                "devices_lost" => Condition::DevicesLost {
                    layer: r.layer.clone(),
                    above,
                },
                "no_reports" => Condition::NoReports {
                    layer: r
                        .layer
                        .clone()
                        .ok_or_else(|| format!("rule {n:?}: no_reports needs a layer"))?,
                    silent_s: seconds(
                        "silent",
                        r.silent.as_deref().ok_or_else(|| {
                            format!("rule {n:?}: no_reports needs silent = \"30m\" (say)")
                        })?,
                        n,
                    )?,
                },
                "geofence_open" => Condition::GeofenceOpen {
                    longer_than_s: seconds(
                        "longer_than",
                        r.longer_than.as_deref().ok_or_else(|| {
                            format!("rule {n:?}: geofence_open needs longer_than = \"10m\" (say)")
                        })?,
                        n,
                    )?,
                    above,
                },
                "ingest_refused" => Condition::IngestRefused {
                    window_min: minutes("window", r.window.as_deref(), n)?,
                    above,
                },
                "tile_p99" => Condition::TileP99 {
                    window_min: minutes("window", r.window.as_deref(), n)?,
                    above_ms: r.above.filter(|a| *a > 0.0).ok_or_else(|| {
                        format!("rule {n:?}: tile_p99 needs above = milliseconds (say 500)")
                    })?,
                },
                "not_ready" => Condition::NotReady,
                "disk_free" => Condition::DiskFree {
                    below: r.below.filter(|b| *b > 0.0 && *b < 100.0).ok_or_else(|| {
                        format!("rule {n:?}: disk_free needs below = a percentage (0-100)")
                    })?,
                },
                other => {
                    return Err(format!(
                        "rule {n:?}: when = {other:?}: use devices_lost, no_reports, geofence_open, ingest_refused, tile_p99, not_ready or disk_free"
                    ));
                }
            };
            let c = &condition;
            used(
                "layer",
                r.layer.is_some()
                    && !matches!(
                        c,
                        Condition::DevicesLost { .. } | Condition::NoReports { .. }
                    ),
                "devices_lost or no_reports",
            )?;
            used(
                "above",
                r.above.is_some()
                    && matches!(
                        c,
                        Condition::NoReports { .. }
                            | Condition::NotReady
                            | Condition::DiskFree { .. }
                    ),
                "devices_lost, geofence_open, ingest_refused or tile_p99",
            )?;
            used(
                "below",
                r.below.is_some() && !matches!(c, Condition::DiskFree { .. }),
                "disk_free",
            )?;
            used(
                "silent",
                r.silent.is_some() && !matches!(c, Condition::NoReports { .. }),
                "no_reports",
            )?;
            used(
                "longer_than",
                r.longer_than.is_some() && !matches!(c, Condition::GeofenceOpen { .. }),
                "geofence_open",
            )?;
            used(
                "window",
                r.window.is_some()
                    && !matches!(
                        c,
                        Condition::IngestRefused { .. } | Condition::TileP99 { .. }
                    ),
                "ingest_refused or tile_p99",
            )?;
            let hold_s = match &r.hold {
                None => 0,
                Some(v) => seconds("for", v, n)?,
            };
            let severity = match r.severity.as_deref() {
                None | Some("warning") => "warning",
                Some("critical") => "critical",
                Some(other) => {
                    return Err(format!(
                        "rule {n:?}: severity {other:?}: use warning or critical"
                    ));
                }
            };
            rules.push(Rule {
                name,
                condition,
                hold_s,
                severity,
            });
        }
        Ok(Rules {
            interval_s,
            webhook,
            rules,
        })
    }

    /// The rules as Prometheus alerting rules (YAML), over the metrics of `/metrics`.
    pub fn to_prometheus(&self) -> String {
        let q = |s: &str| format!("{s:?}");
        let mut out = String::from(
            "# Prometheus alerting rules from an Urbis rules file (urbis alerts export).\n\
             # They read the metrics of /metrics; load them with `rule_files:` in prometheus.yml.\n\
             groups:\n  - name: urbis\n    rules:\n",
        );
        for r in &self.rules {
            let (expr, summary) = match &r.condition {
                Condition::DevicesLost { layer, above } => (
                    match layer {
                        Some(l) => format!(
                            "sum(urbis_devices{{layer={},state=\"lost\"}}) > {above}",
                            q(l)
                        ),
                        None => format!("sum(urbis_devices{{state=\"lost\"}}) > {above}"),
                    },
                    format!(
                        "{{{{ $value }}}} devices lost{}",
                        layer
                            .as_ref()
                            .map(|l| format!(" in {l}"))
                            .unwrap_or_default()
                    ),
                ),
                Condition::NoReports { layer, silent_s } => (
                    format!(
                        "time() - urbis_live_last_report_timestamp_seconds{{layer={}}} > {silent_s}",
                        q(layer)
                    ),
                    format!("no report from {layer} for {{{{ $value | humanizeDuration }}}}"),
                ),
                Condition::GeofenceOpen {
                    longer_than_s,
                    above,
                } => (
                    if *above == 0.0 {
                        format!("urbis_geofence_alarm_oldest_age_seconds > {longer_than_s}")
                    } else {
                        // The metrics hold the count and the oldest age, not every age: an
                        // approximation of the rule for thresholds above 0.
                        format!(
                            "urbis_geofence_alarms_open > {above} and urbis_geofence_alarm_oldest_age_seconds > {longer_than_s}"
                        )
                    },
                    "a geofence alarm has been open for {{ $value | humanizeDuration }}"
                        .to_string(),
                ),
                Condition::IngestRefused { window_min, above } => (
                    format!(
                        "sum(increase(urbis_ingest_payloads_total{{outcome!=\"accepted\"}}[{window_min}m])) > {above}"
                    ),
                    format!("{{{{ $value }}}} device payloads refused in {window_min} minutes"),
                ),
                Condition::TileP99 {
                    window_min,
                    above_ms,
                } => (
                    format!(
                        "histogram_quantile(0.99, sum by (le) (rate(urbis_tile_generation_duration_seconds_bucket[{window_min}m]))) * 1000 > {above_ms}"
                    ),
                    "tile p99 {{ $value }} ms".to_string(),
                ),
                Condition::NotReady => ("urbis_ready == 0".to_string(), "/ready fails".to_string()),
                Condition::DiskFree { below } => (
                    format!("urbis_store_disk_free_ratio * 100 < {below}"),
                    "{{ $value }} % free on the store's disk".to_string(),
                ),
            };
            out.push_str(&format!(
                "      - alert: {}\n        expr: {}\n        for: {}s\n        labels:\n          severity: {}\n        annotations:\n          summary: {}\n",
                q(&r.name),
                q(&expr),
                r.hold_s,
                r.severity,
                q(&summary)
            ));
        }
        out
    }

    /// What evaluating needs: live figures, windows of minutes, readiness, disk.
    fn needs(&self) -> Needs {
        let mut n = Needs::default();
        for r in &self.rules {
            match &r.condition {
                Condition::DevicesLost { .. }
                | Condition::NoReports { .. }
                | Condition::GeofenceOpen { .. } => n.pulse = true,
                Condition::IngestRefused { window_min, .. }
                | Condition::TileP99 { window_min, .. } => {
                    if !n.windows.contains(window_min) {
                        n.windows.push(*window_min);
                    }
                }
                Condition::NotReady => n.ready = true,
                Condition::DiskFree { .. } => n.disk = true,
            }
        }
        n
    }
}

#[derive(Debug, Default)]
struct Needs {
    pulse: bool,
    windows: Vec<u64>,
    ready: bool,
    disk: bool,
}

/// The figures one evaluation reads.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Now (seconds since 1970).
    pub now: f64,
    /// When the server started (a layer that never reported is silent since then).
    pub started: f64,
    /// Live figures.
    pub pulse: Pulse,
    /// Figures of the last n minutes, by n.
    pub windows: BTreeMap<u64, Figures>,
    /// The failed readiness checks.
    pub not_ready: Vec<String>,
    /// Free percent of the store's file system.
    pub disk_free: Option<f64>,
}

/// A change of an alert's state, as sent everywhere.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertEvent {
    /// The rule's name.
    pub rule: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// `warning` or `critical`.
    pub severity: String,
    /// The live layer it is about, if any.
    pub layer: Option<String>,
    /// The figure the rule watches, now.
    pub value: f64,
    /// For a person: what is wrong (or was).
    pub summary: String,
    /// When the condition began to hold (seconds since 1970).
    pub since: f64,
    /// When this change happened.
    pub at: f64,
}

/// A rule's state now, for `GET /alerts`.
#[derive(Debug, Clone, Serialize)]
pub struct RuleStatus {
    /// The rule's name.
    pub rule: String,
    /// Its kind (`when` in the file).
    pub when: &'static str,
    /// `inactive`, `pending` or `firing`.
    pub state: &'static str,
    /// `warning` or `critical`.
    pub severity: &'static str,
    /// The figure last seen.
    pub value: f64,
    /// What it says now.
    pub summary: String,
    /// Since when the condition holds.
    pub since: Option<f64>,
}

#[derive(Debug, Default, Clone)]
struct RuleState {
    holds_since: Option<f64>,
    firing: bool,
    value: f64,
    summary: String,
}

/// Decides which server of a cluster posts a change of a rule over the shared live state to
/// the webhook (every server sees it; one should tell). The cluster room implements it; a
/// single server has none and posts everything.
pub trait AlertGate: Send + Sync {
    /// Whether this server is the first to announce `e` (and so posts it); an answer that
    /// cannot be had should be `true`: a duplicate is better than a lost alert.
    fn first<'a>(
        &'a self,
        e: &'a AlertEvent,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>;
}

/// A change waiting for the webhook, with whether its rule reads the shared state.
type Queued = (AlertEvent, bool);

/// The rules, their states, the recent transitions and the webhook's queue.
pub struct Alerts {
    rules: Rules,
    states: Mutex<Vec<RuleState>>,
    history: Mutex<VecDeque<AlertEvent>>,
    webhook: Option<tokio::sync::mpsc::Sender<Queued>>,
    gate: Arc<std::sync::OnceLock<Arc<dyn AlertGate>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn when(c: &Condition) -> &'static str {
    match c {
        Condition::DevicesLost { .. } => "devices_lost",
        Condition::NoReports { .. } => "no_reports",
        Condition::GeofenceOpen { .. } => "geofence_open",
        Condition::IngestRefused { .. } => "ingest_refused",
        Condition::TileP99 { .. } => "tile_p99",
        Condition::NotReady => "not_ready",
        Condition::DiskFree { .. } => "disk_free",
    }
}

fn human(s: f64) -> String {
    let s = s.max(0.0) as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The figure a condition watches, whether it holds, and a sentence about it.
fn check(c: &Condition, i: &Inputs) -> (f64, bool, String) {
    match c {
        Condition::DevicesLost { layer, above } => {
            let lost: u64 = i
                .pulse
                .states
                .iter()
                .filter(|(l, _)| layer.as_ref().is_none_or(|x| x == *l))
                .filter_map(|(_, s)| s.get("lost"))
                .sum();
            let v = lost as f64;
            let of = layer
                .as_ref()
                .map(|l| format!(" of {l}"))
                .unwrap_or_default();
            (
                v,
                v > *above,
                format!("{lost} devices{of} lost (alert above {above})"),
            )
        }
        Condition::NoReports { layer, silent_s } => {
            let last = i.pulse.last_report.get(layer).copied().unwrap_or(i.started);
            let v = (i.now - last).max(0.0);
            (
                v,
                v > *silent_s as f64,
                format!(
                    "no report from {layer} for {} (alert past {})",
                    human(v),
                    human(*silent_s as f64)
                ),
            )
        }
        Condition::GeofenceOpen {
            longer_than_s,
            above,
        } => {
            let n = i
                .pulse
                .alarms_since
                .iter()
                .filter(|t| i.now - **t > *longer_than_s as f64)
                .count() as f64;
            (
                n,
                n > *above,
                format!(
                    "{n} geofence alarms open longer than {}",
                    human(*longer_than_s as f64)
                ),
            )
        }
        Condition::IngestRefused { window_min, above } => {
            let v = i.windows.get(window_min).map_or(0, Figures::refused) as f64;
            (
                v,
                v > *above,
                format!(
                    "{v} device payloads refused in the last {window_min} min (alert above {above})"
                ),
            )
        }
        Condition::TileP99 {
            window_min,
            above_ms,
        } => {
            let v = i
                .windows
                .get(window_min)
                .and_then(|f| quantile(&f.tile_latency, 0.99))
                .unwrap_or(0.0);
            (
                v,
                v > *above_ms,
                format!(
                    "tile p99 {v:.1} ms over the last {window_min} min (alert above {above_ms} ms)"
                ),
            )
        }
        Condition::NotReady => {
            let n = i.not_ready.len() as f64;
            (
                n,
                n > 0.0,
                if i.not_ready.is_empty() {
                    "/ready passes".to_string()
                } else {
                    format!("/ready fails: {}", i.not_ready.join(", "))
                },
            )
        }
        Condition::DiskFree { below } => {
            let v = i.disk_free.unwrap_or(100.0);
            (
                v,
                v < *below,
                format!("{v:.1} % free on the store's disk (alert under {below} %)"),
            )
        }
    }
}

impl Alerts {
    /// The rules, all inactive; the webhook's sender runs on the current tokio runtime when
    /// the rules have one (call within it).
    pub fn new(rules: Rules) -> Alerts {
        let gate = Arc::new(std::sync::OnceLock::new());
        let webhook = rules.webhook.clone().map(|w| {
            let (tx, rx) = tokio::sync::mpsc::channel(WEBHOOK_QUEUE);
            tokio::spawn(deliver(w, rx, Arc::clone(&gate)));
            tx
        });
        let states = Mutex::new(vec![RuleState::default(); rules.rules.len()]);
        Alerts {
            rules,
            states,
            history: Mutex::new(VecDeque::new()),
            webhook,
            gate,
        }
    }

    /// In cluster mode: changes of the rules over the shared state go to the webhook only
    /// when `gate` says this server is the first to announce them. Set once.
    pub fn share(&self, gate: Arc<dyn AlertGate>) {
        let _ = self.gate.set(gate);
    }

    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Evaluates every rule against `i`; returns the changes (fired, resolved), which are also
    /// kept for `GET /alerts` and queued for the webhook.
    pub fn evaluate(&self, i: &Inputs) -> Vec<AlertEvent> {
        let mut out = Vec::new();
        let mut states = lock(&self.states);
        for (r, s) in self.rules.rules.iter().zip(states.iter_mut()) {
            let (value, holds, summary) = check(&r.condition, i);
            s.value = value;
            s.summary = summary.clone();
            let layer = match &r.condition {
                Condition::DevicesLost { layer, .. } => layer.clone(),
                Condition::NoReports { layer, .. } => Some(layer.clone()),
                _ => None,
            };
            let event = |state: &str, since: f64| AlertEvent {
                rule: r.name.clone(),
                state: state.to_string(),
                severity: r.severity.to_string(),
                layer: layer.clone(),
                value,
                summary: summary.clone(),
                since,
                at: i.now,
            };
            if holds {
                let since = *s.holds_since.get_or_insert(i.now);
                if !s.firing && i.now - since >= r.hold_s as f64 {
                    s.firing = true;
                    out.push(event("firing", since));
                }
            } else {
                if s.firing {
                    out.push(event("resolved", s.holds_since.unwrap_or(i.now)));
                }
                s.firing = false;
                s.holds_since = None;
            }
        }
        drop(states);
        if !out.is_empty() {
            let mut h = lock(&self.history);
            for e in &out {
                h.push_back(e.clone());
                if h.len() > HISTORY {
                    h.pop_front();
                }
                // Rule names are unique: the event names its rule.
                let shared = self
                    .rules
                    .rules
                    .iter()
                    .any(|r| r.name == e.rule && r.condition.on_shared_state());
                if let Some(tx) = &self.webhook
                    && let Err(e) = tx.try_send((e.clone(), shared))
                {
                    tracing::warn!(error = %e, "the alert webhook's queue is full: an alert was not posted");
                }
            }
        }
        out
    }

    /// Every rule's state now.
    pub fn status(&self) -> Vec<RuleStatus> {
        let states = lock(&self.states);
        self.rules
            .rules
            .iter()
            .zip(states.iter())
            .map(|(r, s)| RuleStatus {
                rule: r.name.clone(),
                when: when(&r.condition),
                state: if s.firing {
                    "firing"
                } else if s.holds_since.is_some() {
                    "pending"
                } else {
                    "inactive"
                },
                severity: r.severity,
                value: s.value,
                summary: s.summary.clone(),
                since: s.holds_since,
            })
            .collect()
    }

    /// The last transitions, oldest first.
    pub fn history(&self) -> Vec<AlertEvent> {
        lock(&self.history).iter().cloned().collect()
    }

    /// Gathers what the rules need and evaluates them.
    pub fn run_once(&self, s: &Sources) -> Vec<AlertEvent> {
        let needs = self.rules.needs();
        let mut i = Inputs {
            now: crate::live::now_s(),
            started: s.started,
            ..Inputs::default()
        };
        if needs.pulse {
            i.pulse = s.hub.pulse();
        }
        for w in needs.windows {
            i.windows.insert(w, s.minutes.window(w as usize));
        }
        if needs.ready {
            i.not_ready = (s.ready)();
        }
        if needs.disk {
            i.disk_free = disk_free_percent(&s.store);
        }
        self.evaluate(&i)
    }
}

/// What the running rules read, and where their events go.
pub struct Sources {
    /// The live hub (figures; `alert` events onto its stream).
    pub hub: Arc<Hub>,
    /// The minute figures (windows).
    pub minutes: Arc<Minutes>,
    /// The names of the readiness checks that fail now.
    pub ready: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    /// The store directory (its file system's free space; the alert history).
    pub store: PathBuf,
    /// When the server started (seconds since 1970).
    pub started: f64,
}

/// Evaluates the rules every interval, for the life of the server; each change goes to the
/// stream, the log, the minute figures and the store's alert history (and to the webhook's
/// queue in [`Alerts::evaluate`]).
pub fn spawn(alerts: Arc<Alerts>, sources: Sources) {
    let sources = Arc::new(sources);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(alerts.rules.interval_s.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let db = crate::store::db::Db::open(&sources.store)
            .map_err(|e| tracing::warn!(error = %e, "alert history will not be kept"))
            .ok()
            .map(|d| Arc::new(Mutex::new(d)));
        loop {
            tick.tick().await;
            let (a, s, db) = (Arc::clone(&alerts), Arc::clone(&sources), db.clone());
            let _ = tokio::task::spawn_blocking(move || {
                for e in a.run_once(&s) {
                    if e.state == "firing" {
                        tracing::warn!(rule = %e.rule, severity = %e.severity, summary = %e.summary, "alert firing");
                        s.minutes.count(|m| m.alerts_fired += 1);
                    } else {
                        tracing::info!(rule = %e.rule, summary = %e.summary, "alert resolved");
                    }
                    let json = serde_json::to_string(&e).unwrap_or_default();
                    s.hub.publish_alert(e.layer.clone(), json.clone());
                    if let Some(db) = &db {
                        let db = lock(db);
                        if let Err(err) = db.conn().execute(
                            "INSERT INTO ops_alerts(t, rule, state, data) VALUES (?1, ?2, ?3, ?4)",
                            rusqlite::params![e.at as i64, e.rule, e.state, json],
                        ) {
                            tracing::warn!(error = %err, "cannot keep an alert in the store");
                        }
                    }
                }
            })
            .await;
        }
    });
}

/// The alerts kept in the store since `since` (seconds), oldest first.
pub fn stored_since(
    db: &crate::store::db::Db,
    since: i64,
) -> Result<Vec<AlertEvent>, crate::store::db::DbError> {
    let err = db.error_fn();
    let mut stmt = db
        .conn()
        .prepare("SELECT data FROM ops_alerts WHERE t >= ?1 ORDER BY seq")
        .map_err(&err)?;
    let rows = stmt
        .query_map([since], |r| r.get::<_, String>(0))
        .map_err(&err)?;
    let mut out = Vec::new();
    for r in rows {
        if let Ok(e) = serde_json::from_str(&r.map_err(&err)?) {
            out.push(e);
        }
    }
    Ok(out)
}

/// Free space of the file system holding `dir`, in percent of its size (as available to an
/// unprivileged process, as `df` shows it).
pub fn disk_free_percent(dir: &Path) -> Option<f64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    if s.f_blocks == 0 {
        return None;
    }
    Some(s.f_bavail as f64 * 100.0 / s.f_blocks as f64)
}

/// Posts each event to the webhook in order; an attempt that fails (connection, timeout, an
/// answer other than 2xx) is retried after 1 s, 2 s, 4 s ... up to `retries` times, then
/// dropped with a warning. Runs apart from everything else: the evaluator only queues. In
/// cluster mode a change of a rule over the shared state is posted only by the server the
/// gate names first.
async fn deliver(
    w: Webhook,
    mut rx: tokio::sync::mpsc::Receiver<Queued>,
    gate: Arc<std::sync::OnceLock<Arc<dyn AlertGate>>>,
) {
    let client = super::http::Client::new();
    while let Some((e, shared)) = rx.recv().await {
        if shared
            && let Some(g) = gate.get()
            && !g.first(&e).await
        {
            tracing::debug!(rule = %e.rule, state = %e.state, "alert announced by another server of the cluster");
            continue;
        }
        let body = serde_json::to_vec(&e).unwrap_or_default();
        let mut wait = Duration::from_secs(1);
        for attempt in 0..=w.retries {
            match client
                .post_json(&w.url, body.clone(), w.timeout)
                .await
                .and_then(|(status, _)| {
                    if (200..300).contains(&status) {
                        Ok(())
                    } else {
                        Err(format!("answered {status}"))
                    }
                }) {
                Ok(()) => break,
                Err(why) if attempt == w.retries => {
                    tracing::warn!(url = %w.url, rule = %e.rule, error = %why, "the alert webhook failed; the alert was not posted");
                }
                Err(why) => {
                    tracing::debug!(url = %w.url, error = %why, attempt, "alert webhook failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(layer: &str, n: u64) -> Inputs {
        let mut i = Inputs {
            now: 1000.0,
            ..Inputs::default()
        };
        i.pulse
            .states
            .entry(layer.into())
            .or_default()
            .insert("lost", n);
        i
    }

    #[test]
    fn a_rule_fires_after_holding_and_resolves() {
        let rules = Rules::parse(
            r#"
            [[rule]]
            name = "lost"
            when = "devices_lost"
            layer = "trackers"
            above = 1
            for = "1m"
            severity = "critical"
            "#,
        )
        .unwrap();
        let a = Alerts {
            states: Mutex::new(vec![RuleState::default()]),
            rules,
            history: Mutex::new(VecDeque::new()),
            webhook: None,
            gate: Arc::default(),
        };
        assert!(a.evaluate(&lost("trackers", 1)).is_empty());
        let mut i = lost("trackers", 2);
        assert!(a.evaluate(&i).is_empty(), "held 0 s of 60");
        assert_eq!(a.status()[0].state, "pending");
        i.now += 59.0;
        assert!(a.evaluate(&i).is_empty());
        i.now += 1.0;
        let e = a.evaluate(&i);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].state, "firing");
        assert_eq!(e[0].severity, "critical");
        assert_eq!(e[0].since, 1000.0);
        assert_eq!(e[0].value, 2.0);
        assert!(
            e[0].summary.contains("2 devices of trackers lost"),
            "{}",
            e[0].summary
        );
        assert!(a.evaluate(&i).is_empty(), "fires once");
        // Another layer's lost devices do not count.
        let mut other = lost("meters", 9);
        other.now = 1100.0;
        let e = a.evaluate(&other);
        assert_eq!(e[0].state, "resolved");
        assert_eq!(a.history().len(), 2);
        assert_eq!(a.status()[0].state, "inactive");
    }

    #[test]
    fn rules_files_are_checked_with_names() {
        let bad = [
            ("[[rule]]\nname = \"x\"\nwhen = \"nope\"", "when = \"nope\""),
            (
                "[[rule]]\nname = \"x\"\nwhen = \"no_reports\"\nsilent = \"5m\"",
                "needs a layer",
            ),
            ("[[rule]]\nname = \"x\"\nwhen = \"tile_p99\"", "needs above"),
            (
                "[[rule]]\nname = \"x\"\nwhen = \"not_ready\"\nlayer = \"a\"",
                "layer is for",
            ),
            (
                "[[rule]]\nname = \"x\"\nwhen = \"disk_free\"\nbelow = 130",
                "percentage",
            ),
            (
                "[[rule]]\nname = \"x\"\nwhen = \"not_ready\"\nfor = \"soon\"",
                "rule \"x\": for",
            ),
            (
                "[[rule]]\nname = \"x\"\nwhen = \"not_ready\"\n[[rule]]\nname = \"x\"\nwhen = \"not_ready\"",
                "two rules",
            ),
            ("[webhook]\nurl = \"https://x\"", "http://"),
            (
                "[[rule]]\nname = \"x\"\nwhen = \"not_ready\"\ncolour = 1",
                "unknown field",
            ),
            (
                "[[rule]]\nname = \"x\"\nwhen = \"ingest_refused\"\nwindow = \"90s\"",
                "whole minutes",
            ),
        ];
        for (text, want) in bad {
            let e = Rules::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn prometheus_export_names_every_rule() {
        let r = Rules::parse(
            r#"
            [[rule]]
            name = "lost"
            when = "devices_lost"
            layer = "trackers"
            for = "2m"
            [[rule]]
            name = "slow"
            when = "tile_p99"
            above = 250
            [[rule]]
            name = "quiet"
            when = "no_reports"
            layer = "meters"
            silent = "30m"
            "#,
        )
        .unwrap();
        let y = r.to_prometheus();
        assert!(
            y.contains(r#"expr: "sum(urbis_devices{layer=\"trackers\",state=\"lost\"}) > 0""#),
            "{y}"
        );
        assert!(y.contains("for: 120s"));
        assert!(y.contains("* 1000 > 250"));
        assert!(
            y.contains("urbis_live_last_report_timestamp_seconds{layer=\\\"meters\\\"} > 1800"),
            "{y}"
        );
    }

    #[test]
    fn window_and_geofence_conditions() {
        let mut i = Inputs {
            now: 10_000.0,
            ..Inputs::default()
        };
        i.pulse.alarms_since = vec![9_000.0, 9_900.0];
        let c = Condition::GeofenceOpen {
            longer_than_s: 600,
            above: 0.0,
        };
        assert_eq!(check(&c, &i).0, 1.0);
        let mut f = Figures::at(0);
        f.ingest.insert("coap accepted".into(), 10);
        f.ingest.insert("http refused".into(), 2);
        f.ingest.insert("coap malformed".into(), 1);
        i.windows.insert(5, f);
        let c = Condition::IngestRefused {
            window_min: 5,
            above: 2.0,
        };
        let (v, holds, _) = check(&c, &i);
        assert_eq!((v, holds), (3.0, true));
    }
}
