//! `[status]`, `[[component]]` and `[incidents]`: what the public status page
//! shows and how incidents behave (docs/config.md, "Status page and
//! incidents"; docs/dashboard.md for the operator's view).

use std::ops::Range;
use std::time::Duration;

use crate::schedule::when::Calendar;

use super::walk::Tbl;

#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// The status page's heading.
    pub title: String,
    /// An open incident without an update for this long raises an alert.
    pub update_every: Duration,
    /// Count `update_every` on this calendar's open days only.
    pub calendar: Option<Calendar>,
    /// Where `calendar` was named, for the cross-check.
    pub calendar_ref: Option<(String, Option<Range<usize>>)>,
    pub components: Vec<Component>,
    pub incidents: IncidentsConfig,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            title: "Service status".into(),
            update_every: Duration::from_secs(24 * 3600),
            calendar: None,
            calendar_ref: None,
            components: Vec::new(),
            incidents: IncidentsConfig::default(),
        }
    }
}

/// `[[component]]`: something users of the service know by name, mapped to
/// the checks and units that make it work.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub name: String,
    pub description: String,
    pub checks: Vec<String>,
    pub units: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct IncidentsConfig {
    /// Open an incident when an alert of at least `auto_open_severity` fires.
    pub auto_open: bool,
    pub auto_open_severity: crate::alert::rules::Severity,
    /// Who is reminded (named in the reminder alert) when nobody else is set.
    pub default_owner: String,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        IncidentsConfig {
            auto_open: false,
            auto_open_severity: crate::alert::rules::Severity::Critical,
            default_owner: "on-call".into(),
        }
    }
}

/// Spans of names given in components, checked once units and checks are known.
pub struct Refs {
    pub checks: Vec<(String, String, Option<Range<usize>>)>,
    pub units: Vec<(String, String, Option<Range<usize>>)>,
}

/// Reads `[status]`, `[incidents]` and every `[[component]]` of the root table.
pub fn compile(root: &Tbl) -> (StatusConfig, Refs) {
    let r = root.reader();
    let mut c = StatusConfig::default();
    let mut refs = Refs {
        checks: Vec::new(),
        units: Vec::new(),
    };
    if let Some(t) = root.table_named("status", "[status]".to_string()) {
        if let Some(title) = t.string("title") {
            c.title = title;
        }
        if let Some(d) = t.duration("update_every") {
            if d < Duration::from_secs(10) {
                r.error(
                    t.key_span("update_every"),
                    "invalid `update_every` in [status]: at least \"10s\", e.g. \"24h\"",
                );
            } else {
                c.update_every = d;
            }
        }
        c.calendar_ref = t.str("calendar");
        t.finish();
    }
    if let Some(t) = root.table_named("incidents", "[incidents]".to_string()) {
        if let Some(b) = t.bool("auto_open") {
            c.incidents.auto_open = b;
        }
        if let Some(s) = t.choice("auto_open_severity", &["info", "warning", "critical"]) {
            if let Some(sev) = crate::alert::rules::Severity::parse(&s) {
                c.incidents.auto_open_severity = sev;
            }
        }
        if let Some(o) = t.string("owner") {
            c.incidents.default_owner = o;
        }
        t.finish();
    }
    for (i, t) in root.tables("component").into_iter().enumerate() {
        let mut tbl = r.table_of(t, format!("[[component]] #{}", i + 1));
        let name = tbl.str("name");
        if let Some((n, _)) = &name {
            tbl.what = format!("[[component]] \"{n}\"");
        }
        let description = tbl.string("description").unwrap_or_default();
        let checks = tbl.str_list("checks").unwrap_or_default();
        let units = tbl.str_list("units").unwrap_or_default();
        if name.is_none() && !tbl.has("name") {
            tbl.missing("name", "e.g. name = \"Web site\"");
        }
        if checks.is_empty() && units.is_empty() && name.is_some() {
            tbl.missing(
                "checks",
                "a component needs at least one check or unit, e.g. checks = [\"web\"]",
            );
        }
        tbl.finish();
        let Some((n, span)) = name else { continue };
        if n.trim().is_empty() || n.len() > 100 {
            r.error(span, "invalid component name: 1 to 100 characters");
            continue;
        }
        if c.components.iter().any(|x| x.name == n) {
            r.error(span, format!("duplicate component name \"{n}\""));
            continue;
        }
        for (x, s) in &checks {
            refs.checks.push((n.clone(), x.clone(), s.clone()));
        }
        for (x, s) in &units {
            refs.units.push((n.clone(), x.clone(), s.clone()));
        }
        c.components.push(Component {
            name: n,
            description,
            checks: checks.into_iter().map(|(x, _)| x).collect(),
            units: units.into_iter().map(|(x, _)| x).collect(),
        });
    }
    (c, refs)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn load(text: &str) -> Result<crate::config::Config, crate::config::ConfigErrors> {
        crate::config::load_str(Path::new("/tmp/m.toml"), text.to_string())
    }

    #[test]
    fn components_status_and_incidents_load() {
        let c = load(
            r#"
[status]
title = "Example status"
update_every = "8h"
calendar = "biz"

[incidents]
auto_open = true
owner = "alice"

[[calendar]]
name = "biz"

[[service]]
name = "web"
command = "sleep 100"

[[check]]
name = "disk"
kind = "disk"
path = "/"
max_used = "99%"

[[component]]
name = "Web site"
description = "What users see"
units = ["web"]
checks = ["disk"]
"#,
        )
        .unwrap();
        assert_eq!(c.status.title, "Example status");
        assert_eq!(
            c.status.update_every,
            std::time::Duration::from_secs(8 * 3600)
        );
        assert_eq!(c.status.calendar.as_ref().unwrap().name, "biz");
        assert!(c.status.incidents.auto_open);
        assert_eq!(c.status.incidents.default_owner, "alice");
        assert_eq!(c.status.components[0].units, vec!["web"]);
        assert_eq!(c.status.components[0].checks, vec!["disk"]);
    }

    #[test]
    fn unknown_names_are_reported_with_positions() {
        let e = load(
            "[status]\ncalendar = \"nope\"\nupdate_evry = \"1h\"\n\n[[component]]\nname = \"A\"\nchecks = [\"missing\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/tmp/m.toml:2:12: unknown calendar \"nope\""),
            "{e}"
        );
        assert!(
            e.contains("/tmp/m.toml:3:1: unknown key `update_evry`"),
            "{e}"
        );
        assert!(
            e.contains("/tmp/m.toml:7:11: unknown check \"missing\" in `checks` of [[component]] \"A\"; it names"),
            "{e}"
        );
    }
}
