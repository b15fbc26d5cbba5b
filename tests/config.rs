//! `mamori check-config`: every error at once, each as FILE:LINE:COL with
//! what was expected. The messages are user interface: pinned here.

mod common;

use std::process::Command;

fn check(text: &str) -> (i32, String, String) {
    check_in(tempfile::tempdir().unwrap().path(), text)
}

/// `check-config` of `text` written as `dir/bad.toml` (files the config names
/// can be put beside it); in stderr the file reads FILE and `dir` DIR.
fn check_in(dir: &std::path::Path, text: &str) -> (i32, String, String) {
    let path = dir.join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(common::BIN)
        .args(["check-config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr)
        .replace(&path.display().to_string(), "FILE")
        .replace(&dir.display().to_string(), "DIR");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        stderr,
    )
}

#[test]
fn shipped_examples_are_valid() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(common::BIN)
                .arg("check-config")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn every_error_is_reported_with_position() {
    let text = r#"[agent]
listen = "127.0.0.1:7878"
enforcment = "poll"

[[service]]
name = "web"
command = "python3 -m http.server"
restart = "sometimes"
stop_timeout = "10 sex"
limits = { memroy = "1GiB", cpu = 5 }

[[service]]
name = "web"
command = ["sleep", 3]

[[job]]
name = "load"
command = "true"
after = ["extrct"]
limits = { memory = "12 parsecs" }

[[job]]
name = "extract"
"#;
    let (code, _, err) = check(text);
    assert_eq!(code, 1, "{err}");
    let expected = [
        "FILE:3:1: unknown key `enforcment` in [agent]; did you mean `enforcement`? (expected one of: data_dir, enforcement, listen, log, poll_interval, rate_burst, rate_limit, rate_limit_loopback, read_auth, read_token_file, rollup_retention, sample_interval, sample_retention, shutdown_timeout, token_file)",
        "FILE:8:11: invalid `restart` in [[service]] \"web\": \"sometimes\"; expected one of \"always\", \"on-failure\", \"never\"",
        "FILE:9:16: invalid duration \"10 sex\": unknown unit \"sex\"; expected one of ms, s, m, h, d (e.g. \"10s\") (in `stop_timeout` of [[service]] \"web\")",
        "FILE:10:12: unknown key `memroy` in `limits` of [[service]] \"web\"; did you mean `memory`? (expected one of: cpu, memory, open_files, wall)",
        "FILE:10:35: wrong type for `cpu` in `limits` of [[service]] \"web\": expected a duration string such as \"10s\", found an integer",
        "FILE:13:8: duplicate unit name \"web\": a service on line 6 already has it; names must be unique across services and jobs",
        "FILE:14:21: wrong type in `command` of [[service]] \"web\": expected a string, found an integer",
        "FILE:19:10: unknown job \"extrct\" in `after` of [[job]] \"load\"; did you mean \"extract\"?",
        "FILE:22:1: missing required key `command` in [[job]] \"extract\": what to run, e.g. command = \"python3 -m http.server 8000\"",
        "FILE:20:21: invalid size \"12 parsecs\": unknown unit \"parsecs\"; expected one of B, KiB, MiB, GiB, TiB (also written K, M, G, T), kB, MB, GB, TB (e.g. \"512MiB\") (in `memory` of `limits` of [[job]] \"load\")",
    ];
    for line in expected {
        assert!(err.contains(line), "missing:\n  {line}\nin:\n{err}");
    }
    assert!(err.contains("FILE: 10 errors"), "{err}");
}

#[test]
fn missing_keys_and_cycles() {
    let text = r#"[[service]]
command = "true"

[[job]]
name = "a"
command = "true"
after = ["b"]

[[job]]
name = "b"
command = "true"
after = ["a"]
"#;
    let (code, _, err) = check(text);
    assert_eq!(code, 1);
    assert!(
        err.contains("FILE:1:1: missing required key `name` in [[service]] #1: every unit needs a unique name"),
        "{err}"
    );
    assert!(
        err.contains("jobs depend on each other in a cycle: a → b → a"),
        "{err}"
    );
}

#[test]
fn invalid_toml_names_the_position() {
    let (code, _, err) = check("[agent]\nlisten = \n");
    assert_eq!(code, 1);
    assert!(err.starts_with("FILE:2:"), "{err}");
    assert!(err.contains("invalid TOML"), "{err}");
}

#[test]
fn valid_config_exits_zero() {
    let (code, out, err) = check("[[service]]\nname = \"a\"\ncommand = \"sleep 1\"\n\n[[job]]\nname = \"b\"\ncommand = [\"true\"]\nlimits = { wall = \"1h\", memory = \"2GiB\" }\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok (1 service, 1 job)"), "{out}");
}

#[test]
fn alert_rules_may_name_every_event_kind_the_agent_emits() {
    let rule = |name: &str, on: &str| {
        format!("[[alert]]\nname = \"{name}\"\non = {on}\nseverity = \"warning\"\ntitle = \"{{subject}}\"\n\n")
    };
    let good = [
        rule(
            "jobs",
            r#"["job.failed", "job.late", "job.held", "job.long", "job.skipped"]"#,
        ),
        rule(
            "flows",
            r#"["flow.stalled", "flow.started", "flow.finished", "flow.action"]"#,
        ),
        rule(
            "failover",
            r#"["drill.failed", "group.no_standby", "group.deactivated"]"#,
        ),
        rule("incidents", r#""incident.update_due""#),
    ]
    .concat();
    let (code, out, err) = check(&good);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"), "{out}");

    let bad = [
        rule("typo", r#""job.faild""#),
        rule("loop", r#""alert.fired""#),
        "[[alert]]\nname = \"orphan\"\non = \"job.failed\"\nresolve_when = { state = \"succeeded\" }\n".into(),
    ]
    .concat();
    let (code, _, err) = check(&bad);
    assert_eq!(code, 1, "{err}");
    for line in [
        "FILE:3:6: unknown event kind \"job.faild\" in `on` of [[alert]] \"typo\"; did you mean \"job.failed\"? (see docs/alerts.md for the list)",
        "FILE:9:6: event kind \"alert.fired\" in `on` of [[alert]] \"loop\": the agent's own alert events never raise alerts",
        "FILE:16:1: `resolve_when` in [[alert]] \"orphan\" has no `resolve_on` to apply to",
    ] {
        assert!(err.contains(line), "missing:\n  {line}\nin:\n{err}");
    }
}

#[test]
fn check_addresses_and_timeouts_that_could_never_work_are_errors() {
    let text = r#"[[check]]
name = "no-port"
kind = "tcp"
address = "localhost"

[[check]]
name = "big-port"
kind = "tcp"
address = "127.0.0.1:99999"

[[check]]
name = "bare-v6"
kind = "tcp"
address = "::1:5432"

[[check]]
name = "zero"
kind = "tcp"
address = "db.internal:5432"
timeout = "0s"

[[check]]
name = "fine"
kind = "tcp"
address = "[::1]:5432"
"#;
    let (code, _, err) = check(text);
    assert_eq!(code, 1, "{err}");
    let expected = [
        "FILE:4:11: invalid `address` \"localhost\" in [[check]] \"no-port\": no port; expected host:port, e.g. \"127.0.0.1:5432\", \"db.internal:5432\" or \"[::1]:5432\"",
        "FILE:9:11: invalid `address` \"127.0.0.1:99999\" in [[check]] \"big-port\": the port must be a number from 1 to 65535;",
        "FILE:14:11: invalid `address` \"::1:5432\" in [[check]] \"bare-v6\": an IPv6 address needs brackets;",
        "FILE:20:1: invalid `timeout` in [[check]] \"zero\": must be more than 0 (e.g. \"5s\")",
    ];
    for line in expected {
        assert!(err.contains(line), "missing:\n  {line}\nin:\n{err}");
    }
    assert!(err.contains("FILE: 4 errors"), "{err}");
}

#[test]
fn messages_say_what_is_really_wrong() {
    let text = r#"[agent]
listen = "localhost:17999"

[[service]]
name = "s"
command = "true"

[[job]]
name = "j"
command = "true"
after = ["s"]
"#;
    let (code, _, err) = check(text);
    assert_eq!(code, 1, "{err}");
    for line in [
        "FILE:2:10: invalid `listen` in [agent]: \"localhost:17999\"; expected an IP address and a port, e.g. \"127.0.0.1:7878\" (a host name is not looked up)",
        "FILE:11:10: unknown job \"s\" in `after` of [[job]] \"j\": it is a service; `after` names jobs",
    ] {
        assert!(err.contains(line), "missing:\n  {line}\nin:\n{err}");
    }
    assert!(!err.contains("did you mean"), "{err}");

    // A file that cannot be read has no line and column to point at.
    let out = Command::new(common::BIN)
        .args(["check-config", "/nonexistent/mamori.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("/nonexistent/mamori.toml: cannot read the config file: No such file"),
        "{err}"
    );
}

#[test]
fn time_zones_come_from_the_machines_tz_database() {
    let text = r#"[[job]]
name = "tokyo"
command = "true"
schedule = "30 2 * * *"
timezone = "Asia/Tokyo"

[[job]]
name = "typo"
command = "true"
schedule = "30 2 * * *"
timezone = "Asia/Tokio"

[[job]]
name = "path"
command = "true"
schedule = "30 2 * * *"
timezone = "../../etc/passwd"
"#;
    let (code, _, err) = check(text);
    assert_eq!(code, 1, "{err}");
    for line in [
        "FILE:11:12: unknown time zone \"Asia/Tokio\" in [[job]] \"typo\"; expected an IANA name such as \"Asia/Tokyo\" or \"UTC\" (as under /usr/share/zoneinfo)",
        "FILE:17:12: unknown time zone \"../../etc/passwd\" in [[job]] \"path\"",
    ] {
        assert!(err.contains(line), "missing:\n  {line}\nin:\n{err}");
    }
    assert!(
        err.ends_with("FILE: 2 errors\n"),
        "only the two bad zones: {err}"
    );

    // Without a tz database, a named zone says what to install; UTC still works.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    std::fs::write(
        &path,
        "[[job]]\nname = \"a\"\ncommand = \"true\"\nschedule = \"0 * * * *\"\ntimezone = \"Asia/Tokyo\"\n\n[[job]]\nname = \"b\"\ncommand = \"true\"\nschedule = \"0 * * * *\"\ntimezone = \"UTC\"\n",
    )
    .unwrap();
    let out = Command::new(common::BIN)
        .args(["check-config"])
        .arg(&path)
        .env("TZDIR", "/nonexistent/zoneinfo")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(":5:12: time zone \"Asia/Tokyo\" in [[job]] \"a\": there is no tz database at /nonexistent/zoneinfo; install the tzdata package"),
        "{err}"
    );
    assert!(err.ends_with(": 1 error\n"), "{err}");
}

#[test]
fn zero_time_limits_and_files_the_agent_cannot_read_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("etcd-password"), "secret\n").unwrap();
    let (code, _, err) = check_in(
        dir.path(),
        r#"[cluster]
node = "a"
backend = "etcd"
endpoints = ["https://127.0.0.1:2379"]
ca_file = "certs"
username = "mamori"
password_file = "etcd-password"

[[service]]
name = "web"
command = "sleep 100"
limits = { wall = "0s", cpu = "0ms" }

[[channel]]
name = "mail"
kind = "email"
server = "127.0.0.1"
tls = "starttls"
username = "u"
password_file = "smtp-password"
from = "mamori@example.com"
to = ["ops@example.com"]
"#,
    );
    assert_eq!(code, 1, "{err}");
    let expected = [
        "FILE:5:11: cannot read `ca_file` DIR/certs in [cluster]: it is a directory; the agent reads it at start",
        "FILE:12:12: invalid `wall` in `limits` of [[service]] \"web\": must be more than 0 (a zero limit kills every run at once)",
        "FILE:12:25: invalid `cpu` in `limits` of [[service]] \"web\": must be more than 0 (a zero limit kills every run at once)",
        "FILE:20:17: cannot read `password_file` DIR/smtp-password in [[channel]] \"mail\": No such file or directory (os error 2); the agent reads it at start",
    ];
    for line in expected {
        assert!(err.contains(line), "missing:\n  {line}\nin:\n{err}");
    }
    // The readable password file is not reported.
    assert!(!err.contains("etcd-password"), "{err}");
    assert!(err.contains("FILE: 4 errors"), "{err}");
}

#[test]
fn mistakes_from_other_tools_get_a_pointer() {
    let text = r#"[[job]]
name = "nightly"
command = "true"
timeout = "2h"
cron = "0 2 * * *"

[[job]]
name = "hourly"
command = "true"
schedule = "0 25 * * *"

[[service]]
name = "web"
command = "sleep 100"
timeout = "5s"

[[check]]
name = "beat"
kind = "heartbeat"
job = "web"
period = "1h"

[[check]]
name = "beat2"
kind = "heartbeat"
job = "nigthly"
period = "1h"

[[component]]
name = "Site"
units = ["wbe"]
"#;
    let (code, _, err) = check(text);
    assert_eq!(code, 1, "{err}");
    let expected = [
        "FILE:4:1: unknown key `timeout` in [[job]] \"nightly\"; limits are written `limits = { wall = \"30m\" }`",
        "FILE:5:1: unknown key `cron` in [[job]] \"nightly\"; a cron expression is written `schedule = \"0 2 * * *\"`",
        "invalid cron expression \"0 25 * * *\": ",
        "(fields: minute 0-59, hour 0-23, day of month 1-31, month 1-12 or JAN-DEC, weekday 0-7 or SUN-SAT; a sixth field in front is seconds)",
        "unknown key `timeout` in [[service]] \"web\"; `stop_timeout` is how long a stop waits before SIGKILL, `limits = { wall = \"30m\" }` a run's time limit",
        "check \"beat\" names job \"web\" in `job`, but there is no such job: it is a service; heartbeats are of jobs",
        "check \"beat2\" names job \"nigthly\" in `job`, but there is no such job; did you mean \"nightly\"?",
        "unknown unit \"wbe\" in `units` of [[component]] \"Site\" (did you mean \"web\"?); it names [[service]]s or [[job]]s",
    ];
    for line in expected {
        assert!(err.contains(line), "missing:\n  {line}\nin:\n{err}");
    }
}

#[test]
fn a_table_written_both_ways_says_how_to_write_it() {
    let (code, _, err) = check(
        "[service]\nname = \"a\"\ncommand = \"true\"\n\n[[service]]\nname = \"b\"\ncommand = \"true\"\n",
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("invalid TOML: "), "{err}");
    assert!(
        err.contains("`[service]` and `[[service]]` both appear: write every one as `[[service]]`"),
        "{err}"
    );
}
