//! A real leaking process is flagged from its memory trend and, with
//! `on_leak = "restart"`, restarted gracefully before it reaches its limit.

mod common;

use common::{wait_for, Agent};

#[test]
fn a_leaking_process_is_flagged_and_restarted_before_its_limit() {
    let a = Agent::start(
        "sample_interval = \"250ms\"",
        r#"[[service]]
name = "leaky"
# Grows by 1 MiB every 250 ms (4 MiB/s) and never frees it.
command = ["python3", "-c", "import time\nh=[]\nwhile True:\n    h.append(bytearray(1 << 20))\n    time.sleep(0.25)\n"]
limits = { memory = "1GiB" }
leak = { warmup = "3s", floor_window = "5s", confirm = "5s", on_leak = "restart", restart_before = "1h" }
"#,
    );
    let suspected = wait_for("leak.suspected", || {
        a.get("/api/v1/events?unit=leaky&limit=1000")
            .as_array()
            .and_then(|v| v.iter().find(|e| e["kind"] == "leak.suspected").cloned())
    });
    let slope = suspected["slope_mb_per_hour"].as_f64().unwrap();
    // 4 MiB/s is about 15,000 MB/h; the fit is on the floor, so roughly that.
    assert!(slope > 5_000.0 && slope < 30_000.0, "{suspected}");
    assert!(
        suspected["confidence"].as_f64().unwrap() > 0.5,
        "{suspected}"
    );
    let ttl = suspected["time_to_limit_ms"].as_u64().unwrap();
    assert!(
        ttl > 60_000 && ttl < 600_000,
        "about 4 minutes to 1 GiB: {suspected}"
    );

    // Restarted gracefully, long before the limit: no limit:memory kill.
    let first = wait_for("the leaking run ended by a restart", || {
        a.runs("leaky")
            .into_iter()
            .find(|r| r["state"] != "running")
    });
    assert_eq!(first["reason"], "restart", "{first}");
    assert!(first["peak_rss"].as_u64().unwrap() < 1 << 30, "{first}");
    let requested = a.get("/api/v1/events?unit=leaky&limit=1000");
    assert!(
        requested
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "unit.start_requested"
                && e["by"].as_str().unwrap_or("").starts_with("leak:")),
        "{requested}"
    );
    wait_for("running again", || {
        (a.unit("leaky")["state"] == "running").then_some(())
    });
    let again = a.runs("leaky")[0].clone();
    assert!(again["id"].as_i64() > first["id"].as_i64(), "{again}");
    assert_eq!(again["trigger"], "leak", "{again}");
    // The built-in rule turned the suspicion into a warning alert (resolved
    // again by `leak.cleared` once the restarted service starts over).
    let alerts = a.get("/api/v1/alerts?state=all");
    let leak = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["rule"] == "leak-suspected")
        .cloned()
        .unwrap_or_else(|| panic!("no leak alert: {alerts}"));
    assert_eq!(leak["severity"], "warning", "{leak}");
}
