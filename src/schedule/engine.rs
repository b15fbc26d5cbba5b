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
    let scheduled = config
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
    let views = Arc::new(Mutex::new(BTreeMap::new()));
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

    fn next_wake(&self) -> Option<Instant> {
        let now_i = Instant::now();
        let now_u = Utc::now();
        let sched = self
            .scheduled
            .iter()
            .filter_map(|s| s.next)
            .map(|t| now_i + (t - now_u).to_std().unwrap_or(Duration::ZERO))
            .min();
        let retry = self.retries.iter().map(|(t, _, _)| *t).min();
        let gate = (!self.gated.is_empty()).then(|| now_i + Duration::from_millis(500));
        let save = (!self.unsaved.is_empty()).then(|| now_i + SAVE_RETRY);
        let long = self.long.iter().map(|(t, ..)| *t).min();
        let late = self
            .deadlines
            .iter()
            .map(|(t, ..)| now_i + (*t - now_u).to_std().unwrap_or(Duration::ZERO))
            .min();
        [sched, retry, gate, save, long, late]
            .into_iter()
            .flatten()
            .min()
    }

    async fn timers(&mut self) {
        for id in self.unsaved.clone() {
            if self.save(id) {
                self.forget_if_succeeded(id);
            }
        }
        self.check_gates().await;
        self.check_overdue();
        let now_i = Instant::now();
        let due: Vec<(i64, String)> = self
            .retries
            .iter()
            .filter(|(t, _, _)| *t <= now_i)
            .map(|(_, fr, j)| (*fr, j.clone()))
            .collect();
        self.retries.retain(|(t, _, _)| *t > now_i);
        for (fr, job) in due {
            self.feed(fr, Input::RetryDue { job }).await;
        }
        let now = Utc::now();
        for i in 0..self.scheduled.len() {
            let Some(at) = self.scheduled[i].next else {
                continue;
            };
            if at > now {
                continue;
            }
            let s = &self.scheduled[i];
            let plan = plan_due(&s.schedule, s.catch_up, at, now);
            let job = s.job.clone();
            self.scheduled[i].next = plan.next;
            if !plan.skip.is_empty() {
                tracing::warn!(%job, missed = plan.skip.len(), late_ms = (now - at).num_milliseconds(), "Schedule fire times missed (clock stepped, host suspended or agent blocked); catch_up decides.");
            }
            for t in &plan.skip {
                let late = (now - *t).num_seconds();
                self.skip_missed(&job, *t, &format!("missed: {late}s past when the agent got to it (the clock stepped forward, the host was suspended or the agent was blocked; catch_up)"));
            }
            for t in &plan.run {
                let lateness = (now - *t).num_milliseconds();
                tracing::info!(%job, lateness_ms = lateness, "Schedule fired.");
            }
            self.fire_in_order(i, plan.run).await;
        }
    }

    /// Fires due times oldest first. The first goes through the usual
    /// overlap rules; the rest (missed times caught up with `catch_up =
    /// "all"`) wait in the flow's queue, whatever `concurrency` says, so that
    /// each runs, in order, once the one before has finished.
    async fn fire_in_order(&mut self, i: usize, times: Vec<DateTime<Utc>>) {
        let mut times = times.into_iter();
        let Some(first) = times.next() else {
            return;
        };
        self.fire(i, first.timestamp_millis()).await;
        let (job, flow) = {
            let s = &self.scheduled[i];
            (s.job.clone(), s.flow.clone())
        };
        for t in times {
            let at = t.timestamp_millis();
            if self.holds.contains(&flow) || self.holds.contains(&job) {
                self.skip_fire(job.clone(), at, "held by hand".into());
                continue;
            }
            self.queued
                .entry(flow.clone())
                .or_default()
                .push_back(("schedule".into(), Some(at)));
        }
        let running = self
            .runs
            .values()
            .any(|(f, r)| *f == flow && r.status() == Status::Running);
        if !running {
            // The first did not start (it could not be created): the queue
            // must not wait for an end that will not come.
            if let Some((trigger, Some(at))) =
                self.queued.get_mut(&flow).and_then(|q| q.pop_front())
            {
                Box::pin(self.start_scheduled(&flow, &trigger, job, at)).await;
            }
        }
    }

    /// After the agent was down: fires missed since the last recorded one.
    async fn catch_up(&mut self, i: usize, now: DateTime<Utc>) {
        let s = &self.scheduled[i];
        let Ok(Some(last)) = self.store.last_fire(&s.job) else {
            return;
        };
        let Some(last) = DateTime::from_timestamp_millis(last) else {
            return;
        };
        let missed = due_after(&s.schedule, last, now);
        let (run, skip) = settle(s.catch_up, missed, false);
        let job = s.job.clone();
        for t in skip {
            self.skip_missed(&job, t, "missed while the agent was down (catch_up)");
        }
        self.fire_in_order(i, run).await;
    }

    /// A missed fire time that does not run: recorded as fired (so that it
    /// is not missed again after a restart) and reported.
    fn skip_missed(&self, job: &str, t: DateTime<Utc>, reason: &str) {
        if let Err(e) = self.store.record_fire(job, t.timestamp_millis()) {
            tracing::error!(%job, error = %e, "Could not record a skipped fire time; it may be reported again after a restart.");
        }
        self.bus.emit(EventKind::JobSkipped {
            job: job.to_string(),
            scheduled_for: t.timestamp_millis(),
            reason: reason.to_string(),
        });
    }

    /// A fire time that does not run now (held, or the previous run still
    /// running): reported once, even when the store cannot record it.
    fn skip_fire(&self, job: String, at: i64, reason: String) {
        match self.store.record_fire(&job, at) {
            Ok(true) => {}
            // This time was already fired or reported.
            Ok(false) => return,
            Err(e) => {
                tracing::error!(%job, error = %e, "Could not record a skipped fire time; it may be reported again after a restart.");
            }
        }
        self.bus.emit(EventKind::JobSkipped {
            job,
            scheduled_for: at,
            reason,
        });
    }

    /// A scheduled fire: overlap rules, then a new flow run.
    async fn fire(&mut self, i: usize, at: i64) {
        let (job, flow, concurrency) = {
            let s = &self.scheduled[i];
            (s.job.clone(), s.flow.clone(), s.concurrency)
        };
        if self.holds.contains(&flow) || self.holds.contains(&job) {
            self.skip_fire(job, at, "held by hand".into());
            return;
        }
        let running: Vec<i64> = self
            .runs
            .iter()
            .filter(|(_, (f, r))| *f == flow && r.status() == Status::Running)
            .map(|(id, _)| *id)
            .collect();
        if !running.is_empty() {
            match concurrency {
                Concurrency::Forbid => {
                    let reason = format!("the previous run of flow \"{flow}\" (flow run {}) is still running (concurrency = \"forbid\")", running[0]);
                    self.skip_fire(job, at, reason);
                    return;
                }
                Concurrency::Queue => {
                    self.queued
                        .entry(flow)
                        .or_default()
                        .push_back(("schedule".into(), Some(at)));
                    return;
                }
                Concurrency::Replace => {
                    for id in running {
                        self.cancel_run(id, "replaced by a newer scheduled run")
                            .await;
                    }
                }
            }
        }
        self.start_scheduled(&flow, "schedule", job, at).await;
    }

    /// Starts the flow run of a scheduled fire; a fire that cannot start
    /// one is logged and reported (`job.skipped`), never dropped silently.
    async fn start_scheduled(&mut self, flow: &str, trigger: &str, job: String, at: i64) {
        match self.new_run(flow, trigger, Some((job.clone(), at))).await {
            Ok(_) => {}
            // Recorded already: that time ran (the one-run-per-time guarantee).
            Err((409, e)) => {
                tracing::info!(%job, %flow, scheduled_for = at, "Not starting a flow run: {e}.")
            }
            Err((_, e)) => {
                tracing::error!(%job, %flow, scheduled_for = at, error = %e, "Could not start a scheduled flow run.");
                self.bus.emit(EventKind::JobSkipped {
                    job,
                    scheduled_for: at,
                    reason: format!("could not start the flow run: {e}"),
                });
            }
        }
    }

    async fn cancel_run(&mut self, id: i64, why: &str) {
        let Some((_, run)) = self.runs.get(&id) else {
            return;
        };
        let running: Vec<String> = run
            .states
            .iter()
            .filter(|(_, s)| matches!(s, JobState::Running { .. }))
            .map(|(j, _)| j.clone())
            .collect();
        for job in running {
            let by = format!("flow run {id}: {why}");
            let _ = self
                .sup
                .ask(&job, |reply| Command::Stop { by, reply })
                .await;
        }
        self.retries.retain(|(_, fr, _)| *fr != id);
        self.run_map.retain(|_, (fr, _)| *fr != id);
        self.unsaved.remove(&id);
        self.job_triggers.remove(&id);
        if let Some((flow, mut run)) = self.runs.remove(&id) {
            let store = &self.store;
            let saved = run.save_changes(|changed| {
                store.save_flow_run(id, "cancelled", &as_json(changed), now_ms())
            });
            if let Err(e) = saved {
                tracing::error!(%flow, flow_run = id, error = %e, "Could not save a cancelled flow run.");
            }
            tracing::warn!(%flow, flow_run = id, why, "Flow run cancelled.");
        }
    }

    async fn new_run(
        &mut self,
        flow: &str,
        trigger: &str,
        scheduled: Option<(String, i64)>,
    ) -> Result<i64, (u16, String)> {
        let def = self
            .defs
            .get(flow)
            .cloned()
            .ok_or_else(|| (404, format!("no flow named \"{flow}\"")))?;
        let run = FlowRun::new(def);
        // Job states are saved as they change (flow_jobs); all start waiting.
        let states = "{}";
        let id = match self.store.insert_flow_run(
            flow,
            trigger,
            scheduled.as_ref().map(|(j, at)| (j.as_str(), *at)),
            now_ms(),
            states,
        ) {
            Ok(Some(id)) => id,
            Ok(None) => return Err((409, "that scheduled time has already run".into())),
            Err(e) => return Err((503, format!("store: {e}"))),
        };
        self.bus.emit(EventKind::FlowStarted {
            flow: flow.to_string(),
            flow_run: id,
            trigger: trigger.to_string(),
        });
        let at = scheduled
            .as_ref()
            .and_then(|(_, ms)| DateTime::from_timestamp_millis(*ms))
            .unwrap_or_else(Utc::now);
        self.plan_deadlines(flow, id, at);
        self.job_triggers.insert(id, trigger.to_string());
        self.runs.insert(id, (flow.to_string(), run));
        self.feed(id, Input::Start).await;
        Ok(id)
    }

    /// Feeds one input to a flow run and carries out its actions.
    async fn feed(&mut self, id: i64, input: Input) {
        if matches!(
            input,
            Input::RerunFromFailed | Input::RerunFrom { .. } | Input::RerunOnly { .. }
        ) {
            self.job_triggers.insert(id, "rerun".into());
        }
        let mut pending = VecDeque::from([input]);
        while let Some(input) = pending.pop_front() {
            let Some((flow, run)) = self.runs.get_mut(&id) else {
                return;
            };
            let flow = flow.clone();
            let actions = match run.handle(input, &self.holds) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(%flow, flow_run = id, error = %e, "Flow input refused.");
                    continue;
                }
            };
            for a in actions {
                match a {
                    Action::Run { job, attempt } => {
                        if let Some(why) = self.gate(&job) {
                            let reason = format!("waiting (hold_while): {why}");
                            self.bus.emit(EventKind::JobHeld {
                                job: job.clone(),
                                flow: flow.clone(),
                                flow_run: id,
                                reason,
                            });
                            self.gated.push(Gated {
                                flow_run: id,
                                job,
                                attempt,
                                since: Instant::now(),
                            });
                            continue;
                        }
                        if let Some(input) = self.launch(&flow, id, &job, attempt).await {
                            pending.push_back(input);
                        }
                    }
                    Action::RetryAfter { job, delay } => {
                        tracing::info!(%job, flow_run = id, delay_ms = delay.as_millis() as u64, "Job failed; retrying.");
                        self.retries.push((Instant::now() + delay, id, job));
                    }
                    a @ (Action::Failed { .. } | Action::Held { .. }) => {
                        self.announce(&flow, id, a);
                    }
                    Action::Recover { job, failed } => {
                        let by = format!("on_failure of {failed} (flow {flow} run {id})");
                        if let Err(e) = self
                            .sup
                            .ask(&job, |reply| Command::Run {
                                by,
                                trigger: "on_failure".into(),
                                reply,
                                done: Some(self.ended_tx.clone()),
                            })
                            .await
                        {
                            tracing::error!(%job, error = %e.error, "Could not start the recovery job.");
                        }
                    }
                    Action::Finished => {
                        self.bus.emit(EventKind::FlowFinished {
                            flow: flow.clone(),
                            flow_run: id,
                        });
                    }
                    Action::Stalled => {
                        self.bus.emit(EventKind::FlowStalled {
                            flow: flow.clone(),
                            flow_run: id,
                        });
                    }
                }
            }
        }
        let saved = self.save(id);
        let done = self.runs.get(&id).map(|(f, r)| (f.clone(), r.status()));
        if saved {
            self.forget_if_succeeded(id);
        }
        // A finished run lets a queued trigger go.
        if let Some((flow, status)) = done {
            if status != Status::Running {
                if let Some((trigger, at)) = self.queued.get_mut(&flow).and_then(|q| q.pop_front())
                {
                    let job = self
                        .scheduled
                        .iter()
                        .find(|s| s.flow == flow)
                        .map(|s| s.job.clone());
                    match at.zip(job) {
                        Some((at, job)) => {
                            Box::pin(self.start_scheduled(&flow, &trigger, job, at)).await
                        }
                        None => {
                            if let Err((_, e)) = Box::pin(self.new_run(&flow, &trigger, None)).await
                            {
                                tracing::error!(%flow, %trigger, error = %e, "Could not start a queued flow run.");
                            }
                        }
                    }
                }
            }
        }
    }

    /// A succeeded run whose end is saved leaves memory (the store has it).
    fn forget_if_succeeded(&mut self, id: i64) {
        if self
            .runs
            .get(&id)
            .is_some_and(|(_, r)| r.status() == Status::Succeeded)
        {
            self.runs.remove(&id);
            self.job_triggers.remove(&id);
        }
    }

    /// Starts a job's run for a flow run; the input to feed back.
    async fn launch(&mut self, flow: &str, id: i64, job: &str, attempt: u32) -> Option<Input> {
        let by = format!("flow {flow} run {id} (attempt {attempt})");
        let trigger = if attempt > 1 {
            "retry".to_string()
        } else {
            self.job_triggers
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("flow run {id}"))
        };
        match self
            .sup
            .ask(job, |reply| Command::Run {
                by,
                trigger,
                reply,
                done: Some(self.ended_tx.clone()),
            })
            .await
        {
            Ok(run_id) => {
                self.run_map.insert(run_id, (id, job.to_string()));
                if let Some(expected) = self.expected(job) {
                    self.long.push((
                        Instant::now() + expected,
                        run_id,
                        job.to_string(),
                        expected.as_millis() as u64,
                    ));
                }
                Some(Input::Started {
                    job: job.to_string(),
                    run_id,
                })
            }
            Err(e) => Some(Input::Ended {
                job: job.to_string(),
                run_id: 0,
                ok: false,
                reason: e.error,
            }),
        }
    }

    /// Why `hold_while` keeps the job from starting now, if it does.
    fn gate(&self, job: &str) -> Option<String> {
        let spec = self.specs.get(job)?;
        let down: Vec<String> = spec
            .hold_while
            .iter()
            .filter_map(|(name, _)| {
                if let Some(c) = self.checks.status(name) {
                    return (c.status == crate::probe::health::Status::Down).then(|| {
                        format!(
                            "check \"{name}\" is down ({})",
                            c.last_reason.unwrap_or_default()
                        )
                    });
                }
                // An alert rule: gated while one of its alerts is active
                // (acknowledged means a person is on it; it still fires).
                use crate::alert::db::AlertStore;
                let active = self.store.active_alerts().ok()?;
                active
                    .into_iter()
                    .find(|a| &a.rule == name)
                    .map(|a| format!("alert \"{}\" is {} ({})", a.key, a.state, a.title))
            })
            .collect();
        (!down.is_empty()).then(|| down.join("; "))
    }

    /// Starts gated jobs whose checks cleared; holds those that waited too long.
    async fn check_gates(&mut self) {
        let gated = std::mem::take(&mut self.gated);
        for g in gated {
            let Some(flow) = self.runs.get(&g.flow_run).map(|(f, _)| f.clone()) else {
                continue;
            };
            match self.gate(&g.job) {
                None => {
                    tracing::info!(job = %g.job, flow_run = g.flow_run, "hold_while cleared; starting.");
                    if let Some(input) = self.launch(&flow, g.flow_run, &g.job, g.attempt).await {
                        self.feed(g.flow_run, input).await;
                    }
                }
                Some(why) => {
                    let timeout = self.specs.get(&g.job).and_then(|s| s.hold_timeout);
                    if timeout.is_some_and(|t| g.since.elapsed() >= t) {
                        let reason = format!(
                            "held: hold_while still not clear after {}: {why}",
                            crate::config::units::format_duration(g.since.elapsed())
                        );
                        self.feed(g.flow_run, Input::GiveUpWaiting { job: g.job, reason })
                            .await;
                    } else {
                        self.gated.push(g);
                    }
                }
            }
        }
    }

    /// How long a run of `job` may take before it is reported as long.
    fn expected(&self, job: &str) -> Option<Duration> {
        let spec = self.specs.get(job)?;
        let by_history = spec.expected_factor.and_then(|f| {
            let runs = self.store.runs(Some(job), 50).ok()?;
            let mut took: Vec<i64> = runs
                .iter()
                .filter(|r| r.state == crate::store::RunState::Succeeded)
                .filter_map(|r| Some(r.ended_at? - r.started_at))
                .take(20)
                .collect();
            if took.len() < 5 {
                return None;
            }
            took.sort_unstable();
            let p95 = took[(took.len() * 95).div_ceil(100) - 1].max(1) as f64;
            Some(Duration::from_millis((p95 * f) as u64))
        });
        match (spec.expected, by_history) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Reports runs longer than expected and jobs past `must_finish_by`.
    fn check_overdue(&mut self) {
        let now_i = Instant::now();
        let due: Vec<(i64, String, u64)> = self
            .long
            .iter()
            .filter(|(t, ..)| *t <= now_i)
            .map(|(_, r, j, e)| (*r, j.clone(), *e))
            .collect();
        self.long.retain(|(t, ..)| *t > now_i);
        for (run_id, job, expected_ms) in due {
            if let Ok(Some(run)) = self.store.run(run_id) {
                if run.state == crate::store::RunState::Running {
                    let running_ms = (now_ms() - run.started_at).max(0) as u64;
                    tracing::warn!(%job, run_id, running_ms, expected_ms, "Job runs longer than expected.");
                    self.bus.emit(EventKind::JobLong {
                        job,
                        run_id,
                        running_ms,
                        expected_ms,
                    });
                }
            }
        }
        let now = Utc::now();
        let late: Vec<(DateTime<Utc>, i64, String)> = self
            .deadlines
            .iter()
            .filter(|(t, ..)| *t <= now)
            .cloned()
            .collect();
        self.deadlines.retain(|(t, ..)| *t > now);
        for (deadline, flow_run, job) in late {
            let Some((flow, run)) = self.runs.get(&flow_run) else {
                continue;
            };
            let st = run.states.get(&job);
            if matches!(
                st,
                Some(JobState::Succeeded { .. } | JobState::Released { .. })
            ) {
                continue;
            }
            let state = st.map(super::flow::state_name).unwrap_or("unknown");
            tracing::warn!(%job, flow_run, state, "Job has not finished by its deadline.");
            self.bus.emit(EventKind::JobLate {
                job,
                flow: flow.clone(),
                flow_run,
                deadline: deadline.timestamp_millis(),
                state: state.to_string(),
            });
        }
    }

    /// `must_finish_by` deadlines of a new flow run, from its trigger time.
    fn plan_deadlines(&mut self, flow: &str, id: i64, trigger_at: DateTime<Utc>) {
        let Some(def) = self.defs.get(flow) else {
            return;
        };
        let mut planned = Vec::new();
        for job in &def.jobs {
            let Some(spec) = self.specs.get(job) else {
                continue;
            };
            let Some(by) = spec.must_finish_by else {
                continue;
            };
            let mut day = trigger_at.with_timezone(&spec.tz).date_naive();
            for _ in 0..2 {
                let at =
                    chrono::TimeZone::from_local_datetime(&spec.tz, &day.and_time(by)).earliest();
                if let Some(t) = at
                    .map(|t| t.with_timezone(&Utc))
                    .filter(|t| *t > trigger_at)
                {
                    planned.push((t, id, job.clone()));
                    break;
                }
                day = day.succ_opt().unwrap_or(day);
            }
        }
        self.deadlines.extend(planned);
    }

    /// Saves the run's status and changed job states; false if the store
    /// failed (the changes stay marked and are saved again, see `unsaved`).
    fn save(&mut self, id: i64) -> bool {
        let Some((_, run)) = self.runs.get_mut(&id) else {
            self.unsaved.remove(&id);
            return true;
        };
        let status = match run.status() {
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Stalled => "stalled",
        };
        let store = &self.store;
        let saved = run
            .save_changes(|changed| store.save_flow_run(id, status, &as_json(changed), now_ms()));
        match saved {
            Ok(()) => {
                if self.unsaved.remove(&id) {
                    tracing::info!(flow_run = id, "Flow run saved again.");
                }
                true
            }
            Err(e) => {
                // Logged once per outage, not at every retry.
                if self.unsaved.insert(id) {
                    tracing::error!(flow_run = id, error = %e, "Could not save a flow run; retrying.");
                }
                false
            }
        }
    }

    /// The event for a job that failed for good or is held.
    fn announce(&self, flow: &str, flow_run: i64, action: Action) {
        let flow = flow.to_string();
        match action {
            Action::Failed { job, reason } => {
                self.bus.emit(EventKind::JobFailed {
                    job,
                    flow,
                    flow_run,
                    reason,
                });
            }
            Action::Held { job, reason } => {
                self.bus.emit(EventKind::JobHeld {
                    job,
                    flow,
                    flow_run,
                    reason,
                });
            }
            _ => {}
        }
    }

    /// Loads unfinished flow runs and holds after a restart.
    async fn recover(&mut self) {
        if let Ok(holds) = self.store.holds() {
            self.holds = holds.into_iter().map(|h| h.target).collect();
        }
        let Ok(open) = self.store.open_flow_runs() else {
            return;
        };
        for rec in open {
            let Some(def) = self.defs.get(&rec.flow).cloned() else {
                continue;
            };
            let saved: BTreeMap<String, JobState> =
                serde_json::from_value(rec.states).unwrap_or_default();
            let mut run = FlowRun::restore(def, saved);
            let actions = run.interrupted();
            for a in actions {
                self.announce(&rec.flow, rec.id, a);
            }
            // Retries that were pending resume now.
            for (job, s) in &run.states {
                if matches!(s, JobState::RetryWait { .. }) {
                    self.retries.push((Instant::now(), rec.id, job.clone()));
                }
            }
            self.job_triggers.insert(rec.id, rec.trigger.clone());
            self.runs.insert(rec.id, (rec.flow.clone(), run));
            self.save(rec.id);
        }
    }

    /// The open flow run a rerun or release acts on: `run` when given, else
    /// the flow's newest run, which must still be open. An older run left
    /// open (stalled) when a newer one has since succeeded is never picked
    /// by default: acting on it would redo an old day's work unasked.
    fn open_run(&self, flow: &str, run: Option<i64>, what: &str) -> Result<i64, (u16, String)> {
        let open: Vec<i64> = self
            .runs
            .iter()
            .filter(|(_, (f, _))| f == flow)
            .map(|(id, _)| *id)
            .collect();
        if let Some(id) = run {
            if open.contains(&id) {
                return Ok(id);
            }
            let stored = self
                .store
                .flow_run_status(id)
                .map_err(|e| (503, format!("store: {e}")))?;
            return Err(match stored {
                Some((f, status)) if f == flow => (
                    409,
                    format!("flow run {id} of \"{flow}\" is not open (it is {status})"),
                ),
                _ => (404, format!("no flow run {id} of \"{flow}\"")),
            });
        }
        let newest_stored = self
            .store
            .flow_runs(flow, 1)
            .map_err(|e| (503, format!("store: {e}")))?
            .first()
            .map(|r| r.id);
        match (open.last(), newest_stored) {
            (Some(&id), stored) if stored.is_none_or(|s| s <= id) => Ok(id),
            (Some(_), Some(newest)) => {
                let ids: Vec<String> = open.iter().map(|i| i.to_string()).collect();
                Err((409, format!(
                    "the newest run of flow \"{flow}\" (flow run {newest}) succeeded; older flow runs are still open: {}; name one with --run ID {what} it",
                    ids.join(", ")
                )))
            }
            _ => Err((409, format!("flow \"{flow}\" has no open run {what} (it has not run, or its last run succeeded)"))),
        }
    }

    async fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Start { flow, by, reply } => {
                let running = self
                    .runs
                    .values()
                    .any(|(f, r)| *f == flow && r.status() == Status::Running);
                let r = if running {
                    Err((409, format!("flow \"{flow}\" is already running")))
                } else {
                    self.new_run(&flow, &format!("manual ({by})"), None).await
                };
                let _ = reply.send(r);
            }
            Cmd::Rerun {
                flow,
                how,
                run,
                by,
                comment,
                reply,
            } => {
                if let Rerun::From(j) | Rerun::Only(j) = &how {
                    if !self.defs.get(&flow).is_some_and(|d| d.jobs.contains(j)) {
                        let _ =
                            reply.send(Err((404, format!("no job \"{j}\" in flow \"{flow}\""))));
                        return;
                    }
                }
                let id = match self.open_run(&flow, run, "to rerun") {
                    Ok(id) => id,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                let (input, action, target) = match &how {
                    Rerun::FromFailed => {
                        (Input::RerunFromFailed, "rerun --from-failed", flow.clone())
                    }
                    Rerun::From(j) => (
                        Input::RerunFrom { job: j.clone() },
                        "rerun --from",
                        j.clone(),
                    ),
                    Rerun::Only(j) => (
                        Input::RerunOnly { job: j.clone() },
                        "rerun --only",
                        j.clone(),
                    ),
                };
                let r = self.checked(id, input).await;
                if r.is_ok() {
                    self.bus.emit(EventKind::FlowAction {
                        flow,
                        action: action.into(),
                        target,
                        by,
                        comment,
                    });
                }
                let _ = reply.send(r.map(|_| id));
            }
            Cmd::Release {
                job,
                run,
                by,
                comment,
                reply,
            } => {
                let Some(flow) = self.job_flow.get(&job).cloned() else {
                    let _ = reply.send(Err((404, format!("no job named \"{job}\""))));
                    return;
                };
                let id = match self.open_run(&flow, run, "to release a job in") {
                    Ok(id) => id,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                let r = self
                    .checked(
                        id,
                        Input::Release {
                            job: job.clone(),
                            by: by.clone(),
                        },
                    )
                    .await;
                if r.is_ok() {
                    self.bus.emit(EventKind::FlowAction {
                        flow,
                        action: "release".into(),
                        target: job,
                        by,
                        comment,
                    });
                }
                let _ = reply.send(r.map(|_| id));
            }
            Cmd::Hold {
                target,
                by,
                comment,
                reply,
            } => {
                let flow = self.flow_for(&target);
                let Some(flow) = flow else {
                    let _ = reply.send(Err((404, format!("no job or flow named \"{target}\""))));
                    return;
                };
                if let Err(e) = self.store.set_hold(&target, &by, &comment, now_ms()) {
                    let _ = reply.send(Err((503, format!("store: {e}"))));
                    return;
                }
                self.holds.insert(target.clone());
                let jobs = self.jobs_of(&target);
                let ids: Vec<i64> = self
                    .runs
                    .iter()
                    .filter(|(_, (f, _))| *f == flow)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    for j in &jobs {
                        self.feed(
                            id,
                            Input::Hold {
                                job: j.clone(),
                                by: by.clone(),
                            },
                        )
                        .await;
                    }
                }
                self.bus.emit(EventKind::FlowAction {
                    flow,
                    action: "hold".into(),
                    target,
                    by,
                    comment,
                });
                let _ = reply.send(Ok(()));
            }
            Cmd::Unhold { target, by, reply } => {
                let Some(flow) = self.flow_for(&target) else {
                    let _ = reply.send(Err((404, format!("no job or flow named \"{target}\""))));
                    return;
                };
                match self.store.clear_hold(&target) {
                    Ok(false) => {
                        let _ = reply.send(Err((409, format!("\"{target}\" is not held"))));
                        return;
                    }
                    Err(e) => {
                        let _ = reply.send(Err((503, format!("store: {e}"))));
                        return;
                    }
                    Ok(true) => {}
                }
                self.holds.remove(&target);
                let jobs = self.jobs_of(&target);
                let ids: Vec<i64> = self
                    .runs
                    .iter()
                    .filter(|(_, (f, _))| *f == flow)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    for j in &jobs {
                        if !self.holds.contains(j) {
                            self.feed(id, Input::Unhold { job: j.clone() }).await;
                        }
                    }
                }
                self.bus.emit(EventKind::FlowAction {
                    flow,
                    action: "unhold".into(),
                    target,
                    by,
                    comment: String::new(),
                });
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn flow_for(&self, target: &str) -> Option<String> {
        if self.defs.contains_key(target) {
            Some(target.to_string())
        } else {
            self.job_flow.get(target).cloned()
        }
    }

    fn jobs_of(&self, target: &str) -> Vec<String> {
        match self.defs.get(target) {
            Some(def) => def.jobs.clone(),
            None => vec![target.to_string()],
        }
    }

    /// Feeds a person's command, reporting a refusal to them.
    async fn checked(&mut self, id: i64, input: Input) -> Result<(), (u16, String)> {
        let Some((_, run)) = self.runs.get(&id) else {
            return Err((409, "that flow run is finished".into()));
        };
        // Dry run on a copy: a refusal changes nothing.
        let mut probe = run.clone();
        probe
            .handle(input.clone(), &self.holds)
            .map_err(|e| (409, e))?;
        self.feed(id, input).await;
        Ok(())
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
