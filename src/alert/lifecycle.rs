//! One alert's lifecycle as a pure state machine:
//! `firing → acknowledged → resolved`, with the escalation inside.
//!
//! | state        | input      | next         | actions                                   |
//! |--------------|------------|--------------|-------------------------------------------|
//! | firing       | occurred   | firing       | count it                                  |
//! | firing       | tick       | firing       | notify the steps that are due             |
//! | firing       | ack        | acknowledged | stop escalating; expire at now+ack_timeout; tell the channels already notified |
//! | firing       | resolve    | resolved     | tell the channels already notified        |
//! | acknowledged | occurred   | acknowledged | count it                                  |
//! | acknowledged | ack        | acknowledged | extend the acknowledgement                |
//! | acknowledged | tick ≥ exp | firing       | escalate again from step 1                |
//! | acknowledged | resolve    | resolved     | tell the channels already notified        |
//! | resolved     | any        | resolved     | rejected (a new occurrence is a new alert) |
//!
//! Time is `tokio::time::Instant`, passed in.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::escalation::{Due, Escalation, Policy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Firing,
    Acknowledged,
    Resolved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Firing => "firing",
            State::Acknowledged => "acknowledged",
            State::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> State {
        match s {
            "firing" => State::Firing,
            "acknowledged" => State::Acknowledged,
            _ => State::Resolved,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The rule matched again.
    Occurred,
    /// A person acknowledged it; `None` never expires.
    Ack { timeout: Option<Duration> },
    /// The condition cleared, or a person resolved it.
    Resolve,
    /// Time passed.
    Tick,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send the alert to these channels (a step of the escalation).
    Notify(Due),
    /// Tell the channels that were told about the alert that someone took it.
    NotifyAcknowledged { channels: Vec<String> },
    /// Send the resolution to the channels that were told about the alert.
    NotifyResolved { channels: Vec<String> },
    /// The state changed (to be stored and published).
    Changed(State),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("the alert is already resolved")]
    Resolved,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lifecycle {
    pub state: State,
    pub occurrences: u64,
    /// Running while firing; stopped by an acknowledgement.
    pub escalation: Option<Escalation>,
    /// When an acknowledgement expires.
    pub ack_until: Option<Instant>,
    /// Channels that got a notification about this alert, in order.
    pub notified: Vec<String>,
}

impl Lifecycle {
    /// A new alert: firing, and the first steps due at once.
    pub fn fire(policy: &Policy, now: Instant) -> (Lifecycle, Vec<Action>) {
        let mut l = Lifecycle {
            state: State::Firing,
            occurrences: 1,
            escalation: Some(Escalation::start(now)),
            ack_until: None,
            notified: Vec::new(),
        };
        let actions = l.escalate(policy, now);
        (l, actions)
    }

    fn escalate(&mut self, policy: &Policy, now: Instant) -> Vec<Action> {
        let Some(e) = self.escalation.as_mut() else {
            return Vec::new();
        };
        let due = e.poll(policy, now);
        let mut out = Vec::new();
        for d in due {
            for c in &d.channels {
                if !self.notified.contains(c) {
                    self.notified.push(c.clone());
                }
            }
            out.push(Action::Notify(d));
        }
        out
    }

    pub fn handle(
        &mut self,
        input: Input,
        policy: &Policy,
        now: Instant,
    ) -> Result<Vec<Action>, Rejected> {
        if self.state == State::Resolved {
            return Err(Rejected::Resolved);
        }
        let mut out = Vec::new();
        match input {
            Input::Occurred => self.occurrences += 1,
            Input::Ack { timeout } => {
                self.escalation = None;
                self.ack_until = timeout.map(|t| now + t);
                if self.state != State::Acknowledged {
                    self.state = State::Acknowledged;
                    out.push(Action::Changed(State::Acknowledged));
                    if !self.notified.is_empty() {
                        out.push(Action::NotifyAcknowledged {
                            channels: self.notified.clone(),
                        });
                    }
                }
            }
            Input::Resolve => {
                self.state = State::Resolved;
                self.escalation = None;
                self.ack_until = None;
                out.push(Action::Changed(State::Resolved));
                if !self.notified.is_empty() {
                    out.push(Action::NotifyResolved {
                        channels: self.notified.clone(),
                    });
                }
            }
            Input::Tick => {
                if self.state == State::Acknowledged && self.ack_until.is_some_and(|t| now >= t) {
                    self.state = State::Firing;
                    self.ack_until = None;
                    self.escalation = Some(Escalation::start(now));
                    out.push(Action::Changed(State::Firing));
                }
                if self.state == State::Firing {
                    out.extend(self.escalate(policy, now));
                }
            }
        }
        Ok(out)
    }

    /// When the alert next needs a `Tick`.
    pub fn next_wake(&self, policy: &Policy) -> Option<Instant> {
        match self.state {
            State::Firing => self.escalation.as_ref().and_then(|e| e.due_at(policy)),
            State::Acknowledged => self.ack_until,
            State::Resolved => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::escalation::{Repeat, Step};
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn policy() -> Policy {
        Policy {
            name: "p".into(),
            steps: vec![
                Step {
                    after: s(0),
                    channels: vec!["mail".into()],
                },
                Step {
                    after: s(60),
                    channels: vec!["pager".into()],
                },
            ],
            repeat: Repeat::UntilAcknowledged,
            repeat_after: s(600),
        }
    }

    fn channels(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Notify(d) => Some(d.channels.join("+")),
                _ => None,
            })
            .collect()
    }

    /// Drives the machine like the shell does: sleep until the next wake, tick.
    async fn run_until(l: &mut Lifecycle, p: &Policy, end: Instant) -> Vec<String> {
        let mut sent = Vec::new();
        while let Some(w) = l.next_wake(p) {
            if w > end {
                break;
            }
            tokio::time::sleep_until(w).await;
            sent.extend(channels(&l.handle(Input::Tick, p, Instant::now()).unwrap()));
        }
        tokio::time::sleep_until(end).await;
        sent
    }

    #[tokio::test(start_paused = true)]
    async fn step_one_at_once_step_two_after_w_unless_acknowledged() {
        let p = policy();
        let t0 = Instant::now();
        let (mut l, first) = Lifecycle::fire(&p, t0);
        assert_eq!(channels(&first), vec!["mail"]);
        assert_eq!(
            run_until(&mut l, &p, t0 + s(59)).await,
            Vec::<String>::new()
        );
        assert_eq!(run_until(&mut l, &p, t0 + s(61)).await, vec!["pager"]);

        // Acknowledged before step two: nothing more.
        let (mut l, _) = Lifecycle::fire(&p, Instant::now());
        let acts = l
            .handle(Input::Ack { timeout: None }, &p, Instant::now())
            .unwrap();
        assert_eq!(
            acts,
            vec![
                Action::Changed(State::Acknowledged),
                Action::NotifyAcknowledged {
                    channels: vec!["mail".into()]
                }
            ]
        );
        let end = Instant::now() + s(100_000);
        assert!(run_until(&mut l, &p, end).await.is_empty());
        assert_eq!(l.next_wake(&p), None);
    }

    #[tokio::test(start_paused = true)]
    async fn ack_expiry_restarts_the_escalation() {
        let p = policy();
        let t0 = Instant::now();
        let (mut l, _) = Lifecycle::fire(&p, t0);
        l.handle(
            Input::Ack {
                timeout: Some(s(3600)),
            },
            &p,
            t0 + s(10),
        )
        .unwrap();
        assert_eq!(l.next_wake(&p), Some(t0 + s(3610)));
        assert!(run_until(&mut l, &p, t0 + s(3609)).await.is_empty());
        assert_eq!(l.state, State::Acknowledged);
        let sent = run_until(&mut l, &p, t0 + s(3610 + 61)).await;
        assert_eq!(sent, vec!["mail", "pager"]);
        assert_eq!(l.state, State::Firing);
    }

    #[tokio::test(start_paused = true)]
    async fn occurrences_count_and_resolution_tells_who_was_notified() {
        let p = policy();
        let t0 = Instant::now();
        let (mut l, _) = Lifecycle::fire(&p, t0);
        for _ in 0..4 {
            assert!(l.handle(Input::Occurred, &p, t0).unwrap().is_empty());
        }
        assert_eq!(l.occurrences, 5);
        run_until(&mut l, &p, t0 + s(60)).await;
        let acts = l.handle(Input::Resolve, &p, t0 + s(70)).unwrap();
        assert_eq!(
            acts,
            vec![
                Action::Changed(State::Resolved),
                Action::NotifyResolved {
                    channels: vec!["mail".into(), "pager".into()]
                }
            ]
        );
        for input in [
            Input::Occurred,
            Input::Tick,
            Input::Resolve,
            Input::Ack { timeout: None },
        ] {
            assert_eq!(l.handle(input, &p, t0 + s(80)), Err(Rejected::Resolved));
        }
        assert_eq!(l.next_wake(&p), None);
    }

    #[tokio::test(start_paused = true)]
    async fn resolving_an_acknowledged_alert_and_re_acking() {
        let p = policy();
        let t0 = Instant::now();
        let (mut l, _) = Lifecycle::fire(&p, t0);
        l.handle(
            Input::Ack {
                timeout: Some(s(10)),
            },
            &p,
            t0,
        )
        .unwrap();
        // A second ack extends, without a state change.
        let acts = l
            .handle(
                Input::Ack {
                    timeout: Some(s(100)),
                },
                &p,
                t0 + s(5),
            )
            .unwrap();
        assert!(acts.is_empty());
        assert_eq!(l.next_wake(&p), Some(t0 + s(105)));
        assert!(l.handle(Input::Tick, &p, t0 + s(50)).unwrap().is_empty());
        assert_eq!(l.state, State::Acknowledged);
        let acts = l.handle(Input::Resolve, &p, t0 + s(60)).unwrap();
        assert_eq!(acts[0], Action::Changed(State::Resolved));
    }

    #[tokio::test(start_paused = true)]
    async fn repeats_until_acknowledged() {
        let p = policy();
        let t0 = Instant::now();
        let (mut l, _) = Lifecycle::fire(&p, t0);
        // Rounds every 660 s: mail at 0, pager at 60, mail at 660, pager at 720...
        let sent = run_until(&mut l, &p, t0 + s(660 * 3)).await;
        assert_eq!(
            sent,
            vec!["pager", "mail", "pager", "mail", "pager", "mail"]
        );
    }
}
