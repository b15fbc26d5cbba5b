//! `GET /api/v1/openapi.json`: the OpenAPI 3.0 document of the HTTP API.
//!
//! The document is written by hand (`src/web/openapi.json`, compiled in with
//! `include_str!`) rather than derived with `utoipa`: the handlers build
//! their answers as `serde_json::Value` and parse query strings by hand (to
//! name the bad parameter in a 400), so a derive would see none of the real
//! shapes, and annotating every handler and every serialized struct would
//! touch most of the code base and slow the build for a document that
//! changes with the routes only. Instead `tests/openapi.rs` keeps the two in
//! sync: it reads every `.route(...)` in `src/web/` and fails, naming each
//! route, when the router serves an operation the document lacks or the
//! document lists one the router does not serve; and it runs schemathesis
//! against a real agent with this document (no 5xx, responses match).
//!
//! The document is served without a token: it describes the API, holds no
//! data. Rate limiting still applies.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_json_with_paths() {
        let v: serde_json::Value = serde_json::from_str(super::DOCUMENT).expect("valid JSON");
        assert!(v["openapi"].as_str().is_some_and(|s| s.starts_with("3.")));
        assert!(v["paths"].as_object().is_some_and(|p| !p.is_empty()));
    }
}
