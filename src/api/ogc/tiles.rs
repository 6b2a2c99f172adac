//! OGC API Tiles core for the WebMercatorQuad tile matrix set: the tile matrix sets
//! (`/ogc/tileMatrixSets`, the TMS 2.0 JSON of WebMercatorQuad), each collection's tilesets
//! list and tileset metadata (TileJSON-like limits per zoom, the `item` template), and the
//! tiles themselves at `/ogc/collections/{id}/tiles/WebMercatorQuad/{tileMatrix}/{tileRow}/{tileCol}`:
//! the very tiles of `/tiles/{id}/{z}/{x}/{y}.mvt` (the row is the XYZ y), an empty one 204.

use super::{CRS84, JSON, answer, link, metadata_query, only, visible};
use crate::api::problem::Problem;
use crate::api::{AppState, access, base_url};
use crate::security::Principal;
use crate::tile::TileId;
use crate::tile::mercator::tile_containing;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The one tile matrix set served.
pub const WEB_MERCATOR_QUAD: &str = "WebMercatorQuad";
const TMS_URI: &str = "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad";
const EPSG3857: &str = "http://www.opengis.net/def/crs/EPSG/0/3857";
const MVT: &str = "application/vnd.mapbox-vector-tile";
/// The deepest tile matrix of the set.
const MAX_MATRIX: u32 = 24;

/// The TMS 2.0 definition of WebMercatorQuad, levels 0 to 24.
pub fn web_mercator_quad() -> Value {
    let half = 20_037_508.342_789_2;
    let matrices: Vec<Value> = (0..=MAX_MATRIX)
        .map(|z| {
            let n = 1u64 << z;
            json!({
                "id": z.to_string(),
                "scaleDenominator": 559_082_264.028_717 / n as f64,
                "cellSize": 156_543.033_928_041 / n as f64,
                "cornerOfOrigin": "topLeft",
                "pointOfOrigin": [-half, half],
                "tileWidth": 256,
                "tileHeight": 256,
                "matrixWidth": n,
                "matrixHeight": n,
            })
        })
        .collect();
    json!({
        "id": WEB_MERCATOR_QUAD,
        "title": "Google Maps Compatible for the World",
        "uri": TMS_URI,
        "crs": EPSG3857,
        "orderedAxes": ["X", "Y"],
        "wellKnownScaleSet": "http://www.opengis.net/def/wkss/OGC/1.0/GoogleMapsCompatible",
        "tileMatrices": matrices,
    })
}

/// `GET /ogc/tileMatrixSets`.
pub async fn matrix_sets(
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
            "tileMatrixSets": [{
                "id": WEB_MERCATOR_QUAD,
                "title": "Google Maps Compatible for the World",
                "uri": TMS_URI,
                "links": [link(format!("{base}/tileMatrixSets/{WEB_MERCATOR_QUAD}"), "self", JSON, "WebMercatorQuad")],
            }],
            "links": [link(format!("{base}/tileMatrixSets"), "self", JSON, "the tile matrix sets")],
        }),
        JSON,
    )
}

fn unknown_set(id: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "Unknown tile matrix set",
        format!("no tile matrix set {id:?}; the one served is {WEB_MERCATOR_QUAD}"),
    )
}

/// `GET /ogc/tileMatrixSets/{id}`.
pub async fn matrix_set(
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(p) = metadata_query(&q) {
        return p.into_response();
    }
    if id != WEB_MERCATOR_QUAD {
        return unknown_set(&id).into_response();
    }
    answer(&web_mercator_quad(), JSON)
}

/// The short description of a collection's WebMercatorQuad tileset, as the tilesets list
/// gives it.
fn tileset_summary(base: &str, id: &str) -> Value {
    json!({
        "title": format!("{id} as Mapbox Vector Tiles"),
        "dataType": "vector",
        "crs": EPSG3857,
        "tileMatrixSetURI": TMS_URI,
        "links": [
            link(format!("{base}/collections/{id}/tiles/{WEB_MERCATOR_QUAD}"), "self", JSON, "the tileset"),
            link(format!("{base}/tileMatrixSets/{WEB_MERCATOR_QUAD}"), "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme", JSON, "WebMercatorQuad"),
        ],
    })
}

/// `GET /ogc/collections/{id}/tiles`: the tilesets list.
pub async fn tilesets(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = metadata_query(&q) {
        return p.into_response();
    }
    if let Err(p) = visible(&st, &principal, &id) {
        return p.into_response();
    }
    let base = format!("{}/ogc", base_url(&st, &headers));
    answer(
        &json!({
            "links": [link(format!("{base}/collections/{id}/tiles"), "self", JSON, "the tilesets")],
            "tilesets": [tileset_summary(&base, &id)],
        }),
        JSON,
    )
}

/// `GET /ogc/collections/{id}/tiles/{tms}`: the tileset's metadata, with the tile template
/// and the rows and columns that hold the layer at each of its zooms.
pub async fn tileset(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, tms)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = metadata_query(&q) {
        return p.into_response();
    }
    if tms != WEB_MERCATOR_QUAD {
        return unknown_set(&tms).into_response();
    }
    let (layer, view) = match visible(&st, &principal, &id) {
        Ok(v) => v,
        Err(p) => return p.into_response(),
    };
    let base = format!("{}/ogc", base_url(&st, &headers));
    let reader = &layer.reader;
    let [w, s, e, n] = reader.meta().bounds;
    let (minz, maxz) = (reader.minzoom(), reader.maxzoom());
    let limits: Vec<Value> = (minz..=maxz)
        .map(|z| {
            let (x0, y0) = tile_containing(w, n, z);
            let (x1, y1) = tile_containing(e, s, z);
            json!({ "tileMatrix": z.to_string(), "minTileRow": y0, "maxTileRow": y1, "minTileCol": x0, "maxTileCol": x1 })
        })
        .collect();
    let mut summary = tileset_summary(&base, &id);
    let fields = crate::api::file_fields(&layer, &view);
    let extra = json!({
        "tileMatrixSetLimits": limits,
        "boundingBox": { "lowerLeft": [w, s], "upperRight": [e, n], "crs": CRS84 },
        "centerPoint": { "coordinates": [(w + e) / 2.0, (s + n) / 2.0], "crs": CRS84, "tileMatrix": ((minz + maxz) / 2).to_string() },
        "layers": [{
            "id": id,
            "dataType": "vector",
            "minTileMatrix": minz.to_string(),
            "maxTileMatrix": maxz.to_string(),
            "propertiesSchema": { "type": "object", "properties": fields.iter().map(|(k, t)| {
                let t = match t.as_str() { Some("Number") => "number", Some("Boolean") => "boolean", _ => "string" };
                (k.clone(), json!({ "type": t }))
            }).collect::<serde_json::Map<String, Value>>() },
        }],
    });
    if let (Some(m), Value::Object(x)) = (summary.as_object_mut(), extra) {
        m.extend(x);
        if let Some(Value::Array(links)) = m.get_mut("links") {
            links.push(json!({
                "href": format!("{base}/collections/{id}/tiles/{WEB_MERCATOR_QUAD}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}"),
                "rel": "item", "type": MVT, "templated": true, "title": "a tile",
            }));
            links.push(link(
                format!("{base}/collections/{id}"),
                "collection",
                JSON,
                "the collection",
            ));
        }
    }
    answer(&summary, JSON)
}

/// `GET /ogc/collections/{id}/tiles/{tms}/{tileMatrix}/{tileRow}/{tileCol}`: the vector tile.
pub async fn tile(
    State(st): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(client): Extension<access::Client>,
    Path((id, tms, z, row, col)): Path<(String, String, String, String, String)>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = only(&q, &["f"]).and_then(|()| match super::param(&q, "f") {
        None | Some("mvt") => Ok(()),
        Some(o) => Err(Problem::new(
            StatusCode::NOT_ACCEPTABLE,
            "Format not available",
            format!("f={o:?}: tiles are Mapbox Vector Tiles (f=mvt)"),
        )),
    }) {
        return p.into_response();
    }
    if tms != WEB_MERCATOR_QUAD {
        return unknown_set(&tms).into_response();
    }
    let num = |what: &str, v: &str| {
        v.parse::<u64>()
            .map_err(|_| Problem::bad_request(format!("{what} must be a whole number, got {v:?}")))
    };
    let (z, y, x) = match (
        num("tileMatrix", &z),
        num("tileRow", &row),
        num("tileCol", &col),
    ) {
        (Ok(z), Ok(y), Ok(x)) => (z, y, x),
        (Err(p), _, _) | (_, Err(p), _) | (_, _, Err(p)) => return p.into_response(),
    };
    // Outside the tile matrix set: 404, as the standard asks.
    let tile = match TileId::new(z.min(u64::from(MAX_MATRIX) + 1) as u32, x, y) {
        Ok(t) if z <= u64::from(MAX_MATRIX) => t,
        _ => {
            return Problem::new(
                StatusCode::NOT_FOUND,
                "Outside the tile matrix set",
                format!("tile {z}/{y}/{x} is not in {WEB_MERCATOR_QUAD} (tile matrices 0 to {MAX_MATRIX}, rows and columns below 2^tileMatrix)"),
            )
            .into_response();
        }
    };
    // Layer files only (live layers are not collections); hidden ones do not exist.
    if let Err(p) = visible(&st, &principal, &id) {
        return p.into_response();
    }
    crate::api::serve_tile(st, principal, client, id, tile, headers).await
}
