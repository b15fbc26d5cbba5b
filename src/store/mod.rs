//! State in one SQLite file (`<data_dir>/mamori.db`): the append-only event
//! log and the record of every run.
//!
//! WAL mode with `synchronous = NORMAL`: a committed transaction is in the WAL
//! file as soon as `COMMIT` returns, so killing the agent (even with SIGKILL)
//! loses nothing committed; only an OS crash or power cut can lose the last
//! transactions (see docs/operations.md). Migrations are embedded and applied
//! in order on open, tracked by `PRAGMA user_version`.
//!
//! Calls are short and synchronous behind one mutex; async callers hold it
//! only for one statement or one small transaction.

// --- cluster ---
mod drills;
mod flows;
mod incidents;
mod migrations;
mod runs;
mod samples;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection};

use crate::event::{Event, EventKind};

pub use drills::DrillRecord;
pub use flows::{FlowRunRecord, Hold};
pub use incidents::{Incident, IncidentUpdate, NewIncident};
pub use runs::{NewRun, RunEnd, RunRecord, RunState};
pub use samples::{HostSample, Rollup, Sample};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot encode event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the store was poisoned by a panic in another thread")]
    Poisoned,
    #[error("the store at {path} has schema version {found}, newer than this mamori understands ({supported}); use a newer mamori")]
    TooNew {
        path: String,
        found: i64,
        supported: i64,
    },
}

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::apply(&mut conn, path)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub(crate) fn conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }

    pub fn append_event(&self, ts: i64, kind: &EventKind) -> Result<i64, StoreError> {
        let data = serde_json::to_string(kind)?;
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO events (ts, kind, unit, data) VALUES (?1, ?2, ?3, ?4)",
            params![ts, kind.name(), kind.unit(), data],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Events, newest last; `unit` filters, `after` returns only ids above it.
    pub fn events(
        &self,
        unit: Option<&str>,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let conn = self.conn()?;
        // Following (`after` given): the oldest after the cursor, so none is
        // skipped. Otherwise: the newest `limit`.
        let order = if after.is_some() { "ASC" } else { "DESC" };
        let mut stmt = conn.prepare(&format!(
            "SELECT id, ts, data FROM events
             WHERE (?1 IS NULL OR unit = ?1) AND id > ?2
             ORDER BY id {order} LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![unit, after.unwrap_or(0), limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, ts, data) = row?;
            // An event kind this build does not know (written by a newer
            // mamori) is skipped here rather than failing the whole list.
            if let Ok(kind) = serde_json::from_str::<EventKind>(&data) {
                out.push(Event { id, ts, kind });
            }
        }
        if after.is_none() {
            out.reverse();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_reopen_and_filter_by_unit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        {
            let s = Store::open(&path).unwrap();
            s.append_event(
                1,
                &EventKind::UnitBackoff {
                    unit: "a".into(),
                    delay_ms: 5,
                },
            )
            .unwrap();
            s.append_event(
                2,
                &EventKind::UnitBackoff {
                    unit: "b".into(),
                    delay_ms: 6,
                },
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let all = s.events(None, None, 10).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].ts, 1);
        let b = s.events(Some("b"), None, 10).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(
            b[0].kind,
            EventKind::UnitBackoff {
                unit: "b".into(),
                delay_ms: 6
            }
        );
    }
}
