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
