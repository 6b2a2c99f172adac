//! Retention: how long the city keeps what it holds. Each layer may have a retention in its
//! catalog metadata (`retention`, e.g. `365d`): for a live layer it is how long device history
//! (positions, geofence events, state changes) is kept (default: the server's
//! `--retention-days`, 90 days); for a layer file, how long earlier versions are kept (a layer
//! without one keeps its versions by count only, `--keep-versions`). [`run`] applies them all
//! and records every deletion in the audit log; `urbis serve` runs it once a day and
//! `urbis retention run` or `POST /admin/retention/run` on demand.

use super::meta;
use crate::live::{Hub, LiveError, RetentionPlan};
use crate::store::Store;
use crate::store::db::Db;
use serde::Serialize;
use std::collections::BTreeMap;

/// What a run deleted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Device history, by live layer, with the cutoff applied (ISO 8601).
    pub live: BTreeMap<String, serde_json::Value>,
    /// Log segments deleted whole and rewritten.
    pub segments_deleted: u64,
    /// Log segments rewritten without their expired records.
    pub segments_rewritten: u64,
    /// Earlier layer versions deleted, by layer.
    pub versions: BTreeMap<String, Vec<u64>>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The live log.
    #[error(transparent)]
    Live(#[from] LiveError),
    /// The database.
    #[error(transparent)]
    Db(#[from] crate::store::db::DbError),
    /// The store.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The longest device-history retention of the store's live layers, at least `default_s`:
/// how long the server keeps whole log segments.
pub fn longest(store_dir: &std::path::Path, default_s: u64) -> u64 {
    let Ok(db) = Db::open(store_dir) else {
        return u64::MAX; // unknown: keep everything rather than lose history
    };
    meta::all(&db)
        .unwrap_or_default()
        .iter()
        .filter_map(|(_, m)| m.retention_s)
        .fold(default_s, u64::max)
}

/// Applies every retention at time `now` (seconds since 1970); `audit` records each
/// deletion (action, target).
pub async fn run(
    hub: Option<&Hub>,
    store: &Store,
    now: u64,
    audit: &(dyn Fn(&str, &str) + Sync),
) -> Result<Summary, RetentionError> {
    let metas = meta::all(&Db::open(store.dir())?)?;
    let mut summary = Summary::default();
    if let Some(hub) = hub {
        let default_s = hub.config().retention_s;
        let mut plan = RetentionPlan {
            cutoffs: BTreeMap::new(),
            default_cutoff: now.saturating_sub(default_s) as f64,
        };
        let mut cutoff_of = BTreeMap::new();
        for layer in hub.layer_names() {
            let s = metas
                .iter()
                .find(|(n, _)| *n == layer)
                .and_then(|(_, m)| m.retention_s)
                .unwrap_or(default_s);
            let c = now.saturating_sub(s);
            plan.cutoffs.insert(layer.clone(), c as f64);
            cutoff_of.insert(layer, c);
        }
        hub.keep_segments_for(
            plan.cutoffs
                .values()
                .map(|c| now.saturating_sub(*c as u64))
                .max()
                .unwrap_or(default_s),
        );
        let report = hub.run_retention(plan).await?;
        summary.segments_deleted = report.segments_deleted;
        summary.segments_rewritten = report.segments_rewritten;
        for (layer, d) in &report.layers {
            let cutoff = cutoff_of
                .get(layer)
                .copied()
                .unwrap_or(now.saturating_sub(default_s));
            let before = super::iso8601(cutoff as i64);
            audit(
                "retention.delete",
                &format!(
                    "{layer} history before {before}: {} fixes, {} geofence events, {} state changes",
                    d.fixes, d.events, d.states
                ),
            );
            summary.live.insert(
                layer.clone(),
                serde_json::json!({"before": before, "fixes": d.fixes, "events": d.events,
                                   "states": d.states}),
            );
        }
    }
    for (name, m) in &metas {
        let Some(s) = m.retention_s else { continue };
        let gone = store.expire_versions(name, now.saturating_sub(s))?;
        if !gone.is_empty() {
            let v: Vec<u64> = gone.iter().map(|v| v.version).collect();
            audit(
                "retention.delete",
                &format!(
                    "{name} versions {}",
                    v.iter()
                        .map(|x| format!("v{x}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            );
            summary.versions.insert(name.clone(), v);
        }
    }
    Ok(summary)
}
