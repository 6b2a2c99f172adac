//! Who may call what: every route of the API is declared in one table ([`routes`]) with what
//! it needs ([`Need`]), and the router is built from that table only, so a route cannot be
//! added without saying who may call it (`tests/security.rs` walks the table and proves that
//! nothing outside the public entries answers an anonymous request with data).
//!
//! The guard turns the request's key (`Authorization: Bearer` or `?key=`) into a
//! [`Principal`] through the security room and puts it in the request's extensions for the
//! handler: 401 for a bad, expired or revoked key, or for an anonymous caller of a route that
//! needs a right; 403 for a key whose role lacks it.

use super::problem::Problem;
use super::{AppState, admin, live, ogc, viewer};
use crate::security::Principal;
use crate::security::limits::Class;
use crate::security::policy::Right;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health, the viewer's files, the styles' list.
    Public,
    /// A principal, anonymous or not; each layer is then decided on its own (tiles,
    /// TileJSON, the catalog, styles): what it may not see does not exist for it.
    Layers,
    /// A right of the principal's role.
    Right(Right),
    /// A device credential, checked by the live room's one admission path (ingest).
    Device,
}

/// One route of the API.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    /// Method.
    pub method: &'static str,
    /// Path pattern (axum syntax).
    pub path: &'static str,
    /// What it needs.
    pub need: Need,
}

type Entry = (RouteSpec, MethodRouter<AppState>);

fn entry(
    method: &'static str,
    path: &'static str,
    need: Need,
    handler: MethodRouter<AppState>,
) -> Entry {
    (RouteSpec { method, path, need }, handler)
}

/// The table: every route, its handler and what it needs.
fn table() -> Vec<Entry> {
    use crate::security::policy::Right as R;
    use Need::*;
    vec![
        // axum 0.8 panics on `{y}.mvt`: take the whole segment and strip the extension.
        entry(
            "GET",
            "/tiles/{layers}/{z}/{x}/{y}",
            Layers,
            get(super::tile),
        ),
        entry("GET", "/tiles/{tilejson}", Layers, get(super::tilejson)),
        entry(
            "GET",
            "/static/{style}/{at}/{size}",
            Layers,
            get(super::raster::static_map),
        ),
        entry("GET", "/catalog", Layers, get(super::catalog::catalog)),
        entry("GET", "/styles/{file}", Layers, get(super::style)),
        entry("GET", "/styles", Public, get(super::style_list)),
        // Glyphs of the label fonts: no data of any layer.
        entry("GET", "/fonts", Public, get(super::styles::font_list)),
        entry(
            "GET",
            "/fonts/{fontstack}/{range}",
            Public,
            get(super::styles::glyphs),
        ),
        entry("GET", "/", Public, get(viewer::index)),
        entry("GET", "/ops", Public, get(viewer::ops)),
        entry("GET", "/viewer/{file}", Public, get(viewer::file)),
        entry("GET", "/favicon.ico", Public, get(viewer::favicon)),
        entry("GET", "/health", Public, get(super::health)),
        entry("GET", "/ready", Public, get(live::ready)),
        // The OGC API: the service's description is public, collections are layers (each
        // decided for the caller), items are full-resolution features (a right of their own).
        entry("GET", "/ogc", Public, get(ogc::landing)),
        entry("GET", "/ogc/conformance", Public, get(ogc::conformance)),
        entry("GET", "/ogc/api", Public, get(ogc::openapi::api)),
        entry(
            "GET",
            "/ogc/tileMatrixSets",
            Public,
            get(ogc::tiles::matrix_sets),
        ),
        entry(
            "GET",
            "/ogc/tileMatrixSets/{tms}",
            Public,
            get(ogc::tiles::matrix_set),
        ),
        entry("GET", "/ogc/collections", Layers, get(ogc::collections)),
        entry("GET", "/ogc/collections/{id}", Layers, get(ogc::collection)),
        entry(
            "GET",
            "/ogc/collections/{id}/items",
            Right(R::Features),
            get(ogc::items),
        ),
        entry(
            "GET",
            "/ogc/collections/{id}/items/{fid}",
            Right(R::Features),
            get(ogc::item),
        ),
        entry(
            "GET",
            "/ogc/collections/{id}/tiles",
            Layers,
            get(ogc::tiles::tilesets),
        ),
        entry(
            "GET",
            "/ogc/collections/{id}/tiles/{tms}",
            Layers,
            get(ogc::tiles::tileset),
        ),
        entry(
            "GET",
            "/ogc/collections/{id}/tiles/{tms}/{z}/{row}/{col}",
            Layers,
            get(ogc::tiles::tile),
        ),
        // Layer names and device counts: for administrators here; `--metrics-bind` serves it
        // without a key on a listener of its own (loopback by default).
        entry("GET", "/metrics", Right(R::Admin), get(super::metrics)),
        entry(
            "POST",
            "/ingest",
            Device,
            post(live::ingest).layer(axum::extract::DefaultBodyLimit::max(16 << 20)),
        ),
        entry("GET", "/devices", Right(R::Devices), get(live::devices)),
        entry("GET", "/devices/{id}", Right(R::Devices), get(live::device)),
        entry(
            "GET",
            "/devices/{id}/track",
            Right(R::Tracks),
            get(live::track),
        ),
        entry("GET", "/stream", Right(R::Stream), get(live::stream)),
        entry(
            "GET",
            "/geofences",
            Right(R::Devices),
            get(live::list_fences),
        ),
        entry(
            "POST",
            "/geofences",
            Right(R::GeofencesWrite),
            post(live::put_fence),
        ),
        entry(
            "GET",
            "/geofences/{id}",
            Right(R::Devices),
            get(live::get_fence),
        ),
        entry(
            "DELETE",
            "/geofences/{id}",
            Right(R::GeofencesWrite),
            delete(live::delete_fence),
        ),
        entry(
            "POST",
            "/admin/layers/{name}",
            Right(R::Admin),
            // The upload streams to disk and counts against --max-upload-mb itself.
            post(admin::upload).layer(axum::extract::DefaultBodyLimit::disable()),
        ),
        entry(
            "DELETE",
            "/admin/layers/{name}",
            Right(R::Admin),
            delete(admin::remove_layer),
        ),
        entry(
            "PUT",
            "/admin/layers/{name}/meta",
            Right(R::Admin),
            put(admin::set_meta),
        ),
        entry(
            "POST",
            "/admin/layers/{name}/rollback",
            Right(R::Admin),
            post(admin::rollback),
        ),
        entry(
            "POST",
            "/admin/devices",
            Right(R::DevicesWrite),
            post(admin::add_devices).layer(axum::extract::DefaultBodyLimit::max(256 << 20)),
        ),
        entry(
            "DELETE",
            "/admin/devices/{id}",
            Right(R::DevicesWrite),
            delete(admin::remove_device),
        ),
        entry(
            "POST",
            "/admin/retention/run",
            Right(R::Admin),
            post(admin::retention_run),
        ),
        entry("GET", "/alerts", Right(R::Stream), get(super::ops::alerts)),
        entry(
            "GET",
            "/admin/report",
            Right(R::Admin),
            get(super::ops::report),
        ),
        entry(
            "GET",
            "/admin/audit",
            Right(R::Audit),
            get(super::audit_log),
        ),
    ]
}

/// Every route of the API with what it needs.
pub fn routes() -> Vec<RouteSpec> {
    table().into_iter().map(|(spec, _)| spec).collect()
}

/// The routes of the table, each behind the guard of its need.
pub fn router(state: &AppState) -> Router<AppState> {
    let mut r = Router::new();
    for (spec, handler) in table() {
        let need = spec.need;
        let route = spec.path;
        let mut guarded = handler.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            move |st: State<AppState>, req: Request, next: Next| guard(st, need, req, next),
        ));
        if state.metrics.enabled() {
            // Outermost: the time and status of everything, refusals by the guard included,
            // under the route's pattern (never the raw path).
            guarded = guarded.route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                move |st: State<AppState>, req: Request, next: Next| measured(st, route, req, next),
            ));
        }
        r = r.route(spec.path, guarded);
    }
    r
}

/// Gives every request an id: the client's `x-request-id` when it is a short token, else a new
/// one; every log line of the request carries it (a `request` span) and the answer echoes it.
/// At debug level (`URBIS_LOG=debug`) a line per request: method, path (never the query, which
/// may hold a key), status and milliseconds.
pub async fn request_id(req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let given = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(&c))
        })
        .map(str::to_string);
    let id = given.unwrap_or_else(|| {
        let mut b = [0u8; 8];
        let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
        b.iter().map(|x| format!("{x:02x}")).collect()
    });
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let span = tracing::info_span!("request", id = %id);
    let started = std::time::Instant::now();
    let mut res = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            method = %method,
            path = %path,
            status = res.status().as_u16(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "answered"
        );
    });
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// Counts and times a request under its route pattern.
async fn measured(
    State(st): State<AppState>,
    route: &'static str,
    req: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let res = next.run(req).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = res.status().as_u16();
    st.metrics.http(method.as_str(), route, status, seconds);
    st.minutes.request(status, seconds);
    res
}

/// The API key of a request: `Authorization: Bearer KEY`, else `?key=KEY`.
pub fn request_key(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(v.trim().to_string());
    }
    uri.query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("key="))
        .map(str::to_string)
}

/// The client's address, for the audit log (`-` when unknown).
#[derive(Debug, Clone)]
pub struct Client(pub String);

/// Longest request target accepted (414 beyond).
pub const MAX_URI: usize = 8 * 1024;
/// Most bytes of request headers accepted (431 beyond).
pub const MAX_HEADERS: usize = 32 * 1024;

/// Refuses over-long request targets (414) and header sections (431) before anything else.
pub async fn sizes(req: Request, next: Next) -> Response {
    let uri = req.uri().to_string().len();
    if uri > MAX_URI {
        return Problem::new(
            StatusCode::URI_TOO_LONG,
            "URI too long",
            format!("{uri} bytes; at most {MAX_URI}"),
        )
        .into_response();
    }
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers > MAX_HEADERS {
        return Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "Headers too large",
            format!("{headers} bytes of headers; at most {MAX_HEADERS}"),
        )
        .into_response();
    }
    next.run(req).await
}

/// 429 with `Retry-After`.
pub fn too_many(seconds: u64, what: &str) -> Response {
    let mut r = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests",
        format!("{what}; retry after {seconds} s"),
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(seconds));
    r
}

async fn guard(State(st): State<AppState>, need: Need, mut req: Request, next: Next) -> Response {
    if need == Need::Public {
        return next.run(req).await;
    }
    let client = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "-".to_string(), |c| c.0.ip().to_string());
    if need == Need::Device {
        // Device credentials are the live room's; the rate is per address.
        if let Err(s) = st
            .limiter
            .check(Class::Ingest, &crate::security::limits::network(&client))
        {
            return too_many(s, "too many ingest requests from this address");
        }
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| req.uri().path().to_string(), |m| m.as_str().to_string());
    let key = request_key(req.headers(), req.uri());
    let (principal, denied) = match st.security.authenticate(key.as_deref()) {
        Ok(p) => match need {
            Need::Right(right) if !p.has(right) => {
                let r = refused(&p, right);
                (Some(p), Some(r))
            }
            _ => (Some(p), None),
        },
        Err(e) => (
            None,
            Some(
                Problem::new(StatusCode::UNAUTHORIZED, "Key refused", e.to_string())
                    .into_response(),
            ),
        ),
    };
    if let Some(denied) = denied {
        // Denied requests go to the audit log, once a minute per client and route.
        let security = std::sync::Arc::clone(&st.security);
        let status = denied.status().as_u16().to_string();
        let (key_id, role) = principal
            .as_ref()
            .map_or(("-".to_string(), "-".to_string()), |p| {
                (
                    p.key_id.clone().unwrap_or_else(|| "-".into()),
                    p.role.name.clone(),
                )
            });
        // Checked here, so that a flood of denied requests costs a set look-up each, not a
        // thread.
        let (who, what) = (format!("{client} {key_id}"), format!("{route} {status}"));
        if !security.first_this_minute(&who, &what) {
            return denied;
        }
        tokio::task::spawn_blocking(move || {
            security.audit(&crate::security::audit::Event {
                key_id: &key_id,
                role: &role,
                client: &client,
                action: "denied",
                target: &route,
                outcome: &status,
            });
        });
        return denied;
    }
    if let Some(p) = principal {
        let class = if need == Need::Layers {
            Class::Tiles
        } else {
            Class::Api
        };
        if let Err(s) = st.limiter.check(class, &caller(&p, &client)) {
            return too_many(s, "too many requests for this key (or address)");
        }
        req.extensions_mut().insert(p);
    }
    req.extensions_mut().insert(Client(client));
    next.run(req).await
}

/// Who a rate limit counts: the key, or the address of an anonymous caller.
pub fn caller(p: &Principal, client: &str) -> String {
    match &p.key_id {
        Some(k) => k.clone(),
        None => format!("addr:{}", crate::security::limits::network(client)),
    }
}

/// 401 for an anonymous caller (a key would help), 403 for a key whose role lacks `right`.
pub fn refused(p: &Principal, right: Right) -> Response {
    if p.is_anonymous() {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "API key needed",
            format!(
                "this needs the right {:?}: send a key as `Authorization: Bearer KEY` or ?key=KEY",
                right.as_str()
            ),
        )
        .into_response()
    } else {
        Problem::new(
            StatusCode::FORBIDDEN,
            "Not allowed",
            format!("the role {} has no right {:?}", p.role.name, right.as_str()),
        )
        .into_response()
    }
}

/// Method names of the table, for CORS.
pub fn methods() -> Vec<Method> {
    vec![
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
    ]
}
