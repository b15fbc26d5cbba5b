//! The async shell around the pure cores: one task owns every active alert.
//! It reads events from the bus (catching up from the store if it lagged),
//! applies the rules, drives each alert's `Lifecycle` with ticks at the
//! times it asks for, takes acknowledgements and resolutions from the API,
//! and writes each transition together with the notifications it produced
//! (the outbox) in one transaction.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ack_link::AckKey;
use super::channels::Notification;
use super::db::{AlertRecord, AlertStore, NewDelivery};
use super::escalation::{Escalation, Policy};
use super::lifecycle::{Action, Input, Lifecycle, State};
use super::rules::{self, Matched, Severity};
use super::AlertError;
use crate::config::alerts::AlertsConfig;
use crate::event::{Bus, Event, EventKind};
use crate::store::Store;
use crate::util::{format_ts, now_ms};

pub enum Command {
    Ack {
        id: i64,
        by: String,
        comment: String,
        reply: oneshot::Sender<Result<AlertRecord, AlertError>>,
    },
    Resolve {
        id: i64,
        by: String,
        force: bool,
        reply: oneshot::Sender<Result<AlertRecord, AlertError>>,
    },
    /// A silence ended early: check muted alerts now.
    MutesChanged,
}

struct Active {
    rec: AlertRecord,
    life: Lifecycle,
    /// When it next needs a tick (its entry in `Engine::wakes`).
    wake: Option<Instant>,
    /// Its last notifications were muted: when the mute ends and it still
    /// fires, the escalation starts over (checked every `MUTE_RECHECK`).
    muted: bool,
}

const MUTE_RECHECK: Duration = Duration::from_secs(15);

pub struct Engine {
    pub store: Store,
    pub bus: Bus,
    pub config: AlertsConfig,
    pub key: AckKey,
    pub public_url: String,
    pub outbox: Arc<Notify>,
    active: HashMap<i64, Active>,
    by_key: HashMap<String, i64>,
    /// Active alerts by the time they next need a tick.
    wakes: BTreeSet<(Instant, i64)>,
    policies: HashMap<String, Policy>,
    /// The last event handled…
    last_event: i64,
    /// …the event being handled (its id goes into the store with any change it makes)…
    handling: Option<i64>,
    /// …and the cursor as stored, with when.
    saved_cursor: i64,
    saved_at: Instant,
}

/// Wall-clock milliseconds of a tokio instant (for records only).
fn to_ms(i: Instant) -> i64 {
    let (now_i, now) = (Instant::now(), now_ms());
    if i >= now_i {
        now + (i - now_i).as_millis() as i64
    } else {
        now - (now_i - i).as_millis() as i64
    }
}

/// The tokio instant of a recorded wall-clock time.
fn from_ms(ms: i64) -> Instant {
    let (now_i, now) = (Instant::now(), now_ms());
    if ms >= now {
        now_i + Duration::from_millis((ms - now) as u64)
    } else {
        now_i
            .checked_sub(Duration::from_millis((now - ms) as u64))
            .unwrap_or(now_i)
    }
}

impl Engine {
    pub fn new(
        store: Store,
        bus: Bus,
        config: AlertsConfig,
        key: AckKey,
        public_url: String,
        outbox: Arc<Notify>,
    ) -> Engine {
        let policies = config
            .policies
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        Engine {
            store,
            bus,
            config,
            key,
            public_url,
            outbox,
            active: HashMap::new(),
            by_key: HashMap::new(),
            wakes: BTreeSet::new(),
            policies,
            last_event: 0,
            handling: None,
            saved_cursor: 0,
            saved_at: Instant::now(),
        }
    }

    fn all_channels(&self) -> Vec<String> {
        self.config
            .channels
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    /// The policy a new alert uses: its rule's, else its severity's (from
    /// `[alerts] policy`, else a policy named after the severity), else the
    /// implicit one (every channel at once; critical repeats until acked).
    fn choose_policy(&self, rule_policy: Option<&str>, severity: Severity) -> String {
        if let Some(p) = rule_policy {
            return p.to_string();
        }
        if let Some((_, p)) = self
            .config
            .severity_policy
            .iter()
            .find(|(s, _)| *s == severity)
        {
            return p.clone();
        }
        if self.policies.contains_key(severity.as_str()) {
            return severity.as_str().to_string();
        }
        if severity == Severity::Critical {
            "implicit-critical".into()
        } else {
            "implicit".into()
        }
    }

    fn policy(&self, name: &str) -> Policy {
        match self.policies.get(name) {
            Some(p) => p.clone(),
            None => Policy::implicit(name, self.all_channels(), name == "implicit-critical"),
        }
    }

    fn restore(rec: &AlertRecord) -> Lifecycle {
        let state = State::parse(&rec.state);
        Lifecycle {
            state,
            occurrences: rec.occurrences,
            escalation: match (state, rec.esc_started) {
                (State::Firing, Some(ms)) => Some(Escalation {
                    started: from_ms(ms),
                    round: rec.esc_round,
                    step: rec.esc_step,
                    done: rec.esc_done,
                }),
                _ => None,
            },
            ack_until: rec.ack_until.map(from_ms),
            notified: rec.notified.clone(),
        }
    }

    fn sync(rec: &mut AlertRecord, life: &Lifecycle) {
        rec.state = life.state.as_str().to_string();
        rec.occurrences = life.occurrences;
        match &life.escalation {
            Some(e) => {
                rec.esc_started = Some(to_ms(e.started));
                rec.esc_round = e.round;
                rec.esc_step = e.step;
                rec.esc_done = e.done;
            }
            None => rec.esc_started = None,
        }
        rec.ack_until = life.ack_until.map(to_ms);
        rec.notified = life.notified.clone();
    }

    /// Loads the alerts that were active when the agent stopped, and the
    /// cursor: events stored after it (by an agent that died before handling
    /// them, or at this agent's start) are handled first thing in `run`. On
    /// the very first start the engine begins after the newest event: history
    /// raises no alerts.
    pub fn load(&mut self) -> Result<(), crate::store::StoreError> {
        match self.store.alert_cursor()? {
            Some(c) => self.last_event = c,
            None => {
                if let Some(e) = self.store.events(None, None, 1)?.last() {
                    self.last_event = e.id;
                }
                self.store.set_alert_cursor(self.last_event)?;
            }
        }
        self.saved_cursor = self.last_event;
        for rec in self.store.active_alerts()? {
            let life = Self::restore(&rec);
            self.by_key.insert(rec.key.clone(), rec.id);
            let id = rec.id;
            let muted = self.store.last_delivery_state(id)?.as_deref() == Some("muted");
            self.active.insert(
                id,
                Active {
                    rec,
                    life,
                    wake: None,
                    muted,
                },
            );
            self.reschedule(id);
        }
        if !self.active.is_empty() {
            tracing::info!(
                count = self.active.len(),
                "Alerts still active from before."
            );
        }
        Ok(())
    }

    fn notification(&self, rec: &AlertRecord, what: &str, round: u32, step: usize) -> String {
        let n = Notification {
            alert_id: rec.id,
            delivery_id: 0,
            key: rec.key.clone(),
            rule: rec.rule.clone(),
            subject: rec.subject.clone(),
            severity: rec.severity.clone(),
            state: rec.state.clone(),
            what: what.into(),
            title: rec.title.clone(),
            body: rec.body.clone(),
            occurrences: rec.occurrences,
            first_at: format_ts(rec.first_at),
            round,
            step,
            ack_url: (what == "fired" || what == "escalated")
                .then(|| self.key.url(&self.public_url, rec.id)),
            note: (what == "acknowledged").then(|| {
                let by = rec.acked_by.as_deref().unwrap_or("someone");
                match rec.ack_comment.as_deref() {
                    Some(c) if !c.is_empty() => format!("Acknowledged by {by}: {c}"),
                    _ => format!("Acknowledged by {by}."),
                }
            }),
        };
        serde_json::to_string(&n).unwrap_or_default()
    }

    /// Whether a maintenance window or a silence mutes the alert at `now` (ms).
    fn is_muted(&self, rec: &AlertRecord, now: i64) -> bool {
        self.config.maintenance.iter().any(|w| w.mutes(rec, now))
            || self
                .store
                .silences(now, false)
                .map(|s| super::mute::silenced(&s, rec, now))
                .unwrap_or(false)
    }

    /// Turns a lifecycle's actions into deliveries, stores them with the
    /// alert's new state, and wakes the outbox. Returns whether the alert's
    /// notifications were muted, when it produced any (resolutions aside).
    fn commit(&self, rec: &AlertRecord, actions: &[Action]) -> Option<bool> {
        let now = now_ms();
        let mut deliveries = Vec::new();
        let needs_silences = actions.iter().any(|a| !matches!(a, Action::Changed(_)));
        let muted = needs_silences && self.is_muted(rec, now);
        let known = self.all_channels();
        // Follow-ups (acknowledged, resolved) go to the channels that really
        // got the alert, not to those whose notifications were muted.
        let told: Vec<String> = if actions.iter().any(|a| {
            matches!(
                a,
                Action::NotifyResolved { .. } | Action::NotifyAcknowledged { .. }
            )
        }) {
            self.store
                .deliveries(rec.id)
                .unwrap_or_default()
                .into_iter()
                .filter(|d| (d.what == "fired" || d.what == "escalated") && d.state != "muted")
                .map(|d| d.channel)
                .collect()
        } else {
            Vec::new()
        };
        for a in actions {
            let (channels, what, round, step) = match a {
                Action::Notify(d) => (
                    &d.channels,
                    if d.round == 0 && d.step == 0 {
                        "fired"
                    } else {
                        "escalated"
                    },
                    d.round,
                    d.step,
                ),
                Action::NotifyResolved { channels } => (channels, "resolved", 0, 0),
                Action::NotifyAcknowledged { channels } => (channels, "acknowledged", 0, 0),
                Action::Changed(_) => continue,
            };
            for c in channels {
                let follow_up = what == "resolved" || what == "acknowledged";
                if !known.contains(c) || (follow_up && !told.contains(c)) {
                    continue;
                }
                deliveries.push(NewDelivery {
                    channel: c.clone(),
                    what: what.into(),
                    payload: self.notification(rec, what, round, step),
                    state: if muted { "muted" } else { "pending" },
                });
            }
        }
        if let Err(e) = self.store.save_alert(rec, &deliveries, now, self.handling) {
            tracing::error!(alert = rec.id, error = %e, "Could not store an alert's change.");
        }
        if deliveries.iter().any(|d| d.state == "pending") {
            self.outbox.notify_one();
        }
        if muted && !deliveries.is_empty() {
            tracing::info!(
                alert = rec.id,
                "Notifications muted by a silence or maintenance window."
            );
        }
        deliveries
            .iter()
            .any(|d| d.what == "fired" || d.what == "escalated")
            .then_some(muted)
    }

    fn fire(&mut self, event: &Event, m: Matched, now: Instant) {
        let Matched::Fire {
            key,
            rule,
            subject,
            severity,
            title,
            body,
            policy,
        } = m
        else {
            return;
        };
        let now_wall = now_ms();
        if let Some(id) = self.by_key.get(&key).copied() {
            let Some(a) = self.active.get_mut(&id) else {
                return;
            };
            let policy = match self.policies.get(&a.rec.policy) {
                Some(p) => p.clone(),
                None => Policy::implicit(&a.rec.policy, Vec::new(), false),
            };
            if a.life.handle(Input::Occurred, &policy, now).is_ok() {
                a.rec.last_at = now_wall;
                Self::sync(&mut a.rec, &a.life);
                let rec = a.rec.clone();
                self.commit(&rec, &[]);
            }
            return;
        }
        let policy_name = self.choose_policy(policy.as_deref(), severity);
        let policy = self.policy(&policy_name);
        let mut rec = AlertRecord {
            id: 0,
            key: key.clone(),
            rule: rule.clone(),
            subject: subject.clone(),
            severity: severity.as_str().into(),
            state: "firing".into(),
            title: title.clone(),
            body,
            policy: policy_name,
            occurrences: 1,
            first_at: now_wall,
            last_at: now_wall,
            event_id: Some(event.id),
            acked_at: None,
            acked_by: None,
            ack_comment: None,
            ack_until: None,
            resolved_at: None,
            resolved_by: None,
            esc_started: Some(now_wall),
            esc_round: 0,
            esc_step: 0,
            esc_done: false,
            notified: Vec::new(),
        };
        match self.store.insert_alert(&rec) {
            Ok(id) => rec.id = id,
            Err(e) => {
                tracing::error!(key = %key, error = %e, "Could not store a new alert.");
                return;
            }
        }
        let (life, actions) = Lifecycle::fire(&policy, now);
        Self::sync(&mut rec, &life);
        let muted = self.commit(&rec, &actions) == Some(true);
        tracing::warn!(alert = rec.id, key = %key, severity = %rec.severity, title = %title, "Alert fired.");
        self.bus.emit(EventKind::AlertFired {
            alert_id: rec.id,
            key: key.clone(),
            rule,
            severity: rec.severity.clone(),
            title,
            unit: event.kind.unit().map(str::to_string),
        });
        self.by_key.insert(key, rec.id);
        let id = rec.id;
        self.active.insert(
            id,
            Active {
                rec,
                life,
                wake: None,
                muted,
            },
        );
        self.reschedule(id);
    }

    /// Applies an input to an active alert and stores the result.
    fn apply(
        &mut self,
        id: i64,
        input: Input,
        now: Instant,
        edit: impl FnOnce(&mut AlertRecord),
    ) -> Result<AlertRecord, AlertError> {
        let policy = match self.active.get(&id) {
            Some(a) => self.policy(&a.rec.policy),
            None => {
                return match self.store.alert(id) {
                    Ok(Some(_)) => Err(AlertError::AlreadyResolved(id)),
                    Ok(None) => Err(AlertError::NotFound(id)),
                    Err(e) => Err(AlertError::Store(e.to_string())),
                }
            }
        };
        let a = self.active.get_mut(&id).expect("checked above");
        let actions = a
            .life
            .handle(input, &policy, now)
            .map_err(|_| AlertError::AlreadyResolved(id))?;
        edit(&mut a.rec);
        Self::sync(&mut a.rec, &a.life);
        let rec = a.rec.clone();
        for act in &actions {
            if act == &Action::Changed(State::Firing) {
                tracing::warn!(alert = id, key = %rec.key, "Acknowledgement expired; escalating again.");
            }
        }
        if let Some(muted) = self.commit(&rec, &actions) {
            if let Some(a) = self.active.get_mut(&id) {
                a.muted = muted;
            }
        }
        if rec.state == "resolved" {
            if let Some(a) = self.active.remove(&id) {
                if let Some(w) = a.wake {
                    self.wakes.remove(&(w, id));
                }
            }
            self.by_key.remove(&rec.key);
        } else {
            self.reschedule(id);
        }
        Ok(rec)
    }

    /// A person resolves `id`. An alert that its rule clears by itself
    /// (`resolve_on`) is still active only because that has not happened,
    /// so it is refused unless `force`.
    fn resolve_by_hand(
        &mut self,
        id: i64,
        by: &str,
        force: bool,
        now: Instant,
    ) -> Result<AlertRecord, AlertError> {
        if !force {
            let clears_on = self.active.get(&id).and_then(|a| {
                let rule = self.config.rules.iter().find(|r| r.name == a.rec.rule)?;
                (!rule.resolve_on.is_empty()).then(|| rule.resolve_on.join(" or "))
            });
            if let Some(on) = clears_on {
                return Err(AlertError::ClearsByItself { id, on });
            }
        }
        self.resolve(id, by, now)
    }

    fn resolve(&mut self, id: i64, by: &str, now: Instant) -> Result<AlertRecord, AlertError> {
        let by_s = by.to_string();
        let rec = self.apply(id, Input::Resolve, now, |r| {
            r.resolved_at = Some(now_ms());
            r.resolved_by = Some(by_s);
        })?;
        tracing::info!(alert = id, key = %rec.key, by, "Alert resolved.");
        self.bus.emit(EventKind::AlertResolved {
            alert_id: id,
            key: rec.key.clone(),
            by: by.to_string(),
        });
        Ok(rec)
    }

    fn ack(
        &mut self,
        id: i64,
        by: &str,
        comment: &str,
        now: Instant,
    ) -> Result<AlertRecord, AlertError> {
        let (by_s, comment_s) = (by.to_string(), comment.to_string());
        let timeout = self.config.ack_timeout;
        // Acknowledging an acknowledged alert renews its `ack_timeout`.
        // Without a comment it keeps who acknowledged it, when and why (a
        // bare "still on it" must not erase the note); with one, the new
        // person, note and time replace them together.
        let renewal = self
            .active
            .get(&id)
            .is_some_and(|a| a.life.state == State::Acknowledged);
        let rec = self.apply(id, Input::Ack { timeout }, now, |r| {
            if !renewal || !comment_s.is_empty() {
                r.acked_at = Some(now_ms());
                r.acked_by = Some(by_s);
                r.ack_comment = Some(comment_s);
            }
        })?;
        tracing::info!(alert = id, key = %rec.key, by, "Alert acknowledged.");
        self.bus.emit(EventKind::AlertAcknowledged {
            alert_id: id,
            key: rec.key.clone(),
            by: by.to_string(),
            comment: comment.to_string(),
        });
        Ok(rec)
    }

    fn on_event(&mut self, event: &Event) {
        if event.id <= self.last_event {
            return;
        }
        self.last_event = event.id;
        let kind = event.kind.name();
        if kind.starts_with("alert.") {
            return;
        }
        let Ok(Value::Object(mut fields)) = serde_json::to_value(&event.kind) else {
            return;
        };
        rules::humanize(&kind, &mut fields);
        let now = Instant::now();
        self.handling = Some(event.id);
        for m in rules::evaluate(&self.config.rules, &kind, &fields) {
            match m {
                Matched::Clear { key } => {
                    if let Some(id) = self.by_key.get(&key).copied() {
                        let _ = self.resolve(id, "auto", now);
                    }
                }
                fire => self.fire(event, fire, now),
            }
        }
        self.handling = None;
    }

    /// Stores the cursor of events that changed nothing, at most every 5 s
    /// (events that changed an alert stored it with the change).
    fn save_cursor(&mut self, force: bool) {
        if self.last_event > self.saved_cursor
            && (force || self.saved_at.elapsed() >= Duration::from_secs(5))
        {
            match self.store.set_alert_cursor(self.last_event) {
                Ok(()) => {
                    self.saved_cursor = self.last_event;
                    self.saved_at = Instant::now();
                }
                Err(e) => tracing::error!(error = %e, "Could not store the alert cursor."),
            }
        }
    }

    /// Recomputes when an active alert next needs a tick.
    fn reschedule(&mut self, id: i64) {
        let Some(a) = self.active.get(&id) else {
            return;
        };
        let mut wake = a.life.next_wake(&self.policy(&a.rec.policy));
        if a.muted && a.life.state == State::Firing {
            let recheck = Instant::now() + MUTE_RECHECK;
            wake = Some(wake.map_or(recheck, |w| w.min(recheck)));
        }
        let old = a.wake;
        if old == wake {
            return;
        }
        if let Some(w) = old {
            self.wakes.remove(&(w, id));
        }
        if let Some(w) = wake {
            self.wakes.insert((w, id));
        }
        if let Some(a) = self.active.get_mut(&id) {
            a.wake = wake;
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        self.wakes.first().map(|(w, _)| *w)
    }

    fn tick(&mut self, now: Instant) {
        let due: Vec<i64> = self
            .wakes
            .iter()
            .take_while(|(w, _)| *w <= now)
            .map(|(_, id)| *id)
            .collect();
        for id in due {
            self.tick_one(id, now);
        }
    }

    /// A silence was removed: muted alerts need not wait for their recheck.
    fn recheck_muted(&mut self, now: Instant) {
        let muted: Vec<i64> = self
            .active
            .iter()
            .filter(|(_, a)| a.muted)
            .map(|(id, _)| *id)
            .collect();
        for id in muted {
            self.tick_one(id, now);
        }
    }

    fn tick_one(&mut self, id: i64, now: Instant) {
        let wall = now_ms();
        let unmuted = self.active.get(&id).is_some_and(|a| {
            a.muted && a.life.state == State::Firing && !self.is_muted(&a.rec, wall)
        });
        if unmuted {
            if let Some(a) = self.active.get_mut(&id) {
                // The mute is over and nobody acknowledged: start over,
                // so people hear about it now.
                a.muted = false;
                a.life.escalation = Some(Escalation::start(now));
                tracing::info!(alert = id, key = %a.rec.key, "Mute over; escalating from step 1.");
            }
        }
        let _ = self.apply(id, Input::Tick, now, |_| {});
    }

    /// Events the bus dropped because we lagged: read them from the store.
    fn catch_up(&mut self) {
        loop {
            let batch = match self.store.events(None, Some(self.last_event), 1000) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "Could not read events to catch up.");
                    return;
                }
            };
            if batch.is_empty() {
                return;
            }
            for e in &batch {
                self.on_event(e);
            }
        }
    }

    pub async fn run(
        mut self,
        mut events: broadcast::Receiver<Arc<Event>>,
        mut commands: mpsc::Receiver<Command>,
        cancel: CancellationToken,
    ) {
        // Events stored after the cursor: the previous agent's last moments
        // and this agent's start.
        self.catch_up();
        let now = Instant::now();
        self.tick(now);
        loop {
            self.save_cursor(false);
            let wake = self.next_wake();
            tokio::select! {
                _ = cancel.cancelled() => break,
                ev = events.recv() => match ev {
                    Ok(e) => self.on_event(&e),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "Alerting lagged behind the event bus; catching up from the store.");
                        self.catch_up();
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                cmd = commands.recv() => match cmd {
                    Some(Command::Ack { id, by, comment, reply }) => {
                        let _ = reply.send(self.ack(id, &by, &comment, Instant::now()));
                    }
                    Some(Command::Resolve { id, by, force, reply }) => {
                        let _ = reply.send(self.resolve_by_hand(id, &by, force, Instant::now()));
                    }
                    Some(Command::MutesChanged) => self.recheck_muted(Instant::now()),
                    None => break,
                },
                _ = async {
                    match wake {
                        Some(w) => tokio::time::sleep_until(w).await,
                        None => std::future::pending::<()>().await,
                    }
                } => self.tick(Instant::now()),
            }
        }
        self.save_cursor(true);
    }
}

#[cfg(test)]
mod tests {
    use super::super::escalation::{Repeat, Step};
    use super::*;
    use crate::config::alerts::{ChannelConfig, ChannelKind, WebhookConfig, WebhookFormat};

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    fn down(check: &str) -> EventKind {
        EventKind::CheckDown {
            check: check.into(),
            check_kind: "tcp".into(),
            unit: None,
            reason: "connection refused".into(),
        }
    }

    /// States of an alert's deliveries, oldest first.
    fn sent(store: &Store, id: i64) -> Vec<String> {
        store
            .deliveries(id)
            .unwrap()
            .into_iter()
            .map(|d| format!("{}:{}", d.what, d.state))
            .collect()
    }

    /// An engine running on a store in `dir`, with its bus and command channel.
    struct Running {
        store: Store,
        bus: Bus,
        tx: mpsc::Sender<Command>,
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    fn running(dir: &tempfile::TempDir, config: AlertsConfig) -> Running {
        let store = Store::open(&dir.path().join("m.db")).unwrap();
        let bus = Bus::new(store.clone());
        let key = AckKey::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let mut engine = Engine::new(
            store.clone(),
            bus.clone(),
            config,
            key,
            "http://mamori".into(),
            Arc::new(Notify::new()),
        );
        let events = bus.subscribe();
        engine.load().unwrap();
        let (tx, rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(engine.run(events, rx, cancel.clone()));
        Running {
            store,
            bus,
            tx,
            cancel,
            task,
        }
    }

    /// Sends the engine one command and waits for its answer.
    async fn ask(
        tx: &mpsc::Sender<Command>,
        make: impl FnOnce(oneshot::Sender<Result<AlertRecord, AlertError>>) -> Command,
    ) -> Result<AlertRecord, AlertError> {
        let (reply, r) = oneshot::channel();
        tx.send(make(reply)).await.unwrap();
        r.await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn acknowledging_again_keeps_the_first_note_unless_a_new_one_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let Running {
            store,
            bus,
            tx,
            cancel,
            task,
        } = running(&dir, AlertsConfig::default());
        let ack = |by: &str, comment: &str| {
            let (tx, by, comment) = (tx.clone(), by.to_string(), comment.to_string());
            async move {
                let make = |reply| Command::Ack {
                    id: 1,
                    by,
                    comment,
                    reply,
                };
                ask(&tx, make).await.unwrap()
            }
        };
        bus.emit(down("db"));
        settle().await;
        let first = ack("alice", "looking at row 17").await;
        assert!(first.acked_at.is_some());
        // A bare ack keeps the note and its author (and renews the timeout,
        // which the lifecycle's own tests pin).
        let again = ack("bob", "").await;
        assert_eq!(again.state, "acknowledged");
        assert_eq!(again.acked_by.as_deref(), Some("alice"));
        assert_eq!(again.ack_comment.as_deref(), Some("looking at row 17"));
        // A new note replaces the old one, with its author.
        let third = ack("bob", "taking over").await;
        assert_eq!(third.acked_by.as_deref(), Some("bob"));
        assert_eq!(third.ack_comment.as_deref(), Some("taking over"));
        let stored = store.alert(1).unwrap().unwrap();
        assert_eq!(stored.ack_comment.as_deref(), Some("taking over"));
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn resolving_by_hand_an_alert_that_clears_by_itself_needs_force() {
        let dir = tempfile::tempdir().unwrap();
        let Running {
            store,
            bus,
            tx,
            cancel,
            task,
        } = running(&dir, AlertsConfig::default());
        let resolve = |id: i64, force: bool| {
            let tx = tx.clone();
            async move {
                let make = |reply| Command::Resolve {
                    id,
                    by: "test".to_string(),
                    force,
                    reply,
                };
                ask(&tx, make).await
            }
        };

        // check-down clears on check.up; limit-breached never clears by itself.
        bus.emit(down("db"));
        bus.emit(EventKind::LimitBreached {
            unit: "web".into(),
            run_id: 1,
            limit: "memory".into(),
            value: 2,
            max: 1,
            enforced_by: "poll".into(),
        });
        settle().await;
        match resolve(1, false).await {
            Err(AlertError::ClearsByItself { id: 1, on }) => {
                assert_eq!(on, "check.up or check.paused")
            }
            other => panic!("{:?}", other.map(|r| r.state)),
        }
        assert_eq!(store.alert(1).unwrap().unwrap().state, "firing");
        assert_eq!(resolve(1, true).await.unwrap().state, "resolved");
        assert_eq!(resolve(2, false).await.unwrap().state, "resolved");
        cancel.cancel();
        task.await.unwrap();
    }

    /// The engine with its store and bus, but no outbox: what it queues is
    /// what the test sees. Time is tokio's, paused.
    #[tokio::test(start_paused = true)]
    async fn escalation_on_time_ack_stops_it_expiry_restarts_it_a_silence_mutes_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = AlertsConfig {
            channels: vec![ChannelConfig {
                name: "hook".into(),
                kind: ChannelKind::Webhook(WebhookConfig {
                    url: "http://127.0.0.1:9/".into(),
                    format: WebhookFormat::Json,
                    headers: vec![],
                    timeout: s(1),
                }),
            }],
            policies: vec![Policy {
                name: "critical".into(),
                steps: vec![
                    Step {
                        after: s(0),
                        channels: vec!["hook".into()],
                    },
                    Step {
                        after: s(60),
                        channels: vec!["hook".into()],
                    },
                ],
                repeat: Repeat::Times(0),
                repeat_after: s(1800),
            }],
            ack_timeout: Some(s(3600)),
            ..AlertsConfig::default()
        };
        let Running {
            store,
            bus,
            tx,
            cancel,
            task,
        } = running(&dir, config);

        // Step 1 at once, step 2 after 60 s.
        bus.emit(down("db"));
        settle().await;
        assert_eq!(sent(&store, 1), vec!["fired:pending"]);
        tokio::time::sleep(s(59)).await;
        assert_eq!(sent(&store, 1).len(), 1);
        tokio::time::sleep(s(2)).await;
        // (nothing sent it: the newer round makes the first one stale)
        assert_eq!(
            sent(&store, 1),
            vec!["fired:superseded", "escalated:pending"]
        );
        // The same condition again: counted, not a new alert.
        bus.emit(down("db"));
        settle().await;
        assert_eq!(store.alert(1).unwrap().unwrap().occurrences, 2);

        // Acknowledged at once: step 2 never comes…
        bus.emit(down("cache"));
        settle().await;
        let (reply, r) = oneshot::channel();
        tx.send(Command::Ack {
            id: 2,
            by: "test".into(),
            comment: "mine".into(),
            reply,
        })
        .await
        .unwrap();
        assert_eq!(r.await.unwrap().unwrap().state, "acknowledged");
        // (the channel that got it hears who took it)
        tokio::time::sleep(s(3599)).await;
        assert_eq!(
            sent(&store, 2),
            vec!["fired:pending", "acknowledged:pending"]
        );
        let note: Notification =
            serde_json::from_str(&store.deliveries(2).unwrap()[1].payload).unwrap();
        assert_eq!(note.note.as_deref(), Some("Acknowledged by test: mine"));
        assert_eq!(note.ack_url, None);
        // …until the acknowledgement expires (1 h): then it starts over.
        tokio::time::sleep(s(2)).await;
        assert_eq!(
            sent(&store, 2),
            vec!["fired:superseded", "acknowledged:pending", "fired:pending"]
        );
        assert_eq!(store.alert(2).unwrap().unwrap().state, "firing");
        tokio::time::sleep(s(61)).await;
        assert_eq!(sent(&store, 2).len(), 4);

        // A silence mutes it; the alert is there all the same.
        let now = now_ms();
        let silence = store
            .insert_silence(&crate::alert::db::Silence {
                id: 0,
                matchers: vec![("subject".into(), "queue".into())],
                starts_at: now,
                ends_at: now + 3_600_000,
                comment: "maintenance".into(),
                created_by: "test".into(),
                created_at: now,
            })
            .unwrap();
        bus.emit(down("queue"));
        settle().await;
        assert_eq!(sent(&store, 3), vec!["fired:muted"]);
        tokio::time::sleep(s(61)).await;
        assert_eq!(sent(&store, 3), vec!["fired:muted", "escalated:muted"]);
        assert_eq!(store.alert(3).unwrap().unwrap().state, "firing");
        // The silence ends while it still fires: people hear about it.
        store.expire_silence(silence, now_ms()).unwrap();
        tx.send(Command::MutesChanged).await.unwrap();
        settle().await;
        assert_eq!(
            sent(&store, 3),
            vec!["fired:muted", "escalated:muted", "fired:pending"]
        );

        // Resolved when the check comes back, and the channel is told.
        bus.emit(EventKind::CheckUp {
            check: "queue".into(),
            check_kind: "tcp".into(),
            unit: None,
        });
        settle().await;
        assert_eq!(store.alert(3).unwrap().unwrap().state, "resolved");
        assert_eq!(sent(&store, 3).last().unwrap(), "resolved:pending");

        // Muted from start to end: nobody is told it is resolved either.
        let now = now_ms();
        store
            .insert_silence(&crate::alert::db::Silence {
                id: 0,
                matchers: vec![("subject".into(), "disk".into())],
                starts_at: now,
                ends_at: now + 3_600_000,
                comment: "swap".into(),
                created_by: "test".into(),
                created_at: now,
            })
            .unwrap();
        bus.emit(down("disk"));
        settle().await;
        bus.emit(EventKind::CheckUp {
            check: "disk".into(),
            check_kind: "tcp".into(),
            unit: None,
        });
        settle().await;
        assert_eq!(store.alert(4).unwrap().unwrap().state, "resolved");
        assert_eq!(sent(&store, 4), vec!["fired:muted"]);

        cancel.cancel();
        task.await.unwrap();
    }
}
