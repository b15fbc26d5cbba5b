//! The command line: what the user typed (clap) turned into calls, either
//! running the agent in this process or talking to a running agent over its
//! HTTP API (`client`). Exit codes: 0 success, 1 failure (or a config error),
//! 2 usage error; `run --wait` exits with the job's own code.

mod alerts;
mod client;
mod cluster;
mod demo;
mod incidents;
mod show;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config;

#[derive(Parser)]
#[command(
    name = "mamori",
    version,
    about = "Keeps services and batch jobs out of trouble: runs them under limits, watches, acts, tells."
)]
pub struct Cli {
    /// The config file. Every command finds the agent through it (listen address, token file).
    #[arg(
        short,
        long,
        global = true,
        env = "MAMORI_CONFIG",
        default_value = "mamori.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent in the foreground (logs to stdout).
    Agent {
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Run the agent on the embedded demo config (a web server, a leaking
    /// service, a runaway job) in a scratch directory.
    Demo {
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Where the demo keeps its config and data.
        #[arg(long, default_value = "mamori-demo")]
        dir: PathBuf,
    },
    /// Check a config file; print every error as FILE:LINE:COL: message.
    CheckConfig {
        /// The file to check (default: --config).
        file: Option<PathBuf>,
    },
    #[command(flatten)]
    Cluster(ClusterCmd),
    /// Show units: state, pid, uptime, restarts, memory, last exit reason.
    Status {
        unit: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Start a unit (a service, or a job run).
    Start { unit: String },
    /// Stop a unit: its stop signal to the whole tree, SIGKILL after stop_timeout.
    Stop { unit: String },
    /// Stop and start a unit; also the way out of `gave-up`.
    Restart { unit: String },
    /// Run a job now. A flow is named after its first job: that name runs
    /// the whole flow (of several jobs) unless --only is given.
    Run {
        job: String,
        /// Wait for the run to end and exit with its exit code (a flow: 0
        /// when it succeeded, 1 when it stalled).
        #[arg(long)]
        wait: bool,
        /// Run this job alone, even when its name is also a flow's.
        #[arg(long)]
        only: bool,
    },
    /// Print a unit's captured stdout and stderr.
    Logs {
        unit: String,
        /// Keep printing new output (starting with the last 10 lines, unless -n or --run says otherwise).
        #[arg(short, long)]
        follow: bool,
        /// Only the output of this run.
        #[arg(long)]
        run: Option<i64>,
        /// Only the last N lines (then follow, with -f).
        #[arg(short = 'n', long = "lines", value_name = "N")]
        lines: Option<usize>,
    },
    /// List recorded runs, newest first.
    Runs {
        unit: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Show checks: status, since when, last failure reason, latency.
    Checks {
        #[arg(long)]
        json: bool,
    },
    /// Say that a heartbeat's job ran (what an outside cron job calls).
    Ping { check: String },
    /// A live table of units' memory, CPU, fds and threads, and the host.
    Top {
        /// Print once and exit.
        #[arg(long)]
        once: bool,
    },
    /// A unit's recorded resource samples.
    Samples {
        unit: String,
        /// Only samples from this long ago until now, e.g. "10m".
        #[arg(long, default_value = "1h")]
        since: String,
        /// Per-minute min/avg/max instead of full resolution.
        #[arg(long)]
        minutes: bool,
        /// CSV with a header line, bytes and milliseconds (for spreadsheets).
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        /// The API's JSON (before this version, the default output).
        #[arg(long)]
        json: bool,
    },
    /// Flows: their jobs, schedule, next run and the latest run's job states.
    Flows {
        flow: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Rerun a flow's latest run: the failed jobs and on, from a job, or one job.
    Rerun {
        flow: String,
        #[arg(long, conflicts_with_all = ["from", "only"])]
        from_failed: bool,
        #[arg(long)]
        from: Option<String>,
        #[arg(long, conflicts_with = "from")]
        only: Option<String>,
        /// Which open flow run (default: the flow's newest run).
        #[arg(long, value_name = "ID")]
        run: Option<i64>,
        /// Why (recorded with your user name).
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Accept a failed or held job without rerunning it; what is below it continues.
    Release {
        job: String,
        /// Which open flow run (default: the flow's newest run).
        #[arg(long, value_name = "ID")]
        run: Option<i64>,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Hold a job or a whole flow by hand: a held job waits in its run until `unhold`; a held flow's scheduled times are skipped.
    Hold {
        target: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Lift a hold by hand: the job or flow may start again (a held job in a run starts now).
    Unhold { target: String },
    /// The next run times of a scheduled job (read from the config; no agent needed).
    Next {
        job: String,
        #[arg(short, default_value_t = 5)]
        n: usize,
    },
    /// One run in full: how it ended, its execution context and the tail of its output.
    Show {
        run: i64,
        /// Lines of output to show.
        #[arg(long, default_value_t = 20)]
        tail: usize,
    },
    // --- alerts ---
    /// List alerts: the active ones, or those in --state.
    Alerts {
        /// firing, acknowledged, resolved or all.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Show one alert with every notification and delivery attempt.
    Alert {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge an alert: stops its escalation until ack_timeout.
    Ack {
        id: i64,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Resolve an alert by hand. One that clears by itself (a check alert
    /// clears when the check is up) is refused until it has, unless --force.
    Resolve {
        id: i64,
        /// Resolve it even though what raised it may not be over.
        #[arg(long)]
        force: bool,
    },
    /// Send a test notification through a channel now (checks mail setup).
    TestChannel { channel: String },
    /// Mute notifications of matching alerts for a while (alerts stay visible).
    Silence {
        #[command(subcommand)]
        action: SilenceCmd,
    },
    // --- incidents, dashboard ---
    /// Incidents for the status page: open, update, resolve, list, show.
    Incident {
        #[command(subcommand)]
        action: incidents::IncidentCmd,
    },
    /// Print a one-time link that logs a browser in to the dashboard.
    DashboardUrl,
    /// List recent events, oldest first.
    Events {
        #[arg(long)]
        unit: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

// --- cluster ---
#[derive(Subcommand)]
enum ClusterCmd {
    /// The cluster's live nodes and each one's role in every group.
    Nodes {
        #[arg(long)]
        json: bool,
    },
    /// Failover groups: the active node, its fencing token, the standbys.
    Groups {
        #[arg(long)]
        json: bool,
    },
    /// Move a group to another node on purpose (the target must qualify).
    Switchover {
        group: String,
        /// The node to move it to.
        #[arg(long)]
        to: String,
    },
    /// A failover drill: switch the group over and back, measure, record.
    Drill { group: String },
    /// Past drills, newest first.
    Drills {
        group: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SilenceCmd {
    /// Add a silence: `mamori silence add subject=web --for 2h --comment "deploy"`.
    Add {
        /// LABEL=PATTERN (labels: key, rule, subject, severity; `*` is a wildcard).
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long, e.g. "30m", "2h".
        #[arg(long = "for")]
        duration: String,
        /// Why (required).
        #[arg(long)]
        comment: String,
    },
    /// List active silences (--all: expired ones too).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// End a silence now.
    Expire { id: i64 },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Agent { .. } | Cmd::Demo { .. }) {
        // A client's output piped into `head` ends like any Unix tool's,
        // silently, instead of a panic from `println!`. The agent keeps
        // Rust's ignored SIGPIPE: a closed socket must not kill it.
        // SAFETY: setting a signal disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mamori: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load(path: &std::path::Path) -> Result<config::Config> {
    config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    crate::util::limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// "1 job", "2 jobs".
fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::CheckConfig { file } => {
            let path = file.unwrap_or(cli.config);
            match config::load(&path) {
                Ok(c) => {
                    let services = c
                        .units
                        .iter()
                        .filter(|u| u.kind == config::UnitKind::Service)
                        .count();
                    println!(
                        "{}: ok ({}, {})",
                        path.display(),
                        counted(services, "service", "services"),
                        counted(c.units.len() - services, "job", "jobs")
                    );
                    // --- alerts ---
                    let al = &c.alerts;
                    println!(
                        "alerts: {}, {}, {}{}",
                        counted(al.rules.len(), "rule", "rules"),
                        counted(al.channels.len(), "channel", "channels"),
                        counted(al.policies.len(), "policy", "policies"),
                        if al.channels.is_empty() {
                            " (no channel: alerts are recorded but sent nowhere)"
                        } else {
                            ""
                        }
                    );
                    // --- cluster ---
                    if let Some(cl) = &c.cluster {
                        let member = cl
                            .groups
                            .iter()
                            .filter(|g| g.nodes.contains(&cl.node))
                            .count();
                        println!(
                            "cluster: node {}, {} backend, lease {} ms, {} ({} with this node)",
                            cl.node,
                            cl.backend.name(),
                            cl.lease_ttl.as_millis(),
                            counted(cl.groups.len(), "group", "groups"),
                            member
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    for e in &errors.0 {
                        eprintln!("{e}");
                    }
                    eprintln!(
                        "{}: {} error{}",
                        path.display(),
                        errors.0.len(),
                        if errors.0.len() == 1 { "" } else { "s" }
                    );
                    Ok(ExitCode::from(1))
                }
            }
        }
        Cmd::Agent { log_format } => {
            let config = load(&cli.config)?;
            init_logging(log_format);
            let rt = runtime()?;
            crate::util::release_unused_stack();
            rt.block_on(crate::agent::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo { log_format, dir } => {
            let path = demo::prepare(&dir)?;
            let config = load(&path)?;
            init_logging(log_format);
            demo::banner(&path);
            let rt = runtime()?;
            crate::util::release_unused_stack();
            rt.block_on(crate::agent::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Next { job, n } => {
            let config = load(&cli.config)?;
            show::next(&config, &job, n)
        }
        cmd => {
            let config = load(&cli.config)?;
            let c = client::Client::new(&config)?;
            runtime()?.block_on(remote(cmd, c))
        }
    }
}

async fn remote(cmd: Cmd, c: client::Client) -> Result<ExitCode> {
    match cmd {
        Cmd::Status { unit, json } => show::status(&c, unit.as_deref(), json).await,
        Cmd::Start { unit } => show::action(&c, &unit, "start").await,
        Cmd::Stop { unit } => show::action(&c, &unit, "stop").await,
        Cmd::Restart { unit } => show::action(&c, &unit, "restart").await,
        Cmd::Run { job, wait, only } => show::run(&c, &job, wait, only).await,
        Cmd::Logs {
            unit,
            follow,
            run,
            lines,
        } => {
            // `tail -f`: following a unit starts from its last lines, not
            // from the whole history; a run is shown from its start.
            let lines = lines.or((follow && run.is_none()).then_some(10));
            show::logs(&c, &unit, follow, run, lines).await
        }
        Cmd::Runs { unit, limit, json } => show::runs(&c, unit.as_deref(), limit, json).await,
        Cmd::Events { unit, limit, json } => show::events(&c, unit.as_deref(), limit, json).await,
        Cmd::Checks { json } => show::checks(&c, json).await,
        Cmd::Show { run, tail } => show::show_run(&c, run, tail).await,
        Cmd::Flows { flow, json } => show::flows(&c, flow.as_deref(), json).await,
        Cmd::Rerun {
            flow,
            from_failed,
            from,
            only,
            run,
            comment,
        } => {
            let mut how = match (from_failed, from, only) {
                (true, None, None) => "from_failed".to_string(),
                (false, Some(j), None) => format!("from={j}"),
                (false, None, Some(j)) => format!("only={j}"),
                _ => anyhow::bail!("say how to rerun: --from-failed, --from JOB or --only JOB"),
            };
            if let Some(id) = run {
                how.push_str(&format!("&run={id}"));
            }
            show::flow_action(
                &c,
                &format!("/api/v1/flows/{flow}/rerun?{how}"),
                &comment,
                &format!("{flow}: rerun started"),
            )
            .await
        }
        Cmd::Release { job, run, comment } => {
            let run = run.map(|id| format!("run={id}")).unwrap_or_default();
            show::flow_action(
                &c,
                &format!("/api/v1/jobs/{job}/release?{run}"),
                &comment,
                &format!("{job}: released"),
            )
            .await
        }
        Cmd::Hold { target, comment } => {
            show::flow_action(
                &c,
                &format!("/api/v1/holds/{target}?"),
                &comment,
                &format!("{target}: held"),
            )
            .await
        }
        Cmd::Unhold { target } => {
            c.delete(&format!("/api/v1/holds/{target}?by={}", show::me()))
                .await?;
            println!("{target}: no longer held");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ping { check } => show::ping(&c, &check).await,
        Cmd::Top { once } => show::top(&c, once).await,
        Cmd::Samples {
            unit,
            since,
            minutes,
            csv,
            json,
        } => show::samples(&c, &unit, &since, minutes, csv, json).await,
        Cmd::Agent { .. } | Cmd::Demo { .. } | Cmd::CheckConfig { .. } | Cmd::Next { .. } => {
            Ok(ExitCode::from(2))
        }
        Cmd::Cluster(cc) => match cc {
            ClusterCmd::Nodes { json } => cluster::nodes(&c, json).await,
            ClusterCmd::Groups { json } => cluster::groups(&c, json).await,
            ClusterCmd::Switchover { group, to } => cluster::switchover(&c, &group, &to).await,
            ClusterCmd::Drill { group } => cluster::drill(&c, &group).await,
            ClusterCmd::Drills { group, json } => cluster::drills(&c, group.as_deref(), json).await,
        },
        Cmd::Alerts { state, limit, json } => alerts::list(&c, state.as_deref(), limit, json).await,
        Cmd::Alert { id, json } => alerts::show(&c, id, json).await,
        Cmd::Ack { id, comment } => alerts::ack(&c, id, &comment).await,
        Cmd::Resolve { id, force } => alerts::resolve(&c, id, force).await,
        Cmd::TestChannel { channel } => alerts::test_channel(&c, &channel).await,
        Cmd::Silence { action } => match action {
            SilenceCmd::Add {
                matchers,
                duration,
                comment,
            } => alerts::silence_add(&c, &matchers, &duration, &comment).await,
            SilenceCmd::List { all, json } => alerts::silence_list(&c, all, json).await,
            SilenceCmd::Expire { id } => alerts::silence_expire(&c, id).await,
        },
        Cmd::Incident { action } => incidents::run(&c, action).await,
        Cmd::DashboardUrl => incidents::dashboard_url(&c).await,
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MAMORI_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    match format {
        // Colours only on a terminal: a file or a collector gets plain text.
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}
