//! Building the command for one run: argv, environment, working directory,
//! a new session (so the run is its own process group), the open-files
//! rlimit, and joining the run's cgroup — all before `exec`, so not one
//! instruction of the unit's program runs outside its limits.

use std::ffi::CString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::enforce::{ENV_AGENT_ID, ENV_RUN_ID};
use crate::config::UnitConfig;

pub struct Spec<'a> {
    pub unit: &'a UnitConfig,
    /// Added by the unit's failover group (src/cluster/), if any.
    pub extra_env: &'a [(String, String)],
    pub run_id: i64,
    pub agent_id: &'a str,
    /// `cgroup.procs` of the run's cgroup, if any.
    pub cgroup_procs: Option<std::path::PathBuf>,
}

/// Everything the pre-exec hook needs, prepared before fork (the hook may
/// only call async-signal-safe functions: no allocation, no locks).
pub fn command(spec: &Spec) -> io::Result<Command> {
    let unit = spec.unit;
    let mut cmd = Command::new(&unit.command[0]);
    cmd.args(&unit.command[1..]);
    cmd.envs(unit.env.iter().map(|(k, v)| (k, v)));
    cmd.envs(spec.extra_env.iter().map(|(k, v)| (k, v)));
    cmd.env("MAMORI_UNIT", &unit.name);
    cmd.env(ENV_RUN_ID, spec.run_id.to_string());
    cmd.env(ENV_AGENT_ID, spec.agent_id);
    if let Some(dir) = &unit.working_dir {
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("working_dir {} is not a directory", dir.display()),
            ));
        }
        cmd.current_dir(dir);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let cgroup_path = match &spec.cgroup_procs {
        Some(p) => Some(
            CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|_| io::Error::other("cgroup path contains a NUL byte"))?,
        ),
        None => None,
    };
    let nofile = unit.limits.open_files;
    // SAFETY: the closure only calls async-signal-safe libc functions on
    // data prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(path) = &cgroup_path {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let rc = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = io::Error::last_os_error();
                libc::close(fd);
                if rc != 1 {
                    return Err(err);
                }
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(n) = nofile {
                let lim = libc::rlimit {
                    rlim_cur: n as libc::rlim_t,
                    rlim_max: n as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Start with no blocked signals, whatever the agent's thread had.
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    // The agent's own soft open-files limit back, last: the steps above
    // open files while the agent's descriptors are all still open, and a
    // unit's own `open_files` wins.
    if nofile.is_none() {
        super::nofile::restore_for_child(&mut cmd);
    }
    Ok(cmd)
}
