//! `mamori agent`: wires the parts together, owns the bus and the shutdown.
//!
//! Start order: signal handlers, data dir and its lock (one agent per data
//! dir), store (runs left `running` by a dead predecessor become
//! `interrupted`), token, API listener (before any cgroup exists, so a taken
//! port leaves nothing behind), reaper, enforcement (and the predecessor's
//! leftover processes are killed), incidents, alerting, then the units.
//! Shutdown (SIGTERM, SIGINT or SIGQUIT; see `Signals`): every unit is
//! stopped with its own `stop_timeout`, the whole within `shutdown_timeout`;
//! whatever is still alive at that deadline is killed.

use std::fs::OpenOptions;
use std::hash::Hasher;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::event::{Bus, EventKind};
use crate::store::Store;
use crate::supervise::enforce::Enforcer;
use crate::supervise::reaper::Reaper;
use crate::supervise::{Ctx, Supervisor};
use crate::web::{self, AppState};

/// A stable id for this data dir: tags our processes and cgroups.
fn agent_id(data_dir: &Path) -> String {
    let canon = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    // FNV-1a: stable across builds, unlike std's SipHash keys.
    let mut h = Fnv(0xcbf29ce484222325);
    h.write(canon.as_os_str().as_encoded_bytes());
    format!("{:016x}", h.finish())
}

struct Fnv(u64);
impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}

/// Holds an exclusive lock on `<data_dir>/agent.lock` for the agent's life.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File> {
    let path = data_dir.join("agent.lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a valid fd owned by `f`.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let other = std::fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "another mamori agent is already running on data dir {} (pid {}); stop it first or use another data_dir",
            data_dir.display(),
            other.trim()
        );
    }
    let _ = f.set_len(0);
    let _ = std::fs::write(&path, format!("{}\n", std::process::id()));
    Ok(f)
}

pub async fn run(config: Config) -> Result<()> {
    let a = &config.agent;
    // Before anything starts: a signal whose default is to terminate must
    // never kill the agent and orphan its units.
    let mut signals = Signals::install().context("cannot install signal handlers")?;
    std::fs::create_dir_all(&a.data_dir)
        .with_context(|| format!("cannot create data_dir {}", a.data_dir.display()))?;
    let _lock = lock_data_dir(&a.data_dir)?;
    let store = Store::open(&a.data_dir.join("mamori.db"))
        .with_context(|| format!("cannot open the store in {}", a.data_dir.display()))?;
    let bus = Bus::new(store.clone());
    for r in store.interrupt_running(crate::util::now_ms())? {
        tracing::warn!(unit = %r.unit, run_id = r.id, "A run was in flight when the previous agent died; marked interrupted.");
        // Its output ends where the unit's stream ends now.
        let dir = a.data_dir.join("logs").join(&r.unit);
        let end = crate::supervise::logs::stream_end(&dir).unwrap_or(r.log_start);
        if let Err(e) = store.set_log_end(r.id, end) {
            tracing::warn!(run_id = r.id, error = %e, "Could not close the run's log range.");
        }
        bus.emit(EventKind::RunInterrupted {
            unit: r.unit,
            run_id: r.id,
        });
    }
    let token = web::load_token(&a.token_file).with_context(|| {
        format!(
            "cannot read or create token_file {}",
            a.token_file.display()
        )
    })?;
    let read_token =
        match &a.read_token_file {
            None => None,
            Some(f) => Some(web::load_token(f).with_context(|| {
                format!("cannot read or create read_token_file {}", f.display())
            })?),
        };
    match crate::supervise::nofile::raise() {
        Ok(Some(r)) => tracing::info!(
            from = r.original,
            to = r.raised,
            "Open-files limit raised from {} to {} (units and commands get {} back).",
            r.original,
            r.raised,
            r.original
        ),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "Cannot raise the open-files limit; each unit needs several descriptors.")
        }
    }
    // Before a cgroup exists: a taken port must not leave one behind.
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {} ([agent] listen)", a.listen))?;
    let reaper = Reaper::start().context("cannot become a child subreaper")?;
    let id = agent_id(&a.data_dir);
    let enforcer = Arc::new(Enforcer::detect(a.enforcement, &id).map_err(|e| {
        anyhow::anyhow!(
            "enforcement = \"{}\" cannot work here: {e}",
            a.enforcement.as_str()
        )
    })?);
    tracing::info!(enforcement = enforcer.mode().as_str(), detail = %enforcer.detail, "Limits enforced by {}.", enforcer.mode().as_str());
    let leftovers = {
        let e = enforcer.clone();
        tokio::task::spawn_blocking(move || e.kill_leftovers())
            .await
            .unwrap_or_default()
    };
    if !leftovers.is_empty() {
        tracing::warn!(
            count = leftovers.len(),
            "Killed processes left by a previous agent on this data dir."
        );
        bus.emit(EventKind::LeftoversKilled { pids: leftovers });
    }
    bus.emit(EventKind::AgentStarted {
        version: env!("CARGO_PKG_VERSION").to_string(),
        enforcement: enforcer.mode().as_str().to_string(),
        detail: enforcer.detail.clone(),
    });

    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    // --- incidents: before alerting, which may fire as it catches up ---
    let incidents = crate::incident::start(
        &config,
        store.clone(),
        bus.clone(),
        cancel.child_token(),
        &mut tasks,
    );
    // --- alerts: subscribed before the units start ---
    let http = crate::util::LazyHttp::default();
    let alerts = crate::alert::start(
        &config,
        http.clone(),
        store.clone(),
        bus.clone(),
        reaper.clone(),
        &a.data_dir,
        cancel.clone(),
        &mut tasks,
    )
    .context("cannot start alerting")
    .inspect_err(|_| enforcer.cleanup())?;
    let logs_dir = a.data_dir.join("logs");
    let sampler = Arc::new(crate::probe::sampler::Sampler::new(
        Some(bus.clone()),
        config
            .units
            .iter()
            .filter_map(|u| Some((u.name.clone(), (u.leak.clone()?, u.limits.memory))))
            .collect(),
    ));
    tasks.spawn(sampler.clone().run(
        store.clone(),
        a.data_dir.clone(),
        a.sample_interval,
        crate::probe::sampler::Retention {
            raw: a.sample_retention,
            rollup: a.rollup_retention,
        },
        cancel.child_token(),
    ));
    let ctx = Arc::new(Ctx {
        store: store.clone(),
        bus: bus.clone(),
        reaper,
        enforcer: enforcer.clone(),
        logs_dir: logs_dir.clone(),
        poll_interval: a.poll_interval,
        sample_interval: a.sample_interval,
        sampler: sampler.clone(),
        tick_epoch: tokio::time::Instant::now(),
        gates: Default::default(),
    });
    if let Some(cc) = &config.cluster {
        crate::cluster::node::init_gates(cc, &ctx.gates);
    }
    let sup = Supervisor::start(&config, ctx.clone(), cancel.clone(), &mut tasks)
        .context("cannot start the units")
        .inspect_err(|_| enforcer.cleanup())?;
    // on_leak = "restart": the sampler asks, the unit restarts gracefully.
    let (leak_tx, mut leak_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    sampler.on_leak_restart(leak_tx);
    let leak_sup = sup.clone();
    let leak_cancel = cancel.child_token();
    tasks.spawn(async move {
        loop {
            let (unit, why) = tokio::select! {
                _ = leak_cancel.cancelled() => return,
                next = leak_rx.recv() => match next {
                    Some(x) => x,
                    None => return,
                },
            };
            tracing::warn!(%unit, %why, "Restarting before the leak exhausts memory.");
            let by = why.clone();
            let _ = leak_sup
                .ask(&unit, |reply| crate::supervise::Command::Restart {
                    by,
                    trigger: "leak",
                    reply,
                })
                .await;
        }
    });
    let checks = crate::probe::checks::Checks::start(
        &config,
        Arc::new(crate::probe::checks::ProbeCtx {
            bus: bus.clone(),
            store: store.clone(),
            reaper: ctx.reaper.clone(),
            http: http.clone(),
            logs_dir: logs_dir.clone(),
        }),
        sup.clone(),
        cancel.clone(),
        &mut tasks,
    );
    let flows = crate::schedule::engine::start(
        &config,
        checks.clone(),
        store.clone(),
        bus.clone(),
        sup.clone(),
        cancel.child_token(),
        &mut tasks,
    );
    // --- cluster: after the units and checks it starts and verifies ---
    let cluster = match &config.cluster {
        Some(cc) => Some(
            crate::cluster::Cluster::start(
                &config,
                cc,
                bus.clone(),
                store.clone(),
                sup.clone(),
                checks.clone(),
                ctx.reaper.clone(),
                ctx.gates.clone(),
                cancel.clone(),
                &mut tasks,
            )
            .context("cannot join the cluster ([cluster])")?,
        ),
        None => None,
    };
    let app = web::router(Arc::new(AppState {
        flows,
        sup,
        checks,
        sampler,
        store: store.clone(),
        token,
        logs_dir,
        alerts,
        access: web::Access {
            read_auth: a.read_auth,
            read_token,
            rate_limit: a.rate_limit,
            rate_limit_loopback: a.rate_limit_loopback,
        },
        metrics: web::metrics::Metrics::new(),
        incidents,
        ui: web::ui::UiState::new(&config),
        cluster,
    }));
    let http_cancel = cancel.clone();
    let server = tokio::spawn(async move {
        // The peer address feeds read auth (loopback) and the rate limiter.
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { http_cancel.cancelled().await })
        .await
    });
    tracing::info!(listen = %a.listen, units = config.units.len(), config = %config.path.display(), "Agent running.");

    let why = signals.stop().await;
    tracing::info!(signal = why, "Stopping: stopping every unit.");
    bus.emit(EventKind::AgentStopping {
        reason: why.to_string(),
    });
    cancel.cancel();
    if tokio::time::timeout(a.shutdown_timeout, drain(&mut tasks))
        .await
        .is_err()
    {
        tracing::warn!("Units did not stop within shutdown_timeout; killing what is left.");
    }
    let e = enforcer.clone();
    let left = tokio::task::spawn_blocking(move || e.kill_leftovers())
        .await
        .unwrap_or_default();
    if !left.is_empty() {
        tracing::warn!(
            count = left.len(),
            "Killed processes that outlived their units."
        );
        // The unit tasks now see their exits and record how the runs ended.
        if tokio::time::timeout(Duration::from_secs(10), drain(&mut tasks))
            .await
            .is_err()
        {
            tracing::error!(
                "Some units did not record their end; their runs will show `interrupted`."
            );
        }
    }
    enforcer.cleanup();
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    tracing::info!("Stopped.");
    Ok(())
}

async fn drain(tasks: &mut JoinSet<()>) {
    while tasks.join_next().await.is_some() {}
}

/// The agent's signal handlers.
///
/// TERM, INT and QUIT stop the agent in order (every unit stopped, nothing
/// left behind). HUP, USR1 and USR2, whose default would kill the agent and
/// orphan every unit (a closed terminal sends HUP), are logged and
/// otherwise ignored: mamori does not reload its config in place. Caught
/// signals go back to their defaults in the units at `exec`.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// Waits for a signal that stops the agent; returns its name.
    async fn stop(&mut self) -> &'static str {
        loop {
            let ignored = tokio::select! {
                _ = self.term.recv() => return "SIGTERM",
                _ = self.int.recv() => return "SIGINT",
                _ = self.quit.recv() => return "SIGQUIT",
                _ = self.hup.recv() => "SIGHUP",
                _ = self.usr1.recv() => "SIGUSR1",
                _ = self.usr2.recv() => "SIGUSR2",
            };
            tracing::warn!(
                signal = ignored,
                "{ignored} ignored: every unit keeps running. mamori does not reload its config in place; to apply a changed config, restart the agent (SIGTERM, then start it again)."
            );
        }
    }
}
