//! Alert rules: which events raise an alert, under which key, and which
//! events clear it again.
//!
//! A rule matches an event by its `kind` string (`EventKind::name()`, e.g.
//! `check.down`) and, optionally, by its subject (the `check`, `unit`, `key`,
//! `group`, `job` or `flow` field, the first present; `*` wildcards) and by equality on other JSON fields (`where`).
//! Matching works on the event's JSON, so rules can name kinds this build does
//! not define yet (`leak.suspected` from the leak detector).
//!
//! The alert key is `RULE/SUBJECT`: one alert per rule and subject while it is
//! active; further matches only count occurrences.
//!
//! Templates (`title`, `body`) substitute `{field}` with the event's field
//! (`{unit}`, `{check}`, `{reason}`, ...) plus `{rule}`, `{severity}`,
//! `{kind}` and `{subject}`; `{{` and `}}` are literal braces; an unknown field
//! renders as an empty string.

use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    /// Event kinds that raise (or count towards) the alert.
    pub on: Vec<String>,
    /// Only events whose subject matches this pattern (`*` is a wildcard).
    pub subject: Option<String>,
    /// Field equalities the event must satisfy, e.g. `state = "failed"`.
    pub when: Vec<(String, String)>,
    /// Event kinds that resolve the alert with the same subject.
    pub resolve_on: Vec<String>,
    /// Field equalities a `resolve_on` event must satisfy to resolve, e.g.
    /// `state = "succeeded"` (a job that failed resolves when it next
    /// succeeds, not when it next ends).
    pub resolve_when: Vec<(String, String)>,
    pub severity: Severity,
    /// A field whose value, when it is a severity name, overrides `severity`
    /// (ingested alerts carry their own).
    pub severity_from: Option<String>,
    pub title: String,
    pub body: String,
    /// The escalation policy; `None` picks by severity (see `escalation`).
    pub policy: Option<String>,
}

/// What a rule makes of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Matched {
    Fire {
        key: String,
        rule: String,
        subject: String,
        severity: Severity,
        title: String,
        body: String,
        policy: Option<String>,
    },
    Clear {
        key: String,
    },
}

/// The rules that exist without any config (`[alerts] default_rules = true`).
pub fn defaults() -> Vec<Rule> {
    let rule = |name: &str, on: &str, resolve: &[&str], sev, title: &str, body: &str| Rule {
        name: name.into(),
        on: vec![on.into()],
        subject: None,
        when: Vec::new(),
        resolve_on: resolve.iter().map(|s| s.to_string()).collect(),
        resolve_when: Vec::new(),
        severity: sev,
        severity_from: None,
        title: title.into(),
        body: body.into(),
        policy: None,
    };
    vec![
        rule(
            "unit-gave-up",
            "unit.gave_up",
            &["unit.started"],
            Severity::Critical,
            "{unit} gave up restarting",
            "{unit} was started {starts} times within {window} and mamori stopped restarting it. Fix the cause, then `mamori restart {unit}`.",
        ),
        rule(
            "check-down",
            "check.down",
            &["check.up", "check.paused"],
            Severity::Critical,
            "check {check} is down",
            "The {check_kind} check {check} is down: {reason}",
        ),
        rule(
            "limit-breached",
            "unit.limit_breached",
            &[],
            Severity::Warning,
            "{unit} was killed at its {limit} limit",
            "{unit} (run {run_id}) reached {value_text} against a {limit} limit of {max_text} and was killed ({enforced_by}).",
        ),
        rule(
            "leak-suspected",
            "leak.suspected",
            &["leak.cleared"],
            Severity::Warning,
            "{unit} seems to leak memory",
            "{unit} grows by {slope_mb_per_hour} MB/hour (confidence {confidence}); it reaches its limit in about {time_to_limit}.",
        ),
        rule(
            "incident-update-due",
            "incident.update_due",
            &["incident.updated"],
            Severity::Warning,
            "incident {incident_id} needs an update: {title}",
            "Incident {incident_id} (\"{title}\", owner {owner}) has had no update since {last_update}; one was due at {due}. Post one with `mamori incident update {incident_id} --state STATE --message ...` or from the dashboard.",
        ),
        // --- jobs ---
        Rule {
            resolve_when: vec![("state".into(), "succeeded".into())],
            ..rule(
                "job-failed",
                "job.failed",
                &["unit.exited"],
                Severity::Critical,
                "job {job} of flow {flow} failed",
                "Job {job} failed for good in run {flow_run} of flow {flow} ({reason}); what depends on it is held and will not run. Rerun it once the cause is fixed (`mamori rerun {flow} --from-failed`): this alert resolves when the job next succeeds. To go on without it, `mamori release {job}`, then resolve this alert by hand.",
            )
        },
        // --- cluster ---
        rule(
            "drill-failed",
            "drill.failed",
            &["drill.passed"],
            Severity::Critical,
            "failover drill of {group} failed",
            "The failover drill {drill_id} of group {group} failed: {reason}. Failover is broken; fix it before a real failure needs it.",
        ),
        rule(
            "no-standby",
            "group.no_standby",
            &["group.standby_ok"],
            Severity::Critical,
            "no standby of {group} qualifies",
            "Node {node} sees no standby of group {group} that passes its pre-promote checks (leaderless: {leaderless}). A failure of the active node would not fail over.",
        ),
        Rule {
            when: vec![("fenced".into(), "true".into())],
            ..rule(
                "group-fenced",
                "group.deactivated",
                &["group.activated"],
                Severity::Warning,
                "{node} fenced itself out of {group}",
                "{node} stopped group {group} (token {token}): {reason}",
            )
        },
        Rule {
            severity_from: Some("severity".into()),
            ..rule(
                "alertmanager",
                "ingest.firing",
                &["ingest.resolved"],
                Severity::Warning,
                "{name}: {summary}",
                "{description}",
            )
        },
    ]
}

/// Every `field = value` equality holds in the event (a missing field
/// does not).
fn holds(eqs: &[(String, String)], fields: &Map<String, Value>) -> bool {
    eqs.iter()
        .all(|(k, v)| lookup(fields, k).map(value_str).as_deref() == Some(v.as_str()))
}

/// The subject of an event: its `check`, else `unit`, else `key`, else
/// `group`, else `job`, else `flow` field (job and flow events name no unit:
/// without the last two, every job shared one alert with an empty subject).
pub fn subject(fields: &Map<String, Value>) -> String {
    for k in ["check", "unit", "key", "group", "job", "flow"] {
        if let Some(v) = fields.get(k) {
            let s = value_str(v);
            if !s.is_empty() {
                return s;
            }
        }
    }
    String::new()
}

fn value_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A field of the event; `a.b` reads key `b` of the table `a` (an ingested
/// alert's `labels.team`).
pub fn lookup<'a>(fields: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = fields.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut v = fields.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

/// `*` matches any run of characters; everything else literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Renders a `{field}` template over `fields`.
pub fn render(template: &str, fields: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|(_, n)| *n) == Some('{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek().map(|(_, n)| *n) == Some('}') => {
                chars.next();
                out.push('}');
            }
            '{' => match template[i + 1..].find('}') {
                Some(end) => {
                    let name = &template[i + 1..i + 1 + end];
                    if let Some(v) = lookup(fields, name) {
                        out.push_str(&value_str(v));
                    }
                    for _ in 0..=end {
                        chars.next();
                    }
                }
                None => out.push('{'),
            },
            c => out.push(c),
        }
    }
    out
}

/// The field names a template uses (for config checks).
pub fn template_fields(template: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = template.replace("{{", "").replace("}}", "");
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start + 1..].find('}') else {
            return Err("a `{` is not closed; write `{{` for a literal brace".into());
        };
        let name = rest[start + 1..start + 1 + len].to_string();
        if name.is_empty()
            || name.starts_with('.')
            || name.ends_with('.')
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(format!(
                "`{{{name}}}` is not a field name; fields are letters, digits and '_' (and '.' into a table, e.g. {{labels.team}})"
            ));
        }
        out.push(name);
        rest = rest[start + 1 + len + 1..].to_string();
    }
    if rest.contains('}') {
        return Err("a `}` has no opening `{`; write `}}` for a literal brace".into());
    }
    Ok(out)
}

impl Rule {
    /// What this rule makes of an event with `kind` and JSON `fields`.
    pub fn apply(&self, kind: &str, fields: &Map<String, Value>) -> Option<Matched> {
        let raises = self.on.iter().any(|k| glob(k, kind));
        let clears =
            self.resolve_on.iter().any(|k| glob(k, kind)) && holds(&self.resolve_when, fields);
        if !raises && !clears {
            return None;
        }
        let subject = subject(fields);
        if let Some(p) = &self.subject {
            if !glob(p, &subject) {
                return None;
            }
        }
        let key = format!("{}/{}", self.name, subject);
        if raises {
            let severity = self
                .severity_from
                .as_ref()
                .and_then(|f| lookup(fields, f))
                .and_then(Value::as_str)
                .and_then(Severity::parse)
                .unwrap_or(self.severity);
            if holds(&self.when, fields) {
                let mut f = fields.clone();
                f.insert("rule".into(), Value::String(self.name.clone()));
                f.insert("severity".into(), severity.as_str().into());
                f.insert("kind".into(), kind.into());
                f.insert("subject".into(), subject.clone().into());
                return Some(Matched::Fire {
                    key,
                    rule: self.name.clone(),
                    subject,
                    severity,
                    title: render(&self.title, &f),
                    body: render(&self.body, &f),
                    policy: self.policy.clone(),
                });
            }
        }
        if clears {
            return Some(Matched::Clear { key });
        }
        None
    }
}

/// Adds fields that say in people's units what an event carries in bytes and
/// milliseconds, for templates: `value_text` and `max_text` (a limit breach,
/// by its limit: "1.5 GiB", "10m00s"), `window` (a crash loop's window) and
/// `time_to_limit` (a leak's forecast). The raw fields stay.
pub fn humanize(kind: &str, fields: &mut Map<String, Value>) {
    use crate::config::units::{format_duration, format_size};
    let num = |k: &str| fields.get(k).and_then(Value::as_u64);
    let ms = |v: u64| format_duration(std::time::Duration::from_millis(v));
    let added: Vec<(&str, String)> = match kind {
        "unit.limit_breached" => {
            let limit = fields.get("limit").and_then(Value::as_str).unwrap_or("");
            let text = |v: u64| match limit {
                "memory" => format_size(v),
                "cpu" | "wall" => ms(v),
                _ => v.to_string(),
            };
            [("value_text", num("value")), ("max_text", num("max"))]
                .into_iter()
                .filter_map(|(k, v)| Some((k, text(v?))))
                .collect()
        }
        "unit.gave_up" => num("window_ms")
            .map(|w| ("window", ms(w)))
            .into_iter()
            .collect(),
        "leak.suspected" => num("time_to_limit_ms")
            .map(|t| ("time_to_limit", ms(t)))
            .into_iter()
            .collect(),
        _ => Vec::new(),
    };
    for (k, v) in added {
        fields.insert(k.to_string(), Value::String(v));
    }
}

/// Every match of every rule for one event.
pub fn evaluate(rules: &[Rule], kind: &str, fields: &Map<String, Value>) -> Vec<Matched> {
    rules.iter().filter_map(|r| r.apply(kind, fields)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn breaches_loops_and_leaks_are_told_in_peoples_units() {
        let mut f = obj(
            json!({"unit": "web", "limit": "memory", "value": 1610612736u64, "max": 1610612736u64}),
        );
        humanize("unit.limit_breached", &mut f);
        assert_eq!(f["value_text"], "1.5 GiB");
        assert_eq!(f["max_text"], "1.5 GiB");
        assert_eq!(f["value"], 1610612736u64, "the raw field stays");
        let mut f = obj(json!({"limit": "wall", "value": 5003, "max": 5000}));
        humanize("unit.limit_breached", &mut f);
        assert_eq!(
            (f["value_text"].as_str(), f["max_text"].as_str()),
            (Some("5s"), Some("5s"))
        );
        let mut f = obj(json!({"limit": "cpu", "value": 600_000, "max": 600_000}));
        humanize("unit.limit_breached", &mut f);
        assert_eq!(f["max_text"], "10m00s");
        let mut f = obj(json!({"window_ms": 60_000}));
        humanize("unit.gave_up", &mut f);
        assert_eq!(f["window"], "1m00s");
        let mut f = obj(json!({"time_to_limit_ms": 7_200_000}));
        humanize("leak.suspected", &mut f);
        assert_eq!(f["time_to_limit"], "2h00m");
        let rule = defaults()
            .into_iter()
            .find(|r| r.name == "limit-breached")
            .unwrap();
        let mut f = obj(
            json!({"unit": "web", "run_id": 7, "limit": "memory", "value": 1610612736u64, "max": 1610612736u64, "enforced_by": "cgroup1"}),
        );
        humanize("unit.limit_breached", &mut f);
        assert_eq!(
            render(&rule.body, &f),
            "web (run 7) reached 1.5 GiB against a memory limit of 1.5 GiB and was killed (cgroup1)."
        );
    }

    #[test]
    fn templates_substitute_fields_and_escape_braces() {
        let f = obj(json!({"unit": "web", "n": 3, "none": null}));
        assert_eq!(
            render("{unit} x{n} {{lit}} [{none}] [{missing}]", &f),
            "web x3 {lit} [] []"
        );
        assert_eq!(render("open { brace", &f), "open { brace");
        assert_eq!(
            template_fields("{a} and {b_2} {{x}}").unwrap(),
            vec!["a", "b_2"]
        );
        assert!(template_fields("{a").is_err());
        assert!(template_fields("{a b}").is_err());
        assert_eq!(
            template_fields("{labels.team}").unwrap(),
            vec!["labels.team"]
        );
        assert!(template_fields("{.x}").is_err());
        let f = obj(json!({"labels": {"team": "db"}, "n": 1}));
        assert_eq!(
            render("team {labels.team}{labels.none}{n.x}", &f),
            "team db"
        );
        assert!(template_fields("a}").is_err());
    }

    #[test]
    fn globs() {
        assert!(glob("web", "web"));
        assert!(!glob("web", "web2"));
        assert!(glob("web*", "web2"));
        assert!(glob("*-db", "main-db"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("*", ""));
        assert!(glob("check.*", "check.down"));
    }

    #[test]
    fn defaults_fire_and_clear_by_subject() {
        let rules = defaults();
        let down =
            obj(json!({"check": "api", "check_kind": "http", "unit": "web", "reason": "503"}));
        let m = evaluate(&rules, "check.down", &down);
        assert_eq!(m.len(), 1);
        match &m[0] {
            Matched::Fire {
                key,
                severity,
                title,
                body,
                ..
            } => {
                assert_eq!(key, "check-down/api");
                assert_eq!(*severity, Severity::Critical);
                assert_eq!(title, "check api is down");
                assert_eq!(body, "The http check api is down: 503");
            }
            other => panic!("{other:?}"),
        }
        let up = obj(json!({"check": "api", "check_kind": "http", "unit": "web"}));
        assert_eq!(
            evaluate(&rules, "check.up", &up),
            vec![Matched::Clear {
                key: "check-down/api".into()
            }]
        );
        let leak = obj(
            json!({"unit": "app", "slope_mb_per_hour": 12.5, "confidence": 0.9, "time_to_limit_ms": 1000}),
        );
        match &evaluate(&rules, "leak.suspected", &leak)[0] {
            Matched::Fire { key, severity, .. } => {
                assert_eq!(key, "leak-suspected/app");
                assert_eq!(*severity, Severity::Warning);
            }
            other => panic!("{other:?}"),
        }
        assert!(evaluate(&rules, "unit.backoff", &leak).is_empty());
    }

    #[test]
    fn a_failed_job_is_critical_by_default_and_resolves_when_it_next_succeeds() {
        use crate::event::EventKind;
        let rules = defaults();
        let failed = match serde_json::to_value(EventKind::JobFailed {
            job: "transform".into(),
            flow: "extract".into(),
            flow_run: 7,
            reason: "exit:3".into(),
        }) {
            Ok(Value::Object(m)) => m,
            other => panic!("{other:?}"),
        };
        match &evaluate(&rules, "job.failed", &failed)[..] {
            [Matched::Fire {
                key,
                severity,
                title,
                body,
                ..
            }] => {
                assert_eq!(key, "job-failed/transform");
                assert_eq!(*severity, Severity::Critical);
                assert_eq!(title, "job transform of flow extract failed");
                assert!(
                    body.starts_with(
                        "Job transform failed for good in run 7 of flow extract (exit:3)"
                    ) && body.contains("`mamori rerun extract --from-failed`"),
                    "{body}"
                );
            }
            other => panic!("{other:?}"),
        }
        let exited = |state: &str| obj(json!({"unit": "transform", "run_id": 9, "state": state}));
        // A failed retry, or a rerun that fails again, does not resolve it.
        assert!(evaluate(&rules, "unit.exited", &exited("failed")).is_empty());
        assert!(evaluate(&rules, "unit.exited", &obj(json!({"unit": "transform"}))).is_empty());
        assert_eq!(
            evaluate(&rules, "unit.exited", &exited("succeeded")),
            vec![Matched::Clear {
                key: "job-failed/transform".into()
            }]
        );
    }

    #[test]
    fn subject_and_when_filter() {
        let r = Rule {
            name: "job-failed".into(),
            on: vec!["unit.exited".into()],
            subject: Some("nightly*".into()),
            when: vec![("state".into(), "failed".into())],
            resolve_on: vec!["unit.exited".into()],
            resolve_when: vec![],
            severity: Severity::Warning,
            severity_from: None,
            title: "{unit} failed: {reason}".into(),
            body: String::new(),
            policy: None,
        };
        let failed = obj(json!({"unit": "nightly-a", "state": "failed", "reason": "exit:3"}));
        assert!(
            matches!(r.apply("unit.exited", &failed), Some(Matched::Fire { ref title, .. }) if title == "nightly-a failed: exit:3")
        );
        let ok = obj(json!({"unit": "nightly-a", "state": "succeeded"}));
        assert_eq!(
            r.apply("unit.exited", &ok),
            Some(Matched::Clear {
                key: "job-failed/nightly-a".into()
            })
        );
        let other = obj(json!({"unit": "web", "state": "failed"}));
        assert_eq!(r.apply("unit.exited", &other), None);
    }

    #[test]
    fn job_and_flow_events_are_about_their_job_else_their_flow() {
        use crate::event::EventKind;
        let fields = |k: EventKind| match serde_json::to_value(k) {
            Ok(Value::Object(m)) => m,
            other => panic!("{other:?}"),
        };
        let r = Rule {
            name: "job-events".into(),
            on: vec!["job.*".into(), "flow.stalled".into()],
            subject: Some("trans*".into()),
            when: vec![],
            resolve_on: vec![],
            resolve_when: vec![],
            severity: Severity::Warning,
            severity_from: None,
            title: "{subject} ({kind}): {reason}".into(),
            body: String::new(),
            policy: None,
        };
        let failed = fields(EventKind::JobFailed {
            job: "transform".into(),
            flow: "extract".into(),
            flow_run: 1,
            reason: "exit:3".into(),
        });
        match r.apply("job.failed", &failed) {
            Some(Matched::Fire {
                key,
                subject,
                title,
                ..
            }) => {
                assert_eq!(key, "job-events/transform");
                assert_eq!(subject, "transform");
                assert_eq!(title, "transform (job.failed): exit:3");
            }
            other => panic!("{other:?}"),
        }
        let other_job = fields(EventKind::JobHeld {
            job: "load".into(),
            flow: "transform-flow".into(),
            flow_run: 1,
            reason: "held".into(),
        });
        assert_eq!(
            r.apply("job.held", &other_job),
            None,
            "the job, not its flow"
        );
        let stalled = fields(EventKind::FlowStalled {
            flow: "transform".into(),
            flow_run: 1,
        });
        assert!(matches!(
            r.apply("flow.stalled", &stalled),
            Some(Matched::Fire { ref key, .. }) if key == "job-events/transform"
        ));
    }
}
