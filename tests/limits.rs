//! Limits on the whole process tree, with real processes: memory under every
//! enforcement mode this machine supports, CPU time, wall time.

mod common;

use common::{marker, procs_with, sleeps_with, wait_for, Agent};

/// Allocates and touches 8 MiB every 50 ms, forever.
const HOG: &str = r#"["python3", "-c", "import time\nh=[]\nwhile True:\n    h.append(bytearray(8 << 20))\n    time.sleep(0.05)\n"]"#;

fn memory_hog_is_killed_at_its_limit(mode: &str) -> Result<(), String> {
    let a = Agent::try_start(
        &format!("enforcement = \"{mode}\""),
        &format!(
            r#"[[service]]
name = "hog"
command = {HOG}
limits = {{ memory = "64MiB" }}
backoff_min = "200ms"
"#
        ),
    )?;
    assert!(
        a.log().contains(&format!("\"enforcement\":\"{mode}\"")),
        "the agent logs which enforcement it uses:\n{}",
        a.log()
    );
    let run = wait_for("a run killed at its memory limit", || {
        a.runs("hog").into_iter().find(|r| r["state"] != "running")
    });
    assert_eq!(run["reason"], "limit:memory", "{run}\n{}", a.log());
    assert_eq!(run["state"], "failed");
    let peak = run["peak_rss"].as_u64().unwrap_or(0);
    assert!(
        peak >= 56 << 20,
        "peak_rss {peak} of a run killed at 64 MiB: {run}"
    );
    let events = a.get("/api/v1/events?unit=hog");
    let breach = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "unit.limit_breached")
        .cloned()
        .unwrap_or_else(|| panic!("no limit event: {events}"));
    assert_eq!(breach["limit"], "memory");
    assert_eq!(breach["max"], 64 * 1024 * 1024);
    assert_eq!(breach["enforced_by"], mode);
    // The restart policy applies: it runs again.
    wait_for("a restart after the kill", || {
        (a.unit("hog")["restarts"].as_u64().unwrap_or(0) >= 1).then_some(())
    });
    Ok(())
}

#[test]
fn memory_limit_with_polling() {
    memory_hog_is_killed_at_its_limit("poll").unwrap();
}

#[test]
fn memory_limit_with_cgroup_v1_where_supported() {
    match memory_hog_is_killed_at_its_limit("cgroup1") {
        Ok(()) => {}
        Err(log) if log.contains("cannot work here") => {
            println!("cgroup1 is not supported on this machine; the agent said:\n{log}");
            assert!(
                !std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
                    || log.contains("cannot create"),
                "cgroup v1 memory is mounted but the agent refused it:\n{log}"
            );
        }
        Err(log) => panic!("agent failed:\n{log}"),
    }
}

/// cgroup v1 has no group kill: when the kernel OOM-kills a process that
/// is not the run's main one, the agent (told by the cgroup's OOM
/// notification) records the breach and kills the rest of the tree.
#[test]
fn cgroup_v1_oom_kill_of_a_child_ends_the_whole_tree() {
    let m = marker("61");
    let units = format!(
        r#"[[job]]
name = "oomchild"
command = "python3 -c 'b = b\"x\" * (300 << 20)' {m} & sleep {m}"
limits = {{ memory = "100MiB", wall = "60s" }}
"#
    );
    let a = match Agent::try_start("enforcement = \"cgroup1\"", &units) {
        Ok(a) => a,
        Err(log) if log.contains("cannot work here") => {
            println!("cgroup1 is not supported on this machine; the agent said:\n{log}");
            assert!(
                !std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
                    || log.contains("cannot create"),
                "cgroup v1 memory is mounted but the agent refused it:\n{log}"
            );
            return;
        }
        Err(log) => panic!("agent failed:\n{log}"),
    };
    let out = a.cli(&["run", "oomchild", "--wait"]);
    let run = &a.runs("oomchild")[0];
    assert_eq!(
        run["reason"],
        "limit:memory",
        "{run}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.log()
    );
    assert_eq!(run["state"], "failed");
    // The child never lived through a sample; the cgroup saw its peak.
    let peak = run["peak_rss"].as_u64().unwrap_or(0);
    assert!(
        peak >= 90 << 20,
        "peak_rss {peak} of a run killed at 100 MiB: {run}"
    );
    let events = a.get("/api/v1/events?unit=oomchild");
    let breach = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "unit.limit_breached")
        .cloned()
        .unwrap_or_else(|| panic!("no limit event: {events}"));
    assert_eq!(breach["limit"], "memory");
    assert_eq!(breach["max"], 100 * 1024 * 1024);
    assert_eq!(breach["enforced_by"], "cgroup1");
    // Nothing of the tree is left: not the shell, not the sleep.
    assert!(sleeps_with(&m).is_empty(), "the sleep was killed too");
    assert_eq!(
        procs_with(&m),
        Vec::<i32>::new(),
        "no process of the tree is left"
    );
    // The kernel's notification was used, not the per-sample fallback.
    assert!(
        !a.log().contains("OOM notification"),
        "the OOM notification did not work:\n{}",
        a.log()
    );
}

#[test]
fn memory_limit_with_cgroup_v2_where_supported() {
    match memory_hog_is_killed_at_its_limit("cgroup2") {
        Ok(()) => {}
        Err(log) if log.contains("cannot work here") => {
            // Not a pass by default: the reason must be one we expect.
            assert!(
                log.contains("memory controller") || log.contains("no cgroup2"),
                "unexpected refusal:\n{log}"
            );
            println!("cgroup2 memory is not available on this machine; the agent said:\n{log}");
        }
        Err(log) => panic!("agent failed:\n{log}"),
    }
}

#[test]
fn wall_limit_kills_a_sleeping_job_and_its_children() {
    let m = marker("41");
    let a = Agent::start(
        "",
        &format!(
            r#"[[job]]
name = "stuck"
command = "sleep {m} & sleep {m}"
limits = {{ wall = "1s" }}
"#
        ),
    );
    let out = a.cli(&["run", "stuck", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "killed by SIGKILL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = &a.runs("stuck")[0];
    assert_eq!(run["reason"], "limit:wall", "{run}");
    assert_eq!(run["state"], "failed");
    let took = run["ended_at"].as_i64().unwrap() - run["started_at"].as_i64().unwrap();
    assert!(took >= 1000, "killed after {took} ms, before its limit");
    assert!(sleeps_with(&m).is_empty(), "the whole tree is gone");
}

#[test]
fn cpu_limit_counts_the_whole_tree() {
    let a = Agent::start(
        "",
        r#"[[job]]
name = "spin"
command = "(while :; do :; done) & while :; do :; done"
limits = { cpu = "1s", wall = "2m" }
"#,
    );
    let out = a.cli(&["run", "spin", "--wait"]);
    assert_eq!(out.status.code(), Some(137));
    let run = &a.runs("spin")[0];
    assert_eq!(run["reason"], "limit:cpu", "{run}");
    assert!(run["cpu_ms"].as_u64().unwrap() >= 1000, "{run}");
}

#[test]
fn open_files_limit_is_set_on_the_process() {
    let a = Agent::start(
        "",
        r#"[[job]]
name = "fds"
command = "ulimit -n"
limits = { open_files = 77 }
"#,
    );
    let out = a.cli(&["run", "fds", "--wait"]);
    assert!(out.status.success());
    let run = a.runs("fds")[0]["id"].as_i64().unwrap().to_string();
    let logs = a.cli(&["logs", "fds", "--run", &run]);
    assert_eq!(String::from_utf8_lossy(&logs.stdout).trim(), "77");
}

/// "Max open files" soft and hard limits of a process, from /proc/PID/limits.
fn nofile_limits(pid: i64) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open-files line for {pid}:\n{text}"));
    let f: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    (f[0].to_string(), f[1].to_string())
}

#[test]
fn many_units_under_a_low_soft_open_files_limit_all_run_and_are_measured() {
    // Each unit costs the agent several descriptors (output pipes, kept
    // /proc files, cgroup files); started with a soft limit of 256, as a
    // service manager might, 60 units would run it out of descriptors.
    let m = marker("71");
    let mut units = String::new();
    for i in 0..60 {
        units += &format!(
            "[[service]]\nname = \"s{i}\"\ncommand = \"exec sleep {m}\"\nlimits = {{ memory = \"64MiB\" }}\n\n"
        );
    }
    units += &format!(
        "[[service]]\nname = \"capped\"\ncommand = \"exec sleep {m}\"\nlimits = {{ open_files = 100 }}\n"
    );
    let a = match Agent::try_start_with("", &units, Some(256)) {
        Ok(a) => a,
        Err(log) => panic!("agent failed:\n{log}"),
    };
    let units = wait_for("61 running units, each measured", || {
        let list = a.get("/api/v1/units");
        let list = list.as_array()?.clone();
        let ready = list.len() == 61
            && list.iter().all(|u| {
                u["state"] == "running"
                    && u["pid"].as_i64().is_some()
                    && u["memory"].as_u64().is_some_and(|m| m > 0)
            });
        ready.then_some(list)
    });
    let (agent_soft, agent_hard) = nofile_limits(a.pid() as i64);
    assert_eq!(agent_soft, agent_hard, "the agent raised its soft limit");
    assert!(
        a.log().contains("Open-files limit raised from 256"),
        "{}",
        a.log()
    );
    for u in &units {
        let pid = u["pid"].as_i64().unwrap_or_default();
        let (soft, hard) = nofile_limits(pid);
        if u["name"] == "capped" {
            assert_eq!((soft.as_str(), hard.as_str()), ("100", "100"), "{u}");
        } else {
            assert_eq!(
                soft, "256",
                "units get the agent's original soft limit: {u}"
            );
            assert_eq!(hard, agent_hard, "{u}");
        }
    }
    assert!(
        !a.log().contains("Too many open files"),
        "no EMFILE anywhere:\n{}",
        a.log()
    );
    let mut a = a;
    a.stop();
    assert!(
        sleeps_with(&m).is_empty(),
        "every unit stopped with the agent"
    );
}
