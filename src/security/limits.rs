//! Rate limits: token buckets per caller (its key's id, or its address when anonymous) and
//! class of request, and a cap on the `/stream` connections of one caller. A bucket holds
//! `burst` tokens and refills at `rate` a second; a request takes one, and without one it is
//! refused (429) with the seconds until the next. The defaults leave room for a map pan
//! (about 30 tiles at once, many times a second) and stop a scraper or a runaway script.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Kinds of requests, each with its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Tiles, TileJSON, the catalog, styles.
    Tiles,
    /// Devices, tracks, geofences, the audit log.
    Api,
    /// Device reports over HTTP.
    Ingest,
}

/// Requests a second (and bursts) per caller and class; 0 turns a class off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Tiles a second.
    pub tiles: u32,
    /// API requests a second.
    pub api: u32,
    /// Ingest requests a second.
    pub ingest: u32,
    /// Open `/stream` connections per caller.
    pub streams: u32,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            tiles: 500,
            api: 50,
            ingest: 200,
            streams: 16,
        }
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

const SHARDS: usize = 16;

/// The buckets of a running server.
pub struct Limiter {
    rates: Rates,
    shards: Vec<Mutex<HashMap<(Class, String), Bucket>>>,
    streams: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

/// The part of a client address that rate limits key on: the whole IPv4 address, or the /64
/// network of an IPv6 address (one subscriber's line gets a /64; keyed by address, it could
/// take 2^64 fresh buckets). Anything else as it is.
pub fn network(client: &str) -> String {
    match client.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(a)) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = a.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        _ => client.to_string(),
    }
}

/// One open stream of a caller; the count goes down when it is dropped.
pub struct StreamPermit(Arc<AtomicUsize>);

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limiter {
    /// Limits at `rates`.
    pub fn new(rates: Rates) -> Limiter {
        Limiter {
            rates,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            streams: Mutex::default(),
        }
    }

    /// Takes a token of `class` for `who`; `Err(seconds)` to wait when there is none.
    pub fn check(&self, class: Class, who: &str) -> Result<(), u64> {
        let rate = f64::from(match class {
            Class::Tiles => self.rates.tiles,
            Class::Api => self.rates.api,
            Class::Ingest => self.rates.ingest,
        });
        if rate == 0.0 {
            return Ok(());
        }
        let burst = rate * 2.0;
        let shard = {
            use std::hash::BuildHasher;
            foldhash::fast::FixedState::default().hash_one(who) as usize % SHARDS
        };
        let now = Instant::now();
        let mut map = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            // Forget callers whose buckets have refilled: they lose nothing.
            map.retain(|_, b| now.duration_since(b.last).as_secs_f64() * rate < burst);
        }
        let b = map.entry((class, who.to_string())).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// A permit for one more open stream of `who`, or `None` at the cap.
    pub fn stream(&self, who: &str) -> Option<StreamPermit> {
        let count = {
            let mut map = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() > 10_000 {
                // Forget callers with no stream open (only the map holds their counter).
                map.retain(|_, c| Arc::strong_count(c) > 1);
            }
            Arc::clone(map.entry(who.to_string()).or_default())
        };
        let cap = self.rates.streams as usize;
        if cap > 0 && count.fetch_add(1, Ordering::AcqRel) >= cap {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        if cap == 0 {
            count.fetch_add(1, Ordering::AcqRel);
        }
        Some(StreamPermit(count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_then_refills() {
        let l = Limiter::new(Rates {
            tiles: 10,
            ..Rates::default()
        });
        let ok = (0..25)
            .filter(|_| l.check(Class::Tiles, "k").is_ok())
            .count();
        assert_eq!(ok, 20, "the burst is twice the rate");
        assert_eq!(l.check(Class::Tiles, "k"), Err(1));
        assert!(l.check(Class::Tiles, "other").is_ok(), "callers are apart");
        assert!(l.check(Class::Api, "k").is_ok(), "classes are apart");
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert!(l.check(Class::Tiles, "k").is_ok(), "refilled");
    }

    #[test]
    fn ipv6_callers_are_keyed_by_their_64_bit_network() {
        assert_eq!(network("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(network("2001:db8:1:2:ffff::1"), "2001:db8:1:2::/64");
        assert_eq!(network("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(network("192.0.2.7"), "192.0.2.7");
        assert_eq!(network("-"), "-");
        let l = Limiter::new(Rates {
            tiles: 1,
            ..Rates::default()
        });
        assert!(l.check(Class::Tiles, &network("2001:db8::1")).is_ok());
        assert!(l.check(Class::Tiles, &network("2001:db8::2")).is_ok());
        assert!(
            l.check(Class::Tiles, &network("2001:db8::3")).is_err(),
            "a new address in the same /64 shares its bucket"
        );
    }

    #[test]
    fn callers_without_an_open_stream_are_forgotten() {
        let l = Limiter::new(Rates::default());
        let kept = l.stream("kept").unwrap();
        for i in 0..10_050 {
            drop(l.stream(&format!("c{i}")).unwrap());
        }
        let n = l.streams.lock().unwrap().len();
        assert!(n < 100, "{n} callers remembered");
        assert!(l.streams.lock().unwrap().contains_key("kept"));
        drop(kept);
    }

    #[test]
    fn streams_are_capped_per_caller_and_freed_when_closed() {
        let l = Limiter::new(Rates {
            streams: 2,
            ..Rates::default()
        });
        let a = l.stream("k").unwrap();
        let _b = l.stream("k").unwrap();
        assert!(l.stream("k").is_none());
        assert!(l.stream("other").is_some());
        drop(a);
        assert!(l.stream("k").is_some());
    }
}
