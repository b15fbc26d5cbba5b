//! Incidents: the record, its timeline of updates, and the components and
//! alerts linked to it. An incident is open while `resolved_at` is NULL.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{Store, StoreError};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IncidentUpdate {
    pub id: i64,
    pub ts: i64,
    /// `investigating`, `identified`, `monitoring` or `resolved`.
    pub state: String,
    pub message: String,
    pub by: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Incident {
    pub id: i64,
    pub title: String,
    pub state: String,
    /// `degraded`, `partial_outage` or `major_outage`: how bad it is for users.
    pub impact: String,
    pub owner: String,
    pub opened_at: i64,
    pub opened_by: String,
    pub last_update_at: i64,
    pub resolved_at: Option<i64>,
    /// The due time the last reminder was raised for (so it is raised once).
    pub reminded_for: Option<i64>,
    pub components: Vec<String>,
    pub alerts: Vec<i64>,
    /// Oldest first.
    pub updates: Vec<IncidentUpdate>,
}

/// What opening an incident needs.
#[derive(Debug, Clone)]
pub struct NewIncident {
    pub title: String,
    pub state: String,
    pub impact: String,
    pub owner: String,
    pub message: String,
    pub by: String,
    pub components: Vec<String>,
    pub alerts: Vec<i64>,
}

const COLS: &str = "id, title, state, impact, owner, opened_at, opened_by, last_update_at, resolved_at, reminded_for";

fn row(r: &rusqlite::Row) -> rusqlite::Result<Incident> {
    Ok(Incident {
        id: r.get(0)?,
        title: r.get(1)?,
        state: r.get(2)?,
        impact: r.get(3)?,
        owner: r.get(4)?,
        opened_at: r.get(5)?,
        opened_by: r.get(6)?,
        last_update_at: r.get(7)?,
        resolved_at: r.get(8)?,
        reminded_for: r.get(9)?,
        components: Vec::new(),
        alerts: Vec::new(),
        updates: Vec::new(),
    })
}

fn fill(conn: &rusqlite::Connection, i: &mut Incident) -> rusqlite::Result<()> {
    let mut st = conn.prepare_cached(
        "SELECT component FROM incident_components WHERE incident_id = ?1 ORDER BY component",
    )?;
    i.components = st
        .query_map([i.id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut st = conn.prepare_cached(
        "SELECT alert_id FROM incident_alerts WHERE incident_id = ?1 ORDER BY alert_id",
    )?;
    i.alerts = st
        .query_map([i.id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut st = conn.prepare_cached(
        "SELECT id, ts, state, message, by FROM incident_updates WHERE incident_id = ?1 ORDER BY id",
    )?;
    i.updates = st
        .query_map([i.id], |r| {
            Ok(IncidentUpdate {
                id: r.get(0)?,
                ts: r.get(1)?,
                state: r.get(2)?,
                message: r.get(3)?,
                by: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(())
}

impl Store {
    /// Opens an incident with its first update; returns its id.
    pub fn open_incident(&self, n: &NewIncident, now: i64) -> Result<i64, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO incidents (title, state, impact, owner, opened_at, opened_by, last_update_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5)",
            params![n.title, n.state, n.impact, n.owner, now, n.by],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO incident_updates (incident_id, ts, state, message, by) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, now, n.state, n.message, n.by],
        )?;
        for c in &n.components {
            tx.execute(
                "INSERT OR IGNORE INTO incident_components (incident_id, component) VALUES (?1, ?2)",
                params![id, c],
            )?;
        }
        for a in &n.alerts {
            tx.execute(
                "INSERT OR IGNORE INTO incident_alerts (incident_id, alert_id) VALUES (?1, ?2)",
                params![id, a],
            )?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// Adds an update; `resolved` closes the incident. `None`: no such incident.
    pub fn update_incident(
        &self,
        id: i64,
        state: &str,
        message: &str,
        by: &str,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE incidents SET state = ?2, last_update_at = ?3,
                resolved_at = CASE WHEN ?2 = 'resolved' THEN ?3 ELSE NULL END
             WHERE id = ?1",
            params![id, state, now],
        )?;
        if n == 0 {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO incident_updates (incident_id, ts, state, message, by) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, now, state, message, by],
        )?;
        let uid = tx.last_insert_rowid();
        tx.commit()?;
        Ok(Some(uid))
    }

    pub fn link_incident(
        &self,
        id: i64,
        components: &[String],
        alerts: &[i64],
    ) -> Result<(), StoreError> {
        let conn = self.conn()?;
        for c in components {
            conn.execute(
                "INSERT OR IGNORE INTO incident_components (incident_id, component) VALUES (?1, ?2)",
                params![id, c],
            )?;
        }
        for a in alerts {
            conn.execute(
                "INSERT OR IGNORE INTO incident_alerts (incident_id, alert_id) VALUES (?1, ?2)",
                params![id, a],
            )?;
        }
        Ok(())
    }

    pub fn set_incident_reminded(&self, id: i64, due_at: i64) -> Result<(), StoreError> {
        self.conn()?.execute(
            "UPDATE incidents SET reminded_for = ?2 WHERE id = ?1",
            params![id, due_at],
        )?;
        Ok(())
    }

    pub fn incident(&self, id: i64) -> Result<Option<Incident>, StoreError> {
        let conn = self.conn()?;
        let mut i = conn
            .query_row(
                &format!("SELECT {COLS} FROM incidents WHERE id = ?1"),
                [id],
                row,
            )
            .optional()?;
        if let Some(i) = i.as_mut() {
            fill(&conn, i)?;
        }
        Ok(i)
    }

    /// Incidents, newest first: the open ones, or all (`all`), at most `limit`.
    pub fn incidents(&self, all: bool, limit: u32) -> Result<Vec<Incident>, StoreError> {
        let conn = self.conn()?;
        let mut st = conn.prepare_cached(&format!(
            "SELECT {COLS} FROM incidents WHERE ?1 OR resolved_at IS NULL ORDER BY id DESC LIMIT ?2"
        ))?;
        let mut out: Vec<Incident> = st
            .query_map(params![all, limit], row)?
            .collect::<Result<_, _>>()?;
        for i in &mut out {
            fill(&conn, i)?;
        }
        Ok(out)
    }

    /// Incidents resolved at or after `since`, and every open one, newest first.
    pub fn incidents_since(&self, since: i64, limit: u32) -> Result<Vec<Incident>, StoreError> {
        let conn = self.conn()?;
        let mut st = conn.prepare_cached(&format!(
            "SELECT {COLS} FROM incidents WHERE resolved_at IS NULL OR resolved_at >= ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let mut out: Vec<Incident> = st
            .query_map(params![since, limit], row)?
            .collect::<Result<_, _>>()?;
        for i in &mut out {
            fill(&conn, i)?;
        }
        Ok(out)
    }

    /// The incident an alert is linked to, if any.
    pub fn incident_of_alert(&self, alert_id: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT incident_id FROM incident_alerts WHERE alert_id = ?1 LIMIT 1",
                [alert_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// `(ts, kind, subject, down)` of check and unit status changes since
    /// `since`, oldest first, for the status page's uptime bars. `subject` is
    /// the check's name or the unit's.
    pub fn status_changes(&self, since: i64) -> Result<Vec<(i64, String, bool)>, StoreError> {
        let conn = self.conn()?;
        let mut st = conn.prepare_cached(
            "SELECT ts, kind, data FROM events
             WHERE kind IN ('check.down', 'check.paused', 'check.up', 'unit.gave_up', 'unit.started', 'unit.exited')
               AND ts >= ?1
             ORDER BY ts, id",
        )?;
        let rows = st.query_map([since], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for x in rows {
            let (ts, kind, data) = x?;
            let v: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
            let (subject, down) = match kind.as_str() {
                "check.down" | "check.paused" => (field("check"), true),
                "check.up" => (field("check"), false),
                "unit.gave_up" => (field("unit"), true),
                "unit.started" => (field("unit"), false),
                // A run that ended badly and is not restarted leaves the unit down.
                "unit.exited" => (
                    field("unit"),
                    v.get("state").and_then(|s| s.as_str()) == Some("failed"),
                ),
                _ => (None, false),
            };
            if let Some(s) = subject {
                if kind == "unit.exited" && !down {
                    continue;
                }
                out.push((
                    ts,
                    format!("{}:{s}", &kind[..kind.find('.').unwrap_or(0)]),
                    down,
                ));
            }
        }
        Ok(out)
    }

    /// The first event's time: before it there is no data (uptime unknown).
    pub fn first_event_ts(&self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn()?
            .query_row("SELECT MIN(ts) FROM events", [], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_update_resolve_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("m.db")).unwrap();
        let id = s
            .open_incident(
                &NewIncident {
                    title: "Mail is slow".into(),
                    state: "investigating".into(),
                    impact: "degraded".into(),
                    owner: "alice".into(),
                    message: "Looking".into(),
                    by: "cli:alice".into(),
                    components: vec!["Mail".into()],
                    alerts: vec![7],
                },
                1000,
            )
            .unwrap();
        assert_eq!(s.incidents(false, 10).unwrap().len(), 1);
        assert_eq!(s.incident_of_alert(7).unwrap(), Some(id));
        s.update_incident(id, "resolved", "Fixed", "bob", 2000)
            .unwrap()
            .unwrap();
        let i = s.incident(id).unwrap().unwrap();
        assert_eq!(i.resolved_at, Some(2000));
        assert_eq!(i.updates.len(), 2);
        assert_eq!(i.components, vec!["Mail"]);
        assert!(s.incidents(false, 10).unwrap().is_empty());
        assert_eq!(s.incidents(true, 10).unwrap().len(), 1);
        assert!(s
            .update_incident(99, "monitoring", "x", "y", 3)
            .unwrap()
            .is_none());
    }
}
