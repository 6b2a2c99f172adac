//! The admin API (`/admin/...`, the admin right; devices need `devices_write`): publish a
//! layer by uploading its file, set its catalog metadata, roll it back, remove it, register
//! and remove devices. Every change is audited; errors are problem+json naming the field.
//!
//! An upload is streamed to a directory of its own inside the store (never held in memory),
//! refused beyond `max_upload_bytes` (413) or when the body ends before its Content-Length
//! (400), then imported by the same path as `urbis import` (`governance::publish`: the same
//! validation, quality report and atomic publish); the directory is removed whatever
//! happens, so a refused upload leaves the store as it was.

use super::AppState;
use super::access::Client;
use super::problem::Problem;
use crate::governance::publish::{Governance, PublishError, publish};
use crate::import::{ImportOptions, Silent};
use crate::live::registry::{RegistryDb, RegistryError, parse_batch, refuse_static_layers};
use crate::security::Principal;
use crate::store::Store;
use crate::store::db::Classification;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Appends an admin action to the audit log.
fn audit(st: &AppState, p: &Principal, client: &Client, action: &str, target: &str, ok: bool) {
    st.security.audit(&crate::security::audit::Event {
        key_id: p.key_id.as_deref().unwrap_or("-"),
        role: &p.role.name,
        client: &client.0,
        action,
        target,
        outcome: if ok { "ok" } else { "refused" },
    });
}

fn bad_name(name: &str) -> Option<Response> {
    (!crate::store::catalog::valid_layer_name(name)).then(|| {
        Problem::bad_request(format!(
            "{name:?} is not a layer name: use 1-64 of A-Z a-z 0-9 _ -"
        ))
        .field("name")
        .into_response()
    })
}

fn store_of(st: &AppState) -> Result<Store, Box<Response>> {
    Store::open(st.engine.store().dir(), false).map_err(|e| {
        Box::new(
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Store", e.to_string()).into_response(),
        )
    })
}

/// A file name an upload may carry: a plain name with an extension, no directories.
fn upload_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.contains('.')
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// A directory of its own for one upload, removed when dropped.
struct UploadDir(std::path::PathBuf);

impl Drop for UploadDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `POST /admin/layers/{name}?filename=F[&table=&minzoom=&maxzoom=&classification=&KEY=VALUE…]`:
/// the body is the file. Answers 201 with what was published (version, quality report,
/// lineage).
pub async fn upload(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(client): Extension<Client>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(r) = bad_name(&name) {
        return r;
    }
    let refuse = |p: Problem| {
        audit(&st, &principal, &client, "layer.upload", &name, false);
        p.into_response()
    };
    let Some(filename) = q.get("filename").filter(|f| upload_name(f)) else {
        return refuse(
            Problem::bad_request(
                "give ?filename=NAME.EXT (e.g. roads.gpkg): its extension says the format",
            )
            .field("filename"),
        );
    };
    let limit = st.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return refuse(
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Upload too large",
                format!(
                    "{} bytes; this server takes files up to {limit} bytes (--max-upload-mb)",
                    declared.unwrap_or(0)
                ),
            )
            .field("body"),
        );
    }
    let num = |k: &str| -> Result<Option<u8>, Problem> {
        q.get(k)
            .map(|v| {
                v.parse::<u8>()
                    .ok()
                    .filter(|z| *z <= 20)
                    .ok_or_else(|| Problem::bad_request(format!("{k}={v:?}: a zoom 0-20")).field(k))
            })
            .transpose()
    };
    let (minzoom, maxzoom) = match (num("minzoom"), num("maxzoom")) {
        (Ok(a), Ok(b)) => (a.unwrap_or(0), b),
        (Err(p), _) | (_, Err(p)) => return refuse(p),
    };
    let classification = match q.get("classification") {
        None => None,
        Some(c) => match Classification::parse(c) {
            Some(c) => Some(c),
            None => {
                return refuse(
                    Problem::bad_request(format!(
                        "classification={c:?}: use public, internal, restricted or confidential"
                    ))
                    .field("classification"),
                );
            }
        },
    };
    let meta: Vec<(String, String)> = q
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "filename" | "table" | "minzoom" | "maxzoom" | "classification" | "key"
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    // Streamed to disk, counted against the limit.
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = UploadDir(st.engine.store().dir().join(format!(
        ".upload-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )));
    let path = dir.0.join(filename);
    let dir_shown = dir.0.clone();
    let written = async {
        std::fs::create_dir(&dir.0)
            .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Store", e.to_string()))?;
        let mut file = std::fs::File::create(&path)
            .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Store", e.to_string()))?;
        let mut n = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk: Bytes = chunk.map_err(|e| {
                Problem::bad_request(format!(
                    "the upload ended early after {n} bytes{}: {e}",
                    declared.map(|d| format!(" of {d}")).unwrap_or_default()
                ))
                .field("body")
            })?;
            n += chunk.len() as u64;
            if n > limit {
                return Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Upload too large",
                    format!("over {limit} bytes (--max-upload-mb)"),
                )
                .field("body"));
            }
            file.write_all(&chunk).map_err(|e| {
                Problem::new(StatusCode::INSUFFICIENT_STORAGE, "Store", e.to_string())
            })?;
        }
        if declared.is_some_and(|d| d != n) {
            return Err(Problem::bad_request(format!(
                "the upload is truncated: {n} bytes of the {} announced",
                declared.unwrap_or(0)
            ))
            .field("body"));
        }
        if n == 0 {
            return Err(Problem::bad_request("the body is empty: send the file").field("body"));
        }
        Ok(n)
    }
    .await;
    if let Err(p) = written {
        return refuse(p);
    }
    let opts = ImportOptions {
        file: path,
        layer: Some(name.clone()),
        table: q.get("table").cloned(),
        minzoom,
        maxzoom,
        attribution: None,
        feature_timeout: None,
        memory_mb: None,
    };
    let gov = Governance {
        classification,
        meta,
        principal: principal.key_id.clone().unwrap_or_else(|| "-".into()),
    };
    let store = match store_of(&st) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let result = tokio::task::spawn_blocking(move || {
        let r = publish(&store, &opts, &gov, &Silent);
        drop(dir);
        r
    })
    .await;
    st.metrics.import(match &result {
        Ok(Ok(_)) => "published",
        Ok(Err(PublishError::Meta(_) | PublishError::Import(_))) => "refused",
        _ => "failed",
    });
    match result {
        Ok(Ok(outcomes)) => {
            let _ = st.engine.refresh();
            for o in &outcomes {
                audit(
                    &st,
                    &principal,
                    &client,
                    "layer.upload",
                    &format!("{} v{}", o.layer, o.version.version),
                    true,
                );
            }
            let lineage = st.security.with_db(|db| {
                outcomes
                    .iter()
                    .map(|o| {
                        crate::governance::meta::lineage(db, &o.layer, o.version.version)
                            .ok()
                            .flatten()
                    })
                    .collect::<Vec<_>>()
            });
            let v: Vec<_> = outcomes
                .iter()
                .zip(lineage)
                .map(|(o, l)| {
                    json!({"layer": o.layer, "version": o.version, "quality": o.report,
                           "lineage": l})
                })
                .collect();
            (StatusCode::CREATED, Json(json!({ "published": v }))).into_response()
        }
        Ok(Err(PublishError::Meta(e))) => {
            let field = e.field().unwrap_or("meta").to_string();
            refuse(Problem::bad_request(e.to_string()).field(field))
        }
        Ok(Err(PublishError::Import(e))) => refuse(
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Not importable",
                // The upload's own name, not the directory it was put in.
                e.to_string()
                    .replace(&format!("{}/", dir_shown.display()), ""),
            )
            .field("body"),
        ),
        Ok(Err(e)) => refuse(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Publish failed",
            e.to_string(),
        )),
        Err(e) => refuse(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Publish failed",
            e.to_string(),
        )),
    }
}

/// `PUT /admin/layers/{name}/meta` with a JSON object of metadata keys (see
/// `governance::meta::KEYS`; a value may be a string, a number, a boolean or, for keywords,
/// a list). Answers with the metadata now.
pub async fn set_meta(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(client): Extension<Client>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = bad_name(&name) {
        return r;
    }
    let obj: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(o) => o,
        Err(e) => {
            return Problem::bad_request(format!(
                "the body must be a JSON object of metadata keys: {e}"
            ))
            .field("body")
            .into_response();
        }
    };
    let pairs: Vec<(String, String)> = obj
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(","),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            (k, v)
        })
        .collect();
    let r = st
        .security
        .with_db(|db| crate::governance::meta::set(db, &name, &pairs));
    match r {
        Ok(m) => {
            let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
            audit(
                &st,
                &principal,
                &client,
                "layer.meta",
                &format!("{name} {}", keys.join(",")),
                true,
            );
            Json(json!({"name": name, "meta": m})).into_response()
        }
        Err(e) => {
            let field = e.field().map(str::to_string);
            let p = Problem::bad_request(e.to_string());
            match field {
                Some(f) => p.field(f),
                None => p,
            }
            .into_response()
        }
    }
}

/// `POST /admin/layers/{name}/rollback` with `{"version": N}`: serve a kept version again.
pub async fn rollback(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(client): Extension<Client>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = bad_name(&name) {
        return r;
    }
    let version = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("version").and_then(|v| v.as_u64()));
    let Some(version) = version else {
        return Problem::bad_request("give {\"version\": N}, a kept version of the layer")
            .field("version")
            .into_response();
    };
    let store = match store_of(&st) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let n = name.clone();
    match tokio::task::spawn_blocking(move || store.rollback(&n, version)).await {
        Ok(Ok(v)) => {
            // Served from now on: the engine switches before this answer goes out.
            let _ = st.engine.refresh();
            audit(
                &st,
                &principal,
                &client,
                "layer.rollback",
                &format!("{name} v{version}"),
                true,
            );
            Json(json!({"name": name, "version": v})).into_response()
        }
        Ok(Err(e)) => {
            audit(
                &st,
                &principal,
                &client,
                "layer.rollback",
                &format!("{name} v{version}"),
                false,
            );
            let status = match e {
                crate::store::StoreError::UnknownVersion { .. } => StatusCode::NOT_FOUND,
                crate::store::StoreError::UnknownLayer(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::CONFLICT,
            };
            Problem::new(status, "Cannot roll back", e.to_string())
                .field("version")
                .into_response()
        }
        Err(e) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Rollback", e.to_string())
            .into_response(),
    }
}

/// `DELETE /admin/layers/{name}`: remove a layer and all its versions.
pub async fn remove_layer(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(client): Extension<Client>,
    Path(name): Path<String>,
) -> Response {
    if let Some(r) = bad_name(&name) {
        return r;
    }
    let store = match store_of(&st) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let n = name.clone();
    match tokio::task::spawn_blocking(move || store.remove(&n)).await {
        Ok(Ok(entry)) => {
            let _ = st.engine.refresh();
            audit(&st, &principal, &client, "layer.remove", &name, true);
            Json(json!({"removed": name, "versions": entry.versions.len()})).into_response()
        }
        Ok(Err(e)) => Problem::new(StatusCode::NOT_FOUND, "Cannot remove", e.to_string())
            .field("name")
            .into_response(),
        Err(e) => {
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Remove", e.to_string()).into_response()
        }
    }
}

/// Has the running hub read a registry change before the answer goes out.
async fn refresh_registry(st: &AppState) {
    if let Some(h) = &st.live {
        let h = Arc::clone(h);
        let _ = tokio::task::spawn_blocking(move || h.refresh_registry()).await;
    }
}

fn registry_problem(e: RegistryError) -> Response {
    match e {
        // The rows themselves too, for programs.
        RegistryError::Rows(rows) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Bad devices",
            format!("{} bad rows, nothing was registered", rows.len()),
        )
        .field("devices")
        .member("rows", json!(rows))
        .into_response(),
        RegistryError::Refused(m) => Problem::bad_request(m).into_response(),
        other => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Registry",
            other.to_string(),
        )
        .into_response(),
    }
}

/// `POST /admin/devices`: a JSON array of devices (`id`, `layer`, `kind`, `interval`,
/// `secret_sha256`, `dtls`), registered all or nothing; answers 201 with the generated
/// secrets (shown once).
pub async fn add_devices(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(client): Extension<Client>,
    body: Bytes,
) -> Response {
    let dir = st.engine.store().dir().to_path_buf();
    let statics: Vec<String> = st.engine.layers().keys().cloned().collect();
    let result = tokio::task::spawn_blocking(move || {
        let batch = parse_batch(&body, true)?;
        refuse_static_layers(&batch, |l| statics.iter().any(|s| s == l))?;
        let issued = RegistryDb::open(&dir)?.import(&batch)?;
        Ok::<_, RegistryError>((batch.len(), issued))
    })
    .await;
    match result {
        Ok(Ok((n, issued))) => {
            audit(
                &st,
                &principal,
                &client,
                "devices.import",
                &format!("{n} devices"),
                true,
            );
            refresh_registry(&st).await;
            (
                StatusCode::CREATED,
                Json(json!({"registered": n, "secrets": issued})),
            )
                .into_response()
        }
        Ok(Err(e)) => {
            audit(&st, &principal, &client, "devices.import", "-", false);
            registry_problem(e)
        }
        Err(e) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Registry", e.to_string())
            .into_response(),
    }
}

/// `DELETE /admin/devices/{id}`: remove a device (its history stays until retention).
pub async fn remove_device(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(client): Extension<Client>,
    Path(id): Path<String>,
) -> Response {
    let dir = st.engine.store().dir().to_path_buf();
    let i = id.clone();
    let result =
        tokio::task::spawn_blocking(move || RegistryDb::open(&dir)?.remove_device(&i)).await;
    match result {
        Ok(Ok(e)) => {
            audit(&st, &principal, &client, "devices.rm", &id, true);
            refresh_registry(&st).await;
            Json(json!({"removed": id, "layer": e.layer})).into_response()
        }
        Ok(Err(RegistryError::Refused(m))) => Problem::new(StatusCode::NOT_FOUND, "No device", m)
            .field("id")
            .into_response(),
        Ok(Err(e)) => registry_problem(e),
        Err(e) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Registry", e.to_string())
            .into_response(),
    }
}

/// `POST /admin/retention/run`: applies every retention now (see `governance::retention`);
/// answers with what was deleted.
pub async fn retention_run(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(client): Extension<Client>,
) -> Response {
    let store = match store_of(&st) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let now = crate::security::keys::now();
    let audit_one = |action: &str, target: &str| {
        audit(&st, &principal, &client, action, target, true);
    };
    match crate::governance::retention::run(st.live.as_deref(), &store, now, &audit_one).await {
        Ok(summary) => {
            let _ = st.engine.refresh();
            audit(&st, &principal, &client, "retention.run", "-", true);
            Json(summary).into_response()
        }
        Err(e) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Retention failed",
            e.to_string(),
        )
        .into_response(),
    }
}
