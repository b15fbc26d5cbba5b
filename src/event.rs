//! Everything that happens is an `Event`: appended to the store first, then
//! published on the in-process bus. One enum, so the same value is stored,
//! logged, shown in timelines and (later) turned into alerts and metrics.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::store::Store;

/// What happened. Serialized with `kind` as the tag, e.g. `{"kind":"unit.started",...}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind")]
pub enum EventKind {
    #[serde(rename = "agent.started")]
    AgentStarted {
        version: String,
        enforcement: String,
        detail: String,
    },
    #[serde(rename = "agent.stopping")]
    AgentStopping { reason: String },
    /// Processes of a previous agent on the same data dir, killed at start.
    #[serde(rename = "agent.leftovers_killed")]
    LeftoversKilled { pids: Vec<i32> },
    #[serde(rename = "run.interrupted")]
    RunInterrupted { unit: String, run_id: i64 },
    #[serde(rename = "unit.started")]
    UnitStarted {
        unit: String,
        run_id: i64,
        pid: i32,
        trigger: String,
    },
    #[serde(rename = "unit.start_failed")]
    StartFailed {
        unit: String,
        run_id: i64,
        error: String,
    },
    #[serde(rename = "unit.exited")]
    UnitExited {
        unit: String,
        run_id: i64,
        state: String,
        reason: String,
        exit_code: Option<i32>,
        signal: Option<String>,
        ran_ms: u64,
    },
    #[serde(rename = "unit.limit_breached")]
    LimitBreached {
        unit: String,
        run_id: i64,
        /// `memory`, `cpu` or `wall`.
        limit: String,
        /// What was measured (bytes, or milliseconds for cpu/wall).
        value: u64,
        /// The configured limit, in the same unit as `value`.
        max: u64,
        enforced_by: String,
    },
    #[serde(rename = "unit.backoff")]
    UnitBackoff { unit: String, delay_ms: u64 },
    #[serde(rename = "unit.gave_up")]
    UnitGaveUp {
        unit: String,
        starts: u32,
        window_ms: u64,
    },
    #[serde(rename = "unit.stop_requested")]
    StopRequested { unit: String, by: String },
    #[serde(rename = "unit.start_requested")]
    StartRequested { unit: String, by: String },
    /// A check flipped to up (`rise` consecutive successes).
    #[serde(rename = "check.up")]
    CheckUp {
        check: String,
        check_kind: String,
        unit: Option<String>,
    },
    /// A check flipped to down (`fall` consecutive failures), with why.
    #[serde(rename = "check.down")]
    CheckDown {
        check: String,
        check_kind: String,
        unit: Option<String>,
        reason: String,
    },
    /// A service's own health check stopped probing: the service is stopped
    /// on purpose (or stopping). The next start judges it afresh.
    #[serde(rename = "check.paused")]
    CheckPaused {
        check: String,
        check_kind: String,
        unit: Option<String>,
    },
    /// A flow run began (a schedule fired, or someone started it).
    #[serde(rename = "flow.started")]
    FlowStarted {
        flow: String,
        flow_run: i64,
        trigger: String,
    },
    /// Every job of the flow run succeeded or was released.
    #[serde(rename = "flow.finished")]
    FlowFinished { flow: String, flow_run: i64 },
    /// Nothing in the flow run can move until a person acts.
    #[serde(rename = "flow.stalled")]
    FlowStalled { flow: String, flow_run: i64 },
    /// A job failed for good (its retries spent) inside a flow run.
    #[serde(rename = "job.failed")]
    JobFailed {
        job: String,
        flow: String,
        flow_run: i64,
        reason: String,
    },
    /// A job will not run until a person acts: upstream failed, or held by hand.
    #[serde(rename = "job.held")]
    JobHeld {
        job: String,
        flow: String,
        flow_run: i64,
        reason: String,
    },
    /// The memory floor of a service (or of the host, `unit = "host"`) rises
    /// like a leak: how fast, how sure, and when it reaches its limit.
    #[serde(rename = "leak.suspected")]
    LeakSuspected {
        unit: String,
        slope_mb_per_hour: f64,
        confidence: f64,
        time_to_limit_ms: Option<u64>,
        limit: Option<u64>,
        floor: Option<u64>,
    },
    #[serde(rename = "leak.cleared")]
    LeakCleared {
        unit: String,
        slope_mb_per_hour: f64,
        confidence: f64,
    },
    /// A job has not finished by its `must_finish_by` deadline.
    #[serde(rename = "job.late")]
    JobLate {
        job: String,
        flow: String,
        flow_run: i64,
        deadline: i64,
        state: String,
    },
    /// A run is taking longer than `expected` (or its p95 × `expected_factor`).
    #[serde(rename = "job.long")]
    JobLong {
        job: String,
        run_id: i64,
        running_ms: u64,
        expected_ms: u64,
    },
    /// A scheduled fire that did not start a run, and why.
    #[serde(rename = "job.skipped")]
    JobSkipped {
        job: String,
        scheduled_for: i64,
        reason: String,
    },
    /// Someone acted on a flow: rerun, release, hold, unhold — who and why.
    #[serde(rename = "flow.action")]
    FlowAction {
        flow: String,
        action: String,
        target: String,
        by: String,
        comment: String,
    },
    /// A log check's pattern matched a line.
    #[serde(rename = "check.log_matched")]
    LogMatched {
        check: String,
        source: String,
        line: String,
    },
    // --- alerts (src/alert/) ---
    /// A rule raised a new alert.
    #[serde(rename = "alert.fired")]
    AlertFired {
        alert_id: i64,
        key: String,
        rule: String,
        severity: String,
        title: String,
        unit: Option<String>,
    },
    #[serde(rename = "alert.acknowledged")]
    AlertAcknowledged {
        alert_id: i64,
        key: String,
        by: String,
        comment: String,
    },
    /// Resolved by its condition clearing (`by` = `auto`) or by a person.
    #[serde(rename = "alert.resolved")]
    AlertResolved {
        alert_id: i64,
        key: String,
        by: String,
    },
    /// A channel failed to take a notification; it is retried with backoff.
    #[serde(rename = "alert.delivery_failed")]
    DeliveryFailed {
        alert_id: i64,
        delivery_id: i64,
        channel: String,
        attempts: u32,
        error: String,
    },
    /// An alert received from outside (`POST /api/v1/alerts/ingest/alertmanager`).
    #[serde(rename = "ingest.firing")]
    IngestFiring {
        source: String,
        key: String,
        name: String,
        severity: String,
        summary: String,
        description: String,
        labels: std::collections::BTreeMap<String, String>,
    },
    #[serde(rename = "ingest.resolved")]
    IngestResolved {
        source: String,
        key: String,
        name: String,
    },
    // --- incidents (src/incident/) ---
    /// An incident was opened (by a person, or from an alert: `by` = `auto`).
    #[serde(rename = "incident.opened")]
    IncidentOpened {
        incident_id: i64,
        /// `incident-ID`: the subject of the reminder alert.
        key: String,
        title: String,
        by: String,
    },
    /// An update was posted; `state` = `resolved` closes the incident.
    #[serde(rename = "incident.updated")]
    IncidentUpdated {
        incident_id: i64,
        key: String,
        state: String,
        by: String,
    },
    /// An open incident has had no update for `[status] update_every`.
    #[serde(rename = "incident.update_due")]
    IncidentUpdateDue {
        incident_id: i64,
        key: String,
        title: String,
        owner: String,
        /// RFC 3339 (UTC), for alert templates.
        last_update: String,
        due: String,
    },
    // --- cluster (src/cluster/) ---
    /// This node became the group's active node and started its units.
    #[serde(rename = "group.activated")]
    GroupActivated {
        group: String,
        node: String,
        /// The fencing token of this activation (the lease key's creation revision).
        token: i64,
        reason: String,
    },
    /// This node stopped being active (units stopped, `on_demote` run).
    #[serde(rename = "group.deactivated")]
    GroupDeactivated {
        group: String,
        node: String,
        token: i64,
        reason: String,
        /// It demoted itself because it could not keep its lease.
        fenced: bool,
    },
    /// Pre-promote verification failed on this node: it does not qualify.
    #[serde(rename = "group.step_aside")]
    GroupStepAside {
        group: String,
        node: String,
        reason: String,
    },
    /// This node qualifies again after a failed verification.
    #[serde(rename = "group.qualified")]
    GroupQualified { group: String, node: String },
    /// No standby of the group qualifies (`leaderless`: and nobody is active).
    #[serde(rename = "group.no_standby")]
    GroupNoStandby {
        group: String,
        node: String,
        leaderless: bool,
    },
    #[serde(rename = "group.standby_ok")]
    GroupStandbyOk { group: String, node: String },
    /// A switchover was asked for, refused, or handed off.
    #[serde(rename = "group.switchover")]
    GroupSwitchover {
        group: String,
        node: String,
        to: String,
        outcome: String,
    },
    /// This node cannot reach the coordination store (edge).
    #[serde(rename = "group.store_lost")]
    GroupStoreLost {
        group: String,
        node: String,
        error: String,
    },
    #[serde(rename = "group.store_back")]
    GroupStoreBack { group: String, node: String },
    /// Fast takeover: this node deleted the leader key of `from`, whose beat
    /// had not changed for a whole lease (`token`: that activation's).
    #[serde(rename = "group.took_over")]
    GroupTookOver {
        group: String,
        node: String,
        from: String,
        token: i64,
    },
    /// Kept active through a store outage because every peer lost it too.
    #[serde(rename = "group.kept_by_peers")]
    GroupKeptByPeers { group: String, node: String },
    /// A hook (`on_promote`, `on_demote`, `on_fault`) failed.
    #[serde(rename = "group.hook_failed")]
    GroupHookFailed {
        group: String,
        node: String,
        hook: String,
        reason: String,
    },
    /// A failover drill passed: both legs switched and the checks passed.
    #[serde(rename = "drill.passed")]
    DrillPassed {
        group: String,
        drill_id: i64,
        gap_ms: i64,
        back_gap_ms: i64,
    },
    /// A failover drill failed: the failover is broken.
    #[serde(rename = "drill.failed")]
    DrillFailed {
        group: String,
        drill_id: i64,
        reason: String,
    },
}

/// Every event kind (`EventKind::name()`), in declaration order. Kept
/// equal to the `serde(rename)` tags above by a test that reads this file.
pub const KINDS: &[&str] = &[
    "agent.started",
    "agent.stopping",
    "agent.leftovers_killed",
    "run.interrupted",
    "unit.started",
    "unit.start_failed",
    "unit.exited",
    "unit.limit_breached",
    "unit.backoff",
    "unit.gave_up",
    "unit.stop_requested",
    "unit.start_requested",
    "check.up",
    "check.down",
    "check.paused",
    "flow.started",
    "flow.finished",
    "flow.stalled",
    "job.failed",
    "job.held",
    "leak.suspected",
    "leak.cleared",
    "job.late",
    "job.long",
    "job.skipped",
    "flow.action",
    "check.log_matched",
    "alert.fired",
    "alert.acknowledged",
    "alert.resolved",
    "alert.delivery_failed",
    "ingest.firing",
    "ingest.resolved",
    "incident.opened",
    "incident.updated",
    "incident.update_due",
    "group.activated",
    "group.deactivated",
    "group.step_aside",
    "group.qualified",
    "group.no_standby",
    "group.standby_ok",
    "group.switchover",
    "group.store_lost",
    "group.store_back",
    "group.took_over",
    "group.kept_by_peers",
    "group.hook_failed",
    "drill.passed",
    "drill.failed",
];

impl EventKind {
    /// The tag, e.g. `unit.started`.
    pub fn name(&self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("unknown")
                .to_string(),
            _ => "unknown".to_string(),
        }
    }

    /// The unit the event is about, if any.
    pub fn unit(&self) -> Option<&str> {
        use EventKind::*;
        match self {
            RunInterrupted { unit, .. }
            | UnitStarted { unit, .. }
            | StartFailed { unit, .. }
            | UnitExited { unit, .. }
            | LimitBreached { unit, .. }
            | UnitBackoff { unit, .. }
            | UnitGaveUp { unit, .. }
            | StopRequested { unit, .. }
            | StartRequested { unit, .. } => Some(unit),
            CheckUp { check, unit, .. }
            | CheckDown { check, unit, .. }
            | CheckPaused { check, unit, .. } => Some(unit.as_deref().unwrap_or(check)),
            LogMatched { check, .. } => Some(check),
            JobFailed { job, .. }
            | JobHeld { job, .. }
            | JobSkipped { job, .. }
            | JobLate { job, .. }
            | LeakSuspected { unit: job, .. }
            | LeakCleared { unit: job, .. }
            | JobLong { job, .. } => Some(job),
            FlowStarted { flow, .. }
            | FlowFinished { flow, .. }
            | FlowStalled { flow, .. }
            | FlowAction { flow, .. } => Some(flow),
            AlertFired { unit, .. } => unit.as_deref(),
            AlertAcknowledged { .. }
            | AlertResolved { .. }
            | DeliveryFailed { .. }
            | IngestFiring { .. }
            | IngestResolved { .. }
            | IncidentOpened { .. }
            | IncidentUpdated { .. }
            | IncidentUpdateDue { .. } => None,
            AgentStarted { .. } | AgentStopping { .. } | LeftoversKilled { .. } => None,
            GroupActivated { group, .. }
            | GroupDeactivated { group, .. }
            | GroupStepAside { group, .. }
            | GroupQualified { group, .. }
            | GroupNoStandby { group, .. }
            | GroupStandbyOk { group, .. }
            | GroupSwitchover { group, .. }
            | GroupStoreLost { group, .. }
            | GroupStoreBack { group, .. }
            | GroupKeptByPeers { group, .. }
            | GroupTookOver { group, .. }
            | GroupHookFailed { group, .. }
            | DrillPassed { group, .. }
            | DrillFailed { group, .. } => Some(group),
        }
    }
}

/// An event as stored: its id in the store and when it happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Events a slow subscriber may fall behind by before it lags. The bus is
/// lossy on purpose: every subscriber handles `RecvError::Lagged` by reading
/// what it needs from the store (alerts and incidents by event id, heartbeats
/// by the job's last success, probes by the service's current run), so the
/// size only decides how often that happens. Each slot is resident memory.
const BUS_SLOTS: usize = 1024;

/// Appends events to the store, then publishes them.
#[derive(Clone)]
pub struct Bus {
    store: Store,
    tx: broadcast::Sender<Arc<Event>>,
    /// Held from storing to publishing, so subscribers see events in id
    /// order (the alert engine keeps an id cursor and catches up from the
    /// store; an event published after a higher id would be skipped).
    order: Arc<std::sync::Mutex<()>>,
}

impl Bus {
    pub fn new(store: Store) -> Self {
        let (tx, _) = broadcast::channel(BUS_SLOTS);
        Bus {
            store,
            tx,
            order: Arc::default(),
        }
    }

    /// Stores the event (so it survives a crash from here on), logs it and
    /// publishes it. A store failure is logged, never dropped silently.
    pub fn emit(&self, kind: EventKind) -> Option<Arc<Event>> {
        let ts = crate::util::now_ms();
        let _order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        match self.store.append_event(ts, &kind) {
            Ok(id) => {
                let event = Arc::new(Event { id, ts, kind });
                tracing::debug!(event = %event.kind.name(), id, "Event.");
                let _ = self.tx.send(event.clone());
                Some(event)
            }
            Err(e) => {
                tracing::error!(error = %e, event = %kind.name(), "Could not store an event.");
                None
            }
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_lists_every_tag_of_the_enum() {
        let source = include_str!("event.rs");
        let tags: Vec<&str> = source
            .split("#[serde(rename = \"")
            .skip(1)
            .filter_map(|rest| rest.split_once('"').map(|(tag, _)| tag))
            .collect();
        assert_eq!(
            tags, KINDS,
            "KINDS differs from the serde tags of EventKind"
        );
        assert_eq!(
            EventKind::JobFailed {
                job: "j".into(),
                flow: "f".into(),
                flow_run: 1,
                reason: "r".into(),
            }
            .name(),
            "job.failed"
        );
    }

    #[test]
    fn the_api_docs_list_every_kind() {
        let doc = include_str!("../docs/api.md");
        let list = doc
            .split_once("Events (`kind`):")
            .map(|(_, rest)| rest.split("\n\n").next().unwrap_or(""))
            .expect("docs/api.md has its list of event kinds");
        let missing: Vec<&str> = KINDS
            .iter()
            .copied()
            .filter(|k| !list.contains(&format!("`{k}`")))
            .collect();
        assert!(missing.is_empty(), "docs/api.md does not list {missing:?}");
    }
}
