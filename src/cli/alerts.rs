//! `mamori alerts`, `alert`, `ack`, `resolve`, `silence`: tables for people,
//! `--json` for scripts.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::client::Client;
use super::show::{s, table};
use crate::config::units::format_duration;
use crate::util::format_ts;

fn ago(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_i64)
        .map(|t| {
            let d = (crate::util::now_ms() - t).max(0) as u64;
            format!("{} ago", format_duration(Duration::from_millis(d)))
        })
        .unwrap_or_else(|| "-".into())
}

fn ts(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_i64)
        .map(format_ts)
        .unwrap_or_else(|| "-".into())
}

fn who() -> String {
    format!("cli:{}", super::show::me())
}

pub async fn list(c: &Client, state: Option<&str>, limit: u32, json: bool) -> Result<ExitCode> {
    let mut path = format!("/api/v1/alerts?limit={limit}");
    if let Some(st) = state {
        path.push_str(&format!("&state={st}"));
    }
    let v = c.get(&path).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            vec![
                s(a, "id"),
                s(a, "severity").to_uppercase(),
                s(a, "state"),
                ago(a, "first_at"),
                s(a, "occurrences"),
                s(a, "title"),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("No alerts.");
    } else {
        table(
            &["ID", "SEVERITY", "STATE", "SINCE", "COUNT", "TITLE"],
            rows,
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn show(c: &Client, id: i64, json: bool) -> Result<ExitCode> {
    let a = c.get(&format!("/api/v1/alerts/{id}")).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&a)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Alert #{}  {}  {}",
        s(&a, "id"),
        s(&a, "severity").to_uppercase(),
        s(&a, "state")
    );
    println!("  {}", s(&a, "title"));
    println!("  {}", s(&a, "body"));
    println!("  key: {}  policy: {}", s(&a, "key"), s(&a, "policy"));
    println!(
        "  first: {}  last: {}  occurrences: {}",
        ts(&a, "first_at"),
        ts(&a, "last_at"),
        s(&a, "occurrences")
    );
    if a["acked_at"].is_i64() {
        println!(
            "  acknowledged: {} by {} ({}), until {}",
            ts(&a, "acked_at"),
            s(&a, "acked_by"),
            s(&a, "ack_comment"),
            ts(&a, "ack_until")
        );
    }
    if a["resolved_at"].is_i64() {
        println!(
            "  resolved: {} by {}",
            ts(&a, "resolved_at"),
            s(&a, "resolved_by")
        );
    }
    let rows: Vec<Vec<String>> = a["deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| {
            vec![
                s(d, "id"),
                s(d, "channel"),
                s(d, "what"),
                s(d, "state"),
                s(d, "attempts"),
                ts(d, "sent_at"),
                s(d, "last_error"),
            ]
        })
        .collect();
    println!();
    if rows.is_empty() {
        println!("No notifications (no channel in its policy).");
    } else {
        table(
            &[
                "DELIVERY",
                "CHANNEL",
                "WHAT",
                "STATE",
                "ATTEMPTS",
                "SENT",
                "LAST ERROR",
            ],
            rows,
        );
    }
    let attempts = a["attempts"].as_array().cloned().unwrap_or_default();
    if !attempts.is_empty() {
        println!();
        let rows = attempts
            .iter()
            .map(|t| {
                vec![
                    s(t, "delivery_id"),
                    ts(t, "ts"),
                    if t["ok"] == true {
                        "ok".into()
                    } else {
                        "failed".into()
                    },
                    format!("{} ms", s(t, "ms")),
                    s(t, "error"),
                ]
            })
            .collect();
        table(&["DELIVERY", "ATTEMPT AT", "RESULT", "TOOK", "ERROR"], rows);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn ack(c: &Client, id: i64, comment: &str) -> Result<ExitCode> {
    let a = c
        .post_json(
            &format!("/api/v1/alerts/{id}/ack"),
            &json!({"comment": comment, "by": who()}),
        )
        .await?;
    println!("Alert #{id} acknowledged: {}", s(&a, "title"));
    if a["ack_until"].is_i64() {
        println!(
            "It escalates again at {} if still firing.",
            ts(&a, "ack_until")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn resolve(c: &Client, id: i64, force: bool) -> Result<ExitCode> {
    let a = c
        .post_json(
            &format!("/api/v1/alerts/{id}/resolve"),
            &json!({"by": who(), "force": force}),
        )
        .await?;
    println!("Alert #{id} resolved: {}", s(&a, "title"));
    Ok(ExitCode::SUCCESS)
}

pub async fn silence_add(
    c: &Client,
    matchers: &[String],
    duration: &str,
    comment: &str,
) -> Result<ExitCode> {
    let mut m = serde_json::Map::new();
    for pair in matchers {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("matcher \"{pair}\": expected LABEL=PATTERN, e.g. subject=web");
        };
        m.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
    }
    let v = c
        .post_json(
            "/api/v1/silences",
            &json!({"matchers": m, "duration": duration, "comment": comment, "by": who()}),
        )
        .await?;
    println!("Silence #{} until {}.", s(&v, "id"), ts(&v, "ends_at"));
    Ok(ExitCode::SUCCESS)
}

pub async fn silence_list(c: &Client, all: bool, json: bool) -> Result<ExitCode> {
    let v = c
        .get(&format!(
            "/api/v1/silences{}",
            if all { "?all=true" } else { "" }
        ))
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|x| {
            let matchers = x["matchers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|p| {
                    format!(
                        "{}={}",
                        p[0].as_str().unwrap_or(""),
                        p[1].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join(" ");
            vec![
                s(x, "id"),
                matchers,
                ts(x, "ends_at"),
                s(x, "created_by"),
                s(x, "comment"),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("No silences.");
    } else {
        table(&["ID", "MATCHERS", "ENDS", "BY", "COMMENT"], rows);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn silence_expire(c: &Client, id: i64) -> Result<ExitCode> {
    c.post(&format!("/api/v1/silences/{id}/expire")).await?;
    println!("Silence #{id} expired.");
    Ok(ExitCode::SUCCESS)
}

pub async fn test_channel(c: &Client, name: &str) -> Result<ExitCode> {
    let v = c.post(&format!("/api/v1/channels/{name}/test")).await?;
    println!(
        "Channel {name} took the test notification ({} ms).",
        s(&v, "ms")
    );
    Ok(ExitCode::SUCCESS)
}
