//! `/metrics`: parsed and linted by Prometheus's own `promtool check metrics`
//! (Debian's `prometheus` package; scripts/test unpacks promtool into
//! target/promtool), with the values checked against what the agent did, and
//! counters that survive an agent restart.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{http, wait_for, Agent};

/// `common::BUSY_UNITS` plus a job its wall limit kills.
fn units() -> String {
    format!(
        "{}{}",
        common::BUSY_UNITS,
        r#"[[job]]
name = "slow"
command = ["sleep", "600"]
limits = { wall = "300ms" }

"#
    )
}

/// promtool: `MAMORI_PROMTOOL`, else target/promtool/usr/bin/promtool
/// (scripts/test puts it there), else `promtool` on the PATH.
fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("MAMORI_PROMTOOL") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let local = target.join("promtool/usr/bin/promtool");
    if local.exists() {
        local
    } else {
        PathBuf::from("promtool")
    }
}

/// `promtool check metrics` on `text`: parse errors and lint problems
/// (naming, units, `_total` suffixes, HELP) both fail.
fn promtool_check(text: &str) {
    let tool = promtool();
    let mut child = Command::new(&tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; run ./scripts/test (it unpacks promtool from Debian's prometheus package) or set MAMORI_PROMTOOL",
                tool.display()
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {:?}\n{said}\n--- exposition ---\n{text}",
        out.status
    );
}

/// `series (as written) -> value`, for looking values up once promtool has
/// accepted the text.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, v) = l.rsplit_once(' ').unwrap();
            let v = match v {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap(),
            };
            (series.to_string(), v)
        })
        .collect()
}

fn scrape(a: &Agent) -> String {
    let (status, body) = http(a.port, "GET", "/metrics", None).unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series).unwrap_or_else(|| {
        panic!(
            "no {series} in /metrics: {:#?}",
            m.keys().collect::<Vec<_>>()
        )
    })
}

#[test]
fn metrics_pass_promtool_and_tell_what_happened_across_restarts() {
    let mut a = Agent::start("", &units());
    assert_eq!(a.post("/api/v1/flows/extract/run").0, 202);
    assert_eq!(a.post("/api/v1/jobs/slow/run").0, 202);
    let text = wait_for(
        "metrics of the finished jobs, the alerts and their deliveries",
        || {
            let text = scrape(&a);
            let m = samples(&text);
            let ready = m.get("mamori_job_runs_total{job=\"load\",result=\"failed\"}")
                == Some(&1.0)
                && m.contains_key("mamori_unit_limit_kills_total{unit=\"slow\",reason=\"wall\"}")
                && m.contains_key("mamori_job_runs_total{job=\"slow\",result=\"failed\"}")
                && m.contains_key("mamori_check_down_total{check=\"always-down\"}")
                && m.get("mamori_notification_deliveries_total{channel=\"log\",result=\"ok\"}")
                    .is_some_and(|n| *n >= 2.0)
                && m.contains_key("mamori_unit_memory_bytes{unit=\"web\"}")
                && m.contains_key("mamori_check_latency_seconds{check=\"always-up\"}");
            ready.then_some(text)
        },
    );
    promtool_check(&text);
    let m = samples(&text);
    assert_eq!(get(&m, "mamori_build_info{version=\"0.1.0\"}"), 1.0);
    assert_eq!(
        get(
            &m,
            "mamori_unit_state{unit=\"web\",kind=\"service\",state=\"running\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "mamori_unit_state{unit=\"web\",kind=\"service\",state=\"stopped\"}"
        ),
        0.0
    );
    assert_eq!(
        get(
            &m,
            "mamori_unit_state{unit=\"load\",kind=\"job\",state=\"failed\"}"
        ),
        1.0
    );
    assert!(get(&m, "mamori_unit_memory_bytes{unit=\"web\"}") > 0.0);
    assert_eq!(
        get(&m, "mamori_unit_memory_limit_bytes{unit=\"web\"}"),
        512.0 * 1024.0 * 1024.0
    );
    assert_eq!(
        get(&m, "mamori_unit_leak_suspected{unit=\"web\"}"),
        0.0,
        "a sleeping service does not leak"
    );
    assert!(m.contains_key("mamori_unit_leak_slope_bytes_per_second{unit=\"web\"}"));
    assert_eq!(
        get(
            &m,
            "mamori_job_runs_total{job=\"extract\",result=\"succeeded\"}"
        ),
        1.0
    );
    assert_eq!(
        get(&m, "mamori_job_duration_seconds_count{job=\"extract\"}"),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "mamori_job_duration_seconds_bucket{job=\"extract\",le=\"+Inf\"}"
        ),
        1.0
    );
    // The wall-limited run took at least its limit, so it is above the 0.3 s
    // it was allowed and well below the first bucket that holds 600 s.
    let slow_sum = get(&m, "mamori_job_duration_seconds_sum{job=\"slow\"}");
    assert!((0.3..60.0).contains(&slow_sum), "slow took {slow_sum} s");
    assert_eq!(
        get(
            &m,
            "mamori_unit_limit_kills_total{unit=\"slow\",reason=\"wall\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "mamori_check_status{check=\"always-down\",kind=\"exec\",status=\"down\"}"
        ),
        1.0
    );
    let latency = get(&m, "mamori_check_latency_seconds{check=\"always-up\"}");
    assert!(latency > 0.0 && latency < 30.0, "latency {latency}");
    // The alert gauges say what the alert API says (asked until both agree:
    // alerts may fire between the two reads).
    wait_for("mamori_alerts to match /api/v1/alerts", || {
        let m = samples(&scrape(&a));
        let active = a.get("/api/v1/alerts");
        let active = active.as_array().unwrap();
        let all_match = ["firing", "acknowledged"].iter().all(|st| {
            ["info", "warning", "critical"].iter().all(|sev| {
                let n = active
                    .iter()
                    .filter(|x| x["state"] == *st && x["severity"] == *sev)
                    .count() as f64;
                m.get(&format!(
                    "mamori_alerts{{state=\"{st}\",severity=\"{sev}\"}}"
                )) == Some(&n)
            })
        });
        (all_match && !active.is_empty()).then_some(())
    });
    assert!(
        get(
            &m,
            "mamori_alerts_fired_total{rule=\"check-down\",severity=\"critical\"}"
        ) >= 1.0
    );
    let delivered = get(
        &m,
        "mamori_notification_deliveries_total{channel=\"log\",result=\"ok\"}",
    );

    // Counters come from the store: after a restart they go on, not from 0.
    a.stop();
    a.spawn();
    let text = scrape(&a);
    promtool_check(&text);
    let m = samples(&text);
    assert_eq!(
        get(&m, "mamori_job_runs_total{job=\"load\",result=\"failed\"}"),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "mamori_unit_limit_kills_total{unit=\"slow\",reason=\"wall\"}"
        ),
        1.0
    );
    assert!(
        get(
            &m,
            "mamori_notification_deliveries_total{channel=\"log\",result=\"ok\"}"
        ) >= delivered
    );
    // And they keep counting: one more run of the flow.
    assert_eq!(a.post("/api/v1/flows/extract/run").0, 202);
    wait_for("the second failed load counted", || {
        let m = samples(&scrape(&a));
        (m.get("mamori_job_runs_total{job=\"load\",result=\"failed\"}") == Some(&2.0)).then_some(())
    });
}

#[test]
fn metrics_follow_read_auth() {
    let a = Agent::start("read_auth = \"token\"", &units());
    let (status, body) = http(a.port, "GET", "/metrics", None).unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, body) = http(a.port, "GET", "/metrics", Some(&a.token())).unwrap();
    assert_eq!(status, 200);
    promtool_check(&body);
}
