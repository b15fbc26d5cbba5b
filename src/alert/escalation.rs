//! Escalation policies as a pure state machine: ordered steps, each "after W
//! (from the start of the round), notify these channels", and the whole
//! round repeated `repeat` more times, or until acknowledged.
//!
//! Round `r`'s step `i` is due at `start + r * (last_after + repeat_after) +
//! steps[i].after`. No I/O, no clock: the caller passes `now`
//! (`tokio::time::Instant`), so tests run with paused time.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Delay from the start of the round.
    pub after: Duration,
    pub channels: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Run the steps this many more times after the first round.
    Times(u32),
    /// Keep repeating until the alert is acknowledged or resolved.
    UntilAcknowledged,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    /// Ordered by `after` (the config compiler sorts and checks them).
    pub steps: Vec<Step>,
    pub repeat: Repeat,
    /// Pause between the last step of a round and the start of the next.
    pub repeat_after: Duration,
}

impl Policy {
    /// One step at once to `channels`; critical alerts repeat every 30
    /// minutes until acknowledged, others are sent once.
    pub fn implicit(name: &str, channels: Vec<String>, until_acked: bool) -> Policy {
        Policy {
            name: name.into(),
            steps: vec![Step {
                after: Duration::ZERO,
                channels,
            }],
            repeat: if until_acked {
                Repeat::UntilAcknowledged
            } else {
                Repeat::Times(0)
            },
            repeat_after: Duration::from_secs(30 * 60),
        }
    }

    fn round_len(&self) -> Duration {
        self.steps.last().map(|s| s.after).unwrap_or_default() + self.repeat_after
    }
}

/// A step that is due: notify `channels`.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub round: u32,
    pub step: usize,
    pub channels: Vec<String>,
}

/// Where one alert's escalation is: the next step to notify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escalation {
    pub started: Instant,
    pub round: u32,
    pub step: usize,
    /// Every round has run.
    pub done: bool,
}

impl Escalation {
    pub fn start(now: Instant) -> Escalation {
        Escalation {
            started: now,
            round: 0,
            step: 0,
            done: false,
        }
    }

    /// When the next step is due, if any is left.
    pub fn due_at(&self, policy: &Policy) -> Option<Instant> {
        if self.done || policy.steps.is_empty() {
            return None;
        }
        let step = policy.steps.get(self.step)?;
        Some(self.started + policy.round_len() * self.round + step.after)
    }

    fn advance(&mut self, policy: &Policy) {
        self.step += 1;
        if self.step >= policy.steps.len() {
            self.step = 0;
            self.round = self.round.saturating_add(1);
            if let Repeat::Times(n) = policy.repeat {
                if self.round > n {
                    self.done = true;
                }
            }
        }
    }

    /// The steps due at `now`, in order; the escalation moves past them.
    /// After a long pause (the agent was down) at most one round's worth is
    /// returned and the rest skipped, so a backlog never becomes a flood.
    pub fn poll(&mut self, policy: &Policy, now: Instant) -> Vec<Due> {
        let mut out = Vec::new();
        while let Some(at) = self.due_at(policy) {
            if at > now {
                break;
            }
            if out.len() >= policy.steps.len() {
                // Skip what is still overdue: jump to the first step not yet due.
                self.advance(policy);
                continue;
            }
            out.push(Due {
                round: self.round,
                step: self.step,
                channels: policy.steps[self.step].channels.clone(),
            });
            self.advance(policy);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn policy(repeat: Repeat) -> Policy {
        Policy {
            name: "p".into(),
            steps: vec![
                Step {
                    after: s(0),
                    channels: vec!["mail".into()],
                },
                Step {
                    after: s(300),
                    channels: vec!["mail".into(), "pager".into()],
                },
            ],
            repeat,
            repeat_after: s(600),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn steps_come_in_order_at_their_time() {
        let p = policy(Repeat::Times(1));
        let t0 = Instant::now();
        let mut e = Escalation::start(t0);
        let first = e.poll(&p, t0);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].channels, vec!["mail"]);
        assert_eq!(e.due_at(&p), Some(t0 + s(300)));
        assert!(e.poll(&p, t0 + s(299)).is_empty());
        let second = e.poll(&p, t0 + s(300));
        assert_eq!(second[0].channels, vec!["mail", "pager"]);
        // Round 2 starts 300 + 600 s after the first.
        assert_eq!(e.due_at(&p), Some(t0 + s(900)));
        assert_eq!(e.poll(&p, t0 + s(900))[0].round, 1);
        assert_eq!(e.poll(&p, t0 + s(1200))[0].step, 1);
        assert_eq!(e.due_at(&p), None, "repeat = 1: two rounds, then done");
        assert!(e.poll(&p, t0 + s(100_000)).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn until_acknowledged_never_ends_and_a_backlog_is_bounded() {
        let p = policy(Repeat::UntilAcknowledged);
        let t0 = Instant::now();
        let mut e = Escalation::start(t0);
        assert_eq!(e.poll(&p, t0).len(), 1);
        // The agent was away for ten rounds: one round's worth, not twenty.
        let late = e.poll(&p, t0 + s(9000));
        assert_eq!(late.len(), 2);
        assert!(e.due_at(&p).unwrap() > t0 + s(9000));
        assert!(e.due_at(&p).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn once_means_one_round() {
        let p = Policy::implicit("x", vec!["a".into()], false);
        let t0 = Instant::now();
        let mut e = Escalation::start(t0);
        assert_eq!(e.poll(&p, t0).len(), 1);
        assert_eq!(e.due_at(&p), None);
        let p = Policy::implicit("x", vec!["a".into()], true);
        let mut e = Escalation::start(t0);
        assert_eq!(e.poll(&p, t0).len(), 1);
        assert_eq!(e.due_at(&p), Some(t0 + s(1800)));
    }
}
