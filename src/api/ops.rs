//! The operations endpoints: `GET /alerts` (the alert rules' states and recent changes) and
//! `GET /admin/report` (the operation report, JSON or HTML).

use super::AppState;
use super::problem::Problem;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::HashMap;

/// `GET /alerts`: every rule with its state (`inactive`, `pending`, `firing`), the figure it
/// watches and what it says, the firing ones, and the last changes (oldest first).
pub async fn alerts(State(st): State<AppState>) -> Response {
    let Some(a) = &st.alerts else {
        return axum::Json(json!({
            "rules": [],
            "firing": [],
            "recent": [],
            "note": "no alert rules: start the server with --alerts FILE",
        }))
        .into_response();
    };
    let status = a.status();
    let firing: Vec<_> = status.iter().filter(|r| r.state == "firing").collect();
    axum::Json(json!({
        "interval_s": a.rules().interval_s,
        "rules": status,
        "firing": firing,
        "recent": a.history(),
    }))
    .into_response()
}

/// `GET /admin/report?since=7d&format=json|html`: the operation report of the store's figures
/// since then, the running minute included (HTML unless `format=json` or the client asks for
/// JSON only).
pub async fn report(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let since_s = match q
        .get("since")
        .map(|s| crate::security::keys::parse_lifetime(s))
    {
        None => 7 * 86_400,
        Some(Ok(s)) => s,
        Some(Err(e)) => return Problem::bad_request(format!("since: {e}")).into_response(),
    };
    let json_wanted = match q.get("format").map(String::as_str) {
        Some("json") => true,
        Some("html") | None => {
            !q.contains_key("format")
                && headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
        }
        Some(other) => {
            return Problem::bad_request(format!("format={other:?}: give json or html"))
                .into_response();
        }
    };
    let st2 = st.clone();
    let made = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let now = crate::security::keys::now() as i64;
        let mut current = st2.minutes.current();
        let (devices, ready) =
            crate::ops::minutes::sample(&st2.engine, st2.live.as_deref(), &st2.listeners);
        current.devices = devices;
        current.samples = 1;
        current.up = 1;
        current.ready = u64::from(ready);
        let report = crate::ops::report::Report::build(
            st2.engine.store().dir(),
            now - since_s as i64,
            now,
            Some(current),
        )?;
        let map = if json_wanted {
            None
        } else {
            let devices = st2.live.as_ref().map(|h| h.positions()).unwrap_or_default();
            Some(crate::ops::report::map_png(
                st2.engine.store(),
                &devices,
                1024,
                640,
            )?)
        };
        Ok((report, map))
    })
    .await;
    let (report, map) = match made {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Report", e).into_response();
        }
        Err(e) => {
            return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Report", e.to_string())
                .into_response();
        }
    };
    if json_wanted {
        return axum::Json(report).into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        crate::ops::report::html(&report, map.as_deref()),
    )
        .into_response()
}
