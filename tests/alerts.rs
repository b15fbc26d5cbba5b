//! Alerts end to end: a check goes down, an alert fires and is delivered to
//! a real HTTP listener and a real SMTP server (aiosmtpd), acknowledged from
//! the signed link, the CLI and the API, silenced, resolved when the check
//! comes back; notifications survive a channel that is down and an agent
//! that is SIGKILLed. Escalation timing itself is tested with paused time in
//! `src/alert/lifecycle.rs`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{http, setup_work, wait_for, Agent, THREE_LEVELS};
use serde_json::Value;

/// One request the listener received.
#[derive(Clone, Debug)]
struct Received {
    /// Header lines, lowercased names.
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
}

/// A real HTTP listener on 127.0.0.1 that records what it is sent; when
/// `up` is false it answers 503 and records nothing.
struct Hook {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Hook {
    fn start(up: bool) -> Hook {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let hook = Hook {
            port,
            got: Arc::default(),
            up: Arc::new(AtomicBool::new(up)),
            stop: Arc::default(),
        };
        let (got, up, stop) = (hook.got.clone(), hook.up.clone(), hook.stop.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = conn else { continue };
                let (got, up) = (got.clone(), up.clone());
                std::thread::spawn(move || serve(s, &got, &up));
            }
        });
        hook
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/alerts", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(s: TcpStream, got: &Mutex<Vec<Received>>, up: &AtomicBool) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut headers = Vec::new();
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let _ = r.read_exact(&mut body);
    let mut s = s;
    if up.load(Ordering::SeqCst) {
        got.lock().unwrap().push(Received {
            headers,
            body: String::from_utf8_lossy(&body).to_string(),
        });
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    } else {
        let _ = s.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndown",
        );
    }
}

/// A real SMTP server (Debian python3-aiosmtpd) writing a Maildir; killed on drop.
struct Smtp {
    child: Child,
    dir: PathBuf,
}

impl Smtp {
    /// A python that has aiosmtpd: Debian's (which the package installs
    /// into), else whatever `python3` is on PATH.
    fn python() -> &'static str {
        for p in ["/usr/bin/python3", "python3"] {
            let ok = Command::new(p)
                .args(["-c", "import aiosmtpd"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return p;
            }
        }
        panic!("no python3 with aiosmtpd: apt-get install python3-aiosmtpd (scripts/test does it)");
    }

    fn start(port: u16, dir: &Path) -> Smtp {
        Self::start_with(port, dir, &[])
    }

    /// aiosmtpd's own command line, with `extra` options (e.g. `--smtpscert`).
    fn start_with(port: u16, dir: &Path, extra: &[&Path]) -> Smtp {
        let mut tls = Vec::new();
        if let [cert, key] = extra {
            tls = vec![
                "--smtpscert".into(),
                cert.as_os_str().to_owned(),
                "--smtpskey".into(),
                key.as_os_str().to_owned(),
            ];
        }
        let child = Command::new(Self::python())
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(tls)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd (apt-get install python3-aiosmtpd; scripts/test does it)");
        let smtp = Smtp {
            child,
            dir: dir.to_path_buf(),
        };
        wait_for("the SMTP server to listen", || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        smtp
    }

    fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("new"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }
}

/// An SMTP server that offers STARTTLS (a self-signed certificate for
/// 127.0.0.1), requires it, and requires AUTH with one user and password.
const SMTP_TLS_AUTH: &str = r#"
import ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword
port, maildir, user, password, cert, key = sys.argv[1:7]
def auth(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == user.encode() and data.password == password.encode()
    return AuthResult(success=ok)
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
c = Controller(Mailbox(maildir), hostname="127.0.0.1", port=int(port), tls_context=ctx,
               require_starttls=True, auth_required=True, auth_require_tls=True, authenticator=auth)
c.start()
while True:
    time.sleep(3600)
"#;

impl Smtp {
    /// The STARTTLS + AUTH server; returns it and the certificate (PEM) to trust.
    /// A self-signed certificate for 127.0.0.1: (cert, key).
    fn make_cert(dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let ok = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(ok.success(), "openssl could not make a test certificate");
        (cert, key)
    }

    fn start_tls_auth(port: u16, dir: &Path, user: &str, password: &str) -> (Smtp, PathBuf) {
        let (cert, key) = Self::make_cert(dir);
        let script = dir.join("smtpd.py");
        std::fs::write(&script, SMTP_TLS_AUTH).unwrap();
        let maildir = dir.join("maildir");
        let child = Command::new(Self::python())
            .arg(&script)
            .arg(port.to_string())
            .arg(&maildir)
            .args([user, password])
            .arg(&cert)
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with aiosmtpd");
        let smtp = Smtp {
            child,
            dir: maildir,
        };
        wait_for("the SMTP server to listen", || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        (smtp, cert)
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Undoes quoted-printable soft line breaks and `=XX` escapes (enough for ASCII mail).
fn unqp(s: &str) -> String {
    let s = s.replace("=\r\n", "").replace("=\n", "");
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '=' {
            let hex: String = chars.clone().take(2).collect();
            if let Ok(b) = u8::from_str_radix(&hex, 16) {
                out.push(b as char);
                chars.next();
                chars.next();
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// A check that is down while `flag` does not exist.
fn check(flag: &Path) -> String {
    format!(
        r#"[[check]]
name = "db"
kind = "exec"
command = "test -f {}"
interval = "100ms"
fall = 1
rise = 1
"#,
        flag.display()
    )
}

fn hook_channel(hook: &Hook) -> String {
    format!(
        r#"[[channel]]
name = "hook"
kind = "webhook"
url = "{}"
"#,
        hook.url()
    )
}

fn alerts(a: &Agent, state: &str) -> Vec<Value> {
    a.get(&format!("/api/v1/alerts?state={state}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn wait_alert(a: &Agent, state: &str) -> Value {
    wait_for(&format!("an alert in state {state}"), || {
        alerts(a, state).into_iter().next()
    })
}

fn post_json(a: &Agent, path: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        a.token(),
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The path part of an ack URL.
fn path_of(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    format!("/{}", rest.split_once('/').unwrap().1)
}

#[test]
fn a_down_check_is_delivered_to_a_webhook_acked_by_its_link_and_resolved_when_up() {
    let hook = Hook::start(true);
    let flags = tempfile::tempdir().unwrap();
    let flag = flags.path().join("db-ok");
    let a = Agent::start("", &format!("{}\n{}", hook_channel(&hook), check(&flag)));

    let got = wait_for("the webhook", || hook.received().into_iter().next());
    let n = got.json();
    assert_eq!(n["what"], "fired");
    assert_eq!(n["severity"], "critical");
    assert_eq!(n["state"], "firing");
    assert_eq!(n["title"], "check db is down");
    assert_eq!(n["key"], "check-down/db");
    let id = n["alert_id"].as_i64().unwrap();
    assert_eq!(
        got.header("x-mamori-delivery").map(str::to_string),
        Some(n["delivery_id"].to_string())
    );
    let url = n["ack_url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{}/ack/{id}/", a.port)),
        "{url}"
    );
    let link = path_of(&url);

    // A GET shows the button and changes nothing (mail scanners follow links).
    let (status, page) = http(a.port, "GET", &link, None).unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("<form method=\"post\">"), "{page}");
    assert!(page.contains("Acknowledge"), "{page}");
    assert_eq!(a.get(&format!("/api/v1/alerts/{id}"))["state"], "firing");

    // Tampered, or for another alert: refused, and nothing changes.
    let mut tampered = link.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let (status, _) = http(a.port, "POST", &tampered, None).unwrap();
    assert_eq!(status, 403);
    let token = link.rsplit('/').next().unwrap();
    let (status, _) = http(a.port, "POST", &format!("/ack/{}/{token}", id + 1), None).unwrap();
    assert_eq!(status, 403);
    assert_eq!(a.get(&format!("/api/v1/alerts/{id}"))["state"], "firing");

    // The button.
    let (status, page) = http(a.port, "POST", &link, None).unwrap();
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Acknowledged"), "{page}");
    let alert = a.get(&format!("/api/v1/alerts/{id}"));
    assert_eq!(alert["state"], "acknowledged");
    assert_eq!(alert["acked_by"], "link");
    assert_eq!(alert["deliveries"][0]["state"], "sent");

    // The check comes back: resolved by itself, and the channel is told.
    std::fs::write(&flag, "").unwrap();
    let resolved = wait_for("the resolution on the webhook", || {
        hook.received()
            .into_iter()
            .map(|r| r.json())
            .find(|n| n["what"] == "resolved")
    });
    assert_eq!(resolved["alert_id"], id);
    assert!(resolved["ack_url"].is_null());
    let alert = a.get(&format!("/api/v1/alerts/{id}"));
    assert_eq!(alert["state"], "resolved");
    assert_eq!(alert["resolved_by"], "auto");
    assert!(alerts(&a, "firing").is_empty());
}

#[test]
fn escalation_stops_when_acknowledged_from_the_cli_and_resolve_by_hand_needs_force_while_down() {
    let hook = Hook::start(true);
    let flags = tempfile::tempdir().unwrap();
    let flag = flags.path().join("db-ok");
    let a = Agent::start(
        "",
        &format!(
            r#"{}
[[policy]]
name = "critical"
[[policy.step]]
after = "0s"
channels = ["hook"]
[[policy.step]]
after = "1s"
channels = ["hook"]
[[policy.step]]
after = "3s"
channels = ["hook"]

{}"#,
            hook_channel(&hook),
            check(&flag)
        ),
    );
    // Step 1 at once, step 2 after 1 s.
    let steps = wait_for("two steps on the webhook", || {
        let r = hook.received();
        (r.len() >= 2).then_some(r)
    });
    assert_eq!(steps[0].json()["step"], 0);
    assert_eq!(steps[1].json()["step"], 1);
    assert_eq!(steps[1].json()["what"], "escalated");
    let id = steps[0].json()["alert_id"].as_i64().unwrap();

    let out = a.cli(&["alerts"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CRITICAL") && text.contains("check db is down"),
        "{text}"
    );

    let out = a.cli(&["ack", &id.to_string(), "--comment", "looking"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alert = a.get(&format!("/api/v1/alerts/{id}"));
    assert_eq!(alert["state"], "acknowledged");
    assert_eq!(alert["ack_comment"], "looking");
    assert!(alert["acked_by"].as_str().unwrap().starts_with("cli:"));
    // Step 3 (at 3 s) never comes; who took it is announced where it was sent.
    std::thread::sleep(Duration::from_millis(3500));
    let got: Vec<Value> = hook.received().iter().map(|r| r.json()).collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2]["what"], "acknowledged");
    assert!(
        got[2]["note"].as_str().unwrap().ends_with(": looking"),
        "{}",
        got[2]
    );

    let out = a.cli(&["alert", &id.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("DELIVERY") && text.contains("sent"), "{text}");

    // The check is still down: the alert would clear by itself when it is
    // up, so resolving it by hand is refused (nothing would page again).
    let out = a.cli(&["resolve", &id.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "alert {id} clears by itself (on check.up or check.paused) and has not yet"
        )) && err.contains(&format!("mamori resolve {id} --force")),
        "{err}"
    );
    let (status, body) = a.post(&format!("/api/v1/alerts/{id}/resolve"));
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        a.get(&format!("/api/v1/alerts/{id}"))["state"],
        "acknowledged"
    );
    let out = a.cli(&["resolve", &id.to_string(), "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(a.get(&format!("/api/v1/alerts/{id}"))["state"], "resolved");
    let out = a.cli(&["ack", &id.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already resolved"));
    let (status, _) = a.post("/api/v1/alerts/999999/ack");
    assert_eq!(status, 404);
}

#[test]
fn a_silence_mutes_notifications_but_the_alert_stays_visible_and_notifies_when_it_ends() {
    let hook = Hook::start(true);
    let flags = tempfile::tempdir().unwrap();
    let flag = flags.path().join("db-ok");
    std::fs::write(&flag, "").unwrap();
    let a = Agent::start("", &format!("{}\n{}", hook_channel(&hook), check(&flag)));
    let out = a.cli(&[
        "silence",
        "add",
        "subject=d*",
        "--for",
        "1h",
        "--comment",
        "db maintenance",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = a.cli(&["silence", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("db maintenance"));

    std::fs::remove_file(&flag).unwrap();
    let alert = wait_alert(&a, "firing");
    let id = alert["id"].as_i64().unwrap();
    let d = wait_for("the muted delivery", || {
        a.get(&format!("/api/v1/alerts/{id}"))["deliveries"]
            .as_array()
            .and_then(|d| d.first().cloned())
    });
    assert_eq!(d["state"], "muted");
    std::thread::sleep(Duration::from_millis(500));
    assert!(hook.received().is_empty());

    // The silence ends while the alert still fires, unacknowledged: people
    // hear about it now.
    let silence = a.get("/api/v1/silences")[0]["id"].as_i64().unwrap();
    let out = a.cli(&["silence", "expire", &silence.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = wait_for("the notification after the silence", || {
        hook.received().into_iter().next()
    });
    assert_eq!(n.json()["alert_id"], id);
    assert_eq!(n.json()["what"], "fired");

    let (status, body) = post_json(
        &a,
        "/api/v1/silences",
        r#"{"matchers": {"nope": "x"}, "duration": "1h", "comment": "c"}"#,
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = post_json(
        &a,
        "/api/v1/silences",
        r#"{"matchers": {"rule": "x"}, "duration": "1h"}"#,
    );
    assert_eq!(status, 400, "{body}");
}

#[test]
fn email_is_delivered_once_the_smtp_server_comes_up() {
    let smtp_port = common::free_port();
    let mail = tempfile::tempdir().unwrap();
    let flags = tempfile::tempdir().unwrap();
    let flag = flags.path().join("db-ok");
    let a = Agent::start(
        "",
        &format!(
            r#"[alerts]
public_url = "http://phone.example:7878/"

[[channel]]
name = "ops-mail"
kind = "email"
server = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "mamori <mamori@example.com>"
to = ["ops@example.com", "Second <oncall@example.com>"]
timeout = "5s"

{}"#,
            check(&flag)
        ),
    );
    // The server is not there yet: the delivery is retried.
    let alert = wait_alert(&a, "firing");
    let id = alert["id"].as_i64().unwrap();
    let d = wait_for("two failed attempts", || {
        let d = a.get(&format!("/api/v1/alerts/{id}"))["deliveries"][0].clone();
        (d["attempts"].as_u64().unwrap_or(0) >= 2).then_some(d)
    });
    assert_eq!(d["state"], "pending");
    assert!(
        d["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{d}"
    );

    // aiosmtpd's Maildir creates its subfolders only for a folder it creates.
    let smtp = Smtp::start(smtp_port, &mail.path().join("maildir"));
    let msg = wait_for("the mail", || smtp.messages().into_iter().next());
    let msg = unqp(&msg);
    assert!(
        msg.contains(&format!(
            "Subject: [CRITICAL] check db is down (alert #{id})"
        )),
        "{msg}"
    );
    assert!(msg.contains("The exec check db is down"), "{msg}");
    assert!(
        msg.contains("To: ops@example.com, Second <oncall@example.com>"),
        "{msg}"
    );
    let prefix = format!("http://phone.example:7878/ack/{id}/");
    let link = msg
        .split_whitespace()
        .find(|w| w.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no ack link in {msg}"));
    // The link from the mail works on this agent (public_url is how phones reach it).
    let (status, page) = http(a.port, "POST", &path_of(link), None).unwrap();
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        a.get(&format!("/api/v1/alerts/{id}"))["state"],
        "acknowledged"
    );
    let d = wait_for("the delivery recorded as sent", || {
        let d = a.get(&format!("/api/v1/alerts/{id}"))["deliveries"][0].clone();
        (d["state"] == "sent").then_some(d)
    });
    assert!(d["attempts"].as_u64().unwrap() >= 3);
    assert_eq!(smtp.messages().len(), 1);
    // Every attempt and its result, visible per alert.
    let log = a.get(&format!("/api/v1/alerts/{id}"))["attempts"]
        .as_array()
        .cloned()
        .unwrap();
    assert_eq!(log.len() as u64, d["attempts"].as_u64().unwrap());
    assert!(log[..log.len() - 1]
        .iter()
        .all(|t| t["ok"] == false && t["error"].is_string()));
    assert_eq!(log[log.len() - 1]["ok"], true);
    let out = a.cli(&["alert", &id.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ATTEMPT AT") && text.contains("failed"),
        "{text}"
    );
}

#[test]
fn notifications_pending_when_the_agent_is_killed_arrive_after_restart_once() {
    let hook = Hook::start(false);
    let flags = tempfile::tempdir().unwrap();
    let flag = flags.path().join("db-ok");
    let mut a = Agent::start("", &format!("{}\n{}", hook_channel(&hook), check(&flag)));
    let alert = wait_alert(&a, "firing");
    let id = alert["id"].as_i64().unwrap();
    wait_for("a failed attempt", || {
        let d = a.get(&format!("/api/v1/alerts/{id}"))["deliveries"][0].clone();
        (d["attempts"].as_u64().unwrap_or(0) >= 1).then_some(())
    });
    a.crash();
    hook.up.store(true, Ordering::SeqCst);
    a.spawn();
    let got = wait_for("the notification after the restart", || {
        hook.received().into_iter().next()
    });
    assert_eq!(got.json()["alert_id"], id);
    // Still one alert (the check went down again in the new agent: a count, not a new alert).
    std::thread::sleep(Duration::from_millis(1500));
    let all = alerts(&a, "all");
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(all[0]["occurrences"].as_u64().unwrap() >= 2);
    assert_eq!(hook.received().len(), 1, "sent once");
}

#[test]
fn rounds_queued_while_a_channel_is_down_never_follow_the_resolution() {
    let hook = Hook::start(false);
    let flags = tempfile::tempdir().unwrap();
    let flag = flags.path().join("db-ok");
    let a = Agent::start(
        "",
        &format!(
            r#"{}
[[policy]]
name = "critical"
[[policy.step]]
after = "0s"
channels = ["hook"]
[[policy.step]]
after = "1s"
channels = ["hook"]
[[policy.step]]
after = "2s"
channels = ["hook"]

{}"#,
            hook_channel(&hook),
            check(&flag)
        ),
    );
    let id = wait_alert(&a, "firing")["id"].as_i64().unwrap();
    let deliveries = |a: &Agent| -> Vec<(String, String)> {
        a.get(&format!("/api/v1/alerts/{id}"))["deliveries"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|d| {
                let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
                (s("what"), s("state"))
            })
            .collect()
    };
    // Three rounds queued while the webhook answers 503.
    wait_for("the third round queued", || {
        (deliveries(&a).len() >= 3).then_some(())
    });
    // The check recovers, then the webhook.
    std::fs::write(&flag, "").unwrap();
    wait_for("the resolution queued", || {
        deliveries(&a)
            .iter()
            .any(|(what, _)| what == "resolved")
            .then_some(())
    });
    hook.up.store(true, Ordering::SeqCst);
    let states = wait_for("nothing pending", || {
        let d = deliveries(&a);
        d.iter().all(|(_, state)| state != "pending").then_some(d)
    });
    let got: Vec<String> = hook
        .received()
        .iter()
        .map(|r| r.json()["what"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(got, ["resolved"], "stale rounds were sent");
    let (last, older) = states.split_last().unwrap();
    assert_eq!(last, &("resolved".to_string(), "sent".to_string()));
    assert!(
        older
            .iter()
            .all(|(what, state)| what != "resolved" && state == "superseded"),
        "{states:?}"
    );
    let out = a.cli(&["alert", &id.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("superseded"), "{text}");
}

#[test]
fn each_failing_job_raises_its_own_alert_named_after_the_job() {
    let a = Agent::start(
        "",
        r#"[[alert]]
name = "job-failed"
on = "job.failed"
subject = "nightly-*"
severity = "warning"
title = "job {subject} failed ({reason})"

[[job]]
name = "nightly-a"
command = "exit 3"

[[job]]
name = "nightly-b"
command = "exit 4"

[[job]]
name = "other"
command = "exit 5"
"#,
    );
    let failed = |a: &Agent| -> usize {
        a.get("/api/v1/events?limit=1000")
            .as_array()
            .map(|v| v.iter().filter(|e| e["kind"] == "job.failed").count())
            .unwrap_or(0)
    };
    // "other" first: the engine handles events in order, so once the later
    // failures have raised their alerts, "other" has been handled too.
    let run = |flow: &str| {
        let (status, body) = a.post(&format!("/api/v1/flows/{flow}/run"));
        assert_eq!(status, 202, "{body}");
    };
    run("other");
    wait_for("other's job.failed", || (failed(&a) == 1).then_some(()));
    run("nightly-a");
    run("nightly-b");
    let mut got = wait_for("two alerts", || {
        let v = alerts(&a, "firing");
        (v.len() >= 2).then_some(v)
    });
    got.sort_by_key(|x| x["key"].as_str().unwrap_or("").to_string());
    let keys: Vec<&str> = got
        .iter()
        .map(|x| x["key"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(keys, ["job-failed/nightly-a", "job-failed/nightly-b"]);
    assert_eq!(got[0]["subject"], "nightly-a");
    let title = got[0]["title"].as_str().unwrap_or("");
    assert!(title.starts_with("job nightly-a failed (exit"), "{title}");
    // "other" does not match the subject, and raised nothing.
    assert_eq!(alerts(&a, "all").len(), 2, "{:?}", alerts(&a, "all"));
}

#[test]
fn a_failed_job_raises_a_critical_alert_by_default_and_its_successful_rerun_resolves_it() {
    // No [[alert]]: a nightly flow that fails must tell someone anyway.
    let a = Agent::start("", THREE_LEVELS);
    setup_work(&a, "exit 3\n");
    let (status, body) = a.post("/api/v1/flows/extract/run");
    assert_eq!(status, 202, "{body}");
    let n = wait_alert(&a, "firing");
    assert_eq!(n["key"], "job-failed/transform", "{n}");
    assert_eq!(n["severity"], "critical");
    assert_eq!(n["title"], "job transform of flow extract failed");
    // Fixed and rerun from the failure: the job succeeds, the alert resolves.
    setup_work(&a, "echo transformed\n");
    let out = a.cli(&["rerun", "extract", "--from-failed"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = wait_alert(&a, "resolved");
    assert_eq!(r["id"], n["id"]);
    assert!(
        alerts(&a, "firing").is_empty(),
        "{:?}",
        alerts(&a, "firing")
    );
    assert_eq!(alerts(&a, "all").len(), 1, "{:?}", alerts(&a, "all"));
}

#[test]
fn alertmanager_webhooks_become_alerts_with_acknowledgement() {
    let a = Agent::start("", "");
    let payload = |status: &str| {
        format!(
            r#"{{"version": "4", "status": "{status}", "receiver": "mamori", "groupKey": "{{}}:{{}}",
              "alerts": [{{"status": "{status}", "fingerprint": "abc123",
                "labels": {{"alertname": "HighLatency", "severity": "critical", "job": "api"}},
                "annotations": {{"summary": "p99 above 1s", "description": "api p99 is 2.3s"}},
                "startsAt": "2026-11-23T06:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}}]}}"#
        )
    };
    let (status, body) = post_json(&a, "/api/v1/alerts/ingest/alertmanager", &payload("firing"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1);
    let alert = wait_alert(&a, "firing");
    assert_eq!(alert["title"], "HighLatency: p99 above 1s");
    assert_eq!(alert["body"], "api p99 is 2.3s");
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["key"], "alertmanager/abc123");
    // Alertmanager repeats itself: one alert, counted.
    post_json(&a, "/api/v1/alerts/ingest/alertmanager", &payload("firing"));
    wait_for("a second occurrence", || {
        (alerts(&a, "firing")[0]["occurrences"] == 2).then_some(())
    });
    post_json(
        &a,
        "/api/v1/alerts/ingest/alertmanager",
        &payload("resolved"),
    );
    wait_alert(&a, "resolved");

    let (status, body) = post_json(
        &a,
        "/api/v1/alerts/ingest/alertmanager",
        r#"{"version": "3", "alerts": []}"#,
    );
    assert_eq!(status, 400, "{body}");
    // An alert nothing identifies, or with an unknown status, is refused
    // with the whole payload: the good alert beside it is not taken either.
    for (bad, says) in [
        (
            r#"{"status": "firing"}"#,
            "alerts[1]: no fingerprint and no labels",
        ),
        (
            r#"{"status": "firing", "fingerprint": "", "labels": {}}"#,
            "alerts[1]: no fingerprint and no labels",
        ),
        (
            r#"{"status": "pending", "fingerprint": "f1"}"#,
            "alerts[1]: status \"pending\"; expected \"firing\" or \"resolved\"",
        ),
    ] {
        let body = format!(
            r#"{{"version": "4", "alerts": [{{"status": "firing", "fingerprint": "good1", "labels": {{"alertname": "Good"}}}}, {bad}]}}"#
        );
        let (status, v) = post_json(&a, "/api/v1/alerts/ingest/alertmanager", &body);
        assert_eq!(status, 400, "{bad}: {v}");
        let err = v["error"].as_str().unwrap_or("");
        assert!(err.contains(says), "{bad}: {v}");
    }
    // Events are handled in order: once a later alert is there, one from a
    // refused payload would be too.
    let (status, v) = post_json(
        &a,
        "/api/v1/alerts/ingest/alertmanager",
        r#"{"version": "4", "alerts": [{"status": "firing", "fingerprint": "later1", "labels": {"alertname": "Later"}}]}"#,
    );
    assert_eq!(status, 200, "{v}");
    let all = wait_for("the later alert", || {
        let all = alerts(&a, "all");
        all.iter()
            .any(|x| x["key"] == "alertmanager/later1")
            .then_some(all)
    });
    assert!(
        !all.iter().any(|x| x["key"] == "alertmanager/good1"),
        "{all:?}"
    );
    let (status, _) = http(a.port, "POST", "/api/v1/alerts/ingest/alertmanager", None).unwrap();
    assert_eq!(status, 401, "needs the token");
}

#[test]
fn alert_config_errors_are_all_reported_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"[alerts]
ack_timeout = "0s"
public_url = "ftp://x"
policy = { critical = "nope" }

[[channel]]
name = "mail"
kind = "email"
server = "smtp"
tls = "ssl"
to = []

[[channel]]
name = "mail"
kind = "webhook"
url = "x"

[[policy]]
name = "page"
repeat = "forever"
[[policy.step]]
after = "5m"
channels = ["mial"]
[[policy.step]]
after = "1m"
channels = ["mail"]

[[alert]]
name = "x"
on = ["check.dwon"]
severity = "urgent"
title = "{unit"
policy = "pgae"

[[maintenance]]
from = "25:00"
to = "07:00"
days = ["someday"]
"#,
    )
    .unwrap();
    let out = Command::new(common::BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    let expected = r#"FILE:2:1: invalid `ack_timeout` in [alerts]: must be longer than 0; write "never" for acknowledgements that do not expire
FILE:3:14: invalid `public_url` in [alerts]: "ftp://x"; expected an http:// or https:// URL that people's phones can reach
FILE:4:23: unknown policy "nope" in `policy` of [alerts] (policies: page)
FILE:6:1: missing required key `from` in [[channel]] "mail": the sender, e.g. from = "mamori <mamori@example.com>"
FILE:10:7: invalid `tls` in [[channel]] "mail": "ssl"; expected one of "starttls", "tls", "none"
FILE:11:1: `to` in [[channel]] "mail" is empty; list at least one address
FILE:14:8: duplicate channel name "mail": the channel on line 7 already has it
FILE:16:7: invalid `url` in [[channel]] "mail": "x"; expected an http:// or https:// URL
FILE:20:10: invalid `repeat` in [[policy]] "page": "forever"; expected a number of extra rounds or "until_acknowledged"
FILE:23:13: unknown channel "mial" in step 1 of [[policy]] "page" (channels: mail)
FILE:25:1: `after` in step 2 of [[policy]] "page" is earlier than the step before it; list steps in order
FILE:30:7: unknown event kind "check.dwon" in `on` of [[alert]] "x"; did you mean "check.down"? (see docs/alerts.md for the list)
FILE:31:12: invalid `severity` in [[alert]] "x": "urgent"; expected one of "info", "warning", "critical"
FILE:32:9: invalid template in `title` of [[alert]] "x": a `{` is not closed; write `{{` for a literal brace
FILE:33:10: unknown policy "pgae" in [[alert]] "x" (policies: page)
FILE:36:8: invalid `from` in [[maintenance]] #1: "25:00"; expected a time of day as "HH:MM", e.g. "22:00"
FILE:38:9: invalid day "someday" in `days` of [[maintenance]] #1; expected mon, tue, wed, thu, fri, sat or sun
FILE: 17 errors
"#;
    assert_eq!(err, expected);
}

#[test]
fn the_command_channel_gets_the_alert_in_env_and_json_on_stdin() {
    let flags = tempfile::tempdir().unwrap();
    let flag = flags.path().join("db-ok");
    let out = flags.path().join("notify.out");
    let a = Agent::start(
        "",
        &format!(
            r#"[[channel]]
name = "script"
kind = "command"
command = ["/bin/sh", "-c", "{{ echo \"$MAMORI_ALERT_ID|$MAMORI_ALERT_SEVERITY|$MAMORI_ALERT_WHAT|$MAMORI_ALERT_TITLE\"; cat; echo; }} > {out}.tmp && mv {out}.tmp {out}"]

{}"#,
            check(&flag),
            out = out.display()
        ),
    );
    let text = wait_for("the script's output", || std::fs::read_to_string(&out).ok());
    let (env, json) = text.split_once('\n').unwrap();
    let alert = wait_alert(&a, "firing");
    assert_eq!(
        env,
        format!("{}|critical|fired|check db is down", alert["id"])
    );
    let n: Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(n["alert_id"], alert["id"]);
    assert_eq!(n["key"], "check-down/db");
    assert!(n["ack_url"].as_str().unwrap().contains("/ack/"));
    let d = wait_for("the delivery recorded", || {
        let d = a.get(&format!("/api/v1/alerts/{}", alert["id"]))["deliveries"][0].clone();
        (d["state"] == "sent").then_some(d)
    });
    assert_eq!(d["attempts"], 1);
}

#[test]
fn an_expired_acknowledgement_escalates_again() {
    let hook = Hook::start(true);
    let flags = tempfile::tempdir().unwrap();
    let flag = flags.path().join("db-ok");
    let a = Agent::start(
        "",
        &format!(
            "[alerts]\nack_timeout = \"1s\"\n\n{}\n{}",
            hook_channel(&hook),
            check(&flag)
        ),
    );
    let first = wait_for("the first notification", || {
        hook.received().into_iter().next()
    });
    let id = first.json()["alert_id"].as_i64().unwrap();
    let (status, _) = post_json(
        &a,
        &format!("/api/v1/alerts/{id}/ack"),
        r#"{"comment": "later"}"#,
    );
    assert_eq!(status, 200);
    assert_eq!(
        a.get(&format!("/api/v1/alerts/{id}"))["state"],
        "acknowledged"
    );
    let again = wait_for("a notification after the ack expired", || {
        hook.received().get(2).cloned()
    });
    assert_eq!(hook.received()[1].json()["what"], "acknowledged");
    assert_eq!(again.json()["what"], "fired");
    assert_eq!(a.get(&format!("/api/v1/alerts/{id}"))["state"], "firing");
}

#[test]
fn a_burst_of_events_loses_no_alert_and_no_notification() {
    // 5,000 events plus the 5,000 `alert.fired` they cause overflow the bus
    // (4,096): the engine must catch up from the store, in order.
    let hook = Hook::start(true);
    let a = Agent::start("", &hook_channel(&hook));
    let n = 5000;
    for chunk in 0..5 {
        let alerts: Vec<String> = (chunk * 1000..(chunk + 1) * 1000)
            .map(|i| format!(r#"{{"status": "firing", "fingerprint": "b{i}", "labels": {{"alertname": "Burst"}}}}"#))
            .collect();
        let body = format!(r#"{{"version": "4", "alerts": [{}]}}"#, alerts.join(","));
        let (status, v) = post_json(&a, "/api/v1/alerts/ingest/alertmanager", &body);
        assert_eq!(status, 200, "{v}");
    }
    wait_for("every notification", || {
        (hook.received().len() >= n).then_some(())
    });
    let got = hook.received();
    let mut keys: Vec<String> = got
        .iter()
        .map(|r| r.json()["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "one notification per alert");
    assert_eq!(got.len(), n, "none twice");
    assert_eq!(alerts(&a, "firing").len(), 100, "the default limit");
    let all = a.get("/api/v1/alerts?state=firing&limit=10000");
    assert_eq!(all.as_array().unwrap().len(), n);
}

#[test]
fn an_event_the_dead_agent_did_not_handle_is_alerted_by_the_next_one() {
    let hook = Hook::start(true);
    let mut a = Agent::start("", &hook_channel(&hook));
    a.stop();
    // What an agent killed between storing an event and handling it leaves behind.
    {
        let store = mamori::store::Store::open(&a.data_dir().join("mamori.db")).unwrap();
        store
            .append_event(
                1,
                &mamori::event::EventKind::UnitGaveUp {
                    unit: "web".into(),
                    starts: 6,
                    window_ms: 60_000,
                },
            )
            .unwrap();
    }
    a.spawn();
    let n = wait_for("the alert from the stored event", || {
        hook.received().into_iter().next()
    });
    assert_eq!(n.json()["key"], "unit-gave-up/web");
    assert_eq!(n.json()["title"], "web gave up restarting");
    // Handled once: a second restart does not raise it again.
    a.stop();
    a.spawn();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(alerts(&a, "all").len(), 1);
    assert_eq!(hook.received().len(), 1);
}

#[test]
fn a_check_down_alert_resolves_when_its_service_is_stopped_on_purpose() {
    let m = common::marker("97");
    let flag_dir = tempfile::tempdir().unwrap();
    let flag = flag_dir.path().join("ok");
    let a = Agent::start(
        "",
        &format!(
            r#"[[service]]
name = "api"
command = "sleep {m}"
health = {{ kind = "exec", command = "test -f {flag}", interval = "200ms", fall = 1, rise = 1 }}
"#,
            flag = flag.display()
        ),
    );
    let alert = wait_alert(&a, "firing");
    assert_eq!(alert["key"], "check-down/api", "{alert}");
    // The operator stops the broken service to work on it: nobody is paged
    // on about it any more.
    assert!(a.cli(&["stop", "api"]).status.success());
    let resolved = wait_alert(&a, "resolved");
    assert_eq!(resolved["id"], alert["id"]);
    assert_eq!(resolved["resolved_by"], "auto", "{resolved}");
    assert_eq!(a.get("/api/v1/checks/api")["status"], "paused");
    // Started again and still broken: a new alert.
    assert!(a.cli(&["start", "api"]).status.success());
    let again = wait_alert(&a, "firing");
    assert_ne!(again["id"], alert["id"]);
}

#[test]
fn test_channel_sends_now_and_says_why_it_failed() {
    let hook = Hook::start(false);
    let a = Agent::start("", &hook_channel(&hook));
    let out = a.cli(&["test-channel", "hook"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("channel \"hook\" failed: HTTP 503"), "{err}");
    hook.up.store(true, Ordering::SeqCst);
    let out = a.cli(&["test-channel", "hook"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = hook.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["what"], "test");
    assert_eq!(got[0].header("x-mamori-alert"), Some("0"));
    // Each test its own (negative) delivery id: a receiver that drops
    // repeated deliveries still shows the second test.
    assert!(a.cli(&["test-channel", "hook"]).status.success());
    let got = hook.received();
    let ids: Vec<i64> = got
        .iter()
        .map(|r| {
            r.header("x-mamori-delivery")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{:?}", r.headers))
        })
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|i| *i < 0), "{ids:?}");
    assert_ne!(ids[0], ids[1]);
    let out = a.cli(&["test-channel", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no channel named \"nope\""));
}

#[test]
fn each_test_mail_is_a_new_message_and_offers_no_acknowledgement() {
    let smtp_port = common::free_port();
    let mail = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(smtp_port, &mail.path().join("maildir"));
    let a = Agent::start(
        "",
        &format!(
            r#"[[channel]]
name = "ops-mail"
kind = "email"
server = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "mamori <mamori@example.com>"
to = ["ops@example.com"]
timeout = "5s"
"#
        ),
    );
    for _ in 0..2 {
        let out = a.cli(&["test-channel", "ops-mail"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let msgs: Vec<String> = smtp.messages().iter().map(|m| unqp(m)).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    let ids: Vec<String> = msgs
        .iter()
        .map(|m| {
            m.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
                .unwrap_or_else(|| panic!("no Message-ID in {m}"))
                .to_string()
        })
        .collect();
    assert_ne!(ids[0], ids[1], "two tests, one Message-ID");
    for m in &msgs {
        assert!(
            m.contains("Subject: [TEST] Test notification through channel ops-mail"),
            "{m}"
        );
        assert!(!m.contains("alert #0") && !m.contains("alert-0"), "{m}");
        assert!(!m.contains("mamori ack"), "{m}");
        assert!(m.contains("nothing to acknowledge"), "{m}");
    }
}

#[test]
fn bad_alert_requests_get_json_errors_never_5xx() {
    let a = Agent::start("", "");
    let token = a.token();
    for (method, path, tok, want) in [
        ("GET", "/api/v1/alerts?state=burning", None, 400),
        ("GET", "/api/v1/alerts?limit=x", None, 400),
        ("GET", "/api/v1/alerts/abc", None, 400),
        ("GET", "/api/v1/alerts/12345", None, 404),
        (
            "POST",
            "/api/v1/alerts/12345/ack",
            Some(token.as_str()),
            404,
        ),
        (
            "POST",
            "/api/v1/alerts/12345/resolve",
            Some(token.as_str()),
            404,
        ),
        ("POST", "/api/v1/alerts/1/ack", None, 401),
        (
            "POST",
            "/api/v1/silences/77/expire",
            Some(token.as_str()),
            404,
        ),
        ("POST", "/api/v1/silences", Some(token.as_str()), 400),
        ("GET", "/ack/1/00", None, 403),
        ("POST", "/ack/x/00", None, 403),
    ] {
        let (status, body) = http(a.port, method, path, tok).unwrap();
        assert_eq!(status, want, "{method} {path}: {body}");
        if !path.starts_with("/ack/") {
            let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
        }
    }
    let (status, body) = post_json(&a, "/api/v1/alerts/1/ack", "{not json");
    assert_eq!(status, 400, "{body}");
    let (status, body) = post_json(&a, "/api/v1/alerts/1/ack", r#"{"coment": "typo"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("coment"), "{body}");
}

#[test]
fn slack_and_ntfy_presets_carry_the_alert_and_its_ack_link() {
    let slack = Hook::start(true);
    let ntfy = Hook::start(true);
    let flags = tempfile::tempdir().unwrap();
    let flag = flags.path().join("db-ok");
    let a = Agent::start(
        "",
        &format!(
            r#"[[channel]]
name = "chat"
kind = "webhook"
url = "{}"
format = "slack"
headers = {{ X-Team = "ops" }}

[[channel]]
name = "phone"
kind = "webhook"
url = "{}"
format = "ntfy"

{}"#,
            slack.url(),
            ntfy.url(),
            check(&flag)
        ),
    );
    let s = wait_for("the Slack-style post", || {
        slack.received().into_iter().next()
    });
    let text = s.json()["text"].as_str().unwrap().to_string();
    let id = wait_alert(&a, "firing")["id"].as_i64().unwrap();
    assert!(
        text.starts_with(&format!(
            "*[CRITICAL] check db is down (alert #{id})*\nThe exec check db is down"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("/ack/{id}/")) && text.ends_with("|Acknowledge>"),
        "{text}"
    );
    assert_eq!(s.header("x-team"), Some("ops"));

    let n = wait_for("the ntfy post", || ntfy.received().into_iter().next());
    assert!(
        n.body.starts_with("The exec check db is down"),
        "{}",
        n.body
    );
    assert_eq!(
        n.header("title"),
        Some(format!("[CRITICAL] check db is down (alert #{id})").as_str())
    );
    assert_eq!(n.header("priority"), Some("5"));
    let action = n.header("actions").unwrap();
    assert!(
        action.starts_with("view, Acknowledge, http://127.0.0.1:"),
        "{action}"
    );
    assert!(action.contains(&format!("/ack/{id}/")), "{action}");
}

#[test]
fn email_over_starttls_with_authentication() {
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let (smtp, cert) = Smtp::start_tls_auth(port, dir.path(), "mamori", "s3cret pass");
    let flags = tempfile::tempdir().unwrap();
    let flag = flags.path().join("db-ok");
    std::fs::write(flags.path().join("smtp-password"), "s3cret pass\n").unwrap();
    let channel = |name: &str, password: &str| {
        // The server only accepts AUTH after STARTTLS, and the certificate
        // only with ca_file: the mail arriving proves both.
        format!(
            r#"[[channel]]
name = "{name}"
kind = "email"
server = "127.0.0.1"
port = {port}
tls = "starttls"
ca_file = "{}"
username = "mamori"
password_file = "{}"
from = "mamori@example.com"
to = ["ops@example.com"]
"#,
            cert.display(),
            flags.path().join(password).display()
        )
    };
    let a = Agent::start(
        "",
        &format!(
            "{}\n{}\n{}",
            channel("mail", "smtp-password"),
            channel("untrusted", "smtp-password")
                .replace(&format!("ca_file = \"{}\"\n", cert.display()), "")
                + "timeout = \"2s\"\n",
            check(&flag)
        ),
    );
    let msg = wait_for("the mail", || smtp.messages().into_iter().next());
    assert!(msg.contains("check db is down"), "{msg}");
    let id = wait_alert(&a, "firing")["id"].as_i64().unwrap();
    let d = wait_for("the delivery recorded as sent", || {
        a.get(&format!("/api/v1/alerts/{id}"))["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["channel"] == "mail" && d["state"] == "sent")
            .cloned()
    });
    assert_eq!(d["attempts"], 1);
    // Without ca_file the self-signed certificate is refused: recorded, retried.
    let bad = wait_for("the refused delivery", || {
        a.get(&format!("/api/v1/alerts/{id}"))["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["channel"] == "untrusted" && d["attempts"].as_u64().unwrap_or(0) >= 1)
            .cloned()
    });
    assert_eq!(bad["state"], "pending");
    // (lettre reports the certificate, or hangs on the failed upgrade until
    // the channel's timeout ends the attempt: either way it is retried.)
    let err = bad["last_error"].as_str().unwrap().to_lowercase();
    assert!(
        err.contains("certificate") || err.contains("timeout"),
        "{err}"
    );
    assert_eq!(smtp.messages().len(), 1);
}

#[test]
fn rules_route_ingested_alerts_by_label() {
    let a = Agent::start(
        "",
        r#"[[alert]]
name = "db-team"
on = "ingest.firing"
when = { "labels.team" = "db" }
resolve_on = "ingest.resolved"
severity = "critical"
title = "[{labels.team}] {name}: {summary}"
"#,
    );
    let payload = |team: &str, fp: &str| {
        format!(
            r#"{{"version": "4", "alerts": [{{"status": "firing", "fingerprint": "{fp}",
                "labels": {{"alertname": "DiskFull", "team": "{team}"}},
                "annotations": {{"summary": "/var at 97%"}}}}]}}"#
        )
    };
    post_json(
        &a,
        "/api/v1/alerts/ingest/alertmanager",
        &payload("db", "f1"),
    );
    post_json(
        &a,
        "/api/v1/alerts/ingest/alertmanager",
        &payload("web", "f2"),
    );
    let all = wait_for("three alerts", || {
        let v = alerts(&a, "firing");
        (v.len() == 3).then_some(v)
    });
    let db: Vec<&Value> = all.iter().filter(|x| x["rule"] == "db-team").collect();
    assert_eq!(db.len(), 1, "only the db team's: {all:?}");
    assert_eq!(db[0]["title"], "[db] DiskFull: /var at 97%");
    assert_eq!(db[0]["severity"], "critical");
    assert_eq!(db[0]["key"], "db-team/f1");
}

#[test]
fn email_over_implicit_tls() {
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = Smtp::make_cert(dir.path());
    let smtp = Smtp::start_with(port, &dir.path().join("maildir"), &[&cert, &key]);
    let flags = tempfile::tempdir().unwrap();
    let a = Agent::start(
        "",
        &format!(
            r#"[[channel]]
name = "mail"
kind = "email"
server = "127.0.0.1"
port = {port}
tls = "tls"
ca_file = "{}"
from = "mamori@example.com"
to = ["ops@example.com"]

{}"#,
            cert.display(),
            check(&flags.path().join("db-ok"))
        ),
    );
    let msg = unqp(&wait_for("the mail over TLS", || {
        smtp.messages().into_iter().next()
    }));
    assert!(msg.contains("check db is down"), "{msg}");
    let id = wait_alert(&a, "firing")["id"].as_i64().unwrap();
    assert!(msg.contains(&format!("/ack/{id}/")), "{msg}");
}

#[test]
fn a_delivery_whose_record_fails_is_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let (started, go, out) = (
        dir.path().join("started"),
        dir.path().join("go"),
        dir.path().join("sent"),
    );
    let flag = dir.path().join("db-ok");
    let a = Agent::start(
        "",
        &format!(
            r#"[[channel]]
name = "script"
kind = "command"
timeout = "60s"
command = ["/bin/sh", "-c", "touch {started}; while [ ! -f {go} ]; do sleep 0.05; done; echo sent >> {out}"]

{}"#,
            check(&flag),
            started = started.display(),
            go = go.display(),
            out = out.display()
        ),
    );
    wait_for("the channel's command", || started.exists().then_some(()));
    let id = wait_alert(&a, "firing")["id"].as_i64().unwrap();
    // The send succeeds while the store refuses to record it (as a full
    // disk would); everything else it still takes.
    let db = rusqlite::Connection::open(a.data_dir().join("mamori.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_sent BEFORE UPDATE OF state ON alert_deliveries
         WHEN NEW.state = 'sent'
         BEGIN SELECT RAISE(FAIL, 'database or disk is full (test)'); END;",
    )
    .unwrap();
    std::fs::write(&go, "").unwrap();
    // Two failed records: the first, and a retry of the record (or, without
    // the fix, of the whole send).
    wait_for("two failed records in the agent's log", || {
        (a.log().matches("Could not record a delivery").count() >= 2).then_some(())
    });
    db.execute_batch("DROP TRIGGER refuse_sent").unwrap();
    // The record is written once the store takes it, and it went out once.
    wait_for("the delivery recorded as sent", || {
        let v = a.get(&format!("/api/v1/alerts/{id}"));
        (v["deliveries"][0]["state"] == "sent").then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "sent\n",
        "{}",
        a.log()
    );
}
