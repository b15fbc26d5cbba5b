//! The role of one group on one node: a pure state machine.
//!
//! ```text
//!            leader gone, my turn          pre-promote ok          key created
//! standby ─────────────────────► verifying ─────────────► campaigning ─────────► active
//!    ▲  ◄──── checks fail (step aside) ┘           key exists / error ┘            │
//!    │                                                                              │ renew failed for
//!    └──────────────────────────── demoting ◄───────────────────────────────────────┘ fence_after, lease
//!                                 (units stopped, on_demote run)                      lost, switchover
//! ```
//!
//! Inputs are what the shell (`node.rs`) observed or what its requests
//! returned, each with the `Instant` it was sent at; outputs are actions for
//! the shell. Time comes in as `now` (tokio's clock), so tests run on paused
//! time.
//!
//! **Self-fencing.** The store measures a lease's `ttl` from when it
//! processed the last keep-alive, which is after we *sent* it. So the lease
//! lives at least until `last_ok + ttl`, where `last_ok` is the send time of
//! the last keep-alive (or grant) that succeeded. The active demotes itself at
//! `last_ok + fence_after` (`fence_after` = half the lease): the other half is
//! the budget for stopping the units (they are stopped within it, then
//! killed), so the old active is down before any other node can take the key.
//!
//! **Fast takeover** (`fast_takeover`, off by default). etcd 3.4 deletes an
//! expired lease's keys only at its next expiry sweep (every 500 ms), so the
//! leader key of a dead node lingers up to half a second past its lease.
//! With fast takeover the active, after each keep-alive, rewrites a beat
//! key, guarded by its leader key still being its own; a keep-alive counts
//! for `last_ok` only when the beat after it was written. A standby notes
//! when it first saw each beat revision (`now` when the poll's answer is
//! handled, which is after the beat was written, which is after the
//! keep-alive was sent). If the beat has not changed `ttl` later, the
//! active's lease has expired too (it was renewed at the latest when that
//! beat was written), so the standby deletes the leader key itself, guarded
//! by the beat still being that revision: a newer beat, which it may not
//! have seen yet, makes the delete fail. The old active, whose beat then
//! fails its guard, counted nothing after that beat, so it fenced itself
//! before. Cost: one more write per keep-alive (four per `lease_ttl`).
//!
//! **Priority.** When the leader key is gone, the live qualified standbys are
//! ranked in the group's `nodes` order; rank `k` campaigns `k × rank_step`
//! after it first saw the group leaderless, and only if it still is. The
//! store's create-if-absent makes the winner unique either way; the ranks
//! only make it the best one. A handoff (switchover) names the one node that
//! may campaign.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standby,
    Verifying,
    Campaigning,
    Active,
    Demoting,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standby => "standby",
            Role::Verifying => "verifying",
            Role::Campaigning => "campaigning",
            Role::Active => "active",
            Role::Demoting => "demoting",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Params {
    pub node: String,
    /// The group's nodes in priority order.
    pub nodes: Vec<String>,
    pub renew_every: Duration,
    pub fence_after: Duration,
    pub rank_step: Duration,
    /// After the store comes back, standbys wait this long before campaigning
    /// (an active kept through the outage re-takes its key first).
    pub holdoff: Duration,
    /// How long no standby may qualify before it is reported.
    pub no_standby_grace: Duration,
    pub preempt: bool,
    /// `on_store_loss = "keep-if-all-peers-agree"`.
    pub keep_if_peers_agree: bool,
    /// Fast takeover: a standby deletes the leader key this long after the
    /// active's beat stopped changing (the lease TTL); `None`: off.
    pub takeover_after: Option<Duration>,
}

/// One poll of the store.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The active node and its fencing token.
    pub leader: Option<(String, i64)>,
    /// A switchover in progress: the only node that may campaign.
    pub handoff: Option<String>,
    /// A switchover someone asked for: its target.
    pub request: Option<String>,
    /// Live nodes whose record says they are standbys that qualify.
    pub qualified: Vec<String>,
    /// The modification revision of the active's beat key, if any.
    pub beat: Option<i64>,
}

#[derive(Debug, Clone)]
pub enum Input {
    Observed {
        sent_at: Instant,
        seen: Observed,
    },
    StoreError(String),
    Verified(Result<(), String>),
    Campaigned {
        sent_at: Instant,
        result: Result<Option<i64>, String>,
    },
    Renewed {
        sent_at: Instant,
        alive: bool,
    },
    RenewFailed(String),
    PeersAgree(bool),
    /// The answer to `Takeover`: whether the leader key was deleted (false
    /// also when the store failed).
    TookOver(bool),
    /// The units are stopped and `on_demote` has run.
    Stopped,
    Tick,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run the pre-promote checks, answer `Verified`.
    Verify,
    /// Grant a lease and create the leader key on it; answer `Campaigned`.
    Campaign,
    /// Start the group's units with this fencing token; run `on_promote`.
    Activate {
        token: i64,
    },
    /// Kept through a store outage, re-took the key: a new token, units keep running.
    Retoken {
        token: i64,
    },
    /// Send a keep-alive (and, with fast takeover, then write the beat
    /// guarded by our leader key); answer `Renewed` or `RenewFailed`.
    Renew,
    /// Delete the leader key of `node` (created at `token`) if its beat is
    /// still at revision `beat`; answer `TookOver`.
    Takeover {
        node: String,
        token: i64,
        beat: i64,
    },
    /// Stop the units (within the fencing budget when `fence`), run
    /// `on_demote`, write the handoff if any, revoke the lease; answer `Stopped`.
    Demote {
        reason: String,
        handoff: Option<String>,
        fence: bool,
    },
    /// Ask every peer whether it also lost the store; answer `PeersAgree`.
    AskPeers,
    /// Kept active through a store outage, because every peer lost it too.
    KeptByPeers,
    /// Write a switchover request to this node (preemption).
    RequestSwitchover {
        to: String,
    },
    /// Drop a switchover request that cannot be honoured.
    RejectRequest {
        to: String,
        reason: String,
    },
    /// This node's verification failed: it steps aside (and `on_fault` runs).
    StepAside {
        reason: String,
    },
    /// No standby qualifies (edge); `StandbyOk` when one does again.
    NoStandby {
        leaderless: bool,
    },
    StandbyOk,
}

#[derive(Debug)]
pub struct Group {
    p: Params,
    role: Role,
    token: Option<i64>,
    /// Send time of the last keep-alive (or grant) that succeeded.
    last_ok: Option<Instant>,
    next_renew: Option<Instant>,
    renew_inflight: bool,
    active_since: Option<Instant>,
    leaderless_since: Option<Instant>,
    store_down: bool,
    holdoff_until: Option<Instant>,
    /// Kept through a store outage until then (peers agreed).
    kept_until: Option<Instant>,
    asked_peers: bool,
    no_standby_since: Option<Instant>,
    no_standby_reported: bool,
    /// `last_ok` when the last demotion began (the lease lives until at least + ttl).
    demoted_last_ok: Option<Instant>,
    /// Standby, fast takeover: the active's beat and when it was first seen.
    beat_seen: Option<Beat>,
    takeover_inflight: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Beat {
    node: String,
    token: i64,
    rev: i64,
    first_seen: Instant,
}

impl Group {
    pub fn new(p: Params) -> Group {
        Group {
            p,
            role: Role::Standby,
            token: None,
            last_ok: None,
            next_renew: None,
            renew_inflight: false,
            active_since: None,
            leaderless_since: None,
            store_down: false,
            holdoff_until: None,
            kept_until: None,
            asked_peers: false,
            no_standby_since: None,
            no_standby_reported: false,
            demoted_last_ok: None,
            beat_seen: None,
            takeover_inflight: false,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn token(&self) -> Option<i64> {
        self.token
    }

    /// When the lease was last renewed (send time of the keep-alive), while active.
    pub fn last_ok(&self) -> Option<Instant> {
        self.last_ok
    }

    /// When the lease was last renewed before the current demotion began.
    pub fn demoted_last_ok(&self) -> Option<Instant> {
        self.demoted_last_ok
    }

    /// When the shell must call `handle(Tick)` at the latest.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.role == Role::Standby {
            return self.takeover_at();
        }
        if self.role != Role::Active {
            return None;
        }
        let fence = self.fence_at();
        let ask = self.ask_at();
        [self.next_renew, fence, ask].into_iter().flatten().min()
    }

    /// `keep-if-all-peers-agree`: peers are asked half way to the fencing
    /// deadline, so their answer is in before it.
    fn ask_at(&self) -> Option<Instant> {
        if !self.p.keep_if_peers_agree || self.asked_peers {
            return None;
        }
        self.fence_at().map(|f| f - self.p.fence_after / 2)
    }

    /// Fast takeover: when the active's lease has surely expired.
    fn takeover_at(&self) -> Option<Instant> {
        if self.takeover_inflight {
            return None;
        }
        let after = self.p.takeover_after?;
        self.beat_seen.as_ref().map(|b| b.first_seen + after)
    }

    fn fence_at(&self) -> Option<Instant> {
        let fence = self.last_ok.map(|t| t + self.p.fence_after);
        match (fence, self.kept_until) {
            (Some(f), Some(k)) => Some(f.max(k)),
            (f, _) => f,
        }
    }

    fn rank(&self, node: &str) -> usize {
        self.p
            .nodes
            .iter()
            .position(|n| n == node)
            .unwrap_or(usize::MAX)
    }

    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::StoreError(_) => {
                self.store_down = true;
            }
            Input::Observed { sent_at, seen } => {
                if self.store_down {
                    self.store_down = false;
                    self.holdoff_until = Some(now + self.p.holdoff);
                }
                self.observed(sent_at, seen, now, &mut out);
            }
            Input::Verified(r) => {
                if self.role == Role::Verifying {
                    match r {
                        Ok(()) => {
                            self.role = Role::Campaigning;
                            out.push(Action::Campaign);
                        }
                        Err(reason) => {
                            self.role = Role::Standby;
                            out.push(Action::StepAside { reason });
                        }
                    }
                }
            }
            Input::Campaigned { sent_at, result } => {
                self.campaigned(sent_at, result, now, &mut out)
            }
            Input::Renewed { sent_at, alive } => {
                self.renew_inflight = false;
                if self.role == Role::Active {
                    if alive {
                        self.last_ok = Some(self.last_ok.map_or(sent_at, |t| t.max(sent_at)));
                        self.kept_until = None;
                        self.asked_peers = false;
                    } else if self.kept_until.is_some() {
                        // The store is back, our lease expired meanwhile: re-take the key.
                        out.push(Action::Campaign);
                    } else {
                        self.demote(
                            "its lease is gone (expired or revoked)",
                            None,
                            true,
                            &mut out,
                        );
                    }
                }
            }
            Input::RenewFailed(_) => {
                self.renew_inflight = false;
            }
            Input::PeersAgree(agree) => {
                if self.role == Role::Active && self.asked_peers {
                    if agree {
                        self.kept_until = Some(now + self.p.fence_after);
                        self.asked_peers = false;
                        out.push(Action::KeptByPeers);
                    } else {
                        self.demote(
                            "lost the coordination store and not every peer agrees to keep it",
                            None,
                            true,
                            &mut out,
                        );
                    }
                }
            }
            Input::TookOver(_) => {
                self.takeover_inflight = false;
                // Done, or a newer beat or leader exists, or the store failed:
                // in every case the next poll starts over.
                self.beat_seen = None;
            }
            Input::Stopped => {
                if self.role == Role::Demoting {
                    self.role = Role::Standby;
                    self.token = None;
                    self.leaderless_since = None;
                }
            }
            Input::Tick => {}
        }
        if self.role == Role::Active {
            self.tick_active(now, &mut out);
        }
        if self.role == Role::Standby && self.takeover_at().is_some_and(|t| now >= t) {
            if let Some(b) = &self.beat_seen {
                self.takeover_inflight = true;
                out.push(Action::Takeover {
                    node: b.node.clone(),
                    token: b.token,
                    beat: b.rev,
                });
            }
        }
        out
    }

    fn tick_active(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.ask_at().is_some_and(|t| now >= t) {
            self.asked_peers = true;
            out.push(Action::AskPeers);
        }
        if let Some(f) = self.fence_at() {
            if now >= f {
                let waited = self.p.fence_after.as_millis();
                let why = if self.p.keep_if_peers_agree {
                    format!("could not renew its lease for {waited} ms and not every peer agreed to keep it; self-fencing")
                } else {
                    format!("could not renew its lease for {waited} ms; self-fencing before it can expire")
                };
                self.demote(&why, None, true, out);
                return;
            }
        }
        if !self.renew_inflight && self.next_renew.is_some_and(|t| now >= t) {
            self.renew_inflight = true;
            self.next_renew = Some(now + self.p.renew_every);
            out.push(Action::Renew);
        }
    }

    fn demote(
        &mut self,
        reason: &str,
        handoff: Option<String>,
        fence: bool,
        out: &mut Vec<Action>,
    ) {
        self.role = Role::Demoting;
        self.last_ok = None;
        self.next_renew = None;
        self.kept_until = None;
        self.asked_peers = false;
        self.active_since = None;
        out.push(Action::Demote {
            reason: reason.to_string(),
            handoff,
            fence,
        });
    }

    fn campaigned(
        &mut self,
        sent_at: Instant,
        result: Result<Option<i64>, String>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let kept = self.role == Role::Active && self.kept_until.is_some();
        if self.role != Role::Campaigning && !kept {
            return;
        }
        match result {
            Ok(Some(token)) => {
                self.token = Some(token);
                self.last_ok = Some(sent_at);
                self.next_renew = Some(sent_at + self.p.renew_every);
                self.renew_inflight = false;
                self.active_since = Some(now);
                if kept {
                    self.kept_until = None;
                    out.push(Action::Retoken { token });
                } else {
                    self.role = Role::Active;
                    self.no_standby_since = None;
                    out.push(Action::Activate { token });
                }
            }
            Ok(None) | Err(_) if kept => {
                self.demote(
                    "the store came back and another node holds the group",
                    None,
                    true,
                    out,
                );
            }
            Ok(None) | Err(_) => {
                self.role = Role::Standby;
            }
        }
    }

    fn observed(&mut self, sent_at: Instant, seen: Observed, now: Instant, out: &mut Vec<Action>) {
        let me = self.p.node.clone();
        match self.role {
            Role::Active => {
                // A poll sent before we won says nothing about our key.
                if self.active_since.is_some_and(|t| sent_at < t) {
                    return;
                }
                match &seen.leader {
                    Some((n, _)) if n != &me => {
                        self.demote(
                            &format!("node {n} holds the group's lease"),
                            None,
                            true,
                            out,
                        );
                        return;
                    }
                    None if self.kept_until.is_none() => {
                        self.demote("its leader key is gone", None, true, out);
                        return;
                    }
                    _ => {}
                }
                if let Some(to) = seen.request.clone() {
                    if to == me {
                        out.push(Action::RejectRequest {
                            to,
                            reason: format!("{me} is already active"),
                        });
                    } else if seen.qualified.contains(&to) {
                        self.demote(&format!("switchover to {to}"), Some(to), false, out);
                        return;
                    } else {
                        out.push(Action::RejectRequest {
                            reason: format!("{to} is not a live standby that qualifies"),
                            to,
                        });
                    }
                }
                let others = seen.qualified.iter().any(|n| n != &me);
                self.redundancy(others, false, now, out);
            }
            Role::Standby => match &seen.leader {
                Some((leader, token)) => {
                    self.leaderless_since = None;
                    self.track_beat(leader, *token, seen.beat, now);
                    if self.p.preempt
                        && leader != &me
                        && self.rank(&me) < self.rank(leader)
                        && seen.qualified.contains(&me)
                        && seen.request.is_none()
                        && seen.handoff.is_none()
                    {
                        out.push(Action::RequestSwitchover { to: me });
                    }
                }
                None => {
                    self.beat_seen = None;
                    let since = *self.leaderless_since.get_or_insert(now);
                    if let Some(h) = &seen.handoff {
                        if h == &me {
                            self.role = Role::Verifying;
                            out.push(Action::Verify);
                        }
                        return;
                    }
                    let mut ranked: Vec<String> = self
                        .p
                        .nodes
                        .iter()
                        .filter(|n| seen.qualified.contains(n))
                        .cloned()
                        .collect();
                    ranked.dedup();
                    self.redundancy(!ranked.is_empty(), true, now, out);
                    if self.holdoff_until.is_some_and(|t| now < t) {
                        return;
                    }
                    let Some(pos) = ranked.iter().position(|n| *n == me) else {
                        return;
                    };
                    if now >= since + self.p.rank_step * pos as u32 {
                        self.role = Role::Verifying;
                        out.push(Action::Verify);
                    }
                }
            },
            Role::Verifying | Role::Campaigning | Role::Demoting => {}
        }
    }

    /// Fast takeover: remembers when each beat revision was first seen.
    fn track_beat(&mut self, leader: &str, token: i64, beat: Option<i64>, now: Instant) {
        let (Some(_), Some(rev)) = (self.p.takeover_after, beat) else {
            self.beat_seen = None;
            return;
        };
        if self
            .beat_seen
            .as_ref()
            .is_some_and(|b| b.token == token && b.rev == rev)
        {
            return;
        }
        self.beat_seen = Some(Beat {
            node: leader.to_string(),
            token,
            rev,
            first_seen: now,
        });
    }

    /// Edge-triggered "no standby qualifies", after a grace period: nodes
    /// start at different times, and a node that just started has not
    /// verified itself yet.
    fn redundancy(&mut self, ok: bool, leaderless: bool, now: Instant, out: &mut Vec<Action>) {
        if ok {
            self.no_standby_since = None;
            if self.no_standby_reported {
                self.no_standby_reported = false;
                out.push(Action::StandbyOk);
            }
            return;
        }
        let since = *self.no_standby_since.get_or_insert(now);
        if !self.no_standby_reported && now >= since + self.p.no_standby_grace {
            self.no_standby_reported = true;
            out.push(Action::NoStandby { leaderless });
        }
    }
}

#[cfg(test)]
mod tests;
