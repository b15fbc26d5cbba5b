//! The README's quick start, run for real: `mamori demo` on the shipped demo
//! config (with the API moved to a free port), then the commands the README
//! suggests. The leaker is killed at its memory limit, the runaway job by its
//! wall limit, and Ctrl-C leaves no demo process behind. The demo's web
//! server listens on 127.0.0.1:8765, as shipped: that port must be free.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http, wait_for, BIN};
use serde_json::Value;

/// The demo agent; stopped (SIGTERM, then SIGKILL) if the test fails early.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn get(port: u16, path: &str) -> Value {
    let (status, body) = http(port, "GET", path, None).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn the_quick_start_demo_does_what_the_readme_says() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("mamori-demo");
    std::fs::create_dir_all(&demo_dir).unwrap();
    let port = free_port();
    let shipped = include_str!("../examples/quickstart.toml");
    let moved = shipped.replace(
        "listen = \"127.0.0.1:7878\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    assert_ne!(moved, shipped, "the demo config's listen line moved");
    let config = demo_dir.join("quickstart.toml");
    std::fs::write(&config, &moved).unwrap();

    let stderr = dir.path().join("demo.err");
    let child = Command::new(BIN)
        .args(["demo", "--dir"])
        .arg(&demo_dir)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut demo = Demo(child);
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .env("MAMORI_CONFIG", &config)
            .args(args)
            .output()
            .unwrap()
    };

    // The leaker grows 20 MiB/s: killed at 64 MiB, reason limit:memory.
    let killed = wait_for("the leaker killed at its memory limit", || {
        let (status, body) = http(port, "GET", "/api/v1/runs?unit=leaker", None).ok()?;
        (status == 200).then_some(())?;
        let runs: Value = serde_json::from_str(&body).ok()?;
        runs.as_array()?
            .iter()
            .find(|r| r["reason"] == "limit:memory")
            .cloned()
    });
    assert_eq!(killed["state"], "failed", "{killed}");
    // … and restarted.
    wait_for("the leaker running again", || {
        let u = get(port, "/api/v1/units/leaker");
        (u["state"] == "running" && u["run_id"].as_i64() > killed["id"].as_i64()).then_some(())
    });
    wait_for("web healthy", || {
        (get(port, "/api/v1/checks/web")["status"] == "up").then_some(())
    });

    // `mamori run runaway --wait` exits 137: killed by its 5 s wall limit.
    let out = cli(&["run", "runaway", "--wait"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(137), "{err}");
    assert!(err.contains("limit:wall"), "{err}");

    let out = cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("web") && l.contains("running")),
        "{text}"
    );
    let out = cli(&["alerts"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("leaker was killed at its memory limit"),
        "{text}"
    );

    // Ctrl-C stops the agent and every process it started.
    let pids: Vec<i64> = ["web", "leaker"]
        .iter()
        .filter_map(|u| get(port, &format!("/api/v1/units/{u}"))["pid"].as_i64())
        .collect();
    assert_eq!(pids.len(), 2);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_for("the demo to stop", || demo.0.try_wait().ok().flatten());
    assert!(status.success(), "{status:?}");
    for pid in pids {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        assert!(!alive, "demo process {pid} left running");
    }
    // The edited config was kept, and said so.
    assert_eq!(std::fs::read_to_string(&config).unwrap(), moved);
    let said = std::fs::read_to_string(&stderr).unwrap();
    assert!(said.contains("keeping your edited"), "{said}");
}
