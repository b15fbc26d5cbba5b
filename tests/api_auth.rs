//! API access: read auth (`[agent] read_auth`), the read-only token, the
//! per-client rate limit (429 + Retry-After), JSON 400s for bad input, and
//! the config errors of those keys. Loopback versus "elsewhere" is tested for
//! real in a network namespace the test creates (a second address on its
//! `lo`, which is not 127.0.0.0/8).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{http, wait_for, Agent};
use serde_json::Value;

const UNITS: &str = r#"[[service]]
name = "web"
command = ["sleep", "1000"]

[[job]]
name = "nightly"
command = "true"
"#;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

/// One request; the whole answer (status line, headers, body) as text.
fn raw(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn status_of(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    let head = resp.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn body_of(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

#[test]
fn read_auth_token_asks_every_reader_but_not_healthz_or_the_document() {
    let a = Agent::start("read_auth = \"token\"", UNITS);
    let token = a.token();
    for path in [
        "/api/v1/units",
        "/api/v1/checks",
        "/metrics",
        "/api/v1/alerts",
    ] {
        let (status, body) = http(a.port, "GET", path, None).unwrap();
        assert_eq!(status, 401, "GET {path}: {body}");
        assert!(json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("missing bearer token"));
        let (status, body) = http(a.port, "GET", path, Some("nope")).unwrap();
        assert_eq!(status, 401, "GET {path}: {body}");
        assert_eq!(json(&body)["error"], "invalid bearer token");
        let (status, body) = http(a.port, "GET", path, Some(&token)).unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
    }
    for path in [
        "/healthz",
        "/api/v1/openapi.json",
        "/status",
        "/status.json",
        "/login",
    ] {
        let (status, body) = http(a.port, "GET", path, None).unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
    }
    // Dashboard pages follow the read rule too; a browser without a token
    // or session is sent to the login page, and comes back where it was.
    let resp = raw(a.port, "GET", "/ui/units/web?x=1", None, "");
    assert_eq!(status_of(&resp), 303, "{resp}");
    assert_eq!(
        header(&resp, "location"),
        Some("/login?next=%2Fui%2Funits%2Fweb%3Fx%3D1"),
        "{resp}"
    );
    let (status, body) = http(a.port, "GET", "/", Some(&token)).unwrap();
    assert_eq!(status, 200, "GET / with the token: {body}");
    // The CLI sends the token, so it still works.
    let out = a.cli(&["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("web"));
}

#[test]
fn the_read_only_token_reads_but_changes_are_forbidden() {
    let a = Agent::start(
        "read_auth = \"token\"\nread_token_file = \"ro-token\"",
        UNITS,
    );
    let ro_path = a.dir.path().join("ro-token");
    let ro = std::fs::read_to_string(&ro_path)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(ro.len(), 64);
    assert_ne!(ro, a.token());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&ro_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    wait_for("web running", || {
        let (_, b) = http(a.port, "GET", "/api/v1/units/web", Some(&ro)).ok()?;
        (json(&b)["state"] == "running").then_some(())
    });
    let (status, body) = http(a.port, "GET", "/api/v1/units/web", Some(&ro)).unwrap();
    assert_eq!(status, 200, "{body}");
    for (method, path) in [
        ("POST", "/api/v1/units/web/stop"),
        ("POST", "/api/v1/jobs/nightly/run"),
        ("POST", "/api/v1/silences"),
        ("DELETE", "/api/v1/holds/nightly"),
    ] {
        let (status, body) = http(a.port, method, path, Some(&ro)).unwrap();
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("read-only token"));
    }
    let (_, body) = http(a.port, "GET", "/api/v1/units/web", Some(&ro)).unwrap();
    assert_eq!(json(&body)["state"], "running", "nothing was stopped");
    assert_eq!(a.post("/api/v1/units/web/stop").0, 200);
}

#[test]
fn rate_limit_answers_429_with_retry_after_then_lets_the_client_back() {
    let a = Agent::start(
        "rate_limit = \"2/s\"\nrate_burst = 3\nrate_limit_loopback = true",
        UNITS,
    );
    // The harness's /healthz polls may have used some of the burst: ask
    // until refused, within a bound far above the burst.
    let mut refused = None;
    for _ in 0..50 {
        let r = raw(a.port, "GET", "/api/v1/units", None, "");
        if status_of(&r) == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(status_of(&r), 200, "{r}");
    }
    let r = refused.expect("a 429 within 50 quick requests at 2/s, burst 3");
    let after: u64 = header(&r, "retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in whole seconds");
    assert!((1..=2).contains(&after), "Retry-After {after}");
    let v = json(body_of(&r));
    assert_eq!(v["retry_after"], after);
    assert!(v["error"].as_str().unwrap().contains("rate limit"), "{v}");
    // Token guesses are limited too (the limit comes before the token check).
    let r = raw(a.port, "POST", "/api/v1/units/web/stop", Some("guess"), "");
    assert_eq!(status_of(&r), 429, "{r}");
    // The bucket refills: the client gets in again.
    wait_for("the rate limit to let the client back", || {
        (status_of(&raw(a.port, "GET", "/api/v1/units", None, "")) == 200).then_some(())
    });
    // The refusals are counted.
    let metrics = wait_for("a /metrics answer", || {
        let r = raw(a.port, "GET", "/metrics", None, "");
        (status_of(&r) == 200).then(|| body_of(&r).to_string())
    });
    let refused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mamori_api_rate_limited_total "))
        .expect("mamori_api_rate_limited_total")
        .parse()
        .unwrap();
    assert!(refused >= 2.0, "{refused}");
}

#[test]
fn loopback_is_exempt_from_the_rate_limit_by_default() {
    let a = Agent::start("rate_limit = \"1/s\"\nrate_burst = 1", UNITS);
    for i in 0..30 {
        let (status, body) = http(a.port, "GET", "/api/v1/units", None).unwrap();
        assert_eq!(status, 200, "request {i}: {body}");
    }
}

#[test]
fn bad_input_is_a_400_with_a_json_error() {
    let a = Agent::start("", UNITS);
    let token = a.token();
    let cases: &[(&str, &str, &str, &str)] = &[
        ("POST", "/api/v1/silences", "{not json", "invalid JSON body"),
        ("POST", "/api/v1/silences", r#"{"matchers": {}}"#, "matcher"),
        (
            "POST",
            "/api/v1/silences",
            r#"{"matchers": {"subject": "web"}, "comment": "x", "duration": "soon"}"#,
            "duration",
        ),
        (
            "POST",
            "/api/v1/alerts/1/ack",
            r#"{"coment": "typo"}"#,
            "coment",
        ),
        ("POST", "/api/v1/alerts/abc/ack", "", "not a number"),
        (
            "POST",
            "/api/v1/alerts/ingest/alertmanager",
            r#"{"version": "3", "alerts": []}"#,
            "version",
        ),
        ("POST", "/api/v1/flows/nightly/rerun", "", "exactly one of"),
        ("GET", "/api/v1/units/web/samples?format=xml", "", "format"),
        ("GET", "/api/v1/alerts?state=bogus", "", "state"),
        ("GET", "/api/v1/events?limit=-1", "", "limit"),
    ];
    for (method, path, body, says) in cases {
        let r = raw(a.port, method, path, Some(&token), body);
        assert_eq!(status_of(&r), 400, "{method} {path} {body}: {r}");
        assert!(
            header(&r, "content-type").is_some_and(|c| c.starts_with("application/json")),
            "{r}"
        );
        let v = json(body_of(&r));
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(says)),
            "{method} {path}: expected an error about {says}: {v}"
        );
    }
}

#[test]
fn access_keys_are_checked_with_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[agent]\nread_auth = \"maybe\"\nrate_limit = \"fast\"\nrate_burst = 0\n",
    )
    .unwrap();
    let out = Command::new(common::BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    assert!(
        err.contains("FILE:2:13:") && err.contains("read_auth") && err.contains("\"loopback\""),
        "{err}"
    );
    assert!(
        err.contains("FILE:3:14: invalid `rate_limit` in [agent]: \"fast\"")
            && err.contains("\"20/s\""),
        "{err}"
    );
    assert!(err.contains("FILE:4:1: invalid `rate_burst`"), "{err}");
    std::fs::write(&path, "[agent]\nrate_limit = \"0/s\"\n").unwrap();
    let out = Command::new(common::BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("above 0"));
}

// --- loopback versus elsewhere, in a network namespace of our own ---

/// A network namespace with `lo` up and a second, non-loopback address on it.
struct Netns {
    name: String,
}

const OTHER_IP: &str = "10.77.0.1";

impl Netns {
    fn new() -> Netns {
        let name = format!("mamori-auth-{}", std::process::id());
        let ns = Netns { name };
        ns.ip(&["netns", "add", &ns.name]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns.exec(&["ip", "addr", "add", &format!("{OTHER_IP}/32"), "dev", "lo"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(args)
            .output()
            .expect("run ip (iproute2)");
        assert!(
            out.status.success(),
            "ip {args:?}: {} (this test needs root and iproute2)",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn exec(&self, cmd: &[&str]) {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(cmd);
        self.ip(&args);
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        for _ in 0..600 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Requests made from inside the namespace: `(method, url, token)` each;
/// answers `(status, body)` in order.
const CLIENT: &str = r#"
import json, sys, urllib.request, urllib.error
out = []
for method, url, token in json.loads(sys.argv[1]):
    req = urllib.request.Request(url, method=method, data=b"" if method != "GET" else None)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            out.append([r.status, r.read().decode()])
    except urllib.error.HTTPError as e:
        out.append([e.code, e.read().decode()])
print(json.dumps(out))
"#;

fn from_ns(ns: &Netns, reqs: &[(&str, String, Option<&str>)]) -> Vec<(u16, String)> {
    let out = ns
        .command("python3")
        .args(["-c", CLIENT, &serde_json::to_string(reqs).unwrap()])
        .output()
        .expect("python3 in the namespace");
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client output")
}

#[test]
fn reads_are_open_on_loopback_and_need_a_token_from_elsewhere() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let config = dir.path().join("mamori.toml");
    // Inside its own namespace 0.0.0.0 is only that namespace's `lo`.
    std::fs::write(
        &config,
        format!(
            "[agent]\nlisten = \"0.0.0.0:{port}\"\ndata_dir = \"data\"\nread_token_file = \"ro-token\"\nrate_limit = \"5/s\"\nrate_burst = 10\n\n{UNITS}"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let _agent = Killed(
        ns.command(common::BIN)
            .arg("-c")
            .arg(&config)
            .args(["agent", "--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let lo = format!("http://127.0.0.1:{port}");
    let other = format!("http://{OTHER_IP}:{port}");
    wait_for("the agent in the namespace", || {
        let r = from_ns(&ns, &[("GET", format!("{lo}/healthz"), None)]);
        (r[0].0 == 200).then_some(())
    });
    let token = std::fs::read_to_string(dir.path().join("data/token"))
        .unwrap()
        .trim()
        .to_string();
    let ro = std::fs::read_to_string(dir.path().join("ro-token"))
        .unwrap()
        .trim()
        .to_string();
    let units = "/api/v1/units";
    let r = from_ns(
        &ns,
        &[
            ("GET", format!("{lo}{units}"), None),
            ("GET", format!("{other}{units}"), None),
            ("GET", format!("{other}{units}"), Some("wrong")),
            ("GET", format!("{other}{units}"), Some(&token)),
            ("GET", format!("{other}{units}"), Some(&ro)),
            ("GET", format!("{other}/metrics"), None),
            ("GET", format!("{other}/healthz"), None),
            // Changes need the full token, on loopback too.
            ("POST", format!("{lo}/api/v1/jobs/nightly/run"), None),
            ("POST", format!("{lo}/api/v1/jobs/nightly/run"), Some(&ro)),
            (
                "POST",
                format!("{other}/api/v1/jobs/nightly/run"),
                Some(&token),
            ),
        ],
    );
    let want = [200, 401, 401, 200, 200, 401, 200, 401, 403, 202];
    let got: Vec<u16> = r.iter().map(|(s, _)| *s).collect();
    assert_eq!(got, want, "answers: {r:?}");
    assert!(r[0].1.contains("\"web\""));
    assert!(r[1].1.contains("missing bearer token"));
    // The rate limit (5/s, burst 10) applies to the other address, not to loopback.
    let burst: Vec<_> = (0..20)
        .map(|_| ("GET", format!("{other}/healthz"), None))
        .collect();
    let r = from_ns(&ns, &burst);
    assert!(r.iter().any(|(s, _)| *s == 429), "no 429 in {r:?}");
    let burst: Vec<_> = (0..20)
        .map(|_| ("GET", format!("{lo}/healthz"), None))
        .collect();
    let r = from_ns(&ns, &burst);
    assert!(r.iter().all(|(s, _)| *s == 200), "loopback limited: {r:?}");
}
