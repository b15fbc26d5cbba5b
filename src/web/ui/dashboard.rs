//! `/`: everything at a glance. Alerts (acknowledge, resolve), open
//! incidents (post an update, open one), units (state, uptime, restarts,
//! memory, last exit reason), memory charts of services suspected of a leak,
//! checks with their last failure reason, flows as graphs (rerun from the
//! failed job, release), and the latest runs; with `[cluster]`, failover
//! groups and recent drills (`groups`). Built to stay fast with 500
//! units and 1,000 checks: one pass over in-memory statuses, a few indexed
//! queries, charts only for leaking services (every service has its chart
//! on its own page).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;

use super::html::{badge, bytes, dur_ms, esc, state_class, time_ago, url};
use super::{flash, form_fields, here, html, nav, session::Session, word};
use crate::alert::db::AlertStore;
use crate::web::AppState;

pub async fn page(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (nav_html, sess) = nav(&s, &headers);
    let back = here(&uri);
    let groups = super::groups::load(&s).await;
    let body = match render(&s, sess.as_ref(), &back, &q, groups.as_ref()) {
        Ok(b) => b,
        Err(e) => format!(
            "<section><h2>Cannot read the store</h2><p>{}</p></section>",
            esc(&e)
        ),
    };
    html(
        StatusCode::OK,
        super::html::page("mamori dashboard", &nav_html, &body, true),
    )
}

fn render(
    s: &AppState,
    sess: Option<&Session>,
    back: &str,
    q: &HashMap<String, String>,
    groups: Option<&super::groups::Groups>,
) -> Result<String, String> {
    let now = crate::util::now_ms();
    let units = s.sup.statuses();
    let checks = s.checks.statuses();
    let alerts = s
        .alerts
        .store
        .alerts(None, 200)
        .map_err(|e| e.to_string())?;
    let incidents = s
        .incidents
        .store
        .incidents(false, 50)
        .map_err(|e| e.to_string())?;
    let flows = s.flows.views();
    let runs = s.store.runs(None, 15).map_err(|e| e.to_string())?;

    let mut b = String::with_capacity(64 * 1024 + units.len() * 400 + checks.len() * 300);
    b.push_str(&flash(q));
    // Summary.
    let running = units.iter().filter(|u| word(&u.state) == "running").count();
    let bad_units = units
        .iter()
        .filter(|u| matches!(word(&u.state).as_str(), "failed" | "gave-up" | "backoff"))
        .count();
    let down = checks
        .iter()
        .filter(|c| c.status.as_str() == "down")
        .count();
    let firing = alerts.iter().filter(|a| a.state == "firing").count();
    let stalled = flows
        .iter()
        .filter(|f| {
            !f.older_open.is_empty()
                || f.latest
                    .as_ref()
                    .is_some_and(|r| word(&r.status) == "stalled")
        })
        .count();
    let _ = write!(
        b,
        "<div class=\"summary\"><div><b>{running}/{}</b>units running</div>\
<div><b class=\"{}\">{bad_units}</b>units failing</div>\
<div><b class=\"{}\">{down}/{}</b>checks down</div>\
<div><b class=\"{}\">{firing}</b>alerts firing ({} active)</div>\
<div><b class=\"{}\">{}</b>open incidents</div>\
<div><b class=\"{}\">{stalled}</b>flows stalled</div>{}</div><br>",
        units.len(),
        if bad_units > 0 { "bad" } else { "ok" },
        if down > 0 { "bad" } else { "ok" },
        checks.len(),
        if firing > 0 { "bad" } else { "ok" },
        alerts.len(),
        if incidents.is_empty() { "ok" } else { "warn" },
        incidents.len(),
        if stalled > 0 { "bad" } else { "ok" },
        groups.map(|g| g.summary()).unwrap_or_default(),
    );

    // Alerts.
    b.push_str("<section id=\"alerts\"><h2>Alerts</h2>");
    if alerts.is_empty() {
        b.push_str("<p class=\"muted\">No active alerts.</p>");
    } else {
        b.push_str("<table><tr><th>ID</th><th>Severity</th><th>State</th><th>Alert</th><th>Since</th><th>Count</th><th></th></tr>");
        for a in &alerts {
            let _ = write!(
                b,
                "<tr class=\"alert\" data-id=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td><b>{}</b><div class=\"reason\">{}</div>{}</td><td>{}</td><td class=\"num\">{}</td><td>",
                a.id,
                a.id,
                badge(state_class(&a.severity), &a.severity),
                badge(state_class(&a.state), &a.state),
                esc(&a.title),
                esc(&a.body),
                a.acked_by
                    .as_ref()
                    .map(|by| format!("<div class=\"small\">acknowledged by {}</div>", esc(by)))
                    .unwrap_or_default(),
                time_ago(a.first_at, now),
                a.occurrences
            );
            if let Some(sess) = sess {
                if a.state == "firing" {
                    let _ = write!(
                        b,
                        "<form class=\"inline\" method=\"post\" action=\"/ui/alerts/{}/ack\">{}<button class=\"primary\" id=\"ack-{}\">Acknowledge</button></form> ",
                        a.id,
                        form_fields(sess, back),
                        a.id
                    );
                }
                // An alert that clears by itself is resolved by hand only on
                // purpose (nothing pages again while its cause lasts).
                let (force, label, hint) = match s.alerts.clears_on(&a.rule) {
                    Some(on) => (
                        "<input type=\"hidden\" name=\"force\" value=\"1\">",
                        "Resolve anyway",
                        format!(" title=\"It clears by itself on {}; resolving it now means no new alert while its cause lasts\"", esc(on)),
                    ),
                    None => ("", "Resolve", String::new()),
                };
                let _ = write!(
                    b,
                    "<form class=\"inline\" method=\"post\" action=\"/ui/alerts/{}/resolve\">{}{force}<button id=\"resolve-{}\"{hint}>{label}</button></form>",
                    a.id,
                    form_fields(sess, back),
                    a.id
                );
            }
            b.push_str("</td></tr>");
        }
        b.push_str("</table>");
    }
    b.push_str("</section>");

    // Incidents.
    b.push_str("<section id=\"incidents\"><h2>Open incidents</h2>");
    if incidents.is_empty() {
        b.push_str("<p class=\"muted\">None.</p>");
    }
    for i in &incidents {
        let last = i.updates.last();
        let _ = write!(
            b,
            "<div class=\"incident\"><h3><a href=\"/ui/incidents/{}\">#{} {}</a> {} {}</h3><div class=\"small\">owner {} · opened {} · last update {}{}</div><p>{}</p>",
            i.id,
            i.id,
            esc(&i.title),
            badge(state_class(&i.state), &i.state),
            badge(state_class(&i.impact), &i.impact.replace('_', " ")),
            esc(&i.owner),
            time_ago(i.opened_at, now),
            time_ago(i.last_update_at, now),
            if i.components.is_empty() {
                String::new()
            } else {
                format!(" · {}", esc(&i.components.join(", ")))
            },
            esc(last.map(|u| u.message.as_str()).unwrap_or(""))
        );
        if let Some(sess) = sess {
            b.push_str(&super::incidents::update_form(sess, back, i.id, &i.state));
        }
        b.push_str("</div>");
    }
    if let Some(sess) = sess {
        b.push_str(&super::incidents::open_form(
            sess,
            back,
            &s.incidents.config.components,
            &alerts,
        ));
    }
    b.push_str("</section>");

    // Failover groups and recent drills (only with `[cluster]`).
    if let Some(g) = groups {
        b.push_str(&g.render(now));
    }

    // Leaking services' charts.
    let leaking: Vec<_> = units
        .iter()
        .filter_map(|u| Some((u, s.sampler.leak_status(&u.name).filter(|l| l.suspected)?)))
        .take(8)
        .collect();
    if !leaking.is_empty() {
        b.push_str("<section id=\"leaks\"><h2>Memory: suspected leaks</h2><div class=\"grid2\">");
        for (u, _) in leaking {
            let _ = write!(
                b,
                "<div><h3><a href=\"/ui/units/{}\">{}</a></h3>{}</div>",
                url(&u.name),
                esc(&u.name),
                super::unit::memory_chart(s, &u.name, u.limits.memory, 3600 * 1000, now)
            );
        }
        b.push_str("</div></section>");
    }

    // Units.
    let _ = write!(
        b,
        "<section id=\"units\"><h2>Units ({})</h2><div class=\"scroll\"><table><tr><th>Unit</th><th>Kind</th><th>State</th><th>Uptime</th><th class=\"num\">Restarts</th><th class=\"num\">Memory</th><th>Last exit</th></tr>",
        units.len()
    );
    for u in &units {
        let st = word(&u.state);
        let leak = s
            .sampler
            .leak_status(&u.name)
            .filter(|l| l.suspected)
            .map(|l| {
                format!(
                    " {}",
                    badge("bad", &format!("leak {:.1} MB/h", l.slope_mb_per_hour))
                )
            })
            .unwrap_or_default();
        let _ = write!(
            b,
            "<tr><td><a href=\"/ui/units/{}\">{}</a>{leak}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            url(&u.name),
            esc(&u.name),
            u.kind.as_str(),
            badge(state_class(&st), &st),
            u.uptime_ms.map(dur_ms).unwrap_or_default(),
            u.restarts,
            u.memory.map(bytes).unwrap_or_default(),
            match (&u.last_reason, u.last_exit_at) {
                (Some(r), Some(t)) => format!("{} <span class=\"small\">{}</span>", esc(r), time_ago(t, now)),
                (Some(r), None) => esc(r),
                _ => String::new(),
            }
        );
    }
    b.push_str("</table></div></section>");

    // Checks: down first.
    let mut checks = checks;
    checks.sort_by_key(|c| (c.status.as_str() != "down", c.name.clone()));
    let _ = write!(
        b,
        "<section id=\"checks\"><h2>Checks ({})</h2><div class=\"scroll\"><table><tr><th>Check</th><th>Kind</th><th>Status</th><th>Since</th><th>Last failure</th><th class=\"num\">Latency</th></tr>",
        checks.len()
    );
    for c in &checks {
        let st = c.status.as_str();
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            esc(&c.name),
            c.kind,
            badge(state_class(st), st),
            c.since.map(|t| time_ago(t, now)).unwrap_or_default(),
            match (&c.last_reason, c.last_failed_at) {
                (Some(r), Some(t)) => format!("{} <span class=\"small\">{}</span>", esc(r), time_ago(t, now)),
                (Some(r), None) => esc(r),
                _ => String::new(),
            },
            c.last_latency_ms.map(|l| format!("{l:.1} ms")).unwrap_or_default()
        );
    }
    b.push_str("</table></div></section>");

    // Flows.
    if !flows.is_empty() {
        b.push_str("<section id=\"flows\"><h2>Flows</h2>");
        for f in &flows {
            let status = f
                .latest
                .as_ref()
                .map(|r| word(&r.status))
                .unwrap_or_else(|| "not run".into());
            let _ = write!(
                b,
                "<div class=\"flow\" data-flow=\"{}\"><h3>{} {} <span class=\"small\">{}{}</span></h3><div class=\"flowgraph\">{}</div>",
                esc(&f.name),
                esc(&f.name),
                badge(state_class(&status), &status),
                f.schedule.as_deref().map(esc).unwrap_or_default(),
                f.next.map(|t| format!(" · next {}", time_ago(t, now))).unwrap_or_default(),
                super::flowgraph::svg(&f.jobs, &f.upstream, f.latest.as_ref().map(|r| &r.jobs))
            );
            if let (Some(sess), Some(run)) = (sess, &f.latest) {
                let stuck: Vec<&String> = run
                    .jobs
                    .iter()
                    .filter(|(_, st)| {
                        matches!(
                            st,
                            crate::schedule::flow::JobState::Failed { .. }
                                | crate::schedule::flow::JobState::Held { .. }
                        )
                    })
                    .map(|(j, _)| j)
                    .collect();
                if !stuck.is_empty() {
                    let _ = write!(
                        b,
                        "<form class=\"inline\" method=\"post\" action=\"/ui/flows/{}/rerun\">{}<button class=\"primary\">Rerun from failed</button></form> ",
                        url(&f.name),
                        form_fields(sess, back)
                    );
                    for j in stuck {
                        let _ = write!(
                            b,
                            "<form class=\"inline\" method=\"post\" action=\"/ui/jobs/{}/release\">{}<button>Release {}</button></form> ",
                            url(j),
                            form_fields(sess, back),
                            esc(j)
                        );
                    }
                }
            }
            b.push_str("</div>");
        }
        b.push_str("</section>");
    }

    // Runs.
    b.push_str("<section id=\"runs\"><h2>Latest runs</h2><table><tr><th>Run</th><th>Unit</th><th>State</th><th>Reason</th><th>Started</th><th>Took</th></tr>");
    for r in &runs {
        let st = r.state.as_str();
        let _ = write!(
            b,
            "<tr><td><a href=\"/ui/runs/{}\">{}</a></td><td><a href=\"/ui/units/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.id,
            r.id,
            url(&r.unit),
            esc(&r.unit),
            badge(state_class(st), st),
            esc(r.reason.as_deref().unwrap_or("")),
            time_ago(r.started_at, now),
            r.ended_at
                .map(|e| dur_ms((e - r.started_at).max(0) as u64))
                .unwrap_or_default()
        );
    }
    b.push_str("</table></section>");
    Ok(b)
}
