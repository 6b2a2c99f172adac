//! Platform acceptance (平台验收): checks a running deployment from outside, as a client does,
//! and says per check whether it passed. Read-only unless a device's credentials are given.
//!
//! | check             | passes when                                                        |
//! |-------------------|--------------------------------------------------------------------|
//! | `catalog`         | `/catalog` answers JSON naming at least one layer                  |
//! | `tilejson:L`      | `/tiles/L.json` is TileJSON 3: version, tile URL template, zooms in order, bounds in range, vector layers |
//! | `tiles:L`         | sample tiles at three zooms around the layer's centre decode as MVT 2.1 (version 2, every geometry within extent + buffer), none over the byte budget, at least one with features |
//! | `latency`         | a bounded burst over the sample tiles keeps p50, p95 and p99 under the stated thresholds |
//! | `health`          | `/health` says ok                                                  |
//! | `ready`           | `/ready` passes (else its failed checks are named)                 |
//! | `metrics`         | `/metrics` is an OpenMetrics exposition ending in `# EOF` with Urbis's request counter |
//! | `device:http`     | a report over HTTP is acknowledged and the device shows it         |
//! | `device:coap`     | a report over CoAP (confirmable POST) gets 2.04 and the device shows it |
//! | `viewer`          | `/` and `/ops` load, and every asset they and their scripts import answers 200 |

use super::http::{Answer, Client};
use serde::Serialize;
use std::time::{Duration, Instant};

/// What to check and against what.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server's base URL (`http://host:port`).
    pub url: String,
    /// An API key (`Authorization: Bearer`); an administrator's for `/metrics`.
    pub key: Option<String>,
    /// `/metrics` elsewhere (the server's `--metrics-bind` listener).
    pub metrics_url: Option<String>,
    /// A device id and its secret: the report round trips.
    pub device: Option<(String, String)>,
    /// The CoAP address (`host:port`); the URL's host and 5683 by default.
    pub coap: Option<String>,
    /// Largest tile accepted, bytes.
    pub max_tile_bytes: usize,
    /// Latency thresholds, milliseconds: p50, p95, p99.
    pub thresholds_ms: [f64; 3],
    /// Requests in the latency burst.
    pub burst: usize,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The check's name.
    pub check: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

const TIMEOUT: Duration = Duration::from_secs(20);
/// Extent + buffer slack for geometry coordinates (the server's buffer is 64 of 4096).
const BUFFER_SLACK: f64 = 0.25;

struct Ctx {
    client: Client,
    opts: Options,
    out: Vec<Outcome>,
}

impl Ctx {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.opts.url.trim_end_matches('/'))
    }

    async fn get(&self, path: &str) -> Result<Answer, String> {
        let url = if path.starts_with("http://") {
            path.to_string()
        } else {
            self.url(path)
        };
        let auth = self.opts.key.as_ref().map(|k| format!("Bearer {k}"));
        let mut headers = Vec::new();
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        self.client.get(&url, &headers, TIMEOUT).await
    }

    async fn get_json(&self, path: &str) -> Result<serde_json::Value, String> {
        let a = self.get(path).await?;
        if a.status != 200 {
            return Err(format!("{path} answered {}{}", a.status, problem(&a)));
        }
        serde_json::from_slice(&a.body).map_err(|e| format!("{path}: not JSON ({e})"))
    }

    fn note(&mut self, check: impl Into<String>, r: Result<String, String>) {
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.out.push(Outcome {
            check: check.into(),
            ok,
            detail,
        });
    }
}

/// The `detail` of a problem+json answer, for messages.
fn problem(a: &Answer) -> String {
    serde_json::from_slice::<serde_json::Value>(&a.body)
        .ok()
        .and_then(|v| v["detail"].as_str().map(|d| format!(": {d}")))
        .unwrap_or_default()
}

/// Checks an MVT: version 2 layers, every geometry command well formed and within extent +
/// buffer. Returns the features counted.
fn check_mvt(bytes: &[u8]) -> Result<usize, String> {
    use geozero::mvt::{Message, Tile};
    let tile = Tile::decode(bytes).map_err(|e| format!("not a vector tile: {e}"))?;
    let mut features = 0;
    for l in &tile.layers {
        if l.version != 2 {
            return Err(format!("layer {:?} has version {}", l.name, l.version));
        }
        let extent = f64::from(l.extent.unwrap_or(4096));
        let (lo, hi) = (-extent * BUFFER_SLACK, extent * (1.0 + BUFFER_SLACK));
        for f in &l.features {
            features += 1;
            if f.tags.len() % 2 != 0 {
                return Err(format!("layer {:?}: a feature's tags are odd", l.name));
            }
            let parts = crate::tile::mvt::decode_commands(&f.geometry)
                .map_err(|e| format!("layer {:?}: {e}", l.name))?;
            for [x, y] in parts.into_iter().flatten() {
                let (fx, fy) = (x as f64, y as f64);
                if fx < lo || fx > hi || fy < lo || fy > hi {
                    return Err(format!(
                        "layer {:?}: a coordinate ({x}, {y}) lies outside extent {extent} and its buffer",
                        l.name
                    ));
                }
            }
        }
    }
    Ok(features)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Runs every check; the outcomes in order.
pub async fn run(opts: Options) -> Vec<Outcome> {
    let mut c = Ctx {
        client: Client::new(),
        opts,
        out: Vec::new(),
    };
    // Catalog.
    let catalog = c.get_json("/catalog").await;
    let layers: Vec<serde_json::Value> = match &catalog {
        Ok(v) => v["layers"].as_array().cloned().unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let r = match &catalog {
        Err(e) => Err(e.clone()),
        Ok(_) if layers.is_empty() => Err("the catalog names no layer".into()),
        Ok(_) => Ok(format!("{} layers", layers.len())),
    };
    c.note("catalog", r);
    // TileJSON and sample tiles per layer (live layers: TileJSON only; their tiles change).
    let mut samples: Vec<String> = Vec::new();
    for l in &layers {
        let Some(name) = l["name"].as_str() else {
            continue;
        };
        let tj = c.get_json(&format!("/tiles/{name}.json")).await;
        let checked = tj.and_then(|t| tilejson(&t).map(|d| (t, d)));
        let (tj, detail) = match checked {
            Ok((t, d)) => (Some(t), Ok(d)),
            Err(e) => (None, Err(e)),
        };
        c.note(format!("tilejson:{name}"), detail);
        let Some(tj) = tj else { continue };
        if l["live"].as_bool() == Some(true) {
            continue;
        }
        let r = sample_tiles(&c, name, &tj, &mut samples).await;
        c.note(format!("tiles:{name}"), r);
    }
    // Latency burst over the sample tiles.
    let r = burst(&c, &samples).await;
    c.note("latency", r);
    // Health, readiness, metrics.
    let r = match c.get_json("/health").await {
        Ok(v) if v["status"] == "ok" => Ok(format!("ok, {} layers", v["layers"])),
        Ok(v) => Err(format!("/health says {v}")),
        Err(e) => Err(e),
    };
    c.note("health", r);
    let r = match c.get("/ready").await {
        Ok(a) if a.status == 200 => Ok("every check passes".to_string()),
        Ok(a) => Err(match serde_json::from_slice::<serde_json::Value>(&a.body) {
            Ok(v) => format!(
                "/ready answered {}: {}",
                a.status,
                v["checks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|c| c["ok"] == false)
                    .map(|c| format!(
                        "{} ({})",
                        c["name"].as_str().unwrap_or("?"),
                        c["detail"].as_str().unwrap_or("")
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Err(_) => format!("/ready answered {}", a.status),
        }),
        Err(e) => Err(e),
    };
    c.note("ready", r);
    let metrics_url = c
        .opts
        .metrics_url
        .clone()
        .unwrap_or_else(|| c.url("/metrics"));
    let r = match c.get(&metrics_url).await {
        Ok(a) if a.status == 200 => {
            let text = String::from_utf8_lossy(&a.body);
            if !text.trim_end().ends_with("# EOF") {
                Err("the exposition does not end with # EOF".into())
            } else if !text.contains("urbis_http_requests_total") {
                Err("no urbis_http_requests_total in the exposition".into())
            } else {
                Ok(format!(
                    "{} samples",
                    text.lines().filter(|l| !l.starts_with('#')).count()
                ))
            }
        }
        Ok(a) if a.status == 401 || a.status == 403 => Err(format!(
            "{metrics_url} answered {}: give an administrator's --key or --metrics-url",
            a.status
        )),
        Ok(a) => Err(format!("{metrics_url} answered {}", a.status)),
        Err(e) => Err(e),
    };
    c.note("metrics", r);
    // Device round trips, when credentials were given.
    if let Some((id, secret)) = c.opts.device.clone() {
        let at = layers
            .iter()
            .filter(|l| l["live"].as_bool() != Some(true))
            .find_map(|l| {
                let b = l["bounds"].as_array()?;
                let v: Vec<f64> = b.iter().filter_map(serde_json::Value::as_f64).collect();
                (v.len() == 4).then(|| [(v[0] + v[2]) / 2.0, (v[1] + v[3]) / 2.0])
            })
            .unwrap_or([0.0, 0.0]);
        let r = device_http(&c, &id, &secret, at).await;
        c.note("device:http", r);
        let r = device_coap(&c, &id, &secret, [at[0] + 0.0001, at[1] + 0.0001]).await;
        c.note("device:coap", r);
    }
    let r = viewer(&c).await;
    c.note("viewer", r);
    c.out
}

fn tilejson(t: &serde_json::Value) -> Result<String, String> {
    let version = t["tilejson"].as_str().ok_or("no tilejson version")?;
    if !version.starts_with('3') && !version.starts_with('2') {
        return Err(format!("tilejson version {version:?}"));
    }
    let tiles = t["tiles"].as_array().ok_or("no tiles array")?;
    let Some(url) = tiles.first().and_then(|u| u.as_str()) else {
        return Err("an empty tiles array".into());
    };
    if !(url.contains("{z}") && url.contains("{x}") && url.contains("{y}")) {
        return Err(format!("tile URL {url:?} lacks {{z}}/{{x}}/{{y}}"));
    }
    let (min, max) = (
        t["minzoom"].as_u64().ok_or("no minzoom")?,
        t["maxzoom"].as_u64().ok_or("no maxzoom")?,
    );
    if min > max || max > 30 {
        return Err(format!("zooms {min}..{max}"));
    }
    if let Some(b) = t["bounds"].as_array() {
        let v: Vec<f64> = b.iter().filter_map(serde_json::Value::as_f64).collect();
        if v.len() != 4
            || v[0] > v[2]
            || v[1] > v[3]
            || v[0] < -180.0
            || v[2] > 180.0
            || v[1] < -90.0
            || v[3] > 90.0
        {
            return Err(format!("bounds {b:?}"));
        }
    }
    let vl = t["vector_layers"].as_array().ok_or("no vector_layers")?;
    if vl.is_empty() || vl.iter().any(|l| l["id"].as_str().is_none()) {
        return Err("vector_layers without ids".into());
    }
    Ok(format!("TileJSON {version}, zooms {min}-{max}"))
}

async fn sample_tiles(
    c: &Ctx,
    name: &str,
    tj: &serde_json::Value,
    samples: &mut Vec<String>,
) -> Result<String, String> {
    let b: Vec<f64> = tj["bounds"]
        .as_array()
        .map(|b| b.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    if b.len() != 4 {
        return Err("no bounds to sample tiles in".into());
    }
    let (lon, lat) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
    let min = tj["minzoom"].as_u64().unwrap_or(0) as u8;
    let max = tj["maxzoom"].as_u64().unwrap_or(14).min(22) as u8;
    let mut zooms = vec![min, min + (max - min) / 2, max];
    zooms.dedup();
    let mut found = Vec::new();
    let mut with_features = 0;
    for z in zooms {
        let (x, y) = crate::tile::mercator::tile_containing(lon, lat, z);
        let path = format!("/tiles/{name}/{z}/{x}/{y}.mvt");
        let a = c.get(&path).await?;
        match a.status {
            204 => found.push(format!("{z}/{x}/{y}: empty")),
            200 => {
                if a.body.len() > c.opts.max_tile_bytes {
                    return Err(format!(
                        "{path}: {} bytes, over the budget of {}",
                        a.body.len(),
                        c.opts.max_tile_bytes
                    ));
                }
                let n = check_mvt(&a.body).map_err(|e| format!("{path}: {e}"))?;
                if n > 0 {
                    with_features += 1;
                }
                found.push(format!("{z}/{x}/{y}: {n} features, {} B", a.body.len()));
            }
            s => return Err(format!("{path} answered {s}{}", problem(&a))),
        }
        samples.push(path);
    }
    if with_features == 0 {
        return Err(format!(
            "no sample tile has a feature ({})",
            found.join("; ")
        ));
    }
    Ok(found.join("; "))
}

async fn burst(c: &Ctx, samples: &[String]) -> Result<String, String> {
    if samples.is_empty() {
        return Err("no sample tile to time".into());
    }
    const CONCURRENCY: usize = 4;
    let n = c.opts.burst.max(CONCURRENCY);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    let workers = (0..CONCURRENCY).map(|_| async {
        let mut took = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= n {
                return Ok::<_, String>(took);
            }
            let t = Instant::now();
            let a = c.get(&samples[i % samples.len()]).await?;
            if a.status != 200 && a.status != 204 {
                return Err(format!(
                    "{} answered {}",
                    samples[i % samples.len()],
                    a.status
                ));
            }
            took.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    });
    let mut all = Vec::new();
    for r in futures_util::future::join_all(workers).await {
        all.extend(r?);
    }
    all.sort_by(f64::total_cmp);
    let q = [
        quantile(&all, 0.5),
        quantile(&all, 0.95),
        quantile(&all, 0.99),
    ];
    let t = c.opts.thresholds_ms;
    let text = format!(
        "{} tiles in {:.2} s: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms (limits {}/{}/{} ms)",
        all.len(),
        started.elapsed().as_secs_f64(),
        q[0],
        q[1],
        q[2],
        t[0],
        t[1],
        t[2]
    );
    if q.iter().zip(t).any(|(v, limit)| *v > limit) {
        Err(text)
    } else {
        Ok(text)
    }
}

async fn device_reports(c: &Ctx, id: &str) -> Result<u64, String> {
    let d = c.get_json(&format!("/devices/{id}")).await?;
    d["reports"]
        .as_u64()
        .ok_or_else(|| format!("/devices/{id} has no report count"))
}

/// Waits until the device has more than `before` reports.
async fn shows(c: &Ctx, id: &str, before: u64) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        if device_reports(c, id).await? > before {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(format!("/devices/{id} did not show the report within 5 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn device_http(c: &Ctx, id: &str, secret: &str, at: [f64; 2]) -> Result<String, String> {
    let before = device_reports(c, id).await?;
    let body = serde_json::json!({"lon": at[0], "lat": at[1], "t": crate::live::now_s()});
    let t = Instant::now();
    let auth = format!("Bearer {secret}");
    let a = c
        .client
        .request(
            "POST",
            &c.url("/ingest"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.to_string().into_bytes(),
            TIMEOUT,
        )
        .await?;
    if a.status != 200 {
        return Err(format!("POST /ingest answered {}{}", a.status, problem(&a)));
    }
    let acked = t.elapsed();
    shows(c, id, before).await?;
    Ok(format!(
        "acknowledged in {:.1} ms, shown at /devices/{id}",
        acked.as_secs_f64() * 1000.0
    ))
}

async fn device_coap(c: &Ctx, id: &str, secret: &str, at: [f64; 2]) -> Result<String, String> {
    use coap_lite::{ContentFormat, MessageClass, MessageType, Packet, RequestType, ResponseType};
    let addr = match &c.opts.coap {
        Some(a) => a.clone(),
        None => {
            let host = c
                .opts
                .url
                .trim_start_matches("http://")
                .split(['/', ':'])
                .next()
                .unwrap_or("127.0.0.1")
                .to_string();
            format!("{host}:5683")
        }
    };
    let before = device_reports(c, id).await?;
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = (crate::live::now_s() * 1000.0) as u16;
    p.set_token(vec![0x75, 0x72]);
    p.add_option(coap_lite::CoapOption::UriPath, b"r".to_vec());
    p.add_option(coap_lite::CoapOption::UriPath, id.as_bytes().to_vec());
    p.add_option(
        coap_lite::CoapOption::UriQuery,
        format!("k={secret}").into_bytes(),
    );
    p.set_content_format(ContentFormat::ApplicationJSON);
    p.payload = serde_json::json!({"lon": at[0], "lat": at[1], "t": crate::live::now_s()})
        .to_string()
        .into_bytes();
    let bytes = p
        .to_bytes()
        .map_err(|e| format!("cannot encode CoAP: {e:?}"))?;
    let sock = tokio::net::UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| e.to_string())?;
    sock.connect(&addr)
        .await
        .map_err(|e| format!("coap {addr}: {e}"))?;
    let t = Instant::now();
    let mut buf = vec![0u8; 1500];
    // Confirmable: retransmitted after 2 s, 4 s (RFC 7252's backoff, shortened).
    let mut answer = None;
    for wait in [2, 4] {
        sock.send(&bytes)
            .await
            .map_err(|e| format!("coap {addr}: {e}"))?;
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(wait), sock.recv(&mut buf)).await
        {
            answer = Packet::from_bytes(&buf[..n]).ok();
            break;
        }
    }
    let Some(a) = answer else {
        return Err(format!("no CoAP answer from {addr} within 6 s"));
    };
    if a.header.code != MessageClass::Response(ResponseType::Changed) {
        return Err(format!(
            "coap {addr} answered {} {}",
            a.header.code,
            String::from_utf8_lossy(&a.payload)
        ));
    }
    let acked = t.elapsed();
    shows(c, id, before).await?;
    Ok(format!(
        "2.04 in {:.1} ms from {addr}, shown at /devices/{id}",
        acked.as_secs_f64() * 1000.0
    ))
}

/// The assets a page or a script names: `src="…"`, `href="…"` and `from './…'` imports,
/// relative ones only.
fn assets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for pat in ["src=\"", "href=\"", "from '", "from \""] {
        let mut rest = text;
        while let Some(i) = rest.find(pat) {
            rest = &rest[i + pat.len()..];
            let end = rest.find(['"', '\'']).unwrap_or(0);
            let a = &rest[..end];
            if !a.is_empty()
                && !a.contains("://")
                && !a.starts_with("data:")
                && !a.starts_with('#')
                && !a.starts_with("mailto:")
            {
                out.push(a.to_string());
            }
        }
    }
    out
}

async fn viewer(c: &Ctx) -> Result<String, String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut queue: Vec<String> = vec!["/".into(), "/ops".into()];
    while let Some(path) = queue.pop() {
        if !seen.insert(path.clone()) || seen.len() > 64 {
            continue;
        }
        let a = c.get(&path).await?;
        if a.status != 200 {
            return Err(format!("{path} answered {}", a.status));
        }
        let kind = a
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if kind.contains("html") || kind.contains("javascript") {
            let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
            for asset in assets(&String::from_utf8_lossy(&a.body)) {
                let asset = asset.trim_start_matches("./");
                let p = if asset.starts_with('/') {
                    asset.to_string()
                } else if kind.contains("html") {
                    format!("/{asset}")
                } else {
                    format!("{dir}/{asset}")
                };
                queue.push(p);
            }
        }
    }
    Ok(format!("{} pages and assets load", seen.len()))
}

/// The outcomes as a table for a person.
pub fn table(out: &[Outcome]) -> String {
    let w = out.iter().map(|o| o.check.len()).max().unwrap_or(5).max(5);
    let mut s = format!("{:<w$}  RESULT  DETAIL\n", "CHECK");
    for o in out {
        s.push_str(&format!(
            "{:<w$}  {:<6}  {}\n",
            o.check,
            if o.ok { "pass" } else { "FAIL" },
            o.detail
        ));
    }
    let failed: Vec<&str> = out
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.check.as_str())
        .collect();
    if failed.is_empty() {
        s.push_str(&format!("\nall {} checks passed\n", out.len()));
    } else {
        s.push_str(&format!(
            "\n{} of {} checks failed: {}\n",
            failed.len(),
            out.len(),
            failed.join(", ")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_found_in_pages_and_scripts() {
        let html =
            r#"<link href="viewer/a.css"><script src="viewer/v.js"></script><a href="https://x">"#;
        assert_eq!(assets(html), vec!["viewer/v.js", "viewer/a.css"]);
        let js = "import * as m from './maplibre-gl.mjs';\nimport { a } from \"./urbis.js\";";
        assert_eq!(assets(js), vec!["./maplibre-gl.mjs", "./urbis.js"]);
    }

    #[test]
    fn mvt_geometry_out_of_extent_is_caught() {
        use geozero::mvt::{Message, Tile, tile};
        let zz = |v: i32| ((v << 1) ^ (v >> 31)) as u32;
        let mk = |x: i32| {
            Tile {
                layers: vec![tile::Layer {
                    version: 2,
                    name: "l".into(),
                    extent: Some(4096),
                    features: vec![tile::Feature {
                        geometry: vec![9, zz(x), zz(10)],
                        r#type: Some(1),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        };
        assert_eq!(check_mvt(&mk(100)), Ok(1));
        assert!(check_mvt(&mk(9000)).unwrap_err().contains("outside extent"));
        assert!(check_mvt(b"\xff\xff").is_err());
    }
}
