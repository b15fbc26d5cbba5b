//! `[[check]]` tables and a service's `health` table: compiled into
//! [`CheckConfig`]. Kinds: http, tcp, exec, disk, log, heartbeat
//! (docs/config.md, "Checks").

use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;

use super::walk::Tbl;

#[derive(Debug, Clone)]
pub struct CheckConfig {
    pub name: String,
    /// The service this is the health check of (`health` table), if any.
    pub service: Option<String>,
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures before the check is down.
    pub fall: u32,
    /// Consecutive successes before it is up again.
    pub rise: u32,
}

/// Which HTTP statuses count as healthy.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusMatch {
    /// 200–299.
    Success,
    Any(Vec<u16>),
}

#[derive(Debug, Clone)]
pub enum LogSource {
    /// The captured output of a unit.
    Unit(String),
    /// A file being appended to (rotation by rename or truncation is followed).
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub enum CheckKind {
    Http {
        url: String,
        expect: StatusMatch,
        body: Option<String>,
        body_regex: Option<Regex>,
    },
    Tcp {
        address: String,
    },
    Exec {
        command: Vec<String>,
    },
    Disk {
        path: PathBuf,
        max_used_pct: Option<f64>,
        max_inodes_pct: Option<f64>,
    },
    Log {
        source: LogSource,
        pattern: Regex,
        /// Down on a match; up again after this long without one.
        clear_after: Duration,
    },
    Heartbeat {
        period: Duration,
        grace: Duration,
        /// A job whose success counts as a ping.
        job: Option<String>,
    },
}

impl CheckKind {
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Http { .. } => "http",
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Exec { .. } => "exec",
            CheckKind::Disk { .. } => "disk",
            CheckKind::Log { .. } => "log",
            CheckKind::Heartbeat { .. } => "heartbeat",
        }
    }
}

const KINDS: &[&str] = &["http", "tcp", "exec", "disk", "log", "heartbeat"];

/// Compiles one check table. `name` is given for a service's `health`
/// (the check takes the service's name); `[[check]]` tables carry their own.
pub fn check(t: &Tbl, service: Option<&str>, base: &Path) -> Option<CheckConfig> {
    let name = match service {
        Some(s) => Some(s.to_string()),
        None => {
            let n = t.string("name");
            if n.is_none() && !t.has("name") {
                t.missing(
                    "name",
                    "every check needs a unique name, e.g. name = \"api\"",
                );
            }
            n
        }
    };
    let kind_name = t.choice("kind", KINDS);
    if kind_name.is_none() && !t.has("kind") {
        t.missing("kind", "one of http, tcp, exec, disk, log, heartbeat");
    }
    // Log and heartbeat checks look at what already happened, cheaply: every second.
    let default_interval = match t.peek_str("kind") {
        Some("log") | Some("heartbeat") => Duration::from_secs(1),
        _ => Duration::from_secs(10),
    };
    let interval = t.duration("interval").unwrap_or(default_interval);
    let timeout = t.duration("timeout").unwrap_or(Duration::from_secs(5));
    let fall = positive(t, "fall").unwrap_or(3);
    let rise = positive(t, "rise").unwrap_or(2);
    if timeout.is_zero() {
        t.reader().error(
            t.key_span("timeout"),
            format!(
                "invalid `timeout` in {}: must be more than 0 (e.g. \"5s\")",
                t.what
            ),
        );
    }
    if interval < Duration::from_millis(100) {
        t.reader().error(
            t.key_span("interval"),
            format!(
                "invalid `interval` in {}: must be at least \"100ms\"",
                t.what
            ),
        );
    }
    let kind = match kind_name.as_deref() {
        Some("http") => http(t),
        Some("tcp") => {
            let address = t.str("address");
            if address.is_none() && !t.has("address") {
                t.missing(
                    "address",
                    "host:port to connect to, e.g. \"127.0.0.1:5432\"",
                );
            }
            address.and_then(|(address, span)| match host_port(&address) {
                Ok(()) => Some(CheckKind::Tcp { address }),
                Err(why) => {
                    t.reader().error(
                        span,
                        format!("invalid `address` \"{address}\" in {}: {why}", t.what),
                    );
                    None
                }
            })
        }
        Some("exec") => {
            let command = t.command("command");
            if command.is_none() && !t.has("command") {
                t.missing("command", "the command to run; exit 0 means healthy");
            }
            command.map(|command| CheckKind::Exec { command })
        }
        Some("disk") => {
            let path = required_str(
                t,
                "path",
                "a path on the filesystem to watch, e.g. \"/var\"",
            );
            let max_used_pct = percent(t, "max_used");
            let max_inodes_pct = percent(t, "max_inodes_used");
            if max_used_pct.is_none()
                && max_inodes_pct.is_none()
                && !t.has("max_used")
                && !t.has("max_inodes_used")
            {
                t.missing(
                    "max_used",
                    "a threshold such as max_used = \"90%\" (or max_inodes_used)",
                );
            }
            path.map(|p| CheckKind::Disk {
                path: base.join(p),
                max_used_pct,
                max_inodes_pct,
            })
        }
        Some("log") => log(t, base),
        Some("heartbeat") => {
            let period = t.duration("period");
            if period.is_none() && !t.has("period") {
                t.missing("period", "how often it must happen, e.g. period = \"1h\"");
            }
            let grace = t.duration("grace").unwrap_or(Duration::from_secs(60));
            let job = t.string("job");
            period.map(|period| CheckKind::Heartbeat { period, grace, job })
        }
        _ => None,
    };
    t.finish();
    Some(CheckConfig {
        name: name?,
        service: service.map(str::to_string),
        kind: kind?,
        interval,
        timeout,
        fall,
        rise,
    })
}

fn positive(t: &Tbl, key: &'static str) -> Option<u32> {
    let n = t.uint(key)?;
    if n == 0 || n > 1000 {
        t.reader().error(
            t.key_span(key),
            format!("invalid `{key}` in {}: {n}; expected 1 to 1000", t.what),
        );
        return None;
    }
    Some(n as u32)
}

/// A `host:port` the probe can connect to: a name or an IPv4 address, or an
/// IPv6 address in brackets, then a port from 1 to 65535.
fn host_port(address: &str) -> Result<(), String> {
    const EXPECTED: &str =
        "expected host:port, e.g. \"127.0.0.1:5432\", \"db.internal:5432\" or \"[::1]:5432\"";
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("no port; {EXPECTED}"));
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("no host; {EXPECTED}"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!("an IPv6 address needs brackets; {EXPECTED}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!(
            "the port must be a number from 1 to 65535; {EXPECTED}"
        )),
    }
}

fn required_str(t: &Tbl, key: &'static str, hint: &str) -> Option<String> {
    let v = t.string(key);
    if v.is_none() && !t.has(key) {
        t.missing(key, hint);
    }
    v
}

fn percent(t: &Tbl, key: &'static str) -> Option<f64> {
    let item = t.get(key)?;
    let value = if let Some(i) = item.as_integer() {
        Some(i as f64)
    } else if let Some(f) = item.as_float() {
        Some(f)
    } else {
        item.as_str()
            .and_then(|s| s.trim().strip_suffix('%'))
            .and_then(|s| s.trim().parse::<f64>().ok())
    };
    match value {
        Some(v) if (0.0..=100.0).contains(&v) => Some(v),
        _ => {
            t.reader().error(
                item.span(),
                format!(
                    "invalid `{key}` in {}: expected a percentage from 0 to 100, e.g. \"90%\"",
                    t.what
                ),
            );
            None
        }
    }
}

fn regex(t: &Tbl, key: &'static str) -> Option<Regex> {
    let (s, span) = t.str(key)?;
    match Regex::new(&s) {
        Ok(r) => Some(r),
        Err(e) => {
            let msg = e
                .to_string()
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .to_string();
            t.reader().error(
                span,
                format!("invalid regular expression in `{key}` of {}: {msg}", t.what),
            );
            None
        }
    }
}

fn http(t: &Tbl) -> Option<CheckKind> {
    let url = required_str(
        t,
        "url",
        "the URL to fetch, e.g. \"http://127.0.0.1:8000/health\"",
    );
    if let Some(u) = &url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            t.reader().error(
                t.key_span("url"),
                format!(
                    "invalid `url` in {}: \"{u}\"; expected an http:// or https:// URL",
                    t.what
                ),
            );
        }
    }
    let expect = match t.get("expect_status") {
        None => StatusMatch::Success,
        Some(item) => {
            let codes: Vec<u16> = item
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_integer())
                        .map(|v| v as u16)
                        .collect()
                })
                .or_else(|| item.as_integer().map(|v| vec![v as u16]))
                .unwrap_or_default();
            if codes.is_empty() || codes.iter().any(|c| !(100..=599).contains(c)) {
                t.reader().error(
                    item.span(),
                    format!("invalid `expect_status` in {}: expected an HTTP status or a list of them, e.g. [200, 204]", t.what),
                );
            }
            StatusMatch::Any(codes)
        }
    };
    let body = t.string("body");
    let body_regex = regex(t, "body_regex");
    url.map(|url| CheckKind::Http {
        url,
        expect,
        body,
        body_regex,
    })
}

fn log(t: &Tbl, base: &Path) -> Option<CheckKind> {
    let unit = t.string("unit");
    let file = t.string("file");
    let source = match (unit, file) {
        (Some(u), None) => Some(LogSource::Unit(u)),
        (None, Some(f)) => Some(LogSource::File(base.join(f))),
        (Some(_), Some(_)) => {
            t.reader().error(
                t.key_span("file"),
                format!(
                    "{} has both `unit` and `file`; a log check watches one of them",
                    t.what
                ),
            );
            None
        }
        (None, None) => {
            if !t.has("unit") && !t.has("file") {
                t.missing(
                    "unit",
                    "the unit whose output to watch (or `file`, a file being appended to)",
                );
            }
            None
        }
    };
    let pattern = regex(t, "pattern");
    if pattern.is_none() && !t.has("pattern") {
        t.missing(
            "pattern",
            "a regular expression, e.g. pattern = \"(?i)(memory error|ECC)\"",
        );
    }
    let clear_after = t
        .duration("clear_after")
        .unwrap_or(Duration::from_secs(300));
    Some(CheckKind::Log {
        source: source?,
        pattern: pattern?,
        clear_after,
    })
}

/// The unit a check depends on existing (log unit, heartbeat job), with the
/// key that names it, for cross-checks.
pub fn referenced_unit(c: &CheckConfig) -> Option<(&'static str, &str)> {
    match &c.kind {
        CheckKind::Log {
            source: LogSource::Unit(u),
            ..
        } => Some(("unit", u)),
        CheckKind::Heartbeat { job: Some(j), .. } => Some(("job", j)),
        _ => None,
    }
}
