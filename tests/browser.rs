//! The dashboard in a real headless Chromium (Debian `chromium` and
//! `chromium-driver`; scripts/test installs them), driven over ChromeDriver's
//! W3C WebDriver HTTP API with the tests' small HTTP client (no WebDriver
//! crate: a dozen JSON calls do not justify one and its async stack).
//!
//! Scenario: a failing check raises an alert; log in with the token,
//! acknowledge the alert by clicking, open an incident and post an update
//! from the dashboard, then see the update on /status. Screenshots of the
//! dashboard and the status page are written to docs/screenshots/ when
//! `MAMORI_SCREENSHOTS=1` (to refresh them after a UI change); otherwise to
//! a temp dir, so the tree stays clean. ChromeDriver runs in its own process
//! group, which is killed on every path (Drop), Chromium with it.

mod common;
#[path = "common/httpx.rs"]
mod httpx;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{wait_for, Agent};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Option<Child>,
    port: u16,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        use std::os::unix::process::CommandExt;
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: install Debian's chromium and chromium-driver (scripts/test does)"
            );
        }
        let port = common::free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut d = Driver {
            child: Some(child),
            port,
            session: None,
            _profile: profile,
        };
        wait_for("chromedriver /status", || {
            httpx::request(port, "GET", "/status", &[], b"")
                .ok()
                .filter(|r| r.status == 200 && r.json()["value"]["ready"] == true)
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1700",
                    format!("--user-data-dir={}", d._profile.path().display()),
                ]
            }
        }}});
        let v = d.call("POST", "/session", Some(caps));
        d.session = Some(
            v["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("no session: {v}"))
                .to_string(),
        );
        d
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let r = httpx::request(
            self.port,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .expect("WebDriver call");
        let v = r.json();
        assert!(
            r.status < 300,
            "WebDriver {method} {path} -> {}: {v}",
            r.status
        );
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session.as_deref().unwrap_or(""))
    }

    fn go(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.s("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT].as_str().expect("an element id").to_string()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/click")),
            Some(json!({})),
        );
    }

    fn type_in(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/value")),
            Some(json!({ "text": text })),
        );
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.call("GET", &self.s(&format!("/element/{e}/text")), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn source(&self) -> String {
        self.call("GET", &self.s("/source"), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn screenshot(&self, to: &Path) {
        let b64 = self.call("GET", &self.s("/screenshot"), None);
        let png = base64_decode(b64.as_str().expect("base64 PNG"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
        std::fs::write(to, png).expect("write screenshot");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = httpx::request(self.port, "DELETE", &format!("/session/{s}"), &[], b"");
        }
        if let Some(mut c) = self.child.take() {
            let pg = nix::unistd::Pid::from_raw(-(c.id() as i32));
            let _ = nix::sys::signal::kill(pg, nix::sys::signal::Signal::SIGTERM);
            for _ in 0..100 {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = nix::sys::signal::kill(pg, nix::sys::signal::Signal::SIGKILL);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Standard base64 (the screenshot); written here to avoid a dependency for 20 lines.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter_map(val) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

const CONFIG: &str = r#"
[status]
title = "Example Mail status"

[[service]]
name = "webmail"
command = "sleep 100000"
limits = { memory = "256MiB" }

[[check]]
name = "smtp"
kind = "exec"
command = "echo 'connection refused'; exit 1"
interval = "300ms"
fall = 1

[[job]]
name = "fetch"
command = "true"
[[job]]
name = "transform"
command = "echo 'input file missing' >&2; exit 2"
after = ["fetch"]
[[job]]
name = "publish"
command = "true"
after = ["transform"]
[[job]]
name = "report"
command = "true"
after = ["fetch"]

[[component]]
name = "Mail delivery"
description = "Sending and receiving mail (SMTP)"
checks = ["smtp"]

[[component]]
name = "Webmail"
description = "Reading mail in the browser"
units = ["webmail"]

[[maintenance]]
name = "Weekly maintenance"
days = ["sun"]
from = "03:00"
to = "04:00"
"#;

#[test]
fn acknowledge_open_and_update_an_incident_from_the_dashboard_then_see_it_on_status() {
    let a = Agent::start("sample_interval = \"200ms\"", CONFIG);
    let base = format!("http://127.0.0.1:{}", a.port);
    let alert = wait_for("the smtp check-down alert", || {
        a.get("/api/v1/alerts")
            .as_array()?
            .iter()
            .find(|x| x["rule"] == "check-down")
            .cloned()
    });
    let id = alert["id"].as_i64().unwrap();
    // A flow that stalls on a failed job, for the graph.
    let (st, _) = a.post("/api/v1/flows/fetch/run");
    assert_eq!(st, 202);
    wait_for("the flow to stall", || {
        (a.get("/api/v1/flows/fetch")["latest"]["status"] == "stalled").then_some(())
    });

    let shots: PathBuf = if std::env::var("MAMORI_SCREENSHOTS").as_deref() == Ok("1") {
        let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&d).unwrap();
        d
    } else {
        a.dir.path().to_path_buf()
    };

    let d = Driver::start();
    // Log in with the token.
    d.go(&format!("{base}/login"));
    d.type_in("#token", &a.token());
    d.click("#login");
    wait_for("the dashboard after login", || {
        d.source().contains("Log out").then_some(())
    });

    // Acknowledge by clicking.
    d.go(&format!("{base}/?live=0"));
    d.click(&format!("#ack-{id}"));
    let flash = wait_for("the acknowledged message", || {
        let s = d.source();
        s.contains("id=\"flash\"").then(|| d.text("#flash"))
    });
    assert!(
        flash.contains(&format!("Alert {id} acknowledged")),
        "{flash}"
    );
    let x = a.get(&format!("/api/v1/alerts/{id}"));
    assert_eq!(x["state"], "acknowledged");
    assert_eq!(x["acked_by"], "dashboard");

    // Open an incident, then post an update.
    d.click("#open-incident summary");
    d.type_in("#incident-title", "Mail delivery is delayed");
    d.click("input[name=component][value='Mail delivery']");
    d.type_in(
        "#incident-message",
        "Outgoing mail is queued; we are looking into it.",
    );
    d.click("#incident-open");
    wait_for("the incident opened", || {
        d.source().contains("Incident 1 opened").then_some(())
    });
    d.click("#update-state-1 option[value=identified]");
    d.type_in(
        "#update-message-1",
        "The SMTP relay rejects connections; we are switching to the standby relay.",
    );
    d.click("#update-post-1");
    wait_for("the update posted", || {
        d.source()
            .contains("Update posted to incident 1")
            .then_some(())
    });
    let inc = a.get("/api/v1/incidents/1");
    assert_eq!(inc["state"], "identified");
    assert_eq!(inc["updates"].as_array().unwrap().len(), 2);
    // The flow graph shows the held job with its reason.
    let src = d.source();
    assert!(
        src.contains("class=\"job held\""),
        "a held job in the graph"
    );
    assert!(src.contains("class=\"job failed\""));
    d.go(&format!("{base}/?live=0"));
    d.screenshot(&shots.join("dashboard.png"));

    // The public status page shows it.
    d.go(&format!("{base}/status"));
    let page = d.text("main");
    assert!(page.contains("Mail delivery is delayed"), "{page}");
    assert!(page.contains("switching to the standby relay"), "{page}");
    assert!(page.contains("Major outage"), "{page}");
    assert!(
        !page.contains("connection refused"),
        "no check output on /status"
    );
    d.screenshot(&shots.join("status.png"));

    // A service's page: its memory chart (samples and the limit line), and its runs.
    wait_for("stored samples of webmail", || {
        let n = a.get("/api/v1/units/webmail/samples").as_array()?.len();
        (n >= 10).then_some(())
    });
    d.go(&format!("{base}/ui/units/webmail?window=1h"));
    let src = d.source();
    assert!(
        src.contains("class=\"chart\"") && src.contains("class=\"limit\""),
        "a memory chart with the limit"
    );
    d.screenshot(&shots.join("unit.png"));
    drop(d);
}
