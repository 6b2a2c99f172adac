//! PNG raster tiles (`/tiles/{layers}/{z}/{x}/{y}.png`, `@2x.png` at 512 pixels,
//! `?style=city`) and static maps (`/static/{style}/{lon},{lat},{zoom}/{w}x{h}.png`): the
//! caller's vector tiles drawn by the raster room. A PNG tile is cached under its vector
//! tile's ETag (layer versions and the caller's view), the style and the pixel ratio.

use super::problem::Problem;
use super::{AppState, access, vector_tile};
use crate::raster::{MAX_STATIC_SIDE, TileToDraw};
use crate::security::Principal;
use crate::tile::TileId;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// The style of a request (`?style=`, default `city`), or 404 naming the styles.
fn style_of(st: &AppState, q: &[(String, String)]) -> Result<String, Problem> {
    for (k, _) in q {
        if k != "style" && k != "key" && k != "layers" {
            return Err(Problem::bad_request(format!(
                "unknown query parameter {k:?}; a raster takes style= (and layers= for a static map)"
            )));
        }
    }
    let name = q
        .iter()
        .find(|(k, _)| k == "style")
        .map_or("city", |(_, v)| v.as_str());
    if st.rasters.has_style(name) {
        Ok(name.to_string())
    } else {
        Err(Problem::new(
            StatusCode::NOT_FOUND,
            "Unknown style",
            format!(
                "no style named {name:?}; the styles are {}",
                super::styles::names().collect::<Vec<_>>().join(", ")
            ),
        ))
    }
}

fn png_response(png: Bytes, etag: &str, cache_control: &str, headers: &HeaderMap) -> Response {
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut r = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Response::new(Body::from(png))
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(cache_control) {
        h.insert(header::CACHE_CONTROL, v);
    }
    r
}

/// `GET /tiles/{layers}/{z}/{x}/{y}[@2x].png`.
#[allow(clippy::too_many_arguments)]
pub async fn tile(
    st: &AppState,
    principal: &Principal,
    client: &access::Client,
    layers: &str,
    tile: TileId,
    ratio: u32,
    q: &[(String, String)],
    headers: &HeaderMap,
) -> Response {
    let style = match style_of(st, q) {
        Ok(s) => s,
        Err(p) => return p.into_response(),
    };
    // The gzip form: the one browsers fetch, so usually cached already (drawing unzips it).
    let (body, cache_control) = match vector_tile(st, principal, client, layers, tile, true).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let etag = format!("\"{}-{style}-{ratio}x\"", body.etag.trim_matches('"'));
    if let Some(png) = st.rasters.cached(&etag) {
        return png_response(png, &etag, &cache_control, headers);
    }
    let rasters = std::sync::Arc::clone(&st.rasters);
    let engine = std::sync::Arc::clone(&st.engine);
    let px = 256 * ratio;
    let made = tokio::task::spawn_blocking(move || {
        rasters.render(
            &style,
            &[TileToDraw {
                mvt: &body.bytes,
                x: 0.0,
                y: 0.0,
            }],
            px as f32,
            f64::from(tile.z),
            (px, px),
            &|n| engine.is_live_layer(n),
        )
    })
    .await;
    match made {
        Ok(Ok(png)) => {
            let png = Bytes::from(png);
            st.rasters.keep(etag.clone(), png.clone());
            png_response(png, &etag, &cache_control, headers)
        }
        Ok(Err(e)) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Raster failed",
            e.to_string(),
        )
        .into_response(),
        Err(e) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Raster failed",
            e.to_string(),
        )
        .into_response(),
    }
}

/// `GET /static/{style}/{lon},{lat},{zoom}/{w}x{h}.png[?layers=a,b]`: a map image centred on
/// a point, of the style's layers (or `layers`), at a whole zoom.
pub async fn static_map(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(client): Extension<access::Client>,
    Path((style, at, size)): Path<(String, String, String)>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    match static_png(&st, &principal, &client, &style, &at, &size, &q).await {
        Ok(r) => r,
        Err(r) => r,
    }
}

#[allow(clippy::too_many_arguments)]
async fn static_png(
    st: &AppState,
    principal: &Principal,
    client: &access::Client,
    style: &str,
    at: &str,
    size: &str,
    q: &[(String, String)],
) -> Result<Response, Response> {
    let bad = |m: String| Problem::bad_request(m).into_response();
    let mut q = q.to_vec();
    q.push(("style".into(), style.to_string()));
    let style = style_of(st, &q).map_err(IntoResponse::into_response)?;
    let n: Vec<f64> = at
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad(format!("{at:?}: lon,lat,zoom (three numbers)")))?;
    let [lon, lat, zoom] = n.as_slice() else {
        return Err(bad(format!("{at:?}: lon,lat,zoom (three numbers)")));
    };
    if !(-180.0..=180.0).contains(lon) || !(-85.05..=85.05).contains(lat) {
        return Err(bad(format!(
            "{lon},{lat}: longitude within ±180, latitude within ±85.05"
        )));
    }
    if !(0.0..=22.0).contains(zoom) || zoom.fract() != 0.0 {
        return Err(bad(format!("zoom {zoom}: a whole zoom from 0 to 22")));
    }
    let z = *zoom as u8;
    let (w, h) = size
        .strip_suffix(".png")
        .and_then(|s| s.split_once('x'))
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .ok_or_else(|| bad(format!("{size:?}: WIDTHxHEIGHT.png, e.g. 800x600.png")))?;
    if w == 0 || h == 0 || w > MAX_STATIC_SIDE || h > MAX_STATIC_SIDE {
        return Err(bad(format!(
            "{w}x{h}: each side from 1 to {MAX_STATIC_SIDE} pixels"
        )));
    }
    // The layers: given, or those of the style this server has (that the caller may see).
    let layers: Vec<String> = match q.iter().find(|(k, _)| k == "layers") {
        Some((_, v)) => v.split(',').map(str::to_string).collect(),
        None => {
            let s = super::styles::style(&style, "", &[], |n| {
                st.engine.has_layer(n) && st.security.layer(principal, n).is_some()
            })
            .unwrap_or_default();
            let mut v: Vec<String> = s
                .get("sources")
                .and_then(serde_json::Value::as_object)
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            v.sort();
            v
        }
    };
    if layers.is_empty() {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "Nothing to draw",
            "this style draws no layer you may see on this server; name some with layers=",
        )
        .into_response());
    }
    let layers = layers.join(",");
    // The view's centre in world pixels at z; the tiles it touches (x wraps around).
    let world = 256.0 * f64::from(1u32 << z);
    let [gx, gy] = crate::tile::mercator::lonlat_to_grid_f64(*lon, *lat);
    let full = crate::tile::mercator::GRID_SIZE;
    let (cx, cy) = (gx / full * world, gy / full * world);
    let (left, top) = (cx - f64::from(w) / 2.0, cy - f64::from(h) / 2.0);
    let n = 1i64 << z;
    let (tx0, tx1) = (
        (left / 256.0).floor() as i64,
        ((left + f64::from(w)) / 256.0).ceil() as i64,
    );
    let (ty0, ty1) = (
        (top / 256.0).floor().max(0.0) as i64,
        ((top + f64::from(h)) / 256.0).ceil().min(n as f64) as i64,
    );
    let mut parts = Vec::new();
    for ty in ty0..ty1 {
        for tx in tx0..tx1 {
            let x = tx.rem_euclid(n) as u64;
            let Ok(id) = TileId::new(u32::from(z), x, ty as u64) else {
                continue;
            };
            let (body, _) = vector_tile(st, principal, client, &layers, id, true).await?;
            let (px, py) = (
                (tx as f64 * 256.0 - left) as f32,
                (ty as f64 * 256.0 - top) as f32,
            );
            parts.push((body, px, py));
        }
    }
    let rasters = std::sync::Arc::clone(&st.rasters);
    let engine = std::sync::Arc::clone(&st.engine);
    let png = tokio::task::spawn_blocking(move || {
        let tiles: Vec<TileToDraw<'_>> = parts
            .iter()
            .map(|(b, x, y)| TileToDraw {
                mvt: &b.bytes,
                x: *x,
                y: *y,
            })
            .collect();
        rasters.render(&style, &tiles, 256.0, f64::from(z), (w, h), &|n| {
            engine.is_live_layer(n)
        })
    })
    .await
    .map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Static map failed",
            e.to_string(),
        )
        .into_response()
    })?
    .map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Static map failed",
            e.to_string(),
        )
        .into_response()
    })?;
    let mut r = Response::new(Body::from(png));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=60"),
    );
    Ok(r)
}
