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
