//! The async shell of one group on this node: feeds the pure `group::Group`
//! with polls of the store and the answers of its requests, and carries out
//! its actions (verify, campaign, renew, start and stop the units, hooks).
//!
//! Every request runs in its own task and answers through a channel, so a
//! store that hangs never delays the self-fencing deadline: the loop wakes at
//! `Group::next_deadline()` whatever is in flight.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::group::{Action, Group, Input, Observed, Params, Role};
use super::node::Inner;
use super::work::{
    beat, campaign, keep_while_stopping, peers_agree, units_healthy, verify, verify_settled,
    write_state,
};
use super::{Guard, Handoff, Op};
use crate::config::cluster::{GroupConfig, OnStoreLoss, StandbyMode};
use crate::event::EventKind;
use crate::supervise::{Command, Gate};
use crate::util::now_ms;

enum Msg {
    M(Input),
    Campaigned {
        sent_at: Instant,
        lease: Option<i64>,
        result: Result<Option<i64>, String>,
    },
    /// A background (not pre-campaign) verification.
    Qualified(Result<(), String>),
    Polled {
        sent_at: Instant,
        result: Result<Observed, String>,
    },
    /// The answer of a fast takeover of `from`'s key.
    TookOver {
        from: String,
        done: bool,
    },
}

struct Shell {
    i: Arc<Inner>,
    g: GroupConfig,
    m: Group,
    tx: mpsc::UnboundedSender<Msg>,
    lease: Option<i64>,
    token: i64,
    qualified: Option<Result<(), String>>,
    store_lost: bool,
    /// Fast takeover: the node whose leader key this node deleted last, and when.
    took_over_from: Option<(String, Instant)>,
}

pub async fn run(i: Arc<Inner>, g: GroupConfig, cancel: CancellationToken) {
    let ttl = i.cfg.lease_ttl;
    let params = Params {
        node: i.node.clone(),
        nodes: g.nodes.clone(),
        renew_every: ttl / 4,
        fence_after: ttl / 2,
        rank_step: (ttl / 4).max(i.cfg.poll_interval * 3),
        holdoff: ttl,
        no_standby_grace: (g.verify_every * 3).max(ttl * 2),
        preempt: g.preempt,
        keep_if_peers_agree: i.cfg.on_store_loss == OnStoreLoss::KeepIfAllPeersAgree,
        takeover_after: i.cfg.fast_takeover.then_some(ttl),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut s = Shell {
        i: i.clone(),
        g: g.clone(),
        m: Group::new(params),
        tx,
        lease: None,
        token: 0,
        qualified: None,
        store_lost: false,
        took_over_from: None,
    };
    let mut poll = tokio::time::interval(i.cfg.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut polling = false;
    let mut verifying = false;
    let mut next_verify = Instant::now();
    loop {
        let deadline = s.m.next_deadline();
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = poll.tick() => {
                if !polling {
                    polling = true;
                    s.spawn_poll();
                }
                if !verifying && s.m.role() == Role::Standby && Instant::now() >= next_verify {
                    verifying = true;
                    next_verify = Instant::now() + g.verify_every;
                    let (i, g, tx) = (s.i.clone(), s.g.clone(), s.tx.clone());
                    let first = s.qualified.is_none();
                    tokio::spawn(async move {
                        let r = if first { verify_settled(&i, &g).await } else { verify(&i, &g).await };
                        let _ = tx.send(Msg::Qualified(r));
                    });
                }
            }
            _ = sleep_until(deadline) => s.feed(Input::Tick).await,
            msg = rx.recv() => match msg {
                None => break,
                Some(Msg::M(input)) => s.feed(input).await,
                Some(Msg::Polled { sent_at, result }) => {
                    polling = false;
                    match result {
                        Ok(seen) => {
                            if s.store_lost {
                                s.store_lost = false;
                                s.i.bus.emit(EventKind::GroupStoreBack { group: g.name.clone(), node: s.i.node.clone() });
                            }
                            s.feed(Input::Observed { sent_at, seen }).await
                        }
                        Err(e) => {
                            if !s.store_lost {
                                s.store_lost = true;
                                tracing::warn!(group = %g.name, error = %e, "Cannot reach the coordination store.");
                                s.i.bus.emit(EventKind::GroupStoreLost { group: g.name.clone(), node: s.i.node.clone(), error: e.clone() });
                            }
                            s.feed(Input::StoreError(e)).await
                        }
                    }
                }
                Some(Msg::TookOver { from, done }) => {
                    if done {
                        s.took_over_from = Some((from, Instant::now()));
                        // The group is leaderless now: no need to wait for the next tick.
                        if !polling {
                            polling = true;
                            s.spawn_poll();
                        }
                    }
                    s.feed(Input::TookOver(done)).await
                }
                Some(Msg::Qualified(r)) => {
                    verifying = false;
                    s.set_qualified(r);
                }
                Some(Msg::Campaigned { sent_at, lease, result }) => {
                    if let Some(l) = lease {
                        if result.as_ref().is_ok_and(|r| r.is_some()) {
                            s.lease = Some(l);
                        }
                    }
                    s.feed(Input::Campaigned { sent_at, result }).await
                }
            },
        }
    }
    s.shutdown().await;
}

/// A keep-alive and, with fast takeover, then the beat, guarded by our
/// leader key: `Ok(false)` when the lease or the key is no longer ours.
async fn renew(i: &Inner, group: &str, lease: i64, token: i64) -> Result<bool, super::CoordError> {
    if i.coord.keep_alive(lease).await?.is_none() {
        return Ok(false);
    }
    if !i.cfg.fast_takeover {
        return Ok(true);
    }
    beat(i, group, lease, token).await
}

/// Fast takeover: deletes the leader key (created at `token`) and its beat
/// if the beat is still at revision `beat`.
async fn take_over(
    i: &Inner,
    group: &str,
    token: i64,
    beat: i64,
) -> Result<bool, super::CoordError> {
    let guards = [
        Guard::Created(i.keys.leader(group), token),
        Guard::Modified(i.keys.beat(group), beat),
    ];
    let ops = [
        Op::Delete(i.keys.leader(group)),
        Op::Delete(i.keys.beat(group)),
    ];
    i.coord.txn(&guards, &ops).await
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Shell {
    fn me(&self) -> String {
        self.i.node.clone()
    }

    fn spawn_poll(&self) {
        let (i, g, tx) = (self.i.clone(), self.g.name.clone(), self.tx.clone());
        let mine = self.m.role() == Role::Standby && matches!(self.qualified, Some(Ok(())));
        tokio::spawn(async move {
            let sent_at = Instant::now();
            let result = async {
                let keys = i.group_keys(&g).await?;
                let recs = i.records().await?;
                Ok::<_, super::CoordError>((keys, recs))
            }
            .await;
            let result = match result {
                Ok((keys, recs)) => {
                    i.mark_store_ok();
                    let mut qualified: Vec<String> = recs
                        .iter()
                        .filter(|r| r.node != i.node)
                        .filter(|r| {
                            r.groups
                                .get(&g)
                                .is_some_and(|v| v.qualified && v.role == "standby")
                        })
                        .map(|r| r.node.clone())
                        .collect();
                    if mine {
                        qualified.push(i.node.clone());
                    }
                    let peers = recs
                        .iter()
                        .filter(|r| r.node != i.node && r.groups.contains_key(&g))
                        .map(|r| r.api.clone())
                        .collect::<Vec<_>>();
                    {
                        let mut m = i.peers.lock().unwrap_or_else(|p| p.into_inner());
                        m.insert(g.clone(), peers);
                    }
                    Ok(Observed {
                        leader: keys.leader.map(|(l, t)| (l.node, t)),
                        handoff: keys.handoff.map(|h| h.to),
                        request: keys.request.map(|r| r.to),
                        qualified,
                        beat: keys.beat,
                    })
                }
                Err(e) => Err(e.to_string()),
            };
            let _ = tx.send(Msg::Polled { sent_at, result });
        });
    }

    fn set_qualified(&mut self, r: Result<(), String>) {
        let was = self.qualified.clone();
        if was.as_ref() == Some(&r) {
            return;
        }
        let (group, node) = (self.g.name.clone(), self.me());
        match &r {
            Ok(()) => {
                if was.is_some() {
                    self.i.bus.emit(EventKind::GroupQualified { group, node });
                }
            }
            Err(reason) => {
                tracing::warn!(group = %self.g.name, %reason, "This node does not qualify for promotion.");
                self.i.bus.emit(EventKind::GroupStepAside {
                    group,
                    node,
                    reason: reason.clone(),
                });
                self.hook("fault", self.g.on_fault.clone(), reason, None);
            }
        }
        self.i.set_view(&self.g.name, |v| {
            v.qualified = r.is_ok();
            v.reason = r.as_ref().err().cloned();
        });
        self.qualified = Some(r);
    }

    async fn feed(&mut self, input: Input) {
        let actions = self.m.handle(input, Instant::now());
        let role = self.m.role();
        self.i
            .set_view(&self.g.name, |v| v.role = role.as_str().to_string());
        for a in actions {
            self.act(a).await;
        }
    }

    async fn act(&mut self, a: Action) {
        let (group, node) = (self.g.name.clone(), self.me());
        match a {
            Action::Verify => {
                let (i, g, tx) = (self.i.clone(), self.g.clone(), self.tx.clone());
                tokio::spawn(async move {
                    let r = verify(&i, &g).await;
                    let _ = tx.send(Msg::Qualified(r.clone()));
                    let _ = tx.send(Msg::M(Input::Verified(r)));
                });
            }
            Action::Campaign => {
                let (i, tx) = (self.i.clone(), self.tx.clone());
                let old = self.lease;
                tokio::spawn(async move {
                    let sent_at = Instant::now();
                    let (lease, result) = campaign(&i, &group, old).await;
                    let _ = tx.send(Msg::Campaigned {
                        sent_at,
                        lease,
                        result,
                    });
                });
            }
            Action::Activate { token } => {
                let recent = self.i.cfg.lease_ttl * 2;
                let reason = match self.took_over_from.take() {
                    Some((old, at)) if at.elapsed() < recent => format!(
                        "won the election after taking the group from {old}, whose lease had run out"
                    ),
                    _ => "won the election".to_string(),
                };
                self.activate(token, &reason).await
            }
            Action::Retoken { token } => {
                self.activate(token, "re-took its key after the store came back")
                    .await
            }
            Action::Renew => {
                let Some(lease) = self.lease else {
                    let _ = self.tx.send(Msg::M(Input::Renewed {
                        sent_at: Instant::now(),
                        alive: false,
                    }));
                    return;
                };
                let (i, tx) = (self.i.clone(), self.tx.clone());
                let token = self.token;
                tokio::spawn(async move {
                    let sent_at = Instant::now();
                    let input = match renew(&i, &group, lease, token).await {
                        Ok(alive) => Input::Renewed { sent_at, alive },
                        Err(e) => Input::RenewFailed(e.to_string()),
                    };
                    let _ = tx.send(Msg::M(input));
                });
            }
            Action::Takeover {
                node: old,
                token,
                beat,
            } => {
                let (i, tx) = (self.i.clone(), self.tx.clone());
                tokio::spawn(async move {
                    let done = match take_over(&i, &group, token, beat).await {
                        Ok(done) => done,
                        Err(e) => {
                            tracing::warn!(group = %group, error = %e, "Fast takeover failed.");
                            false
                        }
                    };
                    if done {
                        tracing::warn!(group = %group, from = %old, token, "The active's beat stopped for a whole lease: deleted its leader key.");
                        i.bus.emit(EventKind::GroupTookOver {
                            group: group.clone(),
                            node: i.node.clone(),
                            from: old.clone(),
                            token,
                        });
                    }
                    let _ = tx.send(Msg::TookOver { from: old, done });
                });
            }
            Action::Demote {
                reason,
                handoff,
                fence,
            } => self.demote(reason, handoff, fence).await,
            Action::AskPeers => {
                let (i, tx) = (self.i.clone(), self.tx.clone());
                let g = self.g.name.clone();
                tokio::spawn(async move {
                    let agree = peers_agree(&i, &g).await;
                    let _ = tx.send(Msg::M(Input::PeersAgree(agree)));
                });
            }
            Action::KeptByPeers => {
                tracing::warn!(group = %group, "Store lost, but every peer lost it too: staying active.");
                self.i.bus.emit(EventKind::GroupKeptByPeers { group, node });
            }
            Action::RequestSwitchover { to } => {
                let i = self.i.clone();
                tokio::spawn(async move {
                    let req = Handoff {
                        to,
                        from: String::new(),
                        released_at: 0,
                        by: "preempt".into(),
                    };
                    if let Ok(lease) = i.coord.grant(i.cfg.lease_ttl * 3).await {
                        let body = serde_json::to_vec(&req).unwrap_or_default();
                        let _ = i.coord.put(&i.keys.request(&group), &body, lease).await;
                    }
                });
            }
            Action::RejectRequest { to, reason } => {
                tracing::warn!(group = %group, %to, %reason, "Switchover refused.");
                let _ = self.i.coord.delete(&self.i.keys.request(&group)).await;
                self.i.bus.emit(EventKind::GroupSwitchover {
                    group,
                    node,
                    to,
                    outcome: format!("refused: {reason}"),
                });
            }
            Action::StepAside { reason } => self.set_qualified(Err(reason)),
            Action::NoStandby { leaderless } => {
                tracing::error!(group = %group, leaderless, "No standby qualifies.");
                self.i.bus.emit(EventKind::GroupNoStandby {
                    group,
                    node,
                    leaderless,
                });
            }
            Action::StandbyOk => {
                self.i.bus.emit(EventKind::GroupStandbyOk { group, node });
            }
        }
    }

    fn env(&self, token: i64) -> Vec<(String, String)> {
        vec![
            ("MAMORI_GROUP".into(), self.g.name.clone()),
            ("MAMORI_NODE".into(), self.me()),
            ("MAMORI_FENCING_TOKEN".into(), token.to_string()),
        ]
    }

    async fn activate(&mut self, token: i64, reason: &str) {
        self.token = token;
        let env = self.env(token);
        for u in &self.g.units {
            self.i.gates.set(
                u,
                Gate {
                    group: self.g.name.clone(),
                    open: true,
                    env: env.clone(),
                },
            );
        }
        let since = now_ms();
        self.i.set_view(&self.g.name, |v| {
            v.token = Some(token);
            v.active_since = Some(since);
            v.healthy = false;
        });
        write_state(&self.i, &self.g.name, "active", token);
        tracing::info!(group = %self.g.name, token, "Active.");
        // Recorded before the units start: the interval covers their whole run.
        self.i.bus.emit(EventKind::GroupActivated {
            group: self.g.name.clone(),
            node: self.me(),
            token,
            reason: reason.to_string(),
        });
        if self.g.standby == StandbyMode::Stopped {
            for u in &self.g.units {
                let by = format!("group {} active (token {token})", self.g.name);
                if let Err(e) = self
                    .i
                    .sup
                    .ask(u, |reply| Command::Start {
                        by,
                        trigger: "group",
                        reply,
                    })
                    .await
                {
                    tracing::warn!(unit = %u, error = %e.error, "Could not start a group unit.");
                }
            }
        }
        self.hook("promote", self.g.on_promote.clone(), reason, Some(token));
        // Watch the units' health for the view (drills read it).
        let (i, g) = (self.i.clone(), self.g.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let v = i.view(&g.name);
                if v.token != Some(token) || v.role != "active" {
                    return;
                }
                let healthy = units_healthy(&i, &g);
                if healthy != v.healthy {
                    i.set_view(&g.name, |v| v.healthy = healthy);
                }
            }
        });
    }

    async fn demote(&mut self, reason: String, handoff: Option<String>, fence: bool) {
        let started = Instant::now();
        let budget = self.i.cfg.lease_ttl / 2;
        let (group, node, token) = (self.g.name.clone(), self.me(), self.token);
        tracing::warn!(group = %group, %reason, fence, "Demoting.");
        for u in &self.g.units {
            self.i.gates.set(
                u,
                Gate {
                    group: group.clone(),
                    open: self.g.standby == StandbyMode::Warm,
                    env: self.env(0)[..2].to_vec(),
                },
            );
        }
        let mut handoff_lease = None;
        if let Some(to) = &handoff {
            // Written before our key goes, so nobody else campaigns meanwhile.
            if let Ok(l) = self.i.coord.grant(self.i.cfg.lease_ttl * 3).await {
                handoff_lease = Some(l);
                let h = Handoff {
                    to: to.clone(),
                    from: node.clone(),
                    released_at: 0,
                    by: String::new(),
                };
                let body = serde_json::to_vec(&h).unwrap_or_default();
                let _ = self
                    .i
                    .coord
                    .put(&self.i.keys.handoff(&group), &body, l)
                    .await;
            }
            let _ = self.i.coord.delete(&self.i.keys.request(&group)).await;
        }
        if self.g.standby == StandbyMode::Stopped {
            let mut stops = tokio::task::JoinSet::new();
            for u in self.g.units.clone() {
                let sup = self.i.sup.clone();
                let by = format!("group {group} demoted: {reason}");
                // Fencing: the units must be down within half the lease.
                let within = budget.saturating_sub(Duration::from_millis(150));
                stops.spawn(async move {
                    if fence {
                        sup.ask(&u, |reply| Command::StopWithin { by, within, reply })
                            .await
                    } else {
                        sup.ask(&u, |reply| Command::Stop { by, reply }).await
                    }
                });
            }
            // A graceful stop (switchover, shutdown) may take the units'
            // whole stop_timeout: the lease is kept alive meanwhile, and if
            // that fails, the units are killed before it can expire.
            let keeper = match (fence, self.lease) {
                (false, Some(lease)) => Some(tokio::spawn(keep_while_stopping(
                    self.i.clone(),
                    self.g.clone(),
                    lease,
                    // Active: shutting down; Demoting: a switchover.
                    self.m
                        .last_ok()
                        .or(self.m.demoted_last_ok())
                        .unwrap_or(started),
                ))),
                _ => None,
            };
            while stops.join_next().await.is_some() {}
            if let Some(k) = keeper {
                k.abort();
            }
        }
        self.i.bus.emit(EventKind::GroupDeactivated {
            group: group.clone(),
            node: node.clone(),
            token,
            reason: reason.clone(),
            fenced: fence,
        });
        write_state(&self.i, &group, "standby", token);
        if fence {
            tracing::error!(group = %group, token, took_ms = started.elapsed().as_millis() as u64, "Fenced: the group's units are stopped on this node.");
            self.hook("fault", self.g.on_fault.clone(), &reason, Some(token));
        }
        let hook_budget = if fence {
            budget.saturating_sub(started.elapsed())
        } else {
            self.g.hook_timeout
        };
        if let Some(cmd) = self.g.on_demote.clone() {
            let env = self.hook_env("demote", &reason, Some(token));
            if let Err(e) = crate::probe::probes::exec_env(
                &self.i.reaper,
                &cmd,
                &env,
                hook_budget.max(Duration::from_millis(100)),
            )
            .await
            {
                self.hook_failed("on_demote", e);
            }
        }
        let released_at = now_ms();
        if let Some(l) = self.lease.take() {
            let _ = tokio::time::timeout(self.i.cfg.lease_ttl, self.i.coord.revoke(l)).await;
        }
        if let (Some(l), Some(to)) = (handoff_lease, &handoff) {
            let h = Handoff {
                to: to.clone(),
                from: node.clone(),
                released_at,
                by: String::new(),
            };
            let body = serde_json::to_vec(&h).unwrap_or_default();
            let _ = self
                .i
                .coord
                .put(&self.i.keys.handoff(&group), &body, l)
                .await;
            self.i.bus.emit(EventKind::GroupSwitchover {
                group: group.clone(),
                node,
                to: to.clone(),
                outcome: "handed off".into(),
            });
        }
        self.i.set_view(&group, |v| {
            v.token = None;
            v.active_since = None;
            v.healthy = false;
        });
        let _ = self.tx.send(Msg::M(Input::Stopped));
    }

    fn hook_env(&self, role: &str, reason: &str, token: Option<i64>) -> Vec<(String, String)> {
        let mut env = vec![
            ("MAMORI_GROUP".into(), self.g.name.clone()),
            ("MAMORI_NODE".into(), self.me()),
            ("MAMORI_ROLE".into(), role.to_string()),
            ("MAMORI_REASON".into(), reason.to_string()),
        ];
        if let Some(t) = token {
            env.push(("MAMORI_FENCING_TOKEN".into(), t.to_string()));
        }
        env
    }

    fn hook_failed(&self, hook: &str, reason: String) {
        tracing::warn!(group = %self.g.name, hook, %reason, "Hook failed.");
        self.i.bus.emit(EventKind::GroupHookFailed {
            group: self.g.name.clone(),
            node: self.me(),
            hook: hook.to_string(),
            reason,
        });
    }

    /// Runs a hook in the background.
    fn hook(&self, role: &str, cmd: Option<Vec<String>>, reason: &str, token: Option<i64>) {
        let Some(cmd) = cmd else { return };
        let env = self.hook_env(role, reason, token);
        let (i, g, node) = (self.i.clone(), self.g.clone(), self.me());
        let name = format!("on_{role}");
        tokio::spawn(async move {
            if let Err(e) =
                crate::probe::probes::exec_env(&i.reaper, &cmd, &env, g.hook_timeout).await
            {
                tracing::warn!(group = %g.name, hook = %name, reason = %e, "Hook failed.");
                i.bus.emit(EventKind::GroupHookFailed {
                    group: g.name.clone(),
                    node,
                    hook: name,
                    reason: e,
                });
            }
        });
    }

    /// The agent stops: an active node hands the group over cleanly.
    async fn shutdown(&mut self) {
        if matches!(self.m.role(), Role::Active | Role::Demoting) {
            self.demote("the agent is stopping".into(), None, false)
                .await;
        }
    }
}
