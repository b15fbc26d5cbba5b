//! When an open incident is owed an update. Pure: every time is passed in
//! (milliseconds since the epoch), so the rules are tested with explicit
//! timestamps.
//!
//! Without a calendar, an update is due `update_every` after the last one.
//! With a calendar, only time on open days counts (days in UTC): an update
//! posted on Friday 15:00 with `update_every = "24h"` and weekends closed is
//! due on Monday 15:00; if Monday is a holiday, on Tuesday 15:00.

use chrono::{DateTime, Duration as ChronoDuration, NaiveTime, Utc};

use crate::schedule::when::Calendar;

/// The longest stretch of closed days we walk over (a calendar that closes
/// everything would otherwise never make an update due).
const MAX_DAYS: u32 = 3660;

/// When an update is due after one posted at `last_update`; `None` if the
/// calendar has no open day within ten years.
pub fn due_at(last_update: i64, every_ms: i64, calendar: Option<&Calendar>) -> Option<i64> {
    let Some(cal) = calendar else {
        return Some(last_update.saturating_add(every_ms));
    };
    let mut t: DateTime<Utc> = DateTime::from_timestamp_millis(last_update)?;
    let mut left = every_ms;
    for _ in 0..MAX_DAYS {
        let day = t.date_naive();
        let next_midnight = day.succ_opt()?.and_time(NaiveTime::MIN).and_utc();
        if cal.is_open(day) {
            let span = (next_midnight - t).num_milliseconds();
            if left <= span {
                return Some((t + ChronoDuration::milliseconds(left)).timestamp_millis());
            }
            left -= span;
        }
        t = next_midnight;
    }
    None
}

/// What the reminder loop should do for one open incident at `now`: raise a
/// reminder for the returned due time, or nothing (not due yet, or already
/// reminded for this due time).
pub fn reminder(
    last_update: i64,
    reminded_for: Option<i64>,
    now: i64,
    every_ms: i64,
    calendar: Option<&Calendar>,
) -> Option<i64> {
    let due = due_at(last_update, every_ms, calendar)?;
    (now >= due && reminded_for != Some(due)).then_some(due)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use std::collections::BTreeSet;

    const H: i64 = 3600 * 1000;

    fn at(y: i32, m: u32, d: u32, h: u32) -> i64 {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
    }

    fn biz(closed: &[(i32, u32, u32)]) -> Calendar {
        Calendar {
            name: "biz".into(),
            closed: closed
                .iter()
                .map(|&(y, m, d)| NaiveDate::from_ymd_opt(y, m, d).unwrap())
                .collect::<BTreeSet<_>>(),
            weekends_closed: true,
        }
    }

    #[test]
    fn without_a_calendar_it_is_plain_time() {
        // 2026-11-20 is a Friday.
        assert_eq!(
            due_at(at(2026, 11, 20, 15), 24 * H, None),
            Some(at(2026, 11, 21, 15))
        );
    }

    #[test]
    fn business_days_skip_the_weekend_and_holidays() {
        let cal = biz(&[]);
        assert_eq!(
            due_at(at(2026, 11, 20, 15), 24 * H, Some(&cal)),
            Some(at(2026, 11, 23, 15)),
            "Friday 15:00 + one business day = Monday 15:00"
        );
        let cal = biz(&[(2026, 11, 23)]);
        assert_eq!(
            due_at(at(2026, 11, 20, 15), 24 * H, Some(&cal)),
            Some(at(2026, 11, 24, 15)),
            "Monday closed: Tuesday 15:00"
        );
        // Posted on a Saturday: the clock starts on Monday 00:00.
        let cal = biz(&[]);
        assert_eq!(
            due_at(at(2026, 11, 21, 10), 8 * H, Some(&cal)),
            Some(at(2026, 11, 23, 8))
        );
        // Exactly to midnight of an open day stays on that day.
        assert_eq!(
            due_at(at(2026, 11, 23, 0), 24 * H, Some(&cal)),
            Some(at(2026, 11, 24, 0))
        );
    }

    #[test]
    fn a_calendar_with_no_open_day_never_makes_it_due() {
        let mut cal = biz(&[]);
        cal.closed = (0..4000)
            .map(|i| NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + ChronoDuration::days(i))
            .collect();
        cal.weekends_closed = true;
        assert_eq!(due_at(at(2026, 11, 20, 15), H, Some(&cal)), None);
    }

    #[test]
    fn a_reminder_is_raised_once_per_due_time() {
        let last = at(2026, 11, 20, 15);
        let every = 24 * H;
        assert_eq!(reminder(last, None, last + every - 1, every, None), None);
        let due = last + every;
        assert_eq!(reminder(last, None, due, every, None), Some(due));
        assert_eq!(reminder(last, Some(due), due + H, every, None), None);
        // A new update moves the due time; the old reminder does not count.
        let last2 = due + 2 * H;
        assert_eq!(
            reminder(last2, Some(due), last2 + every, every, None),
            Some(last2 + every)
        );
    }
}
