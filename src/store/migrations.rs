//! Embedded schema migrations, applied in order; `PRAGMA user_version` holds
//! how many have run. Never edit a migration that has shipped: add a new one.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: events and runs
    "CREATE TABLE events (
        id    INTEGER PRIMARY KEY AUTOINCREMENT,
        ts    INTEGER NOT NULL,
        kind  TEXT NOT NULL,
        unit  TEXT,
        data  TEXT NOT NULL
     );
     CREATE INDEX events_unit ON events (unit, id);
     CREATE TABLE runs (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        unit       TEXT NOT NULL,
        kind       TEXT NOT NULL,
        trigger    TEXT NOT NULL,
        state      TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        ended_at   INTEGER,
        pid        INTEGER,
        exit_code  INTEGER,
        signal     TEXT,
        reason     TEXT,
        peak_rss   INTEGER,
        cpu_ms     INTEGER,
        log_start  INTEGER NOT NULL DEFAULT 0,
        log_end    INTEGER
     );
     CREATE INDEX runs_unit ON runs (unit, id);
     CREATE INDEX runs_state ON runs (state);",
    // 2: heartbeats and resource samples
    "CREATE TABLE heartbeats (
        name      TEXT PRIMARY KEY,
        last_ping INTEGER NOT NULL
     );
     CREATE TABLE samples (
        unit    TEXT NOT NULL,
        ts      INTEGER NOT NULL,
        rss     INTEGER NOT NULL,
        cpu_pct REAL NOT NULL,
        fds     INTEGER NOT NULL,
        threads INTEGER NOT NULL,
        procs   INTEGER NOT NULL
     );
     CREATE INDEX samples_unit_ts ON samples (unit, ts);
     CREATE TABLE samples_1m (
        unit        TEXT NOT NULL,
        ts          INTEGER NOT NULL,
        n           INTEGER NOT NULL,
        rss_min     INTEGER NOT NULL,
        rss_avg     INTEGER NOT NULL,
        rss_max     INTEGER NOT NULL,
        cpu_avg     REAL NOT NULL,
        cpu_max     REAL NOT NULL,
        fds_max     INTEGER NOT NULL,
        threads_max INTEGER NOT NULL,
        PRIMARY KEY (unit, ts)
     ) WITHOUT ROWID;
     CREATE TABLE host_samples (
        ts            INTEGER PRIMARY KEY,
        mem_total     INTEGER NOT NULL,
        mem_available INTEGER NOT NULL,
        swap_total    INTEGER NOT NULL,
        swap_free     INTEGER NOT NULL,
        load1         REAL NOT NULL,
        disk_used_pct REAL NOT NULL
     );",
    // 3: flows
    "CREATE TABLE flow_runs (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        flow          TEXT NOT NULL,
        trigger       TEXT NOT NULL,
        scheduled_for INTEGER,
        started_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        status        TEXT NOT NULL,
        states        TEXT NOT NULL
     );
     CREATE INDEX flow_runs_flow ON flow_runs (flow, id);
     CREATE TABLE flow_jobs (
        flow_run INTEGER NOT NULL,
        job      TEXT NOT NULL,
        state    TEXT NOT NULL,
        PRIMARY KEY (flow_run, job)
     ) WITHOUT ROWID;
     CREATE TABLE schedule_fires (
        job           TEXT NOT NULL,
        scheduled_for INTEGER NOT NULL,
        flow_run      INTEGER,
        PRIMARY KEY (job, scheduled_for)
     ) WITHOUT ROWID;
     CREATE TABLE holds (
        target  TEXT PRIMARY KEY,
        by      TEXT NOT NULL,
        comment TEXT NOT NULL,
        at      INTEGER NOT NULL
     );",
    // 4: the execution context of each run
    "ALTER TABLE runs ADD COLUMN context TEXT;",
    // 5: alerts, their outbox of notifications, silences (src/alert/db.rs)
    "CREATE TABLE alerts (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        key         TEXT NOT NULL,
        rule        TEXT NOT NULL,
        subject     TEXT NOT NULL,
        severity    TEXT NOT NULL,
        state       TEXT NOT NULL,
        title       TEXT NOT NULL,
        body        TEXT NOT NULL,
        policy      TEXT NOT NULL,
        occurrences INTEGER NOT NULL,
        first_at    INTEGER NOT NULL,
        last_at     INTEGER NOT NULL,
        event_id    INTEGER,
        acked_at    INTEGER,
        acked_by    TEXT,
        ack_comment TEXT,
        ack_until   INTEGER,
        resolved_at INTEGER,
        resolved_by TEXT,
        esc_started INTEGER,
        esc_round   INTEGER NOT NULL DEFAULT 0,
        esc_step    INTEGER NOT NULL DEFAULT 0,
        esc_done    INTEGER NOT NULL DEFAULT 0,
        notified    TEXT NOT NULL DEFAULT '[]'
     );
     CREATE INDEX alerts_state ON alerts (state, id);
     CREATE UNIQUE INDEX alerts_active_key ON alerts (key) WHERE state != 'resolved';
     CREATE TABLE alert_deliveries (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_id   INTEGER NOT NULL REFERENCES alerts (id),
        channel    TEXT NOT NULL,
        what       TEXT NOT NULL,
        payload    TEXT NOT NULL,
        state      TEXT NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0,
        next_try   INTEGER NOT NULL,
        last_error TEXT,
        created_at INTEGER NOT NULL,
        sent_at    INTEGER
     );
     CREATE INDEX alert_deliveries_due ON alert_deliveries (state, next_try);
     CREATE INDEX alert_deliveries_alert ON alert_deliveries (alert_id, id);
     CREATE TABLE alert_attempts (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        delivery_id INTEGER NOT NULL REFERENCES alert_deliveries (id),
        alert_id    INTEGER NOT NULL,
        ts          INTEGER NOT NULL,
        ok          INTEGER NOT NULL,
        error       TEXT,
        ms          INTEGER NOT NULL
     );
     CREATE INDEX alert_attempts_alert ON alert_attempts (alert_id, id);
     CREATE TABLE alert_cursor (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        event_id INTEGER NOT NULL
     );
     CREATE TABLE silences (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        matchers   TEXT NOT NULL,
        starts_at  INTEGER NOT NULL,
        ends_at    INTEGER NOT NULL,
        comment    TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at INTEGER NOT NULL
     );",
    // 6: incidents, their updates, linked components and alerts;
    // an index so the status page reads check/unit history by kind and time.
    "CREATE TABLE incidents (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        title          TEXT NOT NULL,
        state          TEXT NOT NULL,
        impact         TEXT NOT NULL,
        owner          TEXT NOT NULL,
        opened_at      INTEGER NOT NULL,
        opened_by      TEXT NOT NULL,
        last_update_at INTEGER NOT NULL,
        resolved_at    INTEGER,
        reminded_for   INTEGER
     );
     CREATE INDEX incidents_open ON incidents (resolved_at, id);
     CREATE TABLE incident_updates (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        incident_id INTEGER NOT NULL REFERENCES incidents (id),
        ts          INTEGER NOT NULL,
        state       TEXT NOT NULL,
        message     TEXT NOT NULL,
        by          TEXT NOT NULL
     );
     CREATE INDEX incident_updates_incident ON incident_updates (incident_id, id);
     CREATE TABLE incident_components (
        incident_id INTEGER NOT NULL REFERENCES incidents (id),
        component   TEXT NOT NULL,
        PRIMARY KEY (incident_id, component)
     );
     CREATE TABLE incident_alerts (
        incident_id INTEGER NOT NULL REFERENCES incidents (id),
        alert_id    INTEGER NOT NULL,
        PRIMARY KEY (incident_id, alert_id)
     );
     CREATE INDEX incident_alerts_alert ON incident_alerts (alert_id);
     CREATE INDEX events_kind_ts ON events (kind, ts);",
    // 7: failover drills of groups (src/cluster/drill.rs), one row per drill.
    "CREATE TABLE drills (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        grp         TEXT NOT NULL,
        started_at  INTEGER NOT NULL,
        finished_at INTEGER,
        from_node   TEXT NOT NULL,
        to_node     TEXT NOT NULL,
        gap_ms      INTEGER,
        back_gap_ms INTEGER,
        healthy     INTEGER NOT NULL DEFAULT 0,
        ok          INTEGER NOT NULL DEFAULT 0,
        reason      TEXT NOT NULL DEFAULT '',
        trigger     TEXT NOT NULL
     );
     CREATE INDEX drills_grp ON drills (grp, id);",
];

pub fn apply(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found: version,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
