//! Running units: spawning process trees, enforcing limits, restarting by
//! policy, capturing output, reaping every process.
//!
//! - `unit`: one task per unit (the only place a unit's state changes)
//! - `policy`: the pure restart/backoff/crash-loop state machine
//! - `enforce`: cgroup v2 / v1 / polling enforcement and tree membership
//! - `reaper`: the subreaper and the only `wait` in the agent
//! - `spawn`: the pre-exec setup of a run
//! - `proc`: reading /proc
//! - `logs`: rotated capture of stdout/stderr

pub mod context;
pub mod enforce;
pub mod logs;
mod members;
pub mod nofile;
pub mod policy;
pub mod proc;
pub mod reaper;
mod spawn;
pub mod unit;
mod watchdog;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::event::Bus;
use crate::store::Store;
use enforce::Enforcer;
use reaper::Reaper;
pub use unit::{CmdError, Command, RunEnded, UnitState, UnitStatus};

/// What every unit task shares.
pub struct Ctx {
    pub store: Store,
    pub bus: Bus,
    pub reaper: Reaper,
    pub enforcer: Arc<Enforcer>,
    pub logs_dir: PathBuf,
    pub poll_interval: Duration,
    pub sample_interval: Duration,
    pub sampler: Arc<crate::probe::sampler::Sampler>,
    /// Where the watchdogs' tick grid starts (see `watchdog::watchdog`).
    pub tick_epoch: tokio::time::Instant,
    /// Units of failover groups: whether they may start here, and the env the group adds.
    pub gates: Arc<Gates>,
}

/// The gate of a unit that belongs to a failover group (src/cluster/): it
/// starts only while its group is active on this node (or, in warm standby
/// mode, always), with `MAMORI_GROUP`, `MAMORI_NODE` and
/// `MAMORI_FENCING_TOKEN` in its environment.
#[derive(Debug, Clone)]
pub struct Gate {
    pub group: String,
    pub open: bool,
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub struct Gates(Mutex<std::collections::HashMap<String, Gate>>);

impl Gates {
    pub fn set(&self, unit: &str, gate: Gate) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(unit.to_string(), gate);
    }

    pub fn get(&self, unit: &str) -> Option<Gate> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(unit).cloned()
    }
}

struct Handle {
    /// Boxed: a channel allocates room for 32 messages at once, per unit.
    tx: mpsc::Sender<Box<Command>>,
    status: Arc<Mutex<UnitStatus>>,
}

/// The running units, addressed by name.
#[derive(Clone)]
pub struct Supervisor {
    units: Arc<BTreeMap<String, Handle>>,
    /// Config order, for listings.
    order: Arc<Vec<String>>,
}

impl Supervisor {
    /// Starts one task per unit (services with `autostart` start at once).
    pub fn start(
        config: &Config,
        ctx: Arc<Ctx>,
        cancel: CancellationToken,
        tasks: &mut JoinSet<()>,
    ) -> std::io::Result<Supervisor> {
        let mut units = BTreeMap::new();
        let mut order = Vec::new();
        // Everything that can fail is prepared first, so that an error leaves
        // no unit running.
        let mut ready = Vec::new();
        for cfg in &config.units {
            let status = Arc::new(Mutex::new(UnitStatus::new(cfg)));
            if let Ok(Some(last)) = ctx.store.last_run(&cfg.name) {
                if let Ok(mut s) = status.lock() {
                    s.last_reason = last.reason.clone();
                    s.last_exit_at = last.ended_at;
                }
            }
            let (tx, rx) = mpsc::channel(64);
            let task = unit::UnitTask::new(cfg.clone(), ctx.clone(), status.clone())?;
            ready.push((task, rx));
            order.push(cfg.name.clone());
            units.insert(cfg.name.clone(), Handle { tx, status });
        }
        for (task, rx) in ready {
            tasks.spawn(task.run(rx, cancel.child_token()));
        }
        Ok(Supervisor {
            units: Arc::new(units),
            order: Arc::new(order),
        })
    }

    pub fn status(&self, name: &str) -> Option<UnitStatus> {
        let h = self.units.get(name)?;
        let s = h.status.lock().ok()?;
        Some(s.snapshot())
    }

    pub fn statuses(&self) -> Vec<UnitStatus> {
        self.order.iter().filter_map(|n| self.status(n)).collect()
    }

    pub fn exists(&self, name: &str) -> bool {
        self.units.contains_key(name)
    }

    /// Sends a command built around a reply channel and waits for the answer.
    pub async fn ask<T>(
        &self,
        name: &str,
        make: impl FnOnce(unit::Reply<T>) -> Command,
    ) -> Result<T, CmdError> {
        let h = self.units.get(name).ok_or_else(|| CmdError {
            status: 404,
            error: format!("no unit named \"{name}\""),
        })?;
        let (tx, rx) = oneshot::channel();
        h.tx.send(Box::new(make(tx))).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

fn gone() -> CmdError {
    CmdError {
        status: 503,
        error: "the agent is shutting down".to_string(),
    }
}
