//! Features of a collection: `/ogc/collections/{id}/items` (pages of GeoJSON with `bbox`,
//! `limit`, `offset`, `datetime` and links, or the whole layer as a file with `f=`) and
//! `/ogc/collections/{id}/items/{fid}`.

use super::{CRS84, DEFAULT_LIMIT, GEOJSON, JSON, MAX_LIMIT, link, only, param, visible};
use crate::api::problem::Problem;
use crate::api::{AppState, access, audit_read, base_url};
use crate::engine::ServedLayer;
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
