//! Alert changes announced once by the cluster. Every server evaluates the same rules, so a
//! rule over the shared live state (lost devices, a silent layer, open geofence alarms)
//! fires and resolves on each of them within an evaluation interval of the others. Before
//! posting such a change to the webhook, a server records it in the key-value bucket
//! `NAME_alerts` (key `rule.HEX(rule name)`, value `{state, since, at}`) by compare-and-set on
//! the entry's revision: the one whose write lands posts; a server that finds the change
//! recorded already (same state), or a later change recorded (its own is stale), stays quiet.

use super::{Cluster, ClusterError, js_err};
use crate::ops::alerts::{AlertEvent, AlertGate};
use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store as Kv, UpdateErrorKind};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

/// A rule's last change as recorded in the bucket.
#[derive(Debug, Serialize, Deserialize)]
struct Told {
    state: String,
    since: f64,
    at: f64,
}

/// Whether `e` needs no announcing, the rule's last recorded change being `last`: the same
/// change (another server announced it), or a later one (`e` comes late: a server that
/// evaluated before a resolution and a new firing must not announce the old change again).
fn told_already(last: &Told, e: &AlertEvent) -> bool {
    last.state == e.state || last.at > e.at
}

/// The cluster's record of announced alert changes.
pub struct AlertClaims {
    kv: Kv,
}

impl AlertClaims {
    /// Opens the bucket (made at connection).
    pub async fn open(cluster: &Cluster) -> Result<AlertClaims, ClusterError> {
        let name = cluster.bucket("alerts");
        let kv = cluster
            .js()
            .get_key_value(&name)
            .await
            .map_err(|e| js_err(&format!("bucket {name}"), e))?;
        Ok(AlertClaims { kv })
    }

    /// Whether this server records `e` first (and so announces it).
    async fn claim(&self, e: &AlertEvent) -> Result<bool, ClusterError> {
        let key = format!("rule.{}", crate::live::registry::hex(e.rule.as_bytes()));
        let told = Told {
            state: e.state.clone(),
            since: e.since,
            at: e.at,
        };
        let body = bytes::Bytes::from(serde_json::to_vec(&told).unwrap_or_default());
        // A lost race means another server wrote in between: read again and judge again.
        for _ in 0..5 {
            let cur = self
                .kv
                .entry(&key)
                .await
                .map_err(|err| js_err("alert bucket", err))?;
            let written = match cur {
                Some(entry) if entry.operation == Operation::Put => {
                    if let Ok(last) = serde_json::from_slice::<Told>(&entry.value)
                        && told_already(&last, e)
                    {
                        return Ok(false);
                    }
                    match self.kv.update(&key, body.clone(), entry.revision).await {
                        Ok(_) => Ok(true),
                        Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
                        Err(err) => Err(js_err("alert bucket", err)),
                    }
                }
                _ => match self.kv.create(&key, body.clone()).await {
                    Ok(_) => Ok(true),
                    Err(err) if err.kind() == CreateErrorKind::AlreadyExists => Ok(false),
                    Err(err) => Err(js_err("alert bucket", err)),
                },
            };
            if written? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl AlertGate for AlertClaims {
    fn first<'a>(&'a self, e: &'a AlertEvent) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            match self.claim(e).await {
                Ok(first) => first,
                Err(err) => {
                    tracing::warn!(rule = %e.rule, error = %err, "cannot record an alert in the cluster; posting it (the webhook may hear it from another server too)");
                    true
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(state: &str, at: f64) -> AlertEvent {
        AlertEvent {
            rule: "fleet silent".into(),
            state: state.into(),
            severity: "warning".into(),
            layer: Some("fleet".into()),
            value: 1.0,
            summary: String::new(),
            since: at,
            at,
        }
    }

    fn told(state: &str, at: f64) -> Told {
        Told {
            state: state.into(),
            since: at,
            at,
        }
    }

    #[test]
    fn a_change_is_announced_once_and_never_late() {
        // B fires a moment after A announced the firing: told already.
        assert!(told_already(
            &told("firing", 100.0),
            &event("firing", 100.4)
        ));
        // The resolution after it is news.
        assert!(!told_already(
            &told("firing", 100.0),
            &event("resolved", 130.0)
        ));
        // A slow server's firing of the first episode, evaluated before the recorded
        // resolution: late, not announced again.
        assert!(told_already(
            &told("resolved", 130.0),
            &event("firing", 100.9)
        ));
        // A second episode after the resolution is news.
        assert!(!told_already(
            &told("resolved", 130.0),
            &event("firing", 200.0)
        ));
    }
}
