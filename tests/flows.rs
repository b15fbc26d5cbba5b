//! Flows with real processes: a failure holds everything downstream; rerun
//! from the failure after fixing the script; release; hold by hand;
//! overlapping scheduled runs; an agent killed mid-flow runs nothing twice.

mod common;

use common::{setup_work, wait_for, Agent, THREE_LEVELS};
use serde_json::Value;

fn flow(a: &Agent, name: &str) -> Value {
    a.get(&format!("/api/v1/flows/{name}"))
}

fn job_state(a: &Agent, f: &str, job: &str) -> String {
    flow(a, f)["latest"]["jobs"][job]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn wait_flow(a: &Agent, name: &str, status: &str) -> Value {
    wait_for(&format!("flow {name} {status}"), || {
        let f = flow(a, name);
        (f["latest"]["status"] == status).then_some(f)
    })
}

fn events(a: &Agent, kind: &str) -> Vec<Value> {
    a.get("/api/v1/events?limit=1000")
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

fn agent_with_work(script: &str) -> Agent {
    // The working dir must exist before the agent starts a run in it; the
    // agent itself does not need it at start.
    let a = Agent::start("", THREE_LEVELS);
    setup_work(&a, script);
    a
}

#[test]
fn failure_holds_downstream_and_rerun_from_failed_completes() {
    let a = agent_with_work("echo 'input file missing' >&2; exit 3\n");
    let out = a.cli(&["run", "extract", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a stalled flow exits 1: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let f = wait_flow(&a, "extract", "stalled");
    assert_eq!(job_state(&a, "extract", "extract"), "succeeded");
    assert_eq!(job_state(&a, "extract", "transform"), "failed");
    for held in ["load", "report"] {
        let st = &f["latest"]["jobs"][held];
        assert_eq!(st["state"], "held", "{f}");
        let reason = st["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("upstream job \"transform\" failed (run ")
                && reason.ends_with(": exit:3)"),
            "{reason}"
        );
    }
    // Nothing downstream ran.
    assert!(a.runs("load").is_empty() && a.runs("report").is_empty());
    let held = events(&a, "job.held");
    assert_eq!(held.len(), 2, "{held:?}");
    assert_eq!(events(&a, "job.failed").len(), 1);
    let text = String::from_utf8_lossy(&a.cli(&["flows"]).stdout).to_string();
    assert!(
        text.contains("HELD") && text.contains("upstream job \"transform\" failed"),
        "{text}"
    );

    // Fix the script, rerun from the failure: the flow completes.
    setup_work(&a, "echo transformed\n");
    let out = a.cli(&[
        "rerun",
        "extract",
        "--from-failed",
        "--comment",
        "input restored",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_flow(&a, "extract", "succeeded");
    assert_eq!(a.runs("extract").len(), 1, "extract is not rerun");
    assert_eq!(a.runs("transform").len(), 2);
    assert_eq!(a.runs("load").len(), 1);
    // Runs say why they ran: the flow run's trigger, then the rerun's.
    let transform = a.runs("transform");
    assert_eq!(transform[0]["trigger"], "rerun", "{transform:?}");
    assert!(
        transform[1]["trigger"]
            .as_str()
            .is_some_and(|t| t.starts_with("manual (")),
        "{transform:?}"
    );
    assert_eq!(a.runs("load")[0]["trigger"], "rerun");
    let action = &events(&a, "flow.action")[0];
    assert_eq!(action["action"], "rerun --from-failed");
    assert_eq!(action["comment"], "input restored");
    assert!(!action["by"].as_str().unwrap().is_empty());
}

#[test]
fn an_older_stalled_run_is_not_the_latest_and_is_only_rerun_when_named() {
    let a = agent_with_work("exit 1\n");
    a.cli(&["run", "extract"]);
    let old = wait_flow(&a, "extract", "stalled")["latest"]["id"]
        .as_i64()
        .unwrap();
    // The next run (the next day's, say) fails too; fixed, and rerun: the
    // rerun acts on the newest run.
    a.cli(&["run", "extract"]);
    let new = wait_for("a second stalled run", || {
        let f = flow(&a, "extract");
        (f["latest"]["status"] == "stalled" && f["latest"]["id"].as_i64() != Some(old))
            .then(|| f["latest"]["id"].as_i64().unwrap())
    });
    setup_work(&a, "echo transformed\n");
    let out = a.cli(&["rerun", "extract", "--from-failed"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("(flow run {new})")), "{text}");
    let f = wait_flow(&a, "extract", "succeeded");
    assert_eq!(f["latest"]["id"], new, "{f}");
    // The older open run stays in sight.
    assert_eq!(f["older_open"], serde_json::json!([old]), "{f}");
    let text = String::from_utf8_lossy(&a.cli(&["flows", "extract"]).stdout).to_string();
    assert!(
        text.contains(&format!("older runs still open: {old}")),
        "{text}"
    );
    assert!(f["latest"]["started_at"].as_i64() > Some(0), "{f}");
    assert!(
        f["latest"]["trigger"]
            .as_str()
            .is_some_and(|t| t.starts_with("manual (")),
        "{f}"
    );

    // The old run is still open, but a bare rerun does not touch it: it
    // says so and how to name it.
    let out = a.cli(&["rerun", "extract", "--from-failed"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("older flow runs are still open: {old}")) && err.contains("--run ID"),
        "{err}"
    );
    assert_eq!(a.runs("load").len(), 1, "nothing of the old run ran again");
    let (status, body) = a.post(&format!(
        "/api/v1/flows/extract/rerun?from_failed&run={}",
        new
    ));
    assert_eq!(status, 409, "{body}");
    let (status, body) = a.post("/api/v1/flows/extract/rerun?from_failed&run=999999");
    assert_eq!(status, 404, "{body}");
    let (status, body) = a.post("/api/v1/flows/extract/rerun?only=nope");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "no job \"nope\" in flow \"extract\"");
    // Named, it runs, and the newest run stays the latest.
    let out = a.cli(&[
        "rerun",
        "extract",
        "--from-failed",
        "--run",
        &old.to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the old run's load", || {
        (a.runs("load").len() == 2).then_some(())
    });
    assert_eq!(flow(&a, "extract")["latest"]["id"], new);
    wait_for("no older run open", || {
        (flow(&a, "extract")["older_open"] == serde_json::json!([])).then_some(())
    });
}

#[test]
fn release_accepts_the_failure_and_the_flow_goes_on() {
    let a = agent_with_work("exit 1\n");
    a.cli(&["run", "extract"]);
    wait_flow(&a, "extract", "stalled");
    let out = a.cli(&["release", "transform", "--comment", "data checked by hand"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_flow(&a, "extract", "succeeded");
    assert_eq!(job_state(&a, "extract", "transform"), "released");
    assert_eq!(a.runs("transform").len(), 1, "released, not rerun");
    assert_eq!(a.runs("load").len(), 1);
    // Releasing again is refused with a reason.
    let (status, body) = a.post("/api/v1/jobs/transform/release");
    assert_eq!(status, 409, "{body}");
}

#[test]
fn hold_by_hand_stops_a_job_until_unhold() {
    let a = agent_with_work("echo ok\n");
    let out = a.cli(&["hold", "load", "--comment", "db maintenance"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The flow shares its name with its first job: holding that name is
    // one hold, listed once; the reason given is shown.
    assert!(a.cli(&["hold", "extract"]).status.success());
    // (Flow views are refreshed within 100 ms.)
    let held = wait_for("both holds in `mamori flows`", || {
        let out = a.cli(&["flows", "extract"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines()
            .find_map(|l| l.split_once("held by hand: ").map(|(_, h)| h.to_string()))
            .filter(|h| h.contains("load"))
    });
    assert!(held.starts_with("extract (by "), "{held}");
    assert_eq!(held.matches("extract").count(), 1, "{held}");
    assert!(
        held.contains(", load (by ") && held.ends_with(": db maintenance)"),
        "{held}"
    );
    // A held flow is not run by hand: the run would stall at once on the
    // hold a person set (and page whoever watches `flow.stalled`).
    let out = a.cli(&["run", "extract"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("flow \"extract\" is held by hand; `mamori unhold extract` first"),
        "{err}"
    );
    // --only runs the job of that name alone, outside the flow: nothing
    // below it starts, and no flow run is made.
    let out = a.cli(&["run", "extract", "--only", "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(a.runs("extract").len(), 1);
    assert!(a.runs("transform").is_empty());
    assert!(a.get("/api/v1/flows/extract")["latest"].is_null());
    assert!(a.cli(&["unhold", "extract"]).status.success());
    // Right after the command, `flows` shows the new run (no wait).
    let out = a.cli(&["run", "extract"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let id: i64 = said
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    assert_eq!(a.get("/api/v1/flows/extract")["latest"]["id"], id);
    wait_flow(&a, "extract", "stalled");
    assert_eq!(job_state(&a, "extract", "load"), "held");
    assert_eq!(job_state(&a, "extract", "report"), "succeeded");
    let out = a.cli(&["unhold", "load"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_flow(&a, "extract", "succeeded");
    assert_eq!(a.runs("load").len(), 1);
}

#[test]
fn forbid_skips_a_scheduled_run_while_the_previous_one_runs() {
    let a = Agent::start(
        "",
        r#"[[job]]
name = "tick"
every = "1s"
command = "sleep 2.5"
concurrency = "forbid"
"#,
    );
    let skipped = wait_for("a skipped fire", || {
        let s = events(&a, "job.skipped");
        (!s.is_empty()).then_some(s)
    });
    assert!(
        skipped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("still running (concurrency = \"forbid\")"),
        "{skipped:?}"
    );
    // Never two runs at once.
    let runs = a.runs("tick");
    assert!(runs.iter().filter(|r| r["state"] == "running").count() <= 1);
}

/// Regression: a run started by the schedule was recorded (run, `unit.started`,
/// `mamori show`) as "manual"; only `flow.started` said "schedule".
#[test]
fn a_scheduled_run_is_recorded_with_the_schedule_trigger() {
    let a = Agent::start(
        "",
        r#"[[job]]
name = "nightly"
every = "1s"
command = "true"
"#,
    );
    let run = a.wait_run_end("nightly");
    assert_eq!(run["trigger"], "schedule", "{run}");
    let id = run["id"].as_i64().unwrap();
    let started: Vec<Value> = events(&a, "unit.started")
        .into_iter()
        .filter(|e| e["run_id"] == id)
        .collect();
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0]["trigger"], "schedule", "{started:?}");
    let flow_started = events(&a, "flow.started");
    assert!(
        !flow_started.is_empty() && flow_started.iter().all(|e| e["trigger"] == "schedule"),
        "{flow_started:?}"
    );
    let out = a.cli(&["show", &id.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("run {id} of job \"nightly\" (schedule)")),
        "{text}"
    );
    // `mamori run` of the job by hand stays "manual" (held, so that no
    // scheduled run is in its way).
    let out = a.cli(&["hold", "nightly"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.wait_run_end("nightly");
    let out = a.cli(&["run", "nightly", "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manual: Vec<Value> = a
        .runs("nightly")
        .into_iter()
        .filter(|r| r["trigger"] == "manual")
        .collect();
    assert_eq!(manual.len(), 1, "{:?}", a.runs("nightly"));
}

#[test]
fn agent_killed_mid_flow_runs_nothing_twice_and_reports_the_interruption() {
    let m = common::marker("51");
    let mut a = Agent::start(
        "",
        &format!(
            r#"[[job]]
name = "first"
command = ["sleep", "{m}"]

[[job]]
name = "second"
after = ["first"]
command = "echo second"
"#
        ),
    );
    a.cli(&["run", "first"]);
    wait_for("first running", || {
        (common::sleeps_with(&m).len() == 1).then_some(())
    });
    a.crash();
    a.spawn();
    let f = wait_flow(&a, "first", "stalled");
    let st = &f["latest"]["jobs"]["first"];
    assert_eq!(st["state"], "failed");
    assert!(
        st["reason"].as_str().unwrap().starts_with("interrupted"),
        "{st}"
    );
    assert_eq!(f["latest"]["jobs"]["second"]["state"], "held");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(a.runs("first").len(), 1, "not run again by itself");
    assert_eq!(a.runs("first")[0]["state"], "interrupted");
    assert!(a.runs("second").is_empty());
    wait_for("the orphaned sleep killed", || {
        common::sleeps_with(&m).is_empty().then_some(())
    });
}

/// A nightly job on a business-day calendar.
const CALENDAR_JOB: &str = r#"[[calendar]]
name = "jp"
closed = ["2099-01-01"]

[[job]]
name = "nightly"
schedule = "30 2 * * *"
timezone = "Asia/Tokyo"
calendar = "jp"
on_closed = "next-open-day"
command = "true"
"#;

#[test]
fn next_shows_the_schedule_without_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    std::fs::write(&cfg, CALENDAR_JOB).unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("-c")
        .arg(&cfg)
        .args(["next", "nightly"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines.iter().all(|l| l.contains("02:30:00 JST")), "{text}");
    assert!(
        lines
            .iter()
            .all(|l| !l.contains(" Sat") && !l.contains(" Sun")),
        "weekends are closed: {text}"
    );
}

#[test]
fn a_run_record_says_where_and_how_it_ran() {
    let a = Agent::start(
        "",
        r#"[[job]]
name = "import"
command = "./import.py"
working_dir = "work"
env = { IMPORT_MODE = "full" }
"#,
    );
    let work = a.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let script = work.join("import.py");
    std::fs::write(
        &script,
        "#!/usr/bin/env python3\nprint('imported 42 rows')\nraise SystemExit(4)\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = a.cli(&["run", "import", "--wait"]);
    assert_eq!(out.status.code(), Some(4));
    let id = a.runs("import")[0]["id"].as_i64().unwrap();
    let run = wait_for("the interpreter version", || {
        let r = a.get(&format!("/api/v1/runs/{id}"));
        r["context"]["interpreter_version"]
            .as_str()
            .is_some()
            .then_some(r)
    });
    let cx = &run["context"];
    let expected_fs = std::process::Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE", "-T"])
        .arg(&work)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if !expected_fs.is_empty() {
        assert_eq!(
            cx["working_dir_fs"]["fs_type"],
            expected_fs.as_str(),
            "{cx}"
        );
    }
    assert!(cx["working_dir_fs"]["fs_type"]
        .as_str()
        .is_some_and(|f| !f.is_empty()));
    assert_eq!(cx["working_dir_fs"]["network"], false);
    assert!(
        cx["program"]
            .as_str()
            .unwrap()
            .ends_with("work/./import.py")
            || cx["program"].as_str().unwrap().ends_with("work/import.py"),
        "{cx}"
    );
    assert_eq!(cx["shebang"], "#!/usr/bin/env python3");
    assert!(
        cx["interpreter"].as_str().unwrap().contains("python3"),
        "{cx}"
    );
    assert!(
        cx["interpreter_version"]
            .as_str()
            .unwrap()
            .starts_with("Python 3"),
        "{cx}"
    );
    assert_eq!(cx["env_diff"][0][0], "IMPORT_MODE");
    assert!(!cx["host"].as_str().unwrap().is_empty() && !cx["user"].as_str().unwrap().is_empty());

    let out = a.cli(&["show", &id.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("state:       failed (exit:4)"), "{text}");
    assert!(
        text.contains("interpreter: #!/usr/bin/env python3"),
        "{text}"
    );
    assert!(
        text.contains("env (differs from the agent's): IMPORT_MODE=full"),
        "{text}"
    );
    assert!(text.contains("    imported 42 rows"), "{text}");
}

#[test]
fn hold_while_keeps_a_job_waiting_until_its_check_recovers() {
    let flag_dir = tempfile::tempdir().unwrap();
    let flag = flag_dir.path().join("upstream-ok");
    let a = Agent::start(
        "",
        &format!(
            r#"[[check]]
name = "upstream"
kind = "exec"
command = "test -f {flag}"
interval = "200ms"
fall = 1
rise = 1

[[job]]
name = "settle"
command = "echo settled"
hold_while = ["upstream"]
"#,
            flag = flag.display()
        ),
    );
    wait_for("upstream down", || {
        (a.get("/api/v1/checks/upstream")["status"] == "down").then_some(())
    });
    // As a schedule would: through the flow engine (a person's `mamori run`
    // of a lone job is a deliberate override and starts it directly).
    let (status, body) = a.post("/api/v1/flows/settle/run");
    assert_eq!(status, 202, "{body}");
    let held = wait_for("the job held by the gate", || {
        events(&a, "job.held").into_iter().next()
    });
    assert!(
        held["reason"]
            .as_str()
            .unwrap()
            .starts_with("waiting (hold_while): check \"upstream\" is down"),
        "{held}"
    );
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert!(
        a.runs("settle").is_empty(),
        "it did not start while the check was down"
    );
    std::fs::write(&flag, "").unwrap();
    let run = a.wait_run_end("settle");
    assert_eq!(run["state"], "succeeded");
}

#[test]
fn hold_while_keeps_a_job_waiting_while_its_service_is_stopped() {
    let m = common::marker("96");
    let a = Agent::start(
        "",
        &format!(
            r#"[[service]]
name = "db"
command = "sleep {m}"
health = {{ kind = "exec", command = "true", interval = "200ms", fall = 1, rise = 1 }}

[[job]]
name = "load"
command = "echo loaded"
hold_while = ["db"]
"#
        ),
    );
    wait_for("db healthy", || {
        (a.get("/api/v1/checks/db")["status"] == "up").then_some(())
    });
    assert!(a.cli(&["stop", "db"]).status.success());
    wait_for("db's check paused", || {
        (a.get("/api/v1/checks/db")["status"] == "paused").then_some(())
    });
    // A paused check stands for a stopped service: nothing to load into.
    let (status, body) = a.post("/api/v1/flows/load/run");
    assert_eq!(status, 202, "{body}");
    let held = wait_for("the job held by the gate", || {
        events(&a, "job.held").into_iter().next()
    });
    assert_eq!(
        held["reason"], "waiting (hold_while): check \"db\" is paused: its service is stopped",
        "{held}"
    );
    assert!(a.runs("load").is_empty());
    assert!(a.cli(&["start", "db"]).status.success());
    let run = a.wait_run_end("load");
    assert_eq!(run["state"], "succeeded");
}

#[test]
fn a_run_longer_than_expected_is_reported() {
    let a = Agent::start(
        "",
        r#"[[job]]
name = "slow"
command = "sleep 1.5"
expected = "300ms"
"#,
    );
    // A flow of one job: started through the flow engine so the watch applies.
    let (status, body) = a.post("/api/v1/flows/slow/run");
    assert_eq!(status, 202, "{body}");
    let long = wait_for("job.long", || events(&a, "job.long").into_iter().next());
    assert_eq!(long["job"], "slow");
    assert_eq!(long["expected_ms"], 300);
    assert!(long["running_ms"].as_u64().unwrap() >= 300);
}

#[test]
fn hold_while_an_alert_fires_and_go_when_it_is_resolved() {
    let a = Agent::start(
        "",
        r#"[[check]]
name = "feed"
kind = "exec"
command = "exit 1"
interval = "200ms"
fall = 1

[[job]]
name = "post"
command = "echo posted"
hold_while = ["check-down"]
"#,
    );
    let alert = wait_for("the built-in check-down alert", || {
        a.get("/api/v1/alerts")
            .as_array()
            .and_then(|v| v.iter().find(|x| x["rule"] == "check-down").cloned())
    });
    let (status, body) = a.post("/api/v1/flows/post/run");
    assert_eq!(status, 202, "{body}");
    let held = wait_for("held by the alert", || {
        events(&a, "job.held").into_iter().next()
    });
    assert!(
        held["reason"]
            .as_str()
            .unwrap()
            .contains("alert \"check-down"),
        "{held}"
    );
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert!(a.runs("post").is_empty());
    // The check is still down, so the alert would clear by itself later:
    // resolving it now is the operator's explicit override.
    let out = a.cli(&["resolve", &alert["id"].to_string(), "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(a.wait_run_end("post")["state"], "succeeded");
}

#[test]
fn catch_up_all_runs_every_missed_time_in_order() {
    let mut a = Agent::start(
        "",
        r#"[[job]]
name = "tock"
every = "1s"
command = "sleep 0.4"
catch_up = "all"
"#,
    );
    let scheduled = |a: &Agent| -> Vec<i64> {
        flow(a, "tock")["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r["scheduled_for"].as_i64())
            .collect()
    };
    let last = wait_for("a scheduled run", || scheduled(&a).into_iter().max());
    a.stop();
    // Down for more than four fire times.
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    };
    wait_for("four fire times to pass", || {
        (now_ms() >= last + 4_500).then_some(())
    });
    a.spawn();
    // Each missed time runs, one after the other (a run takes 0.4 s, so
    // `concurrency = "forbid"` would skip all but the first if they were
    // fired at once).
    let missed: Vec<i64> = (1..=4).map(|k| last + k * 1_000).collect();
    let seen = wait_for("every missed time run", || {
        let s = scheduled(&a);
        missed.iter().all(|t| s.contains(t)).then_some(s)
    });
    let skipped = events(&a, "job.skipped");
    assert!(
        !skipped
            .iter()
            .any(|e| missed.contains(&e["scheduled_for"].as_i64().unwrap_or(0))),
        "{skipped:?}\n{seen:?}"
    );
}

#[test]
fn a_calendar_schedule_is_shown_as_configured() {
    let a = Agent::start("", CALENDAR_JOB);
    let schedule = flow(&a, "nightly")["schedule"].clone();
    assert_eq!(
        schedule,
        "cron \"30 2 * * *\" (Asia/Tokyo), calendar jp (on_closed = \"next-open-day\")"
    );
}

#[test]
fn without_a_user_in_the_environment_the_actor_is_the_uids_name() {
    let a = agent_with_work("echo ok\n");
    // As from cron or a systemd unit: no USER, LOGNAME or SUDO_USER.
    let out = std::process::Command::new(common::BIN)
        .arg("-c")
        .arg(&a.config)
        .args(["hold", "load", "--comment", "from cron"])
        .env_remove("USER")
        .env_remove("LOGNAME")
        .env_remove("SUDO_USER")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let name = String::from_utf8_lossy(&id.stdout).trim().to_string();
    assert!(!name.is_empty());
    let holds = a.get("/api/v1/holds");
    assert_eq!(holds[0]["by"], name.as_str(), "{holds}");
}
