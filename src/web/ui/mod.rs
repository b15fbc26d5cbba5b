//! The dashboard (`/`, `/ui/...`) and the public status page (`/status`),
//! server-rendered HTML built in Rust: no JavaScript build step, a few lines
//! of plain JavaScript for live refresh (see `html::JS`). Everything shown
//! is read in-process (the same functions the API uses), never over HTTP.
//!
//! Files by concept: `html` (escaping, page shell), `session` (login,
//! cookie, CSRF), `dashboard` (the overview), `unit` (unit and run pages),
//! `incidents` (incident pages and forms), `login`, `chart` (memory SVG),
//! `flowgraph` (flow SVG), `groups` (failover groups and drills),
//! `actions` (form POSTs), `status` (status page and JSON), `feed` (Atom).
//! See docs/dashboard.md.

pub mod actions;
pub mod chart;
pub mod dashboard;
pub mod feed;
pub mod flowgraph;
pub mod groups;
pub mod html;
pub mod incidents;
pub mod login;
pub mod session;
pub mod status;
pub mod unit;

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::AppState;
use html::esc;

/// What the dashboard keeps between requests.
#[derive(Default)]
pub struct UiState {
    pub sessions: session::Sessions,
    pub status_cache: status::Cache,
    /// `[[maintenance]]` windows, shown on the status page.
    pub maintenance: Vec<crate::alert::mute::Window>,
}

impl UiState {
    pub fn new(config: &crate::config::Config) -> UiState {
        UiState {
            maintenance: config.alerts.maintenance.clone(),
            ..UiState::default()
        }
    }
}

/// Pages and form actions; merged into the main router.
/// The dashboard's pages: behind the read rule (`auth::require_read_page`).
pub fn pages() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/ui/units/{name}", get(unit::unit))
        .route("/ui/runs/{id}", get(unit::run))
        .route("/ui/incidents", get(incidents::incidents))
        .route("/ui/incidents/{id}", get(incidents::incident))
}

/// Open to anyone: the public status page, logging in, and the dashboard's
/// form actions, which check the session and its CSRF token themselves.
pub fn public() -> Router<Arc<AppState>> {
    Router::new()
        .route("/login", get(login::login_form).post(actions::login))
        .route(
            "/login/{code}",
            get(login::login_link).post(actions::login_link),
        )
        .route("/logout", post(actions::logout))
        .route("/ui/alerts/{id}/{action}", post(actions::alert))
        .route("/ui/units/{name}/{action}", post(actions::unit))
        .route("/ui/flows/{name}/rerun", post(actions::rerun))
        .route("/ui/jobs/{name}/release", post(actions::release))
        .route("/ui/incidents", post(actions::open_incident))
        .route("/ui/incidents/{id}/update", post(actions::update_incident))
        .route("/status", get(status::page))
        .route("/status.json", get(status::json))
        .route("/status/feed.atom", get(feed::atom))
}

/// A page saying what was not found (404).
pub fn not_found(s: &AppState, headers: &HeaderMap, what: &str) -> Response {
    let (n, _) = nav(s, headers);
    html(
        StatusCode::NOT_FOUND,
        html::page(
            "Not found",
            &n,
            &format!(
                "<section><h2>{}</h2><p><a href=\"/\">Back to the dashboard</a></p></section>",
                esc(what)
            ),
            false,
        ),
    )
}

/// An HTML answer that is never cached and never framed by another site.
pub fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, Html(body)).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Whether the request carries a live dashboard session: for the read rule
/// of non-loopback listeners (a browser cannot send the bearer token, so the
/// dashboard's GET pages should accept a session too; `/login*` and
/// `/status*` stay open).
pub fn has_session(s: &AppState, headers: &HeaderMap) -> bool {
    session::current(&s.ui.sessions, headers).is_some()
}

/// The right side of the header: who is logged in, or a login link.
pub fn nav(s: &AppState, headers: &HeaderMap) -> (String, Option<session::Session>) {
    match session::current(&s.ui.sessions, headers) {
        Some(sess) => (
            format!(
                "<span class=\"small\">logged in</span><form class=\"inline\" method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Log out</button></form>",
                html::esc(&sess.csrf)
            ),
            Some(sess),
        ),
        None => ("<a href=\"/login\">Log in to act</a>".to_string(), None),
    }
}

/// A hidden CSRF field plus where to come back to.
pub fn form_fields(sess: &session::Session, back: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"back\" value=\"{}\">",
        html::esc(&sess.csrf),
        html::esc(back)
    )
}

/// The flash message of a redirect after an action (`?msg=` / `?err=`).
pub fn flash(q: &std::collections::HashMap<String, String>) -> String {
    if let Some(m) = q.get("msg") {
        format!(
            "<div class=\"flash ok\" id=\"flash\">{}</div>",
            html::esc(m)
        )
    } else if let Some(e) = q.get("err") {
        format!(
            "<div class=\"flash bad\" id=\"flash\">{}</div>",
            html::esc(e)
        )
    } else {
        String::new()
    }
}

/// The current path and query (for `back`), from the request URI.
pub fn here(uri: &axum::http::Uri) -> String {
    let mut p = uri.path().to_string();
    if let Some(q) = uri.query() {
        // Drop a previous flash message.
        let kept: Vec<&str> = q
            .split('&')
            .filter(|kv| !kv.starts_with("msg=") && !kv.starts_with("err="))
            .collect();
        if !kept.is_empty() {
            p.push('?');
            p.push_str(&kept.join("&"));
        }
    }
    p
}

/// Serialises an enum to its word (`"gave-up"`).
pub fn word<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}
