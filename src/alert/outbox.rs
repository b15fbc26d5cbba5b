//! The durable outbox: every notification is a row in `alert_deliveries`
//! (written with the alert's transition) before anything is sent. This
//! worker sends what is due, marks it `sent` only after the channel
//! confirmed it, and retries the rest with exponential backoff (1 s, 2 s,
//! 4 s, … capped at 5 min), forever: nothing is dropped while a channel is
//! down, and what was pending when the agent died is sent by the next one.
//!
//! At-least-once: a crash between a confirmed send and recording it sends
//! that one notification again; it carries the same delivery id
//! (`X-Mamori-Delivery`, the mail's Message-ID) so receivers can tell.
//!
//! Up to 32 sends run at once; two deliveries for the same alert and channel
//! never overlap, and they go out in creation order (`due_deliveries` holds
//! back one while an older one of its alert and channel is pending), so
//! "resolved" does not overtake "fired". Older pending rounds made stale by
//! a newer one are marked `superseded` when the newer one is stored
//! (`db::insert_deliveries`), so a channel that comes back after an outage
//! gets the latest notice, not every round queued meanwhile.
//!
//! When the store cannot take an outcome (full, or busy past its timeout),
//! the worker remembers it (`Hold`): a delivered notification is not sent
//! again, only its record is retried every second; a failed one waits its
//! backoff, counting the attempts the store missed. Without that, the row
//! still due in the store was sent again at once, in a loop: a pager spammed
//! by the full disk it was telling about.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::channels::{Channel, Notification};
use super::db::{AlertStore, Delivery};
use crate::event::{Bus, EventKind};
use crate::store::Store;
use crate::util::now_ms;

const MAX_IN_FLIGHT: usize = 32;
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The delay before retry number `attempts` (1-based).
pub fn backoff(attempts: u32) -> Duration {
    let secs = 1u64 << attempts.saturating_sub(1).min(16);
    Duration::from_secs(secs).min(BACKOFF_MAX)
}

pub struct Outbox {
    pub store: Store,
    pub bus: Bus,
    pub channels: HashMap<String, Arc<Channel>>,
    pub wake: Arc<Notify>,
}

struct Sent {
    delivery: Delivery,
    result: Result<(), String>,
    took: Duration,
}

impl Outbox {
    pub async fn run(self, cancel: CancellationToken) {
        let mut tasks: JoinSet<Sent> = JoinSet::new();
        let mut in_flight: HashSet<i64> = HashSet::new();
        let mut busy: HashSet<(i64, String)> = HashSet::new();
        // Deliveries whose outcome could not be recorded (the store is full
        // or busy): held back in memory until then, so that a failing write
        // neither re-sends at once nor retries without a pause.
        let mut held: HashMap<i64, Hold> = HashMap::new();
        loop {
            let now = now_ms();
            if in_flight.len() < MAX_IN_FLIGHT {
                let due = self
                    .store
                    .due_deliveries(now, (MAX_IN_FLIGHT * 4 + in_flight.len()) as u32)
                    .unwrap_or_else(|e| {
                        tracing::error!(error = %e, "Could not read the outbox.");
                        Vec::new()
                    });
                for mut d in due {
                    if in_flight.len() >= MAX_IN_FLIGHT {
                        break;
                    }
                    if let Some(h) = held.get_mut(&d.id) {
                        if h.until > now {
                            continue;
                        }
                        if h.sent {
                            // Delivered; only the record is missing.
                            match self.store.delivery_sent(&d, now, h.took_ms) {
                                Ok(()) => {
                                    held.remove(&d.id);
                                }
                                Err(e) => {
                                    tracing::warn!(delivery = d.id, error = %e, "Could not record a delivery yet; retrying every second (it is not sent again).");
                                    h.until = now + STORE_RETRY_MS;
                                }
                            }
                            continue;
                        }
                        // Failed before: count the attempts the store missed.
                        d.attempts = d.attempts.max(h.attempts);
                    }
                    if in_flight.contains(&d.id) || busy.contains(&(d.alert_id, d.channel.clone()))
                    {
                        continue;
                    }
                    in_flight.insert(d.id);
                    busy.insert((d.alert_id, d.channel.clone()));
                    let channel = self.channels.get(&d.channel).cloned();
                    tasks.spawn(async move {
                        let start = StdInstant::now();
                        let result =
                            match (channel, serde_json::from_str::<Notification>(&d.payload)) {
                                (None, _) => {
                                    Err(format!("no channel named \"{}\" in the config", d.channel))
                                }
                                (_, Err(e)) => Err(format!("unreadable notification: {e}")),
                                (Some(c), Ok(mut n)) => {
                                    n.delivery_id = d.id;
                                    // A panic in a channel is a failed attempt, not
                                    // a delivery stuck "in flight" for good.
                                    tokio::spawn(async move { c.send(&n).await })
                                        .await
                                        .unwrap_or_else(|e| {
                                            Err(format!("the channel panicked: {e}"))
                                        })
                                }
                            };
                        Sent {
                            delivery: d,
                            result,
                            took: start.elapsed(),
                        }
                    });
                }
            }
            // Sleep until the next retry that is not due yet (due ones are
            // either in flight or wait for a free slot: a finished send wakes us).
            let next = self.store.next_delivery_after(now).ok().flatten();
            let next_held = held.values().map(|h| h.until).filter(|t| *t > now).min();
            let sleep_ms = match next.into_iter().chain(next_held).filter(|t| *t > now).min() {
                Some(t) => (t - now).min(60_000),
                None => 60_000,
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wake.notified() => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(sent) = done {
                        in_flight.remove(&sent.delivery.id);
                        busy.remove(&(sent.delivery.alert_id, sent.delivery.channel.clone()));
                        let id = sent.delivery.id;
                        match self.record(sent) {
                            Some(h) => held.insert(id, h),
                            None => held.remove(&id),
                        };
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms as u64)) => {}
            }
        }
        // Sends in flight at shutdown are abandoned unconfirmed: the next
        // agent sends them again.
        tasks.abort_all();
    }

    /// Records how a send went; a `Hold` when the store did not take it.
    fn record(&self, sent: Sent) -> Option<Hold> {
        let d = &sent.delivery;
        let now = now_ms();
        match &sent.result {
            Ok(()) => {
                tracing::info!(alert = d.alert_id, delivery = d.id, channel = %d.channel, what = %d.what, ms = sent.took.as_millis() as u64, "Notification delivered.");
                if let Err(e) = self
                    .store
                    .delivery_sent(d, now, sent.took.as_millis() as u64)
                {
                    tracing::error!(delivery = d.id, error = %e, "Could not record a delivery; it is not sent again.");
                    return Some(Hold {
                        until: now + STORE_RETRY_MS,
                        attempts: d.attempts,
                        sent: true,
                        took_ms: sent.took.as_millis() as u64,
                    });
                }
                None
            }
            Err(err) => {
                let mut hold = None;
                let attempts = d.attempts + 1;
                let delay = backoff(attempts);
                tracing::warn!(alert = d.alert_id, delivery = d.id, channel = %d.channel, attempts, retry_in_ms = delay.as_millis() as u64, error = %err, "Notification not delivered; will retry.");
                if let Err(e) = self.store.delivery_failed(
                    d,
                    now,
                    sent.took.as_millis() as u64,
                    now + delay.as_millis() as i64,
                    err,
                ) {
                    tracing::error!(delivery = d.id, error = %e, "Could not record a failed delivery; retrying it after the same pause.");
                    hold = Some(Hold {
                        until: now + delay.as_millis() as i64,
                        attempts,
                        sent: false,
                        took_ms: sent.took.as_millis() as u64,
                    });
                }
                if attempts == 1 || attempts % 10 == 0 {
                    self.bus.emit(EventKind::DeliveryFailed {
                        alert_id: d.alert_id,
                        delivery_id: d.id,
                        channel: d.channel.clone(),
                        attempts,
                        error: err.clone(),
                    });
                }
                hold
            }
        }
    }
}

/// How often a delivered notification's missing record is written again.
const STORE_RETRY_MS: i64 = 1_000;

/// A delivery the store does not know the outcome of.
#[derive(Debug, Clone, Copy)]
struct Hold {
    /// Not sent again before this (ms since the epoch).
    until: i64,
    /// Attempts so far, counting those the store missed.
    attempts: u32,
    /// It was delivered: only the record is missing, never send it again.
    sent: bool,
    /// How long the send took, for the record.
    took_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), BACKOFF_MAX);
        assert_eq!(backoff(1000), BACKOFF_MAX);
    }
}
