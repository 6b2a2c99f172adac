//! Readiness: `/ready` names each check and says which failed. A load balancer takes a server
//! out of rotation on 503; an operator reads why.

use crate::engine::Engine;
use crate::live::Hub;
use serde::Serialize;

/// A catalog not read for this long means the watcher is stuck (it runs every second).
pub const REFRESH_STALE_S: u64 = 10;

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Its name: `store`, `log`, `catalog_refresh`.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was found, for a person.
    pub detail: String,
}

/// Every check, now.
pub fn checks(engine: &Engine, hub: Option<&Hub>) -> Vec<Check> {
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
            detail: log.map_or_else(|e| e, |()| format!("{} writable", live.display())),
        });
    }
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
