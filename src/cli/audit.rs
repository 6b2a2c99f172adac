//! `urbis audit`: check and show the store's audit log; and the entry every command that
//! changes something appends to it.

use crate::StoreArg;
use clap::Subcommand;
use urbis::store::db::Db;

#[derive(Subcommand)]
pub enum AuditAction {
    /// Check the hash chain; exit 1 naming the first broken entry.
    Verify {
        #[command(flatten)]
        store: StoreArg,
    },
    /// Print the entries (oldest first).
    Show {
        #[command(flatten)]
        store: StoreArg,
        /// Only entries of the last SECONDS (default: all).
        #[arg(long)]
        since: Option<u64>,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
}

/// Appends an action of the command line to the store's audit log.
pub fn audit_cli(store: &std::path::Path, action: &str, target: &str) -> anyhow::Result<()> {
    let user = std::env::var("USER").unwrap_or_else(|_| "-".into());
    let mut db = Db::open(store)?;
    urbis::security::audit::append(
        &mut db,
        &urbis::security::audit::Event {
            key_id: "-",
            role: "cli",
            client: &format!("cli:{user}"),
            action,
            target,
            outcome: "ok",
        },
    )?;
    Ok(())
}

pub fn audit(action: AuditAction) -> anyhow::Result<()> {
    use urbis::security::audit;
    match action {
        AuditAction::Verify { store } => {
            let db = Db::open(&store.store)?;
            match audit::verify(&db)? {
                Ok(n) => {
                    println!("audit log intact: {n} entries");
                    Ok(())
                }
                Err((seq, why)) => {
                    eprintln!("audit log broken at entry {seq}: {why}");
                    std::process::exit(1);
                }
            }
        }
        AuditAction::Show { store, since, json } => {
            let db = Db::open(&store.store)?;
            let from = since.map_or(i64::MIN, |s| urbis::security::keys::now() as i64 - s as i64);
            for e in audit::entries(&db, from, usize::MAX >> 1)? {
                if json {
                    println!("{}", serde_json::to_string(&e)?);
                } else {
                    println!(
                        "{:>6} {} {:<10} {:<9} {:<15} {:<16} {} {}",
                        e.seq, e.t, e.key_id, e.role, e.client, e.action, e.target, e.outcome
                    );
                }
            }
            Ok(())
        }
    }
}
