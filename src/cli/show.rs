//! What the remote commands print: tables for people, `--json` for scripts.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::Value;

use super::client::Client;
use crate::config::units::{format_duration, format_size};
use crate::util::format_ts;

pub(super) fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(x)) if !x.is_empty() => x.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(_)) | Some(Value::Null) | None => "-".to_string(),
        Some(other) => other.to_string(),
    }
}

fn size(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_u64)
        .map(format_size)
        .unwrap_or_else(|| "-".into())
}

fn dur_ms(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_u64)
        .map(|ms| format_duration(Duration::from_millis(ms)))
        .unwrap_or_else(|| "-".into())
}

/// How long a run took, from its record ("-" while it runs).
fn took(r: &Value) -> String {
    match (r["started_at"].as_i64(), r["ended_at"].as_i64()) {
        (Some(a), Some(b)) => format_duration(Duration::from_millis((b - a).max(0) as u64)),
        _ => "-".into(),
    }
}

/// Prints rows as aligned columns.
pub(super) fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

pub async fn status(c: &Client, unit: Option<&str>, json: bool) -> Result<ExitCode> {
    let v = match unit {
        Some(u) => c.get(&format!("/api/v1/units/{u}")).await?,
        None => c.get("/api/v1/units").await?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let units = match &v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    let rows = units
        .iter()
        .map(|u| {
            vec![
                s(u, "name"),
                s(u, "kind"),
                s(u, "state"),
                s(u, "pid"),
                dur_ms(u, "uptime_ms"),
                s(u, "restarts"),
                size(u, "memory"),
                s(u, "last_reason"),
            ]
        })
        .collect();
    table(
        &[
            "UNIT",
            "KIND",
            "STATE",
            "PID",
            "UPTIME",
            "RESTARTS",
            "MEMORY",
            "LAST EXIT",
        ],
        rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn action(c: &Client, unit: &str, action: &str) -> Result<ExitCode> {
    let v = c.post(&format!("/api/v1/units/{unit}/{action}")).await?;
    println!("{unit}: {}", s(&v, "result"));
    Ok(ExitCode::SUCCESS)
}

pub async fn run(c: &Client, job: &str, wait: bool, only: bool) -> Result<ExitCode> {
    // A name of a flow of several jobs starts the whole flow, unless --only.
    if !only {
        if let Ok(flow) = c.get(&format!("/api/v1/flows/{job}")).await {
            if flow["jobs"].as_array().is_some_and(|j| j.len() > 1) {
                return run_flow(c, job, wait).await;
            }
        }
    }
    let v = c.post(&format!("/api/v1/jobs/{job}/run")).await?;
    let Some(id) = v.get("run_id").and_then(Value::as_i64) else {
        bail!("the agent did not say which run it started");
    };
    if !wait {
        println!("{job}: started run {id}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{job}: run {id} started; waiting");
    loop {
        let r = c.get(&format!("/api/v1/runs/{id}")).await?;
        if s(&r, "state") != "running" {
            let code = r.get("exit_code").and_then(Value::as_i64);
            let signal = s(&r, "signal");
            eprintln!(
                "{job}: run {id} {} ({}) after {}, peak memory {}, cpu {}",
                s(&r, "state"),
                s(&r, "reason"),
                took(&r),
                size(&r, "peak_rss"),
                dur_ms(&r, "cpu_ms"),
            );
            let exit = match (s(&r, "state").as_str(), code) {
                ("succeeded", _) => 0,
                (_, Some(c)) => c.clamp(1, 255) as u8,
                _ => signal_exit_code(&signal),
            };
            return Ok(ExitCode::from(exit));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 128 + the signal number, like a shell reports a killed command.
fn signal_exit_code(signal: &str) -> u8 {
    use std::str::FromStr;
    nix::sys::signal::Signal::from_str(signal)
        .map(|s| 128u8.saturating_add(s as i32 as u8))
        .unwrap_or(1)
}

pub async fn logs(
    c: &Client,
    unit: &str,
    follow: bool,
    run: Option<i64>,
    lines: Option<usize>,
) -> Result<ExitCode> {
    use std::io::Write;
    let mut from: Option<u64> = None;
    let mut warned = false;
    // A unit's whole stream holds many runs: each starts with a line that
    // says which (not with --run, which is one run).
    let mut marks: Vec<(u64, i64, String)> = Vec::new();
    let mut newest_run: Option<i64> = None;
    loop {
        let mut q = format!("/api/v1/units/{unit}/logs?max=1048576");
        match (from, lines) {
            (Some(f), _) => q.push_str(&format!("&from={f}")),
            // The first read: only the last lines.
            (None, Some(n)) => q.push_str(&format!("&tail={n}")),
            (None, None) => {}
        }
        if let Some(r) = run {
            q.push_str(&format!("&run={r}"));
        }
        let v = c.get(&q).await?;
        if v.get("truncated").and_then(Value::as_bool) == Some(true) && !warned {
            eprintln!("(older output was rotated away)");
            warned = true;
        }
        let text = v.get("text").and_then(Value::as_str).unwrap_or("");
        let start = v.get("start").and_then(Value::as_u64).unwrap_or(0);
        let end = v.get("end").and_then(Value::as_u64).unwrap_or(0);
        if run.is_none() && end > start {
            // A run started since the last look: read them all again.
            let newest = newest_run_id(c, unit).await.ok().flatten();
            if newest != newest_run {
                if let Ok(m) = run_marks(c, unit).await {
                    marks = m;
                    newest_run = newest;
                }
            }
        }
        let mut out = std::io::stdout().lock();
        out.write_all(with_marks(text, start, &marks).as_bytes())?;
        out.flush()?;
        let got_something = from.is_none_or(|f| end > f);
        from = Some(end);
        let complete = v.get("complete").and_then(Value::as_bool) == Some(true);
        if complete {
            break;
        }
        if !got_something || text.is_empty() {
            if !follow {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The id of `unit`'s newest run.
async fn newest_run_id(c: &Client, unit: &str) -> Result<Option<i64>> {
    let v = c
        .get(&format!("/api/v1/runs?unit={}&limit=1", enc(unit)))
        .await?;
    Ok(v.get(0).and_then(|r| r["id"].as_i64()))
}

/// Where each recent run of `unit` starts in its log stream, and the line
/// that announces it: `── run 12 (manual), 2026-11-24T02:30:01.042Z ──`.
async fn run_marks(c: &Client, unit: &str) -> Result<Vec<(u64, i64, String)>> {
    let v = c
        .get(&format!("/api/v1/runs?unit={}&limit=500", enc(unit)))
        .await?;
    Ok(sorted_marks(
        v.as_array().map(Vec::as_slice).unwrap_or_default(),
    ))
}

/// Run records (any order) → `(log offset, run id, line)`, by offset then
/// id: runs that wrote nothing share the offset of the run after them.
fn sorted_marks(runs: &[Value]) -> Vec<(u64, i64, String)> {
    let mut marks: Vec<(u64, i64, String)> = runs
        .iter()
        .filter_map(|r| {
            let at = r.get("log_start")?.as_u64()?;
            let id = r.get("id")?.as_i64()?;
            let when = r.get("started_at").and_then(Value::as_i64).map(format_ts);
            Some((
                at,
                id,
                format!(
                    "── run {id} ({}), {} ──\n",
                    s(r, "trigger"),
                    when.unwrap_or_default()
                ),
            ))
        })
        .collect();
    marks.sort_by_key(|(at, id, _)| (*at, *id));
    marks
}

/// `text` (the stream from byte `start`) with each run's line put where its
/// output begins, at the start of a line. `marks` come from `sorted_marks`:
/// of the runs that share an offset (all but the last wrote nothing), only
/// the last, the one whose output follows, is shown.
fn with_marks(text: &str, start: u64, marks: &[(u64, i64, String)]) -> String {
    let end = start + text.len() as u64;
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    for (i, (at, _, line)) in marks.iter().enumerate() {
        let next_same = marks.get(i + 1).is_some_and(|(n, _, _)| n == at);
        if *at < start || *at >= end || next_same {
            continue;
        }
        let mut pos = (*at - start) as usize;
        while pos < text.len() && !text.is_char_boundary(pos) {
            pos += 1;
        }
        if pos < done {
            continue;
        }
        out.push_str(&text[done..pos]);
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(line);
        done = pos;
    }
    out.push_str(&text[done..]);
    out
}

pub async fn runs(c: &Client, unit: Option<&str>, limit: u32, json: bool) -> Result<ExitCode> {
    let mut q = format!("/api/v1/runs?limit={limit}");
    if let Some(u) = unit {
        q.push_str(&format!("&unit={u}"));
    }
    let v = c.get(&q).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let took = took(r);
            vec![
                s(r, "id"),
                s(r, "unit"),
                s(r, "state"),
                s(r, "reason"),
                r.get("started_at")
                    .and_then(Value::as_i64)
                    .map(format_ts)
                    .unwrap_or_else(|| "-".into()),
                took,
                size(r, "peak_rss"),
                dur_ms(r, "cpu_ms"),
            ]
        })
        .collect();
    table(
        &[
            "RUN", "UNIT", "STATE", "REASON", "STARTED", "TOOK", "PEAK MEM", "CPU",
        ],
        rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn events(c: &Client, unit: Option<&str>, limit: u32, json: bool) -> Result<ExitCode> {
    let mut q = format!("/api/v1/events?limit={limit}");
    if let Some(u) = unit {
        q.push_str(&format!("&unit={u}"));
    }
    let v = c.get(&q).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    for e in v.as_array().cloned().unwrap_or_default() {
        let mut rest = e.clone();
        if let Some(m) = rest.as_object_mut() {
            for k in ["id", "ts", "kind", "unit"] {
                m.remove(k);
            }
        }
        println!(
            "{}  {:<22} {:<12} {}",
            e.get("ts")
                .and_then(Value::as_i64)
                .map(format_ts)
                .unwrap_or_default(),
            s(&e, "kind"),
            s(&e, "unit"),
            rest
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn ago(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_i64)
        .map(|t| {
            let d = (crate::util::now_ms() - t).max(0) as u64;
            format!("{} ago", format_duration(Duration::from_millis(d)))
        })
        .unwrap_or_else(|| "-".into())
}

pub async fn checks(c: &Client, json: bool) -> Result<ExitCode> {
    let v = c.get("/api/v1/checks").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|k| {
            let reason = if k["status"] == "down" {
                s(k, "last_reason")
            } else {
                match k.get("last_failed_at").and_then(Value::as_i64) {
                    Some(_) => format!(
                        "(last failure {}: {})",
                        ago(k, "last_failed_at"),
                        s(k, "last_reason")
                    ),
                    None => "-".into(),
                }
            };
            vec![
                s(k, "name"),
                s(k, "kind"),
                s(k, "status"),
                ago(k, "since"),
                k.get("last_latency_ms")
                    .and_then(Value::as_f64)
                    .map(|l| format!("{l:.1}ms"))
                    .unwrap_or_else(|| "-".into()),
                reason,
            ]
        })
        .collect();
    table(
        &["CHECK", "KIND", "STATUS", "SINCE", "LATENCY", "REASON"],
        rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn ping(c: &Client, check: &str) -> Result<ExitCode> {
    let v = c.post(&format!("/api/v1/heartbeats/{check}")).await?;
    println!("{check}: ping recorded ({})", s(&v, "status"));
    Ok(ExitCode::SUCCESS)
}

pub async fn top(c: &Client, once: bool) -> Result<ExitCode> {
    loop {
        let units = c.get("/api/v1/units").await?;
        let host = c.get("/api/v1/host").await?;
        if !once {
            print!("\x1b[H\x1b[2J");
        }
        if let Some(h) = host.get("latest").filter(|h| !h.is_null()) {
            let total = h["mem_total"].as_u64().unwrap_or(0);
            let avail = h["mem_available"].as_u64().unwrap_or(0);
            let swap_used = h["swap_total"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(h["swap_free"].as_u64().unwrap_or(0));
            println!(
                "host: memory {} used of {} ({} available), swap used {}, load {:.2}, data disk {:.1}% full\n",
                format_size(total.saturating_sub(avail)),
                format_size(total),
                format_size(avail),
                format_size(swap_used),
                h["load1"].as_f64().unwrap_or(0.0),
                h["disk_used_pct"].as_f64().unwrap_or(0.0)
            );
        }
        let rows = units
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|u| {
                vec![
                    s(u, "name"),
                    s(u, "state"),
                    s(u, "pid"),
                    size(u, "memory"),
                    u.get("cpu_pct")
                        .and_then(Value::as_f64)
                        .map(|p| format!("{p:.1}%"))
                        .unwrap_or_else(|| "-".into()),
                    s(u, "fds"),
                    s(u, "threads"),
                    s(u, "procs"),
                ]
            })
            .collect();
        table(
            &[
                "UNIT", "STATE", "PID", "MEMORY", "CPU", "FDS", "THREADS", "PROCS",
            ],
            rows,
        );
        if once {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub async fn samples(
    c: &Client,
    unit: &str,
    since: &str,
    minutes: bool,
    csv: bool,
    json: bool,
) -> Result<ExitCode> {
    let ago =
        crate::config::units::parse_duration(since).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let from = crate::util::now_ms() - ago.as_millis() as i64;
    let res = if minutes { "1m" } else { "raw" };
    if csv {
        let text = c
            .get_text(&format!(
                "/api/v1/units/{unit}/samples?since={from}&resolution={res}&format=csv"
            ))
            .await?;
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let v = c
        .get(&format!(
            "/api/v1/units/{unit}/samples?since={from}&resolution={res}"
        ))
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: &[Value] = v.as_array().map(Vec::as_slice).unwrap_or_default();
    let time = |r: &Value| r["ts"].as_i64().map(format_ts).unwrap_or_default();
    let pct = |r: &Value, k: &str| {
        r[k].as_f64()
            .map(|p| format!("{p:.1}"))
            .unwrap_or_else(|| "-".into())
    };
    if minutes {
        table(
            &[
                "MINUTE",
                "SAMPLES",
                "MEM MIN",
                "MEM AVG",
                "MEM MAX",
                "CPU% AVG",
                "CPU% MAX",
                "FDS MAX",
                "THREADS MAX",
            ],
            rows.iter()
                .map(|r| {
                    vec![
                        time(r),
                        s(r, "n"),
                        size(r, "rss_min"),
                        size(r, "rss_avg"),
                        size(r, "rss_max"),
                        pct(r, "cpu_avg"),
                        pct(r, "cpu_max"),
                        s(r, "fds_max"),
                        s(r, "threads_max"),
                    ]
                })
                .collect(),
        );
    } else {
        table(
            &["TIME", "MEMORY", "CPU%", "FDS", "THREADS", "PROCS"],
            rows.iter()
                .map(|r| {
                    vec![
                        time(r),
                        size(r, "rss"),
                        pct(r, "cpu_pct"),
                        s(r, "fds"),
                        s(r, "threads"),
                        s(r, "procs"),
                    ]
                })
                .collect(),
        );
    }
    if rows.is_empty() {
        eprintln!(
            "no samples of {unit} in the last {since} (samples are stored in batches every 10 s)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Who is acting, for the record: the user behind sudo, else the login
/// name, else the name of our uid (cron and systemd set no `USER`).
pub fn me() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            let uid = nix::unistd::getuid();
            nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| format!("uid {uid}"))
        })
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn flow_action(c: &Client, path: &str, comment: &str, done: &str) -> Result<ExitCode> {
    let sep = if path.ends_with('?') { "" } else { "&" };
    let v = c
        .post(&format!(
            "{path}{sep}by={}&comment={}",
            enc(&me()),
            enc(comment)
        ))
        .await?;
    match v["flow_run"].as_i64() {
        Some(id) => println!("{done} (flow run {id})"),
        None => println!("{done}"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_flow(c: &Client, flow: &str, wait: bool) -> Result<ExitCode> {
    let v = c
        .post(&format!("/api/v1/flows/{flow}/run?by={}", enc(&me())))
        .await?;
    let id = v["flow_run"].as_i64().unwrap_or(0);
    if !wait {
        println!("{flow}: started flow run {id}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{flow}: flow run {id} started; waiting");
    loop {
        let f = c.get(&format!("/api/v1/flows/{flow}")).await?;
        let latest = &f["latest"];
        if latest["id"].as_i64() == Some(id) && latest["status"] != "running" {
            print_flow_jobs(&f);
            return Ok(ExitCode::from(if latest["status"] == "succeeded" {
                0
            } else {
                1
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_flow_jobs(f: &Value) {
    let latest = &f["latest"];
    println!(
        "flow {} run {}: {}",
        s(f, "name"),
        s(latest, "id"),
        s(latest, "status")
    );
    let jobs = f["jobs"].as_array().cloned().unwrap_or_default();
    let rows = jobs
        .iter()
        .filter_map(Value::as_str)
        .map(|j| {
            let st = &latest["jobs"][j];
            let detail = match st["state"].as_str() {
                Some("held") | Some("failed") | Some("waiting-to-retry") | Some("retry-wait") => {
                    s(st, "reason")
                }
                Some("released") => format!("by {}", s(st, "by")),
                _ => st
                    .get("run_id")
                    .map(|r| format!("run {r}"))
                    .unwrap_or_default(),
            };
            let after = f["upstream"][j]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            vec![
                j.to_string(),
                if after.is_empty() { "-".into() } else { after },
                s(st, "state").to_uppercase(),
                detail,
            ]
        })
        .collect();
    table(&["JOB", "AFTER", "STATE", "DETAIL"], rows);
}

pub async fn flows(c: &Client, flow: Option<&str>, json: bool) -> Result<ExitCode> {
    let v = match flow {
        Some(f) => c.get(&format!("/api/v1/flows/{f}")).await?,
        None => c.get("/api/v1/flows").await?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = match &v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    // Who held what and why, for the held ones.
    let holds = c.get("/api/v1/holds").await?;
    let hold_text = |target: &str| {
        let h = holds
            .as_array()
            .and_then(|a| a.iter().find(|h| h["target"] == target));
        match h {
            Some(h) if !s(h, "comment").is_empty() && s(h, "comment") != "-" => {
                format!("{target} (by {}: {})", s(h, "by"), s(h, "comment"))
            }
            Some(h) => format!("{target} (by {})", s(h, "by")),
            None => target.to_string(),
        }
    };
    for (i, f) in list.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!(
            "{}  schedule: {}  next: {}{}",
            s(f, "name"),
            s(f, "schedule"),
            f["next"]
                .as_i64()
                .map(format_ts)
                .unwrap_or_else(|| "-".into()),
            f["held_by_hand"]
                .as_array()
                .filter(|h| !h.is_empty())
                .map(|h| format!(
                    "  held by hand: {}",
                    h.iter()
                        .filter_map(Value::as_str)
                        .map(hold_text)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .unwrap_or_default()
        );
        if f["latest"].is_null() {
            println!("  (no run yet)");
        } else {
            print_flow_jobs(f);
        }
        if let Some(older) = f["older_open"].as_array().filter(|o| !o.is_empty()) {
            let ids: Vec<String> = older.iter().map(|i| i.to_string()).collect();
            println!(
                "  older runs still open: {} (`mamori rerun {} --run ID …` or `release JOB --run ID`)",
                ids.join(", "),
                s(f, "name")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn next(config: &crate::config::Config, job: &str, n: usize) -> Result<ExitCode> {
    let unit = config
        .unit(job)
        .filter(|u| u.kind == crate::config::UnitKind::Job)
        .ok_or_else(|| anyhow::anyhow!("no job named \"{job}\" in {}", config.path.display()))?;
    let Some(schedule) = unit.job.as_ref().and_then(|j| j.schedule.as_ref()) else {
        anyhow::bail!(
            "job \"{job}\" has no schedule (it runs when asked, or after its upstream jobs)"
        );
    };
    for t in schedule.next_n(chrono::Utc::now(), n) {
        println!(
            "{}  ({})",
            t.with_timezone(&schedule.tz)
                .format("%Y-%m-%d %H:%M:%S %Z %a"),
            t.format("%Y-%m-%dT%H:%M:%SZ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn show_run(c: &Client, id: i64, tail: usize) -> Result<ExitCode> {
    let r = c.get(&format!("/api/v1/runs/{id}")).await?;
    let unit = s(&r, "unit");
    let took = took(&r);
    println!(
        "run {id} of {} \"{unit}\" ({})",
        s(&r, "kind"),
        s(&r, "trigger")
    );
    println!("  state:       {} ({})", s(&r, "state"), s(&r, "reason"));
    println!(
        "  exit:        code {}, signal {}",
        s(&r, "exit_code"),
        s(&r, "signal")
    );
    println!(
        "  started:     {}   took {took}",
        r["started_at"].as_i64().map(format_ts).unwrap_or_default()
    );
    println!(
        "  peak memory: {}   cpu {}",
        size(&r, "peak_rss"),
        dur_ms(&r, "cpu_ms")
    );
    let cx = &r["context"];
    if !cx.is_null() {
        let fs = |v: &Value| -> String {
            if v.is_null() {
                return "-".into();
            }
            let net = if v["network"] == true {
                "  ⚠ NETWORK FILESYSTEM"
            } else {
                ""
            };
            format!(
                "{} on {} ({}){net}",
                s(v, "fs_type"),
                s(v, "mount_point"),
                s(v, "source")
            )
        };
        println!("  host/user:   {} / {}", s(cx, "host"), s(cx, "user"));
        println!(
            "  working dir: {}  [{}]",
            s(cx, "working_dir"),
            fs(&cx["working_dir_fs"])
        );
        println!(
            "  program:     {}  [{}]",
            s(cx, "program"),
            fs(&cx["program_fs"])
        );
        if !cx["shebang"].is_null() {
            println!(
                "  interpreter: {} → {}  {}",
                s(cx, "shebang"),
                s(cx, "interpreter"),
                s(cx, "interpreter_version")
            );
        }
        if let Some(env) = cx["env_diff"].as_array().filter(|e| !e.is_empty()) {
            let list: Vec<String> = env
                .iter()
                .filter_map(|p| Some(format!("{}={}", p[0].as_str()?, p[1].as_str()?)))
                .collect();
            println!("  env (differs from the agent's): {}", list.join(" "));
        }
    }
    let logs = c
        .get(&format!("/api/v1/units/{unit}/logs?run={id}&max=8388608"))
        .await?;
    let text = logs["text"].as_str().unwrap_or("");
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(tail);
    println!(
        "  output (last {} of {} lines):",
        lines.len() - from,
        lines.len()
    );
    for l in &lines[from..] {
        println!("    {l}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::{sorted_marks, with_marks};

    #[test]
    fn each_run_is_announced_where_its_output_starts() {
        let m = |at: u64, id: i64| (at, id, format!("-- {id} --\n"));
        let text = "a1\na2\nb1\n";
        // Runs 1 and 2 start at 0 and 6; run 3 starts later (not in this text).
        let marks = [m(0, 1), m(6, 2), m(40, 3)];
        assert_eq!(
            with_marks(text, 0, &marks),
            "-- 1 --\na1\na2\n-- 2 --\nb1\n"
        );
        // A chunk that starts after run 1 began shows only what it holds.
        assert_eq!(with_marks("a2\nb1\n", 3, &marks), "a2\n-- 2 --\nb1\n");
        // Output without a final newline before the next run: the line is ended.
        assert_eq!(with_marks("a1b1\n", 0, &[m(2, 2)]), "a1\n-- 2 --\nb1\n");
        // No runs, or none in range: the text as it is.
        assert_eq!(with_marks(text, 0, &[]), text);
        assert_eq!(with_marks(text, 100, &[m(0, 1)]), text);
    }

    #[test]
    fn runs_that_wrote_nothing_give_way_to_the_one_that_did() {
        use serde_json::json;
        // As the API lists them: newest first. Runs 2 and 3 failed to spawn
        // (no output), so they share run 4's offset.
        let runs = [
            json!({"id": 4, "log_start": 3, "trigger": "restart", "started_at": 0}),
            json!({"id": 3, "log_start": 3, "trigger": "restart", "started_at": 0}),
            json!({"id": 2, "log_start": 3, "trigger": "restart", "started_at": 0}),
            json!({"id": 1, "log_start": 0, "trigger": "manual", "started_at": 0}),
        ];
        let marks = sorted_marks(&runs);
        let ids: Vec<i64> = marks.iter().map(|(_, id, _)| *id).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        let shown = with_marks("a1\nd1\n", 0, &marks);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[1], "a1");
        assert!(lines[0].starts_with("── run 1 (manual), "), "{shown}");
        assert!(lines[2].starts_with("── run 4 (restart), "), "{shown}");
        assert_eq!(lines[3], "d1");
        assert_eq!(lines.len(), 4, "{shown}");
    }
}
