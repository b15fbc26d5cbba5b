//! Incident pages (the list, one incident with its timeline) and the
//! incident forms shared with the overview.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;

use super::html::{badge, esc, page, state_class, time_ago, when};
use super::session::Session;
use super::{flash, form_fields, here, html, nav, not_found};
use crate::alert::db::AlertRecord;
use crate::web::AppState;

const STATES: &[&str] = crate::incident::STATES;

/// The "post an update" form of one incident.
pub fn update_form(sess: &Session, back: &str, id: i64, current: &str) -> String {
    let mut opts = String::new();
    for st in STATES {
        let _ = write!(
            opts,
            "<option value=\"{st}\"{}>{st}</option>",
            if *st == current { " selected" } else { "" }
        );
    }
    format!(
        "<form class=\"update\" method=\"post\" action=\"/ui/incidents/{id}/update\">{}<select name=\"state\" id=\"update-state-{id}\">{opts}</select> \
<textarea name=\"message\" id=\"update-message-{id}\" placeholder=\"What is going on, what users should expect\" required></textarea>\
<button class=\"primary\" id=\"update-post-{id}\">Post update</button></form>",
        form_fields(sess, back)
    )
}

/// The "open an incident" form.
pub fn open_form(
    sess: &Session,
    back: &str,
    components: &[crate::config::status::Component],
    alerts: &[AlertRecord],
) -> String {
    let mut comps = String::new();
    for c in components {
        let _ = write!(
            comps,
            "<label><input type=\"checkbox\" name=\"component\" value=\"{}\"> {}</label> ",
            esc(&c.name),
            esc(&c.name)
        );
    }
    let mut al = String::from("<option value=\"\">(none)</option>");
    for a in alerts {
        let _ = write!(
            al,
            "<option value=\"{}\">#{} {}</option>",
            a.id,
            a.id,
            esc(&a.title)
        );
    }
    format!(
        "<details id=\"open-incident\"><summary>Open an incident</summary><form method=\"post\" action=\"/ui/incidents\">{}\
<p><input type=\"text\" name=\"title\" id=\"incident-title\" placeholder=\"Title users will see\" size=\"60\" required></p>\
<p>Impact <select name=\"impact\"><option value=\"degraded\">degraded</option><option value=\"partial_outage\" selected>partial outage</option><option value=\"major_outage\">major outage</option></select> \
Alert <select name=\"alert\">{al}</select></p><p>{comps}</p>\
<textarea name=\"message\" id=\"incident-message\" placeholder=\"First update\"></textarea>\
<p><button class=\"primary\" id=\"incident-open\">Open incident</button></p></form></details>",
        form_fields(sess, back)
    )
}

fn timeline(i: &crate::store::Incident, now: i64) -> String {
    let mut b = String::from("<div class=\"timeline\">");
    for u in i.updates.iter().rev() {
        let _ = write!(
            b,
            "<div>{} <span class=\"small\">{} · {}</span><br>{}</div>",
            badge(state_class(&u.state), &u.state),
            time_ago(u.ts, now),
            esc(&u.by),
            esc(&u.message)
        );
    }
    b.push_str("</div>");
    b
}

/// `/ui/incidents`: every incident, newest first.
pub async fn incidents(
    State(s): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let (n, sess) = nav(&s, &headers);
    let now = crate::util::now_ms();
    let back = here(&uri);
    let mut b = flash(&q);
    b.push_str("<h1>Incidents</h1><section>");
    if let Some(sess) = &sess {
        let alerts =
            crate::alert::db::AlertStore::alerts(&s.alerts.store, None, 200).unwrap_or_default();
        b.push_str(&open_form(
            sess,
            &back,
            &s.incidents.config.components,
            &alerts,
        ));
    }
    b.push_str("<table><tr><th>ID</th><th>Title</th><th>State</th><th>Impact</th><th>Owner</th><th>Opened</th><th>Last update</th></tr>");
    for i in s.incidents.store.incidents(true, 200).unwrap_or_default() {
        let _ = write!(
            b,
            "<tr><td>{}</td><td><a href=\"/ui/incidents/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            i.id,
            i.id,
            esc(&i.title),
            badge(state_class(&i.state), &i.state),
            esc(&i.impact.replace('_', " ")),
            esc(&i.owner),
            time_ago(i.opened_at, now),
            time_ago(i.last_update_at, now)
        );
    }
    b.push_str("</table></section>");
    html(StatusCode::OK, page("Incidents", &n, &b, true))
}

/// `/ui/incidents/{id}`: one incident with its timeline and the update form.
pub async fn incident(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some(i) = id
        .parse::<i64>()
        .ok()
        .and_then(|id| s.incidents.store.incident(id).ok().flatten())
    else {
        return not_found(&s, &headers, &format!("No incident {id}"));
    };
    let (n, sess) = nav(&s, &headers);
    let now = crate::util::now_ms();
    let mut b = flash(&q);
    let _ = write!(
        b,
        "<h1>#{} {} {}</h1><section><p>Impact {} · owner {} · opened {} by {}{}{}</p>",
        i.id,
        esc(&i.title),
        badge(state_class(&i.state), &i.state),
        esc(&i.impact.replace('_', " ")),
        esc(&i.owner),
        when(i.opened_at),
        esc(&i.opened_by),
        if i.components.is_empty() {
            String::new()
        } else {
            format!(" · components: {}", esc(&i.components.join(", ")))
        },
        if i.alerts.is_empty() {
            String::new()
        } else {
            format!(
                " · alerts: {}",
                i.alerts
                    .iter()
                    .map(|a| format!("#{a}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    if let (Some(sess), None) = (&sess, i.resolved_at) {
        b.push_str(&update_form(sess, &here(&uri), i.id, &i.state));
    }
    b.push_str(&timeline(&i, now));
    b.push_str("</section>");
    html(
        StatusCode::OK,
        page(&format!("incident {}", i.id), &n, &b, false),
    )
}
