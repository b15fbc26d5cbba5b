//! `/status/feed.atom`: the Atom feed (RFC 4287) of incident updates, built
//! from the same view as the status page (so it shows no more than it).

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::html::esc;
use super::status::{public, view, IncidentView, UpdateView};
use crate::web::AppState;

/// The Atom feed (RFC 4287) of incident updates, newest first.
pub async fn atom(State(s): State<Arc<AppState>>) -> Response {
    let v = view(&s);
    let base = s.alerts.public_url.trim_end_matches('/').to_string();
    let mut entries: Vec<(&IncidentView, &UpdateView)> = v
        .incidents
        .iter()
        .flat_map(|i| i.updates.iter().map(move |u| (i, u)))
        .collect();
    entries.sort_by(|a, b| b.1.at.cmp(&a.1.at).then(b.1.id.cmp(&a.1.id)));
    entries.truncate(50);
    let updated = entries
        .first()
        .map(|(_, u)| u.at.clone())
        .unwrap_or_else(|| v.generated_at.clone());
    let mut x = String::with_capacity(8192);
    let _ = write!(
        x,
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\
<title>{} — incident updates</title><id>{}/status</id><updated>{}</updated>\
<link rel=\"self\" type=\"application/atom+xml\" href=\"{}/status/feed.atom\"/><link rel=\"alternate\" type=\"text/html\" href=\"{}/status\"/>\
<author><name>{}</name></author><generator>mamori</generator>\n",
        esc(&v.title),
        esc(&base),
        esc(&updated),
        esc(&base),
        esc(&base),
        esc(&v.title)
    );
    for (i, u) in entries {
        let _ = write!(
            x,
            "<entry><id>{}/status#incident-{}-update-{}</id><title>{}: {}</title><updated>{}</updated>\
<link rel=\"alternate\" type=\"text/html\" href=\"{}/status#incident-{}\"/><category term=\"{}\"/><content type=\"text\">{}</content></entry>",
            esc(&base),
            i.id,
            u.id,
            esc(&i.title),
            esc(&u.state),
            esc(&u.at),
            esc(&base),
            i.id,
            esc(&u.state),
            esc(&u.message)
        );
        x.push('\n');
    }
    x.push_str("</feed>\n");
    public(
        (StatusCode::OK, x).into_response(),
        "application/atom+xml; charset=utf-8",
    )
}
