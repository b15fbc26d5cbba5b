//! Flow runs (their job states as JSON), scheduled fire times (the guard
//! against running a job twice for one scheduled time), and holds by hand.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{Store, StoreError};

#[derive(Debug, Clone, Serialize)]
pub struct FlowRunRecord {
    pub id: i64,
    pub flow: String,
    pub trigger: String,
    pub scheduled_for: Option<i64>,
    pub started_at: i64,
    pub updated_at: i64,
    pub status: String,
    pub states: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hold {
    pub target: String,
    pub by: String,
    pub comment: String,
    pub at: i64,
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<FlowRunRecord> {
    let states: String = r.get(7)?;
    // `states` is filled from flow_jobs by the callers below.
    Ok(FlowRunRecord {
        id: r.get(0)?,
        flow: r.get(1)?,
        trigger: r.get(2)?,
        scheduled_for: r.get(3)?,
        started_at: r.get(4)?,
        updated_at: r.get(5)?,
        status: r.get(6)?,
        states: serde_json::from_str(&states).unwrap_or(serde_json::Value::Null),
    })
}

const COLS: &str = "id, flow, trigger, scheduled_for, started_at, updated_at, status, states";

impl Store {
    /// Creates a flow run. With `scheduled_for`, the fire is recorded in the
    /// same transaction; `None` is returned when that fire already ran.
    pub fn insert_flow_run(
        &self,
        flow: &str,
        trigger: &str,
        scheduled: Option<(&str, i64)>,
        now: i64,
        states: &str,
    ) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        if let Some((job, at)) = scheduled {
            let n = tx.execute(
                "INSERT OR IGNORE INTO schedule_fires (job, scheduled_for) VALUES (?1, ?2)",
                params![job, at],
            )?;
            if n == 0 {
                return Ok(None);
            }
        }
        tx.execute(
            "INSERT INTO flow_runs (flow, trigger, scheduled_for, started_at, updated_at, status, states)
             VALUES (?1, ?2, ?3, ?4, ?4, 'running', ?5)",
            params![flow, trigger, scheduled.map(|(_, at)| at), now, states],
        )?;
        let id = tx.last_insert_rowid();
        if let Some((job, at)) = scheduled {
            tx.execute(
                "UPDATE schedule_fires SET flow_run = ?3 WHERE job = ?1 AND scheduled_for = ?2",
                params![job, at, id],
            )?;
        }
        tx.commit()?;
        Ok(Some(id))
    }

    /// Records a fire that was not run (skipped), so it is never run later.
    pub fn record_fire(&self, job: &str, at: i64) -> Result<bool, StoreError> {
        let n = self.conn()?.execute(
            "INSERT OR IGNORE INTO schedule_fires (job, scheduled_for) VALUES (?1, ?2)",
            params![job, at],
        )?;
        Ok(n == 1)
    }

    pub fn last_fire(&self, job: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT MAX(scheduled_for) FROM schedule_fires WHERE job = ?1",
                params![job],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten())
    }

    /// Saves a flow run's status and the job states that changed, in one transaction.
    pub fn save_flow_run(
        &self,
        id: i64,
        status: &str,
        changed: &[(String, String)],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE flow_runs SET status = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, status, now],
        )?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO flow_jobs (flow_run, job, state) VALUES (?1, ?2, ?3)",
            )?;
            for (job, state) in changed {
                stmt.execute(params![id, job, state])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The job states of a flow run, as saved.
    pub fn flow_jobs(
        &self,
        id: i64,
    ) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare_cached("SELECT job, state FROM flow_jobs WHERE flow_run = ?1")?;
        let rows = stmt.query_map(params![id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = serde_json::Map::new();
        for row in rows {
            let (job, state) = row?;
            out.insert(
                job,
                serde_json::from_str(&state).unwrap_or(serde_json::Value::Null),
            );
        }
        Ok(out)
    }

    /// Flow runs that are not finished (running or stalled), oldest first.
    pub fn open_flow_runs(&self) -> Result<Vec<FlowRunRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLS} FROM flow_runs WHERE status IN ('running', 'stalled') ORDER BY id"
        ))?;
        let rows = stmt.query_map([], row)?;
        let mut runs = rows.collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        drop(conn);
        for r in &mut runs {
            r.states = serde_json::Value::Object(self.flow_jobs(r.id)?);
        }
        Ok(runs)
    }

    /// A flow run's flow and status, without its job states.
    pub fn flow_run_status(&self, id: i64) -> Result<Option<(String, String)>, StoreError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn()?
            .query_row(
                "SELECT flow, status FROM flow_runs WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    pub fn flow_runs(&self, flow: &str, limit: u32) -> Result<Vec<FlowRunRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLS} FROM flow_runs WHERE flow = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![flow, limit], row)?;
        let mut runs = rows.collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        drop(conn);
        for r in &mut runs {
            r.states = serde_json::Value::Object(self.flow_jobs(r.id)?);
        }
        Ok(runs)
    }

    pub fn set_hold(
        &self,
        target: &str,
        by: &str,
        comment: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT OR REPLACE INTO holds (target, by, comment, at) VALUES (?1, ?2, ?3, ?4)",
            params![target, by, comment, at],
        )?;
        Ok(())
    }

    pub fn clear_hold(&self, target: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()?
            .execute("DELETE FROM holds WHERE target = ?1", params![target])?
            == 1)
    }

    pub fn holds(&self) -> Result<Vec<Hold>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT target, by, comment, at FROM holds ORDER BY target")?;
        let rows = stmt.query_map([], |r| {
            Ok(Hold {
                target: r.get(0)?,
                by: r.get(1)?,
                comment: r.get(2)?,
                at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduled_time_runs_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("m.db")).unwrap();
        let first = s
            .insert_flow_run("f", "schedule", Some(("a", 1000)), 1, "{}")
            .unwrap();
        assert!(first.is_some());
        let again = s
            .insert_flow_run("f", "schedule", Some(("a", 1000)), 2, "{}")
            .unwrap();
        assert_eq!(again, None, "the same fire never makes a second run");
        assert_eq!(s.last_fire("a").unwrap(), Some(1000));
        assert!(!s.record_fire("a", 1000).unwrap());
        assert_eq!(s.open_flow_runs().unwrap().len(), 1);
    }
}
