//! A small HTTP/1.1 client on hyper-util's pooled client, for the alert webhook, `urbis
//! acceptance` and `urbis simulate`: a whole answer read into memory, under one timeout per
//! request. Plain `http://` only.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// An answer: status, headers, body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: axum::http::HeaderMap,
    /// Body (decoded from chunked; not decompressed).
    pub body: Bytes,
}

/// The client (cheap to clone; connections are pooled).
#[derive(Clone)]
pub struct Client {
    pool: Pool<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client with keep-alive connections.
    pub fn new() -> Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Client {
            pool: Pool::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Sends `method url` with `headers` and `body`; the whole answer within `timeout`.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        if !url.starts_with("http://") {
            return Err(format!("{url}: only http:// URLs"));
        }
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(url)
            .header("user-agent", concat!("urbis/", env!("CARGO_PKG_VERSION")));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("{url}: {e}"))?;
        let go = async {
            let res = self
                .pool
                .request(req)
                .await
                .map_err(|e| format!("{url}: {}", chain(&e)))?;
            let (parts, body) = res.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("{url}: reading the answer: {e}"))?
                .to_bytes();
            Ok(Answer {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(timeout, go)
            .await
            .map_err(|_| format!("{url}: no answer within {} s", timeout.as_secs_f64()))?
    }

    /// `GET url` with headers.
    pub async fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Answer, String> {
        self.request("GET", url, headers, Vec::new(), timeout).await
    }

    /// `POST url` with a JSON body; the status and body of the answer.
    pub async fn post_json(
        &self,
        url: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(u16, Bytes), String> {
        let a = self
            .request(
                "POST",
                url,
                &[("content-type", "application/json")],
                body,
                timeout,
            )
            .await?;
        Ok((a.status, a.body))
    }
}

/// An error with its causes (hyper's own says only "client error (Connect)").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
