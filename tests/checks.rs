//! Checks with real processes and servers: http down when its server dies and
//! up after `rise`; an exec check that cannot start is down; log, heartbeat,
//! disk and tcp checks; `on_unhealthy = "restart"`; samples and `top`.

mod common;

use common::{free_port, wait_for, Agent};
use serde_json::Value;

fn check(a: &Agent, name: &str) -> Value {
    a.get(&format!("/api/v1/checks/{name}"))
}

fn wait_status(a: &Agent, name: &str, status: &str) -> Value {
    wait_for(&format!("check {name} {status}"), || {
        let c = check(a, name);
        (c["status"] == status).then_some(c)
    })
}

fn events_of(a: &Agent, subject: &str, kind: &str) -> Vec<Value> {
    a.get(&format!("/api/v1/events?unit={subject}&limit=1000"))
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

#[test]
fn http_check_goes_down_with_its_server_and_up_after_rise() {
    // `site` watches the server from outside; `web`'s own health check
    // watches the service, and waits (paused) while it is stopped on purpose.
    let port = free_port();
    let a = Agent::start(
        "",
        &format!(
            r#"[[service]]
name = "web"
command = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
health = {{ kind = "http", url = "http://127.0.0.1:{port}/", interval = "200ms", timeout = "1s", fall = 10, rise = 3 }}

[[check]]
name = "site"
kind = "http"
url = "http://127.0.0.1:{port}/"
interval = "200ms"
timeout = "1s"
fall = 2
rise = 3
"#
        ),
    );
    wait_status(&a, "web", "up");
    wait_status(&a, "site", "up");
    // Before the server listened the checks may have been down once already;
    // what matters is what happens from the stop on.
    let mark = a
        .get("/api/v1/events?limit=1")
        .as_array()
        .and_then(|v| v.last().and_then(|e| e["id"].as_i64()))
        .unwrap_or(0);
    let out = a.cli(&["stop", "web"]);
    assert!(out.status.success());
    let c = wait_status(&a, "site", "down");
    let reason = c["last_reason"].as_str().unwrap();
    assert!(reason.to_lowercase().contains("connect"), "{reason}");
    assert_eq!(c["unit"], Value::Null);
    // Stopped by a person: its health check is not probed, and not down.
    let h = wait_status(&a, "web", "paused");
    assert_eq!(h["unit"], "web");
    let out = a.cli(&["start", "web"]);
    assert!(out.status.success());
    wait_status(&a, "web", "up");
    wait_status(&a, "site", "up");
    // Edge-triggered: one event per flip, not one per failed probe.
    std::thread::sleep(std::time::Duration::from_millis(600));
    let since_mark = |subject: &str, kind: &str| -> Vec<Value> {
        events_of(&a, subject, kind)
            .into_iter()
            .filter(|e| e["id"].as_i64().unwrap_or(0) > mark)
            .collect()
    };
    let downs = since_mark("site", "check.down");
    assert_eq!(downs.len(), 1, "{downs:?}");
    assert!(downs[0]["reason"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("connect"));
    assert_eq!(since_mark("site", "check.up").len(), 1);
    // The health check was never down: paused at the stop (once), up after
    // the start. (Its `fall` of 10 probes, 2 s, covers the server's start.)
    assert_eq!(since_mark("web", "check.down"), Vec::<Value>::new());
    let paused = since_mark("web", "check.paused");
    assert_eq!(paused.len(), 1, "{paused:?}");
    assert_eq!(paused[0]["check"], "web");
    assert_eq!(since_mark("web", "check.up").len(), 1);
}

#[test]
fn a_crash_looping_service_is_reported_down_once_not_at_every_restart() {
    // The service never listens and exits after a second. Each start
    // judges its health afresh (`unknown`), and each run it goes down
    // again: the check was down all along, so one `check.down` (and one
    // alert occurrence), not one per restart.
    let port = free_port();
    let a = Agent::start(
        "",
        &format!(
            r#"[[service]]
name = "flaky"
command = ["sh", "-c", "sleep 1; exit 1"]
backoff_min = "100ms"
backoff_max = "100ms"
start_limit = 1000
health = {{ kind = "tcp", address = "127.0.0.1:{port}", interval = "100ms", timeout = "1s", fall = 1 }}
"#
        ),
    );
    // Four runs ended (each was judged down: a probe every 100 ms, fall 1,
    // over a second), and a fifth started.
    let starts = wait_for("five starts of flaky", || {
        let s = events_of(&a, "flaky", "unit.started");
        (s.len() >= 5).then_some(s)
    });
    let downs = events_of(&a, "flaky", "check.down");
    assert_eq!(
        downs.len(),
        1,
        "one check.down over {} runs: {downs:?}",
        starts.len()
    );
    assert!(events_of(&a, "flaky", "check.up").is_empty());
    // Between two runs it reads unknown; once judged again, down since the
    // first time (before the second start), not since the last restart.
    let c = wait_status(&a, "flaky", "down");
    let second_start = starts[1]["ts"].as_i64().unwrap();
    assert!(
        c["since"].as_i64().unwrap() <= second_start,
        "{c} {starts:?}"
    );
}

#[test]
fn http_check_reports_status_and_body_mismatches() {
    let port = free_port();
    let a = Agent::start(
        "",
        &format!(
            r#"[[service]]
name = "web"
command = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]

[[check]]
name = "missing-page"
kind = "http"
url = "http://127.0.0.1:{port}/nope.html"
interval = "200ms"
fall = 1

[[check]]
name = "wrong-body"
kind = "http"
url = "http://127.0.0.1:{port}/"
body = "this text is not in a directory listing"
interval = "200ms"
fall = 1
"#
        ),
    );
    // Until the server listens the reason is "connection refused"; then it is the page.
    wait_for("the 404 reason", || {
        let c = check(&a, "missing-page");
        (c["status"] == "down" && c["last_reason"] == "HTTP 404 (expected 2xx)").then_some(())
    });
    wait_for("the body reason", || {
        let c = check(&a, "wrong-body");
        (c["status"] == "down"
            && c["last_reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("HTTP 200 but the body does not contain")))
        .then_some(())
    });
}

#[test]
fn exec_check_whose_command_does_not_exist_is_down_with_that_reason() {
    // The slow probe's sleep is found by its exact command line (a plain
    // "sleep 5" would also match someone's "sleep 540" elsewhere).
    let m = common::marker("81");
    let a = Agent::start(
        "",
        &format!(
            r#"[[check]]
name = "probe"
kind = "exec"
command = ["/nonexistent/check-script"]
interval = "200ms"
fall = 1

[[check]]
name = "slow"
kind = "exec"
command = "sleep {m}"
interval = "300ms"
timeout = "200ms"
fall = 1

[[check]]
name = "failing"
kind = "exec"
command = "echo 'replica lag 42s'; exit 2"
interval = "200ms"
fall = 1
"#
        ),
    );
    let c = wait_status(&a, "probe", "down");
    let reason = c["last_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("cannot start /nonexistent/check-script"),
        "{reason}"
    );
    assert!(reason.contains("No such file"), "{reason}");
    let c = wait_status(&a, "slow", "down");
    assert!(
        c["last_reason"]
            .as_str()
            .unwrap()
            .starts_with("timed out after 200ms"),
        "{c}"
    );
    let c = wait_status(&a, "failing", "down");
    assert_eq!(c["last_reason"], "exit 2: replica lag 42s");
    // The timed-out probe's process is not left behind.
    wait_for("no leftover sleep", || {
        common::sleeps_with(&m).is_empty().then_some(())
    });
}

#[test]
fn log_check_fires_on_a_line_written_by_a_unit() {
    let a = Agent::start(
        "",
        r#"[[service]]
name = "db"
command = "echo starting; sleep 1; echo 'kernel: EDAC MC0: 1 CE memory error on DIMM_A1'; sleep 1000"

[[check]]
name = "hw-memory"
kind = "log"
unit = "db"
pattern = "(?i)(memory error|ECC|Out of memory)"
clear_after = "1h"
"#,
    );
    let c = wait_status(&a, "hw-memory", "down");
    assert!(
        c["last_reason"]
            .as_str()
            .unwrap()
            .contains("1 CE memory error on DIMM_A1"),
        "{c}"
    );
    let matched = events_of(&a, "hw-memory", "check.log_matched");
    assert_eq!(matched.len(), 1, "{matched:?}");
    assert_eq!(
        matched[0]["line"],
        "kernel: EDAC MC0: 1 CE memory error on DIMM_A1"
    );
    assert_eq!(matched[0]["source"], "unit db");
}

#[test]
fn log_check_on_a_file_being_appended_to() {
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("app.log");
    std::fs::write(&path, "FATAL but old, before the agent looked\n").unwrap();
    let a = Agent::start(
        "",
        &format!(
            r#"[[check]]
name = "syslog"
kind = "log"
file = "{}"
pattern = "FATAL"
clear_after = "500ms"
"#,
            path.display()
        ),
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        check(&a, "syslog")["status"],
        "up",
        "old lines are not news"
    );
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(f, "2026-11-23 FATAL disk controller reset").unwrap();
    let c = wait_status(&a, "syslog", "down");
    assert!(c["last_reason"]
        .as_str()
        .unwrap()
        .contains("disk controller reset"));
    wait_status(&a, "syslog", "up");
}

#[test]
fn heartbeat_goes_late_and_a_ping_or_job_success_brings_it_back() {
    let a = Agent::start(
        "",
        r#"[[job]]
name = "nightly"
command = "true"

[[check]]
name = "nightly-ran"
kind = "heartbeat"
period = "1s"
grace = "500ms"
job = "nightly"

[[check]]
name = "outside-cron"
kind = "heartbeat"
period = "1s"
grace = "500ms"
"#,
    );
    let c = wait_status(&a, "outside-cron", "down");
    assert!(
        c["last_reason"]
            .as_str()
            .unwrap()
            .starts_with("late: no ping since the agent started"),
        "{c}"
    );
    let out = a.cli(&["ping", "outside-cron"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(check(&a, "outside-cron")["status"], "up");
    let c = wait_status(&a, "outside-cron", "down");
    assert!(
        c["last_reason"]
            .as_str()
            .unwrap()
            .starts_with("late: last ping at"),
        "{c}"
    );

    wait_status(&a, "nightly-ran", "down");
    let out = a.cli(&["run", "nightly", "--wait"]);
    assert!(out.status.success());
    wait_status(&a, "nightly-ran", "up");

    // Pings need the token; an unknown heartbeat is a 404.
    let (status, _) =
        common::http(a.port, "POST", "/api/v1/heartbeats/outside-cron", None).unwrap();
    assert_eq!(status, 401);
    let (status, body) = a.post("/api/v1/heartbeats/nope");
    assert_eq!(status, 404, "{body}");
}

#[test]
fn a_heartbeat_added_after_its_job_ran_counts_that_success_as_its_ping() {
    let mut a = Agent::start(
        "",
        r#"[[job]]
name = "nightly"
command = "true"
"#,
    );
    let out = a.cli(&["run", "nightly", "--wait"]);
    assert!(out.status.success());
    let run = a.wait_run_end("nightly");
    assert_eq!(run["state"], "succeeded", "{run}");
    let ended_at = run["ended_at"].as_i64().unwrap();
    a.stop();

    // The operator adds a heartbeat for the job and restarts the agent:
    // the job's last success is its last ping, not "never".
    let mut config = std::fs::read_to_string(&a.config).unwrap();
    config.push_str(
        r#"
[[check]]
name = "nightly-ran"
kind = "heartbeat"
period = "1h"
job = "nightly"
"#,
    );
    std::fs::write(&a.config, config).unwrap();
    a.spawn();
    let c = wait_for("the heartbeat's first ping", || {
        let c = check(&a, "nightly-ran");
        (!c["last_ping_at"].is_null()).then_some(c)
    });
    assert_eq!(c["status"], "up", "{c}");
    assert_eq!(c["last_ping_at"].as_i64(), Some(ended_at), "{c}");
}

#[test]
fn disk_and_tcp_checks() {
    let port = free_port();
    let a = Agent::start(
        "",
        &format!(
            r#"[[check]]
name = "root-ok"
kind = "disk"
path = "/"
max_used = "100%"
interval = "200ms"
rise = 1

[[check]]
name = "root-full"
kind = "disk"
path = "/"
max_used = 0
interval = "200ms"
fall = 1

[[check]]
name = "nobody-home"
kind = "tcp"
address = "127.0.0.1:{port}"
interval = "200ms"
fall = 1
"#
        ),
    );
    wait_status(&a, "root-ok", "up");
    let c = wait_status(&a, "root-full", "down");
    assert!(
        c["last_reason"]
            .as_str()
            .unwrap()
            .contains("% full (limit 0%)"),
        "{c}"
    );
    let c = wait_status(&a, "nobody-home", "down");
    assert!(
        c["last_reason"].as_str().unwrap().contains("refused"),
        "{c}"
    );
}

#[test]
fn unhealthy_service_is_restarted_when_asked_to() {
    let work = tempfile::tempdir().unwrap();
    let flag = work.path().join("healthy");
    let a = Agent::start(
        "",
        &format!(
            r#"[[service]]
name = "api"
command = "touch {flag}; exec sleep 1000"
on_unhealthy = "restart"
health = {{ kind = "exec", command = "test -f {flag}", interval = "200ms", fall = 2, rise = 1 }}
"#,
            flag = flag.display()
        ),
    );
    wait_status(&a, "api", "up");
    std::fs::remove_file(&flag).unwrap();
    // The service recreates the file when it restarts; so it is healthy again.
    let first = wait_for("the first run stopped for health", || {
        a.runs("api").into_iter().find(|r| r["state"] == "stopped")
    });
    assert_eq!(first["reason"], "restart");
    wait_status(&a, "api", "up");
    assert_eq!(a.unit("api")["state"], "running");
    // The new run says why it started, and it counts as an automatic restart.
    let runs = a.runs("api");
    let second = runs
        .iter()
        .find(|r| r["id"].as_i64() > first["id"].as_i64())
        .unwrap_or_else(|| panic!("no second run: {runs:?}"));
    assert_eq!(second["trigger"], "unhealthy", "{second}");
    assert!(a.unit("api")["restarts"].as_u64() >= Some(1));
    let requested = events_of(&a, "api", "unit.start_requested");
    assert!(
        requested.iter().any(|e| e["by"] == "health check \"api\""),
        "{requested:?}"
    );
}

#[test]
fn samples_are_recorded_and_top_shows_live_figures() {
    let a = Agent::start(
        "sample_interval = \"200ms\"",
        r#"[[service]]
name = "busy"
command = ["python3", "-c", "import time\nx = bytearray(30 << 20)\nwhile True:\n    time.sleep(0.05)\n"]
"#,
    );
    let top = wait_for("top with memory", || {
        let out = a.cli(&["top", "--once"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (text.contains("host: memory")
            && text
                .lines()
                .any(|l| l.starts_with("busy") && l.contains("MiB")))
        .then_some(text)
    });
    assert!(top.contains("THREADS"), "{top}");
    // Samples are written in batches every 10 s.
    let csv = wait_for("stored samples", || {
        let out = a.cli(&["samples", "busy", "--csv", "--since", "5m"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (text.lines().count() >= 3).then_some(text)
    });
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("ts_ms,rss_bytes,cpu_pct,fds,threads,procs")
    );
    let row: Vec<&str> = lines.last().unwrap().split(',').collect();
    let rss: u64 = row[1].parse().unwrap();
    assert!(rss > 30 << 20, "rss {rss} includes the 30 MiB buffer");
    assert!(row[3].parse::<u64>().unwrap() >= 3, "fds");
    assert!(row[4].parse::<u64>().unwrap() >= 1, "threads");
    // Without --csv: a table in people's units (--json for the raw rows).
    let out = a.cli(&["samples", "busy", "--since", "5m"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        head,
        ["TIME", "MEMORY", "CPU%", "FDS", "THREADS", "PROCS"],
        "{text}"
    );
    assert!(lines.all(|l| l.contains(" MiB ")), "{text}");
    let out = a.cli(&["samples", "busy", "--since", "5m", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let max = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["rss"].as_u64())
        .max();
    assert!(max > Some(30 << 20), "{v}");
}

#[test]
fn a_check_command_still_running_when_the_agent_stops_is_killed() {
    let m = common::marker("93");
    let mut a = Agent::start(
        "",
        &format!(
            r#"[[check]]
name = "slow"
kind = "exec"
command = ["sleep", "{m}"]
timeout = "1h"
"#
        ),
    );
    wait_for("the check's command", || {
        common::sleeps_with(&m).first().copied()
    });
    let status = a.stop().expect("agent was running");
    assert!(status.success(), "{status}\n{}", a.log());
    wait_for("no check command left", || {
        common::procs_with(&m).is_empty().then_some(())
    });
}
