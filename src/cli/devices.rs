//! `urbis devices`: register live devices and ingest keys, list and remove them.

use super::audit::audit_cli;
use crate::StoreArg;
use clap::Subcommand;
use urbis::store::Store;
use urbis::store::db::{Classification, Db};

#[derive(Subcommand)]
pub enum DevicesAction {
    /// Register a device and print its secret (shown once).
    Add {
        /// Device id (1-64 of A-Z a-z 0-9 . _ : -), e.g. an IMEI or asset tag.
        id: String,
        #[command(flatten)]
        store: StoreArg,
        /// Live layer the device appears in, e.g. vehicles or manholes.
        #[arg(long)]
        layer: String,
        /// Kind of device.
        #[arg(long, value_enum, default_value = "tracker")]
        kind: urbis::live::registry::DeviceKind,
        /// Expected time between reports (30s, 15m, 6h, 1d): a device silent longer is
        /// sleeping, then overdue (after its interval), then lost (after three).
        #[arg(long, default_value = "15m")]
        interval: String,
        /// Set who may see the live layer (public, internal, restricted, confidential); a live
        /// layer nobody classified is internal.
        #[arg(long, value_enum)]
        classification: Option<Classification>,
        /// The layer's positions are of people or personal vehicles: roles without the
        /// exact_positions right see them snapped to a grid (100 m by default).
        #[arg(long)]
        personal: bool,
        /// The device reports over CoAP with DTLS (PSK: identity = its id, key = its
        /// secret) and is refused over plain CoAP. Its secret is then kept in the registry
        /// (the handshake needs it), which is written readable by its owner only.
        #[arg(long)]
        dtls: bool,
    },
    /// Register many devices at once from a CSV or JSON file, in one transaction: all or
    /// nothing. CSV has a header line naming its columns: id and layer (required), kind
    /// (tracker, meter, sensor, asset; default tracker), interval (default 15m),
    /// secret_sha256 (the SHA-256 of a secret the device already has, 64 hex digits), dtls
    /// (true: reports over DTLS). JSON is an array of objects with the same keys. Every bad row
    /// is named by its line; then nothing is registered.
    Import {
        /// The file (.csv, or .json).
        file: std::path::PathBuf,
        #[command(flatten)]
        store: StoreArg,
        /// Write the secrets generated for devices without secret_sha256 to this new file
        /// (CSV id,secret; readable by its owner only). Needed when any row has no
        /// secret_sha256.
        #[arg(long)]
        secrets_out: Option<std::path::PathBuf>,
    },
    /// List the registered devices.
    List {
        #[command(flatten)]
        store: StoreArg,
        /// Print the list as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Make a live layer take reports over DTLS only: its devices' plain CoAP reports get
    /// 4.01 (register them with --dtls). `--off` allows plain CoAP again.
    DtlsOnly {
        /// The live layer.
        layer: String,
        /// Allow plain CoAP again.
        #[arg(long)]
        off: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Remove a device (its history stays until retention removes it).
    Rm {
        /// Device id.
        id: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Create an ingest API key for a gateway or carrier platform and print it (shown once).
    Key {
        /// A name for the key, e.g. the platform.
        name: String,
        #[command(flatten)]
        store: StoreArg,
    },
}

pub fn devices(action: DevicesAction) -> anyhow::Result<()> {
    use urbis::live::registry::{RegistryDb, parse_interval};
    match action {
        DevicesAction::Add {
            id,
            store,
            layer,
            kind,
            interval,
            classification,
            personal,
            dtls,
        } => {
            let interval_s = parse_interval(&interval).map_err(anyhow::Error::msg)?;
            let st = Store::open(&store.store, true)?;
            if st.catalog()?.layers.contains_key(&layer) {
                anyhow::bail!(
                    "{layer} is an imported (static) layer; give live devices a layer of their own"
                );
            }
            if classification.is_some() || personal {
                let db = Db::open(&store.store)?;
                let mut meta = db.layer_meta(&layer)?.unwrap_or_default();
                meta.classification = classification.unwrap_or(meta.classification);
                meta.personal |= personal;
                db.set_layer_meta(&layer, meta)?;
            }
            let mut registry = RegistryDb::open(&store.store)?;
            let secret = if dtls {
                registry.add_dtls_device(&id, &layer, kind, interval_s)?
            } else {
                registry.add_device(&id, &layer, kind, interval_s)?
            };
            audit_cli(
                &store.store,
                "devices.add",
                &format!("{id} layer={layer}{}", if dtls { " dtls" } else { "" }),
            )?;
            println!(
                "registered {id} in live layer {layer} ({}, every {interval})",
                kind.as_str()
            );
            println!("secret (shown once, keep it on the device): {secret}");
            if dtls {
                println!(
                    "  CoAP over DTLS: coaps://HOST:5684/r/{id} with PSK identity {id} and key {secret}"
                );
            } else {
                println!("  CoAP: coap://HOST:5683/r/{id}?k={secret}");
            }
            println!("  HTTP: POST /ingest with Authorization: Bearer {secret}");
            Ok(())
        }
        DevicesAction::Import {
            file,
            store,
            secrets_out,
        } => import(&file, &store.store, secrets_out.as_deref()),
        DevicesAction::List { store, json } => {
            let reg = RegistryDb::open(&store.store)?;
            let n = reg.count()?;
            if json {
                let mut v = Vec::with_capacity(n as usize);
                reg.for_each(|id, e| {
                    v.push(
                        serde_json::json!({"id": id, "layer": e.layer, "kind": e.kind,
                                              "interval_s": e.interval_s, "created": e.created,
                                              "dtls": e.dtls_psk.is_some()}),
                    )
                })?;
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            if n == 0 {
                println!("no devices (add one with `urbis devices add ID --layer NAME`)");
            } else {
                println!(
                    "{:<24} {:<16} {:<8} {:>10}",
                    "ID", "LAYER", "KIND", "INTERVAL"
                );
                reg.for_each(|id, e| {
                    println!(
                        "{:<24} {:<16} {:<8} {:>9}s",
                        id,
                        e.layer,
                        e.kind.as_str(),
                        e.interval_s
                    )
                })?;
            }
            let keys = reg.ingest_key_names()?;
            if !keys.is_empty() {
                println!("ingest keys: {keys:?}");
            }
            Ok(())
        }
        DevicesAction::DtlsOnly { layer, off, store } => {
            RegistryDb::open(&store.store)?.set_dtls_only(&layer, !off)?;
            audit_cli(
                &store.store,
                "devices.dtls_only",
                &format!("{layer} {}", if off { "off" } else { "on" }),
            )?;
            println!(
                "{layer}: {}",
                if off {
                    "plain CoAP allowed again"
                } else {
                    "reports over DTLS only"
                }
            );
            Ok(())
        }
        DevicesAction::Rm { id, store } => {
            let e = RegistryDb::open(&store.store)?.remove_device(&id)?;
            audit_cli(&store.store, "devices.rm", &id)?;
            println!("removed {id} from live layer {}", e.layer);
            Ok(())
        }
        DevicesAction::Key { name, store } => {
            let key = RegistryDb::open(&store.store)?.add_ingest_key(&name)?;
            audit_cli(&store.store, "devices.key", &name)?;
            println!("ingest key {name} (shown once): {key}");
            println!("  POST /ingest with Authorization: Bearer {key}");
            Ok(())
        }
    }
}

/// `urbis devices import`: parse, check against the store's static layers, register in one
/// transaction, write the generated secrets.
fn import(
    file: &std::path::Path,
    store_dir: &std::path::Path,
    secrets_out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use std::io::Write;
    use urbis::live::registry::{RegistryDb, parse_batch, refuse_static_layers};
    let started = std::time::Instant::now();
    let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let json = file
        .extension()
        .is_some_and(|x| x.eq_ignore_ascii_case("json"))
        || bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let with_file =
        |e: urbis::live::registry::RegistryError| anyhow::anyhow!("{}: {e}", file.display());
    let batch = parse_batch(&bytes, json).map_err(with_file)?;
    let st = Store::open(store_dir, true)?;
    let statics = st.catalog()?.layers;
    refuse_static_layers(&batch, |l| statics.contains_key(l)).map_err(with_file)?;
    let need_secrets = batch.iter().filter(|d| d.secret_sha256.is_none()).count();
    // The secrets file exists before anything is registered: generated secrets are never
    // registered without a place to go.
    let mut out = match (need_secrets, secrets_out) {
        (0, _) => None,
        (n, None) => anyhow::bail!(
            "{}: {n} devices have no secret_sha256, so their secrets are generated: give --secrets-out FILE to receive them",
            file.display()
        ),
        (_, Some(p)) => {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
                .map_err(|e| {
                    anyhow::anyhow!("{}: {e} (the secrets file must not exist yet)", p.display())
                })?;
            Some((p, std::io::BufWriter::new(f)))
        }
    };
    let mut reg = RegistryDb::open(store_dir)?;
    let issued = match reg.import(&batch) {
        Ok(v) => v,
        Err(e) => {
            if let Some((p, _)) = &out {
                let _ = std::fs::remove_file(p);
            }
            return Err(with_file(e));
        }
    };
    if let Some((p, w)) = &mut out {
        let write = |w: &mut std::io::BufWriter<std::fs::File>| -> std::io::Result<()> {
            writeln!(w, "id,secret")?;
            for i in &issued {
                writeln!(w, "{},{}", i.id, i.secret)?;
            }
            w.flush()?;
            w.get_ref().sync_all()
        };
        write(w).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}; the devices ARE registered: remove and import them again to get new secrets",
                p.display()
            )
        })?;
    }
    let mut layers: Vec<&str> = batch.iter().map(|d| d.layer.as_str()).collect();
    layers.sort_unstable();
    layers.dedup();
    audit_cli(
        store_dir,
        "devices.import",
        &format!(
            "{} devices from {} layers={}",
            batch.len(),
            file.display(),
            layers.join(",")
        ),
    )?;
    println!(
        "registered {} devices in {} live layer{} ({}) in {:.1}s",
        batch.len(),
        layers.len(),
        if layers.len() == 1 { "" } else { "s" },
        layers.join(", "),
        started.elapsed().as_secs_f64()
    );
    if let Some((p, _)) = out {
        println!(
            "{} generated secrets written to {} (readable by you only; give each device its own)",
            issued.len(),
            p.display()
        );
    }
    Ok(())
}
