//! Alerts that cannot be missed: rules turn events into alerts (`rules`),
//! each alert lives `firing → acknowledged → resolved` (`lifecycle`) and is
//! sent along an escalation policy (`escalation`) through channels
//! (`channels`) via a durable outbox (`outbox`, `db`). People acknowledge
//! from the CLI, the API or a signed one-click link (`ack_link`).
//!
//! `start` wires two tasks: the engine (`engine`, owns every active alert,
//! subscribed to the bus) and the outbox worker. The API talks to the engine
//! through [`Alerts`]. See docs/alerts.md.

pub mod ack_link;
pub mod channels;
pub mod db;
mod engine;
pub mod escalation;
pub mod lifecycle;
pub mod mute;
pub mod outbox;
pub mod rules;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::event::Bus;
use crate::store::Store;
use crate::supervise::reaper::Reaper;
use ack_link::AckKey;
use db::AlertRecord;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    #[error("no alert with id {0}")]
    NotFound(i64),
    #[error("alert {0} is already resolved")]
    AlreadyResolved(i64),
    /// Resolving by hand an alert that clears by itself, before it has:
    /// what raised it is not over, and nothing would page again.
    #[error("alert {id} clears by itself (on {on}) and has not yet: what raised it is not over, and no new alert would come while it lasts. Acknowledge it to stop the escalation (mamori ack {id}), or resolve it anyway (mamori resolve {id} --force; API: {{\"force\": true}})")]
    ClearsByItself { id: i64, on: String },
    #[error("alerting is not running (the agent is stopping)")]
    Stopped,
    #[error("store: {0}")]
    Store(String),
}

/// The API's handle on alerting.
#[derive(Clone)]
pub struct Alerts {
    tx: mpsc::Sender<engine::Command>,
    pub store: Store,
    pub bus: Bus,
    pub key: AckKey,
    pub public_url: String,
    channels: HashMap<String, Arc<channels::Channel>>,
    /// Rule name → the event kinds that clear its alerts by themselves
    /// (`resolve_on`), for rules that have some.
    clears: Arc<HashMap<String, String>>,
}

impl Alerts {
    /// What clears an alert of `rule` by itself (`check.up`, …), if anything:
    /// resolving such an alert by hand needs `force` while it is active.
    pub fn clears_on(&self, rule: &str) -> Option<&str> {
        self.clears.get(rule).map(String::as_str)
    }

    pub async fn ack(&self, id: i64, by: &str, comment: &str) -> Result<AlertRecord, AlertError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(engine::Command::Ack {
                id,
                by: by.to_string(),
                comment: comment.to_string(),
                reply,
            })
            .await
            .map_err(|_| AlertError::Stopped)?;
        rx.await.map_err(|_| AlertError::Stopped)?
    }

    /// Resolves by hand. Without `force`, an alert whose rule clears it by
    /// itself (`resolve_on`) is refused until it has.
    pub async fn resolve(&self, id: i64, by: &str, force: bool) -> Result<AlertRecord, AlertError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(engine::Command::Resolve {
                id,
                by: by.to_string(),
                force,
                reply,
            })
            .await
            .map_err(|_| AlertError::Stopped)?;
        rx.await.map_err(|_| AlertError::Stopped)?
    }
}

/// A delivery id for a test notification: below zero (no real delivery has
/// one), from the clock, and below every one given before in this process.
fn test_delivery_id() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let from_clock = -crate::util::now_ms().max(1);
    let prev = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(from_clock.min(last - 1))
        })
        .unwrap_or(0);
    from_clock.min(prev - 1)
}

impl Alerts {
    /// Sends a test notification through one channel now, bypassing the
    /// outbox; `Ok(milliseconds)` when the channel confirmed it.
    pub async fn test_channel(&self, name: &str) -> Option<Result<u64, String>> {
        let ch = self.channels.get(name)?;
        // Alert 0; a negative delivery id, new for every test, so that a
        // receiver that drops repeated deliveries still shows each test.
        let n = channels::Notification {
            alert_id: 0,
            delivery_id: test_delivery_id(),
            key: "test/test".into(),
            rule: "test".into(),
            subject: name.into(),
            severity: "info".into(),
            state: "firing".into(),
            what: "test".into(),
            title: format!("Test notification through channel {name}"),
            body: "mamori can reach you through this channel. Nothing is wrong.".into(),
            occurrences: 1,
            first_at: crate::util::format_ts(crate::util::now_ms()),
            round: 0,
            step: 0,
            ack_url: None,
            note: None,
        };
        let start = std::time::Instant::now();
        Some(
            ch.send(&n)
                .await
                .map(|()| start.elapsed().as_millis() as u64),
        )
    }

    /// Tells the engine a silence ended early (it rechecks muted alerts).
    pub async fn mutes_changed(&self) {
        let _ = self.tx.send(engine::Command::MutesChanged).await;
    }
}

/// Starts the engine and the outbox. Call before anything emits events
/// that should raise alerts (the engine subscribes here).
#[allow(clippy::too_many_arguments)] // the agent's wiring, called once
pub fn start(
    config: &Config,
    http: crate::util::LazyHttp,
    store: Store,
    bus: Bus,
    reaper: Reaper,
    data_dir: &Path,
    cancel: CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<Alerts> {
    use anyhow::Context;
    let key = AckKey::load_or_create(&data_dir.join("alert.key")).with_context(|| {
        format!(
            "cannot read or create {}",
            data_dir.join("alert.key").display()
        )
    })?;
    let public_url = config.alerts.public_url.clone().unwrap_or_else(|| {
        let mut addr = config.agent.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    });
    let mut channels = HashMap::new();
    for c in &config.alerts.channels {
        let ch = channels::Channel::build(c, &http, &reaper)
            .map_err(|e| anyhow::anyhow!("channel \"{}\": {e}", c.name))?;
        channels.insert(c.name.clone(), Arc::new(ch));
    }
    if channels.is_empty() {
        tracing::warn!(
            "No [[channel]] configured: alerts are recorded and shown, but sent nowhere."
        );
    }
    let wake = Arc::new(Notify::new());
    let mut engine = engine::Engine::new(
        store.clone(),
        bus.clone(),
        config.alerts.clone(),
        key.clone(),
        public_url.clone(),
        wake.clone(),
    );
    // Subscribed first: whatever is emitted from here on is either after the
    // cursor (caught up from the store) or on the bus, never in neither.
    let events = bus.subscribe();
    engine.load().context("cannot load active alerts")?;
    let (tx, rx) = mpsc::channel(64);
    tasks.spawn(engine.run(events, rx, cancel.child_token()));
    let outbox = outbox::Outbox {
        store: store.clone(),
        bus: bus.clone(),
        channels: channels.clone(),
        wake,
    };
    tasks.spawn(outbox.run(cancel.child_token()));
    let clears = config
        .alerts
        .rules
        .iter()
        .filter(|r| !r.resolve_on.is_empty())
        .map(|r| (r.name.clone(), r.resolve_on.join(" or ")))
        .collect();
    Ok(Alerts {
        tx,
        store,
        bus,
        key,
        public_url,
        channels,
        clears: Arc::new(clears),
    })
}
