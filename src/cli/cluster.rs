//! `mamori nodes`, `groups`, `switchover`, `drill`, `drills` (src/cluster/).

use std::process::ExitCode;

use anyhow::Result;
use serde_json::Value;

use super::client::Client;
use super::show::{me, table};

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn time(v: &Value) -> String {
    v.as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

pub async fn nodes(c: &Client, json: bool) -> Result<ExitCode> {
    let v = c.get("/api/v1/nodes").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("store: {}", s(&v["store"]));
    let mut rows = Vec::new();
    for n in v["nodes"].as_array().cloned().unwrap_or_default() {
        let groups = n["groups"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(g, gv)| {
                        let mut x = format!("{g}={}", s(&gv["role"]));
                        if let Some(t) = gv["token"].as_i64() {
                            x.push_str(&format!("(token {t})"));
                        }
                        if gv["qualified"] == Value::Bool(false) && gv["role"] != "active" {
                            x.push_str(&format!(" NOT QUALIFIED: {}", s(&gv["reason"])));
                        }
                        x
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        rows.push(vec![
            s(&n["node"]),
            s(&n["api"]),
            time(&n["started_at"]),
            groups,
        ]);
    }
    table(&["NODE", "API", "STARTED", "GROUPS"], rows);
    Ok(ExitCode::SUCCESS)
}

pub async fn groups(c: &Client, json: bool) -> Result<ExitCode> {
    let v = c.get("/api/v1/groups").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = Vec::new();
    for g in v.as_array().cloned().unwrap_or_default() {
        let standbys = g["members"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, gv)| gv["role"] != "active")
                    .map(|(n, gv)| {
                        if gv["qualified"] == Value::Bool(true) {
                            n.clone()
                        } else {
                            format!("{n}(not qualified)")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        rows.push(vec![
            s(&g["name"]),
            s(&g["active"]),
            s(&g["token"]),
            time(&g["active_since"]),
            standbys,
        ]);
    }
    table(&["GROUP", "ACTIVE", "TOKEN", "SINCE", "STANDBYS"], rows);
    Ok(ExitCode::SUCCESS)
}

pub async fn switchover(c: &Client, group: &str, to: &str) -> Result<ExitCode> {
    let v = c
        .post(&format!(
            "/api/v1/groups/{group}/switchover?to={to}&by={}",
            me()
        ))
        .await?;
    println!(
        "{group}: {} → {} (token {})",
        s(&v["from"]),
        s(&v["to"]),
        s(&v["token"])
    );
    Ok(ExitCode::SUCCESS)
}

fn drill_row(d: &Value) -> Vec<String> {
    let ms = |v: &Value| v.as_i64().map(|x| format!("{x} ms")).unwrap_or("-".into());
    vec![
        s(&d["id"]),
        s(&d["group"]),
        time(&d["started_at"]),
        format!("{} → {}", s(&d["from"]), s(&d["to"])),
        ms(&d["gap_ms"]),
        ms(&d["back_gap_ms"]),
        if d["ok"] == Value::Bool(true) {
            "passed"
        } else {
            "FAILED"
        }
        .into(),
        s(&d["reason"]),
    ]
}

const DRILL_HEADER: [&str; 8] = [
    "ID", "GROUP", "STARTED", "SWITCH", "GAP", "BACK GAP", "RESULT", "REASON",
];

pub async fn drill(c: &Client, group: &str) -> Result<ExitCode> {
    let d = c
        .post(&format!("/api/v1/groups/{group}/drill?by={}", me()))
        .await?;
    table(&DRILL_HEADER, vec![drill_row(&d)]);
    Ok(if d["ok"] == Value::Bool(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub async fn drills(c: &Client, group: Option<&str>, json: bool) -> Result<ExitCode> {
    let path = match group {
        Some(g) => format!("/api/v1/drills?group={g}"),
        None => "/api/v1/drills".to_string(),
    };
    let v = c.get(&path).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(drill_row)
        .collect();
    table(&DRILL_HEADER, rows);
    Ok(ExitCode::SUCCESS)
}
