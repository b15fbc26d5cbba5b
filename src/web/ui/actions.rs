//! The dashboard's form POSTs. Each one passes `session::guard` (same
//! origin, logged in, CSRF token) or gets `403 {"error": ...}`; then it does
//! what the matching API endpoint does (by calling the same handler or
//! handle, `by` = `dashboard`) and redirects back (303) with a message.
//! Plain HTML forms: the buttons work without JavaScript.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::html::url;
use super::session::{self, constant_time_eq};
use crate::incident::OpenRequest;
use crate::web::{ApiError, AppState};

const BY: &str = "dashboard";

/// Form fields; repeated names (checkboxes) keep every value.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(bytes: &Bytes) -> Result<Form, ApiError> {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(bytes)
            .map(Form)
            .map_err(|e| ApiError::bad_request(format!("invalid form body: {e}")))
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
    }
    fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(x, _)| x == k)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// Only local paths: never an absolute or protocol-relative URL.
fn safe_back(b: Option<&str>) -> String {
    match b {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.to_string(),
        _ => "/".to_string(),
    }
}

fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Back to the page with `msg` (or `err`) for the flash line.
fn back(form: &Form, result: Result<String, String>) -> Response {
    let b = safe_back(form.get("back"));
    let sep = if b.contains('?') { '&' } else { '?' };
    let (k, v) = match result {
        Ok(m) => ("msg", m),
        Err(e) => ("err", e),
    };
    see_other(&format!("{b}{sep}{k}={}", url(&v)))
}

fn guarded(s: &AppState, headers: &HeaderMap, bytes: &Bytes) -> Result<Form, ApiError> {
    let form = Form::parse(bytes)?;
    session::guard(&s.ui.sessions, headers, form.get("csrf"))?;
    Ok(form)
}

fn api_err(e: ApiError) -> String {
    e.message
}

/// `POST /login` with `token` (and `next`): starts a session.
pub async fn login(State(s): State<Arc<AppState>>, headers: HeaderMap, bytes: Bytes) -> Response {
    if let Err(r) = session::same_origin(&headers) {
        return r.into_response();
    }
    let form = match Form::parse(&bytes) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let given = form.get("token").unwrap_or("").trim();
    if !constant_time_eq(given.as_bytes(), s.token.as_bytes()) {
        tracing::warn!("A dashboard login with a wrong token.");
        return see_other("/login?err=That%20is%20not%20the%20agent%27s%20token.");
    }
    start_session(&s, &safe_back(form.get("next")))
}

fn start_session(s: &AppState, to: &str) -> Response {
    let (id, _) = s.ui.sessions.create();
    tracing::info!("Dashboard login.");
    let mut r = see_other(to);
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&id)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /login/{code}`: a one-time link's button.
pub async fn login_link(
    State(s): State<Arc<AppState>>,
    Path(code): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = session::same_origin(&headers) {
        return r.into_response();
    }
    if !s.ui.sessions.take_link(&code) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "this login link was used already or has expired",
        )
        .into_response();
    }
    start_session(&s, "/")
}

pub async fn logout(State(s): State<Arc<AppState>>, headers: HeaderMap, bytes: Bytes) -> Response {
    if let Err(r) = guarded(&s, &headers, &bytes) {
        return r.into_response();
    }
    if let Some(id) = session::cookie(&headers) {
        s.ui.sessions.remove(&id);
    }
    let mut r = see_other("/");
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /api/v1/dashboard/login-link` (bearer token): a one-time login
/// link for the dashboard, `{"url", "expires_at"}`.
pub async fn login_link_api(State(s): State<Arc<AppState>>) -> axum::Json<serde_json::Value> {
    let (code, exp) = s.ui.sessions.new_link();
    axum::Json(serde_json::json!({
        "url": format!("{}/login/{code}", s.alerts.public_url.trim_end_matches('/')),
        "expires_at": exp,
    }))
}

/// `POST /ui/alerts/{id}/ack|resolve`
pub async fn alert(
    State(s): State<Arc<AppState>>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let form = match guarded(&s, &headers, &bytes) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let Ok(id) = id.parse::<i64>() else {
        return ApiError::bad_request(format!("alert id \"{id}\" is not a number")).into_response();
    };
    let result = match action.as_str() {
        "ack" => s
            .alerts
            .ack(
                id,
                BY,
                form.get("comment")
                    .unwrap_or("acknowledged from the dashboard"),
            )
            .await
            .map(|a| format!("Alert {} acknowledged: {}", a.id, a.title)),
        "resolve" => s
            .alerts
            .resolve(id, BY, form.get("force") == Some("1"))
            .await
            .map(|a| format!("Alert {} resolved: {}", a.id, a.title)),
        other => {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                format!("unknown alert action \"{other}\"; expected ack or resolve"),
            )
            .into_response()
        }
    };
    back(&form, result.map_err(|e| e.to_string()))
}

/// `POST /ui/units/{name}/start|stop|restart`
pub async fn unit(
    State(s): State<Arc<AppState>>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let form = match guarded(&s, &headers, &bytes) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let r =
        crate::web::api::unit_action(State(s.clone()), Path((name.clone(), action.clone()))).await;
    back(
        &form,
        r.map(|_| format!("{name}: {action} requested"))
            .map_err(api_err),
    )
}

fn who() -> HashMap<String, String> {
    HashMap::from([("by".to_string(), BY.to_string())])
}

/// `POST /ui/flows/{name}/rerun`: rerun from the failed jobs.
pub async fn rerun(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let form = match guarded(&s, &headers, &bytes) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let mut q = who();
    q.insert("from_failed".into(), String::new());
    let r = crate::web::flows::rerun(State(s.clone()), Path(name.clone()), Query(q)).await;
    back(
        &form,
        r.map(|_| format!("{name}: rerun from the failed jobs started"))
            .map_err(api_err),
    )
}

/// `POST /ui/jobs/{name}/release`
pub async fn release(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let form = match guarded(&s, &headers, &bytes) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let r = crate::web::flows::release(State(s.clone()), Path(name.clone()), Query(who())).await;
    back(
        &form,
        r.map(|_| format!("{name}: released")).map_err(api_err),
    )
}

/// `POST /ui/incidents`: title, message, impact, component (repeated), alert.
pub async fn open_incident(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let form = match guarded(&s, &headers, &bytes) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let alerts: Vec<i64> = form
        .all("alert")
        .iter()
        .filter(|a| !a.is_empty())
        .filter_map(|a| a.parse().ok())
        .collect();
    let r = s.incidents.open(OpenRequest {
        title: form.get("title").unwrap_or("").to_string(),
        message: form.get("message").unwrap_or("").to_string(),
        impact: form
            .get("impact")
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        components: form.all("component"),
        alerts,
        by: Some(BY.into()),
        ..Default::default()
    });
    back(
        &form,
        r.map(|i| format!("Incident {} opened: {}", i.id, i.title))
            .map_err(|e| e.to_string()),
    )
}

/// `POST /ui/incidents/{id}/update`: state, message.
pub async fn update_incident(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let form = match guarded(&s, &headers, &bytes) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let Ok(id) = id.parse::<i64>() else {
        return ApiError::bad_request(format!("incident id \"{id}\" is not a number"))
            .into_response();
    };
    let r = s.incidents.update(
        id,
        form.get("state").unwrap_or("investigating"),
        form.get("message").unwrap_or(""),
        BY,
    );
    back(
        &form,
        r.map(|i| format!("Update posted to incident {}", i.id))
            .map_err(|e| e.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_is_always_a_local_path() {
        assert_eq!(
            safe_back(Some("/ui/units/x?window=1h")),
            "/ui/units/x?window=1h"
        );
        assert_eq!(safe_back(Some("//evil.example/")), "/");
        assert_eq!(safe_back(Some("https://evil.example/")), "/");
        assert_eq!(safe_back(Some("/\\evil")), "/");
        assert_eq!(safe_back(None), "/");
    }
}
