//! Entry points for the cargo-fuzz targets of the security room's parsers (`fuzz/`) and the
//! regression tests that replay what they found: policy files, API keys and the request
//! parts a key travels in. None may panic, whatever the bytes.

use super::policy::Policy;

/// A policy file; returns the number of roles it defines (built-in ones included).
pub fn policy(data: &[u8]) -> usize {
    Policy::parse(&String::from_utf8_lossy(data), "fuzz.toml").map_or(0, |p| p.roles.len())
}

/// An API key as a request carries it (header value or query): its format check, and the
/// same as a `key=` query and a `Bearer` header; returns 1 if it has the format of a key.
pub fn api_key(data: &[u8]) -> usize {
    let text = String::from_utf8_lossy(data);
    let ok = super::check_format(&text).is_ok();
    if let Ok(uri) = format!("/catalog?key={text}").parse::<axum::http::Uri>() {
        let _ = crate::api::access::request_key(&axum::http::HeaderMap::new(), &uri);
    }
    if let Ok(v) = axum::http::HeaderValue::from_bytes(data) {
        let mut h = axum::http::HeaderMap::new();
        h.insert(axum::http::header::AUTHORIZATION, v);
        let _ = crate::api::access::request_key(&h, &axum::http::Uri::from_static("/"));
    }
    usize::from(ok)
}

/// A tile request path after `/tiles/` (`layers/z/x/y.ext`): split and checked as the tile
/// handler does; returns 1 if it names a valid tile.
pub fn tile_path(data: &[u8]) -> usize {
    crate::api::tile_path_is_valid(&String::from_utf8_lossy(data))
}
