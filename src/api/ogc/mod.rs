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

pub mod openapi;
pub mod tiles;

use super::problem::Problem;
use super::{AppState, access, audit_read, base_url, engine_problem};
use crate::engine::{EngineError, ServedLayer};
use crate::export::files;
use crate::security::Principal;
use crate::tile::LayerView;
use crate::tile::mercator::{GridBox, lonlat_to_grid};
use axum::body::Body;
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

/// `GET /ogc`: the landing page.
pub async fn landing(
    State(st): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = only(&q, &["f"]).and_then(|()| json_only(&q)) {
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
    if let Err(p) = only(&q, &["f"]).and_then(|()| json_only(&q)) {
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
    if let Err(p) = only(&q, &["f"]).and_then(|()| json_only(&q)) {
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
    if let Err(p) = only(&q, &["f"]).and_then(|()| json_only(&q)) {
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

/// A parsed `bbox`: one or two (across the antimeridian) boxes in degrees, west, south, east,
/// north.
fn parse_bbox(s: &str) -> Result<Vec<[f64; 4]>, Problem> {
    let bad = |why: &str| Problem::bad_request(format!("bbox={s:?}: {why}"));
    let n: Vec<f64> = s
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad("four (or six, with heights) comma-separated numbers"))?;
    let [w, s_, e, n_] = match n.as_slice() {
        [w, s, e, n] => [*w, *s, *e, *n],
        [w, s, _, e, n, _] => [*w, *s, *e, *n],
        _ => return Err(bad("four (or six, with heights) comma-separated numbers")),
    };
    if n.iter().any(|v| !v.is_finite())
        || !(-180.0..=180.0).contains(&w)
        || !(-180.0..=180.0).contains(&e)
        || !(-90.0..=90.0).contains(&s_)
        || !(-90.0..=90.0).contains(&n_)
    {
        return Err(bad(
            "longitudes within ±180 and latitudes within ±90 (CRS84: longitude first)",
        ));
    }
    if s_ > n_ {
        return Err(bad(
            "the south edge (second number) is north of the north edge",
        ));
    }
    // West greater than east crosses the antimeridian.
    Ok(if w > e {
        vec![[w, s_, 180.0, n_], [-180.0, s_, e, n_]]
    } else {
        vec![[w, s_, e, n_]]
    })
}

/// Checks a `datetime` (an RFC 3339 instant or an interval with `..`/empty open ends).
fn check_datetime(s: &str) -> Result<(), Problem> {
    fn instant(t: &str) -> bool {
        let b = t.as_bytes();
        let date = b.len() >= 10
            && b[..10].iter().enumerate().all(|(i, c)| {
                if i == 4 || i == 7 {
                    *c == b'-'
                } else {
                    c.is_ascii_digit()
                }
            });
        if !date {
            return false;
        }
        let rest = &t[10..];
        rest.is_empty()
            || (rest.len() >= 9
                && matches!(rest.as_bytes()[0], b'T' | b't')
                && rest[1..9].bytes().enumerate().all(|(i, c)| {
                    if i == 2 || i == 5 {
                        c == b':'
                    } else {
                        c.is_ascii_digit()
                    }
                })
                && {
                    let tail =
                        rest[9..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
                    matches!(tail, "Z" | "z")
                        || (tail.len() == 6
                            && matches!(tail.as_bytes()[0], b'+' | b'-')
                            && tail.as_bytes()[3] == b':')
                })
    }
    let ok = match s.split_once('/') {
        None => instant(s),
        Some((a, b)) => {
            let open = |t: &str| t.is_empty() || t == "..";
            (open(a) || instant(a)) && (open(b) || instant(b)) && !(open(a) && open(b))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(Problem::bad_request(format!(
            "datetime={s:?}: an RFC 3339 date-time (2026-12-02T10:00:00Z), a date, or an interval start/end with .. for an open end"
        )))
    }
}

/// The grid box of a degree box.
fn grid_box(b: &[f64; 4]) -> GridBox {
    let a = lonlat_to_grid(b[0], b[3]);
    let z = lonlat_to_grid(b[2], b[1]);
    GridBox {
        min_x: a[0].min(z[0]),
        min_y: a[1].min(z[1]),
        max_x: a[0].max(z[0]),
        max_y: a[1].max(z[1]),
    }
}

/// The items of `level` the view shows that meet one of `boxes` (none: all), in the level's
/// order: geometry against the box exactly, not only the feature's box.
fn matching(
    level: &crate::store::Level<'_>,
    view: &LayerView,
    boxes: Option<&[[f64; 4]]>,
) -> Vec<usize> {
    use geo::Intersects;
    let Some(boxes) = boxes else {
        return (0..level.len())
            .filter(|&i| view.area.is_none() || view.shows_box(&level.item(i).bbox))
            .collect();
    };
    let mut out = Vec::new();
    for b in boxes {
        let g = grid_box(b);
        let rect = geo::Rect::new(
            geo::coord! { x: b[0], y: b[1] },
            geo::coord! { x: b[2], y: b[3] },
        );
        level.query(&g, |f| {
            if !view.shows_box(&f.bbox) {
                return;
            }
            let inside = g.min_x <= f.bbox.min_x
                && f.bbox.max_x <= g.max_x
                && g.min_y <= f.bbox.min_y
                && f.bbox.max_y <= g.max_y;
            let meets = inside
                || f.decode()
                    .is_some_and(|geom| files::to_geo(&geom, &LayerView::ALL).intersects(&rect));
            if meets {
                out.push(f.feature as usize);
            }
        });
    }
    // `query` hands features; page in item order (the level's Hilbert order) instead.
    let wanted: std::collections::HashSet<usize> = out.into_iter().collect();
    (0..level.len())
        .filter(|&i| wanted.contains(&(level.item(i).feature as usize)))
        .collect()
}

/// `GET /ogc/collections/{id}/items`: a page of GeoJSON features, or with `f=fgb|gpkg|geojson`
/// the whole layer as a file.
pub async fn items(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(client): Extension<access::Client>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    match items_response(&st, &principal, &client, &id, &q, &headers).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}

async fn items_response(
    st: &AppState,
    principal: &Principal,
    client: &access::Client,
    id: &str,
    q: &[(String, String)],
    headers: &HeaderMap,
) -> Result<Response, Problem> {
    only(q, &["f", "bbox", "bbox-crs", "limit", "offset", "datetime"])?;
    let (layer, view) = visible(st, principal, id)?;
    if let Some(crs) = param(q, "bbox-crs")
        && crs != CRS84
    {
        return Err(Problem::bad_request(format!(
            "bbox-crs={crs:?}: bounding boxes are in {CRS84} (longitude, latitude) only"
        )));
    }
    let boxes = param(q, "bbox").map(parse_bbox).transpose()?;
    if let Some(t) = param(q, "datetime") {
        // Layer files carry no time of their own: a valid datetime filters nothing.
        check_datetime(t)?;
    }
    let number = |name: &str, default: usize| -> Result<usize, Problem> {
        param(q, name).map_or(Ok(default), |v| {
            v.parse::<usize>().map_err(|_| {
                Problem::bad_request(format!("{name}={v:?}: a whole number, 0 or more"))
            })
        })
    };
    let limit = number("limit", DEFAULT_LIMIT)?;
    if limit == 0 {
        return Err(Problem::bad_request("limit=0: ask for 1 to 10000 items"));
    }
    let limit = limit.min(MAX_LIMIT);
    let offset = number("offset", 0)?;
    let meta = st.security.layer_meta(id);
    audit_read(st, principal, client, id, meta.classification);
    match param(q, "f") {
        None | Some("json") => {}
        Some(f @ ("fgb" | "gpkg" | "geojson")) => {
            if boxes.is_some() || param(q, "limit").is_some() || param(q, "offset").is_some() {
                return Err(Problem::bad_request(format!(
                    "f={f} downloads the whole layer; leave out bbox, limit and offset (page with f=json)"
                )));
            }
            return download(st, layer, view, f).await;
        }
        Some(other) => {
            return Err(Problem::new(
                StatusCode::NOT_ACCEPTABLE,
                "Format not available",
                format!(
                    "f={other:?}: items are served as f=json (GeoJSON, paged) or downloaded whole as f=fgb, f=gpkg or f=geojson"
                ),
            ));
        }
    }
    let base = base_url(st, headers);
    let q = q.to_vec();
    let id = id.to_string();
    let page = tokio::task::spawn_blocking(move || {
        page(
            &layer,
            &view,
            boxes.as_deref(),
            offset,
            limit,
            &base,
            &id,
            &q,
        )
    })
    .await
    .map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Items failed",
            e.to_string(),
        )
    })?;
    let mut r = Response::new(Body::from(page));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(GEOJSON));
    Ok(r)
}

/// One page of items as a GeoJSON FeatureCollection with its links and counts.
#[allow(clippy::too_many_arguments)]
fn page(
    layer: &ServedLayer,
    view: &LayerView,
    boxes: Option<&[[f64; 4]]>,
    offset: usize,
    limit: usize,
    base: &str,
    id: &str,
    q: &[(String, String)],
) -> String {
    let reader = &layer.reader;
    let Some(level) = reader.level(reader.maxzoom()) else {
        return json!({"type": "FeatureCollection", "features": [], "numberMatched": 0, "numberReturned": 0, "links": []}).to_string();
    };
    let found = matching(&level, view, boxes);
    let matched = found.len();
    let mut features = String::new();
    let mut returned = 0usize;
    for &i in found.iter().skip(offset).take(limit) {
        if let Some(f) = files::feature_geojson(reader, &level.item(i), view) {
            if returned > 0 {
                features.push(',');
            }
            features.push_str(&f);
            returned += 1;
        }
    }
    // Links keep the request's other parameters (bbox, key …) and move the offset.
    let href = |offset: usize| {
        let mut pairs: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| k != "offset" && k != "limit")
            .cloned()
            .collect();
        pairs.push(("limit".into(), limit.to_string()));
        if offset > 0 {
            pairs.push(("offset".into(), offset.to_string()));
        }
        let query: String = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        format!("{base}/ogc/collections/{id}/items?{query}")
    };
    let mut links = vec![
        link(href(offset), "self", GEOJSON, "this page"),
        link(
            format!("{base}/ogc/collections/{id}"),
            "collection",
            JSON,
            "the collection",
        ),
    ];
    if offset + limit < matched {
        links.push(link(href(offset + limit), "next", GEOJSON, "the next page"));
    }
    if offset > 0 {
        links.push(link(
            href(offset.saturating_sub(limit)),
            "prev",
            GEOJSON,
            "the previous page",
        ));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    format!(
        "{{\"type\":\"FeatureCollection\",\"numberMatched\":{matched},\"numberReturned\":{returned},\"timeStamp\":\"{}\",\"links\":{},\"features\":[{features}]}}",
        crate::governance::iso8601(now),
        Value::from(links)
    )
}

/// Percent-encodes a query component (RFC 3986 unreserved characters kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b',') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The whole layer as a file, written through the export room into a temporary file beside
/// the store and streamed from it.
async fn download(
    st: &AppState,
    layer: Arc<ServedLayer>,
    view: LayerView,
    f: &str,
) -> Result<Response, Problem> {
    let (ext, kind) = match f {
        "fgb" => ("fgb", "application/flatgeobuf"),
        "gpkg" => ("gpkg", "application/geopackage+sqlite3"),
        _ => ("geojson", GEOJSON),
    };
    let dir = st.engine.store().dir().to_path_buf();
    let name = layer.name.clone();
    let failed = |e: String| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Download failed", e);
    let file = tokio::task::spawn_blocking(move || -> Result<std::fs::File, String> {
        // A name of its own (the process, a counter), removed once opened or on failure.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!(".download-{}-{n}.{ext}", std::process::id()));
        struct Remove(std::path::PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        let tmp = Remove(path.clone());
        let write = match ext {
            "fgb" => files::write_fgb(&layer.reader, &path, &view, &|_, _| {}),
            "gpkg" => files::write_gpkg(&layer.reader, &path, &view, &|_, _| {}),
            _ => files::write_geojson(&layer.reader, &path, &view, &|_, _| {}),
        };
        write.map_err(|e| e.to_string())?;
        // Opened before the name goes: the data lives while the response streams it.
        let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        drop(tmp);
        Ok(file)
    })
    .await
    .map_err(|e| failed(e.to_string()))?
    .map_err(failed)?;
    let len = file.metadata().map(|m| m.len()).ok();
    let stream = futures_util::stream::unfold(
        (tokio::fs::File::from_std(file), vec![0u8; 64 * 1024]),
        |(mut file, mut buf)| async move {
            use tokio::io::AsyncReadExt;
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => Some((
                    Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(&buf[..n])),
                    (file, buf),
                )),
                Err(e) => Some((Err(e), (file, buf))),
            }
        },
    );
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}-v{}.{ext}\"", name, 0))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// `GET /ogc/collections/{id}/items/{fid}`: one feature.
pub async fn item(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(client): Extension<access::Client>,
    Path((id, fid)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = only(&q, &["f"]).and_then(|()| match param(&q, "f") {
        None | Some("json" | "geojson") => Ok(()),
        Some(o) => Err(Problem::new(
            StatusCode::NOT_ACCEPTABLE,
            "Format not available",
            format!("f={o:?}: a feature is served as GeoJSON (f=json)"),
        )),
    }) {
        return p.into_response();
    }
    let (layer, view) = match visible(&st, &principal, &id) {
        Ok(v) => v,
        Err(p) => return p.into_response(),
    };
    let no_such = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            "No such feature",
            format!("collection {id} has no feature {fid:?}; ids are the features' numbers in the import, from 1"),
        )
        .into_response()
    };
    let Ok(wanted) = fid.parse::<u32>() else {
        return no_such();
    };
    audit_read(
        &st,
        &principal,
        &client,
        &id,
        st.security.layer_meta(&id).classification,
    );
    let base = base_url(&st, &headers);
    let found = tokio::task::spawn_blocking(move || {
        let reader = &layer.reader;
        let level = reader.level(reader.maxzoom())?;
        let f = (0..level.len())
            .map(|i| level.item(i))
            .find(|f| files::feature_id(reader, f) == wanted)?;
        if !view.shows_box(&f.bbox) {
            return None;
        }
        files::feature_geojson(reader, &f, &view)
    })
    .await
    .ok()
    .flatten();
    let Some(feature) = found else {
        return no_such();
    };
    // The links go in before the closing brace of the feature.
    let links = Value::from(vec![
        link(
            format!("{base}/ogc/collections/{id}/items/{wanted}"),
            "self",
            GEOJSON,
            "this feature",
        ),
        link(
            format!("{base}/ogc/collections/{id}"),
            "collection",
            JSON,
            "the collection",
        ),
    ]);
    let body = format!(
        "{},\"links\":{links}}}",
        feature.strip_suffix('}').unwrap_or(&feature)
    );
    let mut r = Response::new(Body::from(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(GEOJSON));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bbox_parsing() {
        assert_eq!(parse_bbox("1,2,3,4").unwrap(), vec![[1.0, 2.0, 3.0, 4.0]]);
        assert_eq!(
            parse_bbox("1,2,0,3,4,9").unwrap(),
            vec![[1.0, 2.0, 3.0, 4.0]]
        );
        assert_eq!(parse_bbox("170,0,-170,1").unwrap().len(), 2);
        for bad in ["1,2,3", "a,b,c,d", "1,5,3,4", "1,2,3,95", "NaN,1,2,3"] {
            assert!(parse_bbox(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn datetime_checks() {
        for ok in [
            "2026-12-02",
            "2026-12-02T10:00:00Z",
            "2026-12-02T10:00:00.5+01:00",
            "2026-01-01/..",
            "../2026-01-01T00:00:00Z",
            "2026-01-01/2026-02-01",
        ] {
            assert!(check_datetime(ok).is_ok(), "{ok}");
        }
        for bad in ["yesterday", "2026-13", "../..", "2026-12-02T10:00Z", "/"] {
            assert!(check_datetime(bad).is_err(), "{bad}");
        }
    }
}
