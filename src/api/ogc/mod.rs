//! The OGC API under `/ogc`, so that QGIS, GDAL and ArcGIS add our layers by URL: OGC API
//! Features Part 1 core with GeoJSON (landing page, conformance, collections, items with
//! `bbox`, `limit`, `offset`, `datetime` and `next` links, single items), OGC API Tiles core
//! for the WebMercatorQuad tile matrix set ([`tiles`]: the same tiles as `/tiles/`), and the
//! OpenAPI 3.0 document of both at `/ogc/api` ([`openapi`]).
//!
//! A collection is a layer file the caller may see (live layers are served by `/devices` and
//! live tiles, not here). Items are the full-resolution features, in the layer's Hilbert order
//! (stable for a version, so paging is consistent), as the caller's view allows: only
//! features that meet its area, only the attributes it keeps, positions at its precision;
//! reading them needs the `features` right, as does a whole-layer download (`f=fgb`,
//! `f=gpkg`, `f=geojson`, written through the export room). A feature's id is its number in
//! the import, from 1.

pub mod items;
pub mod openapi;
pub mod tiles;

pub use items::{item, items};

use super::problem::Problem;
use super::{AppState, base_url, engine_problem};
use crate::engine::{EngineError, ServedLayer};
use crate::security::Principal;
use crate::tile::LayerView;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

/// The coordinate reference system of every collection: WGS 84 longitude, latitude.
pub const CRS84: &str = "http://www.opengis.net/def/crs/OGC/1.3/CRS84";

/// The conformance classes this API implements.
pub const CONFORMANCE: &[&str] = &[
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/json",
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-common-2/1.0/conf/collections",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tilesets-list",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geodata-tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/tms/2.0/conf/tilematrixset",
    "http://www.opengis.net/spec/tms/2.0/conf/json-tilematrixset",
];

/// Items per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit`; a larger one is served as this many (the standard's advice).
pub const MAX_LIMIT: usize = 10_000;

const GEOJSON: &str = "application/geo+json";
const JSON: &str = "application/json";

fn link(href: String, rel: &str, kind: &str, title: &str) -> Value {
    json!({ "href": href, "rel": rel, "type": kind, "title": title })
}

/// A JSON answer with its media type.
fn answer(v: &Value, kind: &'static str) -> Response {
    let mut r = super::json_response(v);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    r
}

/// Refuses query parameters the endpoint does not know (the standard's recommendation: a
/// misspelt `bbox` must not return everything).
fn only(q: &[(String, String)], known: &[&str]) -> Result<(), Problem> {
    for (k, _) in q {
        if k != "key" && !known.contains(&k.as_str()) {
            return Err(Problem::bad_request(format!(
                "unknown query parameter {k:?}; this endpoint takes {}",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

fn param<'q>(q: &'q [(String, String)], name: &str) -> Option<&'q str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `?f=` of a metadata endpoint: JSON only.
fn json_only(q: &[(String, String)]) -> Result<(), Problem> {
    match param(q, "f") {
        None | Some("json") => Ok(()),
        Some(other) => Err(Problem::new(
            StatusCode::NOT_ACCEPTABLE,
            "Format not available",
            format!("f={other:?}: this resource is served as f=json"),
        )),
    }
}

/// The query of a metadata endpoint: at most `f=json`.
fn metadata_query(q: &[(String, String)]) -> Result<(), Problem> {
    only(q, &["f"]).and_then(|()| json_only(q))
}

/// `GET /ogc`: the landing page.
pub async fn landing(
    State(st): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = metadata_query(&q) {
        return p.into_response();
    }
    let base = format!("{}/ogc", base_url(&st, &headers));
    answer(
        &json!({
            "title": "Urbis",
            "description": "The city's layers as OGC API Features (GeoJSON) and OGC API Tiles (Mapbox Vector Tiles, WebMercatorQuad).",
            "links": [
                link(base.clone(), "self", JSON, "this document"),
                link(format!("{base}/api"), "service-desc", "application/vnd.oai.openapi+json;version=3.0", "the API definition (OpenAPI 3.0)"),
                link(format!("{base}/conformance"), "conformance", JSON, "the conformance classes implemented"),
                link(format!("{base}/conformance"), "http://www.opengis.net/def/rel/ogc/1.0/conformance", JSON, "the conformance classes implemented"),
                link(format!("{base}/collections"), "data", JSON, "the collections"),
                link(format!("{base}/collections"), "http://www.opengis.net/def/rel/ogc/1.0/data", JSON, "the collections"),
                link(format!("{base}/tileMatrixSets"), "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes", JSON, "the tile matrix sets"),
            ],
        }),
        JSON,
    )
}

/// `GET /ogc/conformance`.
pub async fn conformance(Query(q): Query<Vec<(String, String)>>) -> Response {
    if let Err(p) = metadata_query(&q) {
        return p.into_response();
    }
    answer(&json!({ "conformsTo": CONFORMANCE }), JSON)
}

/// The layer `id` as the caller may see it, or 404 (a hidden layer does not exist for it).
fn visible(
    st: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<(Arc<ServedLayer>, LayerView), Problem> {
    let _ = st.engine.refresh();
    let unknown = || engine_problem(EngineError::UnknownLayer(id.to_string()));
    let view = st.security.layer(principal, id).ok_or_else(unknown)?;
    let layer = st.engine.layer(id).ok_or_else(unknown)?;
    Ok((layer, view))
}

/// A collection's description.
fn collection_json(st: &AppState, base: &str, l: &ServedLayer) -> Value {
    let meta = l.reader.meta();
    let gmeta = st
        .security
        .with_db(|db| crate::governance::meta::get(db, &l.name).unwrap_or_default());
    let b = meta.bounds;
    let at = format!("{base}/collections/{}", l.name);
    let mut links = vec![
        link(at.clone(), "self", JSON, "this collection"),
        link(format!("{at}/items"), "items", GEOJSON, "the features"),
        link(
            format!("{at}/tiles"),
            "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector",
            JSON,
            "vector tiles",
        ),
        link(
            format!("{at}/items?f=fgb"),
            "enclosure",
            "application/flatgeobuf",
            "the whole layer as FlatGeobuf",
        ),
        link(
            format!("{at}/items?f=gpkg"),
            "enclosure",
            "application/geopackage+sqlite3",
            "the whole layer as GeoPackage",
        ),
    ];
    if let Some(licence) = &gmeta.licence
        && licence.starts_with("http")
    {
        links.push(link(licence.clone(), "license", "text/html", "licence"));
    }
    json!({
        "id": l.name,
        "title": gmeta.title.clone().unwrap_or_else(|| l.name.clone()),
        "description": gmeta.description.clone().unwrap_or_default(),
        "keywords": gmeta.keywords,
        "attribution": gmeta.attribution.clone().or_else(|| meta.attribution.clone()),
        "itemType": "feature",
        "crs": [CRS84],
        "storageCrs": CRS84,
        "extent": { "spatial": { "bbox": [b], "crs": CRS84 } },
        "links": links,
    })
}

/// `GET /ogc/collections`.
pub async fn collections(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = metadata_query(&q) {
        return p.into_response();
    }
    let _ = st.engine.refresh();
    let base = format!("{}/ogc", base_url(&st, &headers));
    let list: Vec<Value> = st
        .engine
        .layers()
        .values()
        .filter(|l| st.security.layer(&principal, &l.name).is_some())
        .map(|l| collection_json(&st, &base, l))
        .collect();
    answer(
        &json!({
            "links": [link(format!("{base}/collections"), "self", JSON, "the collections")],
            "collections": list,
        }),
        JSON,
    )
}

/// `GET /ogc/collections/{id}`.
pub async fn collection(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = metadata_query(&q) {
        return p.into_response();
    }
    match visible(&st, &principal, &id) {
        Ok((l, _)) => answer(
            &collection_json(&st, &format!("{}/ogc", base_url(&st, &headers)), &l),
            JSON,
        ),
        Err(p) => p.into_response(),
    }
}
