//! The fleet simulator (`urbis simulate`): devices that drive along the streets of a layer and
//! report over CoAP as real NB-IoT trackers do, for demos, acceptance and load. A client of a
//! running server: it reads the streets from the server's own vector tiles, registers its
//! devices (in the local store's registry, or through `POST /admin/devices` with a key), and
//! sends each device's reports as confirmable CoAP POSTs at its interval, with real sleeps.
//! Some devices fall silent for a while (overdue) and some for good (lost), so the big screen,
//! the alert rules and the operation report have something real to show.

use super::http::Client;
use geozero::mvt::{Message, Tile};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server's base URL.
    pub server: String,
    /// Its CoAP address (`host:port`).
    pub coap: String,
    /// Devices.
    pub devices: usize,
    /// Their live layer.
    pub layer: String,
    /// Id prefix (`PREFIX-00001`).
    pub prefix: String,
    /// Seconds between a device's reports.
    pub interval_s: f64,
    /// The layer whose lines they follow (`None`: the first layer with lines).
    pub along: Option<String>,
    /// API key: to read tiles that need one, and to register through the admin API.
    pub key: Option<String>,
    /// Register in this store's registry instead (the server's, on this machine).
    pub store: Option<PathBuf>,
    /// Where the devices' secrets are kept between runs (CSV `id,secret`).
    pub secrets: PathBuf,
    /// Stop after this long (`None`: until interrupted).
    pub duration: Option<Duration>,
    /// Share of devices that fall silent for good at a random moment (they go overdue, then
    /// lost).
    pub lost_share: f64,
    /// Share of devices that pause for three intervals now and then (overdue, then back).
    pub pause_share: f64,
    /// Seed of the random choices (lines, speeds, who falls silent).
    pub seed: u64,
}

/// What the run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Devices simulated.
    pub devices: usize,
    /// Lines they drove along.
    pub lines: usize,
    /// Reports sent.
    pub sent: u64,
    /// Reports acknowledged 2.04 (stored durably by the server).
    pub acknowledged: u64,
    /// Reports answered with an error code.
    pub refused: u64,
    /// Reports without an answer (after one retransmission).
    pub unanswered: u64,
    /// Devices that fell silent for good.
    pub fell_silent: u64,
    /// Seconds run.
    pub seconds: f64,
}

/// A small, seedable generator (SplitMix64): the runs are repeatable; no cryptography here.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Metres between two points (equirectangular: city scale).
fn metres(a: [f64; 2], b: [f64; 2]) -> f64 {
    let k = 111_320.0;
    let dx = (b[0] - a[0]) * k * ((a[1] + b[1]) / 2.0).to_radians().cos();
    let dy = (b[1] - a[1]) * k;
    (dx * dx + dy * dy).sqrt()
}

/// A street: its points and the distance along it at each.
#[derive(Debug, Clone)]
struct Street {
    points: Vec<[f64; 2]>,
    at: Vec<f64>,
}

impl Street {
    fn new(points: Vec<[f64; 2]>) -> Street {
        let mut at = vec![0.0];
        for w in points.windows(2) {
            at.push(at.last().copied().unwrap_or(0.0) + metres(w[0], w[1]));
        }
        Street { points, at }
    }

    fn length(&self) -> f64 {
        self.at.last().copied().unwrap_or(0.0)
    }

    /// The point `d` metres along.
    fn point(&self, d: f64) -> [f64; 2] {
        let d = d.clamp(0.0, self.length());
        let i = self
            .at
            .partition_point(|x| *x < d)
            .clamp(1, self.points.len() - 1);
        let (a, b) = (self.points[i - 1], self.points[i]);
        let seg = self.at[i] - self.at[i - 1];
        let f = if seg > 0.0 {
            (d - self.at[i - 1]) / seg
        } else {
            0.0
        };
        [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f]
    }
}

/// The lines of an MVT tile `z/x/y`, in WGS 84.
fn tile_lines(bytes: &[u8], z: u8, x: u32, y: u32) -> Vec<Vec<[f64; 2]>> {
    let Ok(tile) = Tile::decode(bytes) else {
        return Vec::new();
    };
    let n = 2f64.powi(i32::from(z));
    let mut out = Vec::new();
    for l in &tile.layers {
        let extent = f64::from(l.extent.unwrap_or(4096));
        let to_lonlat = |px: i64, py: i64| -> [f64; 2] {
            let gx = (f64::from(x) + px as f64 / extent) / n;
            let gy = (f64::from(y) + py as f64 / extent) / n;
            let lat = (std::f64::consts::PI * (1.0 - 2.0 * gy))
                .sinh()
                .atan()
                .to_degrees();
            [gx * 360.0 - 180.0, lat]
        };
        for f in l.features.iter().filter(|f| f.r#type == Some(2)) {
            let Ok(parts) = crate::tile::mvt::decode_commands(&f.geometry) else {
                continue;
            };
            out.extend(
                parts
                    .into_iter()
                    .filter(|p| p.len() >= 2)
                    .map(|p| p.into_iter().map(|[px, py]| to_lonlat(px, py)).collect()),
            );
        }
    }
    out
}

fn auth(key: &Option<String>) -> Option<String> {
    key.as_ref().map(|k| format!("Bearer {k}"))
}

async fn get_json(
    c: &Client,
    url: &str,
    key: &Option<String>,
) -> Result<serde_json::Value, String> {
    let a = auth(key);
    let h: Vec<(&str, &str)> = a.iter().map(|a| ("authorization", a.as_str())).collect();
    let r = c.get(url, &h, Duration::from_secs(20)).await?;
    if r.status != 200 {
        return Err(format!("{url} answered {}", r.status));
    }
    serde_json::from_slice(&r.body).map_err(|e| format!("{url}: {e}"))
}

/// The streets to drive along: the lines of `along` (or of the first layer that has lines)
/// in the 4 × 4 tiles at zoom 14 around its centre, read from the server's vector tiles.
async fn streets(c: &Client, o: &Options) -> Result<(String, Vec<Street>), String> {
    let base = o.server.trim_end_matches('/');
    let catalog = get_json(c, &format!("{base}/catalog"), &o.key).await?;
    let mut names: Vec<String> = catalog["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["live"].as_bool() != Some(true))
        .filter_map(|l| l["name"].as_str().map(str::to_string))
        .collect();
    if let Some(a) = &o.along {
        if !names.contains(a) {
            return Err(format!(
                "--along {a}: no such layer at {base}/catalog (there: {})",
                names.join(", ")
            ));
        }
        names = vec![a.clone()];
    } else {
        // Layers named for lines or streets first.
        names.sort_by_key(|n| !(n.contains("line") || n.contains("street") || n.contains("road")));
    }
    for name in names {
        let tj = get_json(c, &format!("{base}/tiles/{name}.json"), &o.key).await?;
        let b: Vec<f64> = tj["bounds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_f64)
            .collect();
        if b.len() != 4 {
            continue;
        }
        let z = tj["maxzoom"].as_u64().unwrap_or(14).min(14) as u8;
        let (cx, cy) =
            crate::tile::mercator::tile_containing((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, z);
        let mut lines = Vec::new();
        for dx in 0..4u32 {
            for dy in 0..4u32 {
                let (x, y) = ((cx + dx).saturating_sub(2), (cy + dy).saturating_sub(2));
                let a = auth(&o.key);
                let h: Vec<(&str, &str)> =
                    a.iter().map(|a| ("authorization", a.as_str())).collect();
                let r = c
                    .get(
                        &format!("{base}/tiles/{name}/{z}/{x}/{y}.mvt"),
                        &h,
                        Duration::from_secs(30),
                    )
                    .await?;
                if r.status == 200 {
                    lines.extend(tile_lines(&r.body, z, x, y));
                }
            }
        }
        let streets: Vec<Street> = lines
            .into_iter()
            .map(Street::new)
            .filter(|s| s.length() > 60.0)
            .collect();
        if !streets.is_empty() {
            return Ok((name, streets));
        }
    }
    Err(match &o.along {
        Some(a) => format!("--along {a}: no lines near the layer's centre"),
        None => "no layer at the server has lines to drive along: import streets, or give --along"
            .into(),
    })
}

/// The secrets of `PREFIX-00001..` from the secrets file, if it has them all.
fn saved_secrets(o: &Options, ids: &[String]) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(&o.secrets).ok()?;
    let saved: HashMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.split_once(','))
        .map(|(id, s)| (id.trim(), s.trim()))
        .collect();
    ids.iter()
        .map(|id| saved.get(id.as_str()).map(|s| s.to_string()))
        .collect()
}

/// Registers the devices (or reads their secrets from an earlier run); their secrets in order.
async fn register(c: &Client, o: &Options, ids: &[String]) -> Result<Vec<String>, String> {
    if let Some(s) = saved_secrets(o, ids) {
        return Ok(s);
    }
    let interval = format!("{}s", o.interval_s.ceil().max(1.0) as u64);
    let issued: Vec<crate::live::registry::Issued> = if let Some(store) = &o.store {
        use crate::live::registry::{DeviceKind, NewDevice, RegistryDb};
        let batch: Vec<NewDevice> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| NewDevice {
                line: i + 1,
                id: id.clone(),
                layer: o.layer.clone(),
                kind: DeviceKind::Tracker,
                interval_s: o.interval_s.ceil().max(1.0) as u64,
                secret_sha256: None,
                dtls: false,
            })
            .collect();
        let mut reg = RegistryDb::open(store).map_err(|e| e.to_string())?;
        let issued = reg.import(&batch).map_err(|e| {
            format!("{e} (devices of an earlier run: give its --secrets file, or another --prefix)")
        })?;
        if let Ok(mut db) = crate::store::db::Db::open(store) {
            let _ = crate::security::audit::append(
                &mut db,
                &crate::security::audit::Event {
                    key_id: "-",
                    role: "cli",
                    client: "cli:simulate",
                    action: "devices.import",
                    target: &format!("{} devices", ids.len()),
                    outcome: "ok",
                },
            );
        }
        issued
    } else {
        let rows: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| serde_json::json!({"id": id, "layer": o.layer, "kind": "tracker", "interval": interval}))
            .collect();
        let a = auth(&o.key).ok_or(
            "registering devices needs --store (of the server on this machine) or --key (devices.write)",
        )?;
        let r = c
            .request(
                "POST",
                &format!("{}/admin/devices", o.server.trim_end_matches('/')),
                &[("authorization", &a), ("content-type", "application/json")],
                serde_json::to_vec(&rows).unwrap_or_default(),
                Duration::from_secs(60),
            )
            .await?;
        if r.status != 201 {
            return Err(format!(
                "POST /admin/devices answered {}: {} (devices of an earlier run: give its --secrets file, or another --prefix)",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
        serde_json::from_value(v["secrets"].clone()).map_err(|e| e.to_string())?
    };
    let by_id: HashMap<&str, &str> = issued
        .iter()
        .map(|i| (i.id.as_str(), i.secret.as_str()))
        .collect();
    let secrets: Vec<String> = ids
        .iter()
        .map(|id| {
            by_id
                .get(id.as_str())
                .map(|s| s.to_string())
                .ok_or(format!("no secret issued for {id}"))
        })
        .collect::<Result<_, _>>()?;
    let mut csv = String::new();
    for (id, s) in ids.iter().zip(&secrets) {
        csv.push_str(&format!("{id},{s}\n"));
    }
    std::fs::write(&o.secrets, csv)
        .map_err(|e| format!("cannot keep the secrets in {}: {e}", o.secrets.display()))?;
    Ok(secrets)
}

/// The CoAP side: one UDP socket, answers matched to requests by message id.
struct Coap {
    sock: tokio::net::UdpSocket,
    waiting: std::sync::Mutex<HashMap<u16, tokio::sync::oneshot::Sender<coap_lite::MessageClass>>>,
    next_id: std::sync::atomic::AtomicU16,
}

impl Coap {
    async fn post(
        &self,
        id: &str,
        secret: &str,
        payload: Vec<u8>,
    ) -> Option<coap_lite::MessageClass> {
        use coap_lite::{
            CoapOption, ContentFormat, MessageClass, MessageType, Packet, RequestType,
        };
        let mid = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(RequestType::Post);
        p.header.message_id = mid;
        p.set_token(mid.to_be_bytes().to_vec());
        p.add_option(CoapOption::UriPath, b"r".to_vec());
        p.add_option(CoapOption::UriPath, id.as_bytes().to_vec());
        p.add_option(CoapOption::UriQuery, format!("k={secret}").into_bytes());
        p.set_content_format(ContentFormat::ApplicationJSON);
        p.payload = payload;
        let bytes = p.to_bytes().ok()?;
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(mid, tx);
        // Confirmable: sent again once if unanswered (the same message id: the server
        // answers a duplicate from its record instead of storing it twice).
        let mut answer = None;
        for wait in [2, 4] {
            if self.sock.send(&bytes).await.is_err() {
                break;
            }
            if let Ok(Ok(code)) = tokio::time::timeout(Duration::from_secs(wait), &mut rx).await {
                answer = Some(code);
                break;
            }
        }
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&mid);
        answer
    }

    async fn receive(self: Arc<Self>) {
        let mut buf = vec![0u8; 1500];
        loop {
            let Ok(n) = self.sock.recv(&mut buf).await else {
                continue;
            };
            let Ok(p) = coap_lite::Packet::from_bytes(&buf[..n]) else {
                continue;
            };
            let tx = self
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&p.header.message_id);
            if let Some(tx) = tx {
                let _ = tx.send(p.header.code);
            }
        }
    }
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    unanswered: AtomicU64,
    silent: AtomicU64,
}

/// Runs the simulation until `o.duration` passes (or forever); progress lines go to stderr
/// every 5 s.
pub async fn run(o: Options) -> Result<Summary, String> {
    if !(0.2..=86_400.0).contains(&o.interval_s) {
        return Err("--interval: between 200ms and 24h".into());
    }
    let client = Client::new();
    let (along, streets) = streets(&client, &o).await?;
    let streets = Arc::new(streets);
    let ids: Vec<String> = (1..=o.devices)
        .map(|i| format!("{}-{i:05}", o.prefix))
        .collect();
    let secrets = register(&client, &o, &ids).await?;
    eprintln!(
        "simulate: {} devices of {} driving along {} lines of {along}, a report each every {} s over CoAP to {}",
        o.devices,
        o.layer,
        streets.len(),
        o.interval_s,
        o.coap
    );
    // A new device is unknown to the server until it re-reads the registry (within a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sock = tokio::net::UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| e.to_string())?;
    sock.connect(&o.coap)
        .await
        .map_err(|e| format!("coap {}: {e}", o.coap))?;
    let coap = Arc::new(Coap {
        sock,
        waiting: std::sync::Mutex::new(HashMap::new()),
        next_id: std::sync::atomic::AtomicU16::new((o.seed as u16).wrapping_mul(7919)),
    });
    tokio::spawn(Arc::clone(&coap).receive());
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let end = o.duration.map(|d| started + d);
    let mut rng = Rng(o.seed);
    let mut tasks = Vec::new();
    for (id, secret) in ids.into_iter().zip(secrets) {
        let mut r = Rng(rng.next());
        let (coap, counts, streets) =
            (Arc::clone(&coap), Arc::clone(&counts), Arc::clone(&streets));
        let interval = o.interval_s;
        let lost_at = (r.unit() < o.lost_share).then(|| interval * (2.0 + 6.0 * r.unit()));
        let pauses = r.unit() < o.pause_share;
        tasks.push(tokio::spawn(async move {
            let mut street = r.next() as usize % streets.len();
            let mut along = r.unit() * streets[street].length();
            let mut forward = r.next().is_multiple_of(2);
            // Street speeds: 15 to 50 km/h.
            let speed = 4.0 + r.unit() * 10.0;
            // Devices do not all wake at once.
            tokio::time::sleep(Duration::from_secs_f64(r.unit() * interval)).await;
            let mut last = Instant::now();
            let mut n = 0u64;
            loop {
                let now = Instant::now();
                if end.is_some_and(|e| now >= e) {
                    return;
                }
                let run_s = now.duration_since(started).as_secs_f64();
                if lost_at.is_some_and(|t| run_s >= t) {
                    counts.silent.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // Drive: to the end of the street, then back along it or onto another.
                let mut step = speed * now.duration_since(last).as_secs_f64();
                last = now;
                while step > 0.0 {
                    let len = streets[street].length();
                    let room = if forward { len - along } else { along };
                    if step <= room {
                        along += if forward { step } else { -step };
                        step = 0.0;
                    } else {
                        step -= room;
                        if r.unit() < 0.5 {
                            street = r.next() as usize % streets.len();
                            along = if r.unit() < 0.5 {
                                0.0
                            } else {
                                streets[street].length()
                            };
                            forward = along == 0.0;
                        } else {
                            along = if forward { len } else { 0.0 };
                            forward = !forward;
                        }
                    }
                }
                let p = streets[street].point(along);
                let body = serde_json::json!({
                    "lon": (p[0] * 1e7).round() / 1e7,
                    "lat": (p[1] * 1e7).round() / 1e7,
                    "t": crate::live::now_s(),
                    "speed": (speed * 3.6 * 10.0).round() / 10.0,
                })
                .to_string()
                .into_bytes();
                counts.sent.fetch_add(1, Ordering::Relaxed);
                match coap.post(&id, &secret, body).await {
                    Some(coap_lite::MessageClass::Response(coap_lite::ResponseType::Changed)) => {
                        counts.acked.fetch_add(1, Ordering::Relaxed)
                    }
                    Some(_) => counts.refused.fetch_add(1, Ordering::Relaxed),
                    None => counts.unanswered.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
                // Now and then a pause of three intervals: overdue, then back.
                let wait = if pauses && n % 12 == 6 {
                    interval * 4.0
                } else {
                    interval
                };
                let mut until = Instant::now() + Duration::from_secs_f64(wait);
                if let Some(e) = end {
                    until = until.min(e);
                }
                tokio::time::sleep_until(until.into()).await;
            }
        }));
    }
    let progress = {
        let counts = Arc::clone(&counts);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let s = started.elapsed().as_secs_f64();
                let acked = counts.acked.load(Ordering::Relaxed);
                eprintln!(
                    "simulate: {:.0} s, {acked} reports acknowledged ({:.1}/s), {} refused, {} unanswered, {} devices silent for good",
                    s,
                    acked as f64 / s.max(1e-9),
                    counts.refused.load(Ordering::Relaxed),
                    counts.unanswered.load(Ordering::Relaxed),
                    counts.silent.load(Ordering::Relaxed)
                );
            }
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    progress.abort();
    Ok(Summary {
        devices: o.devices,
        lines: streets.len(),
        sent: counts.sent.load(Ordering::Relaxed),
        acknowledged: counts.acked.load(Ordering::Relaxed),
        refused: counts.refused.load(Ordering::Relaxed),
        unanswered: counts.unanswered.load(Ordering::Relaxed),
        fell_silent: counts.silent.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_street_is_walked_by_distance() {
        let s = Street::new(vec![[24.0, 60.0], [24.001, 60.0], [24.001, 60.001]]);
        let first = metres([24.0, 60.0], [24.001, 60.0]);
        assert!((first - 55.66).abs() < 0.1, "{first}");
        assert!((s.length() - first - 111.32).abs() < 0.1);
        let p = s.point(first / 2.0);
        assert!((p[0] - 24.0005).abs() < 1e-9 && p[1] == 60.0);
        assert_eq!(s.point(1e9), [24.001, 60.001]);
        assert_eq!(s.point(-5.0), [24.0, 60.0]);
    }

    #[test]
    fn lines_are_read_back_from_a_tile() {
        use geozero::mvt::tile;
        // A line from the tile's corner to its centre, at z14.
        let zz = |v: i32| ((v << 1) ^ (v >> 31)) as u32;
        let t = Tile {
            layers: vec![tile::Layer {
                version: 2,
                name: "l".into(),
                extent: Some(4096),
                features: vec![tile::Feature {
                    r#type: Some(2),
                    geometry: vec![9, 0, 0, 10, zz(2048), zz(2048)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let (x, y) = crate::tile::mercator::tile_containing(24.94, 60.17, 14);
        let lines = tile_lines(&t.encode_to_vec(), 14, x, y);
        assert_eq!(lines.len(), 1);
        let [a, b] = [lines[0][0], lines[0][1]];
        assert!(a[0] < 24.94 && a[1] > 60.17, "{a:?}");
        assert!((b[0] - a[0]) > 0.0 && (a[1] - b[1]) > 0.0);
        assert_eq!(
            crate::tile::mercator::tile_containing(b[0] + 1e-9, b[1] - 1e-9, 15),
            (2 * x + 1, 2 * y + 1)
        );
    }
}
