//! Small helpers shared across modules: wall-clock time for records,
//! timestamps for people, the set-up of a short command (its output pipe,
//! session and open-files limit), and the process-wide malloc setting.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, for records (never for decisions:
/// decision logic takes `tokio::time::Instant` from its caller).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-23T06:10:00.123Z`.
pub fn format_ts(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => format!("{ms}ms"),
    }
}

/// The one HTTP client for http checks and webhook channels, built on first
/// use. Building it loads the TLS root store and connection pool, which an
/// agent with no http check and no webhook never needs (docs/benchmarks.md,
/// M1: resident memory).
#[derive(Clone, Default)]
pub struct LazyHttp(std::sync::Arc<std::sync::OnceLock<reqwest::Client>>);

impl LazyHttp {
    pub fn get(&self) -> Result<&reqwest::Client, String> {
        if let Some(c) = self.0.get() {
            return Ok(c);
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(self.0.get_or_init(|| client))
    }
}

/// A pipe for a command's output (check commands, hooks, alert commands),
/// both ends close-on-exec. `pipe()` without the flag let any unit spawned
/// by another thread in the meantime inherit the write end: the reader then
/// saw no end of file until that unit exited (a check waited its 2 s tail
/// timeout and lost its output), and the unit kept a stray descriptor. The
/// child still gets its copy: `dup2` onto stdout/stderr clears the flag.
pub fn output_pipe() -> nix::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
}

/// A short command the agent runs and waits for (check commands, hooks,
/// alert commands, `INTERPRETER --version`), set up the same way for all:
/// stdout and stderr into one [`output_pipe`], whose read end is returned;
/// stdin as given; a session of its own, so that a timeout can kill its
/// whole group; and the agent's original open-files limit
/// (`supervise::nofile`), applied last. The caller adds arguments and
/// environment, spawns it through the reaper and then drops the `Command`,
/// which closes the agent's copies of the write ends.
pub fn short_command(
    program: &str,
    stdin: std::process::Stdio,
) -> std::io::Result<(std::process::Command, std::os::fd::OwnedFd)> {
    use std::os::unix::process::CommandExt;
    let (read, write) = output_pipe().map_err(std::io::Error::from)?;
    let write2 = write.try_clone()?;
    let mut cmd = std::process::Command::new(program);
    cmd.stdin(stdin)
        .stdout(std::process::Stdio::from(write))
        .stderr(std::process::Stdio::from(write2));
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    crate::supervise::nofile::restore_for_child(&mut cmd);
    Ok((cmd, read))
}

/// Kills a short command's process group (SIGKILL) when dropped while still
/// armed: on a timeout, and also when the future waiting for the command is
/// dropped (the agent shutting down, a check task cancelled), which would
/// otherwise leave it running in its own session, out of every unit's tree.
/// Disarm it once the command's exit has been seen.
pub struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl GroupGuard {
    /// `pid` is the leader of the group `short_command` made (its own session).
    pub fn new(pid: i32) -> GroupGuard {
        GroupGuard {
            pgid: pid,
            armed: true,
        }
    }

    /// Kills the group now (a timeout).
    pub fn kill(&mut self) {
        if std::mem::take(&mut self.armed) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// The command ended by itself: nothing to kill.
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Malloc arenas glibc may create (`M_ARENA_MAX`), unless the operator set
/// `MALLOC_ARENA_MAX`. glibc's default is eight per core, and every thread
/// that allocates gets one until then: tokio's blocking threads come and go
/// in bursts (100 units starting together), and each arena keeps 60–100 KiB
/// resident after its thread is gone. With more than one, which threads
/// share an arena is decided at their first allocation, and each arena keeps
/// its own free space: one arena measured 0.15 MiB less, and steadier, than
/// two (docs/benchmarks.md, "Ninth run"). The agent allocates little, and
/// glibc's per-thread cache serves most small allocations without the
/// arena's lock.
pub const MALLOC_ARENAS: i32 = 1;

/// Applies [`MALLOC_ARENAS`]. Call before the runtime starts its threads.
pub fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt is thread-safe and only sets a tunable.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

/// Gives the kernel back the pages of the calling thread's stack below the
/// caller's frame, if it is the main thread (the `[stack]` mapping). Call
/// it once, from `main`'s side of the work, after start-up.
///
/// Start-up runs deep once: clap's derived parser builds every subcommand's
/// arguments in a few functions with frames of tens of KiB, about 90 KiB in
/// all, and those pages would otherwise stay resident for the agent's whole
/// life (docs/benchmarks.md, "Tenth run"). Nothing lives below the current
/// frame: those frames have returned, and a page touched again is simply a
/// fresh zeroed one. A margin is left for the frames this function itself
/// and the caller's next call use.
#[inline(never)]
pub fn release_unused_stack() {
    const MARGIN: usize = 16 * 1024;
    let marker = 0u8;
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let Some(low) = main_stack_below(&maps, here) else {
        return; // not the main thread
    };
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(4096);
    let end = here.saturating_sub(MARGIN) & !(page - 1);
    if end <= low {
        return;
    }
    // SAFETY: [low, end) is this thread's own stack below every live frame
    // (the stack grows down; `end` is MARGIN under this function's frame,
    // room for the rest of the frame and for `madvise`'s own, a few hundred
    // bytes), so nothing refers to it; MADV_DONTNEED makes its pages fresh
    // zeroed ones when next touched.
    unsafe {
        libc::madvise(low as *mut libc::c_void, end - low, libc::MADV_DONTNEED);
    }
}

/// The low end of the `[stack]` mapping in `maps` (`/proc/self/maps`) if it
/// holds `addr`.
fn main_stack_below(maps: &str, addr: usize) -> Option<usize> {
    maps.lines()
        .filter_map(|l| {
            // address perms offset dev inode pathname: the pathname must be
            // `[stack]` itself, not a file whose name ends so.
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 6 && f[5] == "[stack]").then_some(f[0])
        })
        .filter_map(|range| range.split_once('-'))
        .filter_map(|(a, b)| {
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        })
        .find(|(low, high)| (*low..*high).contains(&addr))
        .map(|(low, _)| low)
}

#[cfg(test)]
mod stack_tests {
    #[test]
    fn the_main_stack_is_the_stack_line_that_holds_the_address() {
        let maps = "\
55d0c0000000-55d0c0100000 r-xp 00000000 fd:00 12 /usr/bin/mamori
7f0000000000-7f0000001000 rw-p 00000000 fd:00 13 /tmp/odd [stack]
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
7ffc00100000-7ffc00102000 r-xp 00000000 00:00 0 [vdso]
";
        let f = super::main_stack_below;
        assert_eq!(f(maps, 0x7ffc_0002_0000), Some(0x7ffc_0000_0000));
        // An address in another mapping (a thread's stack is anonymous).
        assert_eq!(f(maps, 0x7f00_0000_0800), None);
        assert_eq!(f(maps, 0x7ffc_0002_1000), None, "the end is exclusive");
        assert_eq!(f("", 1), None);
    }

    /// On the test's own thread (not the main one) it does nothing; on the
    /// main thread's mapping it finds this process's real `[stack]`.
    #[test]
    fn release_unused_stack_leaves_other_threads_alone() {
        super::release_unused_stack();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let marker = 0u8;
        let here = std::hint::black_box(&marker) as *const u8 as usize;
        assert_eq!(
            super::main_stack_below(&maps, here),
            None,
            "a test thread is not the main one"
        );
        assert_eq!(maps.lines().filter(|l| l.ends_with("[stack]")).count(), 1);
    }
}

#[cfg(test)]
mod pipe_tests {
    #[test]
    fn output_pipe_ends_are_close_on_exec() {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        let (r, w) = super::output_pipe().unwrap();
        for fd in [&r, &w] {
            let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
            assert!(flags.contains(FdFlag::FD_CLOEXEC));
        }
    }
}
