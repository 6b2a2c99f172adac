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
