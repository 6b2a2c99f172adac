//! `urbis alerts` (check a rules file, export it for Prometheus), `urbis report` (the operation
//! report of a store), `urbis acceptance` (the platform acceptance checks against a running
//! server) and `urbis simulate` (a fleet of devices reporting to one).

use crate::StoreArg;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum AlertsAction {
    /// Read a rules file and say what each rule watches, or exit 1 naming the problem.
    Check {
        /// The rules file (TOML).
        file: PathBuf,
    },
    /// Print the rules as Prometheus alerting rules (YAML) over the metrics of /metrics, for
    /// teams that route alerts through Alertmanager.
    Export {
        /// The rules file (TOML).
        file: PathBuf,
    },
}

/// `urbis alerts ...`.
pub fn alerts(action: AlertsAction) -> anyhow::Result<()> {
    use urbis::ops::alerts::Rules;
    match action {
        AlertsAction::Check { file } => {
            let r = Rules::load(&file).map_err(anyhow::Error::msg)?;
            println!(
                "{}: {} rules, evaluated every {} s{}",
                file.display(),
                r.rules.len(),
                r.interval_s,
                r.webhook
                    .as_ref()
                    .map(|w| format!(", posted to {}", w.url))
                    .unwrap_or_default()
            );
            for rule in &r.rules {
                println!(
                    "  {:<24} {:<8} {:?} for {} s",
                    rule.name, rule.severity, rule.condition, rule.hold_s
                );
            }
            Ok(())
        }
        AlertsAction::Export { file } => {
            let r = Rules::load(&file).map_err(anyhow::Error::msg)?;
            print!("{}", r.to_prometheus());
            Ok(())
        }
    }
}

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    store: StoreArg,
    /// How far back: 30m, 24h, 7d, 90d [default: 7d].
    #[arg(long, default_value = "7d")]
    since: String,
    /// Where to write report.json, report.html and map.png (created if needed).
    #[arg(long, default_value = "report")]
    out: PathBuf,
    /// Map size in pixels, WIDTHxHEIGHT.
    #[arg(long, default_value = "1024x640")]
    map_size: String,
}

/// `urbis report`.
pub fn report(a: ReportArgs) -> anyhow::Result<()> {
    use urbis::ops::report;
    let since = urbis::security::keys::parse_lifetime(&a.since)
        .map_err(|e| anyhow::anyhow!("--since {e}"))?;
    let (w, h) = a
        .map_size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .filter(|(w, h)| (16..=8192).contains(w) && (16..=8192).contains(h))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--map-size {:?}: give WIDTHxHEIGHT, 16 to 8192 each",
                a.map_size
            )
        })?;
    let dir = &a.store.store;
    if !dir.join("urbis.db").exists() {
        anyhow::bail!(
            "{}: no store database here (give --store DIR of a store a server ran on)",
            dir.display()
        );
    }
    let now = urbis::security::keys::now() as i64;
    let r =
        report::Report::build(dir, now - since as i64, now, None).map_err(anyhow::Error::msg)?;
    let store = urbis::store::Store::open(dir, false)?;
    let map = report::map_png(&store, &report::snapshot_devices(dir), w, h)
        .map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&a.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", a.out.display()))?;
    let write = |name: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let p = a.out.join(name);
        std::fs::write(&p, bytes).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))
    };
    write("report.json", &serde_json::to_vec_pretty(&r)?)?;
    write("report.html", report::html(&r, Some(&map)).as_bytes())?;
    write("map.png", &map)?;
    println!(
        "report of {} to {}: {} requests, {} device payloads, {} alerts; written to {}/report.json, report.html, map.png",
        r.from,
        r.to,
        r.requests["total"],
        r.ingest["accepted"],
        r.alerts.len(),
        a.out.display()
    );
    Ok(())
}

#[derive(Args)]
pub struct AcceptanceArgs {
    /// The deployment's base URL, e.g. http://127.0.0.1:8080.
    url: String,
    /// An API key: one that sees the layers to check (an administrator's also reads
    /// /metrics).
    #[arg(long, env = "URBIS_KEY")]
    key: Option<String>,
    /// /metrics on the server's --metrics-bind listener instead of the main one.
    #[arg(long)]
    metrics_url: Option<String>,
    /// A registered device to send one report for over HTTP and one over CoAP (with
    /// --secret); without it the checks are read-only.
    #[arg(long, requires = "secret")]
    device: Option<String>,
    /// The device's secret.
    #[arg(long, requires = "device")]
    secret: Option<String>,
    /// The CoAP address, HOST:PORT [default: the URL's host, port 5683].
    #[arg(long)]
    coap: Option<String>,
    /// Largest tile accepted, KiB (the server's byte budget).
    #[arg(long, default_value_t = 500)]
    max_tile_kb: usize,
    /// Tile latency limits over the burst, milliseconds: P50,P95,P99.
    #[arg(long, default_value = "50,200,500")]
    latency_ms: String,
    /// Tile requests in the latency burst (4 at a time).
    #[arg(long, default_value_t = 200)]
    burst: usize,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

/// `urbis acceptance`: whether every check passed.
pub fn acceptance(a: AcceptanceArgs) -> anyhow::Result<bool> {
    use urbis::ops::acceptance;
    if !a.url.starts_with("http://") {
        anyhow::bail!("{}: give an http:// URL", a.url);
    }
    let t: Vec<f64> = a
        .latency_ms
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let [p50, p95, p99] = t[..] else {
        anyhow::bail!(
            "--latency-ms {:?}: give three numbers, P50,P95,P99",
            a.latency_ms
        );
    };
    let opts = acceptance::Options {
        url: a.url,
        key: a.key,
        metrics_url: a.metrics_url,
        device: a.device.zip(a.secret),
        coap: a.coap,
        max_tile_bytes: a.max_tile_kb * 1024,
        thresholds_ms: [p50, p95, p99],
        burst: a.burst.clamp(1, 100_000),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let out = rt.block_on(acceptance::run(opts));
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", acceptance::table(&out));
    }
    Ok(out.iter().all(|o| o.ok))
}

#[derive(Args)]
pub struct SimulateArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The server's CoAP address.
    #[arg(long, default_value = "127.0.0.1:5683")]
    coap: String,
    /// Devices to simulate.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Their live layer.
    #[arg(long, default_value = "fleet")]
    layer: String,
    /// Device ids are PREFIX-00001, PREFIX-00002, ...
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Time between a device's reports, e.g. 10s, 500ms, 1m.
    #[arg(long, default_value = "10s")]
    interval: String,
    /// Reports a second for the whole fleet instead of --interval (interval = devices / rate).
    #[arg(long)]
    rate: Option<f64>,
    /// The layer whose lines the devices drive along [default: the first layer with lines,
    /// the demo's streets].
    #[arg(long)]
    along: Option<String>,
    /// An API key: to read tiles that need one and, without a local store, to register the
    /// devices (a role with devices.write).
    #[arg(long, env = "URBIS_KEY")]
    key: Option<String>,
    #[command(flatten)]
    store: StoreArg,
    /// Where the devices' secrets are kept, to run the same fleet again (CSV id,secret)
    /// [default: simulate-LAYER.csv beside the store].
    #[arg(long)]
    secrets: Option<PathBuf>,
    /// Stop after this long, e.g. 10m [default: until Ctrl-C].
    #[arg(long)]
    duration: Option<String>,
    /// Share of devices that fall silent for good (they go overdue, then lost).
    #[arg(long, default_value_t = 0.1)]
    lost_share: f64,
    /// Share of devices that pause for a few intervals now and then (overdue, then back).
    #[arg(long, default_value_t = 0.1)]
    pause_share: f64,
    /// Seed of the random choices: the same seed, the same fleet.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// `urbis simulate`.
pub fn simulate(a: SimulateArgs) -> anyhow::Result<()> {
    use urbis::ops::simulate;
    if a.devices == 0 || a.devices > 1_000_000 {
        anyhow::bail!("--devices {}: from 1 to 1,000,000", a.devices);
    }
    let interval_s = match a.rate {
        Some(r) if r > 0.0 && r.is_finite() => a.devices as f64 / r,
        Some(r) => anyhow::bail!("--rate {r}: reports a second, above 0"),
        None => parse_interval(&a.interval)?,
    };
    for (name, v) in [
        ("--lost-share", a.lost_share),
        ("--pause-share", a.pause_share),
    ] {
        if !(0.0..=1.0).contains(&v) {
            anyhow::bail!("{name} {v}: a share from 0 to 1");
        }
    }
    let duration = a
        .duration
        .as_deref()
        .map(|d| {
            urbis::security::keys::parse_lifetime(d)
                .map(std::time::Duration::from_secs)
                .map_err(|e| anyhow::anyhow!("--duration {e}"))
        })
        .transpose()?;
    // Devices go into the local store's registry when it is there (the README's server, on
    // this machine) and no key is given; else through the admin API.
    let local = a.store.store.join("urbis.db").exists();
    let store = (a.key.is_none() && local).then(|| a.store.store.clone());
    if store.is_none() && a.key.is_none() {
        anyhow::bail!(
            "no store at {} and no --key: give --store of the server on this machine, or --key of a role with devices.write",
            a.store.store.display()
        );
    }
    let secrets = a.secrets.unwrap_or_else(|| {
        let dir = a
            .store
            .store
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        dir.join(format!("simulate-{}.csv", a.layer))
    });
    let opts = simulate::Options {
        server: a.server,
        coap: a.coap,
        devices: a.devices,
        layer: a.layer,
        prefix: a.prefix,
        interval_s,
        along: a.along,
        key: a.key,
        store,
        secrets,
        duration,
        lost_share: a.lost_share,
        pause_share: a.pause_share,
        seed: a.seed,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let summary = rt
        .block_on(async {
            tokio::select! {
                r = simulate::run(opts) => Some(r),
                _ = tokio::signal::ctrl_c() => None,
            }
        })
        .transpose()
        .map_err(anyhow::Error::msg)?;
    match summary {
        None => eprintln!("simulate: stopped"),
        Some(s) if a.json => println!("{}", serde_json::to_string(&s)?),
        Some(s) => println!(
            "simulated {} devices for {:.0} s: {} reports sent, {} acknowledged, {} refused, {} unanswered; {} fell silent",
            s.devices, s.seconds, s.sent, s.acknowledged, s.refused, s.unanswered, s.fell_silent
        ),
    }
    Ok(())
}

/// `10s`, `500ms`, `1m`.
fn parse_interval(s: &str) -> anyhow::Result<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.parse().map_err(|_| {
        anyhow::anyhow!("--interval {s:?}: give a number and a unit, like 10s or 500ms")
    })?;
    Ok(v * mult)
}
