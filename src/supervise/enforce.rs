//! How limits are enforced and process trees are tracked, chosen once at
//! start (`[agent] enforcement`, logged by the agent):
//!
//! - **cgroup2**: each run gets its own cgroup under ours with `memory.max`
//!   and `memory.oom.group`; the kernel stops the tree at the limit, the
//!   membership is exact and `cgroup.kill` ends it. Needs the memory
//!   controller delegated to our cgroup (on a systemd host: `Delegate=yes`).
//! - **cgroup1**: the same with the v1 memory hierarchy
//!   (`memory.limit_in_bytes`). v1 has no group kill, so the agent must
//!   notice an OOM kill itself and kill the rest of the tree: each run cgroup
//!   registers an eventfd for its `memory.oom_control` in
//!   `cgroup.event_control` (the v1 "OOM Control" notification API), which
//!   the run's watchdog awaits next to its tick. The kernel signals it when
//!   the cgroup enters OOM, a few ms *before* it kills (so the watchdog then
//!   confirms with the `oom_kill` counter, re-read briefly), and also when
//!   the cgroup is removed (the counter file is gone then: not an OOM). An
//!   OOM of any process of the tree is so acted on at once, and an idle
//!   watchdog reads nothing for it. If registration fails (logged once per
//!   agent), the watchdog reads the counter at every sample instead.
//!   `memory.oom_control` stays open for the run and is read with `pread`.
//! - On **cgroup2** the counter (`oom_kill` in `memory.events`) is read at
//!   every sample; `memory.oom.group` already kills the whole tree. A
//!   notification (inotify on `memory.events`) is not done: no machine here
//!   has a v2 memory controller to test it on.
//! - **poll**: a watchdog reads /proc every `poll_interval` (250 ms) and kills
//!   the tree when its summed RSS passes the limit. Membership is the
//!   descendants of the run's first process plus orphans re-parented to the
//!   agent whose environment carries the run's `MAMORI_RUN_ID`.
//!
//! CPU time is always measured by polling (the sum over the tree), wall time
//! by a timer, open files by `RLIMIT_NOFILE` on every process.
//!
//! Every cgroup and process we create is tagged with the agent id (a hash of
//! the data dir), so an agent restarted after a crash finds and kills what
//! its predecessor left, and two agents on one host never touch each other's.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;

use super::proc::{self, ProcStat};
use crate::config::Enforcement;

pub const ENV_AGENT_ID: &str = "MAMORI_AGENT_ID";
pub const ENV_RUN_ID: &str = "MAMORI_RUN_ID";

#[derive(Debug, Clone)]
enum Backend {
    Cgroup2 { root: PathBuf },
    Cgroup1 { root: PathBuf },
    Poll,
}

/// Every process on the machine, by pid, read at one moment.
pub type Snapshot = std::sync::Arc<proc::ProcTable>;

/// How often the poll watchdog reads every process on the machine rather
/// than only new ones and the agent's tree (see `proc::snapshot_since`).
const FULL_SCAN_EVERY: Duration = Duration::from_secs(1);

/// The chosen enforcement for this agent.
pub struct Enforcer {
    backend: Backend,
    pub agent_id: String,
    /// Why this mode was chosen (and why better ones were not), for the log.
    pub detail: String,
    snapshot: Mutex<Option<(Instant, Snapshot)>>,
    /// When the last full scan was taken, and the kernel's last pid then.
    last_full_scan: Mutex<Option<(Instant, Option<i32>)>>,
    /// Poll mode: the agent's tree's stat files, kept open between snapshots
    /// (locked only while `snapshot` is).
    stat_files: Mutex<proc::StatFiles>,
    /// Orphans re-parented to the agent: pid → run id (None: not ours).
    orphans: Mutex<HashMap<i32, Option<i64>>>,
    /// A failed OOM notification registration has been logged.
    oom_notify_failure_logged: AtomicBool,
}

impl Enforcer {
    /// Picks the enforcement. An explicitly requested mode that cannot work
    /// here is an error (saying why), never a silent fallback.
    pub fn detect(requested: Enforcement, agent_id: &str) -> Result<Enforcer, String> {
        let mut notes = Vec::new();
        let backend = match requested {
            Enforcement::Cgroup2 => Backend::Cgroup2 {
                root: cgroup2_root(agent_id)?,
            },
            Enforcement::Cgroup1 => Backend::Cgroup1 {
                root: cgroup1_root(agent_id)?,
            },
            Enforcement::Poll => Backend::Poll,
            Enforcement::Auto => match cgroup2_root(agent_id) {
                Ok(root) => Backend::Cgroup2 { root },
                Err(e2) => {
                    notes.push(format!("cgroup2 not usable: {e2}"));
                    match cgroup1_root(agent_id) {
                        Ok(root) => Backend::Cgroup1 { root },
                        Err(e1) => {
                            notes.push(format!("cgroup1 not usable: {e1}"));
                            Backend::Poll
                        }
                    }
                }
            },
        };
        let mut detail = match &backend {
            Backend::Cgroup2 { root } => format!("cgroup v2 memory.max under {}", root.display()),
            Backend::Cgroup1 { root } => {
                format!("cgroup v1 memory.limit_in_bytes under {}", root.display())
            }
            Backend::Poll => "polling /proc".to_string(),
        };
        if !notes.is_empty() {
            detail.push_str(&format!(" ({})", notes.join("; ")));
        }
        Ok(Enforcer {
            backend,
            agent_id: agent_id.to_string(),
            detail,
            snapshot: Mutex::new(None),
            last_full_scan: Mutex::new(None),
            stat_files: Mutex::default(),
            orphans: Mutex::new(HashMap::new()),
            oom_notify_failure_logged: AtomicBool::new(false),
        })
    }

    pub fn mode(&self) -> Enforcement {
        match self.backend {
            Backend::Cgroup2 { .. } => Enforcement::Cgroup2,
            Backend::Cgroup1 { .. } => Enforcement::Cgroup1,
            Backend::Poll => Enforcement::Poll,
        }
    }

    /// Whether the kernel enforces the memory limit (so no polling is needed for it).
    pub fn kernel_memory_limit(&self) -> bool {
        !matches!(self.backend, Backend::Poll)
    }

    /// A /proc snapshot no older than `max_age`, shared by all watchdogs.
    pub fn snapshot(&self, max_age: Duration) -> Snapshot {
        let mut guard = match self.snapshot.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some((at, snap)) = guard.as_ref() {
            if at.elapsed() <= max_age {
                return snap.clone();
            }
        }
        // A full read of every process at most once per FULL_SCAN_EVERY,
        // and only if a pid was handed out since the last one (without one,
        // no pid can have been reused); between those, only new pids and
        // the agent's own tree.
        let me = proc::my_pid();
        let last = proc::last_pid();
        let full = self
            .last_full_scan
            .lock()
            .map(|t| {
                t.is_none_or(|(at, pid)| {
                    at.elapsed() >= FULL_SCAN_EVERY && (pid.is_none() || pid != last)
                })
            })
            .unwrap_or(true);
        let prev = if full {
            None
        } else {
            guard.as_ref().map(|(_, s)| s.clone())
        };
        let snap = match self.stat_files.lock() {
            Ok(mut files) => proc::snapshot_at(prev.as_deref(), me, &mut files, last),
            Err(_) => proc::snapshot_at(prev.as_deref(), me, &mut proc::StatFiles::default(), last),
        };
        let snap = std::sync::Arc::new(snap);
        if prev.is_none() {
            if let Ok(mut t) = self.last_full_scan.lock() {
                *t = Some((Instant::now(), snap.last_pid));
            }
        }
        *guard = Some((Instant::now(), snap.clone()));
        snap
    }

    /// Kills processes and removes cgroups left by a previous agent with our id.
    pub fn kill_leftovers(&self) -> Vec<i32> {
        let mut killed = Vec::new();
        if let Backend::Cgroup2 { root } | Backend::Cgroup1 { root } = &self.backend {
            if let Ok(dir) = fs::read_dir(root) {
                for entry in dir.flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        killed.extend(kill_cgroup_members(&path));
                        let _ = remove_cgroup(&path);
                    }
                }
            }
        }
        let me = proc::my_pid();
        for pid in proc::snapshot().keys().copied() {
            if pid != me && proc::environ_var(pid, ENV_AGENT_ID).as_deref() == Some(&self.agent_id)
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                killed.push(pid);
            }
        }
        killed.sort_unstable();
        killed.dedup();
        killed
    }

    /// Removes this agent's (now empty) cgroup directory, at shutdown.
    pub fn cleanup(&self) {
        if let Backend::Cgroup2 { root } | Backend::Cgroup1 { root } = &self.backend {
            let _ = fs::remove_dir(root);
        }
    }

    /// Prepares what a new run needs before it is spawned.
    ///
    /// A cgroup is made only for a run with a memory limit: joining one costs
    /// about 10 ms per process on these kernels (the attach waits for an RCU
    /// grace period), which would dominate the start of a short job. Runs
    /// without a memory limit are tracked through /proc like in poll mode.
    pub fn prepare(&self, unit: &str, run_id: i64, memory: Option<u64>) -> io::Result<RunGroup> {
        let dir = match &self.backend {
            Backend::Poll => None,
            _ if memory.is_none() => None,
            Backend::Cgroup2 { root } => {
                let dir = root.join(format!("{unit}.{run_id}"));
                fs::create_dir_all(&dir)?;
                if let Some(m) = memory {
                    fs::write(dir.join("memory.max"), m.to_string())?;
                    let _ = fs::write(dir.join("memory.swap.max"), "0");
                    let _ = fs::write(dir.join("memory.oom.group"), "1");
                }
                Some(dir)
            }
            Backend::Cgroup1 { root } => {
                let dir = root.join(format!("{unit}.{run_id}"));
                fs::create_dir_all(&dir)?;
                if let Some(m) = memory {
                    fs::write(dir.join("memory.limit_in_bytes"), m.to_string())?;
                    // Without swap accounting this file does not exist; with
                    // it, the tree must not escape the limit into swap.
                    let _ = fs::write(dir.join("memory.memsw.limit_in_bytes"), m.to_string());
                }
                Some(dir)
            }
        };
        // Kept open so that the per-sample reads of this cgroup's files walk
        // one path component instead of the whole /sys/fs/cgroup/... path
        // (the walk and kernfs revalidation were most of a sample's cost).
        let dir_fd = dir.as_ref().and_then(|d| {
            nix::fcntl::open(
                d.as_path(),
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ok()
        });
        let v1 = matches!(self.backend, Backend::Cgroup1 { .. });
        let mut oom_control = None;
        let mut oom_event = None;
        if let (true, Some(dir)) = (v1, &dir_fd) {
            // Kept open even without a notification: the per-sample
            // fallback then reads it with pread.
            let registered = open_at(dir, "memory.oom_control", nix::fcntl::OFlag::O_RDONLY)
                .and_then(|file| {
                    let event = register_oom_event(dir, &file);
                    oom_control = Some(file);
                    event
                });
            match registered {
                Ok(event) => oom_event = Some(event),
                Err(e) => {
                    if !self.oom_notify_failure_logged.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            error = %e,
                            "Cannot register a cgroup v1 OOM notification; watchdogs read memory.oom_control at every sample instead (logged once)."
                        );
                    }
                }
            }
        }
        Ok(RunGroup {
            dir,
            dir_fd,
            v2: matches!(self.backend, Backend::Cgroup2 { .. }),
            oom_control,
            oom_event,
            run_id,
            seen: Mutex::new(HashMap::new()),
            root_gone: AtomicBool::new(false),
        })
    }

    /// The processes of a run now.
    pub fn members(&self, group: &RunGroup, root: i32, max_age: Duration) -> Vec<i32> {
        if group.dir.is_some() {
            return group
                .read("cgroup.procs")
                .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
                .unwrap_or_default();
        }
        let mut snap = self.snapshot(max_age);
        if !group.root_gone() && !snap.contains_key(&root) {
            // The shared snapshot predates this run (a first sample right
            // after the start): it would show no process and no memory.
            snap = self.snapshot(Duration::ZERO);
        }
        let me = proc::my_pid();
        // Once the root was reaped its pid may belong to someone else.
        let mut roots: Vec<i32> = if group.root_gone() {
            Vec::new()
        } else {
            vec![root]
        };
        if let Ok(seen) = group.seen.lock() {
            // A pid seen before counts only if it is still the same process.
            roots.extend(
                seen.iter()
                    .filter(|(p, start)| snap.get(p).is_some_and(|s| s.start_ticks == **start))
                    .map(|(p, _)| *p),
            );
        }
        // Orphans re-parented to us: ours if their environment says so.
        let by_run = snap
            .orphans_by_run
            .get_or_init(|| self.classify_orphans(&snap, me));
        if let Some(pids) = by_run.get(&group.run_id) {
            roots.extend(pids.iter().filter(|p| **p != root));
        }
        let found = snap.descendants(&roots);
        if let Ok(mut seen) = group.seen.lock() {
            seen.retain(|p, start| snap.get(p).is_some_and(|s| s.start_ticks == *start));
            for p in &found {
                if let Some(s) = snap.get(p) {
                    seen.insert(*p, s.start_ticks);
                }
            }
        }
        found
    }

    /// The agent's direct children by the run they belong to (their
    /// environment says; cached per pid, since it never changes), once per
    /// snapshot rather than once per unit.
    fn classify_orphans(&self, snap: &proc::ProcTable, me: i32) -> HashMap<i64, Vec<i32>> {
        let mut out: HashMap<i64, Vec<i32>> = HashMap::new();
        let Ok(mut owners) = self.orphans.lock() else {
            return out;
        };
        owners.retain(|pid, _| snap.contains_key(pid));
        for &pid in snap.children_of(me) {
            let owner = *owners.entry(pid).or_insert_with(|| {
                proc::environ_var(pid, ENV_AGENT_ID)
                    .filter(|id| id == &self.agent_id)
                    .and_then(|_| proc::environ_var(pid, ENV_RUN_ID))
                    .and_then(|r| r.parse().ok())
            });
            if let Some(run) = owner {
                out.entry(run).or_default().push(pid);
            }
        }
        out
    }

    /// The processes of a run with their stats and open descriptors: read
    /// through `files` under a cgroup, taken from the shared snapshot
    /// otherwise (which has just read them).
    pub fn sample(
        &self,
        group: &RunGroup,
        root: i32,
        max_age: Duration,
        files: &mut proc::ProcFiles,
    ) -> Vec<(ProcStat, u64)> {
        if group.dir.is_some() {
            let pids = files.members.current(|| self.members(group, root, max_age));
            let stats = files.read(&pids);
            files
                .members
                .saw(stats.iter().map(|(s, _)| (s.pid, s.threads)));
            return stats;
        }
        let pids = self.members(group, root, max_age);
        let snap = self.snapshot(max_age);
        files.fds_for(
            pids.into_iter()
                .filter_map(|p| snap.get(&p).copied())
                .collect(),
        )
    }

    /// The processes of a run with their /proc stats (zombies left out).
    pub fn measure(&self, group: &RunGroup, root: i32, max_age: Duration) -> Vec<ProcStat> {
        let stats: Vec<ProcStat> = if group.dir.is_some() {
            self.members(group, root, max_age)
                .into_iter()
                .filter_map(proc::stat)
                .collect()
        } else {
            let pids = self.members(group, root, max_age);
            let snap = self.snapshot(max_age);
            pids.into_iter()
                .filter_map(|p| snap.get(&p).copied())
                .collect()
        };
        stats.into_iter().filter(|s| s.state != 'Z').collect()
    }

    /// Sends `sig` to every process of the run (and its process group).
    /// Each process gets the signal once (a second SIGINT means "force quit"
    /// to many programs), so the process group is only signalled for SIGKILL.
    pub fn signal_all(&self, group: &RunGroup, root: i32, sig: Signal) -> usize {
        if sig == Signal::SIGKILL {
            if group.v2 {
                if let Some(dir) = &group.dir {
                    let _ = fs::write(dir.join("cgroup.kill"), "1");
                }
            }
            if !group.root_gone() {
                let _ = nix::sys::signal::killpg(Pid::from_raw(root), sig);
            }
        }
        let members = self.members(group, root, Duration::ZERO);
        for pid in &members {
            let _ = kill(Pid::from_raw(*pid), sig);
        }
        members.len()
    }

    /// Kills the whole tree and waits (bounded) until none of it is left.
    pub async fn kill_tree(&self, group: &RunGroup, root: i32) {
        for _ in 0..100 {
            // Zombies are dead already; the reaper collects them.
            let alive = self
                .members(group, root, Duration::ZERO)
                .into_iter()
                .filter(|p| proc::stat(*p).map(|s| s.state != 'Z').unwrap_or(false))
                .count();
            if alive == 0 {
                return;
            }
            self.signal_all(group, root, Signal::SIGKILL);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::warn!(
            root,
            "Some processes of the run did not die within 2s of SIGKILL."
        );
    }
}

/// What the enforcer keeps for one run.
pub struct RunGroup {
    dir: Option<PathBuf>,
    /// `dir` opened with O_PATH, for `openat` of its files.
    dir_fd: Option<std::os::fd::OwnedFd>,
    v2: bool,
    /// cgroup v1: `memory.oom_control`, open for the run (read with pread).
    oom_control: Option<fs::File>,
    /// cgroup v1: signalled by the kernel when the cgroup enters OOM (and
    /// when it is removed). Registered on `oom_control`.
    oom_event: Option<AsyncFd<EventFd>>,
    run_id: i64,
    /// Poll mode: every pid seen in the tree with its start time (so
    /// re-parented ones stay found, and a reused pid is not mistaken for one).
    seen: Mutex<HashMap<i32, u64>>,
    /// The run's first process has been reaped.
    root_gone: AtomicBool,
}

impl RunGroup {
    /// Called once the root's exit has been received.
    pub fn mark_root_gone(&self) {
        self.root_gone.store(true, Ordering::SeqCst);
    }

    fn root_gone(&self) -> bool {
        self.root_gone.load(Ordering::SeqCst)
    }

    /// The file a new process writes "0" into to join the run's cgroup.
    pub fn procs_file(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("cgroup.procs"))
    }

    /// How many processes the kernel killed for memory in this run's cgroup.
    pub fn oom_kills(&self) -> u64 {
        self.read_oom_kills().unwrap_or(0)
    }

    /// The kernel's OOM kill counter; None when it cannot be read (no
    /// cgroup, or the cgroup has been removed).
    pub fn read_oom_kills(&self) -> Option<u64> {
        let text = match &self.oom_control {
            // Offset 0 makes the kernel format the file anew.
            Some(f) => {
                let mut buf = [0u8; 512];
                let n = f.read_at(&mut buf, 0).ok()?;
                String::from_utf8(buf[..n].to_vec()).ok()?
            }
            None if self.v2 => self.read("memory.events")?,
            None => self.read("memory.oom_control")?,
        };
        oom_kill_count(&text)
    }

    /// Whether the kernel notifies this run's OOMs (see `oom_event`).
    pub fn oom_notified(&self) -> bool {
        self.oom_event.is_some()
    }

    /// Waits until the kernel signals the OOM eventfd, and drains it. A
    /// signal means the cgroup entered OOM (the kill follows) or was
    /// removed: confirm with `read_oom_kills`. Never returns without a
    /// registered notification.
    pub async fn oom_event(&self) -> io::Result<()> {
        let Some(fd) = &self.oom_event else {
            return std::future::pending().await;
        };
        loop {
            let mut ready = fd.readable().await?;
            match ready.try_io(|fd| fd.get_ref().read().map_err(io::Error::from)) {
                Ok(result) => return result.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }

    /// Peak memory the kernel charged to the cgroup (v1 only), bytes.
    pub fn kernel_peak(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        self.read(file)?.trim().parse().ok()
    }

    /// Reads one of the run's cgroup files (None without a cgroup).
    fn read(&self, name: &str) -> Option<String> {
        use std::io::Read;
        let mut f = match &self.dir_fd {
            Some(dir) => open_at(dir, name, nix::fcntl::OFlag::O_RDONLY).ok()?,
            None => fs::File::from(
                nix::fcntl::open(
                    self.dir.as_ref()?.join(name).as_path(),
                    nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .ok()?,
            ),
        };
        // A plain read loop: `read_to_string` on a File first asks for its
        // size (statx + lseek), two wasted syscalls on a pseudo-file. These
        // files are seq_files, which fill a read until the caller's buffer
        // or the kernel's own page-sized one is full: a read that returned
        // less than half of our buffer (records are a few bytes) has reached
        // the end, and the read that would return 0 is saved (one syscall
        // in six of an idle agent's, docs/benchmarks.md).
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) if n < buf.len() / 2 => {
                    out.extend_from_slice(&buf[..n]);
                    break;
                }
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        String::from_utf8(out).ok()
    }

    /// Removes the run's cgroup (after its processes are gone). Never
    /// waits: a cgroup the kernel still holds is left for the agent's
    /// start/shutdown cleanup.
    pub fn remove(&self) {
        if let Some(dir) = &self.dir {
            if let Err(e) = fs::remove_dir(dir) {
                tracing::debug!(dir = %dir.display(), error = %e, "Run cgroup left for cleanup.");
            }
        }
    }
}

/// Opens a file of a cgroup directory opened with O_PATH.
fn open_at(dir: &OwnedFd, name: &str, flags: nix::fcntl::OFlag) -> io::Result<fs::File> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        flags | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    Ok(fs::File::from(fd))
}

/// The `oom_kill` counter of `memory.oom_control` (v1) or `memory.events` (v2).
fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

/// What is written to `cgroup.event_control` to be told of OOMs: the
/// eventfd, then the `memory.oom_control` it is for (no argument).
fn event_control_line(eventfd: i32, oom_control: i32) -> String {
    format!("{eventfd} {oom_control}")
}

/// cgroup v1: asks the kernel to signal a new eventfd whenever the cgroup
/// (`dir`) enters OOM. The eventfd is registered with the tokio reactor.
fn register_oom_event(dir: &OwnedFd, oom_control: &fs::File) -> io::Result<AsyncFd<EventFd>> {
    use std::io::Write;
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other("no tokio runtime to wait for the eventfd"));
    }
    let event = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
    let line = event_control_line(event.as_raw_fd(), oom_control.as_raw_fd());
    open_at(dir, "cgroup.event_control", nix::fcntl::OFlag::O_WRONLY)?
        .write_all(line.as_bytes())?;
    // SAFETY: the EventFd owns its fd, never replaces it and is closed only
    // when the AsyncFd drops it.
    unsafe { AsyncFd::register_with_interest(event, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)
}

fn remove_cgroup(dir: &Path) -> io::Result<()> {
    let mut last = Ok(());
    for _ in 0..50 {
        last = fs::remove_dir(dir);
        if last.is_ok() || !dir.exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    last
}

fn read_pids(path: &Path) -> Vec<i32> {
    fs::read_to_string(path)
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn kill_cgroup_members(dir: &Path) -> Vec<i32> {
    let mut killed = Vec::new();
    for _ in 0..50 {
        let pids = read_pids(&dir.join("cgroup.procs"));
        if pids.is_empty() {
            break;
        }
        for p in pids {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            killed.push(p);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    killed
}

/// Mount points by filesystem type, from /proc/self/mountinfo.
fn mounts(fstype: &str) -> Vec<(PathBuf, String)> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        // fields ... - fstype source super_options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split_whitespace();
        if r.next() != Some(fstype) {
            continue;
        }
        let opts = r.nth(1).unwrap_or("").to_string();
        if let Some(mount_point) = left.split_whitespace().nth(4) {
            out.push((PathBuf::from(mount_point), opts));
        }
    }
    out
}

/// Our own cgroup path in the hierarchy whose controllers satisfy `pick`.
fn own_cgroup(pick: impl Fn(&str) -> bool) -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        pick(controllers).then(|| path.to_string())
    })
}

fn make_root(base: PathBuf, agent_id: &str) -> Result<PathBuf, String> {
    let root = base.join(format!("mamori-{agent_id}"));
    fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    Ok(root)
}

fn cgroup1_root(agent_id: &str) -> Result<PathBuf, String> {
    let (mount, _) = mounts("cgroup")
        .into_iter()
        .find(|(_, opts)| opts.split(',').any(|o| o == "memory"))
        .ok_or("no cgroup v1 memory hierarchy is mounted")?;
    let own = own_cgroup(|c| c.split(',').any(|x| x == "memory")).unwrap_or_else(|| "/".into());
    let base = mount.join(own.trim_start_matches('/'));
    let root = make_root(base, agent_id)?;
    if !root.join("memory.limit_in_bytes").exists() {
        return Err(format!("{} has no memory.limit_in_bytes", root.display()));
    }
    Ok(root)
}

fn cgroup2_root(agent_id: &str) -> Result<PathBuf, String> {
    let (mount, _) = mounts("cgroup2")
        .into_iter()
        .next()
        .ok_or("no cgroup2 filesystem is mounted")?;
    let own = own_cgroup(|c| c.is_empty()).unwrap_or_else(|| "/".into());
    let base = mount.join(own.trim_start_matches('/'));
    let controllers = fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
    if !controllers.split_whitespace().any(|c| c == "memory") {
        return Err(format!(
            "the memory controller is not available in {} (controllers: \"{}\")",
            base.display(),
            controllers.trim()
        ));
    }
    let subtree = fs::read_to_string(base.join("cgroup.subtree_control")).unwrap_or_default();
    if !subtree.split_whitespace().any(|c| c == "memory")
        && fs::write(base.join("cgroup.subtree_control"), "+memory").is_err()
    {
        // "No internal processes": a cgroup with processes in it cannot
        // hand controllers to children. Move the agent into a leaf of its
        // own first (what a delegated service is expected to do).
        let leaf = base.join("mamori-agent");
        fs::create_dir_all(&leaf)
            .and_then(|_| fs::write(leaf.join("cgroup.procs"), "0"))
            .and_then(|_| fs::write(base.join("cgroup.subtree_control"), "+memory"))
            .map_err(|e| {
                format!(
                    "cannot enable the memory controller below {} ({e}); delegate a cgroup to mamori (systemd: Delegate=yes)",
                    base.display()
                )
            })?;
    }
    let root = make_root(base, agent_id)?;
    fs::write(root.join("cgroup.subtree_control"), "+memory")
        .map_err(|e| format!("cannot enable memory in {}: {e}", root.display()))?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_counter_is_read_from_v1_and_v2_files() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(oom_kill_count(v1), Some(3));
        let v2 = "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\noom_group_kill 1\n";
        assert_eq!(oom_kill_count(v2), Some(1));
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 1\n"), None);
        assert_eq!(event_control_line(7, 9), "7 9", "the eventfd comes first");
    }

    /// Real kernel: the notification registers on a run cgroup, and its
    /// removal (which the kernel also signals) reads as "gone", not as an OOM.
    #[tokio::test]
    async fn cgroup1_oom_notification_registers_and_removal_is_not_an_oom() {
        let agent_id = format!("unittest{}", std::process::id());
        let enforcer = match Enforcer::detect(Enforcement::Cgroup1, &agent_id) {
            Ok(e) => e,
            Err(e) => {
                println!("cgroup1 is not usable here: {e}");
                assert!(
                    !Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
                        || e.contains("cannot create"),
                    "cgroup v1 memory is mounted but refused: {e}"
                );
                return;
            }
        };
        let group = enforcer.prepare("u", 1, Some(64 << 20)).unwrap();
        assert!(group.oom_notified(), "registered");
        assert_eq!(group.read_oom_kills(), Some(0));
        // Nothing happened yet: no signal.
        let quiet = tokio::time::timeout(Duration::from_millis(100), group.oom_event()).await;
        assert!(quiet.is_err(), "signalled without an OOM");
        group.remove();
        let signalled = tokio::time::timeout(Duration::from_secs(5), group.oom_event()).await;
        assert!(
            matches!(signalled, Ok(Ok(()))),
            "removal is signalled: {signalled:?}"
        );
        assert_eq!(group.read_oom_kills(), None, "the cgroup is gone");
        assert_eq!(group.oom_kills(), 0);
        drop(group);
        enforcer.cleanup();
    }
}
