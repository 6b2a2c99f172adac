//! RFC 9457 problem details: every error answer of the API, with a message a person can act on.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An `application/problem+json` response.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
    /// Extension members (RFC 9457 §3.2): `field`, `rows`, ...
    members: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// A problem with a status, a short title and a detail sentence.
    pub fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            title,
            detail: detail.into(),
            members: serde_json::Map::new(),
        }
    }

    /// Names the request field at fault (an extension member, `"field"`).
    pub fn field(self, field: impl Into<String>) -> Self {
        self.member("field", serde_json::Value::String(field.into()))
    }

    /// Adds an extension member.
    pub fn member(mut self, key: &str, value: serde_json::Value) -> Self {
        self.members.insert(key.to_string(), value);
        self
    }

    /// A 400 Bad Request.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "Bad request", detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(o) = body.as_object_mut() {
            o.extend(self.members);
        }
        let mut r = (self.status, body.to_string()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        r
    }
}
