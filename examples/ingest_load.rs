//! Load generator for `benches/peers/ingest.sh`: thousands of simulated NB-IoT devices
//! reporting to a running `urbis serve` over CoAP (confirmable, a window of outstanding
//! requests per socket) or HTTP batches (keep-alive, an ingest key), and the report-to-stream
//! latency measured by a `/stream` subscriber at a fixed report rate. Loopback only.
//!
//! ```text
//! ingest_load setup STORE DEVICES                       register dev-0.. (secret ds_bench_N)
//! ingest_load coap COAP_ADDR DEVICES SECONDS SOCKETS WINDOW
//! ingest_load http HTTP_ADDR DEVICES SECONDS CONNECTIONS BATCH
//! ingest_load latency HTTP_ADDR COAP_ADDR DEVICES RATE SECONDS
//! ```

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use urbis::live::registry::{DeviceKind, NewDevice, RegistryDb, hash_bytes};

fn arg<T: std::str::FromStr>(a: &[String], i: usize) -> T {
    a.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("argument {i} missing or invalid; see the module doc"))
}

/// Appends one CoAP option (delta from the previous number) to `out`.
fn option(out: &mut Vec<u8>, delta: u16, value: &[u8]) {
    let ext = |v: usize| {
        if v < 13 {
            (v as u8, None)
        } else {
            (13u8, Some((v - 13) as u8))
        }
    };
    let (d, dx) = ext(usize::from(delta));
    let (l, lx) = ext(value.len());
    out.push((d << 4) | l);
    out.extend(dx);
    out.extend(lx);
    out.extend_from_slice(value);
}

/// A confirmable POST /r/dev-N?k=ds_bench_N with a JSON payload, encoded directly (the load
/// generator shares the two cores with the server, so it must be cheap); `check_encoding`
/// below compares it with coap-lite's decoder.
fn report(mid: u16, dev: usize, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + body.len());
    out.extend_from_slice(&[0x42, 0x02]);
    out.extend_from_slice(&mid.to_be_bytes());
    out.extend_from_slice(&mid.to_be_bytes());
    option(&mut out, 11, b"r");
    option(&mut out, 0, format!("dev-{dev}").as_bytes());
    option(&mut out, 1, &[50]);
    option(&mut out, 3, format!("k=ds_bench_{dev}").as_bytes());
    out.push(0xFF);
    out.extend_from_slice(body);
    out
}

fn check_encoding() {
    let p = Packet::from_bytes(&report(7, 4999, b"{}")).expect("valid CoAP");
    assert_eq!(p.header.code, MessageClass::Request(RequestType::Post));
    assert_eq!(p.header.get_type(), MessageType::Confirmable);
    assert_eq!(
        p.get_first_option(CoapOption::UriQuery).map(Vec::as_slice),
        Some(&b"k=ds_bench_4999"[..])
    );
    assert_eq!(
        p.get_first_option(CoapOption::ContentFormat)
            .map(Vec::as_slice),
        Some(&[50u8][..])
    );
    assert_eq!(p.payload, b"{}");
}

fn position(dev: usize, n: u64) -> (f64, f64) {
    // Devices spread over ~20 km around Helsinki, drifting.
    let a = dev as f64 * 0.618_033_988_75;
    let lon = 24.80 + (a.fract() * 0.35) + (n % 100) as f64 * 1e-5;
    let lat = 60.12 + ((a * 7.0).fract() * 0.15);
    (lon, lat)
}

fn setup(store: &str, devices: usize) {
    let mut reg = RegistryDb::open(std::path::Path::new(store)).expect("open the registry");
    let batch: Vec<NewDevice> = (0..devices)
        .map(|i| NewDevice {
            line: i + 1,
            id: format!("dev-{i}"),
            layer: "fleet".into(),
            kind: DeviceKind::Tracker,
            interval_s: 60,
            secret_sha256: Some(hash_bytes(&format!("ds_bench_{i}"))),
            dtls: false,
        })
        .collect();
    reg.import(&batch).expect("register the devices");
    reg.add_ingest_key_hash("bench", hash_bytes("ik_bench"))
        .expect("add the ingest key");
    println!("registered {devices} devices and ingest key ik_bench in {store}");
}

/// CoAP: each socket keeps `window` confirmable reports outstanding.
fn coap(addr: &str, devices: usize, seconds: f64, sockets: usize, window: usize) {
    let acked = Arc::new(AtomicU64::new(0));
    let overloaded = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..sockets)
        .map(|k| {
            let (acked, overloaded, lost) = (acked.clone(), overloaded.clone(), lost.clone());
            let addr = addr.to_string();
            std::thread::spawn(move || {
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                sock.connect(&addr).unwrap();
                sock.set_read_timeout(Some(Duration::from_millis(5)))
                    .unwrap();
                let mut outstanding: HashMap<u16, Instant> = HashMap::new();
                let mut mid: u16 = (k as u16).wrapping_mul(7919);
                let mut n: u64 = 0;
                let mut buf = [0u8; 1500];
                let mine: Vec<usize> = (k..devices).step_by(sockets).collect();
                while Instant::now() < end {
                    while outstanding.len() < window {
                        let dev = mine[(n as usize) % mine.len()];
                        let (lon, lat) = position(dev, n);
                        let body = format!(r#"{{"lat":{lat:.6},"lon":{lon:.6},"battery":87}}"#);
                        mid = mid.wrapping_add(1);
                        let _ = sock.send(&report(mid, dev, body.as_bytes()));
                        outstanding.insert(mid, Instant::now());
                        n += 1;
                    }
                    while let Ok(len) = sock.recv(&mut buf) {
                        if let Ok(p) = Packet::from_bytes(&buf[..len])
                            && outstanding.remove(&p.header.message_id).is_some()
                        {
                            match p.header.code {
                                MessageClass::Response(ResponseType::Changed) => {
                                    acked.fetch_add(1, Ordering::Relaxed);
                                }
                                MessageClass::Response(ResponseType::TooManyRequests) => {
                                    overloaded.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => {
                                    lost.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        if outstanding.len() < window / 2 {
                            break;
                        }
                    }
                    let now = Instant::now();
                    let before = outstanding.len();
                    outstanding.retain(|_, t| now.duration_since(*t) < Duration::from_secs(2));
                    lost.fetch_add((before - outstanding.len()) as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let secs = start.elapsed().as_secs_f64();
    let a = acked.load(Ordering::Relaxed);
    println!(
        "coap devices={devices} sockets={sockets} window={window} seconds={secs:.1} acked={a} reports_per_s={:.0} overloaded={} lost={}",
        a as f64 / secs,
        overloaded.load(Ordering::Relaxed),
        lost.load(Ordering::Relaxed)
    );
}

fn http_post(s: &mut TcpStream, host: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let head = format!(
        "POST /ingest HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer ik_bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut out = vec![0u8; len];
    r.read_exact(&mut out).unwrap();
    (status, out)
}

/// HTTP: `connections` keep-alive connections posting batches of `batch` compact records.
fn http(addr: &str, devices: usize, seconds: f64, connections: usize, batch: usize) {
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..connections)
        .map(|k| {
            let (accepted, refused) = (accepted.clone(), refused.clone());
            let addr = addr.to_string();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.set_nodelay(true).unwrap();
                let mut n: u64 = k as u64 * 1_000_003;
                while Instant::now() < end {
                    let mut body = String::with_capacity(batch * 64);
                    body.push('[');
                    for i in 0..batch {
                        let dev = (n as usize) % devices;
                        let (lon, lat) = position(dev, n);
                        if i > 0 {
                            body.push(',');
                        }
                        body +=
                            &format!(r#"{{"device":"dev-{dev}","lat":{lat:.6},"lon":{lon:.6}}}"#);
                        n += 1;
                    }
                    body.push(']');
                    let (status, resp) = http_post(&mut s, &addr, body.as_bytes());
                    if status == 200 {
                        let v: serde_json::Value =
                            serde_json::from_slice(&resp).unwrap_or_default();
                        accepted.fetch_add(v["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
                    } else {
                        refused.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let secs = start.elapsed().as_secs_f64();
    let a = accepted.load(Ordering::Relaxed);
    println!(
        "http devices={devices} connections={connections} batch={batch} seconds={secs:.1} accepted={a} reports_per_s={:.0} refused={}",
        a as f64 / secs,
        refused.load(Ordering::Relaxed)
    );
}

/// Report-to-stream latency at a fixed rate of CoAP reports (each carries its send time).
fn latency(http_addr: &str, coap_addr: &str, devices: usize, rate: f64, seconds: f64) {
    let epoch = Instant::now();
    let mut s = TcpStream::connect(http_addr).unwrap();
    // The stream needs an API key (`urbis keys create`), given as URBIS_API_KEY.
    let auth = std::env::var("URBIS_API_KEY")
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /stream?layers=fleet HTTP/1.1\r\nHost: {http_addr}\r\n{auth}Accept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let lat = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let done = Arc::new(AtomicBool::new(false));
    {
        let (lat, done) = (lat.clone(), done.clone());
        let s = s.try_clone().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        std::thread::spawn(move || {
            let mut r = BufReader::new(s);
            let mut line = String::new();
            while !done.load(Ordering::Relaxed) {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(_) => continue,
                }
                if let Some(d) = line.strip_prefix("data: ")
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(d.trim())
                    && let Some(sent) = v["telemetry"]["sent_us"].as_f64()
                {
                    let now = epoch.elapsed().as_secs_f64() * 1e6;
                    lat.lock().unwrap().push((now - sent) / 1000.0);
                }
            }
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    // Message ids may not repeat within 247 s per endpoint (RFC 7252): 64 endpoints.
    let socks: Vec<UdpSocket> = (0..64)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.connect(coap_addr).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let start = Instant::now();
    let total = (rate * seconds) as u64;
    let mut buf = [0u8; 1500];
    let mut sent = 0u64;
    let mut mid: u16 = 1;
    while sent < total {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due.min(total) {
            let dev = (sent as usize) % devices;
            let (lon, lat) = position(dev, sent);
            let us = epoch.elapsed().as_secs_f64() * 1e6;
            let body = format!(r#"{{"lat":{lat:.6},"lon":{lon:.6},"sent_us":{us:.0}}}"#);
            if sent.is_multiple_of(64) {
                mid = mid.wrapping_add(1);
            }
            let _ = socks[(sent % 64) as usize].send(&report(mid, dev, body.as_bytes()));
            sent += 1;
        }
        for sock in &socks {
            while sock.recv(&mut buf).is_ok() {}
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    done.store(true, Ordering::Relaxed);
    let mut v = lat.lock().unwrap().clone();
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        v.get(((v.len().max(1) - 1) as f64 * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "latency rate={rate:.0} sent={total} received={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        v.len(),
        pct(0.5),
        pct(0.99),
        v.last().copied().unwrap_or(f64::NAN)
    );
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    check_encoding();
    match a.get(1).map(String::as_str) {
        Some("setup") => setup(&a[2], arg(&a, 3)),
        Some("coap") => coap(&a[2], arg(&a, 3), arg(&a, 4), arg(&a, 5), arg(&a, 6)),
        Some("http") => http(&a[2], arg(&a, 3), arg(&a, 4), arg(&a, 5), arg(&a, 6)),
        Some("latency") => latency(&a[2], &a[3], arg(&a, 4), arg(&a, 5), arg(&a, 6)),
        _ => eprintln!("usage: see the module doc of examples/ingest_load.rs"),
    }
}
