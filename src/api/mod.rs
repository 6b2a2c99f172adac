//! HTTP handlers and routing: tiles, TileJSON, catalog, health, and the live layer's
//! ingest, devices, stream and geofences ([`live`]). Handlers are thin: parse, call the
//! engine or the live hub, respond. Errors are `application/problem+json` (RFC 9457).

pub mod access;
pub mod admin;
pub mod catalog;
pub mod fuzzing;
pub mod live;
pub mod ogc;
pub mod ops;
pub mod problem;
pub mod raster;
pub mod styles;
pub mod viewer;

use crate::engine::{Engine, EngineError, ServedLayer};
use crate::live::LiveLayerInfo;
use crate::security::{Principal, Security};
use crate::store::FieldType;
use crate::store::db::Classification;
use crate::tile::{LayerView, TileBody, TileId};
use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use problem::Problem;
use serde_json::json;
use std::sync::Arc;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The tile engine.
    pub engine: Arc<Engine>,
    /// Public base URL for links, when configured.
    pub public_url: Option<String>,
    /// Cache-Control max-age of tiles.
    pub max_age: u32,
    /// Largest admin upload, bytes.
    pub max_upload_bytes: u64,
    /// The live layer, when on.
    pub live: Option<Arc<crate::live::Hub>>,
    /// Keys, roles and classifications.
    pub security: Arc<Security>,
    /// Rate limits.
    pub limiter: Arc<crate::security::limits::Limiter>,
    /// The operations room's metrics.
    pub metrics: Arc<crate::ops::metrics::Metrics>,
    /// Tiles that take longer to make are logged as warnings.
    pub slow_tile: std::time::Duration,
    /// The server's listeners, for `/ready`.
    pub listeners: Arc<crate::ops::ready::Listeners>,
    /// The minute figures (operation report, alert rules).
    pub minutes: Arc<crate::ops::minutes::Minutes>,
    /// The alert rules, when `--alerts` gave some.
    pub alerts: Option<Arc<crate::ops::alerts::Alerts>>,
    /// The raster renderer with its styles and PNG cache.
    pub rasters: Arc<crate::raster::Rasters>,
    /// Label fonts and their glyph ranges.
    pub fonts: Arc<crate::fonts::Fonts>,
}

/// The raster renderer of the shipped styles, with a PNG cache of `cache_mb`.
pub fn rasters(cache_mb: u64) -> crate::raster::Rasters {
    crate::raster::Rasters::new(
        styles::names().filter_map(|n| Some((n.to_string(), styles::style(n, "", &[], |_| true)?))),
        cache_mb,
    )
}

/// The router of the tile API.
pub fn router(state: AppState) -> Router {
    use tower_http::cors::{Any, CorsLayer};
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(access::methods())
        .allow_headers(Any)
        .expose_headers([
            header::ETAG,
            header::CONTENT_ENCODING,
            header::HeaderName::from_static("x-request-id"),
        ]);
    access::router(&state)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(access::sizes))
        .layer(cors)
        .layer(axum::middleware::from_fn(access::request_id))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "Not found",
        format!(
            "nothing at {}; see /catalog for the layers and their TileJSON",
            uri.path()
        ),
    )
}

/// What a tile request asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    /// A Mapbox Vector Tile.
    Mvt,
    /// A PNG of this many pixels a side per 256 (1, or 2 for `@2x`).
    Png(u32),
}

fn parse_tile(z: &str, x: &str, y: &str) -> Result<(TileId, Format), Problem> {
    let Some((y, ext)) = y.rsplit_once('.') else {
        return Err(Problem::bad_request(format!(
            "tile {z}/{x}/{y} has no extension; use .mvt, .pbf or .png"
        )));
    };
    let (y, format) = match ext {
        "mvt" | "pbf" => (y, Format::Mvt),
        "png" => match y.strip_suffix("@2x") {
            Some(y) => (y, Format::Png(2)),
            None => (y, Format::Png(1)),
        },
        _ => {
            return Err(Problem::bad_request(format!(
                "unknown tile format .{ext}; use .mvt, .pbf or .png (@2x.png for 512 pixels)"
            )));
        }
    };
    let num = |what: &str, v: &str| -> Result<u64, Problem> {
        v.parse::<u64>()
            .map_err(|_| Problem::bad_request(format!("{what} must be a whole number, got {v:?}")))
    };
    let (zn, xn, yn) = (num("z", z)?, num("x", x)?, num("y", y)?);
    let tile = TileId::new(zn.min(u64::from(u32::MAX)) as u32, xn, yn)
        .map_err(|e| Problem::bad_request(e.to_string()))?;
    Ok((tile, format))
}

/// True if `path` (what follows `/tiles/`: `layers/z/x/y.ext`) is a well-formed tile request,
/// checked as the tile handler checks it (for the fuzz targets); returns 1 or 0.
pub fn tile_path_is_valid(path: &str) -> usize {
    let parts: Vec<&str> = path.split('/').collect();
    let [layers, z, x, y] = parts.as_slice() else {
        return 0;
    };
    let names_ok = layers
        .split(',')
        .all(crate::store::catalog::valid_layer_name);
    usize::from(names_ok && parse_tile(z, x, y).is_ok())
}

fn engine_problem(e: EngineError) -> Problem {
    match e {
        EngineError::UnknownLayer(name) => Problem::new(
            StatusCode::NOT_FOUND,
            "Unknown layer",
            format!("no layer named '{name}'; see /catalog"),
        ),
        EngineError::Store(e) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Store error",
            e.to_string(),
        ),
    }
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| {
            let mut parts = enc.trim().split(';');
            let name = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| p.trim().replace(' ', "") == "q=0");
            (name == "gzip" || name == "*") && !q_zero
        })
}

async fn tile(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(client): Extension<access::Client>,
    Path((layers, z, x, y)): Path<(String, String, String, String)>,
    axum::extract::Query(q): axum::extract::Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let (tile, format) = match parse_tile(&z, &x, &y) {
        Ok(t) => t,
        Err(p) => return p.into_response(),
    };
    match format {
        Format::Mvt => serve_tile(st, principal, client, layers, tile, headers).await,
        Format::Png(ratio) => {
            raster::tile(&st, &principal, &client, &layers, tile, ratio, &q, &headers).await
        }
    }
}

/// Answers a vector tile request for `layers` (comma-separated) that the path parsed: the
/// XYZ tiles and the OGC API's tiles share it.
async fn serve_tile(
    st: AppState,
    principal: Principal,
    client: access::Client,
    layers: String,
    tile: TileId,
    headers: HeaderMap,
) -> Response {
    let gzip = accepts_gzip(&headers);
    match vector_tile(&st, &principal, &client, &layers, tile, gzip).await {
        Ok((body, cache_control)) => tile_response(&body, &cache_control, &headers),
        Err(r) => r,
    }
}

/// The vector tile of `layers` for a caller, from the cache or made, with the Cache-Control
/// it may be sent with; a refusal as the response to send.
async fn vector_tile(
    st: &AppState,
    principal: &Principal,
    client: &access::Client,
    layers: &str,
    tile: TileId,
    gzip: bool,
) -> Result<(Arc<TileBody>, String), Response> {
    let names: Vec<String> = layers.split(',').map(str::to_string).collect();
    if names.iter().any(String::is_empty) {
        return Err(Problem::bad_request("empty layer name in the layer list").into_response());
    }
    // A composite costs a part per layer: a few distinct layers, not hundreds.
    let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
    if names.len() > MAX_COMPOSITE || distinct.len() != names.len() {
        return Err(Problem::bad_request(format!(
            "a composite tile names up to {MAX_COMPOSITE} distinct layers"
        ))
        .into_response());
    }
    // A layer the principal may not see does not exist for it, and a composite tile with one
    // is refused whole.
    // Each layer's classification is read once for the request (visibility, caching, audit).
    let metas: Vec<_> = names.iter().map(|n| st.security.layer_meta(n)).collect();
    let mut views = Vec::with_capacity(names.len());
    for (n, meta) in names.iter().zip(&metas) {
        match principal.layer(n, *meta) {
            Some(a) => views.push(a),
            None => {
                return Err(engine_problem(EngineError::UnknownLayer(n.clone())).into_response());
            }
        }
    }
    // A tile outside a layer's allowed area does not exist for this caller.
    if views.iter().any(|v| !v.shows_box(&tile.grid_box(0))) {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "Outside the allowed area",
            "this tile lies outside the area your key may see",
        )
        .into_response());
    }
    for (n, meta) in names.iter().zip(&metas) {
        audit_read(st, principal, client, n, meta.classification);
    }
    let request: Vec<(&str, &LayerView)> = names.iter().map(String::as_str).zip(&views).collect();
    // Live data changes at any moment: clients revalidate (cheap with the ETag). A tile that
    // not everyone may see is private to shared caches.
    // Shared caches may keep a tile only when it is what anyone gets: public layers, asked
    // for without a key, seen whole.
    let public = principal.is_anonymous()
        && views.iter().all(|v| *v == LayerView::ALL)
        && metas
            .iter()
            .all(|m| m.classification == Classification::Public);
    let cache_control = if names.iter().any(|n| st.engine.is_live_layer(n)) {
        "no-cache".to_string()
    } else if public {
        format!("public, max-age={}", st.max_age)
    } else {
        format!("private, max-age={}", st.max_age)
    };
    // Cache hits are answered here; generation runs on the blocking pool.
    let body = match st.engine.cached_as(&request, tile, gzip) {
        Ok(Some(hit)) => hit,
        Ok(None) => {
            let started = std::time::Instant::now();
            let made = generate(
                &st.engine,
                names.into_iter().zip(views).collect(),
                tile,
                gzip,
            )
            .await;
            let took = started.elapsed();
            if let Ok(b) = &made
                && st.metrics.enabled()
            {
                st.minutes.tile_made(crate::ops::minutes::TileNote {
                    layers: layers.to_string(),
                    z: tile.z,
                    x: tile.x,
                    y: tile.y,
                    ms: took.as_secs_f64() * 1000.0,
                    bytes: b.bytes.len() as u64,
                });
            }
            if took > st.slow_tile {
                tracing::warn!(
                    layer = %layers,
                    z = tile.z,
                    x = tile.x,
                    y = tile.y,
                    ms = took.as_millis() as u64,
                    "slow tile"
                );
            }
            match made {
                Ok(b) => b,
                Err(p) => return Err(p.into_response()),
            }
        }
        Err(e) => return Err(engine_problem(e).into_response()),
    };
    Ok((body, cache_control))
}

/// Most layers in one composite tile.
pub const MAX_COMPOSITE: usize = 8;

/// Logs a read of a restricted or confidential layer (once a minute per key and layer), off
/// the request's path.
fn audit_read(
    st: &AppState,
    p: &Principal,
    client: &access::Client,
    layer: &str,
    classification: Classification,
) {
    if !st.security.read_to_log(p, layer, classification) {
        return;
    }
    let (security, p, client, layer) = (
        Arc::clone(&st.security),
        p.clone(),
        client.0.clone(),
        layer.to_string(),
    );
    tokio::task::spawn_blocking(move || security.audit_read(&p, &client, &layer));
}

/// Generates a tile (one layer or a composite, layer files and live layers) on the blocking
/// pool.
async fn generate(
    engine: &Arc<Engine>,
    layers: Vec<(String, LayerView)>,
    tile: TileId,
    gzip: bool,
) -> Result<Arc<TileBody>, Problem> {
    let engine = Arc::clone(engine);
    let generated = tokio::task::spawn_blocking(move || {
        let refs: Vec<(&str, &LayerView)> = layers.iter().map(|(n, v)| (n.as_str(), v)).collect();
        engine.tile_as(&refs, tile, gzip)
    })
    .await;
    match generated {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => Err(engine_problem(e)),
        Err(e) => Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Tile generation failed",
            e.to_string(),
        )),
    }
}

fn tile_response(body: &TileBody, cache_control: &str, headers: &HeaderMap) -> Response {
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut res = if if_none_match
        .split(',')
        .any(|t| t.trim() == body.etag || t.trim() == "*")
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else if body.features == 0 {
        StatusCode::NO_CONTENT.into_response()
    } else {
        let mut r = Response::new(Body::from(body.bytes.clone()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.mapbox-vector-tile"),
        );
        if body.gzip {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        r
    };
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&body.etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(cache_control) {
        h.insert(header::CACHE_CONTROL, v);
    }
    h.insert(
        header::VARY,
        HeaderValue::from_static("Accept-Encoding, Authorization"),
    );
    if body.dropped > 0 {
        h.insert("urbis-dropped-features", HeaderValue::from(body.dropped));
    }
    res
}

/// The base URL for links: the configured public URL, else the request's host.
fn base_url(st: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &st.public_url {
        return u.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http");
    format!("{proto}://{host}")
}

/// The fields of a layer file a view keeps, with their TileJSON types.
fn file_fields(l: &ServedLayer, view: &LayerView) -> serde_json::Map<String, serde_json::Value> {
    l.reader
        .meta()
        .fields
        .iter()
        .filter(|(k, _)| view.keeps(k))
        .map(|(k, t)| (k.clone(), json!(FieldType::tilejson_name(t))))
        .collect()
}

fn vector_layer(l: &ServedLayer, view: &LayerView) -> serde_json::Value {
    let fields = file_fields(l, view);
    json!({ "id": l.name, "fields": fields, "minzoom": l.reader.minzoom(), "maxzoom": l.reader.maxzoom() })
}

async fn tilejson(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(spec) = file.strip_suffix(".json") else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!(
                "/tiles/{file}: TileJSON is at /tiles/LAYER.json, tiles at /tiles/LAYER/z/x/y.mvt"
            ),
        )
        .into_response();
    };
    let mut layers = Vec::new();
    let mut archives: Vec<Arc<crate::engine::ServedArchive>> = Vec::new();
    let mut live: Vec<(LiveLayerInfo, LayerView)> = Vec::new();
    let mut views = std::collections::HashMap::new();
    for name in spec.split(',') {
        // Hidden layers are 404, as unknown ones: their existence is not confirmed.
        let Some(view) = st.security.layer(&principal, name) else {
            return engine_problem(EngineError::UnknownLayer(name.to_string())).into_response();
        };
        if let Some(info) = st.live.as_ref().and_then(|h| h.layer_info(name)) {
            live.push((info, view));
            continue;
        }
        views.insert(name.to_string(), view);
        if st.engine.layer(name).is_none() && !st.engine.archives().contains_key(name) {
            let _ = st.engine.refresh();
        }
        if let Some(l) = st.engine.layer(name) {
            layers.push(l);
        } else if let Some(a) = st.engine.archives().get(name) {
            archives.push(Arc::clone(a));
        } else {
            return engine_problem(EngineError::UnknownLayer(name.to_string())).into_response();
        }
    }
    let zooms = layers
        .iter()
        .map(|l| (l.reader.minzoom(), l.reader.maxzoom()))
        .chain(
            archives
                .iter()
                .map(|a| (a.archive.info.minzoom, a.archive.info.maxzoom)),
        );
    let mut minzoom = zooms.clone().map(|z| z.0).min().unwrap_or(0);
    let mut maxzoom = zooms.map(|z| z.1).max().unwrap_or(14);
    let mut bounds = [180.0f64, 85.0511, -180.0, -85.0511];
    let mut vector_layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| vector_layer(l, views.get(&l.name).unwrap_or(&LayerView::ALL)))
        .collect();
    // An archive's own vector layers (an archive of several layers lists them all).
    for a in &archives {
        vector_layers.extend(a.archive.info.vector_layers.iter().cloned());
        let b = a.archive.info.bounds;
        bounds = [
            bounds[0].min(b[0]),
            bounds[1].min(b[1]),
            bounds[2].max(b[2]),
            bounds[3].max(b[3]),
        ];
    }
    for (info, view) in &live {
        minzoom = minzoom.min(info.minzoom);
        maxzoom = maxzoom.max(info.maxzoom);
        vector_layers.push(live_vector_layer(info, view));
        match live_extent(&st, info, view).1 {
            Some(b) => {
                bounds = [
                    bounds[0].min(b[0]),
                    bounds[1].min(b[1]),
                    bounds[2].max(b[2]),
                    bounds[3].max(b[3]),
                ]
            }
            None if layers.is_empty() && archives.is_empty() => {
                bounds = [-180.0, -85.0511, 180.0, 85.0511]
            }
            None => {}
        }
    }
    for l in &layers {
        let b = l.reader.meta().bounds;
        bounds = [
            bounds[0].min(b[0]),
            bounds[1].min(b[1]),
            bounds[2].max(b[2]),
            bounds[3].max(b[3]),
        ];
    }
    let mut attributions: Vec<String> = layers
        .iter()
        .filter_map(|l| l.reader.meta().attribution.clone())
        .chain(
            archives
                .iter()
                .filter_map(|a| a.archive.info.attribution.clone()),
        )
        .collect();
    attributions.sort();
    attributions.dedup();
    let centre_zoom = (minzoom.max(maxzoom.saturating_sub(2))).min(maxzoom);
    let base = base_url(&st, &headers);
    let doc = json!({
        "tilejson": "3.0.0",
        "name": spec,
        "scheme": "xyz",
        "tiles": [format!("{base}/tiles/{spec}/{{z}}/{{x}}/{{y}}.mvt")],
        "vector_layers": vector_layers,
        "minzoom": minzoom,
        "maxzoom": maxzoom,
        "bounds": bounds,
        "center": [(bounds[0] + bounds[2]) / 2.0, (bounds[1] + bounds[3]) / 2.0, centre_zoom],
        "attribution": attributions.join("; "),
    });
    json_response(&doc)
}

fn json_response(v: &serde_json::Value) -> Response {
    let mut r = Response::new(Body::from(v.to_string()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A live layer's device count and extent as `view` may see them: with a precision limit or
/// an allowed area, over the snapped positions inside the area (the exact extent would give
/// the outermost devices' positions away).
fn live_extent(st: &AppState, info: &LiveLayerInfo, view: &LayerView) -> (usize, Option<[f64; 4]>) {
    if view.precision_m.is_none() && view.area.is_none() {
        return (info.devices, info.bounds);
    }
    let Some(hub) = &st.live else {
        return (0, None);
    };
    let (mut n, mut bounds) = (0, None::<[f64; 4]>);
    hub.for_each_device(&info.name, |d| {
        match d.pos {
            Some(p) if !view.shows(p) => return,
            Some(p) => {
                let p = view.position(p);
                let b = bounds.get_or_insert([p[0], p[1], p[0], p[1]]);
                *b = [
                    b[0].min(p[0]),
                    b[1].min(p[1]),
                    b[2].max(p[0]),
                    b[3].max(p[1]),
                ];
            }
            None => {}
        }
        n += 1;
    });
    (n, bounds)
}

/// The fields of a live layer a view keeps, with their TileJSON types.
fn live_fields(
    info: &LiveLayerInfo,
    view: &LayerView,
) -> serde_json::Map<String, serde_json::Value> {
    info.fields
        .iter()
        .filter(|(k, _)| view.keeps(k) || matches!(*k, "cluster" | "point_count"))
        .map(|(k, t)| (k.to_string(), json!(t)))
        .collect()
}

/// The TileJSON vector layer of a live layer: device points, clustered at low zooms.
fn live_vector_layer(info: &LiveLayerInfo, view: &LayerView) -> serde_json::Value {
    json!({
        "id": info.name,
        "fields": live_fields(info, view),
        "minzoom": info.minzoom,
        "maxzoom": info.maxzoom,
    })
}

async fn style_list(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let base = base_url(&st, &headers);
    let list: Vec<serde_json::Value> = styles::names()
        .map(|n| json!({"name": n, "url": format!("{base}/styles/{n}.json")}))
        .collect();
    json_response(&json!({ "styles": list }))
}

async fn style(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let name = file.strip_suffix(".json").unwrap_or(&file);
    let _ = st.engine.refresh();
    let base = base_url(&st, &headers);
    let layers = st.engine.layers();
    let has = |l: &str| {
        (layers.contains_key(l)
            || st.engine.archives().contains_key(l)
            || st.engine.is_live_layer(l))
            && st.security.layer(&principal, l).is_some()
    };
    match styles::style(name, &base, &st.fonts.default_stack(), has) {
        Some(s) => json_response(&s),
        None => Problem::new(
            StatusCode::NOT_FOUND,
            "Unknown style",
            format!(
                "no style {name}; see /styles ({})",
                styles::names().collect::<Vec<_>>().join(", ")
            ),
        )
        .into_response(),
    }
}

/// `GET /admin/audit?since=&limit=`: the audit log's entries from `since` (seconds since
/// 1970, default the last 24 hours), oldest first, at most `limit` (default 1000).
async fn audit_log(
    State(st): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let now = crate::security::keys::now() as i64;
    let since = match q.get("since").map(|s| s.parse::<i64>()) {
        None => now - 86_400,
        Some(Ok(s)) => s,
        Some(Err(_)) => {
            return Problem::bad_request("since: give seconds since 1970-01-01 UTC")
                .into_response();
        }
    };
    let limit = match q.get("limit").map(|s| s.parse::<usize>()) {
        None => 1000,
        Some(Ok(n)) if (1..=100_000).contains(&n) => n,
        Some(_) => return Problem::bad_request("limit must be 1..100000").into_response(),
    };
    let security = Arc::clone(&st.security);
    match tokio::task::spawn_blocking(move || security.audit_entries(since, limit)).await {
        Ok(Ok(entries)) => json_response(&json!({ "entries": entries })),
        Ok(Err(e)) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Audit log",
            e.to_string(),
        )
        .into_response(),
        Err(e) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Audit log",
            e.to_string(),
        )
        .into_response(),
    }
}

/// `GET /metrics`: the Prometheus exposition (OpenMetrics text).
pub async fn metrics(State(st): State<AppState>) -> Response {
    let ready = crate::ops::ready::checks(&st.engine, st.live.as_deref(), &st.listeners)
        .iter()
        .all(|c| c.ok);
    let body = st.metrics.render(&st.engine, st.live.as_deref(), ready);
    (
        [(header::CONTENT_TYPE, crate::ops::metrics::CONTENT_TYPE)],
        body,
    )
        .into_response()
}

async fn health(State(st): State<AppState>) -> Response {
    // Anyone may call it: it counts the layers anyone may see (a count of every layer would
    // tell an anonymous caller that restricted ones exist).
    let layers = st.security.authenticate(None).map_or(0, |anonymous| {
        let (files, archives) = (st.engine.layers(), st.engine.archives());
        files
            .keys()
            .chain(archives.keys())
            .filter(|l| st.security.layer(&anonymous, l).is_some())
            .count()
    });
    json_response(&json!({ "status": "ok", "layers": layers }))
}
