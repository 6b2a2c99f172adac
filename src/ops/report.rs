//! The operation report (运行报告): what the platform did over a span of time, from the minute
//! figures and alerts kept in the store and its audit log. `urbis report` writes it as
//! `report.json`, a self-contained `report.html` (inline styles and charts, the map embedded:
//! it opens from disk and asks nothing of the network) and `map.png`; `GET /admin/report`
//! serves the same from a running server.
//!
//! The map draws the store's layers (light, from the level of detail that fits the image)
//! under the devices' last positions coloured by state, with tiny-skia (antialiased), encoded
//! as PNG by the `image` crate.

use super::alerts::AlertEvent;
use super::minutes::{Figures, TileNote, quantile, rows_since};
use crate::store::Store;
use crate::store::db::Db;
use crate::store::geometry::GeomKind;
use crate::tile::GridBox;
use crate::tile::mercator::lonlat_to_grid;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Points of the devices chart at most (rows are merged into this many buckets).
const SERIES_POINTS: usize = 240;
/// Features drawn per layer on the map at most.
const MAP_FEATURES: usize = 300_000;

/// Latency quantiles, milliseconds (upper bounds of their histogram buckets: at most 26 %
/// above the true value).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

impl Latency {
    fn of(h: &[u64]) -> Latency {
        Latency {
            p50: quantile(h, 0.5),
            p95: quantile(h, 0.95),
            p99: quantile(h, 0.99),
        }
    }
}

/// A line of the audit log in the report.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    /// When (ISO 8601 UTC).
    pub at: String,
    /// What (`layer.import`, `keys.create`, ...).
    pub action: String,
    /// To what.
    pub target: String,
    /// Who (key id or `cli`).
    pub by: String,
    /// How it ended.
    pub outcome: String,
}

/// One point of the devices chart.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesPoint {
    /// Start of the bucket (seconds since 1970).
    pub t: i64,
    /// Average devices by layer and state over the bucket.
    pub devices: BTreeMap<String, BTreeMap<String, f64>>,
    /// Share of each layer's devices online (`live`, `sleeping` or `new`), 0-1.
    pub online: BTreeMap<String, f64>,
    /// Requests in the bucket.
    pub requests: u64,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Start of the span (ISO 8601).
    pub from: String,
    /// End of the span.
    pub to: String,
    /// Minutes in the span.
    pub span_minutes: u64,
    /// Minutes the server ran, and was ready, and their share of the span.
    pub availability: serde_json::Value,
    /// Requests: total, errors, error rate, latency.
    pub requests: serde_json::Value,
    /// Tiles: made, cache hits and misses, hit ratio, latency, slowest and largest.
    pub tiles: serde_json::Value,
    /// Device payloads by protocol and outcome, records stored.
    pub ingest: serde_json::Value,
    /// Devices by layer and state (averages over the span and the last sample) and online
    /// rates.
    pub devices: serde_json::Value,
    /// Geofence events by kind.
    pub geofence_events: BTreeMap<String, u64>,
    /// Alerts fired and resolved in the span.
    pub alerts: Vec<AlertEvent>,
    /// Layer imports (audit log).
    pub imports: Vec<Action>,
    /// Other administrative actions (audit log; reads and refusals left out).
    pub admin_actions: Vec<Action>,
    /// The devices chart.
    pub series: Vec<SeriesPoint>,
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn online_share(states: &BTreeMap<String, f64>) -> f64 {
    let all: f64 = states.values().sum();
    let on: f64 = ["live", "sleeping", "new"]
        .iter()
        .filter_map(|s| states.get(*s))
        .sum();
    if all > 0.0 { on / all } else { 0.0 }
}

fn averages(f: &Figures) -> BTreeMap<String, BTreeMap<String, f64>> {
    f.devices
        .iter()
        .map(|(l, s)| {
            (
                l.clone(),
                s.iter()
                    .map(|(k, n)| (k.clone(), *n as f64 / f.samples.max(1) as f64))
                    .collect(),
            )
        })
        .collect()
}

impl Report {
    /// The report of `[from, to]` (seconds since 1970) from the store in `store_dir`, with
    /// `current` (the running minute of a live server) added.
    pub fn build(
        store_dir: &Path,
        from: i64,
        to: i64,
        current: Option<Figures>,
    ) -> Result<Report, String> {
        let db = Db::open(store_dir).map_err(|e| e.to_string())?;
        let mut rows: Vec<Figures> = rows_since(&db, from)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|(_, f)| f.start < to)
            .map(|(_, f)| f)
            .collect();
        if let Some(c) = current {
            rows.push(c);
        }
        let mut total = Figures::at(from);
        for r in &rows {
            total.merge(r);
        }
        let span_minutes = ((to - from).max(60) as u64).div_ceil(60);
        let last = rows.iter().rev().find(|r| r.samples > 0);
        let alerts = super::alerts::stored_since(&db, from)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|a| (a.at as i64) <= to)
            .collect();
        let mut imports = Vec::new();
        let mut admin_actions = Vec::new();
        for e in crate::security::audit::entries(&db, from, 100_000).map_err(|e| e.to_string())? {
            if e.t > to || e.action == "layer.read" || e.action == "denied" {
                continue;
            }
            let a = Action {
                at: crate::governance::iso8601(e.t),
                action: e.action.clone(),
                target: e.target,
                by: if e.key_id == "-" { e.role } else { e.key_id },
                outcome: e.outcome,
            };
            if e.action == "layer.import" || e.action == "layer.upload" {
                imports.push(a);
            } else {
                admin_actions.push(a);
            }
        }
        // The chart: rows merged into at most SERIES_POINTS buckets of equal time.
        let step = ((to - from) / SERIES_POINTS as i64).max(60);
        let mut buckets: BTreeMap<i64, Figures> = BTreeMap::new();
        for r in &rows {
            let b = from + (r.start - from).max(0) / step * step;
            buckets.entry(b).or_insert_with(|| Figures::at(b)).merge(r);
        }
        let series = buckets
            .into_iter()
            .map(|(t, f)| {
                let devices = averages(&f);
                SeriesPoint {
                    t,
                    online: devices
                        .iter()
                        .map(|(l, s)| (l.clone(), online_share(s)))
                        .collect(),
                    devices,
                    requests: f.requests,
                }
            })
            .collect();
        let avg = averages(&total);
        let now: BTreeMap<String, BTreeMap<String, u64>> =
            last.map(|l| l.devices.clone()).unwrap_or_default();
        let refused = total.refused();
        let payloads: u64 = total.ingest.values().sum();
        Ok(Report {
            from: crate::governance::iso8601(from),
            to: crate::governance::iso8601(to),
            span_minutes,
            availability: serde_json::json!({
                "up_minutes": total.up,
                "ready_minutes": total.ready,
                "up": ratio(total.up, span_minutes),
                "ready": ratio(total.ready, span_minutes),
            }),
            requests: serde_json::json!({
                "total": total.requests,
                "client_errors": total.client_errors,
                "server_errors": total.server_errors,
                "error_rate": ratio(total.server_errors, total.requests),
                "latency_ms": Latency::of(&total.latency),
            }),
            tiles: serde_json::json!({
                "made": total.tiles_made,
                "cache_hits": total.cache_hits,
                "cache_misses": total.cache_misses,
                "cache_hit_ratio": ratio(total.cache_hits, total.cache_hits + total.cache_misses),
                "latency_ms": Latency::of(&total.tile_latency),
                "slowest": total.slowest,
                "largest": total.largest,
            }),
            ingest: serde_json::json!({
                "payloads": total.ingest,
                "accepted": payloads - refused,
                "refused": refused,
                "records": total.records,
            }),
            devices: serde_json::json!({
                "average": avg,
                "online_rate": avg.iter().map(|(l, s)| (l.clone(), online_share(s))).collect::<BTreeMap<_, _>>(),
                "last": now,
            }),
            geofence_events: total.fence_events,
            alerts,
            imports,
            admin_actions,
            series,
        })
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn num(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "–".into(),
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(i) => i.to_string(),
            None => format!("{:.2}", n.as_f64().unwrap_or(0.0)),
        },
        other => esc(&other.to_string()),
    }
}

fn pct(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or_else(|| "–".into(), |f| format!("{:.2} %", f * 100.0))
}

/// Standard base64 (RFC 4648) of `bytes`: the map embedded in the HTML as a `data:` URL. Nine
/// lines, where a crate would be a dependency for one call.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

const STATE_COLOURS: [(&str, &str); 5] = [
    ("live", "#1a9850"),
    ("sleeping", "#4575b4"),
    ("new", "#999999"),
    ("overdue", "#f28e2b"),
    ("lost", "#d73027"),
];

/// An inline SVG line chart of each layer's online rate over the span.
fn chart(r: &Report) -> String {
    let (w, h, pad) = (720.0, 220.0, 34.0);
    let layers: Vec<&String> = {
        let mut l: Vec<&String> = r.series.iter().flat_map(|p| p.online.keys()).collect();
        l.sort();
        l.dedup();
        l
    };
    if r.series.is_empty() || layers.is_empty() {
        return "<p class=muted>No device samples in this span.</p>".into();
    }
    let t0 = r.series.first().map_or(0, |p| p.t) as f64;
    let t1 = (r.series.last().map_or(0, |p| p.t) as f64).max(t0 + 60.0);
    let x = |t: i64| pad + (t as f64 - t0) / (t1 - t0) * (w - 2.0 * pad);
    let y = |v: f64| h - pad - v * (h - 2.0 * pad);
    let palette = [
        "#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b",
    ];
    let mut s = format!(
        "<svg viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"devices online by layer\">\
         <rect width=\"{w}\" height=\"{h}\" fill=\"#fff\"/>"
    );
    for v in [0.0, 0.5, 1.0] {
        let _ = write!(
            s,
            "<line x1=\"{pad}\" x2=\"{}\" y1=\"{y0}\" y2=\"{y0}\" stroke=\"#ddd\"/><text x=\"4\" y=\"{}\" font-size=\"10\">{:.0}%</text>",
            w - pad,
            y(v) + 3.0,
            v * 100.0,
            y0 = y(v)
        );
    }
    for (i, l) in layers.iter().enumerate() {
        let colour = palette[i % palette.len()];
        let pts: Vec<String> = r
            .series
            .iter()
            .filter_map(|p| {
                p.online
                    .get(*l)
                    .map(|v| format!("{:.1},{:.1}", x(p.t), y(*v)))
            })
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{colour}\">{}</text>",
            pts.join(" "),
            pad + 4.0 + 120.0 * i as f64,
            pad - 14.0,
            esc(l)
        );
    }
    let _ = write!(
        s,
        "<text x=\"{pad}\" y=\"{}\" font-size=\"10\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text></svg>",
        h - 8.0,
        esc(&crate::governance::iso8601(t0 as i64)),
        w - pad,
        h - 8.0,
        esc(&crate::governance::iso8601(t1 as i64))
    );
    s
}

fn tile_rows(list: &serde_json::Value) -> String {
    let mut s = String::new();
    for t in list.as_array().into_iter().flatten() {
        if let Ok(t) = serde_json::from_value::<TileNote>(t.clone()) {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}/{}/{}</td><td>{:.1}</td><td>{}</td></tr>",
                esc(&t.layers),
                t.z,
                t.x,
                t.y,
                t.ms,
                t.bytes
            );
        }
    }
    if s.is_empty() {
        s = "<tr><td colspan=4 class=muted>none made</td></tr>".into();
    }
    s
}

/// The report as one self-contained HTML page (no script, no external resource); `map` is
/// the PNG embedded as a `data:` URL.
pub fn html(r: &Report, map: Option<&[u8]>) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>Urbis operation report {from} – {to}</title>\
         <link rel=icon href=\"data:,\">\
         <style>body{{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:980px;color:#1a202c;padding:0 1em}}\
         h1{{font-size:1.5em}}h2{{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #e2e8f0}}\
         table{{border-collapse:collapse;margin:.5em 0}}td,th{{padding:.25em .8em;border-bottom:1px solid #edf2f7;text-align:left}}\
         th{{background:#f7fafc}}.kpi{{display:flex;flex-wrap:wrap;gap:1em}}.kpi div{{background:#f7fafc;padding:.6em 1em;border-radius:6px}}\
         .kpi b{{display:block;font-size:1.4em}}.muted{{color:#718096}}img{{max-width:100%;border:1px solid #e2e8f0}}\
         .firing{{color:#c53030}}.resolved{{color:#2f855a}}</style></head><body>\
         <h1>Operation report</h1><p class=muted>{from} to {to} ({mins} minutes)</p>",
        from = esc(&r.from),
        to = esc(&r.to),
        mins = r.span_minutes
    );
    let a = &r.availability;
    let q = &r.requests;
    let t = &r.tiles;
    let i = &r.ingest;
    let _ = write!(
        s,
        "<div class=kpi><div>Availability<b>{}</b></div><div>Ready<b>{}</b></div>\
         <div>Requests<b>{}</b></div><div>Error rate (5xx)<b>{}</b></div>\
         <div>Cache hit ratio<b>{}</b></div><div>Device payloads<b>{}</b></div><div>Alerts<b>{}</b></div></div>",
        pct(&a["up"]),
        pct(&a["ready"]),
        num(&q["total"]),
        pct(&q["error_rate"]),
        pct(&t["cache_hit_ratio"]),
        num(&i["accepted"]),
        r.alerts.iter().filter(|e| e.state == "firing").count()
    );
    let _ = write!(
        s,
        "<h2>Requests</h2><table><tr><th>total</th><th>4xx</th><th>5xx</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th></tr>\
         <tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        num(&q["total"]),
        num(&q["client_errors"]),
        num(&q["server_errors"]),
        num(&q["latency_ms"]["p50"]),
        num(&q["latency_ms"]["p95"]),
        num(&q["latency_ms"]["p99"])
    );
    let _ = write!(
        s,
        "<h2>Tiles</h2><table><tr><th>made</th><th>cache hits</th><th>misses</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th></tr>\
         <tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>\
         <h3>Slowest</h3><table><tr><th>layers</th><th>z/x/y</th><th>ms</th><th>bytes</th></tr>{}</table>\
         <h3>Largest</h3><table><tr><th>layers</th><th>z/x/y</th><th>ms</th><th>bytes</th></tr>{}</table>",
        num(&t["made"]),
        num(&t["cache_hits"]),
        num(&t["cache_misses"]),
        num(&t["latency_ms"]["p50"]),
        num(&t["latency_ms"]["p95"]),
        num(&t["latency_ms"]["p99"]),
        tile_rows(&t["slowest"]),
        tile_rows(&t["largest"])
    );
    s.push_str("<h2>Devices</h2>");
    s.push_str(&chart(r));
    s.push_str("<table><tr><th>layer</th>");
    for (state, colour) in STATE_COLOURS {
        let _ = write!(s, "<th style=\"color:{colour}\">{state} (avg)</th>");
    }
    s.push_str("<th>online rate</th></tr>");
    for (layer, states) in r.devices["average"].as_object().into_iter().flatten() {
        let _ = write!(s, "<tr><td>{}</td>", esc(layer));
        for (state, _) in STATE_COLOURS {
            let _ = write!(s, "<td>{}</td>", num(&states[state]));
        }
        let _ = write!(s, "<td>{}</td></tr>", pct(&r.devices["online_rate"][layer]));
    }
    s.push_str("</table>");
    let _ = write!(
        s,
        "<h2>Device reports</h2><table><tr><th>protocol and outcome</th><th>payloads</th></tr>"
    );
    for (k, v) in i["payloads"].as_object().into_iter().flatten() {
        let _ = write!(s, "<tr><td>{}</td><td>{}</td></tr>", esc(k), num(v));
    }
    let _ = write!(
        s,
        "<tr><th>records stored</th><th>{}</th></tr></table>",
        num(&i["records"])
    );
    s.push_str("<h2>Geofence alarms</h2><table><tr><th>event</th><th>count</th></tr>");
    for (k, v) in &r.geofence_events {
        let _ = write!(s, "<tr><td>{}</td><td>{v}</td></tr>", esc(k));
    }
    if r.geofence_events.is_empty() {
        s.push_str("<tr><td colspan=2 class=muted>none</td></tr>");
    }
    s.push_str("</table><h2>Alerts</h2><table><tr><th>at</th><th>rule</th><th>state</th><th>severity</th><th>summary</th></tr>");
    for e in &r.alerts {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td class={}>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&crate::governance::iso8601(e.at as i64)),
            esc(&e.rule),
            esc(&e.state),
            esc(&e.state),
            esc(&e.severity),
            esc(&e.summary)
        );
    }
    if r.alerts.is_empty() {
        s.push_str("<tr><td colspan=5 class=muted>none</td></tr>");
    }
    s.push_str("</table>");
    for (title, list) in [
        ("Imports", &r.imports),
        ("Administrative actions", &r.admin_actions),
    ] {
        let _ = write!(
            s,
            "<h2>{title}</h2><table><tr><th>at</th><th>action</th><th>target</th><th>by</th><th>outcome</th></tr>"
        );
        for a in list {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&a.at),
                esc(&a.action),
                esc(&a.target),
                esc(&a.by),
                esc(&a.outcome)
            );
        }
        if list.is_empty() {
            s.push_str("<tr><td colspan=5 class=muted>none</td></tr>");
        }
        s.push_str("</table>");
    }
    if let Some(png) = map {
        let _ = write!(
            s,
            "<h2>Map</h2><p class=muted>Devices at their last positions by state, over the layers.</p>\
             <img id=map alt=\"devices over the layers\" src=\"data:image/png;base64,{}\">",
            base64(png)
        );
    }
    s.push_str("</body></html>\n");
    s
}

fn rgba(hex: &str, alpha: u8) -> tiny_skia::Color {
    let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap_or(0);
    tiny_skia::Color::from_rgba8((v >> 16) as u8, (v >> 8) as u8, v as u8, alpha)
}

/// The map: the store's layers drawn light under `devices` (`[lon, lat]` and state), `w` × `h`
/// pixels, as PNG. The view fits the devices (with a margin), or the layers without devices.
pub fn map_png(
    store: &Store,
    devices: &[([f64; 2], String)],
    w: u32,
    h: u32,
) -> Result<Vec<u8>, String> {
    let mut pixmap = tiny_skia::Pixmap::new(w, h).ok_or("the map size must be above 0")?;
    pixmap.fill(rgba("#f4f1ea", 255));
    let catalog = store.catalog().map_err(|e| e.to_string())?;
    let layers: Vec<_> = catalog
        .layers
        .keys()
        .filter_map(|n| store.open_layer(n).ok())
        .collect();
    // The view, in grid units.
    let mut view = GridBox::EMPTY;
    for (p, _) in devices {
        view.extend(lonlat_to_grid(p[0], p[1]));
    }
    if view.is_empty() {
        for l in &layers {
            view.union(&l.bbox());
        }
    }
    if view.is_empty() {
        view = GridBox::new(0, 0, u32::MAX, u32::MAX);
    }
    // A margin of a tenth, at least ~300 m at mid latitudes, and the image's aspect.
    let (mut cx, mut cy) = (
        (view.min_x as f64 + view.max_x as f64) / 2.0,
        (view.min_y as f64 + view.max_y as f64) / 2.0,
    );
    let mut half_w = (view.width() as f64 * 0.55).max(40_000.0);
    let mut half_h = (view.height() as f64 * 0.55).max(40_000.0);
    if half_w / half_h < w as f64 / h as f64 {
        half_w = half_h * w as f64 / h as f64;
    } else {
        half_h = half_w * h as f64 / w as f64;
    }
    let top = 2f64.powi(32);
    half_w = half_w.min(top / 2.0);
    half_h = half_h.min(top / 2.0);
    cx = cx.clamp(half_w, top - half_w);
    cy = cy.clamp(half_h, top - half_h);
    let (x0, y0) = (cx - half_w, cy - half_h);
    let upp = 2.0 * half_w / w as f64; // grid units per pixel
    let query = GridBox::new(
        x0.max(0.0) as u32,
        y0.max(0.0) as u32,
        (cx + half_w).min(top - 1.0) as u32,
        (cy + half_h).min(top - 1.0) as u32,
    );
    // At zoom z a 256 px tile spans 2^(32 - z) units: the level whose detail fits a pixel.
    let zoom = (24.0 - upp.log2()).clamp(0.0, 22.0) as u8;
    let px = |p: [u32; 2]| -> (f32, f32) {
        (
            ((p[0] as f64 - x0) / upp) as f32,
            ((p[1] as f64 - y0) / upp) as f32,
        )
    };
    let t = tiny_skia::Transform::identity();
    let mut fill = tiny_skia::Paint {
        anti_alias: true,
        ..Default::default()
    };
    let mut line = fill.clone();
    let stroke = tiny_skia::Stroke {
        width: 1.0,
        ..Default::default()
    };
    for l in &layers {
        let Some(level) = l.level(zoom) else { continue };
        let mut drawn = 0usize;
        level.query(&query, |f| {
            if drawn >= MAP_FEATURES {
                return;
            }
            drawn += 1;
            let Some(g) = f.decode() else { return };
            let mut pb = tiny_skia::PathBuilder::new();
            for part in &g.parts {
                for ring in part {
                    if g.kind == GeomKind::Point {
                        let (x, y) = px(ring[0]);
                        pb.push_circle(x, y, 1.5);
                        continue;
                    }
                    for (i, p) in ring.iter().enumerate() {
                        let (x, y) = px(*p);
                        if i == 0 {
                            pb.move_to(x, y)
                        } else {
                            pb.line_to(x, y)
                        }
                    }
                    if g.kind == GeomKind::Polygon {
                        pb.close();
                    }
                }
            }
            let Some(path) = pb.finish() else { return };
            match g.kind {
                GeomKind::Polygon => {
                    fill.set_color(rgba("#d8dee4", 200));
                    pixmap.fill_path(&path, &fill, tiny_skia::FillRule::EvenOdd, t, None);
                    line.set_color(rgba("#aab6c2", 255));
                    pixmap.stroke_path(&path, &line, &stroke, t, None);
                }
                GeomKind::Line => {
                    line.set_color(rgba("#a0aab4", 255));
                    pixmap.stroke_path(&path, &line, &stroke, t, None);
                }
                GeomKind::Point => {
                    fill.set_color(rgba("#8895a0", 255));
                    pixmap.fill_path(&path, &fill, tiny_skia::FillRule::Winding, t, None);
                }
            }
        });
    }
    let white = tiny_skia::Stroke {
        width: 1.5,
        ..Default::default()
    };
    for (p, state) in devices {
        let (x, y) = px(lonlat_to_grid(p[0], p[1]));
        let Some(c) = tiny_skia::PathBuilder::from_circle(x, y, 5.0) else {
            continue;
        };
        let colour = STATE_COLOURS
            .iter()
            .find(|(s, _)| s == state)
            .map_or("#999999", |(_, c)| c);
        fill.set_color(rgba(colour, 255));
        pixmap.fill_path(&c, &fill, tiny_skia::FillRule::Winding, t, None);
        line.set_color(rgba("#ffffff", 255));
        pixmap.stroke_path(&c, &line, &white, t, None);
    }
    // tiny-skia's pixels are premultiplied; PNG wants them straight.
    let mut raw = Vec::with_capacity((w * h * 4) as usize);
    for p in pixmap.pixels() {
        let c = p.demultiply();
        raw.extend_from_slice(&[c.red(), c.green(), c.blue(), c.alpha()]);
    }
    let img = image::RgbaImage::from_raw(w, h, raw).ok_or("map buffer size")?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode the map: {e}"))?;
    Ok(out.into_inner())
}

/// The devices of the live snapshot in `store_dir` (`STORE/live/snapshot.json`: positions as of
/// the last snapshot, taken every 10 s while reports arrive and when the server stops).
pub fn snapshot_devices(store_dir: &Path) -> Vec<([f64; 2], String)> {
    let path = store_dir.join("live").join("snapshot.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Vec::new();
    };
    v["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            let p = d["pos"].as_array()?;
            Some((
                [p.first()?.as_f64()?, p.get(1)?.as_f64()?],
                d["state"].as_str().unwrap_or("new").to_string(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc_4648() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
    }
}
