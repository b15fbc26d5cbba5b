//! `kind = "webhook"`: an HTTP POST. `format = "json"` sends the
//! [`Notification`] as JSON; `"slack"` sends `{"text": ...}` (Slack,
//! Mattermost, Rocket.Chat and others take it); `"ntfy"` sends the body as
//! text with ntfy's `Title`, `Priority`, `Tags` and `Actions` headers (the
//! action opens the acknowledge page). Every request carries
//! `X-Mamori-Delivery` so a receiver can drop a duplicate. A 2xx answer
//! confirms the delivery; anything else is retried.

use std::time::Duration;

use serde_json::json;

use super::Notification;
use crate::config::alerts::{WebhookConfig, WebhookFormat};

pub struct Webhook {
    url: String,
    format: WebhookFormat,
    headers: Vec<(String, String)>,
    timeout: Duration,
    http: crate::util::LazyHttp,
}

impl Webhook {
    pub fn new(c: &WebhookConfig, http: crate::util::LazyHttp) -> Webhook {
        Webhook {
            url: c.url.clone(),
            format: c.format,
            headers: c.headers.clone(),
            timeout: c.timeout,
            http,
        }
    }

    pub async fn send(&self, n: &Notification) -> Result<(), String> {
        let mut req = self
            .http
            .get()?
            .post(&self.url)
            .timeout(self.timeout)
            .header("X-Mamori-Delivery", n.delivery_id.to_string())
            .header("X-Mamori-Alert", n.alert_id.to_string());
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        req = match self.format {
            WebhookFormat::Json => req.json(n),
            WebhookFormat::Slack => {
                let mut text = format!(
                    "*{}*\n{}",
                    n.subject_line(),
                    n.note.as_deref().unwrap_or(&n.body)
                );
                if let Some(url) = &n.ack_url {
                    text.push_str(&format!("\n<{url}|Acknowledge>"));
                }
                req.json(&json!({ "text": text }))
            }
            WebhookFormat::Ntfy => {
                let priority = match (n.what.as_str(), n.severity.as_str()) {
                    ("resolved", _) | ("acknowledged", _) => "3",
                    (_, "critical") => "5",
                    (_, "warning") => "4",
                    _ => "3",
                };
                let tag = match n.what.as_str() {
                    "resolved" => "white_check_mark",
                    "acknowledged" => "eyes",
                    _ => "rotating_light",
                };
                let mut r = req
                    .header("Title", header_safe(&n.subject_line()))
                    .header("Priority", priority)
                    .header("Tags", tag);
                if let Some(url) = &n.ack_url {
                    r = r.header("Actions", format!("view, Acknowledge, {url}"));
                }
                r.body(n.note.clone().unwrap_or_else(|| n.body.clone()))
            }
        };
        let resp = req
            .send()
            .await
            .map_err(|e| crate::probe::probes::chain(&e))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(200).collect();
            Err(format!("HTTP {}: {}", status.as_u16(), body.trim()))
        }
    }
}

/// Header values cannot hold newlines or non-ASCII in every server; keep it plain.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}
