//! Test harness: starts the real `mamori` binary in a temp dir on a free
//! 127.0.0.1 port, talks to it over real HTTP, and stops it (SIGTERM, then
//! SIGKILL) on every path, including a failing assertion (Drop).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_mamori");

/// Generous: the machine may be slow; conditions are polled, never slept on.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Polls `cond` every 50 ms until it returns Some, or panics after `WAIT`.
pub fn wait_for<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if start.elapsed() > WAIT {
            panic!("timed out after {WAIT:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Agent {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    pub child: Option<Child>,
    /// Starts the agent with this soft open-files limit (hard unchanged),
    /// as a service manager's default of 1024 would.
    pub soft_nofile: Option<u64>,
}

impl Agent {
    /// Writes `[agent]` (free port, data dir in the temp dir, `extra_agent`
    /// lines) followed by `units`, then starts the agent and waits for /healthz.
    pub fn start(extra_agent: &str, units: &str) -> Agent {
        match Self::try_start(extra_agent, units) {
            Ok(a) => a,
            Err(log) => panic!("agent exited early; log:\n{log}"),
        }
    }

    /// Like `start`, but an agent that exits at start is an `Err` with its log.
    pub fn try_start(extra_agent: &str, units: &str) -> Result<Agent, String> {
        Self::try_start_with(extra_agent, units, None)
    }

    /// Like `try_start`, with a soft open-files limit for the agent.
    pub fn try_start_with(
        extra_agent: &str,
        units: &str,
        soft_nofile: Option<u64>,
    ) -> Result<Agent, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = dir.path().join("mamori.toml");
        let text = format!(
            "[agent]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n{extra_agent}\n\n{units}\n"
        );
        std::fs::write(&config, text).expect("write config");
        let mut a = Agent {
            dir,
            config,
            port,
            child: None,
            soft_nofile,
        };
        a.try_spawn()?;
        Ok(a)
    }

    /// Starts (again) the agent process on the same config and data dir.
    pub fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("agent exited early; log:\n{log}");
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .expect("agent log");
        let mut cmd = Command::new(BIN);
        cmd.arg("-c")
            .arg(&self.config)
            .args(["agent", "--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        if let Some(soft) = self.soft_nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: getrlimit/setrlimit are async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    let mut lim = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    lim.rlim_cur = soft as libc::rlim_t;
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("start mamori agent");
        self.child = Some(child);
        let ready = wait_for("the agent's /healthz", || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return Some(false);
                }
            }
            http(self.port, "GET", "/healthz", None)
                .ok()
                .filter(|(s, _)| *s == 200)
                .map(|_| true)
        });
        if ready {
            Ok(())
        } else {
            self.child = None;
            Err(self.log())
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("token"))
            .expect("token file")
            .trim()
            .to_string()
    }

    /// Runs the CLI against this agent.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run mamori cli")
    }

    pub fn get(&self, path: &str) -> Value {
        let (status, body) = http(self.port, "GET", path, None).expect("GET");
        assert!(status < 300, "GET {path} -> {status}: {body}");
        serde_json::from_str(&body).expect("JSON body")
    }

    pub fn post(&self, path: &str) -> (u16, Value) {
        let token = self.token();
        let (status, body) = http(self.port, "POST", path, Some(&token)).expect("POST");
        (status, serde_json::from_str(&body).expect("JSON body"))
    }

    pub fn unit(&self, name: &str) -> Value {
        self.get(&format!("/api/v1/units/{name}"))
    }

    pub fn runs(&self, name: &str) -> Vec<Value> {
        self.get(&format!("/api/v1/runs?unit={name}"))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until the unit's newest run is no longer running; returns it.
    pub fn wait_run_end(&self, name: &str) -> Value {
        wait_for(&format!("a finished run of {name}"), || {
            self.runs(name)
                .into_iter()
                .next()
                .filter(|r| r["state"] != "running")
        })
    }

    /// SIGTERM and wait for the agent to exit (SIGKILL if it does not within `WAIT`).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > WAIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("agent did not stop within {WAIT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            for _ in 0..600 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A minimal HTTP/1.1 client (one request per connection) for the tests.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Pids of live (non-zombie) processes whose command line contains `marker`.
pub fn procs_with(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) {
            out.push(pid);
        }
    }
    out
}

/// Pids of live `sleep MARKER` processes (not the shells that started them).
pub fn sleeps_with(marker: &str) -> Vec<i32> {
    procs_with(marker)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c).replace('\0', " ").trim()
                        == format!("sleep {marker}")
                })
                .unwrap_or(false)
        })
        .collect()
}

/// A marker unique to this test process and call site, for `procs_with`.
pub fn marker(tag: &str) -> String {
    format!("{}{}", 100_000 + std::process::id() % 100_000, tag)
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// An agent with something of everything (alert channel and policy, a
/// service, a flow with a failing job, a check up and one down): what the
/// metrics and OpenAPI tests need for every endpoint to have data.
pub const BUSY_UNITS: &str = r#"
[alerts]
policy = { critical = "page", warning = "page", info = "page" }

[[channel]]
name = "log"
kind = "command"
command = ["true"]

[[policy]]
name = "page"
[[policy.step]]
after = "0s"
channels = ["log"]

[[service]]
name = "web"
command = ["sleep", "100000"]
limits = { memory = "512MiB" }

[[job]]
name = "extract"
command = "true"

[[job]]
name = "load"
command = "exit 3"
after = ["extract"]

[[check]]
name = "always-up"
kind = "exec"
command = "true"
interval = "1s"

[[check]]
name = "always-down"
kind = "exec"
command = "false"
interval = "1s"
fall = 1
"#;

/// A flow of three levels: extract, then transform (the script
/// `work/transform.sh`, see [`setup_work`]), then load and report.
pub const THREE_LEVELS: &str = r#"[[job]]
name = "extract"
command = "echo extracted"

[[job]]
name = "transform"
after = ["extract"]
command = "sh ./transform.sh"
working_dir = "work"

[[job]]
name = "load"
after = ["transform"]
command = "echo loaded"

[[job]]
name = "report"
after = ["transform"]
command = "echo reported"
"#;

/// Writes the transform job's script (`work/transform.sh`) of
/// [`THREE_LEVELS`].
pub fn setup_work(a: &Agent, script: &str) {
    let dir = a.dir.path().join("work");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("transform.sh"), script).unwrap();
}
