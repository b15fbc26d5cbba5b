//! This node in the cluster: the handle the API uses (`Cluster`), the node's
//! record in the store (published on its own lease, so a dead node vanishes
//! from `mamori nodes` within `lease_ttl`), and the start of one `shell` task
//! per group this node is a member of.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Coordinator, GroupView, Handoff, Keys, LeaderValue, NodeRecord};
use crate::config::cluster::{ClusterConfig, GroupConfig};
use crate::config::Config;
use crate::event::Bus;
use crate::probe::checks::Checks;
use crate::store::Store;
use crate::supervise::reaper::Reaper;
use crate::supervise::{Gate, Gates, Supervisor};
use crate::util::now_ms;

/// What the shells and the API share.
pub struct Inner {
    pub cfg: ClusterConfig,
    pub coord: Arc<dyn Coordinator>,
    pub keys: Keys,
    pub node: String,
    pub api: String,
    pub started_at: i64,
    pub views: Mutex<BTreeMap<String, GroupView>>,
    /// Wakes the publisher when a view changed.
    pub changed: Notify,
    /// When this node last reached the store (ms since the epoch).
    pub store_ok_at: AtomicI64,
    pub bus: Bus,
    pub store: Store,
    pub sup: Supervisor,
    pub checks: Checks,
    pub reaper: Reaper,
    pub gates: Arc<Gates>,
    pub data_dir: std::path::PathBuf,
    pub http: reqwest::Client,
    /// Unit name → its health check name.
    pub health: BTreeMap<String, String>,
    /// Per group, the API addresses of the other live members at the last
    /// poll (asked when `on_store_loss = "keep-if-all-peers-agree"`).
    pub peers: Mutex<BTreeMap<String, Vec<String>>>,
    /// Groups with a drill running on this node.
    pub drilling: Mutex<std::collections::BTreeSet<String>>,
}

impl Inner {
    pub fn group(&self, name: &str) -> Option<&GroupConfig> {
        self.cfg.groups.iter().find(|g| g.name == name)
    }

    /// Changes this node's view of a group; the record is re-published
    /// when it really changed.
    pub fn set_view(&self, group: &str, f: impl FnOnce(&mut GroupView)) {
        let changed = {
            let mut v = self.views.lock().unwrap_or_else(|p| p.into_inner());
            let view = v.entry(group.to_string()).or_default();
            let before = view.clone();
            f(view);
            *view != before
        };
        if changed {
            self.changed.notify_one();
        }
    }

    pub fn view(&self, group: &str) -> GroupView {
        let v = self.views.lock().unwrap_or_else(|p| p.into_inner());
        v.get(group).cloned().unwrap_or_default()
    }

    pub fn store_ok(&self) -> bool {
        now_ms() - self.store_ok_at.load(Ordering::Relaxed) < self.cfg.lease_ttl.as_millis() as i64
    }

    pub fn mark_store_ok(&self) {
        self.store_ok_at.store(now_ms(), Ordering::Relaxed);
    }

    /// Live node records (those whose lease has not expired).
    pub async fn records(&self) -> Result<Vec<NodeRecord>, super::CoordError> {
        let kvs = self.coord.list(&self.keys.nodes()).await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice::<NodeRecord>(&kv.value).ok())
            .collect())
    }

    /// The group's keys, read in one request.
    pub async fn group_keys(&self, group: &str) -> Result<GroupKeys, super::CoordError> {
        let prefix = format!("{}groups/{group}/", self.keys.prefix);
        let kvs = self.coord.list(&prefix).await?;
        let mut out = GroupKeys::default();
        for kv in kvs {
            if kv.key == self.keys.leader(group) {
                if let Ok(v) = serde_json::from_slice::<LeaderValue>(&kv.value) {
                    out.leader = Some((v, kv.create_revision));
                }
            } else if kv.key == self.keys.handoff(group) {
                out.handoff = serde_json::from_slice(&kv.value).ok();
            } else if kv.key == self.keys.request(group) {
                out.request = serde_json::from_slice(&kv.value).ok();
            } else if kv.key == self.keys.beat(group) {
                out.beat = Some(kv.mod_revision);
            }
        }
        Ok(out)
    }
}

/// A group's keys in the store.
#[derive(Debug, Default)]
pub struct GroupKeys {
    /// The active node and its fencing token.
    pub leader: Option<(LeaderValue, i64)>,
    pub handoff: Option<Handoff>,
    pub request: Option<Handoff>,
    /// The beat's modification revision (fast takeover).
    pub beat: Option<i64>,
}

/// Closes the gates of every group's units before any unit starts: they
/// run only where their group is active (or, warm, on every member).
pub fn init_gates(cfg: &ClusterConfig, gates: &Gates) {
    for g in &cfg.groups {
        let member = g.nodes.contains(&cfg.node);
        let warm = g.standby == crate::config::cluster::StandbyMode::Warm;
        for u in &g.units {
            gates.set(
                u,
                Gate {
                    group: g.name.clone(),
                    open: member && warm,
                    env: vec![
                        ("MAMORI_GROUP".into(), g.name.clone()),
                        ("MAMORI_NODE".into(), cfg.node.clone()),
                    ],
                },
            );
        }
    }
}

/// The cluster as the API sees it.
#[derive(Clone)]
pub struct Cluster {
    pub inner: Arc<Inner>,
}

#[derive(Debug, Serialize)]
pub struct GroupStatus {
    pub name: String,
    pub units: Vec<String>,
    pub nodes: Vec<String>,
    pub active: Option<String>,
    pub token: Option<i64>,
    pub active_since: Option<i64>,
    /// This node's view of the group.
    pub here: GroupView,
    /// Each live member's view, by node.
    pub members: BTreeMap<String, GroupView>,
    pub preempt: bool,
    pub standby: &'static str,
    /// Set when the store could not be read: `active` and `members` are unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
}

/// An API-level failure: an HTTP status and a message.
pub type Refusal = (u16, String);

impl Cluster {
    /// Connects to the store and starts this node's publisher and group shells.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        config: &Config,
        cfg: &ClusterConfig,
        bus: Bus,
        store: Store,
        sup: Supervisor,
        checks: Checks,
        reaper: Reaper,
        gates: Arc<Gates>,
        cancel: CancellationToken,
        tasks: &mut JoinSet<()>,
    ) -> anyhow::Result<Cluster> {
        let coord = super::connect(cfg)?;
        tracing::info!(node = %cfg.node, store = %coord.describe(), groups = cfg.groups.len(), "Cluster member.");
        let health = config
            .checks
            .iter()
            .filter_map(|c| Some((c.service.clone()?, c.name.clone())))
            .collect();
        let inner = Arc::new(Inner {
            cfg: cfg.clone(),
            coord,
            keys: Keys {
                prefix: cfg.prefix.clone(),
            },
            node: cfg.node.clone(),
            api: config.agent.listen.to_string(),
            started_at: now_ms(),
            views: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
            store_ok_at: AtomicI64::new(0),
            bus,
            store,
            sup,
            checks,
            reaper,
            gates,
            data_dir: config.agent.data_dir.clone(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_millis(500))
                .build()?,
            health,
            peers: Mutex::new(BTreeMap::new()),
            drilling: Mutex::new(Default::default()),
        });
        for g in &cfg.groups {
            let member = g.nodes.contains(&cfg.node);
            if !member {
                tracing::info!(group = %g.name, node = %cfg.node, "Not a member of this group; its units stay stopped here.");
                continue;
            }
            inner.set_view(&g.name, |v| v.role = "standby".into());
            tasks.spawn(super::shell::run(
                inner.clone(),
                g.clone(),
                cancel.child_token(),
            ));
            tasks.spawn(super::drill::schedule(
                inner.clone(),
                g.clone(),
                cancel.child_token(),
            ));
        }
        tasks.spawn(publish(inner.clone(), cancel.child_token()));
        Ok(Cluster { inner })
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    pub async fn nodes(&self) -> Result<Value, Refusal> {
        let recs = self.inner.records().await.map_err(unavailable)?;
        Ok(json!({
            "node": self.inner.node,
            "store": self.inner.coord.describe(),
            "nodes": recs,
        }))
    }

    /// Every group as the store sees it, with this node's own view. When the
    /// store is unreachable, the store's side is empty and `store_error` says
    /// why (this node's view is what matters during a partition).
    pub async fn groups(&self) -> Result<Vec<GroupStatus>, Refusal> {
        let mut store_error = None;
        let recs = match self.inner.records().await {
            Ok(r) => r,
            Err(e) => {
                store_error = Some(e.to_string());
                Vec::new()
            }
        };
        let mut out = Vec::new();
        for g in &self.inner.cfg.groups {
            let leader = match store_error {
                Some(_) => None,
                None => match self.inner.group_keys(&g.name).await {
                    Ok(k) => k.leader,
                    Err(e) => {
                        store_error = Some(e.to_string());
                        None
                    }
                },
            };
            let members = recs
                .iter()
                .filter_map(|r| Some((r.node.clone(), r.groups.get(&g.name)?.clone())))
                .collect();
            out.push(self.status(g, leader, members, store_error.clone()));
        }
        Ok(out)
    }

    /// Like `groups`, but gives the store at most `bound`: past it, every
    /// group is shown from its config and this node's own view, with
    /// `store_error` saying the store did not answer in time (for pages that
    /// must render while the store hangs).
    pub async fn groups_within(&self, bound: Duration) -> Vec<GroupStatus> {
        let error = match tokio::time::timeout(bound, self.groups()).await {
            Ok(Ok(all)) => return all,
            Ok(Err((_, e))) => e,
            Err(_) => format!(
                "the coordination store ({}) did not answer within {} ms",
                self.inner.coord.describe(),
                bound.as_millis()
            ),
        };
        self.inner
            .cfg
            .groups
            .iter()
            .map(|g| self.status(g, None, BTreeMap::new(), Some(error.clone())))
            .collect()
    }

    fn status(
        &self,
        g: &GroupConfig,
        leader: Option<(LeaderValue, i64)>,
        members: BTreeMap<String, GroupView>,
        store_error: Option<String>,
    ) -> GroupStatus {
        GroupStatus {
            name: g.name.clone(),
            units: g.units.clone(),
            nodes: g.nodes.clone(),
            active: leader.as_ref().map(|(l, _)| l.node.clone()),
            token: leader.as_ref().map(|(_, t)| *t),
            active_since: leader.as_ref().map(|(l, _)| l.since),
            here: self.inner.view(&g.name),
            members,
            preempt: g.preempt,
            standby: match g.standby {
                crate::config::cluster::StandbyMode::Warm => "warm",
                crate::config::cluster::StandbyMode::Stopped => "stopped",
            },
            store_error,
        }
    }

    /// Whether `node` is a live standby of `group` that qualifies.
    pub async fn qualifies(&self, group: &str, node: &str) -> Result<bool, Refusal> {
        let recs = self.inner.records().await.map_err(unavailable)?;
        Ok(recs.iter().any(|r| {
            r.node == node
                && r.groups
                    .get(group)
                    .is_some_and(|v| v.qualified && v.role == "standby")
        }))
    }

    /// Moves `group` to `to` on purpose: checks the target qualifies, asks
    /// the active node (through the store) to hand off, waits for it.
    pub async fn switchover(&self, group: &str, to: &str, by: &str) -> Result<Value, Refusal> {
        let i = &self.inner;
        let g = i
            .group(group)
            .ok_or_else(|| (404, format!("no group named \"{group}\"")))?;
        if !g.nodes.iter().any(|n| n == to) {
            return Err((
                400,
                format!(
                    "\"{to}\" is not a node of group \"{group}\" (nodes: {})",
                    g.nodes.join(", ")
                ),
            ));
        }
        let leader = i.group_keys(group).await.map_err(unavailable)?.leader;
        let Some((from, _)) = leader else {
            return Err((
                409,
                format!("group \"{group}\" has no active node to switch over from"),
            ));
        };
        if from.node == to {
            return Err((
                409,
                format!("\"{to}\" is already the active node of \"{group}\""),
            ));
        }
        if !self.qualifies(group, to).await? {
            return Err((
                409,
                format!("\"{to}\" does not qualify: it is not a live standby of \"{group}\" whose pre-promote checks pass (see `mamori nodes`)"),
            ));
        }
        let req = Handoff {
            to: to.to_string(),
            from: from.node.clone(),
            released_at: 0,
            by: by.to_string(),
        };
        let lease = i
            .coord
            .grant(Duration::from_secs(10).max(i.cfg.lease_ttl * 3))
            .await
            .map_err(unavailable)?;
        let body = serde_json::to_vec(&req).unwrap_or_default();
        i.coord
            .put(&i.keys.request(group), &body, lease)
            .await
            .map_err(unavailable)?;
        self.wait_active(group, to, Duration::from_secs(10) + i.cfg.lease_ttl * 4)
            .await
            .map(|(token, since)| json!({"group": group, "from": from.node, "to": to, "token": token, "active_since": since}))
    }

    /// Waits until `node` holds `group`; returns its token and since.
    pub async fn wait_active(
        &self,
        group: &str,
        node: &str,
        bound: Duration,
    ) -> Result<(i64, i64), Refusal> {
        let start = tokio::time::Instant::now();
        loop {
            if let Ok(GroupKeys {
                leader: Some((l, token)),
                ..
            }) = self.inner.group_keys(group).await
            {
                if l.node == node {
                    return Ok((token, l.since));
                }
            }
            if start.elapsed() > bound {
                return Err((
                    409,
                    format!(
                        "switchover of \"{group}\" to \"{node}\" did not complete within {} s",
                        bound.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// For a peer's `on_store_loss` question: does this node reach the store
    /// *now*? A read with a short timeout (the asker waits 500 ms at most).
    pub async fn peer_status(&self) -> Value {
        let i = &self.inner;
        let probe =
            tokio::time::timeout(Duration::from_millis(300), i.coord.get(&i.keys.nodes())).await;
        let ok = matches!(probe, Ok(Ok(_)));
        if ok {
            i.mark_store_ok();
        }
        json!({"node": i.node, "store_ok": ok})
    }
}

fn unavailable(e: super::CoordError) -> Refusal {
    (503, e.to_string())
}

/// Publishes this node's record on its own lease; renews it every third of
/// the lease, and re-publishes at once when a group's view changes.
async fn publish(i: Arc<Inner>, cancel: CancellationToken) {
    let ttl = i.cfg.lease_ttl;
    let mut lease: Option<i64> = None;
    let mut last_put = tokio::time::Instant::now();
    let mut dirty = true;
    let mut next_renew = tokio::time::Instant::now();
    loop {
        if lease.is_some() && !dirty {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = i.changed.notified() => dirty = true,
                _ = tokio::time::sleep_until(next_renew) => {}
            }
        } else if cancel.is_cancelled() {
            break;
        }
        let id = match lease {
            Some(id) => id,
            None => match i.coord.grant(ttl).await {
                Ok(id) => {
                    lease = Some(id);
                    dirty = true;
                    next_renew = tokio::time::Instant::now() + ttl / 3;
                    id
                }
                Err(e) => {
                    tracing::debug!(error = %e, "Cannot publish this node's record.");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(ttl / 4) => continue,
                    }
                }
            },
        };
        if tokio::time::Instant::now() >= next_renew {
            next_renew = tokio::time::Instant::now() + ttl / 3;
            match i.coord.keep_alive(id).await {
                Ok(Some(_)) => i.mark_store_ok(),
                Ok(None) => {
                    lease = None;
                    continue;
                }
                Err(_) => {}
            }
        }
        if dirty {
            continue_publish(&i, lease, &mut dirty, &mut last_put).await;
            if dirty {
                // The put failed: retry after a pause, not in a spin.
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(ttl / 4) => {}
                }
            }
        }
    }
    if let Some(id) = lease {
        let _ = tokio::time::timeout(Duration::from_secs(1), i.coord.revoke(id)).await;
    }
}

async fn continue_publish(
    i: &Inner,
    lease: Option<i64>,
    dirty: &mut bool,
    last_put: &mut tokio::time::Instant,
) {
    let Some(id) = lease else { return };
    let rec = NodeRecord {
        node: i.node.clone(),
        api: i.api.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: i.started_at,
        updated_at: now_ms(),
        groups: i.views.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    };
    let body = serde_json::to_vec(&rec).unwrap_or_default();
    match i.coord.put(&i.keys.node(&i.node), &body, id).await {
        Ok(()) => {
            *dirty = false;
            *last_put = tokio::time::Instant::now();
            i.mark_store_ok();
        }
        Err(e) => tracing::debug!(error = %e, "Cannot publish this node's record."),
    }
}
