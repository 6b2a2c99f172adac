//! HTTP handlers of the live layer: `POST /ingest`, `GET /devices`, `GET /devices/{id}`,
//! `GET /devices/{id}/track`, `GET /stream` (Server-Sent Events), `/geofences`, `GET /ready`.
//! Thin: parse the request, call the hub's front door, turn its answer into HTTP.

use super::AppState;
use super::access::Client;
use super::problem::Problem;
use crate::live::{AdmitError, DeviceQuery, Format, Hub, LiveError, StreamEvent, now_s};
use crate::security::{Principal, Security};
use crate::tile::LayerView;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The live hub, as a handler argument: requests to a server without the live layer get a
/// 404 problem before the handler runs.
pub struct LiveHub(Arc<Hub>);

impl axum::extract::FromRequestParts<AppState> for LiveHub {
    type Rejection = Problem;

    async fn from_request_parts(
        _: &mut axum::http::request::Parts,
        st: &AppState,
    ) -> Result<Self, Self::Rejection> {
        st.live.clone().map(LiveHub).ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "Live devices are off",
                "this server was started without the live layer",
            )
        })
    }
}

/// The HTTP answer to a hub error.
fn live_problem(e: LiveError) -> Response {
    match e {
        LiveError::Overloaded => {
            let mut r = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Overloaded",
                "the report queue is full; retry after a second",
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        LiveError::Storage(why) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not accepting reports",
            why,
        )
        .into_response(),
        LiveError::UnknownDevice(id) => Problem::new(
            StatusCode::NOT_FOUND,
            "Unknown device",
            format!("no device {id}; see /devices"),
        )
        .into_response(),
        LiveError::UnknownFence(id) => Problem::new(
            StatusCode::NOT_FOUND,
            "Unknown geofence",
            format!("no geofence {id}"),
        )
        .into_response(),
        LiveError::BadFence(why) => {
            Problem::bad_request(format!("geofence: {why}")).into_response()
        }
        e @ (LiveError::Io(_) | LiveError::Registry(_)) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Live data error",
            e.to_string(),
        )
        .into_response(),
    }
}

/// The credential of a request: `Authorization: Bearer`, or `?key=` / `?k=`.
fn credential(headers: &HeaderMap, q: &HashMap<String, String>) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|s| s.trim().to_string())
        .or_else(|| q.get("key").cloned())
        .or_else(|| q.get("k").cloned())
}

/// `POST /ingest`: a batch of SenML (JSON or CBOR) or compact JSON records from a gateway or
/// platform (ingest key) or one device (its secret). 200 once the accepted records are
/// durable, with per-record errors.
pub async fn ingest(
    LiveHub(hub): LiveHub,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let secret = credential(&headers, &q);
    let format = match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        None => Format::sniff(&body),
        Some(ct) => match Format::from_media_type(ct) {
            Some(f) => f,
            None => {
                return Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "Unsupported content type",
                    format!(
                        "{ct}: use application/senml+json, application/senml+cbor or application/json"
                    ),
                )
                .into_response();
            }
        },
    };
    let admission = match hub.admit(secret.as_deref(), None, format, &body, now_s()) {
        Ok(a) => a,
        Err(e) => {
            hub.note_ingest("http", e.outcome(), 1, 0);
            let (status, title) = match e {
                AdmitError::MissingCredential => (StatusCode::UNAUTHORIZED, "Credential needed"),
                AdmitError::BadCredential => (StatusCode::UNAUTHORIZED, "Unknown credential"),
                AdmitError::UnknownDevice(_) => (StatusCode::NOT_FOUND, "Unknown device"),
                AdmitError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "Batch too large"),
                AdmitError::Malformed(_) => (StatusCode::BAD_REQUEST, "Bad request"),
            };
            return Problem::new(status, title, e.to_string()).into_response();
        }
    };
    let errors: Vec<serde_json::Value> = admission
        .rejected
        .iter()
        .map(|r| json!({"record": r.record, "error": r.error}))
        .collect();
    let accepted = admission.accepted.len();
    if accepted == 0 {
        hub.note_ingest("http", "malformed", 1, 0);
        let mut r = Json(json!({"accepted": 0, "rejected": errors.len(), "errors": errors}))
            .into_response();
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    }
    let committed = hub.commit(admission.accepted).await;
    hub.note_ingest(
        "http",
        match &committed {
            Ok(_) if errors.is_empty() => "accepted",
            Ok(_) => "partial",
            Err(crate::live::LiveError::Overloaded) => "overloaded",
            Err(_) => "unavailable",
        },
        1,
        if committed.is_ok() {
            accepted as u64
        } else {
            0
        },
    );
    match committed {
        Ok(c) => Json(json!({
            "accepted": accepted,
            "rejected": errors.len(),
            "errors": errors,
            "first_seq": c.first_seq,
            "last_seq": c.last_seq,
        }))
        .into_response(),
        Err(e) => live_problem(e),
    }
}

/// `GET /devices[?layer=&state=&summary=true]`: every device with its state and last fix
/// (`null` with `summary=true`), and counts.
pub async fn devices(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    LiveHub(hub): LiveHub,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // A page at a time: a city has a million devices.
    let num = |k: &str, default: usize| -> Result<usize, Problem> {
        match q.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| Problem::bad_request(format!("{k}={v:?}: give a whole number"))),
        }
    };
    let (offset, limit) = match (num("offset", 0), num("limit", DEVICES_PAGE)) {
        (Ok(o), Ok(l)) if (1..=DEVICES_PAGE_MAX).contains(&l) => (o, l),
        (Ok(_), Ok(l)) => {
            return Problem::bad_request(format!("limit={l}: give 1 to {DEVICES_PAGE_MAX}"))
                .into_response();
        }
        (Err(p), _) | (_, Err(p)) => return p.into_response(),
    };
    // Devices of live layers the principal may not see are not there for it; the others at
    // the precision its view allows.
    let mut views: HashMap<String, Option<LayerView>> = HashMap::new();
    let summary = matches!(q.get("summary").map(String::as_str), Some("true" | "1"));
    let list = hub.devices(DeviceQuery {
        layer: q.get("layer").map(String::as_str),
        state: q.get("state").map(String::as_str),
        visible: &mut |d| {
            if !views.contains_key(&*d.layer) {
                views.insert(d.layer.to_string(), st.security.layer(&principal, &d.layer));
            }
            views[&*d.layer]
                .as_ref()
                .is_some_and(|v| d.pos.is_none_or(|p| v.shows(p)))
        },
        offset,
        limit: if summary { 0 } else { limit },
    });
    let count = list.total;
    // `summary=true`: the counts only, for dashboards that poll.
    let devices = (!summary).then(|| {
        list.devices
            .iter()
            .map(|d| shown(views.get(&*d.layer).and_then(Option::as_ref), d.json()))
            .collect::<Vec<_>>()
    });
    let next = (!summary && offset + list.devices.len() < count).then(|| {
        let mut params: Vec<String> = q
            .iter()
            .filter(|(k, _)| k.as_str() != "offset")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        params.sort();
        params.push(format!("offset={}", offset + list.devices.len()));
        format!("/devices?{}", params.join("&"))
    });
    Json(json!({
        "devices": devices,
        "count": count,
        "offset": offset,
        "next": next,
        "states": list.states,
        "reports_last_minute": list.reports_last_minute,
        "reports_total": list.reports_total,
        "open_alarms": list.open_alarms,
    }))
    .into_response()
}

/// Devices in one `/devices` answer unless `limit` says otherwise.
pub const DEVICES_PAGE: usize = 10_000;
/// The largest `limit` of `/devices`.
pub const DEVICES_PAGE_MAX: usize = 100_000;

/// A device's (or event's) JSON as `view` may serve it: its `position` snapped to the view's
/// precision, and only the telemetry the view's attribute list keeps (the record's own
/// fields, id, layer, state, times and position, stay: they are the device).
fn shown(view: Option<&LayerView>, mut v: serde_json::Value) -> serde_json::Value {
    if let Some(view) = view.filter(|v| v.attributes.is_some()) {
        if let Some(t) = v.get_mut("telemetry").and_then(|t| t.as_object_mut()) {
            t.retain(|k, _| view.keeps(k));
        }
        if let Some(o) = v.as_object_mut() {
            o.retain(|k, _| !matches!(k.as_str(), "kind" | "interval_s") || view.keeps(k));
        }
    }
    if let Some(view) = view.filter(|v| v.precision_m.is_some())
        && let Some(p) = v.get("position").and_then(|p| p.as_array())
        && let [Some(lon), Some(lat)] = [p.first(), p.get(1)].map(|x| x.and_then(|x| x.as_f64()))
    {
        v["position"] = json!(view.position([lon, lat]));
    }
    v
}

/// `GET /devices/{id}`: last fix, state, telemetry.
pub async fn device(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    LiveHub(hub): LiveHub,
    Path(id): Path<String>,
) -> Response {
    let found = hub
        .device(&id)
        .and_then(|d| Some((st.security.layer(&principal, &d.layer)?, d)))
        .filter(|(v, d)| d.pos.is_none_or(|p| v.shows(p)));
    match found {
        Some((view, d)) => Json(shown(Some(&view), d.json())).into_response(),
        None => live_problem(LiveError::UnknownDevice(id)),
    }
}

fn seconds(q: &HashMap<String, String>, key: &str, default: f64) -> Result<f64, Problem> {
    match q.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| {
                Problem::bad_request(format!(
                    "{key}={v:?}: give seconds since 1970-01-01 UTC, like {:.0}",
                    now_s()
                ))
            }),
    }
}

/// `GET /devices/{id}/track?from=&to=&limit=`: position history (device times in seconds
/// since the epoch; default the last 24 hours), oldest first, late fixes flagged.
pub async fn track(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    LiveHub(hub): LiveHub,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(view) = hub
        .device(&id)
        .and_then(|d| Some((st.security.layer(&principal, &d.layer)?, d)))
        .filter(|(v, d)| d.pos.is_none_or(|p| v.shows(p)))
        .map(|(v, _)| v)
    else {
        return live_problem(LiveError::UnknownDevice(id));
    };
    let now = now_s();
    let (from, to) = match (
        seconds(&q, "from", now - 86_400.0),
        seconds(&q, "to", now + 600.0),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(p), _) | (_, Err(p)) => return p.into_response(),
    };
    let limit: usize = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 10_000,
        Some(Ok(n)) if (1..=100_000).contains(&n) => n,
        Some(_) => return Problem::bad_request("limit must be 1..100000").into_response(),
    };
    let h = Arc::clone(&hub);
    let id2 = id.clone();
    let fixes = match tokio::task::spawn_blocking(move || h.track(&id2, from, to, limit)).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return live_problem(e),
        Err(e) => return live_problem(LiveError::Io(e.to_string())),
    };
    // History outside the allowed area is not served either.
    let fixes: Vec<_> = fixes
        .into_iter()
        .filter(|f| f.pos.is_none_or(|p| view.shows(p)))
        .collect();
    let coords: Vec<[f64; 2]> = fixes
        .iter()
        .filter(|f| !f.late)
        .filter_map(|f| f.pos.map(|p| view.position(p)))
        .collect();
    Json(json!({
        "device": id,
        "from": from,
        "to": to,
        "fixes": fixes.iter().map(|f| json!({
            "t": f.t, "position": f.pos.map(|p| view.position(p)), "late": f.late,
            "telemetry": f.telemetry.iter().filter(|(k, _)| view.keeps(k)).cloned().collect::<HashMap<String, f64>>(),
        })).collect::<Vec<_>>(),
        "geojson": {"type": "Feature", "properties": {"device": id},
                    "geometry": {"type": "LineString", "coordinates": coords}},
    }))
    .into_response()
}

struct Filter {
    layers: Option<Vec<String>>,
    bbox: Option<[f64; 4]>,
    /// Who watches: events of layers it may not see are not sent (decided per event, so a
    /// classification changed while it watches applies at once).
    principal: Principal,
    security: Arc<Security>,
}

impl Filter {
    /// The event as this client may see it: none for a layer it may not see, positions
    /// snapped where its view limits their precision (the bounding box is tested on what it
    /// sees).
    fn shown(&self, e: &StreamEvent) -> Option<Event> {
        let view = match &e.layer {
            Some(l) => Some(self.security.layer(&self.principal, l)?),
            None => None,
        };
        // Events outside the allowed area are not sent; nor geofence events to views with a
        // precision limit (a crossing's time and place are finer than the limit).
        if let (Some(v), Some(p)) = (&view, e.pos)
            && !v.shows(p)
        {
            return None;
        }
        if e.event == "geofence" && view.as_ref().is_some_and(|v| v.precision_m.is_some()) {
            return None;
        }
        match view.filter(|v| v.precision_m.is_some() || v.attributes.is_some()) {
            None => self.pass(e).then(|| sse_event(e)),
            Some(v) => {
                let mut snapped = StreamEvent {
                    pos: e.pos.map(|p| v.position(p)),
                    ..e.clone()
                };
                if let Ok(data) = serde_json::from_str::<serde_json::Value>(&e.data) {
                    snapped.data = shown(Some(&v), data).to_string();
                }
                self.pass(&snapped).then(|| sse_event(&snapped))
            }
        }
    }

    fn pass(&self, e: &StreamEvent) -> bool {
        if let Some(ls) = &self.layers
            && let Some(l) = &e.layer
            && !ls.contains(l)
        {
            return false;
        }
        if let Some(b) = self.bbox
            && let Some(p) = e.pos
            && !(p[0] >= b[0] && p[0] <= b[2] && p[1] >= b[1] && p[1] <= b[3])
        {
            return false;
        }
        true
    }
}

fn sse_event(e: &StreamEvent) -> Event {
    let ev = Event::default().event(e.event).data(e.data.clone());
    // An alert is not in the device log: it carries no id of its own (a resuming client's
    // Last-Event-ID stays the last logged event's).
    if e.event == "alert" {
        ev
    } else {
        ev.id(e.id.to_string())
    }
}

/// `GET /stream?layers=a,b&bbox=minlon,minlat,maxlon,maxlat`: Server-Sent Events
/// (`position`, `state`, `geofence`, `geofences`, `removed` with ids; `alert` from the alert
/// rules); `Last-Event-ID` resumes. A client
/// that falls [`crate::live::STREAM_BUFFER`] events behind gets a final `cutoff` event and
/// is disconnected; ingest never waits for it.
pub async fn stream(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(client): Extension<Client>,
    LiveHub(hub): LiveHub,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let layers = q
        .get("layers")
        .map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>());
    let bbox = match q.get("bbox") {
        None => None,
        Some(b) => {
            let v: Vec<f64> = b.split(',').filter_map(|x| x.trim().parse().ok()).collect();
            if v.len() != 4 || v[0] > v[2] || v[1] > v[3] {
                return Problem::bad_request(format!(
                    "bbox={b:?}: give minlon,minlat,maxlon,maxlat"
                ))
                .into_response();
            }
            Some([v[0], v[1], v[2], v[3]])
        }
    };
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| q.get("last_event_id").cloned());
    let last_id = match last_id.map(|s| s.trim().parse::<u64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return Problem::bad_request("Last-Event-ID must be an event id from this stream")
                .into_response();
        }
    };
    let Some(permit) = st
        .limiter
        .stream(&super::access::caller(&principal, &client.0))
    else {
        return super::access::too_many(5, "too many open streams for this key (or address)");
    };
    // A resume replays recent events: history, for roles with the tracks right only; the
    // others are told to reload (`reset`) instead.
    let may_replay = principal.has(crate::security::policy::Right::Tracks);
    let crate::live::Subscription {
        events: rx,
        replay,
        missed,
    } = hub.subscribe(last_id.filter(|_| may_replay));
    let missed = missed || (last_id.is_some() && !may_replay);
    let filter = Filter {
        layers,
        bbox,
        principal,
        security: Arc::clone(&st.security),
    };
    let mut head: Vec<Event> = Vec::new();
    if missed {
        head.push(
            Event::default()
                .event("reset")
                .data(r#"{"reason":"events were missed; reload /devices"}"#),
        );
    }
    head.extend(replay.iter().filter_map(|e| filter.shown(e)));
    struct S {
        head: std::vec::IntoIter<Event>,
        rx: tokio::sync::broadcast::Receiver<Arc<StreamEvent>>,
        filter: Filter,
        done: bool,
        /// Held while the stream is open: counts against the caller's cap.
        _permit: crate::security::limits::StreamPermit,
        /// When the key was last checked.
        checked: Instant,
        /// Events up to this id the client has (resumed with `Last-Event-ID`, possibly on a
        /// server of a cluster that is a little behind the one it left): not sent again.
        after: u64,
    }
    let after = replay
        .last()
        .map(|e| e.id)
        .max(last_id.filter(|_| may_replay))
        .unwrap_or(0);
    let s = S {
        after,
        head: head.into_iter(),
        rx,
        filter,
        done: false,
        _permit: permit,
        checked: Instant::now(),
    };
    let events = futures_util::stream::unfold(s, |mut s| async move {
        if let Some(e) = s.head.next() {
            return Some((Ok::<Event, Infallible>(e), s));
        }
        if s.done {
            return None;
        }
        loop {
            // The key is checked again every second while the stream is open: a revoked or
            // expired key, or a changed role, applies to open streams too.
            let next = tokio::time::timeout(Duration::from_secs(1), s.rx.recv()).await;
            if s.checked.elapsed() >= Duration::from_secs(1) {
                s.checked = Instant::now();
                match s.filter.security.recheck(&s.filter.principal) {
                    Some(p) => s.filter.principal = p,
                    None => {
                        s.done = true;
                        let e = Event::default()
                            .event("cutoff")
                            .data(r#"{"reason":"the key was revoked or expired"}"#);
                        return Some((Ok(e), s));
                    }
                }
            }
            let Ok(next) = next else {
                continue; // a quiet second
            };
            match next {
                Ok(e) => {
                    if e.id <= s.after {
                        continue;
                    }
                    if let Some(ev) = s.filter.shown(&e) {
                        return Some((Ok(ev), s));
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    s.done = true;
                    let e = Event::default()
                        .event("cutoff")
                        .data(json!({"reason": "client too slow", "missed": n}).to_string());
                    return Some((Ok(e), s));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// True if `p` may see fence `f`: every layer it names is one `p` may see (a fence of every
/// layer names none).
fn fence_visible(st: &AppState, p: &Principal, f: &crate::live::fence::Fence) -> bool {
    f.layers.iter().all(|l| st.security.layer(p, l).is_some())
}

/// `GET /geofences`: a GeoJSON FeatureCollection of the fences the caller may see.
pub async fn list_fences(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    LiveHub(hub): LiveHub,
) -> Response {
    let features: Vec<serde_json::Value> = hub
        .fences()
        .iter()
        .filter(|f| fence_visible(&st, &principal, f))
        .map(|f| f.to_geojson())
        .collect();
    Json(json!({"type": "FeatureCollection", "features": features})).into_response()
}

/// `GET /geofences/{id}`.
pub async fn get_fence(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    LiveHub(hub): LiveHub,
    Path(id): Path<String>,
) -> Response {
    match hub.fence(&id).filter(|f| fence_visible(&st, &principal, f)) {
        Some(f) => Json(f.to_geojson()).into_response(),
        None => live_problem(LiveError::UnknownFence(id)),
    }
}

/// `POST /geofences`: a GeoJSON Feature (Polygon or MultiPolygon; `id`, and `name` and
/// `layers` properties optional) or a bare geometry. 201 with the stored fence once durable.
pub async fn put_fence(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(client): Extension<Client>,
    LiveHub(hub): LiveHub,
    body: Bytes,
) -> Response {
    // A fence tells exactly when a device crosses it: placing one is exact-position access.
    if !principal.has(crate::security::policy::Right::ExactPositions) {
        return super::access::refused(&principal, crate::security::policy::Right::ExactPositions);
    }
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return Problem::bad_request(format!("geofence JSON: {e}")).into_response(),
    };
    match hub.put_fence(&v).await {
        Ok(fence) => {
            audit(&st, &principal, &client, "geofence.put", &fence.id, "ok");
            let mut r = Json(fence.to_geojson()).into_response();
            *r.status_mut() = StatusCode::CREATED;
            r
        }
        Err(e) => live_problem(e),
    }
}

/// `DELETE /geofences/{id}`: 204 once durable.
pub async fn delete_fence(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(client): Extension<Client>,
    LiveHub(hub): LiveHub,
    Path(id): Path<String>,
) -> Response {
    match hub.delete_fence(&id).await {
        Ok(()) => {
            audit(&st, &principal, &client, "geofence.delete", &id, "ok");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => live_problem(e),
    }
}

/// Appends a change made through the API to the audit log, off the request's path.
fn audit(
    st: &AppState,
    p: &Principal,
    client: &Client,
    action: &'static str,
    target: &str,
    outcome: &'static str,
) {
    let security = Arc::clone(&st.security);
    let (key_id, role, client, target) = (
        p.key_id.clone().unwrap_or_else(|| "-".into()),
        p.role.name.clone(),
        client.0.clone(),
        target.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        security.audit(&crate::security::audit::Event {
            key_id: &key_id,
            role: &role,
            client: &client,
            action,
            target: &target,
            outcome,
        })
    });
}

/// `GET /ready`: 200 when every check passes (store readable, every layer of the catalog
/// served, device log in service and writable, listeners running, catalog read within 10 s),
/// else 503; both name each check and which failed.
pub async fn ready(State(st): State<AppState>) -> Response {
    let checks = crate::ops::ready::checks(&st.engine, st.live.as_deref(), &st.listeners);
    let failed: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    let body = json!({
        "status": if failed.is_empty() { "ready" } else { "not ready" },
        "failed": failed,
        "checks": checks,
    });
    let mut r = Json(body).into_response();
    if !failed.is_empty() {
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    r
}
