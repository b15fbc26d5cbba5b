//! `[alerts]`, `[[alert]]` rules, `[[channel]]`s and escalation
//! `[[policy]]`s: compiled into [`AlertsConfig`] (docs/config.md, "Alerts";
//! docs/alerts.md for the operator's view).

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::alert::escalation::{Policy, Repeat, Step};
use crate::alert::mute::Window;
use crate::alert::rules::{self, Rule, Severity};

use super::walk::{Reader, Tbl};

#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// The built-in rules (a service gave up, a check is down, a limit kill, a leak).
    pub default_rules: bool,
    /// How long an acknowledgement holds; `None`: until resolved.
    pub ack_timeout: Option<Duration>,
    /// Base of the one-click acknowledge links, e.g. `https://mamori.example.com`.
    pub public_url: Option<String>,
    /// Which policy each severity uses when its rule names none.
    pub severity_policy: Vec<(Severity, String)>,
    /// Rules in file order, then the defaults (when enabled).
    pub rules: Vec<Rule>,
    pub channels: Vec<ChannelConfig>,
    pub policies: Vec<Policy>,
    /// Maintenance windows and quiet hours (`[[maintenance]]`).
    pub maintenance: Vec<Window>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            default_rules: true,
            ack_timeout: Some(Duration::from_secs(4 * 3600)),
            public_url: None,
            severity_policy: Vec::new(),
            rules: rules::defaults(),
            channels: Vec::new(),
            policies: Vec::new(),
            maintenance: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub name: String,
    pub kind: ChannelKind,
}

#[derive(Debug, Clone)]
pub enum ChannelKind {
    Email(EmailConfig),
    Webhook(WebhookConfig),
    Command(CommandConfig),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    Starttls,
    Tls,
    None,
}

#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub server: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Extra CA certificate(s) (PEM) to trust, e.g. a company's private CA.
    pub ca_file: Option<PathBuf>,
    pub from: String,
    pub to: Vec<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    Json,
    Slack,
    Ntfy,
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub format: WebhookFormat,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct CommandConfig {
    pub command: Vec<String>,
    pub timeout: Duration,
}

/// Whether a rule may name this event kind (wildcards with `*` are not
/// checked): every kind the agent emits (`event::KINDS`) but its own
/// `alert.*` events, which never raise alerts.
pub fn known_kind(kind: &str) -> bool {
    crate::event::KINDS.contains(&kind) && !kind.starts_with("alert.")
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Reads every alerting table of the file (keys of `root`).
pub fn compile(root: &Tbl, base: &Path) -> AlertsConfig {
    let r = root.reader();
    let mut c = AlertsConfig::default();
    let mut severity_policy_spans = Vec::new();
    if let Some(t) = root.table_named("alerts", "[alerts]".to_string()) {
        if let Some(b) = t.bool("default_rules") {
            c.default_rules = b;
        }
        if t.peek_str("ack_timeout") == Some("never") {
            t.get("ack_timeout");
            c.ack_timeout = None;
        } else if let Some(d) = t.duration("ack_timeout") {
            if d.is_zero() {
                r.error(
                    t.key_span("ack_timeout"),
                    "invalid `ack_timeout` in [alerts]: must be longer than 0; write \"never\" for acknowledgements that do not expire",
                );
            } else {
                c.ack_timeout = Some(d);
            }
        }
        if let Some((u, span)) = t.str("public_url") {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                r.error(
                    span,
                    format!("invalid `public_url` in [alerts]: \"{u}\"; expected an http:// or https:// URL that people's phones can reach"),
                );
            } else {
                c.public_url = Some(u.trim_end_matches('/').to_string());
            }
        }
        if let Some(p) = t.table("policy") {
            for sev in ["info", "warning", "critical"] {
                if let Some((name, span)) = p.str(sev) {
                    let s = Severity::parse(sev).expect("a listed severity");
                    c.severity_policy.push((s, name.clone()));
                    severity_policy_spans.push((name, span));
                }
            }
            p.finish();
        }
        t.finish();
    }

    // Channels.
    let mut channel_spans: HashMap<String, Option<Range<usize>>> = HashMap::new();
    for (i, t) in root.tables("channel").into_iter().enumerate() {
        let mut tbl = r.table_of(t, format!("[[channel]] #{}", i + 1));
        let name = tbl.str("name");
        if let Some((n, _)) = &name {
            tbl.what = format!("[[channel]] \"{n}\"");
        }
        let ch = channel(&tbl, base);
        if name.is_none() && !tbl.has("name") {
            tbl.missing(
                "name",
                "every channel needs a unique name, e.g. name = \"ops-mail\"",
            );
        }
        tbl.finish();
        let Some((n, span)) = name else { continue };
        if !valid_name(&n) {
            r.error(span, format!("invalid channel name \"{n}\": use letters, digits, '-', '_' and '.', at most 64 characters"));
            continue;
        }
        if let Some(first) = channel_spans.get(&n) {
            let line = first.as_ref().map(|s| r.src.locate(s.start).0).unwrap_or(0);
            r.error(
                span,
                format!(
                    "duplicate channel name \"{n}\": the channel on line {line} already has it"
                ),
            );
            continue;
        }
        channel_spans.insert(n.clone(), span);
        if let Some(kind) = ch {
            c.channels.push(ChannelConfig { name: n, kind });
        }
    }
    let channel_names: Vec<&str> = channel_spans.keys().map(String::as_str).collect();

    // Policies.
    let mut policy_names: Vec<String> = Vec::new();
    for (i, t) in root.tables("policy").into_iter().enumerate() {
        let mut tbl = r.table_of(t, format!("[[policy]] #{}", i + 1));
        let name = tbl.str("name");
        if let Some((n, _)) = &name {
            tbl.what = format!("[[policy]] \"{n}\"");
        }
        let p = policy(&tbl, &channel_names);
        if name.is_none() && !tbl.has("name") {
            tbl.missing(
                "name",
                "every policy needs a unique name, e.g. name = \"page\"",
            );
        }
        tbl.finish();
        let Some((n, span)) = name else { continue };
        if !valid_name(&n) {
            r.error(span, format!("invalid policy name \"{n}\": use letters, digits, '-', '_' and '.', at most 64 characters"));
            continue;
        }
        if policy_names.contains(&n) {
            r.error(span, format!("duplicate policy name \"{n}\""));
            continue;
        }
        policy_names.push(n.clone());
        if let Some((steps, repeat, repeat_after)) = p {
            c.policies.push(Policy {
                name: n,
                steps,
                repeat,
                repeat_after,
            });
        }
    }
    let unknown_policy = |name: &str, span: Option<Range<usize>>, r: &Reader, what: &str| {
        if !policy_names.iter().any(|p| p == name) {
            let mut m = format!("unknown policy \"{name}\" in {what}");
            if policy_names.is_empty() {
                m.push_str("; declare it with [[policy]] name = \"...\"");
            } else {
                m.push_str(&format!(" (policies: {})", policy_names.join(", ")));
            }
            r.error(span, m);
        }
    };
    for (name, span) in &severity_policy_spans {
        unknown_policy(name, span.clone(), r, "`policy` of [alerts]");
    }

    // Rules.
    let mut rules = Vec::new();
    for (i, t) in root.tables("alert").into_iter().enumerate() {
        let mut tbl = r.table_of(t, format!("[[alert]] #{}", i + 1));
        let name = tbl.str("name");
        if let Some((n, _)) = &name {
            tbl.what = format!("[[alert]] \"{n}\"");
        }
        let rule = rule(&tbl);
        if let Some((p, span)) = tbl.str("policy") {
            unknown_policy(&p, span, r, &tbl.what);
        }
        if name.is_none() && !tbl.has("name") {
            tbl.missing(
                "name",
                "every alert rule needs a unique name, e.g. name = \"nightly-failed\"",
            );
        }
        tbl.finish();
        let Some((n, span)) = name else { continue };
        if !valid_name(&n) {
            r.error(span, format!("invalid alert rule name \"{n}\": use letters, digits, '-', '_' and '.', at most 64 characters"));
            continue;
        }
        if rules.iter().any(|x: &Rule| x.name == n) {
            r.error(span, format!("duplicate alert rule name \"{n}\""));
            continue;
        }
        if let Some(mut rule) = rule {
            rule.name = n;
            rule.policy = tbl.peek_str("policy").map(str::to_string);
            rules.push(rule);
        }
    }
    if c.default_rules {
        for d in rules::defaults() {
            // A rule of the same name replaces the default.
            if !rules.iter().any(|x| x.name == d.name) {
                rules.push(d);
            }
        }
    }
    c.rules = rules;

    for (i, t) in root.tables("maintenance").into_iter().enumerate() {
        let mut tbl = r.table_of(t, format!("[[maintenance]] #{}", i + 1));
        if let Some(n) = tbl.peek_str("name") {
            tbl.what = format!("[[maintenance]] \"{n}\"");
        }
        if let Some(w) = window(&tbl) {
            c.maintenance.push(w);
        }
        tbl.finish();
    }
    c
}

fn time_of_day(t: &Tbl, key: &'static str) -> Option<u32> {
    let (s, span) = t.str(key)?;
    let parsed = s.split_once(':').and_then(|(h, m)| {
        let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
        (h < 24 && m < 60 && s.len() == 5).then_some(h * 60 + m)
    });
    if parsed.is_none() {
        t.reader().error(
            span,
            format!("invalid `{key}` in {}: \"{s}\"; expected a time of day as \"HH:MM\", e.g. \"22:00\"", t.what),
        );
    }
    parsed
}

const DAYS: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn window(t: &Tbl) -> Option<Window> {
    let r = t.reader();
    let name = t.string("name").unwrap_or_default();
    let from = time_of_day(t, "from");
    let to = time_of_day(t, "to");
    for (key, v) in [("from", &from), ("to", &to)] {
        if v.is_none() && !t.has(key) {
            t.missing(key, "a time of day as \"HH:MM\"");
        }
    }
    let mut days = Vec::new();
    for (d, span) in t.str_list("days").unwrap_or_default() {
        match DAYS.iter().position(|x| *x == d.to_ascii_lowercase()) {
            Some(i) => days.push(i as u32),
            None => r.error(span, format!("invalid day \"{d}\" in `days` of {}; expected mon, tue, wed, thu, fri, sat or sun", t.what)),
        }
    }
    let local = t.choice("timezone", &["utc", "local"]).as_deref() == Some("local");
    let mut severities = Vec::new();
    for (sv, span) in t.str_list("severities").unwrap_or_default() {
        if Severity::parse(&sv).is_some() {
            severities.push(sv);
        } else {
            r.error(span, format!("invalid severity \"{sv}\" in `severities` of {}; expected info, warning or critical", t.what));
        }
    }
    let mut matchers = Vec::new();
    for (k, v) in t.string_map("match").unwrap_or_default() {
        if ["key", "rule", "subject", "severity"].contains(&k.as_str()) {
            matchers.push((k, v));
        } else {
            r.error(
                t.key_span("match"),
                format!(
                    "unknown label `{k}` in `match` of {}; expected key, rule, subject or severity",
                    t.what
                ),
            );
        }
    }
    let (from, to) = (from?, to?);
    if from == to {
        r.error(
            t.key_span("to"),
            format!(
                "`from` and `to` in {} are the same time: the window would be empty",
                t.what
            ),
        );
        return None;
    }
    Some(Window {
        name,
        days,
        from,
        to,
        local,
        severities,
        matchers,
    })
}

fn channel(t: &Tbl, base: &Path) -> Option<ChannelKind> {
    let r = t.reader();
    let kind = t.choice("kind", &["email", "webhook", "command"]);
    if kind.is_none() && !t.has("kind") {
        t.missing("kind", "one of email, webhook, command");
    }
    let timeout = t.duration("timeout");
    match kind?.as_str() {
        "email" => {
            let server = t.string("server");
            if server.is_none() && !t.has("server") {
                t.missing(
                    "server",
                    "the SMTP server's host name, e.g. server = \"smtp.example.com\"",
                );
            }
            let tls = match t.choice("tls", &["starttls", "tls", "none"]).as_deref() {
                Some("tls") => SmtpTls::Tls,
                Some("none") => SmtpTls::None,
                _ => SmtpTls::Starttls,
            };
            let port = match t.uint("port") {
                Some(p) if (1..=65535).contains(&p) => p as u16,
                Some(p) => {
                    r.error(
                        t.key_span("port"),
                        format!("invalid `port` in {}: {p}; expected 1 to 65535", t.what),
                    );
                    0
                }
                None => match tls {
                    SmtpTls::Starttls => 587,
                    SmtpTls::Tls => 465,
                    SmtpTls::None => 25,
                },
            };
            let username = t.string("username");
            let password_file = t.file_to_read("password_file", base);
            let ca_file = t.file_to_read("ca_file", base);
            if ca_file.is_some() && tls == SmtpTls::None {
                r.error(
                    t.key_span("ca_file"),
                    format!(
                        "`ca_file` in {} needs tls = \"starttls\" or \"tls\"",
                        t.what
                    ),
                );
            }
            if password_file.is_some() && username.is_none() {
                r.error(
                    t.key_span("password_file"),
                    format!("`password_file` in {} needs a `username`", t.what),
                );
            }
            let from =
                t.str("from")
                    .and_then(|(f, span)| match f.parse::<lettre::message::Mailbox>() {
                        Ok(_) => Some(f),
                        Err(e) => {
                            r.error(span, format!("invalid `from` in {}: \"{f}\": {e}; expected an address such as \"mamori <mamori@example.com>\"", t.what));
                            None
                        }
                    });
            if from.is_none() && !t.has("from") {
                t.missing(
                    "from",
                    "the sender, e.g. from = \"mamori <mamori@example.com>\"",
                );
            }
            let mut to = Vec::new();
            if let Some(list) = t.str_list("to") {
                if list.is_empty() {
                    r.error(
                        t.key_span("to"),
                        format!("`to` in {} is empty; list at least one address", t.what),
                    );
                }
                for (a, span) in list {
                    match a.parse::<lettre::message::Mailbox>() {
                        Ok(_) => to.push(a),
                        Err(e) => r.error(
                            span,
                            format!("invalid address in `to` of {}: \"{a}\": {e}; expected an address such as \"ops@example.com\" or \"Ops <ops@example.com>\"", t.what),
                        ),
                    }
                }
            } else if !t.has("to") {
                t.missing("to", "the recipients, e.g. to = [\"ops@example.com\"]");
            }
            Some(ChannelKind::Email(EmailConfig {
                server: server?,
                port,
                tls,
                username,
                password_file,
                ca_file,
                from: from?,
                to,
                timeout: timeout.unwrap_or(Duration::from_secs(30)),
            }))
        }
        "webhook" => {
            let url = t.str("url").and_then(|(u, span)| {
                if u.starts_with("http://") || u.starts_with("https://") {
                    Some(u)
                } else {
                    r.error(
                        span,
                        format!(
                            "invalid `url` in {}: \"{u}\"; expected an http:// or https:// URL",
                            t.what
                        ),
                    );
                    None
                }
            });
            if url.is_none() && !t.has("url") {
                t.missing(
                    "url",
                    "where to POST, e.g. url = \"https://ntfy.sh/my-topic\"",
                );
            }
            let format = match t.choice("format", &["json", "slack", "ntfy"]).as_deref() {
                Some("slack") => WebhookFormat::Slack,
                Some("ntfy") => WebhookFormat::Ntfy,
                _ => WebhookFormat::Json,
            };
            let headers = t.string_map("headers").unwrap_or_default();
            Some(ChannelKind::Webhook(WebhookConfig {
                url: url?,
                format,
                headers,
                timeout: timeout.unwrap_or(Duration::from_secs(10)),
            }))
        }
        _ => {
            let command = t.command("command");
            if command.is_none() && !t.has("command") {
                t.missing(
                    "command",
                    "the program to run, e.g. command = [\"/usr/local/bin/page-oncall\"]",
                );
            }
            Some(ChannelKind::Command(CommandConfig {
                command: command?,
                timeout: timeout.unwrap_or(Duration::from_secs(30)),
            }))
        }
    }
}

type PolicyParts = (Vec<Step>, Repeat, Duration);

fn policy(t: &Tbl, channels: &[&str]) -> Option<PolicyParts> {
    let r = t.reader();
    let repeat = if t.peek_str("repeat").is_some() {
        match t.str("repeat") {
            Some((s, _)) if s == "until_acknowledged" => Repeat::UntilAcknowledged,
            Some((s, span)) => {
                r.error(span, format!("invalid `repeat` in {}: \"{s}\"; expected a number of extra rounds or \"until_acknowledged\"", t.what));
                Repeat::Times(0)
            }
            None => Repeat::Times(0),
        }
    } else {
        match t.uint("repeat") {
            Some(n) => Repeat::Times(n.min(10_000) as u32),
            None => Repeat::Times(0),
        }
    };
    let repeat_after = t
        .duration("repeat_after")
        .unwrap_or(Duration::from_secs(30 * 60));
    if repeat == Repeat::UntilAcknowledged && repeat_after < Duration::from_secs(1) {
        r.error(t.key_span("repeat_after"), format!("invalid `repeat_after` in {}: must be at least \"1s\" when repeating until acknowledged", t.what));
    }
    let mut steps = Vec::new();
    let mut ok = true;
    let tables = t.tables("step");
    if tables.is_empty() && !t.has("step") {
        t.missing(
            "step",
            "at least one step, written as [[policy.step]] with `after` and `channels`",
        );
        ok = false;
    }
    for (i, st) in tables.into_iter().enumerate() {
        let s = r.table_of(st, format!("step {} of {}", i + 1, t.what));
        let after = s.duration("after").unwrap_or(Duration::ZERO);
        let mut chans = Vec::new();
        match s.str_list("channels") {
            Some(list) => {
                if list.is_empty() {
                    r.error(
                        s.key_span("channels"),
                        format!("`channels` in {} is empty", s.what),
                    );
                    ok = false;
                }
                for (c, span) in list {
                    if channels.contains(&c.as_str()) {
                        chans.push(c);
                    } else {
                        let mut m = format!("unknown channel \"{c}\" in {}", s.what);
                        if channels.is_empty() {
                            m.push_str("; declare it with [[channel]] name = \"...\"");
                        } else {
                            let mut names: Vec<&str> = channels.to_vec();
                            names.sort_unstable();
                            m.push_str(&format!(" (channels: {})", names.join(", ")));
                        }
                        r.error(span, m);
                        ok = false;
                    }
                }
            }
            None => {
                if !s.has("channels") {
                    s.missing(
                        "channels",
                        "which channels to notify, e.g. channels = [\"ops-mail\"]",
                    );
                }
                ok = false;
            }
        }
        if let Some(prev) = steps.last().map(|p: &Step| p.after) {
            if after < prev {
                r.error(
                    s.key_span("after"),
                    format!(
                        "`after` in {} is earlier than the step before it; list steps in order",
                        s.what
                    ),
                );
                ok = false;
            }
        }
        s.finish();
        steps.push(Step {
            after,
            channels: chans,
        });
    }
    ok.then_some((steps, repeat, repeat_after))
}

/// A string or an array of strings, as a list.
fn kinds(t: &Tbl, key: &'static str) -> Option<Vec<(String, Option<Range<usize>>)>> {
    if let Some((s, span)) = t.peek_str(key).and_then(|_| t.str(key)) {
        return Some(vec![(s, span)]);
    }
    t.str_list(key)
}

fn check_kinds(t: &Tbl, key: &str, list: &[(String, Option<Range<usize>>)]) {
    for (k, span) in list {
        if k.contains('*') || known_kind(k) {
            continue;
        }
        if crate::event::KINDS.contains(&k.as_str()) {
            t.reader().error(
                span.clone(),
                format!(
                    "event kind \"{k}\" in `{key}` of {}: the agent's own alert events never raise alerts",
                    t.what
                ),
            );
            continue;
        }
        let mut m = format!("unknown event kind \"{k}\" in `{key}` of {}", t.what);
        let best = crate::event::KINDS
            .iter()
            .filter(|c| known_kind(c))
            .map(|c| (strsim::damerau_levenshtein(k, c), *c))
            .filter(|(d, c)| *d <= 2.max(c.len() / 3))
            .min();
        if let Some((_, b)) = best {
            m.push_str(&format!("; did you mean \"{b}\"?"));
        }
        m.push_str(" (see docs/alerts.md for the list)");
        t.reader().error(span.clone(), m);
    }
}

fn rule(t: &Tbl) -> Option<Rule> {
    let r = t.reader();
    let on = kinds(t, "on");
    if on.is_none() && !t.has("on") {
        t.missing(
            "on",
            "the event kinds that raise it, e.g. on = [\"unit.exited\"]",
        );
    }
    if let Some(list) = &on {
        if list.is_empty() {
            r.error(t.key_span("on"), format!("`on` in {} is empty", t.what));
        }
        check_kinds(t, "on", list);
    }
    let resolve_on = kinds(t, "resolve_on").unwrap_or_default();
    check_kinds(t, "resolve_on", &resolve_on);
    let subject = t.string("subject");
    let when = t.string_map("when").unwrap_or_default();
    let resolve_when = t.string_map("resolve_when").unwrap_or_default();
    if !resolve_when.is_empty() && resolve_on.is_empty() {
        r.error(
            t.key_span("resolve_when"),
            format!(
                "`resolve_when` in {} has no `resolve_on` to apply to",
                t.what
            ),
        );
    }
    let severity = match t.choice("severity", &["info", "warning", "critical"]) {
        Some(s) => Severity::parse(&s),
        None if !t.has("severity") => Some(Severity::Warning),
        None => None,
    };
    let template = |key: &'static str, default: &str| -> Option<String> {
        let (s, span) = t.str(key).unwrap_or((default.to_string(), None));
        match rules::template_fields(&s) {
            Ok(_) => Some(s),
            Err(e) => {
                r.error(
                    span,
                    format!("invalid template in `{key}` of {}: {e}", t.what),
                );
                None
            }
        }
    };
    let severity_from = t.string("severity_from");
    let title = template("title", "{rule}: {subject}");
    let body = template("body", "{kind} on {subject}");
    t.get("policy");
    Some(Rule {
        name: String::new(),
        on: on?.into_iter().map(|(k, _)| k).collect(),
        subject,
        when,
        resolve_on: resolve_on.into_iter().map(|(k, _)| k).collect(),
        resolve_when,
        severity: severity?,
        severity_from,
        title: title?,
        body: body?,
        policy: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> AlertsConfig {
        let c = crate::config::load_str(Path::new("/etc/mamori/m.toml"), text.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        c.alerts
    }

    #[test]
    fn defaults_without_any_alert_config() {
        let a = load("");
        assert!(a.default_rules);
        assert_eq!(a.ack_timeout, Some(Duration::from_secs(4 * 3600)));
        assert_eq!(a.public_url, None);
        let names: Vec<&str> = a.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "unit-gave-up",
                "check-down",
                "limit-breached",
                "leak-suspected",
                "incident-update-due",
                "job-failed",
                "drill-failed",
                "no-standby",
                "group-fenced",
                "alertmanager"
            ]
        );
        assert!(a.channels.is_empty() && a.policies.is_empty() && a.maintenance.is_empty());
    }

    #[test]
    fn every_key_is_read() {
        // The password and CA files must exist: they are read at start.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "secret\n").unwrap();
        std::fs::write(dir.path().join("ca.pem"), "").unwrap();
        let text = r#"
[alerts]
default_rules = false
ack_timeout = "never"
public_url = "https://m.example.com/"
policy = { critical = "page", warning = "page", info = "page" }

[[channel]]
name = "mail"
kind = "email"
server = "smtp.example.com"
tls = "tls"
username = "u"
password_file = "pw"
ca_file = "ca.pem"
from = "m <m@example.com>"
to = ["a@example.com", "B <b@example.com>"]
timeout = "7s"

[[channel]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:9/x"
format = "ntfy"
headers = { Authorization = "Bearer t" }

[[channel]]
name = "cmd"
kind = "command"
command = "notify-send hi"

[[policy]]
name = "page"
repeat = 2
repeat_after = "10m"
[[policy.step]]
channels = ["mail"]
[[policy.step]]
after = "5m"
channels = ["hook", "cmd"]

[[alert]]
name = "jobs"
on = ["unit.exited", "check.*"]
subject = "nightly-*"
when = { state = "failed" }
resolve_on = "unit.started"
resolve_when = { by = "agent" }
severity = "info"
severity_from = "level"
title = "{unit}"
body = "{reason}"
policy = "page"

[[maintenance]]
name = "nights"
days = ["sat", "sun"]
from = "22:30"
to = "06:00"
timezone = "local"
severities = ["info"]
match = { rule = "jobs" }
"#;
        let a = crate::config::load_str(&dir.path().join("m.toml"), text.to_string())
            .unwrap_or_else(|e| panic!("{e}"))
            .alerts;
        assert!(!a.default_rules);
        assert_eq!(a.ack_timeout, None);
        assert_eq!(a.public_url.as_deref(), Some("https://m.example.com"));
        assert_eq!(a.severity_policy.len(), 3);
        match &a.channels[0].kind {
            ChannelKind::Email(e) => {
                assert_eq!(e.port, 465, "the port follows tls");
                assert_eq!(e.tls, SmtpTls::Tls);
                assert_eq!(e.password_file, Some(dir.path().join("pw")));
                assert_eq!(e.ca_file, Some(dir.path().join("ca.pem")));
                assert_eq!(e.to.len(), 2);
                assert_eq!(e.timeout, Duration::from_secs(7));
            }
            other => panic!("{other:?}"),
        }
        match &a.channels[1].kind {
            ChannelKind::Webhook(w) => {
                assert_eq!(w.format, WebhookFormat::Ntfy);
                assert_eq!(w.headers, vec![("Authorization".into(), "Bearer t".into())]);
                assert_eq!(w.timeout, Duration::from_secs(10));
            }
            other => panic!("{other:?}"),
        }
        match &a.channels[2].kind {
            ChannelKind::Command(c) => {
                assert_eq!(c.command, ["/bin/sh", "-c", "notify-send hi"]);
            }
            other => panic!("{other:?}"),
        }
        let p = &a.policies[0];
        assert_eq!(p.repeat, Repeat::Times(2));
        assert_eq!(p.repeat_after, Duration::from_secs(600));
        assert_eq!(p.steps[0].after, Duration::ZERO);
        assert_eq!(p.steps[1].channels, ["hook", "cmd"]);
        assert_eq!(a.rules.len(), 1, "no defaults");
        let r = &a.rules[0];
        assert_eq!(r.on, ["unit.exited", "check.*"]);
        assert_eq!(r.subject.as_deref(), Some("nightly-*"));
        assert_eq!(r.when, vec![("state".into(), "failed".into())]);
        assert_eq!(r.resolve_on, ["unit.started"]);
        assert_eq!(r.resolve_when, vec![("by".into(), "agent".into())]);
        assert_eq!(r.severity, Severity::Info);
        assert_eq!(r.severity_from.as_deref(), Some("level"));
        assert_eq!(r.policy.as_deref(), Some("page"));
        let w = &a.maintenance[0];
        assert_eq!((w.from, w.to, w.local), (22 * 60 + 30, 6 * 60, true));
        assert_eq!(w.days, [5, 6]);
        assert_eq!(w.severities, ["info"]);
        assert_eq!(w.matchers, vec![("rule".into(), "jobs".into())]);
    }

    #[test]
    fn a_rule_named_like_a_default_replaces_it() {
        let a = load(
            r#"
[[alert]]
name = "check-down"
on = "check.down"
severity = "warning"
"#,
        );
        let cd: Vec<&Rule> = a.rules.iter().filter(|r| r.name == "check-down").collect();
        assert_eq!(cd.len(), 1);
        assert_eq!(cd[0].severity, Severity::Warning);
        assert_eq!(a.rules.len(), rules::defaults().len());
    }
}
