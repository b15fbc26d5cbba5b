//! `/metrics`: the agent's state in the Prometheus text exposition format
//! (version 0.0.4). Every metric is listed in docs/metrics.md.
//!
//! Two sources:
//! - **Gauges** are read live at scrape time from what is already in memory:
//!   unit states and memory (supervisor), leak slopes (sampler), check status
//!   and latency (checks). Active alerts and pending notifications are two
//!   small `GROUP BY` queries on indexed columns.
//! - **Counters** (`*_total`, and the job duration histogram) are derived
//!   from the store's append-only tables: the event log and the notification
//!   attempts. Each scrape reads only the rows added since the previous one
//!   (a cursor on their ids), so a scrape costs what happened since the last,
//!   not the whole history. The first scrape after a start reads the history
//!   once; counters therefore count over the store's whole life and survive
//!   agent restarts (no reset for `rate()` to paper over), and nothing in the
//!   agent's hot paths had to learn about metrics. The lossy event bus is not
//!   used: the store is the source of truth.
//!
//! Written by hand instead of with the `prometheus` or `prometheus-client`
//! crates: those want every series registered and updated where it happens;
//! here each scrape renders snapshots we already have, and the format is a
//! few lines of escaping (tested against a real parser in tests/metrics.rs).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::config::UnitKind;
use crate::event::EventKind;
use crate::store::{Store, StoreError};

/// Upper bounds (seconds) of the job duration histogram's buckets.
const JOB_BUCKETS: &[f64] = &[
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4.0 * 3600.0,
    24.0 * 3600.0,
];
/// Rows read from the store per query while catching up.
const BATCH: u32 = 10_000;

#[derive(Default)]
struct Histogram {
    /// Per bucket of `JOB_BUCKETS` (not cumulative), then +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; JOB_BUCKETS.len() + 1];
        }
        let i = JOB_BUCKETS
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(JOB_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

/// Counters derived from the store, and where each left off.
#[derive(Default)]
struct Tail {
    event_cursor: i64,
    attempt_cursor: i64,
    restarts: BTreeMap<String, u64>,
    limit_kills: BTreeMap<(String, String), u64>,
    job_runs: BTreeMap<(String, String), u64>,
    job_durations: BTreeMap<String, Histogram>,
    checks_down: BTreeMap<String, u64>,
    alerts_fired: BTreeMap<(String, String), u64>,
    deliveries: BTreeMap<(String, String), u64>,
}

/// The `/metrics` state kept between scrapes.
#[derive(Clone, Default)]
pub struct Metrics {
    tail: Arc<Mutex<Tail>>,
    /// API requests refused by the rate limiter since the agent started
    /// (the only process-lifetime counter: refusals are not stored).
    pub rate_limited: Arc<std::sync::atomic::AtomicU64>,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }
}

impl Tail {
    /// Reads the events and delivery attempts added since the last call.
    fn catch_up(&mut self, store: &Store, jobs: &HashMap<String, bool>) -> Result<(), StoreError> {
        loop {
            let events = store.events(None, Some(self.event_cursor), BATCH)?;
            let n = events.len();
            for e in events {
                self.event_cursor = self.event_cursor.max(e.id);
                self.count(e.kind, jobs);
            }
            if n < BATCH as usize {
                break;
            }
        }
        loop {
            let rows = attempts_after(store, self.attempt_cursor, BATCH)?;
            let n = rows.len();
            for (id, channel, ok) in rows {
                self.attempt_cursor = self.attempt_cursor.max(id);
                let result = if ok { "ok" } else { "error" };
                *self
                    .deliveries
                    .entry((channel, result.to_string()))
                    .or_default() += 1;
            }
            if n < BATCH as usize {
                break;
            }
        }
        Ok(())
    }

    fn count(&mut self, kind: EventKind, jobs: &HashMap<String, bool>) {
        match kind {
            EventKind::UnitStarted { unit, trigger, .. } if trigger == "restart" => {
                *self.restarts.entry(unit).or_default() += 1;
            }
            EventKind::LimitBreached { unit, limit, .. } => {
                *self.limit_kills.entry((unit, limit)).or_default() += 1;
            }
            EventKind::UnitExited {
                unit,
                state,
                ran_ms,
                ..
            } if jobs.get(&unit).copied().unwrap_or(false) => {
                self.job_durations
                    .entry(unit.clone())
                    .or_default()
                    .observe(ran_ms as f64 / 1000.0);
                *self.job_runs.entry((unit, state)).or_default() += 1;
            }
            EventKind::CheckDown { check, .. } => {
                *self.checks_down.entry(check).or_default() += 1;
            }
            EventKind::AlertFired { rule, severity, .. } => {
                *self.alerts_fired.entry((rule, severity)).or_default() += 1;
            }
            _ => {}
        }
    }
}

/// `(id, channel, ok)` of notification attempts with ids above `after`.
fn attempts_after(
    store: &Store,
    after: i64,
    limit: u32,
) -> Result<Vec<(i64, String, bool)>, StoreError> {
    let conn = store.conn()?;
    let mut stmt = conn.prepare_cached(
        "SELECT a.id, d.channel, a.ok FROM alert_attempts a
         JOIN alert_deliveries d ON d.id = a.delivery_id
         WHERE a.id > ?1 ORDER BY a.id LIMIT ?2",
    )?;
    let rows = stmt.query_map(rusqlite::params![after, limit], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// `(a, b, count)` rows of a two-column `GROUP BY` query.
fn grouped(store: &Store, sql: &str) -> Result<Vec<(String, String, i64)>, StoreError> {
    let conn = store.conn()?;
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Formats a sample value the way Prometheus reads it.
fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// The text being built: one `# HELP`/`# TYPE` header per family.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", num(v));
    }
}

const UNIT_STATES: &[&str] = &[
    "idle", "running", "stopping", "backoff", "gave-up", "stopped", "exited", "failed",
];
const CHECK_STATES: &[&str] = &["unknown", "up", "down", "paused"];
const ALERT_STATES: &[&str] = &["firing", "acknowledged"];
const SEVERITIES: &[&str] = &["info", "warning", "critical"];

/// Renders the whole exposition.
pub fn render(s: &AppState) -> Result<String, StoreError> {
    let units = s.sup.statuses();
    let checks = s.checks.statuses();
    let jobs: HashMap<String, bool> = units
        .iter()
        .map(|u| (u.name.clone(), u.kind == UnitKind::Job))
        .collect();
    let mut o = Out(String::with_capacity(
        256 * (units.len() + checks.len()) + 4096,
    ));

    o.family(
        "mamori_build_info",
        "gauge",
        "The running mamori's version; always 1.",
    );
    o.sample(
        "mamori_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );

    // --- units (live) ---
    o.family(
        "mamori_unit_state",
        "gauge",
        "1 for the unit's current state, 0 for the others.",
    );
    let state_names: Vec<String> = units
        .iter()
        .map(|u| {
            serde_json::to_value(u.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        })
        .collect();
    for (u, cur) in units.iter().zip(&state_names) {
        for st in UNIT_STATES {
            o.sample(
                "mamori_unit_state",
                &[("unit", &u.name), ("kind", u.kind.as_str()), ("state", st)],
                if cur == st { 1.0 } else { 0.0 },
            );
        }
    }
    o.family(
        "mamori_unit_memory_bytes",
        "gauge",
        "Resident memory of the unit's whole process tree at the last sample.",
    );
    for u in &units {
        if let Some(m) = u.memory {
            o.sample("mamori_unit_memory_bytes", &[("unit", &u.name)], m as f64);
        }
    }
    o.family(
        "mamori_unit_memory_limit_bytes",
        "gauge",
        "The unit's memory limit (units with one).",
    );
    for u in &units {
        if let Some(m) = u.limits.memory {
            o.sample(
                "mamori_unit_memory_limit_bytes",
                &[("unit", &u.name)],
                m as f64,
            );
        }
    }
    o.family(
        "mamori_unit_uptime_seconds",
        "gauge",
        "How long the unit's current run has been running.",
    );
    for u in &units {
        if let Some(ms) = u.uptime_ms {
            o.sample(
                "mamori_unit_uptime_seconds",
                &[("unit", &u.name)],
                ms as f64 / 1000.0,
            );
        }
    }
    leaks(&mut o, s, &units);

    // --- checks (live) ---
    o.family(
        "mamori_check_status",
        "gauge",
        "1 for the check's current status, 0 for the others.",
    );
    for c in &checks {
        for st in CHECK_STATES {
            o.sample(
                "mamori_check_status",
                &[("check", &c.name), ("kind", c.kind), ("status", st)],
                if c.status.as_str() == *st { 1.0 } else { 0.0 },
            );
        }
    }
    o.family(
        "mamori_check_latency_seconds",
        "gauge",
        "How long the check's last probe took.",
    );
    for c in &checks {
        if let Some(ms) = c.last_latency_ms {
            o.sample(
                "mamori_check_latency_seconds",
                &[("check", &c.name)],
                ms / 1000.0,
            );
        }
    }

    // --- alerts and notifications (small indexed queries) ---
    let active = grouped(
        &s.store,
        "SELECT state, severity, COUNT(*) FROM alerts WHERE state IN ('firing', 'acknowledged') GROUP BY state, severity",
    )?;
    let mut alerts: BTreeMap<(String, String), i64> = BTreeMap::new();
    for st in ALERT_STATES {
        for sev in SEVERITIES {
            alerts.insert((st.to_string(), sev.to_string()), 0);
        }
    }
    for (st, sev, n) in active {
        alerts.insert((st, sev), n);
    }
    o.family(
        "mamori_alerts",
        "gauge",
        "Active alerts by state (firing, acknowledged) and severity.",
    );
    for ((st, sev), n) in &alerts {
        o.sample(
            "mamori_alerts",
            &[("state", st), ("severity", sev)],
            *n as f64,
        );
    }
    let pending = grouped(
        &s.store,
        "SELECT channel, 'pending', COUNT(*) FROM alert_deliveries WHERE state = 'pending' GROUP BY channel",
    )?;
    o.family(
        "mamori_notifications_pending",
        "gauge",
        "Notifications waiting in the outbox, by channel.",
    );
    for (ch, _, n) in &pending {
        o.sample(
            "mamori_notifications_pending",
            &[("channel", ch)],
            *n as f64,
        );
    }

    // --- counters from the store ---
    let mut t = s.metrics.tail.lock().map_err(|_| StoreError::Poisoned)?;
    t.catch_up(&s.store, &jobs)?;
    o.family(
        "mamori_unit_restarts_total",
        "counter",
        "Automatic restarts of the unit (by its restart policy).",
    );
    for (unit, n) in &t.restarts {
        o.sample("mamori_unit_restarts_total", &[("unit", unit)], *n as f64);
    }
    o.family(
        "mamori_unit_limit_kills_total",
        "counter",
        "Runs killed at a limit, by the limit (memory, cpu, wall).",
    );
    for ((unit, reason), n) in &t.limit_kills {
        o.sample(
            "mamori_unit_limit_kills_total",
            &[("unit", unit), ("reason", reason)],
            *n as f64,
        );
    }
    o.family(
        "mamori_job_runs_total",
        "counter",
        "Finished job runs by result (succeeded, failed, stopped).",
    );
    for ((job, result), n) in &t.job_runs {
        o.sample(
            "mamori_job_runs_total",
            &[("job", job), ("result", result)],
            *n as f64,
        );
    }
    o.family(
        "mamori_job_duration_seconds",
        "histogram",
        "How long finished job runs took.",
    );
    for (job, h) in &t.job_durations {
        let mut cum = 0;
        for (i, b) in JOB_BUCKETS.iter().enumerate() {
            cum += h.counts[i];
            o.sample(
                "mamori_job_duration_seconds_bucket",
                &[("job", job), ("le", &num(*b))],
                cum as f64,
            );
        }
        o.sample(
            "mamori_job_duration_seconds_bucket",
            &[("job", job), ("le", "+Inf")],
            h.count as f64,
        );
        o.sample("mamori_job_duration_seconds_sum", &[("job", job)], h.sum);
        o.sample(
            "mamori_job_duration_seconds_count",
            &[("job", job)],
            h.count as f64,
        );
    }
    o.family(
        "mamori_check_down_total",
        "counter",
        "Times the check went down.",
    );
    for (check, n) in &t.checks_down {
        o.sample("mamori_check_down_total", &[("check", check)], *n as f64);
    }
    o.family(
        "mamori_alerts_fired_total",
        "counter",
        "Alerts raised, by rule and severity.",
    );
    for ((rule, sev), n) in &t.alerts_fired {
        o.sample(
            "mamori_alerts_fired_total",
            &[("rule", rule), ("severity", sev)],
            *n as f64,
        );
    }
    o.family(
        "mamori_notification_deliveries_total",
        "counter",
        "Attempts to deliver a notification, by channel and result (ok, error).",
    );
    for ((ch, result), n) in &t.deliveries {
        o.sample(
            "mamori_notification_deliveries_total",
            &[("channel", ch), ("result", result)],
            *n as f64,
        );
    }
    o.family(
        "mamori_api_rate_limited_total",
        "counter",
        "API requests refused with 429 since the agent started.",
    );
    o.sample(
        "mamori_api_rate_limited_total",
        &[],
        s.metrics
            .rate_limited
            .load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    Ok(o.0)
}

/// The leak detector's view of each service.
fn leaks(o: &mut Out, s: &AppState, units: &[crate::supervise::UnitStatus]) {
    let leaks: Vec<_> = units
        .iter()
        .filter(|u| u.kind == UnitKind::Service)
        .filter_map(|u| Some((u.name.as_str(), s.sampler.leak_status(&u.name)?)))
        .collect();
    o.family(
        "mamori_unit_leak_slope_bytes_per_second",
        "gauge",
        "Growth of the unit's memory floor fitted by the leak detector.",
    );
    for (name, l) in &leaks {
        o.sample(
            "mamori_unit_leak_slope_bytes_per_second",
            &[("unit", name)],
            l.slope_mb_per_hour * crate::probe::leak::MB / 3600.0,
        );
    }
    o.family(
        "mamori_unit_leak_suspected",
        "gauge",
        "1 while the leak detector suspects a leak in the unit.",
    );
    for (name, l) in &leaks {
        o.sample(
            "mamori_unit_leak_suspected",
            &[("unit", name)],
            if l.suspected { 1.0 } else { 0.0 },
        );
    }
    o.family(
        "mamori_unit_leak_time_to_limit_seconds",
        "gauge",
        "Predicted time until the unit's memory reaches its limit at the fitted slope.",
    );
    for (name, l) in &leaks {
        if let Some(ms) = l.time_to_limit_ms {
            o.sample(
                "mamori_unit_leak_time_to_limit_seconds",
                &[("unit", name)],
                ms as f64 / 1000.0,
            );
        }
    }
}

/// `GET /metrics`.
pub async fn scrape(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let text = render(&s)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nnext"), "line\\nnext");
        let mut o = Out(String::new());
        o.sample("m", &[("a", "x\"y"), ("b", "z")], 1.5);
        assert_eq!(o.0, "m{a=\"x\\\"y\",b=\"z\"} 1.5\n");
    }

    #[test]
    fn histogram_buckets_are_cumulative_when_rendered() {
        let mut h = Histogram::default();
        h.observe(0.5);
        h.observe(3.0);
        h.observe(1e9);
        assert_eq!(h.count, 3);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[1], 1);
        assert_eq!(*h.counts.last().unwrap(), 1);
    }

    #[test]
    fn numbers() {
        assert_eq!(num(1.0), "1");
        assert_eq!(num(0.25), "0.25");
        assert_eq!(num(f64::INFINITY), "+Inf");
        assert_eq!(num(1e21), "1000000000000000000000");
    }
}
