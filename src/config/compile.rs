//! Step two of loading: from the parsed document to the runtime model, with
//! every error collected (see `walk` for why this is not plain serde).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::checks::{self, CheckConfig};
use super::walk::{Reader, Source, Tbl};
use super::{
    AgentConfig, Config, ConfigError, ConfigErrors, Enforcement, Limits, LogConfig, OnUnhealthy,
    RateLimit, ReadAuth, RestartConfig, RestartMode, UnitConfig, UnitKind,
};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

pub fn compile(path: &Path, text: String) -> Result<Config, ConfigErrors> {
    let src = Source::new(path.display().to_string(), text);
    let doc = match toml_edit::Document::parse(src.text()) {
        Ok(doc) => doc,
        Err(e) => {
            let (line, col) = src.locate(e.span().map(|s| s.start).unwrap_or(0));
            let message = e.message().trim().replace('\n', " ");
            return Err(ConfigErrors(vec![ConfigError {
                file: src.file.clone(),
                line,
                col,
                message: format!("invalid TOML: {message}"),
            }]));
        }
    };
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let r = Reader::new(&src);
    let root = r
        .table(doc.as_item(), "the config file".to_string())
        .expect("a TOML document's root is a table");

    let agent = match root.table_named("agent", "[agent]".to_string()) {
        Some(t) => agent(&t, &base),
        None => agent_defaults(&base),
    };

    let mut units = Vec::new();
    // Every declared name, even of units with errors, so that a reference to
    // one is not reported as unknown on top of the unit's own error.
    let mut declared: Vec<(UnitKind, String)> = Vec::new();
    for (kind, key) in [(UnitKind::Service, "service"), (UnitKind::Job, "job")] {
        for (i, t) in root.tables(key).into_iter().enumerate() {
            let tbl = r.table_of(t, format!("[[{key}]] #{}", i + 1));
            if let Some(n) = tbl.peek_str("name") {
                declared.push((kind, n.to_string()));
            }
            if let Some(parsed) = unit(tbl, kind, &agent, &base) {
                units.push(parsed);
            }
        }
    }
    let mut all_checks: Vec<(CheckConfig, Option<Range<usize>>)> =
        units.iter_mut().filter_map(|p| p.health.take()).collect();
    for (i, t) in root.tables("check").into_iter().enumerate() {
        let tbl = r.table_of(t, format!("[[check]] #{}", i + 1));
        let name = tbl.str("name");
        let mut tbl = tbl;
        if let Some((n, _)) = &name {
            tbl.what = format!("[[check]] \"{n}\"");
        }
        if let Some(c) = checks::check(&tbl, None, &base) {
            all_checks.push((c, name.and_then(|(_, span)| span)));
        }
    }
    let mut calendars = Vec::new();
    for (i, t) in root.tables("calendar").into_iter().enumerate() {
        let tbl = r.table_of(t, format!("[[calendar]] #{}", i + 1));
        if let Some(c) = super::jobs::calendar(&tbl, &base) {
            calendars.push(c);
        }
    }
    // --- alerts ---
    let alerts = super::alerts::compile(&root, &base);
    // --- status page and incidents ---
    let (mut status, status_refs) = super::status::compile(&root);
    // --- cluster ---
    let cluster = {
        let names: Vec<String> = all_checks.iter().map(|(c, _)| c.name.clone()).collect();
        let mut us: Vec<&mut UnitConfig> = units.iter_mut().map(|p| &mut p.unit).collect();
        super::cluster::compile(&root, &base, &agent, &mut us, &names)
    };
    root.finish();
    cross_check(&r, &units, &declared);
    cross_check_checks(&r, &all_checks, &declared);
    resolve_calendars(&r, &mut units, &calendars);
    for p in &units {
        let Some(spec) = &p.unit.job else { continue };
        for (name, span) in &spec.hold_while {
            let is_check = all_checks.iter().any(|(c, _)| &c.name == name);
            let is_rule = alerts.rules.iter().any(|r| &r.name == name);
            if !is_check && !is_rule {
                r.error(
                    span.clone(),
                    format!("unknown check or alert rule \"{name}\" in `hold_while` of [[job]] \"{}\"; it names checks (a service's `health` check has the service's name) or `[[alert]]` rules", p.unit.name),
                );
            }
        }
    }
    let flows = flows(&r, &units);
    resolve_status(
        &r,
        &mut status,
        &status_refs,
        &all_checks,
        &declared,
        &calendars,
    );

    let errors = r.into_errors();
    if errors.is_empty() {
        Ok(Config {
            path: path.to_path_buf(),
            agent,
            units: units.into_iter().map(|p| p.unit).collect(),
            checks: all_checks.into_iter().map(|(c, _)| c).collect(),
            flows,
            alerts,
            status,
            cluster,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

fn agent_defaults(base: &Path) -> AgentConfig {
    let data_dir = base.join("mamori-data");
    AgentConfig {
        listen: DEFAULT_LISTEN
            .parse()
            .expect("the default listen address parses"),
        token_file: data_dir.join("token"),
        data_dir,
        enforcement: Enforcement::Auto,
        poll_interval: Duration::from_millis(250),
        shutdown_timeout: Duration::from_secs(30),
        sample_interval: Duration::from_secs(1),
        sample_retention: Duration::from_secs(3600),
        rollup_retention: Duration::from_secs(7 * 86_400),
        log: LogConfig::default(),
        read_auth: ReadAuth::Loopback,
        read_token_file: None,
        rate_limit: Some(RateLimit {
            per_sec: 20.0,
            burst: 40,
        }),
        rate_limit_loopback: false,
    }
}

fn agent(t: &Tbl, base: &Path) -> AgentConfig {
    let mut a = agent_defaults(base);
    if let Some((s, span)) = t.str("listen") {
        match s.parse::<SocketAddr>() {
            Ok(addr) => a.listen = addr,
            Err(_) => t.reader().error(
                span,
                format!("invalid `listen` in [agent]: \"{s}\"; expected an IP address and a port, e.g. \"{DEFAULT_LISTEN}\" (a host name is not looked up)"),
            ),
        }
    }
    if let Some(d) = t.string("data_dir") {
        a.data_dir = base.join(d);
        a.token_file = a.data_dir.join("token");
    }
    if let Some(f) = t.string("token_file") {
        a.token_file = base.join(f);
    }
    if let Some(e) = t.choice("enforcement", &["auto", "cgroup2", "cgroup1", "poll"]) {
        a.enforcement = match e.as_str() {
            "cgroup2" => Enforcement::Cgroup2,
            "cgroup1" => Enforcement::Cgroup1,
            "poll" => Enforcement::Poll,
            _ => Enforcement::Auto,
        };
    }
    if let Some(d) = t.duration("poll_interval") {
        if d < Duration::from_millis(10) {
            t.reader().error(
                t.key_span("poll_interval"),
                "invalid `poll_interval` in [agent]: must be at least \"10ms\"",
            );
        } else {
            a.poll_interval = d;
        }
    }
    if let Some(d) = t.duration("shutdown_timeout") {
        a.shutdown_timeout = d;
    }
    if let Some(d) = t.duration("sample_interval") {
        if d < Duration::from_millis(100) {
            t.reader().error(
                t.key_span("sample_interval"),
                "invalid `sample_interval` in [agent]: must be at least \"100ms\"",
            );
        } else {
            a.sample_interval = d;
        }
    }
    if let Some(d) = t.duration("sample_retention") {
        a.sample_retention = d;
    }
    if let Some(d) = t.duration("rollup_retention") {
        a.rollup_retention = d;
    }
    if let Some(l) = t.table("log") {
        a.log = log_config(&l, a.log);
    }
    if let Some(m) = t.choice("read_auth", &["loopback", "token", "none"]) {
        a.read_auth = match m.as_str() {
            "token" => ReadAuth::Token,
            "none" => ReadAuth::None,
            _ => ReadAuth::Loopback,
        };
    }
    if let Some(f) = t.string("read_token_file") {
        a.read_token_file = Some(base.join(f));
    }
    let mut burst_set = false;
    if let Some((s, span)) = t.str("rate_limit") {
        match parse_rate(&s) {
            Ok(r) => a.rate_limit = r,
            Err(e) => t
                .reader()
                .error(span, format!("invalid `rate_limit` in [agent]: {e}")),
        }
    }
    if let Some(b) = t.uint("rate_burst") {
        if b == 0 || b > 1_000_000 {
            t.reader().error(
                t.key_span("rate_burst"),
                format!("invalid `rate_burst` in [agent]: {b}; expected 1 to 1000000 requests"),
            );
        } else {
            burst_set = true;
            if let Some(r) = a.rate_limit.as_mut() {
                r.burst = b as u32;
            }
        }
    }
    if !burst_set {
        // Default burst: two seconds' worth, at least one request.
        if let Some(r) = a.rate_limit.as_mut() {
            r.burst = (r.per_sec * 2.0).ceil().clamp(1.0, 1_000_000.0) as u32;
        }
    }
    if let Some(b) = t.bool("rate_limit_loopback") {
        a.rate_limit_loopback = b;
    }
    t.finish();
    a
}

/// `"20/s"`, `"600/m"`, `"1000/h"` or `"off"`.
fn parse_rate(s: &str) -> Result<Option<RateLimit>, String> {
    let s = s.trim();
    if s == "off" {
        return Ok(None);
    }
    let expected = "expected requests per time like \"20/s\", \"600/m\", \"1000/h\", or \"off\"";
    let Some((n, per)) = s.split_once('/') else {
        return Err(format!("\"{s}\"; {expected}"));
    };
    let n: f64 = match n.trim().parse::<u32>() {
        Ok(n) if n > 0 => n as f64,
        _ => {
            return Err(format!(
                "\"{s}\": the count must be a whole number above 0; {expected}"
            ))
        }
    };
    let secs = match per.trim() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("\"{s}\": unknown period \"{other}\"; {expected}")),
    };
    Ok(Some(RateLimit {
        per_sec: n / secs,
        burst: 1,
    }))
}

fn log_config(t: &Tbl, defaults: LogConfig) -> LogConfig {
    let mut l = defaults;
    if let Some(s) = t.size("max_size") {
        if s < 4096 {
            t.reader().error(
                t.key_span("max_size"),
                format!(
                    "invalid `max_size` in {}: must be at least \"4KiB\"",
                    t.what
                ),
            );
        } else {
            l.max_size = s;
        }
    }
    if let Some(k) = t.uint("keep") {
        if k == 0 || k > 1000 {
            t.reader().error(
                t.key_span("keep"),
                format!(
                    "invalid `keep` in {}: {k}; expected 1 to 1000 files",
                    t.what
                ),
            );
        } else {
            l.keep = k as u32;
        }
    }
    t.finish();
    l
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.')
}

/// A unit as compiled, with the positions the cross-checks need.
struct Parsed {
    unit: UnitConfig,
    name_span: Option<Range<usize>>,
    after_spans: Vec<Option<Range<usize>>>,
    health: Option<(CheckConfig, Option<Range<usize>>)>,
}

fn unit(mut t: Tbl, kind: UnitKind, agent: &AgentConfig, base: &Path) -> Option<Parsed> {
    let name = t.str("name");
    if let Some((n, _)) = &name {
        // Later messages name the unit instead of its position.
        t.what = format!("[[{}]] \"{n}\"", kind.as_str());
    }
    let command = t.command("command");
    let working_dir = t.string("working_dir").map(|d| base.join(d));
    let env = t.string_map("env").unwrap_or_default();
    let limits = t.table("limits").map(|l| limits(&l)).unwrap_or_default();
    let log = t
        .table("log")
        .map(|l| log_config(&l, agent.log))
        .unwrap_or(agent.log);
    let stop_timeout = t
        .duration("stop_timeout")
        .unwrap_or(Duration::from_secs(10));
    let stop_signal = t
        .str("stop_signal")
        .and_then(|(s, span)| match parse_signal(&s) {
            Some(sig) => Some(sig),
            None => {
                t.reader().error(
                    span,
                    format!("invalid `stop_signal` in {}: \"{s}\"; expected one of TERM, INT, QUIT, HUP, KILL, USR1, USR2", t.what),
                );
                None
            }
        })
        .unwrap_or(Signal::SIGTERM);

    let mut restart = RestartConfig::default();
    let mut autostart = false;
    let mut job_spec = None;
    let mut leak = None;
    let mut on_unhealthy = OnUnhealthy::None;
    let mut health = None;
    let mut after = Vec::new();
    let mut after_spans = Vec::new();
    match kind {
        UnitKind::Service => {
            autostart = t.bool("autostart").unwrap_or(true);
            restart = restart_config(&t);
            leak = Some(match t.table("leak") {
                Some(l) => leak_config(&l),
                None => crate::probe::leak::LeakConfig::default(),
            });
            if let Some(h) = t.get("health") {
                let span = t.key_span("health");
                let service = name.as_ref().map(|(n, _)| n.as_str()).unwrap_or("?");
                if let Some(ht) = t.reader().table(h, format!("`health` of {}", t.what)) {
                    health = checks::check(&ht, Some(service), base).map(|c| (c, span));
                }
            }
            if let Some(o) = t.choice("on_unhealthy", &["none", "restart"]) {
                on_unhealthy = if o == "restart" {
                    OnUnhealthy::Restart
                } else {
                    OnUnhealthy::None
                };
                if health.is_none() && !t.has("health") {
                    t.reader().error(
                        t.key_span("on_unhealthy"),
                        format!(
                            "`on_unhealthy` in {} needs a `health` check to act on",
                            t.what
                        ),
                    );
                }
            }
        }
        UnitKind::Job => {
            restart.mode = RestartMode::Never;
            for (a, span) in t.str_list("after").unwrap_or_default() {
                after.push(a);
                after_spans.push(span);
            }
            job_spec = Some(super::jobs::job(&t));
        }
    }
    if name.is_none() && !t.has("name") {
        t.missing(
            "name",
            "every unit needs a unique name, e.g. name = \"web\"",
        );
    }
    if command.is_none() && !t.has("command") {
        t.missing(
            "command",
            "what to run, e.g. command = \"python3 -m http.server 8000\"",
        );
    }
    t.finish();

    let (name, name_span) = name?;
    if !valid_name(&name) {
        t.reader().error(
            name_span,
            format!("invalid unit name \"{name}\": use letters, digits, '-', '_' and '.', at most 64 characters"),
        );
        return None;
    }
    let unit = UnitConfig {
        name,
        kind,
        command: command?,
        working_dir,
        env,
        autostart,
        restart,
        stop_signal,
        stop_timeout,
        limits,
        log,
        after,
        on_unhealthy,
        job: job_spec,
        leak,
    };
    Some(Parsed {
        unit,
        name_span,
        after_spans,
        health,
    })
}

fn restart_config(t: &Tbl) -> RestartConfig {
    let mut c = RestartConfig::default();
    if let Some(m) = t.choice("restart", &["always", "on-failure", "never"]) {
        c.mode = match m.as_str() {
            "on-failure" => RestartMode::OnFailure,
            "never" => RestartMode::Never,
            _ => RestartMode::Always,
        };
    }
    if let Some(d) = t.duration("backoff_min") {
        c.backoff_min = d;
    }
    if let Some(d) = t.duration("backoff_max") {
        c.backoff_max = d;
    }
    if c.backoff_max < c.backoff_min {
        t.reader().error(
            t.key_span("backoff_max"),
            format!(
                "invalid `backoff_max` in {}: it is shorter than `backoff_min`",
                t.what
            ),
        );
    }
    if let Some(d) = t.duration("stable_after") {
        c.stable_after = d;
    }
    if let Some(n) = t.uint("start_limit") {
        if n == 0 {
            t.reader().error(
                t.key_span("start_limit"),
                format!("invalid `start_limit` in {}: must be at least 1", t.what),
            );
        } else {
            c.start_limit = n.min(u32::MAX as u64) as u32;
        }
    }
    if let Some(d) = t.duration("start_window") {
        c.start_window = d;
    }
    c
}

fn limits(t: &Tbl) -> Limits {
    let l = Limits {
        memory: t.size("memory"),
        cpu: t.duration("cpu"),
        wall: t.duration("wall"),
        open_files: t.uint("open_files"),
    };
    if let Some(m) = l.memory {
        if m < 1024 * 1024 {
            t.reader().error(
                t.key_span("memory"),
                format!("invalid `memory` in {}: must be at least \"1MiB\"", t.what),
            );
        }
    }
    if l.open_files == Some(0) {
        t.reader().error(
            t.key_span("open_files"),
            format!("invalid `open_files` in {}: must be at least 1", t.what),
        );
    }
    t.finish();
    l
}

pub fn parse_signal(s: &str) -> Option<Signal> {
    let s = s.trim().to_ascii_uppercase();
    let s = s.strip_prefix("SIG").unwrap_or(&s);
    Some(match s {
        "TERM" => Signal::SIGTERM,
        "INT" => Signal::SIGINT,
        "QUIT" => Signal::SIGQUIT,
        "HUP" => Signal::SIGHUP,
        "KILL" => Signal::SIGKILL,
        "USR1" => Signal::SIGUSR1,
        "USR2" => Signal::SIGUSR2,
        _ => return None,
    })
}

/// Checks that need the whole file: unique names, references, cycles.
fn cross_check(r: &Reader, parsed: &[Parsed], declared: &[(UnitKind, String)]) {
    let units: Vec<&UnitConfig> = parsed.iter().map(|p| &p.unit).collect();
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, u) in units.iter().enumerate() {
        if let Some(&j) = first.get(u.name.as_str()) {
            let (line, _) = r
                .src
                .locate(parsed[j].name_span.as_ref().map(|s| s.start).unwrap_or(0));
            r.error(
                parsed[i].name_span.clone(),
                format!(
                    "duplicate unit name \"{}\": a {} on line {line} already has it; names must be unique across services and jobs",
                    u.name,
                    units[j].kind.as_str()
                ),
            );
        } else {
            first.insert(&u.name, i);
        }
    }
    let jobs: Vec<&str> = declared
        .iter()
        .filter(|(k, _)| *k == UnitKind::Job)
        .map(|(_, n)| n.as_str())
        .collect();
    for p in parsed.iter().filter(|p| p.unit.kind == UnitKind::Job) {
        let u = &p.unit;
        for (k, dep) in u.after.iter().enumerate() {
            let span = p.after_spans.get(k).cloned().flatten();
            if dep == &u.name {
                r.error(span, format!("job \"{}\" lists itself in `after`", u.name));
            } else if !jobs.contains(&dep.as_str()) {
                let mut message =
                    format!("unknown job \"{dep}\" in `after` of [[job]] \"{}\"", u.name);
                if declared.iter().any(|(_, n)| n == dep) {
                    message.push_str(": it is a service; `after` names jobs");
                } else if let Some(best) = closest(dep, &jobs).filter(|b| *b != u.name) {
                    message.push_str(&format!("; did you mean \"{best}\"?"));
                }
                r.error(span, message);
            }
        }
    }
    if let Some(cycle) = find_cycle(&units) {
        let idx = units.iter().position(|u| u.name == cycle[0]).unwrap_or(0);
        r.error(
            parsed[idx].name_span.clone(),
            format!(
                "jobs depend on each other in a cycle: {}",
                cycle.join(" → ")
            ),
        );
    }
}

/// Check names are unique; the units they watch exist.
fn cross_check_checks(
    r: &Reader,
    all: &[(CheckConfig, Option<Range<usize>>)],
    declared: &[(UnitKind, String)],
) {
    let mut seen: HashMap<&str, Option<&Range<usize>>> = HashMap::new();
    for (c, span) in all {
        if let Some(first) = seen.get(c.name.as_str()) {
            let line = first.map(|s| r.src.locate(s.start).0).unwrap_or(0);
            r.error(
                span.clone(),
                format!(
                    "duplicate check name \"{}\": the check on line {line} already has it (a service's `health` check takes the service's name)",
                    c.name
                ),
            );
        } else {
            seen.insert(&c.name, span.as_ref());
        }
        if let Some((key, unit)) = checks::referenced_unit(c) {
            let ok = declared
                .iter()
                .any(|(k, n)| n == unit && (key == "unit" || *k == UnitKind::Job));
            if !ok {
                let what = if key == "job" { "job" } else { "unit" };
                r.error(
                    span.clone(),
                    format!("check \"{}\" names {what} \"{unit}\" in `{key}`, but there is no such {what}", c.name),
                );
            }
        }
    }
}

fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

/// A cycle among jobs' `after` lists, as the names along it (first repeated last).
fn find_cycle(units: &[&UnitConfig]) -> Option<Vec<String>> {
    let deps: HashMap<&str, &[String]> = units
        .iter()
        .filter(|u| u.kind == UnitKind::Job)
        .map(|u| (u.name.as_str(), u.after.as_slice()))
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done
    let mut mark: HashMap<&str, u8> = HashMap::new();
    fn visit<'a>(
        n: &'a str,
        deps: &HashMap<&'a str, &'a [String]>,
        mark: &mut HashMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match mark.get(n) {
            Some(2) => return None,
            Some(1) => {
                let pos = stack.iter().position(|s| *s == n).unwrap_or(0);
                let mut cycle: Vec<String> = stack[pos..].iter().map(|s| s.to_string()).collect();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        mark.insert(n, 1);
        stack.push(n);
        for d in deps.get(n).copied().unwrap_or(&[]) {
            if let Some((key, _)) = deps.get_key_value(d.as_str()) {
                if let Some(c) = visit(key, deps, mark, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        mark.insert(n, 2);
        None
    }
    let mut names: Vec<&str> = deps.keys().copied().collect();
    names.sort_unstable();
    for n in names {
        let mut stack = Vec::new();
        if let Some(c) = visit(n, &deps, &mut mark, &mut stack) {
            return Some(c);
        }
    }
    None
}

/// Puts each named calendar into its job's schedule.
fn resolve_calendars(
    r: &Reader,
    units: &mut [Parsed],
    calendars: &[(crate::schedule::when::Calendar, Option<Range<usize>>)],
) {
    for p in units.iter_mut() {
        let Some(spec) = p.unit.job.as_mut() else {
            continue;
        };
        let Some((name, span)) = spec.calendar_ref.clone() else {
            continue;
        };
        match calendars.iter().find(|(c, _)| c.name == name) {
            Some((cal, _)) => {
                if let Some(s) = spec.schedule.as_mut() {
                    if let Some((c, _)) = s.calendar.as_mut() {
                        *c = cal.clone();
                    }
                }
            }
            None => r.error(
                span,
                format!("unknown calendar \"{name}\" in [[job]] \"{}\"; define it with [[calendar]] name = \"{name}\"", p.unit.name),
            ),
        }
    }
}

/// Groups jobs linked by `after` into flows (connected sets) and checks the
/// rules that need a whole flow: at most one schedule per flow, and only on a
/// job without `after`; `on_failure` names a job.
fn flows(r: &Reader, units: &[Parsed]) -> Vec<std::sync::Arc<crate::schedule::flow::FlowDef>> {
    use std::collections::{BTreeMap, BTreeSet};
    let jobs: Vec<&Parsed> = units
        .iter()
        .filter(|p| p.unit.kind == UnitKind::Job)
        .collect();
    let names: BTreeSet<&str> = jobs.iter().map(|p| p.unit.name.as_str()).collect();
    // Union-find over job indices.
    let idx: HashMap<&str, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, p)| (p.unit.name.as_str(), i))
        .collect();
    let mut parent: Vec<usize> = (0..jobs.len()).collect();
    fn find(parent: &mut [usize], i: usize) -> usize {
        let mut i = i;
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for (i, p) in jobs.iter().enumerate() {
        for a in &p.unit.after {
            if let Some(&j) = idx.get(a.as_str()) {
                let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
                parent[ri] = rj;
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..jobs.len() {
        let root = find(&mut parent, i);
        groups.entry(root).or_default().push(i);
    }
    let mut out = Vec::new();
    for members in groups.values() {
        // Topological order, ties in file order.
        let mut order: Vec<usize> = Vec::new();
        let mut placed: BTreeSet<usize> = BTreeSet::new();
        while order.len() < members.len() {
            let before = order.len();
            for &m in members {
                if placed.contains(&m) {
                    continue;
                }
                let ready = jobs[m]
                    .unit
                    .after
                    .iter()
                    .all(|a| idx.get(a.as_str()).is_none_or(|j| placed.contains(j)));
                if ready {
                    order.push(m);
                    placed.insert(m);
                }
            }
            if order.len() == before {
                break; // a cycle: already reported by cross_check
            }
        }
        let scheduled: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&m| {
                jobs[m]
                    .unit
                    .job
                    .as_ref()
                    .is_some_and(|j| j.schedule.is_some())
            })
            .collect();
        for &m in &scheduled {
            if !jobs[m].unit.after.is_empty() {
                r.error(
                    jobs[m].name_span.clone(),
                    format!("job \"{}\" has both `after` and a schedule; a job with `after` runs when its upstream jobs succeed, so schedule the first job of the flow instead", jobs[m].unit.name),
                );
            }
        }
        if scheduled.len() > 1 {
            r.error(
                jobs[scheduled[1]].name_span.clone(),
                format!(
                    "jobs \"{}\" and \"{}\" are in the same flow and both have a schedule; a flow has one schedule, on its first job",
                    jobs[scheduled[0]].unit.name, jobs[scheduled[1]].unit.name
                ),
            );
        }
        let mut upstream = BTreeMap::new();
        let mut policy = BTreeMap::new();
        for &m in members {
            let u = &jobs[m].unit;
            upstream.insert(u.name.clone(), u.after.clone());
            if let Some(spec) = &u.job {
                if let Some(rec) = &spec.policy.on_failure {
                    if !names.contains(rec.as_str()) {
                        r.error(
                            spec.on_failure_span.clone(),
                            format!(
                                "unknown job \"{rec}\" in `on_failure` of [[job]] \"{}\"",
                                u.name
                            ),
                        );
                    } else if members.iter().any(|&x| &jobs[x].unit.name == rec) {
                        r.error(spec.on_failure_span.clone(), format!("`on_failure` of [[job]] \"{}\" names \"{rec}\", a job of the same flow; a recovery job must stand outside the flow", u.name));
                    }
                }
                policy.insert(u.name.clone(), spec.policy.clone());
            }
        }
        let ordered: Vec<String> = order.iter().map(|&m| jobs[m].unit.name.clone()).collect();
        if let Some(first) = ordered.first().cloned() {
            out.push(std::sync::Arc::new(crate::schedule::flow::FlowDef {
                name: first,
                jobs: ordered,
                upstream,
                policy,
            }));
        }
    }
    out
}

/// `[service.leak]`: the leak detector's tunables (docs/config.md).
fn leak_config(t: &Tbl) -> crate::probe::leak::LeakConfig {
    use crate::probe::leak::{LeakConfig, OnLeak};
    let mut c = LeakConfig::default();
    if let Some(b) = t.bool("enabled") {
        c.enabled = b;
    }
    if let Some(d) = t.duration("warmup") {
        c.warmup = d;
    }
    if let Some(d) = t.duration("floor_window") {
        c.floor_window = d;
    }
    if let Some(d) = t.duration("confirm") {
        c.confirm = d;
    }
    if let Some(d) = t.duration("max_window") {
        c.max_window = d;
    }
    for (key, slot, lo, hi) in [
        (
            "min_slope_mb_per_hour",
            &mut c.min_slope_mb_per_hour as &mut f64,
            0.0,
            1e9,
        ),
        ("min_confidence", &mut c.min_confidence, 0.0, 1.0),
    ] {
        if let Some(item) = t.get(key) {
            match item
                .as_float()
                .or_else(|| item.as_integer().map(|i| i as f64))
            {
                Some(v) if (lo..=hi).contains(&v) => *slot = v,
                _ => t.reader().error(
                    item.span(),
                    format!(
                        "invalid `{key}` in {}: expected a number from {lo} to {hi}",
                        t.what
                    ),
                ),
            }
        }
    }
    if let Some(o) = t.choice("on_leak", &["none", "restart"]) {
        c.on_leak = if o == "restart" {
            OnLeak::Restart
        } else {
            OnLeak::None
        };
    }
    if let Some(d) = t.duration("restart_before") {
        c.restart_before = d;
    }
    t.finish();
    c
}

/// Names in `[[component]]` and `[status] calendar` must exist.
fn resolve_status(
    r: &Reader,
    status: &mut super::status::StatusConfig,
    refs: &super::status::Refs,
    checks: &[(CheckConfig, Option<Range<usize>>)],
    declared: &[(UnitKind, String)],
    calendars: &[(crate::schedule::when::Calendar, Option<Range<usize>>)],
) {
    for (component, name, span) in &refs.checks {
        if !checks.iter().any(|(c, _)| &c.name == name) {
            r.error(
                span.clone(),
                format!("unknown check or unit \"{name}\" in `checks` of [[component]] \"{component}\"; it names [[check]]s or services with a `health` check"),
            );
        }
    }
    for (component, name, span) in &refs.units {
        if !declared.iter().any(|(_, n)| n == name) {
            r.error(
                span.clone(),
                format!("unknown check or unit \"{name}\" in `units` of [[component]] \"{component}\"; it names [[service]]s or [[job]]s"),
            );
        }
    }
    if let Some((name, span)) = &status.calendar_ref {
        match calendars.iter().find(|(c, _)| &c.name == name) {
            Some((c, _)) => status.calendar = Some(c.clone()),
            None => r.error(
                span.clone(),
                format!("unknown calendar \"{name}\" in [status]; define it with [[calendar]] name = \"{name}\""),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates() {
        let r = |s| parse_rate(s).unwrap().unwrap();
        assert_eq!(r("20/s").per_sec, 20.0);
        assert_eq!(r("600/m").per_sec, 10.0);
        assert_eq!(r(" 36/h ").per_sec, 0.01);
        assert_eq!(parse_rate("off").unwrap(), None);
        for bad in ["20", "0/s", "-1/s", "1.5/s", "20/d", "x/s", ""] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
