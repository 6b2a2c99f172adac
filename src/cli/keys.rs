//! `urbis keys` (API keys of people and programs) and the classification of layers.

use super::audit::audit_cli;
use crate::StoreArg;
use clap::Subcommand;
use urbis::store::db::Db;

#[derive(Subcommand)]
pub enum KeysAction {
    /// Create a key and print it (shown once).
    Create {
        /// Its role: anonymous, viewer, operator, analyst, admin, auditor, or a role of the
        /// server's policy file.
        #[arg(long)]
        role: String,
        /// What or who it is for.
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime, e.g. 90d, 12h [default: no expiry].
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        store: StoreArg,
    },
    /// List the keys (never the keys themselves).
    List {
        #[command(flatten)]
        store: StoreArg,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id.
    Revoke {
        /// The key's id (from `urbis keys list`).
        id: String,
        #[command(flatten)]
        store: StoreArg,
    },
}

pub fn keys(action: KeysAction) -> anyhow::Result<()> {
    use urbis::security::{keys, policy};
    match action {
        KeysAction::Create {
            role,
            name,
            expires,
            store,
        } => {
            if !policy::valid_name(&role) {
                anyhow::bail!("role {role:?}: a role name is 1-64 of a-z 0-9 _ -");
            }
            let lifetime = expires
                .as_deref()
                .map(keys::parse_lifetime)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--expires {e}"))?;
            let db = Db::open(&store.store)?;
            let (k, secret) = keys::create(&db, &role, &name, lifetime)?;
            audit_cli(
                &store.store,
                "keys.create",
                &format!("{} role={}", k.id, k.role),
            )?;
            if policy::Policy::builtin().role(&role).is_none() {
                eprintln!(
                    "note: {role} is not a built-in role; the key works on servers whose --policy file defines it"
                );
            }
            println!("{secret}");
            eprintln!(
                "key {} for role {}{}: shown once, stored only as its SHA-256",
                k.id,
                k.role,
                k.expires
                    .map(|e| format!(", expires at {e} (unix time)"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        KeysAction::List { store, json } => {
            let db = Db::open(&store.store)?;
            let list = keys::list(&db)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            let now = keys::now();
            for k in &list {
                let status = match k.valid_at(now) {
                    Ok(()) => "valid",
                    Err(why) => why,
                };
                println!("{}  {:<10} {:<8} {}", k.id, k.role, status, k.name);
            }
            Ok(())
        }
        KeysAction::Revoke { id, store } => {
            let db = Db::open(&store.store)?;
            match keys::revoke(&db, &id)? {
                Some(k) => {
                    audit_cli(&store.store, "keys.revoke", &k.id)?;
                    println!("revoked {} ({}, role {})", k.id, k.name, k.role);
                    Ok(())
                }
                None => anyhow::bail!("no key {id}; see `urbis keys list`"),
            }
        }
    }
}
