//! Step two of loading: from the parsed document to the runtime model, with
//! every error collected (see `walk` for why this is not plain serde).

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::agent::{agent, agent_defaults, log_config};
use super::checks::{self, CheckConfig};
use super::flows::{flows, resolve_calendars};
use super::walk::{Reader, Source, Tbl};
use super::{
    AgentConfig, Config, ConfigError, ConfigErrors, Limits, OnUnhealthy, RestartConfig,
    RestartMode, UnitConfig, UnitKind,
};

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
                message: format!("invalid TOML: {message}{}", mixed_tables(src.text())),
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
            // Not collected in place: that would keep the allocation sized
            // for the parse results, several times larger.
            units: {
                let mut v = Vec::with_capacity(units.len());
                v.extend(units.into_iter().map(|p| std::sync::Arc::new(p.unit)));
                v
            },
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

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.')
}

/// A unit as compiled, with the positions the cross-checks need.
pub(super) struct Parsed {
    pub(super) unit: UnitConfig,
    pub(super) name_span: Option<Range<usize>>,
    pub(super) after_spans: Vec<Option<Range<usize>>>,
    pub(super) health: Option<(CheckConfig, Option<Range<usize>>)>,
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
    for (key, d) in [("cpu", l.cpu), ("wall", l.wall)] {
        if d.is_some_and(|d| d.is_zero()) {
            t.reader().error(
                t.key_span(key),
                format!(
                    "invalid `{key}` in {}: must be more than 0 (a zero limit kills every run at once)",
                    t.what
                ),
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
                let names: Vec<&str> = declared
                    .iter()
                    .filter(|(k, _)| key == "unit" || *k == UnitKind::Job)
                    .map(|(_, n)| n.as_str())
                    .collect();
                let mut message = format!(
                    "check \"{}\" names {what} \"{unit}\" in `{key}`, but there is no such {what}",
                    c.name
                );
                if declared.iter().any(|(_, n)| n == unit) {
                    message.push_str(": it is a service; heartbeats are of jobs");
                } else if let Some(best) = closest(unit, &names) {
                    message.push_str(&format!("; did you mean \"{best}\"?"));
                }
                r.error(span.clone(), message);
            }
        }
    }
}

/// A hint when one name is written both as a table (`[service]`) and as an
/// array of tables (`[[service]]`): TOML only says "duplicate key".
fn mixed_tables(text: &str) -> String {
    let headers: Vec<&str> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| l.starts_with('[') && l.ends_with(']'))
        .collect();
    for h in headers.iter().filter(|h| !h.starts_with("[[")) {
        let name = h.trim_matches(|c| c == '[' || c == ']').trim();
        if headers
            .iter()
            .any(|o| o.starts_with("[[") && o.trim_matches(|c| c == '[' || c == ']').trim() == name)
        {
            return format!(
                "; `[{name}]` and `[[{name}]]` both appear: write every one as `[[{name}]]`"
            );
        }
    }
    String::new()
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
    let check_names: Vec<&str> = checks.iter().map(|(c, _)| c.name.as_str()).collect();
    let unit_names: Vec<&str> = declared.iter().map(|(_, n)| n.as_str()).collect();
    let guess = |name: &str, names: &[&str]| {
        closest(name, names)
            .map(|b| format!(" (did you mean \"{b}\"?)"))
            .unwrap_or_default()
    };
    for (component, name, span) in &refs.checks {
        if !check_names.contains(&name.as_str()) {
            r.error(
                span.clone(),
                format!("unknown check \"{name}\" in `checks` of [[component]] \"{component}\"{}; it names [[check]]s or services with a `health` check", guess(name, &check_names)),
            );
        }
    }
    for (component, name, span) in &refs.units {
        if !unit_names.contains(&name.as_str()) {
            r.error(
                span.clone(),
                format!("unknown unit \"{name}\" in `units` of [[component]] \"{component}\"{}; it names [[service]]s or [[job]]s", guess(name, &unit_names)),
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
