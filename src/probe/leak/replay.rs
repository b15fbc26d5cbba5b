//! Replaying memory traces through the detector at full speed, and through
//! the rule people write today in Prometheus,
//! `predict_linear(mem[1h], 4*3600) > limit` (plain least squares on the same
//! samples), so both are scored the same way: detection delay as a share of
//! the time to the limit, and false alarms per 24 h. Used by
//! `benches/leak_replay.rs` and `tests/leak_traces.rs`; the traces and their
//! index live in `traces/leak/`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{least_squares, Detector, LeakConfig, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
}

/// One recorded or generated memory trace, as listed in `traces.toml`.
#[derive(Debug, Clone)]
pub struct Trace {
    pub name: String,
    pub source: String,
    pub description: String,
    pub leak: bool,
    pub limit: u64,
    pub leak_start: Option<Duration>,
    pub time_to_limit: Option<Duration>,
    /// A trace on which mamori is known to miss the targets, and why: kept in
    /// the benchmark and the table, and checked to still miss (so the mark
    /// goes when the detector gets better).
    pub expect_miss: Option<String>,
    /// (time since the process started, resident bytes).
    pub samples: Vec<(Duration, u64)>,
}

/// Loads every trace listed in `dir/traces.toml`, in the listed order.
pub fn load_traces(dir: &Path) -> Result<Vec<Trace>, TraceError> {
    let index = dir.join("traces.toml");
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| TraceError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let invalid = |msg: String| TraceError::Invalid {
        path: index.clone(),
        msg,
    };
    let doc: toml_edit::DocumentMut = read(&index)?
        .parse()
        .map_err(|e: toml_edit::TomlError| invalid(e.to_string()))?;
    let tables = doc
        .get("trace")
        .and_then(|t| t.as_array_of_tables())
        .ok_or_else(|| invalid("no [[trace]] tables".into()))?;
    let mut out = Vec::new();
    for t in tables.iter() {
        let s = |k: &str| t.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let n = |k: &str| t.get(k).and_then(|v| v.as_integer()).map(|v| v as u64);
        let name = s("name").ok_or_else(|| invalid("a trace without name".into()))?;
        let file = s("file").ok_or_else(|| invalid(format!("{name}: no file")))?;
        let leak = t
            .get("leak")
            .and_then(|v| v.as_bool())
            .ok_or_else(|| invalid(format!("{name}: no leak = true|false")))?;
        let limit = n("limit").ok_or_else(|| invalid(format!("{name}: no limit")))?;
        let leak_start = n("leak_start_s").map(Duration::from_secs);
        let time_to_limit = n("time_to_limit_s").map(Duration::from_secs);
        if leak && (leak_start.is_none() || time_to_limit.is_none()) {
            return Err(invalid(format!(
                "{name}: a leak needs leak_start_s and time_to_limit_s"
            )));
        }
        let path = dir.join(&file);
        let samples = parse_csv(&read(&path)?).map_err(|msg| TraceError::Invalid {
            path: path.clone(),
            msg,
        })?;
        out.push(Trace {
            name,
            source: s("source").unwrap_or_default(),
            description: s("description").unwrap_or_default(),
            leak,
            limit,
            leak_start,
            time_to_limit,
            expect_miss: s("expect_miss"),
            samples,
        });
    }
    Ok(out)
}

/// Parses `t_seconds,rss_bytes` lines (a header line is skipped).
pub fn parse_csv(text: &str) -> Result<Vec<(Duration, u64)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && line.starts_with('t')) {
            continue;
        }
        let bad = || format!("line {}: expected t_seconds,rss_bytes: {line:?}", i + 1);
        let (t, v) = line.split_once(',').ok_or_else(bad)?;
        let t: f64 = t.trim().parse().map_err(|_| bad())?;
        let v: u64 = v.trim().parse().map_err(|_| bad())?;
        if !t.is_finite() || t < 0.0 {
            return Err(bad());
        }
        out.push((Duration::from_secs_f64(t), v));
    }
    Ok(out)
}

/// When an alarm was raised and (if it was) cleared again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Alarms {
    pub raised: Vec<Duration>,
    pub cleared: Vec<Duration>,
}

impl Alarms {
    /// Is the alarm up at `t`?
    fn up_at(&self, t: Duration) -> bool {
        let raised = self.raised.iter().filter(|r| **r <= t).count();
        let cleared = self.cleared.iter().filter(|c| **c <= t).count();
        raised > cleared
    }
}

/// Feeds the trace to a detector, as the agent would: `reset` at the first
/// sample (the process start), the trace's limit.
pub fn replay_mamori(trace: &Trace, cfg: &LeakConfig) -> Alarms {
    let mut d = Detector::new(cfg.clone(), Some(trace.limit));
    let mut alarms = Alarms::default();
    if let Some((t0, _)) = trace.samples.first() {
        d.reset(*t0);
    }
    for &(t, v) in &trace.samples {
        match d.observe(t, v) {
            Some(Verdict::Suspected(_)) => alarms.raised.push(t),
            Some(Verdict::Cleared(_)) => alarms.cleared.push(t),
            None => {}
        }
    }
    alarms
}

/// The Prometheus rule `predict_linear(mem[range], horizon) > limit`,
/// evaluated at every sample (as often as it could be): least squares over
/// the samples of the last `range`, extrapolated `horizon` past now.
pub fn replay_predict_linear(trace: &Trace, range: Duration, horizon: Duration) -> Alarms {
    let mut window: VecDeque<(f64, f64)> = VecDeque::new();
    let mut alarms = Alarms::default();
    let mut up = false;
    for &(t, v) in &trace.samples {
        let now = t.as_secs_f64();
        window.push_back((now, v as f64));
        while window
            .front()
            .is_some_and(|(t0, _)| *t0 <= now - range.as_secs_f64())
        {
            window.pop_front();
        }
        // Times relative to now keep the sums well conditioned.
        let fit = least_squares(window.iter().map(|&(t, v)| (t - now, v)));
        let firing = fit.is_some_and(|(at_now, slope)| {
            at_now + slope * horizon.as_secs_f64() > trace.limit as f64
        });
        if firing && !up {
            alarms.raised.push(t);
        } else if !firing && up {
            alarms.cleared.push(t);
        }
        up = firing;
    }
    alarms
}

/// How a detector did on one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// For a leak: when the alarm was first up after the leak started.
    pub flagged_after: Option<Duration>,
    /// `flagged_after` as a share of the time to the limit.
    pub delay_share: Option<f64>,
    /// Alarms raised while nothing leaked (the whole trace, or before the leak).
    pub false_alarms: usize,
    pub false_alarms_per_day: f64,
    /// Zero false alarms, and a leak flagged within 25 % of its time to the
    /// limit (or within 60 s when 25 % is shorter than that).
    pub meets_targets: bool,
}

/// The latest a leak may be flagged to meet the target.
pub fn deadline(time_to_limit: Duration) -> Duration {
    (time_to_limit / 4).max(Duration::from_secs(60))
}

pub fn score(trace: &Trace, alarms: &Alarms) -> Score {
    let first = trace.samples.first().map_or(Duration::ZERO, |s| s.0);
    let last = trace.samples.last().map_or(Duration::ZERO, |s| s.0);
    let quiet_until = if trace.leak {
        trace.leak_start.unwrap_or(first)
    } else {
        last
    };
    let false_alarms = alarms.raised.iter().filter(|r| **r < quiet_until).count();
    let quiet = quiet_until.saturating_sub(first).as_secs_f64();
    let false_alarms_per_day = if quiet > 0.0 {
        false_alarms as f64 * 86_400.0 / quiet
    } else {
        0.0
    };
    let (mut flagged_after, mut delay_share) = (None, None);
    let mut meets = false_alarms == 0;
    if let (true, Some(start), Some(ttl)) = (trace.leak, trace.leak_start, trace.time_to_limit) {
        let at = if alarms.up_at(start) {
            Some(start)
        } else {
            alarms.raised.iter().copied().find(|r| *r >= start)
        };
        flagged_after = at.map(|a| a - start).filter(|d| *d <= ttl);
        delay_share = flagged_after.map(|d| d.as_secs_f64() / ttl.as_secs_f64());
        meets &= flagged_after.is_some_and(|d| d <= deadline(ttl));
    }
    Score {
        flagged_after,
        delay_share,
        false_alarms,
        false_alarms_per_day,
        meets_targets: meets,
    }
}

/// The baseline as people configure it: `predict_linear(mem[1h], 4*3600) > limit`.
pub fn baseline(trace: &Trace) -> Alarms {
    replay_predict_linear(
        trace,
        Duration::from_secs(3600),
        Duration::from_secs(4 * 3600),
    )
}
