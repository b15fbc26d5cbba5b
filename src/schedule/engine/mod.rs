//! The flow engine: one task that fires schedules, starts flow runs, feeds
//! job ends into each run's pure state machine (`flow.rs`), persists every
//! change, and takes the operators' commands (rerun, release, hold, unhold).
//!
//! Guarantees:
//! - A scheduled time is recorded in the store in the same transaction that
//!   creates its flow run, so it never runs twice, also across a restart or a
//!   SIGKILL of the agent.
//! - After a restart, jobs that were running are failed as `interrupted` and
//!   what is below them is held: nothing is run again without a person.
//!
//! Layout: this file holds the engine's state, its loop and the views it
//! publishes; `schedules.rs` fires schedules and catches up missed times,
//! `runs.rs` creates flow runs and carries out their actions, `watch.rs`
//! holds the `hold_while` gates and the `expected` / `must_finish_by`
//! reports, and `commands.rs` answers the operators' commands.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::flow::{Action, FlowDef, FlowRun, Input, JobState, Status};
use super::missed::{due_after, plan_due, settle};
use crate::config::jobs::{CatchUp, Concurrency};
use crate::config::{Config, UnitKind};
use crate::event::{Bus, EventKind};
use crate::store::Store;
use crate::supervise::{Command, Supervisor};
use crate::util::now_ms;

mod commands;
mod runs;
mod schedules;
mod watch;

/// How to rerun a flow run.
#[derive(Debug, Clone)]
pub enum Rerun {
    FromFailed,
    From(String),
    Only(String),
}

type Reply<T> = oneshot::Sender<Result<T, (u16, String)>>;

pub enum Cmd {
    /// Start a flow run now (by hand).
    Start {
        flow: String,
        by: String,
        reply: Reply<i64>,
    },
    Rerun {
        flow: String,
        how: Rerun,
        /// Which open flow run; None: the flow's newest run.
        run: Option<i64>,
        by: String,
        comment: String,
        reply: Reply<i64>,
    },
    Release {
        job: String,
        /// Which open flow run; None: the flow's newest run.
        run: Option<i64>,
        by: String,
        comment: String,
        reply: Reply<i64>,
    },
    Hold {
        target: String,
        by: String,
        comment: String,
        reply: Reply<()>,
    },
    Unhold {
        target: String,
        by: String,
        reply: Reply<()>,
    },
}

/// What the API shows of a flow.
#[derive(Debug, Clone, Serialize)]
pub struct FlowView {
    pub name: String,
    pub jobs: Vec<String>,
    pub upstream: BTreeMap<String, Vec<String>>,
    pub schedule: Option<String>,
    pub next: Option<i64>,
    pub latest: Option<FlowRunView>,
    /// Runs still open (stalled, or running) that are older than `latest`:
    /// a day whose work is not done although a newer run went on.
    pub older_open: Vec<i64>,
    pub held_by_hand: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlowRunView {
    pub id: i64,
    pub status: Status,
    pub trigger: String,
    pub started_at: i64,
    pub jobs: BTreeMap<String, JobState>,
}

#[derive(Clone)]
pub struct Flows {
    tx: mpsc::Sender<Cmd>,
    views: Arc<Mutex<BTreeMap<String, FlowView>>>,
    job_flow: Arc<HashMap<String, String>>,
}

impl Flows {
    pub fn views(&self) -> Vec<FlowView> {
        lock(&self.views).values().cloned().collect()
    }

    pub fn view(&self, name: &str) -> Option<FlowView> {
        lock(&self.views).get(name).cloned()
    }

    /// The flow a job belongs to.
    pub fn flow_of(&self, job: &str) -> Option<String> {
        self.job_flow.get(job).cloned()
    }

    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, (u16, String)> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| (503, "the agent is shutting down".to_string()))?;
        rx.await
            .map_err(|_| (503, "the agent is shutting down".to_string()))?
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

struct Scheduled {
    job: String,
    flow: String,
    schedule: super::when::Schedule,
    concurrency: Concurrency,
    catch_up: CatchUp,
    next: Option<DateTime<Utc>>,
}

struct Gated {
    flow_run: i64,
    job: String,
    attempt: u32,
    since: Instant,
}

struct Engine {
    defs: BTreeMap<String, Arc<FlowDef>>,
    job_flow: Arc<HashMap<String, String>>,
    scheduled: Vec<Scheduled>,
    runs: BTreeMap<i64, (String, FlowRun)>,
    /// Unit run id → (flow run, job).
    run_map: HashMap<i64, (i64, String)>,
    /// Flow run → the trigger recorded on the job runs it starts: its own
    /// (`schedule`, `manual (WHO)`), `rerun` once a person reran part of it.
    /// Retries are `retry` whatever this says.
    job_triggers: HashMap<i64, String>,
    retries: Vec<(Instant, i64, String)>,
    /// Triggers waiting for the flow's current run (`concurrency = "queue"`).
    queued: HashMap<String, VecDeque<(String, Option<i64>)>>,
    holds: BTreeSet<String>,
    /// Jobs due to start but kept waiting by `hold_while`.
    gated: Vec<Gated>,
    /// Runs to report if still running at the instant (`expected`).
    long: Vec<(Instant, i64, String, u64)>,
    /// `must_finish_by` deadlines: (when, flow run, job).
    deadlines: Vec<(DateTime<Utc>, i64, String)>,
    /// Flow runs whose last save failed: saved again every `SAVE_RETRY`
    /// (kept in `runs` until then, even when finished).
    unsaved: BTreeSet<i64>,
    specs: HashMap<String, crate::config::jobs::JobSpec>,
    checks: crate::probe::checks::Checks,
    /// Job ends of the runs this engine started (never lossy).
    ended_tx: mpsc::UnboundedSender<crate::supervise::RunEnded>,
    store: Store,
    bus: Bus,
    sup: Supervisor,
    views: Arc<Mutex<BTreeMap<String, FlowView>>>,
}

pub fn start(
    config: &Config,
    checks: crate::probe::checks::Checks,
    store: Store,
    bus: Bus,
    sup: Supervisor,
    cancel: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Flows {
    let defs: BTreeMap<String, Arc<FlowDef>> = config
        .flows
        .iter()
        .map(|f| (f.name.clone(), f.clone()))
        .collect();
    let job_flow: HashMap<String, String> = config
        .flows
        .iter()
        .flat_map(|f| f.jobs.iter().map(move |j| (j.clone(), f.name.clone())))
        .collect();
    let scheduled: Vec<Scheduled> = config
        .units
        .iter()
        .filter(|u| u.kind == UnitKind::Job)
        .filter_map(|u| {
            let spec = u.job.as_ref()?;
            Some(Scheduled {
                job: u.name.clone(),
                flow: job_flow.get(&u.name)?.clone(),
                schedule: spec.schedule.clone()?,
                concurrency: spec.concurrency,
                catch_up: spec.catch_up,
                next: None,
            })
        })
        .collect();
    let (tx, rx) = mpsc::channel(64);
    let (ended_tx, ended_rx) = mpsc::unbounded_channel();
    let job_flow = Arc::new(job_flow);
    // Every flow has a view from the start, before the engine's first
    // publish (which waits for recovery and catch-up): the API must not
    // answer "no flow named …" while the agent starts.
    let views: BTreeMap<String, FlowView> = defs
        .iter()
        .map(|(name, def)| {
            let sched = scheduled.iter().find(|s| &s.flow == name);
            let view = FlowView {
                name: name.clone(),
                jobs: def.jobs.clone(),
                upstream: def.upstream.clone(),
                schedule: sched.map(|s| schedule_text(&s.schedule)),
                next: None,
                latest: None,
                older_open: Vec::new(),
                held_by_hand: Vec::new(),
            };
            (name.clone(), view)
        })
        .collect();
    let views = Arc::new(Mutex::new(views));
    let engine = Engine {
        defs,
        job_flow: job_flow.clone(),
        scheduled,
        runs: BTreeMap::new(),
        run_map: HashMap::new(),
        job_triggers: HashMap::new(),
        retries: Vec::new(),
        queued: HashMap::new(),
        holds: BTreeSet::new(),
        gated: Vec::new(),
        long: Vec::new(),
        deadlines: Vec::new(),
        unsaved: BTreeSet::new(),
        specs: config
            .units
            .iter()
            .filter_map(|u| Some((u.name.clone(), u.job.clone()?)))
            .collect(),
        checks,
        ended_tx,
        store,
        bus,
        sup,
        views: views.clone(),
    };
    tasks.spawn(engine.run(rx, ended_rx, cancel));
    Flows {
        tx,
        views,
        job_flow,
    }
}

fn schedule_text(s: &super::when::Schedule) -> String {
    let base = match &s.trigger {
        super::when::Trigger::Cron { expr, .. } => format!("cron \"{expr}\" ({})", s.tz),
        super::when::Trigger::Every(d) => {
            format!("every {}", crate::config::units::format_duration(*d))
        }
    };
    match &s.calendar {
        Some((c, rule)) => format!(
            "{base}, calendar {} (on_closed = \"{}\")",
            c.name,
            rule.as_str()
        ),
        None => base,
    }
}

impl Engine {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Cmd>,
        mut ended: mpsc::UnboundedReceiver<crate::supervise::RunEnded>,
        cancel: CancellationToken,
    ) {
        self.recover().await;
        let now = Utc::now();
        for i in 0..self.scheduled.len() {
            self.catch_up(i, now).await;
            self.scheduled[i].next = self.scheduled[i]
                .schedule
                .next_n(Utc::now(), 1)
                .first()
                .copied();
        }
        self.publish();
        let mut last_publish = Instant::now();
        let mut publish_due = false;
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                cmd = rx.recv() => match cmd {
                    Some(c) => self.command(c).await,
                    None => return,
                },
                Some(end) = ended.recv() => {
                    if let Some((fr, job)) = self.run_map.remove(&end.run_id) {
                        let ok = end.state == crate::store::RunState::Succeeded;
                        self.feed(fr, Input::Ended { job, run_id: end.run_id, ok, reason: end.reason }).await;
                    }
                }
                _ = sleep_until_opt(wake) => self.timers().await,
                _ = tokio::time::sleep(Duration::from_millis(100)), if publish_due => {}
            }
            // Views are refreshed at most every 100 ms: cloning the job
            // states of a big flow on every event would cost more than the jobs.
            publish_due = true;
            if last_publish.elapsed() >= Duration::from_millis(100) {
                self.publish();
                last_publish = Instant::now();
                publish_due = false;
            }
        }
    }

    fn publish(&self) {
        let mut views = lock(&self.views);
        for (name, def) in &self.defs {
            // The newest run by id: an open one in memory, or a newer one
            // that has finished (an older stalled run is not the latest).
            let stored = self
                .store
                .flow_runs(name, 1)
                .ok()
                .and_then(|v| v.into_iter().next());
            let open = self.runs.iter().rev().find(|(_, (f, _))| f == name);
            let latest = match (open, stored) {
                (Some((id, (_, r))), rec) if rec.as_ref().is_none_or(|s| s.id <= *id) => {
                    // Same run: its trigger and start from the record.
                    let (trigger, started_at) = rec
                        .filter(|s| s.id == *id)
                        .map(|s| (s.trigger, s.started_at))
                        .unwrap_or_default();
                    Some(FlowRunView {
                        id: *id,
                        status: r.status(),
                        trigger,
                        started_at,
                        jobs: r.states.clone(),
                    })
                }
                (_, rec) => rec.map(|rec| FlowRunView {
                    id: rec.id,
                    status: match rec.status.as_str() {
                        "succeeded" => Status::Succeeded,
                        "running" => Status::Running,
                        _ => Status::Stalled,
                    },
                    trigger: rec.trigger,
                    started_at: rec.started_at,
                    jobs: serde_json::from_value(rec.states).unwrap_or_default(),
                }),
            };
            let sched = self.scheduled.iter().find(|s| &s.flow == name);
            views.insert(
                name.clone(),
                FlowView {
                    name: name.clone(),
                    jobs: def.jobs.clone(),
                    upstream: def.upstream.clone(),
                    schedule: sched.map(|s| schedule_text(&s.schedule)),
                    next: sched.and_then(|s| s.next).map(|t| t.timestamp_millis()),
                    older_open: self
                        .runs
                        .iter()
                        .filter(|(id, (f, _))| {
                            f == name && latest.as_ref().is_some_and(|l| **id < l.id)
                        })
                        .map(|(id, _)| *id)
                        .collect(),
                    latest,
                    // The flow itself, then its jobs (a flow may share its
                    // name with one of its jobs: one hold, listed once).
                    held_by_hand: std::iter::once(name)
                        .chain(def.jobs.iter().filter(|j| *j != name))
                        .filter(|j| self.holds.contains(*j))
                        .cloned()
                        .collect(),
                },
            );
        }
    }
}

/// How often a flow run whose save failed is saved again.
const SAVE_RETRY: Duration = Duration::from_secs(1);

fn as_json(changed: &[(String, JobState)]) -> Vec<(String, String)> {
    changed
        .iter()
        .map(|(j, st)| (j.clone(), serde_json::to_string(st).unwrap_or_default()))
        .collect()
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
