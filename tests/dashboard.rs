//! The dashboard's pages and flow buttons over real HTTP against the real
//! agent: what each page shows, that output is escaped, and that the
//! rerun-from-failed and release buttons act (with a session and CSRF token).

mod common;
#[path = "common/httpx.rs"]
mod httpx;

use common::{wait_for, Agent};
use httpx::{form, request};

const CONFIG: &str = r#"
[[service]]
name = "web"
command = "sleep 100000"
limits = { memory = "128MiB" }

[[job]]
name = "extract"
command = "echo '<script>alert(1)</script>'"
[[job]]
name = "load"
command = "test -e FLAG || exit 3"
after = ["extract"]
[[job]]
name = "report"
command = "true"
after = ["load"]

[[check]]
name = "web-port"
kind = "tcp"
address = "127.0.0.1:1"
interval = "200ms"
fall = 1
"#;

fn login(a: &Agent) -> (String, String) {
    let origin = format!("http://127.0.0.1:{}", a.port);
    let r = request(
        a.port,
        "POST",
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", &origin),
        ],
        form(&[("token", &a.token())]).as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 303);
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = request(a.port, "GET", "/?live=0", &[("Cookie", &cookie)], b"")
        .unwrap()
        .body;
    let i = page.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
    (cookie, page[i..i + 64].to_string())
}

#[test]
fn pages_show_units_checks_runs_and_escape_output() {
    let a = Agent::start("", CONFIG);
    a.cli(&["run", "extract", "--wait"]);
    let run = a.runs("extract")[0]["id"].as_i64().unwrap();
    wait_for("the check down", || {
        (a.get("/api/v1/checks/web-port")["status"] == "down").then_some(())
    });
    let (st, page) = common::http(a.port, "GET", "/", None).unwrap();
    assert_eq!(st, 200);
    for part in [
        "Units (4)",
        "href=\"/ui/units/web\"",
        "Checks (1)",
        "web-port",
        "connect", // the check's failure reason
        &format!("href=\"/ui/runs/{run}\""),
        "data-flow=\"extract\"",
    ] {
        assert!(page.contains(part), "the overview lacks {part}");
    }
    // A run's page shows its output, escaped.
    let (st, runp) = common::http(a.port, "GET", &format!("/ui/runs/{run}"), None).unwrap();
    assert_eq!(st, 200);
    assert!(runp.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!runp.contains("<script>alert(1)"));
    // A unit's page: chart with the limit line at every window.
    for w in ["1h", "30d"] {
        let (st, up) =
            common::http(a.port, "GET", &format!("/ui/units/web?window={w}"), None).unwrap();
        assert_eq!(st, 200);
        assert!(up.contains("class=\"chart\"") && up.contains("class=\"limit\""));
        assert!(up.contains("limit 128.0 MiB"));
    }
    // Incident pages.
    let token = a.token();
    let r = request(
        a.port,
        "POST",
        "/api/v1/incidents",
        &[("Authorization", &format!("Bearer {token}"))],
        br#"{"title": "Pages <slow>", "message": "Looking"}"#,
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let (st, list) = common::http(a.port, "GET", "/ui/incidents", None).unwrap();
    assert_eq!(st, 200);
    assert!(list.contains("Pages &lt;slow&gt;"));
    let (st, one) = common::http(a.port, "GET", "/ui/incidents/1", None).unwrap();
    assert_eq!(st, 200);
    assert!(one.contains("Looking") && one.contains("investigating"));
    // Unknown things: HTML 404 pages; unknown paths: JSON.
    let (st, nf) = common::http(a.port, "GET", "/ui/units/nope", None).unwrap();
    assert_eq!(st, 404);
    assert!(nf.contains("No unit named"));
    let (st, _) = common::http(a.port, "GET", "/ui/runs/x", None).unwrap();
    assert_eq!(st, 404);
    let (st, body) = common::http(a.port, "GET", "/ui/nothing", None).unwrap();
    assert_eq!(st, 404);
    assert!(body.contains("\"error\""));
}

#[test]
fn flow_buttons_rerun_from_failed_and_release() {
    let scratch = tempfile::tempdir().unwrap();
    let flag = scratch.path().join("flag");
    let a = Agent::start("", &CONFIG.replace("FLAG", &flag.display().to_string()));
    let origin = format!("http://127.0.0.1:{}", a.port);
    let (st, _) = a.post("/api/v1/flows/extract/run");
    assert_eq!(st, 202);
    wait_for("the flow to stall on load", || {
        let f = a.get("/api/v1/flows/extract");
        (f["latest"]["status"] == "stalled").then_some(())
    });
    let (cookie, csrf) = login(&a);
    let page = request(a.port, "GET", "/?live=0", &[("Cookie", &cookie)], b"")
        .unwrap()
        .body;
    assert!(page.contains("class=\"job held\"") && page.contains("class=\"job failed\""));
    assert!(page.contains("Rerun from failed") && page.contains("Release load"));
    let h = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Cookie", cookie.as_str()),
        ("Origin", origin.as_str()),
    ];

    // Rerun from the failed job, now that it can succeed.
    std::fs::write(&flag, "").unwrap();
    assert_eq!(a.runs("extract").len(), 1);
    let r = request(
        a.port,
        "POST",
        "/ui/flows/extract/rerun",
        &h,
        form(&[("csrf", &csrf), ("back", "/")]).as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(
        r.header("location").unwrap().contains("msg="),
        "{:?}",
        r.header("location")
    );
    let f = wait_for("the rerun to finish", || {
        let f = a.get("/api/v1/flows/extract");
        (f["latest"]["status"] == "succeeded").then_some(f)
    });
    // From the failed job on: `extract` was not run again; `load` and `report` were.
    assert_eq!(f["latest"]["status"], "succeeded");
    for j in ["extract", "load", "report"] {
        assert_eq!(f["latest"]["jobs"][j]["state"], "succeeded", "{j}: {f}");
    }
    assert_eq!(a.runs("extract").len(), 1);
    assert_eq!(a.wait_run_end("load")["state"], "succeeded");
    assert_eq!(a.wait_run_end("report")["state"], "succeeded");

    // Release: make it fail again, then accept the failure from the dashboard.
    std::fs::remove_file(&flag).unwrap();
    let (st, _) = a.post("/api/v1/flows/extract/run");
    assert_eq!(st, 202);
    wait_for("the flow to stall again", || {
        (a.get("/api/v1/flows/extract")["latest"]["status"] == "stalled").then_some(())
    });
    let r = request(
        a.port,
        "POST",
        "/ui/jobs/load/release",
        &h,
        form(&[("csrf", &csrf), ("back", "/")]).as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 303, "{}", r.body);
    let f = wait_for("the flow to finish after the release", || {
        let f = a.get("/api/v1/flows/extract");
        (f["latest"]["status"] == "succeeded").then_some(f)
    });
    assert_eq!(f["latest"]["status"], "succeeded");
    assert_eq!(f["latest"]["jobs"]["load"]["state"], "released");
    assert_eq!(f["latest"]["jobs"]["load"]["by"], "dashboard");
    let events = a.get("/api/v1/events?limit=1000");
    let released = events.as_array().unwrap().iter().any(|e| {
        e["kind"] == "flow.action"
            && e["action"] == "release"
            && e["target"] == "load"
            && e["by"] == "dashboard"
    });
    assert!(released, "a release by the dashboard is recorded");
    // An action that fails comes back with the error, not a 500.
    let r = request(
        a.port,
        "POST",
        "/ui/jobs/nope/release",
        &h,
        form(&[("csrf", &csrf), ("back", "/")]).as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 303);
    assert!(r.header("location").unwrap().starts_with("/?err="));
}
