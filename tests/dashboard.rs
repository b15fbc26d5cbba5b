//! The dashboard's pages and flow buttons over real HTTP against the real
//! agent: what each page shows, that output is escaped, and that the
//! rerun-from-failed and release buttons act (with a session and CSRF token);
//! the failover groups of two agents on one host (embedded backend) and
//! their drills.

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
    // No `[cluster]`: no group section, no drills, nothing in the summary.
    for part in [
        "id=\"groups\"",
        "Failover groups",
        "id=\"drills\"",
        "failover groups active",
    ] {
        assert!(
            !page.contains(part),
            "an agent without [cluster] shows {part}"
        );
    }
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

/// Two agents of one host in a group on the embedded backend.
fn group_member(node: &str, db: &std::path::Path) -> Agent {
    Agent::start(
        "shutdown_timeout = \"10s\"",
        &format!(
            r#"
[cluster]
node = "{node}"
path = {db:?}

[[service]]
name = "web"
command = "sleep 100000"
stop_timeout = "2s"

[[group]]
name = "pay"
units = ["web"]
nodes = ["alpha", "beta"]
verify_every = "300ms"
"#,
            db = db.display().to_string()
        ),
    )
}

/// The part of the dashboard between `<section id="ID"` and its end.
fn section(page: &str, id: &str) -> String {
    let start = page
        .find(&format!("<section id=\"{id}\""))
        .unwrap_or_else(|| panic!("no section {id} in the dashboard"));
    let rest = &page[start..];
    rest[..rest.find("</section>").expect("section end")].to_string()
}

#[test]
fn groups_show_the_active_node_its_fencing_token_and_drills() {
    let shared = tempfile::tempdir().unwrap();
    let db = shared.path().join("cluster.db");
    let alpha = group_member("alpha", &db);
    let (cookie, _) = login(&alpha);
    let dashboard = |a: &Agent| {
        let r = request(a.port, "GET", "/?live=0", &[("Cookie", &cookie)], b"").unwrap();
        assert_eq!(r.status, 200);
        r.body
    };
    let token = wait_for("alpha active", || {
        let g = alpha.get("/api/v1/groups");
        (g[0]["active"] == "alpha")
            .then(|| g[0]["token"].as_i64())
            .flatten()
    });

    // A drill with no standby fails; the dashboard shows it red, with why.
    let (st, d) = alpha.post("/api/v1/groups/pay/drill");
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["ok"], false, "{d}");
    let failed = d["id"].as_i64().unwrap();

    let beta = group_member("beta", &db);
    wait_for("beta a qualified standby, alpha healthy", || {
        let g = alpha.get("/api/v1/groups");
        (g[0]["members"]["beta"]["role"] == "standby"
            && g[0]["members"]["beta"]["qualified"] == true
            && g[0]["members"]["alpha"]["healthy"] == true)
            .then_some(())
    });
    let page = dashboard(&alpha);
    let groups = section(&page, "groups");
    assert!(groups.contains("data-group=\"pay\""), "{groups}");
    assert!(
        groups.contains(&format!(
            "Active node <b class=\"active-node\">alpha</b> · fencing token <b class=\"token\">{token}</b>"
        )),
        "{groups}"
    );
    assert!(groups.contains("units web · standby stopped · preempt off"));
    // Members in priority order, each with its role.
    let (a, b) = (
        groups.find("data-node=\"alpha\"").expect("alpha's row"),
        groups.find("data-node=\"beta\"").expect("beta's row"),
    );
    assert!(a < b);
    assert!(
        groups[a..b].contains(">active<") && groups[a..b].contains(">healthy<"),
        "{groups}"
    );
    assert!(
        groups[b..].contains(">standby<") && groups[b..].contains(">qualified<"),
        "{groups}"
    );
    assert!(page.contains("<b class=\"ok\">1/1</b><a href=\"#groups\">failover groups active</a>"));
    // beta's dashboard names the same active node and token.
    let on_beta = section(&dashboard_of(&beta), "groups");
    assert!(
        on_beta.contains(&format!("<b class=\"token\">{token}</b>"))
            && on_beta.contains("<b class=\"active-node\">alpha</b>"),
        "{on_beta}"
    );

    // A drill that passes: over to beta and back.
    let (st, d) = alpha.post("/api/v1/groups/pay/drill");
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["ok"], true, "{d}");
    let passed = d["id"].as_i64().unwrap();
    let gap = d["gap_ms"].as_i64().unwrap();
    let page = dashboard(&alpha);
    let drills = section(&page, "drills");
    let row = |id: i64| {
        let s = drills
            .find(&format!("data-drill=\"{id}\""))
            .unwrap_or_else(|| panic!("drill {id} not listed: {drills}"));
        let rest = &drills[s..];
        rest[..rest.find("</tr>").unwrap()].to_string()
    };
    assert!(
        drills.contains(&format!("<tr class=\"drill ok\" data-drill=\"{passed}\">")),
        "{drills}"
    );
    let ok = row(passed);
    assert!(
        ok.contains("alpha → beta") && ok.contains(&format!("{gap} ms")),
        "{ok}"
    );
    assert!(ok.contains(">passed<") && ok.contains("health checks passed on both nodes"));
    assert!(
        drills.contains(&format!("<tr class=\"drill bad\" data-drill=\"{failed}\">")),
        "{drills}"
    );
    let bad = row(failed);
    assert!(
        bad.contains(">failed<") && bad.contains("no standby qualifies"),
        "{bad}"
    );
    // Newest first.
    assert!(
        drills.find(&format!("data-drill=\"{passed}\""))
            < drills.find(&format!("data-drill=\"{failed}\""))
    );
    // After the drill alpha holds the group again, with a newer token.
    let g = alpha.get("/api/v1/groups");
    assert_eq!(g[0]["active"], "alpha");
    let now_token = g[0]["token"].as_i64().unwrap();
    assert!(now_token > token);
    let groups = section(&dashboard(&alpha), "groups");
    assert!(
        groups.contains(&format!("<b class=\"token\">{now_token}</b>")),
        "{groups}"
    );

    // The store hangs (a writer holds the embedded database's lock; the
    // agents wait up to 2 s for it before giving up with "the cluster
    // database is busy"): the page does not wait for it. The groups section
    // says the store did not answer within the coordination bound (500 ms),
    // a message `groups_within` writes only when its deadline passed before
    // the store answered; and no part of the page shows the store's own
    // "busy" refusal, which is what a part that waited the lock out would
    // show. The lock is held until the page has arrived. (No clock is read:
    // a slow machine slows both paths alike.)
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let page = dashboard(&alpha);
    lock.execute_batch("ROLLBACK").unwrap();
    let groups = section(&page, "groups");
    assert!(
        groups.contains("Cannot read the coordination store: the coordination store (embedded")
            && groups.contains("did not answer within 500 ms"),
        "{groups}"
    );
    assert!(!page.contains("database is busy"), "{groups}");
    assert!(!groups.contains("class=\"token\""), "{groups}");
    assert!(
        groups.contains("data-node=\"alpha\"><td>alpha <span class=\"small\">(this node)</span>")
    );
    // The rest of the page is there too.
    assert!(page.contains("id=\"drills\"") && page.contains("id=\"units\""));
    drop(beta);
    drop(alpha);
}

/// The dashboard read from loopback without a session (the read rule's default).
fn dashboard_of(a: &Agent) -> String {
    let (st, page) = common::http(a.port, "GET", "/?live=0", None).unwrap();
    assert_eq!(st, 200);
    page
}
