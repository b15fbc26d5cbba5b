//! Running the checks: one task per check, so a slow check never delays
//! another; results feed the pure `Health` state; flips become events; a
//! service's health going down can restart it (`on_unhealthy = "restart"`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::health::{Health, Status};
use super::logtail::Tail;
use super::probes;
use crate::config::checks::{CheckConfig, CheckKind, LogSource};
use crate::config::{Config, OnUnhealthy};
use crate::event::{Bus, EventKind};
use crate::store::Store;
use crate::supervise::reaper::Reaper;
use crate::supervise::{Command, Supervisor, UnitState};
use crate::util::now_ms;

/// What a check looks like from outside.
#[derive(Debug, Clone, Serialize)]
pub struct CheckStatus {
    pub name: String,
    pub kind: &'static str,
    pub unit: Option<String>,
    pub status: Status,
    /// When the status last flipped (ms since the epoch).
    pub since: Option<i64>,
    pub last_checked_at: Option<i64>,
    pub last_ok_at: Option<i64>,
    /// Why the last failing probe failed (kept after recovery, with `last_failed_at`).
    pub last_reason: Option<String>,
    pub last_failed_at: Option<i64>,
    pub last_latency_ms: Option<f64>,
    pub interval_ms: u64,
    pub fall: u32,
    pub rise: u32,
    /// Heartbeats: the last ping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ping_at: Option<i64>,
}

struct Entry {
    cfg: CheckConfig,
    health: Health,
    view: CheckStatus,
    /// The last status an event told (`up`, `down` or `paused`) and its
    /// `since`. A service's restart makes its health `unknown` without an
    /// event; judged the same as before, it is not news (a crash-looping
    /// service would emit `check.down` at every restart).
    told: Option<(Status, Option<i64>)>,
}

pub struct ProbeCtx {
    pub bus: Bus,
    pub store: Store,
    pub reaper: Reaper,
    pub http: crate::util::LazyHttp,
    pub logs_dir: std::path::PathBuf,
}

#[derive(Clone)]
pub struct Checks {
    entries: Arc<BTreeMap<String, Arc<Mutex<Entry>>>>,
    order: Arc<Vec<String>>,
    ctx: Arc<ProbeCtx>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Checks {
    pub fn start(
        config: &Config,
        ctx: Arc<ProbeCtx>,
        sup: Supervisor,
        cancel: CancellationToken,
        tasks: &mut JoinSet<()>,
    ) -> Checks {
        let on_unhealthy: HashMap<String, OnUnhealthy> = config
            .units
            .iter()
            .map(|u| (u.name.clone(), u.on_unhealthy))
            .collect();
        let mut entries = BTreeMap::new();
        let mut order = Vec::new();
        for cfg in &config.checks {
            let view = CheckStatus {
                name: cfg.name.clone(),
                kind: cfg.kind.name(),
                unit: cfg.service.clone(),
                status: Status::Unknown,
                since: None,
                last_checked_at: None,
                last_ok_at: None,
                last_reason: None,
                last_failed_at: None,
                last_latency_ms: None,
                interval_ms: cfg.interval.as_millis() as u64,
                fall: cfg.fall,
                rise: cfg.rise,
                last_ping_at: None,
            };
            let entry = Arc::new(Mutex::new(Entry {
                told: None,
                health: Health::new(cfg.fall, cfg.rise),
                cfg: cfg.clone(),
                view,
            }));
            order.push(cfg.name.clone());
            entries.insert(cfg.name.clone(), entry.clone());
            let restart = cfg
                .service
                .as_ref()
                .is_some_and(|s| on_unhealthy.get(s) == Some(&OnUnhealthy::Restart));
            let task = Task {
                entry,
                ctx: ctx.clone(),
                sup: sup.clone(),
                restart_on_down: restart,
            };
            let token = cancel.child_token();
            match &cfg.kind {
                CheckKind::Log { .. } => tasks.spawn(task.run_log(token)),
                CheckKind::Heartbeat { .. } => tasks.spawn(task.run_heartbeat(token)),
                _ => tasks.spawn(task.run_probe(token)),
            };
        }
        Checks {
            entries: Arc::new(entries),
            order: Arc::new(order),
            ctx,
        }
    }

    pub fn statuses(&self) -> Vec<CheckStatus> {
        self.order
            .iter()
            .filter_map(|n| self.entries.get(n))
            .map(|e| lock(e).view.clone())
            .collect()
    }

    pub fn status(&self, name: &str) -> Option<CheckStatus> {
        self.entries.get(name).map(|e| lock(e).view.clone())
    }

    /// A heartbeat ping from outside (`POST /api/v1/heartbeats/{name}`).
    pub fn ping(&self, name: &str) -> Result<CheckStatus, (u16, String)> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| (404, format!("no check named \"{name}\"")))?;
        if !matches!(lock(entry).cfg.kind, CheckKind::Heartbeat { .. }) {
            return Err((400, format!("check \"{name}\" is not a heartbeat")));
        }
        ping(entry, &self.ctx, now_ms());
        Ok(lock(entry).view.clone())
    }
}

/// Records a ping: persisted, and a late heartbeat is up again.
fn ping(entry: &Mutex<Entry>, ctx: &ProbeCtx, at: i64) {
    let name = lock(entry).cfg.name.clone();
    if let Err(e) = ctx.store.set_ping(&name, at) {
        tracing::error!(check = %name, error = %e, "Could not store a heartbeat ping.");
    }
    let mut e = lock(entry);
    e.view.last_ping_at = Some(at);
    e.view.last_ok_at = Some(at);
    let flip = e.health.set(Status::Up);
    apply_flip(&mut e, flip, None, ctx);
}

/// Updates the view after a flip and emits the event.
fn apply_flip(
    e: &mut Entry,
    flip: Option<Status>,
    reason: Option<&str>,
    ctx: &ProbeCtx,
) -> Option<Status> {
    let status = flip?;
    e.view.status = status;
    if let Some((told, since)) = e.told {
        if told == status {
            // Only a judgement afresh (a restart) came between.
            e.view.since = since;
            return Some(status);
        }
    }
    e.view.since = Some(now_ms());
    e.told = Some((status, e.view.since));
    let (check, kind, unit) = (
        e.cfg.name.clone(),
        e.cfg.kind.name().to_string(),
        e.cfg.service.clone(),
    );
    match status {
        Status::Up => {
            tracing::info!(check = %check, "Check up.");
            ctx.bus.emit(EventKind::CheckUp {
                check,
                check_kind: kind,
                unit,
            });
        }
        Status::Down => {
            let reason = reason.unwrap_or("down").to_string();
            tracing::warn!(check = %check, %reason, "Check down.");
            ctx.bus.emit(EventKind::CheckDown {
                check,
                check_kind: kind,
                unit,
                reason,
            });
        }
        Status::Unknown | Status::Paused => {}
    }
    Some(status)
}

struct Task {
    entry: Arc<Mutex<Entry>>,
    ctx: Arc<ProbeCtx>,
    sup: Supervisor,
    restart_on_down: bool,
}

impl Task {
    fn cfg(&self) -> CheckConfig {
        lock(&self.entry).cfg.clone()
    }

    /// The watched service started anew: its health so far says nothing
    /// about the new process (and a restart for being unhealthy can follow
    /// again if it stays down).
    fn judge_afresh(&self) {
        let mut e = lock(&self.entry);
        e.health.reset();
        e.view.status = Status::Unknown;
        e.view.since = Some(now_ms());
    }

    /// The watched service is stopped on purpose: the check waits, `paused`,
    /// instead of reporting it down; the next start judges it afresh.
    fn pause(&self) {
        let mut e = lock(&self.entry);
        if e.view.status != Status::Paused {
            e.health.reset();
            e.view.status = Status::Paused;
            e.view.since = Some(now_ms());
            e.told = Some((Status::Paused, e.view.since));
            tracing::info!(check = %e.cfg.name, "Check paused: its service is stopped.");
            self.ctx.bus.emit(EventKind::CheckPaused {
                check: e.cfg.name.clone(),
                check_kind: e.cfg.kind.name().to_string(),
                unit: e.cfg.service.clone(),
            });
        }
    }

    /// About to probe a service that runs again: a view left `paused` (the
    /// start came between two ticks) reads `unknown` until the probes decide.
    fn resume(&self) {
        let mut e = lock(&self.entry);
        if e.view.status == Status::Paused {
            e.view.status = Status::Unknown;
            e.view.since = Some(now_ms());
        }
    }

    /// Spreads the first probes of many checks over their interval.
    async fn jitter(&self, interval: Duration) {
        let max = interval.min(Duration::from_secs(1)).as_millis() as u64;
        if max > 0 {
            tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % max)).await;
        }
    }

    async fn run_probe(self, cancel: CancellationToken) {
        let cfg = self.cfg();
        self.jitter(cfg.interval).await;
        let mut tick = tokio::time::interval(cfg.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut events = self.ctx.bus.subscribe();
        let service = cfg.service.as_deref();
        // The watched service's current run: a new one is a new start.
        let run_of = |service: &str| self.sup.status(service).and_then(|s| s.run_id);
        let mut known_run = service.and_then(run_of);
        // Stopped (by a person, a group's standby) or on its way down (a
        // stop or a restart): nothing to probe.
        let stopped = |service: &str| {
            self.sup
                .status(service)
                .is_some_and(|s| matches!(s.state, UnitState::Stopped | UnitState::Stopping))
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
                ev = events.recv() => {
                    match ev {
                        Ok(ev) => {
                            if let EventKind::UnitStarted { unit, run_id, .. } = &ev.kind {
                                if service == Some(unit.as_str()) {
                                    known_run = Some(*run_id);
                                    self.judge_afresh();
                                }
                            }
                        }
                        // The start may be among the events dropped: ask
                        // the supervisor which run is current instead.
                        Err(RecvError::Lagged(_)) => {
                            let now_run = service.and_then(run_of);
                            if now_run.is_some() && now_run != known_run {
                                known_run = now_run;
                                self.judge_afresh();
                            }
                        }
                        Err(RecvError::Closed) => return,
                    }
                    continue;
                }
            }
            if service.is_some_and(stopped) {
                self.pause();
                continue;
            }
            self.resume();
            let run_before = service.and_then(run_of);
            let started = Instant::now();
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.probe(&cfg) => r,
            };
            // A probe that failed while a stop began, or across a restart
            // (the run it asked is gone), says nothing about what runs now.
            if result.is_err() && service.is_some_and(stopped) {
                self.pause();
                continue;
            }
            if result.is_err() && service.and_then(run_of) != run_before {
                continue;
            }
            let latency = started.elapsed().as_secs_f64() * 1000.0;
            let now = now_ms();
            let went_down = {
                let mut e = lock(&self.entry);
                e.view.last_checked_at = Some(now);
                e.view.last_latency_ms = Some(latency);
                match &result {
                    Ok(()) => e.view.last_ok_at = Some(now),
                    Err(r) => {
                        e.view.last_reason = Some(r.clone());
                        e.view.last_failed_at = Some(now);
                    }
                }
                let flip = e.health.record(result.is_ok());
                apply_flip(
                    &mut e,
                    flip,
                    result.as_ref().err().map(String::as_str),
                    &self.ctx,
                ) == Some(Status::Down)
            };
            if went_down && self.restart_on_down {
                if let Some(service) = cfg.service.clone() {
                    let running = self.sup.status(&service).is_some_and(|s| s.pid.is_some());
                    if running {
                        let sup = self.sup.clone();
                        let by = format!("health check \"{}\"", cfg.name);
                        tracing::warn!(unit = %service, "Unhealthy: restarting.");
                        tokio::spawn(async move {
                            let _ = sup
                                .ask(&service, |reply| Command::Restart {
                                    by,
                                    trigger: "unhealthy",
                                    reply,
                                })
                                .await;
                        });
                    }
                }
            }
        }
    }

    async fn probe(&self, cfg: &CheckConfig) -> Result<(), String> {
        match &cfg.kind {
            CheckKind::Http {
                url,
                expect,
                body,
                body_regex,
            } => {
                probes::http(
                    self.ctx.http.get()?,
                    url,
                    cfg.timeout,
                    expect,
                    body.as_deref(),
                    body_regex.as_ref(),
                )
                .await
            }
            CheckKind::Tcp { address } => probes::tcp(address, cfg.timeout).await,
            CheckKind::Exec { command } => {
                probes::exec(&self.ctx.reaper, command, cfg.timeout).await
            }
            CheckKind::Disk {
                path,
                max_used_pct,
                max_inodes_pct,
            } => {
                let (path, u, i) = (path.clone(), *max_used_pct, *max_inodes_pct);
                match tokio::time::timeout(
                    cfg.timeout,
                    tokio::task::spawn_blocking(move || probes::disk(&path, u, i)),
                )
                .await
                {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => Err(format!("disk probe failed: {e}")),
                    // A hung network filesystem is exactly what this should catch.
                    Err(_) => Err("statvfs did not answer in time (hung filesystem?)".to_string()),
                }
            }
            CheckKind::Log { .. } | CheckKind::Heartbeat { .. } => Ok(()),
        }
    }

    async fn run_log(self, cancel: CancellationToken) {
        let cfg = self.cfg();
        let CheckKind::Log {
            source,
            pattern,
            clear_after,
        } = &cfg.kind
        else {
            return;
        };
        let mut tail = match source {
            LogSource::Unit(u) => Tail::unit(self.ctx.logs_dir.join(u)),
            LogSource::File(p) => Tail::file(p.clone()),
        };
        let source_name = tail.describe();
        {
            let mut e = lock(&self.entry);
            e.health.set(Status::Up);
            e.view.status = Status::Up;
            e.view.since = Some(now_ms());
        }
        let mut last_match: Option<Instant> = None;
        let mut tick = tokio::time::interval(cfg.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let lines = tail.read_lines();
            let now = now_ms();
            let mut matched = 0usize;
            let mut first: Option<String> = None;
            for line in lines.iter().filter(|l| pattern.is_match(l)) {
                matched += 1;
                // At most 10 events per check per interval: a flood of matches
                // must not flood the store.
                if matched <= 10 {
                    let line: String = line.chars().take(1000).collect();
                    self.ctx.bus.emit(EventKind::LogMatched {
                        check: cfg.name.clone(),
                        source: source_name.clone(),
                        line: line.clone(),
                    });
                    first.get_or_insert(line);
                }
            }
            let mut e = lock(&self.entry);
            e.view.last_checked_at = Some(now);
            if let Some(line) = first {
                last_match = Some(Instant::now());
                let more = if matched > 1 {
                    format!(" (+{} more)", matched - 1)
                } else {
                    String::new()
                };
                let reason = format!("matched: {line}{more}");
                e.view.last_reason = Some(reason.clone());
                e.view.last_failed_at = Some(now);
                let flip = e.health.set(Status::Down);
                apply_flip(&mut e, flip, Some(&reason), &self.ctx);
            } else if e.health.status() == Status::Down
                && last_match.is_some_and(|t| t.elapsed() >= *clear_after)
            {
                e.view.last_ok_at = Some(now);
                let flip = e.health.set(Status::Up);
                apply_flip(&mut e, flip, None, &self.ctx);
            } else {
                e.view.last_ok_at = Some(now);
            }
        }
    }

    /// Pings with the end of the job's newest succeeded run when that is
    /// newer than the last ping: the store, not the lossy bus, is the truth
    /// about which runs succeeded.
    fn catch_up(&self, job: Option<&str>) {
        let Some(job) = job else {
            return;
        };
        let ended = match self.ctx.store.last_success_end(job) {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(job = %job, error = %e, "Could not read the job's last success.");
                return;
            }
        };
        let last = lock(&self.entry).view.last_ping_at;
        if last.is_none_or(|l| ended > l) {
            ping(&self.entry, &self.ctx, ended);
        }
    }

    async fn run_heartbeat(self, cancel: CancellationToken) {
        let cfg = self.cfg();
        let CheckKind::Heartbeat { period, grace, job } = &cfg.kind else {
            return;
        };
        let started = now_ms();
        let stored = self.ctx.store.last_ping(&cfg.name).ok().flatten();
        {
            let mut e = lock(&self.entry);
            e.view.last_ping_at = stored;
            // Starts up quietly; lateness is judged from the last stored ping.
            let _ = e.health.set(Status::Up);
            e.view.status = Status::Up;
            e.view.since = Some(started);
        }
        let job = job.as_deref();
        // Subscribed first, so no success falls between the two: one that
        // ended before this agent watched (say, the check was added to the
        // config after the job last ran) counts as a ping.
        let mut events = self.ctx.bus.subscribe();
        self.catch_up(job);
        let mut tick = tokio::time::interval(cfg.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let allowed = (*period + *grace).as_millis() as i64;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
                ev = events.recv() => {
                    match ev {
                        Ok(ev) => {
                            if let EventKind::UnitExited { unit, state, .. } = &ev.kind {
                                if job == Some(unit.as_str()) && state == "succeeded" {
                                    ping(&self.entry, &self.ctx, ev.ts);
                                }
                            }
                        }
                        // The bus is lossy: the job's success may be among
                        // the events dropped, but its run is in the store.
                        Err(RecvError::Lagged(_)) => self.catch_up(job),
                        Err(RecvError::Closed) => return,
                    }
                    continue;
                }
            }
            let now = now_ms();
            let looks_late = {
                let e = lock(&self.entry);
                now - e.view.last_ping_at.unwrap_or(started) > allowed
                    && e.health.status() != Status::Down
            };
            if looks_late {
                // Once per lateness, before saying so: was a success missed?
                self.catch_up(job);
            }
            let mut e = lock(&self.entry);
            e.view.last_checked_at = Some(now);
            // Until the first ping ever, the agent's start counts as one.
            let last = e.view.last_ping_at.unwrap_or(started);
            if now - last > allowed && e.health.status() != Status::Down {
                let reason = match e.view.last_ping_at {
                    Some(t) => format!(
                        "late: last ping at {}, expected every {} (+{} grace)",
                        crate::util::format_ts(t),
                        crate::config::units::format_duration(*period),
                        crate::config::units::format_duration(*grace)
                    ),
                    None => format!(
                        "late: no ping since the agent started at {}, expected every {} (+{} grace)",
                        crate::util::format_ts(started),
                        crate::config::units::format_duration(*period),
                        crate::config::units::format_duration(*grace)
                    ),
                };
                e.view.last_reason = Some(reason.clone());
                e.view.last_failed_at = Some(now);
                let flip = e.health.set(Status::Down);
                apply_flip(&mut e, flip, Some(&reason), &self.ctx);
            }
        }
    }
}
