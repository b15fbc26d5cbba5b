//! Missed fire times: what a schedule does when its time has come and more
//! than one time is due, or the latest is late (the wall clock stepped
//! forward, the host was suspended, the engine was blocked, or the agent
//! was down). Pure functions of the schedule, the `catch_up` setting and
//! two instants, so they are tested without waiting.

use chrono::{DateTime, Utc};

use crate::config::jobs::CatchUp;

/// At most this many missed fire times of a schedule are looked at, run
/// (`catch_up = "all"`) or reported (`job.skipped`); the latest is always
/// among them.
pub(super) const MAX_MISSED: usize = 1000;

/// A fire time the engine gets to at most this late runs as usual. Later, it
/// was missed (the wall clock stepped forward, the host was suspended, or
/// the engine was blocked), and `catch_up` decides, as after a restart.
pub(super) const LATE_GRACE: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// Fire times in `(after, now]`, oldest first: at most `MAX_MISSED`, of
/// which the last is the latest (those in between are left out).
pub(super) fn due_after(
    s: &super::when::Schedule,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let mut due: Vec<DateTime<Utc>> = s
        .next_n(after, MAX_MISSED)
        .into_iter()
        .take_while(|t| *t <= now)
        .collect();
    if due.len() == MAX_MISSED {
        if let Some(last) = s.last_in(after, now) {
            if due.last() != Some(&last) {
                due.pop();
                due.push(last);
            }
        }
    }
    due
}

/// Splits due fire times into those that run and those skipped: `catch_up`
/// picks among them, and the latest runs anyway when it is `on_time`.
pub(super) fn settle(
    catch_up: CatchUp,
    due: Vec<DateTime<Utc>>,
    on_time: bool,
) -> (Vec<DateTime<Utc>>, Vec<DateTime<Utc>>) {
    let latest = due.last().copied();
    let mut run: Vec<DateTime<Utc>> = match catch_up {
        CatchUp::None => Vec::new(),
        CatchUp::Latest => latest.into_iter().collect(),
        CatchUp::All => due.clone(),
    };
    if let Some(t) = latest.filter(|t| on_time && !run.contains(t)) {
        run.push(t);
    }
    let skip = due.into_iter().filter(|t| !run.contains(t)).collect();
    (run, skip)
}

/// What to do when a schedule's fire time `at` has come, at `now`.
#[derive(Debug, PartialEq)]
pub(super) struct DuePlan {
    /// Fire times to run now, oldest first.
    pub run: Vec<DateTime<Utc>>,
    /// Missed fire times that do not run (`job.skipped`).
    pub skip: Vec<DateTime<Utc>>,
    /// The fire time to wait for next: the first after `now`, never a missed one.
    pub next: Option<DateTime<Utc>>,
}

/// Pure: the usual case is `at` alone, a little late, which runs. When more
/// fire times are due, or the latest is more than `LATE_GRACE` late, they
/// were missed and `catch_up` decides, as after a restart; either way the
/// next fire time is counted from `now`, so missed ones never fire one after
/// the other.
pub(super) fn plan_due(
    s: &super::when::Schedule,
    catch_up: CatchUp,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DuePlan {
    let mut due = Vec::new();
    if s.next_n(at, 1).first().is_some_and(|t| *t <= now) {
        due = due_after(s, at - chrono::TimeDelta::milliseconds(1), now);
    }
    if due.is_empty() {
        due.push(at);
    }
    let on_time = due.last().is_some_and(|t| now - *t <= LATE_GRACE);
    let (run, skip) = settle(catch_up, due, on_time);
    DuePlan {
        run,
        skip,
        next: s.next_n(now, 1).first().copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::when::{Schedule, Trigger};
    use std::time::Duration;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn every(secs: u64) -> Schedule {
        Schedule {
            trigger: Trigger::Every(Duration::from_secs(secs)),
            tz: crate::schedule::zone::Tz::utc(),
            calendar: None,
        }
    }

    /// What the engine's timer loop does with one schedule until its next
    /// fire time is after `now`: every time run and skipped, the next fire
    /// time, and how many rounds it took.
    fn drive(
        s: &Schedule,
        catch_up: CatchUp,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> (DuePlan, usize) {
        let mut all = DuePlan {
            run: Vec::new(),
            skip: Vec::new(),
            next: Some(at),
        };
        let mut rounds = 0;
        while let Some(at) = all.next.filter(|t| *t <= now) {
            rounds += 1;
            assert!(rounds <= 10_000, "the loop does not end");
            let plan = plan_due(s, catch_up, at, now);
            all.run.extend(plan.run);
            all.skip.extend(plan.skip);
            all.next = plan.next;
        }
        (all, rounds)
    }

    /// Regression: the next fire time was counted from the missed one, so
    /// after the clock stepped a day forward an `every = "1m"` job fired
    /// 1,441 times back to back, whatever `catch_up` said.
    #[test]
    fn a_clock_step_does_not_fire_every_missed_time() {
        let s = every(60);
        let at = utc("2026-11-23T00:00:00Z");
        // The engine wakes a day and 30 s of wall clock later, as after a
        // suspend or an NTP step.
        let now = at + chrono::TimeDelta::days(1) + chrono::TimeDelta::seconds(30);
        let latest = utc("2026-11-24T00:00:00Z");
        for catch_up in [CatchUp::None, CatchUp::Latest] {
            let (all, rounds) = drive(&s, catch_up, at, now);
            assert_eq!(rounds, 1, "{catch_up:?}");
            // The latest time is only 30 s late: it runs as usual, once.
            assert_eq!(all.run, vec![latest], "{catch_up:?}");
            assert_eq!(all.next, Some(utc("2026-11-24T00:01:00Z")), "{catch_up:?}");
            assert_eq!(all.skip.len(), MAX_MISSED - 1, "{catch_up:?}");
            assert_eq!(all.skip[0], at);
        }
        // "all" runs each, up to MAX_MISSED, oldest first, the latest last.
        let (all, rounds) = drive(&s, CatchUp::All, at, now);
        assert_eq!((all.run.len(), all.skip.len(), rounds), (MAX_MISSED, 0, 1));
        assert_eq!((all.run[0], all.run[MAX_MISSED - 1]), (at, latest));
    }

    #[test]
    fn missed_times_follow_catch_up_as_after_a_restart() {
        let s = every(3600);
        let at = utc("2026-11-23T00:00:00Z");
        // Five hours and a half later: 00:00 to 05:00 were all missed
        // (05:00 is 30 min late).
        let now = utc("2026-11-23T05:30:00Z");
        let hours = |hs: &[u32]| -> Vec<DateTime<Utc>> {
            hs.iter()
                .map(|h| at + chrono::TimeDelta::hours(i64::from(*h)))
                .collect()
        };
        let next = Some(utc("2026-11-23T06:00:00Z"));
        assert_eq!(
            plan_due(&s, CatchUp::None, at, now),
            DuePlan {
                run: vec![],
                skip: hours(&[0, 1, 2, 3, 4, 5]),
                next
            }
        );
        assert_eq!(
            plan_due(&s, CatchUp::Latest, at, now),
            DuePlan {
                run: hours(&[5]),
                skip: hours(&[0, 1, 2, 3, 4]),
                next
            }
        );
        assert_eq!(
            plan_due(&s, CatchUp::All, at, now),
            DuePlan {
                run: hours(&[0, 1, 2, 3, 4, 5]),
                skip: vec![],
                next
            }
        );
        // One time due, but 59 minutes late (a suspend over it): missed too.
        let late = plan_due(&s, CatchUp::None, at, at + chrono::TimeDelta::minutes(59));
        assert_eq!((late.run, late.skip.len()), (vec![], 1));
    }

    #[test]
    fn a_time_a_little_late_runs_as_usual() {
        let s = every(3600);
        let at = utc("2026-11-23T00:00:00Z");
        for catch_up in [CatchUp::None, CatchUp::Latest, CatchUp::All] {
            let plan = plan_due(&s, catch_up, at, at + chrono::TimeDelta::milliseconds(200));
            assert_eq!(
                plan,
                DuePlan {
                    run: vec![at],
                    skip: vec![],
                    next: Some(utc("2026-11-23T01:00:00Z"))
                },
                "{catch_up:?}"
            );
        }
        // Every second, the engine 1.5 s late: the time just past runs, the
        // one before it was missed.
        let s = every(1);
        let plan = plan_due(
            &s,
            CatchUp::None,
            at,
            at + chrono::TimeDelta::milliseconds(1500),
        );
        assert_eq!(plan.run, vec![at + chrono::TimeDelta::seconds(1)]);
        assert_eq!(plan.skip, vec![at]);
        assert_eq!(plan.next, Some(at + chrono::TimeDelta::seconds(2)));
    }
}
