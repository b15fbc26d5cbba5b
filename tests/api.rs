//! The HTTP API: auth on mutating calls, JSON errors for bad input, never a 5xx.

mod common;

use common::{http, Agent};

const UNITS: &str = r#"[[service]]
name = "web"
command = ["sleep", "1000"]

[[job]]
name = "nightly"
command = "true"
limits = { wall = "90s", cpu = "1500ms" }
"#;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

#[test]
fn mutating_calls_need_the_token() {
    let a = Agent::start("", UNITS);
    // The unit task starts the process just after the API is up.
    common::wait_for("web running", || {
        (a.unit("web")["state"] == "running").then_some(())
    });
    let (status, body) = http(a.port, "POST", "/api/v1/units/web/stop", None).unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(json(&body)["error"]
        .as_str()
        .unwrap()
        .contains("missing bearer token"));
    let (status, body) = http(a.port, "POST", "/api/v1/jobs/nightly/run", Some("wrong")).unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(json(&body)["error"], "invalid bearer token");
    assert_eq!(
        a.unit("web")["state"],
        "running",
        "nothing happened without the token"
    );

    let (status, body) = a.post("/api/v1/units/web/stop");
    assert_eq!(status, 200, "{body}");
    assert_eq!(a.unit("web")["state"], "stopped");
}

#[test]
fn the_token_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let a = Agent::start("", UNITS);
    let mode = std::fs::metadata(a.data_dir().join("token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(a.token().len(), 64);
}

#[test]
fn bad_requests_get_json_errors_never_5xx() {
    let a = Agent::start("", UNITS);
    let token = a.token();
    let cases: &[(&str, &str, Option<&str>, u16)] = &[
        ("GET", "/api/v1/units/nope", None, 404),
        ("GET", "/api/v1/runs?limit=abc", None, 400),
        ("GET", "/api/v1/runs?unit=nope", None, 404),
        ("GET", "/api/v1/runs/xyz", None, 400),
        ("GET", "/api/v1/runs/999999", None, 404),
        ("GET", "/api/v1/events?after=-x", None, 400),
        ("GET", "/api/v1/units/web/logs?from=banana", None, 400),
        ("GET", "/api/v1/units/web/logs?run=424242", None, 404),
        ("GET", "/no/such/thing", None, 404),
        ("DELETE", "/api/v1/units", None, 405),
        ("POST", "/api/v1/units/web/explode", Some(&token), 404),
        ("POST", "/api/v1/units/nope/start", Some(&token), 404),
        ("POST", "/api/v1/jobs/web/run", Some(&token), 400),
        ("POST", "/api/v1/jobs/nope/run", Some(&token), 404),
    ];
    for (method, path, tok, want) in cases {
        let (status, body) = http(a.port, method, path, *tok).unwrap();
        assert_eq!(status, *want, "{method} {path}: {body}");
        let v = json(&body);
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {path}: {body}"
        );
    }
}

#[test]
fn status_shows_units_as_a_table_and_as_json() {
    let a = Agent::start("", UNITS);
    common::wait_for("web running with a pid", || {
        a.unit("web")["pid"].as_i64().map(|_| ())
    });
    let out = a.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let header = text.lines().next().unwrap();
    for col in [
        "UNIT",
        "KIND",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "MEMORY",
        "LAST EXIT",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("web") && l.contains("running")),
        "{text}"
    );
    let out = a.cli(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let units = v.as_array().unwrap();
    assert_eq!(units.len(), 2);
    assert_eq!(units[0]["name"], "web");
    assert_eq!(units[1]["state"], "idle");
    // Times in milliseconds, like everywhere else in the API.
    assert_eq!(
        units[1]["limits"],
        serde_json::json!({"memory": null, "cpu_ms": 1500, "wall_ms": 90000, "open_files": null})
    );
}

#[test]
fn cli_says_clearly_when_the_agent_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    let port = common::free_port();
    std::fs::write(&cfg, format!("[agent]\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("-c")
        .arg(&cfg)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot reach the agent at http://127.0.0.1:{port}"
        )),
        "{err}"
    );
}

#[test]
fn a_second_agent_on_the_same_data_dir_is_refused() {
    let a = Agent::start("", UNITS);
    let out = std::process::Command::new(common::BIN)
        .arg("-c")
        .arg(&a.config)
        .arg("agent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another mamori agent is already running"),
        "{err}"
    );
    assert_eq!(
        a.unit("web")["state"],
        "running",
        "the first agent is untouched"
    );
}

#[test]
fn cli_output_into_a_closed_pipe_ends_quietly_like_head_expects() {
    use std::os::unix::process::ExitStatusExt;
    let a = Agent::start("", UNITS);
    // The reader is gone before the CLI writes anything (`mamori status | head -0`).
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let out = std::process::Command::new(common::BIN)
        .arg("-c")
        .arg(&a.config)
        .args(["status"])
        .stdout(std::process::Stdio::from(write))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {err}",
        out.status
    );
}
