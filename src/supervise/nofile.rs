//! The agent's own open-files limit. Every supervised process costs the agent
//! several descriptors (its two output pipes, its kept `/proc/PID/stat` and
//! `/proc/PID/fd`, under a cgroup `/proc/PID/schedstat`, under cgroup v1 the
//! cgroup directory, `memory.oom_control` and an eventfd), so the soft limit
//! most service managers hand out (1024)
//! would run out near a hundred units: opens fail, stats go missing and
//! spawns fail with EMFILE. At start the agent raises its soft limit to the
//! hard one (as Go's runtime and systemd's own daemons do), and every child
//! gets the original soft limit back before `exec`, since programs that use
//! `select()` break with descriptors above 1023. A unit's `open_files`
//! limit still wins: it is set by the unit's own pre-exec step afterwards.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::OnceLock;

/// The soft limit the agent started with and the one it raised itself to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub original: u64,
    pub raised: u64,
}

static RAISED: OnceLock<Raised> = OnceLock::new();

fn get() -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: writes into a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (capped at
/// 1 << 20, `nr_open`'s default, for an unlimited hard limit). Returns what
/// changed, or None when the soft limit was at the hard one already.
pub fn raise() -> io::Result<Option<Raised>> {
    let lim = get()?;
    let target = lim.rlim_max.min(1 << 20);
    if lim.rlim_cur >= target {
        return Ok(None);
    }
    let new = libc::rlimit {
        rlim_cur: target,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: reads a live local.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let r = Raised {
        original: lim.rlim_cur as u64,
        raised: target as u64,
    };
    let _ = RAISED.set(r);
    Ok(Some(r))
}

/// Makes `cmd`'s process start with the soft limit the agent itself was
/// given (a no-op when the agent did not raise its own). Add it after every
/// other pre-exec step that opens a file: until `exec` the child holds all
/// of the agent's descriptors, so with the lower limit in force the next
/// descriptor number would be refused (EMFILE). Skip it for a command that
/// sets the limit itself.
pub fn restore_for_child(cmd: &mut Command) {
    let Some(r) = RAISED.get().copied() else {
        return;
    };
    let original = r.original as libc::rlim_t;
    let raised = r.raised as libc::rlim_t;
    // SAFETY: getrlimit and setrlimit are async-signal-safe and only touch
    // locals prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur == raised {
                lim.rlim_cur = original;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}
