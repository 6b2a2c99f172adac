//! Security: who is asking, and what they may see and do.
//!
//! A request carries an API key (`Authorization: Bearer uk_…` or `?key=uk_…`, since map
//! clients and `EventSource` cannot always set headers) or nothing. [`Security::authenticate`]
//! turns it into a [`Principal`]: the key's role from the [`policy::Policy`], or the
//! `anonymous` role. The API declares the right each route needs and refuses the rest (default
//! deny); layers are decided one by one ([`Principal::layer`]): visible when the role's
//! clearance reaches the layer's classification or a rule allows it, never when a rule denies
//! it, with an attribute allow-list applied inside tile generation (so the cache keys carry
//! it and a tile made for one role is never served to another).
//!
//! Keys live in the store's database ([`keys`]), the classifications of layers too
//! (`store::db`); a running server re-reads them within a second of a change by another
//! process ([`Security::refresh`]), and the policy file when it changes. Device credentials
//! are not here: they go through the live room's one admission path. Depends on `store` (the
//! database, the layer-name rule) and `live` (the one secret hash of the house).

pub mod audit;
pub mod fuzzing;
pub mod keys;
pub mod limits;
pub mod policy;

use crate::store::db::{Classification, Db, DbError, LayerPolicyMeta};
use keys::ApiKey;
use policy::{Access, Policy, Right, Role};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key's id (`None`: anonymous). Never the key.
    pub key_id: Option<String>,
    /// The role.
    pub role: Arc<Role>,
}

/// What a principal may see of one layer: the tile room's view (the properties it keeps).
pub type LayerAccess = crate::tile::LayerView;

impl Principal {
    /// True if the role has `right`.
    pub fn has(&self, right: Right) -> bool {
        self.role.rights.has(right)
    }

    /// True without a key.
    pub fn is_anonymous(&self) -> bool {
        self.key_id.is_none()
    }

    /// What this principal may see of a layer of `meta`, or `None` if it may not see it.
    pub fn layer(&self, name: &str, meta: LayerPolicyMeta) -> Option<LayerAccess> {
        if !self.has(Right::Tiles) {
            return None;
        }
        let rule = self.role.layers.get(name);
        let visible = match rule.and_then(|r| r.access) {
            Some(a) => a == Access::Allow,
            None => self.role.clearance >= meta.classification,
        };
        if !visible {
            return None;
        }
        // Personal positions are coarse without exact-position rights; a rule may set its
        // own precision (also on layers that are not personal).
        let personal = (meta.personal && !self.has(Right::ExactPositions))
            .then_some(self.role.personal_precision_m);
        Some(LayerAccess {
            attributes: rule.and_then(|r| r.attributes.clone()),
            precision_m: rule.and_then(|r| r.precision_m).or(personal),
            area: rule.and_then(|r| r.area.clone()),
        })
    }
}

/// Why a request's key was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyError {
    /// Not an API key at all.
    #[error("not an API key: keys start with uk_ and have 64 hex digits")]
    Malformed,
    /// No such key.
    #[error("unknown API key")]
    Unknown,
    /// Revoked or expired.
    #[error("this API key is {0}")]
    NotValid(&'static str),
    /// The key's role is not in the policy.
    #[error("the role {0:?} of this key is not in the policy")]
    UnknownRole(String),
}

/// Checks that `key` looks like an API key (`uk_` and 64 hex digits) before any look-up.
pub fn check_format(key: &str) -> Result<(), KeyError> {
    let hex = key.strip_prefix(keys::PREFIX).ok_or(KeyError::Malformed)?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(KeyError::Malformed);
    }
    Ok(())
}

/// The security state of a running server.
pub struct Security {
    /// (who, what, minute) already logged this minute: repeated denials and reads of one
    /// restricted layer by one key make one entry a minute.
    logged: Mutex<(i64, std::collections::HashSet<(String, String)>)>,
    db: Mutex<Db>,
    data_version: Mutex<i64>,
    keys: RwLock<Arc<HashMap<String, ApiKey>>>,
    layers: RwLock<Arc<HashMap<String, LayerPolicyMeta>>>,
    policy: RwLock<Arc<Policy>>,
    policy_file: Option<PathBuf>,
    policy_stamp: Mutex<Option<SystemTime>>,
}

fn read_policy(path: &Path) -> Result<Policy, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Policy::parse(&text, &path.display().to_string())
}

impl Security {
    /// Opens the store's database and reads the keys, the classifications and the policy
    /// file (if any; a bad one is an error at start).
    pub fn open(store_dir: &Path, policy_file: Option<PathBuf>) -> anyhow::Result<Security> {
        let db = Db::open(store_dir)?;
        let policy = match &policy_file {
            Some(p) => read_policy(p).map_err(anyhow::Error::msg)?,
            None => Policy::builtin(),
        };
        let stamp = policy_file
            .as_ref()
            .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        let s = Security {
            logged: Mutex::default(),
            data_version: Mutex::new(db.data_version()?),
            db: Mutex::new(db),
            keys: RwLock::default(),
            layers: RwLock::default(),
            policy: RwLock::new(Arc::new(policy)),
            policy_file,
            policy_stamp: Mutex::new(stamp),
        };
        s.reload()?;
        Ok(s)
    }

    fn reload(&self) -> Result<(), DbError> {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let keys = keys::list(&db)?
            .into_iter()
            .map(|k| (k.sha256.clone(), k))
            .collect();
        let layers = db.all_layer_meta()?.into_iter().collect();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        *self.layers.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(layers);
        Ok(())
    }

    /// Picks up changes: keys and classifications changed by another process, and a changed
    /// policy file (kept as it was, with a warning, if the new one is bad). Called every
    /// second by the server.
    pub fn refresh(&self) {
        let changed = {
            let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
            let v = db.data_version().unwrap_or(0);
            let mut last = self.data_version.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *last, v) != v
        };
        if changed && let Err(e) = self.reload() {
            tracing::warn!(error = %e, "cannot re-read the keys and classifications");
        }
        if let Some(path) = &self.policy_file {
            let stamp = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let mut last = self.policy_stamp.lock().unwrap_or_else(|e| e.into_inner());
            if *last != stamp {
                *last = stamp;
                match read_policy(path) {
                    Ok(p) => {
                        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
                        tracing::info!(file = %path.display(), "policy reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "policy file not reloaded; the last good one stays")
                    }
                }
            }
        }
    }

    /// The policy now.
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The principal of a request's key (`None`: anonymous).
    pub fn authenticate(&self, key: Option<&str>) -> Result<Principal, KeyError> {
        let policy = self.policy();
        let Some(key) = key else {
            let role = policy
                .role("anonymous")
                .cloned()
                .ok_or_else(|| KeyError::UnknownRole("anonymous".into()))?;
            return Ok(Principal { key_id: None, role });
        };
        check_format(key)?;
        let hash = crate::live::registry::hash_secret(key);
        let all = Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()));
        let k = all.get(&hash).ok_or(KeyError::Unknown)?;
        k.valid_at(keys::now()).map_err(KeyError::NotValid)?;
        let role = policy
            .role(&k.role)
            .cloned()
            .ok_or_else(|| KeyError::UnknownRole(k.role.clone()))?;
        Ok(Principal {
            key_id: Some(k.id.clone()),
            role,
        })
    }

    /// Appends an event to the audit log (a failure to is logged, never fatal to the request).
    pub fn audit(&self, e: &audit::Event<'_>) {
        let mut db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(err) = audit::append(&mut db, e) {
            tracing::error!(error = %err, action = e.action, "cannot append to the audit log");
        }
    }

    /// True the first time (`who`, `what`) is seen in the current minute (cheap, in memory:
    /// callers ask before they spend a thread on writing the entry).
    pub fn first_this_minute(&self, who: &str, what: &str) -> bool {
        let minute = keys::now() as i64 / 60;
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.0 != minute {
            *logged = (minute, Default::default());
        }
        // Look up before allocating: the common case is "seen already".
        if logged.1.contains(&(who.to_string(), what.to_string())) {
            return false;
        }
        logged.1.insert((who.to_string(), what.to_string()))
    }

    /// True if a read of layer `name` (of `classification`) by `p` is to be logged now: the
    /// layer is restricted or confidential and this key has not read it this minute.
    pub fn read_to_log(&self, p: &Principal, name: &str, classification: Classification) -> bool {
        classification >= Classification::Restricted
            && self.first_this_minute(p.key_id.as_deref().unwrap_or("-"), name)
    }

    /// Logs a read of layer `name` by `p` (asked [`Security::read_to_log`] first).
    pub fn audit_read(&self, p: &Principal, client: &str, name: &str) {
        let who = p.key_id.as_deref().unwrap_or("-");
        self.audit(&audit::Event {
            key_id: who,
            role: &p.role.name,
            client,
            action: "layer.read",
            target: name,
            outcome: "ok",
        });
    }

    /// The audit entries from `since`, at most `limit`.
    pub fn audit_entries(&self, since: i64, limit: usize) -> Result<Vec<audit::Entry>, DbError> {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        audit::entries(&db, since, limit)
    }

    /// The principal `p` is now: its key still valid and its role as the policy says now;
    /// `None` when the key was revoked or expired (or its role left the policy). For callers
    /// that hold a principal for long (open streams).
    pub fn recheck(&self, p: &Principal) -> Option<Principal> {
        let policy = self.policy();
        let Some(id) = &p.key_id else {
            let role = policy.role("anonymous")?.clone();
            return Some(Principal { key_id: None, role });
        };
        let keys = Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()));
        let k = keys.values().find(|k| &k.id == id)?;
        k.valid_at(keys::now()).ok()?;
        let role = policy.role(&k.role)?.clone();
        Some(Principal {
            key_id: Some(id.clone()),
            role,
        })
    }

    /// The classification of a layer (internal when nobody set one).
    pub fn layer_meta(&self, name: &str) -> LayerPolicyMeta {
        self.layers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
            .unwrap_or_default()
    }

    /// Runs `f` with the store's database (the connection this state holds).
    pub fn with_db<T>(&self, f: impl FnOnce(&Db) -> T) -> T {
        f(&self.db.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// What `p` may see of layer `name`, or `None`.
    pub fn layer(&self, p: &Principal, name: &str) -> Option<LayerAccess> {
        p.layer(name, self.layer_meta(name))
    }
}
