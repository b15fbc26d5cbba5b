//! What only jobs have: a schedule (cron or `every`, a time zone, a
//! business-day calendar), retries, `ok_codes`, a recovery job, and how
//! overlapping and missed runs are handled. Also `[[calendar]]` tables.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use chrono::NaiveDate;

use super::walk::Tbl;
use crate::schedule::flow::JobPolicy;
use crate::schedule::when::{parse_cron, Calendar, OnClosed, Schedule, Trigger};
use crate::schedule::zone::{Tz, ZoneError, ZONEINFO};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// A trigger while the previous run of the flow is still running is skipped.
    Forbid,
    /// …waits until the previous run is done.
    Queue,
    /// …stops the previous run and starts anew.
    Replace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    None,
    Latest,
    All,
}

#[derive(Debug, Clone)]
pub struct JobSpec {
    pub schedule: Option<Schedule>,
    pub policy: JobPolicy,
    pub ok_codes: Vec<i32>,
    pub concurrency: Concurrency,
    pub catch_up: CatchUp,
    /// The job does not start while any of these checks is down.
    pub hold_while: Vec<(String, Option<std::ops::Range<usize>>)>,
    /// How long `hold_while` may keep it waiting before it is held.
    pub hold_timeout: Option<Duration>,
    /// A run longer than this is reported (`job.long`).
    pub expected: Option<Duration>,
    /// …or longer than this many times the p95 of its recent successful runs.
    pub expected_factor: Option<f64>,
    /// Local time (in the job's zone) by which it must have finished after
    /// its flow was triggered (`job.late`).
    pub must_finish_by: Option<chrono::NaiveTime>,
    pub tz: Tz,
    /// Where `calendar` was named, for the cross-check.
    pub calendar_ref: Option<(String, Option<std::ops::Range<usize>>)>,
    pub on_failure_span: Option<std::ops::Range<usize>>,
}

/// The zone used when a job names none: `TZ`, else /etc/timezone, else the
/// zone /etc/localtime links to, else UTC (what cron would use). Looked up
/// once per process, not once per job.
pub fn default_tz() -> Tz {
    static DEFAULT: std::sync::OnceLock<Tz> = std::sync::OnceLock::new();
    *DEFAULT.get_or_init(find_default_tz)
}

fn find_default_tz() -> Tz {
    std::env::var("TZ")
        .ok()
        .and_then(|t| t.trim_start_matches(':').parse().ok())
        .or_else(|| {
            std::fs::read_to_string("/etc/timezone")
                .ok()
                .and_then(|t| t.trim().parse().ok())
        })
        .or_else(|| {
            let target = std::fs::read_link("/etc/localtime").ok()?;
            let target = target.to_str()?;
            let (_, name) = target.split_once("zoneinfo/")?;
            name.parse().ok()
        })
        .unwrap_or_else(Tz::utc)
}

/// What to say about a `timezone` that cannot be used.
fn zone_error(z: &str, what: &str, e: ZoneError) -> String {
    match e {
        ZoneError::BadName | ZoneError::Unknown(_) => format!(
            "unknown time zone \"{z}\" in {what}; expected an IANA name such as \"Asia/Tokyo\" or \"UTC\" (as under {})",
            std::env::var("TZDIR").unwrap_or_else(|_| ZONEINFO.to_string())
        ),
        e => format!("time zone \"{z}\" in {what}: {e}"),
    }
}

pub fn job(t: &Tbl) -> JobSpec {
    let cron = t.str("schedule");
    let every = t.duration("every");
    let tz = match t.str("timezone") {
        Some((z, span)) => match z.parse::<Tz>() {
            Ok(tz) => tz,
            Err(e) => {
                t.reader().error(span, zone_error(&z, &t.what, e));
                Tz::utc()
            }
        },
        None => default_tz(),
    };
    let trigger = match (cron, every) {
        (Some(_), Some(_)) => {
            t.reader().error(
                t.key_span("every"),
                format!("{} has both `schedule` and `every`; use one", t.what),
            );
            None
        }
        (Some((expr, span)), None) => match parse_cron(&expr) {
            Ok(c) => Some(Trigger::Cron {
                cron: Box::new(c),
                expr,
            }),
            Err(e) => {
                t.reader()
                    .error(span, format!("{e} (in `schedule` of {})", t.what));
                None
            }
        },
        (None, Some(d)) if d < Duration::from_secs(1) => {
            t.reader().error(
                t.key_span("every"),
                format!("invalid `every` in {}: must be at least \"1s\"", t.what),
            );
            None
        }
        (None, Some(d)) => Some(Trigger::Every(d)),
        (None, None) => None,
    };
    let calendar_ref = t.str("calendar");
    let on_closed = match t
        .choice("on_closed", &["skip", "next-open-day", "previous-open-day"])
        .as_deref()
    {
        Some("next-open-day") => OnClosed::NextOpenDay,
        Some("previous-open-day") => OnClosed::PreviousOpenDay,
        _ => OnClosed::Skip,
    };
    if trigger.is_none()
        && (calendar_ref.is_some() || t.has("timezone"))
        && !t.has("schedule")
        && !t.has("every")
    {
        t.reader().error(
            t.key_span("calendar").or_else(|| t.key_span("timezone")),
            format!(
                "{} has a calendar or time zone but no `schedule` or `every`",
                t.what
            ),
        );
    }
    let schedule = trigger.map(|trigger| Schedule {
        trigger,
        tz,
        // Filled in by the cross-check once every calendar is known.
        calendar: calendar_ref.as_ref().map(|_| {
            (
                Calendar {
                    name: String::new(),
                    closed: BTreeSet::new(),
                    weekends_closed: false,
                },
                on_closed,
            )
        }),
    });
    let mut policy = JobPolicy::default();
    if let Some(n) = t.uint("retries") {
        policy.retries = n.min(100) as u32;
    }
    if let Some(d) = t.duration("retry_delay") {
        policy.retry_delay = d;
    }
    if let Some(item) = t.get("retry_backoff") {
        match item
            .as_float()
            .or_else(|| item.as_integer().map(|i| i as f64))
        {
            Some(f) if (1.0..=10.0).contains(&f) => policy.retry_backoff = f,
            _ => t.reader().error(
                item.span(),
                format!(
                    "invalid `retry_backoff` in {}: expected a number from 1 to 10, e.g. 2.0",
                    t.what
                ),
            ),
        }
    }
    policy.on_failure = t.string("on_failure");
    let ok_codes = match t.get("ok_codes") {
        None => vec![0],
        Some(item) => {
            let codes: Option<Vec<i32>> = item
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| {
                            v.as_integer()
                                .filter(|c| (0..=255).contains(c))
                                .map(|c| c as i32)
                        })
                        .collect()
                })
                .unwrap_or(None);
            match codes {
                Some(c) if !c.is_empty() => c,
                _ => {
                    t.reader().error(item.span(), format!("invalid `ok_codes` in {}: expected a list of exit codes 0–255, e.g. [0, 3]", t.what));
                    vec![0]
                }
            }
        }
    };
    let concurrency = match t
        .choice("concurrency", &["forbid", "queue", "replace"])
        .as_deref()
    {
        Some("queue") => Concurrency::Queue,
        Some("replace") => Concurrency::Replace,
        _ => Concurrency::Forbid,
    };
    let catch_up = match t.choice("catch_up", &["none", "latest", "all"]).as_deref() {
        Some("latest") => CatchUp::Latest,
        Some("all") => CatchUp::All,
        _ => CatchUp::None,
    };
    let hold_while = t.str_list("hold_while").unwrap_or_default();
    let hold_timeout = t.duration("hold_timeout");
    let expected = t.duration("expected");
    let expected_factor = match t.get("expected_factor") {
        None => None,
        Some(item) => {
            match item
                .as_float()
                .or_else(|| item.as_integer().map(|i| i as f64))
            {
                Some(f) if f >= 1.0 => Some(f),
                _ => {
                    t.reader().error(item.span(), format!("invalid `expected_factor` in {}: expected a number of 1 or more, e.g. 2.0", t.what));
                    None
                }
            }
        }
    };
    let must_finish_by = t.str("must_finish_by").and_then(|(s, span)| {
        match chrono::NaiveTime::parse_from_str(&s, "%H:%M") {
            Ok(time) => Some(time),
            Err(_) => {
                t.reader().error(span, format!("invalid `must_finish_by` in {}: \"{s}\"; expected a time of day HH:MM, e.g. \"06:30\"", t.what));
                None
            }
        }
    });
    JobSpec {
        hold_while,
        hold_timeout,
        expected,
        expected_factor,
        must_finish_by,
        tz,
        schedule,
        policy,
        ok_codes,
        concurrency,
        catch_up,
        calendar_ref,
        on_failure_span: t.key_span("on_failure"),
    }
}

/// A `[[calendar]]` table.
pub fn calendar(t: &Tbl, base: &Path) -> Option<(Calendar, Option<std::ops::Range<usize>>)> {
    let name = t.str("name");
    if name.is_none() && !t.has("name") {
        t.missing("name", "e.g. name = \"business-days\"");
    }
    let mut closed = BTreeSet::new();
    for (d, span) in t.str_list("closed").unwrap_or_default() {
        match d.parse::<NaiveDate>() {
            Ok(day) => {
                closed.insert(day);
            }
            Err(_) => t.reader().error(
                span,
                format!(
                    "invalid date \"{d}\" in `closed` of {}: expected YYYY-MM-DD",
                    t.what
                ),
            ),
        }
    }
    if let Some((file, span)) = t.str("closed_file") {
        let path = base.join(&file);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (i, line) in text.lines().enumerate() {
                    let line = line.split('#').next().unwrap_or("").trim();
                    if line.is_empty() {
                        continue;
                    }
                    match line.parse::<NaiveDate>() {
                        Ok(day) => {
                            closed.insert(day);
                        }
                        Err(_) => t.reader().error(
                            span.clone(),
                            format!("{}:{}: invalid date \"{line}\"; expected YYYY-MM-DD (from `closed_file` of {})", path.display(), i + 1, t.what),
                        ),
                    }
                }
            }
            Err(e) => t.reader().error(
                span,
                format!("cannot read `closed_file` {}: {e}", path.display()),
            ),
        }
    }
    let weekends_closed = !matches!(
        t.choice("weekends", &["closed", "open"]).as_deref(),
        Some("open")
    );
    t.finish();
    let (name, span) = name?;
    Some((
        Calendar {
            name,
            closed,
            weekends_closed,
        },
        span,
    ))
}
