//! The agent's HTTP API (`[agent] listen`): what the CLI talks to, and later
//! the dashboard and status page. JSON in and out; every error is a JSON body
//! `{"error": "..."}` with a 4xx status (a layer rewrites the framework's own
//! plain-text rejections, so even a malformed request gets JSON).

mod alerts;
mod api;
mod auth;
mod cluster;
mod flows;
pub mod limit;
pub mod metrics;
pub mod openapi;
// --- dashboard, status page, incidents ---
mod incidents;
pub mod ui;

pub use auth::load_or_create_token as load_token;
pub use auth::Access;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::store::Store;
use crate::supervise::Supervisor;

pub struct AppState {
    pub flows: crate::schedule::engine::Flows,
    pub sup: Supervisor,
    pub checks: crate::probe::checks::Checks,
    pub sampler: std::sync::Arc<crate::probe::sampler::Sampler>,
    pub store: Store,
    pub token: String,
    pub logs_dir: std::path::PathBuf,
    pub alerts: crate::alert::Alerts,
    /// Read auth, the read-only token and the rate limit (`[agent]`).
    pub access: Access,
    /// Counters and gauges for `/metrics`.
    pub metrics: metrics::Metrics,
    // --- dashboard, status page, incidents ---
    pub incidents: crate::incident::Incidents,
    pub ui: ui::UiState,
    /// `None` when the config has no `[cluster]` or `[[group]]`.
    pub cluster: Option<crate::cluster::Cluster>,
}

pub fn router(state: Arc<AppState>) -> Router {
    let mutating = Router::new()
        .route("/api/v1/units/{name}/{action}", post(api::unit_action))
        .route("/api/v1/jobs/{name}/run", post(api::run_job))
        .route("/api/v1/heartbeats/{name}", post(api::heartbeat))
        .route("/api/v1/flows/{name}/run", post(flows::run))
        .route("/api/v1/flows/{name}/rerun", post(flows::rerun))
        .route("/api/v1/jobs/{name}/release", post(flows::release))
        .route(
            "/api/v1/holds/{target}",
            post(flows::hold).delete(flows::unhold),
        )
        // --- alerts ---
        .route("/api/v1/alerts/{id}/ack", post(alerts::ack))
        .route("/api/v1/alerts/{id}/resolve", post(alerts::resolve))
        .route(
            "/api/v1/alerts/ingest/alertmanager",
            post(alerts::ingest_alertmanager),
        )
        .route("/api/v1/silences", post(alerts::add_silence))
        .route("/api/v1/silences/{id}/expire", post(alerts::expire_silence))
        .route("/api/v1/channels/{name}/test", post(alerts::test_channel))
        // --- incidents, dashboard ---
        .route("/api/v1/incidents", post(incidents::open))
        .route("/api/v1/incidents/{id}/updates", post(incidents::update))
        .route("/api/v1/incidents/{id}/resolve", post(incidents::resolve))
        .route(
            "/api/v1/dashboard/login-link",
            post(ui::actions::login_link_api),
        )
        // --- cluster ---
        .route(
            "/api/v1/groups/{name}/switchover",
            post(cluster::switchover),
        )
        .route("/api/v1/groups/{name}/drill", post(cluster::drill))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    // Reads: open on loopback or not, per `[agent] read_auth` (auth.rs).
    let reads = Router::new()
        .route("/metrics", get(metrics::scrape))
        .route("/api/v1/units", get(api::units))
        .route("/api/v1/units/{name}", get(api::unit))
        .route("/api/v1/units/{name}/logs", get(api::logs))
        .route("/api/v1/runs", get(api::runs))
        .route("/api/v1/runs/{id}", get(api::run))
        .route("/api/v1/events", get(api::events))
        .route("/api/v1/units/{name}/samples", get(api::samples))
        .route("/api/v1/checks", get(api::checks))
        .route("/api/v1/checks/{name}", get(api::check))
        .route("/api/v1/host", get(api::host))
        .route("/api/v1/flows", get(flows::list))
        .route("/api/v1/flows/{name}", get(flows::one))
        .route("/api/v1/holds", get(flows::holds))
        // --- alerts ---
        .route("/api/v1/alerts", get(alerts::list))
        .route("/api/v1/alerts/{id}", get(alerts::show))
        .route("/api/v1/silences", get(alerts::silences))
        // --- cluster ---
        .route("/api/v1/nodes", get(cluster::nodes))
        .route("/api/v1/groups", get(cluster::groups))
        .route("/api/v1/groups/{name}", get(cluster::group))
        .route("/api/v1/drills", get(cluster::drills))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_read,
        ));
    let mut app = Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/api/v1/openapi.json", get(openapi::document))
        // Open like /healthz: other nodes ask it without a token (they have
        // none of ours), and it says only this node's name and whether it
        // reaches the coordination store (`on_store_loss`, docs/cluster.md).
        .route("/api/v1/cluster/peer", get(cluster::peer))
        .route(
            "/ack/{id}/{token}",
            get(alerts::link_page).post(alerts::link_ack),
        )
        .route("/api/v1/incidents", get(incidents::list))
        .route("/api/v1/incidents/{id}", get(incidents::show))
        .merge(reads)
        // --- dashboard pages (the read rule, or a dashboard session), and
        // the public status page, login and the dashboard's form actions
        // (which check the session and CSRF token themselves) ---
        .merge(
            ui::pages().route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                auth::require_read_page,
            )),
        )
        .merge(ui::public())
        .merge(mutating)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") });
    if let Some(rate) = state.access.rate_limit {
        let limiter = Arc::new(limit::Limiter::new(
            rate,
            state.access.rate_limit_loopback,
            state.metrics.rate_limited.clone(),
        ));
        app = app.layer(axum::middleware::from_fn_with_state(limiter, limit::limit));
    }
    app.layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// An API error: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

/// A JSON object body. An empty body is `empty` when given (the request
/// needs nothing), else an error. serde's messages name our Rust types
/// ("expected struct OpenRequest with 8 elements"); those are said in
/// JSON's words instead.
pub fn json_body<T: for<'de> serde::Deserialize<'de>>(
    bytes: &[u8],
    empty: Option<T>,
) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match (first, empty) {
        (None, Some(e)) => Ok(e),
        (None, None) => Err(ApiError::bad_request("a JSON body is required")),
        (Some(b'{'), _) => serde_json::from_slice(bytes).map_err(|e| {
            ApiError::bad_request(format!("invalid JSON body: {}", json_words(&e.to_string())))
        }),
        (Some(_), _) => Err(ApiError::bad_request(
            "invalid JSON body: expected a JSON object ({…})",
        )),
    }
}

/// "struct Name" and "struct Name with N elements" → "a JSON object"
/// (unit-tested below).
fn json_words(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(i) = rest.find("struct ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "struct ".len()..];
        let name_end = after
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(after.len());
        if name_end == 0 {
            out.push_str("struct ");
            rest = after;
            continue;
        }
        out.push_str("a JSON object");
        rest = &after[name_end..];
        if let Some(tail) = rest.strip_prefix(" with ") {
            if let Some(e) = tail.find(" elements") {
                if tail[..e].chars().all(|c| c.is_ascii_digit()) {
                    rest = &tail[e + " elements".len()..];
                }
            }
        }
    }
    out.push_str(rest);
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "Store error in the API.");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}"))
    }
}

/// Rewrites non-JSON error responses (axum's own rejections) as JSON.
async fn json_errors(resp: Response<Body>) -> Response<Body> {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    // Only the framework's own answers (plain text or no body type) are
    // rewritten; JSON already is, and an HTML page (the acknowledge link's
    // 403) stays a page for the browser that asked for it.
    let framework_text = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.starts_with("text/plain"));
    if !framework_text {
        return resp;
    }
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let mut text = String::from_utf8_lossy(&body).trim().to_string();
    if text.is_empty() {
        text = status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string();
    }
    // A 5xx from the framework itself is reported as the client's problem
    // only when it is one; otherwise it stays a 5xx but with a JSON body.
    (status, Json(json!({ "error": text }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_speak_json_not_rust() {
        assert_eq!(
            json_words("invalid length 0, expected struct OpenRequest with 8 elements"),
            "invalid length 0, expected a JSON object"
        );
        assert_eq!(
            json_words("invalid type: string \"x\", expected struct Foo_2 at line 1 column 3"),
            "invalid type: string \"x\", expected a JSON object at line 1 column 3"
        );
        assert_eq!(json_words("missing field `title`"), "missing field `title`");
        assert_eq!(json_words("a struct  here"), "a struct  here");
        #[derive(serde::Deserialize, Debug)]
        struct Req {
            #[allow(dead_code)]
            title: String,
        }
        let e = json_body::<Req>(b"[]", None).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.message, "invalid JSON body: expected a JSON object ({…})");
        let e = json_body::<Req>(b"  ", None).unwrap_err();
        assert_eq!(e.message, "a JSON body is required");
        let e = json_body::<Req>(br#"{"title": 5}"#, None).unwrap_err();
        assert!(
            e.message
                .starts_with("invalid JSON body: invalid type: integer `5`, expected a string"),
            "{}",
            e.message
        );
    }
}
