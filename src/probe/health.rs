//! The status of a check as a pure state machine: results in, flips out.
//! A check starts `unknown`; `rise` consecutive successes make it `up`,
//! `fall` consecutive failures make it `down`. Only flips are reported, so
//! events and alerts are edge-triggered, not one per probe.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Unknown,
    Up,
    Down,
    /// Not probed: the service it watches is stopped on purpose (by a
    /// person, a restart, or a failover group on its standby). Only the
    /// check's view takes it; the state machine itself is reset.
    Paused,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Up => "up",
            Status::Down => "down",
            Status::Paused => "paused",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Health {
    fall: u32,
    rise: u32,
    status: Status,
    ok_streak: u32,
    fail_streak: u32,
}

impl Health {
    pub fn new(fall: u32, rise: u32) -> Self {
        Health {
            fall: fall.max(1),
            rise: rise.max(1),
            status: Status::Unknown,
            ok_streak: 0,
            fail_streak: 0,
        }
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// Records one result; returns the new status when it flipped.
    pub fn record(&mut self, ok: bool) -> Option<Status> {
        if ok {
            self.ok_streak += 1;
            self.fail_streak = 0;
            if self.status != Status::Up && self.ok_streak >= self.rise {
                self.status = Status::Up;
                return Some(Status::Up);
            }
        } else {
            self.fail_streak += 1;
            self.ok_streak = 0;
            if self.status != Status::Down && self.fail_streak >= self.fall {
                self.status = Status::Down;
                return Some(Status::Down);
            }
        }
        None
    }

    /// Forces a status (log and heartbeat checks decide directly).
    pub fn set(&mut self, status: Status) -> Option<Status> {
        self.ok_streak = 0;
        self.fail_streak = 0;
        if self.status == status {
            None
        } else {
            self.status = status;
            Some(status)
        }
    }

    /// Back to `unknown` (the watched service restarted).
    pub fn reset(&mut self) {
        *self = Health::new(self.fall, self.rise);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_only_after_fall_and_rise_streaks() {
        let mut h = Health::new(3, 2);
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some(Status::Up));
        assert_eq!(h.record(true), None, "no event while it stays up");
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(true), None, "a success breaks the failure streak");
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), Some(Status::Down));
        assert_eq!(h.record(false), None, "no event while it stays down");
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some(Status::Up));
    }

    #[test]
    fn starts_unknown_and_can_go_straight_down() {
        let mut h = Health::new(1, 5);
        assert_eq!(h.status(), Status::Unknown);
        assert_eq!(h.record(false), Some(Status::Down));
        h.reset();
        assert_eq!(h.status(), Status::Unknown);
        assert_eq!(h.set(Status::Down), Some(Status::Down));
        assert_eq!(h.set(Status::Down), None);
    }
}
