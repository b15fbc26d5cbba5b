//! What the group shell (`shell.rs`) does in the store and on this node,
//! apart from its loop: pre-promote verification, taking the leader key,
//! asking peers (`on_store_loss`), keeping the lease through a graceful
//! demotion, and the state file for units and operators.

use std::sync::Arc;

use tokio::time::Instant;

use super::node::Inner;
use super::{Guard, LeaderValue, Op};
use crate::config::cluster::{GroupConfig, StandbyMode};
use crate::probe::health::Status;
use crate::util::now_ms;

/// During a graceful demotion: renews the lease every quarter of it; when no
/// renewal succeeded for half of it, SIGKILLs the units' process groups so
/// they are gone before the lease can expire anywhere.
pub async fn keep_while_stopping(i: Arc<Inner>, g: GroupConfig, lease: i64, since: Instant) {
    let ttl = i.cfg.lease_ttl;
    let mut last_ok = since;
    loop {
        let sent = Instant::now();
        let ok = matches!(
            tokio::time::timeout(ttl / 4, i.coord.keep_alive(lease)).await,
            Ok(Ok(Some(_)))
        );
        if ok {
            last_ok = sent;
        } else if Instant::now() >= last_ok + ttl / 2 {
            for u in &g.units {
                if let Some(pid) = i.sup.status(u).and_then(|s| s.pid) {
                    tracing::error!(unit = %u, pid, "Lost the lease while stopping; killing the unit.");
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            return;
        }
        tokio::time::sleep_until(sent + ttl / 4).await;
    }
}

/// Pre-promote verification: the group's `checks` are up here, no member unit
/// gave up, the `pre_promote` command succeeds; in warm mode also the units'
/// own health checks.
pub async fn verify(i: &Inner, g: &GroupConfig) -> Result<(), String> {
    for c in &g.checks {
        match i.checks.status(c) {
            Some(s) if s.status == Status::Up => {}
            Some(s) => {
                return Err(format!(
                    "check {c} is {}{}",
                    s.status.as_str(),
                    s.last_reason.map(|r| format!(": {r}")).unwrap_or_default()
                ))
            }
            None => return Err(format!("check {c} does not exist")),
        }
    }
    for u in &g.units {
        if let Some(s) = i.sup.status(u) {
            if s.state == crate::supervise::UnitState::GaveUp {
                return Err(format!("unit {u} gave up restarting here"));
            }
        }
    }
    if g.standby == StandbyMode::Warm && !units_healthy(i, g) {
        return Err("the group's units are not healthy here".into());
    }
    if let Some(cmd) = &g.pre_promote {
        let env = vec![
            ("MAMORI_GROUP".to_string(), g.name.clone()),
            ("MAMORI_NODE".to_string(), i.node.clone()),
        ];
        crate::probe::probes::exec_env(&i.reaper, cmd, &env, g.pre_promote_timeout)
            .await
            .map_err(|e| format!("pre_promote failed: {e}"))?;
    }
    Ok(())
}

/// The first verification after the agent starts: waits, at most
/// `verify_every`, while what it reads has no verdict yet ([`pending`]),
/// then verifies. Right after a start every check is `unknown` and the
/// units are only starting; judged at once, each boot of a standby would
/// step aside and run `on_fault` (a page, if that is what it does) and
/// qualify one `verify_every` later. Later verifications, and the one
/// before a campaign, judge at once: they must not delay a failover.
pub async fn verify_settled(i: &Inner, g: &GroupConfig) -> Result<(), String> {
    let until = Instant::now() + g.verify_every;
    while pending(i, g) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(SETTLE_POLL.min(left)).await;
    }
    verify(i, g).await
}

/// How often [`verify_settled`] looks again.
const SETTLE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Something verification reads has no verdict yet: one of the group's
/// `checks` is still `unknown`; in warm mode, a unit's health check is
/// `unknown`, or `paused` while the unit has not run yet in this agent's
/// life (a check's first tick can come before its unit starts), or a unit
/// without a health check has not run yet. A unit that ran and stopped is
/// judged as it is.
fn pending(i: &Inner, g: &GroupConfig) -> bool {
    let status = |c: &str| i.checks.status(c).map(|s| s.status);
    if g.checks.iter().any(|c| status(c) == Some(Status::Unknown)) {
        return true;
    }
    g.standby == StandbyMode::Warm
        && g.units.iter().any(|u| {
            // `run_id`, not `started_at`: that is cleared when a run ends.
            let never_ran = i.sup.status(u).is_some_and(|s| s.run_id.is_none());
            match i.health.get(u) {
                Some(c) => match status(c) {
                    Some(Status::Unknown) => true,
                    Some(Status::Paused) => never_ran,
                    _ => false,
                },
                None => never_ran,
            }
        })
}

/// Every health check of the group's units is up on this node.
pub fn units_healthy(i: &Inner, g: &GroupConfig) -> bool {
    g.units.iter().all(|u| match i.health.get(u) {
        None => i
            .sup
            .status(u)
            .is_some_and(|s| s.state == crate::supervise::UnitState::Running),
        Some(c) => i.checks.status(c).is_some_and(|s| s.status == Status::Up),
    })
}

/// Grants a lease and creates the leader key on it.
pub async fn campaign(
    i: &Inner,
    group: &str,
    old: Option<i64>,
) -> (Option<i64>, Result<Option<i64>, String>) {
    let lease = match i.coord.grant(i.cfg.lease_ttl).await {
        Ok(l) => l,
        Err(e) => return (None, Err(e.to_string())),
    };
    let v = LeaderValue {
        node: i.node.clone(),
        since: now_ms(),
    };
    let body = serde_json::to_vec(&v).unwrap_or_default();
    match i.coord.create(&i.keys.leader(group), &body, lease).await {
        Ok(Some(rev)) => {
            if i.cfg.fast_takeover {
                // The first beat, so standbys can take over even if this node
                // dies before its first keep-alive. Best effort: without it a
                // standby waits for the key to expire in the store.
                let _ = beat(i, group, lease, rev).await;
            }
            if let Some(o) = old {
                let _ = i.coord.revoke(o).await;
            }
            (Some(lease), Ok(Some(rev)))
        }
        Ok(None) => {
            let _ = i.coord.revoke(lease).await;
            (None, Ok(None))
        }
        Err(e) => {
            let _ = i.coord.revoke(lease).await;
            (None, Err(e.to_string()))
        }
    }
}

/// Fast takeover: writes the group's beat (the token, on our lease) if the
/// leader key is still the one we created at `token`; `Ok(false)` if not.
pub async fn beat(
    i: &Inner,
    group: &str,
    lease: i64,
    token: i64,
) -> Result<bool, super::CoordError> {
    let guard = [Guard::Created(i.keys.leader(group), token)];
    let put = [Op::Put {
        key: i.keys.beat(group),
        value: token.to_string().into_bytes(),
        lease,
    }];
    i.coord.txn(&guard, &put).await
}

/// `on_store_loss = "keep-if-all-peers-agree"`: every other member of the
/// group answers, and none of them reaches the store either (so none can
/// take the group). Peers come from the last records this node read.
pub async fn peers_agree(i: &Inner, group: &str) -> bool {
    let peers: Vec<String> = {
        let m = i.peers.lock().unwrap_or_else(|p| p.into_inner());
        m.get(group).cloned().unwrap_or_default()
    };
    if peers.is_empty() {
        return false;
    }
    let mut asks = tokio::task::JoinSet::new();
    for api in peers {
        let http = i.http.clone();
        asks.spawn(async move {
            let url = format!("http://{api}/api/v1/cluster/peer");
            let v = http
                .get(&url)
                .send()
                .await
                .ok()?
                .json::<serde_json::Value>()
                .await
                .ok()?;
            // Agrees when it answered and does not reach the store either.
            Some(!v["store_ok"].as_bool()?)
        });
    }
    let mut all = true;
    while let Some(r) = asks.join_next().await {
        all &= matches!(r, Ok(Some(true)));
    }
    all
}

/// `<data_dir>/cluster/<group>.json`: this node's role and token, for units
/// of a warm group (which run before the token exists) and for operators.
pub fn write_state(i: &Inner, group: &str, role: &str, token: i64) {
    let dir = i.data_dir.join("cluster");
    let _ = std::fs::create_dir_all(&dir);
    let body = serde_json::json!({"group": group, "node": i.node, "role": role, "token": token, "at": now_ms()});
    let tmp = dir.join(format!(".{group}.json"));
    if std::fs::write(&tmp, body.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(format!("{group}.json")));
    }
}
