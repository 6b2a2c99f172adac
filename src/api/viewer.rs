//! The web viewer's files, embedded in the binary by `build.rs` (our `web-viewer/src/` and
//! MapLibre GL JS from npm): the map at `/`, the ops-center big screen at `/ops`, their
//! scripts and styles under `/viewer/`. Served from memory with strong ETags and a gzip copy
//! made at build time; no Node.js at run time.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::problem::Problem;

/// One embedded file.
pub struct Asset {
    /// File name, as served under `/viewer/`.
    pub name: &'static str,
    /// The bytes.
    pub body: &'static [u8],
    /// The same, gzip-compressed.
    pub gzip: &'static [u8],
    /// Strong ETag (CRC-32 and length of `body`).
    pub etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/viewer_assets.rs"));

/// The embedded file `name`, if there is one.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

fn serve(a: &'static Asset, headers: &HeaderMap) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag));
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else if super::accepts_gzip(headers) && a.gzip.len() < a.body.len() {
        let mut r = Response::new(Body::from(a.gzip));
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        Response::new(Body::from(a.body))
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(a.name)),
    );
    h.insert(header::ETAG, HeaderValue::from_static(a.etag));
    // Revalidated on every load (a 304 costs one round trip), so a new binary's viewer is
    // never mixed with a cached older one.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    r
}

/// The Content-Security-Policy of the pages: scripts, styles, workers and data from this
/// server only (and from the configured public URL's origin, which the tile links then
/// name), no plug-ins, no inline scripts: a popup's text can never run. MapLibre needs
/// nothing more (its worker is a module file next to it; images may be `data:`/`blob:`).
pub fn content_security_policy(public_url: Option<&str>) -> HeaderValue {
    let origin = public_url
        .and_then(|u| {
            let (scheme, rest) = u.split_once("://")?;
            let host = rest.split('/').next()?;
            let ok = !host.is_empty()
                && matches!(scheme, "http" | "https")
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
            ok.then(|| format!(" {scheme}://{host}"))
        })
        .unwrap_or_default();
    let policy = format!(
        "default-src 'self'; script-src 'self'; worker-src 'self' blob:; \
         style-src 'self'; img-src 'self' data: blob:; font-src 'self'; \
         connect-src 'self'{origin}; object-src 'none'; base-uri 'self'; form-action 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'self'"))
}

fn page(name: &str, headers: &HeaderMap, st: &AppState) -> Response {
    let mut r = page_body(name, headers);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        content_security_policy(st.public_url.as_deref()),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

fn page_body(name: &str, headers: &HeaderMap) -> Response {
    match (asset(name), MISSING) {
        (Some(a), None) => serve(a, headers),
        (_, why) => {
            let why = why.unwrap_or("the page is missing from the build");
            let text = format!(
                "<!doctype html><meta charset=utf-8><title>Urbis</title>\
                 <h1>The web viewer was not built into this binary</h1>\
                 <p>{}</p><p>Install Node.js and npm, then rebuild (<code>cargo run --release -- serve</code>). \
                 The tile API works without it: see <a href=\"catalog\">/catalog</a>.</p>",
                html_escape(why)
            );
            let mut r = Response::new(Body::from(text));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `GET /`: the map viewer.
pub async fn index(State(st): State<AppState>, headers: HeaderMap) -> Response {
    page("index.html", &headers, &st)
}

/// `GET /ops`: the ops-center big screen.
pub async fn ops(State(st): State<AppState>, headers: HeaderMap) -> Response {
    page("ops.html", &headers, &st)
}

/// `GET /favicon.ico`: the Urbis mark (SVG; browsers take it whatever the name).
pub async fn favicon(headers: HeaderMap) -> Response {
    match asset("favicon.svg") {
        Some(a) => serve(a, &headers),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// `GET /viewer/{file}`: a script, style sheet or licence of the viewer.
pub async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match asset(&name) {
        Some(a) => serve(a, &headers),
        None => Problem::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no viewer file {name}"),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_maplibre_are_embedded_with_gzip_and_etags() {
        assert!(MISSING.is_none(), "viewer not built: {MISSING:?}");
        for n in [
            "index.html",
            "ops.html",
            "maplibre-gl.mjs",
            "maplibre-gl-worker.mjs",
            "maplibre-gl.css",
        ] {
            let a = asset(n).unwrap_or_else(|| panic!("{n} not embedded"));
            assert!(!a.body.is_empty(), "{n}");
            let mut d = flate2::read::GzDecoder::new(a.gzip);
            let mut back = Vec::new();
            std::io::Read::read_to_end(&mut d, &mut back).unwrap();
            assert_eq!(back, a.body, "{n}: gzip copy");
            assert!(a.etag.starts_with('"') && a.etag.ends_with('"'), "{n}");
        }
        assert_eq!(content_type("a.mjs"), "text/javascript; charset=utf-8");
    }

    #[test]
    fn the_page_policy_allows_only_this_server_and_the_public_origin() {
        let own = content_security_policy(None);
        let own = own.to_str().unwrap();
        assert!(own.contains("script-src 'self';"), "{own}");
        assert!(own.contains("connect-src 'self';"), "{own}");
        let p = content_security_policy(Some("https://maps.city.example:8443/urbis/"));
        assert!(
            p.to_str()
                .unwrap()
                .contains("connect-src 'self' https://maps.city.example:8443;"),
            "{p:?}"
        );
        // Nothing odd from the configuration gets into the header.
        for bad in [
            "javascript:alert(1)",
            "https://a b/",
            "https://x; script-src *",
            "ftp://x",
        ] {
            assert_eq!(content_security_policy(Some(bad)), own, "{bad}");
        }
    }
}
