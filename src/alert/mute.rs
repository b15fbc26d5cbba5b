//! What mutes notifications while keeping the alert visible: silences (made
//! at run time by `mamori silence add`, with an end and a comment) and
//! maintenance windows / quiet hours (`[[maintenance]]` in the config,
//! recurring by time of day and weekday). Both match alerts by labels
//! (`key`, `rule`, `subject`, `severity`; `*` wildcards). Muted
//! notifications are recorded as deliveries in state `muted`.

use chrono::{Datelike, Timelike};

use super::db::{AlertRecord, Silence};
use super::rules::glob;

/// `[[maintenance]]`: a recurring window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub name: String,
    /// Days the window starts on, 0 = Monday … 6 = Sunday; empty = every day.
    pub days: Vec<u32>,
    /// Minutes after midnight; `to <= from` wraps past midnight.
    pub from: u32,
    pub to: u32,
    /// Local time of the machine instead of UTC.
    pub local: bool,
    /// Only alerts with these severities (empty = all).
    pub severities: Vec<String>,
    /// Label patterns that must all match (empty = all alerts).
    pub matchers: Vec<(String, String)>,
}

pub fn label<'a>(rec: &'a AlertRecord, name: &str) -> Option<&'a str> {
    Some(match name {
        "key" => &rec.key,
        "rule" => &rec.rule,
        "subject" => &rec.subject,
        "severity" => &rec.severity,
        _ => return None,
    })
}

fn matches(matchers: &[(String, String)], rec: &AlertRecord) -> bool {
    matchers
        .iter()
        .all(|(l, p)| label(rec, l).is_some_and(|v| glob(p, v)))
}

/// Whether an active silence matches the alert at `now` (ms).
pub fn silenced(silences: &[Silence], rec: &AlertRecord, now: i64) -> bool {
    silences
        .iter()
        .any(|s| s.starts_at <= now && s.ends_at > now && matches(&s.matchers, rec))
}

/// (weekday 0 = Monday, minute of the day) of `now` (ms), UTC or local.
pub fn clock(now: i64, local: bool) -> (u32, u32) {
    let utc = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default();
    if local {
        let t = utc.with_timezone(&chrono::Local);
        (
            t.weekday().num_days_from_monday(),
            t.hour() * 60 + t.minute(),
        )
    } else {
        (
            utc.weekday().num_days_from_monday(),
            utc.hour() * 60 + utc.minute(),
        )
    }
}

impl Window {
    /// Whether the window is open at (weekday, minute).
    pub fn open_at(&self, weekday: u32, minute: u32) -> bool {
        let starts_on = |d: u32| self.days.is_empty() || self.days.contains(&d);
        if self.from < self.to {
            starts_on(weekday) && minute >= self.from && minute < self.to
        } else {
            // Wraps midnight: the evening part today, or the morning part of
            // a window that started yesterday.
            (starts_on(weekday) && minute >= self.from)
                || (starts_on((weekday + 6) % 7) && minute < self.to)
        }
    }

    pub fn mutes(&self, rec: &AlertRecord, now: i64) -> bool {
        let (d, m) = clock(now, self.local);
        self.open_at(d, m)
            && (self.severities.is_empty() || self.severities.contains(&rec.severity))
            && matches(&self.matchers, rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(severity: &str) -> AlertRecord {
        AlertRecord {
            id: 1,
            key: "check-down/api".into(),
            rule: "check-down".into(),
            subject: "api".into(),
            severity: severity.into(),
            state: "firing".into(),
            title: String::new(),
            body: String::new(),
            policy: String::new(),
            occurrences: 1,
            first_at: 0,
            last_at: 0,
            event_id: None,
            acked_at: None,
            acked_by: None,
            ack_comment: None,
            ack_until: None,
            resolved_at: None,
            resolved_by: None,
            esc_started: None,
            esc_round: 0,
            esc_step: 0,
            esc_done: false,
            notified: vec![],
        }
    }

    #[test]
    fn silences_match_every_matcher_while_active() {
        let rec = rec("critical");
        let s = |m: &[(&str, &str)], start, end| Silence {
            id: 1,
            matchers: m
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            starts_at: start,
            ends_at: end,
            comment: String::new(),
            created_by: String::new(),
            created_at: 0,
        };
        assert!(silenced(&[s(&[("subject", "api")], 0, 100)], &rec, 50));
        assert!(silenced(
            &[s(&[("rule", "check-*"), ("severity", "critical")], 0, 100)],
            &rec,
            50
        ));
        assert!(
            !silenced(&[s(&[("subject", "api")], 0, 100)], &rec, 100),
            "ended"
        );
        assert!(
            !silenced(&[s(&[("subject", "api")], 60, 100)], &rec, 50),
            "not begun"
        );
        assert!(!silenced(
            &[s(&[("subject", "api"), ("severity", "info")], 0, 100)],
            &rec,
            50
        ));
        assert!(!silenced(&[s(&[("nope", "*")], 0, 100)], &rec, 50));
    }

    #[test]
    fn windows_by_time_of_day_weekday_and_across_midnight() {
        let w = |days: Vec<u32>, from, to| Window {
            name: "w".into(),
            days,
            from,
            to,
            local: false,
            severities: vec![],
            matchers: vec![],
        };
        let day = w(vec![], 2 * 60, 4 * 60);
        assert!(day.open_at(3, 2 * 60));
        assert!(day.open_at(3, 4 * 60 - 1));
        assert!(!day.open_at(3, 4 * 60));
        assert!(!day.open_at(3, 60));
        // Quiet nights on weekdays: Friday 22:00 → Saturday 07:00, not Saturday night.
        let night = w(vec![0, 1, 2, 3, 4], 22 * 60, 7 * 60);
        assert!(night.open_at(4, 23 * 60));
        assert!(night.open_at(5, 6 * 60));
        assert!(!night.open_at(5, 23 * 60));
        assert!(
            !night.open_at(0, 6 * 60),
            "Monday morning follows Sunday: not in"
        );
        assert!(night.open_at(1, 6 * 60));
        assert!(!night.open_at(2, 12 * 60));
        // 2026-11-23 is a Monday; 03:00 UTC.
        let ms = chrono::DateTime::parse_from_rfc3339("2026-11-23T03:00:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(clock(ms, false), (0, 180));
        let mut quiet = w(vec![], 2 * 60, 4 * 60);
        quiet.severities = vec!["info".into(), "warning".into()];
        assert!(quiet.mutes(&rec("warning"), ms));
        assert!(
            !quiet.mutes(&rec("critical"), ms),
            "critical goes through quiet hours"
        );
        quiet.matchers = vec![("subject".into(), "db".into())];
        assert!(!quiet.mutes(&rec("warning"), ms));
    }
}
