//! `kind = "command"`: runs a program, like keepalived's notify scripts. The
//! alert is in the environment (`MAMORI_ALERT_ID`, `MAMORI_ALERT_SEVERITY`,
//! `MAMORI_ALERT_STATE`, `MAMORI_ALERT_WHAT`, `MAMORI_ALERT_TITLE`,
//! `MAMORI_ALERT_BODY`, `MAMORI_ALERT_KEY`, `MAMORI_ALERT_ACK_URL`,
//! `MAMORI_DELIVERY_ID`) and as JSON on stdin. Exit 0 confirms the delivery;
//! anything else (or the timeout) is retried.
//!
//! Spawned through the agent's `Reaper` (the agent is a subreaper and owns
//! `waitpid`; `tokio::process` would race it).

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use super::Notification;
use crate::config::alerts::CommandConfig;
use crate::supervise::reaper::Reaper;

pub struct CommandChannel {
    argv: Vec<String>,
    timeout: Duration,
    reaper: Reaper,
}

impl CommandChannel {
    pub fn new(c: &CommandConfig, reaper: Reaper) -> CommandChannel {
        CommandChannel {
            argv: c.command.clone(),
            timeout: c.timeout,
            reaper,
        }
    }

    pub async fn send(&self, n: &Notification) -> Result<(), String> {
        let json = serde_json::to_vec(n).map_err(|e| e.to_string())?;
        let (mut cmd, read) = crate::util::short_command(&self.argv[0], Stdio::piped())
            .map_err(|e| format!("cannot create a pipe: {e}"))?;
        cmd.args(&self.argv[1..])
            .env("MAMORI_ALERT_ID", n.alert_id.to_string())
            .env("MAMORI_DELIVERY_ID", n.delivery_id.to_string())
            .env("MAMORI_ALERT_KEY", &n.key)
            .env("MAMORI_ALERT_SEVERITY", &n.severity)
            .env("MAMORI_ALERT_STATE", &n.state)
            .env("MAMORI_ALERT_WHAT", &n.what)
            .env("MAMORI_ALERT_TITLE", &n.title)
            .env("MAMORI_ALERT_BODY", &n.body)
            .env("MAMORI_ALERT_ACK_URL", n.ack_url.as_deref().unwrap_or(""));
        let (mut child, exit) = self
            .reaper
            .spawn(&mut cmd)
            .map_err(|e| format!("cannot start {}: {e}", self.argv[0]))?;
        let mut group = crate::util::GroupGuard::new(child.id() as i32);
        drop(cmd); // closes our copies of the output pipe's write ends
        let stdin = child.stdin.take();
        drop(child);
        let writer = tokio::task::spawn_blocking(move || {
            if let Some(mut s) = stdin {
                // A program that does not read stdin closes it: not an error.
                let _ = s.write_all(&json);
            }
        });
        let reader = tokio::spawn(crate::probe::probes::read_tail(read));
        let result = tokio::time::timeout(self.timeout, exit).await;
        if result.is_err() {
            group.kill();
        } else {
            group.disarm();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
        let tail = tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        let with_tail = |m: String| {
            if tail.is_empty() {
                m
            } else {
                format!("{m}: {tail}")
            }
        };
        match result {
            Err(_) => Err(with_tail(format!(
                "timed out after {}",
                crate::config::units::format_duration(self.timeout)
            ))),
            Ok(Ok(info)) if info.code == Some(0) => Ok(()),
            Ok(Ok(info)) => Err(with_tail(match (info.code, info.signal) {
                (Some(c), _) => format!("exit {c}"),
                (_, Some(s)) => format!("killed by signal {s}"),
                _ => "ended abnormally".into(),
            })),
            Ok(Err(_)) => Err("the agent lost track of the command's process".into()),
        }
    }
}
