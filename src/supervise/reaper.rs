//! The agent is a child subreaper (`PR_SET_CHILD_SUBREAPER`): processes that
//! double-fork or call `setsid` are re-parented to it instead of to PID 1, so
//! they stay in reach and are reaped at once (PID 1 on some machines reaps
//! late, leaving zombies).
//!
//! That makes `waitpid(-1)` ours alone. **Trap:** nothing else in the agent
//! may wait for children: no `tokio::process`, no `std::process::Child::wait`.
//! Every child is spawned through [`Reaper::spawn`], which registers its pid
//! before the reaper can see it exit (both hold the same lock), and gets its
//! exit status and resource usage (`wait4`) through a oneshot channel.
//! Children nobody registered (orphans of unit trees) are reaped and dropped.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

/// How a process ended, from `wait4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
    /// User + system CPU time of the process and its reaped descendants.
    pub cpu: Duration,
    /// Peak resident memory of the process itself, bytes.
    pub max_rss: u64,
}

impl ExitInfo {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

type Waiters = HashMap<i32, oneshot::Sender<ExitInfo>>;

#[derive(Clone)]
pub struct Reaper {
    waiters: Arc<Mutex<Waiters>>,
}

impl Reaper {
    /// Makes this process a subreaper and starts reaping on SIGCHLD. Must be
    /// called inside a tokio runtime.
    pub fn start() -> io::Result<Reaper> {
        // SAFETY: prctl with integer arguments has no memory effects.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let reaper = Reaper {
            waiters: Arc::new(Mutex::new(HashMap::new())),
        };
        let r = reaper.clone();
        tokio::spawn(async move {
            // SIGCHLD can coalesce; the periodic tick is a safety net.
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = sigchld.recv() => {}
                    _ = tick.tick() => {}
                }
                r.reap_all();
            }
        });
        Ok(reaper)
    }

    /// Spawns `cmd` and registers it; the receiver gets its exit.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, oneshot::Receiver<ExitInfo>)> {
        let mut waiters = self.waiters.lock().map_err(|_| poisoned())?;
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(child.id() as i32, tx);
        Ok((child, rx))
    }

    /// Reaps every child that has ended.
    fn reap_all(&self) {
        let Ok(mut waiters) = self.waiters.lock() else {
            return;
        };
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: rusage is plain data, zero-initialised, written by the kernel.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: valid pointers to live locals.
            let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut usage) };
            if pid <= 0 {
                break;
            }
            let (code, signal) = if libc::WIFEXITED(status) {
                (Some(libc::WEXITSTATUS(status)), None)
            } else if libc::WIFSIGNALED(status) {
                (None, Some(libc::WTERMSIG(status)))
            } else {
                continue; // stopped/continued: not an end
            };
            let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
            let info = ExitInfo {
                code,
                signal,
                cpu,
                max_rss: (usage.ru_maxrss.max(0) as u64) * 1024,
            };
            if let Some(tx) = waiters.remove(&pid) {
                let _ = tx.send(info);
            }
        }
    }
}

fn tv(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
}

fn poisoned() -> io::Error {
    io::Error::other("reaper lock poisoned")
}
