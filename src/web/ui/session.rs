//! Dashboard sessions and cross-site request protection.
//!
//! Reading pages needs no session (the read rule of the API applies).
//! Acting from the browser does:
//! - log in at `/login` by pasting the API token, or through a one-time
//!   link (`mamori dashboard-url`, valid 10 minutes, used once; its GET only
//!   shows a button, the POST logs in);
//! - the session is a random id in an `HttpOnly; SameSite=Strict` cookie,
//!   kept in memory (a restarted agent forgets sessions: log in again);
//! - every form carries the session's CSRF token in a hidden `csrf` field
//!   (a per-session token, compared in constant time), and the request's
//!   `Origin` (or, without one, `Referer`) must be this `Host`.
//!
//! A request that fails any of these gets `403 {"error": ...}`. Bearer-token
//! API clients are not affected: `/api/v1` keeps its own check.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{header, HeaderMap, StatusCode};

use crate::util::now_ms;
use crate::web::ApiError;

pub const COOKIE: &str = "mamori_session";
const SESSION_MS: i64 = 12 * 3600 * 1000;
const LINK_MS: i64 = 10 * 60 * 1000;
const MAX_SESSIONS: usize = 1000;

#[derive(Clone)]
pub struct Session {
    pub csrf: String,
    pub expires_at: i64,
}

#[derive(Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    links: Mutex<HashMap<String, i64>>,
}

fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    /// A new session; returns (id, session).
    pub fn create(&self) -> (String, Session) {
        let now = now_ms();
        let mut m = lock(&self.sessions);
        m.retain(|_, s| s.expires_at > now);
        if m.len() >= MAX_SESSIONS {
            // Drop the one closest to expiry.
            if let Some(k) = m
                .iter()
                .min_by_key(|(_, s)| s.expires_at)
                .map(|(k, _)| k.clone())
            {
                m.remove(&k);
            }
        }
        let id = random_hex(32);
        let s = Session {
            csrf: random_hex(32),
            expires_at: now + SESSION_MS,
        };
        m.insert(id.clone(), s.clone());
        (id, s)
    }

    pub fn get(&self, id: &str) -> Option<Session> {
        let m = lock(&self.sessions);
        m.get(id).filter(|s| s.expires_at > now_ms()).cloned()
    }

    pub fn remove(&self, id: &str) {
        lock(&self.sessions).remove(id);
    }

    /// A one-time login code, valid for ten minutes.
    pub fn new_link(&self) -> (String, i64) {
        let now = now_ms();
        let mut m = lock(&self.links);
        m.retain(|_, exp| *exp > now);
        let code = random_hex(24);
        let exp = now + LINK_MS;
        m.insert(code.clone(), exp);
        (code, exp)
    }

    pub fn link_valid(&self, code: &str) -> bool {
        lock(&self.links)
            .get(code)
            .is_some_and(|exp| *exp > now_ms())
    }

    /// Uses up a login code: true once, if it was valid.
    pub fn take_link(&self, code: &str) -> bool {
        lock(&self.links)
            .remove(code)
            .is_some_and(|exp| exp > now_ms())
    }
}

/// The session cookie's value, if the request has one.
pub fn cookie(headers: &HeaderMap) -> Option<String> {
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(';') {
            if let Some((k, val)) = part.trim().split_once('=') {
                if k == COOKIE && !val.is_empty() {
                    return Some(val.to_string());
                }
            }
        }
    }
    None
}

/// The logged-in session of this request, if any (for pages: which buttons to show).
pub fn current(sessions: &Sessions, headers: &HeaderMap) -> Option<Session> {
    sessions.get(&cookie(headers)?)
}

pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_MS / 1000
    )
}

pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

fn forbidden(msg: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, msg)
}

/// The request comes from a page of this server: its `Origin` (or
/// `Referer`) names the same host as its `Host` header.
pub fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| forbidden("cross-site request refused: no Host header"))?;
    let matches = |u: &str| {
        let rest = u
            .strip_prefix("http://")
            .or_else(|| u.strip_prefix("https://"));
        rest.is_some_and(|r| r.split('/').next() == Some(host))
    };
    if let Some(o) = headers.get(header::ORIGIN) {
        let o = o.to_str().unwrap_or("");
        return if matches(o) {
            Ok(())
        } else {
            Err(forbidden(
                "cross-site request refused: the Origin is not this dashboard",
            ))
        };
    }
    match headers.get(header::REFERER).and_then(|v| v.to_str().ok()) {
        Some(r) if matches(r) => Ok(()),
        Some(_) => Err(forbidden(
            "cross-site request refused: the Referer is not this dashboard",
        )),
        None => Err(forbidden(
            "cross-site request refused: neither Origin nor Referer was sent",
        )),
    }
}

/// Everything a dashboard action needs: same origin, a live session, and
/// its CSRF token in the form.
pub fn guard(sessions: &Sessions, headers: &HeaderMap, csrf: Option<&str>) -> Result<(), ApiError> {
    same_origin(headers)?;
    let Some(s) = current(sessions, headers) else {
        return Err(forbidden(
            "not logged in to the dashboard (or the session expired): log in at /login",
        ));
    };
    match csrf {
        Some(t) if constant_time_eq(t.as_bytes(), s.csrf.as_bytes()) => Ok(()),
        Some(_) => Err(forbidden(
            "invalid CSRF token: reload the page and try again",
        )),
        None => Err(forbidden("missing CSRF token (form field `csrf`)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn origin_must_be_this_host() {
        assert!(same_origin(&h(&[
            ("host", "127.0.0.1:7878"),
            ("origin", "http://127.0.0.1:7878")
        ]))
        .is_ok());
        assert!(same_origin(&h(&[
            ("host", "127.0.0.1:7878"),
            ("origin", "http://evil.example")
        ]))
        .is_err());
        assert!(same_origin(&h(&[
            ("host", "127.0.0.1:7878"),
            ("origin", "http://127.0.0.1:7878.evil")
        ]))
        .is_err());
        assert!(same_origin(&h(&[
            ("host", "127.0.0.1:7878"),
            ("referer", "http://127.0.0.1:7878/x")
        ]))
        .is_ok());
        assert!(same_origin(&h(&[("host", "127.0.0.1:7878")])).is_err());
    }

    #[test]
    fn a_session_needs_its_own_csrf_token() {
        let s = Sessions::default();
        let (id, sess) = s.create();
        let cookie = format!("other=1; {COOKIE}={id}");
        let base = [
            ("host", "h:1"),
            ("origin", "http://h:1"),
            ("cookie", cookie.as_str()),
        ];
        assert!(guard(&s, &h(&base), Some(&sess.csrf)).is_ok());
        assert!(guard(&s, &h(&base), Some("nope")).is_err());
        assert!(guard(&s, &h(&base), None).is_err());
        assert!(guard(&s, &h(&base[..2]), Some(&sess.csrf)).is_err());
        s.remove(&id);
        assert!(guard(&s, &h(&base), Some(&sess.csrf)).is_err());
    }

    #[test]
    fn login_links_work_once() {
        let s = Sessions::default();
        let (code, _) = s.new_link();
        assert!(s.link_valid(&code));
        assert!(s.take_link(&code));
        assert!(!s.take_link(&code));
        assert!(!s.take_link("made-up"));
    }
}
