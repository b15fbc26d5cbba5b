//! The config file: its runtime model and how it is loaded.
//!
//! Loading is two steps (see `docs/config.md` for the user's view):
//! 1. `toml_edit` parses the text and keeps every value's position;
//! 2. `compile` walks the document with `walk::Tbl`, turning what the user
//!    wrote (strings with human units) into the model below, and collects
//!    *every* error as `FILE:LINE:COL: message`. Nothing is skipped: a config
//!    with any error is rejected as a whole.

// --- alerts ---
mod agent;
pub mod alerts;
pub mod checks;
// --- cluster ---
pub mod cluster;
mod compile;
mod flows;
pub mod jobs;
pub mod status;
pub mod units;
mod walk;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

/// A config that loaded without errors.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub agent: AgentConfig,
    /// Services first, then jobs, each in file order. Shared: the agent's
    /// unit tasks hold these, not copies.
    pub units: Vec<std::sync::Arc<UnitConfig>>,
    /// Services' `health` checks first, then `[[check]]`s, in file order.
    pub checks: Vec<checks::CheckConfig>,
    /// Flows: jobs connected by `after`, each named after its first job.
    pub flows: Vec<std::sync::Arc<crate::schedule::flow::FlowDef>>,
    /// Alert rules, channels and escalation policies (src/alert/).
    pub alerts: alerts::AlertsConfig,
    /// The status page's components and how incidents behave.
    pub status: status::StatusConfig,
    /// `[cluster]` and `[[group]]` (src/cluster/); `None` when absent.
    pub cluster: Option<cluster::ClusterConfig>,
}

impl Config {
    pub fn unit(&self, name: &str) -> Option<&UnitConfig> {
        self.units.iter().find(|u| u.name == name).map(|u| &**u)
    }
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Address of the HTTP API (and later the dashboard).
    pub listen: SocketAddr,
    /// Where the SQLite store and the captured logs live.
    pub data_dir: PathBuf,
    /// Bearer token for mutating API calls; generated on first start if absent.
    pub token_file: PathBuf,
    /// How limits are enforced.
    pub enforcement: Enforcement,
    /// How often the polling watchdog reads /proc.
    pub poll_interval: Duration,
    /// How long the agent waits for units to stop when it shuts down.
    pub shutdown_timeout: Duration,
    /// How often each running unit and the host are sampled.
    pub sample_interval: Duration,
    /// Full-resolution samples are kept this long…
    pub sample_retention: Duration,
    /// …and per-minute rollups this long.
    pub rollup_retention: Duration,
    /// Defaults for units that do not say otherwise.
    pub log: LogConfig,
    /// Who may call the read endpoints of the API without the token.
    pub read_auth: ReadAuth,
    /// A second, read-only token (`read_token_file`); `None`: no such token.
    pub read_token_file: Option<PathBuf>,
    /// Per-client request limit of the HTTP API; `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Whether clients on loopback are rate limited too (default: exempt).
    pub rate_limit_loopback: bool,
}

/// `[agent] read_auth`: who may call read (GET) endpoints without a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAuth {
    /// Open to clients on 127.0.0.0/8 and ::1; the others need a token.
    Loopback,
    /// Every read needs a token (the read-only token or the full one).
    Token,
    /// Open to everyone (behind a proxy that does its own authentication).
    None,
}

/// `[agent] rate_limit = "20/s"` with `rate_burst`: a token bucket per client IP.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_sec: f64,
    /// Requests a client may send at once after being idle.
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// The best this machine supports: cgroup2, then cgroup1, then poll.
    Auto,
    Cgroup2,
    Cgroup1,
    Poll,
}

impl Enforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Auto => "auto",
            Enforcement::Cgroup2 => "cgroup2",
            Enforcement::Cgroup1 => "cgroup1",
            Enforcement::Poll => "poll",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitKind {
    Service,
    Job,
}

impl UnitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitKind::Service => "service",
            UnitKind::Job => "job",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    Always,
    OnFailure,
    Never,
}

/// When and how fast a service is started again after it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartConfig {
    pub mode: RestartMode,
    /// Delay before the second consecutive restart; doubles each time after.
    /// The first restart after a stable run is immediate.
    pub backoff_min: Duration,
    /// The cap on the delay.
    pub backoff_max: Duration,
    /// A run that lasted this long resets the backoff.
    pub stable_after: Duration,
    /// More than `start_limit` starts within `start_window` → `gave-up`.
    pub start_limit: u32,
    pub start_window: Duration,
}

impl Default for RestartConfig {
    fn default() -> Self {
        RestartConfig {
            mode: RestartMode::Always,
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
            start_limit: 5,
            start_window: Duration::from_secs(60),
        }
    }
}

/// A duration as whole milliseconds, like every other time in the API.
fn millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64),
        None => s.serialize_none(),
    }
}

/// Limits on a unit's whole process tree. `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Limits {
    /// Resident memory of the tree, bytes.
    pub memory: Option<u64>,
    /// CPU time (user + system) of the tree (`cpu_ms` in the API).
    #[serde(rename = "cpu_ms", serialize_with = "millis")]
    pub cpu: Option<Duration>,
    /// Wall-clock time of one run (`wall_ms` in the API).
    #[serde(rename = "wall_ms", serialize_with = "millis")]
    pub wall: Option<Duration>,
    /// Open file descriptors per process (RLIMIT_NOFILE).
    pub open_files: Option<u64>,
}

/// Rotation of a unit's captured stdout and stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Size at which the current file is rotated.
    pub max_size: u64,
    /// How many files (current + rotated) are kept.
    pub keep: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_size: 10 * 1024 * 1024,
            keep: 5,
        }
    }
}

#[derive(Debug, Clone)]
pub struct UnitConfig {
    pub name: String,
    pub kind: UnitKind,
    /// argv; a string in the config becomes `["/bin/sh", "-c", string]`.
    pub command: Vec<String>,
    pub working_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// Services: start with the agent (default true). Jobs: never.
    pub autostart: bool,
    pub restart: RestartConfig,
    pub stop_signal: nix::sys::signal::Signal,
    pub stop_timeout: Duration,
    pub limits: Limits,
    pub log: LogConfig,
    /// Jobs this job runs after (validated; flows act on it, see docs/config.md).
    pub after: Vec<String>,
    /// Services: what to do when the `health` check goes down.
    pub on_unhealthy: OnUnhealthy,
    /// Jobs: schedule, retries, ok codes, overlap and catch-up rules.
    pub job: Option<jobs::JobSpec>,
    /// Services: the memory-leak detector (`[service.leak]`; on by default).
    pub leak: Option<crate::probe::leak::LeakConfig>,
}

impl UnitConfig {
    /// Whether an exit code counts as success (`ok_codes` of a job, else 0).
    pub fn ok_code(&self, code: i32) -> bool {
        match &self.job {
            Some(j) => j.ok_codes.contains(&code),
            None => code == 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnhealthy {
    /// Only report it (events, status).
    None,
    /// Restart the service (gracefully: stop signal, then stop_timeout).
    Restart,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // Not about a place in the file (it could not be read at all).
            return write!(f, "{}: {}", self.file, self.message);
        }
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// Every problem found in a config file, in file order.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and compiles a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.display().to_string(),
            line: 0,
            col: 0,
            message: if e.kind() == std::io::ErrorKind::NotFound {
                format!("cannot read the config file: {e}; name the config with -c FILE or the MAMORI_CONFIG variable")
            } else {
                format!("cannot read the config file: {e}")
            },
        }])
    })?;
    load_str(path, text)
}

/// Compiles config text as if read from `path` (relative paths in the config
/// are taken relative to the directory of `path`).
pub fn load_str(path: &Path, text: String) -> Result<Config, ConfigErrors> {
    compile::compile(path, text)
}
