//! `mamori incident open|update|resolve|list|show` and `mamori
//! dashboard-url`: tables for people, `--json` for scripts.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};

use super::client::Client;
use super::show::{s, table};
use crate::util::format_ts;

#[derive(Subcommand)]
pub enum IncidentCmd {
    /// Open an incident: `mamori incident open "Mail is slow" --component Mail --message "..."`.
    Open {
        title: String,
        /// The first update users see.
        #[arg(long, default_value = "")]
        message: String,
        /// degraded, partial_outage or major_outage.
        #[arg(long, default_value = "partial_outage")]
        impact: String,
        /// investigating, identified or monitoring.
        #[arg(long, default_value = "investigating")]
        state: String,
        /// A `[[component]]` it affects (repeat for several).
        #[arg(long = "component")]
        components: Vec<String>,
        /// An alert id it is about (repeat for several).
        #[arg(long = "alert")]
        alerts: Vec<i64>,
        /// Who is reminded when an update is overdue (default: `[incidents] owner`).
        #[arg(long)]
        owner: Option<String>,
    },
    /// Post an update: `mamori incident update 3 --state identified --message "..."`.
    Update {
        id: i64,
        #[arg(long)]
        message: String,
        /// investigating, identified, monitoring or resolved (default: unchanged).
        #[arg(long)]
        state: Option<String>,
    },
    /// Resolve an incident, with a last update.
    Resolve {
        id: i64,
        #[arg(long, default_value = "")]
        message: String,
    },
    /// List open incidents (--all: resolved ones too).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// One incident with its timeline.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
}

fn by() -> String {
    format!("cli:{}", super::show::me())
}

fn ts(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_i64)
        .map(format_ts)
        .unwrap_or_else(|| "-".into())
}

fn print(i: &Value) {
    println!(
        "Incident #{}  {}  {}  ({})",
        s(i, "id"),
        s(i, "state"),
        s(i, "title"),
        s(i, "impact")
    );
    println!(
        "  owner: {}  opened: {} by {}  last update: {}",
        s(i, "owner"),
        ts(i, "opened_at"),
        s(i, "opened_by"),
        ts(i, "last_update_at")
    );
    let list = |k: &str| {
        i[k].as_array()
            .map(|a| {
                a.iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| x.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let (c, a) = (list("components"), list("alerts"));
    if !c.is_empty() {
        println!("  components: {c}");
    }
    if !a.is_empty() {
        println!("  alerts: {a}");
    }
    for u in i["updates"].as_array().cloned().unwrap_or_default() {
        println!(
            "  {}  {:<13} {}  ({})",
            ts(&u, "ts"),
            s(&u, "state"),
            s(&u, "message"),
            s(&u, "by")
        );
    }
}

pub async fn run(c: &Client, cmd: IncidentCmd) -> Result<ExitCode> {
    match cmd {
        IncidentCmd::Open {
            title,
            message,
            impact,
            state,
            components,
            alerts,
            owner,
        } => {
            let v = c
                .post_json(
                    "/api/v1/incidents",
                    &json!({
                        "title": title, "message": message, "impact": impact, "state": state,
                        "components": components, "alerts": alerts, "owner": owner, "by": by(),
                    }),
                )
                .await?;
            println!("Incident #{} opened.", s(&v, "id"));
        }
        IncidentCmd::Update { id, message, state } => {
            let v = c
                .post_json(
                    &format!("/api/v1/incidents/{id}/updates"),
                    &json!({"state": state, "message": message, "by": by()}),
                )
                .await?;
            println!("Incident #{id}: update posted ({}).", s(&v, "state"));
        }
        IncidentCmd::Resolve { id, message } => {
            c.post_json(
                &format!("/api/v1/incidents/{id}/resolve"),
                &json!({"message": message, "by": by()}),
            )
            .await?;
            println!("Incident #{id} resolved.");
        }
        IncidentCmd::List { all, json } => {
            let v = c
                .get(&format!("/api/v1/incidents?all={all}&limit=200"))
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
                .map(|i| {
                    vec![
                        s(i, "id"),
                        s(i, "state"),
                        s(i, "impact"),
                        s(i, "owner"),
                        ts(i, "last_update_at"),
                        s(i, "title"),
                    ]
                })
                .collect();
            if rows.is_empty() {
                println!("No {}incidents.", if all { "" } else { "open " });
            } else {
                table(
                    &["ID", "STATE", "IMPACT", "OWNER", "LAST UPDATE", "TITLE"],
                    rows,
                );
            }
        }
        IncidentCmd::Show { id, json } => {
            let v = c.get(&format!("/api/v1/incidents/{id}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print(&v);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `mamori dashboard-url`: a one-time login link (valid ten minutes).
pub async fn dashboard_url(c: &Client) -> Result<ExitCode> {
    let v = c.post("/api/v1/dashboard/login-link").await?;
    println!("{}", s(&v, "url"));
    eprintln!("(one-time link, valid for ten minutes)");
    Ok(ExitCode::SUCCESS)
}
