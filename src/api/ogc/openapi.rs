//! `GET /ogc/api`: the OpenAPI 3.0 definition of the OGC API (Features Part 1 core and Tiles
//! core), with the parameters and responses each path takes, so that clients and the OGC
//! validators can read what the server offers.

use super::{DEFAULT_LIMIT, MAX_LIMIT, answer, metadata_query};
use crate::api::{AppState, base_url};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

fn ok(description: &str, kind: &str) -> Value {
    json!({
        "200": { "description": description, "content": { kind: { "schema": { "type": "object" } } } },
        "400": { "$ref": "#/components/responses/Problem" },
        "404": { "$ref": "#/components/responses/Problem" },
    })
}

fn get(summary: &str, id: &str, params: Value, responses: Value) -> Value {
    json!({ "get": { "summary": summary, "operationId": id, "parameters": params, "responses": responses } })
}

/// The OpenAPI document, its server at `base` (`…/ogc`).
pub fn document(base: &str) -> Value {
    let f = json!({ "name": "f", "in": "query", "required": false, "schema": { "type": "string", "enum": ["json"] }, "description": "the format (JSON)" });
    let collection = path_param("collectionId", "a layer's name");
    let tiles_f = json!({ "name": "f", "in": "query", "required": false, "schema": { "type": "string", "enum": ["mvt"] } });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Urbis OGC API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The city's layers as OGC API Features (GeoJSON, CRS84) and OGC API Tiles (Mapbox Vector Tiles in WebMercatorQuad). Reading items needs an API key with the `features` right; every layer is shown as the key's role allows.",
            "license": { "name": "MIT OR Apache-2.0" },
        },
        "servers": [{ "url": base }],
        "security": [{}, { "bearer": [] }, { "key": [] }],
        "paths": {
            "/": get("Landing page", "getLandingPage", json!([f]), ok("links to the API, the conformance classes and the collections", "application/json")),
            "/conformance": get("Conformance classes", "getConformanceDeclaration", json!([f]), ok("the conformance classes implemented", "application/json")),
            "/api": get("This document", "getApi", json!([]), ok("the OpenAPI definition", "application/vnd.oai.openapi+json;version=3.0")),
            "/collections": get("The collections", "getCollections", json!([f]), ok("the layers the caller may see", "application/json")),
            "/collections/{collectionId}": get("A collection", "describeCollection", json!([collection, f]), ok("the layer's description and extent", "application/json")),
            "/collections/{collectionId}/items": get("The features", "getFeatures", json!([
                collection,
                { "name": "limit", "in": "query", "required": false, "style": "form", "explode": false,
                  "schema": { "type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT } },
                { "name": "offset", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 0, "default": 0 } },
                { "name": "bbox", "in": "query", "required": false, "style": "form", "explode": false,
                  "description": "west,south,east,north in CRS84 (longitude first); west > east crosses the antimeridian",
                  "schema": { "type": "array", "minItems": 4, "maxItems": 6, "items": { "type": "number" } } },
                { "name": "bbox-crs", "in": "query", "required": false, "schema": { "type": "string", "enum": [super::CRS84] } },
                { "name": "datetime", "in": "query", "required": false, "style": "form", "explode": false,
                  "description": "an instant or interval (RFC 3339); layer files carry no time, so it filters nothing",
                  "schema": { "type": "string" } },
                { "name": "f", "in": "query", "required": false, "description": "json (a page of GeoJSON); fgb, gpkg or geojson download the whole layer",
                  "schema": { "type": "string", "enum": ["json", "fgb", "gpkg", "geojson"] } },
            ]), ok("a page of features with numberMatched, numberReturned and next links", "application/geo+json")),
            "/collections/{collectionId}/items/{featureId}": get("A feature", "getFeature", json!([
                collection, path_param("featureId", "the feature's number in the import, from 1"), f,
            ]), ok("the feature", "application/geo+json")),
            "/collections/{collectionId}/tiles": get("The collection's tilesets", "getCollectionTilesets", json!([collection, f]), ok("the tilesets", "application/json")),
            "/collections/{collectionId}/tiles/{tileMatrixSetId}": get("A tileset", "getCollectionTileset", json!([
                collection, path_param("tileMatrixSetId", "WebMercatorQuad"), f,
            ]), ok("the tileset's metadata", "application/json")),
            "/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}": {
                "get": {
                    "summary": "A vector tile",
                    "operationId": "getCollectionTile",
                    "parameters": [
                        collection,
                        path_param("tileMatrixSetId", "WebMercatorQuad"),
                        path_param("tileMatrix", "the zoom, 0 to 24"),
                        path_param("tileRow", "the row from the top (the XYZ y)"),
                        path_param("tileCol", "the column from the west (the XYZ x)"),
                        tiles_f,
                    ],
                    "responses": {
                        "200": { "description": "the tile", "content": { "application/vnd.mapbox-vector-tile": { "schema": { "type": "string", "format": "binary" } } } },
                        "204": { "description": "an empty tile" },
                        "400": { "$ref": "#/components/responses/Problem" },
                        "404": { "$ref": "#/components/responses/Problem" },
                    },
                },
            },
            "/tileMatrixSets": get("The tile matrix sets", "getTileMatrixSetsList", json!([f]), ok("the tile matrix sets", "application/json")),
            "/tileMatrixSets/{tileMatrixSetId}": get("A tile matrix set", "getTileMatrixSet", json!([
                path_param("tileMatrixSetId", "WebMercatorQuad"), f,
            ]), ok("the TMS 2.0 definition", "application/json")),
        },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "key": { "type": "apiKey", "in": "query", "name": "key" },
            },
            "responses": {
                "Problem": { "description": "an RFC 9457 problem", "content": { "application/problem+json": { "schema": { "type": "object" } } } },
            },
        },
    })
}

/// `GET /ogc/api`.
pub async fn api(
    State(st): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = metadata_query(&q) {
        return p.into_response();
    }
    let base = format!("{}/ogc", base_url(&st, &headers));
    answer(
        &document(&base),
        "application/vnd.oai.openapi+json;version=3.0",
    )
}
