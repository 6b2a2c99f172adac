//! Entry points for the cargo-fuzz targets of what the API reads from a request before any
//! handler runs (`fuzz/`), and the regression tests that replay what they found: the API key
//! as a header or a query, and tile request paths. None may panic, whatever the bytes.

/// An API key as a request carries it: as `?key=`, as `Authorization: Bearer`, then its
/// format check; returns 1 if it has the format of a key.
pub fn api_key(data: &[u8]) -> usize {
    let text = String::from_utf8_lossy(data);
    if let Ok(uri) = format!("/catalog?key={text}").parse::<axum::http::Uri>() {
        let _ = super::access::request_key(&axum::http::HeaderMap::new(), &uri);
    }
    if let Ok(v) = axum::http::HeaderValue::from_bytes(data) {
        let mut h = axum::http::HeaderMap::new();
        h.insert(axum::http::header::AUTHORIZATION, v);
        let _ = super::access::request_key(&h, &axum::http::Uri::from_static("/"));
    }
    usize::from(crate::security::check_format(&text).is_ok())
}

/// A tile request path after `/tiles/` (`layers/z/x/y.ext`), checked as the tile handler
/// checks it; returns 1 if it names a valid tile.
pub fn tile_path(data: &[u8]) -> usize {
    super::tile_path_is_valid(&String::from_utf8_lossy(data))
}
