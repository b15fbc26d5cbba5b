//! Incidents, the status page and dashboard authentication, end to end: the
//! real agent, real HTTP, the real CLI; the Atom feed parsed by a real XML
//! parser (Python's xml.etree).

mod common;
#[path = "common/httpx.rs"]
mod httpx;

use common::{wait_for, Agent};
use httpx::{form, request};
use serde_json::{json, Value};

const FAILING: &str = r#"
[status]
title = "Example status"

[[check]]
name = "mail-smtp"
kind = "exec"
command = "echo SECRET-CMD-MARKER; exit 1"
interval = "200ms"
fall = 1

[[component]]
name = "Mail"
description = "Sending and receiving mail"
checks = ["mail-smtp"]
"#;

fn post_json(a: &Agent, path: &str, token: Option<&str>, body: &Value) -> httpx::Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h = vec![("Content-Type", "application/json")];
    if let Some(x) = auth.as_deref() {
        h.push(("Authorization", x));
    }
    request(a.port, "POST", path, &h, body.to_string().as_bytes()).expect("POST")
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "cli failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn incidents_through_api_cli_status_page_and_feed() {
    let a = Agent::start("", FAILING);
    let token = a.token();

    // Auth and bad input.
    let r = post_json(&a, "/api/v1/incidents", None, &json!({"title": "x"}));
    assert_eq!(r.status, 401, "{}", r.body);
    let r = request(
        a.port,
        "POST",
        "/api/v1/incidents",
        &[("Authorization", &format!("Bearer {token}"))],
        b"{not json",
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("invalid JSON"));
    for (body, needle) in [
        (
            json!({"title": "x", "components": ["Nope"]}),
            "unknown component \"Nope\"",
        ),
        (json!({"title": "x", "state": "fixed"}), "state \"fixed\""),
        (json!({"title": "x", "impact": "meh"}), "impact \"meh\""),
        (json!({"title": "  "}), "needs a \"title\""),
        (
            json!({"title": "x", "alerts": [999]}),
            "no alert with id 999",
        ),
        (json!({"title": "x", "colour": "red"}), "unknown field"),
    ] {
        let r = post_json(&a, "/api/v1/incidents", Some(&token), &body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains(needle), "{body}: {e}");
    }
    let (st, _) = common::http(a.port, "GET", "/api/v1/incidents/abc", None).unwrap();
    assert_eq!(st, 400);
    let (st, _) = common::http(a.port, "GET", "/api/v1/incidents/42", None).unwrap();
    assert_eq!(st, 404);

    // Open and update with the CLI.
    let out = ok(a.cli(&[
        "incident",
        "open",
        "Mail is slow",
        "--component",
        "Mail",
        "--message",
        "Looking into it",
    ]));
    assert!(out.contains("Incident #1 opened"), "{out}");
    ok(a.cli(&[
        "incident",
        "update",
        "1",
        "--state",
        "identified",
        "--message",
        "Found <it> & fixing",
    ]));
    let shown = ok(a.cli(&["incident", "show", "1"]));
    assert!(
        shown.contains("identified") && shown.contains("Found <it> & fixing"),
        "{shown}"
    );

    // The status page: the check is down, so the component is in outage;
    // the incident shows with its timeline, newest first.
    let v = wait_for("Mail in major outage", || {
        let v = a.get("/status.json");
        (v["components"][0]["level"] == "major_outage").then_some(v)
    });
    assert_eq!(v["title"], "Example status");
    assert_eq!(v["overall"], "major_outage");
    assert_eq!(v["components"][0]["days"].as_array().unwrap().len(), 90);
    let inc = &v["incidents"][0];
    assert_eq!(inc["title"], "Mail is slow");
    assert_eq!(inc["components"], json!(["Mail"]));
    assert_eq!(inc["updates"][0]["state"], "identified");
    assert_eq!(inc["updates"][1]["message"], "Looking into it");
    let (st, page) = common::http(a.port, "GET", "/status", None).unwrap();
    assert_eq!(st, 200);
    assert!(
        page.contains("Found &lt;it&gt; &amp; fixing"),
        "escaped update"
    );
    assert!(page.contains("Major outage"));
    // Nothing internal: not the check's command, not its failure output, not who posted.
    for secret in ["SECRET-CMD-MARKER", "mail-smtp", "cli:", "exit 1"] {
        assert!(!page.contains(secret), "the status page shows {secret}");
        assert!(
            !v.to_string().contains(secret),
            "status.json shows {secret}"
        );
    }

    // The Atom feed, parsed by a real XML parser.
    let (st, feed) = common::http(a.port, "GET", "/status/feed.atom", None).unwrap();
    assert_eq!(st, 200);
    let py = r#"
import sys, xml.etree.ElementTree as ET
A = '{http://www.w3.org/2005/Atom}'
root = ET.fromstring(sys.stdin.buffer.read())
assert root.tag == A + 'feed', root.tag
for k in ('id', 'title', 'updated'):
    assert root.find(A + k) is not None and root.find(A + k).text, k
assert root.find(A + 'author/' + A + 'name').text
assert any(l.get('rel') == 'self' for l in root.findall(A + 'link'))
entries = root.findall(A + 'entry')
ids = set()
for e in entries:
    for k in ('id', 'title', 'updated', 'content'):
        assert e.find(A + k) is not None and e.find(A + k).text, k
    ids.add(e.find(A + 'id').text)
assert len(ids) == len(entries)
print(len(entries), entries[0].find(A + 'content').text)
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", py])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(feed.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "invalid Atom: {}\n{feed}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "2 Found <it> & fixing"
    );

    // Resolve; no more updates; it leaves the open list.
    ok(a.cli(&["incident", "resolve", "1", "--message", "All good"]));
    let r = post_json(
        &a,
        "/api/v1/incidents/1/updates",
        Some(&token),
        &json!({"message": "again"}),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    let open = ok(a.cli(&["incident", "list"]));
    assert!(open.contains("No open incidents"), "{open}");
    let all = ok(a.cli(&["incident", "list", "--all"]));
    assert!(
        all.contains("resolved") && all.contains("Mail is slow"),
        "{all}"
    );
    // Resolved incidents stay on the status page for a week, marked resolved.
    let v = a.get("/status.json");
    assert_eq!(v["incidents"][0]["state"], "resolved");
    assert!(v["incidents"][0]["resolved_at"].is_string());
}

#[test]
fn an_overdue_update_raises_an_alert_until_the_next_update() {
    let a = Agent::start(
        "",
        "[status]\nupdate_every = \"10s\"\n[incidents]\nowner = \"alice\"\n",
    );
    let token = a.token();
    let r = post_json(
        &a,
        "/api/v1/incidents",
        Some(&token),
        &json!({"title": "Slow pages"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_i64().unwrap();
    let alert = wait_for("the incident-update-due alert", || {
        a.get("/api/v1/alerts")
            .as_array()?
            .iter()
            .find(|x| x["rule"] == "incident-update-due")
            .cloned()
    });
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["subject"], format!("incident-{id}"));
    assert!(
        alert["body"].as_str().unwrap().contains("owner alice"),
        "{alert}"
    );
    // Raised once per due time, not on every tick.
    let events = a.get("/api/v1/events?limit=1000");
    let due = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "incident.update_due")
        .count();
    assert_eq!(due, 1);
    let r = post_json(
        &a,
        &format!("/api/v1/incidents/{id}/updates"),
        Some(&token),
        &json!({"state": "identified", "message": "Cache node replaced"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let id_alert = alert["id"].as_i64().unwrap();
    wait_for("the reminder alert resolved by the update", || {
        let x = a.get(&format!("/api/v1/alerts/{id_alert}"));
        (x["state"] == "resolved").then_some(())
    });
}

#[test]
fn a_critical_alert_opens_an_incident_when_configured() {
    let a = Agent::start("", &format!("{FAILING}\n[incidents]\nauto_open = true\n"));
    let inc = wait_for("an incident opened from the check-down alert", || {
        a.get("/api/v1/incidents").as_array()?.first().cloned()
    });
    assert_eq!(inc["opened_by"], "auto");
    // Its title is public: the component, not the alert's internals.
    assert_eq!(inc["title"], "Disruption of Mail");
    assert_eq!(inc["components"], json!(["Mail"]));
    assert_eq!(inc["impact"], "major_outage");
    let alert_id = inc["alerts"][0].as_i64().expect("a linked alert");
    let alert = a.get(&format!("/api/v1/alerts/{alert_id}"));
    assert_eq!(alert["rule"], "check-down");
    // Still one incident for that alert.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(a.get("/api/v1/incidents").as_array().unwrap().len(), 1);
}

fn cookie_of(r: &httpx::Resp) -> String {
    let c = r.header("set-cookie").expect("a session cookie");
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict"),
        "{c}"
    );
    c.split(';').next().unwrap().to_string()
}

fn csrf_of(page: &str) -> String {
    let i = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[i..i + 64].to_string()
}

#[test]
fn dashboard_actions_need_a_session_a_csrf_token_and_the_same_origin() {
    let a = Agent::start("", FAILING);
    let token = a.token();
    let origin = format!("http://127.0.0.1:{}", a.port);
    let alert = wait_for("the check-down alert", || {
        a.get("/api/v1/alerts").as_array()?.first().cloned()
    });
    let id = alert["id"].as_i64().unwrap();
    let ack = format!("/ui/alerts/{id}/ack");
    let form_ct = ("Content-Type", "application/x-www-form-urlencoded");

    // Reading needs no session; no buttons without one.
    let (st, page) = common::http(a.port, "GET", "/", None).unwrap();
    assert_eq!(st, 200);
    assert!(page.contains("check mail-smtp is down") && !page.contains("Acknowledge"));

    // No session.
    let r = request(
        a.port,
        "POST",
        &ack,
        &[form_ct, ("Origin", &origin)],
        b"csrf=x",
    )
    .unwrap();
    assert_eq!(r.status, 403);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("not logged in"));

    // Login: wrong token; right token from another site; right token.
    let body = form(&[("token", "wrong")]);
    let r = request(
        a.port,
        "POST",
        "/login",
        &[form_ct, ("Origin", &origin)],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 303);
    assert!(r.header("location").unwrap().starts_with("/login?err="));
    assert!(r.header("set-cookie").is_none());
    let body = form(&[("token", &token)]);
    let r = request(
        a.port,
        "POST",
        "/login",
        &[form_ct, ("Origin", "http://evil.example")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 403);
    let r = request(
        a.port,
        "POST",
        "/login",
        &[form_ct, ("Origin", &origin)],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = cookie_of(&r);
    let page = request(a.port, "GET", "/", &[("Cookie", &cookie)], b"")
        .unwrap()
        .body;
    assert!(page.contains("Acknowledge"));
    let csrf = csrf_of(&page);
    // A form POST of the logged-in browser, from this origin.
    let post_form = |path: &str, body: &str| {
        request(
            a.port,
            "POST",
            path,
            &[form_ct, ("Cookie", &cookie), ("Origin", &origin)],
            body.as_bytes(),
        )
        .unwrap()
    };

    // Session without CSRF token, with a wrong one, from another origin, without Origin or Referer.
    let cases: [(&str, String, u16); 4] = [
        (origin.as_str(), form(&[("back", "/")]), 403),
        (
            origin.as_str(),
            form(&[("csrf", "0000"), ("back", "/")]),
            403,
        ),
        (
            "http://evil.example",
            form(&[("csrf", &csrf), ("back", "/")]),
            403,
        ),
        ("", form(&[("csrf", &csrf), ("back", "/")]), 403),
    ];
    for (o, body, want) in cases {
        let mut h = vec![form_ct, ("Cookie", cookie.as_str())];
        if !o.is_empty() {
            h.push(("Origin", o));
        }
        let r = request(a.port, "POST", &ack, &h, body.as_bytes()).unwrap();
        assert_eq!(r.status, want, "origin {o:?} body {body}: {}", r.body);
        assert!(r.json()["error"].is_string());
    }
    assert_eq!(a.get(&format!("/api/v1/alerts/{id}"))["state"], "firing");

    // Everything right: acknowledged, back to the page with a message.
    let body = form(&[("csrf", &csrf), ("back", "/?live=0")]);
    let r = post_form(&ack, &body);
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r.header("location").unwrap().starts_with("/?live=0&msg="));
    let x = a.get(&format!("/api/v1/alerts/{id}"));
    assert_eq!(x["state"], "acknowledged");
    assert_eq!(x["acked_by"], "dashboard");

    // The check is still down and its alert clears by itself when it is up:
    // the dashboard offers "Resolve anyway" (a form that sends force), and a
    // resolve without force is refused with a message.
    let page = request(a.port, "GET", "/", &[("Cookie", &cookie)], b"")
        .unwrap()
        .body;
    let button = format!(
        "<input type=\"hidden\" name=\"force\" value=\"1\"><button id=\"resolve-{id}\" title=\"It clears by itself on check.up or check.paused"
    );
    assert!(
        page.contains(&button) && page.contains("Resolve anyway</button>"),
        "{page}"
    );
    let body = form(&[("csrf", &csrf), ("back", "/")]);
    let r = post_form(&format!("/ui/alerts/{id}/resolve"), &body);
    assert_eq!(r.status, 303, "{}", r.body);
    let to = r.header("location").unwrap();
    assert!(
        to.starts_with("/?err=") && to.contains("clears%20by%20itself"),
        "{to}"
    );
    assert_eq!(
        a.get(&format!("/api/v1/alerts/{id}"))["state"],
        "acknowledged"
    );
    // "Resolve anyway" sends force.
    let body = form(&[("csrf", &csrf), ("force", "1"), ("back", "/")]);
    let r = post_form(&format!("/ui/alerts/{id}/resolve"), &body);
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r.header("location").unwrap().starts_with("/?msg="));
    let x = a.get(&format!("/api/v1/alerts/{id}"));
    assert_eq!(x["state"], "resolved");
    assert_eq!(x["resolved_by"], "dashboard");

    // A Referer from this host works when there is no Origin.
    let body = form(&[
        ("csrf", &csrf),
        ("title", "Mail down"),
        ("component", "Mail"),
        ("back", "/"),
    ]);
    let referer = format!("{origin}/");
    let r = request(
        a.port,
        "POST",
        "/ui/incidents",
        &[form_ct, ("Cookie", &cookie), ("Referer", &referer)],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 303, "{}", r.body);
    let inc = a.get("/api/v1/incidents/1");
    assert_eq!(inc["opened_by"], "dashboard");
    assert_eq!(inc["components"], json!(["Mail"]));

    // Logging out ends the session.
    let body = form(&[("csrf", &csrf)]);
    let r = post_form("/logout", &body);
    assert_eq!(r.status, 303);
    let body = form(&[("csrf", &csrf), ("back", "/")]);
    let r = post_form(&format!("/ui/alerts/{id}/resolve"), &body);
    assert_eq!(r.status, 403);

    // A one-time login link from the CLI: its GET shows a button, its POST logs in, once.
    let url = ok(a.cli(&["dashboard-url"])).trim().to_string();
    let path = url
        .strip_prefix(&origin)
        .expect("a link to this agent")
        .to_string();
    let r = request(a.port, "GET", &path, &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("set-cookie").is_none(), "a GET never logs in");
    let r = request(a.port, "POST", &path, &[("Origin", &origin)], b"").unwrap();
    assert_eq!(r.status, 303);
    cookie_of(&r);
    let r = request(a.port, "POST", &path, &[("Origin", &origin)], b"").unwrap();
    assert_eq!(r.status, 403);

    // Bearer-token API clients work as before, without cookie or CSRF (the
    // alert was resolved above; the incident opened above is still open).
    let r = post_json(
        &a,
        "/api/v1/incidents/1/updates",
        Some(&token),
        &json!({"message": "Still looking"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn an_alert_fired_while_the_agent_starts_opens_an_incident() {
    let m = common::marker("94");
    let mut a = Agent::start(
        "",
        &format!(
            r#"[[job]]
name = "nightly"
command = ["sleep", "{m}"]

[[alert]]
name = "run-lost"
on = "run.interrupted"
severity = "critical"

[incidents]
auto_open = true
"#
        ),
    );
    let out = a.cli(&["run", "nightly"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the job's process", || {
        common::sleeps_with(&m).first().copied()
    });
    // The agent dies mid-run; the next one records the run as interrupted
    // at its start, before anything else runs, and alerting fires on it as
    // it catches up with the store.
    a.crash();
    a.spawn();
    let inc = wait_for("an incident opened from that alert", || {
        a.get("/api/v1/incidents").as_array()?.first().cloned()
    });
    assert_eq!(inc["opened_by"], "auto", "{inc}");
    let alert_id = inc["alerts"][0].as_i64().expect("a linked alert");
    assert_eq!(
        a.get(&format!("/api/v1/alerts/{alert_id}"))["rule"],
        "run-lost"
    );
}

#[test]
fn an_open_incident_on_no_component_sets_the_headline() {
    let a = Agent::start(
        "",
        r#"
[[check]]
name = "mail-smtp"
kind = "exec"
command = "true"
interval = "200ms"
rise = 1

[[component]]
name = "Mail"
checks = ["mail-smtp"]
"#,
    );
    wait_for("Mail operational", || {
        let v = a.get("/status.json");
        (v["components"][0]["level"] == "operational").then_some(())
    });
    assert_eq!(a.get("/status.json")["overall"], "operational");
    let r = post_json(
        &a,
        "/api/v1/incidents",
        Some(&a.token()),
        &json!({"title": "Payments are delayed", "impact": "partial_outage"}),
    );
    assert!(r.status < 300, "{}", r.body);
    let v = a.get("/status.json");
    assert_eq!(v["overall"], "partial_outage", "{v}");
    assert_eq!(v["components"][0]["level"], "operational", "{v}");
    let page = httpx::request(a.port, "GET", "/status", &[], b"").unwrap();
    assert!(page.body.contains("Partial outage"), "{}", page.body);
}

#[test]
fn a_component_whose_service_is_stopped_shows_down_on_the_status_page() {
    let m = common::marker("98");
    let a = Agent::start(
        "",
        &format!(
            r#"[[service]]
name = "web"
command = "sleep {m}"
health = {{ kind = "exec", command = "true", interval = "200ms", fall = 1, rise = 1 }}

[status]
title = "T"

[[component]]
name = "Site"
checks = ["web"]
"#
        ),
    );
    let level = || a.get("/status.json")["components"][0]["level"].clone();
    wait_for("Site operational", || {
        (level() == "operational").then_some(())
    });
    // Stopped on purpose: its health check pauses, and users see it down.
    assert!(a.cli(&["stop", "web"]).status.success());
    wait_for("Site down", || (level() == "major_outage").then_some(()));
    assert_eq!(a.get("/api/v1/checks/web")["status"], "paused");
    assert!(a.cli(&["start", "web"]).status.success());
    wait_for("Site operational again", || {
        (level() == "operational").then_some(())
    });
}
