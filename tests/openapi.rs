//! The OpenAPI document (`/api/v1/openapi.json`, src/web/openapi.json) is
//! kept honest three ways:
//! 1. every `(method, path)` the router serves (read from every `.route(...)`
//!    in src/web/) is in the document, and the document lists nothing else;
//! 2. a real agent answers every documented operation with something other
//!    than "no such endpoint" or 405;
//! 3. schemathesis (PyPI; scripts/test installs it into target/schemathesis)
//!    fuzzes a real agent from the document: no 5xx, and every answer's
//!    status, content type and body match what the document says.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{http, Agent};
use serde_json::Value;

/// Routes the router serves that the document leaves out on purpose, with why.
/// (Browser pages belong here, or in the document; nothing is here today.)
const NOT_DOCUMENTED: &[(&str, &str, &str)] = &[
    ("GET", "/", "dashboard HTML page (docs/dashboard.md)"),
    ("GET", "/ui/units/{name}", "dashboard HTML page"),
    ("GET", "/ui/runs/{id}", "dashboard HTML page"),
    ("GET", "/ui/incidents", "dashboard HTML page"),
    ("GET", "/ui/incidents/{id}", "dashboard HTML page"),
    ("GET", "/login", "dashboard login form (HTML)"),
    (
        "POST",
        "/login",
        "dashboard login form post (sets a session cookie)",
    ),
    ("GET", "/login/{code}", "one-time login link page (HTML)"),
    (
        "POST",
        "/login/{code}",
        "one-time login link (sets a session cookie)",
    ),
    ("POST", "/logout", "dashboard form (session + CSRF)"),
    (
        "POST",
        "/ui/alerts/{id}/{action}",
        "dashboard form (session + CSRF)",
    ),
    (
        "POST",
        "/ui/units/{name}/{action}",
        "dashboard form (session + CSRF)",
    ),
    (
        "POST",
        "/ui/flows/{name}/rerun",
        "dashboard form (session + CSRF)",
    ),
    (
        "POST",
        "/ui/jobs/{name}/release",
        "dashboard form (session + CSRF)",
    ),
    ("POST", "/ui/incidents", "dashboard form (session + CSRF)"),
    (
        "POST",
        "/ui/incidents/{id}/update",
        "dashboard form (session + CSRF)",
    ),
    ("GET", "/status", "public status page (HTML)"),
    (
        "GET",
        "/status/feed.atom",
        "Atom feed of incident updates (XML)",
    ),
];

const METHODS: &[&str] = &["get", "post", "put", "delete", "patch", "head", "options"];

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn document() -> Value {
    let text = std::fs::read_to_string(manifest().join("src/web/openapi.json")).unwrap();
    serde_json::from_str(&text).expect("src/web/openapi.json is JSON")
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Rust source without its `//` comments (string and char literals kept
/// whole, so a `"` in `'"'` does not open a string).
fn strip_comments(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let (mut i, mut in_str) = (0, false);
    while i < c.len() {
        let ch = c[i];
        if in_str {
            out.push(ch);
            if ch == '\\' && i + 1 < c.len() {
                out.push(c[i + 1]);
                i += 1;
            } else if ch == '"' {
                in_str = false;
            }
        } else if ch == '"' {
            in_str = true;
            out.push(ch);
        } else if ch == '\'' {
            // A char literal: 'x' or '\x'; otherwise a lifetime.
            let len = match (c.get(i + 1), c.get(i + 2), c.get(i + 3)) {
                (Some('\\'), Some(_), Some('\'')) => 4,
                (Some(_), Some('\''), _) => 3,
                _ => 1,
            };
            out.extend(&c[i..(i + len).min(c.len())]);
            i += len;
            continue;
        } else if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
            continue;
        } else {
            out.push(ch);
        }
        i += 1;
    }
    out
}

/// The text inside the parentheses that open at `open` (balanced; string
/// literals are skipped so a `(` inside one does not count).
fn balanced(text: &str, open: usize) -> &str {
    let b = text.as_bytes();
    let (mut depth, mut i, mut in_str) = (0usize, open, false);
    while i < b.len() {
        let c = b[i];
        if in_str {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
        } else if c == b'(' {
            depth += 1;
        } else if c == b')' {
            depth -= 1;
            if depth == 0 {
                return &text[open + 1..i];
            }
        }
        i += 1;
    }
    panic!("unbalanced parentheses after byte {open}")
}

/// Identifiers called at depth 0 of a method-router expression:
/// `get(a).post(b)` → get, post.
fn top_level_calls(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let (mut depth, mut out, mut i) = (0i32, Vec::new(), 0);
    while i < b.len() {
        match b[i] {
            b'(' | b'{' | b'[' => {
                if depth == 0 && b[i] == b'(' {
                    let start = expr[..i]
                        .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                        .map(|p| p + 1)
                        .unwrap_or(0);
                    out.push(expr[start..i].rsplit("::").next().unwrap_or("").to_string());
                }
                depth += 1;
            }
            b')' | b'}' | b']' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    out
}

/// Every `(METHOD, path)` the router declares in src/web/.
fn served_routes() -> BTreeSet<(String, String)> {
    let mut files = Vec::new();
    rs_files(&manifest().join("src/web"), &mut files);
    let mut out = BTreeSet::new();
    for f in files {
        let text = strip_comments(&std::fs::read_to_string(&f).unwrap());
        for bad in [".nest(", ".nest_service(", ".route_service("] {
            assert!(
                !text.contains(bad),
                "{}: uses `{bad}`, which this test cannot read; list its routes with `.route(...)` or teach tests/openapi.rs",
                f.display()
            );
        }
        let mut from = 0;
        while let Some(pos) = text[from..].find(".route(") {
            let open = from + pos + ".route".len();
            let args = balanced(&text, open);
            from = open + 1;
            let (path, rest) = {
                let a = args.trim_start();
                assert!(
                    a.starts_with('"'),
                    "{}: a route whose path is not a literal: .route({args})",
                    f.display()
                );
                let end = a[1..].find('"').unwrap() + 1;
                (
                    a[1..end].to_string(),
                    a[end + 1..].trim_start().trim_start_matches(','),
                )
            };
            let calls = top_level_calls(rest.trim());
            let methods: Vec<_> = calls
                .iter()
                .filter(|c| METHODS.contains(&c.as_str()))
                .collect();
            assert!(
                !methods.is_empty() && methods.len() == calls.len(),
                "{}: cannot tell the methods of route \"{path}\" from `{}`; write it as get(handler).post(handler)",
                f.display(),
                rest.trim()
            );
            for m in methods {
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (m, _) in item.as_object().unwrap() {
            if METHODS.contains(&m.as_str()) {
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn the_document_lists_exactly_the_routes_the_router_serves() {
    let served = served_routes();
    assert!(
        served.len() > 30 && served.contains(&("GET".into(), "/api/v1/units".into())),
        "the route scan found too little: {served:?}"
    );
    let documented = documented_routes(&document());
    let skipped: BTreeSet<(String, String)> = NOT_DOCUMENTED
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let missing: Vec<_> = served
        .difference(&documented)
        .filter(|r| !skipped.contains(r))
        .map(|(m, p)| format!("  {m} {p}"))
        .collect();
    let extra: Vec<_> = documented
        .difference(&served)
        .map(|(m, p)| format!("  {m} {p}"))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "src/web/openapi.json is out of sync with the router.\nServed but not documented (add them to the document, or to NOT_DOCUMENTED in tests/openapi.rs with a reason):\n{}\nDocumented but not served (remove them from the document):\n{}",
        if missing.is_empty() { "  (none)".to_string() } else { missing.join("\n") },
        if extra.is_empty() { "  (none)".to_string() } else { extra.join("\n") },
    );
}

#[test]
fn every_operation_declares_its_path_parameters_errors_and_security() {
    let doc = document();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let text = doc.to_string();
    // Every $ref points at a schema that exists.
    for part in text.split("\"#/components/schemas/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        assert!(
            schemas.contains_key(name),
            "$ref to a missing schema {name}"
        );
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        let in_path: BTreeSet<&str> = path
            .split('{')
            .skip(1)
            .map(|s| &s[..s.find('}').unwrap()])
            .collect();
        for (m, op) in item.as_object().unwrap() {
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(in_path, declared, "{m} {path}: path parameters");
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("429"), "{m} {path}: no 429");
            assert!(op["security"].is_array(), "{m} {path}: no security");
            if m != "get" && path.starts_with("/api/") {
                assert_eq!(
                    op["security"],
                    serde_json::json!([{"bearer": []}]),
                    "{m} {path}: changes always need the token"
                );
                for code in ["401", "403"] {
                    assert!(responses.contains_key(code), "{m} {path}: no {code}");
                }
            }
        }
    }
}

/// `common::BUSY_UNITS` plus a heartbeat, rules and the rest below.
fn units() -> String {
    format!("{}{}", common::BUSY_UNITS, REST)
}

const REST: &str = r#"
[[check]]
name = "ping"
kind = "heartbeat"
period = "1h"

[[alert]]
name = "load-failed"
on = "unit.exited"
subject = "load"
when = { state = "failed" }
resolve_on = "unit.exited"
severity = "critical"
"#;

/// An agent with a unit, jobs in a flow (the second fails), checks (one
/// down), an alert rule and a channel, and some history to show.
fn busy_agent(extra_agent: &str) -> Agent {
    let a = Agent::start(extra_agent, &units());
    let (status, body) = a.post("/api/v1/flows/extract/run");
    assert_eq!(status, 202, "{body}");
    common::wait_for("the failed flow to raise an alert", || {
        let (s, body) = http(a.port, "GET", "/api/v1/alerts", Some(&a.token())).ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (s == 200 && v.as_array().is_some_and(|x| x.len() >= 2)).then_some(())
    });
    a
}

#[test]
fn every_documented_operation_reaches_a_handler() {
    let a = busy_agent("");
    let token = a.token();
    for (method, path) in documented_routes(&document()) {
        let url = path
            .replace("{name}", "web")
            .replace("{action}", "restart")
            .replace("{id}", "1")
            .replace("{target}", "nobody")
            .replace("{token}", "00");
        let (status, body) = http(a.port, &method, &url, Some(&token)).unwrap();
        assert!(
            status != 405 && !body.contains("no such endpoint"),
            "{method} {url} (documented as {path}) is not served: {status} {body}"
        );
        assert!(status < 500, "{method} {url}: {status} {body}");
    }
}

/// schemathesis's `st`: `MAMORI_SCHEMATHESIS`, else target/schemathesis/bin/st
/// (scripts/test installs it there).
fn schemathesis() -> PathBuf {
    if let Some(p) = std::env::var_os("MAMORI_SCHEMATHESIS") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest().join("target"));
    target.join("schemathesis/bin/st")
}

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let st = schemathesis();
    assert!(
        st.exists(),
        "schemathesis is not installed at {}: run ./scripts/test (it installs it), or set MAMORI_SCHEMATHESIS to an `st` binary",
        st.display()
    );
    // Token-only reads and a rate limit on loopback too: the fuzzer meets the
    // same gates a remote client does (and must get 401/429, never a 5xx).
    let a = busy_agent("read_auth = \"token\"\nrate_limit = \"200/s\"\nrate_burst = 400\nrate_limit_loopback = true");
    let token = a.token();
    let report = a.dir.path().join("st-report");
    let out = Command::new(&st)
        .arg("run")
        .arg(format!("http://127.0.0.1:{}/api/v1/openapi.json", a.port))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "8",
            "--seed",
            "20261123",
            "--max-time",
            "60",
            "--request-timeout",
            "20",
            // One worker: with two, CPython 3.11's `ast` module can fail
            // inside hypothesis ("AST constructor recursion depth mismatch",
            // parsing from two threads at once), a tool error, not ours.
            "--workers",
            "1",
            "--no-color",
            "--report-dir",
        ])
        .arg(&report)
        .env("SCHEMATHESIS_HOOKS", "")
        // Its cache (`.schemathesis/`) goes to the temp dir, not the repo.
        .current_dir(a.dir.path())
        .output()
        .expect("run schemathesis");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis failed:\n{text}");
    // It really tested the API (not an empty or unreachable document).
    // schemathesis leaves out the operation that serves the document itself.
    let n = documented_routes(&document())
        .iter()
        .filter(|(_, p)| p != "/api/v1/openapi.json")
        .count();
    assert!(
        text.contains(&format!("{n} selected / {n} total"))
            && text.contains(&format!("Tested: {n}")),
        "schemathesis did not test all {n} operations:\n{text}"
    );
    // The agent is still well.
    let (status, _) = http(a.port, "GET", "/healthz", None).unwrap();
    assert_eq!(status, 200);
}
