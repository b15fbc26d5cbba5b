//! The record of every run of every unit: a service start or a job run.

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    /// Ended with exit code 0.
    Succeeded,
    /// Ended any other way on its own, or killed at a limit.
    Failed,
    /// Stopped on request (by a person or the agent's shutdown).
    Stopped,
    /// The agent died while it ran; its real end is unknown.
    Interrupted,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Stopped => "stopped",
            RunState::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> RunState {
        match s {
            "running" => RunState::Running,
            "succeeded" => RunState::Succeeded,
            "stopped" => RunState::Stopped,
            "interrupted" => RunState::Interrupted,
            _ => RunState::Failed,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub unit: String,
    pub kind: String,
    /// What started it: `autostart`, `restart`, `manual`, …
    pub trigger: String,
    pub state: RunState,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    /// `exit:N`, `signal:SIGX`, `limit:memory|cpu|wall`, `stop`, `shutdown`, `spawn: …`, `interrupted`.
    pub reason: Option<String>,
    /// Highest resident memory of the whole tree seen, bytes.
    pub peak_rss: Option<u64>,
    pub cpu_ms: Option<u64>,
    /// Range of the unit's log stream written during this run.
    pub log_start: u64,
    pub log_end: Option<u64>,
    /// Where and how it ran: host, user, filesystems, interpreter, env (see `supervise::context`).
    pub context: Option<serde_json::Value>,
}

pub struct NewRun<'a> {
    pub unit: &'a str,
    pub kind: &'a str,
    pub trigger: &'a str,
    pub started_at: i64,
    pub log_start: u64,
}

pub struct RunEnd {
    pub state: RunState,
    pub ended_at: i64,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub reason: String,
    pub peak_rss: u64,
    pub cpu_ms: u64,
    pub log_end: u64,
}

const COLUMNS: &str = "id, unit, kind, trigger, state, started_at, ended_at, pid, exit_code, signal, reason, peak_rss, cpu_ms, log_start, log_end, context";

fn from_row(r: &Row) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: r.get(0)?,
        unit: r.get(1)?,
        kind: r.get(2)?,
        trigger: r.get(3)?,
        state: RunState::parse(&r.get::<_, String>(4)?),
        started_at: r.get(5)?,
        ended_at: r.get(6)?,
        pid: r.get(7)?,
        exit_code: r.get(8)?,
        signal: r.get(9)?,
        reason: r.get(10)?,
        peak_rss: r.get::<_, Option<i64>>(11)?.map(|v| v as u64),
        cpu_ms: r.get::<_, Option<i64>>(12)?.map(|v| v as u64),
        log_start: r.get::<_, i64>(13)? as u64,
        log_end: r.get::<_, Option<i64>>(14)?.map(|v| v as u64),
        context: r
            .get::<_, Option<String>>(15)?
            .and_then(|c| serde_json::from_str(&c).ok()),
    })
}

impl Store {
    pub fn insert_run(&self, run: &NewRun) -> Result<i64, StoreError> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO runs (unit, kind, trigger, state, started_at, log_start)
             VALUES (?1, ?2, ?3, 'running', ?4, ?5)",
            params![
                run.unit,
                run.kind,
                run.trigger,
                run.started_at,
                run.log_start as i64
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Closes the log range of a run that was interrupted.
    pub fn set_log_end(&self, id: i64, end: u64) -> Result<(), StoreError> {
        self.conn()?.execute(
            "UPDATE runs SET log_end = ?2 WHERE id = ?1 AND log_end IS NULL",
            params![id, end as i64],
        )?;
        Ok(())
    }

    pub fn set_run_context(&self, id: i64, context: &str) -> Result<(), StoreError> {
        self.conn()?.execute(
            "UPDATE runs SET context = ?2 WHERE id = ?1",
            params![id, context],
        )?;
        Ok(())
    }

    pub fn set_run_pid(&self, id: i64, pid: i32) -> Result<(), StoreError> {
        self.conn()?
            .execute("UPDATE runs SET pid = ?2 WHERE id = ?1", params![id, pid])?;
        Ok(())
    }

    pub fn finish_run(&self, id: i64, end: &RunEnd) -> Result<(), StoreError> {
        self.conn()?.execute(
            "UPDATE runs SET state = ?2, ended_at = ?3, exit_code = ?4, signal = ?5, reason = ?6,
                 peak_rss = ?7, cpu_ms = ?8, log_end = ?9 WHERE id = ?1",
            params![
                id,
                end.state.as_str(),
                end.ended_at,
                end.exit_code,
                end.signal,
                end.reason,
                end.peak_rss as i64,
                end.cpu_ms as i64,
                end.log_end as i64
            ],
        )?;
        Ok(())
    }

    /// Marks runs left `running` by a previous agent as `interrupted` and
    /// returns them. Called once at start, before anything runs.
    pub fn interrupt_running(&self, now: i64) -> Result<Vec<RunRecord>, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let runs = {
            let mut stmt = tx.prepare(&format!(
                "SELECT {COLUMNS} FROM runs WHERE state = 'running' ORDER BY id"
            ))?;
            let rows = stmt.query_map([], from_row)?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        tx.execute(
            "UPDATE runs SET state = 'interrupted', reason = 'interrupted', ended_at = ?1
             WHERE state = 'running'",
            params![now],
        )?;
        tx.commit()?;
        Ok(runs)
    }

    pub fn run(&self, id: i64) -> Result<Option<RunRecord>, StoreError> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM runs WHERE id = ?1"),
                params![id],
                from_row,
            )
            .optional()?)
    }

    /// Runs, newest first.
    pub fn runs(&self, unit: Option<&str>, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM runs WHERE (?1 IS NULL OR unit = ?1) ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![unit, limit], from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// When the newest succeeded run of `unit` ended. Heartbeats tied to a
    /// job read it to catch up with a success whose event they missed.
    pub fn last_success_end(&self, unit: &str) -> Result<Option<i64>, StoreError> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                "SELECT ended_at FROM runs WHERE unit = ?1 AND state = 'succeeded'
                 ORDER BY id DESC LIMIT 1",
                params![unit],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// The latest finished run of each unit, for status after a restart of the agent.
    pub fn last_run(&self, unit: &str) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.runs(Some(unit), 1)?.into_iter().next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_runs_become_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("m.db")).unwrap();
        let a = s
            .insert_run(&NewRun {
                unit: "j",
                kind: "job",
                trigger: "manual",
                started_at: 1,
                log_start: 0,
            })
            .unwrap();
        let b = s
            .insert_run(&NewRun {
                unit: "j",
                kind: "job",
                trigger: "manual",
                started_at: 2,
                log_start: 0,
            })
            .unwrap();
        s.finish_run(
            a,
            &RunEnd {
                state: RunState::Succeeded,
                ended_at: 3,
                exit_code: Some(0),
                signal: None,
                reason: "exit:0".into(),
                peak_rss: 10,
                cpu_ms: 1,
                log_end: 5,
            },
        )
        .unwrap();
        let interrupted = s.interrupt_running(9).unwrap();
        assert_eq!(interrupted.len(), 1);
        assert_eq!(interrupted[0].id, b);
        let rb = s.run(b).unwrap().unwrap();
        assert_eq!(rb.state, RunState::Interrupted);
        assert_eq!(rb.ended_at, Some(9));
        assert_eq!(s.run(a).unwrap().unwrap().state, RunState::Succeeded);
    }

    #[test]
    fn the_last_success_is_the_newest_succeeded_run_not_the_newest_run() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("m.db")).unwrap();
        assert_eq!(s.last_success_end("j").unwrap(), None);
        let end = |state, ended_at| RunEnd {
            state,
            ended_at,
            exit_code: None,
            signal: None,
            reason: String::new(),
            peak_rss: 0,
            cpu_ms: 0,
            log_end: 0,
        };
        for (unit, state, ended_at) in [
            ("j", RunState::Succeeded, 10),
            ("j", RunState::Succeeded, 20),
            ("j", RunState::Failed, 30),
            ("other", RunState::Succeeded, 40),
        ] {
            let id = s
                .insert_run(&NewRun {
                    unit,
                    kind: "job",
                    trigger: "manual",
                    started_at: ended_at - 1,
                    log_start: 0,
                })
                .unwrap();
            s.finish_run(id, &end(state, ended_at)).unwrap();
        }
        // Still running: not a success yet.
        s.insert_run(&NewRun {
            unit: "j",
            kind: "job",
            trigger: "manual",
            started_at: 50,
            log_start: 0,
        })
        .unwrap();
        assert_eq!(s.last_success_end("j").unwrap(), Some(20));
        assert_eq!(s.last_success_end("other").unwrap(), Some(40));
        assert_eq!(s.last_success_end("nobody").unwrap(), None);
    }
}
