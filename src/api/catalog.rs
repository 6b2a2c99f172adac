//! `GET /catalog`: the layers a caller may see, with their catalog metadata, lineage and
//! quality summary; `?f=dcat` the same as DCAT 3 in JSON-LD.

use super::problem::Problem;
use super::{AppState, base_url, file_fields, json_response, live_extent, live_fields};
use crate::governance;
use crate::security::Principal;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// `GET /catalog[?f=json|dcat]`.
pub async fn catalog(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let dcat = match q.get("f").map(String::as_str) {
        None | Some("json") => false,
        Some("dcat" | "jsonld") => true,
        Some(other) => {
            return Problem::bad_request(format!(
                "f={other:?}: use json (the default) or dcat (DCAT 3 as JSON-LD)"
            ))
            .into_response();
        }
    };
    // The same rows as DCAT datasets, gathered on the way.
    let mut governance: Vec<governance::meta::DcatLayer> = Vec::new();
    let _ = st.engine.refresh();
    let base = base_url(&st, &headers);
    let layers: Vec<serde_json::Value> = st
        .engine
        .layers()
        .values()
        .filter_map(|l| Some((l, st.security.layer(&principal, &l.name)?)))
        .map(|(l, view)| {
            let meta = l.reader.meta();
            let (gmeta, lineage) = st.security.with_db(|db| {
                (
                    governance::meta::get(db, &l.name).unwrap_or_default(),
                    governance::meta::lineage(db, &l.name, l.version)
                        .ok()
                        .flatten(),
                )
            });
            let q = &meta.quality;
            let quality = json!({
                "read": q.read, "imported": q.imported, "repaired": q.repaired,
                "dropped": q.dropped.values().sum::<u64>(),
            });
            let attribution = gmeta
                .attribution
                .clone()
                .or_else(|| meta.attribution.clone());
            let policy = st.security.layer_meta(&l.name);
            governance.push(governance::meta::DcatLayer {
                name: l.name.clone(),
                meta: gmeta.clone(),
                bounds: Some(meta.bounds),
                classification: policy.classification,
                personal: policy.personal,
                modified: Some(meta.created),
                lineage: lineage.clone(),
                file_attribution: meta.attribution.clone(),
                live: false,
            });
            json!({
                "name": l.name,
                "version": l.version,
                "features": l.reader.feature_count(),
                "bounds": meta.bounds,
                "minzoom": l.reader.minzoom(),
                "maxzoom": l.reader.maxzoom(),
                "geometry_types": meta.quality.geometry_types,
                "classification": policy.classification,
                "fields": file_fields(l, &view),
                "attribution": attribution,
                "source": meta.source,
                "meta": gmeta,
                "lineage": lineage,
                "quality": quality,
                "tilejson": format!("{base}/tiles/{}.json", l.name),
                "tiles": format!("{base}/tiles/{}/{{z}}/{{x}}/{{y}}.mvt", l.name),
            })
        })
        .collect();
    let mut layers = layers;
    // Tile archives: served as they are, described by their own metadata.
    for a in st.engine.archives().values() {
        if st.security.layer(&principal, &a.name).is_none() {
            continue;
        }
        let info = &a.archive.info;
        let gmeta = st
            .security
            .with_db(|db| governance::meta::get(db, &a.name).unwrap_or_default());
        let policy = st.security.layer_meta(&a.name);
        governance.push(governance::meta::DcatLayer {
            name: a.name.clone(),
            meta: gmeta.clone(),
            bounds: Some(info.bounds),
            classification: policy.classification,
            personal: policy.personal,
            modified: None,
            lineage: None,
            file_attribution: info.attribution.clone(),
            live: false,
        });
        layers.push(json!({
            "name": a.name,
            "version": a.version,
            "archive": info.kind,
            "tiles_held": info.tiles,
            "bounds": info.bounds,
            "minzoom": info.minzoom,
            "maxzoom": info.maxzoom,
            "vector_layers": info.vector_layers,
            "classification": policy.classification,
            "attribution": gmeta.attribution.clone().or_else(|| info.attribution.clone()),
            "meta": gmeta,
            "tilejson": format!("{base}/tiles/{}.json", a.name),
            "tiles": format!("{base}/tiles/{}/{{z}}/{{x}}/{{y}}.mvt", a.name),
        }));
    }
    if let Some(hub) = &st.live {
        let _ = hub.refresh_registry();
        for name in hub.layer_names() {
            let (Some(view), Some(info)) =
                (st.security.layer(&principal, &name), hub.layer_info(&name))
            else {
                continue;
            };
            let extent = live_extent(&st, &info, &view);
            let gmeta = st
                .security
                .with_db(|db| governance::meta::get(db, &name).unwrap_or_default());
            let policy = st.security.layer_meta(&name);
            governance.push(governance::meta::DcatLayer {
                name: name.clone(),
                meta: gmeta.clone(),
                bounds: extent.1,
                classification: policy.classification,
                personal: policy.personal,
                modified: None,
                lineage: None,
                file_attribution: None,
                live: true,
            });
            layers.push(json!({
                "meta": gmeta,
                "name": name,
                "live": true,
                "features": extent.0,
                "bounds": extent.1,
                "minzoom": info.minzoom,
                "maxzoom": info.maxzoom,
                "clustered_below": info.clustered_below,
                "geometry_types": {"Point": extent.0},
                "classification": policy.classification,
                "fields": live_fields(&info, &view),
                "tilejson": format!("{base}/tiles/{name}.json"),
                "tiles": format!("{base}/tiles/{name}/{{z}}/{{x}}/{{y}}.mvt"),
            }));
        }
    }
    if dcat {
        let mut r = json_response(&governance::meta::dcat(&base, &governance));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/ld+json"),
        );
        return r;
    }
    json_response(&json!({ "layers": layers }))
}
