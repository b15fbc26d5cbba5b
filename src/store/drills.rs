//! Failover drills (src/cluster/drill.rs): one row per drill, written when it
//! starts and completed when it ends.

use rusqlite::params;
use serde::Serialize;

use super::{Store, StoreError};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DrillRecord {
    pub id: i64,
    pub group: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub from: String,
    pub to: String,
    /// Time with no active node when switching over (ms).
    pub gap_ms: Option<i64>,
    /// The same when switching back.
    pub back_gap_ms: Option<i64>,
    /// The group's health checks passed on the new node.
    pub healthy: bool,
    pub ok: bool,
    pub reason: String,
    /// `manual` (who asked) or `schedule`.
    pub trigger: String,
}

impl Store {
    pub fn insert_drill(
        &self,
        group: &str,
        started_at: i64,
        from: &str,
        to: &str,
        trigger: &str,
    ) -> Result<i64, StoreError> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO drills (grp, started_at, from_node, to_node, trigger) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![group, started_at, from, to, trigger],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn finish_drill(&self, d: &DrillRecord) -> Result<(), StoreError> {
        let conn = self.conn()?;
        conn.execute(
            "UPDATE drills SET finished_at = ?2, gap_ms = ?3, back_gap_ms = ?4, healthy = ?5, ok = ?6, reason = ?7 WHERE id = ?1",
            params![d.id, d.finished_at, d.gap_ms, d.back_gap_ms, d.healthy, d.ok, d.reason],
        )?;
        Ok(())
    }

    /// Newest first; all groups when `group` is `None`.
    pub fn drills(&self, group: Option<&str>, limit: u32) -> Result<Vec<DrillRecord>, StoreError> {
        let conn = self.conn()?;
        let mut st = conn.prepare(
            "SELECT id, grp, started_at, finished_at, from_node, to_node, gap_ms, back_gap_ms, healthy, ok, reason, trigger
             FROM drills WHERE (?1 IS NULL OR grp = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![group, limit], |r| {
            Ok(DrillRecord {
                id: r.get(0)?,
                group: r.get(1)?,
                started_at: r.get(2)?,
                finished_at: r.get(3)?,
                from: r.get(4)?,
                to: r.get(5)?,
                gap_ms: r.get(6)?,
                back_gap_ms: r.get(7)?,
                healthy: r.get(8)?,
                ok: r.get(9)?,
                reason: r.get(10)?,
                trigger: r.get(11)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
