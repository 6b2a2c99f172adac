//! The stream: what the committer applied, as events for `/stream` subscribers. Events carry
//! their log sequence number as id; the last [`RECENT_EVENTS`] are kept so that a client that
//! reconnects with `Last-Event-ID` gets what it missed, or is told it missed too much. A
//! subscriber more than [`STREAM_BUFFER`] events behind is cut off: ingest never waits for a
//! reader. Also the sliding one-minute report count of the dashboards.

use super::lock;
use super::registry::RegIndex;
use super::state::{Change, LiveState};
use serde_json::json;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Events kept for `Last-Event-ID` resume.
const RECENT_EVENTS: usize = 20_000;
/// Broadcast buffer per stream client: a client this far behind is cut off.
pub const STREAM_BUFFER: usize = 4_096;

/// An event for `/stream`.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// Event id (the log sequence number).
    pub id: u64,
    /// Event type: `position`, `geofence`, `state`, `geofences`, `removed`.
    pub event: &'static str,
    /// Live layer, when the event is about a device.
    pub layer: Option<String>,
    /// Position, when it has one.
    pub pos: Option<[f64; 2]>,
    /// JSON data.
    pub data: String,
}

/// A new subscription to the stream.
pub struct Subscription {
    /// Events from now on.
    pub events: tokio::sync::broadcast::Receiver<Arc<StreamEvent>>,
    /// The kept events after the `Last-Event-ID` asked for, oldest first.
    pub replay: Vec<Arc<StreamEvent>>,
    /// Events after that id are no longer kept: the client must reload.
    pub missed: bool,
}

/// The broadcast channel and the recent events.
pub(super) struct Stream {
    events: tokio::sync::broadcast::Sender<Arc<StreamEvent>>,
    recent: Mutex<VecDeque<Arc<StreamEvent>>>,
    /// Events with an id up to this one may exist but are not kept (before the hub opened,
    /// or dropped from `recent`): a client whose last id is below it may have missed some.
    /// Ids are increasing but not dense (in cluster mode they come from the shared log's
    /// sequence numbers), so this is how a gap is told, not a jump in ids.
    floor: AtomicU64,
}

impl Stream {
    /// A stream whose events before `floor` (the log applied at open) are not kept.
    pub(super) fn new(floor: u64) -> Stream {
        Stream {
            events: tokio::sync::broadcast::channel(STREAM_BUFFER).0,
            recent: Mutex::new(VecDeque::new()),
            floor: AtomicU64::new(floor),
        }
    }

    /// Subscribers now.
    pub(super) fn clients(&self) -> usize {
        self.events.receiver_count()
    }

    /// Subscribes; `last_id` is the last event the client has (the kept events after it are
    /// replayed; `missed` if some after it are no longer kept).
    pub(super) fn subscribe(&self, last_id: Option<u64>) -> Subscription {
        let recent = lock(&self.recent);
        let events = self.events.subscribe();
        let Some(last) = last_id else {
            return Subscription {
                events,
                replay: Vec::new(),
                missed: false,
            };
        };
        let missed = last < self.floor.load(Ordering::Acquire);
        let replay = recent.iter().filter(|e| e.id > last).cloned().collect();
        Subscription {
            events,
            replay,
            missed,
        }
    }

    /// Sends events to subscribers and keeps them for resume.
    pub(super) fn send(&self, out: Vec<StreamEvent>) {
        let mut recent = lock(&self.recent);
        for e in out {
            let e = Arc::new(e);
            recent.push_back(Arc::clone(&e));
            if recent.len() > RECENT_EVENTS
                && let Some(gone) = recent.pop_front()
            {
                self.floor.fetch_max(gone.id, Ordering::AcqRel);
            }
            // No subscriber is not an error.
            let _ = self.events.send(e);
        }
    }
}

/// The events of applied changes, read against the state after them.
pub(super) fn events(st: &LiveState, reg: &RegIndex, changes: Vec<Change>) -> Vec<StreamEvent> {
    let mut out = Vec::with_capacity(changes.len());
    for c in changes {
        match c {
            Change::Moved {
                device, to, t, seq, ..
            } => {
                let Some(d) = st.devices.get(&device) else {
                    continue;
                };
                let mut data = d.json();
                data["position"] = json!(to);
                data["t"] = json!(t);
                out.push(StreamEvent {
                    id: seq,
                    event: "position",
                    layer: Some(d.layer.to_string()),
                    pos: to,
                    data: data.to_string(),
                });
            }
            Change::State { device, seq } => {
                let Some(d) = st.devices.get(&device) else {
                    continue;
                };
                out.push(StreamEvent {
                    id: seq,
                    event: "state",
                    layer: Some(d.layer.to_string()),
                    pos: d.pos,
                    data: json!({"id": d.id, "layer": d.layer, "state": d.state, "position": d.pos})
                        .to_string(),
                });
            }
            Change::Fence {
                fence,
                name,
                kind,
                device,
                layer,
                pos,
                t,
                seq,
            } => out.push(StreamEvent {
                id: seq,
                event: "geofence",
                layer: Some(layer.clone()),
                pos: Some(pos),
                data: json!({"fence": fence, "name": name, "kind": kind, "device": device, "layer": layer, "position": pos, "t": t})
                    .to_string(),
            }),
            Change::Removed {
                device,
                layer,
                pos,
                seq,
            } => {
                // Its last device gone, the layer has left /catalog too: a client drops it
                // rather than asking for its tiles.
                let layer_gone = !reg.is_layer(&layer);
                out.push(StreamEvent {
                    id: seq,
                    event: "removed",
                    layer: Some(layer.clone()),
                    pos,
                    data: json!({"id": device, "layer": layer, "position": pos, "layer_gone": layer_gone})
                        .to_string(),
                });
            }
            Change::Fences { seq } => out.push(StreamEvent {
                id: seq,
                event: "geofences",
                layer: None,
                pos: None,
                data: json!({"fences": st.fence_set.fences().len()}).to_string(),
            }),
        }
    }
    out
}

/// Reports counted per second in a ring of [`RATE_SLOTS`] seconds, for a sliding one-minute
/// count (what a dashboard means by "reports per minute": the last 60 s, not the last
/// calendar minute, which reads 0 for the first minute after a quiet one).
pub(super) struct Rate {
    /// (second, reports in it), indexed by second modulo the ring size.
    seconds: [(u64, u64); RATE_SLOTS],
}

const RATE_SLOTS: usize = 64;

impl Default for Rate {
    fn default() -> Self {
        Rate {
            seconds: [(0, 0); RATE_SLOTS],
        }
    }
}

impl Rate {
    pub(super) fn add(&mut self, sec: u64, n: u64) {
        let slot = &mut self.seconds[sec as usize % RATE_SLOTS];
        if slot.0 != sec {
            *slot = (sec, 0);
        }
        slot.1 += n;
    }

    /// Reports in the 60 seconds up to and including `sec`.
    pub(super) fn last_minute(&self, sec: u64) -> u64 {
        self.seconds
            .iter()
            .filter(|(s, _)| *s <= sec && sec - *s < 60)
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::Rate;

    #[test]
    fn the_report_rate_is_a_sliding_minute() {
        let mut r = Rate::default();
        r.add(1000, 5);
        r.add(1000, 2);
        r.add(1030, 10);
        assert_eq!(r.last_minute(1030), 17);
        assert_eq!(r.last_minute(1059), 17);
        assert_eq!(r.last_minute(1060), 10, "second 1000 left the window");
        assert_eq!(r.last_minute(1089), 10);
        assert_eq!(r.last_minute(1090), 0);
        // A slot reused 64 s later starts from zero.
        r.add(1064, 1);
        assert_eq!(r.last_minute(1064), 11);
    }
}
