//! HTTP handlers of the live layer: `POST /ingest`, `GET /devices`, `GET /devices/{id}`,
//! `GET /devices/{id}/track`, `GET /stream` (Server-Sent Events), `/geofences`, `GET /ready`.
//! Thin: parse, call the hub, respond.

use super::AppState;
use super::problem::Problem;
use crate::live::fence::Fence;
use crate::live::payload::{self, Format, Report};
use crate::live::wal::Record;
use crate::live::{Hub, Principal, StreamEvent, SubmitError, now_s};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

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

fn submit_problem(e: SubmitError) -> Response {
    match e {
        SubmitError::Overloaded => {
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
        SubmitError::Failed(why) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not accepting reports",
            why,
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
    let Some(secret) = credential(&headers, &q) else {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "Credential needed",
            "send an ingest key or a device secret as `Authorization: Bearer ...` or ?key=",
        )
        .into_response();
    };
    let Some(principal) = hub.authenticate(&secret, None) else {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "Unknown credential",
            "the ingest key or device secret is not registered",
        )
        .into_response();
    };
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
    let now = now_s();
    // Per-record outcomes: compact JSON is checked record by record; a SenML pack is one
    // document (its records share base fields), so it is accepted or refused whole.
    let parsed: Vec<Result<Report, String>> = match format {
        Format::Json => {
            let v: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    return Problem::bad_request(format!("JSON: {e}")).into_response();
                }
            };
            let items: Vec<&serde_json::Value> = match &v {
                serde_json::Value::Array(a) => a.iter().collect(),
                o => vec![o],
            };
            if items.len() > payload::MAX_RECORDS {
                return Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Batch too large",
                    format!(
                        "{} records; send at most {} per request",
                        items.len(),
                        payload::MAX_RECORDS
                    ),
                )
                .into_response();
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| payload::compact_record(i, item, now).map_err(|e| e.0))
                .collect()
        }
        f => match payload::parse(f, &body, now) {
            Ok(reports) => reports.into_iter().map(Ok).collect(),
            Err(e) => return Problem::bad_request(e.0).into_response(),
        },
    };
    let registry = hub.registry();
    let mut records = Vec::with_capacity(parsed.len());
    let mut errors = Vec::new();
    for (i, r) in parsed.into_iter().enumerate() {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                errors.push(json!({"record": i, "error": e}));
                continue;
            }
        };
        let device = match (&r.device, &principal) {
            (Some(d), Principal::Device(own)) if d != own => {
                errors.push(json!({"record": i, "error": format!("this device secret belongs to {own}, not {d}")}));
                continue;
            }
            (Some(d), _) => d.clone(),
            (None, Principal::Device(own)) => own.clone(),
            (None, Principal::Ingest(_)) => {
                errors.push(json!({"record": i, "error": "no device named: give \"device\" (or a SenML base name)"}));
                continue;
            }
        };
        if !registry.reg.devices.contains_key(&device) {
            errors.push(json!({"record": i, "error": format!("unknown device {device}")}));
            continue;
        }
        records.push(Hub::report_record(&device, r, now));
    }
    let accepted = records.len();
    if accepted == 0 {
        let mut r = Json(json!({"accepted": 0, "rejected": errors.len(), "errors": errors}))
            .into_response();
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    }
    let done = match hub.submit(records) {
        Ok(d) => d,
        Err(e) => return submit_problem(e),
    };
    match done.await {
        Ok(Ok(seqs)) => Json(json!({
            "accepted": accepted,
            "rejected": errors.len(),
            "errors": errors,
            "first_seq": seqs.first(),
            "last_seq": seqs.last(),
        }))
        .into_response(),
        Ok(Err(e)) => submit_problem(e),
        Err(_) => submit_problem(SubmitError::Failed("the log thread has stopped".into())),
    }
}

/// `GET /devices[?layer=&state=&summary=true]`: every device with its state and last fix
/// (`null` with `summary=true`), and counts.
pub async fn devices(LiveHub(hub): LiveHub, Query(q): Query<HashMap<String, String>>) -> Response {
    let _ = hub.refresh_registry();
    let (list, counts, alarms) = hub.with_state(|s| {
        let mut counts: HashMap<&'static str, u64> = HashMap::new();
        let mut v: Vec<&crate::live::state::Device> = s
            .devices
            .values()
            .filter(|d| q.get("layer").is_none_or(|l| *l == d.layer))
            .filter(|d| q.get("state").is_none_or(|x| x == d.state.as_str()))
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        for d in &v {
            *counts.entry(d.state.as_str()).or_default() += 1;
        }
        (
            v.into_iter().map(Hub::device_json).collect::<Vec<_>>(),
            counts,
            s.inside.len(),
        )
    });
    let (per_minute, total) = hub.report_rate();
    let count = list.len();
    // `summary=true`: the counts only, for dashboards that poll (the list can be long).
    let list = match q.get("summary").map(String::as_str) {
        Some("true" | "1") => None,
        _ => Some(list),
    };
    Json(json!({
        "devices": list,
        "count": count,
        "states": counts,
        "reports_last_minute": per_minute,
        "reports_total": total,
        "open_alarms": alarms,
    }))
    .into_response()
}

/// `GET /devices/{id}`: last fix, state, telemetry.
pub async fn device(LiveHub(hub): LiveHub, Path(id): Path<String>) -> Response {
    let _ = hub.refresh_registry();
    match hub.with_state(|s| s.devices.get(&id).map(Hub::device_json)) {
        Some(v) => Json(v).into_response(),
        None => Problem::new(
            StatusCode::NOT_FOUND,
            "Unknown device",
            format!("no device {id}; see /devices"),
        )
        .into_response(),
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
    LiveHub(hub): LiveHub,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if hub.device_layer(&id).is_none() {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "Unknown device",
            format!("no device {id}"),
        )
        .into_response();
    }
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
    let fixes = tokio::task::spawn_blocking(move || h.track(&id2, from, to, limit))
        .await
        .unwrap_or_default();
    let coords: Vec<[f64; 2]> = fixes
        .iter()
        .filter(|f| !f.late)
        .filter_map(|f| f.pos)
        .collect();
    Json(json!({
        "device": id,
        "from": from,
        "to": to,
        "fixes": fixes.iter().map(|f| json!({
            "t": f.t, "position": f.pos, "late": f.late,
            "telemetry": f.telemetry.iter().cloned().collect::<HashMap<String, f64>>(),
        })).collect::<Vec<_>>(),
        "geojson": {"type": "Feature", "properties": {"device": id},
                    "geometry": {"type": "LineString", "coordinates": coords}},
    }))
    .into_response()
}

struct Filter {
    layers: Option<Vec<String>>,
    bbox: Option<[f64; 4]>,
}

impl Filter {
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
    Event::default()
        .id(e.id.to_string())
        .event(e.event)
        .data(e.data.clone())
}

/// `GET /stream?layers=a,b&bbox=minlon,minlat,maxlon,maxlat`: Server-Sent Events
/// (`position`, `state`, `geofence`, `geofences`, `removed`) with ids; `Last-Event-ID` resumes. A client
/// that falls [`crate::live::STREAM_BUFFER`] events behind gets a final `cutoff` event and
/// is disconnected; ingest never waits for it.
pub async fn stream(
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
    let (rx, replay, missed) = hub.subscribe(last_id);
    let filter = Filter { layers, bbox };
    let mut head: Vec<Event> = Vec::new();
    if missed {
        head.push(
            Event::default()
                .event("reset")
                .data(r#"{"reason":"events were missed; reload /devices"}"#),
        );
    }
    head.extend(
        replay
            .iter()
            .filter(|e| filter.pass(e))
            .map(|e| sse_event(e)),
    );
    struct S {
        head: std::vec::IntoIter<Event>,
        rx: tokio::sync::broadcast::Receiver<Arc<StreamEvent>>,
        filter: Filter,
        done: bool,
    }
    let s = S {
        head: head.into_iter(),
        rx,
        filter,
        done: false,
    };
    let events = futures_util::stream::unfold(s, |mut s| async move {
        if let Some(e) = s.head.next() {
            return Some((Ok::<Event, Infallible>(e), s));
        }
        if s.done {
            return None;
        }
        loop {
            match s.rx.recv().await {
                Ok(e) => {
                    if s.filter.pass(&e) {
                        return Some((Ok(sse_event(&e)), s));
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

fn fence_json(f: &Fence) -> serde_json::Value {
    json!({
        "type": "Feature",
        "id": f.id,
        "properties": {"name": f.name, "layers": f.layers},
        "geometry": f.geometry,
    })
}

/// `GET /geofences`: a GeoJSON FeatureCollection.
pub async fn list_fences(LiveHub(hub): LiveHub) -> Response {
    let features = hub.with_state(|s| {
        s.fence_set
            .fences()
            .iter()
            .map(fence_json)
            .collect::<Vec<_>>()
    });
    Json(json!({"type": "FeatureCollection", "features": features})).into_response()
}

/// `GET /geofences/{id}`.
pub async fn get_fence(LiveHub(hub): LiveHub, Path(id): Path<String>) -> Response {
    match hub.with_state(|s| s.fence_set.get(&id).map(fence_json)) {
        Some(f) => Json(f).into_response(),
        None => Problem::new(
            StatusCode::NOT_FOUND,
            "Unknown geofence",
            format!("no geofence {id}"),
        )
        .into_response(),
    }
}

/// `POST /geofences`: a GeoJSON Feature (Polygon or MultiPolygon; `id`, and `name` and
/// `layers` properties optional) or a bare geometry. 201 with the stored fence once durable.
pub async fn put_fence(LiveHub(hub): LiveHub, body: Bytes) -> Response {
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return Problem::bad_request(format!("geofence JSON: {e}")).into_response(),
    };
    let (geometry, area) = match Fence::parse_geometry(&v) {
        Ok(x) => x,
        Err(e) => return Problem::bad_request(format!("geofence: {e}")).into_response(),
    };
    let props = v.get("properties");
    let id = match v.get("id") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => format!("fence-{:.0}", now_s() * 1000.0),
    };
    if !crate::live::registry::valid_device_id(&id) {
        return Problem::bad_request(format!(
            "geofence id {id:?}: use 1-64 of A-Z a-z 0-9 . _ : -"
        ))
        .into_response();
    }
    let name = props
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or(&id)
        .to_string();
    let layers: Vec<String> = props
        .and_then(|p| p.get("layers"))
        .and_then(|l| l.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let fence = Fence {
        id,
        name,
        layers,
        geometry,
        area,
    };
    let text = match serde_json::to_string(&fence) {
        Ok(t) => t,
        Err(e) => return Problem::bad_request(e.to_string()).into_response(),
    };
    let done = match hub.submit(vec![Record::FencePut(text)]) {
        Ok(d) => d,
        Err(e) => return submit_problem(e),
    };
    match done.await {
        Ok(Ok(_)) => {
            let mut r = Json(fence_json(&fence)).into_response();
            *r.status_mut() = StatusCode::CREATED;
            r
        }
        Ok(Err(e)) => submit_problem(e),
        Err(_) => submit_problem(SubmitError::Failed("the log thread has stopped".into())),
    }
}

/// `DELETE /geofences/{id}`: 204 once durable.
pub async fn delete_fence(LiveHub(hub): LiveHub, Path(id): Path<String>) -> Response {
    if !hub.with_state(|s| s.fence_set.get(&id).is_some()) {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "Unknown geofence",
            format!("no geofence {id}"),
        )
        .into_response();
    }
    let done = match hub.submit(vec![Record::FenceDel(id)]) {
        Ok(d) => d,
        Err(e) => return submit_problem(e),
    };
    match done.await {
        Ok(Ok(_)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => submit_problem(e),
        Err(_) => submit_problem(SubmitError::Failed("the log thread has stopped".into())),
    }
}

/// `GET /ready`: 200 while the server can acknowledge reports, 503 after a log failure.
pub async fn ready(State(st): State<AppState>) -> Response {
    match st.live.as_ref().map(|h| h.is_ready()) {
        None | Some(Ok(())) => Json(json!({"status": "ready"})).into_response(),
        Some(Err(why)) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Not ready", why).into_response()
        }
    }
}
