//! Bearer tokens of the API. The full token lives in `[agent] token_file`
//! (0600), generated on the agent's first start; an optional read-only token
//! in `read_token_file`.
//!
//! - Mutating calls always need the full token: none or a wrong one is `401`;
//!   the read-only token is `403` (authenticated, but not allowed to change).
//! - Read calls follow `[agent] read_auth`: `loopback` (default) lets clients
//!   on 127.0.0.0/8 and ::1 read without a token and asks the others for one
//!   (either token), `token` asks everyone, `none` asks no one.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use std::net::SocketAddr;

use axum::extract::ConnectInfo;

use super::{ApiError, AppState};
use crate::config::ReadAuth;

/// What the API lets in, from `[agent]`.
#[derive(Debug, Clone)]
pub struct Access {
    pub read_auth: ReadAuth,
    /// The read-only token, when `read_token_file` is set.
    pub read_token: Option<String>,
    pub rate_limit: Option<crate::config::RateLimit>,
    pub rate_limit_loopback: bool,
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn missing() -> Response {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing bearer token: send `Authorization: Bearer <token>` with the token from [agent] token_file",
    )
    .into_response()
}

fn is_read_token(state: &AppState, t: &str) -> bool {
    state
        .access
        .read_token
        .as_deref()
        .is_some_and(|r| constant_time_eq(t.as_bytes(), r.as_bytes()))
}

/// Read endpoints: open or not per `[agent] read_auth` and the peer address.
pub async fn require_read(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let open = match state.access.read_auth {
        ReadAuth::None => true,
        ReadAuth::Token => false,
        ReadAuth::Loopback => req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .is_some_and(|c| super::limit::is_loopback(c.0.ip())),
    };
    if open {
        return next.run(req).await;
    }
    match bearer(&req) {
        None => missing(),
        Some(t)
            if constant_time_eq(t.as_bytes(), state.token.as_bytes())
                || is_read_token(&state, t) =>
        {
            next.run(req).await
        }
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "invalid bearer token").into_response(),
    }
}

/// The read rule for the dashboard's pages: like `require_read`, but a
/// browser cannot send a bearer token, so a dashboard session counts too, and
/// a refusal sends the browser to the login page instead of a JSON error.
pub async fn require_read_page(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let open = match state.access.read_auth {
        ReadAuth::None => true,
        ReadAuth::Token => false,
        ReadAuth::Loopback => req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .is_some_and(|c| super::limit::is_loopback(c.0.ip())),
    };
    let token_ok = bearer(&req).is_some_and(|t| {
        constant_time_eq(t.as_bytes(), state.token.as_bytes()) || is_read_token(&state, t)
    });
    if open || token_ok || super::ui::has_session(&state, req.headers()) {
        return next.run(req).await;
    }
    let back = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let to = format!("/login?next={}", super::ui::html::url(&back));
    axum::response::Redirect::to(&to).into_response()
}

pub async fn require_token(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    match bearer(&req) {
        None => missing(),
        Some(t) if constant_time_eq(t.as_bytes(), state.token.as_bytes()) => next.run(req).await,
        Some(t) if is_read_token(&state, t) => ApiError::new(
            StatusCode::FORBIDDEN,
            "this is the read-only token ([agent] read_token_file); changes need the token from [agent] token_file",
        )
        .into_response(),
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "invalid bearer token").into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the token, or creates one (0600) when the file does not exist.
pub fn load_or_create_token(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("token file {} is empty", path.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(token)
}
