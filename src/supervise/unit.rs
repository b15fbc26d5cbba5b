//! One task per unit owns everything about it: its runs, its restart policy
//! and its status. Commands (start, stop, restart, run) arrive on a channel,
//! exits from the reaper, limit breaches from the run's watchdog; the task
//! handles one at a time, so a unit never races with itself.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::enforce::RunGroup;
use super::logs::{self, LogSink};
use super::policy::{Decision, Restarter};
use super::reaper::ExitInfo;
use super::watchdog::{kill_for_breach, record_breach, watchdog, Watch};
use super::{spawn, Ctx};
use crate::config::{Limits, UnitConfig, UnitKind};
use crate::event::EventKind;
use crate::store::{NewRun, RunEnd, RunState};
use crate::util::now_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitState {
    /// A job that is not running.
    Idle,
    Running,
    Stopping,
    /// Waiting to restart.
    Backoff,
    /// Crash loop: no more restarts until `mamori restart`.
    GaveUp,
    /// Stopped on request.
    Stopped,
    /// Ended with exit code 0 and not restarted.
    Exited,
    /// Ended badly and not restarted.
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnitStatus {
    pub name: String,
    pub kind: UnitKind,
    pub state: UnitState,
    pub pid: Option<i32>,
    pub run_id: Option<i64>,
    /// When the current run started (ms since the epoch).
    pub started_at: Option<i64>,
    pub uptime_ms: Option<u64>,
    /// Automatic restarts since the agent started.
    pub restarts: u32,
    /// Resident memory of the whole tree at the last sample, bytes.
    pub memory: Option<u64>,
    pub cpu_ms: Option<u64>,
    /// CPU use of the tree over the last sample interval (100 = one core).
    pub cpu_pct: Option<f64>,
    pub fds: Option<u64>,
    pub threads: Option<u64>,
    pub procs: Option<u64>,
    pub last_reason: Option<String>,
    pub last_exit_at: Option<i64>,
    pub limits: Limits,
    #[serde(skip)]
    live: Option<Arc<Watch>>,
}

impl UnitStatus {
    pub fn new(cfg: &UnitConfig) -> Self {
        UnitStatus {
            name: cfg.name.clone(),
            kind: cfg.kind,
            state: match cfg.kind {
                UnitKind::Job => UnitState::Idle,
                UnitKind::Service => UnitState::Stopped,
            },
            pid: None,
            run_id: None,
            started_at: None,
            uptime_ms: None,
            restarts: 0,
            memory: None,
            cpu_ms: None,
            cpu_pct: None,
            fds: None,
            threads: None,
            procs: None,
            last_reason: None,
            last_exit_at: None,
            limits: cfg.limits.clone(),
            live: None,
        }
    }

    /// A copy with the live figures filled in.
    pub fn snapshot(&self) -> UnitStatus {
        let mut s = self.clone();
        if let Some(w) = &self.live {
            // Nothing until the run's first sample: not a made-up 0.
            if let Ok(last) = w.last.lock() {
                if let Some(l) = *last {
                    s.memory = Some(w.rss.load(Ordering::Relaxed));
                    s.cpu_ms = Some(w.cpu_ms.load(Ordering::Relaxed));
                    s.cpu_pct = Some(l.cpu_pct);
                    s.fds = Some(l.fds);
                    s.threads = Some(l.threads);
                    s.procs = Some(l.procs);
                }
            }
        }
        if let Some(t) = s.started_at {
            s.uptime_ms = Some((now_ms() - t).max(0) as u64);
        }
        s
    }
}

/// Why a command could not be done, with the HTTP status that says so.
#[derive(Debug, Clone, Serialize)]
pub struct CmdError {
    #[serde(skip)]
    pub status: u16,
    pub error: String,
}

pub type Reply<T> = oneshot::Sender<Result<T, CmdError>>;

pub enum Command {
    Start {
        by: String,
        /// Recorded on the run: `manual` from a person, `group` from a
        /// failover group.
        trigger: &'static str,
        reply: Reply<String>,
    },
    Stop {
        by: String,
        reply: Reply<String>,
    },
    Restart {
        by: String,
        /// Recorded on the new run: `manual` from a person, `unhealthy`
        /// (`on_unhealthy`) or `leak` (`on_leak`).
        trigger: &'static str,
        reply: Reply<String>,
    },
    /// Stop within `within` (then kill the tree), whatever `stop_timeout`
    /// says: a group's self-fencing has only half a lease for it.
    StopWithin {
        by: String,
        within: Duration,
        reply: Reply<String>,
    },
    /// Jobs only: start a run now; replies with its id.
    Run {
        by: String,
        /// Recorded on the run and its `unit.started` event: `manual`, or
        /// for a flow's job the flow run's trigger (`schedule`, …), `retry`,
        /// `rerun` or `on_failure`.
        trigger: String,
        reply: Reply<i64>,
        /// Told how the run ended. Unlike the broadcast bus, this channel
        /// never drops a message, so a flow never loses a job's end.
        done: Option<mpsc::UnboundedSender<RunEnded>>,
    },
}

/// How a run ended, for whoever started it.
#[derive(Debug, Clone)]
pub struct RunEnded {
    pub unit: String,
    pub run_id: i64,
    pub state: RunState,
    pub reason: String,
}

struct Live {
    id: i64,
    pid: i32,
    started: Instant,
    exit: oneshot::Receiver<ExitInfo>,
    group: Arc<RunGroup>,
    watch: Arc<Watch>,
    watchdog: CancellationToken,
    /// Copies stdout and stderr into the logs (`logs::pump`).
    pump: Option<JoinHandle<()>>,
    wall_deadline: Option<Instant>,
    stop_reason: Option<String>,
    done: Option<mpsc::UnboundedSender<RunEnded>>,
}

pub struct UnitTask {
    /// Shared, not owned: the task's future holds the task twice (an async
    /// fn's argument and the local it becomes), for every unit, for the
    /// agent's whole life.
    cfg: Arc<UnitConfig>,
    ctx: Arc<Ctx>,
    status: Arc<Mutex<UnitStatus>>,
    sink: Arc<Mutex<LogSink>>,
    restarter: Restarter,
    live: Option<Live>,
    backoff_until: Option<Instant>,
}

enum Ev {
    Shutdown,
    Cmd(Command),
    Exited(ExitInfo),
    BackoffDone,
    Wall,
}

impl UnitTask {
    pub fn new(
        cfg: Arc<UnitConfig>,
        ctx: Arc<Ctx>,
        status: Arc<Mutex<UnitStatus>>,
    ) -> std::io::Result<UnitTask> {
        let sink = LogSink::open(ctx.logs_dir.join(&cfg.name), cfg.log)?;
        Ok(UnitTask {
            restarter: Restarter::new(cfg.restart.clone()),
            cfg,
            ctx,
            status,
            sink: Arc::new(Mutex::new(sink)),
            live: None,
            backoff_until: None,
        })
    }

    fn set(&self, f: impl FnOnce(&mut UnitStatus)) {
        let mut guard = match self.status.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut guard);
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Box<Command>>, cancel: CancellationToken) {
        if self.cfg.kind == UnitKind::Service && self.cfg.autostart {
            // A failure is recorded and handled by the restart policy inside.
            let _ = self.start("autostart");
        }
        loop {
            let wall = self.live.as_ref().and_then(|l| l.wall_deadline);
            let backoff = self.backoff_until;
            let ev = {
                let exit = async {
                    match self.live.as_mut() {
                        Some(l) => (&mut l.exit).await.unwrap_or(ExitInfo {
                            code: None,
                            signal: None,
                            cpu: Duration::ZERO,
                            max_rss: 0,
                        }),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => Ev::Shutdown,
                    cmd = rx.recv() => cmd.map(|c| Ev::Cmd(*c)).unwrap_or(Ev::Shutdown),
                    info = exit => Ev::Exited(info),
                    _ = until(backoff) => Ev::BackoffDone,
                    _ = until(wall) => Ev::Wall,
                }
            };
            // The handlers' futures are boxed: inline, the largest of them
            // would be part of every idle unit's task for its whole life.
            match ev {
                Ev::Shutdown => {
                    Box::pin(self.stop("shutdown")).await;
                    return;
                }
                Ev::Cmd(cmd) => Box::pin(self.command(cmd)).await,
                Ev::Exited(info) => Box::pin(self.exited(info)).await,
                Ev::BackoffDone => {
                    self.backoff_until = None;
                    let _ = self.start("restart");
                }
                Ev::Wall => Box::pin(self.wall_breach()).await,
            }
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Start { by, trigger, reply } => {
                self.ctx.bus.emit(EventKind::StartRequested {
                    unit: self.cfg.name.clone(),
                    by,
                });
                if let Some(l) = &self.live {
                    let _ = reply.send(Ok(format!("already running (run {})", l.id)));
                    return;
                }
                self.restarter.reset();
                self.backoff_until = None;
                let r = self.start(trigger);
                let _ = reply.send(r.map(|id| format!("started (run {id})")));
            }
            Command::Stop { by, reply } => {
                self.ctx.bus.emit(EventKind::StopRequested {
                    unit: self.cfg.name.clone(),
                    by,
                });
                let was = self.live.as_ref().map(|l| l.id);
                self.stop("stop").await;
                let _ = reply.send(Ok(match was {
                    Some(id) => format!("stopped (run {id})"),
                    None => "was not running".to_string(),
                }));
            }
            Command::StopWithin { by, within, reply } => {
                self.ctx.bus.emit(EventKind::StopRequested {
                    unit: self.cfg.name.clone(),
                    by,
                });
                let was = self.live.as_ref().map(|l| l.id);
                self.stop_within("stop", within.min(self.cfg.stop_timeout))
                    .await;
                let _ = reply.send(Ok(match was {
                    Some(id) => format!("stopped (run {id})"),
                    None => "was not running".to_string(),
                }));
            }
            Command::Restart { by, trigger, reply } => {
                self.ctx.bus.emit(EventKind::StartRequested {
                    unit: self.cfg.name.clone(),
                    by,
                });
                self.stop("restart").await;
                self.restarter.reset();
                // A group unit on a node where its group is not active: it
                // must not start here, but `restart` is still the way out
                // of `gave-up` (which keeps this node from qualifying).
                if let Some(g) = self.ctx.gates.get(&self.cfg.name).filter(|g| !g.open) {
                    let mut cleared = false;
                    self.set(|s| {
                        if s.state == UnitState::GaveUp {
                            s.state = UnitState::Stopped;
                            cleared = true;
                        }
                    });
                    let _ = reply.send(Ok(format!(
                        "{}not started: group \"{}\" is not active on this node (the group starts it where it is active)",
                        if cleared { "gave-up cleared; " } else { "" },
                        g.group
                    )));
                    return;
                }
                let r = self.start(trigger);
                let _ = reply.send(r.map(|id| format!("restarted (run {id})")));
            }
            Command::Run {
                by,
                trigger,
                reply,
                done,
            } => {
                if self.cfg.kind != UnitKind::Job {
                    let _ = reply.send(Err(CmdError {
                        status: 400,
                        error: format!(
                            "\"{}\" is a service; use `mamori start {}`",
                            self.cfg.name, self.cfg.name
                        ),
                    }));
                    return;
                }
                if let Some(l) = &self.live {
                    let _ = reply.send(Err(CmdError {
                        status: 409,
                        error: format!(
                            "job \"{}\" is already running (run {})",
                            self.cfg.name, l.id
                        ),
                    }));
                    return;
                }
                self.ctx.bus.emit(EventKind::StartRequested {
                    unit: self.cfg.name.clone(),
                    by,
                });
                let started = self.start(&trigger);
                if let (Ok(run_id), Some(done)) = (&started, done) {
                    match self.live.as_mut() {
                        Some(l) => l.done = Some(done),
                        // Could not even start: it has ended already.
                        None => {
                            let _ = done.send(RunEnded {
                                unit: self.cfg.name.clone(),
                                run_id: *run_id,
                                state: RunState::Failed,
                                reason: "spawn failed".into(),
                            });
                        }
                    }
                }
                let _ = reply.send(started);
            }
        }
    }

    /// Starts a run. On failure the run is recorded as failed and, for a
    /// service, the restart policy decides what next.
    fn start(&mut self, trigger: &str) -> Result<i64, CmdError> {
        if let Some(g) = self.ctx.gates.get(&self.cfg.name) {
            if !g.open {
                return Err(CmdError {
                    status: 409,
                    error: format!(
                        "\"{}\" belongs to group \"{}\", which is not active on this node",
                        self.cfg.name, g.group
                    ),
                });
            }
        }
        let now = Instant::now();
        let log_start = lock(&self.sink).offset();
        let inserted = self.ctx.store.insert_run(&NewRun {
            unit: &self.cfg.name,
            kind: self.cfg.kind.as_str(),
            trigger,
            started_at: now_ms(),
            log_start,
        });
        let run_id = match inserted {
            Ok(id) => id,
            Err(e) => {
                // Nothing runs unrecorded; a service is retried like one
                // that could not start (the store may be busy or full).
                let reason = format!("cannot record the run: {e}");
                tracing::error!(unit = %self.cfg.name, error = %e, "Could not start: the run cannot be recorded.");
                self.start_failed(&reason);
                return Err(CmdError {
                    status: 503,
                    error: reason,
                });
            }
        };
        if self.cfg.kind == UnitKind::Service {
            self.restarter.on_start(now);
        }
        match self.spawn(run_id) {
            Ok(live) => {
                self.record_context(run_id);
                self.ctx.sampler.run_started(&self.cfg.name);
                let pid = live.pid;
                if let Err(e) = self.ctx.store.set_run_pid(run_id, pid) {
                    tracing::warn!(unit = %self.cfg.name, error = %e, "Could not record the pid.");
                }
                tracing::info!(unit = %self.cfg.name, pid, run_id, trigger, "Started.");
                self.ctx.bus.emit(EventKind::UnitStarted {
                    unit: self.cfg.name.clone(),
                    run_id,
                    pid,
                    trigger: trigger.to_string(),
                });
                let watch = live.watch.clone();
                self.set(|s| {
                    s.state = UnitState::Running;
                    s.pid = Some(pid);
                    s.run_id = Some(run_id);
                    s.started_at = Some(now_ms());
                    s.live = Some(watch);
                    // Automatic restarts: the policy's, a failing health
                    // check's and a leak's (not a person's).
                    if matches!(trigger, "restart" | "unhealthy" | "leak") {
                        s.restarts += 1;
                    }
                });
                self.live = Some(live);
                Ok(run_id)
            }
            Err(e) => {
                let reason = format!("spawn: {e}");
                tracing::error!(unit = %self.cfg.name, run_id, error = %e, "Could not start.");
                let _ = self.ctx.store.finish_run(
                    run_id,
                    &RunEnd {
                        state: RunState::Failed,
                        ended_at: now_ms(),
                        exit_code: None,
                        signal: None,
                        reason: reason.clone(),
                        peak_rss: 0,
                        cpu_ms: 0,
                        log_end: log_start,
                    },
                );
                self.ctx.bus.emit(EventKind::StartFailed {
                    unit: self.cfg.name.clone(),
                    run_id,
                    error: e.to_string(),
                });
                self.start_failed(&reason);
                Err(CmdError {
                    status: 409,
                    error: format!("could not start \"{}\": {e}", self.cfg.name),
                })
            }
        }
    }

    /// A start that did not happen: the status says why, and a service is
    /// retried by its restart policy after a pause.
    fn start_failed(&mut self, reason: &str) {
        self.set(|s| {
            s.last_reason = Some(reason.to_string());
            s.last_exit_at = Some(now_ms());
            s.state = UnitState::Failed;
        });
        if self.cfg.kind == UnitKind::Service {
            self.decide(false, Duration::ZERO, true);
        }
    }

    /// Records where and how the run runs, in the background, after the
    /// process is started, so a restart is never delayed by it.
    fn record_context(&self, run_id: i64) {
        let cfg = self.cfg.clone();
        let (store, reaper) = (self.ctx.store.clone(), self.ctx.reaper.clone());
        tokio::spawn(async move {
            // At most two collections at a time: a hundred units starting
            // together would otherwise start a hundred blocking threads,
            // each leaving behind a cached stack and a malloc arena.
            let collected = match CONTEXT_SLOTS.acquire().await {
                Ok(_slot) => {
                    tokio::task::spawn_blocking(move || super::context::collect(&cfg)).await
                }
                Err(_) => return,
            };
            let Ok(mut ctx) = collected else {
                return;
            };
            if let Ok(json) = serde_json::to_string(&ctx) {
                let _ = store.set_run_context(run_id, &json);
            }
            if let Some(interp) = ctx.interpreter.clone() {
                ctx.interpreter_version =
                    super::context::interpreter_version(&reaper, &interp).await;
                if let Ok(json) = serde_json::to_string(&ctx) {
                    let _ = store.set_run_context(run_id, &json);
                }
            }
        });
    }

    fn spawn(&mut self, run_id: i64) -> std::io::Result<Live> {
        let group = Arc::new(self.ctx.enforcer.prepare(
            &self.cfg.name,
            run_id,
            self.cfg.limits.memory,
        )?);
        let extra_env = self
            .ctx
            .gates
            .get(&self.cfg.name)
            .map(|g| g.env)
            .unwrap_or_default();
        let spec = spawn::Spec {
            unit: &self.cfg,
            extra_env: &extra_env,
            run_id,
            agent_id: &self.ctx.enforcer.agent_id,
            cgroup_procs: group.procs_file(),
        };
        let mut cmd = match spawn::command(&spec) {
            Ok(c) => c,
            Err(e) => {
                group.remove();
                return Err(e);
            }
        };
        let (mut child, exit) = match self.ctx.reaper.spawn(&mut cmd) {
            Ok(x) => x,
            Err(e) => {
                group.remove();
                // "No such file or directory" alone does not say which.
                let program = cmd.get_program().to_string_lossy();
                return Err(std::io::Error::new(e.kind(), format!("{program}: {e}")));
            }
        };
        let pid = child.id() as i32;
        let mut fds = Vec::with_capacity(2);
        if let Some(out) = child.stdout.take() {
            fds.push(std::os::fd::OwnedFd::from(out));
        }
        if let Some(err) = child.stderr.take() {
            fds.push(std::os::fd::OwnedFd::from(err));
        }
        let pump = self.pump(fds);
        drop(child); // the reaper waits for it, not `Child`
        let watch = Arc::new(Watch::default());
        let token = CancellationToken::new();
        tokio::spawn(watchdog(
            self.ctx.clone(),
            self.cfg.name.clone(),
            run_id,
            pid,
            group.clone(),
            watch.clone(),
            self.cfg.limits.clone(),
            token.clone(),
        ));
        let started = Instant::now();
        Ok(Live {
            id: run_id,
            pid,
            started,
            exit,
            group,
            watch,
            watchdog: token,
            pump,
            wall_deadline: self.cfg.limits.wall.map(|w| started + w),
            stop_reason: None,
            done: None,
        })
    }

    /// Starts copying the run's output pipes into its logs.
    fn pump(&self, fds: Vec<std::os::fd::OwnedFd>) -> Option<JoinHandle<()>> {
        let mut pipes = Vec::with_capacity(fds.len());
        for fd in fds {
            match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                Ok(rx) => pipes.push(rx),
                Err(e) => {
                    tracing::warn!(unit = %self.cfg.name, error = %e, "Cannot capture output.");
                }
            }
        }
        (!pipes.is_empty()).then(|| tokio::spawn(logs::pump(pipes, self.sink.clone())))
    }

    async fn wall_breach(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        live.wall_deadline = None;
        let ran = live.started.elapsed();
        let max = self.cfg.limits.wall.unwrap_or_default();
        kill_for_breach(
            &self.ctx,
            &self.cfg.name,
            live.id,
            (&live.group, live.pid, &live.watch),
            (
                "wall",
                ran.as_millis() as u64,
                max.as_millis() as u64,
                "timer",
            ),
        )
        .await;
    }

    async fn exited(&mut self, info: ExitInfo) {
        let Some(live) = self.live.take() else { return };
        let ran_for = live.started.elapsed();
        let (state, _) = self.finish(live, info).await;
        if self.cfg.kind == UnitKind::Job {
            return;
        }
        self.decide(state == RunState::Succeeded, ran_for, false);
    }

    /// Applies the restart policy after a run of a service ended on its own.
    fn decide(&mut self, success: bool, ran_for: Duration, spawn_failed: bool) {
        let now = Instant::now();
        match self.restarter.on_exit(success, ran_for, now) {
            Decision::Restart(delay) if delay.is_zero() && !spawn_failed => {
                self.start("restart").ok();
            }
            Decision::Restart(delay) => {
                // A command that cannot even start is retried after a pause.
                let delay = if spawn_failed {
                    delay.max(Duration::from_millis(100))
                } else {
                    delay
                };
                self.backoff_until = Some(now + delay);
                self.set(|s| s.state = UnitState::Backoff);
                self.ctx.bus.emit(EventKind::UnitBackoff {
                    unit: self.cfg.name.clone(),
                    delay_ms: delay.as_millis() as u64,
                });
            }
            Decision::GiveUp { starts, window } => {
                tracing::error!(unit = %self.cfg.name, starts, window_s = window.as_secs(), "Gave up: crash loop.");
                self.set(|s| s.state = UnitState::GaveUp);
                self.ctx.bus.emit(EventKind::UnitGaveUp {
                    unit: self.cfg.name.clone(),
                    starts,
                    window_ms: window.as_millis() as u64,
                });
            }
            Decision::Stay => {}
        }
    }

    /// Stops the current run, if any: the stop signal to the whole tree, then
    /// SIGKILL to whatever is left when `stop_timeout` runs out.
    async fn stop(&mut self, reason: &str) {
        self.stop_within(reason, self.cfg.stop_timeout).await
    }

    async fn stop_within(&mut self, reason: &str, grace: Duration) {
        self.backoff_until = None;
        let Some(mut live) = self.live.take() else {
            self.set(|s| {
                if s.state == UnitState::Backoff {
                    s.state = UnitState::Stopped;
                }
            });
            return;
        };
        live.stop_reason = Some(reason.to_string());
        self.set(|s| s.state = UnitState::Stopping);
        let deadline = Instant::now() + grace;
        let enforcer = self.ctx.enforcer.clone();
        enforcer.signal_all(&live.group, live.pid, self.cfg.stop_signal);
        let info = match timeout(grace, &mut live.exit).await {
            Ok(Ok(info)) => {
                live.group.mark_root_gone();
                Some(info)
            }
            _ => None,
        };
        // The main process is gone (or will be killed): give the rest of the
        // tree what is left of the grace period.
        while Instant::now() < deadline
            && !enforcer
                .measure(&live.group, live.pid, Duration::from_millis(100))
                .is_empty()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let info = match info {
            Some(i) => i,
            None => {
                tracing::warn!(unit = %self.cfg.name, "Did not stop in time; killing.");
                enforcer.kill_tree(&live.group, live.pid).await;
                match timeout(Duration::from_secs(5), &mut live.exit).await {
                    Ok(Ok(i)) => i,
                    _ => ExitInfo {
                        code: None,
                        signal: Some(Signal::SIGKILL as i32),
                        cpu: Duration::ZERO,
                        max_rss: 0,
                    },
                }
            }
        };
        self.finish(live, info).await;
        self.set(|s| s.state = UnitState::Stopped);
    }

    /// Ends a run whose main process is gone: kills what is left of the tree,
    /// drains its output, records how it ended.
    async fn finish(&mut self, live: Live, info: ExitInfo) -> (RunState, String) {
        live.watchdog.cancel();
        live.group.mark_root_gone();
        self.ctx.enforcer.kill_tree(&live.group, live.pid).await;
        if let Some(p) = live.pump {
            let _ = timeout(Duration::from_secs(2), p).await;
        }
        if self.ctx.enforcer.kernel_memory_limit()
            && self.cfg.limits.memory.is_some()
            && live.group.oom_kills() > 0
        {
            let peak = live.group.kernel_peak().unwrap_or(0);
            record_breach(
                &self.ctx,
                &self.cfg.name,
                live.id,
                &live.watch,
                "memory",
                peak,
                self.cfg.limits.memory.unwrap_or(0),
                self.ctx.enforcer.mode().as_str(),
            );
        }
        let breach = lock(&live.watch.breach).clone();
        let signal = info.signal.map(signal_name);
        let (state, reason) = if let Some(limit) = breach {
            (RunState::Failed, format!("limit:{limit}"))
        } else if let Some(r) = &live.stop_reason {
            (RunState::Stopped, r.clone())
        } else if info.code.is_some_and(|c| self.cfg.ok_code(c)) {
            (
                RunState::Succeeded,
                format!("exit:{}", info.code.unwrap_or(0)),
            )
        } else if let Some(c) = info.code {
            (RunState::Failed, format!("exit:{c}"))
        } else if let Some(s) = &signal {
            (RunState::Failed, format!("signal:{s}"))
        } else {
            (RunState::Failed, "unknown".to_string())
        };
        // Sampling can miss a short spike (children that allocate and die
        // between two samples); a run's cgroup knows its highest charge.
        let peak = live
            .watch
            .peak
            .load(Ordering::Relaxed)
            .max(info.max_rss)
            .max(live.group.kernel_peak().unwrap_or(0));
        let cpu_ms = live
            .watch
            .cpu_ms
            .load(Ordering::Relaxed)
            .max(info.cpu.as_millis() as u64);
        let log_end = lock(&self.sink).offset();
        let ran_ms = live.started.elapsed().as_millis() as u64;
        if let Err(e) = self.ctx.store.finish_run(
            live.id,
            &RunEnd {
                state,
                ended_at: now_ms(),
                exit_code: info.code,
                signal: signal.clone(),
                reason: reason.clone(),
                peak_rss: peak,
                cpu_ms,
                log_end,
            },
        ) {
            tracing::error!(unit = %self.cfg.name, error = %e, "Could not record the end of a run.");
        }
        live.group.remove();
        tracing::info!(unit = %self.cfg.name, run_id = live.id, state = state.as_str(), %reason, ran_ms, "Ended.");
        if let Some(done) = &live.done {
            let _ = done.send(RunEnded {
                unit: self.cfg.name.clone(),
                run_id: live.id,
                state,
                reason: reason.clone(),
            });
        }
        self.ctx.bus.emit(EventKind::UnitExited {
            unit: self.cfg.name.clone(),
            run_id: live.id,
            state: state.as_str().to_string(),
            reason: reason.clone(),
            exit_code: info.code,
            signal,
            ran_ms,
        });
        let is_job = self.cfg.kind == UnitKind::Job;
        self.ctx.sampler.forget(&self.cfg.name);
        self.set(|s| {
            s.pid = None;
            s.started_at = None;
            s.live = None;
            s.memory = None;
            s.cpu_ms = None;
            s.last_reason = Some(reason.clone());
            s.last_exit_at = Some(now_ms());
            s.state = match (state, is_job) {
                (RunState::Succeeded, _) => UnitState::Exited,
                (RunState::Stopped, _) => UnitState::Stopped,
                _ => UnitState::Failed,
            };
        });
        (state, reason)
    }
}

async fn until(t: Option<Instant>) {
    match t {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

pub fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("SIG{sig}"))
}

/// Context collections running at once (`UnitTask::record_context`).
static CONTEXT_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
