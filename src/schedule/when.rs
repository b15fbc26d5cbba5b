//! When a scheduled job fires: a cron expression (5 fields, or 6 with
//! seconds) in a time zone, or a fixed period (`every`), optionally adjusted
//! by a business-day calendar. Pure: "now" is always passed in.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc, Weekday};
use croner::parser::{CronParser, Seconds};
use croner::Cron;

pub use super::zone::Tz;

/// Which days are closed, and what to do with a run that falls on one.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    pub name: String,
    pub closed: BTreeSet<NaiveDate>,
    /// Saturdays and Sundays are closed too.
    pub weekends_closed: bool,
}

impl Calendar {
    pub fn is_open(&self, d: NaiveDate) -> bool {
        let weekend = matches!(d.weekday(), Weekday::Sat | Weekday::Sun);
        let closed_weekend = self.weekends_closed && weekend;
        !(closed_weekend || self.closed.contains(&d))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnClosed {
    Skip,
    NextOpenDay,
    PreviousOpenDay,
}

impl OnClosed {
    /// As written in the config (`on_closed`).
    pub fn as_str(self) -> &'static str {
        match self {
            OnClosed::Skip => "skip",
            OnClosed::NextOpenDay => "next-open-day",
            OnClosed::PreviousOpenDay => "previous-open-day",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Trigger {
    Cron { cron: Box<Cron>, expr: String },
    Every(Duration),
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub trigger: Trigger,
    pub tz: Tz,
    pub calendar: Option<(Calendar, OnClosed)>,
}

/// Parses a cron expression of 5 fields (minute granularity) or 6 (with seconds first).
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if !(5..=6).contains(&fields) && !expr.trim().starts_with('@') {
        return Err(format!(
            "invalid cron expression \"{expr}\": it has {fields} fields; expected 5 (minute hour day month weekday) or 6 (with seconds first)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expr)
        .map_err(|e| {
            format!(
                "invalid cron expression \"{expr}\": {e} (fields: minute 0-59, hour 0-23, day of month 1-31, month 1-12 or JAN-DEC, weekday 0-7 or SUN-SAT; a sixth field in front is seconds)"
            )
        })
}

/// How far back raw occurrences are looked at, so that a run moved to the
/// previous open day (up to a month earlier) is still found.
const LOOKBACK_DAYS: i64 = 40;
/// A bound on work per call, whatever the expression.
const MAX_RAW: usize = 200_000;

impl Schedule {
    /// The next fire times strictly after `after`, at most `n`.
    pub fn next_n(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        if n == 0 {
            return Vec::new();
        }
        match &self.trigger {
            Trigger::Every(period) => {
                // Aligned to the epoch, so restarts do not shift the grid.
                let p = period.as_millis().max(1) as i64;
                let mut t = (after.timestamp_millis().div_euclid(p) + 1) * p;
                let mut out = Vec::new();
                let mut guard = 0;
                while out.len() < n && guard < MAX_RAW {
                    guard += 1;
                    if let Some(dt) = Utc.timestamp_millis_opt(t).single() {
                        if let Some(adj) = self.adjust(dt) {
                            if adj > after && !out.contains(&adj) {
                                out.push(adj);
                            }
                        }
                    }
                    t += p;
                }
                out.sort();
                out
            }
            Trigger::Cron { cron, .. } => {
                let lookback = if matches!(self.calendar, Some((_, OnClosed::PreviousOpenDay))) {
                    chrono::Duration::days(LOOKBACK_DAYS)
                } else {
                    chrono::Duration::zero()
                };
                let start = (after - lookback).with_timezone(&self.tz);
                let mut out: Vec<DateTime<Utc>> = Vec::new();
                for (i, raw) in cron.iter_after(start).enumerate() {
                    if i >= MAX_RAW {
                        break;
                    }
                    let raw = raw.with_timezone(&Utc);
                    // Adjusted times move back at most the lookback: once a raw
                    // time is that far past the n earliest found, none can come.
                    if out.len() >= n {
                        out.sort();
                        out.truncate(n);
                        if raw - lookback > out[n - 1] {
                            break;
                        }
                    }
                    if let Some(adj) = self.adjust(raw) {
                        if adj > after && !out.contains(&adj) {
                            out.push(adj);
                        }
                    }
                }
                out.sort();
                out.truncate(n);
                out
            }
        }
    }

    /// The latest fire time in `(after, until]`, if any: a binary search on
    /// `next_n`, so a gap of a year of one-second fires costs ~40 lookups.
    pub fn last_in(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let first = self
            .next_n(after, 1)
            .first()
            .copied()
            .filter(|t| *t <= until)?;
        let has_one_after = |ms: i64| {
            Utc.timestamp_millis_opt(ms)
                .single()
                .and_then(|x| self.next_n(x, 1).first().copied())
                .is_some_and(|t| t <= until)
        };
        // Fire times fall on whole milliseconds: one lies in (lo, until], none in (hi, until].
        let (mut lo, mut hi) = (first.timestamp_millis() - 1, until.timestamp_millis());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if has_one_after(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let last = Utc.timestamp_millis_opt(lo).single()?;
        self.next_n(last, 1)
            .first()
            .copied()
            .filter(|t| *t <= until)
    }

    /// Moves a raw fire time according to the calendar (None: skipped).
    fn adjust(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let Some((cal, rule)) = &self.calendar else {
            return Some(t);
        };
        let local = t.with_timezone(&self.tz);
        let day = local.date_naive();
        if cal.is_open(day) {
            return Some(t);
        }
        let step = match rule {
            OnClosed::Skip => return None,
            OnClosed::NextOpenDay => 1,
            OnClosed::PreviousOpenDay => -1,
        };
        let mut d = day;
        for _ in 0..366 {
            d = d.checked_add_signed(chrono::Duration::days(step))?;
            if cal.is_open(d) {
                let naive = d.and_time(local.time());
                return self
                    .tz
                    .from_local_datetime(&naive)
                    .earliest()
                    .map(|x| x.with_timezone(&Utc));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cron(expr: &str, tz: &str) -> Schedule {
        Schedule {
            trigger: Trigger::Cron {
                cron: Box::new(parse_cron(expr).unwrap()),
                expr: expr.into(),
            },
            tz: tz.parse().unwrap(),
            calendar: None,
        }
    }

    #[test]
    fn five_and_six_fields_in_a_time_zone() {
        let s = cron("30 2 * * *", "Asia/Tokyo");
        let next = s.next_n(utc("2026-11-23T00:00:00Z"), 2);
        // 02:30 JST is 17:30 UTC the day before.
        assert_eq!(
            next,
            vec![utc("2026-11-23T17:30:00Z"), utc("2026-11-24T17:30:00Z")]
        );
        let s = cron("*/20 * * * * *", "UTC");
        let next = s.next_n(utc("2026-11-23T00:00:00Z"), 3);
        assert_eq!(next[2], utc("2026-11-23T00:01:00Z"));
        assert!(parse_cron("* * *").unwrap_err().contains("expected 5"));
        assert!(parse_cron("61 * * * *").is_err());
    }

    #[test]
    fn every_is_aligned() {
        let s = Schedule {
            trigger: Trigger::Every(Duration::from_secs(300)),
            tz: Tz::utc(),
            calendar: None,
        };
        assert_eq!(
            s.next_n(utc("2026-11-23T00:07:10Z"), 2),
            vec![utc("2026-11-23T00:10:00Z"), utc("2026-11-23T00:15:00Z")]
        );
    }

    #[test]
    fn last_in_finds_the_latest_fire_time_of_a_long_gap() {
        let every = Schedule {
            trigger: Trigger::Every(Duration::from_secs(60)),
            tz: Tz::utc(),
            calendar: None,
        };
        let from = utc("2026-11-23T00:00:00Z");
        assert_eq!(
            every.last_in(from, utc("2026-11-24T00:00:30Z")),
            Some(utc("2026-11-24T00:00:00Z"))
        );
        // `until` itself counts; `after` does not.
        assert_eq!(
            every.last_in(from, utc("2026-11-23T00:01:00Z")),
            Some(utc("2026-11-23T00:01:00Z"))
        );
        assert_eq!(every.last_in(from, utc("2026-11-23T00:00:59Z")), None);
        let s = closing(OnClosed::NextOpenDay);
        // Closed days from the 31st to the 3rd: the last run before the 3rd
        // ends is the one of the 30th (06:00 JST = 21:00 UTC the day before).
        assert_eq!(
            s.last_in(utc("2026-12-01T00:00:00Z"), utc("2027-01-03T12:00:00Z")),
            Some(utc("2026-12-29T21:00:00Z"))
        );
    }

    fn closing(rule: OnClosed) -> Schedule {
        // Daily at 06:00 in Tokyo; 2026-12-31 to 2027-01-03 closed (a Thursday to a Sunday).
        let mut s = cron("0 6 * * *", "Asia/Tokyo");
        let closed = ["2026-12-31", "2027-01-01"]
            .iter()
            .map(|d| d.parse().unwrap())
            .collect();
        s.calendar = Some((
            Calendar {
                name: "jp".into(),
                closed,
                weekends_closed: true,
            },
            rule,
        ));
        s
    }

    #[test]
    fn calendar_skip_next_and_previous() {
        let after = utc("2026-12-29T12:00:00Z"); // 21:00 JST on Tue 29th
        let days = |v: Vec<DateTime<Utc>>| -> Vec<String> {
            v.iter()
                .map(|t| {
                    t.with_timezone(&"Asia/Tokyo".parse::<Tz>().unwrap())
                        .format("%m-%d %H:%M")
                        .to_string()
                })
                .collect()
        };
        assert_eq!(
            days(closing(OnClosed::Skip).next_n(after, 3)),
            vec!["12-30 06:00", "01-04 06:00", "01-05 06:00"]
        );
        // Four closed days all move to Monday the 4th: one run, not four.
        assert_eq!(
            days(closing(OnClosed::NextOpenDay).next_n(after, 3)),
            vec!["12-30 06:00", "01-04 06:00", "01-05 06:00"]
        );
        // Closed days move back to Wednesday the 30th (already counted once).
        assert_eq!(
            days(closing(OnClosed::PreviousOpenDay).next_n(after, 2)),
            vec!["12-30 06:00", "01-04 06:00"]
        );
    }

    fn local(t: DateTime<Utc>, tz: &str) -> String {
        t.with_timezone(&tz.parse::<Tz>().unwrap())
            .format("%Y-%m-%d %H:%M %Z")
            .to_string()
    }

    /// The next `n` fire times after `after`, on New York's clock.
    fn in_new_york(s: &Schedule, after: &str, n: usize) -> Vec<String> {
        s.next_n(utc(after), n)
            .into_iter()
            .map(|t| local(t, "America/New_York"))
            .collect()
    }

    #[test]
    fn a_time_skipped_by_the_clock_moving_forward() {
        // New York, 2027-03-14: 02:00 EST becomes 03:00 EDT, so 02:30 is never on the clock.
        let s = cron("30 2 * * *", "America/New_York");
        let next = in_new_york(&s, "2027-03-12T12:00:00Z", 3);
        // cron's rule: a time the clock skips runs when the clock jumps.
        assert_eq!(
            next,
            [
                "2027-03-13 02:30 EST",
                "2027-03-14 03:00 EDT",
                "2027-03-15 02:30 EDT"
            ]
        );
        // ...but only for one fixed time: a range skips the missing time.
        let s = cron("30 2-3 * * *", "America/New_York");
        assert_eq!(
            in_new_york(&s, "2027-03-14T05:00:00Z", 1),
            ["2027-03-14 03:30 EDT"]
        );
    }

    #[test]
    fn a_time_the_clock_passes_twice() {
        // New York, 2026-11-01: 02:00 EDT becomes 01:00 EST, so 01:30 comes twice.
        let s = cron("30 1 * * *", "America/New_York");
        let next = in_new_york(&s, "2026-10-30T12:00:00Z", 3);
        // Once, at the first of the two.
        assert_eq!(
            next,
            [
                "2026-10-31 01:30 EDT",
                "2026-11-01 01:30 EDT",
                "2026-11-02 01:30 EST"
            ]
        );
        // An hourly expression runs in both passes (docs/config.md says so).
        let s = cron("0 * * * *", "America/New_York");
        let next = in_new_york(&s, "2026-11-01T04:30:00Z", 3);
        assert_eq!(
            next,
            [
                "2026-11-01 01:00 EDT",
                "2026-11-01 01:00 EST",
                "2026-11-01 02:00 EST"
            ]
        );
        // A run the calendar moves onto 01:30 that day takes the first of the two.
        let mut s = cron("30 1 * * *", "America/New_York");
        s.calendar = Some((
            Calendar {
                name: "x".into(),
                closed: ["2026-10-31"].iter().map(|d| d.parse().unwrap()).collect(),
                weekends_closed: false,
            },
            OnClosed::NextOpenDay,
        ));
        let next = in_new_york(&s, "2026-10-30T12:00:00Z", 2);
        // (The 31st's run, moved, is the 1st's own: one run, not two.)
        assert_eq!(next, ["2026-11-01 01:30 EDT", "2026-11-02 01:30 EST"]);
    }

    #[test]
    fn rules_past_the_last_listed_transition_still_apply() {
        // Zone files list transitions up to 2037; later years follow the rule
        // at the end of the file. London is on BST (UTC+1) in July 2041.
        let s = cron("0 12 * * *", "Europe/London");
        assert_eq!(
            s.next_n(utc("2041-07-01T00:00:00Z"), 1),
            vec![utc("2041-07-01T11:00:00Z")]
        );
        assert_eq!(
            s.next_n(utc("2041-12-01T00:00:00Z"), 1),
            vec![utc("2041-12-01T12:00:00Z")]
        );
        assert_eq!(
            local(utc("2041-07-01T11:00:00Z"), "Europe/London"),
            "2041-07-01 12:00 BST"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn next_fire_is_stable_while_time_passes() {
        // The scheduler asks again after each fire; paused time stands in for
        // the hours in between.
        let s = closing(OnClosed::NextOpenDay);
        let mut now = utc("2026-12-29T12:00:00Z");
        let mut fires = Vec::new();
        for _ in 0..3 {
            let next = s.next_n(now, 1)[0];
            tokio::time::advance((next - now).to_std().unwrap()).await;
            now = next;
            fires.push(next);
        }
        assert_eq!(fires[1], utc("2027-01-03T21:00:00Z"));
        assert_eq!(fires[2] - fires[1], chrono::Duration::days(1));
    }
}
