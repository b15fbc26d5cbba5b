//! The restart decision for a service, as a pure state machine: exits in,
//! decisions out, time passed in by the caller (`tokio::time::Instant`), so
//! every path is tested with paused time and no processes.
//!
//! Rules (docs/config.md, "Restart"):
//! - `restart = "always"` restarts after any end, `"on-failure"` after a
//!   non-zero exit, a signal or a limit kill, `"never"` never.
//! - The first restart after a stable run (one that lasted `stable_after`) is
//!   immediate; each further consecutive one waits `backoff_min`, doubling up
//!   to `backoff_max`.
//! - Crash-loop guard: if `start_limit` starts already happened within
//!   `start_window`, one more would exceed the limit, so the unit gives up and
//!   stays `gave-up` until someone restarts it by hand.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{RestartConfig, RestartMode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start again after this delay (zero: at once).
    Restart(Duration),
    /// Too many starts in the window: stop trying until a person says so.
    GiveUp { starts: u32, window: Duration },
    /// The policy says not to restart (a clean exit under `on-failure`, or `never`).
    Stay,
}

#[derive(Debug, Clone)]
pub struct Restarter {
    cfg: RestartConfig,
    starts: VecDeque<Instant>,
    consecutive: u32,
}

impl Restarter {
    pub fn new(cfg: RestartConfig) -> Self {
        Restarter {
            cfg,
            starts: VecDeque::new(),
            consecutive: 0,
        }
    }

    /// Records a start (every start counts toward the crash-loop guard).
    pub fn on_start(&mut self, now: Instant) {
        self.starts.push_back(now);
    }

    /// A person asked for a (re)start: forget the history.
    pub fn reset(&mut self) {
        self.starts.clear();
        self.consecutive = 0;
    }

    /// Decides what to do after a run ended on its own (not stopped on request).
    pub fn on_exit(&mut self, success: bool, ran_for: Duration, now: Instant) -> Decision {
        let wanted = match self.cfg.mode {
            RestartMode::Always => true,
            RestartMode::OnFailure => !success,
            RestartMode::Never => false,
        };
        if ran_for >= self.cfg.stable_after {
            self.consecutive = 0;
        }
        if !wanted {
            return Decision::Stay;
        }
        while let Some(first) = self.starts.front() {
            if now.duration_since(*first) >= self.cfg.start_window {
                self.starts.pop_front();
            } else {
                break;
            }
        }
        if self.starts.len() as u32 >= self.cfg.start_limit {
            return Decision::GiveUp {
                starts: self.starts.len() as u32,
                window: self.cfg.start_window,
            };
        }
        let delay = if self.consecutive == 0 {
            Duration::ZERO
        } else {
            let factor = 1u32 << (self.consecutive - 1).min(20);
            self.cfg
                .backoff_min
                .saturating_mul(factor)
                .min(self.cfg.backoff_max)
        };
        self.consecutive += 1;
        Decision::Restart(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{advance, Instant};

    fn cfg(mode: RestartMode) -> RestartConfig {
        RestartConfig {
            mode,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(500),
            stable_after: Duration::from_secs(10),
            start_limit: 5,
            start_window: Duration::from_secs(60),
        }
    }

    /// Starts, runs for `ran`, exits; returns the decision.
    async fn crash(r: &mut Restarter, ran: Duration, success: bool) -> Decision {
        r.on_start(Instant::now());
        advance(ran).await;
        r.on_exit(success, ran, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_then_caps_then_gives_up() {
        let mut r = Restarter::new(RestartConfig {
            start_limit: 10,
            ..cfg(RestartMode::Always)
        });
        let short = Duration::from_millis(10);
        let mut delays = Vec::new();
        for _ in 0..6 {
            match crash(&mut r, short, false).await {
                Decision::Restart(d) => {
                    delays.push(d.as_millis());
                    advance(d).await;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(delays, vec![0, 100, 200, 400, 500, 500]);
    }

    #[tokio::test(start_paused = true)]
    async fn crash_loop_guard_gives_up_after_burst() {
        let mut r = Restarter::new(cfg(RestartMode::Always));
        let short = Duration::from_millis(10);
        for i in 0..4 {
            let d = crash(&mut r, short, false).await;
            assert!(matches!(d, Decision::Restart(_)), "start {i}: {d:?}");
            if let Decision::Restart(d) = d {
                advance(d).await;
            }
        }
        // Fifth start within the window; restarting again would be the sixth.
        let d = crash(&mut r, short, false).await;
        assert_eq!(
            d,
            Decision::GiveUp {
                starts: 5,
                window: Duration::from_secs(60)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn starts_outside_the_window_do_not_count() {
        let mut r = Restarter::new(cfg(RestartMode::Always));
        // Each run lasts 20 s: only 3 fit in a 60 s window, never 5.
        for _ in 0..20 {
            let d = crash(&mut r, Duration::from_secs(20), false).await;
            assert_eq!(d, Decision::Restart(Duration::ZERO));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stable_run_resets_backoff() {
        let mut r = Restarter::new(cfg(RestartMode::Always));
        let short = Duration::from_millis(10);
        assert_eq!(
            crash(&mut r, short, false).await,
            Decision::Restart(Duration::ZERO)
        );
        assert_eq!(
            crash(&mut r, short, false).await,
            Decision::Restart(Duration::from_millis(100))
        );
        assert_eq!(
            crash(&mut r, Duration::from_secs(11), false).await,
            Decision::Restart(Duration::ZERO)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn modes() {
        let short = Duration::from_millis(10);
        let mut on_failure = Restarter::new(cfg(RestartMode::OnFailure));
        assert_eq!(crash(&mut on_failure, short, true).await, Decision::Stay);
        assert_eq!(
            crash(&mut on_failure, short, false).await,
            Decision::Restart(Duration::ZERO)
        );
        let mut never = Restarter::new(cfg(RestartMode::Never));
        assert_eq!(crash(&mut never, short, false).await, Decision::Stay);
        let mut always = Restarter::new(cfg(RestartMode::Always));
        assert_eq!(
            crash(&mut always, short, true).await,
            Decision::Restart(Duration::ZERO)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn manual_reset_clears_the_guard() {
        let mut r = Restarter::new(cfg(RestartMode::Always));
        let short = Duration::from_millis(10);
        let mut last = Decision::Stay;
        for _ in 0..5 {
            last = crash(&mut r, short, false).await;
            if let Decision::Restart(d) = last {
                advance(d).await;
            }
        }
        assert!(matches!(last, Decision::GiveUp { .. }));
        r.reset();
        assert_eq!(
            crash(&mut r, short, false).await,
            Decision::Restart(Duration::ZERO)
        );
    }
}
