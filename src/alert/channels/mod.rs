//! Notification channels: `email` (SMTP), `webhook` (JSON, Slack-compatible
//! or ntfy) and `command` (a program with the alert in its environment and
//! JSON on stdin). Each takes one [`Notification`] and says whether the far
//! side confirmed it; the outbox retries what was not confirmed.

pub mod command;
pub mod email;
pub mod webhook;

use serde::{Deserialize, Serialize};

use crate::config::alerts::{ChannelConfig, ChannelKind};
use crate::supervise::reaper::Reaper;

/// What a channel sends: the alert as it was when the notification was queued.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Notification {
    pub alert_id: i64,
    /// Unique per notification: receivers can drop a duplicate sent again
    /// after a crash between sending and recording it.
    #[serde(default)]
    pub delivery_id: i64,
    pub key: String,
    pub rule: String,
    pub subject: String,
    pub severity: String,
    /// The alert's state: `firing`, `acknowledged` or `resolved`.
    pub state: String,
    /// Why this was sent: `fired`, `escalated`, `acknowledged`, `resolved`
    /// (or `test`).
    pub what: String,
    pub title: String,
    pub body: String,
    pub occurrences: u64,
    /// When the alert first fired, RFC 3339.
    pub first_at: String,
    /// The escalation round and step (0-based) that sent it.
    pub round: u32,
    pub step: usize,
    /// The one-click acknowledge link (only while it is firing).
    pub ack_url: Option<String>,
    /// Who acknowledged it and why, on `acknowledged`.
    #[serde(default)]
    pub note: Option<String>,
}

impl Notification {
    /// A test notification (`mamori test-channel`): about no alert.
    pub fn is_test(&self) -> bool {
        self.what == "test"
    }

    /// `[CRITICAL] title (alert #N)`, or `[RESOLVED] …`; `[TEST] title` for
    /// a test notification, which has no alert.
    pub fn subject_line(&self) -> String {
        if self.is_test() {
            return format!("[TEST] {}", self.title);
        }
        let tag = match self.what.as_str() {
            "resolved" | "acknowledged" => self.what.to_ascii_uppercase(),
            _ => self.severity.to_ascii_uppercase(),
        };
        format!("[{tag}] {} (alert #{})", self.title, self.alert_id)
    }

    /// A plain-text rendering for mail and chat. A test notification
    /// names no alert and offers nothing to acknowledge.
    pub fn text(&self) -> String {
        let mut s = String::new();
        if self.is_test() {
            s.push_str(&format!(
                "{}\n\nSent by `mamori test-channel {}` at {}. No alert is open; there is nothing to acknowledge.\n",
                self.body, self.subject, self.first_at
            ));
            return s;
        }
        if let Some(note) = &self.note {
            s.push_str(&format!("{note}\n\n"));
        }
        s.push_str(&format!("{}\n\n", self.body));
        s.push_str(&format!(
            "Alert #{} ({}), {} since {}, {} occurrence{}.\nRule: {}, subject: {}\n",
            self.alert_id,
            self.severity,
            self.state,
            self.first_at,
            self.occurrences,
            if self.occurrences == 1 { "" } else { "s" },
            self.rule,
            self.subject
        ));
        if let Some(url) = &self.ack_url {
            s.push_str(&format!("\nAcknowledge: {url}\n"));
        }
        s.push_str(&format!(
            "\nOr on the server: mamori ack {} --comment \"...\"\n",
            self.alert_id
        ));
        s
    }
}

pub enum Channel {
    Email(email::Email),
    Webhook(webhook::Webhook),
    Command(command::CommandChannel),
}

impl Channel {
    pub fn build(
        c: &ChannelConfig,
        http: &crate::util::LazyHttp,
        reaper: &Reaper,
    ) -> Result<Channel, String> {
        Ok(match &c.kind {
            ChannelKind::Email(e) => Channel::Email(email::Email::new(e)?),
            ChannelKind::Webhook(w) => Channel::Webhook(webhook::Webhook::new(w, http.clone())),
            ChannelKind::Command(x) => {
                Channel::Command(command::CommandChannel::new(x, reaper.clone()))
            }
        })
    }

    /// Sends one notification; `Ok` only when the far side took it.
    pub async fn send(&self, n: &Notification) -> Result<(), String> {
        match self {
            Channel::Email(c) => c.send(n).await,
            Channel::Webhook(c) => c.send(n).await,
            Channel::Command(c) => c.send(n).await,
        }
    }
}
