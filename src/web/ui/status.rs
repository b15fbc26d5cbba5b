//! The public status page: `/status` (HTML), `/status.json` and
//! `/status/feed.atom` (incident updates, in `feed`). No token, read-only, and safe to
//! expose: it shows only what `[[component]]`, incidents and
//! `[[maintenance]]` say for users — component names and descriptions,
//! levels, uptime, incident titles and update messages, maintenance windows
//! — never unit commands, paths, pids, check reasons or who posted.
//!
//! Levels and uptime come from `incident::status` (pure). The 90-day uptime
//! bars read the check and unit history from the store; they are cached for
//! a minute, so a new outage shows in the bars up to a minute late (the
//! level itself is live).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;

use super::html::{badge, esc, when, CSS};
use super::word;
use crate::incident::status::{self as calc, Level, Member};
use crate::util::{format_ts, now_ms};
use crate::web::AppState;

const DAYS: usize = 90;
const CACHE_MS: i64 = 60_000;
const RECENT_MS: i64 = 7 * 86_400_000;

/// Daily uptime per component name, as computed at `at` from data that
/// starts at `first` (both needed to weigh the days, `calc::overall`).
struct BarsData {
    at: i64,
    first: Option<i64>,
    days: HashMap<String, Vec<Option<f64>>>,
}
type Bars = Arc<BarsData>;

/// Uptime bars per component, and when they were computed.
#[derive(Default)]
pub struct Cache {
    bars: Mutex<Option<(i64, Bars)>>,
}

#[derive(Serialize)]
pub struct StatusView {
    pub title: String,
    pub generated_at: String,
    pub overall: Level,
    pub overall_label: &'static str,
    pub components: Vec<ComponentView>,
    pub incidents: Vec<IncidentView>,
    pub maintenance: Vec<MaintenanceView>,
}

#[derive(Serialize)]
pub struct ComponentView {
    pub name: String,
    pub description: String,
    pub level: Level,
    pub level_label: &'static str,
    /// Average over the days with data, percent.
    pub uptime_90d: Option<f64>,
    pub days: Vec<DayView>,
}

#[derive(Serialize)]
pub struct DayView {
    pub date: String,
    /// Percent of the day without an outage; null: no data.
    pub uptime: Option<f64>,
}

#[derive(Serialize)]
pub struct IncidentView {
    pub id: i64,
    pub title: String,
    pub state: String,
    pub impact: String,
    pub opened_at: String,
    pub resolved_at: Option<String>,
    pub components: Vec<String>,
    /// Newest first.
    pub updates: Vec<UpdateView>,
}

#[derive(Serialize)]
pub struct UpdateView {
    pub id: i64,
    pub at: String,
    pub state: String,
    pub message: String,
}

#[derive(Serialize)]
pub struct MaintenanceView {
    pub name: String,
    /// Empty: every day.
    pub days: Vec<&'static str>,
    pub from: String,
    pub to: String,
    pub timezone: &'static str,
    pub active: bool,
}

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

fn hhmm(m: u32) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

fn bars(s: &AppState, now: i64) -> Bars {
    let mut cache =
        s.ui.status_cache
            .bars
            .lock()
            .unwrap_or_else(|p| p.into_inner());
    if let Some((at, b)) = cache.as_ref() {
        if now - at < CACHE_MS && now >= *at {
            return b.clone();
        }
    }
    let start = now.div_euclid(calc::DAY_MS) * calc::DAY_MS - (DAYS as i64 - 1) * calc::DAY_MS;
    let changes = s.store.status_changes(start).unwrap_or_default();
    let first = s.store.first_event_ts().ok().flatten();
    let mut out = HashMap::new();
    for c in &s.incidents.config.components {
        let members = calc::member_keys(c);
        out.insert(
            c.name.clone(),
            calc::daily_uptime(&changes, &members, DAYS, now, first),
        );
    }
    let b = Arc::new(BarsData {
        at: now,
        first,
        days: out,
    });
    *cache = Some((now, b.clone()));
    b
}

/// Everything the status page shows, computed now.
pub fn view(s: &AppState) -> StatusView {
    let now = now_ms();
    let cfg = &s.incidents.config;
    let units: HashMap<String, (String, String)> = s
        .sup
        .statuses()
        .into_iter()
        .map(|u| {
            (
                u.name.clone(),
                (u.kind.as_str().to_string(), word(&u.state)),
            )
        })
        .collect();
    let checks: HashMap<String, &'static str> = s
        .checks
        .statuses()
        .into_iter()
        .map(|c| (c.name.clone(), c.status.as_str()))
        .collect();
    let incidents = s
        .incidents
        .store
        .incidents_since(now - RECENT_MS, 100)
        .unwrap_or_default();
    let windows = &s.ui.maintenance;
    let open_windows: Vec<&crate::alert::mute::Window> = windows
        .iter()
        .filter(|w| {
            let (d, m) = crate::alert::mute::clock(now, w.local);
            w.open_at(d, m)
        })
        .collect();
    let bars = bars(s, now);
    let today = now.div_euclid(calc::DAY_MS) * calc::DAY_MS;
    let mut components = Vec::new();
    for c in &cfg.components {
        let mut members: Vec<Member> = Vec::new();
        for ch in &c.checks {
            members.push(match checks.get(ch).copied() {
                // Paused: its service is stopped, which users see as down.
                Some("down" | "paused") => Member::Down,
                _ => Member::Up,
            });
        }
        for u in &c.units {
            if let Some((kind, state)) = units.get(u) {
                members.push(calc::unit_member(kind, state));
            }
        }
        let impacts: Vec<Level> = incidents
            .iter()
            .filter(|i| i.resolved_at.is_none() && i.components.contains(&c.name))
            .map(|i| Level::from_impact(&i.impact))
            .collect();
        let in_maintenance = open_windows
            .iter()
            .any(|w| calc::window_covers(&w.matchers, c));
        let level = calc::level(&members, &impacts, in_maintenance);
        let days = bars.days.get(&c.name).cloned().unwrap_or_default();
        components.push(ComponentView {
            name: c.name.clone(),
            description: c.description.clone(),
            level,
            level_label: level.label(),
            uptime_90d: calc::overall(&days, bars.at, bars.first)
                .map(|u| (u * 100_000.0).round() / 1000.0),
            days: days
                .iter()
                .enumerate()
                .map(|(i, u)| DayView {
                    date: chrono::DateTime::from_timestamp_millis(
                        today - (DAYS - 1 - i) as i64 * calc::DAY_MS,
                    )
                    .map(|t| t.format("%Y-%m-%d").to_string())
                    .unwrap_or_default(),
                    uptime: u.map(|u| (u * 100_000.0).round() / 1000.0),
                })
                .collect(),
        });
    }
    let levels: HashMap<String, Level> = components
        .iter()
        .map(|c| (c.name.clone(), c.level))
        .collect();
    // An open incident on no component (or only on components the page
    // no longer has) is about the service as a whole: the headline must
    // not say "operational" above it.
    let unplaced = incidents
        .iter()
        .filter(|i| i.resolved_at.is_none())
        .filter(|i| !i.components.iter().any(|c| levels.contains_key(c)))
        .map(|i| Level::from_impact(&i.impact));
    let overall = unplaced.fold(calc::worst(&levels), Level::max);
    StatusView {
        title: cfg.title.clone(),
        generated_at: format_ts(now),
        overall,
        overall_label: match overall {
            Level::Operational => "All systems operational",
            Level::Maintenance => "Scheduled maintenance in progress",
            Level::Degraded => "Degraded performance",
            Level::PartialOutage => "Partial outage",
            Level::MajorOutage => "Major outage",
        },
        components,
        incidents: incidents
            .into_iter()
            .map(|i| IncidentView {
                id: i.id,
                title: i.title,
                state: i.state,
                impact: i.impact,
                opened_at: format_ts(i.opened_at),
                resolved_at: i.resolved_at.map(format_ts),
                components: i.components,
                updates: i
                    .updates
                    .into_iter()
                    .rev()
                    .map(|u| UpdateView {
                        id: u.id,
                        at: format_ts(u.ts),
                        state: u.state,
                        message: u.message,
                    })
                    .collect(),
            })
            .collect(),
        maintenance: windows
            .iter()
            .map(|w| MaintenanceView {
                name: w.name.clone(),
                days: w
                    .days
                    .iter()
                    .filter_map(|d| WEEKDAYS.get(*d as usize).copied())
                    .collect(),
                from: hhmm(w.from),
                to: hhmm(w.to),
                timezone: if w.local { "local" } else { "UTC" },
                active: open_windows.iter().any(|o| o.name == w.name),
            })
            .collect(),
    }
}

pub fn public(mut r: Response, content_type: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated every time: a posted update shows at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Public data: other sites may embed the JSON or the feed.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

pub async fn json(State(s): State<Arc<AppState>>) -> Response {
    public(Json(view(&s)).into_response(), "application/json")
}

fn bar_class(u: Option<f64>) -> &'static str {
    match u {
        None => "",
        Some(u) if u >= 100.0 => "u100",
        Some(u) if u >= 99.0 => "u99",
        Some(u) if u >= 95.0 => "u95",
        Some(_) => "ulow",
    }
}

fn level_class(l: Level) -> &'static str {
    match l {
        Level::Operational => "ok",
        Level::Maintenance => "info",
        Level::Degraded => "warn",
        _ => "bad",
    }
}

pub async fn page(State(s): State<Arc<AppState>>) -> Response {
    let v = view(&s);
    let mut b = String::with_capacity(32 * 1024);
    let _ = write!(
        b,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{}</title><link rel=\"alternate\" type=\"application/atom+xml\" title=\"Incident updates\" href=\"/status/feed.atom\"><style>{CSS}\
main{{max-width:860px}}.overall{{font-size:18px;font-weight:600;padding:14px 16px}}.comp{{padding:10px 0;border-bottom:1px solid var(--line)}}.comp:last-child{{border:0}}</style></head><body>\
<header><span class=\"brand\">{}</span><span class=\"right\"><a href=\"/status/feed.atom\">Atom feed</a><a href=\"/status.json\">JSON</a></span></header><main>\
<section class=\"overall {}\" id=\"overall\">{}</section>",
        esc(&v.title),
        esc(&v.title),
        level_class(v.overall),
        esc(v.overall_label)
    );
    let open: Vec<&IncidentView> = v
        .incidents
        .iter()
        .filter(|i| i.resolved_at.is_none())
        .collect();
    let recent: Vec<&IncidentView> = v
        .incidents
        .iter()
        .filter(|i| i.resolved_at.is_some())
        .collect();
    for (title, list, id) in [
        ("Current incidents", &open, "open"),
        ("Resolved in the last 7 days", &recent, "recent"),
    ] {
        if list.is_empty() {
            continue;
        }
        let _ = write!(b, "<section id=\"incidents-{id}\"><h2>{title}</h2>");
        for i in list {
            let _ =
                write!(
                b,
                "<div class=\"incident\" data-id=\"{}\"><h3>{} {}</h3>{}<div class=\"timeline\">",
                i.id,
                esc(&i.title),
                badge(super::html::state_class(&i.state), &i.state),
                if i.components.is_empty() {
                    String::new()
                } else {
                    format!("<div class=\"small\">Affects {}</div>", esc(&i.components.join(", ")))
                }
            );
            for u in &i.updates {
                let ts = chrono::DateTime::parse_from_rfc3339(&u.at)
                    .map(|t| when(t.timestamp_millis()))
                    .unwrap_or_default();
                let _ = write!(
                    b,
                    "<div class=\"update\"><b>{}</b> <span class=\"small\">{}</span><br>{}</div>",
                    esc(&u.state),
                    esc(&ts),
                    esc(&u.message)
                );
            }
            b.push_str("</div></div>");
        }
        b.push_str("</section>");
    }
    b.push_str("<section id=\"components\"><h2>Components</h2>");
    if v.components.is_empty() {
        b.push_str(
            "<p class=\"muted\">No components are declared ([[component]] in the config).</p>",
        );
    }
    for c in &v.components {
        let _ = write!(
            b,
            "<div class=\"comp\" data-level=\"{}\"><b>{}</b> <span class=\"{}\" style=\"float:right\">{}</span><div class=\"small\">{}</div><div class=\"bars\" title=\"last 90 days\">",
            c.level.as_str(),
            esc(&c.name),
            level_class(c.level),
            esc(c.level_label),
            esc(&c.description)
        );
        for d in &c.days {
            let _ = write!(
                b,
                "<span class=\"{}\" title=\"{} {}\"></span>",
                bar_class(d.uptime),
                esc(&d.date),
                d.uptime
                    .map(|u| format!("{u:.2}%"))
                    .unwrap_or_else(|| "no data".into())
            );
        }
        let _ = write!(
            b,
            "</div><div class=\"small\">90 days ago <span style=\"float:right\">{} · today</span></div></div>",
            c.uptime_90d.map(|u| format!("{u:.2}% uptime")).unwrap_or_else(|| "no data".into())
        );
    }
    b.push_str("</section>");
    if !v.maintenance.is_empty() {
        b.push_str("<section id=\"maintenance\"><h2>Scheduled maintenance</h2><table><tr><th>Window</th><th>Days</th><th>Time</th><th></th></tr>");
        for m in &v.maintenance {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}–{} {}</td><td>{}</td></tr>",
                esc(&m.name),
                if m.days.is_empty() {
                    "every day".to_string()
                } else {
                    m.days.join(", ")
                },
                m.from,
                m.to,
                m.timezone,
                if m.active {
                    badge("info", "in progress")
                } else {
                    String::new()
                }
            );
        }
        b.push_str("</table></section>");
    }
    let _ = write!(
        b,
        "<p class=\"small\">Updated {}</p></main></body></html>",
        esc(&v.generated_at)
    );
    let mut r = (StatusCode::OK, b).into_response();
    r.headers_mut()
        .insert("x-frame-options", HeaderValue::from_static("DENY"));
    public(r, "text/html; charset=utf-8")
}
