//! Services and jobs with real processes: restart policy, crash-loop guard,
//! clean stop, crash recovery, output capture, `run --wait`.

mod common;

use common::{marker, procs_with, sleeps_with, wait_for, Agent};

#[test]
fn crashing_service_gives_up_after_the_burst_and_restart_revives_it() {
    let a = Agent::start(
        "",
        r#"[[service]]
name = "crasher"
command = ["/bin/sh", "-c", "echo boom; exit 3"]
backoff_min = "10ms"
backoff_max = "50ms"
start_limit = 3
start_window = "1m"
"#,
    );
    let u = wait_for("gave-up", || {
        let u = a.unit("crasher");
        (u["state"] == "gave-up").then_some(u)
    });
    assert_eq!(u["last_reason"], "exit:3");
    let runs = a.runs("crasher");
    assert_eq!(runs.len(), 3, "exactly start_limit starts: {runs:?}");
    assert!(runs.iter().all(|r| r["reason"] == "exit:3"));
    let events = a.get("/api/v1/events?unit=crasher");
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "unit.gave_up"),
        "{events}"
    );
    // It stays given up…
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(a.runs("crasher").len(), 3);
    // …until a person restarts it.
    let out = a.cli(&["restart", "crasher"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("a fourth run", || {
        (a.runs("crasher").len() >= 4).then_some(())
    });
}

#[test]
fn on_failure_does_not_restart_a_clean_exit() {
    let a = Agent::start(
        "",
        r#"[[service]]
name = "oneshot"
command = "exit 0"
restart = "on-failure"
"#,
    );
    let u = wait_for("exited", || {
        let u = a.unit("oneshot");
        (u["state"] == "exited").then_some(u)
    });
    assert_eq!(u["last_reason"], "exit:0");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(a.runs("oneshot").len(), 1);
}

#[test]
fn stopping_the_agent_leaves_no_process_of_any_unit() {
    let m1 = marker("11");
    let m2 = marker("12");
    let m3 = marker("13");
    // A plain child, a background child, and a double-forked setsid daemon
    // that ignores SIGTERM.
    let units = format!(
        r#"[[service]]
name = "plain"
command = ["sleep", "{m1}"]

[[service]]
name = "family"
command = "sleep {m2} & sleep {m2}"

[[service]]
name = "daemon"
command = "(setsid sh -c 'trap \"\" TERM; sleep {m3}' &) ; sleep {m3}"
stop_timeout = "500ms"
"#
    );
    let mut a = Agent::start("", &units);
    wait_for("all unit processes", || {
        (sleeps_with(&m1).len() == 1 && sleeps_with(&m2).len() == 2 && sleeps_with(&m3).len() == 2)
            .then_some(())
    });
    let status = a.stop().expect("agent was running");
    assert!(status.success(), "agent exit: {status}\n{}", a.log());
    for m in [&m1, &m2, &m3] {
        let left = procs_with(m);
        assert!(
            left.is_empty(),
            "processes left behind for {m}: {left:?}\n{}",
            a.log()
        );
    }
}

#[test]
fn stopping_a_unit_kills_its_tree_and_leaves_no_zombie() {
    let m = marker("21");
    let a = Agent::start(
        "",
        &format!(
            r#"[[service]]
name = "tree"
command = "sleep {m} & sleep {m} & sleep {m}"
"#
        ),
    );
    wait_for("three sleeps", || {
        (sleeps_with(&m).len() == 3).then_some(())
    });
    let out = a.cli(&["stop", "tree"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(a.unit("tree")["state"], "stopped");
    assert!(procs_with(&m).is_empty());
    // No zombie children of the agent linger.
    let agent = a.pid();
    wait_for("no zombie children of the agent", || {
        let zombies: Vec<i32> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .ok()
                    .and_then(|s| {
                        let rest = s.rsplit_once(')')?.1.to_string();
                        let mut f = rest.split_whitespace();
                        let state = f.next()?.to_string();
                        let ppid: i32 = f.next()?.parse().ok()?;
                        Some(state == "Z" && ppid == agent)
                    })
                    .unwrap_or(false)
            })
            .collect();
        zombies.is_empty().then_some(())
    });
    let run = &a.runs("tree")[0];
    assert_eq!(run["state"], "stopped");
    assert_eq!(run["reason"], "stop");
}

#[test]
fn agent_killed_during_a_job_marks_the_run_interrupted_and_cleans_up() {
    let m = marker("31");
    let mut a = Agent::start(
        "",
        &format!(
            r#"[[job]]
name = "nightly"
command = ["sleep", "{m}"]
"#
        ),
    );
    let (status, body) = a.post("/api/v1/jobs/nightly/run");
    assert_eq!(status, 202, "{body}");
    let run_id = body["run_id"].as_i64().unwrap();
    wait_for("the job's process", || {
        (sleeps_with(&m).len() == 1).then_some(())
    });
    a.crash();
    // The orphaned job is still there until an agent cleans up.
    a.spawn();
    let run = a.get(&format!("/api/v1/runs/{run_id}"));
    assert_eq!(run["state"], "interrupted", "{run}");
    assert_eq!(run["reason"], "interrupted");
    wait_for("leftover job process killed", || {
        procs_with(&m).is_empty().then_some(())
    });
    let events = a.get("/api/v1/events?unit=nightly");
    assert!(events
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "run.interrupted" && e["run_id"] == run_id));
}

#[test]
fn run_wait_exits_with_the_jobs_code_and_logs_are_kept_per_run() {
    let a = Agent::start(
        "",
        r#"[[job]]
name = "report"
command = "echo \"line one of $MAMORI_RUN_ID\"; echo oops >&2; exit 7"
"#,
    );
    let out = a.cli(&["run", "report", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out2 = a.cli(&["run", "report", "--wait"]);
    assert_eq!(out2.status.code(), Some(7));
    let runs = a.runs("report");
    assert_eq!(runs.len(), 2);
    let first = runs[1]["id"].as_i64().unwrap();
    let second = runs[0]["id"].as_i64().unwrap();
    assert_eq!(runs[0]["reason"], "exit:7");
    assert_eq!(runs[0]["exit_code"], 7);

    let logs = a.cli(&["logs", "report", "--run", &first.to_string()]);
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(text.contains(&format!("line one of {first}")), "{text}");
    assert!(text.contains("oops"), "stderr is captured too: {text}");
    assert!(
        !text.contains(&format!("line one of {second}")),
        "only that run: {text}"
    );

    assert!(
        !text.contains("── run"),
        "one run needs no separator: {text}"
    );

    // The whole stream: each run's output under a line that names it.
    let all = a.cli(&["logs", "report"]);
    let all = String::from_utf8_lossy(&all.stdout);
    let at = |s: &str| all.find(s).unwrap_or_else(|| panic!("no {s:?} in:\n{all}"));
    let order = [
        at(&format!("── run {first} (manual), ")),
        at(&format!("line one of {first}")),
        at(&format!("── run {second} (manual), ")),
        at(&format!("line one of {second}")),
    ];
    assert!(order.is_sorted(), "{order:?} in:\n{all}");
    assert!(all.starts_with("── run "), "{all}");
}

#[test]
fn a_command_that_cannot_start_is_recorded_with_the_reason() {
    let a = Agent::start(
        "",
        r#"[[job]]
name = "missing"
command = ["/nonexistent/program"]
"#,
    );
    let (status, body) = a.post("/api/v1/jobs/missing/run");
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/program: No such file"),
        "{body}"
    );
    let run = &a.runs("missing")[0];
    assert_eq!(run["state"], "failed");
    assert!(
        run["reason"]
            .as_str()
            .unwrap()
            .starts_with("spawn: /nonexistent/program: No such file"),
        "{run}"
    );
}

#[test]
fn a_torrent_of_output_neither_grows_the_agent_nor_passes_the_disk_cap() {
    let a = Agent::start(
        "",
        r#"[[job]]
name = "firehose"
command = "head -c 300000000 /dev/zero | tr '\\0' 'x'; echo; echo done"
log = { max_size = "1MiB", keep = 3 }
"#,
    );
    let out = a.cli(&["run", "firehose", "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = a.data_dir().join("logs/firehose");
    let total: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(total <= 3 * 1024 * 1024, "log dir holds {total} bytes");
    let tail = a.cli(&["logs", "firehose"]);
    assert!(String::from_utf8_lossy(&tail.stdout).ends_with("done\n"));
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", a.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kib < 64 * 1024, "agent RSS grew to {rss_kib} KiB");
}

#[test]
fn hangup_and_user_signals_leave_the_agent_and_its_units_running_and_quit_stops_it() {
    let m = marker("91");
    let mut a = Agent::start(
        "",
        &format!(
            r#"[[service]]
name = "web"
command = ["sleep", "{m}"]
"#
        ),
    );
    let pid = wait_for("the service's process", || sleeps_with(&m).first().copied());
    let agent = nix::unistd::Pid::from_raw(a.pid());
    for sig in [
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGUSR1,
        nix::sys::signal::Signal::SIGUSR2,
    ] {
        nix::sys::signal::kill(agent, sig).unwrap();
        wait_for(&format!("the agent to log {sig}"), || {
            a.log().contains(&format!("{sig} ignored")).then_some(())
        });
    }
    // Still serving, and the same process still runs: nothing was restarted.
    assert_eq!(a.unit("web")["pid"], pid, "{}", a.log());
    assert_eq!(sleeps_with(&m), vec![pid]);
    assert!(a.child.as_mut().unwrap().try_wait().unwrap().is_none());

    nix::sys::signal::kill(agent, nix::sys::signal::Signal::SIGQUIT).unwrap();
    let status = wait_for("the agent to stop on SIGQUIT", || {
        a.child.as_mut().unwrap().try_wait().unwrap()
    });
    a.child = None;
    assert!(status.success(), "agent exit: {status}\n{}", a.log());
    assert!(a.log().contains("\"signal\":\"SIGQUIT\""), "{}", a.log());
    assert_eq!(procs_with(&m), Vec::<i32>::new(), "{}", a.log());
}

/// The cgroup v1 directory an agent on `data_dir` would make (`mamori-<id>`,
/// id = FNV-1a of the canonical data dir) under this process's memory cgroup.
fn cgroup1_root_of(data_dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let _ = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_string())
    })?;
    let base = std::path::Path::new("/sys/fs/cgroup/memory").join(own.trim_start_matches('/'));
    if !base.join("memory.limit_in_bytes").exists() {
        return None;
    }
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data_dir.canonicalize().ok()?.as_os_str().as_encoded_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    Some(base.join(format!("mamori-{h:016x}")))
}

#[test]
fn an_agent_that_cannot_listen_leaves_no_cgroup_behind() {
    let first = Agent::start("", "");
    // A second agent, its own data dir, the first one's port.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let Some(root) = cgroup1_root_of(&data) else {
        eprintln!("skipped: no writable cgroup v1 memory hierarchy here");
        return;
    };
    let config = dir.path().join("mamori.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nlisten = \"127.0.0.1:{}\"\ndata_dir = \"data\"\nenforcement = \"cgroup1\"\n",
            first.port
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("-c")
        .arg(&config)
        .arg("agent")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("cannot listen on"), "{text}");
    assert!(
        !root.exists(),
        "{} was left behind:\n{text}",
        root.display()
    );
}

#[test]
fn a_service_whose_run_cannot_be_recorded_is_retried_once_the_store_is_back() {
    let m = marker("92");
    let a = Agent::start(
        "",
        &format!(
            r#"[[service]]
name = "web"
command = ["sleep", "{m}"]
backoff_min = "100ms"
"#
        ),
    );
    let first = wait_for("the service's process", || sleeps_with(&m).first().copied());
    // The store refuses new runs (as a full disk would); everything else
    // it still takes.
    let db = rusqlite::Connection::open(a.data_dir().join("mamori.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_runs BEFORE INSERT ON runs
         BEGIN SELECT RAISE(FAIL, 'database or disk is full (test)'); END;",
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let u = wait_for("the start to fail for want of a record", || {
        let u = a.unit("web");
        u["last_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("cannot record the run"))
            .then_some(u)
    });
    assert!(u["pid"].is_null(), "{u}");
    assert!(sleeps_with(&m).is_empty(), "nothing runs unrecorded");
    db.execute_batch("DROP TRIGGER refuse_runs").unwrap();
    let second = wait_for("the service to run again", || {
        sleeps_with(&m).first().copied().filter(|p| *p != first)
    });
    let u = wait_for("the status to show it", || {
        let u = a.unit("web");
        (u["pid"] == second).then_some(u)
    });
    assert_eq!(u["state"], "running", "{u}");
}

#[test]
fn logs_show_the_last_lines_and_follow_starts_from_the_last_ten() {
    let m = marker("95");
    let a = Agent::start(
        "",
        &format!(
            r#"[[service]]
name = "chatty"
command = "seq 1 100; sleep {m}"
"#
        ),
    );
    wait_for("all 100 lines captured", || {
        let out = a.cli(&["logs", "chatty"]);
        String::from_utf8_lossy(&out.stdout)
            .ends_with("99\n100\n")
            .then_some(())
    });
    let out = a.cli(&["logs", "chatty", "-n", "3"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "98\n99\n100\n");
    let run = a.runs("chatty")[0]["id"].as_i64().unwrap().to_string();
    let out = a.cli(&["logs", "chatty", "--run", &run, "-n", "2"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "99\n100\n");

    // `-f` starts like `tail -f`: the last ten lines, then whatever comes.
    let mut follow = std::process::Command::new(common::BIN)
        .arg("-c")
        .arg(&a.config)
        .args(["logs", "chatty", "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .take(10)
            .collect::<Result<Vec<_>, _>>()
    });
    wait_for("ten lines from logs -f", || {
        reader.is_finished().then_some(())
    });
    let lines = reader.join().unwrap().unwrap();
    let _ = follow.kill();
    let _ = follow.wait();
    let expected: Vec<String> = (91..=100).map(|i| i.to_string()).collect();
    assert_eq!(lines, expected);
}
