//! Failover drills: a controlled switchover to the best qualified standby and
//! back, measured (time with no active node, each way) and checked (the
//! group's health checks pass on the new node), then recorded (`drills`
//! table, and `groups/<g>/last_drill` in the store for the schedule).
//! A failed drill emits `drill.failed`, a critical alert by default.
//!
//! `drill_every` schedules it on whichever node is active, inside
//! `drill_window` when one is set.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::node::{Cluster, Inner, Refusal};
use super::Handoff;
use crate::config::cluster::GroupConfig;
use crate::event::EventKind;
use crate::store::DrillRecord;
use crate::util::now_ms;

/// How long the new node's health checks get to pass.
const HEALTH_BOUND: Duration = Duration::from_secs(30);

/// Runs one drill of `group`; the record says whether it passed.
pub async fn run(c: &Cluster, group: &str, trigger: &str) -> Result<DrillRecord, Refusal> {
    let i = &c.inner;
    let g = i
        .group(group)
        .cloned()
        .ok_or_else(|| (404, format!("no group named \"{group}\"")))?;
    {
        let mut d = i.drilling.lock().unwrap_or_else(|p| p.into_inner());
        if !d.insert(group.to_string()) {
            return Err((409, format!("a drill of \"{group}\" is already running")));
        }
    }
    let r = drill(c, &g, trigger).await;
    i.drilling
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(group);
    r
}

async fn drill(c: &Cluster, g: &GroupConfig, trigger: &str) -> Result<DrillRecord, Refusal> {
    let i = &c.inner;
    let started_at = now_ms();
    let leader = i
        .group_keys(&g.name)
        .await
        .map_err(|e| (503, e.to_string()))?
        .leader;
    let from = leader.map(|(l, _)| l.node).unwrap_or_default();
    let mut to = String::new();
    for n in g.nodes.iter().filter(|n| **n != from) {
        if c.qualifies(&g.name, n).await? {
            to = n.clone();
            break;
        }
    }
    let id = i
        .store
        .insert_drill(&g.name, started_at, &from, &to, trigger)
        .map_err(|e| (503, e.to_string()))?;
    let mut rec = DrillRecord {
        id,
        group: g.name.clone(),
        started_at,
        finished_at: None,
        from: from.clone(),
        to: to.clone(),
        gap_ms: None,
        back_gap_ms: None,
        healthy: false,
        ok: false,
        reason: String::new(),
        trigger: trigger.to_string(),
    };
    let result = async {
        if from.is_empty() {
            return Err("the group has no active node".to_string());
        }
        if to.is_empty() {
            return Err("no standby qualifies".to_string());
        }
        rec.gap_ms = Some(leg(c, g, &from, &to).await?);
        healthy(c, g, &to).await?;
        rec.healthy = true;
        rec.back_gap_ms = Some(leg(c, g, &to, &from).await?);
        healthy(c, g, &from).await?;
        Ok(())
    }
    .await;
    rec.finished_at = Some(now_ms());
    match result {
        Ok(()) => {
            rec.ok = true;
            rec.reason = "switched over and back; health checks passed on both nodes".into();
            i.bus.emit(EventKind::DrillPassed {
                group: g.name.clone(),
                drill_id: id,
                gap_ms: rec.gap_ms.unwrap_or(0),
                back_gap_ms: rec.back_gap_ms.unwrap_or(0),
            });
        }
        Err(reason) => {
            tracing::error!(group = %g.name, %reason, "Drill failed.");
            rec.reason = reason.clone();
            i.bus.emit(EventKind::DrillFailed {
                group: g.name.clone(),
                drill_id: id,
                reason,
            });
        }
    }
    if let Err(e) = i.store.finish_drill(&rec) {
        tracing::warn!(error = %e, "Could not record the drill.");
    }
    let body = serde_json::to_vec(&rec).unwrap_or_default();
    let _ = i.coord.put(&last_drill_key(i, &g.name), &body, 0).await;
    Ok(rec)
}

/// One switchover; returns the time with no active node (ms).
async fn leg(c: &Cluster, g: &GroupConfig, from: &str, to: &str) -> Result<i64, String> {
    let since = c
        .switchover(&g.name, to, "drill")
        .await
        .map_err(|(_, e)| format!("switchover {from} → {to}: {e}"))
        .map(|v| v["active_since"].as_i64().unwrap_or(0))?;
    // The old active wrote when it let go into the handoff key.
    let start = tokio::time::Instant::now();
    loop {
        if let Ok(super::node::GroupKeys {
            handoff:
                Some(Handoff {
                    released_at,
                    from: f,
                    ..
                }),
            ..
        }) = c.inner.group_keys(&g.name).await
        {
            if released_at > 0 && f == from {
                return Ok((since - released_at).max(0));
            }
        }
        if start.elapsed() > Duration::from_secs(5) {
            return Err(format!(
                "switchover {from} → {to}: the old active did not record its release"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `node` reports the group's health checks up.
async fn healthy(c: &Cluster, g: &GroupConfig, node: &str) -> Result<(), String> {
    let start = tokio::time::Instant::now();
    loop {
        if let Ok(recs) = c.inner.records().await {
            if recs.iter().any(|r| {
                r.node == node
                    && r.groups
                        .get(&g.name)
                        .is_some_and(|v| v.role == "active" && v.healthy)
            }) {
                return Ok(());
            }
        }
        if start.elapsed() > HEALTH_BOUND {
            return Err(format!(
                "the group's health checks did not pass on {node} within {} s",
                HEALTH_BOUND.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn last_drill_key(i: &Inner, group: &str) -> String {
    format!("{}groups/{group}/last_drill", i.keys.prefix)
}

/// `drill_every`: the active node runs a drill when the last one (by any
/// node) is older than that, inside `drill_window`.
pub async fn schedule(i: Arc<Inner>, g: GroupConfig, cancel: CancellationToken) {
    let Some(every) = g.drill_every else { return };
    let c = Cluster { inner: i.clone() };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(30).min(every)) => {}
        }
        if i.view(&g.name).role != "active" {
            continue;
        }
        let minute = {
            use chrono::Timelike;
            let now = chrono::Local::now();
            now.hour() * 60 + now.minute()
        };
        if !g.in_drill_window(minute) {
            continue;
        }
        let last = match i.coord.get(&last_drill_key(&i, &g.name)).await {
            Ok(kv) => kv
                .and_then(|kv| serde_json::from_slice::<serde_json::Value>(&kv.value).ok())
                .and_then(|v| v["started_at"].as_i64())
                .unwrap_or(0),
            Err(_) => continue,
        };
        if now_ms() - last < every.as_millis() as i64 {
            continue;
        }
        tracing::info!(group = %g.name, "Scheduled drill.");
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = run(&c, &g.name, "schedule") => {
                if let Err((_, e)) = r {
                    tracing::warn!(group = %g.name, error = %e, "Scheduled drill did not run.");
                }
            }
        }
    }
}
