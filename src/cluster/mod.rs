//! Several nodes: failover groups on a coordination store.
//!
//! - `Coordinator` (this file): the one trait the rest of mamori sees, a tiny
//!   lease + key/value interface (grant, keep alive, revoke, create-if-absent,
//!   put, get, list, delete, a guarded transaction) that both backends implement:
//!   - `embedded`: a SQLite file shared by the agents of one host (the default);
//!   - `etcd`: etcd v3 through its JSON gateway (see that module for why not gRPC).
//! - `group`: the pure role state machine of one group on one node
//!   (standby → verifying → campaigning → active → demoting), with the
//!   self-fencing deadline; tested with paused time.
//! - `node`: this node's record in the store, the API's handle (`Cluster`),
//!   switchover; starts one `shell` per group.
//! - `shell`: the async loop of one group on this node; `work`: what it does
//!   besides (verification, taking the key, asking peers, hooks' helpers).
//! - `drill`: a controlled switchover and back, measured and recorded.
//!
//! Key layout under `<prefix>` (default `/mamori/`):
//! `nodes/<node>` (the node's record, on the node's lease),
//! `groups/<g>/leader` (the active node; its create revision is the fencing
//! token), `groups/<g>/handoff` (a switchover's chosen target, short lease),
//! `groups/<g>/request` (a switchover asked for by any node, short lease),
//! `groups/<g>/beat` (with `fast_takeover`: rewritten by the active after
//! every keep-alive, on its lease; see `group`, "Fast takeover").

pub mod drill;
pub mod embedded;
pub mod etcd;
pub mod group;
pub mod node;
mod shell;
mod work;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use node::Cluster;

/// The coordination store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// Not reachable (connection refused, timeout): retryable.
    #[error("coordination store unreachable: {0}")]
    Unreachable(String),
    /// Reachable, but it refused or answered something we do not understand.
    #[error("coordination store error: {0}")]
    Store(String),
}

pub type CoordResult<T> = Result<T, CoordError>;
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = CoordResult<T>> + Send + 'a>>;

/// One key as stored, with etcd's revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    /// The store revision at which the key was created: the fencing token of
    /// a leader key. Strictly increasing across creations.
    pub create_revision: i64,
    pub mod_revision: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

/// A lease + key/value store. Both backends give the same guarantees:
/// a key attached to a lease disappears when the lease expires (`ttl` after
/// its last keep-alive, as the store measures it), and `create` succeeds for
/// exactly one caller while the key exists.
pub trait Coordinator: Send + Sync {
    /// A new lease of `ttl`; returns its id.
    fn grant(&self, ttl: Duration) -> BoxFut<'_, i64>;
    /// Renews a lease; `None` when it no longer exists (expired or revoked).
    fn keep_alive(&self, lease: i64) -> BoxFut<'_, Option<Duration>>;
    /// Ends a lease at once, deleting its keys.
    fn revoke(&self, lease: i64) -> BoxFut<'_, ()>;
    /// Creates `key` on `lease` if it does not exist; returns the creation
    /// revision, or `None` when the key already exists.
    fn create<'a>(&'a self, key: &'a str, value: &'a [u8], lease: i64) -> BoxFut<'a, Option<i64>>;
    /// Writes `key` (on `lease`, or none with 0).
    fn put<'a>(&'a self, key: &'a str, value: &'a [u8], lease: i64) -> BoxFut<'a, ()>;
    fn get<'a>(&'a self, key: &'a str) -> BoxFut<'a, Option<Kv>>;
    /// Every key starting with `prefix`, in key order.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFut<'a, Vec<Kv>>;
    fn delete<'a>(&'a self, key: &'a str) -> BoxFut<'a, ()>;
    /// Applies `ops` in one revision if every guard holds, atomically;
    /// returns whether it did.
    fn txn<'a>(&'a self, guards: &'a [Guard], ops: &'a [Op]) -> BoxFut<'a, bool>;
    /// For logs and `mamori nodes`: which backend, where.
    fn describe(&self) -> String;
}

/// A condition of `Coordinator::txn` on one key (an absent key has
/// revisions 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// The key's create revision is this.
    Created(String, i64),
    /// The key's last modification revision is this.
    Modified(String, i64),
}

/// A write of `Coordinator::txn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: i64,
    },
    Delete(String),
}

/// How long one request to the coordination store may take (etcd's client
/// timeout): a quarter of the lease, at least 200 ms, so a caller always has
/// time to act on a failure before self-fencing at half the lease. The
/// dashboard waits no longer than this for the store.
pub fn request_timeout(lease_ttl: Duration) -> Duration {
    (lease_ttl / 4).max(Duration::from_millis(200))
}

/// Builds the configured backend.
pub fn connect(
    cfg: &crate::config::cluster::ClusterConfig,
) -> anyhow::Result<Arc<dyn Coordinator>> {
    use crate::config::cluster::Backend;
    Ok(match &cfg.backend {
        Backend::Embedded { path } => Arc::new(embedded::Embedded::open(path)?),
        Backend::Etcd(e) => Arc::new(etcd::Etcd::new(e, cfg.lease_ttl)?),
    })
}

/// What a node publishes about itself under `nodes/<node>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeRecord {
    pub node: String,
    /// The node's API address (`[agent] listen`).
    pub api: String,
    pub version: String,
    pub started_at: i64,
    pub updated_at: i64,
    /// Whether this node reaches the coordination store (always true in a
    /// record read from it; peers answer it directly for `on_store_loss`).
    #[serde(default)]
    pub groups: std::collections::BTreeMap<String, GroupView>,
}

/// One group as seen from one node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GroupView {
    /// `standby`, `verifying`, `campaigning`, `active`, `demoting`.
    pub role: String,
    /// The last pre-promote verification passed.
    pub qualified: bool,
    /// Why it did not, if it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Active only: every health check of the group's units is up here.
    #[serde(default)]
    pub healthy: bool,
    /// Active only: the fencing token of this activation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<i64>,
    /// Active only: when it became active (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_since: Option<i64>,
}

/// The value of `groups/<g>/leader`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaderValue {
    pub node: String,
    pub since: i64,
}

/// The value of `groups/<g>/handoff` and `groups/<g>/request`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Handoff {
    pub to: String,
    #[serde(default)]
    pub from: String,
    /// When the old active released the group (handoff only).
    #[serde(default)]
    pub released_at: i64,
    #[serde(default)]
    pub by: String,
}

/// Key names under a prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    pub prefix: String,
}

impl Keys {
    pub fn node(&self, node: &str) -> String {
        format!("{}nodes/{node}", self.prefix)
    }
    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.prefix)
    }
    pub fn leader(&self, group: &str) -> String {
        format!("{}groups/{group}/leader", self.prefix)
    }
    pub fn handoff(&self, group: &str) -> String {
        format!("{}groups/{group}/handoff", self.prefix)
    }
    pub fn request(&self, group: &str) -> String {
        format!("{}groups/{group}/request", self.prefix)
    }
    pub fn beat(&self, group: &str) -> String {
        format!("{}groups/{group}/beat", self.prefix)
    }
}
