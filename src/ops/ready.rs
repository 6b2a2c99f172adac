//! Readiness: `/ready` names each check and says which failed. A load balancer takes a server
//! out of rotation on 503; an operator reads why.

use crate::engine::Engine;
use crate::live::Hub;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A catalog not read for this long means the watcher is stuck (it runs every second).
pub const REFRESH_STALE_S: u64 = 10;

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Its name: `store`, `layers`, `log`, `listeners`, `catalog_refresh`.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was found, for a person.
    pub detail: String,
}

/// One listener of the server (CoAP, CoAP over DTLS, metrics) as the `listeners` check sees
/// it: up until its task ends, whichever way (its [`Running`] guard is dropped).
#[derive(Debug)]
pub struct ListenerState {
    name: &'static str,
    at: String,
    up: AtomicBool,
}

/// Held by a listener's task; dropped when the task ends (returns, fails or panics).
#[derive(Debug)]
pub struct Running(Arc<ListenerState>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.up.store(false, Ordering::Release);
        // Also at shutdown, when the runtime drops its tasks: /ready tells, not this line.
        tracing::debug!(listener = self.0.name, at = %self.0.at, "a listener stopped");
    }
}

/// The listeners of a server. One that was never started (its port taken at start, said in
/// the log) is not listed: the server runs without it, and says so in its first line.
#[derive(Debug, Default)]
pub struct Listeners(Mutex<Vec<Arc<ListenerState>>>);

impl Listeners {
    /// Notes that listener `name` runs at `at`; the guard goes into its task.
    pub fn started(&self, name: &'static str, at: impl Into<String>) -> Running {
        let s = Arc::new(ListenerState {
            name,
            at: at.into(),
            up: AtomicBool::new(true),
        });
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&s));
        Running(s)
    }

    /// The `listeners` check: every started listener still runs.
    pub fn check(&self) -> Check {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let down: Vec<String> = all
            .iter()
            .filter(|l| !l.up.load(Ordering::Acquire))
            .map(|l| format!("{} on {} stopped", l.name, l.at))
            .collect();
        Check {
            name: "listeners",
            ok: down.is_empty(),
            detail: if down.is_empty() {
                std::iter::once("http answers".to_string())
                    .chain(all.iter().map(|l| format!("{} on {}", l.name, l.at)))
                    .collect::<Vec<_>>()
                    .join("; ")
            } else {
                down.join("; ")
            },
        }
    }
}

/// Every check, now.
pub fn checks(engine: &Engine, hub: Option<&Hub>, listeners: &Listeners) -> Vec<Check> {
    let mut out = Vec::new();
    let dir = engine.store().dir();
    out.push(match std::fs::read_dir(dir) {
        Ok(_) => Check {
            name: "store",
            ok: true,
            detail: format!("{} readable", dir.display()),
        },
        Err(e) => Check {
            name: "store",
            ok: false,
            detail: format!("{}: {e}", dir.display()),
        },
    });
    let unserved = engine.unserved();
    out.push(Check {
        name: "layers",
        ok: unserved.is_empty(),
        detail: if unserved.is_empty() {
            format!("{} layers served", engine.layers().len())
        } else {
            unserved
                .iter()
                .map(|(l, why)| format!("{l} {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        },
    });
    if let Some(hub) = hub {
        // The log thread is in service, and a new segment or snapshot could be made: an
        // unnamed file is created and dropped in the log's directory (no trace left).
        let live = hub.live_dir();
        let log = match hub.is_ready() {
            Err(why) => Err(why),
            Ok(()) => crate::store::catalog::StagedFile::create_in(&live)
                .map(drop)
                .map_err(|e| format!("cannot create a file in {}: {e}", live.display())),
        };
        out.push(Check {
            name: "log",
            ok: log.is_ok(),
            detail: log.map_or_else(
                |e| e,
                |()| match hub.shared_lag() {
                    Some(lag) => format!(
                        "{} writable; cluster report stream: {lag} messages to apply",
                        live.display()
                    ),
                    None => format!("{} writable", live.display()),
                },
            ),
        });
    }
    out.push(listeners.check());
    let at = engine.refreshed_at();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let age = now.saturating_sub(at);
    out.push(Check {
        name: "catalog_refresh",
        ok: at > 0 && age <= REFRESH_STALE_S,
        detail: if at == 0 {
            "the catalog was never read".into()
        } else {
            format!("catalog read {age} s ago")
        },
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_whose_task_ends_fails_the_check() {
        let l = Listeners::default();
        let coap = l.started("coap", "udp://127.0.0.1:5683");
        let _dtls = l.started("coaps", "udp://127.0.0.1:5684");
        let c = l.check();
        assert!(c.ok, "{c:?}");
        assert!(c.detail.contains("coap on udp://127.0.0.1:5683"), "{c:?}");
        drop(coap);
        let c = l.check();
        assert!(!c.ok);
        assert_eq!(c.detail, "coap on udp://127.0.0.1:5683 stopped");
    }
}
