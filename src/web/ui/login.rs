//! The login pages: paste the token, or follow a one-time link.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::html::{esc, page, url};
use super::{flash, html, nav};
use crate::web::AppState;

/// `/login`: paste the API token.
pub async fn login_form(
    State(s): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (n, _) = nav(&s, &headers);
    let next = q.get("next").cloned().unwrap_or_else(|| "/".into());
    let body = format!(
        "{}<section style=\"max-width:520px\"><h2>Log in to act from the dashboard</h2>\
<p class=\"small\">Paste the agent's API token (the file named by <code>[agent] token_file</code>), or run <code>mamori dashboard-url</code> for a one-time login link.</p>\
<form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"next\" value=\"{}\">\
<p><input type=\"password\" name=\"token\" id=\"token\" size=\"50\" autocomplete=\"off\" required></p><p><button class=\"primary\" id=\"login\">Log in</button></p></form></section>",
        flash(&q),
        esc(&next)
    );
    html(StatusCode::OK, page("Log in", &n, &body, false))
}

/// `/login/{code}`: a one-time link's page; its button logs in (POST).
pub async fn login_link(
    State(s): State<Arc<AppState>>,
    Path(code): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (n, _) = nav(&s, &headers);
    if !s.ui.sessions.link_valid(&code) {
        return html(
            StatusCode::FORBIDDEN,
            page(
                "Login link",
                &n,
                "<section><h2>This login link is not valid</h2><p>It was used already or has expired. Run <code>mamori dashboard-url</code> for a new one, or <a href=\"/login\">log in with the token</a>.</p></section>",
                false,
            ),
        );
    }
    let body = format!(
        "<section style=\"max-width:520px\"><h2>Log in to the dashboard</h2><form method=\"post\" action=\"/login/{}\"><button class=\"primary\" id=\"login\">Log in</button></form></section>",
        url(&code)
    );
    html(StatusCode::OK, page("Login link", &n, &body, false))
}
