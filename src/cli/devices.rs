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
    use urbis::live::registry::{RegistryFile, parse_interval};
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
            let registry = RegistryFile::new(&store.store);
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
        DevicesAction::List { store, json } => {
            let reg = RegistryFile::new(&store.store).load()?;
            if json {
                let v: Vec<_> = reg
                    .devices
                    .iter()
                    .map(|(id, e)| {
                        serde_json::json!({"id": id, "layer": e.layer, "kind": e.kind,
                                           "interval_s": e.interval_s, "created": e.created})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            if reg.devices.is_empty() {
                println!("no devices (add one with `urbis devices add ID --layer NAME`)");
                return Ok(());
            }
            println!(
                "{:<24} {:<16} {:<8} {:>10}",
                "ID", "LAYER", "KIND", "INTERVAL"
            );
            for (id, e) in &reg.devices {
                println!(
                    "{:<24} {:<16} {:<8} {:>9}s",
                    id,
                    e.layer,
                    e.kind.as_str(),
                    e.interval_s
                );
            }
            if !reg.ingest_keys.is_empty() {
                let names: Vec<&String> = reg.ingest_keys.keys().collect();
                println!("ingest keys: {names:?}");
            }
            Ok(())
        }
        DevicesAction::DtlsOnly { layer, off, store } => {
            RegistryFile::new(&store.store).set_dtls_only(&layer, !off)?;
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
            let e = RegistryFile::new(&store.store).remove_device(&id)?;
            audit_cli(&store.store, "devices.rm", &id)?;
            println!("removed {id} from live layer {}", e.layer);
            Ok(())
        }
        DevicesAction::Key { name, store } => {
            let key = RegistryFile::new(&store.store).add_ingest_key(&name)?;
            audit_cli(&store.store, "devices.key", &name)?;
            println!("ingest key {name} (shown once): {key}");
            println!("  POST /ingest with Authorization: Bearer {key}");
            Ok(())
        }
    }
}
