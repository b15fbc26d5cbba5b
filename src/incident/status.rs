//! The status page's arithmetic, pure: a component's level from the state of
//! its checks and units, its open incidents and maintenance; and the daily
//! uptime bars from the history of status changes.
//!
//! Levels, worst last: operational, degraded, partial outage, major outage;
//! `maintenance` is shown instead of an automatic level while a
//! `[[maintenance]]` window covering the component is open. An open incident
//! linked to a component raises it to at least the incident's impact.
//!
//! Uptime of a day = the share of the day (UTC, up to now for today) in which
//! none of the component's members was down. A check is down from
//! `check.down` to `check.up`; a unit from `unit.gave_up` or a `unit.exited`
//! with state `failed` to its next `unit.started`. Days before the store's
//! first event have no data. A member's state at the start of the 90-day
//! window is taken as up (history older than the window is not read).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Operational,
    Maintenance,
    Degraded,
    PartialOutage,
    MajorOutage,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Operational => "operational",
            Level::Maintenance => "maintenance",
            Level::Degraded => "degraded",
            Level::PartialOutage => "partial_outage",
            Level::MajorOutage => "major_outage",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Level::Operational => "Operational",
            Level::Maintenance => "Maintenance",
            Level::Degraded => "Degraded performance",
            Level::PartialOutage => "Partial outage",
            Level::MajorOutage => "Major outage",
        }
    }

    pub fn from_impact(impact: &str) -> Level {
        match impact {
            "degraded" => Level::Degraded,
            "major_outage" => Level::MajorOutage,
            _ => Level::PartialOutage,
        }
    }
}

/// What one check or unit says about its component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    Up,
    Degraded,
    Down,
}

/// A component's level. `impacts`: of its open incidents.
pub fn level(members: &[Member], impacts: &[Level], in_maintenance: bool) -> Level {
    let down = members.iter().filter(|m| **m == Member::Down).count();
    let auto = if !members.is_empty() && down == members.len() {
        Level::MajorOutage
    } else if down > 0 {
        Level::PartialOutage
    } else if members.contains(&Member::Degraded) {
        Level::Degraded
    } else if in_maintenance {
        Level::Maintenance
    } else {
        Level::Operational
    };
    impacts.iter().copied().fold(auto, Level::max)
}

/// The state a unit's status shows.
pub fn unit_member(kind: &str, state: &str) -> Member {
    match (kind, state) {
        (_, "gave-up") => Member::Down,
        ("service", "failed" | "stopped" | "exited") => Member::Down,
        ("service", "backoff" | "stopping") => Member::Degraded,
        ("job", "failed") => Member::Degraded,
        _ => Member::Up,
    }
}

pub const DAY_MS: i64 = 86_400_000;

/// Daily uptime (0..=1; `None` = no data) of `days` UTC days ending today,
/// oldest first. `changes`: `(ts, member, down)`, oldest first, for any
/// members (others are ignored).
pub fn daily_uptime(
    changes: &[(i64, String, bool)],
    members: &HashSet<String>,
    days: usize,
    now: i64,
    first_data: Option<i64>,
) -> Vec<Option<f64>> {
    let today = now.div_euclid(DAY_MS) * DAY_MS;
    let start = today - (days as i64 - 1) * DAY_MS;
    // Intervals in which at least one member was down.
    let mut outages: Vec<(i64, i64)> = Vec::new();
    let mut down: HashSet<&str> = HashSet::new();
    let mut since = 0;
    for (ts, m, is_down) in changes {
        if !members.contains(m) {
            continue;
        }
        let was = !down.is_empty();
        if *is_down {
            down.insert(m);
        } else {
            down.remove(m.as_str());
        }
        let is = !down.is_empty();
        if !was && is {
            since = *ts;
        } else if was && !is {
            outages.push((since.max(start), *ts));
        }
    }
    if !down.is_empty() {
        outages.push((since.max(start), now));
    }
    let mut out = Vec::with_capacity(days);
    for d in 0..days as i64 {
        let a = start + d * DAY_MS;
        let b = (a + DAY_MS).min(now);
        if b <= a || first_data.is_none_or(|f| f >= a + DAY_MS) {
            out.push(None);
            continue;
        }
        // Count only the part of the day after the first data.
        let a = a.max(first_data.unwrap_or(a));
        let span = (b - a).max(1);
        let lost: i64 = outages
            .iter()
            .map(|&(x, y)| (y.min(b) - x.max(a)).max(0))
            .sum();
        out.push(Some(1.0 - (lost as f64 / span as f64).clamp(0.0, 1.0)));
    }
    out
}

/// Uptime over all the time with data, 0..=1: each day of `daily_uptime`
/// (same `now` and `first_data`) weighs as much as the time it observed, so
/// that the first minutes of a new agent, or today so far, count as minutes
/// and not as a whole day.
pub fn overall(days: &[Option<f64>], now: i64, first_data: Option<i64>) -> Option<f64> {
    let today = now.div_euclid(DAY_MS) * DAY_MS;
    let start = today - (days.len() as i64 - 1) * DAY_MS;
    let (mut up, mut seen) = (0.0, 0i64);
    for (d, u) in days.iter().enumerate() {
        let Some(u) = u else { continue };
        let a = start + d as i64 * DAY_MS;
        let b = (a + DAY_MS).min(now);
        let span = (b - a.max(first_data.unwrap_or(a))).max(1);
        up += u * span as f64;
        seen += span;
    }
    (seen > 0).then(|| up / seen as f64)
}

/// Members of each component, as the keys `status_changes` uses.
pub fn member_keys(c: &crate::config::status::Component) -> HashSet<String> {
    c.checks
        .iter()
        .map(|x| format!("check:{x}"))
        .chain(c.units.iter().map(|x| format!("unit:{x}")))
        .collect()
}

/// Whether an open `[[maintenance]]` window covers a component: it has no
/// matchers (everything), or a `subject` pattern matching one of the
/// component's checks or units. Windows that only match other labels
/// (rule, severity) are about alerts, not components.
pub fn window_covers(matchers: &[(String, String)], c: &crate::config::status::Component) -> bool {
    matchers.is_empty()
        || matchers.iter().any(|(label, pat)| {
            label == "subject"
                && c.checks
                    .iter()
                    .chain(c.units.iter())
                    .any(|n| crate::alert::rules::glob(pat, n))
        })
}

/// The worst level across components (the page's headline).
pub fn worst(levels: &HashMap<String, Level>) -> Level {
    levels.values().copied().max().unwrap_or(Level::Operational)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_from_members_incidents_and_maintenance() {
        use Member::*;
        assert_eq!(level(&[Up, Up], &[], false), Level::Operational);
        assert_eq!(level(&[Up, Degraded], &[], false), Level::Degraded);
        assert_eq!(level(&[Up, Down], &[], false), Level::PartialOutage);
        assert_eq!(level(&[Down, Down], &[], false), Level::MajorOutage);
        assert_eq!(level(&[Up], &[], true), Level::Maintenance);
        assert_eq!(level(&[Down], &[], true), Level::MajorOutage);
        assert_eq!(
            level(&[Up], &[Level::Degraded, Level::PartialOutage], false),
            Level::PartialOutage
        );
    }

    #[test]
    fn maintenance_covers_a_component_by_subject() {
        let c = crate::config::status::Component {
            name: "Mail".into(),
            description: String::new(),
            checks: vec!["smtp".into()],
            units: vec!["postfix".into()],
        };
        let m = |l: &str, p: &str| vec![(l.to_string(), p.to_string())];
        assert!(window_covers(&[], &c));
        assert!(window_covers(&m("subject", "post*"), &c));
        assert!(window_covers(&m("subject", "smtp"), &c));
        assert!(!window_covers(&m("subject", "web*"), &c));
        assert!(!window_covers(&m("severity", "info"), &c));
    }

    #[test]
    fn uptime_counts_the_share_of_each_day_with_a_member_down() {
        let members: HashSet<String> = ["check:a".to_string(), "check:b".to_string()].into();
        let day0 = 100 * DAY_MS;
        let now = day0 + 2 * DAY_MS + DAY_MS / 2; // noon of the third day
        let changes = vec![
            // a down for 6 h on day 0, b overlapping for 3 more hours.
            (day0 + 6 * 3_600_000, "check:a".to_string(), true),
            (day0 + 10 * 3_600_000, "check:b".to_string(), true),
            (day0 + 12 * 3_600_000, "check:a".to_string(), false),
            (day0 + 15 * 3_600_000, "check:b".to_string(), false),
            // not a member
            (day0 + DAY_MS, "check:z".to_string(), true),
            // down from 06:00 on the third day until now
            (
                day0 + 2 * DAY_MS + 6 * 3_600_000,
                "check:a".to_string(),
                true,
            ),
        ];
        let days = daily_uptime(&changes, &members, 4, now, Some(day0));
        assert_eq!(days.len(), 4);
        assert_eq!(days[0], None, "before the first data");
        let d0 = days[1].unwrap();
        assert!((d0 - (1.0 - 9.0 / 24.0)).abs() < 1e-9, "{d0}");
        assert_eq!(days[2], Some(1.0));
        let d2 = days[3].unwrap();
        assert!((d2 - 0.5).abs() < 1e-9, "half of the 12 h so far: {d2}");
        // Overall: by time observed, 24 + 24 + 12 h, not by day.
        let all = overall(&days, now, Some(day0)).unwrap();
        let want = (24.0 * (1.0 - 9.0 / 24.0) + 24.0 + 12.0 * 0.5) / 60.0;
        assert!((all - want).abs() < 1e-9, "{all} against {want}");
    }

    #[test]
    fn a_new_agents_first_minutes_weigh_as_minutes() {
        let members: HashSet<String> = ["check:a".to_string()].into();
        let day0 = 100 * DAY_MS;
        let first = day0 + DAY_MS - 60_000; // a minute before midnight
        let now = day0 + DAY_MS + DAY_MS / 2; // noon of the next day
                                              // Down for 30 s in that first minute, then up.
        let changes = vec![
            (first, "check:a".to_string(), true),
            (first + 30_000, "check:a".to_string(), false),
        ];
        let days = daily_uptime(&changes, &members, 2, now, Some(first));
        assert_eq!(days[0], Some(0.5), "the first day's minute");
        assert_eq!(days[1], Some(1.0));
        let all = overall(&days, now, Some(first)).unwrap();
        // 30 s lost of 12 h 1 min, not the mean of 50 % and 100 %.
        let want = 1.0 - 30_000.0 / (12.0 * 3_600_000.0 + 60_000.0);
        assert!((all - want).abs() < 1e-9, "{all} against {want}");
    }
}
