//! Incidents: the public face of trouble. People open them (CLI, API,
//! dashboard) or the agent does, from an alert of at least
//! `[incidents] auto_open_severity` when `auto_open = true`. Each has a
//! timeline of updates with a state (`investigating`, `identified`,
//! `monitoring`, `resolved`) and links to components and alerts.
//!
//! The task started by [`start`] does two things:
//! - reminders: every few seconds it asks [`remind::reminder`] (pure) whether
//!   an open incident is owed an update; if so it emits
//!   `incident.update_due`, which the default `incident-update-due` alert
//!   rule turns into an alert (resolved by the next `incident.updated`). The
//!   due time a reminder was raised for is stored, so it is raised once.
//! - auto-open: it follows `alert.fired` events. The bus is lossy, so after a
//!   lag it catches up from the store by event id.
//!
//! See docs/dashboard.md.

pub mod remind;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::alert::rules::Severity;
use crate::config::status::StatusConfig;
use crate::event::{Bus, Event, EventKind};
use crate::store::{Incident, NewIncident, Store, StoreError};
use crate::util::{format_ts, now_ms};

pub const STATES: &[&str] = &["investigating", "identified", "monitoring", "resolved"];
pub const IMPACTS: &[&str] = &["degraded", "partial_outage", "major_outage"];

#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("no incident with id {0}")]
    NotFound(i64),
    #[error("incident {0} is already resolved")]
    Resolved(i64),
    #[error("{0}")]
    Invalid(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// The API's and dashboard's handle on incidents.
#[derive(Clone)]
pub struct Incidents {
    pub store: Store,
    pub bus: Bus,
    pub config: Arc<StatusConfig>,
}

/// What someone asks for when opening an incident.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    pub title: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub impact: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub components: Vec<String>,
    #[serde(default)]
    pub alerts: Vec<i64>,
    #[serde(default)]
    pub by: Option<String>,
}

fn one_of(what: &str, v: &str, allowed: &[&str]) -> Result<(), IncidentError> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(IncidentError::Invalid(format!(
            "{what} \"{v}\"; expected one of: {}",
            allowed.join(", ")
        )))
    }
}

fn text(what: &str, v: &str, max: usize) -> Result<(), IncidentError> {
    if v.chars().count() > max {
        return Err(IncidentError::Invalid(format!(
            "{what} is too long: at most {max} characters"
        )));
    }
    Ok(())
}

impl Incidents {
    pub fn open(&self, r: OpenRequest) -> Result<Incident, IncidentError> {
        let title = r.title.trim().to_string();
        if title.is_empty() {
            return Err(IncidentError::Invalid(
                "an incident needs a \"title\"".into(),
            ));
        }
        text("title", &title, 200)?;
        text("message", &r.message, 10_000)?;
        let state = r.state.unwrap_or_else(|| "investigating".into());
        one_of("state", &state, STATES)?;
        if state == "resolved" {
            return Err(IncidentError::Invalid(
                "a new incident cannot start resolved".into(),
            ));
        }
        let impact = r.impact.unwrap_or_else(|| "partial_outage".into());
        one_of("impact", &impact, IMPACTS)?;
        for c in &r.components {
            if !self.config.components.iter().any(|x| &x.name == c) {
                let names: Vec<&str> = self
                    .config
                    .components
                    .iter()
                    .map(|x| x.name.as_str())
                    .collect();
                return Err(IncidentError::Invalid(format!(
                    "unknown component \"{c}\" (components: {})",
                    if names.is_empty() {
                        "none declared; add [[component]] tables".to_string()
                    } else {
                        names.join(", ")
                    }
                )));
            }
        }
        let owner = r
            .owner
            .filter(|o| !o.trim().is_empty())
            .unwrap_or_else(|| self.config.incidents.default_owner.clone());
        text("owner", &owner, 100)?;
        let by = r.by.unwrap_or_else(|| "api".into());
        let message = if r.message.trim().is_empty() {
            "We are investigating.".to_string()
        } else {
            r.message
        };
        let id = self.store.open_incident(
            &NewIncident {
                title: title.clone(),
                state,
                impact,
                owner,
                message,
                by: by.clone(),
                components: r.components,
                alerts: r.alerts,
            },
            now_ms(),
        )?;
        self.bus.emit(EventKind::IncidentOpened {
            incident_id: id,
            key: format!("incident-{id}"),
            title,
            by,
        });
        self.get(id)
    }

    pub fn get(&self, id: i64) -> Result<Incident, IncidentError> {
        self.store.incident(id)?.ok_or(IncidentError::NotFound(id))
    }

    /// Posts an update; `state = "resolved"` closes the incident.
    pub fn update(
        &self,
        id: i64,
        state: &str,
        message: &str,
        by: &str,
    ) -> Result<Incident, IncidentError> {
        one_of("state", state, STATES)?;
        if message.trim().is_empty() {
            return Err(IncidentError::Invalid(
                "an update needs a \"message\" saying what is going on".into(),
            ));
        }
        text("message", message, 10_000)?;
        let current = self.get(id)?;
        if current.resolved_at.is_some() {
            return Err(IncidentError::Resolved(id));
        }
        self.store
            .update_incident(id, state, message.trim(), by, now_ms())?
            .ok_or(IncidentError::NotFound(id))?;
        self.bus.emit(EventKind::IncidentUpdated {
            incident_id: id,
            key: format!("incident-{id}"),
            state: state.to_string(),
            by: by.to_string(),
        });
        self.get(id)
    }

    /// One pass of the reminder rule over the open incidents at `now`.
    pub fn remind(&self, now: i64) -> Result<usize, IncidentError> {
        let every = self.config.update_every.as_millis() as i64;
        let mut raised = 0;
        for i in self.store.incidents(false, 10_000)? {
            let Some(due) = remind::reminder(
                i.last_update_at,
                i.reminded_for,
                now,
                every,
                self.config.calendar.as_ref(),
            ) else {
                continue;
            };
            self.store.set_incident_reminded(i.id, due)?;
            tracing::warn!(incident = i.id, owner = %i.owner, "An incident update is overdue.");
            self.bus.emit(EventKind::IncidentUpdateDue {
                incident_id: i.id,
                key: format!("incident-{}", i.id),
                title: i.title.clone(),
                owner: i.owner.clone(),
                last_update: format_ts(i.last_update_at),
                due: format_ts(due),
            });
            raised += 1;
        }
        Ok(raised)
    }

    /// Opens an incident for a fired alert when `[incidents] auto_open` says so.
    fn on_event(&self, e: &Event) -> Result<(), IncidentError> {
        let cfg = &self.config.incidents;
        let EventKind::AlertFired {
            alert_id,
            key,
            severity,
            title,
            unit,
            ..
        } = &e.kind
        else {
            return Ok(());
        };
        if !cfg.auto_open
            || Severity::parse(severity).is_none_or(|s| s < cfg.auto_open_severity)
            || self.store.incident_of_alert(*alert_id)?.is_some()
        {
            return Ok(());
        }
        let subject = key.split_once('/').map(|(_, s)| s).unwrap_or(key);
        let components: Vec<String> = self
            .config
            .components
            .iter()
            .filter(|c| {
                c.checks.iter().any(|x| x == subject)
                    || c.units
                        .iter()
                        .any(|x| x == subject || Some(x) == unit.as_ref())
            })
            .map(|c| c.name.clone())
            .collect();
        // One open incident per component: link the alert to it instead.
        if let Some(open) =
            self.store.incidents(false, 1000)?.into_iter().find(|i| {
                !components.is_empty() && components.iter().all(|c| i.components.contains(c))
            })
        {
            self.store.link_incident(open.id, &[], &[*alert_id])?;
            return Ok(());
        }
        // The title is public (status page): it names components, never the
        // alert's text (unit names, reasons, numbers).
        let public_title = if components.is_empty() {
            "Service disruption".to_string()
        } else {
            format!("Disruption of {}", components.join(", "))
        };
        tracing::debug!(alert = %title, "Auto-opening an incident.");
        let i = self.open(OpenRequest {
            title: public_title,
            message: "We are aware of a problem and are investigating.".into(),
            impact: Some("major_outage".into()),
            components,
            alerts: vec![*alert_id],
            by: Some("auto".into()),
            ..Default::default()
        })?;
        tracing::info!(
            incident = i.id,
            alert = alert_id,
            "Incident opened from an alert."
        );
        Ok(())
    }
}

/// How often open incidents are looked at for overdue updates.
fn tick(cfg: &StatusConfig) -> Duration {
    (cfg.update_every / 20).clamp(Duration::from_millis(500), Duration::from_secs(30))
}

/// Starts the reminder and auto-open task.
pub fn start(
    config: &crate::config::Config,
    store: Store,
    bus: Bus,
    cancel: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Incidents {
    let inc = Incidents {
        store,
        bus: bus.clone(),
        config: Arc::new(config.status.clone()),
    };
    let mut events = bus.subscribe();
    // Subscribed first, then the cursor: nothing stored from here on can be
    // missed, and a lag before the first event still catches up from the
    // store (seeing an event twice is harmless: an alert opens at most one
    // incident).
    let newest = match inc.store.events(None, None, 1) {
        Ok(v) => v.first().map_or(0, |e| e.id),
        Err(e) => {
            tracing::error!(error = %e, "Could not read the newest event id.");
            0
        }
    };
    let me = inc.clone();
    let every = tick(&config.status);
    tasks.spawn(async move {
        let mut timer = tokio::time::interval(every);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cursor: Option<i64> = Some(newest);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = timer.tick() => {
                    if let Err(e) = me.remind(now_ms()) {
                        tracing::error!(error = %e, "Incident reminders failed.");
                    }
                }
                ev = events.recv() => match ev {
                    Ok(e) => {
                        cursor = Some(e.id);
                        if let Err(err) = me.on_event(&e) {
                            tracing::error!(error = %err, "Could not open an incident from an alert.");
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "Incidents fell behind the event bus; catching up from the store.");
                        cursor = me.catch_up(cursor);
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
    inc
}

impl Incidents {
    /// Reads `alert.fired` events after `cursor` from the store (bounded).
    fn catch_up(&self, cursor: Option<i64>) -> Option<i64> {
        let mut cursor = cursor?;
        for _ in 0..100 {
            let Ok(batch) = self.store.events(None, Some(cursor), 1000) else {
                break;
            };
            let Some(last) = batch.last() else { break };
            cursor = last.id;
            for e in &batch {
                if let Err(err) = self.on_event(e) {
                    tracing::error!(error = %err, "Could not open an incident from an alert.");
                }
            }
        }
        Some(cursor)
    }
}
